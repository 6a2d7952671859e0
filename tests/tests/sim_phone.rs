//! The simulated phone (device 0) as a Signal endpoint, and 1:1 fan-out by `<participants>`:
//! a test client fetches the phone's bundle, encrypts with the core's Signal API and checks
//! what the phone decrypted and what each device received.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{Confirm, Event, MessageAckResult, Session};
use amarula_core::signal::{Identity, IdentityPolicy, SessionRecord};
use amarula_proto::e2e;
use amarula_tests::sim::client::{TestClient, config_for, fresh_credentials};
use amarula_tests::sim::{Account, SimConfig, SimEvent, Simulator, Subscription, peer};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T: Duration = Duration::from_secs(10);

async fn sim() -> Simulator {
    Simulator::start(SimConfig::pn_legacy())
        .await
        .expect("bind")
}

/// A linked companion of `account`, logged in, with its Signal identity.
async fn companion(sim: &Simulator, account: &Account, seed: u8) -> (TestClient, Identity, Jid) {
    let config = config_for(sim);
    let mut creds = fresh_credentials(seed);
    let device = account.link_device(&creds);
    let jid = device.jid.clone();
    creds.device = Some(device);
    let identity = Identity::from_credentials(&creds);
    let mut c = TestClient::connect(
        &sim.url(),
        config.clone(),
        Session::new(creds, &config),
        [seed; 32],
    )
    .await
    .expect("connect");
    c.wait_for(T, |e| matches!(e, Event::LoggedIn { .. }).then_some(()))
        .await
        .expect("logged in");
    (c, identity, jid)
}

/// A session from `me` to `device`, from the bundle the simulator serves.
async fn session_with(
    c: &mut TestClient,
    me: &Identity,
    device: &Jid,
    rng: &mut ChaCha20Rng,
) -> SessionRecord {
    let bundle = peer::fetch_bundle(c, device, T).await.expect("bundle");
    let mut s = SessionRecord::new();
    s.process_bundle(me, &bundle, IdentityPolicy::default(), rng)
        .expect("bundle processed");
    s
}

fn encrypt(s: &mut SessionRecord, m: &e2e::Message) -> Node {
    let ct = s.encrypt(&peer::pad_message(m)).expect("encrypt");
    peer::enc(ct.enc_type(), ct.serialized())
}

fn message(id: &str, to: &Jid, children: Vec<Node>) -> Node {
    Node::new("message")
        .attr("id", id)
        .attr("to", to.clone())
        .attr("type", "text")
        .children(children)
}

async fn acked(c: &mut TestClient, id: &str) -> MessageAckResult {
    c.wait_for(T, |e| match e {
        Event::MessageAck { id: got, result } if got == id => Some(result.clone()),
        _ => None,
    })
    .await
    .expect("ack")
}

/// The next `<message>` stanza at `c`, with its held ack.
async fn next_message(c: &mut TestClient) -> (Node, Option<amarula_core::machine::AckToken>) {
    c.wait_for(T, |e| match e {
        Event::Stanza { node, ack } if node.tag == "message" => Some((node.clone(), *ack)),
        _ => None,
    })
    .await
    .expect("message")
}

/// (account, from, chat, id, text) of the next phone message.
async fn phone_message(events: &mut Subscription) -> (String, Jid, Jid, String, e2e::Message) {
    events
        .wait_for(T, |e| match e {
            SimEvent::PhoneMessage {
                account,
                from,
                chat,
                id,
                message,
            } => Some((
                account.clone(),
                from.clone(),
                chat.clone(),
                id.clone(),
                (**message).clone(),
            )),
            SimEvent::PhoneUndecryptable { error, .. } => panic!("undecryptable: {error}"),
            _ => None,
        })
        .await
        .expect("phone message")
}

async fn phone_failure(events: &mut Subscription) -> (String, String) {
    events
        .wait_for(T, |e| match e {
            SimEvent::PhoneUndecryptable { account, error, .. } => {
                Some((account.clone(), error.clone()))
            }
            SimEvent::PhoneMessage { .. } => panic!("decrypted"),
            _ => None,
        })
        .await
        .expect("phone failure")
}

#[tokio::test]
async fn phone_bundle_is_served_and_a_prekey_message_decrypts() {
    let sim = sim().await;
    let alice = sim.add_account("15550100001");
    let bob = sim.add_account("15550100002");
    let (mut a1, me, a1_jid) = companion(&sim, &alice, 1).await;
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let bob_phone = bob.jid().with_device(0);

    let bundle = peer::fetch_bundle(&mut a1, &bob_phone, T).await.unwrap();
    assert_eq!(bundle.verify(), Ok(()));
    // The phone's identity key is the account key.
    assert_eq!(bundle.identity_key.0, bob.account_key());
    assert_eq!(bundle.signed_prekey_id, 1);
    assert_eq!(bundle.prekey.map(|(id, _)| id), Some(1));
    assert_eq!(bob.phone_prekeys_left(), 50);

    let mut s = SessionRecord::new();
    s.process_bundle(&me, &bundle, IdentityPolicy::default(), &mut rng)
        .unwrap();
    let mut events = sim.subscribe();
    let enc = encrypt(&mut s, &peer::text("hello bob"));
    assert_eq!(enc.attr_str("type"), Some("pkmsg"));
    let stanza = message(
        "3EB0P1",
        &bob.jid(),
        vec![
            peer::participants([(bob_phone.clone(), enc)]),
            Node::new("device-identity").bytes(vec![1, 2, 3]),
        ],
    );
    a1.relay(stanza).await.unwrap();
    assert!(matches!(
        acked(&mut a1, "3EB0P1").await,
        MessageAckResult::Delivered { .. }
    ));
    let (account, from, chat, id, msg) = phone_message(&mut events).await;
    assert_eq!(account, "15550100002");
    assert_eq!(from, a1_jid);
    assert_eq!(chat, alice.jid());
    assert_eq!(id, "3EB0P1");
    assert_eq!(msg.conversation.as_deref(), Some("hello bob"));
    // The one-time prekey was used up.
    assert_eq!(bob.phone_prekeys_left(), 49);

    // Until the phone answers, the session keeps sending pkmsg on the same base key.
    let enc = encrypt(&mut s, &peer::text("again"));
    a1.relay(message(
        "3EB0P2",
        &bob.jid(),
        vec![peer::participants([(bob_phone, enc)])],
    ))
    .await
    .unwrap();
    let (.., id, msg) = phone_message(&mut events).await;
    assert_eq!(id, "3EB0P2");
    assert_eq!(msg.conversation.as_deref(), Some("again"));
    assert_eq!(bob.phone_prekeys_left(), 49);
}

#[tokio::test]
async fn fan_out_by_participants_reaches_each_listed_device() {
    let sim = sim().await;
    let alice = sim.add_account("15550100011");
    let bob = sim.add_account("15550100012");
    let (mut a1, me, a1_jid) = companion(&sim, &alice, 11).await;
    let (mut a2, _, a2_jid) = companion(&sim, &alice, 12).await;
    let (mut b1, _, b1_jid) = companion(&sim, &bob, 13).await;
    let mut rng = ChaCha20Rng::from_seed([10; 32]);
    let bob_phone = bob.jid().with_device(0);
    let alice_phone = alice.jid().with_device(0);
    let mut to_bob = session_with(&mut a1, &me, &bob_phone, &mut rng).await;
    let mut to_own = session_with(&mut a1, &me, &alice_phone, &mut rng).await;

    let for_bob = encrypt(&mut to_bob, &peer::text("hi"));
    // Our own phone gets the message wrapped for the chat it was sent in (§8.2).
    let dsm = e2e::Message {
        device_sent_message: Some(Box::new(e2e::DeviceSentMessage {
            destination_jid: Some(bob.jid().to_string()),
            message: Some(Box::new(peer::text("hi"))),
            phash: None,
        })),
        ..e2e::Message::default()
    };
    let for_own = encrypt(&mut to_own, &dsm);
    let opaque = |b: u8| peer::enc("msg", &[b; 40]);
    let stanza = message(
        "3EB0F1",
        &bob.jid(),
        vec![
            peer::participants([
                (bob_phone.clone(), for_bob),
                (b1_jid.clone(), opaque(1)),
                (a2_jid.clone(), opaque(2)),
                (alice_phone.clone(), for_own),
                // The sender itself and an unknown device are skipped.
                (a1_jid.clone(), opaque(3)),
                (bob.jid().with_device(77), opaque(4)),
            ]),
            Node::new("device-identity").bytes(vec![5; 8]),
        ],
    );
    let mut events = sim.subscribe();
    a1.relay(stanza).await.unwrap();

    let (mut delivered, queued) = events
        .wait_for(T, |e| match e {
            SimEvent::MessageRouted {
                id,
                delivered,
                queued,
                ..
            } if id == "3EB0F1" => Some((delivered.clone(), queued.clone())),
            _ => None,
        })
        .await
        .unwrap();
    delivered.sort();
    let mut want = vec![bob_phone, b1_jid, a2_jid, alice_phone];
    want.sort();
    assert_eq!(delivered, want);
    assert!(queued.is_empty());

    // Each phone decrypted its own copy.
    let mut phones = Vec::new();
    for _ in 0..2 {
        let (account, from, chat, _, msg) = phone_message(&mut events).await;
        assert_eq!(from, a1_jid);
        assert_eq!(msg.conversation.as_deref(), Some("hi"));
        phones.push((account, chat));
    }
    phones.sort();
    assert_eq!(
        phones,
        vec![
            ("15550100011".to_owned(), bob.jid()),
            ("15550100012".to_owned(), alice.jid()),
        ]
    );

    // Bob's companion: its own enc only, from the sender device, no recipient.
    let (copy, _) = next_message(&mut b1).await;
    assert_eq!(copy.attr_jid("from"), Some(&a1_jid));
    assert_eq!(copy.attr_str("id"), Some("3EB0F1"));
    assert!(copy.attr_str("t").is_some());
    assert!(copy.get_attr("recipient").is_none());
    assert!(copy.child("participants").is_none());
    let encs: Vec<&Node> = copy
        .child_nodes()
        .iter()
        .filter(|c| c.tag == "enc")
        .collect();
    assert_eq!(encs.len(), 1);
    assert_eq!(encs[0].content_bytes(), Some(&[1u8; 40][..]));
    assert!(copy.child("device-identity").is_some());

    // Alice's other companion: told which chat it belongs to.
    let (copy, _) = next_message(&mut a2).await;
    assert_eq!(copy.attr_jid("recipient"), Some(&bob.jid()));
    assert_eq!(
        copy.child("enc").and_then(Node::content_bytes),
        Some(&[2u8; 40][..])
    );
}

#[tokio::test]
async fn undecryptable_and_corrupted_copies_at_the_phone() {
    let sim = sim().await;
    let alice = sim.add_account("15550100021");
    let bob = sim.add_account("15550100022");
    let (mut a1, me, _) = companion(&sim, &alice, 21).await;
    let (mut b1, _, b1_jid) = companion(&sim, &bob, 22).await;
    let mut rng = ChaCha20Rng::from_seed([11; 32]);
    let bob_phone = bob.jid().with_device(0);
    let mut events = sim.subscribe();

    // A `msg` without a session.
    a1.relay(message(
        "3EB0U1",
        &bob.jid(),
        vec![peer::participants([(
            bob_phone.clone(),
            peer::enc("msg", &[0x33; 60]),
        )])],
    ))
    .await
    .unwrap();
    let (account, error) = phone_failure(&mut events).await;
    assert_eq!(account, "15550100022");
    assert!(!error.is_empty());

    // A real pkmsg whose MAC is flipped on the way: nothing is used up, and the same
    // ciphertext decrypts when sent again unharmed.
    let mut s = session_with(&mut a1, &me, &bob_phone, &mut rng).await;
    let enc = encrypt(&mut s, &peer::text("secret"));
    let b1_enc = encrypt(&mut s, &peer::text("for b1"));
    sim.faults().corrupt_delivery("3EB0U2", bob_phone.clone());
    sim.faults().corrupt_delivery("3EB0U2", b1_jid.clone());
    let stanza = message(
        "3EB0U2",
        &bob.jid(),
        vec![peer::participants([
            (bob_phone.clone(), enc.clone()),
            (b1_jid.clone(), b1_enc.clone()),
        ])],
    );
    a1.relay(stanza).await.unwrap();
    let what = events
        .wait_for(T, |e| match e {
            SimEvent::FaultFired { what, .. } => Some(what.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(what.contains("3EB0U2"), "{what}");
    let (_, error) = phone_failure(&mut events).await;
    assert!(error.contains("mac"), "{error}");
    // The bundle fetch handed the prekey out, but the phone keeps it until a pkmsg uses it.
    assert_eq!(bob.phone_prekeys_left(), 50);

    // The companion's copy has its last byte flipped.
    let (copy, _) = next_message(&mut b1).await;
    let got = copy.child("enc").and_then(Node::content_bytes).unwrap();
    let sent = b1_enc.content_bytes().unwrap();
    assert_eq!(got.len(), sent.len());
    assert_ne!(got, sent);

    // The rule was one-shot.
    a1.relay(message(
        "3EB0U2",
        &bob.jid(),
        vec![peer::participants([(bob_phone, enc)])],
    ))
    .await
    .unwrap();
    let (.., msg) = phone_message(&mut events).await;
    assert_eq!(msg.conversation.as_deref(), Some("secret"));
    assert_eq!(bob.phone_prekeys_left(), 49);
}

#[tokio::test]
async fn receipts_of_encrypted_copies_come_from_the_client() {
    let sim = sim().await;
    let alice = sim.add_account("15550100031");
    let bob = sim.add_account("15550100032");
    let (mut a1, me, a1_jid) = companion(&sim, &alice, 31).await;
    let (mut b1, _, b1_jid) = companion(&sim, &bob, 32).await;
    let mut rng = ChaCha20Rng::from_seed([12; 32]);
    // Any parseable Signal ciphertext counts as encrypted; the phone's bundle gives one.
    let mut s = session_with(&mut a1, &me, &bob.jid().with_device(0), &mut rng).await;
    let enc = encrypt(&mut s, &peer::text("x"));
    a1.relay(message(
        "3EB0R1",
        &bob.jid(),
        vec![peer::participants([(b1_jid.clone(), enc)])],
    ))
    .await
    .unwrap();
    let (copy, token) = next_message(&mut b1).await;
    assert_eq!(copy.attr_jid("from"), Some(&a1_jid));
    // The plain ack is not turned into a receipt; the client's own read receipt is forwarded
    // to exactly the device it names.
    b1.confirm(token.expect("held ack"), Confirm::Ack)
        .await
        .unwrap();
    b1.send(
        Node::new("receipt")
            .attr("id", "3EB0R1")
            .attr("to", a1_jid.clone())
            .attr("type", "read"),
    )
    .await
    .unwrap();
    let receipt = a1
        .wait_for(T, |e| match e {
            Event::Receipt(r) => Some(r.node.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(receipt.attr_str("id"), Some("3EB0R1"));
    assert_eq!(receipt.attr_str("type"), Some("read"), "{receipt}");
    assert_eq!(receipt.attr_jid("from"), Some(&b1_jid));
}

#[tokio::test]
async fn linking_a_device_notifies_the_other_companions() {
    let sim = sim().await;
    let alice = sim.add_account("15550100041");
    let (mut a1, _, _) = companion(&sim, &alice, 41).await;
    let new = alice.link_device(&fresh_credentials(42)).jid;
    let note = a1
        .wait_for(T, |e| match e {
            Event::Stanza { node, .. } if node.tag == "notification" => Some(node.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(note.attr_str("type"), Some("devices"));
    assert_eq!(note.attr_jid("from"), Some(&alice.jid()));
    assert!(note.attr_str("id").is_some() && note.attr_str("t").is_some());
    let added = note
        .child("add")
        .and_then(|a| a.child("device"))
        .and_then(|d| d.attr_jid("jid"));
    assert_eq!(added, Some(&new));
}
