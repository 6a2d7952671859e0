//! Message kinds through the simulator, seen on the wire by a test client: the server keeps
//! the attributes of every kind (`type`, `edit`, the encs' `mediatype` and `decrypt-fail`,
//! `<meta>`) on the copies it delivers, and a phone sends each kind with the attributes its
//! content calls for, decryptable by the receiving device.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::content::build::{self, MessageRef};
use amarula_core::content::{Contact, Location};
use amarula_core::jid::Jid;
use amarula_core::machine::{Event, IqRequest, IqResult};
use amarula_proto::e2e::Message;
use amarula_tests::peer::Peer;
use amarula_tests::sim::client::{TestClient, config_for, linked_session};
use amarula_tests::sim::{PhoneSendError, SimConfig, SimEvent, Simulator};

const T: Duration = Duration::from_secs(10);

async fn login(sim: &Simulator, phone: &str, seed: u8) -> (TestClient, Jid) {
    let account = sim.account(phone).unwrap_or_else(|| sim.add_account(phone));
    let session = linked_session(&account, seed, &config_for(sim));
    let jid = session
        .credentials()
        .device
        .as_ref()
        .map(|d| d.jid.clone())
        .expect("linked");
    let mut c = TestClient::connect(&sim.url(), config_for(sim), session, [seed; 32])
        .await
        .expect("connect");
    c.wait_for(T, |e| matches!(e, Event::LoggedIn { .. }).then_some(()))
        .await
        .expect("logged in");
    (c, jid)
}

/// The next `<message>` the client gets.
async fn next_message(c: &mut TestClient) -> Node {
    c.wait_for(T, |e| match e {
        Event::Stanza { node, .. } if node.tag == "message" => Some(node.clone()),
        _ => None,
    })
    .await
    .expect("a message")
}

/// (type, edit, mediatype, decrypt-fail, polltype) of a delivered copy.
fn said(node: &Node) -> [Option<&str>; 5] {
    let enc = node.child("enc");
    [
        node.attr_str("type"),
        node.attr_str("edit"),
        enc.and_then(|e| e.attr_str("mediatype")),
        enc.and_then(|e| e.attr_str("decrypt-fail")),
        node.child("meta").and_then(|m| m.attr_str("polltype")),
    ]
}

#[tokio::test]
async fn the_server_keeps_the_attributes_of_every_kind() {
    let sim = Simulator::start(SimConfig::pn_legacy())
        .await
        .expect("bind");
    let (a, _) = login(&sim, "15550021001", 1).await;
    let (mut b, b_jid) = login(&sim, "15550021002", 2).await;
    let bob = Jid::user("15550021002");
    for (id, ty, edit, media, hide, poll) in [
        ("K1", "reaction", Some("7"), None, true, None),
        ("K2", "media", None, Some("contact_array"), false, None),
        ("K3", "poll", None, None, true, Some("vote")),
        ("K4", "text", Some("8"), None, false, None),
    ] {
        let mut enc = Node::new("enc").attr("v", "2").attr("type", "msg");
        if let Some(m) = media {
            enc = enc.attr("mediatype", m);
        }
        if hide {
            enc = enc.attr("decrypt-fail", "hide");
        }
        let mut node = Node::new("message")
            .attr("id", id)
            .attr("to", bob.clone())
            .attr("type", ty)
            .attr("phash", "2:server-only");
        if let Some(e) = edit {
            node = node.attr("edit", e);
        }
        let mut children = vec![
            Node::new("participants").children([Node::new("to")
                .attr("jid", b_jid.clone())
                .children([enc.bytes(vec![1, 2, 3])])]),
        ];
        if let Some(p) = poll {
            children.push(Node::new("meta").attr("polltype", p));
        }
        a.relay(node.children(children)).await.expect("relayed");
        let got = next_message(&mut b).await;
        assert_eq!(got.attr_str("id"), Some(id));
        assert_eq!(
            said(&got),
            [Some(ty), edit, media, hide.then_some("hide"), poll],
            "{got}"
        );
        assert!(
            got.get_attr("to").is_none() && got.get_attr("phash").is_none(),
            "{got}"
        );
        assert!(
            got.get_attr("from").is_some() && got.get_attr("t").is_some(),
            "{got}"
        );
    }
}

/// Publishes the keys of `peer` for the client's device (the prekey upload of SESSION.md
/// §10.1, built from the peer's bundle).
async fn publish(c: &mut TestClient, peer: &mut Peer) {
    let user = peer.bundle_node();
    let part = |tag: &str| user.child(tag).expect("a bundle part").clone();
    let upload = IqRequest::iq(
        "encrypt",
        "set",
        Jid::server(),
        vec![
            part("registration"),
            part("type"),
            part("identity"),
            Node::new("list").children([part("key")]),
            part("skey"),
        ],
    );
    let reply = c.query(upload, T).await.expect("an answer");
    assert!(matches!(reply, IqResult::Ok(_)), "{reply:?}");
}

#[tokio::test]
async fn a_phone_sends_every_kind_with_its_attributes() {
    let sim = Simulator::start(SimConfig::pn_legacy())
        .await
        .expect("bind");
    let (mut b, b_jid) = login(&sim, "15550022002", 4).await;
    let mut peer = Peer::new(&b_jid.to_string(), 4);
    publish(&mut b, &mut peer).await;
    let p = sim.add_account("15550022001");
    let (to_b, to_p) = (Jid::user("15550022002"), Jid::user("15550022001"));
    let phone = p.devices()[0].clone();
    let mut events = sim.subscribe();
    let own = [to_p.clone()];
    let theirs = MessageRef::theirs(to_b.clone(), "B1", to_b.clone());
    let ours = MessageRef::ours(to_b.clone(), "P1");
    let ann = Contact::new("Ann", build::vcard("Ann", "15550001111"));
    let cases: Vec<(Message, [Option<&str>; 5])> = vec![
        (
            build::Text::new("hi").to_message(&to_b, &to_p),
            [Some("text"), None, None, None, None],
        ),
        (
            build::reaction(theirs.key(&own), "👍", 1),
            [Some("reaction"), None, None, Some("hide"), None],
        ),
        (
            build::reaction(theirs.key(&own), "", 1),
            [Some("reaction"), Some("7"), None, Some("hide"), None],
        ),
        (
            build::edit(
                ours.key(&own),
                build::Text::new("x").to_message(&to_b, &to_p),
                1,
            ),
            [Some("text"), Some("1"), None, Some("hide"), None],
        ),
        (
            build::revoke(ours.key(&own)),
            [Some("text"), Some("7"), None, None, None],
        ),
        (
            build::poll("q", &["a".into(), "b".into()], 0, [1; 32]).expect("a poll"),
            [Some("poll"), None, None, None, Some("creation")],
        ),
        (
            build::contact(&ann),
            [Some("media"), None, Some("vcard"), None, None],
        ),
        (
            build::location(&Location::new(1.0, 2.0)),
            [Some("text"), None, None, None, None],
        ),
    ];
    for (message, want) in cases {
        let id = p.phone_send(&to_b, &message).expect("sent");
        let got = next_message(&mut b).await;
        assert_eq!(got.attr_str("id"), Some(id.as_str()));
        assert_eq!(got.attr_jid("from"), Some(&phone));
        assert_eq!(said(&got), want, "{got}");
        let enc = got.child("enc").expect("the device's enc");
        assert_eq!(peer.decrypt(&phone, enc).expect("decrypts"), message);
        let routed = events
            .wait_for(T, |e| match e {
                SimEvent::MessageRouted { id: i, from, .. } if *i == id => Some(from.clone()),
                _ => None,
            })
            .await
            .expect("routed");
        assert_eq!(routed, phone);
    }
    // A message to a group the account is not in is refused as the server would.
    let group = sim
        .add_account("15550022009")
        .create_group("not p's", &["15550022002"]);
    assert_eq!(
        p.phone_send(&group, &Message::default()),
        Err(PhoneSendError::Refused("403"))
    );
}
