//! App state ("syncd"): the per-account settings every device of an account shares (contact
//! names, push name, mutes, pins, archives, read marks, stars, labels, locale...).
//!
//! Each account has five collections. A collection is a set of records, each a (index, value)
//! pair encrypted with an app-state sync key that our phone shares with us. The server stores a
//! snapshot of each collection and a chain of numbered patches after it; a device keeps the
//! version it has reached, the LTHash of the records it holds, and the value MAC of every live
//! index (to take it out of the LTHash when the index is overwritten or removed).
//!
//! This module is pure: key expansion ([`MutationKeys`]), the MACs and the value cipher
//! ([`mac`]), the LTHash ([`LtHash`]), decoding a snapshot or a patch with every MAC verified
//! ([`decode_snapshot`], [`decode_patch`]) into a [`Decoded`] result that is applied to a
//! [`CollectionState`] only once everything checked, encoding an outgoing patch
//! ([`encode_patch`]) and a snapshot ([`encode_snapshot`]), and the typed meaning of a
//! mutation ([`AppStateAction`]). The connection machine drives the sync and the keys.

mod action;
mod codec;
mod index;
mod keys;
mod lthash;
pub mod mac;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use action::{AppStateAction, ChatMessageRef};
pub use codec::{
    Decoded, DecodedMutation, PendingMutation, decode_patch, decode_snapshot, encode_patch,
    encode_snapshot,
};
pub use index::{decode_index, encode_index};
pub use keys::{KeyRing, MutationKeys, SyncKey};
pub use lthash::{LTHASH_LEN, LtHash};

/// One of the five app-state collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    /// Push name, locale and other account settings; blocks the other collections.
    CriticalBlock,
    /// The contact list.
    CriticalUnblockLow,
    /// Mutes, stars, deleted messages and chats.
    RegularHigh,
    /// Pins, archives, read marks.
    RegularLow,
    /// Labels and protocol data.
    Regular,
}

impl Collection {
    /// All five, in the order a full sync asks for them.
    pub const ALL: [Self; 5] = [
        Self::CriticalBlock,
        Self::CriticalUnblockLow,
        Self::RegularHigh,
        Self::RegularLow,
        Self::Regular,
    ];

    /// The collection's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::CriticalBlock => "critical_block",
            Self::CriticalUnblockLow => "critical_unblock_low",
            Self::RegularHigh => "regular_high",
            Self::RegularLow => "regular_low",
            Self::Regular => "regular",
        }
    }

    /// The collection with this wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a mutation does to its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Sets (or overwrites) the value of the index.
    Set,
    /// Removes the index.
    Remove,
}

impl Operation {
    /// The byte the value MAC starts with (the wire enum plus one).
    pub fn mac_byte(self) -> u8 {
        match self {
            Self::Set => 1,
            Self::Remove => 2,
        }
    }

    /// The wire enum value.
    pub fn wire(self) -> i32 {
        match self {
            Self::Set => 0,
            Self::Remove => 1,
        }
    }

    /// From the wire enum value.
    pub fn from_wire(v: i32) -> Option<Self> {
        match v {
            0 => Some(Self::Set),
            1 => Some(Self::Remove),
            _ => None,
        }
    }
}

/// Why a snapshot or patch could not be decoded or failed its checks. Nothing of a snapshot
/// or patch that fails is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppStateError {
    /// A record or the patch names a sync key we do not hold (ask our devices for it).
    #[error("app-state sync key {} is missing", keys::hex_short(.0))]
    MissingKey(Vec<u8>),
    /// A structural problem (missing field, short value, bad operation).
    #[error("malformed app state: {0}")]
    Malformed(&'static str),
    /// The value MAC of mutation `index` does not match.
    #[error("value MAC mismatch in mutation {0}")]
    ValueMac(usize),
    /// The value of mutation `index` does not decrypt.
    #[error("value of mutation {0} does not decrypt")]
    Decrypt(usize),
    /// The decrypted value of mutation `index` is not a `SyncActionData`, or its index is not
    /// a JSON array of strings.
    #[error("value of mutation {0} does not parse")]
    Payload(usize),
    /// The index MAC of mutation `index` does not match its index.
    #[error("index MAC mismatch in mutation {0}")]
    IndexMac(usize),
    /// The snapshot MAC does not match the LTHash reached (the state diverged).
    #[error("LTHash mismatch: the snapshot MAC does not match the state reached at version {0}")]
    LtHash(u64),
    /// The patch MAC does not match.
    #[error("patch MAC mismatch at version {0}")]
    PatchMac(u64),
    /// The patch's mutations are in an external blob that was not filled in.
    #[error("the patch's mutations are in an external blob")]
    External,
    /// The patch does not follow the state's version.
    #[error("patch version {got} does not follow version {have}")]
    Version {
        /// The version the state is at.
        have: u64,
        /// The patch's version.
        got: u64,
    },
}

impl AppStateError {
    /// Whether the error is an integrity failure (the state must be refetched from a
    /// snapshot), as opposed to a missing key or a malformed frame.
    pub fn is_integrity(&self) -> bool {
        !matches!(self, Self::MissingKey(_) | Self::External)
    }
}

/// What a device holds of one collection: the version reached, the LTHash, and the value MAC
/// of every live index (by index MAC).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CollectionState {
    /// The version reached (0: never synced).
    pub version: u64,
    /// The LTHash of the live values.
    pub hash: LtHash,
    /// Value MAC of each live index, by index MAC.
    pub macs: HashMap<[u8; 32], [u8; 32]>,
}

impl std::fmt::Debug for CollectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionState")
            .field("version", &self.version)
            .field("hash", &self.hash)
            .field("live", &self.macs.len())
            .finish()
    }
}

impl CollectionState {
    /// Applies a checked result: a snapshot replaces the state, a patch updates it.
    pub fn apply(&mut self, d: &Decoded) {
        if d.snapshot {
            self.macs.clear();
        }
        for r in &d.removed {
            self.macs.remove(r);
        }
        for (i, v) in &d.added {
            self.macs.insert(*i, *v);
        }
        self.version = d.version;
        self.hash = d.hash;
    }
}
