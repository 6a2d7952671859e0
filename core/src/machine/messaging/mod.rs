//! End-to-end encrypted messaging on top of the connection (SESSION.md §7–§10, §13): prekeys,
//! device lists, prekey bundles, group metadata, sending (1:1 fan-out and sender keys),
//! receiving, and retry receipts both ways.
//!
//! The state lives in [`Messaging`], part of the [`Session`](super::Session), so it outlives a
//! connection. It holds only the Signal records it has used ([`Records`]); the rest is asked
//! of the store with [`Event::Load`] and arrives through
//! [`ConnectionMachine::provide`]. Work waits for what it needs without holding up other work:
//! a send waits for its recipient's device list and bundles, an incoming message for its
//! sender's session; sends to other chats go on. Every record a step changes leaves as
//! [`Event::Persist`] before the frame that depends on it.

mod compose;
mod groups;
mod lid;
mod media;
mod nodes;
mod receive;
mod records;
mod send;
mod tctoken;
mod types;

use std::collections::{HashMap, HashSet, VecDeque};

pub use compose::SentPoll;
pub(crate) use lid::pair_props_lid_migrated;
pub use types::{DecryptError, IncomingMessage, MessagingError, UndecryptableMessage};

use self::nodes::{device_address, user_of};
use self::receive::Parked;
use self::records::Records;
use self::send::SendJob;
use super::{ConnectionMachine, Event, IqKind, IqRequest, IqResult};
use crate::binary::Node;
use crate::content::SecretRecord;
use crate::jid::Jid;
use crate::persist::{
    Change, DeviceList, LoadRequest, Loaded, PendingKey, PendingMessage, SecretKey,
};
use crate::signal::{PreKey, SenderKeyRecord, SessionRecord};
use crate::time::Instant;

/// What a messaging IQ was for.
#[derive(Debug, Clone)]
enum MsgIq {
    Usync(Vec<Jid>),
    Bundles(Vec<Jid>),
    Group(Jid),
    PreKeyCount,
    PreKeyUpload(u32),
    MediaConn,
    /// Our privacy token issued to a contact (fire and forget).
    PrivacyToken,
}

/// The messaging state of a session.
#[derive(Default, Clone)]
pub(crate) struct Messaging {
    sessions: Records<Jid, SessionRecord>,
    sender_keys: Records<(Jid, Jid), SenderKeyRecord>,
    prekeys: Records<u32, PreKey>,
    devices: Records<Jid, DeviceList>,
    /// Message secrets (polls, events) by message, for the add-ons that refer to them.
    secrets: Records<SecretKey, SecretRecord>,
    /// LID addressing: the other identity of each user (PN user -> LID user and back).
    lids: Records<Jid, Jid>,
    /// Privacy tokens contacts gave us, by contact user (LID when known).
    tc_tokens: Records<Jid, crate::persist::TcToken>,
    /// When we last issued our token to each contact (unix seconds; in memory, as the peers).
    tc_issued: HashMap<Jid, u64>,
    /// Presence subscriptions waiting for the contact's token (or LID) to be loaded.
    subscribes: VecDeque<Jid>,
    /// The peer of each recent 1:1 send, by message id, for a 463 ack.
    dm_sent: HashMap<String, Jid>,
    dm_sent_order: VecDeque<String>,
    /// The media hosts and upload token, while fresh, and whether a request is out.
    media_conn: Option<crate::media::MediaConn>,
    media_conn_inflight: bool,
    /// Decrypted poll votes waiting for their poll's secret to be loaded (already stored as
    /// pending, their acks held).
    votes: VecDeque<Box<IncomingMessage>>,
    /// Group participants (user JIDs), until a `w:gp2` notification.
    groups: HashMap<Jid, Vec<Jid>>,
    /// Groups in `addressing_mode="lid"` (from their metadata).
    lid_groups: HashSet<Jid>,
    /// Per group, the devices that have our sender key (in memory: after a restart every
    /// device gets it again once, which is harmless).
    sk_memory: HashMap<Jid, HashSet<Jid>>,
    sends: VecDeque<SendJob>,
    incoming: VecDeque<Parked>,
    usync_inflight: HashSet<Jid>,
    bundles_inflight: HashSet<Jid>,
    groups_inflight: HashSet<Jid>,
    /// Devices whose bundle could not be fetched: skipped by the sends waiting now.
    bundle_failed: HashSet<Jid>,
    /// Users whose device list query failed, and why: the sends waiting now fail.
    usync_failed: HashMap<Jid, String>,
    /// Groups whose metadata query failed, and why.
    group_failed: HashMap<Jid, String>,
    iqs: HashMap<u64, MsgIq>,
    /// Retry receipts sent per (message id, sender).
    retry_counts: HashMap<String, u8>,
    retry_order: VecDeque<String>,
    /// Pending messages from the store, handed out again at the next login.
    restored: Vec<PendingMessage>,
    /// Sent messages the server never acknowledged, sent again at the next login.
    outbox: Vec<super::SentMessage>,
    /// Sends not relayed yet when the connection ended, taken up again at the next login.
    carried: Vec<SendJob>,
    /// Recently delivered messages (chat, sender, id), so a copy sent again (same id) is not
    /// handed out twice.
    /// Each key is kept as the first 16 bytes of its SHA-256: fixed-size entries, no heap per
    /// message, and no pair of keys a sender could make collide.
    delivered: HashSet<DeliveredKey>,
    delivered_order: VecDeque<DeliveredKey>,
    prekey_upload_inflight: bool,
    /// One-time prekeys of the upload under way still to send (in batches of
    /// `prekey_upload_batch`), and those the server has taken so far.
    prekey_upload_left: u32,
    prekey_upload_done: u32,
    /// The phash of recent group sends, by message id, to compare with the server's ack.
    group_phash: HashMap<String, (Jid, String)>,
    group_phash_order: VecDeque<String>,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging")
            .field("sessions", &self.sessions.len())
            .field("sender_keys", &self.sender_keys.len())
            .field("sends", &self.sends.len())
            .field("incoming", &self.incoming.len())
            .finish_non_exhaustive()
    }
}

impl Messaging {
    pub(crate) fn restore_pending(&mut self, pending: Vec<PendingMessage>) {
        for p in &pending {
            self.remember_delivered(delivered_key_of(&p.id));
        }
        self.restored.extend(pending);
    }

    pub(crate) fn restore_outbox(&mut self, unacked: Vec<super::SentMessage>) {
        for m in unacked {
            if !self.outbox.iter().any(|o| o.id == m.id) {
                self.outbox.push(m);
            }
        }
    }

    /// Remembers a delivered message (its digest, [`pending_key`]); false when it was
    /// already delivered.
    pub(crate) fn remember_delivered(&mut self, key: DeliveredKey) -> bool {
        if !self.delivered.insert(key) {
            return false;
        }
        self.delivered_order.push_back(key);
        while self.delivered_order.len() > 4096 {
            if let Some(old) = self.delivered_order.pop_front() {
                self.delivered.remove(&old);
            }
        }
        true
    }

    /// Records held in memory (for [`Stats`](super::Stats)).
    pub(crate) fn held_records(&self) -> usize {
        self.sessions.len()
            + self.sender_keys.len()
            + self.prekeys.len()
            + self.devices.len()
            + self.secrets.len()
            + self.lids.len()
    }

    pub(crate) fn waiting(&self) -> usize {
        self.sends.len()
            + self.incoming.len()
            + self.carried.len()
            + self.outbox.len()
            + self.votes.len()
    }
}

/// A delivered message's key (`chat|sender|id`) in the duplicate check: its SHA-256, cut.
pub(crate) type DeliveredKey = [u8; 16];

/// The key of a delivered message: `chat|sender|id` hashed (SHA-256 cut to 16 bytes, the
/// duplicate check's entry) and those bytes in base64url as its pending key (22 characters,
/// held inline). Nothing is allocated: the parts are streamed into the hash.
pub(crate) fn pending_key(chat: &Jid, sender: &Jid, id: &str) -> (DeliveredKey, PendingKey) {
    use base64::Engine as _;
    use sha2::Digest as _;
    /// Streams formatted text into the hash.
    struct Hashing(sha2::Sha256);
    impl std::fmt::Write for Hashing {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.update(s.as_bytes());
            Ok(())
        }
    }
    let mut h = Hashing(sha2::Sha256::new());
    let _ = std::fmt::write(&mut h, format_args!("{chat}|{sender}|{id}"));
    let digest = h.0.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    let mut text = [0u8; 22];
    let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(key, &mut text)
        .unwrap_or(0);
    let text = std::str::from_utf8(&text[..written]).unwrap_or_default();
    (key, PendingKey::new(text))
}

/// The duplicate-check entry of a stored pending key: the bytes a [`pending_key`] carries,
/// or, for a key of the older `chat|sender|id` form, its SHA-256 cut (the same entry).
fn delivered_key_of(pending: &str) -> DeliveredKey {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut key = [0u8; 16];
    if pending.len() == 22 {
        let mut bytes = [0u8; 18];
        if let Ok(16) =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(pending, &mut bytes)
        {
            key.copy_from_slice(&bytes[..16]);
            return key;
        }
    }
    key.copy_from_slice(&sha2::Sha256::digest(pending.as_bytes())[..16]);
    key
}

/// Loads being gathered during one step.
#[derive(Default)]
struct LoadBatch(LoadRequest);

impl LoadBatch {
    fn session(&mut self, m: &mut Messaging, addr: &Jid) {
        if m.sessions.start_loading(addr) {
            self.0.sessions.push(addr.clone());
        }
    }
    fn sender_key(&mut self, m: &mut Messaging, key: &(Jid, Jid)) {
        if m.sender_keys.start_loading(key) {
            self.0.sender_keys.push(key.clone());
        }
    }
    fn prekey(&mut self, m: &mut Messaging, id: u32) {
        if m.prekeys.start_loading(&id) {
            self.0.prekeys.push(id);
        }
    }
    fn device_list(&mut self, m: &mut Messaging, user: &Jid) {
        if m.devices.start_loading(user) {
            self.0.device_lists.push(user.clone());
        }
    }
    fn secret(&mut self, m: &mut Messaging, key: &SecretKey) {
        if m.secrets.start_loading(key) {
            self.0.message_secrets.push(key.clone());
        }
    }
    fn tc_token(&mut self, m: &mut Messaging, user: &Jid) {
        if m.tc_tokens.start_loading(user) {
            self.0.tc_tokens.push(user.clone());
        }
    }
    fn lid_mapping(&mut self, m: &mut Messaging, user: &Jid) {
        if m.lids.start_loading(user) {
            self.0.lid_mappings.push(user.clone());
        }
    }
}

impl ConnectionMachine {
    // ---- commands ----

    /// Hands in records the machine asked for with [`Event::Load`]. Records asked for and
    /// missing from `loaded` count as absent.
    pub fn provide(&mut self, now: Instant, loaded: Loaded) {
        let cap = self.config.max_loaded_records;
        let m = &mut self.session_msg;
        for (addr, bytes) in loaded.sessions {
            let record = bytes.and_then(|b| match SessionRecord::from_bytes(&b) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "stored session unreadable; starting anew");
                    None
                }
            });
            m.sessions.loaded(device_address(&addr), record, cap);
        }
        for ((group, sender), bytes) in loaded.sender_keys {
            let record = bytes.and_then(|b| SenderKeyRecord::from_bytes(&b).ok());
            m.sender_keys
                .loaded((group, device_address(&sender)), record, cap);
        }
        for (id, bytes) in loaded.prekeys {
            let record = bytes.and_then(|b| PreKey::from_bytes(&b).ok());
            m.prekeys.loaded(id, record, cap);
        }
        for (user, list) in loaded.device_lists {
            m.devices.loaded(user_of(&user), list, cap);
        }
        for (key, bytes) in loaded.message_secrets {
            let record = bytes.and_then(|b| SecretRecord::from_bytes(&b));
            m.secrets.loaded(key, record, cap);
        }
        for (user, token) in loaded.tc_tokens {
            m.tc_tokens.loaded(user_of(&user), token, cap);
        }
        for (user, other) in loaded.lid_mappings {
            let user = user_of(&user);
            // A pair learned meanwhile wins over the store's older answer.
            if let Some(other) = &other {
                if !m.lids.is_known(&user_of(other)) {
                    m.lids.loaded(user_of(other), Some(user.clone()), cap);
                }
            }
            m.lids.loaded(user, other.map(|o| user_of(&o)), cap);
        }
        if !self.is_closed() {
            self.advance(now);
        }
    }

    // ---- hooks from the machine ----

    /// After `<success>`: check the server's prekey supply, hand out restored messages.
    pub(super) fn messaging_logged_in(&mut self, now: Instant) {
        let count = IqRequest::iq("encrypt", "get", Jid::server(), vec![Node::new("count")]);
        self.send_messaging_iq(now, count, MsgIq::PreKeyCount);
        let restored = std::mem::take(&mut self.session_msg.restored);
        for pending in restored {
            self.redeliver_pending(now, pending);
        }
        let outbox = std::mem::take(&mut self.session_msg.outbox);
        let carried = std::mem::take(&mut self.session_msg.carried);
        for sent in outbox {
            match send::decode_context(&sent.context) {
                Some((chat, message)) => {
                    tracing::debug!(id = %sent.id, "sending an unacknowledged message again");
                    self.session_msg
                        .sends
                        .push_back(SendJob::new(sent.id, chat, message));
                }
                None => tracing::debug!(id = %sent.id, "unacknowledged message not ours to resend"),
            }
        }
        for job in carried {
            if !self.session_msg.sends.iter().any(|j| j.id == job.id) {
                self.session_msg.sends.push_back(job);
            }
        }
        self.advance(now);
    }

    /// The prekey count query or a prekey upload is waiting for its answer.
    pub(super) fn prekey_work_pending(&self) -> bool {
        self.session_msg
            .iqs
            .values()
            .any(|p| matches!(p, MsgIq::PreKeyCount | MsgIq::PreKeyUpload(_)))
    }

    /// A messaging IQ ended.
    pub(super) fn messaging_iq_done(&mut self, now: Instant, n: u64, result: IqResult) {
        let Some(purpose) = self.session_msg.iqs.remove(&n) else {
            return;
        };
        match purpose {
            MsgIq::PreKeyCount => {
                if let IqResult::Ok(node) = &result {
                    let count = node
                        .child("count")
                        .and_then(|c| c.attr_str("value"))
                        .and_then(|v| v.parse::<u32>().ok());
                    if let Some(count) = count {
                        self.on_prekey_count(now, count);
                    }
                }
            }
            MsgIq::PreKeyUpload(count) => {
                let m = &mut self.session_msg;
                if matches!(result, IqResult::Ok(_)) {
                    m.prekey_upload_done = m.prekey_upload_done.saturating_add(count);
                    if m.prekey_upload_left > 0 {
                        self.upload_prekey_batch(now);
                    } else {
                        m.prekey_upload_inflight = false;
                        let count = std::mem::take(&mut m.prekey_upload_done);
                        self.emit(Event::PreKeysUploaded { count });
                    }
                } else {
                    // The next prekey count (the next login, or the server's notification
                    // of a low supply) asks again.
                    m.prekey_upload_inflight = false;
                    m.prekey_upload_left = 0;
                    m.prekey_upload_done = 0;
                    tracing::warn!(?result, "prekey upload failed");
                }
            }
            MsgIq::Usync(users) => self.on_usync(now, &users, result),
            MsgIq::Bundles(devices) => self.on_bundles(now, &devices, result),
            MsgIq::Group(group) => self.on_group(now, &group, result),
            MsgIq::MediaConn => self.on_media_conn(now, result),
            MsgIq::PrivacyToken => {
                if !matches!(result, IqResult::Ok(_)) {
                    tracing::debug!(?result, "privacy token not issued");
                }
            }
        }
    }

    /// Notifications that change messaging state (§10.2, §10.4, §13). The stanza still goes to
    /// the application and is acked as usual.
    pub(super) fn messaging_notification(&mut self, now: Instant, node: &Node) {
        let from = nodes::jid_attr(node, "from");
        match (node.attr_str("type"), from) {
            (Some("encrypt"), Some(from)) if from == Jid::server() => {
                let count = node
                    .child("count")
                    .and_then(|c| c.attr_str("value"))
                    .and_then(|v| v.parse::<u32>().ok());
                if let Some(count) = count {
                    self.on_prekey_count(now, count);
                }
            }
            (Some("encrypt"), Some(from)) if node.child("identity").is_some() => {
                // The user's identity changed: its sessions are useless now.
                let user = user_of(&from);
                let m = &mut self.session_msg;
                let gone = m.sessions.forget_where(|a| user_of(a) == user);
                m.devices.forget(&user);
                for addr in gone {
                    self.emit(Event::Persist(Change::RemoveSession(addr)));
                }
            }
            (Some("devices"), Some(from)) => {
                self.learn_lid_pairs(nodes::devices_notification_lids(node, &from));
                let user = user_of(&from);
                self.session_msg
                    .devices
                    .put(user, None, self.config.max_loaded_records);
            }
            (Some("w:gp2"), Some(from)) => self.group_notification_cache(&from, node),
            (Some("privacy_token"), Some(_)) => self.on_privacy_token(node),
            _ => {}
        }
    }

    /// The server acked a message: when it names a different participant hash for a group
    /// send (SESSION.md §5.5), our view of the group is stale and is fetched again.
    pub(super) fn messaging_acked(
        &mut self,
        now: Instant,
        id: &str,
        result: &super::MessageAckResult,
    ) {
        if let Some(peer) = self.session_msg.dm_sent.remove(id) {
            if let super::MessageAckResult::Error { code: 463 } = result {
                // LID.md §5.1: no token the server accepts. We do not resend (that counts as
                // another reach-out); we give the peer ours, so that it may write back.
                tracing::warn!(%id, %peer, "message refused with 463 (privacy token)");
                self.issue_privacy_token(now, &peer, true);
            }
        }
        let Some((group, ours)) = self.session_msg.group_phash.remove(id) else {
            return;
        };
        if let super::MessageAckResult::Delivered {
            phash: Some(theirs),
            ..
        } = result
        {
            if *theirs != ours {
                tracing::debug!(%group, "participant hash mismatch; refreshing the group");
                let m = &mut self.session_msg;
                if let Some(users) = m.groups.remove(&group) {
                    for u in users {
                        m.devices.forget(&u);
                    }
                }
            }
        }
    }

    pub(super) fn remember_dm_peer(&mut self, id: &str, peer: &Jid) {
        let m = &mut self.session_msg;
        if m.dm_sent.insert(id.to_owned(), peer.clone()).is_none() {
            m.dm_sent_order.push_back(id.to_owned());
        }
        while m.dm_sent_order.len() > 256 {
            if let Some(old) = m.dm_sent_order.pop_front() {
                m.dm_sent.remove(&old);
            }
        }
    }

    pub(super) fn remember_group_phash(&mut self, id: &str, group: &Jid, phash: String) {
        let m = &mut self.session_msg;
        if m.group_phash
            .insert(id.to_owned(), (group.clone(), phash))
            .is_none()
        {
            m.group_phash_order.push_back(id.to_owned());
        }
        while m.group_phash_order.len() > 256 {
            if let Some(old) = m.group_phash_order.pop_front() {
                m.group_phash.remove(&old);
            }
        }
    }

    /// The connection ended: sends not yet relayed wait for the next login (retry resends are
    /// dropped: the device asks again), parked messages are dropped unacked (the server
    /// delivers them again), requests in flight are forgotten.
    pub(super) fn messaging_closed(&mut self) {
        let m = &mut self.session_msg;
        let jobs: Vec<SendJob> = m.sends.drain(..).collect();
        for job in jobs {
            if job.resend.is_none() && !m.carried.iter().any(|j| j.id == job.id) {
                m.carried.push(job);
            }
        }
        m.incoming.clear();
        // A subscription lasts for its connection.
        m.subscribes.clear();
        // Votes waiting for a secret stay (the server's copy is a duplicate now); their held
        // acks were for this connection, so they get new tokens when handed out.
        for vote in &mut m.votes {
            vote.ack = None;
        }
        m.usync_inflight.clear();
        m.bundles_inflight.clear();
        m.groups_inflight.clear();
        m.bundle_failed.clear();
        m.iqs.clear();
        m.prekey_upload_inflight = false;
        m.prekey_upload_left = 0;
        m.prekey_upload_done = 0;
        m.media_conn_inflight = false;
        m.sessions.clear_loading();
        m.sender_keys.clear_loading();
        m.prekeys.clear_loading();
        m.devices.clear_loading();
        m.secrets.clear_loading();
        m.lids.clear_loading();
        m.tc_tokens.clear_loading();
    }

    // ---- internals ----

    fn own_device(&self) -> Option<Jid> {
        self.creds.device.as_ref().map(|d| device_address(&d.jid))
    }

    fn send_messaging_iq(&mut self, now: Instant, req: IqRequest, purpose: MsgIq) -> bool {
        let timeout = self.config.iq_timeout;
        match self.send_tracked_iq(now, req.node, timeout, IqKind::Messaging) {
            Ok((n, _)) => {
                self.session_msg.iqs.insert(n, purpose);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "messaging IQ not sent");
                false
            }
        }
    }

    /// Moves every waiting piece of work on as far as it goes, then asks for what is missing.
    fn advance(&mut self, now: Instant) {
        let m = &self.session_msg;
        m.sessions.next_pass();
        m.sender_keys.next_pass();
        m.prekeys.next_pass();
        m.devices.next_pass();
        m.secrets.next_pass();
        m.lids.next_pass();
        m.tc_tokens.next_pass();
        let mut loads = LoadBatch::default();
        self.advance_subscribes(now, &mut loads);
        self.advance_incoming(now, &mut loads);
        self.advance_votes(&mut loads);
        self.advance_sends(now, &mut loads);
        if !loads.0.is_empty() {
            self.emit(Event::Load(loads.0));
        }
    }

    fn persist(&mut self, change: Change) {
        self.emit(Event::Persist(change));
    }

    fn persist_session(&mut self, addr: &Jid) {
        if let Some(record) = self.session_msg.sessions.get_mut(addr) {
            // Taken out of its zeroizing wrapper rather than copied: the event owns the one
            // buffer (the store's copy is not zeroized either way).
            let bytes = std::mem::take(&mut *record.to_bytes());
            self.persist(Change::Session {
                address: addr.clone(),
                record: bytes,
            });
        }
    }

    fn persist_sender_key(&mut self, key: &(Jid, Jid)) {
        if let Some(record) = self.session_msg.sender_keys.get_mut(key) {
            let bytes = record.to_bytes().to_vec();
            self.persist(Change::SenderKey {
                group: key.0.clone(),
                sender: key.1.clone(),
                record: bytes,
            });
        }
    }

    // ---- prekeys (§10.1, §10.2) ----

    fn on_prekey_count(&mut self, now: Instant, count: u32) {
        if count >= self.config.prekey_min_count || self.session_msg.prekey_upload_inflight {
            return;
        }
        let n = if count == 0 {
            self.config.prekey_upload_count
        } else {
            self.config.prekey_refill_count
        };
        self.session_msg.prekey_upload_left = n;
        self.session_msg.prekey_upload_done = 0;
        self.upload_prekey_batch(now);
    }

    /// Generates, persists and uploads the next batch of the upload under way (at most
    /// `prekey_upload_batch` keys); the answer sends the one after it.
    fn upload_prekey_batch(&mut self, now: Instant) {
        let n = self
            .session_msg
            .prekey_upload_left
            .min(self.config.prekey_upload_batch.max(1));
        if n == 0 {
            return;
        }
        let prekeys = self.generate_prekeys(n);
        let spk = &self.creds.signed_prekey;
        let children = nodes::prekey_upload(
            self.creds.registration_id,
            self.creds.identity_key.public_bytes(),
            &prekeys,
            (spk.id, spk.key_pair.public_bytes(), &spk.signature),
        );
        let req = IqRequest::iq("encrypt", "set", Jid::server(), children);
        let sent = self.send_messaging_iq(now, req, MsgIq::PreKeyUpload(n));
        let m = &mut self.session_msg;
        m.prekey_upload_inflight = sent;
        m.prekey_upload_left = if sent { m.prekey_upload_left - n } else { 0 };
    }

    /// New one-time prekeys, persisted (with the next id in the credentials) before anything
    /// names them.
    fn generate_prekeys(&mut self, n: u32) -> Vec<PreKey> {
        let first = self.creds.next_prekey_id.clamp(1, 0x00FF_FFFF);
        let n = n.min(0x00FF_FFFF - first + 1);
        let prekeys = PreKey::generate_batch(first, n, &mut self.rng);
        let next = first + n;
        self.creds.next_prekey_id = if next > 0x00FF_FFFF { 1 } else { next };
        for k in &prekeys {
            self.persist(Change::PreKey {
                id: k.id,
                record: k.to_bytes().to_vec(),
            });
        }
        self.emit(Event::CredentialsChanged(Box::new(self.creds.clone())));
        prekeys
    }
}
