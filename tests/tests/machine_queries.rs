//! Typed queries and pushes in the connection machine, on virtual time against the fake
//! server: each query ends in exactly one `QueryResponse` (answer, server error, disconnect),
//! a successful logout closes with `CloseReason::Logout` and a refused one does not, `w:gp2`
//! notifications and calls become typed events before their unchanged acks, and the call
//! reject and push name leave in their wire shapes.

use amarula_core::binary::Node;
use amarula_core::iq::IqError;
use amarula_core::iq::groups::ParticipantRole;
use amarula_core::jid::Jid;
use amarula_core::machine::{Answer, CloseReason, Event, Query, Reconnect, RequestId, SendError};
use amarula_core::notify::call::CallKind;
use amarula_core::notify::group::GroupChange;
use amarula_tests::expect::{closed, handshaken, logged_in, result_for, seeds};
use amarula_tests::harness::Pair;

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn send(pair: &mut Pair, q: Query) -> RequestId {
    let id = pair.client.send_query(pair.now, q).expect("sent");
    pair.drive();
    id
}

fn responses(events: &[Event], id: RequestId) -> Vec<&Result<Answer, IqError>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::QueryResponse { id: i, result } if *i == id => Some(result),
            _ => None,
        })
        .collect()
}

fn group() -> Jid {
    jid("120363000000000001@g.us")
}

#[test]
fn metadata_answer_error_and_disconnect_each_end_once() {
    let mut pair = handshaken(Pair::config(), seeds(1));
    assert_eq!(
        pair.client.send_query(pair.now, Query::ListGroups),
        Err(SendError::NotLoggedIn)
    );
    let mut pair = logged_in(Pair::config(), seeds(1));
    let ok = send(&mut pair, Query::GroupMetadata(group()));
    let sent = pair.server.last("iq").unwrap().clone();
    assert_eq!(sent.attr_str("xmlns"), Some("w:g2"));
    assert_eq!(sent.attr_jid("to"), Some(&group()));
    pair.server_send(
        &result_for(&sent).children([Node::new("group")
            .attr("id", "120363000000000001")
            .attr("subject", "S")
            .children([Node::new("participant")
                .attr("jid", jid("15550000001@s.whatsapp.net"))
                .attr("type", "admin")])]),
    );
    match responses(&pair.events, ok).as_slice() {
        [Ok(Answer::Group(g))] => {
            assert_eq!(g.subject.text, "S");
            assert_eq!(g.participants[0].role, ParticipantRole::Admin);
        }
        other => panic!("{other:?}"),
    }

    let refused = send(&mut pair, Query::GroupMetadata(group()));
    let sent = pair.server.last("iq").unwrap().clone();
    pair.server_send(
        &Node::new("iq")
            .attr("id", sent.attr_str("id").unwrap().to_owned())
            .attr("type", "error")
            .attr("from", group())
            .children([Node::new("error")
                .attr("code", "403")
                .attr("text", "forbidden")]),
    );
    match responses(&pair.events, refused).as_slice() {
        [Err(e)] => assert_eq!(e.code(), Some(403)),
        other => panic!("{other:?}"),
    }

    // An answer without what it must hold is a typed error, not a panic.
    let empty = send(&mut pair, Query::PrivacySettings);
    let sent = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&sent));
    assert!(matches!(
        responses(&pair.events, empty).as_slice(),
        [Err(IqError::Malformed(_))]
    ));

    let cut = send(&mut pair, Query::Blocklist);
    pair.socket_closed();
    assert!(matches!(
        responses(&pair.events, cut).as_slice(),
        [Err(IqError::Disconnected)]
    ));
}

#[test]
fn logout_closes_only_when_the_server_removed_the_device() {
    let mut pair = logged_in(Pair::config(), seeds(2));
    let refused = send(&mut pair, Query::Logout);
    let sent = pair.server.last("iq").unwrap().clone();
    assert_eq!(sent.attr_str("xmlns"), Some("md"));
    let remove = sent.child("remove-companion-device").unwrap();
    assert_eq!(remove.attr_str("reason"), Some("user_initiated"));
    assert_eq!(
        remove.attr_jid("jid"),
        pair.client.credentials().device.as_ref().map(|d| &d.jid)
    );
    pair.server_send(
        &Node::new("iq")
            .attr("id", sent.attr_str("id").unwrap().to_owned())
            .attr("type", "error")
            .attr("from", Jid::server())
            .children([Node::new("error").attr("code", "500").attr("text", "x")]),
    );
    assert_eq!(responses(&pair.events, refused).len(), 1);
    assert!(
        closed(&pair.events).is_none(),
        "a refused logout keeps the connection"
    );

    let done = send(&mut pair, Query::Logout);
    let sent = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&sent));
    assert!(matches!(
        responses(&pair.events, done).as_slice(),
        [Ok(Answer::Done)]
    ));
    let (reason, reconnect) = closed(&pair.events).expect("closed");
    assert!(matches!(reason, CloseReason::Logout));
    assert!(reason.is_logged_out());
    assert_eq!(reconnect, Reconnect::Never);
    // The answer comes before the close.
    let answer_at = pair
        .events
        .iter()
        .position(|e| matches!(e, Event::QueryResponse { id, .. } if *id == done));
    let close_at = pair
        .events
        .iter()
        .position(|e| matches!(e, Event::Closed { .. }));
    assert!(answer_at < close_at);
}

#[test]
fn group_notifications_and_calls_are_typed_then_acked() {
    let mut pair = logged_in(Pair::config(), seeds(3));
    let before = (pair.events.len(), pair.server.received.len());
    let note = Node::new("notification")
        .attr("type", "w:gp2")
        .attr("id", "N1")
        .attr("from", group())
        .attr("participant", jid("15550000001@s.whatsapp.net"))
        .attr("t", "1700000000")
        .children([Node::new("promote")
            .children([Node::new("participant").attr("jid", jid("15550000002@s.whatsapp.net"))])]);
    pair.server_send(&note);
    match pair.events_since(before.0) {
        [Event::GroupChanged(n)] => {
            assert_eq!(n.group, group());
            assert!(matches!(&n.changes[..], [GroupChange::Promoted(p)] if p.len() == 1));
        }
        other => panic!("{other:?}"),
    }
    let acks: Vec<String> = pair
        .server
        .received_since(before.1)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        acks,
        [
            "<ack class=\"notification\" id=\"N1\" to=\"120363000000000001@g.us\" participant=\"15550000001@s.whatsapp.net\" type=\"w:gp2\"/>"
        ]
    );

    // Not from a group: passed on raw, acked the same way.
    let seen = pair.events.len();
    pair.server_send(
        &Node::new("notification")
            .attr("type", "w:gp2")
            .attr("id", "N2")
            .attr("from", jid("15550000001@s.whatsapp.net")),
    );
    assert!(matches!(
        pair.events_since(seen),
        [Event::Stanza { ack: None, .. }]
    ));

    let (seen, sent) = (pair.events.len(), pair.server.received.len());
    let call = Node::new("call")
        .attr("id", "C1")
        .attr("from", jid("15550000003:2@s.whatsapp.net"))
        .attr("t", "1700000001")
        .children([Node::new("offer")
            .attr("call-id", "CALL1")
            .attr("call-creator", jid("15550000003:2@s.whatsapp.net"))
            .children([Node::new("video")])]);
    pair.server_send(&call);
    let offer = match pair.events_since(seen) {
        [Event::Call(c)] => (**c).clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(offer.kind, CallKind::Offer);
    assert!(offer.video);
    assert_eq!(
        pair.server.received_since(sent)[0].to_string(),
        "<ack class=\"call\" id=\"C1\" to=\"15550000003:2@s.whatsapp.net\"/>"
    );
    pair.client.reject_call(pair.now, &offer).unwrap();
    pair.drive();
    let reject = pair.server.last("call").expect("the reject").clone();
    assert_eq!(
        reject.attr_jid("to"),
        Some(&jid("15550000003@s.whatsapp.net"))
    );
    let own = pair
        .client
        .credentials()
        .device
        .as_ref()
        .unwrap()
        .jid
        .to_non_device();
    assert_eq!(reject.attr_jid("from"), Some(&own));
    assert!(
        reject
            .attr_str("id")
            .is_some_and(|id| id.starts_with("3EB0") && id.len() == 22)
    );
    let r = reject.child("reject").unwrap();
    assert_eq!(r.attr_str("call-id"), Some("CALL1"));
    assert_eq!(
        r.attr_jid("call-creator"),
        Some(&jid("15550000003@s.whatsapp.net"))
    );
}

#[test]
fn push_name_is_stored_before_it_is_told() {
    let mut pair = logged_in(Pair::config(), seeds(4));
    let seen = pair.events.len();
    pair.client.set_push_name(pair.now, "Alice").unwrap();
    pair.drive();
    assert!(matches!(
        pair.events_since(seen),
        [Event::CredentialsChanged(c)] if c.push_name.as_deref() == Some("Alice")
    ));
    let presence = pair.server.last("presence").unwrap();
    assert_eq!(presence.attr_str("name"), Some("Alice"));
    assert!(presence.get_attr("type").is_none());
    assert_eq!(
        pair.client
            .own_identity()
            .and_then(|o| o.push_name)
            .as_deref(),
        Some("Alice")
    );
}
