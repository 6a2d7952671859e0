//! Behaviour of the Signal layer: conversations with out-of-order delivery, previous sessions,
//! the bounds on skipped keys, and every refusal being a typed error.

use amarula_core::credentials::SignedPreKey;
use amarula_core::signal::{
    CiphertextMessage, Identity, IdentityChange, IdentityPolicy, MAX_FORWARD_JUMP,
    MAX_SKIPPED_KEYS, PreKey, PreKeyBundle, PreKeySignalMessage, PublicKey,
    SenderKeyDistributionMessage, SenderKeyMessage, SenderKeyRecord, SessionRecord, SignalError,
    SignalMessage,
};
use amarula_proto::Message as _;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

struct Device {
    identity: Identity,
    spk: SignedPreKey,
    prekeys: Vec<PreKey>,
}

impl Device {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let identity = Identity::generate(rng);
        let spk = identity.signed_prekey(1, rng);
        let prekeys = PreKey::generate_batch(1, 4, rng);
        Self {
            identity,
            spk,
            prekeys,
        }
    }

    fn bundle(&self, prekey: Option<usize>) -> PreKeyBundle {
        PreKeyBundle {
            registration_id: self.identity.registration_id,
            identity_key: self.identity.public(),
            signed_prekey_id: self.spk.id,
            signed_prekey: PublicKey::of(&self.spk.key_pair),
            signed_prekey_signature: self.spk.signature,
            prekey: prekey.map(|i| (self.prekeys[i].id, self.prekeys[i].public())),
        }
    }

    /// Receives a pkmsg or msg on `record`.
    fn receive(
        &self,
        record: &mut SessionRecord,
        ct: &CiphertextMessage,
        rng: &mut ChaCha20Rng,
    ) -> Result<Vec<u8>, SignalError> {
        match ct {
            CiphertextMessage::PreKey(pk) => {
                let otk = pk
                    .pre_key_id
                    .and_then(|id| self.prekeys.iter().find(|p| p.id == id));
                record
                    .decrypt_prekey_message(
                        &self.identity,
                        pk,
                        &self.spk,
                        otk,
                        IdentityPolicy::Reject,
                        rng,
                    )
                    .map(|d| d.plaintext.to_vec())
            }
            CiphertextMessage::Whisper(m) => record.decrypt_message(m, rng).map(|p| p.to_vec()),
        }
    }
}

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

/// Alice's and Bob's records after a pkmsg and a reply.
fn established(r: &mut ChaCha20Rng) -> (Device, Device, SessionRecord, SessionRecord) {
    let (alice, bob) = (Device::new(r), Device::new(r));
    let mut a = SessionRecord::new();
    assert_eq!(
        a.process_bundle(
            &alice.identity,
            &bob.bundle(Some(0)),
            IdentityPolicy::Reject,
            r
        ),
        Ok(IdentityChange::New)
    );
    let mut b = SessionRecord::new();
    let first = a.encrypt(b"first").unwrap();
    assert_eq!(bob.receive(&mut b, &first, r).unwrap(), b"first");
    let reply = b.encrypt(b"reply").unwrap();
    assert_eq!(reply.enc_type(), "msg");
    assert_eq!(alice.receive(&mut a, &reply, r).unwrap(), b"reply");
    (alice, bob, a, b)
}

#[test]
fn conversation_with_out_of_order_delivery() {
    let r = &mut rng(1);
    let (alice, bob, mut a, mut b) = established(r);
    for round in 0..5u8 {
        // Each side sends a burst; the other receives it shuffled, with replies in between.
        let mut burst: Vec<(Vec<u8>, CiphertextMessage)> = (0..20u8)
            .map(|i| {
                let pt = vec![round, i, 0xAA];
                let ct = a.encrypt(&pt).unwrap();
                (pt, ct)
            })
            .collect();
        for i in (1..burst.len()).rev() {
            let j = (r.next_u32() as usize) % (i + 1);
            burst.swap(i, j);
        }
        for (k, (pt, ct)) in burst.iter().enumerate() {
            assert_eq!(&bob.receive(&mut b, ct, r).unwrap(), pt);
            if k % 7 == 3 {
                let back = b.encrypt(&[round, k as u8]).unwrap();
                assert_eq!(alice.receive(&mut a, &back, r).unwrap(), [round, k as u8]);
            }
        }
        // A message from before the last ratchet step still opens (older receiving chain).
        let late = b.encrypt(b"late").unwrap();
        let later = b.encrypt(b"later").unwrap();
        assert_eq!(alice.receive(&mut a, &later, r).unwrap(), b"later");
        let fresh = a.encrypt(b"fresh").unwrap();
        assert_eq!(bob.receive(&mut b, &fresh, r).unwrap(), b"fresh");
        let new_chain = b.encrypt(b"new chain").unwrap();
        assert_eq!(alice.receive(&mut a, &new_chain, r).unwrap(), b"new chain");
        assert_eq!(alice.receive(&mut a, &late, r).unwrap(), b"late");
    }
}

#[test]
fn replayed_message_is_a_duplicate_and_changes_nothing() {
    let r = &mut rng(2);
    let (_, bob, mut a, mut b) = established(r);
    let ct = a.encrypt(b"once").unwrap();
    assert_eq!(bob.receive(&mut b, &ct, r).unwrap(), b"once");
    let before = b.to_bytes();
    assert!(matches!(
        bob.receive(&mut b, &ct, r),
        Err(SignalError::DuplicateMessage { counter: 0 })
    ));
    assert_eq!(b.to_bytes(), before);
    // Skipped then delivered twice.
    let m1 = a.encrypt(b"1").unwrap();
    let m2 = a.encrypt(b"2").unwrap();
    assert_eq!(bob.receive(&mut b, &m2, r).unwrap(), b"2");
    assert_eq!(bob.receive(&mut b, &m1, r).unwrap(), b"1");
    assert!(matches!(
        bob.receive(&mut b, &m1, r),
        Err(SignalError::DuplicateMessage { .. })
    ));
}

#[test]
fn forged_mac_and_truncation_are_typed_errors() {
    let r = &mut rng(3);
    let (_, _, mut a, mut b) = established(r);
    let ct = a.encrypt(b"genuine message").unwrap();
    let bytes = ct.serialized().to_vec();
    let mut forged = bytes.clone();
    *forged.last_mut().unwrap() ^= 1;
    assert_eq!(b.decrypt(&forged, r), Err(SignalError::BadMac));
    // A flipped ciphertext bit is caught by the MAC too.
    let mut flipped = bytes.clone();
    flipped[bytes.len() - 12] ^= 0x80;
    assert_eq!(b.decrypt(&flipped, r), Err(SignalError::BadMac));
    for cut in [0, 1, 5, 9, bytes.len() / 2, bytes.len() - 1] {
        let e = b.decrypt(&bytes[..cut], r).unwrap_err();
        assert!(
            matches!(
                e,
                SignalError::InvalidMessage { .. }
                    | SignalError::BadMac
                    | SignalError::InvalidKey { .. }
            ),
            "cut {cut}: {e:?}"
        );
    }
    let mut v2 = bytes.clone();
    v2[0] = 0x22;
    assert_eq!(
        b.decrypt(&v2, r),
        Err(SignalError::UnsupportedVersion { version: 2 })
    );
    // None of it hurt the session.
    assert_eq!(b.decrypt(&bytes, r).unwrap().as_slice(), b"genuine message");
    assert_eq!(
        SessionRecord::new().decrypt(&bytes, r),
        Err(SignalError::NoSession)
    );
}

/// Re-encodes a `msg` with another counter (the MAC no longer matches, but the counter is
/// checked first).
fn with_counter(msg: &[u8], counter: u32) -> Vec<u8> {
    let mut p = amarula_proto::SignalMessage::decode(&msg[1..msg.len() - 8]).unwrap();
    p.counter = Some(counter);
    let mut out = vec![0x33];
    p.encode(&mut out).unwrap();
    out.extend_from_slice(&msg[msg.len() - 8..]);
    out
}

#[test]
fn forward_jump_is_bounded() {
    let r = &mut rng(4);
    let (_, _, mut a, mut b) = established(r);
    let ct = a.encrypt(b"x").unwrap();
    let far = with_counter(ct.serialized(), MAX_FORWARD_JUMP + 1);
    assert!(matches!(
        b.decrypt(&far, r),
        Err(SignalError::TooFarInFuture { .. })
    ));
    let near = with_counter(ct.serialized(), 100);
    assert_eq!(b.decrypt(&near, r), Err(SignalError::BadMac));
    assert_eq!(b.decrypt(ct.serialized(), r).unwrap().as_slice(), b"x");
}

#[test]
fn skipped_key_store_is_capped() {
    let r = &mut rng(5);
    let (_, _, mut a, mut b) = established(r);
    let extra = 50;
    let msgs: Vec<CiphertextMessage> = (0..MAX_SKIPPED_KEYS + extra + 1)
        .map(|i| a.encrypt(&(i as u32).to_be_bytes()).unwrap())
        .collect();
    let last = msgs.last().unwrap();
    assert!(b.decrypt(last.serialized(), r).is_ok());
    // The oldest skipped keys were dropped; the newer ones are still there.
    assert!(matches!(
        b.decrypt(msgs[0].serialized(), r),
        Err(SignalError::DuplicateMessage { .. })
    ));
    assert!(matches!(
        b.decrypt(msgs[extra - 1].serialized(), r),
        Err(SignalError::DuplicateMessage { .. })
    ));
    assert_eq!(
        b.decrypt(msgs[extra].serialized(), r).unwrap().as_slice(),
        (extra as u32).to_be_bytes()
    );
}

#[test]
fn previous_session_still_decrypts() {
    let r = &mut rng(6);
    let (alice, bob, mut a, mut b) = established(r);
    // Bob has a message in flight on the old session when Alice starts a new one.
    let in_flight = b.encrypt(b"old session").unwrap();
    a.process_bundle(
        &alice.identity,
        &bob.bundle(Some(1)),
        IdentityPolicy::Reject,
        r,
    )
    .unwrap();
    assert_eq!(a.previous_state_count(), 1);
    assert!(a.is_pending_prekey());
    let new_first = a.encrypt(b"new session").unwrap();
    assert_eq!(new_first.enc_type(), "pkmsg");
    // The old session's message decrypts from the previous state, which becomes current.
    assert_eq!(
        alice.receive(&mut a, &in_flight, r).unwrap(),
        b"old session"
    );
    assert!(!a.is_pending_prekey());
    // Bob takes the new session; Alice's old state keeps working as a previous state.
    assert_eq!(bob.receive(&mut b, &new_first, r).unwrap(), b"new session");
    assert_eq!(b.previous_state_count(), 1);
    let on_new = b.encrypt(b"on new").unwrap();
    assert_eq!(alice.receive(&mut a, &on_new, r).unwrap(), b"on new");
    let to_bob = a.encrypt(b"back").unwrap();
    assert_eq!(bob.receive(&mut b, &to_bob, r).unwrap(), b"back");
}

#[test]
fn prekey_messages_until_answered_and_unknown_prekeys() {
    let r = &mut rng(7);
    let (alice, bob) = (Device::new(r), Device::new(r));
    let mut a = SessionRecord::new();
    a.process_bundle(
        &alice.identity,
        &bob.bundle(Some(2)),
        IdentityPolicy::Reject,
        r,
    )
    .unwrap();
    let m1 = a.encrypt(b"1").unwrap();
    let m2 = a.encrypt(b"2").unwrap();
    let CiphertextMessage::PreKey(pk1) = &m1 else {
        panic!("first is a pkmsg")
    };
    assert_eq!(pk1.pre_key_id, Some(bob.prekeys[2].id));
    let mut b = SessionRecord::new();
    // Without the one-time prekey the session cannot be built.
    assert_eq!(
        b.decrypt_prekey_message(
            &bob.identity,
            pk1,
            &bob.spk,
            None,
            IdentityPolicy::Reject,
            r
        )
        .unwrap_err(),
        SignalError::UnknownPreKey {
            id: bob.prekeys[2].id
        }
    );
    let mut other_spk = bob.spk.clone();
    other_spk.id = 9;
    assert_eq!(
        b.decrypt_prekey_message(
            &bob.identity,
            pk1,
            &other_spk,
            Some(&bob.prekeys[2]),
            IdentityPolicy::Reject,
            r
        )
        .unwrap_err(),
        SignalError::UnknownSignedPreKey { id: 1 }
    );
    assert!(!b.has_session());
    let out = b
        .decrypt_prekey_message(
            &bob.identity,
            pk1,
            &bob.spk,
            Some(&bob.prekeys[2]),
            IdentityPolicy::Reject,
            r,
        )
        .unwrap();
    assert_eq!(out.used_prekey, Some(bob.prekeys[2].id));
    assert_eq!(out.identity, IdentityChange::New);
    // The second pkmsg of the same session needs no prekey any more (it was deleted).
    let CiphertextMessage::PreKey(pk2) = &m2 else {
        panic!("second is a pkmsg too")
    };
    let out2 = b
        .decrypt_prekey_message(
            &bob.identity,
            pk2,
            &bob.spk,
            None,
            IdentityPolicy::Reject,
            r,
        )
        .unwrap();
    assert_eq!(out2.plaintext.as_slice(), b"2");
    assert_eq!(out2.used_prekey, None);
    // A replayed pkmsg is a duplicate.
    assert!(matches!(
        b.decrypt_prekey_message(
            &bob.identity,
            pk1,
            &bob.spk,
            None,
            IdentityPolicy::Reject,
            r
        ),
        Err(SignalError::DuplicateMessage { .. })
    ));
    // Without a one-time prekey at all.
    let mut a2 = SessionRecord::new();
    a2.process_bundle(
        &alice.identity,
        &bob.bundle(None),
        IdentityPolicy::Reject,
        r,
    )
    .unwrap();
    let m = a2.encrypt(b"no otk").unwrap();
    let mut b2 = SessionRecord::new();
    assert_eq!(bob.receive(&mut b2, &m, r).unwrap(), b"no otk");
}

#[test]
fn identity_change_is_detected() {
    let r = &mut rng(8);
    let (alice, bob, mut a, mut b) = established(r);
    // Bob reinstalls: new identity, new keys.
    let bob2 = Device::new(r);
    let mut strict = a.clone();
    assert_eq!(
        strict.process_bundle(
            &alice.identity,
            &bob2.bundle(Some(0)),
            IdentityPolicy::Reject,
            r
        ),
        Err(SignalError::UntrustedIdentity)
    );
    assert_eq!(
        a.process_bundle(
            &alice.identity,
            &bob2.bundle(Some(0)),
            IdentityPolicy::AcceptAndReport,
            r
        ),
        Ok(IdentityChange::Changed {
            previous: bob.identity.public()
        })
    );
    assert_eq!(a.remote_identity(), Some(bob2.identity.public()));
    // The other way: an impostor's pkmsg claims to be Alice with another identity.
    let mallory = Device::new(r);
    let mut m = SessionRecord::new();
    m.process_bundle(
        &mallory.identity,
        &bob.bundle(Some(3)),
        IdentityPolicy::Reject,
        r,
    )
    .unwrap();
    let CiphertextMessage::PreKey(pk) = m.encrypt(b"it's alice").unwrap() else {
        panic!("pkmsg expected")
    };
    assert_eq!(
        b.decrypt_prekey_message(
            &bob.identity,
            &pk,
            &bob.spk,
            Some(&bob.prekeys[3]),
            IdentityPolicy::Reject,
            r
        )
        .unwrap_err(),
        SignalError::UntrustedIdentity
    );
    let out = b
        .decrypt_prekey_message(
            &bob.identity,
            &pk,
            &bob.spk,
            Some(&bob.prekeys[3]),
            IdentityPolicy::AcceptAndReport,
            r,
        )
        .unwrap();
    assert_eq!(
        out.identity,
        IdentityChange::Changed {
            previous: alice.identity.public()
        }
    );
    // A bundle whose signed prekey is not signed by its identity is refused.
    let mut bad = bob2.bundle(None);
    bad.signed_prekey_signature[10] ^= 4;
    assert_eq!(
        SessionRecord::new().process_bundle(&alice.identity, &bad, IdentityPolicy::Reject, r),
        Err(SignalError::BadSignature)
    );
}

#[test]
fn records_survive_the_store() {
    let r = &mut rng(9);
    let (alice, bob, a, b) = established(r);
    let mut a = SessionRecord::from_bytes(&a.to_bytes()).unwrap();
    let mut b = SessionRecord::from_bytes(&b.to_bytes()).unwrap();
    let skipped = a.encrypt(b"skipped").unwrap();
    let next = a.encrypt(b"next").unwrap();
    assert_eq!(bob.receive(&mut b, &next, r).unwrap(), b"next");
    let mut b = SessionRecord::from_bytes(&b.to_bytes()).unwrap();
    assert_eq!(bob.receive(&mut b, &skipped, r).unwrap(), b"skipped");
    let back = b.encrypt(b"back").unwrap();
    assert_eq!(alice.receive(&mut a, &back, r).unwrap(), b"back");
    // Prekeys and signed prekeys too.
    let pk = PreKey::from_bytes(&bob.prekeys[0].to_bytes()).unwrap();
    assert_eq!(pk.public(), bob.prekeys[0].public());
    let spk = amarula_core::signal::signed_prekey_from_bytes(
        &amarula_core::signal::signed_prekey_to_bytes(&bob.spk),
    )
    .unwrap();
    assert_eq!(spk.signature, bob.spk.signature);
    assert!(matches!(
        SessionRecord::from_bytes(b"\x08\x07"),
        Err(SignalError::Storage { .. })
    ));
    // Debug output shows no secrets.
    let dbg = format!("{a:?} {:?}", bob.identity);
    assert!(dbg.contains("[redacted]"));
}

#[test]
fn group_messages() {
    let r = &mut rng(10);
    let mut sender = SenderKeyRecord::new();
    assert_eq!(sender.encrypt(b"x").unwrap_err(), SignalError::NoSenderKey);
    let skdm = sender.own_distribution_message(r);
    // Same key when asked again.
    assert_eq!(
        sender.own_distribution_message(r).serialized(),
        skdm.serialized()
    );
    let mut member = SenderKeyRecord::new();
    let first = sender.encrypt(b"before").unwrap();
    assert_eq!(
        member.decrypt(first.serialized()),
        Err(SignalError::UnknownSenderKey {
            key_id: skdm.key_id
        })
    );
    member.process_distribution(&SenderKeyDistributionMessage::parse(skdm.serialized()).unwrap());
    let msgs: Vec<SenderKeyMessage> = (0..10u8).map(|i| sender.encrypt(&[i]).unwrap()).collect();
    // Out of order, then duplicates.
    for i in [9usize, 0, 5, 3, 1, 2, 4, 8, 6, 7] {
        assert_eq!(
            member.decrypt(msgs[i].serialized()).unwrap().as_slice(),
            [i as u8]
        );
    }
    assert_eq!(
        member.decrypt(msgs[4].serialized()),
        Err(SignalError::DuplicateMessage { counter: 5 })
    );
    // The first message (iteration 0) is also openable: the SKDM started at iteration 0.
    assert_eq!(
        member.decrypt(first.serialized()).unwrap().as_slice(),
        b"before"
    );
    // A forged signature.
    let next = sender.encrypt(b"signed").unwrap();
    let mut forged = next.serialized().to_vec();
    // A ciphertext byte (the signature is the last 64 bytes).
    let at = forged.len() - 70;
    forged[at] ^= 1;
    assert_eq!(member.decrypt(&forged), Err(SignalError::BadSignature));
    let mut bad_sig = next.serialized().to_vec();
    *bad_sig.last_mut().unwrap() ^= 1;
    assert_eq!(member.decrypt(&bad_sig), Err(SignalError::BadSignature));
    assert_eq!(
        member.decrypt(next.serialized()).unwrap().as_slice(),
        b"signed"
    );
    // A repeated SKDM cannot rewind the chain.
    member.process_distribution(&skdm);
    assert!(matches!(
        member.decrypt(next.serialized()),
        Err(SignalError::DuplicateMessage { .. })
    ));
    // The store keeps both sides.
    let mut sender = SenderKeyRecord::from_bytes(&sender.to_bytes()).unwrap();
    let mut member = SenderKeyRecord::from_bytes(&member.to_bytes()).unwrap();
    let after = sender.encrypt(b"after restart").unwrap();
    assert_eq!(
        member.decrypt(after.serialized()).unwrap().as_slice(),
        b"after restart"
    );
    // Truncated.
    assert!(member.decrypt(&after.serialized()[..40]).is_err());
}

#[test]
fn group_forward_jump_is_bounded() {
    let r = &mut rng(11);
    let mut sender = SenderKeyRecord::new();
    let skdm = sender.own_distribution_message(r);
    let mut member = SenderKeyRecord::new();
    member.process_distribution(&skdm);
    // A sender far ahead: its own chain restored at a high iteration.
    let signing = amarula_core::noise::KeyPair::generate(r);
    let mut ahead = SenderKeyRecord::new();
    ahead.add_own(skdm.key_id, MAX_FORWARD_JUMP + 5, &[1; 32], &signing);
    let far = ahead.encrypt(b"far").unwrap();
    // Signed by another key: refused before any chain work.
    assert_eq!(
        member.decrypt(far.serialized()),
        Err(SignalError::BadSignature)
    );
    let mut same_key = SenderKeyRecord::new();
    same_key.add_own(skdm.key_id, 0, &[1; 32], &signing);
    let mut member2 = SenderKeyRecord::new();
    member2.process_distribution(&same_key.own_distribution_message(r));
    assert!(matches!(
        member2.decrypt(far.serialized()),
        Err(SignalError::TooFarInFuture { .. })
    ));
}

#[test]
fn parsers_accept_their_own_output() {
    let r = &mut rng(12);
    let (_, _, mut a, _) = established(r);
    let m = a.encrypt(b"abc").unwrap();
    let parsed = SignalMessage::parse(m.serialized()).unwrap();
    assert_eq!(parsed.serialized(), m.serialized());
    assert!(PreKeySignalMessage::parse(m.serialized()).is_err());
}

mod never_panics {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            amarula_tests::fuzz_signal::signal_parse(&data);
        }

        #[test]
        fn mutated_messages(which in 0usize..4, pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let f = amarula_tests::fuzz_signal::fixture();
            let mut data = f.samples[which].clone();
            let p = pos % data.len();
            data[p] = byte;
            amarula_tests::fuzz_signal::signal_parse(&data);
            data.truncate(cut % (data.len() + 1));
            amarula_tests::fuzz_signal::signal_parse(&data);
        }
    }
}
