//! App-state sync keys and the five keys each one expands to.

use hkdf::Hkdf;
use sha2::Sha256;
use std::collections::HashMap;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HKDF info string that expands a sync key into its mutation keys.
const INFO: &[u8] = b"WhatsApp Mutation Keys";

/// The five 32-byte keys one app-state sync key expands to (HKDF-SHA256 without salt, 160
/// bytes, cut in five).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MutationKeys {
    /// HMAC-SHA256 key of the index MAC.
    pub index: [u8; 32],
    /// AES-256-CBC key of the mutation values.
    pub value_encryption: [u8; 32],
    /// HMAC-SHA512 key of the value MAC.
    pub value_mac: [u8; 32],
    /// HMAC-SHA256 key of the snapshot MAC.
    pub snapshot_mac: [u8; 32],
    /// HMAC-SHA256 key of the patch MAC.
    pub patch_mac: [u8; 32],
}

impl std::fmt::Debug for MutationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MutationKeys(..)")
    }
}

impl MutationKeys {
    /// Expands the key data of an app-state sync key.
    pub fn derive(key_data: &[u8]) -> Self {
        let mut out = zeroize::Zeroizing::new([0u8; 160]);
        // 160 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
        let _ = Hkdf::<Sha256>::new(None, key_data).expand(INFO, out.as_mut_slice());
        let part = |i: usize| -> [u8; 32] {
            let mut k = [0u8; 32];
            k.copy_from_slice(&out[i * 32..(i + 1) * 32]);
            k
        };
        Self {
            index: part(0),
            value_encryption: part(1),
            value_mac: part(2),
            snapshot_mac: part(3),
            patch_mac: part(4),
        }
    }
}

/// One app-state sync key as our phone shares it (APP_STATE_SYNC_KEY_SHARE).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SyncKey {
    /// The key id patches and records name.
    pub id: Vec<u8>,
    /// The secret key data.
    pub data: Vec<u8>,
    /// When the phone made the key (ms since the epoch; 0 when not given).
    pub timestamp: i64,
}

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncKey")
            .field("id", &hex_short(&self.id))
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

pub(crate) fn hex_short(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

/// The sync keys we hold, expanded once.
#[derive(Default, Clone)]
pub struct KeyRing {
    keys: HashMap<Vec<u8>, (i64, MutationKeys)>,
    latest: Option<Vec<u8>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a key. The newest by timestamp (ties: the last added) becomes the
    /// key outgoing patches use.
    pub fn insert(&mut self, key: &SyncKey) {
        let newest = match self.latest.as_ref().and_then(|id| self.keys.get(id)) {
            Some((ts, _)) => key.timestamp >= *ts,
            None => true,
        };
        self.keys.insert(
            key.id.clone(),
            (key.timestamp, MutationKeys::derive(&key.data)),
        );
        if newest {
            self.latest = Some(key.id.clone());
        }
    }

    /// The expanded keys of `id`.
    pub fn get(&self, id: &[u8]) -> Option<&MutationKeys> {
        self.keys.get(id).map(|(_, k)| k)
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &[u8]) -> bool {
        self.keys.contains_key(id)
    }

    /// The id of the key outgoing patches use (the newest).
    pub fn latest(&self) -> Option<&[u8]> {
        self.latest.as_deref()
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
