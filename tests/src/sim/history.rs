//! The phone's chat history (history sync): what it sends a newly linked companion, and its
//! answers to on-demand history requests.
//!
//! A chunk is a `HistorySync` protobuf, zlib-deflated, encrypted with the "WhatsApp History
//! Keys" media keys by the core's own encryptor and stored on the simulator's media host; the
//! phone then sends a `HISTORY_SYNC_NOTIFICATION` protocol message naming it (or carrying it
//! inline) to its own companions, like any message it sends.

use amarula_core::history::{self, SyncType};
use amarula_core::jid::Jid;
use amarula_core::media::{MediaType, encrypt};
use amarula_proto::common::MessageKey;
use amarula_proto::e2e;
use amarula_proto::generated::wa_web_protobufs_web::WebMessageInfo;
use amarula_proto::history_sync::{
    Conversation, HistorySync, HistorySyncMsg, PhoneNumberToLidMapping, Pushname,
};
use bytes::Bytes;
use prost::Message as _;
use rand_core::RngCore;

use super::Account;
use super::phone_send::PhoneSendError;

/// How a chunk goes to the companions.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// In the notification itself (`initialHistBootstrapInlinePayload`) instead of a blob.
    pub inline: bool,
    /// The on-demand request this chunk answers (`peerDataRequestSessionID`).
    pub request_id: Option<String>,
    /// `chunkOrder` of the notification.
    pub chunk_order: Option<u32>,
    /// Store the blob with one byte flipped, so that it fails its MAC check.
    pub tamper: bool,
}

/// A chunk the phone sent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SentChunk {
    /// The notification message's id.
    pub message_id: String,
    /// The blob's direct path on the media host (none when inline).
    pub direct_path: Option<String>,
}

fn text_message(
    chat: &str,
    id: &str,
    from_me: bool,
    participant: Option<&str>,
    t: u64,
    message: e2e::Message,
) -> HistorySyncMsg {
    HistorySyncMsg {
        message: Some(WebMessageInfo {
            key: MessageKey {
                remote_jid: Some(chat.to_owned()),
                from_me: Some(from_me),
                id: Some(id.to_owned()),
                participant: participant.map(str::to_owned),
            },
            message: Some(message),
            message_timestamp: Some(t),
            ..WebMessageInfo::default()
        }),
        msg_order_id: Some(t),
    }
}

fn text(s: &str) -> e2e::Message {
    e2e::Message {
        conversation: Some(s.to_owned()),
        ..e2e::Message::default()
    }
}

/// The contacts of the sample history: (phone, LID user, push name).
pub const HISTORY_CONTACTS: [(&str, &str, &str); 3] = [
    ("15550001111", "90001", "Alice"),
    ("15550002222", "90002", "Bob"),
    ("15550003333", "90003", "Carol"),
];

/// The token the phone holds for the chat with Alice.
pub const HISTORY_TOKEN: &[u8] = b"sim-tc-token-alice";

/// The sample chat history every simulated phone holds: a chat with Alice (text both ways, a
/// reaction, a location; her LID and a privacy token), a group with messages from two members,
/// a pinned, muted and archived LID chat with Bob, and a mapping for Carol.
pub fn sample_history() -> HistorySync {
    let [(a_pn, a_lid, _), (b_pn, b_lid, _), (c_pn, c_lid, _)] = HISTORY_CONTACTS;
    let alice = format!("{a_pn}@s.whatsapp.net");
    let bob_lid = format!("{b_lid}@lid");
    let group = "120363000000000001@g.us";
    let reaction = e2e::Message {
        reaction_message: Some(e2e::ReactionMessage {
            key: Some(MessageKey {
                remote_jid: Some(alice.clone()),
                from_me: Some(true),
                id: Some("H-A2".to_owned()),
                participant: None,
            }),
            text: Some("👍".to_owned()),
            ..e2e::ReactionMessage::default()
        }),
        ..e2e::Message::default()
    };
    let location = e2e::Message {
        location_message: Some(Box::new(e2e::LocationMessage {
            degrees_latitude: Some(45.0),
            degrees_longitude: Some(9.0),
            name: Some("Somewhere".to_owned()),
            ..e2e::LocationMessage::default()
        })),
        ..e2e::Message::default()
    };
    HistorySync {
        sync_type: SyncType::InitialBootstrap.to_i32(),
        chunk_order: Some(1),
        progress: Some(100),
        conversations: vec![
            Conversation {
                id: alice.clone(),
                messages: vec![
                    text_message(&alice, "H-A4", false, None, 1_700_000_040, location),
                    text_message(&alice, "H-A3", false, None, 1_700_000_030, reaction),
                    text_message(&alice, "H-A2", true, None, 1_700_000_020, text("hi Alice")),
                    text_message(&alice, "H-A1", false, None, 1_700_000_010, text("hello")),
                ],
                unread_count: Some(1),
                lid_jid: Some(format!("{a_lid}@lid")),
                tc_token: Some(Bytes::from_static(HISTORY_TOKEN)),
                tc_token_timestamp: Some(1_700_000_000),
                last_msg_timestamp: Some(1_700_000_040),
                ..Conversation::default()
            },
            Conversation {
                id: group.to_owned(),
                name: Some("History Group".to_owned()),
                messages: vec![
                    text_message(
                        group,
                        "H-G2",
                        false,
                        Some(&bob_lid),
                        1_700_000_060,
                        text("bob here"),
                    ),
                    text_message(
                        group,
                        "H-G1",
                        false,
                        Some(&alice),
                        1_700_000_050,
                        text("welcome"),
                    ),
                ],
                ..Conversation::default()
            },
            Conversation {
                id: bob_lid.clone(),
                pn_jid: Some(format!("{b_pn}@s.whatsapp.net")),
                messages: vec![text_message(
                    &bob_lid,
                    "H-B1",
                    true,
                    None,
                    1_700_000_070,
                    text("see you"),
                )],
                pinned: Some(1_700_000_100),
                mute_end_time: Some(1_900_000_000_000),
                archived: Some(true),
                ..Conversation::default()
            },
        ],
        phone_number_to_lid_mappings: vec![PhoneNumberToLidMapping {
            pn_jid: Some(format!("{c_pn}@s.whatsapp.net")),
            lid_jid: Some(format!("{c_lid}@lid")),
        }],
        ..HistorySync::default()
    }
}

/// The push-name chunk of the sample history.
pub fn sample_push_names() -> HistorySync {
    HistorySync {
        sync_type: SyncType::PushName.to_i32(),
        pushnames: HISTORY_CONTACTS
            .iter()
            .map(|(pn, _, name)| Pushname {
                id: Some(format!("{pn}@s.whatsapp.net")),
                pushname: Some((*name).to_owned()),
            })
            .collect(),
        ..HistorySync::default()
    }
}

/// A history with `n` text messages in one chat (benchmarks and the size cap).
pub fn bulk_history(n: usize, sync_type: SyncType) -> HistorySync {
    let chat = "15550009999@s.whatsapp.net";
    HistorySync {
        sync_type: sync_type.to_i32(),
        conversations: vec![Conversation {
            id: chat.to_owned(),
            messages: (0..n)
                .map(|i| {
                    text_message(
                        chat,
                        &format!("BULK-{i}"),
                        i % 2 == 0,
                        None,
                        1_700_000_000 + i as u64,
                        text(&format!("bulk message number {i} with some text in it")),
                    )
                })
                .collect(),
            ..Conversation::default()
        }],
        ..HistorySync::default()
    }
}

impl Account {
    /// The phone sends `sync` to its companions as a history chunk: deflated, encrypted with
    /// the history keys and stored on the media host (or inline), then announced by a
    /// `HISTORY_SYNC_NOTIFICATION` protocol message.
    ///
    /// # Errors
    /// As [`phone_send`](Self::phone_send).
    pub fn send_history(
        &self,
        sync: &HistorySync,
        delivery: &Delivery,
    ) -> Result<SentChunk, PhoneSendError> {
        let compressed = history::deflate(&sync.encode_to_vec());
        let mut notification = e2e::HistorySyncNotification {
            sync_type: Some(sync.sync_type),
            chunk_order: delivery.chunk_order.or(sync.chunk_order),
            progress: sync.progress,
            peer_data_request_session_id: delivery.request_id.clone(),
            ..e2e::HistorySyncNotification::default()
        };
        let mut direct_path = None;
        if delivery.inline {
            notification.initial_hist_bootstrap_inline_payload = Some(Bytes::from(compressed));
        } else {
            let mut key = [0u8; 32];
            self.shared.lock().rng.fill_bytes(&mut key);
            let (mut blob, hashes) = encrypt(&key, MediaType::History, &compressed);
            if delivery.tamper {
                if let Some(b) = blob.first_mut() {
                    *b ^= 0x01;
                }
            }
            let path = self.shared.media.store(blob);
            notification.media_key = Some(Bytes::copy_from_slice(&key));
            notification.file_sha256 = Some(Bytes::copy_from_slice(&hashes.file_sha256));
            notification.file_enc_sha256 = Some(Bytes::copy_from_slice(&hashes.file_enc_sha256));
            notification.file_length = Some(hashes.file_length);
            notification.direct_path = Some(path.clone());
            direct_path = Some(path);
        }
        let message = e2e::Message {
            protocol_message: Some(Box::new(e2e::ProtocolMessage {
                r#type: Some(e2e::protocol_message::Type::HistorySyncNotification as i32),
                history_sync_notification: Some(notification),
                ..e2e::ProtocolMessage::default()
            })),
            ..e2e::Message::default()
        };
        let message_id = self.phone_send(&self.jid(), &message)?;
        Ok(SentChunk {
            message_id,
            direct_path,
        })
    }

    /// The initial history after linking: the sample bootstrap chunk, then the push names.
    ///
    /// # Errors
    /// As [`phone_send`](Self::phone_send).
    pub fn send_initial_history(&self) -> Result<Vec<SentChunk>, PhoneSendError> {
        Ok(vec![
            self.send_history(&sample_history(), &Delivery::default())?,
            self.send_history(&sample_push_names(), &Delivery::default())?,
        ])
    }
}

/// The `count` messages the phone holds in `chat` before the message `oldest_id` sent at
/// `oldest_t`: on-demand answers are made up the same way each time (ids `OD-<oldest>-<k>`,
/// one second apart going back), so a test can check them.
pub fn older_messages(chat: &str, oldest_id: &str, oldest_t: u64, count: usize) -> HistorySync {
    HistorySync {
        sync_type: SyncType::OnDemand.to_i32(),
        conversations: vec![Conversation {
            id: chat.to_owned(),
            messages: (1..=count)
                .map(|k| {
                    text_message(
                        chat,
                        &format!("OD-{oldest_id}-{k}"),
                        k % 2 == 0,
                        None,
                        oldest_t.saturating_sub(k as u64),
                        text(&format!("older message {k}")),
                    )
                })
                .collect(),
            ..Conversation::default()
        }],
        ..HistorySync::default()
    }
}

/// The sample history's message with `id`, as the phone stores it.
fn stored_message(id: &str) -> Option<WebMessageInfo> {
    sample_history()
        .conversations
        .into_iter()
        .flat_map(|c| c.messages)
        .filter_map(|m| m.message)
        .find(|m| m.key.id.as_deref() == Some(id))
}

/// The phone answers a peer data request one of its companions sent it (`event` is what the
/// phone received): an on-demand history request with an `ON_DEMAND` chunk, a placeholder
/// resend with the messages it has. Anything else is left alone.
pub(crate) fn answer_peer(shared: &std::sync::Arc<super::state::Shared>, event: &super::SimEvent) {
    use e2e::PeerDataOperationRequestType as T;
    use e2e::peer_data_operation_request_response_message::PeerDataOperationResult;
    use e2e::peer_data_operation_request_response_message::peer_data_operation_result::PlaceholderMessageResendResponse;
    let super::SimEvent::PhoneMessage {
        account,
        from,
        id,
        message,
        ..
    } = event
    else {
        return;
    };
    if from.user_part() != account.as_str() {
        return;
    }
    let Some(request) = message
        .protocol_message
        .as_ref()
        .and_then(|p| p.peer_data_operation_request_message.as_ref())
    else {
        return;
    };
    let phone = Account {
        shared: std::sync::Arc::clone(shared),
        phone: account.clone(),
    };
    let kind = request.peer_data_operation_request_type;
    if kind == Some(T::HistorySyncOnDemand as i32) {
        let Some(r) = &request.history_sync_on_demand_request else {
            return;
        };
        let chunk = older_messages(
            r.chat_jid.as_deref().unwrap_or_default(),
            r.oldest_msg_id.as_deref().unwrap_or_default(),
            u64::try_from(r.oldest_msg_timestamp_ms.unwrap_or(0)).unwrap_or(0),
            usize::try_from(r.on_demand_msg_count.unwrap_or(0))
                .unwrap_or(0)
                .min(500),
        );
        let delivery = Delivery {
            request_id: Some(id.clone()),
            ..Delivery::default()
        };
        if let Err(e) = phone.send_history(&chunk, &delivery) {
            tracing::warn!(error = %e, "phone: on-demand history not sent");
        }
    } else if kind == Some(T::PlaceholderMessageResend as i32) {
        let results = request
            .placeholder_message_resend_request
            .iter()
            .filter_map(|r| r.message_key.as_ref()?.id.as_deref())
            .filter_map(stored_message)
            .map(|m| PeerDataOperationResult {
                placeholder_message_resend_response: Some(PlaceholderMessageResendResponse {
                    web_message_info_bytes: Some(Bytes::from(m.encode_to_vec())),
                }),
                ..PeerDataOperationResult::default()
            })
            .collect();
        let answer = e2e::Message {
            protocol_message: Some(Box::new(e2e::ProtocolMessage {
                r#type: Some(
                    e2e::protocol_message::Type::PeerDataOperationRequestResponseMessage as i32,
                ),
                peer_data_operation_request_response_message: Some(
                    e2e::PeerDataOperationRequestResponseMessage {
                        peer_data_operation_request_type: Some(T::PlaceholderMessageResend as i32),
                        stanza_id: Some(id.clone()),
                        peer_data_operation_result: results,
                    },
                ),
                ..e2e::ProtocolMessage::default()
            })),
            ..e2e::Message::default()
        };
        if let Err(e) = phone.phone_send(&phone.jid(), &answer) {
            tracing::warn!(error = %e, "phone: placeholder resend not answered");
        }
    }
}

/// After `device` published keys: when it is a newly paired device waiting for the initial
/// history ([`SimConfig::initial_history`](super::SimConfig)), the phone sends it now.
pub(crate) fn after_key_upload(shared: &std::sync::Arc<super::state::Shared>, device: &Jid) {
    let phone = {
        let mut st = shared.lock();
        let published = st
            .accounts
            .get(device.user_part())
            .and_then(|a| a.devices.get(&device.device()))
            .is_some_and(|d| d.keys.identity.is_some() && d.keys.signed.is_some());
        if !published || !st.history_due.remove(device) {
            return;
        }
        device.user_part().to_owned()
    };
    let account = Account {
        shared: std::sync::Arc::clone(shared),
        phone,
    };
    if let Err(e) = account.send_initial_history() {
        tracing::warn!(%device, error = %e, "phone: initial history not sent");
    }
}
