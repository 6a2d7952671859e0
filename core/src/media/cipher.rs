//! Media encryption (SESSION.md §12.2, §12.3), streaming with a fixed-size state.
//!
//! keys = HKDF-SHA256(media key, no salt, `"WhatsApp <Type> Keys"`, 112 bytes): IV 16, cipher key
//! 32, MAC key 32, ref key 32. blob = AES-256-CBC(PKCS#7(file)) ‖ HMAC-SHA256(MAC key, IV ‖
//! ciphertext)[..10]. The message names the file by `fileSha256` (of the file),
//! `fileEncSha256` (of the blob) and `fileLength`.
//!
//! [`Encryptor`] and [`Decryptor`] take the file or the blob in pieces of any size and hold at
//! most a few blocks themselves, so a file of any size goes through a fixed buffer. The
//! decryptor hands out plaintext before the end of the blob has been checked: the caller keeps
//! it provisional (a temporary file) until [`Decryptor::finish`] confirms it, which checks, in
//! this order, the blob's hash, its MAC, the padding, the file's hash and length.

use aes::Aes256;
use aes::cipher::generic_array::GenericArray;
use cbc::cipher::inout::InOutBuf;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::MediaType;

const BLOCK: usize = 16;
/// Length of the truncated MAC at the end of a blob.
pub const MAC_LEN: usize = 10;

/// The keys expanded from a media key.
pub struct MediaKeys {
    /// The CBC IV.
    pub iv: [u8; 16],
    cipher_key: Zeroizing<[u8; 32]>,
    mac_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MediaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaKeys(..)")
    }
}

impl MediaKeys {
    /// Expands `media_key` for a file of type `kind`.
    pub fn derive(media_key: &[u8; 32], kind: MediaType) -> Self {
        let mut out = Zeroizing::new([0u8; 112]);
        Hkdf::<Sha256>::new(None, media_key)
            .expand(kind.hkdf_info().as_bytes(), out.as_mut())
            .expect("112 bytes is a valid HKDF-SHA256 output length");
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&out[..16]);
        let mut cipher_key = Zeroizing::new([0u8; 32]);
        cipher_key.copy_from_slice(&out[16..48]);
        let mut mac_key = Zeroizing::new([0u8; 32]);
        mac_key.copy_from_slice(&out[48..80]);
        Self {
            iv,
            cipher_key,
            mac_key,
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.as_ref())
            .expect("HMAC takes keys of any length");
        mac.update(&self.iv);
        mac
    }
}

/// What names an encrypted file in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileHashes {
    /// SHA-256 of the file.
    pub file_sha256: [u8; 32],
    /// SHA-256 of the blob (ciphertext and MAC).
    pub file_enc_sha256: [u8; 32],
    /// Length of the file.
    pub file_length: u64,
}

impl FileHashes {
    /// The hashes a message names, to check a download against.
    pub fn new(file_sha256: [u8; 32], file_enc_sha256: [u8; 32], file_length: u64) -> Self {
        Self {
            file_sha256,
            file_enc_sha256,
            file_length,
        }
    }
}

/// Why a media blob was refused, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Too short, or not whole blocks after the MAC.
    #[error("media blob has a bad length")]
    Length,
    /// SHA-256 of the blob is not the message's `fileEncSha256`.
    #[error("encrypted media hash mismatch")]
    EncHash,
    /// The MAC does not match.
    #[error("media MAC mismatch")]
    Mac,
    /// The padding is wrong.
    #[error("media padding is invalid")]
    Padding,
    /// SHA-256 of the file is not the message's `fileSha256`.
    #[error("media file hash mismatch")]
    FileHash,
    /// The file's length is not the message's `fileLength`.
    #[error("media file length mismatch")]
    FileLength,
    /// The blob is larger than the caller allows.
    #[error("media larger than allowed")]
    TooLarge,
}

/// Encrypts a file in pieces.
pub struct Encryptor {
    cipher: cbc::Encryptor<Aes256>,
    mac: Hmac<Sha256>,
    file_hash: Sha256,
    enc_hash: Sha256,
    partial: [u8; BLOCK],
    partial_len: usize,
    length: u64,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Starts encrypting a file of type `kind` under `media_key`.
    pub fn new(media_key: &[u8; 32], kind: MediaType) -> Self {
        let keys = MediaKeys::derive(media_key, kind);
        Self {
            cipher: cbc::Encryptor::<Aes256>::new(
                keys.cipher_key.as_ref().into(),
                (&keys.iv).into(),
            ),
            mac: keys.mac(),
            file_hash: Sha256::new(),
            enc_hash: Sha256::new(),
            partial: [0; BLOCK],
            partial_len: 0,
            length: 0,
        }
    }

    fn emit(&mut self, block: &mut [u8; BLOCK], out: &mut Vec<u8>) {
        self.cipher
            .encrypt_block_mut(GenericArray::from_mut_slice(block));
        self.mac.update(block);
        self.enc_hash.update(&block[..]);
        out.extend_from_slice(block);
    }

    /// Takes the next piece of the file; appends the ciphertext of the blocks completed.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        self.file_hash.update(input);
        self.length += input.len() as u64;
        if self.partial_len > 0 {
            let take = (BLOCK - self.partial_len).min(input.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&input[..take]);
            self.partial_len += take;
            input = &input[take..];
            if self.partial_len < BLOCK {
                return;
            }
            let mut block = self.partial;
            self.emit(&mut block, out);
            self.partial_len = 0;
        }
        // Whole blocks in one pass: copied out, encrypted in place, then hashed and MACed
        // as one run (much faster than block by block).
        let whole = input.len() / BLOCK * BLOCK;
        let start = out.len();
        out.extend_from_slice(&input[..whole]);
        let run = &mut out[start..];
        let (blocks, _) = InOutBuf::from(&mut *run).into_chunks();
        self.cipher.encrypt_blocks_inout_mut(blocks);
        self.mac.update(run);
        self.enc_hash.update(&*run);
        let rest = &input[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    /// Pads and encrypts the last block, appends it and the MAC; returns the file's hashes.
    pub fn finish(mut self, out: &mut Vec<u8>) -> FileHashes {
        // PKCS#7: always at least one byte of padding, a whole block when aligned.
        let pad = (BLOCK - self.partial_len) as u8;
        let mut block = [pad; BLOCK];
        block[..self.partial_len].copy_from_slice(&self.partial[..self.partial_len]);
        self.emit(&mut block, out);
        let mac = self.mac.finalize().into_bytes();
        self.enc_hash.update(&mac[..MAC_LEN]);
        out.extend_from_slice(&mac[..MAC_LEN]);
        FileHashes {
            file_sha256: self.file_hash.finalize().into(),
            file_enc_sha256: self.enc_hash.finalize().into(),
            file_length: self.length,
        }
    }
}

/// Encrypts a whole file in memory: the blob and the hashes.
pub fn encrypt(media_key: &[u8; 32], kind: MediaType, file: &[u8]) -> (Vec<u8>, FileHashes) {
    let mut out = Vec::with_capacity(file.len() + BLOCK + MAC_LEN);
    let mut enc = Encryptor::new(media_key, kind);
    enc.update(file, &mut out);
    let hashes = enc.finish(&mut out);
    (out, hashes)
}

/// Decrypts a blob in pieces (see the module docs: output is provisional until
/// [`finish`](Self::finish)).
pub struct Decryptor {
    cipher: cbc::Decryptor<Aes256>,
    mac: Hmac<Sha256>,
    file_hash: Sha256,
    enc_hash: Sha256,
    expected: FileHashes,
    /// The blob's tail not yet decrypted: the last block and the MAC may be in it. Never more
    /// than one block plus the MAC plus one incoming partial block.
    tail: Vec<u8>,
    /// Plaintext bytes handed out.
    length: u64,
    /// Blob bytes taken.
    taken: u64,
    max_blob: u64,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// Starts decrypting the blob of a file of type `kind` that the message names with
    /// `media_key` and `expected`. The blob may be at most the file length plus one block and
    /// the MAC; anything longer is refused as it arrives.
    pub fn new(media_key: &[u8; 32], kind: MediaType, expected: FileHashes) -> Self {
        let keys = MediaKeys::derive(media_key, kind);
        let max_blob = expected
            .file_length
            .saturating_add((BLOCK + MAC_LEN) as u64);
        Self {
            cipher: cbc::Decryptor::<Aes256>::new(
                keys.cipher_key.as_ref().into(),
                (&keys.iv).into(),
            ),
            mac: keys.mac(),
            file_hash: Sha256::new(),
            enc_hash: Sha256::new(),
            expected,
            tail: Vec::with_capacity(2 * BLOCK + MAC_LEN),
            length: 0,
            taken: 0,
            max_blob,
        }
    }

    /// Takes the next piece of the blob; appends the plaintext of the blocks that cannot be
    /// the last one.
    pub fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), MediaError> {
        self.taken = self.taken.saturating_add(input.len() as u64);
        if self.taken > self.max_blob {
            return Err(MediaError::TooLarge);
        }
        self.enc_hash.update(input);
        self.tail.extend_from_slice(input);
        // The last block and the MAC stay back until `finish`; whole blocks before them are
        // decrypted now.
        let n = self.tail.len().saturating_sub(BLOCK + MAC_LEN) / BLOCK;
        // The ready blocks in one pass: MACed as ciphertext, copied out, decrypted in place,
        // hashed as plaintext.
        let ready = &self.tail[..n * BLOCK];
        self.mac.update(ready);
        let start = out.len();
        out.extend_from_slice(ready);
        self.tail.drain(..n * BLOCK);
        let run = &mut out[start..];
        let (blocks, _) = InOutBuf::from(&mut *run).into_chunks();
        self.cipher.decrypt_blocks_inout_mut(blocks);
        self.file_hash.update(&*run);
        self.length += run.len() as u64;
        Ok(())
    }

    /// Checks the whole blob (hash, MAC) and appends the last plaintext bytes, then checks
    /// the file (padding, hash, length). On an error everything handed out must be discarded.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), MediaError> {
        let Self {
            mut cipher,
            mut mac,
            mut file_hash,
            enc_hash,
            expected,
            tail,
            mut length,
            ..
        } = self;
        if tail.len() < BLOCK + MAC_LEN || (tail.len() - MAC_LEN) % BLOCK != 0 {
            return Err(MediaError::Length);
        }
        let enc_hash: [u8; 32] = enc_hash.finalize().into();
        if !bool::from(enc_hash.ct_eq(&expected.file_enc_sha256)) {
            return Err(MediaError::EncHash);
        }
        let (blocks, their_mac) = tail.split_at(tail.len() - MAC_LEN);
        let mut plain = Vec::with_capacity(blocks.len());
        for chunk in blocks.chunks_exact(BLOCK) {
            mac.update(chunk);
            let mut block = [0u8; BLOCK];
            block.copy_from_slice(chunk);
            cipher.decrypt_block_mut(GenericArray::from_mut_slice(&mut block));
            plain.extend_from_slice(&block);
        }
        let ours = mac.finalize().into_bytes();
        if !bool::from(ours[..MAC_LEN].ct_eq(their_mac)) {
            return Err(MediaError::Mac);
        }
        let pad = usize::from(*plain.last().ok_or(MediaError::Padding)?);
        if pad == 0 || pad > BLOCK || pad > plain.len() {
            return Err(MediaError::Padding);
        }
        let body = plain.len() - pad;
        if plain[body..].iter().any(|b| usize::from(*b) != pad) {
            return Err(MediaError::Padding);
        }
        file_hash.update(&plain[..body]);
        length += body as u64;
        let file_hash: [u8; 32] = file_hash.finalize().into();
        if !bool::from(file_hash.ct_eq(&expected.file_sha256)) {
            return Err(MediaError::FileHash);
        }
        if length != expected.file_length {
            return Err(MediaError::FileLength);
        }
        out.extend_from_slice(&plain[..body]);
        Ok(())
    }
}

/// Decrypts a whole blob in memory, checking in order: the blob's hash, the MAC, then
/// decrypting, the padding, the file's hash and length.
pub fn decrypt(
    media_key: &[u8; 32],
    kind: MediaType,
    expected: &FileHashes,
    blob: &[u8],
) -> Result<Vec<u8>, MediaError> {
    use cbc::cipher::block_padding::Pkcs7;
    if blob.len() < BLOCK + MAC_LEN || (blob.len() - MAC_LEN) % BLOCK != 0 {
        return Err(MediaError::Length);
    }
    let enc_hash: [u8; 32] = Sha256::digest(blob).into();
    if !bool::from(enc_hash.ct_eq(&expected.file_enc_sha256)) {
        return Err(MediaError::EncHash);
    }
    let keys = MediaKeys::derive(media_key, kind);
    let (ciphertext, mac) = blob.split_at(blob.len() - MAC_LEN);
    let mut ours = keys.mac();
    ours.update(ciphertext);
    if !bool::from(ours.finalize().into_bytes()[..MAC_LEN].ct_eq(mac)) {
        return Err(MediaError::Mac);
    }
    let file = cbc::Decryptor::<Aes256>::new(keys.cipher_key.as_ref().into(), (&keys.iv).into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| MediaError::Padding)?;
    let file_hash: [u8; 32] = Sha256::digest(&file).into();
    if !bool::from(file_hash.ct_eq(&expected.file_sha256)) {
        return Err(MediaError::FileHash);
    }
    if file.len() as u64 != expected.file_length {
        return Err(MediaError::FileLength);
    }
    Ok(file)
}
