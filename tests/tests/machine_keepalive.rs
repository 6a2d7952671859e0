//! Keepalive (SESSION.md §4): a ping only when idle (nothing received in the last 15 s, no
//! request pending), ticks at a jittered 15–30 s, and the dead-socket rule: a request went
//! out and nothing at all came back for 20 s closes with `DeadSocket` and reconnects at once;
//! any received frame disarms it.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{CloseReason, Config, IqRequest, IqResult, Reconnect};
use amarula_core::time::Instant;
use amarula_tests::expect::{
    assert_iq_exactly_once, closed, iq_result, logged_in, result_for, seeds,
};
use amarula_tests::harness::Pair;

fn is_ping(n: &Node) -> bool {
    n.tag == "iq" && n.attr_str("xmlns") == Some("w:p")
}

fn pings_since(pair: &Pair, from: usize) -> Vec<Node> {
    pair.server
        .received_since(from)
        .iter()
        .filter(|n| is_ping(n))
        .cloned()
        .collect()
}

/// The next keepalive tick: with nothing pending it is the only armed timer.
fn next_tick(pair: &Pair) -> Instant {
    pair.client
        .poll_timeout()
        .expect("a keepalive tick is armed")
}

fn heartbeat() -> Node {
    Node::new("ib").children([Node::new("thread_metadata")])
}

#[test]
fn idle_connection_pings_and_the_ping_has_its_shape() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let before = pair.server.received.len();
    let tick = next_tick(&pair);
    pair.step_until(tick);
    let pings = pings_since(&pair, before);
    assert_eq!(pings.len(), 1, "{:?}", pair.server.received_since(before));
    let p = &pings[0];
    assert_eq!(p.attr_str("type"), Some("get"));
    assert_eq!(p.attr_jid("to"), Some(&Jid::server()));
    assert!(p.attr_str("id").is_some());
    // Answered: nothing closes, and the next tick pings again.
    pair.server_send(&result_for(p));
    let before = pair.server.received.len();
    let next = next_tick(&pair);
    assert!(next - tick >= Duration::from_secs(15));
    pair.step_until(next);
    assert!(!pair.client.is_closed(), "{:?}", pair.events);
    assert_eq!(pings_since(&pair, before).len(), 1);
}

#[test]
fn no_ping_when_data_arrived_recently() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let tick = next_tick(&pair);
    pair.advance(tick - pair.now - Duration::from_secs(5));
    pair.server_send(&heartbeat());
    let before = pair.server.received.len();
    pair.step_until(tick);
    assert!(
        pings_since(&pair, before).is_empty(),
        "pinged 5 s after data"
    );
    // The tick after that is ≥ 15 s later, so ≥ 20 s after the data: a ping then.
    let next = next_tick(&pair);
    assert!(next - tick >= Duration::from_secs(15));
    pair.step_until(next);
    assert_eq!(pings_since(&pair, before).len(), 1);
}

#[test]
fn data_exactly_15_seconds_ago_is_idle() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let tick = next_tick(&pair);
    pair.advance(tick - pair.now - Duration::from_secs(15));
    pair.server_send(&heartbeat());
    let before = pair.server.received.len();
    pair.step_until(tick);
    assert_eq!(pings_since(&pair, before).len(), 1);
}

#[test]
fn no_ping_while_a_request_is_pending() {
    // The dead-socket rule would end this connection first; move it out of the way.
    let config = Config {
        dead_socket_timeout: Duration::from_secs(3600),
        ..Pair::config()
    };
    let mut pair = logged_in(config, seeds(1));
    let id = pair.send_iq(IqRequest::iq("w", "get", Jid::server(), vec![]));
    let before = pair.server.received.len();
    // Several ticks pass while the request waits for its 75 s timeout.
    pair.advance(Duration::from_secs(74));
    assert!(
        pings_since(&pair, before).is_empty(),
        "pinged with a request pending"
    );
    assert!(!pair.client.is_closed());
    pair.advance(Duration::from_secs(1));
    assert_eq!(iq_result(&pair.events, id), Some(&IqResult::Timeout));
    // Idle again: the next tick pings.
    pair.advance(Duration::from_secs(30));
    assert_eq!(pings_since(&pair, before).len(), 1);
    pair.close_locally();
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn interval_is_jittered_within_15_to_30_seconds() {
    let mut intervals = Vec::new();
    for n in 0..10 {
        let mut pair = logged_in(Pair::config(), seeds(n));
        let mut last = pair.now;
        for _ in 0..4 {
            let tick = next_tick(&pair);
            let d = tick - last;
            assert!(
                (Duration::from_secs(15)..=Duration::from_secs(30)).contains(&d),
                "seed {n}: interval {d:?}"
            );
            intervals.push(d);
            pair.step_until(tick);
            // Answer the ping so the next tick is again the only timer.
            if let Some(p) = pair.server.received.last().filter(|p| is_ping(p)).cloned() {
                pair.server_send(&result_for(&p));
            }
            last = tick;
        }
    }
    intervals.sort();
    intervals.dedup();
    assert!(intervals.len() >= 10, "too little jitter: {intervals:?}");
}

#[test]
fn dead_socket_closes_and_reconnects_now() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(IqRequest::iq("w", "get", Jid::server(), vec![]));
    pair.advance(Duration::from_millis(19_999));
    assert!(!pair.client.is_closed());
    pair.advance(Duration::from_millis(1));
    let (reason, reconnect) = closed(&pair.events).expect("closed");
    assert!(matches!(reason, CloseReason::DeadSocket), "{reason:?}");
    assert_eq!(reconnect, Reconnect::Now);
    assert_eq!(iq_result(&pair.events, id), Some(&IqResult::Disconnected));
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn any_frame_disarms_the_dead_socket_rule() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let first = pair.send_iq(IqRequest::iq("w", "get", Jid::server(), vec![]));
    pair.advance(Duration::from_secs(10));
    // Anything at all, even a stanza for the application.
    pair.server_send(&heartbeat());
    pair.advance(Duration::from_secs(30));
    assert!(!pair.client.is_closed(), "{:?}", pair.events);
    // A new request arms it again, from its own send time.
    let second = pair.send_iq(IqRequest::iq("w", "get", Jid::server(), vec![]));
    pair.advance(Duration::from_millis(19_999));
    assert!(!pair.client.is_closed());
    pair.advance(Duration::from_millis(1));
    let (reason, _) = closed(&pair.events).expect("closed");
    assert!(matches!(reason, CloseReason::DeadSocket), "{reason:?}");
    assert_iq_exactly_once(&[first, second], &pair.events);
}

#[test]
fn an_undecodable_frame_also_disarms_it() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(IqRequest::iq("w", "get", Jid::server(), vec![]));
    pair.advance(Duration::from_secs(10));
    // Decrypts, but is not a node: still proof that the socket is alive.
    pair.server.send_plaintext(&[0, 0xff, 0xff]);
    pair.drive();
    pair.advance(Duration::from_secs(15));
    assert!(!pair.client.is_closed(), "{:?}", pair.events);
    pair.close_locally();
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn unanswered_ping_with_a_silent_server_reconnects_now() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let tick = next_tick(&pair);
    pair.step_until(tick);
    pair.advance(Duration::from_secs(20));
    let (reason, reconnect) = closed(&pair.events).expect("closed");
    assert!(
        matches!(
            reason,
            CloseReason::DeadSocket | CloseReason::KeepaliveTimeout
        ),
        "{reason:?}"
    );
    assert_eq!(reconnect, Reconnect::Now);
}
