//! Relayed messages (SESSION.md §5.5): `relay_message` needs a logged-in connection and `id`
//! and `to`; it emits `MessageCached` before the frame; then exactly one `MessageAck` follows
//! per relayed id: the server's ack (`t`, `phash`), its error (463, 479), a 75 s timeout, or
//! a disconnect.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{Event, MessageAckResult, Output, SendError};
use amarula_tests::expect::{
    advance_with_traffic, assert_message_ack_exactly_once, handshaken, logged_in, message_ack,
    seeds,
};
use amarula_tests::harness::Pair;
use bytes::Bytes;

fn peer() -> Jid {
    Jid::user("15556667777")
}

fn outgoing(id: &str) -> Node {
    Node::new("message")
        .attr("id", id.to_owned())
        .attr("to", peer())
        .attr("type", "text")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(vec![1, 2, 3])])
}

fn server_ack(id: &str) -> Node {
    Node::new("ack")
        .attr("class", "message")
        .attr("id", id.to_owned())
        .attr("from", peer())
        .attr("t", "1750000123")
}

#[test]
fn needs_login_and_id_and_to() {
    let mut pair = handshaken(Pair::config(), seeds(1));
    assert_eq!(
        pair.relay(outgoing("M1"), Bytes::new()),
        Err(SendError::NotLoggedIn)
    );
    let mut pair = logged_in(Pair::config(), seeds(1));
    let no_id = Node::new("message").attr("to", peer());
    let no_to = Node::new("message").attr("id", "M2");
    for node in [no_id, no_to] {
        assert_eq!(
            pair.relay(node, Bytes::new()),
            Err(SendError::MissingAttribute)
        );
    }
    // Refused relays leave no trace.
    assert!(
        !pair
            .events
            .iter()
            .any(|e| matches!(e, Event::MessageCached(_) | Event::MessageAck { .. }))
    );
    pair.close_locally();
    assert_eq!(
        pair.relay(outgoing("M3"), Bytes::new()),
        Err(SendError::NotLoggedIn)
    );
}

#[test]
fn cached_event_comes_before_the_frame() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    // Polled by hand, without the harness moving anything.
    let now = pair.now;
    pair.client
        .relay_message(now, outgoing("M1"), Bytes::from_static(b"plaintext"))
        .unwrap();
    let mut outputs = Vec::new();
    while let Some(out) = pair.client.poll_output() {
        outputs.push(out);
    }
    match &outputs[..] {
        [Output::Event(Event::MessageCached(m)), Output::Transmit(_)] => {
            assert_eq!(m.id, "M1");
            assert_eq!(m.to, peer());
            assert_eq!(m.kind, "text");
            assert_eq!(&m.context[..], b"plaintext");
            assert_eq!(m.sent_unix_ms, amarula_tests::harness::BASE_UNIX_MS);
        }
        other => panic!("{other:?}"),
    }
    // Deliver the frame: the server got the message as given.
    for out in outputs {
        if let Output::Transmit(b) = out {
            pair.server.handle_client_bytes(&b);
        }
    }
    assert_eq!(pair.server.last("message"), Some(&outgoing("M1")));
}

#[test]
fn server_ack_delivers() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    pair.relay(outgoing("M1"), Bytes::new()).unwrap();
    assert_eq!(message_ack(&pair.events, "M1"), None);
    pair.server_send(&server_ack("M1").attr("phash", "2:abcd"));
    assert_eq!(
        message_ack(&pair.events, "M1"),
        Some(&MessageAckResult::Delivered {
            t: Some(1_750_000_123),
            phash: Some("2:abcd".into()),
            server_id: None,
        })
    );
    // A second ack for it, and acks of other classes or ids, change nothing.
    pair.server_send(&server_ack("M1"));
    pair.server_send(&server_ack("M9"));
    pair.server_send(&server_ack("M1").attr("class", "receipt"));
    pair.close_locally();
    assert_message_ack_exactly_once(&["M1"], &pair.events);
}

#[test]
fn newsletter_ack_has_server_id() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    pair.relay(outgoing("M1"), Bytes::new()).unwrap();
    pair.server_send(&server_ack("M1").attr("server_id", "117"));
    assert!(matches!(
        message_ack(&pair.events, "M1"),
        Some(MessageAckResult::Delivered { server_id: Some(s), phash: None, .. }) if s == "117"
    ));
}

#[test]
fn server_errors() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    for (id, code) in [("E463", 463u16), ("E479", 479)] {
        pair.relay(outgoing(id), Bytes::new()).unwrap();
        pair.server_send(&server_ack(id).attr("error", code.to_string()));
        assert_eq!(
            message_ack(&pair.events, id),
            Some(&MessageAckResult::Error { code })
        );
    }
    assert!(!pair.client.is_closed());
    pair.close_locally();
    assert_message_ack_exactly_once(&["E463", "E479"], &pair.events);
}

#[test]
fn no_ack_within_75_seconds_times_out() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    pair.relay(outgoing("M1"), Bytes::new()).unwrap();
    advance_with_traffic(&mut pair, Duration::from_millis(74_999));
    assert_eq!(message_ack(&pair.events, "M1"), None);
    assert!(!pair.client.is_closed(), "{:?}", pair.events);
    pair.advance(Duration::from_millis(1));
    assert_eq!(
        message_ack(&pair.events, "M1"),
        Some(&MessageAckResult::Timeout)
    );
    // A late ack is ignored.
    pair.server_send(&server_ack("M1"));
    pair.close_locally();
    assert_message_ack_exactly_once(&["M1"], &pair.events);
}

#[test]
fn disconnect_ends_pending_messages() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    for id in ["M1", "M2", "M3"] {
        pair.relay(outgoing(id), Bytes::new()).unwrap();
    }
    pair.server_send(&server_ack("M2"));
    pair.socket_closed();
    assert_eq!(
        message_ack(&pair.events, "M1"),
        Some(&MessageAckResult::Disconnected)
    );
    assert!(matches!(
        message_ack(&pair.events, "M2"),
        Some(MessageAckResult::Delivered { .. })
    ));
    assert_eq!(
        message_ack(&pair.events, "M3"),
        Some(&MessageAckResult::Disconnected)
    );
    // Before the close event.
    assert!(matches!(pair.events.last(), Some(Event::Closed { .. })));
    assert_message_ack_exactly_once(&["M1", "M2", "M3"], &pair.events);
}

#[test]
fn relaying_the_same_id_again_while_pending_gives_one_ack() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    pair.relay(outgoing("M1"), Bytes::new()).unwrap();
    pair.server_send(&Node::new("ib").children([Node::new("thread_metadata")]));
    pair.advance(Duration::from_secs(10));
    pair.relay(outgoing("M1"), Bytes::new()).unwrap();
    // The deadline counts from the second relay.
    advance_with_traffic(&mut pair, Duration::from_secs(70));
    assert_eq!(message_ack(&pair.events, "M1"), None);
    pair.server_send(&server_ack("M1"));
    pair.close_locally();
    assert_message_ack_exactly_once(&["M1"], &pair.events);
}
