//! What the messaging benchmark and the allocation test share: a logged-in machine with
//! established sessions, and the frames of one incoming message.

// Each user of this module takes what it needs from it.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "shared by a bench and a test through `#[path]`"
)]

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::Config;
use amarula_tests::expect::{self, result_for};
use amarula_tests::harness::{FakeServer, Pair};
use amarula_tests::peer::{Peer, bundle_from_upload};
use bytes::Bytes;

/// Our device.
pub const OWN: &str = "15551234567:7@s.whatsapp.net";
/// The user we talk to (three devices).
pub const BOB: &str = "15550009999";
/// The text Bob sends.
pub const TEXT: &str = "hi, how are you doing today?";

/// A JID from its text.
pub fn jid(s: &str) -> Jid {
    s.parse().expect("jid")
}

/// A logged-in machine with sessions to Bob's three devices and our phone (the first send's
/// queries answered), and the peers.
pub fn established() -> (Pair, Vec<Peer>) {
    let config = Config {
        end_to_end: true,
        prekey_upload_count: 8,
        ..Pair::config()
    };
    let mut pair = expect::logged_in(config, expect::seeds(5));
    let count = pair.server.last("iq").expect("count").clone();
    pair.server_send(&result_for(&count).children([Node::new("count").attr("value", "0")]));
    let upload = pair.server.last("iq").expect("upload").clone();
    pair.server_send(&result_for(&upload));
    let _ = bundle_from_upload(&upload);
    let mut peers: Vec<Peer> = (0..3)
        .map(|d| Peer::new(&format!("{BOB}:{d}@s.whatsapp.net"), 40 + d))
        .collect();
    peers.push(Peer::new("15551234567:0@s.whatsapp.net", 50));
    pair.client
        .send_text(pair.now, &jid(&format!("{BOB}@s.whatsapp.net")), "first")
        .expect("send");
    pair.drive();
    let usync = pair.server.last("iq").expect("usync").clone();
    let user = |u: &str, devices: &[u16]| {
        Node::new("user")
            .attr("jid", jid(u))
            .children([
                Node::new("devices").children([Node::new("device-list").children(
                    devices
                        .iter()
                        .map(|d| {
                            Node::new("device")
                                .attr("id", d.to_string())
                                .attr("key-index", "1")
                        })
                        .collect::<Vec<_>>(),
                )]),
            ])
    };
    pair.server_send(&result_for(&usync).children([Node::new("usync").children([
        Node::new("list").children([
            user(&format!("{BOB}@s.whatsapp.net"), &[0, 1, 2]),
            user("15551234567@s.whatsapp.net", &[0, 7]),
        ]),
    ])]));
    let key = pair.server.last("iq").expect("bundles").clone();
    let bundles: Vec<Node> = peers.iter_mut().map(Peer::bundle_node).collect();
    pair.server_send(&result_for(&key).children([Node::new("list").children(bundles)]));
    assert!(
        pair.server.last("message").is_some(),
        "the first send went out"
    );
    (pair, peers)
}

/// Bob's first device decrypts what we sent it, so that his next messages to us are plain
/// `msg`s on the session (no prekey message).
pub fn bob_has_session(pair: &Pair, bob: &mut Peer) {
    let msg = pair.server.last("message").expect("sent");
    let to_bob = msg
        .child("participants")
        .and_then(|p| {
            p.child_nodes()
                .iter()
                .find(|t| t.attr_jid("jid") == Some(&bob.jid))
                .and_then(|t| t.child("enc"))
        })
        .expect("an enc for bob")
        .clone();
    bob.decrypt(&jid(OWN), &to_bob).expect("bob decrypts");
}

/// The `<message>` stanza Bob's device sends us as its `n`-th message: [`TEXT`] in a `msg`.
pub fn incoming(bob: &mut Peer, n: u64) -> Node {
    let enc = bob.encrypt_text(&jid(OWN), None, TEXT);
    Node::new("message")
        .attr("from", bob.jid.clone())
        .attr("id", format!("3EB0B0B{n:013}"))
        .attr("t", "1700000000")
        .attr("type", "text")
        .children([enc])
}

/// The socket bytes of Bob's `n`-th message, as the server encrypts them for us.
pub fn incoming_frames(server: &mut FakeServer, bob: &mut Peer, n: u64) -> Vec<Bytes> {
    server.send(&incoming(bob, n));
    server.take_to_client()
}
