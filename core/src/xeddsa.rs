//! Curve25519 signatures with Montgomery (X25519) keys, as used by WhatsApp's server certificate
//! chain and by Signal's signed prekeys (TRANSPORT.md §4).
//!
//! The scheme is the one of libsignal's `calculateSignature` / `verifySignature`, an XEdDSA
//! variant: the signer's X25519 private key `a` (clamped) is used directly as an Ed25519 secret
//! scalar, and the sign bit of the Edwards public key `[a]B`, which a Montgomery public key does
//! not carry, travels in the otherwise unused top bit of the signature's last byte. A signature is
//! `R ‖ S` with that bit folded into `S[31]`; it verifies like Ed25519 against the Edwards point
//! recovered from the Montgomery `u` coordinate and that sign bit.
//!
//! Two nonce choices exist in the wild and both produce valid signatures:
//! - [`sign`]: libsignal's, `r = SHA-512(FE FF…FF ‖ a ‖ msg ‖ Z) mod L` with 64 random bytes `Z`.
//! - [`sign_deterministic`]: curve25519-js's (used by Baileys and by the generator of the test
//!   vectors), `r = SHA-512(a ‖ msg) mod L`, no prefix and no randomness.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

/// Length of a signature in bytes: `R` (32) ‖ `S` (32, with the sign bit in its top bit).
pub const SIGNATURE_LEN: usize = 64;

/// The 32-byte prefix libsignal hashes in front of the nonce input (`0xFE` then 31 × `0xFF`), so
/// that the nonce hash can never collide with another use of SHA-512 over the same key.
const RANDOM_NONCE_PREFIX: [u8; 32] = {
    let mut p = [0xFF; 32];
    p[0] = 0xFE;
    p
};

/// Clamps a 32-byte X25519 private key as X25519 does (RFC 7748 §5).
pub(crate) fn clamp(mut k: [u8; 32]) -> [u8; 32] {
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    k
}

/// Checks `sig` over `msg` against the Montgomery (X25519) public key `public`.
///
/// Returns `false` when the key has no Edwards counterpart with the signature's sign bit, when `S`
/// is not a canonical scalar (any of its top three bits set, or `S ≥ L`), or when the equation
/// `[S]B = R + [H(R ‖ A ‖ msg)]A` does not hold. Bit 255 of `public` is ignored, as X25519 does.
/// Not constant time: every input is public.
#[must_use]
pub fn verify(public: &[u8; 32], msg: &[u8], sig: &[u8; SIGNATURE_LEN]) -> bool {
    let (r_bytes, s_half) = sig.split_at(32);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(s_half);
    // The sign bit of A rides in the top bit of the last byte; it is not part of S.
    let sign = s_bytes[31] >> 7;
    s_bytes[31] &= 0x7F;
    // S must be a reduced scalar: its top three bits are always zero for S < L < 2^253.
    if s_bytes[31] & 0xE0 != 0 {
        return false;
    }
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    // Bit 255 is not part of a Montgomery u coordinate; X25519 ignores it and so do we.
    let mut u = *public;
    u[31] &= 0x7F;
    let Some(a) = MontgomeryPoint(u).to_edwards(sign) else {
        return false;
    };
    let a_compressed = a.compress();
    let k = challenge(r_bytes, &a_compressed, msg);
    // [S]B - [k]A must be R; compressing gives the canonical encoding, so a non-canonical R in
    // the signature never matches.
    let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&-k, &a, &s);
    r_check.compress().as_bytes() == r_bytes
}

/// Signs `msg` with the X25519 private key `private` the way libsignal does, with 64 bytes of
/// caller-supplied randomness (draw them from a CSPRNG; they never leave this function).
///
/// The key is clamped first, so raw 32 random bytes and a stored clamped key sign alike.
#[must_use]
pub fn sign(private: &[u8; 32], msg: &[u8], random: &[u8; 64]) -> [u8; SIGNATURE_LEN] {
    let a_bytes = Zeroizing::new(clamp(*private));
    let mut h = Sha512::new();
    h.update(RANDOM_NONCE_PREFIX);
    h.update(a_bytes.as_slice());
    h.update(msg);
    h.update(random);
    sign_with_nonce_hash(&a_bytes, msg, h)
}

/// Signs `msg` with the X25519 private key `private` using the deterministic nonce
/// `r = SHA-512(clamped private ‖ msg) mod L` of curve25519-js (Baileys, libsignal-node). Same key
/// and message always give the same signature bytes.
#[must_use]
pub fn sign_deterministic(private: &[u8; 32], msg: &[u8]) -> [u8; SIGNATURE_LEN] {
    let a_bytes = Zeroizing::new(clamp(*private));
    let mut h = Sha512::new();
    h.update(a_bytes.as_slice());
    h.update(msg);
    sign_with_nonce_hash(&a_bytes, msg, h)
}

/// The common part of both signers once the nonce hash has been fed.
fn sign_with_nonce_hash(a_bytes: &[u8; 32], msg: &[u8], nonce_hash: Sha512) -> [u8; SIGNATURE_LEN] {
    let a = Zeroizing::new(Scalar::from_bytes_mod_order(*a_bytes));
    let big_a = EdwardsPoint::mul_base(&a).compress();
    let sign_bit = big_a.as_bytes()[31] & 0x80;

    let mut wide = Zeroizing::new([0u8; 64]);
    wide.copy_from_slice(&nonce_hash.finalize());
    let r = Zeroizing::new(Scalar::from_bytes_mod_order_wide(&wide));
    let big_r = EdwardsPoint::mul_base(&r).compress();

    let k = challenge(big_r.as_bytes(), &big_a, msg);
    let s = k * *a + *r;

    let mut sig = [0u8; SIGNATURE_LEN];
    sig[..32].copy_from_slice(big_r.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    // S < 2^253, so its top bit is free to carry the sign of A for the verifier.
    sig[63] = (sig[63] & 0x7F) | sign_bit;
    sig
}

/// `H(R ‖ A ‖ msg) mod L`, the Ed25519 challenge.
fn challenge(r: &[u8], a: &CompressedEdwardsY, msg: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a.as_bytes());
    h.update(msg);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_of(private: &[u8; 32]) -> [u8; 32] {
        MontgomeryPoint::mul_base_clamped(*private).to_bytes()
    }

    #[test]
    fn sign_verify_roundtrip_both_nonces() {
        for seed in 0u8..16 {
            let private = [seed.wrapping_mul(37).wrapping_add(1); 32];
            let public = public_of(&private);
            let msg = [seed; 40];
            let a = sign(&private, &msg, &[seed; 64]);
            let b = sign_deterministic(&private, &msg);
            assert!(verify(&public, &msg, &a));
            assert!(verify(&public, &msg, &b));
            assert_ne!(a, b);
            assert!(!verify(&public, b"other", &a));
        }
    }

    #[test]
    fn tampering_fails() {
        let private = [7u8; 32];
        let public = public_of(&private);
        let sig = sign_deterministic(&private, b"hello");
        for i in 0..SIGNATURE_LEN {
            for bit in 0..8 {
                let mut bad = sig;
                bad[i] ^= 1 << bit;
                assert!(!verify(&public, b"hello", &bad), "flip {i}:{bit} accepted");
            }
        }
        assert!(!verify(&public, b"hellp", &sig));
        assert!(!verify(&public_of(&[8u8; 32]), b"hello", &sig));
    }

    #[test]
    fn non_canonical_s_rejected() {
        // The group order L, little-endian.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let private = [9u8; 32];
        let public = public_of(&private);
        let sig = sign_deterministic(&private, b"m");
        // S + L is the same residue mod L but not canonical: it must be refused.
        let mut s_plus_l = [0u8; 32];
        let mut carry = 0u16;
        for (i, out) in s_plus_l.iter_mut().enumerate() {
            let s_byte = if i == 31 { sig[63] & 0x7F } else { sig[32 + i] };
            let v = u16::from(s_byte) + u16::from(L[i]) + carry;
            *out = v.to_le_bytes()[0];
            carry = v >> 8;
        }
        let mut bad = sig;
        bad[32..].copy_from_slice(&s_plus_l);
        bad[63] |= sig[63] & 0x80;
        assert!(!verify(&public, b"m", &bad));
    }
}
