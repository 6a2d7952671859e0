//! Receipts through the machine (SESSION.md §6, MESSAGES.md §6): incoming delivery, read,
//! played, `-self` and `sender` receipts become typed `Event::Receipt`s (ids from `id` and
//! `<list>`, the chat, who sent it, whether it was us, the time) and are still acked; retry
//! receipts keep their own path; `mark_read` / `mark_played` send one stanza per chat and
//! author with the first id in `id` and the rest in `<list>`, `t`, and `participant` only in
//! groups.

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{
    Event, MAX_RECEIPT_IDS, Receipt, ReceiptKind, RetryRejection, SendError,
};
use amarula_tests::expect::{handshaken, logged_in, seeds};
use amarula_tests::harness::{BASE_UNIX_MS, Pair};

const PEER: &str = "15556667777@s.whatsapp.net";
const GROUP: &str = "120363000000000001@g.us";

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

/// The server sends `stanza` to a logged-in client; returns the new events and what the
/// client sent back, as text.
fn receive(stanza: &Node) -> (Vec<Event>, Vec<String>) {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let (events, sent) = (pair.events.len(), pair.server.received.len());
    pair.server_send(stanza);
    let new = pair.events.drain(events..).collect();
    let out = pair
        .server
        .received_since(sent)
        .iter()
        .map(ToString::to_string)
        .collect();
    (new, out)
}

fn receipts(events: &[Event]) -> Vec<&Receipt> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Receipt(r) => Some(&**r),
            _ => None,
        })
        .collect()
}

fn no_stanza_events(events: &[Event]) {
    assert!(
        !events.iter().any(|e| matches!(e, Event::Stanza { .. })),
        "{events:?}"
    );
}

#[test]
fn read_receipt_with_a_list_is_typed_and_acked() {
    let node = Node::new("receipt")
        .attr("id", "A")
        .attr("from", jid("15556667777:2@s.whatsapp.net"))
        .attr("type", "read")
        .attr("t", "1750000100")
        .children([Node::new("list").children([
            Node::new("item").attr("id", "B"),
            Node::new("item").attr("id", "C"),
        ])]);
    let (events, sent) = receive(&node);
    no_stanza_events(&events);
    let r = receipts(&events);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, ReceiptKind::Read);
    assert_eq!(r[0].ids, ["A", "B", "C"]);
    assert_eq!(r[0].chat, jid(PEER));
    assert_eq!(r[0].from, jid("15556667777:2@s.whatsapp.net"));
    assert!(!r[0].from_me);
    assert_eq!(r[0].time, Some(1_750_000_100));
    assert_eq!(r[0].node, node);
    assert_eq!(
        sent,
        ["<ack class=\"receipt\" id=\"A\" to=\"15556667777:2@s.whatsapp.net\" type=\"read\"/>"]
    );
}

#[test]
fn delivery_and_played_receipts() {
    let delivered = Node::new("receipt")
        .attr("id", "D")
        .attr("from", jid(PEER))
        .attr("t", "1");
    let (events, sent) = receive(&delivered);
    assert_eq!(receipts(&events)[0].kind, ReceiptKind::Delivered);
    // A delivery receipt has no type, so neither has its ack.
    assert_eq!(
        sent,
        [format!("<ack class=\"receipt\" id=\"D\" to=\"{PEER}\"/>")]
    );
    let played = delivered.attr("type", "played");
    let (events, _) = receive(&played);
    assert!(receipts(&events)[0].kind.is_played());
}

#[test]
fn receipts_from_our_own_devices_are_told_apart() {
    // Our phone read a chat with read receipts off: `read-self`, about the `recipient`.
    let read_self = Node::new("receipt")
        .attr("id", "R")
        .attr("from", jid("15551234567:0@s.whatsapp.net"))
        .attr("recipient", jid(PEER))
        .attr("type", "read-self");
    let (events, _) = receive(&read_self);
    let r = receipts(&events);
    assert_eq!(r[0].kind, ReceiptKind::ReadSelf);
    assert!(r[0].from_me);
    assert_eq!(r[0].chat, jid(PEER));
    // Our other device got the copy of a message we sent: `sender`.
    let sender = Node::new("receipt")
        .attr("id", "S")
        .attr("from", jid("15551234567:3@s.whatsapp.net"))
        .attr("recipient", jid(PEER))
        .attr("type", "sender");
    let (events, _) = receive(&sender);
    let r = receipts(&events);
    assert_eq!(
        (r[0].kind.clone(), r[0].from_me),
        (ReceiptKind::Sender, true)
    );
    // Our LID counts as us too.
    let lid = Node::new("receipt")
        .attr("id", "L")
        .attr("from", jid("123456789012345:4@lid"))
        .attr("recipient", jid(PEER))
        .attr("type", "played-self");
    let (events, _) = receive(&lid);
    let r = receipts(&events);
    assert_eq!(r[0].kind, ReceiptKind::PlayedSelf);
    assert!(r[0].from_me);
}

#[test]
fn group_receipt_names_the_member() {
    let node = Node::new("receipt")
        .attr("id", "G")
        .attr("from", jid(GROUP))
        .attr("participant", jid("15556667777:1@s.whatsapp.net"))
        .attr("type", "read");
    let (events, sent) = receive(&node);
    let r = receipts(&events);
    assert_eq!(r[0].chat, jid(GROUP));
    assert_eq!(r[0].from, jid("15556667777:1@s.whatsapp.net"));
    assert_eq!(
        sent,
        [format!(
            "<ack class=\"receipt\" id=\"G\" to=\"{GROUP}\" participant=\"15556667777:1@s.whatsapp.net\" type=\"read\"/>"
        )]
    );
}

#[test]
fn retry_receipts_keep_their_own_path() {
    let node = Node::new("receipt")
        .attr("id", "X")
        .attr("from", jid(PEER))
        .attr("type", "retry")
        .children([Node::new("retry").attr("id", "X").attr("count", "1")]);
    let (events, sent) = receive(&node);
    assert!(receipts(&events).is_empty());
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RetryRejected {
            reason: RetryRejection::Unknown,
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(e, Event::Stanza { .. })));
    assert_eq!(sent.len(), 1, "{sent:?}");
}

#[test]
fn mark_read_sends_one_stanza_with_a_list() {
    let mut pair = logged_in(Pair::config(), seeds(2));
    let before = pair.server.received.len();
    let t = (BASE_UNIX_MS / 1000).to_string();
    // A device on the chat JID is dropped, and so is a participant in a 1:1 chat.
    pair.client
        .mark_read(
            pair.now,
            &jid("15556667777:2@s.whatsapp.net"),
            &["A", "B", "C"],
            Some(&jid(PEER)),
        )
        .unwrap();
    pair.client
        .mark_played(
            pair.now,
            &jid(GROUP),
            &["V"],
            Some(&jid("15550002222:5@s.whatsapp.net")),
        )
        .unwrap();
    pair.drive();
    let sent: Vec<String> = pair
        .server
        .received_since(before)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        sent,
        [
            format!(
                "<receipt id=\"A\" to=\"{PEER}\" type=\"read\" t=\"{t}\"><list><item id=\"B\"/><item id=\"C\"/></list></receipt>"
            ),
            format!(
                "<receipt id=\"V\" to=\"{GROUP}\" type=\"played\" t=\"{t}\" participant=\"15550002222@s.whatsapp.net\"/>"
            ),
        ]
    );
}

#[test]
fn mark_read_splits_long_lists_and_refuses_misuse() {
    let mut pair = logged_in(Pair::config(), seeds(3));
    let before = pair.server.received.len();
    let ids: Vec<String> = (0..MAX_RECEIPT_IDS * 2 + 1)
        .map(|i| format!("ID{i}"))
        .collect();
    pair.client
        .mark_read(pair.now, &jid(PEER), &ids, None)
        .unwrap();
    pair.drive();
    let sent = pair.server.received_since(before);
    assert_eq!(sent.len(), 3);
    let mut seen: Vec<String> = Vec::new();
    for r in sent {
        seen.push(r.attr_str("id").unwrap().to_owned());
        if let Some(list) = r.child("list") {
            seen.extend(
                list.child_nodes()
                    .iter()
                    .map(|i| i.attr_str("id").unwrap().to_owned()),
            );
        }
    }
    assert_eq!(seen, ids);
    let none: [&str; 0] = [];
    assert_eq!(
        pair.client.mark_read(pair.now, &jid(PEER), &none, None),
        Err(SendError::NoMessageIds)
    );
    assert_eq!(
        pair.client.mark_read(pair.now, &jid(GROUP), &["A"], None),
        Err(SendError::MissingParticipant)
    );
    assert_eq!(
        pair.client
            .mark_read(pair.now, &Jid::server(), &["A"], None),
        Err(SendError::InvalidRecipient)
    );
    let mut early = handshaken(Pair::config(), seeds(4));
    assert_eq!(
        early.client.mark_read(early.now, &jid(PEER), &["A"], None),
        Err(SendError::NotLoggedIn)
    );
    early.drive();
}
