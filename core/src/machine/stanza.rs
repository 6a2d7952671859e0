//! Reading and building the stanzas the machine handles itself: acks (SESSION.md §5.2), IQ
//! replies, failures and stream errors (§1.2, §1.3), server acks (§5.5).

use std::time::Duration;

use super::event::{CloseReason, IqResult, MessageAckResult};
use crate::binary::{AttrValue, Content, Node};
use crate::jid::Jid;

/// The `<ack>` for an incoming `message`, `receipt`, `notification` or `call` (§5.2, the
/// recommended rule): `class` = its tag, `id`, `to` = its `from`, `participant` and
/// `recipient` copied; `type` copied except for messages and for an `encrypt` notification
/// carrying `<identity/>`; `from` = our device JID for messages. `None` when the stanza has no
/// `id` or `from`, so there is nothing to address the ack to.
pub(crate) fn ack_for(stanza: &Node, own: Option<&Jid>) -> Option<Node> {
    let id = stanza.get_attr("id")?.clone();
    let from = stanza.get_attr("from")?.clone();
    let class = stanza.tag.clone();
    let mut ack = Node::new("ack")
        .attr("class", AttrValue::Str(class))
        .attr("id", id)
        .attr("to", from);
    for key in ["participant", "recipient"] {
        if let Some(v) = stanza.get_attr(key) {
            ack = ack.attr(key, v.clone());
        }
    }
    let is_message = stanza.tag == "message";
    if let Some(kind) = stanza.get_attr("type") {
        let identity_change = stanza.tag == "notification"
            && kind.as_str() == Some("encrypt")
            && stanza.child("identity").is_some();
        if !is_message && !identity_change {
            ack = ack.attr("type", kind.clone());
        }
    }
    if is_message {
        if let Some(own) = own {
            ack = ack.attr("from", own.clone());
        }
    }
    Some(ack)
}

/// The `<ack>` [`ack_for`] gives for a decrypted `message`, built from the delivery receipt
/// the machine made for it (which copied its `id`, `from` as `to`, `participant` and
/// `recipient`): what a refusal of a held message sends, built only then.
pub(crate) fn message_ack_of_receipt(receipt: &Node, own: Option<&Jid>) -> Node {
    let mut ack = Node::new("ack").attr("class", "message");
    for key in ["id", "to", "participant", "recipient"] {
        if let Some(v) = receipt.get_attr(key) {
            ack = ack.attr(key, v.clone());
        }
    }
    if let Some(own) = own {
        ack = ack.attr("from", own.clone());
    }
    ack
}

/// `<iq to=<its from> type=result id=<its id>/>`, the reply to a server IQ.
pub(crate) fn iq_reply(iq: &Node) -> Node {
    let mut reply = Node::new("iq");
    if let Some(from) = iq.get_attr("from") {
        reply = reply.attr("to", from.clone());
    } else {
        reply = reply.attr("to", Jid::server());
    }
    reply = reply.attr("type", "result");
    if let Some(id) = iq.get_attr("id") {
        reply = reply.attr("id", id.clone());
    }
    reply
}

/// The server's ping (§3.6): `xmlns="urn:xmpp:ping"`, or a `<ping/>` child.
pub(crate) fn is_server_ping(iq: &Node) -> bool {
    iq.attr_str("xmlns") == Some("urn:xmpp:ping")
        || (iq.child("ping").is_some() && iq.child_nodes().len() == 1)
}

/// A reply to one of our IQs.
pub(crate) fn iq_result(node: Node) -> IqResult {
    if node.attr_str("type") == Some("error") {
        let err = node.child("error");
        let code = err
            .and_then(|e| e.attr_str("code"))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let text = err
            .and_then(|e| e.attr_str("text"))
            .unwrap_or("")
            .to_owned();
        return IqResult::Error { code, text, node };
    }
    IqResult::Ok(node)
}

/// The server's `<ack class="message">` of a message we relayed (§5.5).
pub(crate) fn message_ack_result(ack: &Node) -> MessageAckResult {
    if let Some(code) = ack.attr_str("error") {
        return MessageAckResult::Error {
            code: code.parse().unwrap_or(0),
        };
    }
    MessageAckResult::Delivered {
        t: ack.attr_str("t").and_then(|t| t.parse().ok()),
        phash: ack.attr_str("phash").map(str::to_owned),
        server_id: ack.attr_str("server_id").map(str::to_owned),
    }
}

fn num_attr<T: std::str::FromStr>(node: &Node, key: &str) -> Option<T> {
    node.attr_str(key).and_then(|v| v.parse().ok())
}

/// `<failure reason=N>` (§1.2).
pub(crate) fn failure_reason(node: &Node) -> CloseReason {
    let code: u16 = num_attr(node, "reason").unwrap_or(0);
    match code {
        401 | 403 | 406 => CloseReason::LoggedOut { code },
        402 => CloseReason::TemporaryBan {
            code: num_attr(node, "code"),
            expire: num_attr::<u64>(node, "expire").map(Duration::from_secs),
        },
        405 => CloseReason::ClientOutdated,
        500 | 503 => CloseReason::ServiceUnavailable { code },
        _ => CloseReason::Failure {
            code,
            message: node.attr_str("message").map(str::to_owned),
        },
    }
}

/// `<stream:error code=N>` with its optional child (§1.3).
pub(crate) fn stream_error_reason(node: &Node) -> CloseReason {
    let code: Option<u16> = num_attr(node, "code");
    let first = match &node.content {
        Content::Nodes(children) => children.first(),
        _ => None,
    };
    let conflict = node.child("conflict").and_then(|c| c.attr_str("type"));
    match (code, conflict) {
        (_, Some("replaced")) => CloseReason::Replaced,
        (_, Some("device_removed")) => CloseReason::LoggedOut {
            code: code.unwrap_or(401),
        },
        (Some(515), _) => CloseReason::RestartRequired,
        (Some(516), _) => CloseReason::LoggedOut { code: 516 },
        (Some(401), _) => CloseReason::LoggedOut { code: 401 },
        (Some(409), _) => CloseReason::Replaced,
        (Some(429), _) => CloseReason::RateLimited,
        (Some(503), _) => CloseReason::ServiceUnavailable { code: 503 },
        _ => CloseReason::StreamError {
            code,
            condition: first.map(|c| c.tag.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    /// The ack a refusal builds from a held delivery receipt is the one `ack_for` gives.
    #[test]
    fn the_ack_of_a_receipt_is_the_messages_ack() {
        let own = jid("1555:3@s.whatsapp.net");
        for (from, participant, recipient) in [
            ("120363@g.us", Some("1777:2@s.whatsapp.net"), None),
            ("1888:1@s.whatsapp.net", None, Some("1999@s.whatsapp.net")),
            ("1888@lid", None, None),
        ] {
            let mut msg = Node::new("message")
                .attr("id", "3EB0ABC")
                .attr("from", jid(from))
                .attr("type", "text");
            // As the machine's delivery receipt copies them.
            let mut receipt = Node::new("receipt")
                .attr("id", "3EB0ABC")
                .attr("to", jid(from));
            for (key, value) in [("participant", participant), ("recipient", recipient)] {
                if let Some(v) = value {
                    msg = msg.attr(key, jid(v));
                    receipt = receipt.attr(key, jid(v));
                }
            }
            assert_eq!(
                Some(message_ack_of_receipt(&receipt, Some(&own))),
                ack_for(&msg, Some(&own))
            );
        }
    }

    #[test]
    fn acks_follow_the_recommended_rule() {
        let own = jid("1555:3@s.whatsapp.net");
        let msg = Node::new("message")
            .attr("id", "ID1")
            .attr("from", jid("120363@g.us"))
            .attr("participant", jid("1666:2@s.whatsapp.net"))
            .attr("type", "text");
        let ack = ack_for(&msg, Some(&own)).unwrap();
        assert_eq!(
            ack.to_string(),
            "<ack class=\"message\" id=\"ID1\" to=\"120363@g.us\" participant=\"1666:2@s.whatsapp.net\" from=\"1555:3@s.whatsapp.net\"/>"
        );
        let receipt = Node::new("receipt")
            .attr("id", "ID2")
            .attr("from", jid("1666@s.whatsapp.net"))
            .attr("type", "read");
        assert_eq!(
            ack_for(&receipt, Some(&own)).unwrap().to_string(),
            "<ack class=\"receipt\" id=\"ID2\" to=\"1666@s.whatsapp.net\" type=\"read\"/>"
        );
        let identity = Node::new("notification")
            .attr("id", "N")
            .attr("from", jid("1666@s.whatsapp.net"))
            .attr("type", "encrypt")
            .children([Node::new("identity")]);
        assert_eq!(
            ack_for(&identity, None).unwrap().to_string(),
            "<ack class=\"notification\" id=\"N\" to=\"1666@s.whatsapp.net\"/>"
        );
        assert!(ack_for(&Node::new("message").attr("id", "x"), None).is_none());
    }

    #[test]
    fn close_reasons() {
        let f = |r: &str| failure_reason(&Node::new("failure").attr("reason", r.to_owned()));
        assert!(matches!(f("401"), CloseReason::LoggedOut { code: 401 }));
        assert!(matches!(f("405"), CloseReason::ClientOutdated));
        assert!(matches!(
            f("503"),
            CloseReason::ServiceUnavailable { code: 503 }
        ));
        assert!(matches!(f("418"), CloseReason::Failure { code: 418, .. }));
        let ban = Node::new("failure")
            .attr("reason", "402")
            .attr("code", "101")
            .attr("expire", "3600");
        assert!(matches!(
            failure_reason(&ban),
            CloseReason::TemporaryBan { code: Some(101), expire: Some(d) } if d == Duration::from_secs(3600)
        ));
        let s = |code: Option<&str>, child: Option<Node>| {
            let mut n = Node::new("stream:error");
            if let Some(c) = code {
                n = n.attr("code", c.to_owned());
            }
            if let Some(c) = child {
                n = n.children([c]);
            }
            stream_error_reason(&n)
        };
        assert!(matches!(s(Some("515"), None), CloseReason::RestartRequired));
        assert!(matches!(
            s(None, Some(Node::new("conflict").attr("type", "replaced"))),
            CloseReason::Replaced
        ));
        assert!(matches!(
            s(
                Some("401"),
                Some(Node::new("conflict").attr("type", "device_removed"))
            ),
            CloseReason::LoggedOut { code: 401 }
        ));
        assert!(matches!(s(Some("429"), None), CloseReason::RateLimited));
        assert!(matches!(
            s(None, Some(Node::new("ack"))),
            CloseReason::StreamError { code: None, condition: Some(c) } if c == "ack"
        ));
    }
}
