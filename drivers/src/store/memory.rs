//! [`MemoryStore`]: every kind of [`Change`] in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use amarula_core::credentials::Credentials;
use amarula_core::jid::Jid;
use amarula_core::machine::SentMessage;
use zeroize::Zeroizing;

use amarula_core::appstate::{Collection, CollectionState, SyncKey};
use amarula_core::persist::{PendingKey, SecretKey, StoredAppState};

use super::{Change, CredentialStore, DeviceList, LoadRequest, Loaded, PendingMessage, StoreError};

/// Most sent messages a [`MemoryStore`] keeps (the oldest go first).
pub const MEMORY_SENT_LIMIT: usize = 1024;

/// Everything a [`CredentialStore`] can keep, in memory: for tests, and for programs that pair
/// every run. Clones share the same contents.
///
/// It keeps what the [`SqliteStore`](super::SqliteStore) keeps, by the same keys, and its
/// getters mirror the SQLite store's (synchronous here, and infallible: nothing is read from
/// outside). A batch given to [`apply`](CredentialStore::apply) is applied under one lock, so
/// no reader sees half of it.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

/// A record holding private keys: wiped when replaced, removed or forgotten.
type Secret = Zeroizing<Vec<u8>>;

#[derive(Default)]
struct MemoryInner {
    credentials: Option<Credentials>,
    sent: VecDeque<SentMessage>,
    /// Ids of sent messages the server acknowledged.
    acked: std::collections::HashSet<String>,
    prekeys: BTreeMap<u32, Secret>,
    signed_prekeys: BTreeMap<u32, Secret>,
    /// Sessions by user (the address without device), then by device address: what
    /// `sessions_for` reads without a scan of every session.
    sessions: HashMap<Jid, HashMap<Jid, Secret>>,
    /// The number of sessions in `sessions`.
    session_count: u64,
    sender_keys: HashMap<(Jid, Jid), Secret>,
    identities: HashMap<Jid, Vec<u8>>,
    /// By user (without device).
    device_lists: HashMap<Jid, DeviceList>,
    /// LID user to phone number user, and back; both without device.
    phone_by_lid: HashMap<Jid, Jid>,
    lid_by_phone: HashMap<Jid, Jid>,
    /// Pending messages by arrival number, and the arrival number of each id.
    pending: BTreeMap<u64, PendingMessage>,
    pending_seq: HashMap<PendingKey, u64>,
    next_pending: u64,
    /// Message secrets (polls, events) by message.
    secrets: HashMap<SecretKey, Secret>,
    /// Privacy tokens by contact user.
    tc_tokens: HashMap<Jid, amarula_core::persist::TcToken>,
    /// App-state sync keys by id, and the collections' states.
    app_keys: BTreeMap<Vec<u8>, SyncKey>,
    app_collections: BTreeMap<Collection, CollectionState>,
}

impl MemoryInner {
    /// How many records of any kind are kept (the credentials count as one).
    fn records(&self) -> usize {
        usize::from(self.credentials.is_some())
            + self.sent.len()
            + self.acked.len()
            + self.prekeys.len()
            + self.signed_prekeys.len()
            + self.sessions.values().map(HashMap::len).sum::<usize>()
            + self.sender_keys.len()
            + self.identities.len()
            + self.device_lists.len()
            + self.phone_by_lid.len()
            + self.lid_by_phone.len()
            + self.pending.len()
            + self.secrets.len()
            + self.tc_tokens.len()
            + self.app_keys.len()
            + self.app_collections.len()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Records hold private keys: only counts are shown.
        let inner = self.lock();
        f.debug_struct("MemoryStore")
            .field("credentials", &inner.credentials.is_some())
            .field("sent", &inner.sent.len())
            .field("prekeys", &inner.prekeys.len())
            .field("signed_prekeys", &inner.signed_prekeys.len())
            .field("sessions", &inner.session_count)
            .field("sender_keys", &inner.sender_keys.len())
            .field("identities", &inner.identities.len())
            .field("device_lists", &inner.device_lists.len())
            .field("lid_mappings", &inner.phone_by_lid.len())
            .field("pending", &inner.pending.len())
            .finish()
    }
}

impl MemoryStore {
    /// How many records of any kind the store keeps (credentials, sent messages, prekeys,
    /// sessions, sender keys, identities, device lists, LID mappings, pending messages,
    /// message secrets): 0 after [`delete`](CredentialStore::delete), e.g. after a logout.
    pub fn record_count(&self) -> usize {
        self.lock().records()
    }

    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `credentials`.
    pub fn with_credentials(credentials: Credentials) -> Self {
        let store = Self::default();
        store.lock().credentials = Some(credentials);
        store
    }

    /// The credentials held now.
    pub fn credentials(&self) -> Option<Credentials> {
        self.lock().credentials.clone()
    }

    /// The sent messages held now, oldest first (at most [`MEMORY_SENT_LIMIT`]).
    pub fn sent(&self) -> Vec<SentMessage> {
        self.lock().sent.iter().cloned().collect()
    }

    /// The one-time prekey `id`.
    pub fn prekey(&self, id: u32) -> Option<Vec<u8>> {
        self.lock().prekeys.get(&id).map(|r| r.to_vec())
    }

    /// How many one-time prekeys are held (to know when to upload more).
    pub fn prekey_count(&self) -> u64 {
        self.lock().prekeys.len() as u64
    }

    /// The signed prekey `id`.
    pub fn signed_prekey(&self, id: u32) -> Option<Vec<u8>> {
        self.lock().signed_prekeys.get(&id).map(|r| r.to_vec())
    }

    /// The Signal session with one device (by its JID exactly as given: `:0` is not the same
    /// key as no device).
    pub fn session(&self, address: &Jid) -> Option<Vec<u8>> {
        self.lock().session(address).map(|r| r.to_vec())
    }

    /// The sessions with every device of `user` (its device part is ignored), ordered by the
    /// address's text as the SQLite store orders them.
    pub fn sessions_for(&self, user: &Jid) -> Vec<(Jid, Vec<u8>)> {
        let inner = self.lock();
        let Some(devices) = inner.sessions.get(&user.to_non_device()) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Jid, Vec<u8>)> = devices
            .iter()
            .map(|(a, r)| (a.to_string(), a.clone(), r.to_vec()))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, a, r)| (a, r)).collect()
    }

    /// How many Signal sessions are held.
    pub fn session_count(&self) -> u64 {
        self.lock().session_count
    }

    /// The sender key of `sender` in `group`.
    pub fn sender_key(&self, group: &Jid, sender: &Jid) -> Option<Vec<u8>> {
        self.lock()
            .sender_keys
            .get(&(group.clone(), sender.clone()))
            .map(|r| r.to_vec())
    }

    /// The identity key held for a device.
    pub fn identity(&self, address: &Jid) -> Option<Vec<u8>> {
        self.lock().identities.get(address).cloned()
    }

    /// The device list of `user` (its device part is ignored).
    pub fn device_list(&self, user: &Jid) -> Option<DeviceList> {
        self.lock().device_lists.get(&user.to_non_device()).cloned()
    }

    /// The phone number JID mapped to a LID (device parts are ignored).
    pub fn phone_for_lid(&self, lid: &Jid) -> Option<Jid> {
        self.lock().phone_by_lid.get(&lid.to_non_device()).cloned()
    }

    /// The privacy token a contact (by user, device parts ignored) gave us, when held.
    pub fn tc_token(&self, user: &Jid) -> Option<amarula_core::persist::TcToken> {
        self.lock().tc_tokens.get(&user.to_non_device()).cloned()
    }

    /// The LID mapped to a phone number JID (device parts are ignored).
    pub fn lid_for_phone(&self, phone: &Jid) -> Option<Jid> {
        self.lock()
            .lid_by_phone
            .get(&phone.to_non_device())
            .cloned()
    }

    /// The pending incoming messages in arrival order (a message kept again keeps its place).
    pub fn pending(&self) -> Vec<PendingMessage> {
        self.lock().pending.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        // The data stays consistent even if a holder panicked: a batch is checked before the
        // lock is taken, and its writes are map inserts and removals that do not panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryInner {
    fn session(&self, address: &Jid) -> Option<&Secret> {
        self.sessions.get(&address.to_non_device())?.get(address)
    }

    fn save_sent(&mut self, message: &SentMessage) {
        self.sent.retain(|m| m.id != message.id);
        self.acked.remove(&message.id);
        self.sent.push_back(message.clone());
        while self.sent.len() > MEMORY_SENT_LIMIT {
            if let Some(old) = self.sent.pop_front() {
                self.acked.remove(&old.id);
            }
        }
    }

    /// Applies one change; `change` is known to be of a kind [`known`] accepts.
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Credentials(c) => self.credentials = Some(c.as_ref().clone()),
            Change::SentMessage(m) => self.save_sent(m),
            Change::SentAcked(id) if self.sent.iter().any(|m| m.id == *id) => {
                self.acked.insert(id.clone());
            }
            Change::PreKey { id, record } => {
                self.prekeys.insert(*id, Zeroizing::new(record.clone()));
            }
            Change::RemovePreKey(id) => {
                self.prekeys.remove(id);
            }
            Change::SignedPreKey { id, record } => {
                self.signed_prekeys
                    .insert(*id, Zeroizing::new(record.clone()));
            }
            Change::RemoveSignedPreKey(id) => {
                self.signed_prekeys.remove(id);
            }
            Change::Session { address, record } => {
                let devices = self.sessions.entry(address.to_non_device()).or_default();
                if devices
                    .insert(address.clone(), Zeroizing::new(record.clone()))
                    .is_none()
                {
                    self.session_count += 1;
                }
            }
            Change::RemoveSession(address) => {
                let user = address.to_non_device();
                if let Some(devices) = self.sessions.get_mut(&user) {
                    if devices.remove(address).is_some() {
                        self.session_count = self.session_count.saturating_sub(1);
                    }
                    if devices.is_empty() {
                        self.sessions.remove(&user);
                    }
                }
            }
            Change::SenderKey {
                group,
                sender,
                record,
            } => {
                self.sender_keys.insert(
                    (group.clone(), sender.clone()),
                    Zeroizing::new(record.clone()),
                );
            }
            Change::Identity { address, key } => {
                self.identities.insert(address.clone(), key.clone());
            }
            Change::DeviceList { user, list } => {
                self.device_lists.insert(user.to_non_device(), list.clone());
            }
            Change::LidMapping { lid, phone } => {
                let (lid, phone) = (lid.to_non_device(), phone.to_non_device());
                // A phone number moves to a new LID (or the reverse): the old pairs go.
                if let Some(old_phone) = self.phone_by_lid.remove(&lid) {
                    self.lid_by_phone.remove(&old_phone);
                }
                if let Some(old_lid) = self.lid_by_phone.remove(&phone) {
                    self.phone_by_lid.remove(&old_lid);
                }
                self.phone_by_lid.insert(lid.clone(), phone.clone());
                self.lid_by_phone.insert(phone, lid);
            }
            Change::Pending(p) => {
                // Kept again under the same id: replaced in place, as the SQLite store does.
                let seq = match self.pending_seq.get(&p.id) {
                    Some(&seq) => seq,
                    None => {
                        let seq = self.next_pending;
                        self.next_pending += 1;
                        self.pending_seq.insert(p.id.clone(), seq);
                        seq
                    }
                };
                self.pending.insert(seq, p.clone());
            }
            Change::PendingDone(id) => {
                if let Some(seq) = self.pending_seq.remove(id) {
                    self.pending.remove(&seq);
                }
            }
            Change::MessageSecret { key, record } => {
                self.secrets
                    .insert(key.clone(), Zeroizing::new(record.clone()));
            }
            Change::TcToken { user, token } => {
                self.tc_tokens.insert(user.to_non_device(), token.clone());
            }
            Change::AppStateSyncKey(k) => {
                self.app_keys.insert(k.id.clone(), k.clone());
            }
            Change::AppStateCollection(d) => {
                d.apply_to(self.app_collections.entry(d.collection).or_default());
            }
            // `known` refused every other kind before the batch began.
            _ => {}
        }
    }

    fn load_keys(&self, request: &LoadRequest) -> Loaded {
        let mut loaded = Loaded::nothing_for(request);
        for (address, record) in &mut loaded.sessions {
            *record = self.session(address).map(|r| r.to_vec());
        }
        for (key, record) in &mut loaded.sender_keys {
            *record = self.sender_keys.get(key).map(|r| r.to_vec());
        }
        for (id, record) in &mut loaded.prekeys {
            *record = self.prekeys.get(id).map(|r| r.to_vec());
        }
        for (user, list) in &mut loaded.device_lists {
            *list = self.device_lists.get(&user.to_non_device()).cloned();
        }
        for (key, record) in &mut loaded.message_secrets {
            *record = self.secrets.get(key).map(|r| r.to_vec());
        }
        for (user, token) in &mut loaded.tc_tokens {
            *token = self.tc_tokens.get(&user.to_non_device()).cloned();
        }
        for (user, other) in &mut loaded.lid_mappings {
            let user = user.to_non_device();
            *other = if user.is_lid() {
                self.phone_by_lid.get(&user).cloned()
            } else {
                self.lid_by_phone.get(&user).cloned()
            };
        }
        loaded
    }
}

/// Whether the store can keep `change`: every kind this build knows. A kind added to the core
/// later is refused (before anything of its batch is applied) until the store learns it.
fn known(change: &Change) -> bool {
    matches!(
        change,
        Change::Credentials(_)
            | Change::SentMessage(_)
            | Change::SentAcked(_)
            | Change::PreKey { .. }
            | Change::RemovePreKey(_)
            | Change::SignedPreKey { .. }
            | Change::RemoveSignedPreKey(_)
            | Change::Session { .. }
            | Change::RemoveSession(_)
            | Change::SenderKey { .. }
            | Change::Identity { .. }
            | Change::DeviceList { .. }
            | Change::LidMapping { .. }
            | Change::Pending(_)
            | Change::PendingDone(_)
            | Change::MessageSecret { .. }
            | Change::TcToken { .. }
            | Change::AppStateSyncKey(_)
            | Change::AppStateCollection(_)
    )
}

impl CredentialStore for MemoryStore {
    fn keeps_signal_state(&self) -> bool {
        true
    }

    async fn load(&self) -> Result<Option<Credentials>, StoreError> {
        Ok(self.credentials())
    }

    async fn save(&self, credentials: &Credentials) -> Result<(), StoreError> {
        self.lock().credentials = Some(credentials.clone());
        Ok(())
    }

    async fn save_sent(&self, message: &SentMessage) -> Result<(), StoreError> {
        self.lock().save_sent(message);
        Ok(())
    }

    async fn load_sent(&self) -> Result<Vec<SentMessage>, StoreError> {
        Ok(self.sent())
    }

    async fn load_unacked_sent(&self) -> Result<Vec<SentMessage>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .sent
            .iter()
            .filter(|m| !inner.acked.contains(&m.id))
            .cloned()
            .collect())
    }

    /// Applies the whole batch under one lock, or nothing: a change of a kind this store does
    /// not know is refused with [`StoreError::Unsupported`] before any is applied.
    async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if let Some(unknown) = changes.iter().find(|c| !known(c)) {
            return Err(StoreError::Unsupported(unknown.kind()));
        }
        let mut inner = self.lock();
        for change in changes {
            inner.apply(change);
        }
        Ok(())
    }

    async fn load_keys(&self, request: &LoadRequest) -> Result<Loaded, StoreError> {
        Ok(self.lock().load_keys(request))
    }

    async fn load_pending(&self) -> Result<Vec<PendingMessage>, StoreError> {
        Ok(self.pending())
    }

    async fn load_app_state(&self) -> Result<StoredAppState, StoreError> {
        let inner = self.lock();
        Ok(StoredAppState {
            keys: inner.app_keys.values().cloned().collect(),
            collections: inner
                .app_collections
                .iter()
                .map(|(c, s)| (*c, s.clone()))
                .collect(),
        })
    }

    async fn delete(&self) -> Result<(), StoreError> {
        // The old contents are dropped (and their records wiped) after the lock is released.
        let old = std::mem::take(&mut *self.lock());
        drop(old);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{contract, paired, same};

    #[test]
    fn memory_store_contract() {
        smol::block_on(contract(&MemoryStore::new(), true));
    }
    use bytes::Bytes;

    #[test]
    fn memory_store() {
        smol::block_on(async {
            let store = MemoryStore::new();
            assert!(store.load().await.expect("load").is_none());
            let c = paired(9);
            store.save(&c).await.expect("save");
            assert!(same(
                &c,
                &store.load().await.expect("load").expect("present")
            ));
            let message = |n: usize| SentMessage {
                id: format!("m{n}"),
                to: "15550001111@s.whatsapp.net".parse().expect("valid"),
                kind: "text".into(),
                context: Bytes::new(),
                sent_unix_ms: n as u64,
            };
            for n in 0..MEMORY_SENT_LIMIT + 5 {
                store.save_sent(&message(n)).await.expect("save_sent");
            }
            // Saving an id again moves it to the end.
            store.save_sent(&message(10)).await.expect("save_sent");
            let sent = store.load_sent().await.expect("load_sent");
            assert_eq!(sent.len(), MEMORY_SENT_LIMIT);
            assert_eq!(sent.first().map(|m| m.id.as_str()), Some("m5"));
            assert_eq!(sent.last().map(|m| m.id.as_str()), Some("m10"));
            store.delete().await.expect("delete");
            assert!(store.load().await.expect("load").is_none());
            assert!(store.sent().is_empty());
        });
    }
}
