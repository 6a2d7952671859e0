//! The simulator end to end with the sans-IO machine over a loopback WebSocket: QR and
//! phone-code pairing, login and refusal, IQs, message routing, offline delivery and the
//! redelivery of unacked messages at the next login.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{
    AckToken, CloseReason, Confirm, Event, IqRequest, IqResult, MessageAckResult, Session,
};
use amarula_tests::sim::client::{TestClient, config_for, fresh_credentials, linked_session};
use amarula_tests::sim::{ConnId, ConnKind, SimConfig, SimEvent, Simulator, Subscription};

const T: Duration = Duration::from_secs(10);

async fn sim() -> Simulator {
    Simulator::start(SimConfig::pn_legacy())
        .await
        .expect("bind")
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

fn closed(e: &Event) -> Option<String> {
    match e {
        Event::Closed { reason, .. } => Some(format!("{reason:?}")),
        _ => None,
    }
}

#[tokio::test]
async fn qr_pairing_then_515_then_login() {
    let sim = sim().await;
    let account = sim.add_account("15550001111");
    let mut events = sim.subscribe();
    let config = config_for(&sim);
    let session = Session::new(fresh_credentials(1), &config);
    let mut c = TestClient::connect(&sim.url(), config.clone(), session, [1; 32])
        .await
        .unwrap();
    let qr = c
        .wait_for(T, |e| match e {
            Event::PairingQr { qr, .. } => Some(qr.clone()),
            _ => None,
        })
        .await
        .unwrap();
    let device = account.scan_qr(&qr).unwrap();
    assert_eq!(device.user_part(), "15550001111");
    let paired = events
        .wait_for(T, |e| match e {
            SimEvent::Paired { device, .. } => Some(device.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(paired, device);
    let reason = c.wait_for(T, closed).await.unwrap();
    assert!(reason.contains("RestartRequired"), "{reason}");
    let session = c.finish(T).await.unwrap();
    let identity = session.credentials().device.clone().expect("paired");
    assert_eq!(identity.jid, device);
    let mut c = TestClient::connect(&sim.url(), config, session, [2; 32])
        .await
        .unwrap();
    let own_lid = c
        .wait_for(T, |e| match e {
            Event::LoggedIn { own_lid, .. } => Some(own_lid.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(own_lid, Some(account.lid()));
    assert!(account.is_online(&device));
}

/// The phone reads the older QR form too (PAIRING.md §2.2): `REF,NOISE,IDENTITY,ADV`, no link
/// prefix and no TYPE, as Baileys 6.x shows it.
#[tokio::test]
async fn the_phone_reads_the_older_four_part_qr() {
    let sim = sim().await;
    let account = sim.add_account("15550001112");
    let mut events = sim.subscribe();
    let config = config_for(&sim);
    let session = Session::new(fresh_credentials(4), &config);
    let mut c = TestClient::connect(&sim.url(), config, session, [4; 32])
        .await
        .unwrap();
    let qr = c
        .wait_for(T, |e| match e {
            Event::PairingQr { qr, .. } => Some(qr.clone()),
            _ => None,
        })
        .await
        .unwrap();
    let body = qr
        .strip_prefix(amarula_core::pairing::QR_PREFIX)
        .expect("current form");
    let (older, _type) = body.rsplit_once(',').expect("five parts");
    assert_eq!(older.split(',').count(), 4, "{older}");
    let device = account.scan_qr(older).unwrap();
    let paired = events
        .wait_for(T, |e| match e {
            SimEvent::Paired { device, .. } => Some(device.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(paired, device);
    let reason = c.wait_for(T, closed).await.unwrap();
    assert!(reason.contains("RestartRequired"), "{reason}");
}

#[tokio::test]
async fn phone_code_pairing() {
    let sim = sim().await;
    let account = sim.add_account("15550002222");
    let mut events = sim.subscribe();
    let config = config_for(&sim);
    let session = Session::new(fresh_credentials(3), &config);
    let mut c = TestClient::connect(&sim.url(), config, session, [3; 32])
        .await
        .unwrap();
    c.wait_for(T, |e| matches!(e, Event::PairingQr { .. }).then_some(()))
        .await
        .unwrap();
    let code = c.pairing_code("15550002222").await.unwrap();
    events
        .wait_for(T, |e| {
            matches!(e, SimEvent::PairingCodeRequested { phone, .. } if phone == "15550002222")
                .then_some(())
        })
        .await
        .unwrap();
    account.enter_code(&code).unwrap();
    let device = c
        .wait_for(T, |e| match e {
            Event::Paired { device } => Some(device.jid.clone()),
            _ => None,
        })
        .await
        .unwrap();
    let reason = c.wait_for(T, closed).await.unwrap();
    assert!(reason.contains("RestartRequired"), "{reason}");
    assert!(account.devices().contains(&device));
}

#[tokio::test]
async fn unknown_device_login_is_refused_with_401() {
    let sim = sim().await;
    let account = sim.add_account("15550003333");
    let mut events = sim.subscribe();
    let config = config_for(&sim);
    // Linked with one key, logging in with another.
    let mut creds = fresh_credentials(4);
    creds.device = Some(account.link_device(&fresh_credentials(5)));
    let mut c = TestClient::connect(
        &sim.url(),
        config.clone(),
        Session::new(creds, &config),
        [4; 32],
    )
    .await
    .unwrap();
    let reason = c.wait_for(T, closed).await.unwrap();
    assert!(reason.contains("LoggedOut { code: 401 }"), "{reason}");
    let kind = events
        .wait_for(T, |e| match e {
            SimEvent::ConnectionOpened { kind, .. } => Some(kind.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(matches!(kind, ConnKind::LoginRefused { .. }), "{kind:?}");
}

async fn iq(c: &mut TestClient, req: IqRequest) -> IqResult {
    let id = c.send_iq(req).await.unwrap();
    c.wait_for(T, |e| match e {
        Event::IqResponse { id: got, result } if *got == id => Some(result.clone()),
        _ => None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn iq_round_trips() {
    let sim = sim().await;
    let account = sim.add_account("15550004444");
    let config = config_for(&sim);
    let mut c = login(&sim, linked_session(&account, 6, &config), 6).await;
    // Device list.
    let usync = IqRequest::iq(
        "usync",
        "get",
        Jid::server(),
        vec![Node::new("usync").attr("sid", "s1").children([
            Node::new("query").children([Node::new("devices").attr("version", "2")]),
            Node::new("list").children([Node::new("user").attr("jid", account.jid())]),
        ])],
    );
    let IqResult::Ok(reply) = iq(&mut c, usync).await else {
        panic!("usync failed");
    };
    let list = reply
        .child("usync")
        .and_then(|u| u.child("list"))
        .and_then(|l| l.child("user"))
        .and_then(|u| u.child("devices"))
        .and_then(|d| d.child("device-list"))
        .expect("device list");
    assert_eq!(list.child_nodes().len(), 2, "{reply}");
    // Prekey upload, count and bundle.
    let key = |id: u8| {
        Node::new("key").children([
            Node::new("id").bytes(vec![0, 0, id]),
            Node::new("value").bytes(vec![id; 32]),
        ])
    };
    let upload = IqRequest::iq(
        "encrypt",
        "set",
        Jid::server(),
        vec![
            Node::new("registration").bytes(vec![0, 0, 0, 9]),
            Node::new("type").bytes(vec![5]),
            Node::new("identity").bytes(vec![1; 32]),
            Node::new("list").children([key(1), key(2)]),
            Node::new("skey").children([
                Node::new("id").bytes(vec![0, 0, 1]),
                Node::new("value").bytes(vec![3; 32]),
                Node::new("signature").bytes(vec![4; 64]),
            ]),
        ],
    );
    assert!(matches!(iq(&mut c, upload).await, IqResult::Ok(_)));
    let count = IqRequest::iq("encrypt", "get", Jid::server(), vec![Node::new("count")]);
    let IqResult::Ok(reply) = iq(&mut c, count).await else {
        panic!("count failed");
    };
    assert_eq!(
        reply.child("count").and_then(|c| c.attr_str("value")),
        Some("2")
    );
    let me = account.devices()[1].clone();
    let fetch = IqRequest::iq(
        "encrypt",
        "get",
        Jid::server(),
        vec![Node::new("key").children([Node::new("user").attr("jid", me)])],
    );
    let IqResult::Ok(reply) = iq(&mut c, fetch).await else {
        panic!("bundle failed");
    };
    let user = reply.child("list").and_then(|l| l.child("user")).unwrap();
    assert_eq!(
        user.child("key")
            .and_then(|k| k.child("value"))
            .and_then(Node::content_bytes),
        Some(&[1u8; 32][..])
    );
    // media_conn and an unknown namespace.
    let media = IqRequest::iq("w:m", "set", Jid::server(), vec![Node::new("media_conn")]);
    assert!(matches!(iq(&mut c, media).await, IqResult::Ok(n) if n.child("media_conn").is_some()));
    let unknown = IqRequest::iq("w:nope", "get", Jid::server(), vec![Node::new("x")]);
    let r = iq(&mut c, unknown).await;
    assert!(matches!(r, IqResult::Error { code: 501, .. }), "{r:?}");
}

fn text_message(id: &str, to: &Jid) -> Node {
    Node::new("message")
        .attr("id", id)
        .attr("to", to.clone())
        .attr("type", "text")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(vec![1, 2, 3])])
}

#[tokio::test]
async fn message_is_delivered_acked_and_receipted() {
    let sim = sim().await;
    let alice = sim.add_account("15550005555");
    let bob = sim.add_account("15550006666");
    let config = config_for(&sim);
    let mut a = login(&sim, linked_session(&alice, 7, &config), 7).await;
    let mut b = login(&sim, linked_session(&bob, 8, &config), 8).await;
    a.relay(text_message("MSG1", &bob.jid())).await.unwrap();
    let ack = a
        .wait_for(T, |e| match e {
            Event::MessageAck { id, result } if id == "MSG1" => Some(result.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(
        matches!(ack, MessageAckResult::Delivered { t: Some(_), .. }),
        "{ack:?}"
    );
    let (node, token) = b
        .wait_for(T, |e| match e {
            Event::Stanza { node, ack } if node.tag == "message" => Some((node.clone(), *ack)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(node.attr_str("id"), Some("MSG1"));
    assert_eq!(
        node.attr_jid("from").map(Jid::to_non_device),
        Some(alice.jid())
    );
    assert!(node.child("enc").is_some());
    b.confirm(token.expect("held ack"), Confirm::Ack)
        .await
        .unwrap();
    let receipt = a
        .wait_for(T, |e| match e {
            Event::Receipt(r) => Some(r.node.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(receipt.attr_str("id"), Some("MSG1"));
    assert_eq!(
        receipt.attr_jid("from").map(Jid::to_non_device),
        Some(bob.jid())
    );
}

#[tokio::test]
async fn offline_device_gets_queued_messages_on_login() {
    let sim = sim().await;
    let alice = sim.add_account("15550007777");
    let bob = sim.add_account("15550008888");
    let config = config_for(&sim);
    let bob_session = linked_session(&bob, 10, &config);
    let a = login(&sim, linked_session(&alice, 9, &config), 9).await;
    let mut events = sim.subscribe();
    a.relay(text_message("MSG2", &bob.jid())).await.unwrap();
    let queued = events
        .wait_for(T, |e| match e {
            SimEvent::MessageRouted { queued, .. } => Some(queued.len()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(queued, 1);
    let mut b = TestClient::connect(&sim.url(), config, bob_session, [10; 32])
        .await
        .unwrap();
    let msg = b
        .wait_for(T, |e| match e {
            Event::Stanza { node, .. } if node.tag == "message" => Some(node.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(msg.attr_str("offline"), Some("1"));
    let end = b
        .wait_for(T, |e| match e {
            Event::Stanza { node, .. } if node.tag == "ib" => Some(node.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(
        end.child("offline").and_then(|o| o.attr_str("count")),
        Some("1")
    );
}

#[tokio::test]
async fn same_seed_same_refs() {
    let mut qrs = Vec::new();
    for _ in 0..2 {
        let sim = sim().await;
        let config = config_for(&sim);
        let session = Session::new(fresh_credentials(11), &config);
        let mut c = TestClient::connect(&sim.url(), config, session, [11; 32])
            .await
            .unwrap();
        qrs.push(
            c.wait_for(T, |e| match e {
                Event::PairingQr { qr, .. } => Some(qr.clone()),
                _ => None,
            })
            .await
            .unwrap(),
        );
        c.close();
        let _ = c.finish(T).await;
        sim.shutdown();
    }
    assert_eq!(qrs[0], qrs[1]);
    let _ = CloseReason::Local;
}

/// The `<message>` stanzas `c` gets up to the `<ib><offline>` that ends a login's backlog,
/// with their held acks, and the count that `<ib>` announces.
async fn backlog(c: &mut TestClient) -> (Vec<(Node, Option<AckToken>)>, String) {
    let mut messages = Vec::new();
    loop {
        let (node, ack) = c
            .wait_for(T, |e| match e {
                Event::Stanza { node, ack } if matches!(&*node.tag, "message" | "ib") => {
                    Some((node.clone(), *ack))
                }
                _ => None,
            })
            .await
            .expect("the backlog ends with <ib>");
        if node.tag == "ib" {
            let count = node
                .child("offline")
                .and_then(|o| o.attr_str("count"))
                .expect("<ib><offline count>")
                .to_owned();
            return (messages, count);
        }
        messages.push((node, ack));
    }
}

/// Closes `c` from the client side and waits until the simulator has handled everything the
/// connection `conn` sent (its task ends after the last frame), so a later login sees its acks.
async fn drop_conn(c: TestClient, conn: ConnId, events: &mut Subscription) -> Session {
    c.close();
    let session = c.finish(T).await.expect("the client ends");
    events
        .wait_for(T, |e| {
            matches!(e, SimEvent::ConnectionClosed { conn: got, .. } if *got == conn).then_some(())
        })
        .await
        .expect("the simulator closed the connection");
    session
}

async fn login_conn(events: &mut Subscription) -> ConnId {
    events
        .wait_for(T, |e| match e {
            SimEvent::ConnectionOpened {
                conn,
                kind: ConnKind::Login { .. },
            } => Some(*conn),
            _ => None,
        })
        .await
        .expect("a login")
}

fn id_of(node: &Node) -> &str {
    node.attr_str("id").unwrap_or_default()
}

#[tokio::test]
async fn unacked_message_comes_again_at_the_next_login_until_acked_or_receipted() {
    let sim = sim().await;
    let alice = sim.add_account("15550009001");
    let bob = sim.add_account("15550009002");
    let config = config_for(&sim);
    let a = login(&sim, linked_session(&alice, 12, &config), 12).await;
    let mut events = sim.subscribe();
    let mut b = login(&sim, linked_session(&bob, 13, &config), 13).await;
    let conn = login_conn(&mut events).await;
    assert_eq!(backlog(&mut b).await.1, "0");

    // Written to B's live connection: one left unacked, one acked, one refused (NACK), one
    // answered with its delivery receipt alone (what Baileys and whatsmeow send for a message
    // they decrypted, and the real server takes as the acknowledgement), one with a retry
    // receipt alone (no acknowledgement).
    let ids = ["KEEP1", "ACK1", "NACK1", "RCPT1", "RETRY1"];
    for id in ids {
        a.relay(text_message(id, &bob.jid())).await.unwrap();
    }
    let mut tokens = Vec::new();
    let mut froms = Vec::new();
    for id in ids {
        let (node, token) = b
            .wait_for(T, |e| match e {
                Event::Stanza { node, ack } if node.tag == "message" => Some((node.clone(), *ack)),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(id_of(&node), id);
        assert_eq!(node.attr_str("offline"), None, "{node}");
        tokens.push(token.expect("held ack"));
        froms.push(node.attr_jid("from").expect("from").clone());
    }
    b.confirm(tokens[1], Confirm::Ack).await.unwrap();
    b.confirm(tokens[2], Confirm::Nack(491)).await.unwrap();
    let receipt = Node::new("receipt")
        .attr("id", "RCPT1")
        .attr("to", froms[3].clone());
    b.confirm(tokens[3], Confirm::Replace(receipt))
        .await
        .unwrap();
    let retry = Node::new("receipt")
        .attr("id", "RETRY1")
        .attr("to", froms[4].clone())
        .attr("type", "retry");
    b.confirm(tokens[4], Confirm::Replace(retry)).await.unwrap();
    let session = drop_conn(b, conn, &mut events).await;

    // The next login gets the unacknowledged ones again, once, before the end of its backlog.
    let mut b = TestClient::connect(&sim.url(), config.clone(), session, [14; 32])
        .await
        .unwrap();
    let conn = login_conn(&mut events).await;
    let ids = events
        .wait_for(T, |e| match e {
            SimEvent::Redelivered { conn: got, ids, .. } if *got == conn => Some(ids.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(ids, ["KEEP1", "RETRY1"]);
    let (again, count) = backlog(&mut b).await;
    let got: Vec<&str> = again.iter().map(|(n, _)| id_of(n)).collect();
    assert_eq!(got, ["KEEP1", "RETRY1"]);
    assert_eq!(count, "2");
    for (node, token) in &again {
        assert_eq!(node.attr_str("offline"), Some("1"));
        assert_eq!(
            node.attr_jid("from").map(Jid::to_non_device),
            Some(alice.jid())
        );
        assert!(node.child("enc").is_some());
        b.confirm(token.expect("held ack"), Confirm::Ack)
            .await
            .unwrap();
    }
    let session = drop_conn(b, conn, &mut events).await;

    // Acked: the login after that gets nothing.
    let mut b = TestClient::connect(&sim.url(), config, session, [15; 32])
        .await
        .unwrap();
    let (again, count) = backlog(&mut b).await;
    assert!(again.is_empty(), "{:?}", again);
    assert_eq!(count, "0");
}
