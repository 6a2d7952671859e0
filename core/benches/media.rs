//! Media benchmarks (`cargo bench -p amarula-core --bench media`).
//!
//! - `media_encrypt` / `media_decrypt`: a 1 MiB file through [`Encryptor`] / [`Decryptor`] in
//!   64 KiB pieces (CBC, HMAC-SHA256 over the ciphertext, SHA-256 of the file and of the blob,
//!   and for decryption the checks), beside `raw_cbc_encrypt` / `raw_cbc_decrypt`: the `cbc`
//!   crate with AES-256 alone over the same bytes. The ratio is what the MAC and the two hashes
//!   cost on top of the cipher.

use std::hint::black_box;

use aes::Aes256;
use amarula_core::media::{Decryptor, Encryptor, MediaType, encrypt};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use divan::Bencher;
use divan::counter::BytesCount;

fn main() {
    divan::main();
}

const LEN: usize = 1 << 20;
const PIECE: usize = 64 * 1024;
const KEY: [u8; 32] = [7; 32];

fn file() -> Vec<u8> {
    (0..LEN).map(|i| (i % 251) as u8).collect()
}

#[divan::bench]
fn media_encrypt(bencher: Bencher<'_, '_>) {
    let data = file();
    let mut out = Vec::with_capacity(LEN + 64);
    bencher.counter(BytesCount::new(LEN)).bench_local(|| {
        out.clear();
        let mut enc = Encryptor::new(&KEY, MediaType::Video);
        for piece in data.chunks(PIECE) {
            enc.update(piece, &mut out);
        }
        black_box(enc.finish(&mut out));
    });
}

#[divan::bench]
fn raw_cbc_encrypt(bencher: Bencher<'_, '_>) {
    let data = file();
    let mut buf = vec![0u8; LEN + 16];
    bencher.counter(BytesCount::new(LEN)).bench_local(|| {
        buf[..LEN].copy_from_slice(&data);
        let ct = cbc::Encryptor::<Aes256>::new(&KEY.into(), &[1u8; 16].into())
            .encrypt_padded_mut::<Pkcs7>(&mut buf, LEN)
            .expect("room for the padding");
        black_box(ct.len());
    });
}

#[divan::bench]
fn media_decrypt(bencher: Bencher<'_, '_>) {
    let (blob, hashes) = encrypt(&KEY, MediaType::Video, &file());
    let mut out = Vec::with_capacity(LEN + 64);
    bencher.counter(BytesCount::new(LEN)).bench_local(|| {
        out.clear();
        let mut dec = Decryptor::new(&KEY, MediaType::Video, hashes.clone());
        for piece in blob.chunks(PIECE) {
            dec.update(piece, &mut out).expect("valid");
        }
        dec.finish(&mut out).expect("valid");
        black_box(out.len());
    });
}

#[divan::bench]
fn raw_cbc_decrypt(bencher: Bencher<'_, '_>) {
    let mut ct = vec![0u8; LEN + 16];
    ct[..LEN].copy_from_slice(&file());
    let n = cbc::Encryptor::<Aes256>::new(&KEY.into(), &[1u8; 16].into())
        .encrypt_padded_mut::<Pkcs7>(&mut ct, LEN)
        .expect("room")
        .len();
    let mut buf = vec![0u8; n];
    bencher.counter(BytesCount::new(LEN)).bench_local(|| {
        buf.copy_from_slice(&ct[..n]);
        let pt = cbc::Decryptor::<Aes256>::new(&KEY.into(), &[1u8; 16].into())
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .expect("valid");
        black_box(pt.len());
    });
}
