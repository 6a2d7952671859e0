//! Presence and the push name through the machine (MESSAGES.md §8, SESSION.md §11): no
//! presence without a push name; `set_push_name` stores it before announcing it; available /
//! unavailable and subscribe stanzas; incoming presence with and without last seen as typed
//! events, never acked; our push name learned from our own devices' messages and from a
//! business pairing, and kept across connections.

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{Event, Presence, PresenceUpdate, SendError, Session};
use amarula_core::noise::KeyPair;
use amarula_core::pairing::{parse_qr, phone};
use amarula_tests::expect::{log_in, logged_in, seeds};
use amarula_tests::harness::{BASE_UNIX_MS, Pair, Seeds};
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const PEER: &str = "15556667777@s.whatsapp.net";

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn sent_since(pair: &Pair, from: usize) -> Vec<String> {
    pair.server
        .received_since(from)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn updates(events: &[Event]) -> Vec<&PresenceUpdate> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Presence(p) => Some(&**p),
            _ => None,
        })
        .collect()
}

fn stored_names(events: &[Event]) -> Vec<Option<String>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CredentialsChanged(c) => Some(c.push_name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn presence_needs_a_push_name() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let before = pair.server.received.len();
    assert_eq!(
        pair.client.set_presence(pair.now, Presence::Available),
        Err(SendError::NoPushName)
    );
    assert_eq!(
        pair.client.set_push_name(pair.now, " @ "),
        Err(SendError::NoPushName)
    );
    pair.drive();
    assert!(sent_since(&pair, before).is_empty());
}

#[test]
fn push_name_is_stored_before_it_is_announced_then_used_by_presence() {
    let mut pair = logged_in(Pair::config(), seeds(2));
    let (events, before) = (pair.events.len(), pair.server.received.len());
    pair.client.set_push_name(pair.now, "Amarula Bot").unwrap();
    // The event is queued before the frame: the first output is the credentials.
    assert!(matches!(
        pair.client.poll_output(),
        Some(amarula_core::machine::Output::Event(Event::CredentialsChanged(c)))
            if c.push_name.as_deref() == Some("Amarula Bot")
    ));
    pair.drive();
    // The same name again changes nothing.
    pair.client.set_push_name(pair.now, "Amarula Bot").unwrap();
    pair.drive();
    assert!(stored_names(pair.events_since(events)).is_empty());
    pair.client
        .set_presence(pair.now, Presence::Available)
        .unwrap();
    pair.client
        .set_presence(pair.now, Presence::Unavailable)
        .unwrap();
    pair.drive();
    assert_eq!(
        sent_since(&pair, before),
        [
            "<presence name=\"Amarula Bot\"/>",
            "<presence name=\"Amarula Bot\"/>",
            "<presence type=\"available\" name=\"Amarula Bot\"/>",
            "<presence type=\"unavailable\" name=\"Amarula Bot\"/>",
        ]
    );
    // It outlives the connection.
    let mut next = pair.reconnect(Pair::config(), [9; 32]);
    log_in(&mut next);
    let before = next.server.received.len();
    next.client
        .set_presence(next.now, Presence::Available)
        .unwrap();
    next.drive();
    assert_eq!(
        sent_since(&next, before),
        ["<presence type=\"available\" name=\"Amarula Bot\"/>"]
    );
    // And goes into the login payload.
    assert_eq!(
        next.server
            .client_payload
            .as_ref()
            .and_then(|p| p.push_name.as_deref()),
        Some("Amarula Bot")
    );
}

#[test]
fn push_name_before_login_is_stored_only() {
    let config = Pair::config();
    let mut pair = Pair::new(
        config.clone(),
        amarula_tests::expect::paired_session(&config),
        seeds(3),
    );
    let before = pair.server.received.len();
    pair.client.set_push_name(pair.now, "Early").unwrap();
    pair.drive();
    assert!(sent_since(&pair, before).is_empty());
    assert_eq!(stored_names(&pair.events), [Some("Early".to_owned())]);
    // Nothing follows the close.
    pair.close_locally();
    assert_eq!(
        pair.client.set_push_name(pair.now, "Late"),
        Err(SendError::NotConnected)
    );
    assert!(pair.client.poll_output().is_none());
}

#[test]
fn subscribe_names_the_user() {
    let mut pair = logged_in(Pair::config(), seeds(4));
    let before = pair.server.received.len();
    pair.client
        .presence_subscribe(pair.now, &jid("15556667777:3@s.whatsapp.net"))
        .unwrap();
    pair.drive();
    assert_eq!(
        sent_since(&pair, before),
        [format!("<presence type=\"subscribe\" to=\"{PEER}\"/>")]
    );
    assert_eq!(
        pair.client
            .presence_subscribe(pair.now, &jid("120363000000000001@g.us")),
        Err(SendError::InvalidRecipient)
    );
}

#[test]
fn incoming_presence_is_typed_and_not_acked() {
    let mut pair = logged_in(Pair::config(), seeds(5));
    let (events, before) = (pair.events.len(), pair.server.received.len());
    pair.server_send(&Node::new("presence").attr("from", jid(PEER)));
    pair.server_send(
        &Node::new("presence")
            .attr("from", jid(PEER))
            .attr("type", "unavailable")
            .attr("last", "1750000123"),
    );
    pair.server_send(
        &Node::new("presence")
            .attr("from", jid(PEER))
            .attr("type", "unavailable")
            .attr("last", "deny"),
    );
    let new = pair.events_since(events);
    let got: Vec<(Jid, Presence, Option<u64>)> = updates(new)
        .iter()
        .map(|u| (u.from.clone(), u.presence, u.last_seen))
        .collect();
    assert_eq!(
        got,
        [
            (jid(PEER), Presence::Available, None),
            (jid(PEER), Presence::Unavailable, Some(1_750_000_123)),
            (jid(PEER), Presence::Unavailable, None),
        ]
    );
    assert!(sent_since(&pair, before).is_empty());
    // Another shape stays a raw stanza.
    pair.server_send(
        &Node::new("presence")
            .attr("from", jid(PEER))
            .attr("type", "error"),
    );
    assert!(matches!(pair.events.last(), Some(Event::Stanza { .. })));
}

#[test]
fn push_name_is_learned_from_our_own_messages() {
    let mut pair = logged_in(Pair::config(), seeds(6));
    let events = pair.events.len();
    // Someone else's name is theirs.
    pair.server_send(
        &Node::new("message")
            .attr("id", "M1")
            .attr("from", jid(PEER))
            .attr("notify", "Peer")
            .attr("t", "1"),
    );
    assert!(stored_names(pair.events_since(events)).is_empty());
    // Our phone's message carries ours.
    pair.server_send(
        &Node::new("message")
            .attr("id", "M2")
            .attr("from", jid("15551234567:0@s.whatsapp.net"))
            .attr("recipient", jid(PEER))
            .attr("notify", "Me On The Phone")
            .attr("t", "2"),
    );
    assert_eq!(
        stored_names(pair.events_since(events)),
        [Some("Me On The Phone".to_owned())]
    );
    assert_eq!(
        pair.client.credentials().push_name.as_deref(),
        Some("Me On The Phone")
    );
}

#[test]
fn business_pairing_gives_the_push_name() {
    let config = Pair::config();
    let session = Session::new(Pair::credentials(21), &config);
    let mut pair = Pair::new(config, session, Seeds::default());
    pair.server_send(
        &Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "set")
            .attr("id", "pd-1")
            .children([Node::new("pair-device")
                .children([Node::new("ref").bytes(Bytes::from_static(b"REF-1"))])]),
    );
    let qr = pair
        .events
        .iter()
        .find_map(|e| match e {
            Event::PairingQr { qr, .. } => Some(qr.clone()),
            _ => None,
        })
        .expect("a QR code");
    let parts = parse_qr(&qr).unwrap();
    let mut spec = phone::PairSuccessSpec::new(
        "ps-1",
        jid("15551234567:7@s.whatsapp.net"),
        3,
        BASE_UNIX_MS / 1000,
    );
    spec.business_name = Some("Shop".to_owned());
    let account = KeyPair::from_private_bytes([77; 32]);
    let success = phone::sign_pair_success(
        &spec,
        &account,
        &parts.identity_pub,
        &parts.adv_secret,
        &mut ChaCha20Rng::from_seed([5; 32]),
    );
    pair.server_send(&success);
    assert_eq!(stored_names(&pair.events), [Some("Shop".to_owned())]);
}
