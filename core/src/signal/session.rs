//! Pairwise sessions: the Double Ratchet state of one peer device and the record that keeps it
//! with its previous states.

use std::collections::VecDeque;
use std::fmt;

use zeroize::Zeroizing;

use super::SignalError;
use super::crypto::{cbc_decrypt, cbc_decrypt_into, cbc_encrypt};
use super::keys::{KeySource, PublicKey};
use super::ratchet::{Chain, MessageKeys, RootKey, Skipped};
use super::wire::{CiphertextMessage, PreKeySignalMessage, SignalMessage, SignalMessageView};
use crate::noise::KeyPair;

/// At most this many receiving chains (one per peer ratchet key) are kept per state; a late
/// message on an older chain than these cannot be decrypted.
pub const MAX_RECEIVER_CHAINS: usize = 5;
/// At most this many previous states are kept per record, newest first.
pub const MAX_PREVIOUS_STATES: usize = 40;

/// Our sending chain and the ratchet key pair it belongs to.
#[derive(Clone)]
pub(crate) struct SenderChain {
    pub(crate) ratchet: KeyPair,
    pub(crate) chain: Chain,
}

/// A receiving chain for one of the peer's ratchet keys, with the keys it skipped.
#[derive(Clone)]
pub(crate) struct ReceiverChain {
    pub(crate) ratchet: PublicKey,
    pub(crate) chain: Chain,
    pub(crate) skipped: Skipped,
}

/// What Alice repeats in every message until Bob answers: the prekey ids and her base key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) pre_key_id: Option<u32>,
    pub(crate) signed_pre_key_id: u32,
    pub(crate) base_key: PublicKey,
}

/// One Double Ratchet session with one peer device.
#[derive(Clone)]
pub(crate) struct SessionState {
    pub(crate) local_identity: PublicKey,
    pub(crate) remote_identity: PublicKey,
    pub(crate) root: RootKey,
    pub(crate) previous_counter: u32,
    pub(crate) sender: SenderChain,
    pub(crate) receivers: VecDeque<ReceiverChain>,
    pub(crate) pending: Option<Pending>,
    pub(crate) local_registration_id: u32,
    pub(crate) remote_registration_id: u32,
    /// Alice's base key: identifies the session a `pkmsg` belongs to.
    pub(crate) alice_base_key: PublicKey,
}

impl SessionState {
    /// Encrypts `plaintext` with the next key of the sending chain.
    fn encrypt(&mut self, plaintext: &[u8]) -> Result<CiphertextMessage, SignalError> {
        let counter = self.sender.chain.index;
        let seed = self.sender.chain.next_seed()?;
        let keys = MessageKeys::derive(&seed);
        let ciphertext = cbc_encrypt(&keys.cipher, &keys.iv, plaintext);
        let msg = SignalMessage::build(
            PublicKey::of(&self.sender.ratchet),
            counter,
            self.previous_counter,
            ciphertext,
            &keys.mac,
            &self.local_identity,
            &self.remote_identity,
        );
        Ok(match self.pending {
            Some(p) => CiphertextMessage::PreKey(PreKeySignalMessage::build(
                p.pre_key_id,
                p.signed_pre_key_id,
                p.base_key,
                self.local_identity,
                self.local_registration_id,
                msg,
            )),
            None => CiphertextMessage::Whisper(msg),
        })
    }

    /// Decrypts `msg`, stepping the ratchet when it carries a new peer ratchet key. Call it on
    /// a copy: on error the state may be half changed.
    pub(crate) fn decrypt(
        &mut self,
        msg: SignalMessageView<'_>,
        keys: &mut impl KeySource,
    ) -> Result<Zeroizing<Vec<u8>>, SignalError> {
        let idx = match self
            .receivers
            .iter()
            .position(|c| c.ratchet == msg.ratchet_key)
        {
            Some(i) => i,
            None => self.step_ratchet(msg.ratchet_key, keys)?,
        };
        let chain = self
            .receivers
            .get_mut(idx)
            .expect("index found or pushed just above");
        let seed = chain.chain.seed_for(msg.counter, &mut chain.skipped)?;
        let mk = MessageKeys::derive(&seed);
        msg.verify_mac(&mk.mac, &self.remote_identity, &self.local_identity)?;
        let plaintext = cbc_decrypt(&mk.cipher, &mk.iv, msg.ciphertext)?;
        // The peer answered on this session, so it has it: no more prekey messages.
        self.pending = None;
        Ok(plaintext)
    }

    /// Decrypts `msg` in place when it is the next message of a receiving chain we have (the
    /// usual case: no ratchet step, no skipped keys), changing nothing unless it succeeds.
    /// `None` when the message needs more than that: decrypt it on a copy then.
    fn decrypt_next(
        &mut self,
        msg: SignalMessageView<'_>,
    ) -> Option<Result<Zeroizing<Vec<u8>>, SignalError>> {
        let mut out = Zeroizing::new(Vec::new());
        self.decrypt_next_into(msg, &mut out)
            .map(|result| result.map(|()| out))
    }

    /// [`decrypt_next`](Self::decrypt_next) into `out` (see
    /// [`SessionRecord::decrypt_into`]).
    fn decrypt_next_into(
        &mut self,
        msg: SignalMessageView<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Result<(), SignalError>> {
        let chain = self
            .receivers
            .iter_mut()
            .find(|c| c.ratchet == msg.ratchet_key)?;
        if msg.counter != chain.chain.index {
            return None;
        }
        // The chain moves on only once the MAC and the padding are good.
        let mut next = chain.chain.clone();
        let result = next.next_seed().and_then(|seed| {
            let mk = MessageKeys::derive(&seed);
            msg.verify_mac(&mk.mac, &self.remote_identity, &self.local_identity)?;
            cbc_decrypt_into(&mk.cipher, &mk.iv, msg.ciphertext, out)
        });
        if result.is_ok() {
            chain.chain = next;
            // The peer answered on this session, so it has it: no more prekey messages.
            self.pending = None;
        }
        Some(result)
    }

    /// A new peer ratchet key: a receiving chain from our current ratchet key, then a new
    /// ratchet key of ours and its sending chain. Returns the new receiving chain's index.
    fn step_ratchet(
        &mut self,
        theirs: PublicKey,
        keys: &mut impl KeySource,
    ) -> Result<usize, SignalError> {
        let (root, receiving) = self.root.step(&self.sender.ratchet, &theirs)?;
        let ours = keys.key_pair();
        let (root, sending) = root.step(&ours, &theirs)?;
        self.root = root;
        self.previous_counter = self.sender.chain.index.saturating_sub(1);
        self.sender = SenderChain {
            ratchet: ours,
            chain: sending,
        };
        if self.receivers.len() >= MAX_RECEIVER_CHAINS {
            self.receivers.pop_front();
        }
        self.receivers.push_back(ReceiverChain {
            ratchet: theirs,
            chain: receiving,
            skipped: VecDeque::new(),
        });
        Ok(self.receivers.len() - 1)
    }
}

/// Everything we keep about the sessions with one peer device: the current state and up to
/// [`MAX_PREVIOUS_STATES`] previous ones (a peer may still send on an older session after a
/// new one was set up, for example when both sides started one at the same time).
///
/// The record is plain data: serialize it with [`to_bytes`](Self::to_bytes) after every change
/// and keep it under the peer device's address.
#[derive(Clone, Default)]
pub struct SessionRecord {
    pub(crate) current: Option<SessionState>,
    pub(crate) previous: VecDeque<SessionState>,
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("remote_identity", &self.remote_identity())
            .field("has_session", &self.has_session())
            .field("previous_states", &self.previous.len())
            .finish_non_exhaustive()
    }
}

impl SessionRecord {
    /// An empty record (no session yet).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is a current session to encrypt with.
    #[must_use]
    pub fn has_session(&self) -> bool {
        self.current.is_some()
    }

    /// The peer's identity key in the current session.
    #[must_use]
    pub fn remote_identity(&self) -> Option<PublicKey> {
        self.current.as_ref().map(|s| s.remote_identity)
    }

    /// The peer's registration id in the current session.
    #[must_use]
    pub fn remote_registration_id(&self) -> Option<u32> {
        self.current.as_ref().map(|s| s.remote_registration_id)
    }

    /// Whether the next [`encrypt`](Self::encrypt) gives a `pkmsg` (the peer has not answered
    /// on this session yet); WhatsApp then adds our `<device-identity>` to the stanza.
    #[must_use]
    pub fn is_pending_prekey(&self) -> bool {
        self.current.as_ref().is_some_and(|s| s.pending.is_some())
    }

    /// The number of previous states kept.
    #[must_use]
    pub fn previous_state_count(&self) -> usize {
        self.previous.len()
    }

    /// Moves the current session to the previous states, so the next send needs a new one
    /// (after a retry receipt that asks for new keys, for example).
    pub fn archive_current(&mut self) {
        if let Some(s) = self.current.take() {
            self.push_previous(s);
        }
    }

    fn push_previous(&mut self, state: SessionState) {
        self.previous.push_front(state);
        self.previous.truncate(MAX_PREVIOUS_STATES);
    }

    /// Makes `state` current, archiving the old current state.
    pub(crate) fn promote(&mut self, state: SessionState) {
        if let Some(old) = self.current.replace(state) {
            self.push_previous(old);
        }
    }

    /// Encrypts `plaintext` (already padded by the caller) on the current session: a `pkmsg`
    /// until the peer answers, a `msg` after.
    ///
    /// Changes the record (the sending chain moves on): persist it before sending.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<CiphertextMessage, SignalError> {
        self.current
            .as_mut()
            .ok_or(SignalError::NoSession)?
            .encrypt(plaintext)
    }

    /// Parses and decrypts a `msg`. See [`decrypt_message`](Self::decrypt_message).
    pub fn decrypt(
        &mut self,
        bytes: &[u8],
        keys: &mut impl KeySource,
    ) -> Result<Zeroizing<Vec<u8>>, SignalError> {
        let msg = SignalMessageView::parse(bytes)?;
        self.decrypt_view(msg, keys)
    }

    /// [`decrypt`](Self::decrypt) into `out` (cleared first) rather than a new buffer: the
    /// next message of a receiving chain (the usual case) is decrypted with no allocation
    /// once `out` has room, so a caller keeps one buffer for every message. The plaintext in
    /// `out` is the caller's to zeroize; on an error `out` is left empty.
    pub fn decrypt_into(
        &mut self,
        bytes: &[u8],
        keys: &mut impl KeySource,
        out: &mut Vec<u8>,
    ) -> Result<(), SignalError> {
        let msg = SignalMessageView::parse(bytes)?;
        out.clear();
        if let Some(Some(Ok(()))) = self
            .current
            .as_mut()
            .map(|state| state.decrypt_next_into(msg, out))
        {
            return Ok(());
        }
        // A ratchet step, a skipped key, an older session or an error: the general path (on
        // an error of the attempt above, it fails the same way and changes nothing).
        let plaintext = self.decrypt_view(msg, keys)?;
        out.extend_from_slice(&plaintext);
        Ok(())
    }

    /// Decrypts a parsed `msg` with the current session or, failing that, a previous one
    /// (which then becomes current). On error the record is unchanged; the error is the
    /// current session's (a replay gives [`SignalError::DuplicateMessage`], a forged MAC
    /// [`SignalError::BadMac`]).
    ///
    /// `keys` gives our next ratchet key when the peer has moved to a new one.
    pub fn decrypt_message(
        &mut self,
        msg: &SignalMessage,
        keys: &mut impl KeySource,
    ) -> Result<Zeroizing<Vec<u8>>, SignalError> {
        self.decrypt_view(msg.view(), keys)
    }

    fn decrypt_view(
        &mut self,
        msg: SignalMessageView<'_>,
        keys: &mut impl KeySource,
    ) -> Result<Zeroizing<Vec<u8>>, SignalError> {
        let first_err = match &mut self.current {
            None => SignalError::NoSession,
            Some(state) => match state.decrypt_next(msg) {
                Some(Ok(pt)) => return Ok(pt),
                Some(Err(e)) => e,
                None => {
                    let mut trial = state.clone();
                    match trial.decrypt(msg, keys) {
                        Ok(pt) => {
                            self.current = Some(trial);
                            return Ok(pt);
                        }
                        Err(e) => e,
                    }
                }
            },
        };
        for i in 0..self.previous.len() {
            let mut trial = self.previous[i].clone();
            if let Ok(pt) = trial.decrypt(msg, keys) {
                self.previous.remove(i);
                self.promote(trial);
                return Ok(pt);
            }
        }
        Err(first_err)
    }

    /// The state whose session Alice started with `base_key`, with its place (`None` for the
    /// current state, `Some(i)` for previous state `i`).
    pub(crate) fn find_by_base_key(
        &self,
        base_key: &PublicKey,
    ) -> Option<(Option<usize>, &SessionState)> {
        if let Some(s) = &self.current {
            if s.alice_base_key == *base_key {
                return Some((None, s));
            }
        }
        self.previous
            .iter()
            .enumerate()
            .find(|(_, s)| s.alice_base_key == *base_key)
            .map(|(i, s)| (Some(i), s))
    }
}
