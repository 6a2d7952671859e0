//! History sync end to end through the real drivers (tokio and smol) against the simulator:
//! the phone's initial history (a blob on the simulator's media host, encrypted with the
//! history keys) arrives complete and typed, its LID mappings reach the store, the
//! `hist_sync` receipt follows the application's confirmation only; a restart before the
//! confirmation hands the chunk out again, once; a tampered blob and an oversized one are
//! reported, not applied and not acknowledged. Every wait is bounded.

use amarula::MessageRef;
use amarula::core::content::Content;
use amarula::core::history::SyncType;
use amarula::core::jid::Jid;
use amarula::core::machine::{
    BlobError, Confirm, Event, HistorySyncBatch, HistorySyncError, IncomingMessage, OldestMessage,
};
use amarula::store::MemoryStore;
use amarula::{ClientConfig, ClientEvent};
use amarula_core::history::HistoryError;
use amarula_tests::e2e::{Device, Env, Ready, sim_wait};
use amarula_tests::runtimes::Runtime as Rt;
use amarula_tests::sim::history::{self, Delivery, HISTORY_TOKEN};
use amarula_tests::sim::{SimConfig, SimEvent, Subscription};

/// Devices paired by QR get the initial history; linked ones (most tests) do not.
fn history_env() -> Env {
    Env::with(SimConfig {
        initial_history: true,
        ..SimConfig::default()
    })
}

/// Small parts, so that the bootstrap comes in several; one retry of a blob fetch.
fn config(env: &Env) -> ClientConfig {
    let mut config = env.config();
    config.machine.history_batch_messages = 3;
    config.media.attempts = 2;
    config
}

/// A client on `store`, once its prekeys are up (`fresh`) or once logged in.
async fn start<R: Rt>(config: ClientConfig, store: MemoryStore, fresh: bool) -> Device {
    let ready = if fresh {
        Ready::PreKeysUploaded
    } else {
        Ready::LoggedIn
    };
    Device::connect::<R, _>("dev", config, store, ready).await
}

/// What the history tests wait for on a device.
trait HistoryWaits {
    /// Every part of the chunk announced by `message_id`, up to its last; none confirmed.
    /// Panics on any other history event (a chunk seen twice, a failure) and on messages.
    async fn chunk(&mut self, message_id: &str) -> Vec<HistorySyncBatch>;
    /// Every part of the next chunk (announced by `message_id` when given).
    async fn next_chunk(&mut self, message_id: Option<&str>) -> Vec<HistorySyncBatch>;
    /// The next history failure (and whether it was given up); panics when a part is
    /// applied instead.
    async fn failure(&mut self) -> (String, HistorySyncError, bool);
    /// Confirms the chunk through its last part, the only one holding the ack.
    async fn confirm_last(&self, parts: &[HistorySyncBatch]);
    /// The next message (confirmed); panics when history comes instead.
    async fn message(&mut self) -> IncomingMessage;
}

impl HistoryWaits for Device {
    async fn chunk(&mut self, message_id: &str) -> Vec<HistorySyncBatch> {
        self.next_chunk(Some(message_id)).await
    }

    async fn next_chunk(&mut self, message_id: Option<&str>) -> Vec<HistorySyncBatch> {
        let mut parts = Vec::new();
        loop {
            let batch = self
                .until("a history part", |_, e| match e {
                    ClientEvent::Event(Event::HistorySync(b)) => Some((**b).clone()),
                    ClientEvent::Event(Event::HistorySyncFailed { error, .. }) => {
                        panic!("history failed: {error}")
                    }
                    ClientEvent::Event(Event::Message(m)) => {
                        panic!("the notification was handed out as a message: {m:?}")
                    }
                    _ => None,
                })
                .await;
            let want = message_id.or_else(|| {
                parts
                    .first()
                    .map(|p: &HistorySyncBatch| p.message_id.as_str())
            });
            if let Some(want) = want {
                assert_eq!(batch.message_id, want, "chunks in order");
            }
            assert_eq!(batch.part as usize, parts.len(), "parts in order");
            let last = batch.last;
            parts.push(batch);
            if last {
                return parts;
            }
        }
    }

    async fn failure(&mut self) -> (String, HistorySyncError, bool) {
        self.until("a history failure", |_, e| match e {
            ClientEvent::Event(Event::HistorySyncFailed {
                message_id,
                error,
                gave_up,
                ..
            }) => Some((message_id.clone(), error.clone(), *gave_up)),
            ClientEvent::Event(Event::HistorySync(b)) => panic!("applied: {b:?}"),
            _ => None,
        })
        .await
    }

    async fn confirm_last(&self, parts: &[HistorySyncBatch]) {
        let token = parts
            .last()
            .and_then(|p| p.ack)
            .expect("the last part holds the ack");
        assert!(parts[..parts.len() - 1].iter().all(|p| p.ack.is_none()));
        self.client.confirm(token, Confirm::Ack).await.unwrap();
    }

    async fn message(&mut self) -> IncomingMessage {
        self.until("a message", |_, e| match e {
            ClientEvent::Event(Event::Message(m)) => Some((**m).clone()),
            ClientEvent::Event(Event::HistorySync(b)) => panic!("history again: {b:?}"),
            _ => None,
        })
        .await
    }
}

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

/// Waits for the `hist_sync` receipt of `id`.
async fn hist_sync_receipt(rx: &mut Subscription, id: &str) {
    sim_wait(rx, "hist_sync receipt", |e| match e {
        SimEvent::StanzaReceived { node, .. }
            if node.tag == "receipt" && node.attr_str("type") == Some("hist_sync") =>
        {
            (node.attr_str("id") == Some(id)).then_some(())
        }
        _ => None,
    })
    .await;
}

/// Has the phone send a marker text to the device's account and waits for it on the device:
/// everything the device sent before lies in `rx` before the marker's delivery receipt.
/// Returns whether a `hist_sync` receipt came in between.
async fn hist_sync_before_marker(
    env: &Env,
    phone: &str,
    dev: &mut Device,
    rx: &mut Subscription,
) -> bool {
    let account = env.sim.account(phone).unwrap();
    let marker = account
        .phone_send(
            &account.jid(),
            &amarula_proto::e2e::Message {
                conversation: Some("marker".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let m = dev.message().await;
    assert_eq!(m.id, marker);
    let mut seen = false;
    sim_wait(rx, "the marker's receipt", |e| match e {
        SimEvent::StanzaReceived { node, .. } if node.tag == "receipt" => {
            if node.attr_str("type") == Some("hist_sync") {
                seen = true;
            }
            (node.attr_str("id") == Some(marker.as_str())).then_some(())
        }
        _ => None,
    })
    .await;
    seen
}

fn all_messages(parts: &[HistorySyncBatch]) -> Vec<(String, String)> {
    parts
        .iter()
        .flat_map(|p| p.conversations.iter())
        .flat_map(|c| c.messages.iter())
        .map(|m| (m.chat.to_string(), m.id.clone()))
        .collect()
}

fn check_bootstrap(parts: &[HistorySyncBatch]) {
    assert!(parts.len() >= 3, "7 messages in parts of at most 3");
    for p in parts {
        assert_eq!(p.sync_type, SyncType::InitialBootstrap);
        assert!(p.message_count() <= 3);
    }
    let mut ids: Vec<String> = all_messages(parts).into_iter().map(|(_, id)| id).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["H-A1", "H-A2", "H-A3", "H-A4", "H-B1", "H-G1", "H-G2"]
    );
    let msgs: Vec<_> = parts
        .iter()
        .flat_map(|p| p.conversations.iter())
        .flat_map(|c| c.messages.iter())
        .collect();
    let by_id = |id: &str| *msgs.iter().find(|m| m.id == id).unwrap();
    assert!(matches!(&by_id("H-A1").content, Content::Text { text, .. } if text == "hello"));
    assert!(!by_id("H-A1").from_me);
    assert!(by_id("H-A2").from_me);
    assert!(matches!(&by_id("H-A3").content, Content::Reaction(_)));
    assert!(matches!(&by_id("H-A4").content, Content::Location(_)));
    assert_eq!(by_id("H-G2").sender, jid("90002@lid"));
    assert_eq!(by_id("H-G1").sender, jid("15550001111@s.whatsapp.net"));
    assert_eq!(by_id("H-G1").chat, jid("120363000000000001@g.us"));
    let convs: Vec<_> = parts.iter().flat_map(|p| p.conversations.iter()).collect();
    let bob = convs
        .iter()
        .find(|c| c.id == Some(jid("90002@lid")))
        .unwrap();
    assert!(bob.archived);
    assert_eq!(bob.pinned, Some(1_700_000_100));
    assert_eq!(bob.mute_end_ms, Some(1_900_000_000_000));
    let group = convs
        .iter()
        .find(|c| c.id == Some(jid("120363000000000001@g.us")))
        .unwrap();
    assert_eq!(group.name.as_deref(), Some("History Group"));
    // Mappings and tokens come with the first part only.
    let first = &parts[0];
    assert!(
        parts[1..]
            .iter()
            .all(|p| p.lid_mappings.is_empty() && p.tokens.is_empty())
    );
    let mut pairs: Vec<(String, String)> = first
        .lid_mappings
        .iter()
        .map(|m| (m.lid.to_string(), m.phone.to_string()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("90001@lid".into(), "15550001111@s.whatsapp.net".into()),
            ("90002@lid".into(), "15550002222@s.whatsapp.net".into()),
            ("90003@lid".into(), "15550003333@s.whatsapp.net".into()),
        ]
    );
    assert_eq!(first.tokens.len(), 1);
    assert_eq!(first.tokens[0].jid, jid("15550001111@s.whatsapp.net"));
    assert_eq!(&first.tokens[0].token[..], HISTORY_TOKEN);
}

fn check_store(store: &MemoryStore) {
    // The token the phone held for Alice is kept under her LID (mapped in the same chunk).
    let token = store
        .tc_token(&jid("90001@lid"))
        .expect("the history's privacy token stored");
    assert_eq!(token.token, HISTORY_TOKEN);
    assert_eq!(token.timestamp, 1_700_000_000);
    for (pn, lid, _) in history::HISTORY_CONTACTS {
        assert_eq!(
            store.phone_for_lid(&jid(&format!("{lid}@lid"))),
            Some(jid(&format!("{pn}@s.whatsapp.net"))),
            "mapping of {lid} stored"
        );
    }
}

async fn initial_history_arrives_complete<R: Rt>(env: &Env) {
    let phone = "15557770001";
    let store = env.linked(phone, 61);
    let mut dev = start::<R>(config(env), store.clone(), true).await;
    let mut rx = env.sim.subscribe();
    let account = env.sim.account(phone).unwrap();
    let sent = account.send_initial_history().unwrap();
    let parts = dev.chunk(&sent[0].message_id).await;
    check_bootstrap(&parts);
    check_store(&store);
    dev.confirm_last(&parts).await;
    hist_sync_receipt(&mut rx, &sent[0].message_id).await;
    let names = dev.chunk(&sent[1].message_id).await;
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].sync_type, SyncType::PushName);
    let mut got: Vec<(String, String)> = names[0]
        .push_names
        .iter()
        .map(|p| (p.jid.to_string(), p.name.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("15550001111@s.whatsapp.net".into(), "Alice".into()),
            ("15550002222@s.whatsapp.net".into(), "Bob".into()),
            ("15550003333@s.whatsapp.net".into(), "Carol".into()),
        ]
    );
    dev.confirm_last(&names).await;
    hist_sync_receipt(&mut rx, &sent[1].message_id).await;
    assert!(store.pending().is_empty(), "nothing left pending");
    // The inline bootstrap needs no download.
    let (_, downloads) = env.sim.media().counts();
    let inline = account
        .send_history(
            &history::sample_history(),
            &Delivery {
                inline: true,
                ..Delivery::default()
            },
        )
        .unwrap();
    assert!(inline.direct_path.is_none());
    let parts = dev.chunk(&inline.message_id).await;
    check_bootstrap(&parts);
    assert_eq!(
        env.sim.media().counts().1,
        downloads,
        "no download for inline"
    );
    dev.confirm_last(&parts).await;
    hist_sync_receipt(&mut rx, &inline.message_id).await;
    dev.stop().await;
}

async fn a_restart_mid_sync_redoes_it_once<R: Rt>(env: &Env) {
    let phone = "15557770002";
    let store = env.linked(phone, 62);
    let mut rx = env.sim.subscribe();
    let mut dev = start::<R>(config(env), store.clone(), true).await;
    let account = env.sim.account(phone).unwrap();
    let sent = account
        .send_history(&history::sample_history(), &Delivery::default())
        .unwrap();
    // Handed out, never confirmed: the process "dies" mid-sync.
    let first = dev.chunk(&sent.message_id).await;
    check_bootstrap(&first);
    assert_eq!(store.pending().len(), 1, "the notification is kept");
    dev.stop().await;
    // The restart hands the same chunk out again, complete.
    let mut dev = start::<R>(config(env), store.clone(), false).await;
    let again = dev.chunk(&sent.message_id).await;
    assert_eq!(all_messages(&again), all_messages(&first));
    dev.confirm_last(&again).await;
    hist_sync_receipt(&mut rx, &sent.message_id).await;
    assert!(store.pending().is_empty());
    check_store(&store);
    dev.stop().await;
    // Confirmed once: the next start brings nothing back (the marker comes first and alone).
    let mut dev = start::<R>(config(env), store.clone(), false).await;
    let mut rx = env.sim.subscribe();
    assert!(!hist_sync_before_marker(env, phone, &mut dev, &mut rx).await);
    dev.stop().await;
}

/// `phone`'s phone sends the sample history with a blob that fails its checks.
fn send_tampered(env: &Env, phone: &str) -> history::SentChunk {
    let account = env.sim.account(phone).unwrap();
    account
        .send_history(
            &history::sample_history(),
            &Delivery {
                tamper: true,
                ..Delivery::default()
            },
        )
        .unwrap()
}

async fn a_tampered_blob_is_reported_not_acked<R: Rt>(env: &Env) {
    let phone = "15557770003";
    let store = env.linked(phone, 63);
    let mut dev = start::<R>(config(env), store.clone(), true).await;
    let mut rx = env.sim.subscribe();
    let sent = send_tampered(env, phone);
    let (id, error, gave_up) = dev.failure().await;
    assert_eq!(id, sent.message_id);
    assert!(
        matches!(error, HistorySyncError::Blob(BlobError::Invalid(_))),
        "{error:?}"
    );
    assert!(!gave_up, "a chunk of today is tried again");
    // Not applied: no mapping stored; not acked: no hist_sync receipt, still pending.
    assert_eq!(store.phone_for_lid(&jid("90003@lid")), None);
    assert!(!hist_sync_before_marker(env, phone, &mut dev, &mut rx).await);
    assert_eq!(store.pending().len(), 1);
    dev.stop().await;
}

/// A chunk older than `history_give_up_after` (here: any) that fails is acknowledged and
/// forgotten, so that it does not come back after every restart.
async fn a_failing_chunk_past_its_time_is_given_up<R: Rt>(env: &Env) {
    let phone = "15557770008";
    let store = env.linked(phone, 68);
    let mut cfg = config(env);
    cfg.machine.history_give_up_after = std::time::Duration::ZERO;
    let mut dev = start::<R>(cfg, store.clone(), true).await;
    let mut rx = env.sim.subscribe();
    let sent = send_tampered(env, phone);
    let (id, _, gave_up) = dev.failure().await;
    assert_eq!(id, sent.message_id);
    assert!(gave_up);
    hist_sync_receipt(&mut rx, &sent.message_id).await;
    assert!(store.pending().is_empty(), "{:?}", store.pending());
    assert_eq!(
        store.phone_for_lid(&jid("90003@lid")),
        None,
        "nothing applied"
    );
    dev.stop().await;
}

async fn an_oversized_chunk_is_refused<R: Rt>(env: &Env) {
    let phone = "15557770004";
    let store = env.linked(phone, 64);
    let mut cfg = config(env);
    cfg.machine.max_history_inflated = 4096;
    let mut dev = start::<R>(cfg, store.clone(), true).await;
    let mut rx = env.sim.subscribe();
    let account = env.sim.account(phone).unwrap();
    let sent = account
        .send_history(
            &history::bulk_history(200, SyncType::Recent),
            &Delivery::default(),
        )
        .unwrap();
    let (id, error, gave_up) = dev.failure().await;
    assert_eq!(id, sent.message_id);
    assert_eq!(
        error,
        HistorySyncError::Decode(HistoryError::TooLarge { limit: 4096 })
    );
    assert!(!gave_up);
    assert!(!hist_sync_before_marker(env, phone, &mut dev, &mut rx).await);
    dev.stop().await;
}

async fn on_demand_history_arrives_matched<R: Rt>(env: &Env) {
    let phone = "15557770005";
    let store = env.linked(phone, 65);
    let mut dev = start::<R>(config(env), store.clone(), true).await;
    let mut rx = env.sim.subscribe();
    let alice = jid("15550001111@s.whatsapp.net");
    let oldest = OldestMessage::new(alice.clone(), "H-A1", false, 1_700_000_010);
    let request = dev.client.request_history(&oldest, 5).await.unwrap();
    // A peer message to our own phone, pushed with priority.
    let stanza = sim_wait(&mut rx, "the request stanza", |e| match e {
        SimEvent::StanzaReceived { node, .. }
            if node.tag == "message" && node.attr_str("id") == Some(request.as_str()) =>
        {
            Some(node.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(stanza.attr_str("category"), Some("peer"));
    assert_eq!(stanza.attr_str("push_priority"), Some("high_force"));
    assert_eq!(
        stanza.get_attr("to").map(ToString::to_string).as_deref(),
        Some("15557770005@s.whatsapp.net")
    );
    let parts = dev.next_chunk(None).await;
    assert_eq!(parts.len(), 2, "5 messages in parts of 3");
    for p in &parts {
        assert_eq!(p.sync_type, SyncType::OnDemand);
        assert_eq!(p.request_id.as_deref(), Some(request.as_str()));
    }
    let got: Vec<(String, String)> = all_messages(&parts);
    let want: Vec<(String, String)> = (1..=5)
        .map(|k| (alice.to_string(), format!("OD-H-A1-{k}")))
        .collect();
    assert_eq!(got, want);
    let timestamps: Vec<u64> = parts
        .iter()
        .flat_map(|p| p.conversations.iter())
        .flat_map(|c| c.messages.iter().map(|m| m.timestamp))
        .collect();
    assert!(timestamps.iter().all(|t| *t < 1_700_000_010));
    dev.confirm_last(&parts).await;
    hist_sync_receipt(&mut rx, &parts[0].message_id).await;
    assert!(store.pending().is_empty());
    dev.stop().await;
}

async fn a_placeholder_resend_is_answered<R: Rt>(env: &Env) {
    let phone = "15557770006";
    let store = env.linked(phone, 66);
    let mut dev = start::<R>(config(env), store.clone(), true).await;
    let alice = jid("15550001111@s.whatsapp.net");
    let request = dev
        .client
        .request_resend(&MessageRef::theirs(alice.clone(), "H-A1", alice.clone()))
        .await
        .unwrap();
    let answer = dev
        .until("the resend answer", |_, e| match e {
            ClientEvent::Event(Event::PlaceholderResend(a)) => Some((**a).clone()),
            ClientEvent::Event(Event::Message(m)) => panic!("handed out as a message: {m:?}"),
            _ => None,
        })
        .await;
    assert_eq!(answer.request_id, request);
    assert_eq!(answer.unreadable, 0);
    assert_eq!(answer.messages.len(), 1);
    let m = &answer.messages[0];
    assert_eq!(m.id, "H-A1");
    assert_eq!(m.chat, alice);
    assert!(matches!(&m.content, Content::Text { text, .. } if text == "hello"));
    let mut rx = env.sim.subscribe();
    dev.client
        .confirm(answer.ack.expect("held"), Confirm::Ack)
        .await
        .unwrap();
    // The answer's receipt leaves only once it is confirmed, after its stored copy is gone.
    sim_wait(&mut rx, "the answer's receipt", |e| match e {
        SimEvent::StanzaReceived { node, .. } if node.tag == "receipt" => Some(()),
        _ => None,
    })
    .await;
    assert!(store.pending().is_empty());
    dev.stop().await;
}

async fn history_follows_qr_pairing<R: Rt>(env: &Env) {
    let account = env.sim.add_account("15557770007");
    let store = MemoryStore::new();
    let mut dev = Device::connect::<R, _>("dev", config(env), store.clone(), Ready::Started).await;
    let qr = dev
        .until("a QR", |_, e| match e {
            ClientEvent::Event(Event::PairingQr { qr, .. }) => Some(qr.clone()),
            _ => None,
        })
        .await;
    account.scan_qr(&qr).unwrap();
    // After the restart (515) and the key upload, the bootstrap, then the push names.
    let parts = dev.next_chunk(None).await;
    check_bootstrap(&parts);
    check_store(&store);
    dev.confirm_last(&parts).await;
    let names = dev.next_chunk(None).await;
    assert_eq!(names[0].sync_type, SyncType::PushName);
    assert_eq!(names[0].push_names.len(), 3);
    dev.confirm_last(&names).await;
    dev.stop().await;
}

amarula_tests::on_both_drivers!(
    history_env();
    initial_history_arrives_complete,
    a_restart_mid_sync_redoes_it_once,
    a_tampered_blob_is_reported_not_acked,
    an_oversized_chunk_is_refused,
    a_failing_chunk_past_its_time_is_given_up,
    on_demand_history_arrives_matched,
    a_placeholder_resend_is_answered,
    history_follows_qr_pairing,
);
