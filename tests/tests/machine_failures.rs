//! How a connection ends (SESSION.md §1.2–§1.6): every `<failure reason>`, every
//! `<stream:error>` form, `<xmlstreamend/>`, `<ib><downgrade_webclient/></ib>` and a socket
//! close give the right [`CloseReason`] and [`Reconnect`] decision; pending IQs end as
//! disconnected; the Fibonacci backoff grows across consecutive failures carried by the
//! session, resets at `<success>`, and is lengthened by rate limiting.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{CloseReason, Config, Event, IqRequest, IqResult, Reconnect};
use amarula_tests::expect::{
    assert_iq_exactly_once, close_count, closed, handshaken, is_backoff, log_in, logged_in, seeds,
};
use amarula_tests::harness::Pair;

const CAP: Duration = Duration::from_secs(900);

/// What a close should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Now,
    /// Backoff of this attempt number.
    Backoff(u32),
    Never,
}

fn check_reconnect(reconnect: Reconnect, want: Want, what: &str) {
    match (want, reconnect) {
        (Want::Now, Reconnect::Now) | (Want::Never, Reconnect::Never) => {}
        (Want::Backoff(n), Reconnect::After(d)) => {
            assert!(is_backoff(d, n, CAP), "{what}: {d:?} is not backoff #{n}");
        }
        _ => panic!("{what}: reconnect {reconnect:?}, want {want:?}"),
    }
}

/// Sends one IQ, then `node` from the server; checks the close, that the IQ ended as
/// disconnected, and that nothing follows the close.
fn close_with(mut pair: Pair, node: &Node) -> Pair {
    let id = pair.send_iq(IqRequest::iq("w", "get", Jid::server(), vec![]));
    pair.server_send(node);
    assert!(
        pair.client.is_closed(),
        "{node} did not close: {:?}",
        pair.events
    );
    assert_eq!(close_count(&pair.events), 1);
    assert_iq_exactly_once(&[id], &pair.events);
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::IqResponse { id: i, result: IqResult::Disconnected } if *i == id
    )));
    // The close is the last event, and no timer is left.
    assert!(matches!(pair.events.last(), Some(Event::Closed { .. })));
    assert_eq!(pair.client.poll_timeout(), None);
    pair
}

fn failure(reason: &str) -> Node {
    Node::new("failure").attr("reason", reason.to_owned())
}

fn stream_error(code: Option<&str>, child: Option<Node>) -> Node {
    let mut n = Node::new("stream:error");
    if let Some(c) = code {
        n = n.attr("code", c.to_owned());
    }
    if let Some(c) = child {
        n = n.children([c]);
    }
    n
}

fn conflict(kind: &str) -> Node {
    Node::new("conflict").attr("type", kind.to_owned())
}

#[test]
fn every_failure_reason() {
    type Check = fn(&CloseReason) -> bool;
    let cases: [(&str, Check, Want); 11] = [
        (
            "400",
            |r| matches!(r, CloseReason::Failure { code: 400, .. }),
            Want::Never,
        ),
        (
            "401",
            |r| matches!(r, CloseReason::LoggedOut { code: 401 }),
            Want::Never,
        ),
        (
            "403",
            |r| matches!(r, CloseReason::LoggedOut { code: 403 }),
            Want::Never,
        ),
        (
            "405",
            |r| matches!(r, CloseReason::ClientOutdated),
            Want::Never,
        ),
        (
            "406",
            |r| matches!(r, CloseReason::LoggedOut { code: 406 }),
            Want::Never,
        ),
        (
            "409",
            |r| matches!(r, CloseReason::Failure { code: 409, .. }),
            Want::Never,
        ),
        (
            "415",
            |r| matches!(r, CloseReason::Failure { code: 415, .. }),
            Want::Never,
        ),
        (
            "418",
            |r| matches!(r, CloseReason::Failure { code: 418, .. }),
            Want::Never,
        ),
        (
            "500",
            |r| matches!(r, CloseReason::ServiceUnavailable { code: 500 }),
            Want::Backoff(0),
        ),
        (
            "501",
            |r| matches!(r, CloseReason::Failure { code: 501, .. }),
            Want::Never,
        ),
        (
            "503",
            |r| matches!(r, CloseReason::ServiceUnavailable { code: 503 }),
            Want::Backoff(0),
        ),
    ];
    for (reason, check, want) in cases {
        let pair = close_with(handshaken(Pair::config(), seeds(1)), &failure(reason));
        let (got, reconnect) = closed(&pair.events).unwrap();
        assert!(check(got), "failure {reason}: {got:?}");
        check_reconnect(reconnect, want, &format!("failure {reason}"));
        let logged_out = ["401", "403", "406"].contains(&reason);
        assert_eq!(
            got.is_logged_out(),
            logged_out,
            "failure {reason}: is_logged_out"
        );
    }
}

#[test]
fn failure_message_is_kept() {
    let node = failure("418").attr("message", "client unknown");
    let pair = close_with(handshaken(Pair::config(), seeds(1)), &node);
    let (reason, _) = closed(&pair.events).unwrap();
    assert!(
        matches!(reason, CloseReason::Failure { code: 418, message: Some(m) } if m == "client unknown"),
        "{reason:?}"
    );
}

#[test]
fn temporary_ban_carries_code_and_expiry() {
    let node = failure("402").attr("code", "101").attr("expire", "3600");
    let pair = close_with(handshaken(Pair::config(), seeds(1)), &node);
    let (reason, reconnect) = closed(&pair.events).unwrap();
    assert!(
        matches!(
            reason,
            CloseReason::TemporaryBan { code: Some(101), expire: Some(d) }
                if *d == Duration::from_secs(3600)
        ),
        "{reason:?}"
    );
    assert_eq!(reconnect, Reconnect::Never);
    assert!(!reason.is_logged_out());
    // Without the details.
    let pair = close_with(handshaken(Pair::config(), seeds(1)), &failure("402"));
    let (reason, _) = closed(&pair.events).unwrap();
    assert!(matches!(
        reason,
        CloseReason::TemporaryBan {
            code: None,
            expire: None
        }
    ));
}

#[test]
fn every_stream_error_form() {
    type Check = fn(&CloseReason) -> bool;
    let cases: Vec<(&str, Node, Check, Want, bool)> = vec![
        (
            "515",
            stream_error(Some("515"), None),
            |r| matches!(r, CloseReason::RestartRequired),
            Want::Now,
            false,
        ),
        (
            "516",
            stream_error(Some("516"), None),
            |r| matches!(r, CloseReason::LoggedOut { code: 516 }),
            Want::Never,
            true,
        ),
        (
            "401 device_removed",
            stream_error(Some("401"), Some(conflict("device_removed"))),
            |r| matches!(r, CloseReason::LoggedOut { code: 401 }),
            Want::Never,
            true,
        ),
        (
            "401 bare",
            stream_error(Some("401"), None),
            |r| matches!(r, CloseReason::LoggedOut { code: 401 }),
            Want::Never,
            true,
        ),
        (
            "replaced without code",
            stream_error(None, Some(conflict("replaced"))),
            |r| matches!(r, CloseReason::Replaced),
            Want::Never,
            false,
        ),
        (
            "409",
            stream_error(Some("409"), None),
            |r| matches!(r, CloseReason::Replaced),
            Want::Never,
            false,
        ),
        (
            "429",
            stream_error(Some("429"), None),
            |r| matches!(r, CloseReason::RateLimited),
            // Rate limiting adds 5 to the failure count: the first one waits like the sixth.
            Want::Backoff(5),
            false,
        ),
        (
            "503",
            stream_error(Some("503"), None),
            |r| matches!(r, CloseReason::ServiceUnavailable { code: 503 }),
            Want::Backoff(0),
            false,
        ),
        (
            "unknown code",
            stream_error(Some("599"), None),
            |r| {
                matches!(
                    r,
                    CloseReason::StreamError {
                        code: Some(599),
                        condition: None
                    }
                )
            },
            Want::Backoff(0),
            false,
        ),
        (
            "ack child",
            stream_error(None, Some(Node::new("ack").attr("id", "x"))),
            |r| matches!(r, CloseReason::StreamError { code: None, condition: Some(c) } if c == "ack"),
            Want::Backoff(0),
            false,
        ),
        (
            "xmlstreamend",
            Node::new("xmlstreamend"),
            |r| matches!(r, CloseReason::ServerClosedStream),
            Want::Backoff(0),
            false,
        ),
        (
            "downgrade_webclient",
            Node::new("ib").children([Node::new("downgrade_webclient")]),
            |r| matches!(r, CloseReason::MultideviceMismatch),
            Want::Never,
            false,
        ),
    ];
    for (what, node, check, want, logged_out) in cases {
        // Stream errors come on a logged-in connection.
        let pair = close_with(logged_in(Pair::config(), seeds(1)), &node);
        assert!(!pair.client.is_logged_in());
        let (got, reconnect) = closed(&pair.events).unwrap();
        assert!(check(got), "{what}: {got:?}");
        check_reconnect(reconnect, want, what);
        assert_eq!(got.is_logged_out(), logged_out, "{what}: is_logged_out");
    }
}

#[test]
fn socket_close_backs_off() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(IqRequest::iq("w", "get", Jid::server(), vec![]));
    pair.socket_closed();
    let (reason, reconnect) = closed(&pair.events).unwrap();
    assert!(matches!(reason, CloseReason::SocketClosed));
    check_reconnect(reconnect, Want::Backoff(0), "socket close");
    assert_iq_exactly_once(&[id], &pair.events);
    // Reported again: nothing more.
    pair.socket_closed();
    assert_eq!(close_count(&pair.events), 1);
}

#[test]
fn local_close_never_reconnects() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let id = pair.send_iq(IqRequest::iq("w", "get", Jid::server(), vec![]));
    pair.close_locally();
    let (reason, reconnect) = closed(&pair.events).unwrap();
    assert!(matches!(reason, CloseReason::Local));
    assert_eq!(reconnect, Reconnect::Never);
    assert_iq_exactly_once(&[id], &pair.events);
}

#[test]
fn jitter_varies_with_the_seed() {
    let mut delays = Vec::new();
    for n in 0..8 {
        let mut pair = logged_in(Pair::config(), seeds(n));
        pair.socket_closed();
        let Some((_, Reconnect::After(d))) = closed(&pair.events) else {
            panic!("no backoff")
        };
        assert!(is_backoff(d, 0, CAP), "{d:?}");
        delays.push(d);
    }
    delays.sort();
    delays.dedup();
    assert!(delays.len() > 1, "the jitter never varies: {delays:?}");
}

/// The delay of the close that ended `pair` (which must be a backoff).
fn delay(pair: &Pair) -> Duration {
    let closes: Vec<Reconnect> = pair
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Closed { reconnect, .. } => Some(*reconnect),
            _ => None,
        })
        .collect();
    match closes.last() {
        Some(Reconnect::After(d)) => *d,
        other => panic!("last close: {other:?}"),
    }
}

#[test]
fn backoff_grows_across_failures_and_resets_at_login() {
    let config = Pair::config();
    let mut pair = handshaken(config.clone(), seeds(1));
    // Six consecutive failed attempts (socket closes before login).
    for attempt in 0..6u32 {
        pair.socket_closed();
        let d = delay(&pair);
        assert!(is_backoff(d, attempt, CAP), "attempt {attempt}: {d:?}");
        pair.advance(d);
        pair = pair.reconnect(config.clone(), [10 + attempt as u8; 32]);
        assert!(pair.server.is_open());
    }
    // The seventh: fib(6) = 13 s, whatever the close reason of the backoff kind.
    pair.server_send(&failure("503"));
    assert!(is_backoff(delay(&pair), 6, CAP), "{:?}", delay(&pair));
    // A login resets the count.
    pair = pair.reconnect(config.clone(), [30; 32]);
    log_in(&mut pair);
    pair.socket_closed();
    assert!(is_backoff(delay(&pair), 0, CAP), "{:?}", delay(&pair));
    // And it counts again from there.
    pair = pair.reconnect(config, [31; 32]);
    pair.socket_closed();
    assert!(is_backoff(delay(&pair), 1, CAP), "{:?}", delay(&pair));
}

#[test]
fn restart_required_does_not_count_as_a_failure() {
    let config = Pair::config();
    let mut pair = handshaken(config.clone(), seeds(1));
    pair.socket_closed();
    assert!(is_backoff(delay(&pair), 0, CAP));
    pair = pair.reconnect(config.clone(), [2; 32]);
    pair.server_send(&stream_error(Some("515"), None));
    assert_eq!(
        closed(&pair.events[pair.events.len() - 1..]).unwrap().1,
        Reconnect::Now
    );
    pair = pair.reconnect(config, [3; 32]);
    pair.socket_closed();
    assert!(is_backoff(delay(&pair), 1, CAP), "{:?}", delay(&pair));
}

#[test]
fn rate_limiting_lengthens_the_backoff() {
    let config = Pair::config();
    let mut pair = handshaken(config.clone(), seeds(1));
    pair.socket_closed();
    assert!(is_backoff(delay(&pair), 0, CAP));
    pair = pair.reconnect(config.clone(), [2; 32]);
    // Second failure, rate limited: counts as attempt 1 + 5.
    pair.server_send(&stream_error(Some("429"), None));
    let d = delay(&pair);
    assert!(is_backoff(d, 6, CAP), "{d:?}");
    assert!(d >= Duration::from_millis(11_700));
    // The next plain failure goes on from there (1 + 6 = 7: fib 21 s).
    pair = pair.reconnect(config, [3; 32]);
    pair.socket_closed();
    assert!(is_backoff(delay(&pair), 7, CAP), "{:?}", delay(&pair));
}

#[test]
fn backoff_is_capped() {
    let config = Config {
        max_backoff: Duration::from_secs(10),
        ..Pair::config()
    };
    let mut pair = handshaken(config.clone(), seeds(1));
    for n in 0..12u8 {
        pair.socket_closed();
        pair = pair.reconnect(config.clone(), [40 + n; 32]);
    }
    pair.socket_closed();
    let d = delay(&pair);
    assert!(d <= Duration::from_secs(10), "{d:?}");
    assert!(d >= Duration::from_secs(9), "{d:?}");
}
