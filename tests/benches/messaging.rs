//! Messaging through the whole machine, on established sessions, and the stages it is made of.
//!
//! `cargo bench -p amarula-tests --bench messaging`
//!
//! - `receive_text`: one `msg` from Bob's device, from socket bytes to `Event::Message` with
//!   every output drained; `receive_stages::*` are its stages measured alone on the same
//!   message: `frame_and_noise` (frame decoder, Noise decrypt, flag byte), `decode` (the owned
//!   decoder on the node bytes), `signal` (Signal decrypt, unpadding, the `Message` protobuf).
//!   `session_to_bytes` is the serialization of the changed session record that the machine
//!   hands out to be persisted (once per message received or sent to a device). What is left
//!   (dispatch, duplicate check, the pending record, the other persistence events, the ack and
//!   the event) is the whole minus the stages.
//! - `send_text_to_4_devices`: one text to a user with three devices and our phone (four
//!   pairwise encryptions, the stanza, five persistence events, one Noise frame); its stages:
//!   `signal` (four encryptions with padding), `encode` (the stanza that goes out) and `noise`
//!   (sealing that frame). The rest is the device lookup, ids, stanza building, the sent cache
//!   and the events.
//!
//! The stages under a microsecond time 100 calls per sample, so that the timer's precision does
//! not weigh on them.

mod support;

use std::hint::black_box;

use amarula_core::binary::{self, Node};
use amarula_core::frame::FrameDecoder;
use amarula_core::machine::{Event, Output};
use amarula_core::noise::NoiseTransport;
use amarula_proto::Message as _;
use amarula_proto::e2e::Message;
use amarula_tests::peer::{Peer, bundle_from_upload};
use bytes::{Bytes, BytesMut};
use divan::Bencher;
use support::{BOB, OWN, TEXT, jid};

fn main() {
    divan::main();
}

/// One text to a user with three devices (and our phone): four pairwise encryptions, the
/// stanza, five persistence events, one Noise frame.
#[divan::bench]
fn send_text_to_4_devices(bencher: Bencher<'_, '_>) {
    let (mut pair, _) = support::established();
    let to = jid(&format!("{BOB}@s.whatsapp.net"));
    bencher.bench_local(|| {
        pair.client
            .send_text(pair.now, &to, "hello there")
            .expect("send");
        while let Some(o) = pair.client.poll_output() {
            black_box(&o);
        }
    });
}

/// One `msg` received on an established session: frame, Noise decrypt, decode, dispatch,
/// Signal decrypt, unpad, the pending record and the event.
#[divan::bench]
fn receive_text(bencher: Bencher<'_, '_>) {
    let (mut pair, mut peers) = support::established();
    let bob = &mut peers[0];
    support::bob_has_session(&pair, bob);
    let mut n = 0u64;
    bencher
        .with_inputs(|| {
            n += 1;
            support::incoming_frames(&mut pair.server, bob, n)
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

/// Two peers with a session both ways: `ours` stands for our device, `bob` for Bob's.
fn peer_pair() -> (Peer, Peer) {
    let mut ours = Peer::new(OWN, 60);
    let mut bob = Peer::new(&format!("{BOB}:0@s.whatsapp.net"), 40);
    // A bundle answer's `<user>` has its one-time prekey at the top; an upload has it in a
    // `<list>`, which is what `bundle_from_upload` reads.
    let user = bob.bundle_node();
    let upload = Node::new("iq").children(user.child_nodes().iter().map(|c| {
        if c.tag == "key" {
            Node::new("list").children([c.clone()])
        } else {
            c.clone()
        }
    }));
    let first = ours.encrypt_text(&bob.jid, Some(&bundle_from_upload(&upload)), "first");
    bob.decrypt(&ours.jid, &first)
        .expect("bob decrypts the pkmsg");
    let reply = bob.encrypt_text(&ours.jid, None, "reply");
    ours.decrypt(&bob.jid, &reply)
        .expect("we decrypt the answer");
    (ours, bob)
}

mod receive_stages {
    use super::*;

    /// The stanza `receive_text` receives.
    fn stanza() -> Node {
        let (pair, mut peers) = support::established();
        support::bob_has_session(&pair, &mut peers[0]);
        support::incoming(&mut peers[0], 1)
    }

    /// The socket bytes of the message through the frame decoder, Noise decryption and the
    /// flag byte, as `handle_input` does before decoding.
    #[divan::bench(sample_size = 100)]
    fn frame_and_noise(bencher: Bencher<'_, '_>) {
        let mut plain = Vec::new();
        binary::encode_frame(&stanza(), &mut plain).expect("encodes");
        let mut server = NoiseTransport::from_keys_for_testing_only([1; 32], [2; 32]);
        let mut client = NoiseTransport::from_keys_for_testing_only([2; 32], [1; 32]);
        let mut frames = FrameDecoder::new();
        bencher
            .with_inputs(|| server.encrypt_frame(&plain).expect("encrypts"))
            .bench_local_values(|wire| {
                frames.push(&wire);
                let frame: BytesMut = frames.next_frame().expect("a frame").expect("whole");
                black_box(client.decrypt_node(frame).expect("decrypts"))
            });
    }

    /// The node bytes of the message into the owned node the machine dispatches.
    #[divan::bench(sample_size = 100)]
    fn decode(bencher: Bencher<'_, '_>) {
        let body = Bytes::from(binary::to_vec(&stanza()).expect("encodes"));
        bencher.bench_local(|| {
            black_box(binary::decode_owned_shared(black_box(&body)).expect("decodes"))
        });
    }

    /// The `<enc>` of the message: Signal decrypt on the session, unpadding and the `Message`
    /// protobuf.
    #[divan::bench]
    fn signal(bencher: Bencher<'_, '_>) {
        let (mut ours, mut bob) = peer_pair();
        let (to, from) = (ours.jid.clone(), bob.jid.clone());
        bencher
            .with_inputs(|| bob.encrypt_text(&to, None, TEXT))
            .bench_local_values(|enc| black_box(ours.decrypt(&from, &enc).expect("decrypts")));
    }
}

/// Persisting the session after a message: the machine serializes the changed session record
/// for its `Event::Persist` (after receiving, the record of the sender's session).
#[divan::bench(sample_size = 100)]
fn session_to_bytes(bencher: Bencher<'_, '_>) {
    let (ours, bob) = peer_pair();
    let record = ours.sessions.get(&bob.jid).expect("a session");
    bencher.bench_local(|| black_box(record.to_bytes()));
}

mod send_stages {
    use super::*;

    /// Four pairwise encryptions of the padded text (one per device the send goes to).
    #[divan::bench]
    fn signal(bencher: Bencher<'_, '_>) {
        let (mut ours, bob) = peer_pair();
        let message = Message {
            conversation: Some("hello there".to_owned()),
            ..Message::default()
        }
        .encode_to_vec();
        bencher.bench_local(|| {
            for _ in 0..4 {
                black_box(ours.encrypt(&bob.jid, None, &message));
            }
        });
    }

    /// The stanza the send puts on the wire, encoded into a reused buffer.
    #[divan::bench(sample_size = 100)]
    fn encode(bencher: Bencher<'_, '_>) {
        let (pair, _) = support::established();
        let stanza = pair.server.last("message").expect("sent").clone();
        let mut buf = Vec::new();
        bencher.bench_local(|| {
            buf.clear();
            binary::encode_frame(black_box(&stanza), &mut buf).expect("encodes");
            black_box(buf.len());
        });
    }

    /// Sealing a frame of that stanza's size into socket bytes.
    #[divan::bench(sample_size = 100)]
    fn noise(bencher: Bencher<'_, '_>) {
        let (pair, _) = support::established();
        let stanza = pair.server.last("message").expect("sent");
        let mut plain = Vec::new();
        binary::encode_frame(stanza, &mut plain).expect("encodes");
        let mut client = NoiseTransport::from_keys_for_testing_only([2; 32], [1; 32]);
        bencher.bench_local(|| black_box(client.encrypt_frame(black_box(&plain)).expect("seals")));
    }
}
