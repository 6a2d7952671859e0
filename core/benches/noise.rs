//! Noise benchmarks (`cargo bench -p amarula-core --bench noise`).
//!
//! - `transport_encrypt` / `transport_decrypt`: [`NoiseTransport`] sealing and opening 1 KiB and
//!   64 KiB frames in place, beside `raw_aes_gcm_encrypt` / `raw_aes_gcm_decrypt`: the `aes-gcm`
//!   crate doing the same work (same key, nonce scheme, empty AAD, tag appended) with nothing
//!   around it. The ratio is the transport's overhead.
//! - `handshake_both_sides`: a whole XX handshake in-process, client and server, certificate
//!   chain verification included (8 X25519 operations: 2 key generations + 6 DH, and 2 signature
//!   verifications); `handshake_client_side`: the client's part alone against a recorded
//!   ServerHello (3 DH + 2 verifications).
//! - `x25519_dh`, `x25519_keygen`, `xeddsa_verify`, `xeddsa_sign_deterministic`: the primitives,
//!   to compare the handshakes with.

use std::hint::black_box;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use amarula_core::noise::{CertDetails, KeyPair, NoiseHandshake, NoiseTransport, TrustAnchor};
use amarula_core::xeddsa;
use bytes::BytesMut;
use divan::Bencher;
use divan::counter::BytesCount;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn main() {
    divan::main();
}

const SIZES: [usize; 2] = [1024, 64 * 1024];
const KEY: [u8; 32] = [0x42; 32];
const NOW: u64 = 1_750_000_000;

fn nonce(n: u32) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
    let mut iv = [0u8; 12];
    iv[8..].copy_from_slice(&n.to_be_bytes());
    iv.into()
}

/// A plaintext of `len` bytes with room for the tag, as a node encoder would leave it.
fn plaintext(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 16);
    v.extend((0..len).map(|i| (i % 251) as u8));
    v
}

#[divan::bench(args = SIZES)]
fn transport_encrypt(bencher: Bencher<'_, '_>, len: usize) {
    let mut t = NoiseTransport::from_keys_for_testing_only(KEY, KEY);
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| plaintext(len))
        .bench_local_values(|mut buf| {
            t.encrypt_in_place(&mut buf).expect("below 2^24");
            buf
        });
}

#[divan::bench(args = SIZES)]
fn raw_aes_gcm_encrypt(bencher: Bencher<'_, '_>, len: usize) {
    let cipher = Aes256Gcm::new(&KEY.into());
    let mut counter = 0u32;
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| plaintext(len))
        .bench_local_values(|mut buf| {
            let tag = cipher
                .encrypt_in_place_detached(&nonce(counter), &[], &mut buf)
                .expect("below the GCM limit");
            counter = counter.wrapping_add(1);
            buf.extend_from_slice(&tag);
            buf
        });
}

/// A frame sealed with counter 0 under [`KEY`].
fn sealed(len: usize) -> BytesMut {
    let mut t = NoiseTransport::from_keys_for_testing_only(KEY, KEY);
    let mut buf = plaintext(len);
    t.encrypt_in_place(&mut buf).expect("below 2^24");
    BytesMut::from(buf.as_slice())
}

#[divan::bench(args = SIZES)]
fn transport_decrypt(bencher: Bencher<'_, '_>, len: usize) {
    let frame = sealed(len);
    // A fresh receiver per input (built outside the timing) so that every frame opens at
    // counter 0, as the raw benchmark does.
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| {
            (
                NoiseTransport::from_keys_for_testing_only(KEY, KEY),
                frame.clone(),
            )
        })
        .bench_local_values(|(mut t, mut buf)| {
            t.decrypt_in_place(&mut buf).expect("valid frame");
            (t, buf)
        });
}

#[divan::bench(args = SIZES)]
fn raw_aes_gcm_decrypt(bencher: Bencher<'_, '_>, len: usize) {
    let frame = sealed(len);
    let cipher = Aes256Gcm::new(&KEY.into());
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| frame.clone())
        .bench_local_values(|mut buf| {
            let body_len = buf.len() - 16;
            let (body, tag) = buf.split_at_mut(body_len);
            let tag = Tag::clone_from_slice(tag);
            cipher
                .decrypt_in_place_detached(&nonce(0), &[], body, &tag)
                .expect("valid frame");
            buf.truncate(body_len);
            buf
        });
}

/// Everything a test server needs: trust anchor, static key and signed chain.
struct Server {
    trust: TrustAnchor,
    static_key: KeyPair,
    chain: Vec<u8>,
}

fn server() -> Server {
    let root = KeyPair::from_private_bytes([1; 32]);
    let inter = KeyPair::from_private_bytes([2; 32]);
    let static_key = KeyPair::from_private_bytes([3; 32]);
    let chain = CertDetails::sign_chain(
        &root.private_bytes(),
        &CertDetails {
            serial: 7,
            issuer_serial: 0,
            key: *inter.public_bytes(),
            not_before: NOW - 1,
            not_after: NOW + 1,
        },
        &inter.private_bytes(),
        &CertDetails {
            serial: 8,
            issuer_serial: 7,
            key: *static_key.public_bytes(),
            not_before: NOW - 1,
            not_after: NOW + 1,
        },
    );
    Server {
        trust: TrustAnchor::new(*root.public_bytes(), 0),
        static_key,
        chain,
    }
}

/// The frame payload after the intro header (if any) and the length prefix.
fn payload(wire: &[u8], intro: bool) -> &[u8] {
    &wire[if intro { 7 } else { 3 }..]
}

const CLIENT_PAYLOAD: &[u8] = &[0x18; 200];

#[divan::bench]
fn handshake_both_sides(bencher: Bencher<'_, '_>) {
    let srv = server();
    let client_static = KeyPair::from_private_bytes([4; 32]);
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    bencher.bench_local(|| {
        let client = NoiseHandshake::initiator(client_static.clone(), &mut rng);
        let responder =
            NoiseHandshake::responder(srv.static_key.clone(), &mut rng, srv.chain.clone());
        let (hello, client) = client.client_hello();
        let (reply, responder) = responder
            .read_client_hello(payload(&hello, true))
            .expect("valid hello");
        let client = client
            .read_server_hello(payload(&reply, false), NOW, &srv.trust)
            .expect("valid server hello");
        let (finish, client_transport) = client.client_finish(CLIENT_PAYLOAD).expect("fits");
        let done = responder
            .read_client_finish(payload(&finish, false))
            .expect("valid finish");
        (client_transport, done)
    });
}

#[divan::bench]
fn handshake_client_side(bencher: Bencher<'_, '_>) {
    let srv = server();
    let client_static = KeyPair::from_private_bytes([4; 32]);
    let ephemeral = KeyPair::from_private_bytes([5; 32]);
    let client = NoiseHandshake::initiator_fixed_ephemeral_for_testing_only(
        client_static.clone(),
        ephemeral.clone(),
    );
    let responder = NoiseHandshake::responder_fixed_ephemeral_for_testing_only(
        srv.static_key.clone(),
        KeyPair::from_private_bytes([6; 32]),
        srv.chain.clone(),
    );
    let (hello, _) = client.client_hello();
    let (reply, _) = responder
        .read_client_hello(payload(&hello, true))
        .expect("valid hello");
    bencher
        .with_inputs(|| {
            NoiseHandshake::initiator_fixed_ephemeral_for_testing_only(
                client_static.clone(),
                ephemeral.clone(),
            )
        })
        .bench_local_values(|client| {
            let (hello, client) = client.client_hello();
            let client = client
                .read_server_hello(payload(&reply, false), NOW, &srv.trust)
                .expect("valid server hello");
            let (finish, transport) = client.client_finish(CLIENT_PAYLOAD).expect("fits");
            (hello, finish, transport)
        });
}

#[divan::bench]
fn x25519_dh(bencher: Bencher<'_, '_>) {
    let a = x25519_dalek::StaticSecret::from([7u8; 32]);
    let b = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([8u8; 32]));
    bencher.bench_local(|| black_box(&a).diffie_hellman(black_box(&b)));
}

#[divan::bench]
fn x25519_keygen(bencher: Bencher<'_, '_>) {
    bencher.bench_local(|| KeyPair::from_private_bytes(black_box([7u8; 32])));
}

#[divan::bench]
fn xeddsa_verify(bencher: Bencher<'_, '_>) {
    let key = KeyPair::from_private_bytes([7; 32]);
    let msg = [0x55u8; 60];
    let sig = xeddsa::sign_deterministic(&key.private_bytes(), &msg);
    bencher.bench_local(|| xeddsa::verify(black_box(key.public_bytes()), black_box(&msg), &sig));
}

#[divan::bench]
fn xeddsa_sign_deterministic(bencher: Bencher<'_, '_>) {
    let private = [7u8; 32];
    let msg = [0x55u8; 60];
    bencher.bench_local(|| xeddsa::sign_deterministic(black_box(&private), black_box(&msg)));
}
