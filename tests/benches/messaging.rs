//! Messaging through the whole machine, on established sessions: what a send and a receive
//! cost beyond the Signal operations themselves (stanza building and parsing, padding, the
//! persistence events, Noise framing).
//!
//! `cargo bench -p amarula-tests --bench messaging`

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{Config, Event, Output};
use amarula_tests::expect::{self, result_for};
use amarula_tests::harness::Pair;
use amarula_tests::peer::{Peer, bundle_from_upload};

fn main() {
    divan::main();
}

const OWN: &str = "15551234567:7@s.whatsapp.net";
const BOB: &str = "15550009999";

fn jid(s: &str) -> Jid {
    s.parse().expect("jid")
}

/// A logged-in machine with sessions to Bob's three devices and our phone (the first send's
/// queries answered), and the peers.
fn established() -> (Pair, Vec<Peer>) {
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

/// One text to a user with three devices (and our phone): four pairwise encryptions, the
/// stanza, five persistence events, one Noise frame.
#[divan::bench]
fn send_text_to_4_devices(bencher: divan::Bencher<'_, '_>) {
    let (mut pair, _) = established();
    let to = jid(&format!("{BOB}@s.whatsapp.net"));
    bencher.bench_local(|| {
        pair.client
            .send_text(pair.now, &to, "hello there")
            .expect("send");
        while let Some(o) = pair.client.poll_output() {
            divan::black_box(&o);
        }
    });
}

/// One `msg` received on an established session: Noise decrypt, decode, Signal decrypt,
/// unpad, the pending record and the event.
#[divan::bench]
fn receive_text(bencher: divan::Bencher<'_, '_>) {
    let (mut pair, mut peers) = established();
    let bob = &mut peers[0];
    // Bob answers once, so his next messages are plain `msg`s.
    let msg = pair.server.last("message").expect("sent").clone();
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
    let mut n = 0u64;
    bencher
        .with_inputs(|| {
            n += 1;
            let enc = bob.encrypt_text(&jid(OWN), None, "hi, how are you doing today?");
            pair.server.send(
                &Node::new("message")
                    .attr("from", bob.jid.clone())
                    .attr("id", format!("B{n}"))
                    .attr("t", "1700000000")
                    .attr("type", "text")
                    .children([enc]),
            );
            pair.server.take_to_client()
        })
        .bench_local_values(|frames| {
            for f in &frames {
                pair.client.handle_input(pair.now, f);
            }
            let mut got = false;
            while let Some(o) = pair.client.poll_output() {
                got |= matches!(o, Output::Event(Event::Message(_)));
            }
            assert!(got);
        });
}
