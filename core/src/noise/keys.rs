//! X25519 key pairs: the long-term static noise key and the per-connection ephemeral.

use std::fmt;

use rand_core::CryptoRngCore;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::xeddsa::clamp;

/// An X25519 key pair. The private half is zeroized on drop and never shown by `Debug`.
#[derive(Clone)]
pub struct KeyPair {
    private: StaticSecret,
    public: PublicKey,
}

impl KeyPair {
    /// Builds the pair from 32 private bytes, clamped as X25519 does (so raw random bytes and an
    /// already clamped stored key give the same pair).
    #[must_use]
    pub fn from_private_bytes(private: [u8; 32]) -> Self {
        let clamped = Zeroizing::new(clamp(private));
        let private = StaticSecret::from(*clamped);
        let public = PublicKey::from(&private);
        Self { private, public }
    }

    /// Generates a fresh pair from the caller's CSPRNG.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut_slice());
        Self::from_private_bytes(*bytes)
    }

    /// The 32-byte public key (Montgomery `u` coordinate).
    #[must_use]
    pub fn public_bytes(&self) -> &[u8; 32] {
        self.public.as_bytes()
    }

    /// The clamped private key, for storing the long-term key; zeroized when dropped.
    #[must_use]
    pub fn private_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.private.to_bytes())
    }

    /// X25519 with a peer's public key. `None` when the result is all zeros (the peer sent a
    /// low-order point), which would make the derived keys predictable.
    pub(crate) fn dh(&self, peer_public: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self.private.diffie_hellman(&PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return None;
        }
        Some(Zeroizing::new(*shared.as_bytes()))
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("private", &"[redacted]")
            .field("public", &Hex(self.public.as_bytes()))
            .finish()
    }
}

/// Lowercase hex for `Debug` output of public values.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_redacts() {
        let a = KeyPair::from_private_bytes([0xFF; 32]);
        let p = a.private_bytes();
        assert_eq!(p[0] & 7, 0);
        assert_eq!(p[31] & 0xC0, 0x40);
        let dbg = format!("{a:?}");
        assert!(dbg.contains("[redacted]"));
        assert!(!dbg.contains(&hex::encode(&p[..])));
        assert!(dbg.contains(&hex::encode(a.public_bytes())));
    }

    #[test]
    fn low_order_peer_refused() {
        let a = KeyPair::from_private_bytes([3; 32]);
        assert!(a.dh(&[0; 32]).is_none());
        let b = KeyPair::from_private_bytes([4; 32]);
        assert_eq!(a.dh(b.public_bytes()), b.dh(a.public_bytes()));
    }
}
