//! The Double Ratchet's keys: root key steps, symmetric chains and message keys
//! (vectors/README.md §3).

use std::collections::VecDeque;

use zeroize::Zeroizing;

use super::SignalError;
use super::crypto::{chain_step, hkdf};
use super::keys::{PublicKey, dh};
use crate::noise::KeyPair;

/// At most this many skipped message keys are kept per chain; older ones are dropped first.
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// A message more than this many steps ahead of its chain is refused: a peer cannot make us
/// compute an unbounded number of keys.
pub const MAX_FORWARD_JUMP: u32 = 25_000;

/// Message-key seeds kept for messages that have not arrived yet, by index, oldest first.
pub(crate) type Skipped = VecDeque<(u32, Zeroizing<[u8; 32]>)>;

/// The keys of one pairwise message.
pub(crate) struct MessageKeys {
    pub(crate) cipher: Zeroizing<[u8; 32]>,
    pub(crate) mac: Zeroizing<[u8; 32]>,
    pub(crate) iv: [u8; 16],
}

impl MessageKeys {
    /// HKDF(seed, "WhisperMessageKeys", 80) → cipher key [0:32], MAC key [32:64], IV [64:80].
    pub(crate) fn derive(seed: &[u8; 32]) -> Self {
        let okm = hkdf::<80>(seed, None, b"WhisperMessageKeys");
        let mut cipher = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        let mut iv = [0u8; 16];
        cipher.copy_from_slice(&okm[..32]);
        mac.copy_from_slice(&okm[32..64]);
        iv.copy_from_slice(&okm[64..80]);
        Self { cipher, mac, iv }
    }
}

/// A symmetric chain: its current key and the index of the next message key.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) key: Zeroizing<[u8; 32]>,
    pub(crate) index: u32,
}

impl Chain {
    pub(crate) fn new(key: [u8; 32], index: u32) -> Self {
        Self {
            key: Zeroizing::new(key),
            index,
        }
    }

    /// The message-key seed at the current index, and moves the chain one step on.
    pub(crate) fn next_seed(&mut self) -> Result<Zeroizing<[u8; 32]>, SignalError> {
        let (seed, next) = chain_step(&self.key);
        self.index = self
            .index
            .checked_add(1)
            .ok_or(SignalError::InvalidMessage {
                what: "chain exhausted",
            })?;
        self.key = next;
        Ok(seed)
    }

    /// The seed of message `target`, storing the seeds it skips in `skipped` (bounded), or the
    /// stored seed when `target` is behind the chain.
    pub(crate) fn seed_for(
        &mut self,
        target: u32,
        skipped: &mut Skipped,
    ) -> Result<Zeroizing<[u8; 32]>, SignalError> {
        if target < self.index {
            // Behind the chain: only a key we skipped earlier can open it, and only once.
            let pos = skipped
                .iter()
                .position(|(i, _)| *i == target)
                .ok_or(SignalError::DuplicateMessage { counter: target })?;
            let (_, seed) = skipped
                .remove(pos)
                .expect("position was just found in this deque");
            return Ok(seed);
        }
        let jump = target - self.index;
        if jump > MAX_FORWARD_JUMP {
            return Err(SignalError::TooFarInFuture { jump });
        }
        while self.index < target {
            let i = self.index;
            let seed = self.next_seed()?;
            if skipped.len() >= MAX_SKIPPED_KEYS {
                skipped.pop_front();
            }
            skipped.push_back((i, seed));
        }
        self.next_seed()
    }
}

/// The root key of a session.
#[derive(Clone)]
pub(crate) struct RootKey(pub(crate) Zeroizing<[u8; 32]>);

impl RootKey {
    /// The root step: HKDF(DH(ours, theirs), salt = root key, "WhisperRatchet") → new root
    /// key ‖ chain key.
    pub(crate) fn step(
        &self,
        ours: &KeyPair,
        theirs: &PublicKey,
    ) -> Result<(Self, Chain), SignalError> {
        let shared = dh(ours, theirs, "ratchet key")?;
        let okm = hkdf::<64>(shared.as_slice(), Some(&self.0), b"WhisperRatchet");
        Ok(split_root_chain(&okm))
    }
}

/// Splits 64 bytes of HKDF output into a root key and a chain at index 0.
pub(crate) fn split_root_chain(okm: &[u8; 64]) -> (RootKey, Chain) {
    let mut root = Zeroizing::new([0u8; 32]);
    root.copy_from_slice(&okm[..32]);
    let mut chain = Chain::new([0u8; 32], 0);
    chain.key.copy_from_slice(&okm[32..]);
    (RootKey(root), chain)
}
