//! Groups in the simulator: metadata IQ, message routing with sender keys (SKDM pairwise, then
//! the `skmsg`), the phone decrypting group messages, refusals, retry resends to one device,
//! group receipts, the `w:gp2` notification on add, and the redelivery of an unacked group
//! message.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{
    AckToken, Confirm, Event, IqRequest, IqResult, MessageAckResult, Session,
};
use amarula_core::notify::group::{GroupChange, GroupNotification};
use amarula_core::signal::{Identity, IdentityPolicy, SenderKeyRecord, SessionRecord};
use amarula_tests::sim::client::{TestClient, config_for, fresh_credentials};
use amarula_tests::sim::{
    Account, ConnId, GroupError, SimConfig, SimEvent, Simulator, Subscription, peer,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T: Duration = Duration::from_secs(10);

async fn sim() -> Simulator {
    Simulator::start(SimConfig::pn_legacy())
        .await
        .expect("bind")
}

/// Credentials linked to `account` (not connected yet): the session, identity and device JID.
fn linked(sim: &Simulator, account: &Account, seed: u8) -> (Session, Identity, Jid) {
    let config = config_for(sim);
    let mut creds = fresh_credentials(seed);
    let device = account.link_device(&creds);
    let jid = device.jid.clone();
    creds.device = Some(device);
    let identity = Identity::from_credentials(&creds);
    (Session::new(creds, &config), identity, jid)
}

async fn login(sim: &Simulator, session: Session, seed: u8) -> TestClient {
    let mut c = TestClient::connect(&sim.url(), config_for(sim), session, [seed; 32])
        .await
        .expect("connect");
    c.wait_for(T, |e| matches!(e, Event::LoggedIn { .. }).then_some(()))
        .await
        .expect("logged in");
    c
}

async fn companion(sim: &Simulator, account: &Account, seed: u8) -> (TestClient, Identity, Jid) {
    let (session, identity, jid) = linked(sim, account, seed);
    (login(sim, session, seed).await, identity, jid)
}

fn metadata(group: &Jid) -> IqRequest {
    IqRequest::iq(
        "w:g2",
        "get",
        group.clone(),
        vec![Node::new("query").attr("request", "interactive")],
    )
}

async fn acked(c: &mut TestClient, id: &str) -> MessageAckResult {
    c.wait_for(T, |e| match e {
        Event::MessageAck { id: got, result } if got == id => Some(result.clone()),
        _ => None,
    })
    .await
    .expect("ack")
}

async fn next_stanza(c: &mut TestClient, tag: &str) -> (Node, Option<AckToken>) {
    c.wait_for(T, |e| match e {
        Event::Stanza { node, ack } if node.tag == tag => Some((node.clone(), *ack)),
        _ => None,
    })
    .await
    .expect("stanza")
}

/// The next receipt `c` gets, as the stanza it came in.
async fn next_receipt(c: &mut TestClient) -> Node {
    c.wait_for(T, |e| match e {
        Event::Receipt(r) => Some(r.node.clone()),
        _ => None,
    })
    .await
    .expect("receipt")
}

/// The next `w:gp2` notification, typed by the machine (already acked).
async fn next_group_change(c: &mut TestClient) -> GroupNotification {
    c.wait_for(T, |e| match e {
        Event::GroupChanged(n) => Some((**n).clone()),
        _ => None,
    })
    .await
    .expect("group notification")
}

async fn routed(events: &mut Subscription, id: &str) -> (Vec<Jid>, Vec<Jid>) {
    let (mut delivered, mut queued) = events
        .wait_for(T, |e| match e {
            SimEvent::MessageRouted {
                id: got,
                delivered,
                queued,
                ..
            } if got == id => Some((delivered.clone(), queued.clone())),
            _ => None,
        })
        .await
        .expect("routed");
    delivered.sort();
    queued.sort();
    (delivered, queued)
}

fn group_message(id: &str, group: &Jid, children: Vec<Node>) -> Node {
    Node::new("message")
        .attr("id", id)
        .attr("to", group.clone())
        .attr("type", "text")
        .attr("phash", "2:abcdef")
        .children(children)
}

fn sorted(mut v: Vec<Jid>) -> Vec<Jid> {
    v.sort();
    v
}

#[tokio::test]
async fn metadata_for_members_403_for_others_404_for_unknown() {
    let sim = sim().await;
    let alice = sim.add_account("15550200001");
    let bob = sim.add_account("15550200002");
    let carol = sim.add_account("15550200003");
    let group = alice.create_group("Weekend", &[bob.phone(), alice.phone()]);
    assert!(group.is_group());
    assert_eq!(
        alice.group_members(&group),
        Some(vec![alice.phone().to_owned(), bob.phone().to_owned()])
    );

    let (mut b1, ..) = companion(&sim, &bob, 1).await;
    let IqResult::Ok(reply) = b1.query(metadata(&group), T).await.unwrap() else {
        panic!("metadata failed");
    };
    assert_eq!(reply.attr_jid("from"), Some(&group));
    let g = reply.child("group").expect("group");
    assert_eq!(g.attr_str("id"), Some(group.user_part()));
    assert_eq!(g.attr_str("subject"), Some("Weekend"));
    assert_eq!(g.attr_jid("creator"), Some(&alice.jid()));
    assert_eq!(g.attr_str("addressing_mode"), Some("pn"));
    assert_eq!(g.attr_str("size"), Some("2"));
    assert!(g.attr_str("creation").is_some());
    let parts: Vec<(Jid, Option<&str>)> = g
        .child_nodes()
        .iter()
        .filter(|p| p.tag == "participant")
        .map(|p| (p.attr_jid("jid").cloned().unwrap(), p.attr_str("type")))
        .collect();
    assert_eq!(
        parts,
        vec![(alice.jid(), Some("superadmin")), (bob.jid(), None)]
    );

    let (mut c1, ..) = companion(&sim, &carol, 2).await;
    let r = c1.query(metadata(&group), T).await.unwrap();
    assert!(matches!(r, IqResult::Error { code: 403, .. }), "{r:?}");
    let r = c1
        .query(metadata(&Jid::group("120363999999999999")), T)
        .await
        .unwrap();
    assert!(matches!(r, IqResult::Error { code: 404, .. }), "{r:?}");
}

#[tokio::test]
async fn group_message_reaches_every_member_device_and_the_phones_decrypt() {
    let sim = sim().await;
    let alice = sim.add_account("15550200011");
    let bob = sim.add_account("15550200012");
    let carol = sim.add_account("15550200013");
    let group = alice.create_group("Team", &[bob.phone(), carol.phone()]);
    let (mut a1, me, a1_jid) = companion(&sim, &alice, 11).await;
    let (mut b1, _, b1_jid) = companion(&sim, &bob, 12).await;
    // Carol's companion is linked but offline: its copy is queued.
    let (carol_session, _, c1_jid) = linked(&sim, &carol, 13);
    let mut rng = ChaCha20Rng::from_seed([20; 32]);
    let bob_phone = bob.jid().with_device(0);

    // Our sender key, distributed pairwise to Bob's phone (a real pkmsg) and to Bob's companion
    // (an opaque enc: only the routing is checked there).
    let mut sender_key = SenderKeyRecord::new();
    let skdm = sender_key.own_distribution_message(&mut rng);
    let bundle = peer::fetch_bundle(&mut a1, &bob_phone, T).await.unwrap();
    let mut to_bob = SessionRecord::new();
    to_bob
        .process_bundle(&me, &bundle, IdentityPolicy::default(), &mut rng)
        .unwrap();
    let skdm_msg = peer::skdm_message(&group, skdm.serialized());
    let ct = to_bob.encrypt(&peer::pad_message(&skdm_msg)).unwrap();
    let pairwise_phone = peer::enc(ct.enc_type(), ct.serialized());
    let pairwise_b1 = peer::enc("pkmsg", &[7; 50]);
    let sk = sender_key
        .encrypt(&peer::pad_message(&peer::text("hello team")))
        .unwrap();
    let skmsg = peer::enc("skmsg", sk.serialized());
    let stanza = group_message(
        "3EB0G1",
        &group,
        vec![
            peer::participants([
                (bob_phone.clone(), pairwise_phone),
                (b1_jid.clone(), pairwise_b1.clone()),
            ]),
            skmsg.clone(),
            Node::new("device-identity").bytes(vec![9; 4]),
        ],
    );
    let mut events = sim.subscribe();
    a1.relay(stanza).await.unwrap();
    assert!(matches!(
        acked(&mut a1, "3EB0G1").await,
        MessageAckResult::Delivered { .. }
    ));
    let (delivered, queued) = routed(&mut events, "3EB0G1").await;
    assert_eq!(
        delivered,
        sorted(vec![
            alice.jid().with_device(0),
            bob_phone.clone(),
            b1_jid.clone(),
            carol.jid().with_device(0),
        ])
    );
    assert_eq!(queued, vec![c1_jid]);

    // Bob's phone: SKDM first, then the skmsg decrypts. Alice's and Carol's phones got no
    // SKDM, so the skmsg fails there.
    let mut texts = Vec::new();
    let mut failures = Vec::new();
    events
        .wait_for(T, |e| {
            match e {
                SimEvent::PhoneMessage {
                    account,
                    from,
                    chat,
                    id,
                    message,
                } => {
                    assert_eq!((from, chat, id.as_str()), (&a1_jid, &group, "3EB0G1"));
                    texts.push((account.clone(), message.conversation.clone()));
                }
                SimEvent::PhoneUndecryptable { account, .. } => failures.push(account.clone()),
                _ => {}
            }
            (texts.len() + failures.len() == 3).then_some(())
        })
        .await
        .unwrap();
    assert_eq!(
        texts,
        vec![(bob.phone().to_owned(), Some("hello team".to_owned()))]
    );
    failures.sort();
    assert_eq!(failures, vec![alice.phone(), carol.phone()]);

    // Bob's companion: from the group, participant = the sender; its pairwise enc, then the
    // skmsg, then the other children.
    let (copy, _) = next_stanza(&mut b1, "message").await;
    assert_eq!(copy.attr_jid("from"), Some(&group));
    assert_eq!(copy.attr_jid("participant"), Some(&a1_jid));
    assert!(copy.get_attr("phash").is_none());
    let tags: Vec<(&str, Option<&str>)> = copy
        .child_nodes()
        .iter()
        .map(|c| (&*c.tag, c.attr_str("type")))
        .collect();
    assert_eq!(
        tags,
        vec![
            ("enc", Some("pkmsg")),
            ("enc", Some("skmsg")),
            ("device-identity", None)
        ]
    );
    assert_eq!(
        copy.child_nodes()[0].content_bytes(),
        pairwise_b1.content_bytes()
    );
    assert_eq!(copy.child_nodes()[1].content_bytes(), skmsg.content_bytes());

    // The next message needs no SKDM: only the skmsg.
    let sk = sender_key
        .encrypt(&peer::pad_message(&peer::text("second")))
        .unwrap();
    a1.relay(group_message(
        "3EB0G2",
        &group,
        vec![peer::enc("skmsg", sk.serialized())],
    ))
    .await
    .unwrap();
    assert!(matches!(
        acked(&mut a1, "3EB0G2").await,
        MessageAckResult::Delivered { .. }
    ));
    let text = events
        .wait_for(T, |e| match e {
            SimEvent::PhoneMessage {
                account, message, ..
            } if account == bob.phone() => message.conversation.clone(),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(text, "second");
    let (copy, _) = next_stanza(&mut b1, "message").await;
    assert_eq!(copy.attr_str("id"), Some("3EB0G2"));
    assert_eq!(copy.child_nodes().len(), 1);

    // A corrupted skmsg fails its signature check at the phone.
    let sk = sender_key
        .encrypt(&peer::pad_message(&peer::text("third")))
        .unwrap();
    sim.faults().corrupt_delivery("3EB0G3", bob_phone.clone());
    a1.relay(group_message(
        "3EB0G3",
        &group,
        vec![peer::enc("skmsg", sk.serialized())],
    ))
    .await
    .unwrap();
    let error = events
        .wait_for(T, |e| match e {
            SimEvent::PhoneUndecryptable {
                account, id, error, ..
            } if account == bob.phone() && id == "3EB0G3" => Some(error.clone()),
            SimEvent::PhoneMessage { account, id, .. }
                if account == bob.phone() && id == "3EB0G3" =>
            {
                panic!("decrypted a corrupted skmsg")
            }
            _ => None,
        })
        .await
        .unwrap();
    assert!(error.contains("signature"), "{error}");

    // Carol's companion gets its queued copy at login.
    let mut c1 = TestClient::connect(&sim.url(), config_for(&sim), carol_session, [13; 32])
        .await
        .unwrap();
    let (copy, _) = next_stanza(&mut c1, "message").await;
    assert_eq!(copy.attr_str("id"), Some("3EB0G1"));
    assert_eq!(copy.attr_str("offline"), Some("1"));
    assert_eq!(
        copy.child_nodes().first().map(|c| c.attr_str("type")),
        Some(Some("skmsg"))
    );
}

#[tokio::test]
async fn non_members_get_403_and_unknown_groups_404() {
    let sim = sim().await;
    let alice = sim.add_account("15550200021");
    let carol = sim.add_account("15550200022");
    let group = alice.create_group("Closed", &[]);
    let (mut c1, ..) = companion(&sim, &carol, 21).await;
    let mut events = sim.subscribe();
    c1.relay(group_message(
        "3EB0N1",
        &group,
        vec![peer::enc("skmsg", &[1; 80])],
    ))
    .await
    .unwrap();
    let r = acked(&mut c1, "3EB0N1").await;
    assert_eq!(r, MessageAckResult::Error { code: 403 });
    let (delivered, queued) = routed(&mut events, "3EB0N1").await;
    assert!(delivered.is_empty() && queued.is_empty());
    c1.relay(group_message(
        "3EB0N2",
        &Jid::group("120363000000000001"),
        vec![peer::enc("skmsg", &[1; 80])],
    ))
    .await
    .unwrap();
    let r = acked(&mut c1, "3EB0N2").await;
    assert_eq!(r, MessageAckResult::Error { code: 404 });
}

#[tokio::test]
async fn retry_resend_goes_to_one_device_and_group_receipts_reach_the_sender() {
    let sim = sim().await;
    let alice = sim.add_account("15550200031");
    let bob = sim.add_account("15550200032");
    let group = alice.create_group("Pair", &[bob.phone()]);
    let (mut a1, _, a1_jid) = companion(&sim, &alice, 31).await;
    let (mut b1, _, b1_jid) = companion(&sim, &bob, 32).await;
    let (b2, _, b2_jid) = companion(&sim, &bob, 33).await;
    let mut events = sim.subscribe();
    let resend = group_message("3EB0T1", &group, vec![peer::enc("pkmsg", &[4; 64])])
        .attr("participant", b1_jid.clone());
    a1.relay(resend).await.unwrap();
    let (delivered, queued) = routed(&mut events, "3EB0T1").await;
    assert_eq!(delivered, vec![b1_jid.clone()]);
    assert!(queued.is_empty());
    let (copy, token) = next_stanza(&mut b1, "message").await;
    assert_eq!(copy.attr_jid("from"), Some(&group));
    assert_eq!(copy.attr_jid("participant"), Some(&a1_jid));
    assert_eq!(copy.child_nodes().len(), 1);

    // The placeholder payload is no Signal message, so the plain ack stands for a delivery
    // receipt; it reaches the sender from the group, naming the receiving device.
    b1.confirm(token.expect("held ack"), Confirm::Ack)
        .await
        .unwrap();
    let receipt = next_receipt(&mut a1).await;
    assert_eq!(receipt.attr_str("id"), Some("3EB0T1"));
    assert_eq!(receipt.attr_jid("from"), Some(&group));
    assert_eq!(receipt.attr_jid("participant"), Some(&b1_jid));

    // A client's own group receipt goes to the device its participant names.
    b2.send(
        Node::new("receipt")
            .attr("id", "3EB0T1")
            .attr("to", group.clone())
            .attr("participant", a1_jid.clone())
            .attr("type", "read"),
    )
    .await
    .unwrap();
    let receipt = next_receipt(&mut a1).await;
    assert_eq!(receipt.attr_str("type"), Some("read"));
    assert_eq!(receipt.attr_jid("from"), Some(&group));
    assert_eq!(receipt.attr_jid("participant"), Some(&b2_jid));
}

#[tokio::test]
async fn adding_a_member_notifies_every_member_device() {
    let sim = sim().await;
    let alice = sim.add_account("15550200041");
    let bob = sim.add_account("15550200042");
    let dave = sim.add_account("15550200043");
    let group = alice.create_group("Growing", &[bob.phone()]);
    let (mut a1, ..) = companion(&sim, &alice, 41).await;
    let (mut b1, ..) = companion(&sim, &bob, 42).await;
    let (dave_session, ..) = linked(&sim, &dave, 43);

    alice.add_to_group(&group, dave.phone()).unwrap();
    assert_eq!(
        alice.add_to_group(&group, dave.phone()),
        Err(GroupError::AlreadyMember)
    );
    assert_eq!(
        alice.add_to_group(&Jid::group("1"), dave.phone()),
        Err(GroupError::UnknownGroup)
    );
    assert_eq!(alice.group_members(&group).map(|m| m.len()), Some(3));
    let added = |n: &GroupNotification| match n.changes.first() {
        Some(GroupChange::Added { participants, .. }) => {
            participants.first().map(|p| p.jid.clone())
        }
        _ => None,
    };
    for c in [&mut a1, &mut b1] {
        let note = next_group_change(c).await;
        assert_eq!(note.group, group);
        assert!(!note.id.is_empty() && note.timestamp.is_some());
        assert_eq!(added(&note), Some(dave.jid()));
    }
    // The new member's offline companion gets it at login, and may now ask for the metadata.
    let mut d1 = login(&sim, dave_session, 43).await;
    let note = next_group_change(&mut d1).await;
    assert!(note.offline);
    assert_eq!(added(&note), Some(dave.jid()));
    let r = d1.query(metadata(&group), T).await.unwrap();
    assert!(
        matches!(&r, IqResult::Ok(n) if n.child("group").and_then(|g| g.attr_str("size")) == Some("3")),
        "{r:?}"
    );
}

/// Closes `c` from the client side, waits until the simulator has handled everything its
/// connection `conn` sent, then logs the session in again (seeded `seed`); returns the new
/// client and its connection.
async fn reconnect(
    sim: &Simulator,
    c: TestClient,
    conn: ConnId,
    events: &mut Subscription,
    seed: u8,
) -> (TestClient, ConnId) {
    c.close();
    let session = c.finish(T).await.unwrap();
    events
        .wait_for(T, |e| {
            matches!(e, SimEvent::ConnectionClosed { conn: got, .. } if *got == conn).then_some(())
        })
        .await
        .unwrap();
    let c = login(sim, session, seed).await;
    (c, login_conn(events).await)
}

async fn login_conn(events: &mut Subscription) -> ConnId {
    events
        .wait_for(T, |e| match e {
            SimEvent::ConnectionOpened { conn, .. } => Some(*conn),
            _ => None,
        })
        .await
        .unwrap()
}

/// The first `<message>` or `<ib>` (the end of a login's backlog) a client gets.
async fn message_or_ib(c: &mut TestClient) -> (Node, Option<AckToken>) {
    c.wait_for(T, |e| match e {
        Event::Stanza { node, ack } if matches!(&*node.tag, "message" | "ib") => {
            Some((node.clone(), *ack))
        }
        _ => None,
    })
    .await
    .expect("a message or the end of the backlog")
}

fn offline_count(ib: &Node) -> Option<&str> {
    ib.child("offline").and_then(|o| o.attr_str("count"))
}

#[tokio::test]
async fn unacked_group_message_comes_again_at_the_next_login_until_acked() {
    let sim = sim().await;
    let alice = sim.add_account("15550200051");
    let bob = sim.add_account("15550200052");
    let group = alice.create_group("Again", &[bob.phone()]);
    let (a1, _, a1_jid) = companion(&sim, &alice, 51).await;
    let (b1_session, ..) = linked(&sim, &bob, 52);
    let mut events = sim.subscribe();
    let mut b1 = login(&sim, b1_session, 52).await;
    let conn = login_conn(&mut events).await;
    let (ib, _) = message_or_ib(&mut b1).await;
    assert_eq!(offline_count(&ib), Some("0"), "{ib}");
    a1.relay(group_message(
        "3EB0A1",
        &group,
        vec![peer::enc("skmsg", &[5; 80])],
    ))
    .await
    .unwrap();
    let (copy, _) = message_or_ib(&mut b1).await;
    assert_eq!(copy.attr_str("id"), Some("3EB0A1"), "{copy}");
    assert_eq!(copy.attr_str("offline"), None);

    // Dropped unacked: the next login gets it again, from the group, naming the sender.
    let (mut b1, conn) = reconnect(&sim, b1, conn, &mut events, 53).await;
    let (copy, token) = message_or_ib(&mut b1).await;
    assert_eq!(copy.attr_str("id"), Some("3EB0A1"), "{copy}");
    assert_eq!(copy.attr_str("offline"), Some("1"));
    assert_eq!(copy.attr_jid("from"), Some(&group));
    assert_eq!(copy.attr_jid("participant"), Some(&a1_jid));
    let (ib, _) = message_or_ib(&mut b1).await;
    assert_eq!(offline_count(&ib), Some("1"), "{ib}");

    // Its ack names the group and the participant: the login after that gets nothing.
    b1.confirm(token.expect("held ack"), Confirm::Ack)
        .await
        .unwrap();
    let (mut b1, _) = reconnect(&sim, b1, conn, &mut events, 54).await;
    let (ib, _) = message_or_ib(&mut b1).await;
    assert_eq!(offline_count(&ib), Some("0"), "{ib}");
}
