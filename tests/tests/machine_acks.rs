//! Acks of incoming stanzas (SESSION.md §5.1, §5.2, §6.1): the exact `<ack>` for messages,
//! receipts, notifications and calls; the held-ack flow of messages (`Event::Stanza` with a
//! token, nothing sent until `confirm`, NACK and replacement, unknown and stale tokens); the
//! machine acking by itself when holding is off; and the bound of the held-ack table.

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{AckToken, Config, Confirm, Event, SendError};
use amarula_tests::expect::{logged_in, seeds};
use amarula_tests::harness::Pair;

const OWN: &str = "15551234567:7@s.whatsapp.net";

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn no_hold() -> Config {
    Config {
        hold_message_acks: false,
        ..Pair::config()
    }
}

/// The server sends `stanza`; returns what the client sent back, as text.
fn acks_of(config: Config, stanza: &Node) -> Vec<String> {
    let mut pair = logged_in(config, seeds(1));
    let before = pair.server.received.len();
    pair.server_send(stanza);
    pair.server
        .received_since(before)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The tokens of held stanzas among `events`.
fn tokens(events: &[Event]) -> Vec<AckToken> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Stanza { ack: Some(t), .. } => Some(*t),
            _ => None,
        })
        .collect()
}

fn message(id: &str) -> Node {
    Node::new("message")
        .attr("id", id.to_owned())
        .attr("from", jid("15556667777@s.whatsapp.net"))
        .attr("type", "text")
        .attr("t", "1750000000")
        .children([Node::new("enc").attr("v", "2").attr("type", "msg")])
}

#[test]
fn message_ack_has_own_device_as_from_and_no_type() {
    let acks = acks_of(no_hold(), &message("M1"));
    assert_eq!(
        acks,
        [format!(
            "<ack class=\"message\" id=\"M1\" to=\"15556667777@s.whatsapp.net\" from=\"{OWN}\"/>"
        )]
    );
}

#[test]
fn group_message_ack_copies_participant() {
    let node = Node::new("message")
        .attr("id", "M2")
        .attr("from", jid("120363000000000001@g.us"))
        .attr("participant", jid("15556667777:2@s.whatsapp.net"))
        .attr("type", "media");
    let acks = acks_of(no_hold(), &node);
    assert_eq!(
        acks,
        [format!(
            "<ack class=\"message\" id=\"M2\" to=\"120363000000000001@g.us\" participant=\"15556667777:2@s.whatsapp.net\" from=\"{OWN}\"/>"
        )]
    );
}

#[test]
fn receipt_acks_with_and_without_type() {
    let read = Node::new("receipt")
        .attr("id", "R1")
        .attr("from", jid("15556667777@s.whatsapp.net"))
        .attr("type", "read")
        .attr("t", "1750000000");
    assert_eq!(
        acks_of(Pair::config(), &read),
        ["<ack class=\"receipt\" id=\"R1\" to=\"15556667777@s.whatsapp.net\" type=\"read\"/>"]
    );
    let delivered = Node::new("receipt")
        .attr("id", "R2")
        .attr("from", jid("15556667777:4@s.whatsapp.net"))
        .attr("recipient", jid("15558889999@s.whatsapp.net"))
        .attr("t", "1750000000");
    assert_eq!(
        acks_of(Pair::config(), &delivered),
        [
            "<ack class=\"receipt\" id=\"R2\" to=\"15556667777:4@s.whatsapp.net\" recipient=\"15558889999@s.whatsapp.net\"/>"
        ]
    );
    let group = Node::new("receipt")
        .attr("id", "R3")
        .attr("from", jid("120363000000000001@g.us"))
        .attr("participant", jid("15556667777:1@s.whatsapp.net"))
        .attr("type", "read");
    assert_eq!(
        acks_of(Pair::config(), &group),
        [
            "<ack class=\"receipt\" id=\"R3\" to=\"120363000000000001@g.us\" participant=\"15556667777:1@s.whatsapp.net\" type=\"read\"/>"
        ]
    );
}

#[test]
fn notification_acks() {
    let devices = Node::new("notification")
        .attr("id", "N1")
        .attr("from", jid("15556667777@s.whatsapp.net"))
        .attr("type", "devices");
    assert_eq!(
        acks_of(Pair::config(), &devices),
        [
            "<ack class=\"notification\" id=\"N1\" to=\"15556667777@s.whatsapp.net\" type=\"devices\"/>"
        ]
    );
    let identity = Node::new("notification")
        .attr("id", "N2")
        .attr("from", jid("15556667777@s.whatsapp.net"))
        .attr("type", "encrypt")
        .children([Node::new("identity")]);
    assert_eq!(
        acks_of(Pair::config(), &identity),
        ["<ack class=\"notification\" id=\"N2\" to=\"15556667777@s.whatsapp.net\"/>"]
    );
    let prekeys = Node::new("notification")
        .attr("id", "N3")
        .attr("from", Jid::server())
        .attr("type", "encrypt")
        .children([Node::new("count").attr("value", "4")]);
    assert_eq!(
        acks_of(Pair::config(), &prekeys),
        ["<ack class=\"notification\" id=\"N3\" to=\"@s.whatsapp.net\" type=\"encrypt\"/>"]
    );
}

#[test]
fn call_ack() {
    let call = Node::new("call")
        .attr("id", "C1")
        .attr("from", jid("15556667777:3@s.whatsapp.net"))
        .children([Node::new("offer").attr("call-id", "abc")]);
    assert_eq!(
        acks_of(Pair::config(), &call),
        ["<ack class=\"call\" id=\"C1\" to=\"15556667777:3@s.whatsapp.net\"/>"]
    );
}

#[test]
fn non_message_acks_follow_their_event() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let seen = pair.events.len();
    let receipt = Node::new("receipt")
        .attr("id", "R1")
        .attr("from", jid("15556667777@s.whatsapp.net"));
    pair.server_send(&receipt);
    // Not held: typed, acked by the machine.
    assert!(matches!(pair.events_since(seen), [Event::Receipt(_)]));
    let steps = pair.recorder.to_json("t", "t")["steps"].clone();
    let outputs = steps.as_array().unwrap().last().unwrap()["outputs"].clone();
    let kinds: Vec<&str> = outputs
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            if o.get("event").is_some() {
                "event"
            } else {
                "transmit"
            }
        })
        .collect();
    assert_eq!(kinds, ["event", "transmit"]);
}

#[test]
fn stanza_without_id_or_from_is_passed_on_unacked() {
    for node in [
        Node::new("message").attr("from", jid("15556667777@s.whatsapp.net")),
        Node::new("notification").attr("id", "N9"),
    ] {
        let mut pair = logged_in(Pair::config(), seeds(1));
        let (before, seen) = (pair.server.received.len(), pair.events.len());
        pair.server_send(&node);
        assert!(pair.server.received_since(before).is_empty());
        assert!(matches!(
            pair.events_since(seen),
            [Event::Stanza { ack: None, .. }]
        ));
    }
}

#[test]
fn held_ack_waits_for_confirm() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let (before, seen) = (pair.server.received.len(), pair.events.len());
    pair.server_send(&message("M1"));
    let held = tokens(pair.events_since(seen));
    assert_eq!(held.len(), 1, "{:?}", pair.events_since(seen));
    assert!(
        pair.server.received_since(before).is_empty(),
        "acked before confirm"
    );
    pair.confirm(held[0], Confirm::Ack).unwrap();
    let sent: Vec<String> = pair
        .server
        .received_since(before)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        sent,
        [format!(
            "<ack class=\"message\" id=\"M1\" to=\"15556667777@s.whatsapp.net\" from=\"{OWN}\"/>"
        )]
    );
    // Twice: unknown.
    assert_eq!(
        pair.confirm(held[0], Confirm::Ack),
        Err(SendError::UnknownAckToken)
    );
    assert_eq!(pair.server.received_since(before).len(), 1);
}

#[test]
fn nack_adds_the_error_code() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let (before, seen) = (pair.server.received.len(), pair.events.len());
    pair.server_send(&message("M1"));
    let held = tokens(pair.events_since(seen));
    pair.confirm(held[0], Confirm::Nack(491)).unwrap();
    let sent: Vec<String> = pair
        .server
        .received_since(before)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        sent,
        [format!(
            "<ack class=\"message\" id=\"M1\" to=\"15556667777@s.whatsapp.net\" from=\"{OWN}\" error=\"491\"/>"
        )]
    );
}

#[test]
fn replace_sends_the_receipt_instead() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let (before, seen) = (pair.server.received.len(), pair.events.len());
    pair.server_send(&message("M1"));
    let held = tokens(pair.events_since(seen));
    let receipt = Node::new("receipt")
        .attr("id", "M1")
        .attr("to", jid("15556667777@s.whatsapp.net"));
    pair.confirm(held[0], Confirm::Replace(receipt.clone()))
        .unwrap();
    assert_eq!(pair.server.received_since(before), [receipt]);
    assert_eq!(
        pair.confirm(held[0], Confirm::Ack),
        Err(SendError::UnknownAckToken)
    );
}

#[test]
fn tokens_are_independent_and_any_order() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let (before, seen) = (pair.server.received.len(), pair.events.len());
    for id in ["A", "B", "C"] {
        pair.server_send(&message(id));
    }
    let held = tokens(pair.events_since(seen));
    assert_eq!(held.len(), 3);
    for t in [held[2], held[0], held[1]] {
        pair.confirm(t, Confirm::Ack).unwrap();
    }
    let ids: Vec<&str> = pair
        .server
        .received_since(before)
        .iter()
        .map(|n| n.attr_str("id").unwrap())
        .collect();
    assert_eq!(ids, ["C", "A", "B"]);
    // A made-up token is unknown too.
    let bogus = AckToken::from_raw(held[2].to_raw() + 1000);
    assert_eq!(
        pair.confirm(bogus, Confirm::Ack),
        Err(SendError::UnknownAckToken)
    );
}

#[test]
fn token_from_an_earlier_connection_is_unknown() {
    let config = Pair::config();
    let mut pair = logged_in(config.clone(), seeds(1));
    let seen = pair.events.len();
    pair.server_send(&message("OLD"));
    let old = tokens(pair.events_since(seen))[0];
    // Unconfirmed when the connection ends: after the close it is gone.
    pair.socket_closed();
    assert_eq!(
        pair.client.confirm(pair.now, old, Confirm::Ack),
        Err(SendError::UnknownAckToken)
    );
    let mut pair = pair.reconnect(config, [2; 32]);
    amarula_tests::expect::log_in(&mut pair);
    let (before, seen) = (pair.server.received.len(), pair.events.len());
    // The server delivers it again on the new connection, with a new token.
    pair.server_send(&message("OLD"));
    let new = tokens(pair.events_since(seen))[0];
    assert_ne!(new, old);
    assert_eq!(
        pair.confirm(old, Confirm::Ack),
        Err(SendError::UnknownAckToken)
    );
    assert!(pair.server.received_since(before).is_empty());
    pair.confirm(new, Confirm::Ack).unwrap();
    assert_eq!(pair.server.received_since(before).len(), 1);
}

#[test]
fn without_holding_the_machine_acks_right_after_the_event() {
    let mut pair = logged_in(no_hold(), seeds(1));
    let (before, seen) = (pair.server.received.len(), pair.events.len());
    pair.server_send(&message("M1"));
    assert!(matches!(
        pair.events_since(seen),
        [Event::Stanza { ack: None, .. }]
    ));
    assert_eq!(pair.server.received_since(before).len(), 1);
    let steps = pair.recorder.to_json("t", "t")["steps"].clone();
    let outputs = steps.as_array().unwrap().last().unwrap()["outputs"].clone();
    let kinds: Vec<bool> = outputs
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.get("event").is_some())
        .collect();
    assert_eq!(kinds, [true, false], "event first, then the ack frame");
}

#[test]
fn held_ack_table_is_bounded() {
    let config = Config {
        max_held_acks: 3,
        ..Pair::config()
    };
    let mut pair = logged_in(config, seeds(1));
    let (before, seen) = (pair.server.received.len(), pair.events.len());
    for n in 0..5 {
        pair.server_send(&message(&format!("M{n}")));
    }
    let held = tokens(pair.events_since(seen));
    assert_eq!(held.len(), 5);
    // The two oldest were forgotten, unsent (the server redelivers them next time).
    for t in &held[..2] {
        assert_eq!(
            pair.confirm(*t, Confirm::Ack),
            Err(SendError::UnknownAckToken)
        );
    }
    for t in &held[2..] {
        pair.confirm(*t, Confirm::Ack).unwrap();
    }
    let ids: Vec<&str> = pair
        .server
        .received_since(before)
        .iter()
        .map(|n| n.attr_str("id").unwrap())
        .collect();
    assert_eq!(ids, ["M2", "M3", "M4"]);
}
