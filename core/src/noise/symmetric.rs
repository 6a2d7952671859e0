//! The Noise symmetric state (`h`, `ck`, `k`, `n`) of the handshake (TRANSPORT.md §3.2).

use std::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::HandshakeError;
use super::keys::Hex;

/// `Noise_XX_25519_AESGCM_SHA256` padded with zeros to 32 bytes. Being exactly one hash long it
/// is the initial `h` and `ck` as is, without hashing.
pub const NOISE_PROTOCOL_NAME: [u8; 32] = *b"Noise_XX_25519_AESGCM_SHA256\0\0\0\0";

/// Length of an AES-GCM tag, appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// The AES-GCM nonce for counter `n`: 8 zero bytes then `n` as u32 big-endian (the same as the
/// Noise spec's 4 zero bytes + u64 BE for every `n` below 2^32).
pub(crate) fn nonce(n: u32) -> Nonce<U12> {
    let mut iv = [0u8; 12];
    iv[8..].copy_from_slice(&n.to_be_bytes());
    iv.into()
}

/// A pair of 32-byte keys, wiped on drop.
pub(crate) type KeyHalves = (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>);

/// HKDF-SHA256 with salt `ck`, empty info and 64 bytes of output, split in two halves: Noise's
/// `HKDF(ck, ikm)` with two outputs, used by both MixKey and Split.
pub(crate) fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> KeyHalves {
    let mut out = Zeroizing::new([0u8; 64]);
    Hkdf::<Sha256>::new(Some(ck), ikm)
        .expand(&[], out.as_mut_slice())
        .expect("64 bytes is well below HKDF-SHA256's 8160-byte limit");
    let mut a = Zeroizing::new([0u8; 32]);
    let mut b = Zeroizing::new([0u8; 32]);
    a.copy_from_slice(&out[..32]);
    b.copy_from_slice(&out[32..]);
    (a, b)
}

/// `h`, `ck` and the cipher state `(k, n)` during the handshake. There is one counter `n`,
/// shared by encryption and decryption and reset by every MixKey.
pub(crate) struct SymmetricState {
    h: [u8; 32],
    ck: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
    n: u32,
}

impl SymmetricState {
    /// `h = ck = k = protocol name`, `n = 0`, then MixHash(prologue). (`k` is never used before
    /// the first MixKey in XX; it is set to the name as WM does.)
    pub(crate) fn new(prologue: &[u8]) -> Self {
        let mut s = Self {
            h: NOISE_PROTOCOL_NAME,
            ck: Zeroizing::new(NOISE_PROTOCOL_NAME),
            cipher: Aes256Gcm::new(&NOISE_PROTOCOL_NAME.into()),
            n: 0,
        };
        s.mix_hash(prologue);
        s
    }

    /// The handshake hash `h` so far (public: it binds the transcript).
    pub(crate) fn handshake_hash(&self) -> &[u8; 32] {
        &self.h
    }

    /// `h = SHA-256(h ‖ data)`.
    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        let mut d = Sha256::new();
        d.update(self.h);
        d.update(data);
        self.h = d.finalize().into();
    }

    /// `(ck, k) = HKDF(ck, ikm)`, `n = 0`.
    pub(crate) fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.cipher = Aes256Gcm::new(&(*k).into());
        self.n = 0;
    }

    /// Seals `plaintext` under `k`, nonce `n`, AAD `h`; `n += 1`; MixHash(ciphertext).
    pub(crate) fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let ct = self
            .cipher
            .encrypt(
                &nonce(self.n),
                Payload {
                    msg: plaintext,
                    aad: &self.h,
                },
            )
            .expect("AES-GCM cannot fail on a payload below 2^24 bytes");
        // At most two messages per key in XX: the counter cannot come near overflow.
        self.n += 1;
        self.mix_hash(&ct);
        ct
    }

    /// Opens `ciphertext` under `k`, nonce `n`, AAD `h`; `n += 1`; MixHash(ciphertext) (the
    /// ciphertext, not the plaintext, is hashed).
    pub(crate) fn decrypt_and_hash(
        &mut self,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HandshakeError> {
        let pt = self
            .cipher
            .decrypt(
                &nonce(self.n),
                Payload {
                    msg: ciphertext,
                    aad: &self.h,
                },
            )
            .map_err(|_| HandshakeError::Decrypt)?;
        self.n += 1;
        self.mix_hash(ciphertext);
        Ok(Zeroizing::new(pt))
    }

    /// Split: `(k1, k2) = HKDF(ck, empty)`; `k1` encrypts initiator → responder, `k2` the
    /// other way. Also returns the final `h`.
    pub(crate) fn split(self) -> (KeyHalves, [u8; 32]) {
        (hkdf2(&self.ck, &[]), self.h)
    }
}

impl fmt::Debug for SymmetricState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricState")
            .field("h", &Hex(&self.h))
            .field("ck", &"[redacted]")
            .field("k", &"[redacted]")
            .field("n", &self.n)
            .finish()
    }
}
