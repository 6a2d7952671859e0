//! History sync in the machine: a `HISTORY_SYNC_NOTIFICATION` from our own phone is not
//! handed out as a message. Its chunk (inline, or an external blob fetched through
//! [`Event::FetchBlob`]) is decoded with [`crate::history`], the LID mappings it carries are
//! persisted, and the content is handed out as [`Event::HistorySync`] batches. Only then may
//! the message be acknowledged: its delivery receipt and the `hist_sync` receipt are held for
//! the application's confirmation of the last batch (or sent at once when acks are not held).
//! A chunk that cannot be had or read is reported ([`Event::HistorySyncFailed`]), not applied
//! and not acknowledged: the stored pending copy brings it back after a restart.

use amarula_proto::common::MessageKey;
use amarula_proto::e2e::{
    HistorySyncNotification, Message, PeerDataOperationRequestMessage,
    PeerDataOperationRequestResponseMessage, PeerDataOperationRequestType, ProtocolMessage,
    peer_data_operation_request_message as pdo, protocol_message,
};

use super::blob::{BlobError, BlobPurpose};
use super::cache::{Held, Nack};
use super::messaging::IncomingMessage;
use super::{AckToken, ConnectionMachine, Event, SendError};
use crate::binary::Node;
use crate::content::build::MessageRef;
use crate::content::{self, MediaRef};
use crate::history::{
    self, HistoryConversation, HistoryError, HistoryMessage, LidPn, PrivacyToken, PushName,
    SyncType,
};
use crate::jid::Jid;
use crate::media::MediaType;
use crate::persist::PendingKey;
use crate::time::Instant;

/// One part of a history chunk, handed out in order. A chunk with many messages comes as
/// several parts (at most [`Config::history_batch_messages`](super::Config) messages each,
/// a long chat split over consecutive parts); the first part carries the push names, LID
/// mappings and tokens, the last one (`last`) the acknowledgement.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistorySyncBatch {
    /// The id of the notification message that announced the chunk.
    pub message_id: String,
    /// Which history.
    pub sync_type: SyncType,
    /// The chunk's place in its sync, when given.
    pub chunk_order: Option<u32>,
    /// The sync's progress in percent, when given.
    pub progress: Option<u32>,
    /// For an on-demand chunk: the id of the
    /// [`request_history`](ConnectionMachine::request_history) it answers.
    pub request_id: Option<String>,
    /// This part's number within the chunk, from 0.
    pub part: u32,
    /// The chunk's last part.
    pub last: bool,
    /// Chats with (some of) their messages.
    pub conversations: Vec<HistoryConversation>,
    /// Push names (first part only).
    pub push_names: Vec<PushName>,
    /// LID to phone number mappings, already persisted (first part only).
    pub lid_mappings: Vec<LidPn>,
    /// Privacy tokens, for the token store (first part only).
    pub tokens: Vec<PrivacyToken>,
    /// On the last part when acks are held: confirm it with
    /// [`confirm`](ConnectionMachine::confirm) once the whole chunk is stored; only then are
    /// the notification's receipts sent.
    pub ack: Option<AckToken>,
}

impl HistorySyncBatch {
    /// How many messages this part holds.
    #[must_use]
    pub fn message_count(&self) -> usize {
        self.conversations.iter().map(|c| c.messages.len()).sum()
    }
}

/// Why a history chunk was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistorySyncError {
    /// The file could not be had, or failed its checks.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The file did not inflate or decode, or is larger than the cap.
    #[error(transparent)]
    Decode(#[from] HistoryError),
}

/// Chunks in arrival order, each with its file once it came: a chunk is handed out only
/// after every chunk announced before it (files may arrive in any order).
#[derive(Debug, Default)]
pub(crate) struct HistoryQueue {
    next: u64,
    slots: std::collections::VecDeque<(u64, HistoryJob, Option<FileResult>)>,
}

/// A history file, or why it could not be had.
type FileResult = Result<Vec<u8>, BlobError>;

/// The work waiting for a history file.
#[derive(Debug)]
pub(crate) struct HistoryJob {
    message_id: String,
    sync_type: SyncType,
    chunk_order: Option<u32>,
    progress: Option<u32>,
    request_id: Option<String>,
    /// The held receipts' token (acks held).
    ack: Option<AckToken>,
    /// The receipts to send once handed out (acks not held).
    frames: Vec<Node>,
    /// Its place in the [`HistoryQueue`].
    seq: u64,
    /// The notification's own time (unix seconds), which decides when a failing chunk is
    /// given up.
    sent_unix: u64,
}

/// What our own phone sends that history sync consumes.
pub(super) enum FromPhone {
    /// A history chunk is ready.
    Notification(HistorySyncNotification),
    /// The answer to a [`request_resend`](ConnectionMachine::request_resend).
    Resend(PeerDataOperationRequestResponseMessage),
}

/// The history-sync input a decrypted message carries, when it is one from our own phone
/// (device 0 of our own user).
pub(super) fn from_phone(msg: &IncomingMessage) -> Option<FromPhone> {
    if !msg.from_me || msg.sender.device() != 0 {
        return None;
    }
    let (inner, _) = content::unwrap(&msg.message);
    let p = inner.protocol_message.as_ref()?;
    if let Some(n) = &p.history_sync_notification {
        return Some(FromPhone::Notification(n.clone()));
    }
    let r = p.peer_data_operation_request_response_message.as_ref()?;
    (r.peer_data_operation_request_type
        == Some(PeerDataOperationRequestType::PlaceholderMessageResend as i32))
    .then(|| FromPhone::Resend(r.clone()))
}

/// The message history is asked before (for [`request_history`]).
///
/// [`request_history`]: ConnectionMachine::request_history
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OldestMessage {
    /// Its chat.
    pub chat: Jid,
    /// Its id.
    pub id: String,
    /// Sent by us.
    pub from_me: bool,
    /// When it was sent (unix seconds).
    pub timestamp: u64,
}

impl OldestMessage {
    /// The oldest message known in `chat`.
    pub fn new(chat: Jid, id: impl Into<String>, from_me: bool, timestamp: u64) -> Self {
        Self {
            chat: chat.to_non_device(),
            id: id.into(),
            from_me,
            timestamp,
        }
    }
}

impl From<&HistoryMessage> for OldestMessage {
    fn from(m: &HistoryMessage) -> Self {
        Self::new(m.chat.clone(), m.id.clone(), m.from_me, m.timestamp)
    }
}

impl From<&IncomingMessage> for OldestMessage {
    fn from(m: &IncomingMessage) -> Self {
        Self::new(m.chat.clone(), m.id.clone(), m.from_me, m.timestamp)
    }
}

/// Our phone's answer to a [`request_resend`](ConnectionMachine::request_resend): the
/// messages it had, as it stores them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResendAnswer {
    /// The id `request_resend` returned.
    pub request_id: String,
    /// The messages (empty when the phone had none of them).
    pub messages: Vec<HistoryMessage>,
    /// Answer parts that did not decode.
    pub unreadable: usize,
    /// Confirm it with [`confirm`](ConnectionMachine::confirm) once handled (acks held).
    pub ack: Option<AckToken>,
}

fn media_of(n: &HistorySyncNotification) -> Option<MediaRef> {
    let direct_path = n.direct_path.clone().filter(|p| !p.is_empty())?;
    Some(MediaRef {
        url: None,
        direct_path: Some(direct_path),
        media_key: n.media_key.clone().unwrap_or_default(),
        file_sha256: n.file_sha256.clone().unwrap_or_default(),
        file_enc_sha256: n.file_enc_sha256.clone().unwrap_or_default(),
        file_length: n.file_length.unwrap_or(0),
        media_key_timestamp: None,
    })
}

fn peer_request(request: PeerDataOperationRequestMessage) -> Message {
    Message {
        protocol_message: Some(Box::new(ProtocolMessage {
            r#type: Some(protocol_message::Type::PeerDataOperationRequestMessage as i32),
            peer_data_operation_request_message: Some(request),
            ..ProtocolMessage::default()
        })),
        ..Message::default()
    }
}

impl ConnectionMachine {
    /// Asks our phone for up to `count` messages of `oldest.chat` older than `oldest` (a
    /// peer message to the phone alone). The answer comes as [`Event::HistorySync`] parts of
    /// type [`SyncType::OnDemand`] whose `request_id` is the returned id. Fifty at a time is
    /// what the reference clients ask.
    ///
    /// # Errors
    /// Not logged in, or too many sends pending.
    pub fn request_history(
        &mut self,
        now: Instant,
        oldest: &OldestMessage,
        count: u32,
    ) -> Result<String, SendError> {
        let request = PeerDataOperationRequestMessage {
            peer_data_operation_request_type: Some(
                PeerDataOperationRequestType::HistorySyncOnDemand as i32,
            ),
            history_sync_on_demand_request: Some(pdo::HistorySyncOnDemandRequest {
                chat_jid: Some(oldest.chat.to_string()),
                oldest_msg_id: Some(oldest.id.clone()),
                oldest_msg_from_me: Some(oldest.from_me),
                on_demand_msg_count: Some(i32::try_from(count).unwrap_or(i32::MAX)),
                // Seconds, whatever the field's name says (as the phone reads it).
                oldest_msg_timestamp_ms: Some(i64::try_from(oldest.timestamp).unwrap_or(0)),
                ..pdo::HistorySyncOnDemandRequest::default()
            }),
            ..PeerDataOperationRequestMessage::default()
        };
        self.queue_peer(now, &peer_request(request))
    }

    /// Asks our phone to send again a message this device could not decrypt (a placeholder
    /// resend). The answer comes as [`Event::PlaceholderResend`] whose `request_id` is the
    /// returned id.
    ///
    /// # Errors
    /// Not logged in, or too many sends pending.
    pub fn request_resend(&mut self, now: Instant, key: &MessageRef) -> Result<String, SendError> {
        let own = self.own_identities();
        let from_me = key
            .author
            .as_ref()
            .is_none_or(|a| own.contains(&a.to_non_device()));
        let participant = key
            .author
            .as_ref()
            .filter(|_| key.chat.is_group() && !from_me)
            .map(|a| a.to_non_device().to_string());
        let request = PeerDataOperationRequestMessage {
            peer_data_operation_request_type: Some(
                PeerDataOperationRequestType::PlaceholderMessageResend as i32,
            ),
            placeholder_message_resend_request: vec![pdo::PlaceholderMessageResendRequest {
                message_key: Some(MessageKey {
                    remote_jid: Some(key.chat.to_string()),
                    from_me: Some(from_me),
                    id: Some(key.id.clone()),
                    participant,
                }),
            }],
            ..PeerDataOperationRequestMessage::default()
        };
        self.queue_peer(now, &peer_request(request))
    }

    /// Takes over what our phone sent for history sync (see [`from_phone`]).
    pub(super) fn receive_from_phone(
        &mut self,
        now: Instant,
        msg: &IncomingMessage,
        input: FromPhone,
        receipt: Option<Node>,
        nack: Nack,
        pending: Option<PendingKey>,
    ) {
        match input {
            FromPhone::Notification(n) => {
                self.receive_history(now, msg, n, receipt, nack, pending);
            }
            FromPhone::Resend(r) => self.receive_resend(now, r, receipt, nack, pending),
        }
    }

    /// A placeholder resend answer: its messages handed out, then acknowledged.
    fn receive_resend(
        &mut self,
        now: Instant,
        answer: PeerDataOperationRequestResponseMessage,
        receipt: Option<Node>,
        nack: Nack,
        pending: Option<PendingKey>,
    ) {
        let own = self.own_identities();
        let mut messages = Vec::new();
        let mut unreadable = 0;
        for part in &answer.peer_data_operation_result {
            match part
                .placeholder_message_resend_response
                .as_ref()
                .and_then(|r| r.web_message_info_bytes.as_deref())
                .and_then(|b| history::web_message(b, &own))
            {
                Some(m) => messages.push(m),
                None => unreadable += 1,
            }
        }
        let frames: Vec<Node> = receipt.into_iter().collect();
        let (ack, frames) = if self.config.hold_message_acks {
            let n = self.held.hold(
                Held {
                    frames: frames.into(),
                    nack,
                    pending,
                },
                self.config.max_held_acks,
            );
            (Some(AckToken((self.generation << 40) | n)), Vec::new())
        } else {
            (None, frames)
        };
        let request_id = answer.stanza_id.unwrap_or_default();
        tracing::debug!(%request_id, n = messages.len(), "placeholder resend answered");
        self.emit(Event::PlaceholderResend(Box::new(ResendAnswer {
            request_id,
            messages,
            unreadable,
            ack,
        })));
        for frame in &frames {
            self.send_internal(now, frame);
        }
    }

    /// A history-sync notification (`receipt`: its delivery receipt, none when
    /// redelivered from the store; `nack`: its ack for a refusal; `pending`: its stored
    /// pending key).
    fn receive_history(
        &mut self,
        now: Instant,
        msg: &IncomingMessage,
        notification: HistorySyncNotification,
        receipt: Option<Node>,
        nack: Nack,
        pending: Option<PendingKey>,
    ) {
        let mut frames: Vec<Node> = receipt.into_iter().collect();
        if let Some(own) = self.creds.device.as_ref().map(|d| d.jid.to_non_device()) {
            frames.push(
                Node::new("receipt")
                    .attr("id", msg.id.as_str())
                    .attr("type", "hist_sync")
                    .attr("to", own),
            );
        }
        let (ack, frames) = if self.config.hold_message_acks {
            let n = self.held.hold(
                Held {
                    frames: frames.into(),
                    nack,
                    pending,
                },
                self.config.max_held_acks,
            );
            (Some(AckToken((self.generation << 40) | n)), Vec::new())
        } else {
            (None, frames)
        };
        let job = HistoryJob {
            message_id: msg.id.to_string(),
            sync_type: SyncType::from_i32(notification.sync_type.unwrap_or(0)),
            chunk_order: notification.chunk_order,
            progress: notification.progress,
            request_id: notification
                .peer_data_request_session_id
                .clone()
                .filter(|s| !s.is_empty()),
            ack,
            frames,
            seq: self.history.next,
            sent_unix: msg.timestamp,
        };
        self.history.next += 1;
        tracing::debug!(id = %job.message_id, sync_type = ?job.sync_type, "history sync notification");
        let seq = job.seq;
        if let Some(inline) = notification
            .initial_hist_bootstrap_inline_payload
            .as_ref()
            .filter(|p| !p.is_empty())
        {
            let file = Ok(inline.to_vec());
            self.history.slots.push_back((seq, job, Some(file)));
        } else if let Some(media) = media_of(&notification) {
            self.request_blob(media, MediaType::History, BlobPurpose::History(seq));
            self.history.slots.push_back((seq, job, None));
        } else {
            let file = Err(BlobError::Invalid("the notification names no file".into()));
            self.history.slots.push_back((seq, job, Some(file)));
        }
        self.history_advance(now);
    }

    /// The file of the chunk `seq` arrived (or could not be had).
    pub(super) fn history_file(
        &mut self,
        now: Instant,
        seq: u64,
        file: Result<Vec<u8>, BlobError>,
    ) {
        if let Some(slot) = self.history.slots.iter_mut().find(|s| s.0 == seq) {
            slot.2 = Some(file);
        }
        self.history_advance(now);
    }

    /// Hands out the chunks at the front whose files are at hand.
    fn history_advance(&mut self, now: Instant) {
        while self.history.slots.front().is_some_and(|s| s.2.is_some()) {
            let Some((_, job, Some(file))) = self.history.slots.pop_front() else {
                break;
            };
            self.history_chunk(now, job, file);
        }
    }

    /// Decodes and hands out one chunk, or reports why not.
    fn history_chunk(
        &mut self,
        now: Instant,
        mut job: HistoryJob,
        file: Result<Vec<u8>, BlobError>,
    ) {
        let bytes = match file {
            Ok(b) => b,
            Err(e) => return self.history_failed(now, job, e.into()),
        };
        let own = self.own_identities();
        let chunk = match history::decode(&bytes, &own, self.config.max_history_inflated) {
            Ok(c) => c,
            Err(e) => return self.history_failed(now, job, e.into()),
        };
        tracing::debug!(
            id = %job.message_id,
            conversations = chunk.conversations.len(),
            messages = chunk.message_count(),
            mappings = chunk.lid_mappings.len(),
            "history chunk decoded"
        );
        // The mappings reach the store (and the messaging layer's table) before anything
        // that could depend on them, then the privacy tokens the phone held (by the contact's
        // LID when known; a token without its issue time cannot be judged and is left out).
        self.learn_lid_pairs(
            chunk
                .lid_mappings
                .iter()
                .map(|m| (m.lid.clone(), m.phone.clone())),
        );
        for t in &chunk.tokens {
            let Some(timestamp) = t.timestamp.filter(|_| !t.token.is_empty()) else {
                continue;
            };
            let key = self.session_msg.token_key(&t.jid.to_non_device());
            self.store_tc_token(
                &key,
                crate::persist::TcToken {
                    token: t.token.to_vec(),
                    timestamp,
                },
            );
        }
        let parts = split(
            chunk.conversations,
            self.config.history_batch_messages.max(1),
        );
        let count = parts.len();
        let mut first = Some((chunk.push_names, chunk.lid_mappings, chunk.tokens));
        for (i, conversations) in parts.into_iter().enumerate() {
            let last = i + 1 == count;
            let (push_names, lid_mappings, tokens) = first.take().unwrap_or_default();
            self.emit(Event::HistorySync(Box::new(HistorySyncBatch {
                message_id: job.message_id.clone(),
                sync_type: chunk.sync_type,
                chunk_order: chunk.chunk_order.or(job.chunk_order),
                progress: chunk.progress.or(job.progress),
                request_id: job.request_id.clone(),
                part: u32::try_from(i).unwrap_or(u32::MAX),
                last,
                conversations,
                push_names,
                lid_mappings,
                tokens,
                ack: if last { job.ack.take() } else { None },
            })));
        }
        for frame in std::mem::take(&mut job.frames) {
            self.send_internal(now, &frame);
        }
    }

    /// Reports a chunk that cannot be had or read. A young one is released without a word
    /// to the server (the stored pending copy redoes it after a restart); one older than
    /// [`history_give_up_after`](super::Config::history_give_up_after) is acknowledged and
    /// forgotten, so that a chunk that can never be read does not come back forever.
    fn history_failed(&mut self, now: Instant, job: HistoryJob, error: HistorySyncError) {
        let age = self.clock.unix_secs(now).saturating_sub(job.sent_unix);
        let gave_up = age >= self.config.history_give_up_after.as_secs();
        tracing::warn!(id = %job.message_id, %error, gave_up, "history chunk not applied");
        let held = job
            .ack
            .and_then(|token| self.held.take(token.0 & ((1 << 40) - 1)));
        let mut frames = job.frames;
        if gave_up {
            if let Some(held) = held {
                if let Some(key) = held.pending {
                    self.emit(Event::Persist(crate::persist::Change::PendingDone(key)));
                }
                frames.extend(held.frames);
            }
        } else {
            frames.clear();
        }
        self.emit(Event::HistorySyncFailed {
            message_id: job.message_id,
            sync_type: job.sync_type,
            error,
            gave_up,
        });
        for frame in &frames {
            self.send_internal(now, frame);
        }
    }
}

/// Splits conversations into parts of at most `max` messages (at least one part, a chat
/// without messages counting as nothing).
fn split(conversations: Vec<HistoryConversation>, max: usize) -> Vec<Vec<HistoryConversation>> {
    let mut parts = vec![Vec::new()];
    let mut room = max;
    for mut conv in conversations {
        loop {
            if room == 0 && !conv.messages.is_empty() {
                parts.push(Vec::new());
                room = max;
            }
            if conv.messages.len() <= room {
                room -= conv.messages.len();
                if let Some(p) = parts.last_mut() {
                    p.push(conv);
                }
                break;
            }
            let rest = conv.messages.split_off(room);
            let head = HistoryConversation {
                messages: std::mem::replace(&mut conv.messages, rest),
                ..conv.clone_meta()
            };
            if let Some(p) = parts.last_mut() {
                p.push(head);
            }
            room = 0;
        }
    }
    parts
}

trait CloneMeta {
    fn clone_meta(&self) -> Self;
}

impl CloneMeta for HistoryConversation {
    /// The chat's description without its messages.
    fn clone_meta(&self) -> Self {
        let mut c = Self {
            id: self.id.clone(),
            raw_id: self.raw_id.clone(),
            name: self.name.clone(),
            unread_count: self.unread_count,
            marked_as_unread: self.marked_as_unread,
            archived: self.archived,
            pinned: self.pinned,
            mute_end_ms: self.mute_end_ms,
            ephemeral_expiration: self.ephemeral_expiration,
            last_message_timestamp: self.last_message_timestamp,
            pn_jid: self.pn_jid.clone(),
            lid_jid: self.lid_jid.clone(),
            end_of_history: self.end_of_history,
            messages: Vec::new(),
        };
        c.messages.shrink_to_fit();
        c
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::history::HistoryMessage;
    use crate::jid::Jid;

    fn conv(n: usize) -> HistoryConversation {
        let chat: Jid = "1@s.whatsapp.net".parse().unwrap();
        HistoryConversation {
            id: Some(chat.clone()),
            messages: (0..n)
                .map(|i| HistoryMessage {
                    id: i.to_string(),
                    chat: chat.clone(),
                    sender: chat.clone(),
                    from_me: false,
                    timestamp: 0,
                    push_name: None,
                    status: None,
                    stub_type: None,
                    order_id: None,
                    content: content::Content::Unknown,
                    wrappers: content::Wrappers::default(),
                    context: None,
                    message: None,
                    raw: Bytes::new(),
                })
                .collect(),
            ..HistoryConversation::default()
        }
    }

    #[test]
    fn split_keeps_every_message_in_order() {
        let parts = split(vec![conv(5), conv(0), conv(7)], 4);
        let counts: Vec<usize> = parts
            .iter()
            .map(|p| p.iter().map(|c| c.messages.len()).sum())
            .collect();
        assert_eq!(counts, vec![4, 4, 4]);
        let ids: Vec<String> = parts
            .iter()
            .flatten()
            .flat_map(|c| c.messages.iter().map(|m| m.id.clone()))
            .collect();
        let want: Vec<String> = (0..5).chain(0..7).map(|i| i.to_string()).collect();
        assert_eq!(ids, want);
        assert_eq!(split(Vec::new(), 3).len(), 1);
        assert_eq!(split(vec![conv(3)], 3).len(), 1);
        let parts = split(vec![conv(4), conv(1)], 4);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().flatten().all(|c| !c.messages.is_empty()));
    }
}
