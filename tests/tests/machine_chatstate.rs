//! Chat state through the machine (MESSAGES.md §7): composing, recording (`media="audio"`)
//! and paused go out as `<chatstate to>` without `from`; incoming ones in 1:1 chats and groups
//! become typed `Event::ChatState`s, the echo of our own state is dropped, unknown shapes stay
//! raw stanzas, and nothing is acked.

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{ChatState, ChatStateUpdate, Event, SendError};
use amarula_tests::expect::{handshaken, logged_in, seeds};
use amarula_tests::harness::Pair;

const PEER: &str = "15556667777@s.whatsapp.net";
const GROUP: &str = "120363000000000001@g.us";

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn updates(events: &[Event]) -> Vec<&ChatStateUpdate> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChatState(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

#[test]
fn states_go_out_to_the_chat() {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let before = pair.server.received.len();
    for (chat, state) in [
        (PEER, ChatState::Composing),
        (PEER, ChatState::Recording),
        (GROUP, ChatState::Paused),
    ] {
        pair.client
            .send_chatstate(pair.now, &jid(chat), state)
            .unwrap();
    }
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
            format!("<chatstate to=\"{PEER}\"><composing/></chatstate>"),
            format!("<chatstate to=\"{PEER}\"><composing media=\"audio\"/></chatstate>"),
            format!("<chatstate to=\"{GROUP}\"><paused/></chatstate>"),
        ]
    );
    assert_eq!(
        pair.client
            .send_chatstate(pair.now, &Jid::server(), ChatState::Paused),
        Err(SendError::InvalidRecipient)
    );
    let mut early = handshaken(Pair::config(), seeds(2));
    assert_eq!(
        early
            .client
            .send_chatstate(early.now, &jid(PEER), ChatState::Composing),
        Err(SendError::NotLoggedIn)
    );
    early.drive();
}

#[test]
fn incoming_states_are_typed_and_not_acked() {
    let mut pair = logged_in(Pair::config(), seeds(3));
    let (events, before) = (pair.events.len(), pair.server.received.len());
    pair.server_send(
        &Node::new("chatstate")
            .attr("from", jid(PEER))
            .children([Node::new("composing")]),
    );
    pair.server_send(
        &Node::new("chatstate")
            .attr("from", jid(GROUP))
            .attr("participant", jid("15550002222@s.whatsapp.net"))
            .children([Node::new("composing").attr("media", "audio")]),
    );
    pair.server_send(
        &Node::new("chatstate")
            .attr("from", jid(PEER))
            .children([Node::new("paused")]),
    );
    // The echo of our own typing from another device of ours is dropped.
    pair.server_send(
        &Node::new("chatstate")
            .attr("to", jid(PEER))
            .children([Node::new("composing")]),
    );
    let new = pair.events_since(events);
    let got: Vec<(Jid, Jid, ChatState)> = updates(new)
        .iter()
        .map(|u| (u.chat.clone(), u.sender.clone(), u.state))
        .collect();
    assert_eq!(
        got,
        [
            (jid(PEER), jid(PEER), ChatState::Composing),
            (
                jid(GROUP),
                jid("15550002222@s.whatsapp.net"),
                ChatState::Recording
            ),
            (jid(PEER), jid(PEER), ChatState::Paused),
        ]
    );
    assert_eq!(new.len(), 3, "{new:?}");
    assert!(pair.server.received_since(before).is_empty());
    // An unknown state stays a raw stanza.
    pair.server_send(
        &Node::new("chatstate")
            .attr("from", jid(PEER))
            .children([Node::new("dancing")]),
    );
    assert!(matches!(pair.events.last(), Some(Event::Stanza { .. })));
}
