//! Decoding snapshots and patches with every MAC verified, and encoding outgoing ones.
//!
//! Order of checks for each mutation: the key is held, the value MAC matches, the value
//! decrypts and parses, the index MAC matches the decrypted index. Then for the whole patch the
//! LTHash is advanced (a SET adds its value MAC, and whatever value the index held before, in
//! this patch or in the state, is subtracted), and the snapshot MAC (over the new LTHash and
//! version) and the patch MAC are checked. Only a result that passed all of it is returned; the
//! caller applies it with [`CollectionState::apply`].

use amarula_proto::server_sync::{
    KeyId, SyncdIndex, SyncdMutation, SyncdPatch, SyncdRecord, SyncdSnapshot, SyncdValue,
    SyncdVersion,
};
use amarula_proto::sync_action::{SyncActionData, SyncActionValue};
use prost::Message as _;
use prost::bytes::Bytes;
use rand_core::RngCore;
use std::collections::HashMap;

use super::mac::{self, VALUE_MAC_LEN, mac_eq};
use super::{
    AppStateError, Collection, CollectionState, KeyRing, LtHash, Operation, decode_index,
    encode_index,
};

/// Most mutations accepted in one patch or records in one snapshot.
pub(crate) const MAX_MUTATIONS: usize = 200_000;

/// One decoded, verified mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMutation {
    /// SET or REMOVE.
    pub operation: Operation,
    /// The index (first element: the action name, then its arguments such as a chat JID).
    pub index: Vec<String>,
    /// The action's schema version.
    pub version: i32,
    /// The value (for a REMOVE, what the sender put there, often empty).
    pub value: Option<SyncActionValue>,
    /// The index MAC.
    pub index_mac: [u8; 32],
    /// The value MAC.
    pub value_mac: [u8; 32],
}

/// A snapshot or patch that passed every check, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The collection.
    pub collection: Collection,
    /// Whether it is a snapshot (it replaces the state).
    pub snapshot: bool,
    /// The version reached.
    pub version: u64,
    /// The LTHash reached.
    pub hash: LtHash,
    /// Index MACs no longer live.
    pub removed: Vec<[u8; 32]>,
    /// Index MACs now live, with their value MACs.
    pub added: Vec<([u8; 32], [u8; 32])>,
    /// The mutations, in order.
    pub mutations: Vec<DecodedMutation>,
}

/// A mutation to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMutation {
    /// SET or REMOVE.
    pub operation: Operation,
    /// The index strings.
    pub index: Vec<String>,
    /// The action's schema version.
    pub version: i32,
    /// The value (its timestamp set by the caller).
    pub value: SyncActionValue,
}

fn blob(b: &Option<Bytes>) -> &[u8] {
    b.as_deref().unwrap_or_default()
}

fn record_key_id(r: &SyncdRecord) -> &[u8] {
    r.key_id.as_ref().map_or(&[][..], |k| blob(&k.id))
}

fn index_mac_of(r: &SyncdRecord) -> &[u8] {
    r.index.as_ref().map_or(&[][..], |i| blob(&i.blob))
}

fn value_of(r: &SyncdRecord) -> &[u8] {
    r.value.as_ref().map_or(&[][..], |v| blob(&v.blob))
}

/// Decodes and verifies one record.
fn decode_record(
    n: usize,
    op: Operation,
    r: &SyncdRecord,
    keys: &KeyRing,
) -> Result<DecodedMutation, AppStateError> {
    let key_id = record_key_id(r);
    let k = keys
        .get(key_id)
        .ok_or_else(|| AppStateError::MissingKey(key_id.to_vec()))?;
    let value = value_of(r);
    // IV (16), at least one cipher block (16), value MAC (32).
    if value.len() < 16 + 16 + VALUE_MAC_LEN {
        return Err(AppStateError::Malformed("value too short"));
    }
    let (encrypted, got_mac) = value.split_at(value.len() - VALUE_MAC_LEN);
    let value_mac = mac::value_mac(&k.value_mac, op, key_id, encrypted);
    if !mac_eq(&value_mac, got_mac) {
        return Err(AppStateError::ValueMac(n));
    }
    let plain =
        mac::decrypt_value(&k.value_encryption, encrypted).ok_or(AppStateError::Decrypt(n))?;
    let data = SyncActionData::decode(plain.as_slice()).map_err(|_| AppStateError::Payload(n))?;
    let index_json = blob(&data.index);
    let index_mac = mac::index_mac(&k.index, index_json);
    if !mac_eq(&index_mac, index_mac_of(r)) {
        return Err(AppStateError::IndexMac(n));
    }
    let index = decode_index(index_json).ok_or(AppStateError::Payload(n))?;
    Ok(DecodedMutation {
        operation: op,
        index,
        version: data.version.unwrap_or(0),
        value: data.value,
        index_mac,
        value_mac,
    })
}

/// Advances `hash` over decoded mutations, looking up the previous value of each index first in
/// the mutations before it, then in `prior`. Returns the removed and added index MACs.
#[allow(clippy::type_complexity)]
fn advance(
    hash: &mut LtHash,
    mutations: &[DecodedMutation],
    prior: Option<&HashMap<[u8; 32], [u8; 32]>>,
) -> (Vec<[u8; 32]>, Vec<([u8; 32], [u8; 32])>) {
    // The live value of each index touched here: Some(value MAC) or None (removed).
    let mut overlay: HashMap<[u8; 32], Option<[u8; 32]>> = HashMap::with_capacity(mutations.len());
    let mut order: Vec<[u8; 32]> = Vec::with_capacity(mutations.len());
    for m in mutations {
        let prev = match overlay.get(&m.index_mac) {
            Some(v) => *v,
            None => {
                order.push(m.index_mac);
                prior.and_then(|p| p.get(&m.index_mac).copied())
            }
        };
        if let Some(p) = prev {
            hash.remove(&p);
        }
        let now = match m.operation {
            Operation::Set => {
                hash.add(&m.value_mac);
                Some(m.value_mac)
            }
            Operation::Remove => None,
        };
        overlay.insert(m.index_mac, now);
    }
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for i in order {
        match overlay.get(&i).copied().flatten() {
            Some(v) => added.push((i, v)),
            None => removed.push(i),
        }
    }
    (removed, added)
}

/// Decodes and verifies a snapshot (every record a SET over an empty state).
pub fn decode_snapshot(
    collection: Collection,
    snapshot: &SyncdSnapshot,
    keys: &KeyRing,
) -> Result<Decoded, AppStateError> {
    let version = snapshot
        .version
        .as_ref()
        .and_then(|v| v.version)
        .ok_or(AppStateError::Malformed("snapshot without version"))?;
    if snapshot.records.len() > MAX_MUTATIONS {
        return Err(AppStateError::Malformed("too many records"));
    }
    let mut mutations = Vec::with_capacity(snapshot.records.len());
    for (n, r) in snapshot.records.iter().enumerate() {
        mutations.push(decode_record(n, Operation::Set, r, keys)?);
    }
    let mut hash = LtHash::default();
    let (removed, added) = advance(&mut hash, &mutations, None);
    let key_id = snapshot.key_id.as_ref().map_or(&[][..], |k| blob(&k.id));
    let k = keys
        .get(key_id)
        .ok_or_else(|| AppStateError::MissingKey(key_id.to_vec()))?;
    let expected = mac::snapshot_mac(&k.snapshot_mac, &hash, version, collection);
    if !mac_eq(&expected, blob(&snapshot.mac)) {
        return Err(AppStateError::LtHash(version));
    }
    Ok(Decoded {
        collection,
        snapshot: true,
        version,
        hash,
        removed,
        added,
        mutations,
    })
}

/// Decodes and verifies a patch on top of `state`. A patch whose mutations are in an external
/// blob must have them filled in first (else [`AppStateError::External`]).
pub fn decode_patch(
    collection: Collection,
    state: &CollectionState,
    patch: &SyncdPatch,
    keys: &KeyRing,
) -> Result<Decoded, AppStateError> {
    let version = patch
        .version
        .as_ref()
        .and_then(|v| v.version)
        .ok_or(AppStateError::Malformed("patch without version"))?;
    if version <= state.version {
        return Err(AppStateError::Version {
            have: state.version,
            got: version,
        });
    }
    if patch.mutations.is_empty() && patch.external_mutations.is_some() {
        return Err(AppStateError::External);
    }
    if patch.mutations.len() > MAX_MUTATIONS {
        return Err(AppStateError::Malformed("too many mutations"));
    }
    let mut mutations = Vec::with_capacity(patch.mutations.len());
    for (n, m) in patch.mutations.iter().enumerate() {
        let op = Operation::from_wire(m.operation.unwrap_or(0))
            .ok_or(AppStateError::Malformed("unknown operation"))?;
        let r = m
            .record
            .as_ref()
            .ok_or(AppStateError::Malformed("mutation without record"))?;
        mutations.push(decode_record(n, op, r, keys)?);
    }
    let mut hash = state.hash;
    let (removed, added) = advance(&mut hash, &mutations, Some(&state.macs));
    let key_id = patch.key_id.as_ref().map_or(&[][..], |k| blob(&k.id));
    let k = keys
        .get(key_id)
        .ok_or_else(|| AppStateError::MissingKey(key_id.to_vec()))?;
    let snapshot_mac = mac::snapshot_mac(&k.snapshot_mac, &hash, version, collection);
    if !mac_eq(&snapshot_mac, blob(&patch.snapshot_mac)) {
        return Err(AppStateError::LtHash(version));
    }
    let patch_mac = mac::patch_mac(
        &k.patch_mac,
        &snapshot_mac,
        mutations.iter().map(|m| &m.value_mac[..]),
        version,
        collection,
    );
    if !mac_eq(&patch_mac, blob(&patch.patch_mac)) {
        return Err(AppStateError::PatchMac(version));
    }
    Ok(Decoded {
        collection,
        snapshot: false,
        version,
        hash,
        removed,
        added,
        mutations,
    })
}

/// Encrypts one mutation into a record (random IV from `rng`).
fn encode_record(
    m: &PendingMutation,
    key_id: &[u8],
    keys: &KeyRing,
    rng: &mut impl RngCore,
) -> Result<(SyncdRecord, DecodedMutation), AppStateError> {
    let k = keys
        .get(key_id)
        .ok_or_else(|| AppStateError::MissingKey(key_id.to_vec()))?;
    let index_json = encode_index(&m.index);
    let data = SyncActionData {
        index: Some(index_json.clone().into()),
        value: Some(m.value.clone()),
        padding: Some(Default::default()),
        version: Some(m.version),
    };
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    let encrypted = mac::encrypt_value(&k.value_encryption, &iv, &data.encode_to_vec());
    let value_mac = mac::value_mac(&k.value_mac, m.operation, key_id, &encrypted);
    let index_mac = mac::index_mac(&k.index, &index_json);
    let mut value = encrypted;
    value.extend_from_slice(&value_mac);
    let record = SyncdRecord {
        index: Some(SyncdIndex {
            blob: Some(index_mac.to_vec().into()),
        }),
        value: Some(SyncdValue {
            blob: Some(value.into()),
        }),
        key_id: Some(KeyId {
            id: Some(key_id.to_vec().into()),
        }),
    };
    let decoded = DecodedMutation {
        operation: m.operation,
        index: m.index.clone(),
        version: m.version,
        value: Some(m.value.clone()),
        index_mac,
        value_mac,
    };
    Ok((record, decoded))
}

/// Encodes an outgoing patch on top of `state` with the key `key_id`: version
/// `state.version + 1`, its MACs and LTHash. Returns the patch and what applying it gives (to
/// apply once the server accepted it).
pub fn encode_patch(
    collection: Collection,
    state: &CollectionState,
    keys: &KeyRing,
    key_id: &[u8],
    mutations: &[PendingMutation],
    rng: &mut impl RngCore,
) -> Result<(SyncdPatch, Decoded), AppStateError> {
    let k = keys
        .get(key_id)
        .ok_or_else(|| AppStateError::MissingKey(key_id.to_vec()))?;
    let version = state.version + 1;
    let mut wire = Vec::with_capacity(mutations.len());
    let mut decoded = Vec::with_capacity(mutations.len());
    for m in mutations {
        let (record, d) = encode_record(m, key_id, keys, rng)?;
        wire.push(SyncdMutation {
            operation: Some(m.operation.wire()),
            record: Some(record),
        });
        decoded.push(d);
    }
    let mut hash = state.hash;
    let (removed, added) = advance(&mut hash, &decoded, Some(&state.macs));
    let snapshot_mac = mac::snapshot_mac(&k.snapshot_mac, &hash, version, collection);
    let patch_mac = mac::patch_mac(
        &k.patch_mac,
        &snapshot_mac,
        decoded.iter().map(|m| &m.value_mac[..]),
        version,
        collection,
    );
    let patch = SyncdPatch {
        version: Some(SyncdVersion {
            version: Some(version),
        }),
        mutations: wire,
        snapshot_mac: Some(snapshot_mac.to_vec().into()),
        patch_mac: Some(patch_mac.to_vec().into()),
        key_id: Some(KeyId {
            id: Some(key_id.to_vec().into()),
        }),
        ..Default::default()
    };
    Ok((
        patch,
        Decoded {
            collection,
            snapshot: false,
            version,
            hash,
            removed,
            added,
            mutations: decoded,
        },
    ))
}

/// Encodes a snapshot of `records` (all SETs) at `version` with the key `key_id`.
pub fn encode_snapshot(
    collection: Collection,
    version: u64,
    keys: &KeyRing,
    key_id: &[u8],
    records: &[PendingMutation],
    rng: &mut impl RngCore,
) -> Result<(SyncdSnapshot, Decoded), AppStateError> {
    let k = keys
        .get(key_id)
        .ok_or_else(|| AppStateError::MissingKey(key_id.to_vec()))?;
    let mut wire = Vec::with_capacity(records.len());
    let mut decoded = Vec::with_capacity(records.len());
    for m in records {
        let m = PendingMutation {
            operation: Operation::Set,
            ..m.clone()
        };
        let (record, d) = encode_record(&m, key_id, keys, rng)?;
        wire.push(record);
        decoded.push(d);
    }
    let mut hash = LtHash::default();
    let (removed, added) = advance(&mut hash, &decoded, None);
    let snapshot = SyncdSnapshot {
        version: Some(SyncdVersion {
            version: Some(version),
        }),
        records: wire,
        mac: Some(
            mac::snapshot_mac(&k.snapshot_mac, &hash, version, collection)
                .to_vec()
                .into(),
        ),
        key_id: Some(KeyId {
            id: Some(key_id.to_vec().into()),
        }),
    };
    Ok((
        snapshot,
        Decoded {
            collection,
            snapshot: true,
            version,
            hash,
            removed,
            added,
            mutations: decoded,
        },
    ))
}
