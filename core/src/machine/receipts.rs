//! Receipts (SESSION.md §6, MESSAGES.md §6): incoming delivery, read and played receipts as
//! typed [`Receipt`]s, and the read / played receipts we send with
//! [`mark_read`](ConnectionMachine::mark_read) and [`mark_played`](ConnectionMachine::mark_played).
//!
//! Retry receipts are not handled here: they go to the resend path (SESSION.md §7.2) and reach
//! the application as [`Event::RetryRequested`] / [`Event::RetryRejected`] and the raw
//! [`Event::Stanza`], as before.

use super::{ConnectionMachine, Event, SendError};
use crate::binary::{AttrValue, Node};
use crate::jid::{Jid, Server};
use crate::time::Instant;

/// At most this many message ids go in one receipt stanza; more are split over several (WR
/// caps a stanza at 256 ids, MESSAGES.md §6).
pub const MAX_RECEIPT_IDS: usize = 256;

/// What a receipt says about the messages it names: its `type` (SESSION.md §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReceiptKind {
    /// No `type`: delivered to the device that sent the receipt.
    Delivered,
    /// `inactive`: delivered while the recipient was not "available" (means delivered too).
    Inactive,
    /// `sender`: another device of our own account received a message we sent (to someone
    /// else), i.e. the copy for our own devices arrived.
    Sender,
    /// `read`: read by the recipient.
    Read,
    /// `read-self`: read on one of our own devices whose read-receipt privacy is off (the other
    /// party is not told).
    ReadSelf,
    /// `played`: a voice or video note was played.
    Played,
    /// `played-self`: played on one of our own devices, not told to the other party.
    PlayedSelf,
    /// `peer_msg`: another device of ours received a peer (`category="peer"`) message.
    PeerMessage,
    /// `hist_sync`: our phone processed a history-sync notification.
    HistorySync,
    /// `server-error`: a device asks us to upload a file of a message again (the node's
    /// `<encrypt>` is read by [`media::decrypt_retry_receipt`](crate::media::decrypt_retry_receipt)).
    ServerError,
    /// Any other type, as sent (e.g. `enc_rekey_retry`).
    Other(String),
}

impl ReceiptKind {
    /// The kind for a receipt's `type` attribute (`None` when absent). `retry` is handled
    /// before this and never becomes a kind; given here it is [`Other`](Self::Other).
    pub fn from_type(kind: Option<&str>) -> Self {
        match kind {
            None | Some("") => Self::Delivered,
            Some("inactive") => Self::Inactive,
            Some("sender") => Self::Sender,
            Some("read") => Self::Read,
            Some("read-self") => Self::ReadSelf,
            Some("played") => Self::Played,
            Some("played-self") => Self::PlayedSelf,
            Some("peer_msg") => Self::PeerMessage,
            Some("hist_sync") => Self::HistorySync,
            Some("server-error") => Self::ServerError,
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// The `type` attribute of this kind; `None` for [`Delivered`](Self::Delivered).
    pub fn as_type(&self) -> Option<&str> {
        Some(match self {
            Self::Delivered => return None,
            Self::Inactive => "inactive",
            Self::Sender => "sender",
            Self::Read => "read",
            Self::ReadSelf => "read-self",
            Self::Played => "played",
            Self::PlayedSelf => "played-self",
            Self::PeerMessage => "peer_msg",
            Self::HistorySync => "hist_sync",
            Self::ServerError => "server-error",
            Self::Other(s) => s,
        })
    }

    /// Whether the messages arrived at a device (delivered, inactive, sender).
    pub fn is_delivery(&self) -> bool {
        matches!(self, Self::Delivered | Self::Inactive | Self::Sender)
    }

    /// Whether the messages were read (`read` or `read-self`).
    pub fn is_read(&self) -> bool {
        matches!(self, Self::Read | Self::ReadSelf)
    }

    /// Whether the messages were played (`played` or `played-self`).
    pub fn is_played(&self) -> bool {
        matches!(self, Self::Played | Self::PlayedSelf)
    }
}

/// An incoming receipt for one or more messages ([`Event::Receipt`]). The machine has already
/// acked it.
///
/// A receipt is about messages of one chat. When another user's device sends it, `from` is
/// that device and `chat` our chat with them (or the group). When one of our own devices sends
/// it (`from_me`: we read a chat on the phone, or our other device got a message we sent),
/// `chat` is the chat it is about (the stanza's `recipient`, or the group).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Receipt {
    /// What happened to the messages.
    pub kind: ReceiptKind,
    /// The message ids, at least one: the stanza's `id` first, then its `<list><item id/>`s
    /// (or the `key` of a grouped `<participants>` entry).
    pub ids: Vec<String>,
    /// The chat the messages belong to: the other user (without device) or the group.
    pub chat: Jid,
    /// Who sent the receipt: the device (or user) that received, read or played them; in a
    /// group the member (`participant`).
    pub from: Jid,
    /// Whether `from` is one of our own devices.
    pub from_me: bool,
    /// When it happened (`t`, unix seconds), when the server said.
    pub time: Option<u64>,
    /// The stanza as it arrived, for what this type does not model (`<encrypt>` of a
    /// `server-error`, `<enc_rekey>`, …). A grouped group receipt gives one `Receipt` per user,
    /// each carrying the whole stanza.
    pub node: Node,
}

/// The JID in attribute `key`, whether it came as a JID or as a string.
pub(super) fn jid_attr(node: &Node, key: &str) -> Option<Jid> {
    match node.get_attr(key)? {
        AttrValue::Jid(j) => Some(j.clone()),
        AttrValue::Str(s) => s.parse().ok(),
    }
}

/// The user of `jid`, without agent or device.
pub(super) fn user_of(jid: &Jid) -> Jid {
    Jid::new(jid.user_part(), jid.server_part().clone())
}

/// Whether `jid` names a user (phone number or LID, also hosted), not a group or a server.
pub(super) fn is_user(jid: &Jid) -> bool {
    matches!(
        jid.server_part(),
        Server::User | Server::Lid | Server::Hosted | Server::HostedLid
    ) && !jid.user_part().is_empty()
}

/// Parses an incoming receipt into typed receipts: one, or one per user of a grouped group
/// receipt (`<participants key><user jid t/></participants>`, SESSION.md §6.1). Empty when the
/// stanza names no message or no sender. `is_own` says whether a JID is of our own account.
pub(super) fn parse(node: &Node, is_own: impl Fn(&Jid) -> bool) -> Vec<Receipt> {
    let (Some(first), Some(from)) = (node.attr_str("id"), jid_attr(node, "from")) else {
        return Vec::new();
    };
    let kind = ReceiptKind::from_type(node.attr_str("type"));
    let time = node.attr_str("t").and_then(|t| t.parse().ok());
    let participant = jid_attr(node, "participant");
    if from.is_group() && participant.is_none() {
        let grouped: Vec<Receipt> = node
            .child_nodes()
            .iter()
            .filter(|c| c.tag == "participants")
            .flat_map(|p| {
                let key = p.attr_str("key").unwrap_or(first).to_owned();
                p.child_nodes()
                    .iter()
                    .filter(|u| u.tag == "user")
                    .filter_map(move |u| Some((key.clone(), u, jid_attr(u, "jid")?)))
            })
            .map(|(key, user, jid)| Receipt {
                kind: kind.clone(),
                ids: vec![key],
                chat: from.to_non_device(),
                from_me: is_own(&jid),
                from: jid,
                time: user.attr_str("t").and_then(|t| t.parse().ok()).or(time),
                node: node.clone(),
            })
            .collect();
        if !grouped.is_empty() {
            return grouped;
        }
    }
    let mut ids = vec![first.to_owned()];
    if let Some(list) = node.child("list") {
        ids.extend(
            list.child_nodes()
                .iter()
                .filter(|i| i.tag == "item")
                .filter_map(|i| i.attr_str("id"))
                .filter(|id| !id.is_empty() && *id != first)
                .map(str::to_owned),
        );
    }
    let sender = participant.unwrap_or_else(|| from.clone());
    let from_me = is_own(&sender);
    // BL's rule (SESSION.md §6.1): a receipt from us is about the `recipient`'s chat; one from
    // anyone else about the chat it comes from.
    let chat = if from.is_group() || matches!(from.server_part(), Server::Broadcast) {
        from.to_non_device()
    } else if from_me {
        jid_attr(node, "recipient").map_or_else(|| user_of(&from), |r| user_of(&r))
    } else {
        user_of(&from)
    };
    vec![Receipt {
        kind,
        ids,
        chat,
        from: sender,
        from_me,
        time,
        node: node.clone(),
    }]
}

/// The read or played receipts for `ids` of `chat` (MESSAGES.md §6): the first id in `id`,
/// the others in `<list><item id/>`, at most [`MAX_RECEIPT_IDS`] a stanza; `participant` (the
/// author, without device) only for groups, broadcast lists and status.
pub(super) fn outgoing(
    kind: &str,
    chat: &Jid,
    participant: Option<&Jid>,
    ids: &[impl AsRef<str>],
    t: u64,
) -> Result<Vec<Node>, SendError> {
    let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    if ids.is_empty() || ids.iter().any(|id| id.is_empty()) {
        return Err(SendError::NoMessageIds);
    }
    let needs_participant = match chat.server_part() {
        Server::Group | Server::Broadcast => true,
        Server::User | Server::Lid | Server::Newsletter | Server::Hosted | Server::HostedLid => {
            false
        }
        _ => return Err(SendError::InvalidRecipient),
    };
    if chat.user_part().is_empty() {
        return Err(SendError::InvalidRecipient);
    }
    let participant = match (needs_participant, participant) {
        (true, Some(p)) => Some(user_of(p)),
        (true, None) => return Err(SendError::MissingParticipant),
        // A 1:1 chat names no participant: the chat is the author.
        (false, _) => None,
    };
    Ok(ids
        .chunks(MAX_RECEIPT_IDS)
        .filter_map(|chunk| {
            let (first, rest) = chunk.split_first()?;
            let mut receipt = Node::new("receipt")
                .attr("id", *first)
                .attr("to", chat.to_non_device())
                .attr("type", kind)
                .attr("t", t.to_string());
            if let Some(p) = &participant {
                receipt = receipt.attr("participant", p.clone());
            }
            if !rest.is_empty() {
                let items = rest.iter().map(|id| Node::new("item").attr("id", *id));
                receipt = receipt.children([Node::new("list").children(items)]);
            }
            Some(receipt)
        })
        .collect())
}

impl ConnectionMachine {
    /// Marks messages of `chat` as read: sends `<receipt type="read">` for `ids` (all from the
    /// same author), which the server passes to the author's devices and our own. In a group
    /// (or a broadcast list, or status) `participant` names the author and is required; in a
    /// 1:1 chat it is ignored. A newsletter gets `read-self`. Many ids are split over several
    /// stanzas of at most [`MAX_RECEIPT_IDS`].
    ///
    /// Call it when the user has seen the messages, with the ids of [`Event::Message`]s. The
    /// server acks the receipt; nothing else follows.
    pub fn mark_read(
        &mut self,
        now: Instant,
        chat: &Jid,
        ids: &[impl AsRef<str>],
        participant: Option<&Jid>,
    ) -> Result<(), SendError> {
        let kind = if matches!(chat.server_part(), Server::Newsletter) {
            "read-self"
        } else {
            "read"
        };
        self.send_receipts(now, kind, chat, ids, participant)
    }

    /// Marks voice or video notes of `chat` as played: `<receipt type="played">`, otherwise
    /// as [`mark_read`](Self::mark_read).
    pub fn mark_played(
        &mut self,
        now: Instant,
        chat: &Jid,
        ids: &[impl AsRef<str>],
        participant: Option<&Jid>,
    ) -> Result<(), SendError> {
        self.send_receipts(now, "played", chat, ids, participant)
    }

    fn send_receipts(
        &mut self,
        now: Instant,
        kind: &str,
        chat: &Jid,
        ids: &[impl AsRef<str>],
        participant: Option<&Jid>,
    ) -> Result<(), SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        let t = self.clock.unix_secs(now);
        for receipt in outgoing(kind, chat, participant, ids, t)? {
            self.send_node(now, &receipt)?;
        }
        Ok(())
    }

    /// Whether `jid` belongs to our own account (phone number or LID).
    pub(super) fn is_own_user(&self, jid: &Jid) -> bool {
        let user = jid.user_part();
        let pn =
            self.creds.device.as_ref().is_some_and(|d| {
                d.jid.user_part() == user && d.jid.server_part() == jid.server_part()
            });
        let lid = self
            .creds
            .own_lid
            .as_ref()
            .or_else(|| self.creds.device.as_ref().and_then(|d| d.lid.as_ref()))
            .is_some_and(|l| l.user_part() == user && l.server_part() == jid.server_part());
        !user.is_empty() && (pn || lid)
    }

    /// An incoming receipt other than `retry`: typed [`Event::Receipt`]s, then its ack.
    pub(super) fn on_receipt(&mut self, now: Instant, node: Node, ack: Option<Node>) {
        let receipts = parse(&node, |j| self.is_own_user(j));
        if receipts.is_empty() {
            // Nothing to type (no id or sender): the application still sees it.
            self.emit(Event::Stanza { node, ack: None });
        }
        for receipt in receipts {
            self.emit(Event::Receipt(Box::new(receipt)));
        }
        if let Some(ack) = ack {
            self.send_internal(now, &ack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    #[test]
    fn kinds_round_trip() {
        for t in [
            None,
            Some("inactive"),
            Some("sender"),
            Some("read"),
            Some("read-self"),
            Some("played"),
            Some("played-self"),
            Some("peer_msg"),
            Some("hist_sync"),
            Some("server-error"),
            Some("enc_rekey_retry"),
        ] {
            assert_eq!(ReceiptKind::from_type(t).as_type(), t);
        }
        assert!(ReceiptKind::ReadSelf.is_read() && !ReceiptKind::Read.is_played());
        assert!(ReceiptKind::Sender.is_delivery());
    }

    #[test]
    fn read_receipt_lists_ids_after_the_first() {
        let chat = jid("15550001111@s.whatsapp.net");
        let out = outgoing("read", &chat, Some(&chat), &["A", "B", "C"], 17).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].to_string(),
            "<receipt id=\"A\" to=\"15550001111@s.whatsapp.net\" type=\"read\" t=\"17\"><list><item id=\"B\"/><item id=\"C\"/></list></receipt>"
        );
    }

    #[test]
    fn group_receipts_need_the_author_and_split_at_the_cap() {
        let group = jid("120363000000000001@g.us");
        assert_eq!(
            outgoing("played", &group, None, &["A"], 1),
            Err(SendError::MissingParticipant)
        );
        let ids: Vec<String> = (0..MAX_RECEIPT_IDS + 1).map(|i| format!("I{i}")).collect();
        let author = jid("15550002222:3@s.whatsapp.net");
        let out = outgoing("played", &group, Some(&author), &ids, 1).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].attr_jid("participant"),
            Some(&jid("15550002222@s.whatsapp.net"))
        );
        assert_eq!(out[1].attr_str("id"), Some("I256"));
        assert!(out[1].child("list").is_none());
        let empty: [&str; 0] = [];
        assert_eq!(
            outgoing("read", &group, Some(&author), &empty, 1),
            Err(SendError::NoMessageIds)
        );
    }

    #[test]
    fn parses_list_and_grouped_receipts() {
        let node = Node::new("receipt")
            .attr("id", "A")
            .attr("from", jid("15550001111:2@s.whatsapp.net"))
            .attr("type", "read")
            .attr("t", "99")
            .children([Node::new("list").children([Node::new("item").attr("id", "B")])]);
        let r = parse(&node, |_| false);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].ids, ["A", "B"]);
        assert_eq!(r[0].chat, jid("15550001111@s.whatsapp.net"));
        assert_eq!(r[0].time, Some(99));
        let grouped = Node::new("receipt")
            .attr("id", "K")
            .attr("from", jid("120363000000000001@g.us"))
            .children([Node::new("participants").attr("key", "K").children([
                Node::new("user")
                    .attr("jid", jid("1@s.whatsapp.net"))
                    .attr("t", "5"),
                Node::new("user").attr("jid", jid("2@s.whatsapp.net")),
            ])]);
        let r = parse(&grouped, |j| j.user_part() == "2");
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].time, r[0].from_me), (Some(5), false));
        assert!(r[1].from_me && r[1].kind == ReceiptKind::Delivered);
    }
}
