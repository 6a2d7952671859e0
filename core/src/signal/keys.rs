//! Keys of the Signal protocol: public keys in their wire form, the local identity, prekeys,
//! the prekey bundle of a peer, and the injected key source.

use std::fmt;

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::SignalError;
use crate::credentials::{Credentials, SignedPreKey, signal_public};
use crate::noise::KeyPair;

/// The type byte of a Curve25519 (DJB) key in its 33-byte wire form.
pub const KEY_TYPE_DJB: u8 = 0x05;

/// Where new key pairs and random bytes come from.
///
/// Every [`CryptoRngCore`] is a key source. Tests replay recorded exchanges with a source that
/// hands out recorded key pairs in order, which makes every ciphertext reproducible.
pub trait KeySource {
    /// A fresh X25519 key pair (a base key, a ratchet key, a prekey, a signing key).
    fn key_pair(&mut self) -> KeyPair;
    /// Fills `out` with random bytes (sender-key seeds and ids, registration ids).
    fn fill(&mut self, out: &mut [u8]);
}

impl<R: CryptoRngCore> KeySource for R {
    fn key_pair(&mut self) -> KeyPair {
        KeyPair::generate(self)
    }
    fn fill(&mut self, out: &mut [u8]) {
        self.fill_bytes(out);
    }
}

/// A Curve25519 public key (the Montgomery `u` coordinate).
///
/// On the wire, in MACs and under signatures it appears as 33 bytes, `05` then the key
/// ([`PublicKey::serialize`]); Diffie-Hellman uses the 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses the 33-byte wire form (`05` ‖ key); `what` names the key in the error.
    pub fn from_wire(bytes: &[u8], what: &'static str) -> Result<Self, SignalError> {
        match bytes {
            [KEY_TYPE_DJB, rest @ ..] => rest
                .try_into()
                .map(Self)
                .map_err(|_| SignalError::InvalidKey { what }),
            _ => Err(SignalError::InvalidKey { what }),
        }
    }

    /// Parses a key given either as 32 raw bytes (as WhatsApp's `<key>` nodes carry it) or in
    /// the 33-byte wire form.
    pub fn from_bytes_lenient(bytes: &[u8], what: &'static str) -> Result<Self, SignalError> {
        match <[u8; 32]>::try_from(bytes) {
            Ok(raw) => Ok(Self(raw)),
            Err(_) => Self::from_wire(bytes, what),
        }
    }

    /// The 33-byte wire form.
    #[must_use]
    pub fn serialize(&self) -> [u8; 33] {
        signal_public(&self.0)
    }

    /// The public half of a key pair.
    #[must_use]
    pub fn of(pair: &KeyPair) -> Self {
        Self(*pair.public_bytes())
    }

    /// Checks an XEdDSA signature by this key over `msg`.
    #[must_use]
    pub fn verify(&self, msg: &[u8], signature: &[u8; 64]) -> bool {
        crate::xeddsa::verify(&self.0, msg, signature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Diffie-Hellman of our pair with a peer's public key; a low-order peer key is refused.
pub(crate) fn dh(
    ours: &KeyPair,
    theirs: &PublicKey,
    what: &'static str,
) -> Result<Zeroizing<[u8; 32]>, SignalError> {
    ours.dh(&theirs.0).ok_or(SignalError::InvalidKey { what })
}

/// Our side of the protocol: the identity key pair and the registration id.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The long-term identity key pair.
    pub key_pair: KeyPair,
    /// The registration id (14 bits in practice, sent in every prekey message).
    pub registration_id: u32,
}

impl Identity {
    /// The identity of a device from its credentials.
    #[must_use]
    pub fn from_credentials(creds: &Credentials) -> Self {
        Self {
            key_pair: creds.identity_key.clone(),
            registration_id: creds.registration_id,
        }
    }

    /// A fresh identity: a new key pair and a registration id in `1..=16380`.
    pub fn generate(keys: &mut impl KeySource) -> Self {
        let key_pair = keys.key_pair();
        Self {
            key_pair,
            registration_id: generate_registration_id(keys),
        }
    }

    /// The public identity key.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        PublicKey::of(&self.key_pair)
    }

    /// Signs a new signed prekey with this identity (deterministic XEdDSA nonce).
    pub fn signed_prekey(&self, id: u32, keys: &mut impl KeySource) -> SignedPreKey {
        let key_pair = keys.key_pair();
        let signature = crate::xeddsa::sign_deterministic(
            &self.key_pair.private_bytes(),
            &signal_public(key_pair.public_bytes()),
        );
        SignedPreKey {
            id,
            key_pair,
            signature,
        }
    }
}

/// A registration id in `1..=16380`, as the official clients pick it.
pub fn generate_registration_id(keys: &mut impl KeySource) -> u32 {
    let mut b = [0u8; 2];
    keys.fill(&mut b);
    u32::from(u16::from_le_bytes(b)) % 16380 + 1
}

/// A one-time prekey: an id and a key pair, handed out once through the server.
#[derive(Clone, Debug)]
pub struct PreKey {
    /// The prekey id (24 bits on the WhatsApp wire).
    pub id: u32,
    /// The key pair.
    pub key_pair: KeyPair,
}

impl PreKey {
    /// Generates `count` prekeys with ids `first_id`, `first_id + 1`, … wrapping within the
    /// 24-bit id space (id 0 is skipped).
    pub fn generate_batch(first_id: u32, count: u32, keys: &mut impl KeySource) -> Vec<Self> {
        let mut id = first_id & 0x00FF_FFFF;
        (0..count)
            .map(|_| {
                if id == 0 {
                    id = 1;
                }
                let pk = Self {
                    id,
                    key_pair: keys.key_pair(),
                };
                id = (id + 1) & 0x00FF_FFFF;
                pk
            })
            .collect()
    }

    /// The public key.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        PublicKey::of(&self.key_pair)
    }
}

/// A peer device's prekey bundle, as fetched from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The peer's registration id.
    pub registration_id: u32,
    /// The peer's identity key.
    pub identity_key: PublicKey,
    /// The signed prekey id.
    pub signed_prekey_id: u32,
    /// The signed prekey.
    pub signed_prekey: PublicKey,
    /// The identity key's signature over the signed prekey's 33-byte form.
    pub signed_prekey_signature: [u8; 64],
    /// A one-time prekey (id, key), when the server still had one.
    pub prekey: Option<(u32, PublicKey)>,
}

impl PreKeyBundle {
    /// Checks the signed prekey's signature.
    pub fn verify(&self) -> Result<(), SignalError> {
        if self.identity_key.verify(
            &self.signed_prekey.serialize(),
            &self.signed_prekey_signature,
        ) {
            Ok(())
        } else {
            Err(SignalError::BadSignature)
        }
    }
}

/// What to do when a peer's identity key differs from the one stored in its session record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IdentityPolicy {
    /// Accept the new identity and report it (WhatsApp's behaviour: a "security code changed"
    /// notice).
    #[default]
    AcceptAndReport,
    /// Refuse with [`SignalError::UntrustedIdentity`].
    Reject,
}

/// Whether setting up a session met a new or changed identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityChange {
    /// The identity is the one already stored.
    Unchanged,
    /// No identity was stored for this peer before.
    New,
    /// The stored identity was a different key (it is replaced).
    Changed {
        /// The identity stored before.
        previous: PublicKey,
    },
}

/// Compares a peer identity with the stored one under `policy`.
pub(crate) fn check_identity(
    stored: Option<PublicKey>,
    seen: PublicKey,
    policy: IdentityPolicy,
) -> Result<IdentityChange, SignalError> {
    match stored {
        None => Ok(IdentityChange::New),
        Some(s) if s == seen => Ok(IdentityChange::Unchanged),
        Some(previous) => match policy {
            IdentityPolicy::Reject => Err(SignalError::UntrustedIdentity),
            IdentityPolicy::AcceptAndReport => Ok(IdentityChange::Changed { previous }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn wire_form_and_signed_prekey() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let id = Identity::generate(&mut rng);
        assert!((1..=16380).contains(&id.registration_id));
        let spk = id.signed_prekey(1, &mut rng);
        let pk = PublicKey::of(&spk.key_pair);
        let wire = pk.serialize();
        assert_eq!(PublicKey::from_wire(&wire, "k"), Ok(pk));
        assert_eq!(PublicKey::from_bytes_lenient(&wire[1..], "k"), Ok(pk));
        assert!(PublicKey::from_wire(&wire[1..], "k").is_err());
        assert!(PublicKey::from_wire(&[6; 33], "k").is_err());
        let bundle = PreKeyBundle {
            registration_id: 1,
            identity_key: id.public(),
            signed_prekey_id: 1,
            signed_prekey: pk,
            signed_prekey_signature: spk.signature,
            prekey: None,
        };
        assert_eq!(bundle.verify(), Ok(()));
        let mut bad = bundle;
        bad.signed_prekey_signature[0] ^= 1;
        assert_eq!(bad.verify(), Err(SignalError::BadSignature));
        let batch = PreKey::generate_batch(0x00FF_FFFE, 3, &mut rng);
        let ids: Vec<u32> = batch.iter().map(|p| p.id).collect();
        assert_eq!(ids, [0x00FF_FFFE, 0x00FF_FFFF, 1]);
    }
}
