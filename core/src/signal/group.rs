//! Sender keys for groups: one symmetric chain per sender, distributed to every member in a
//! sender-key distribution message (SKDM) over the pairwise sessions, and a signature on every
//! `skmsg` so members cannot forge each other's messages.

use std::collections::VecDeque;
use std::fmt;

use zeroize::Zeroizing;

use super::SignalError;
use super::crypto::{cbc_decrypt, cbc_encrypt, hkdf};
use super::keys::{KeySource, PublicKey};
use super::ratchet::{Chain, Skipped};
use super::wire::{SenderKeyDistributionMessage, SenderKeyMessage};
use crate::noise::KeyPair;

/// At most this many sender-key states (key ids) are kept per sender, newest first.
pub const MAX_SENDER_KEY_STATES: usize = 5;

/// The keys of one group message: HKDF(seed, "WhisperGroup", 48) → IV [0:16], cipher key
/// [16:48] (the reverse of the pairwise order).
fn group_keys(seed: &[u8; 32]) -> ([u8; 16], Zeroizing<[u8; 32]>) {
    let okm = hkdf::<48>(seed, None, b"WhisperGroup");
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&okm[..16]);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[16..48]);
    (iv, key)
}

/// One sender key: its id, chain (whose index is the iteration), signing key and skipped keys.
#[derive(Clone)]
pub(crate) struct SenderKeyState {
    pub(crate) key_id: u32,
    pub(crate) chain: Chain,
    pub(crate) signing_public: PublicKey,
    pub(crate) signing_private: Option<Zeroizing<[u8; 32]>>,
    pub(crate) skipped: Skipped,
}

/// The sender keys of one sender in one group (ours, or a member's), stored under the sender
/// key name `group::user::device`.
///
/// Plain data: serialize it with [`to_bytes`](Self::to_bytes) after every change.
#[derive(Clone, Default)]
pub struct SenderKeyRecord {
    pub(crate) states: VecDeque<SenderKeyState>,
}

impl fmt::Debug for SenderKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<(u32, u32)> = self
            .states
            .iter()
            .map(|s| (s.key_id, s.chain.index))
            .collect();
        f.debug_struct("SenderKeyRecord")
            .field("key_ids_and_iterations", &ids)
            .finish_non_exhaustive()
    }
}

impl SenderKeyRecord {
    /// An empty record.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the record has no sender key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The newest state we can sign with (our own sender key).
    fn own(&mut self) -> Option<&mut SenderKeyState> {
        self.states.iter_mut().find(|s| s.signing_private.is_some())
    }

    fn push(&mut self, state: SenderKeyState) {
        self.states.push_front(state);
        self.states.truncate(MAX_SENDER_KEY_STATES);
    }

    /// Our SKDM for this group, creating our sender key first when the record has none: a
    /// random 31-bit key id, a random chain key at iteration 0 and a new signing key pair from
    /// `keys`. Send it (inside a `Message.senderKeyDistributionMessage`) to every member
    /// device that has not had it yet.
    pub fn own_distribution_message(
        &mut self,
        keys: &mut impl KeySource,
    ) -> SenderKeyDistributionMessage {
        if self.own().is_none() {
            let mut id = [0u8; 4];
            keys.fill(&mut id);
            let mut seed = Zeroizing::new([0u8; 32]);
            keys.fill(seed.as_mut_slice());
            let signing = keys.key_pair();
            self.add_own(u32::from_le_bytes(id) & 0x7FFF_FFFF, 0, &seed, &signing);
        }
        let own = self.own().expect("an own state exists or was added above");
        SenderKeyDistributionMessage::build(
            own.key_id,
            own.chain.index,
            &own.chain.key,
            own.signing_public,
        )
    }

    /// Adds our own sender key from given parts (restoring a known key, or tests with fixed
    /// keys); it becomes the one [`encrypt`](Self::encrypt) uses.
    pub fn add_own(
        &mut self,
        key_id: u32,
        iteration: u32,
        chain_key: &[u8; 32],
        signing: &KeyPair,
    ) {
        self.states.retain(|s| s.key_id != key_id);
        self.push(SenderKeyState {
            key_id,
            chain: Chain::new(*chain_key, iteration),
            signing_public: PublicKey::of(signing),
            signing_private: Some(signing.private_bytes()),
            skipped: VecDeque::new(),
        });
    }

    /// Takes in a member's SKDM. A repeated SKDM of a key we already hold is ignored, so it
    /// cannot rewind the chain and reopen used message keys.
    pub fn process_distribution(&mut self, skdm: &SenderKeyDistributionMessage) {
        if self
            .states
            .iter()
            .any(|s| s.key_id == skdm.key_id && s.signing_public == skdm.signing_key)
        {
            return;
        }
        self.states.retain(|s| s.key_id != skdm.key_id);
        self.push(SenderKeyState {
            key_id: skdm.key_id,
            chain: Chain::new(*skdm.chain_key, skdm.iteration),
            signing_public: skdm.signing_key,
            signing_private: None,
            skipped: VecDeque::new(),
        });
    }

    /// Encrypts `plaintext` (already padded) with our sender key and signs the message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<SenderKeyMessage, SignalError> {
        let own = self.own().ok_or(SignalError::NoSenderKey)?;
        let iteration = own.chain.index;
        let seed = own.chain.next_seed()?;
        let (iv, key) = group_keys(&seed);
        let ciphertext = cbc_encrypt(&key, &iv, plaintext);
        let private = own
            .signing_private
            .as_ref()
            .expect("own() only returns states with a private key");
        Ok(SenderKeyMessage::build(
            own.key_id, iteration, ciphertext, private,
        ))
    }

    /// Parses and decrypts a `skmsg`. See [`decrypt_message`](Self::decrypt_message).
    pub fn decrypt(&mut self, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, SignalError> {
        let msg = SenderKeyMessage::parse(bytes)?;
        self.decrypt_message(&msg)
    }

    /// Checks the signature and decrypts a parsed `skmsg`, advancing the chain (keys skipped
    /// on the way are kept, bounded). On error the record is unchanged.
    pub fn decrypt_message(
        &mut self,
        msg: &SenderKeyMessage,
    ) -> Result<Zeroizing<Vec<u8>>, SignalError> {
        let state = self
            .states
            .iter_mut()
            .find(|s| s.key_id == msg.key_id)
            .ok_or(SignalError::UnknownSenderKey { key_id: msg.key_id })?;
        msg.verify(&state.signing_public)?;
        let mut chain = state.chain.clone();
        let mut skipped = state.skipped.clone();
        let seed = chain.seed_for(msg.iteration, &mut skipped)?;
        let (iv, key) = group_keys(&seed);
        let plaintext = cbc_decrypt(&key, &iv, &msg.ciphertext)?;
        state.chain = chain;
        state.skipped = skipped;
        Ok(plaintext)
    }
}
