//! App-state sync in the machine: the sync keys our phone shares, the `w:sync:app:state` IQs
//! that pull each collection (snapshot as an external blob, then patches), the checks of
//! [`crate::appstate`] before anything applies, recovery from a snapshot on an integrity
//! failure, and outgoing patches applied once the server accepts them.
//!
//! What the machine holds of app state (the keys and, per collection, the version, the
//! LTHash and the value MAC of every live index) is small and needed by every patch, so it is
//! loaded whole at start ([`Session::restore_app_state`](super::Session::restore_app_state))
//! rather than lazily, and every change leaves as a [`Change`] before the events it causes.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use amarula_proto::e2e::{AppStateSyncKeyId, AppStateSyncKeyRequest, Message, ProtocolMessage};
use amarula_proto::server_sync::{
    ExternalBlobReference, SyncdMutations, SyncdPatch, SyncdSnapshot,
};
use prost::Message as _;

use super::blob::BlobPurpose;
use super::{BlobError, BlobId, ConnectionMachine, Event, IqKind, IqResult, RequestId, SendError};
use crate::appstate::{
    AppStateAction, AppStateError, Collection, CollectionState, Decoded, KeyRing, Operation,
    SyncKey, decode_patch, decode_snapshot, encode_patch,
};
use crate::binary::{Content, Node};
use crate::content::MediaRef;
use crate::jid::Jid;
use crate::media::MediaType;
use crate::persist::{AppStateDelta, Change};
use crate::time::Instant;

/// `ProtocolMessage.type` of a key share from our phone.
const KEY_SHARE: i32 = 6;
/// `ProtocolMessage.type` of a key request to our devices.
const KEY_REQUEST: i32 = 7;
/// Most patches kept waiting in one collection's sync.
const MAX_QUEUED_PATCHES: usize = 10_000;

/// What the machine keeps of app state across connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppStateHeld {
    pub(crate) keys: KeyRing,
    pub(crate) collections: HashMap<Collection, CollectionState>,
}

/// One mutation applied from the server (or from our own accepted patch).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AppStateUpdate {
    /// The collection.
    pub collection: Collection,
    /// SET or REMOVE.
    pub operation: Operation,
    /// What it means.
    pub action: AppStateAction,
    /// When the change was made (ms since the epoch), as the sender stamped it.
    pub timestamp_ms: Option<i64>,
    /// Whether it came with a snapshot (a full sync) rather than a patch.
    pub from_snapshot: bool,
}

/// Why an app-state sync of a collection stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AppStateSyncError {
    /// A snapshot or patch failed its checks or could not be decoded.
    #[error(transparent)]
    Decode(#[from] AppStateError),
    /// The server refused or did not answer the sync IQ.
    #[error("sync request failed: {0:?}")]
    Server(IqResult),
    /// The answer was not understood.
    #[error("malformed sync answer: {0}")]
    Malformed(&'static str),
    /// An external blob could not be had.
    #[error("external blob: {0}")]
    Blob(BlobError),
}

/// A patch waiting for its external blob, or a snapshot.
#[derive(Debug)]
pub(crate) enum AppStateBlob {
    /// The collection's snapshot.
    Snapshot(Collection),
    /// The mutations of the first queued patch of the collection.
    Mutations(Collection),
}

/// One collection being pulled.
#[derive(Debug, Default)]
struct Work {
    snapshot: Option<SyncdSnapshot>,
    patches: VecDeque<SyncdPatch>,
    has_more: bool,
    waiting_blob: bool,
    from_snapshot: bool,
}

/// The per-connection state of the sync.
#[derive(Debug, Default)]
pub(crate) struct AppStateSync {
    work: HashMap<Collection, Work>,
    /// IQs in flight: pulls by collection, pushes with what they apply.
    iqs: HashMap<u64, AppIq>,
    /// Collections to pull again once their current pull ends.
    again: BTreeSet<Collection>,
    /// Collections recovered from a snapshot on this connection (once each).
    recovered: HashSet<Collection>,
    /// Keys asked of our devices on this connection.
    requested: HashSet<Vec<u8>>,
}

#[derive(Debug)]
enum AppIq {
    Pull(Collection),
    Push {
        id: RequestId,
        collection: Collection,
        decoded: Box<Decoded>,
    },
}

fn bytes_of(node: &Node) -> Option<&[u8]> {
    node.content_bytes()
}

impl ConnectionMachine {
    /// Pulls the given collections (all five when empty) from the server. Each ends with
    /// [`Event::AppStateSynced`] or [`Event::AppStateFailed`]; the mutations come as
    /// [`Event::AppState`].
    pub fn sync_app_state(&mut self, now: Instant, collections: &[Collection]) {
        let list: Vec<Collection> = if collections.is_empty() {
            Collection::ALL.to_vec()
        } else {
            collections.to_vec()
        };
        for c in list {
            if self.appsync.work.contains_key(&c) {
                self.appsync.again.insert(c);
            } else {
                self.pull(now, c);
            }
        }
    }

    /// Sends a setting (every action [`AppStateAction::to_pending`] encodes: chat settings,
    /// labels, contacts, our push name, deletions) as an app-state patch. It applies locally
    /// (with [`Event::AppState`]) once the server accepts it; [`Event::AppStatePatchSent`]
    /// tells the outcome. A locale or an unknown action gives [`SendError::InvalidRecipient`];
    /// no key yet, [`SendError::NoAppStateKey`].
    pub fn send_app_state(
        &mut self,
        now: Instant,
        action: &AppStateAction,
    ) -> Result<RequestId, SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        let ts = i64::try_from(self.clock.unix_ms(now)).unwrap_or(i64::MAX);
        let (collection, pending) = action.to_pending(ts).ok_or(SendError::InvalidRecipient)?;
        let key_id = self
            .appstate
            .keys
            .latest()
            .map(<[u8]>::to_vec)
            .ok_or(SendError::NoAppStateKey)?;
        let empty = CollectionState::default();
        let state = self.appstate.collections.get(&collection).unwrap_or(&empty);
        let base = state.version;
        let (patch, decoded) = encode_patch(
            collection,
            state,
            &self.appstate.keys,
            &key_id,
            std::slice::from_ref(&pending),
            &mut self.rng,
        )
        .map_err(|_| SendError::NoAppStateKey)?;
        let node = sync_iq(vec![
            Node::new("collection")
                .attr("name", collection.name())
                .attr("version", base.to_string())
                .attr("return_snapshot", "false")
                .children(vec![Node::new("patch").bytes(patch.encode_to_vec())]),
        ]);
        let timeout = self.config.iq_timeout;
        let (n, _) = self.send_tracked_iq(now, node, timeout, IqKind::AppState)?;
        let id = RequestId(n);
        self.appsync.iqs.insert(
            n,
            AppIq::Push {
                id,
                collection,
                decoded: Box::new(decoded),
            },
        );
        Ok(id)
    }

    /// Whether a protocol message from our own phone carries app-state keys: stores them
    /// (before anything else leaves) and pulls the collections.
    pub(super) fn appstate_on_message(&mut self, now: Instant, from_me: bool, message: &Message) {
        let Some(pm) = message.protocol_message.as_deref() else {
            return;
        };
        if !from_me || pm.r#type != Some(KEY_SHARE) {
            return;
        }
        let Some(share) = &pm.app_state_sync_key_share else {
            return;
        };
        let mut added = 0;
        for k in &share.keys {
            let (Some(id), Some(data)) = (
                k.key_id.as_ref().and_then(|i| i.key_id.as_ref()),
                k.key_data.as_ref().and_then(|d| d.key_data.as_ref()),
            ) else {
                continue;
            };
            if id.is_empty() || data.is_empty() || data.len() > 1024 {
                continue;
            }
            let key = SyncKey {
                id: id.to_vec(),
                data: data.to_vec(),
                timestamp: k.key_data.as_ref().and_then(|d| d.timestamp).unwrap_or(0),
            };
            self.appstate.keys.insert(&key);
            self.emit(Event::Persist(Change::AppStateSyncKey(key)));
            added += 1;
        }
        tracing::debug!(added, "app-state sync keys received");
        if added > 0 && self.is_logged_in() {
            self.sync_app_state(now, &[]);
        }
    }

    /// A `server_sync` notification names the collections that changed.
    pub(super) fn appstate_on_server_sync(&mut self, now: Instant, node: &Node) {
        let list: Vec<Collection> = node
            .child_nodes()
            .iter()
            .filter(|c| c.tag == "collection")
            .filter_map(|c| c.attr_str("name").and_then(Collection::from_name))
            .collect();
        if !list.is_empty() && !self.appstate.keys.is_empty() {
            self.sync_app_state(now, &list);
        }
    }

    /// At login: pull everything when we hold keys.
    pub(super) fn appstate_logged_in(&mut self, now: Instant) {
        if !self.appstate.keys.is_empty() {
            self.sync_app_state(now, &[]);
        }
    }

    fn pull(&mut self, now: Instant, c: Collection) {
        let version = self.appstate.collections.get(&c).map_or(0, |s| s.version);
        let mut col = Node::new("collection").attr("name", c.name());
        col = if version == 0 {
            col.attr("return_snapshot", "true")
        } else {
            col.attr("version", version.to_string())
                .attr("return_snapshot", "false")
        };
        let timeout = self.config.iq_timeout;
        match self.send_tracked_iq(now, sync_iq(vec![col]), timeout, IqKind::AppState) {
            Ok((n, _)) => {
                self.appsync.iqs.insert(n, AppIq::Pull(c));
                self.appsync.work.entry(c).or_default();
            }
            Err(e) => tracing::debug!(%c, error = %e, "app-state pull not sent"),
        }
    }

    pub(super) fn appstate_iq_done(&mut self, now: Instant, n: u64, result: IqResult) {
        match self.appsync.iqs.remove(&n) {
            Some(AppIq::Pull(c)) => self.on_pull(now, c, result),
            Some(AppIq::Push {
                id,
                collection,
                decoded,
            }) => self.on_push(now, id, collection, *decoded, result),
            None => {}
        }
    }

    fn on_push(
        &mut self,
        now: Instant,
        id: RequestId,
        collection: Collection,
        decoded: Decoded,
        result: IqResult,
    ) {
        let refused = match &result {
            IqResult::Ok(node) => collection_node(node)
                .filter(|c| c.attr_str("type") == Some("error"))
                .map(|_| result.clone()),
            other => Some(other.clone()),
        };
        if let Some(r) = refused {
            self.emit(Event::AppStatePatchSent {
                id,
                collection,
                result: Err(r),
            });
            // Most likely someone else's patch came first: catch up.
            if !matches!(result, IqResult::Disconnected) {
                self.sync_app_state(now, &[collection]);
            }
            return;
        }
        let base = decoded.version - 1;
        let current = self
            .appstate
            .collections
            .get(&collection)
            .map_or(0, |s| s.version);
        if current == base {
            self.apply_decoded(collection, &decoded, false);
        } else {
            // The state moved while the patch was in flight: the server's copy is the truth.
            self.sync_app_state(now, &[collection]);
        }
        self.emit(Event::AppStatePatchSent {
            id,
            collection,
            result: Ok(decoded.version),
        });
    }

    fn on_pull(&mut self, now: Instant, c: Collection, result: IqResult) {
        let node = match result {
            IqResult::Ok(node) => node,
            // The connection ended: the next login pulls again from the stored version.
            IqResult::Disconnected => {
                self.appsync.work.remove(&c);
                return;
            }
            other => return self.fail(now, c, AppStateSyncError::Server(other)),
        };
        let Some(col) = collection_node(&node) else {
            return self.fail(now, c, AppStateSyncError::Malformed("no collection"));
        };
        if col.attr_str("type") == Some("error") {
            return self.fail(
                now,
                c,
                AppStateSyncError::Server(IqResult::Ok(node.clone())),
            );
        }
        let has_more = col.attr_str("has_more_patches") == Some("true");
        let mut patches = VecDeque::new();
        if let Some(list) = col.child("patches") {
            for p in list.child_nodes().iter().filter(|p| p.tag == "patch") {
                let Some(patch) = bytes_of(p).and_then(|b| SyncdPatch::decode(b).ok()) else {
                    return self.fail(now, c, AppStateSyncError::Malformed("bad patch"));
                };
                if patches.len() >= MAX_QUEUED_PATCHES {
                    return self.fail(now, c, AppStateSyncError::Malformed("too many patches"));
                }
                patches.push_back(patch);
            }
        }
        let snapshot_ref = match col.child("snapshot").and_then(bytes_of) {
            Some(b) => match ExternalBlobReference::decode(b) {
                Ok(r) => Some(r),
                Err(_) => return self.fail(now, c, AppStateSyncError::Malformed("bad snapshot")),
            },
            None => None,
        };
        let work = self.appsync.work.entry(c).or_default();
        work.patches = patches;
        work.has_more = has_more;
        if let Some(r) = snapshot_ref {
            work.waiting_blob = true;
            work.from_snapshot = true;
            self.request_blob(
                blob_ref(&r),
                MediaType::AppState,
                BlobPurpose::AppState(AppStateBlob::Snapshot(c)),
            );
            return;
        }
        self.advance_collection(now, c);
    }

    /// The answer to an app-state blob request.
    pub(super) fn appstate_on_blob(
        &mut self,
        now: Instant,
        _id: BlobId,
        what: AppStateBlob,
        result: Result<Vec<u8>, BlobError>,
    ) {
        let c = match &what {
            AppStateBlob::Snapshot(c) | AppStateBlob::Mutations(c) => *c,
        };
        let Some(work) = self.appsync.work.get_mut(&c) else {
            return;
        };
        work.waiting_blob = false;
        let bytes = match result {
            Ok(b) => b,
            Err(e) => return self.fail(now, c, AppStateSyncError::Blob(e)),
        };
        match what {
            AppStateBlob::Snapshot(_) => match SyncdSnapshot::decode(bytes.as_slice()) {
                Ok(s) => work.snapshot = Some(s),
                Err(_) => {
                    return self.fail(now, c, AppStateSyncError::Malformed("bad snapshot blob"));
                }
            },
            AppStateBlob::Mutations(_) => match SyncdMutations::decode(bytes.as_slice()) {
                Ok(m) if !m.mutations.is_empty() => {
                    if let Some(p) = work.patches.front_mut() {
                        p.mutations = m.mutations;
                    }
                }
                _ => return self.fail(now, c, AppStateSyncError::Malformed("bad mutations blob")),
            },
        }
        self.advance_collection(now, c);
    }

    /// Applies what has arrived of a collection's pull, in order, stopping at a blob to fetch.
    fn advance_collection(&mut self, now: Instant, c: Collection) {
        let Some(work) = self.appsync.work.get_mut(&c) else {
            return;
        };
        if let Some(snapshot) = work.snapshot.take() {
            match decode_snapshot(c, &snapshot, &self.appstate.keys) {
                Ok(d) => self.apply_decoded(c, &d, true),
                Err(e) => return self.decode_failed(now, c, e, &snapshot_key_ids(&snapshot)),
            }
        }
        loop {
            let Some(work) = self.appsync.work.get_mut(&c) else {
                return;
            };
            let Some(patch) = work.patches.front() else {
                break;
            };
            if patch.mutations.is_empty() {
                if let Some(r) = patch.external_mutations.clone() {
                    work.waiting_blob = true;
                    self.request_blob(
                        blob_ref(&r),
                        MediaType::AppState,
                        BlobPurpose::AppState(AppStateBlob::Mutations(c)),
                    );
                    return;
                }
            }
            let empty = CollectionState::default();
            let state = self.appstate.collections.get(&c).unwrap_or(&empty);
            let version = patch.version.as_ref().and_then(|v| v.version).unwrap_or(0);
            if version <= state.version {
                // Already applied (a restart mid-sync, or a repeated answer): skipped, never
                // applied twice.
                work.patches.pop_front();
                continue;
            }
            match decode_patch(c, state, patch, &self.appstate.keys) {
                Ok(d) => {
                    work.patches.pop_front();
                    self.apply_decoded(c, &d, false);
                }
                Err(e) => {
                    let ids = patch_key_ids(patch);
                    return self.decode_failed(now, c, e, &ids);
                }
            }
        }
        let has_more = self.appsync.work.get(&c).is_some_and(|w| w.has_more);
        if has_more {
            self.appsync.work.remove(&c);
            return self.pull(now, c);
        }
        self.finish(now, c);
    }

    fn finish(&mut self, now: Instant, c: Collection) {
        self.appsync.work.remove(&c);
        // A later divergence may be recovered again.
        self.appsync.recovered.remove(&c);
        let version = self.appstate.collections.get(&c).map_or(0, |s| s.version);
        self.emit(Event::AppStateSynced {
            collection: c,
            version,
        });
        if self.appsync.again.remove(&c) {
            self.pull(now, c);
        }
    }

    fn fail(&mut self, now: Instant, c: Collection, error: AppStateSyncError) {
        tracing::warn!(%c, %error, "app-state sync failed");
        self.appsync.work.remove(&c);
        self.emit(Event::AppStateFailed {
            collection: c,
            error,
            recovering: false,
        });
        if self.appsync.again.remove(&c) {
            self.pull(now, c);
        }
    }

    /// A snapshot or patch failed: ask for missing keys, or recover from a snapshot once.
    fn decode_failed(&mut self, now: Instant, c: Collection, e: AppStateError, ids: &[Vec<u8>]) {
        if let AppStateError::MissingKey(_) = e {
            let missing: Vec<Vec<u8>> = ids
                .iter()
                .filter(|id| {
                    !self.appstate.keys.contains(id) && !self.appsync.requested.contains(*id)
                })
                .cloned()
                .collect();
            self.request_keys(now, missing);
            return self.fail(now, c, e.into());
        }
        if e.is_integrity() && self.appsync.recovered.insert(c) {
            tracing::warn!(%c, error = %e, "app state diverged; refetching from the snapshot");
            self.appsync.work.remove(&c);
            self.emit(Event::AppStateFailed {
                collection: c,
                error: e.into(),
                recovering: true,
            });
            // Forget the collection (stored too), then pull it from a fresh snapshot.
            let empty = CollectionState::default();
            self.emit(Event::Persist(Change::AppStateCollection(Box::new(
                AppStateDelta {
                    collection: c,
                    version: 0,
                    hash: empty.hash,
                    replace: true,
                    removed: Vec::new(),
                    added: Vec::new(),
                },
            ))));
            self.appstate.collections.insert(c, empty);
            return self.pull(now, c);
        }
        self.fail(now, c, e.into());
    }

    /// Asks our own phone for app-state keys we lack (APP_STATE_SYNC_KEY_REQUEST), as a peer
    /// message (`category="peer"`): the phone holds every key and answers with a share.
    fn request_keys(&mut self, now: Instant, ids: Vec<Vec<u8>>) {
        if ids.is_empty() || self.creds.device.is_none() {
            return;
        }
        for id in &ids {
            self.appsync.requested.insert(id.clone());
        }
        let msg = Message {
            protocol_message: Some(Box::new(ProtocolMessage {
                r#type: Some(KEY_REQUEST),
                app_state_sync_key_request: Some(AppStateSyncKeyRequest {
                    key_i_ds: ids
                        .into_iter()
                        .map(|id| AppStateSyncKeyId {
                            key_id: Some(id.into()),
                        })
                        .collect(),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        if let Err(e) = self.queue_peer(now, &msg) {
            tracing::debug!(error = %e, "app-state key request not sent");
        }
    }

    /// Stores a checked result, applies it, and hands out its mutations.
    fn apply_decoded(&mut self, c: Collection, d: &Decoded, from_snapshot: bool) {
        self.emit(Event::Persist(Change::AppStateCollection(Box::new(
            AppStateDelta {
                collection: c,
                version: d.version,
                hash: d.hash,
                replace: d.snapshot,
                removed: d.removed.clone(),
                added: d.added.clone(),
            },
        ))));
        self.appstate.collections.entry(c).or_default().apply(d);
        for m in &d.mutations {
            self.emit(Event::AppState(Box::new(AppStateUpdate {
                collection: c,
                operation: m.operation,
                action: m.action(),
                timestamp_ms: m.value.as_ref().and_then(|v| v.timestamp),
                from_snapshot,
            })));
        }
    }

    /// The connection ended: pulls and pushes in flight are forgotten (the next login pulls
    /// again; an unanswered push is reported as not sent).
    pub(super) fn appstate_closed(&mut self) {
        let iqs: Vec<AppIq> = self.appsync.iqs.drain().map(|(_, v)| v).collect();
        for iq in iqs {
            if let AppIq::Push { id, collection, .. } = iq {
                self.emit(Event::AppStatePatchSent {
                    id,
                    collection,
                    result: Err(IqResult::Disconnected),
                });
            }
        }
        self.appsync = AppStateSync::default();
    }
}

fn sync_iq(collections: Vec<Node>) -> Node {
    let mut node = Node::new("iq")
        .attr("xmlns", "w:sync:app:state")
        .attr("type", "set")
        .attr("to", Jid::server());
    node.content = Content::Nodes(vec![Node::new("sync").children(collections)]);
    node
}

fn collection_node(node: &Node) -> Option<&Node> {
    node.child("sync")?.child("collection")
}

fn blob_ref(r: &ExternalBlobReference) -> MediaRef {
    let mut m = MediaRef::default();
    m.direct_path.clone_from(&r.direct_path);
    m.media_key = r.media_key.clone().unwrap_or_default();
    m.file_sha256 = r.file_sha256.clone().unwrap_or_default();
    m.file_enc_sha256 = r.file_enc_sha256.clone().unwrap_or_default();
    m.file_length = r.file_size_bytes.unwrap_or(0);
    m
}

fn snapshot_key_ids(s: &SyncdSnapshot) -> Vec<Vec<u8>> {
    let mut ids: Vec<Vec<u8>> = s
        .records
        .iter()
        .filter_map(|r| r.key_id.as_ref()?.id.as_ref().map(|b| b.to_vec()))
        .chain(
            s.key_id
                .as_ref()
                .and_then(|k| k.id.as_ref())
                .map(|b| b.to_vec()),
        )
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn patch_key_ids(p: &SyncdPatch) -> Vec<Vec<u8>> {
    let mut ids: Vec<Vec<u8>> = p
        .mutations
        .iter()
        .filter_map(|m| {
            m.record
                .as_ref()?
                .key_id
                .as_ref()?
                .id
                .as_ref()
                .map(|b| b.to_vec())
        })
        .chain(
            p.key_id
                .as_ref()
                .and_then(|k| k.id.as_ref())
                .map(|b| b.to_vec()),
        )
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
