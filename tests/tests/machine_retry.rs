//! Retry receipts for messages we relayed (SESSION.md §7.2): the requesting device, its count
//! and the cached context come out as `RetryRequested`, and the receipt is acked; each device
//! is answered up to the limit, then `LimitReached`; unknown, evicted and expired ids are
//! rejected; the cache survives a reconnect and is refilled by `Session::restore_sent`.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{Config, Event, RetryRejection, RetryRequest, SentMessage};
use amarula_tests::expect::{log_in, logged_in, paired_session, seeds};
use amarula_tests::harness::{BASE_UNIX_MS, Pair, Seeds};
use bytes::Bytes;

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn outgoing(id: &str, to: &Jid) -> Node {
    Node::new("message")
        .attr("id", id.to_owned())
        .attr("to", to.clone())
        .attr("type", "text")
        .children([Node::new("enc").attr("v", "2").attr("type", "msg")])
}

/// `<receipt type=retry id from [participant]><retry count id t v/><registration/></receipt>`.
fn retry(id: &str, from: &Jid, participant: Option<&Jid>, count: u8) -> Node {
    let mut n = Node::new("receipt")
        .attr("id", id.to_owned())
        .attr("from", from.clone());
    if let Some(p) = participant {
        n = n.attr("participant", p.clone());
    }
    n.attr("type", "retry").attr("t", "1750000001").children([
        Node::new("retry")
            .attr("count", count.to_string())
            .attr("id", id.to_owned())
            .attr("t", "1750000000")
            .attr("v", "1"),
        Node::new("registration").bytes(vec![0, 0, 4, 210]),
    ])
}

/// What the retry receipts since `seen` gave: `Ok(request)` or `Err(rejection)`.
fn outcomes(pair: &Pair, seen: usize) -> Vec<Result<RetryRequest, RetryRejection>> {
    pair.events_since(seen)
        .iter()
        .filter_map(|e| match e {
            Event::RetryRequested(r) => Some(Ok(RetryRequest::clone(r))),
            Event::RetryRejected { reason, .. } => Some(Err(*reason)),
            _ => None,
        })
        .collect()
}

/// Sends a retry receipt; returns its one outcome.
fn ask(pair: &mut Pair, receipt: &Node) -> Result<RetryRequest, RetryRejection> {
    let seen = pair.events.len();
    pair.server_send(receipt);
    let mut got = outcomes(pair, seen);
    assert_eq!(got.len(), 1, "{:?}", pair.events_since(seen));
    got.remove(0)
}

#[test]
fn retry_is_requested_with_the_cached_context_and_acked() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let peer = jid("15556667777@s.whatsapp.net");
    let device = jid("15556667777:3@s.whatsapp.net");
    pair.relay(outgoing("M1", &peer), Bytes::from_static(b"ctx-1"))
        .unwrap();
    let before = pair.server.received.len();
    let receipt = retry("M1", &device, None, 1);
    let r = ask(&mut pair, &receipt).unwrap();
    assert_eq!(r.id, "M1");
    assert_eq!(r.requester, device);
    assert_eq!(r.count, 1);
    assert_eq!(r.message.id, "M1");
    assert_eq!(r.message.to, peer);
    assert_eq!(&r.message.context[..], b"ctx-1");
    assert!(r.receipt.child("registration").is_some());
    let sent: Vec<String> = pair
        .server
        .received_since(before)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        sent,
        ["<ack class=\"receipt\" id=\"M1\" to=\"15556667777:3@s.whatsapp.net\" type=\"retry\"/>"]
    );
}

#[test]
fn participant_is_the_requester_in_groups() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let group = jid("120363000000000001@g.us");
    let device = jid("15556667777:2@s.whatsapp.net");
    pair.relay(outgoing("G1", &group), Bytes::from_static(b"g"))
        .unwrap();
    let before = pair.server.received.len();
    let r = ask(&mut pair, &retry("G1", &group, Some(&device), 2)).unwrap();
    assert_eq!(r.requester, device);
    assert_eq!(r.count, 2);
    let ack = &pair.server.received_since(before)[0];
    assert_eq!(ack.attr_jid("to"), Some(&group));
    assert_eq!(ack.attr_jid("participant"), Some(&device));
}

#[test]
fn each_device_is_answered_up_to_the_limit() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let peer = jid("15556667777@s.whatsapp.net");
    let d1 = jid("15556667777:1@s.whatsapp.net");
    let d2 = jid("15556667777:2@s.whatsapp.net");
    pair.relay(outgoing("M1", &peer), Bytes::new()).unwrap();
    for count in 1..=5 {
        let r = ask(&mut pair, &retry("M1", &d1, None, count)).unwrap();
        assert_eq!(r.count, count);
    }
    let before = pair.server.received.len();
    assert_eq!(
        ask(&mut pair, &retry("M1", &d1, None, 6)).unwrap_err(),
        RetryRejection::LimitReached
    );
    // Refused, but still acked.
    assert_eq!(pair.server.received_since(before).len(), 1);
    // Another device has its own count.
    assert!(ask(&mut pair, &retry("M1", &d2, None, 1)).is_ok());
    assert_eq!(
        ask(&mut pair, &retry("M1", &d1, None, 7)).unwrap_err(),
        RetryRejection::LimitReached
    );
}

#[test]
fn limit_follows_the_config() {
    let config = Config {
        max_retries: 2,
        ..Pair::config()
    };
    let mut pair = logged_in(config, seeds(1));
    let peer = jid("15556667777@s.whatsapp.net");
    let d1 = jid("15556667777:1@s.whatsapp.net");
    pair.relay(outgoing("M1", &peer), Bytes::new()).unwrap();
    assert!(ask(&mut pair, &retry("M1", &d1, None, 1)).is_ok());
    assert!(ask(&mut pair, &retry("M1", &d1, None, 2)).is_ok());
    assert_eq!(
        ask(&mut pair, &retry("M1", &d1, None, 3)).unwrap_err(),
        RetryRejection::LimitReached
    );
}

#[test]
fn unknown_id_is_rejected() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let d1 = jid("15556667777:1@s.whatsapp.net");
    let before = pair.server.received.len();
    let seen = pair.events.len();
    pair.server_send(&retry("NEVER", &d1, None, 1));
    assert!(matches!(
        pair.events_since(seen).first(),
        Some(Event::RetryRejected { id, requester, reason: RetryRejection::Unknown })
            if id == "NEVER" && *requester == d1
    ));
    assert_eq!(pair.server.received_since(before).len(), 1, "acked anyway");
}

#[test]
fn evicted_id_is_unknown() {
    let config = Config {
        retry_cache_size: 2,
        ..Pair::config()
    };
    let mut pair = logged_in(config, seeds(1));
    let peer = jid("15556667777@s.whatsapp.net");
    let d1 = jid("15556667777:1@s.whatsapp.net");
    for id in ["M1", "M2", "M3"] {
        pair.relay(outgoing(id, &peer), Bytes::new()).unwrap();
    }
    assert_eq!(
        ask(&mut pair, &retry("M1", &d1, None, 1)).unwrap_err(),
        RetryRejection::Unknown
    );
    assert!(ask(&mut pair, &retry("M2", &d1, None, 1)).is_ok());
    assert!(ask(&mut pair, &retry("M3", &d1, None, 1)).is_ok());
}

#[test]
fn old_message_is_expired() {
    let config = Config {
        retry_cache_age: Duration::from_secs(10),
        ..Pair::config()
    };
    let mut pair = logged_in(config, seeds(1));
    let peer = jid("15556667777@s.whatsapp.net");
    let d1 = jid("15556667777:1@s.whatsapp.net");
    pair.relay(outgoing("M1", &peer), Bytes::new()).unwrap();
    pair.relay(outgoing("M2", &peer), Bytes::new()).unwrap();
    pair.server_send(
        &Node::new("ack")
            .attr("class", "message")
            .attr("id", "M1")
            .attr("from", peer),
    );
    pair.advance(Duration::from_secs(10));
    // Exactly the age limit: still answered.
    assert!(ask(&mut pair, &retry("M1", &d1, None, 1)).is_ok());
    pair.advance(Duration::from_millis(1));
    assert_eq!(
        ask(&mut pair, &retry("M2", &d1, None, 1)).unwrap_err(),
        RetryRejection::Expired
    );
}

#[test]
fn expired_after_a_long_break_between_connections() {
    let config = Pair::config();
    let mut pair = logged_in(config.clone(), seeds(1));
    let peer = jid("15556667777@s.whatsapp.net");
    let d1 = jid("15556667777:1@s.whatsapp.net");
    pair.relay(outgoing("M1", &peer), Bytes::new()).unwrap();
    pair.socket_closed();
    pair.advance(Duration::from_secs(16 * 60));
    let mut pair = pair.reconnect(config, [5; 32]);
    log_in(&mut pair);
    assert_eq!(
        ask(&mut pair, &retry("M1", &d1, None, 1)).unwrap_err(),
        RetryRejection::Expired
    );
}

#[test]
fn cache_survives_a_reconnect() {
    let config = Pair::config();
    let mut pair = logged_in(config.clone(), seeds(1));
    let peer = jid("15556667777@s.whatsapp.net");
    let d1 = jid("15556667777:1@s.whatsapp.net");
    pair.relay(outgoing("M1", &peer), Bytes::from_static(b"ctx"))
        .unwrap();
    assert!(ask(&mut pair, &retry("M1", &d1, None, 1)).is_ok());
    pair.socket_closed();
    let mut pair = pair.reconnect(config, [5; 32]);
    log_in(&mut pair);
    let r = ask(&mut pair, &retry("M1", &d1, None, 2)).unwrap();
    assert_eq!(&r.message.context[..], b"ctx");
    // The counts carry over too: three more, then the limit.
    for count in 3..=5 {
        assert!(ask(&mut pair, &retry("M1", &d1, None, count)).is_ok());
    }
    assert_eq!(
        ask(&mut pair, &retry("M1", &d1, None, 6)).unwrap_err(),
        RetryRejection::LimitReached
    );
}

#[test]
fn restored_messages_are_answered() {
    let config = Pair::config();
    let mut session = paired_session(&config);
    let peer = jid("15556667777@s.whatsapp.net");
    session.restore_sent([
        SentMessage {
            id: "STORED1".into(),
            to: peer.clone(),
            kind: "text".into(),
            context: Bytes::from_static(b"from the store"),
            sent_unix_ms: BASE_UNIX_MS - 60_000,
        },
        SentMessage {
            id: "STORED2".into(),
            to: peer,
            kind: "media".into(),
            context: Bytes::new(),
            sent_unix_ms: BASE_UNIX_MS - 3_600_000,
        },
    ]);
    let mut pair = Pair::new(config, session, Seeds::default());
    log_in(&mut pair);
    let d1 = jid("15556667777:1@s.whatsapp.net");
    let r = ask(&mut pair, &retry("STORED1", &d1, None, 1)).unwrap();
    assert_eq!(&r.message.context[..], b"from the store");
    // Restored, but older than the cache's age limit.
    assert_eq!(
        ask(&mut pair, &retry("STORED2", &d1, None, 1)).unwrap_err(),
        RetryRejection::Expired
    );
}

#[test]
fn malformed_receipt_is_rejected() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let d1 = jid("15556667777:1@s.whatsapp.net");
    // No id anywhere.
    let node = Node::new("receipt")
        .attr("from", d1)
        .attr("type", "retry")
        .children([Node::new("retry").attr("count", "1")]);
    assert_eq!(
        ask(&mut pair, &node).unwrap_err(),
        RetryRejection::Malformed
    );
}
