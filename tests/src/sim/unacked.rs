//! The `<message>` stanzas handed to a device and not yet acked by it.
//!
//! A real server keeps each message it delivers until the device acks it (SESSION.md §5.2:
//! `<ack class="message" id to=<its from> participant?>`), and delivers the unacked ones again
//! at the device's next login, before its offline queue. A message written to a client that
//! dies before it stored the message is so not lost. Receipts and notifications are not kept.

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
