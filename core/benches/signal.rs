//! Signal benchmarks (`cargo bench -p amarula-core --bench signal`).
//!
//! - `pairwise_encrypt_decrypt`: one 1:1 text message (100 bytes, padded) encrypted by Alice
//!   and decrypted by Bob on an established session, same direction each time (chain steps
//!   only: HMACs, HKDF, AES-CBC); `pairwise_ping_pong`: a message each way, so every message
//!   carries a new ratchet key (adds a key generation and 2 X25519 per message).
//! - `session_setup_from_bundle`: Alice's X3DH from a prekey bundle (signature verification,
//!   2 key generations, 5 X25519); `session_setup_both_sides`: that plus the first `pkmsg`
//!   encrypted and decrypted by Bob (4 more X25519 and a key generation).
//! - `group_encrypt`: one sender-key message (chain step, AES-CBC, XEdDSA signature);
//!   `group_send_100_devices`: the sender-key message plus the SKDM encrypted pairwise for
//!   100 member devices (the first send to a group).
//! - `x25519_dh`, `x25519_keygen`, `aes_cbc_encrypt_128`, `hmac_sha256_64`: the primitives,
//!   to compare with.

use std::hint::black_box;

use amarula_core::noise::KeyPair;
use amarula_core::signal::{
    Identity, IdentityPolicy, PreKey, PreKeyBundle, PreKeySignalMessage, PublicKey,
    SenderKeyRecord, SessionRecord, bench,
};
use divan::Bencher;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn main() {
    divan::main();
}

/// A 100-byte text message with WhatsApp's padding, as `Message` protobuf bytes would be.
fn text() -> Vec<u8> {
    let mut m = vec![0x0A, 98];
    m.extend_from_slice(&[b'a'; 98]);
    m.extend_from_slice(&[4; 4]);
    m
}

struct Peer {
    identity: Identity,
    spk: amarula_core::credentials::SignedPreKey,
    otk: PreKey,
}

fn peer(rng: &mut ChaCha20Rng) -> Peer {
    let identity = Identity::generate(rng);
    let spk = identity.signed_prekey(1, rng);
    let otk = PreKey::generate_batch(1, 1, rng).remove(0);
    Peer { identity, spk, otk }
}

fn bundle(p: &Peer) -> PreKeyBundle {
    PreKeyBundle {
        registration_id: p.identity.registration_id,
        identity_key: p.identity.public(),
        signed_prekey_id: p.spk.id,
        signed_prekey: PublicKey::of(&p.spk.key_pair),
        signed_prekey_signature: p.spk.signature,
        prekey: Some((p.otk.id, p.otk.public())),
    }
}

/// Alice's and Bob's records after the first message and its answer.
fn established(rng: &mut ChaCha20Rng) -> (SessionRecord, SessionRecord) {
    let (alice, bob) = (peer(rng), peer(rng));
    let mut a = SessionRecord::new();
    a.process_bundle(
        &alice.identity,
        &bundle(&bob),
        IdentityPolicy::default(),
        rng,
    )
    .unwrap();
    let first = a.encrypt(b"hi").unwrap();
    let mut b = SessionRecord::new();
    let pk = PreKeySignalMessage::parse(first.serialized()).unwrap();
    b.decrypt_prekey_message(
        &bob.identity,
        &pk,
        &bob.spk,
        Some(&bob.otk),
        IdentityPolicy::default(),
        rng,
    )
    .unwrap();
    let reply = b.encrypt(b"hello").unwrap();
    a.decrypt(reply.serialized(), rng).unwrap();
    (a, b)
}

#[divan::bench]
fn pairwise_encrypt_decrypt(bencher: Bencher<'_, '_>) {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let (mut a, mut b) = established(&mut rng);
    let pt = text();
    bencher.bench_local(|| {
        let ct = a.encrypt(black_box(&pt)).unwrap();
        b.decrypt(ct.serialized(), &mut rng).unwrap()
    });
}

#[divan::bench]
fn pairwise_ping_pong(bencher: Bencher<'_, '_>) {
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let (mut a, mut b) = established(&mut rng);
    let pt = text();
    bencher.bench_local(|| {
        let ct = a.encrypt(black_box(&pt)).unwrap();
        b.decrypt(ct.serialized(), &mut rng).unwrap();
        let ct = b.encrypt(black_box(&pt)).unwrap();
        a.decrypt(ct.serialized(), &mut rng).unwrap()
    });
}

#[divan::bench]
fn session_setup_from_bundle(bencher: Bencher<'_, '_>) {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let (alice, bob) = (peer(&mut rng), peer(&mut rng));
    let b = bundle(&bob);
    bencher.bench_local(|| {
        let mut r = SessionRecord::new();
        r.process_bundle(&alice.identity, &b, IdentityPolicy::default(), &mut rng)
            .unwrap();
        r
    });
}

#[divan::bench]
fn session_setup_both_sides(bencher: Bencher<'_, '_>) {
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let (alice, bob) = (peer(&mut rng), peer(&mut rng));
    let b = bundle(&bob);
    let pt = text();
    bencher.bench_local(|| {
        let mut at_a = SessionRecord::new();
        at_a.process_bundle(&alice.identity, &b, IdentityPolicy::default(), &mut rng)
            .unwrap();
        let first = at_a.encrypt(&pt).unwrap();
        let pk = PreKeySignalMessage::parse(first.serialized()).unwrap();
        let mut at_b = SessionRecord::new();
        at_b.decrypt_prekey_message(
            &bob.identity,
            &pk,
            &bob.spk,
            Some(&bob.otk),
            IdentityPolicy::default(),
            &mut rng,
        )
        .unwrap()
    });
}

#[divan::bench]
fn group_encrypt(bencher: Bencher<'_, '_>) {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut own = SenderKeyRecord::new();
    own.own_distribution_message(&mut rng);
    let pt = text();
    bencher.bench_local(|| own.encrypt(black_box(&pt)).unwrap());
}

#[divan::bench(sample_count = 20)]
fn group_send_100_devices(bencher: Bencher<'_, '_>) {
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let mut sessions: Vec<SessionRecord> = (0..100).map(|_| established(&mut rng).0).collect();
    let mut own = SenderKeyRecord::new();
    let pt = text();
    bencher.bench_local(|| {
        let skdm = own.own_distribution_message(&mut rng);
        for s in &mut sessions {
            black_box(s.encrypt(skdm.serialized()).unwrap());
        }
        own.encrypt(black_box(&pt)).unwrap()
    });
}

#[divan::bench]
fn x25519_dh(bencher: Bencher<'_, '_>) {
    let a = x25519_dalek::StaticSecret::from([7u8; 32]);
    let b = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9u8; 32]));
    bencher.bench_local(|| a.diffie_hellman(black_box(&b)));
}

#[divan::bench]
fn x25519_keygen(bencher: Bencher<'_, '_>) {
    let mut rng = ChaCha20Rng::from_seed([8; 32]);
    bencher.bench_local(|| KeyPair::generate(&mut rng));
}

#[divan::bench]
fn aes_cbc_encrypt_128(bencher: Bencher<'_, '_>) {
    let pt = [0x61u8; 112];
    bencher.bench_local(|| bench::cbc_encrypt(&[1; 32], &[2; 16], black_box(&pt)));
}

#[divan::bench]
fn hmac_sha256_64(bencher: Bencher<'_, '_>) {
    let data = [0x61u8; 64];
    bencher.bench_local(|| bench::hmac(&[3; 32], black_box(&data)));
}
