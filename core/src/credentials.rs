//! The long-term credentials of a companion device (PAIRING.md §0).
//!
//! They are generated once, before the first connection, from the caller's random source, and
//! they change only at pairing (the device identity, and the adv secret during phone-code
//! pairing) and when the server sends new routing info. The connection machine hands every
//! change to the application as an event before any frame that depends on it leaves, so a
//! store that persists events in order never loses them.

use std::fmt;

use bytes::Bytes;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::jid::Jid;
use crate::noise::KeyPair;

/// The signed prekey: an X25519 key pair signed by the identity key.
#[derive(Clone, Debug)]
pub struct SignedPreKey {
    /// Key id (1 for the first one, PAIRING.md §0).
    pub id: u32,
    /// The key pair.
    pub key_pair: KeyPair,
    /// XEdDSA signature by the identity key over `0x05 ‖ public key`.
    pub signature: [u8; 64],
}

impl SignedPreKey {
    /// Generates a signed prekey with `id`, signed by `identity`.
    pub fn generate(id: u32, identity: &KeyPair, rng: &mut impl CryptoRngCore) -> Self {
        let key_pair = KeyPair::generate(rng);
        let mut random = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(random.as_mut_slice());
        let signature = crate::xeddsa::sign(
            &identity.private_bytes(),
            &signal_public(key_pair.public_bytes()),
            &random,
        );
        Self {
            id,
            key_pair,
            signature,
        }
    }
}

/// A public key in the 33-byte Signal form (`0x05` type byte, then the key).
pub fn signal_public(key: &[u8; 32]) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = 0x05;
    out[1..].copy_from_slice(key);
    out
}

/// What pairing established: who this device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Our phone-number device JID, e.g. `15551234567:12@s.whatsapp.net`.
    pub jid: Jid,
    /// Our LID device JID, when the server gave one.
    pub lid: Option<Jid>,
    /// The `ADVSignedDeviceIdentity` protobuf with the account signature key and our device
    /// signature (sent again in `<device-identity>` of prekey messages).
    pub account: Bytes,
    /// The primary device's platform (`android`, `iphone`, …).
    pub platform: String,
    /// The business name, for business accounts.
    pub business_name: Option<String>,
}

/// The long-term credentials of one companion device.
#[derive(Clone)]
pub struct Credentials {
    /// Static Noise key; its public half is in the QR code.
    pub noise_key: KeyPair,
    /// Signal identity key.
    pub identity_key: KeyPair,
    /// The current signed prekey.
    pub signed_prekey: SignedPreKey,
    /// Signal registration id.
    pub registration_id: u32,
    /// Secret that authenticates the pair-success HMAC.
    pub adv_secret: Zeroizing<[u8; 32]>,
    /// Set once paired.
    pub device: Option<DeviceIdentity>,
    /// Our own LID user, from `<success lid=…>`.
    pub own_lid: Option<Jid>,
    /// Whether the account's 1:1 chats are LID-migrated (LID.md §3.1): 1:1 messages are
    /// then addressed by LID. Set from pair-success `client-props` (`isChatDbLidMigrated`) or
    /// the primary's LID migration push; never lowered.
    pub lid_migrated: bool,
    /// Our display name (push name): sent in the ClientPayload and with presence. Learned at
    /// pairing (a business account's name), from the messages our own devices send, or set
    /// with [`set_push_name`](crate::machine::ConnectionMachine::set_push_name).
    pub push_name: Option<String>,
    /// Edge routing info from the server, sent in front of the next handshake.
    pub routing_info: Option<Bytes>,
    /// The id the next generated one-time prekey gets (ids are never reused; 24 bits, so it
    /// wraps back to 1 after 16,777,215).
    pub next_prekey_id: u32,
}

impl Credentials {
    /// Fresh credentials for a new, unpaired device, drawn from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let noise_key = KeyPair::generate(rng);
        let identity_key = KeyPair::generate(rng);
        let signed_prekey = SignedPreKey::generate(1, &identity_key, rng);
        // A 14-bit registration id, the range every client accepts.
        let registration_id = rng.next_u32() & 0x3FFF;
        let mut adv_secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(adv_secret.as_mut_slice());
        Self {
            noise_key,
            identity_key,
            signed_prekey,
            registration_id,
            adv_secret,
            device: None,
            own_lid: None,
            lid_migrated: false,
            push_name: None,
            routing_info: None,
            next_prekey_id: 1,
        }
    }

    /// Whether pairing has completed (the device identity is known).
    pub fn is_paired(&self) -> bool {
        self.device.is_some()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("noise_key", &self.noise_key)
            .field("identity_key", &self.identity_key)
            .field("signed_prekey_id", &self.signed_prekey.id)
            .field("registration_id", &self.registration_id)
            .field("adv_secret", &"[redacted]")
            .field("device", &self.device)
            .field("own_lid", &self.own_lid)
            .field("lid_migrated", &self.lid_migrated)
            .field("next_prekey_id", &self.next_prekey_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn generated_signed_prekey_verifies() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let c = Credentials::generate(&mut rng);
        assert!(crate::xeddsa::verify(
            c.identity_key.public_bytes(),
            &signal_public(c.signed_prekey.key_pair.public_bytes()),
            &c.signed_prekey.signature
        ));
        assert!(c.registration_id < 1 << 14);
        assert!(!c.is_paired());
        let shown = format!("{c:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains(&hex::encode(c.adv_secret.as_slice())));
    }
}
