//! Fuzz target body for the Signal parsers and decryptors: arbitrary bytes are parsed as a
//! `pkmsg`, `msg`, `skmsg` and SKDM, and every parsed message is decrypted against fixed
//! sessions and sender keys. Nothing may panic; every failure is a typed error.

use std::sync::OnceLock;

use amarula_core::credentials::SignedPreKey;
use amarula_core::signal::{
    Identity, IdentityPolicy, PreKey, PreKeyBundle, PreKeySignalMessage, PublicKey,
    SenderKeyDistributionMessage, SenderKeyMessage, SenderKeyRecord, SessionRecord, SignalMessage,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Fixed state the fuzzer decrypts against: Bob's keys, his session with Alice after one
/// exchange, and a group member's sender key record.
pub struct Fixture {
    /// Bob's identity.
    pub bob: Identity,
    /// Bob's signed prekey.
    pub spk: SignedPreKey,
    /// Bob's one-time prekey.
    pub otk: PreKey,
    /// Bob's session with Alice.
    pub session: SessionRecord,
    /// Sender keys of a group member, as Bob holds them.
    pub sender_keys: SenderKeyRecord,
    /// Messages of the fixture exchange (for seed corpora): a pkmsg, a msg and a skmsg, an SKDM.
    pub samples: Vec<Vec<u8>>,
}

/// Builds the fixture (deterministic).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([0x11; 32]);
        let alice = Identity::generate(&mut rng);
        let bob = Identity::generate(&mut rng);
        let spk = bob.signed_prekey(1, &mut rng);
        let otk = PreKey::generate_batch(1, 1, &mut rng).remove(0);
        let bundle = PreKeyBundle {
            registration_id: bob.registration_id,
            identity_key: bob.public(),
            signed_prekey_id: spk.id,
            signed_prekey: PublicKey::of(&spk.key_pair),
            signed_prekey_signature: spk.signature,
            prekey: Some((otk.id, otk.public())),
        };
        let mut at_alice = SessionRecord::new();
        at_alice
            .process_bundle(&alice, &bundle, IdentityPolicy::default(), &mut rng)
            .expect("fixture bundle is valid");
        let first = at_alice.encrypt(b"\x0a\x02hi\x01").expect("session exists");
        let mut session = SessionRecord::new();
        let pk = PreKeySignalMessage::parse(first.serialized()).expect("fixture pkmsg parses");
        session
            .decrypt_prekey_message(
                &bob,
                &pk,
                &spk,
                Some(&otk),
                IdentityPolicy::default(),
                &mut rng,
            )
            .expect("fixture pkmsg decrypts");
        let second = at_alice.encrypt(b"\x0a\x02yo\x01").expect("session exists");
        let mut own = SenderKeyRecord::new();
        let skdm = own.own_distribution_message(&mut rng);
        let skmsg = own.encrypt(b"\x0a\x05group\x01").expect("own key exists");
        let mut sender_keys = SenderKeyRecord::new();
        sender_keys.process_distribution(&skdm);
        Fixture {
            bob,
            spk,
            otk,
            session,
            sender_keys,
            samples: vec![
                first.serialized().to_vec(),
                second.serialized().to_vec(),
                skmsg.serialized().to_vec(),
                skdm.serialized().to_vec(),
            ],
        }
    })
}

/// Parses `data` every way and decrypts what parses; also loads it as stored state.
pub fn signal_parse(data: &[u8]) {
    let f = fixture();
    let mut rng = ChaCha20Rng::from_seed([0x22; 32]);
    if let Ok(pk) = PreKeySignalMessage::parse(data) {
        let mut s = f.session.clone();
        let _ = s.decrypt_prekey_message(
            &f.bob,
            &pk,
            &f.spk,
            Some(&f.otk),
            IdentityPolicy::default(),
            &mut rng,
        );
    }
    if let Ok(m) = SignalMessage::parse(data) {
        let mut s = f.session.clone();
        let _ = s.decrypt_message(&m, &mut rng);
    }
    if let Ok(m) = SenderKeyMessage::parse(data) {
        let mut r = f.sender_keys.clone();
        let _ = r.decrypt_message(&m);
    }
    if let Ok(d) = SenderKeyDistributionMessage::parse(data) {
        let mut r = f.sender_keys.clone();
        r.process_distribution(&d);
        let _ = r.decrypt(data);
    }
    let _ = SessionRecord::from_bytes(data);
    let _ = SenderKeyRecord::from_bytes(data);
    let _ = PreKey::from_bytes(data);
    let _ = amarula_core::signal::signed_prekey_from_bytes(data);
}
