//! The MACs of app state: index MAC, value MAC, snapshot MAC and patch MAC, and the value
//! cipher (AES-256-CBC with PKCS#7, a random 16-byte IV in front).

use aes::Aes256;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::{Collection, LtHash, Operation};

/// Size of a value MAC (the first half of an HMAC-SHA512).
pub const VALUE_MAC_LEN: usize = 32;

fn hmac256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable_hmac()
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC takes keys of any length")
}

/// The index MAC: HMAC-SHA256 of the index JSON under the index key.
pub fn index_mac(index_key: &[u8; 32], index_json: &[u8]) -> [u8; 32] {
    hmac256(index_key, &[index_json])
}

/// The value MAC: HMAC-SHA512 under the value-MAC key of the operation byte (SET 1,
/// REMOVE 2), the key id, the encrypted value (IV and ciphertext) and the key id's length
/// plus one as a big-endian u64, cut to 32 bytes.
pub fn value_mac(
    value_mac_key: &[u8; 32],
    op: Operation,
    key_id: &[u8],
    encrypted: &[u8],
) -> [u8; VALUE_MAC_LEN] {
    let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(value_mac_key) else {
        unreachable_hmac()
    };
    mac.update(&[op.mac_byte()]);
    mac.update(key_id);
    mac.update(encrypted);
    mac.update(&(key_id.len() as u64 + 1).to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; VALUE_MAC_LEN];
    out.copy_from_slice(&full[..VALUE_MAC_LEN]);
    out
}

/// The snapshot MAC: HMAC-SHA256 under the snapshot-MAC key of the LTHash, the version as a
/// big-endian u64 and the collection name.
pub fn snapshot_mac(
    key: &[u8; 32],
    hash: &LtHash,
    version: u64,
    collection: Collection,
) -> [u8; 32] {
    hmac256(
        key,
        &[
            &hash.0,
            &version.to_be_bytes(),
            collection.name().as_bytes(),
        ],
    )
}

/// The patch MAC: HMAC-SHA256 under the patch-MAC key of the patch's snapshot MAC, every
/// mutation's value MAC in order, the version as a big-endian u64 and the collection name.
pub fn patch_mac<'a>(
    key: &[u8; 32],
    snapshot_mac: &[u8],
    value_macs: impl IntoIterator<Item = &'a [u8]>,
    version: u64,
    collection: Collection,
) -> [u8; 32] {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable_hmac()
    };
    mac.update(snapshot_mac);
    for v in value_macs {
        mac.update(v);
    }
    mac.update(&version.to_be_bytes());
    mac.update(collection.name().as_bytes());
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of a received MAC and the computed one.
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Encrypts a value: `iv || AES-256-CBC(plaintext)`.
pub fn encrypt_value(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    let ct = cbc::Encryptor::<Aes256>::new(key.into(), iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut out = Vec::with_capacity(16 + ct.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(&ct);
    out
}

/// Decrypts `iv || ciphertext`; `None` on a bad length or padding.
pub fn decrypt_value(key: &[u8; 32], encrypted: &[u8]) -> Option<Vec<u8>> {
    if encrypted.len() < 32 || encrypted.len() % 16 != 0 {
        return None;
    }
    let (iv, ct) = encrypted.split_at(16);
    let iv: &[u8; 16] = iv.try_into().ok()?;
    cbc::Decryptor::<Aes256>::new(key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ct)
        .ok()
}
