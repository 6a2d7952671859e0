//! The symmetric primitives of the Signal protocol: HKDF, HMAC chain steps, AES-256-CBC.

use aes::Aes256;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::SignalError;

type HmacSha256 = Hmac<Sha256>;

/// HKDF-SHA256 with a 32-zero-byte salt unless one is given, into `N` bytes.
pub(crate) fn hkdf<const N: usize>(
    ikm: &[u8],
    salt: Option<&[u8; 32]>,
    info: &[u8],
) -> Zeroizing<[u8; N]> {
    let zero = [0u8; 32];
    let hk = Hkdf::<Sha256>::new(Some(salt.unwrap_or(&zero)), ikm);
    let mut out = Zeroizing::new([0u8; N]);
    hk.expand(info, out.as_mut_slice())
        .expect("N is at most 80 bytes, far below HKDF-SHA256's 8160-byte limit");
    out
}

/// HMAC-SHA256 of `parts` under `key`.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of a received MAC with the computed one.
pub(crate) fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// One symmetric chain step (`01` gives the message-key seed, `02` the next chain key).
pub(crate) fn chain_step(chain_key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let seed = Zeroizing::new(hmac(chain_key, &[&[0x01]]));
    let next = Zeroizing::new(hmac(chain_key, &[&[0x02]]));
    (seed, next)
}

/// AES-256-CBC with PKCS#7 padding.
pub(crate) fn cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<Aes256>::new(key.into(), iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

/// AES-256-CBC decryption with PKCS#7 padding; any length or padding problem is `Decrypt`.
pub(crate) fn cbc_decrypt(
    key: &[u8; 32],
    iv: &[u8; 16],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SignalError> {
    let mut out = Zeroizing::new(Vec::new());
    cbc_decrypt_into(key, iv, ciphertext, &mut out)?;
    Ok(out)
}

/// [`cbc_decrypt`] into `out` (cleared first), so that a buffer kept by the caller serves
/// message after message. On an error `out` is left zeroized and empty.
pub(crate) fn cbc_decrypt_into(
    key: &[u8; 32],
    iv: &[u8; 16],
    ciphertext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SignalError> {
    use zeroize::Zeroize as _;
    out.clear();
    if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return Err(SignalError::Decrypt);
    }
    out.extend_from_slice(ciphertext);
    match cbc::Decryptor::<Aes256>::new(key.into(), iv.into()).decrypt_padded_mut::<Pkcs7>(out) {
        Ok(plain) => {
            let len = plain.len();
            out.truncate(len);
            Ok(())
        }
        Err(_) => {
            out.zeroize();
            Err(SignalError::Decrypt)
        }
    }
}

/// Benchmark access to the primitives (not part of the stable API).
#[doc(hidden)]
pub mod bench {
    /// AES-256-CBC encryption as the ratchet does it.
    pub fn cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
        super::cbc_encrypt(key, iv, plaintext)
    }
    /// HMAC-SHA256 as the MAC and chain steps do it.
    pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        super::hmac(key, &[data])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbc_round_trip_and_refusals() {
        let (k, iv) = ([7u8; 32], [9u8; 16]);
        for len in [0, 1, 15, 16, 17, 100] {
            let pt = vec![0xAB; len];
            let ct = cbc_encrypt(&k, &iv, &pt);
            assert_eq!(ct.len() % 16, 0);
            assert_eq!(&*cbc_decrypt(&k, &iv, &ct).unwrap(), &pt);
            assert_eq!(
                cbc_decrypt(&k, &iv, &ct[..ct.len() - 1]),
                Err(SignalError::Decrypt)
            );
        }
        assert_eq!(cbc_decrypt(&k, &iv, &[]), Err(SignalError::Decrypt));
        // Wrong key: padding almost surely breaks.
        let ct = cbc_encrypt(&k, &iv, b"hello");
        assert_eq!(cbc_decrypt(&[8; 32], &iv, &ct), Err(SignalError::Decrypt));
    }
}
