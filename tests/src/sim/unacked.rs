//! The `<message>` stanzas handed to a device and not yet acknowledged by it.
//!
//! A real server keeps each message it delivers until the device acknowledges it, and delivers
//! the unacknowledged ones again at the device's next login, before its offline queue. A
//! message written to a client that dies before it stored the message is so not lost.
//! Receipts and notifications are not kept.
//!
//! A device acknowledges a message in one of two ways (SESSION.md §5.1):
//! - its delivery receipt, `<receipt id to=<its from> participant?>` with no `type` or type
//!   `inactive`, `sender` (then `recipient` names the chat) or `peer_msg`, more ids in
//!   `<list><item id/></list>`: what a client sends for a message it decrypted, and all that
//!   Baileys and whatsmeow send then;
//! - `<ack class="message" id to=<its from> participant?>`, with or without `error`: what a
//!   client sends for a message it could not handle.
//!
//! A retry receipt is not an acknowledgement: the copy stays kept until the sender's resend
//! (same id, so it replaces the copy) is receipted, or the device acks it.

use std::collections::{BTreeMap, HashMap};

use amarula_core::binary::Node;
use amarula_core::jid::Jid;

use super::state::jid_attr;

/// How many unacked messages a device keeps; past it the oldest is forgotten (with a warning).
pub(crate) const UNACKED_PER_DEVICE: usize = 4096;

/// A message as the device's ack names it: its id, its `from` (the ack's `to`) and, for a
/// group message, its `participant`. JIDs carry an explicit device, so `:0` and no device
/// compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AckKey {
    id: String,
    from: Jid,
    participant: Option<Jid>,
}

fn explicit(jid: Jid) -> Jid {
    let device = jid.device();
    jid.with_device(device)
}

impl AckKey {
    /// The key of a `<message>` the server hands out; `None` for another stanza, or one
    /// without `id` or `from` (which no ack can name).
    pub(crate) fn of_message(node: &Node) -> Option<Self> {
        if node.tag != "message" {
            return None;
        }
        Some(Self {
            id: node.attr_str("id")?.to_owned(),
            from: explicit(jid_attr(node, "from")?),
            participant: jid_attr(node, "participant").map(explicit),
        })
    }

    /// The messages a client's delivery receipt names (see the module docs): its `id` and
    /// each `<list><item id>`; empty for any other stanza, such as a retry or read receipt.
    pub(crate) fn of_receipt(receipt: &Node) -> Vec<Self> {
        if receipt.tag != "receipt" {
            return Vec::new();
        }
        if !matches!(
            receipt.attr_str("type"),
            None | Some("inactive" | "sender" | "peer_msg")
        ) {
            return Vec::new();
        }
        let Some(from) = jid_attr(receipt, "to").map(explicit) else {
            return Vec::new();
        };
        let participant = jid_attr(receipt, "participant").map(explicit);
        let listed = receipt
            .child("list")
            .map(|l| {
                l.child_nodes()
                    .iter()
                    .filter(|i| i.tag == "item")
                    .filter_map(|i| i.attr_str("id"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        receipt
            .attr_str("id")
            .into_iter()
            .chain(listed)
            .map(|id| Self {
                id: id.to_owned(),
                from: from.clone(),
                participant: participant.clone(),
            })
            .collect()
    }

    /// The message a client's `<ack class="message">` names; `None` when it names none.
    pub(crate) fn of_ack(ack: &Node) -> Option<Self> {
        if ack.tag != "ack" || ack.attr_str("class") != Some("message") {
            return None;
        }
        Some(Self {
            id: ack.attr_str("id")?.to_owned(),
            from: explicit(jid_attr(ack, "to")?),
            participant: jid_attr(ack, "participant").map(explicit),
        })
    }
}

/// One device's unacked messages, in delivery order, at most one copy per [`AckKey`].
#[derive(Debug)]
pub(crate) struct Unacked {
    /// Delivery sequence → the key and the copy as it was written (without `offline`).
    by_seq: BTreeMap<u64, (AckKey, Node)>,
    seq_of: HashMap<AckKey, u64>,
    next_seq: u64,
    cap: usize,
}

impl Default for Unacked {
    fn default() -> Self {
        Self::with_capacity(UNACKED_PER_DEVICE)
    }
}

impl Unacked {
    /// An empty table keeping at most `cap` messages.
    pub(crate) fn with_capacity(cap: usize) -> Self {
        Self {
            by_seq: BTreeMap::new(),
            seq_of: HashMap::new(),
            next_seq: 0,
            cap,
        }
    }

    /// Records `node` as handed to the device; does nothing for a stanza that is not a
    /// message an ack can name. A copy with the key of an older one (a sender's resend of the
    /// same id) replaces it and takes the newest place.
    pub(crate) fn insert(&mut self, node: &Node) {
        let Some(key) = AckKey::of_message(node) else {
            return;
        };
        self.remove(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(key.clone(), seq);
        self.by_seq.insert(seq, (key, node.clone()));
        while self.by_seq.len() > self.cap {
            let Some((_, (old, _))) = self.by_seq.pop_first() else {
                break;
            };
            self.seq_of.remove(&old);
            tracing::warn!(id = %old.id, from = %old.from, cap = self.cap,
                "unacked messages over the bound: the oldest is forgotten");
        }
    }

    /// Forgets the message `key` names (acked, or refused with an error); false when it was
    /// not kept.
    pub(crate) fn remove(&mut self, key: &AckKey) -> bool {
        match self.seq_of.remove(key) {
            Some(seq) => self.by_seq.remove(&seq).is_some(),
            None => false,
        }
    }

    /// Whether the message `key` names is kept.
    #[cfg(test)]
    fn contains(&self, key: &AckKey) -> bool {
        self.seq_of.contains_key(key)
    }

    /// The kept copies in delivery order, for a new login; they stay kept until acked.
    pub(crate) fn copies(&self) -> impl Iterator<Item = (&AckKey, &Node)> {
        self.by_seq.values().map(|(k, n)| (k, n))
    }

    /// How many messages are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_seq.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, from: &str, participant: Option<&str>) -> Node {
        let mut n = Node::new("message")
            .attr("id", id)
            .attr("from", from.parse::<Jid>().unwrap());
        if let Some(p) = participant {
            n = n.attr("participant", p.parse::<Jid>().unwrap());
        }
        n
    }

    fn ack(id: &str, to: &str, participant: Option<&str>) -> Node {
        let mut n = Node::new("ack")
            .attr("class", "message")
            .attr("id", id)
            .attr("to", to);
        if let Some(p) = participant {
            n = n.attr("participant", p);
        }
        n
    }

    fn ids(t: &Unacked) -> Vec<String> {
        t.copies()
            .map(|(_, n)| n.attr_str("id").unwrap().to_owned())
            .collect()
    }

    #[test]
    fn kept_in_order_until_acked() {
        let mut t = Unacked::default();
        t.insert(&msg("A", "1555:2@s.whatsapp.net", None));
        t.insert(&msg("B", "1555:2@s.whatsapp.net", None));
        t.insert(&msg("C", "g1@g.us", Some("1555:2@s.whatsapp.net")));
        // Not messages: not kept.
        t.insert(
            &Node::new("receipt")
                .attr("id", "R")
                .attr("from", "1555@s.whatsapp.net"),
        );
        assert_eq!(ids(&t), ["A", "B", "C"]);
        assert!(t.remove(&AckKey::of_ack(&ack("B", "1555:2@s.whatsapp.net", None)).unwrap()));
        // The group copy is named by its participant too.
        let wrong = AckKey::of_ack(&ack("C", "g1@g.us", None)).unwrap();
        assert!(!t.remove(&wrong));
        let right = AckKey::of_ack(&ack("C", "g1@g.us", Some("1555:2@s.whatsapp.net"))).unwrap();
        assert!(t.remove(&right));
        assert_eq!(ids(&t), ["A"]);
    }

    fn receipt(id: &str, to: &str, kind: Option<&str>) -> Node {
        let mut n = Node::new("receipt").attr("id", id).attr("to", to);
        if let Some(k) = kind {
            n = n.attr("type", k);
        }
        n
    }

    #[test]
    fn a_delivery_receipt_acknowledges() {
        let mut t = Unacked::default();
        for id in ["A", "B", "C", "D", "E"] {
            t.insert(&msg(id, "1555:2@s.whatsapp.net", None));
        }
        t.insert(&msg("G", "g1@g.us", Some("1555:2@s.whatsapp.net")));
        t.insert(&msg("S", "1666:3@s.whatsapp.net", None).attr("recipient", "1555@s.whatsapp.net"));
        // Retry and read receipts are no acknowledgement; nor is a receipt naming another sender.
        for r in [
            receipt("A", "1555:2@s.whatsapp.net", Some("retry")),
            receipt("A", "1555:2@s.whatsapp.net", Some("read")),
            receipt("A", "1555:3@s.whatsapp.net", None),
        ] {
            for key in AckKey::of_receipt(&r) {
                assert!(!t.remove(&key), "{r}");
            }
        }
        assert_eq!(ids(&t), ["A", "B", "C", "D", "E", "G", "S"]);
        // The plain receipt, `inactive` with more ids in a list, a group receipt with its
        // participant, and the `sender` receipt of our own message (`to` the author device).
        let list =
            receipt("B", "1555:2@s.whatsapp.net", Some("inactive")).children([Node::new("list")
                .children([
                    Node::new("item").attr("id", "C"),
                    Node::new("item").attr("id", "D"),
                ])]);
        let group = receipt("G", "g1@g.us", None).attr("participant", "1555:2@s.whatsapp.net");
        let sender = receipt("S", "1666:3@s.whatsapp.net", Some("sender"))
            .attr("recipient", "1555@s.whatsapp.net");
        for r in [
            receipt("A", "1555:2@s.whatsapp.net", None),
            list,
            group,
            sender,
        ] {
            for key in AckKey::of_receipt(&r) {
                assert!(t.remove(&key), "{r}");
            }
        }
        assert_eq!(ids(&t), ["E"]);
        assert!(AckKey::of_receipt(&msg("E", "1555:2@s.whatsapp.net", None)).is_empty());
    }

    #[test]
    fn device_zero_and_no_device_are_one_key() {
        let mut t = Unacked::default();
        t.insert(&msg("A", "1555@s.whatsapp.net", None));
        let key = AckKey::of_ack(&ack("A", "1555:0@s.whatsapp.net", None)).unwrap();
        assert!(t.contains(&key));
    }

    #[test]
    fn a_resend_replaces_the_older_copy() {
        let mut t = Unacked::default();
        t.insert(&msg("A", "1555:2@s.whatsapp.net", None));
        t.insert(&msg("B", "1555:2@s.whatsapp.net", None));
        t.insert(&msg("A", "1555:2@s.whatsapp.net", None).attr("v", "2"));
        assert_eq!(ids(&t), ["B", "A"]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_oldest_goes_past_the_bound() {
        let mut t = Unacked::with_capacity(2);
        for id in ["A", "B", "C"] {
            t.insert(&msg(id, "1555:2@s.whatsapp.net", None));
        }
        assert_eq!(ids(&t), ["B", "C"]);
        let a = AckKey::of_ack(&ack("A", "1555:2@s.whatsapp.net", None)).unwrap();
        assert!(!t.contains(&a));
    }
}
