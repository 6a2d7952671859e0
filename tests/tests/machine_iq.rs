//! IQs from the application (SESSION.md §3): each request gets exactly one response (the
//! result, the server's error, a timeout, or a disconnect), late and unknown replies are
//! ignored, wire ids follow `"<b0>.<b1>-<n>"` and keep counting across connections, and a
//! request before the handshake is refused.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{ConnectionMachine, Event, IqRequest, IqResult, RequestId, SendError};
use amarula_core::time::{Clock, Instant};
use amarula_tests::expect::{
    advance_with_traffic, assert_iq_exactly_once, handshaken, iq_result, last_iq_id, log_in,
    logged_in, paired_session, result_for, seeds,
};
use amarula_tests::harness::{BASE_UNIX_MS, Pair};

fn query() -> IqRequest {
    IqRequest::iq("w:g2", "get", Jid::server(), vec![Node::new("query")])
}

/// `(prefix, counter)` of a wire id `"<b0>.<b1>-<n>"`.
fn split_id(id: &str) -> (String, u64) {
    let (prefix, n) = id.split_once('-').expect("a dash");
    let (b0, b1) = prefix.split_once('.').expect("a dot");
    b0.parse::<u8>().expect("b0 is a byte");
    b1.parse::<u8>().expect("b1 is a byte");
    (prefix.to_owned(), n.parse().expect("a counter"))
}

#[test]
fn result_is_delivered() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(query());
    let sent = pair.server.last("iq").unwrap().clone();
    assert_eq!(sent.attr_str("xmlns"), Some("w:g2"));
    assert_eq!(sent.attr_str("type"), Some("get"));
    assert!(sent.child("query").is_some());
    let reply = result_for(&sent).children([Node::new("group").attr("id", "1")]);
    pair.server_send(&reply);
    match iq_result(&pair.events, id) {
        Some(IqResult::Ok(node)) => {
            assert_eq!(
                node.child("group").and_then(|g| g.attr_str("id")),
                Some("1")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn error_carries_code_and_text() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(query());
    let wire = last_iq_id(&pair);
    pair.server_send(
        &Node::new("iq")
            .attr("id", wire)
            .attr("type", "error")
            .attr("from", Jid::server())
            .children([Node::new("error")
                .attr("code", "404")
                .attr("text", "item-not-found")]),
    );
    match iq_result(&pair.events, id) {
        Some(IqResult::Error { code, text, node }) => {
            assert_eq!(*code, 404);
            assert_eq!(text, "item-not-found");
            assert_eq!(node.attr_str("type"), Some("error"));
        }
        other => panic!("{other:?}"),
    }
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn default_timeout_is_75_seconds() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(query());
    // The server keeps talking (so the socket is alive) but never answers.
    advance_with_traffic(&mut pair, Duration::from_millis(74_999));
    assert_eq!(iq_result(&pair.events, id), None);
    assert!(!pair.client.is_closed(), "{:?}", pair.events);
    pair.advance(Duration::from_millis(1));
    assert_eq!(iq_result(&pair.events, id), Some(&IqResult::Timeout));
    assert!(!pair.client.is_closed());
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn per_request_timeout() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let short = pair.send_iq(query().with_timeout(Duration::from_secs(5)));
    let long = pair.send_iq(query().with_timeout(Duration::from_secs(12)));
    pair.advance(Duration::from_millis(4_999));
    assert_eq!(iq_result(&pair.events, short), None);
    pair.advance(Duration::from_millis(1));
    assert_eq!(iq_result(&pair.events, short), Some(&IqResult::Timeout));
    assert_eq!(iq_result(&pair.events, long), None);
    pair.advance(Duration::from_secs(7));
    assert_eq!(iq_result(&pair.events, long), Some(&IqResult::Timeout));
    assert_iq_exactly_once(&[short, long], &pair.events);
}

#[test]
fn late_reply_after_timeout_is_ignored() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(query().with_timeout(Duration::from_secs(3)));
    let sent = pair.server.last("iq").unwrap().clone();
    pair.advance(Duration::from_secs(3));
    assert_eq!(iq_result(&pair.events, id), Some(&IqResult::Timeout));
    let before = pair.events.len();
    pair.server_send(&result_for(&sent));
    assert!(
        pair.events_since(before).is_empty(),
        "{:?}",
        pair.events_since(before)
    );
    assert!(!pair.client.is_closed());
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn unknown_ids_are_ignored() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(query());
    let before = pair.events.len();
    for bogus in ["nope", "0.0-99", ""] {
        pair.server_send(
            &Node::new("iq")
                .attr("id", bogus)
                .attr("type", "result")
                .attr("from", Jid::server()),
        );
    }
    // A reply without an id at all.
    pair.server_send(
        &Node::new("iq")
            .attr("type", "error")
            .attr("from", Jid::server()),
    );
    assert!(
        pair.events_since(before).is_empty(),
        "{:?}",
        pair.events_since(before)
    );
    assert_eq!(iq_result(&pair.events, id), None);
    pair.server_send(&result_for(&pair.server.last("iq").unwrap().clone()));
    assert!(matches!(iq_result(&pair.events, id), Some(IqResult::Ok(_))));
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn pending_iqs_end_disconnected_in_issue_order() {
    type Ending = fn(&mut Pair);
    let endings: [(&str, Ending); 5] = [
        ("socket closed", |p| p.socket_closed()),
        ("local close", |p| p.close_locally()),
        ("stream error", |p| {
            p.server_send(&Node::new("stream:error").attr("code", "515"));
        }),
        ("xmlstreamend", |p| {
            p.server_send(&Node::new("xmlstreamend"))
        }),
        ("dead socket", |p| {
            // The answer above disarmed the rule; a relayed message arms it again.
            let msg = Node::new("message")
                .attr("id", "M1")
                .attr("to", Jid::user("1666"))
                .attr("type", "text");
            p.relay(msg, bytes::Bytes::new()).unwrap();
            p.advance(Duration::from_secs(20));
        }),
    ];
    for (what, end) in endings {
        let mut pair = logged_in(Pair::config(), seeds(1));
        // Enough requests that ids differ in length ("…-9" and "…-10").
        let issued: Vec<RequestId> = (0..12).map(|_| pair.send_iq(query())).collect();
        let answered = issued[3];
        let wire = pair
            .server
            .received
            .iter()
            .rev()
            .nth(12 - 1 - 3)
            .unwrap()
            .clone();
        pair.server_send(&result_for(&wire));
        assert!(matches!(
            iq_result(&pair.events, answered),
            Some(IqResult::Ok(_))
        ));
        end(&mut pair);
        assert!(pair.client.is_closed(), "{what}");
        let disconnected: Vec<RequestId> = pair
            .events
            .iter()
            .filter_map(|e| match e {
                Event::IqResponse {
                    id,
                    result: IqResult::Disconnected,
                } => Some(*id),
                _ => None,
            })
            .collect();
        let expected: Vec<RequestId> = issued.iter().copied().filter(|i| *i != answered).collect();
        assert_eq!(
            disconnected, expected,
            "{what}: order of the disconnected requests"
        );
        // All of them come before the close event.
        let close_at = pair
            .events
            .iter()
            .position(|e| matches!(e, Event::Closed { .. }))
            .unwrap();
        assert!(
            pair.events[close_at..]
                .iter()
                .all(|e| !matches!(e, Event::IqResponse { .. })),
            "{what}"
        );
        assert_iq_exactly_once(&issued, &pair.events);
    }
}

#[test]
fn ids_follow_the_scheme_and_count_across_connections() {
    let config = Pair::config();
    let mut pair = logged_in(config.clone(), seeds(1));
    let mut issued = Vec::new();
    let mut wire = Vec::new();
    for _ in 0..3 {
        issued.push(pair.send_iq(query()));
        wire.push(last_iq_id(&pair));
    }
    let (prefix, first) = split_id(&wire[0]);
    for (i, (w, id)) in wire.iter().zip(&issued).enumerate() {
        let (p, n) = split_id(w);
        assert_eq!(p, prefix, "one prefix per connection");
        assert_eq!(n, first + i as u64, "consecutive counters");
        // The request id is the counter of its wire id.
        assert_eq!(id.0, n);
    }
    for w in &wire {
        let node = pair
            .server
            .received
            .iter()
            .find(|n| n.attr_str("id") == Some(w.as_str()))
            .unwrap()
            .clone();
        pair.server_send(&result_for(&node));
    }
    let last = split_id(wire.last().unwrap()).1;
    pair.socket_closed();
    let mut pair = pair.reconnect(config, [77; 32]);
    log_in(&mut pair);
    // The active IQ of the new connection took the next counter.
    let active = pair
        .server
        .received
        .iter()
        .find(|n| n.attr_str("xmlns") == Some("passive"))
        .unwrap();
    let (new_prefix, n) = split_id(active.attr_str("id").unwrap());
    assert_eq!(n, last + 1);
    let id = pair.send_iq(query());
    let (p, n) = split_id(&last_iq_id(&pair));
    assert_eq!(p, new_prefix);
    assert_eq!(n, last + 2);
    assert_eq!(id.0, n);
    issued.push(id);
    pair.close_locally();
    assert_iq_exactly_once(&issued, &pair.events);
}

#[test]
fn prefix_depends_on_the_seed() {
    let prefixes: Vec<String> = (0..6)
        .map(|n| {
            let mut pair = logged_in(Pair::config(), seeds(n));
            pair.send_iq(query());
            split_id(&last_iq_id(&pair)).0
        })
        .collect();
    let mut distinct = prefixes.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 1, "{prefixes:?}");
}

#[test]
fn not_connected_before_the_handshake_and_after_the_close() {
    let config = Pair::config();
    let clock = Clock {
        at: Instant::ZERO,
        unix_ms: BASE_UNIX_MS,
    };
    let mut machine =
        ConnectionMachine::new(config.clone(), paired_session(&config), clock, [1; 32]);
    assert_eq!(
        machine.send_iq(Instant::ZERO, query()),
        Err(SendError::NotConnected)
    );
    // Only the ClientHello went out, and no response event was promised.
    let mut n = 0;
    while let Some(out) = machine.poll_output() {
        assert!(matches!(out, amarula_core::machine::Output::Transmit(_)));
        n += 1;
    }
    assert_eq!(n, 1);

    // Open but not logged in: allowed.
    let mut pair = handshaken(config, seeds(1));
    let id = pair.send_iq(query());
    pair.close_locally();
    assert_eq!(
        pair.client.send_iq(pair.now, query()),
        Err(SendError::NotConnected)
    );
    assert_iq_exactly_once(&[id], &pair.events);
}
