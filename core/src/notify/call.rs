//! `<call>` stanzas (MESSAGES.md §9): an incoming call's signalling, typed, and the reject we
//! send back.
//!
//! Incoming: `<call from id t [offline] [platform] [version]><KIND call-id call-creator
//! [caller_pn|caller_lid] [group-jid]>…</KIND></call>`, KIND being `offer`, `offer_notice`,
//! `preaccept`, `accept`, `reject`, `terminate`, `relaylatency`, `transport`, … The machine
//! acks each with `<ack class="call" id to [type]>` (SESSION.md §5).
//!
//! Reject (whatsmeow's shape): `<call id=NEW from=OWN to=CALLER><reject call-id
//! call-creator=CREATOR count="0"/></call>`, own and caller without device, no answer expected.

use crate::binary::Node;
use crate::iq::{jid_attr, num_attr, str_attr};
use crate::jid::{Jid, Server};

/// What a `<call>` says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallKind {
    /// Someone is calling us.
    Offer,
    /// A call offer seen as a notice only (e.g. a group call we are not rung for).
    OfferNotice,
    /// The callee's device is ringing.
    PreAccept,
    /// Answered (on another device).
    Accept,
    /// Rejected (on another device, or by the caller's peer).
    Reject,
    /// The call ended.
    Terminate,
    /// Relay latency measurements.
    RelayLatency,
    /// Transport negotiation.
    Transport,
    /// Another kind, by its tag.
    Other(String),
}

/// An incoming call stanza, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallEvent {
    /// What it says.
    pub kind: CallKind,
    /// The stanza id.
    pub id: String,
    /// The device it came from (`from`).
    pub from: Jid,
    /// The call's id (`call-id`).
    pub call_id: String,
    /// Who started the call (`call-creator`).
    pub creator: Jid,
    /// The creator's other identity (`caller_pn` when `creator` is a LID, `caller_lid`
    /// otherwise), when given.
    pub creator_alt: Option<Jid>,
    /// When (`t`, unix seconds).
    pub timestamp: Option<u64>,
    /// A video call (an offer with `<video>`, or a notice with `media="video"`).
    pub video: bool,
    /// The group of a group call (`group-jid`).
    pub group: Option<Jid>,
    /// Delivered from the offline queue (`offline`): the call may be over.
    pub offline: bool,
    /// The caller's platform, when given.
    pub platform: Option<String>,
    /// The caller's app version, when given.
    pub version: Option<String>,
    /// Why it ended (`reason`, for [`CallKind::Terminate`]).
    pub reason: Option<String>,
}

impl CallEvent {
    /// Parses a `<call>` with one child; `None` when it has no `from`, no child, or its child
    /// lacks `call-id`.
    pub fn from_node(node: &Node) -> Option<Self> {
        if node.tag != "call" {
            return None;
        }
        let from = jid_attr(node, "from")?;
        let child = node.child_nodes().first()?;
        let call_id = str_attr(child, "call-id")?;
        let kind = match &*child.tag {
            "offer" => CallKind::Offer,
            "offer_notice" => CallKind::OfferNotice,
            "preaccept" => CallKind::PreAccept,
            "accept" => CallKind::Accept,
            "reject" => CallKind::Reject,
            "terminate" => CallKind::Terminate,
            "relaylatency" => CallKind::RelayLatency,
            "transport" => CallKind::Transport,
            other => CallKind::Other(other.to_owned()),
        };
        let creator = jid_attr(child, "call-creator").unwrap_or_else(|| from.to_non_device());
        let alt_key = if matches!(creator.server_part(), Server::Lid) {
            "caller_pn"
        } else {
            "caller_lid"
        };
        let video = child.child("video").is_some() || child.attr_str("media") == Some("video");
        Some(Self {
            kind,
            id: str_attr(node, "id").unwrap_or_default(),
            creator_alt: jid_attr(child, alt_key),
            timestamp: num_attr(node, "t"),
            video,
            group: jid_attr(child, "group-jid"),
            offline: node.get_attr("offline").is_some(),
            platform: str_attr(node, "platform"),
            version: str_attr(node, "version"),
            reason: str_attr(child, "reason"),
            from,
            call_id,
            creator,
        })
    }
}

/// The reject of a call: `<call id from=OWN to=CALLER><reject call-id call-creator
/// count="0"/></call>`; `id` is a fresh message id, `own` our JID.
pub fn reject(id: &str, own: &Jid, caller: &Jid, creator: &Jid, call_id: &str) -> Node {
    Node::new("call")
        .attr("id", id)
        .attr("from", own.to_non_device())
        .attr("to", caller.to_non_device())
        .children([Node::new("reject")
            .attr("call-id", call_id)
            .attr("call-creator", creator.to_non_device())
            .attr("count", "0")])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    #[test]
    fn offers_parse() {
        let n = Node::new("call")
            .attr("from", jid("15550000001:3@s.whatsapp.net"))
            .attr("id", "C1")
            .attr("t", "1700000000")
            .attr("platform", "android")
            .attr("version", "2.24.1")
            .children([Node::new("offer")
                .attr("call-id", "CALL1")
                .attr("call-creator", jid("15550000001:3@s.whatsapp.net"))
                .attr("caller_lid", jid("100000000000001@lid"))
                .children([Node::new("audio"), Node::new("video")])]);
        let c = CallEvent::from_node(&n).unwrap();
        assert_eq!(c.kind, CallKind::Offer);
        assert_eq!(c.call_id, "CALL1");
        assert!(c.video && !c.offline);
        assert_eq!(c.creator_alt, Some(jid("100000000000001@lid")));
        assert_eq!(c.timestamp, Some(1_700_000_000));
        assert_eq!(c.platform.as_deref(), Some("android"));
        let audio = Node::new("call")
            .attr("from", jid("1@s.whatsapp.net"))
            .attr("offline", "0")
            .children([Node::new("terminate")
                .attr("call-id", "X")
                .attr("reason", "timeout")]);
        let t = CallEvent::from_node(&audio).unwrap();
        assert_eq!(t.kind, CallKind::Terminate);
        assert!(!t.video && t.offline);
        assert_eq!(t.creator, jid("1@s.whatsapp.net"));
        assert_eq!(t.reason.as_deref(), Some("timeout"));
        assert!(
            CallEvent::from_node(&Node::new("call").attr("from", jid("1@s.whatsapp.net")))
                .is_none()
        );
        assert!(
            CallEvent::from_node(
                &Node::new("call")
                    .attr("from", jid("1@s.whatsapp.net"))
                    .children([Node::new("offer")])
            )
            .is_none()
        );
    }

    #[test]
    fn reject_shape() {
        let r = reject(
            "3EB0AA",
            &jid("2:4@s.whatsapp.net"),
            &jid("1:3@s.whatsapp.net"),
            &jid("1:3@s.whatsapp.net"),
            "CALL1",
        );
        assert_eq!(r.attr_jid("from"), Some(&jid("2@s.whatsapp.net")));
        assert_eq!(r.attr_jid("to"), Some(&jid("1@s.whatsapp.net")));
        let rej = r.child("reject").unwrap();
        assert_eq!(rej.attr_str("call-id"), Some("CALL1"));
        assert_eq!(rej.attr_jid("call-creator"), Some(&jid("1@s.whatsapp.net")));
        assert_eq!(rej.attr_str("count"), Some("0"));
    }
}
