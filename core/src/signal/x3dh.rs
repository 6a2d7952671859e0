//! Session setup (X3DH): from a peer's prekey bundle (we are Alice) or from a received
//! `pkmsg` (we are Bob). vectors/README.md §3 gives the exact key schedule.

use std::collections::VecDeque;

use zeroize::Zeroizing;

use super::SignalError;
use super::crypto::hkdf;
use super::keys::Identity;
use super::keys::{
    IdentityChange, IdentityPolicy, KeySource, PreKey, PreKeyBundle, PublicKey, check_identity, dh,
};
use super::ratchet::{Chain, RootKey, split_root_chain};
use super::session::{Pending, SenderChain, SessionRecord, SessionState};
use super::wire::PreKeySignalMessage;
use crate::credentials::SignedPreKey;
use crate::noise::KeyPair;

/// HKDF(FF×32 ‖ DH₁ ‖ DH₂ ‖ DH₃ [‖ DH₄], "WhisperText") → root key ‖ chain key.
fn master_secret(parts: &[&[u8; 32]]) -> (RootKey, Chain) {
    let mut secret = Zeroizing::new(Vec::with_capacity(32 * 5));
    secret.extend_from_slice(&[0xFF; 32]);
    for p in parts {
        secret.extend_from_slice(p.as_slice());
    }
    let okm = hkdf::<64>(&secret, None, b"WhisperText");
    split_root_chain(&okm)
}

/// The result of decrypting a `pkmsg`.
#[derive(Debug)]
#[non_exhaustive]
pub struct PreKeyDecrypted {
    /// The plaintext (still padded).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Whether the sender's identity is new or changed compared with the record.
    pub identity: IdentityChange,
    /// The one-time prekey this message used up: delete it from the store (and refill the
    /// server's supply when it runs low). `None` when no prekey was used or the session
    /// already existed.
    pub used_prekey: Option<u32>,
}

impl SessionRecord {
    /// Starts a session from a peer's prekey bundle (we are Alice). The signed prekey's
    /// signature is checked first; the next [`encrypt`](Self::encrypt) gives a `pkmsg`.
    ///
    /// `keys` gives our base key, then our first ratchet key. The old current session, if
    /// any, is kept among the previous states.
    pub fn process_bundle(
        &mut self,
        local: &Identity,
        bundle: &PreKeyBundle,
        policy: IdentityPolicy,
        keys: &mut impl KeySource,
    ) -> Result<IdentityChange, SignalError> {
        bundle.verify()?;
        let change = check_identity(self.remote_identity(), bundle.identity_key, policy)?;
        let base = keys.key_pair();
        let ratchet = keys.key_pair();
        let dh1 = dh(&local.key_pair, &bundle.signed_prekey, "signed prekey")?;
        let dh2 = dh(&base, &bundle.identity_key, "identity key")?;
        let dh3 = dh(&base, &bundle.signed_prekey, "signed prekey")?;
        let dh4 = match &bundle.prekey {
            Some((_, pk)) => Some(dh(&base, pk, "prekey")?),
            None => None,
        };
        let mut parts: Vec<&[u8; 32]> = vec![&dh1, &dh2, &dh3];
        if let Some(d) = &dh4 {
            parts.push(d);
        }
        // The chain key of the master secret is Bob's first sending chain; Alice does not
        // need it, because Bob always answers on a new ratchet key.
        let (root, _) = master_secret(&parts);
        let (root, sending) = root.step(&ratchet, &bundle.signed_prekey)?;
        let base_key = PublicKey::of(&base);
        self.promote(SessionState {
            local_identity: local.public(),
            remote_identity: bundle.identity_key,
            root,
            previous_counter: 0,
            sender: SenderChain {
                ratchet,
                chain: sending,
            },
            receivers: VecDeque::new(),
            pending: Some(Pending {
                pre_key_id: bundle.prekey.map(|(id, _)| id),
                signed_pre_key_id: bundle.signed_prekey_id,
                base_key,
            }),
            local_registration_id: local.registration_id,
            remote_registration_id: bundle.registration_id,
            alice_base_key: base_key,
        });
        Ok(change)
    }

    /// Decrypts a `pkmsg` (we are Bob), setting up the session it starts unless we already
    /// have it (a repeated `pkmsg` of a session we know is decrypted on that session).
    ///
    /// `signed_prekey` must be ours with the message's
    /// [`signed_pre_key_id`](PreKeySignalMessage::signed_pre_key_id), and `one_time` the
    /// prekey of its [`pre_key_id`](PreKeySignalMessage::pre_key_id) when it has one (`None`
    /// if we no longer have it: then the result is [`SignalError::UnknownPreKey`] unless the
    /// session already exists). On error the record is unchanged.
    pub fn decrypt_prekey_message(
        &mut self,
        local: &Identity,
        msg: &PreKeySignalMessage,
        signed_prekey: &SignedPreKey,
        one_time: Option<&PreKey>,
        policy: IdentityPolicy,
        keys: &mut impl KeySource,
    ) -> Result<PreKeyDecrypted, SignalError> {
        // A session this base key started already exists: decrypt on it.
        if let Some((place, state)) = self.find_by_base_key(&msg.base_key) {
            if state.remote_identity == msg.identity_key {
                let mut trial = state.clone();
                let plaintext = trial.decrypt(msg.message.view(), keys)?;
                match place {
                    None => self.current = Some(trial),
                    Some(i) => {
                        self.previous.remove(i);
                        self.promote(trial);
                    }
                }
                return Ok(PreKeyDecrypted {
                    plaintext,
                    identity: IdentityChange::Unchanged,
                    used_prekey: None,
                });
            }
        }
        let identity = check_identity(self.remote_identity(), msg.identity_key, policy)?;
        if signed_prekey.id != msg.signed_pre_key_id {
            return Err(SignalError::UnknownSignedPreKey {
                id: msg.signed_pre_key_id,
            });
        }
        let one_time = match (msg.pre_key_id, one_time) {
            (None, _) => None,
            (Some(id), Some(pk)) if pk.id == id => Some(&pk.key_pair),
            (Some(id), _) => return Err(SignalError::UnknownPreKey { id }),
        };
        let spk: &KeyPair = &signed_prekey.key_pair;
        let dh1 = dh(spk, &msg.identity_key, "identity key")?;
        let dh2 = dh(&local.key_pair, &msg.base_key, "base key")?;
        let dh3 = dh(spk, &msg.base_key, "base key")?;
        let dh4 = match one_time {
            Some(kp) => Some(dh(kp, &msg.base_key, "base key")?),
            None => None,
        };
        let mut parts: Vec<&[u8; 32]> = vec![&dh1, &dh2, &dh3];
        if let Some(d) = &dh4 {
            parts.push(d);
        }
        let (root, sending) = master_secret(&parts);
        // Bob's first ratchet key is his signed prekey.
        let mut state = SessionState {
            local_identity: local.public(),
            remote_identity: msg.identity_key,
            root,
            previous_counter: 0,
            sender: SenderChain {
                ratchet: spk.clone(),
                chain: sending,
            },
            receivers: VecDeque::new(),
            pending: None,
            local_registration_id: local.registration_id,
            remote_registration_id: msg.registration_id,
            alice_base_key: msg.base_key,
        };
        let plaintext = state.decrypt(msg.message.view(), keys)?;
        self.promote(state);
        Ok(PreKeyDecrypted {
            plaintext,
            identity,
            used_prekey: msg.pre_key_id,
        })
    }
}
