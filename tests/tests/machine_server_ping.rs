//! The server's own ping (SESSION.md §3.6): `<iq from=s.whatsapp.net type=get
//! xmlns=urn:xmpp:ping>` and the `<ping/>`-child form are answered with
//! `<iq to=s.whatsapp.net type=result id=…/>` and not shown to the application; a ping that
//! does not come from the server is passed on as a stanza, unanswered.

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::Event;
use amarula_tests::expect::{logged_in, seeds};
use amarula_tests::harness::Pair;

/// Sends `ping`; returns what the server received and the events it caused.
fn ping(ping: &Node) -> (Vec<Node>, Vec<Event>) {
    let mut pair = logged_in(Pair::config(), seeds(1));
    let (sent, seen) = (pair.server.received.len(), pair.events.len());
    pair.server_send(ping);
    assert!(!pair.client.is_closed());
    let received = pair.server.received_since(sent).to_vec();
    let events = pair.events.split_off(seen);
    (received, events)
}

#[test]
fn xmlns_form_is_answered() {
    let node = Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "get")
        .attr("xmlns", "urn:xmpp:ping")
        .attr("id", "X1")
        .attr("t", "1750000000");
    let (received, events) = ping(&node);
    let replies: Vec<String> = received.iter().map(ToString::to_string).collect();
    // The server JID (empty user) is written `@s.whatsapp.net` by `Display`.
    assert_eq!(
        replies,
        ["<iq to=\"@s.whatsapp.net\" type=\"result\" id=\"X1\"/>"]
    );
    assert_eq!(received[0].attr_jid("to"), Some(&Jid::server()));
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn ping_child_form_is_answered() {
    let node = Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "get")
        .attr("id", "X2")
        .children([Node::new("ping")]);
    let (received, events) = ping(&node);
    let replies: Vec<String> = received.iter().map(ToString::to_string).collect();
    // The server JID (empty user) is written `@s.whatsapp.net` by `Display`.
    assert_eq!(
        replies,
        ["<iq to=\"@s.whatsapp.net\" type=\"result\" id=\"X2\"/>"]
    );
    assert_eq!(received[0].attr_jid("to"), Some(&Jid::server()));
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn server_jid_written_as_a_string_is_answered_too() {
    let node = Node::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "get")
        .attr("xmlns", "urn:xmpp:ping")
        .attr("id", "X3");
    let (received, events) = ping(&node);
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].attr_str("id"), Some("X3"));
    assert_eq!(received[0].attr_str("type"), Some("result"));
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn ping_not_from_the_server_goes_to_the_app() {
    for from in [
        Jid::user("15550001111"),
        Jid::user("15550001111").with_device(3),
    ] {
        let node = Node::new("iq")
            .attr("from", from)
            .attr("type", "get")
            .attr("xmlns", "urn:xmpp:ping")
            .attr("id", "X4");
        let (received, events) = ping(&node);
        assert!(received.is_empty(), "answered: {received:?}");
        assert!(
            matches!(&events[..], [Event::Stanza { node: n, ack: None }] if n.attr_str("id") == Some("X4")),
            "{events:?}"
        );
    }
    // Without any `from`.
    let node = Node::new("iq")
        .attr("type", "get")
        .attr("xmlns", "urn:xmpp:ping")
        .attr("id", "X5");
    let (received, events) = ping(&node);
    assert!(received.is_empty(), "answered: {received:?}");
    assert!(
        matches!(&events[..], [Event::Stanza { ack: None, .. }]),
        "{events:?}"
    );
}

#[test]
fn other_server_gets_go_to_the_app() {
    let node = Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "get")
        .attr("xmlns", "w:something")
        .attr("id", "X6");
    let (received, events) = ping(&node);
    assert!(received.is_empty(), "{received:?}");
    assert!(
        matches!(&events[..], [Event::Stanza { ack: None, .. }]),
        "{events:?}"
    );
}
