//! App state ("syncd") in the simulator: the server keeps each account's collections (a
//! snapshot stored as an external blob on the simulated media host, and the numbered patches
//! after it) and answers `w:sync:app:state`; the phone holds the app-state sync key and the
//! collections' states, makes snapshots and patches with the core's own encoder (real MACs and
//! LTHash), shares its key with the companions, and applies the patches companions push (so
//! the patches it makes later still chain).

use std::collections::{BTreeMap, HashMap};

use amarula_core::appstate::{
    AppStateAction, Collection, CollectionState, KeyRing, PendingMutation, SyncKey, decode_patch,
    encode_patch, encode_snapshot,
};
use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::media::{MediaType, encrypt};
use amarula_proto::Message as _;
use amarula_proto::e2e;
use amarula_proto::server_sync::{ExternalBlobReference, SyncdPatch};
use rand_core::RngCore;

use super::account::Account;
use super::iq::{error, result};
use super::phone_send::PhoneSendError;
use super::state::{Shared, State, notification};

/// Patches in one sync answer (more: `has_more_patches`).
const PAGE: usize = 50;

/// How the next patch handed to a device is corrupted in transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatchCorruption {
    /// The patch MAC is flipped.
    PatchMac,
    /// The snapshot MAC (the LTHash check) is flipped.
    LtHash,
}

/// One collection as the server keeps it.
#[derive(Debug, Default)]
struct ServerCollection {
    /// The snapshot: its version and its blob reference.
    snapshot: Option<(u64, ExternalBlobReference)>,
    /// Patches after the snapshot, by version.
    patches: BTreeMap<u64, Vec<u8>>,
    version: u64,
}

/// An account's app state: the phone's key and states, the server's collections.
#[derive(Debug, Default)]
pub(crate) struct SimAppState {
    /// The key new snapshots and patches use.
    key: Option<SyncKey>,
    /// Every key the phone made (all are shared).
    all: Vec<SyncKey>,
    keys: KeyRing,
    phone: HashMap<Collection, CollectionState>,
    server: HashMap<Collection, ServerCollection>,
    corrupt_next: Option<PatchCorruption>,
    /// Whether the phone shares its keys with each device that uploads its prekeys (as a
    /// phone does after pairing).
    auto_share: bool,
    /// Sync IQs still answered; past it they go unanswered (`None`: all answered).
    answer_budget: Option<u32>,
    /// Patches pushed by companions and accepted.
    pub(crate) pushed: u64,
}

impl SimAppState {
    fn ensure_key(&mut self, rng: &mut impl RngCore) -> Vec<u8> {
        if let Some(k) = &self.key {
            return k.id.clone();
        }
        let mut id = vec![0u8; 6];
        rng.fill_bytes(&mut id);
        let mut data = vec![0u8; 32];
        rng.fill_bytes(&mut data);
        let key = SyncKey {
            id: id.clone(),
            data,
            timestamp: 1,
        };
        self.keys.insert(&key);
        self.all.push(key.clone());
        self.key = Some(key);
        id
    }
}

fn pending(actions: &[AppStateAction], ts: i64) -> Option<(Collection, Vec<PendingMutation>)> {
    let mut collection = None;
    let mut out = Vec::new();
    for a in actions {
        let (c, m) = a.to_pending(ts)?;
        if collection.is_some_and(|x| x != c) {
            return None;
        }
        collection = Some(c);
        out.push(m);
    }
    Some((collection?, out))
}

impl Account {
    fn with_app_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.shared.lock();
        f(&mut st)
    }

    /// The phone replaces a collection with a snapshot of `actions` (all in one collection:
    /// each as [`AppStateAction::to_pending`] encodes it), stored as
    /// an external blob on the media host, at the collection's next version. Returns it.
    ///
    /// # Panics
    /// Actions of several collections, or ones the phone cannot encode (a test mistake).
    pub fn app_state_snapshot(&self, actions: &[AppStateAction]) -> u64 {
        let (c, muts) = pending(actions, 1_700_000_000_000).expect("actions of one collection");
        let (blob_ref, version) = self.with_app_state(|st| {
            let State { rng, appstate, .. } = st;
            let app = appstate.entry(self.phone.clone()).or_default();
            let key_id = app.ensure_key(rng);
            let server = app.server.entry(c).or_default();
            let version = server.version + 1;
            let (snapshot, decoded) =
                encode_snapshot(c, version, &app.keys, &key_id, &muts, rng).expect("encode");
            let mut state = CollectionState::default();
            state.apply(&decoded);
            app.phone.insert(c, state);
            let mut media_key = [0u8; 32];
            rng.fill_bytes(&mut media_key);
            let plain = snapshot.encode_to_vec();
            let (enc, hashes) = encrypt(&media_key, MediaType::AppState, &plain);
            (
                (
                    ExternalBlobReference {
                        media_key: Some(media_key.to_vec().into()),
                        direct_path: None,
                        handle: None,
                        file_size_bytes: Some(hashes.file_length),
                        file_sha256: Some(hashes.file_sha256.to_vec().into()),
                        file_enc_sha256: Some(hashes.file_enc_sha256.to_vec().into()),
                    },
                    enc,
                ),
                version,
            )
        });
        let (mut r, enc) = blob_ref;
        r.direct_path = Some(self.shared.media.store(enc));
        self.with_app_state(|st| {
            let app = st.appstate.entry(self.phone.clone()).or_default();
            let server = app.server.entry(c).or_default();
            server.snapshot = Some((version, r));
            server.patches.clear();
            server.version = version;
        });
        version
    }

    /// The phone changes its app state: one patch of `actions` (one collection), made with
    /// real MACs and LTHash on top of the phone's state; the server keeps it and tells the
    /// companions (`server_sync`). Returns the new version.
    ///
    /// # Panics
    /// As [`app_state_snapshot`](Self::app_state_snapshot).
    pub fn app_state_patch(&self, actions: &[AppStateAction]) -> u64 {
        let (c, muts) = pending(actions, 1_700_000_001_000).expect("actions of one collection");
        let mut st = self.shared.lock();
        let State { rng, appstate, .. } = &mut *st;
        let app = appstate.entry(self.phone.clone()).or_default();
        let key_id = app.ensure_key(rng);
        let state = app.phone.entry(c).or_default();
        let (patch, decoded) =
            encode_patch(c, state, &app.keys, &key_id, &muts, rng).expect("encode");
        state.apply(&decoded);
        let server = app.server.entry(c).or_default();
        server.version = decoded.version;
        server
            .patches
            .insert(decoded.version, patch.encode_to_vec());
        notify(&mut st, &self.phone, c, decoded.version, None);
        decoded.version
    }

    /// The phone shares its app-state sync key with the account's companions
    /// (APP_STATE_SYNC_KEY_SHARE, end-to-end encrypted to our own devices). Returns the
    /// message id.
    ///
    /// # Errors
    /// As [`phone_send`](Self::phone_send).
    pub fn share_app_state_key(&self) -> Result<String, PhoneSendError> {
        share(&self.shared, &self.phone)
    }

    /// From now on the phone shares its app-state keys with every device of the account
    /// once it has uploaded its prekeys (after pairing or linking), as a real phone does.
    pub fn share_app_state_keys_after_linking(&self) {
        self.with_app_state(|st| {
            let State { rng, appstate, .. } = st;
            let app = appstate.entry(self.phone.clone()).or_default();
            app.ensure_key(rng);
            app.auto_share = true;
        });
    }

    /// The phone makes a new app-state sync key (not shared yet): its later snapshots and
    /// patches use it. Returns its id.
    pub fn rotate_app_state_key(&self) -> Vec<u8> {
        self.with_app_state(|st| {
            let State { rng, appstate, .. } = st;
            let app = appstate.entry(self.phone.clone()).or_default();
            let timestamp = app.key.as_ref().map_or(1, |k| k.timestamp + 1);
            app.key = None;
            app.ensure_key(rng);
            let key = app.key.as_mut().expect("made above");
            key.timestamp = timestamp;
            let key = key.clone();
            app.keys.insert(&key);
            if let Some(last) = app.all.last_mut() {
                *last = key.clone();
            }
            key.id.clone()
        })
    }

    /// The next patch the server hands to a device is corrupted in transit (once).
    pub fn corrupt_next_app_state_patch(&self, how: PatchCorruption) {
        self.with_app_state(|st| {
            st.appstate
                .entry(self.phone.clone())
                .or_default()
                .corrupt_next = Some(how);
        });
    }

    /// The server answers `n` more `w:sync:app:state` IQs of this account, then none
    /// (`None`: answers all again).
    pub fn answer_app_state_iqs(&self, n: Option<u32>) {
        self.with_app_state(|st| {
            st.appstate
                .entry(self.phone.clone())
                .or_default()
                .answer_budget = n;
        });
    }

    /// A collection's version on the server.
    pub fn app_state_version(&self, collection: Collection) -> u64 {
        self.with_app_state(|st| {
            st.appstate
                .get(&self.phone)
                .and_then(|a| a.server.get(&collection))
                .map_or(0, |s| s.version)
        })
    }

    /// How many patches companions pushed and the server accepted.
    pub fn app_state_pushed(&self) -> u64 {
        self.with_app_state(|st| st.appstate.get(&self.phone).map_or(0, |a| a.pushed))
    }
}

/// Whether the sync IQ of `device` goes unanswered (its account's budget is spent).
pub(crate) fn withhold(shared: &Shared, device: Option<&Jid>) -> bool {
    let mut st = shared.lock();
    let Some(phone) = device.and_then(|d| st.phone_of(d.user_part()).map(str::to_owned)) else {
        return false;
    };
    let Some(app) = st.appstate.get_mut(&phone) else {
        return false;
    };
    match &mut app.answer_budget {
        None => false,
        Some(0) => true,
        Some(n) => {
            *n -= 1;
            false
        }
    }
}

/// The phone of `phone`'s account shares every app-state key it made with the account's
/// companions (APP_STATE_SYNC_KEY_SHARE, end-to-end encrypted).
fn share(shared: &Shared, phone: &str) -> Result<String, PhoneSendError> {
    let keys = {
        let mut st = shared.lock();
        let State { rng, appstate, .. } = &mut *st;
        let app = appstate.entry(phone.to_owned()).or_default();
        app.ensure_key(rng);
        app.all.clone()
    };
    let message = e2e::Message {
        protocol_message: Some(Box::new(e2e::ProtocolMessage {
            r#type: Some(6),
            app_state_sync_key_share: Some(e2e::AppStateSyncKeyShare {
                keys: keys
                    .iter()
                    .map(|key| e2e::AppStateSyncKey {
                        key_id: Some(e2e::AppStateSyncKeyId {
                            key_id: Some(key.id.clone().into()),
                        }),
                        key_data: Some(e2e::AppStateSyncKeyData {
                            key_data: Some(key.data.clone().into()),
                            fingerprint: None,
                            timestamp: Some(key.timestamp),
                        }),
                    })
                    .collect(),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let t = super::unix_now().to_string();
    let (id, events) = {
        let mut st = shared.lock();
        let (id, node, me) =
            super::phone_send::stanza(&mut st, phone, &Jid::user(phone), &message.encode_to_vec())?;
        let events = super::phone_send::route(&mut st, &me, &id, &node, &t)?;
        (id, events)
    };
    for e in events {
        shared.emit(e);
    }
    Ok(id)
}

/// A device of an account uploaded its prekeys: the phone shares its keys if it does so.
pub(crate) fn after_prekey_upload(shared: &Shared, device: Option<&Jid>) {
    let phone = {
        let st = shared.lock();
        device.and_then(|d| st.phone_of(d.user_part()).map(str::to_owned))
    };
    let Some(phone) = phone else {
        return;
    };
    let auto = shared
        .lock()
        .appstate
        .get(&phone)
        .is_some_and(|a| a.auto_share);
    if auto {
        if let Err(e) = share(shared, &phone) {
            tracing::warn!(error = %e, "sim: app-state key share failed");
        }
    }
}

/// Tells the companions of `phone` (but `except`) that `c` changed.
fn notify(st: &mut State, phone: &str, c: Collection, version: u64, except: Option<u16>) {
    let node = notification(
        st,
        "server_sync",
        Jid::user(phone),
        vec![
            Node::new("collection")
                .attr("name", c.name())
                .attr("version", version.to_string()),
        ],
    );
    for d in st.companion_devices(phone) {
        if Some(d) != except {
            st.deliver(phone, d, node.clone());
        }
    }
}

/// The answer to a `w:sync:app:state` IQ from `device`.
pub(crate) fn answer(shared: &Shared, device: &Jid, iq: &Node) -> Node {
    let mut st = shared.lock();
    let Some(phone) = st.phone_of(device.user_part()).map(str::to_owned) else {
        return error(iq, 401, "not-authorized");
    };
    let Some(sync) = iq.child("sync") else {
        return error(iq, 400, "bad-request");
    };
    let mut out = Vec::new();
    for col in sync.child_nodes().iter().filter(|c| c.tag == "collection") {
        let Some(c) = col.attr_str("name").and_then(Collection::from_name) else {
            return error(iq, 400, "bad-request");
        };
        let version: u64 = col
            .attr_str("version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if let Some(patch) = col.child("patch").and_then(Node::content_bytes) {
            out.push(push(&mut st, &phone, device.device(), c, version, patch));
        } else {
            out.push(pull(&mut st, &phone, c, version));
        }
    }
    result(iq, vec![Node::new("sync").children(out)])
}

fn push(
    st: &mut State,
    phone: &str,
    device: u16,
    c: Collection,
    version: u64,
    bytes: &[u8],
) -> Node {
    let refuse = |code: &str| {
        Node::new("collection")
            .attr("name", c.name())
            .attr("type", "error")
            .children([Node::new("error").attr("code", code)])
    };
    let app = st.appstate.entry(phone.to_owned()).or_default();
    let server = app.server.entry(c).or_default();
    if version != server.version {
        return refuse("409");
    }
    let Ok(patch) = SyncdPatch::decode(bytes) else {
        return refuse("400");
    };
    // The phone applies it too (checking every MAC): its later patches chain on it.
    let state = app.phone.entry(c).or_default();
    let decoded = match decode_patch(c, state, &patch, &app.keys) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "sim: refused an app-state patch");
            return refuse("400");
        }
    };
    state.apply(&decoded);
    server.version = decoded.version;
    server.patches.insert(decoded.version, bytes.to_vec());
    app.pushed += 1;
    let v = decoded.version;
    notify(st, phone, c, v, Some(device));
    Node::new("collection")
        .attr("name", c.name())
        .attr("version", v.to_string())
}

fn pull(st: &mut State, phone: &str, c: Collection, version: u64) -> Node {
    let app = st.appstate.entry(phone.to_owned()).or_default();
    let corrupt = &mut app.corrupt_next;
    let server = app.server.entry(c).or_default();
    let mut node = Node::new("collection")
        .attr("name", c.name())
        .attr("version", server.version.to_string());
    let mut children = Vec::new();
    let mut from = version;
    if version == 0 {
        if let Some((v, r)) = &server.snapshot {
            children.push(Node::new("snapshot").bytes(r.encode_to_vec()));
            from = *v;
        }
    }
    let after: Vec<(u64, Vec<u8>)> = server
        .patches
        .range(from + 1..)
        .map(|(v, p)| (*v, p.clone()))
        .collect();
    let more = after.len() > PAGE;
    let mut patches = Vec::new();
    for (_, mut bytes) in after.into_iter().take(PAGE) {
        if let Some(how) = corrupt.take() {
            if let Ok(mut p) = SyncdPatch::decode(bytes.as_slice()) {
                let field = match how {
                    PatchCorruption::PatchMac => &mut p.patch_mac,
                    PatchCorruption::LtHash => &mut p.snapshot_mac,
                };
                let mut b = field.clone().unwrap_or_default().to_vec();
                if let Some(x) = b.first_mut() {
                    *x ^= 0x5a;
                }
                *field = Some(b.into());
                bytes = p.encode_to_vec();
            }
        }
        patches.push(Node::new("patch").bytes(bytes));
    }
    children.push(Node::new("patches").children(patches));
    if more {
        node = node.attr("has_more_patches", "true");
    }
    node.children(children)
}
