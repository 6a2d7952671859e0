//! LID addressing in the machine (sans IO, virtual time, scripted server): how a stanza's
//! attributes resolve chat, sender and `from_me`, which pairs are learned and persisted before
//! what depends on them, and the one-time move of a phone-number session to the LID address.

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{Config, Confirm, Event, IncomingMessage};
use amarula_core::persist::Change;
use amarula_core::signal::PreKeyBundle;
use amarula_tests::expect::{self, result_for};
use amarula_tests::harness::Pair;
use amarula_tests::peer::{Peer, bundle_from_upload};

const OWN: &str = "15551234567:7@s.whatsapp.net";
const OWN_LID_USER: &str = "123456789012345@lid";
const BOB_PN: &str = "15550009999:0@s.whatsapp.net";
const BOB_PN_USER: &str = "15550009999@s.whatsapp.net";
const BOB_LID: &str = "100000000000009:0@lid";
const BOB_LID_USER: &str = "100000000000009@lid";

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn logged_in() -> (Pair, PreKeyBundle) {
    let config = Config {
        end_to_end: true,
        prekey_upload_count: 8,
        prekey_refill_count: 4,
        ..Pair::config()
    };
    let mut pair = expect::logged_in(config, expect::seeds(5));
    let count = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&count).children([Node::new("count").attr("value", "0")]));
    let upload = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&upload));
    let bundle = bundle_from_upload(&upload);
    (pair, bundle)
}

fn messages(events: &[Event]) -> Vec<&IncomingMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(&**m),
            _ => None,
        })
        .collect()
}

fn stanza(from: &str, id: &str, enc: Node, attrs: &[(&str, &str)]) -> Node {
    let mut node = Node::new("message")
        .attr("from", jid(from))
        .attr("id", id)
        .attr("type", "text")
        .attr("t", "1700000000");
    for (k, v) in attrs {
        node = node.attr(*k, jid(v));
    }
    node.children([enc])
}

fn position(events: &[Event], pred: impl Fn(&Change) -> bool) -> Option<usize> {
    events.iter().position(|e| match e {
        Event::Persist(c) => pred(c),
        _ => false,
    })
}

#[test]
fn a_lid_message_is_a_lid_chat_and_teaches_the_pair_first() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB_LID, 21);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "hello");
    pair.events.clear();
    pair.server_send(&stanza(BOB_LID, "M1", enc, &[("sender_pn", BOB_PN_USER)]));
    let msgs = messages(&pair.events);
    assert_eq!(msgs.len(), 1);
    let m = msgs[0];
    assert_eq!(m.chat, jid(BOB_LID_USER));
    assert_eq!(m.sender, jid(BOB_LID));
    // The alternate without a device takes the sender's.
    assert_eq!(m.sender_alt, Some(jid(BOB_PN)));
    assert!(!m.from_me);
    // The pair is persisted before the session that is keyed by it.
    let pair_at =
        position(&pair.events, |c| matches!(c, Change::LidMapping { .. })).expect("pair persisted");
    let session_at = position(
        &pair.events,
        |c| matches!(c, Change::Session { address, .. } if *address == jid(BOB_LID)),
    )
    .expect("session under the LID device");
    assert!(pair_at < session_at);
    assert_eq!(
        pair.store.lids.get(&jid(BOB_PN_USER)),
        Some(&jid(BOB_LID_USER))
    );
    assert!(!pair.store.sessions.contains_key(&jid(BOB_PN)));
}

#[test]
fn our_lid_is_us_too() {
    let (mut pair, bundle) = logged_in();
    // Another of our devices, named by our LID, writing to Bob's LID chat.
    let own_lid_dev = "123456789012345:3@lid";
    let mut other = Peer::new(own_lid_dev, 22);
    let enc = other.encrypt_text(&jid(OWN), Some(&bundle), "from my other device");
    pair.events.clear();
    pair.server_send(&stanza(
        own_lid_dev,
        "M2",
        enc,
        &[
            ("recipient", BOB_LID_USER),
            ("peer_recipient_pn", BOB_PN_USER),
        ],
    ));
    let msgs = messages(&pair.events);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].from_me, "our LID device is us");
    assert_eq!(msgs[0].chat, jid(BOB_LID_USER));
    // The chat's pair came with it; our own pair was learned at login.
    assert_eq!(
        pair.store.lids.get(&jid(BOB_LID_USER)),
        Some(&jid(BOB_PN_USER))
    );
    assert_eq!(
        pair.store.lids.get(&jid(OWN_LID_USER)),
        Some(&jid("15551234567@s.whatsapp.net"))
    );
    // Its delivery receipt (sent on confirmation) is the `sender` kind.
    let token = msgs[0].ack.expect("held");
    pair.confirm(token, Confirm::Ack).unwrap();
    let receipt = pair.server.last("receipt").expect("receipt");
    assert_eq!(receipt.attr_str("type"), Some("sender"));
}

#[test]
fn a_phone_number_session_moves_to_the_lid_once_in_one_batch() {
    let (mut pair, bundle) = logged_in();
    // Bob writes by phone number, no LID told: the session lives under his number.
    let mut bob = Peer::new(BOB_PN, 23);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "one");
    pair.server_send(&stanza(BOB_PN, "M1", enc, &[]));
    assert_eq!(messages(&pair.events).len(), 1);
    assert!(pair.store.sessions.contains_key(&jid(BOB_PN)));
    // Then by LID, with his number beside it: the session moves, and decrypts there.
    let enc = bob.encrypt_text(&jid(OWN), None, "two");
    pair.events.clear();
    pair.server_send(&stanza(BOB_LID, "M2", enc, &[("sender_pn", BOB_PN)]));
    let msgs = messages(&pair.events);
    assert_eq!(msgs.len(), 1, "{:?}", pair.events);
    assert_eq!(msgs[0].text(), Some("two"));
    assert!(
        !pair
            .events
            .iter()
            .any(|e| matches!(e, Event::Undecryptable(_))),
        "no retry needed"
    );
    // Session under the LID (with the identity it carries), then the old one removed: three
    // consecutive persistence events, one store batch.
    let moved = position(
        &pair.events,
        |c| matches!(c, Change::Session { address, .. } if *address == jid(BOB_LID)),
    )
    .expect("moved");
    assert!(matches!(
        &pair.events[moved + 1],
        Event::Persist(Change::Identity { address, .. }) if *address == jid(BOB_LID)
    ));
    assert!(matches!(
        &pair.events[moved + 2],
        Event::Persist(Change::RemoveSession(address)) if *address == jid(BOB_PN)
    ));
    assert!(pair.store.sessions.contains_key(&jid(BOB_LID)));
    assert!(!pair.store.sessions.contains_key(&jid(BOB_PN)));
    // Once: a later phone-number message decrypts under the LID address, nothing moves.
    let enc = bob.encrypt_text(&jid(OWN), None, "three");
    pair.events.clear();
    pair.server_send(&stanza(BOB_PN, "M3", enc, &[]));
    assert_eq!(messages(&pair.events)[0].text(), Some("three"));
    assert!(position(&pair.events, |c| matches!(c, Change::RemoveSession(_))).is_none());
}

#[test]
fn a_devices_notification_teaches_pairs() {
    let (mut pair, _) = logged_in();
    let note = Node::new("notification")
        .attr("id", "N1")
        .attr("type", "devices")
        .attr("from", jid(BOB_PN_USER))
        .attr("lid", jid(BOB_LID_USER))
        .children([Node::new("add").children([Node::new("device")
            .attr("jid", jid("15550009999:4@s.whatsapp.net"))
            .attr("lid", jid("100000000000009:4@lid"))])]);
    pair.server_send(&note);
    assert_eq!(
        pair.store.lids.get(&jid(BOB_PN_USER)),
        Some(&jid(BOB_LID_USER))
    );
}

#[test]
fn a_failure_under_the_lid_is_retried_under_the_phone_number() {
    let (mut pair, bundle) = logged_in();
    // Bob's live session is under his number (his first prekey message used our one-time
    // prekey); a stale one, from another install, under his LID.
    let mut bob = Peer::new(BOB_PN, 40);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "y1");
    pair.server_send(&stanza(BOB_PN, "Y1", enc, &[]));
    let mut stale = Peer::new(BOB_LID, 41);
    let mut signed_only = bundle.clone();
    signed_only.prekey = None;
    let enc = stale.encrypt_text(&jid(OWN), Some(&signed_only), "x");
    pair.server_send(&stanza(BOB_LID, "X1", enc, &[]));
    assert_eq!(messages(&pair.events).len(), 2);
    assert!(pair.store.sessions.contains_key(&jid(BOB_PN)));
    assert!(pair.store.sessions.contains_key(&jid(BOB_LID)));
    // Bob now writes by LID with his number beside it: the LID session cannot decrypt it
    // (its prekey is used), the phone-number one can; no retry receipt goes out.
    let enc = bob.encrypt_text(&jid(OWN), None, "y2");
    pair.events.clear();
    let before = pair.server.received.len();
    pair.server_send(&stanza(BOB_LID, "Y2", enc, &[("sender_pn", BOB_PN)]));
    let msgs = messages(&pair.events);
    assert_eq!(msgs.len(), 1, "{:?}", pair.events);
    assert_eq!(msgs[0].text(), Some("y2"));
    assert!(
        !pair
            .server
            .received_since(before)
            .iter()
            .any(|n| n.attr_str("type") == Some("retry"))
    );
}
