//! Login of a paired device: handshake, login ClientPayload, `<success>`, the active IQ,
//! keepalive; and the handshake deadline.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{CloseReason, Event, Reconnect, Session};
use amarula_tests::harness::{BASE_UNIX_MS, Pair, Seeds, paired_credentials, success_node};

fn login() -> Pair {
    let config = Pair::config();
    let session = Session::new(paired_credentials(9), &config);
    let mut pair = Pair::new(config, session, Seeds::default());
    assert!(pair.server.is_open(), "handshake: {:?}", pair.server.error);
    pair.server_send(&success_node(BASE_UNIX_MS / 1000 + 5));
    pair
}

#[test]
fn paired_device_logs_in() {
    let pair = login();
    assert!(pair.client.is_logged_in());
    let Some(Event::LoggedIn {
        own_lid,
        server_time_offset_ms,
    }) = pair
        .events
        .iter()
        .find(|e| matches!(e, Event::LoggedIn { .. }))
    else {
        panic!("no LoggedIn: {:?}", pair.events);
    };
    assert_eq!(
        own_lid.as_ref().map(ToString::to_string).as_deref(),
        Some("123456789012345@lid")
    );
    assert_eq!(*server_time_offset_ms, 5000);
    // The own LID was new: persisted before LoggedIn.
    assert!(matches!(pair.events[0], Event::CredentialsChanged(_)));
    // The active IQ went out right after.
    let active = pair.server.last("iq").expect("active iq");
    assert_eq!(active.attr_str("xmlns"), Some("passive"));
    assert!(active.child("active").is_some());
}

#[test]
fn handshake_timeout_closes_with_backoff() {
    let config = Pair::config();
    let session = Session::new(paired_credentials(9), &config);
    let mut pair = Pair::new(config, session, Seeds::default());
    // The server never answers the login.
    pair.advance(Duration::from_secs(21));
    let closed = pair.events.iter().find_map(|e| match e {
        Event::Closed { reason, reconnect } => Some((reason, reconnect)),
        _ => None,
    });
    let (reason, reconnect) = closed.expect("closed");
    assert!(matches!(reason, CloseReason::HandshakeTimeout));
    assert!(matches!(reconnect, Reconnect::After(_)));
    assert!(pair.client.poll_timeout().is_none());
}

#[test]
fn keepalive_pings_when_idle_and_closes_when_silent() {
    let mut pair = login();
    // Answer the active IQ so nothing is pending.
    let id = pair
        .server
        .last("iq")
        .unwrap()
        .attr_str("id")
        .unwrap()
        .to_owned();
    pair.server_send(
        &Node::new("iq")
            .attr("id", id)
            .attr("type", "result")
            .attr("from", Jid::server()),
    );
    let before = pair.server.received.len();
    pair.advance(Duration::from_secs(31));
    let ping = pair
        .server
        .received_since(before)
        .iter()
        .find(|n| n.attr_str("xmlns") == Some("w:p"))
        .expect("a keepalive ping within 30 s")
        .clone();
    assert!(ping.child("ping").is_some());
    // Answered: still open.
    pair.server_send(
        &Node::new("iq")
            .attr("id", ping.attr_str("id").unwrap().to_owned())
            .attr("type", "result")
            .attr("from", Jid::server()),
    );
    // The next ping is at least 15 s away, and an answered ping closes nothing.
    pair.advance(Duration::from_secs(14));
    assert!(!pair.client.is_closed());
    // Now the server goes silent: the next ping goes unanswered.
    pair.advance(Duration::from_secs(60));
    let reason = pair.events.iter().find_map(|e| match e {
        Event::Closed { reason, reconnect } => Some((reason, *reconnect)),
        _ => None,
    });
    let (reason, reconnect) = reason.expect("closed after silence");
    assert!(
        matches!(
            reason,
            CloseReason::KeepaliveTimeout | CloseReason::DeadSocket
        ),
        "{reason:?}"
    );
    assert_eq!(reconnect, Reconnect::Now);
}
