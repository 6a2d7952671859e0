//! Shared assertions and set-ups of the machine behaviour tests: the exactly-once rules of IQs
//! and relayed messages, a logged-in [`Pair`], and small readers of the event list.

use std::collections::HashMap;
use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{
    CloseReason, Config, Event, IqResult, MessageAckResult, Reconnect, RequestId, Session,
};

use crate::harness::{BASE_UNIX_MS, Pair, Seeds, paired_credentials, success_node};

/// Checks the IQ rule: every id in `issued` has exactly one [`Event::IqResponse`] in `events`,
/// and no response names an id that was not issued.
///
/// # Panics
/// When the rule is broken (naming the id and how many responses it got).
pub fn assert_iq_exactly_once(issued: &[RequestId], events: &[Event]) {
    let mut counts: HashMap<RequestId, usize> = issued.iter().map(|id| (*id, 0)).collect();
    assert_eq!(
        counts.len(),
        issued.len(),
        "an id was issued twice: {issued:?}"
    );
    for e in events {
        if let Event::IqResponse { id, .. } = e {
            match counts.get_mut(id) {
                Some(n) => *n += 1,
                None => panic!("response for {id}, which was never issued"),
            }
        }
    }
    for id in issued {
        let n = counts[id];
        assert_eq!(n, 1, "request {id} got {n} responses, not exactly one");
    }
}

/// Checks the message rule: every id in `relayed` has exactly one [`Event::MessageAck`] in
/// `events`, and no ack names an id that was not relayed.
///
/// # Panics
/// When the rule is broken.
pub fn assert_message_ack_exactly_once(relayed: &[&str], events: &[Event]) {
    let mut counts: HashMap<&str, usize> = relayed.iter().map(|id| (*id, 0)).collect();
    for e in events {
        if let Event::MessageAck { id, .. } = e {
            match counts.get_mut(id.as_str()) {
                Some(n) => *n += 1,
                None => panic!("message ack for {id}, which was never relayed"),
            }
        }
    }
    for id in relayed {
        let n = counts[id];
        assert_eq!(n, 1, "message {id} got {n} acks, not exactly one");
    }
}

/// The session of the paired test device, with `config`'s cache settings.
pub fn paired_session(config: &Config) -> Session {
    Session::new(paired_credentials(9), config)
}

/// A connection of the paired test device after the handshake, before `<success>`.
///
/// # Panics
/// When the handshake fails.
pub fn handshaken(config: Config, seeds: Seeds) -> Pair {
    let session = paired_session(&config);
    let pair = Pair::new(config, session, seeds);
    assert!(pair.server.is_open(), "handshake: {:?}", pair.server.error);
    pair
}

/// Sends `<success>` and answers the active IQ, so nothing is pending afterwards.
///
/// # Panics
/// When the machine does not log in.
pub fn log_in(pair: &mut Pair) {
    pair.server_send(&success_node(BASE_UNIX_MS / 1000));
    assert!(
        pair.client.is_logged_in(),
        "not logged in: {:?}",
        pair.events
    );
    let active = pair
        .server
        .received
        .iter()
        .rev()
        .find(|n| n.tag == "iq" && n.attr_str("xmlns") == Some("passive"))
        .expect("the active IQ")
        .clone();
    pair.server_send(&result_for(&active));
}

/// A logged-in connection with nothing pending, at the current virtual time of `seeds`' run.
pub fn logged_in(config: Config, seeds: Seeds) -> Pair {
    let mut pair = handshaken(config, seeds);
    log_in(&mut pair);
    pair
}

/// Seeds whose client seed is `n` repeated.
pub fn seeds(n: u8) -> Seeds {
    Seeds {
        client: [n; 32],
        ..Seeds::default()
    }
}

/// `<iq id=<its id> type=result from=s.whatsapp.net/>`, the server's answer to `iq`.
///
/// # Panics
/// When `iq` has no id.
pub fn result_for(iq: &Node) -> Node {
    Node::new("iq")
        .attr("id", iq.attr_str("id").expect("iq id").to_owned())
        .attr("type", "result")
        .attr("from", Jid::server())
}

/// The wire id of the last IQ the server received.
///
/// # Panics
/// When there is none.
pub fn last_iq_id(pair: &Pair) -> String {
    pair.server
        .last("iq")
        .and_then(|n| n.attr_str("id"))
        .expect("an iq was sent")
        .to_owned()
}

/// The close event: its reason and the reconnect decision.
pub fn closed(events: &[Event]) -> Option<(&CloseReason, Reconnect)> {
    events.iter().find_map(|e| match e {
        Event::Closed { reason, reconnect } => Some((reason, *reconnect)),
        _ => None,
    })
}

/// How many close events there are (the machine emits at most one).
pub fn close_count(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Closed { .. }))
        .count()
}

/// The result of request `id`, when it has one.
pub fn iq_result(events: &[Event], id: RequestId) -> Option<&IqResult> {
    events.iter().find_map(|e| match e {
        Event::IqResponse { id: i, result } if *i == id => Some(result),
        _ => None,
    })
}

/// The ack result of relayed message `id`, when it has one.
pub fn message_ack<'a>(events: &'a [Event], id: &str) -> Option<&'a MessageAckResult> {
    events.iter().find_map(|e| match e {
        Event::MessageAck { id: i, result } if i == id => Some(result),
        _ => None,
    })
}

/// Whether `d` is the Fibonacci backoff of the `attempt`-th consecutive failure (1, 1, 2, 3,
/// 5, 8 … s, capped at `cap`) within ±10 %.
pub fn is_backoff(d: Duration, attempt: u32, cap: Duration) -> bool {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 0..attempt {
        (a, b) = (b, a + b);
    }
    let base = Duration::from_secs(a).min(cap);
    let (lo, hi) = (base.mul_f64(0.9), base.mul_f64(1.1).min(cap));
    lo <= d && d <= hi
}

/// Advances virtual time by `d` in steps of at most 10 s, the server sending a harmless
/// `<ib/>` stanza after each step, so the dead-socket and keepalive rules stay quiet while
/// long timeouts run out.
pub fn advance_with_traffic(pair: &mut Pair, d: Duration) {
    let step = Duration::from_secs(10);
    let mut left = d;
    while left > Duration::ZERO {
        let now = step.min(left);
        pair.advance(now);
        left -= now;
        if !pair.client.is_closed() && left > Duration::ZERO {
            pair.server_send(&Node::new("ib").children([Node::new("thread_metadata")]));
        }
    }
}
