//! Bounded tables of the machine: the sent-message cache that answers retry receipts, and the
//! acks held for the application's confirmation.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::event::{RetryRejection, SentMessage};
use crate::binary::Node;
use crate::jid::Jid;
use crate::persist::PendingKey;

/// Most devices whose retry counts one cached message keeps (a group message may be retried
/// by many devices; past this the oldest counts are dropped).
const MAX_REQUESTERS: usize = 1024;

/// The sent-message cache: the most recent `capacity` relayed messages by id, each with the
/// retry count of every device that asked for it. Inserting past the capacity evicts the
/// least recently relayed message.
#[derive(Debug, Clone)]
pub(crate) struct RetryCache {
    capacity: usize,
    max_age: Duration,
    entries: HashMap<String, CacheEntry>,
    /// Ids in relay order with the sequence number of that relay; stale pairs (the id was
    /// relayed again later, or evicted) are skipped.
    order: VecDeque<(String, u64)>,
    seq: u64,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    message: SentMessage,
    seq: u64,
    retries: Vec<(Jid, u8)>,
}

impl RetryCache {
    pub(crate) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            entries: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Stores (or refreshes) a relayed message, keeping the retry counts of a re-relay.
    pub(crate) fn insert(&mut self, message: SentMessage) {
        self.seq += 1;
        let seq = self.seq;
        let id = message.id.clone();
        match self.entries.get_mut(&id) {
            Some(e) => {
                e.message = message;
                e.seq = seq;
            }
            None => {
                self.entries.insert(
                    id.clone(),
                    CacheEntry {
                        message,
                        seq,
                        retries: Vec::new(),
                    },
                );
            }
        }
        self.order.push_back((id, seq));
        while self.entries.len() > self.capacity {
            self.evict_oldest();
        }
        // Stale order pairs are dropped lazily; compact when they dominate.
        if self.order.len() > 2 * self.capacity + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(id, seq)| entries.get(id).is_some_and(|e| e.seq == *seq));
        }
    }

    /// The cached message of `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&SentMessage> {
        self.entries.get(id).map(|e| &e.message)
    }

    fn evict_oldest(&mut self) {
        while let Some((id, seq)) = self.order.pop_front() {
            if self.entries.get(&id).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&id);
                return;
            }
        }
    }

    /// Counts a retry request of `requester` for `id` sent with `count`, at wall time
    /// `now_unix_ms`: the cached message when it should be answered, or why not.
    pub(crate) fn request(
        &mut self,
        id: &str,
        requester: &Jid,
        now_unix_ms: u64,
        max_retries: u8,
    ) -> Result<SentMessage, RetryRejection> {
        let entry = self.entries.get_mut(id).ok_or(RetryRejection::Unknown)?;
        let age = now_unix_ms.saturating_sub(entry.message.sent_unix_ms);
        if u128::from(age) > self.max_age.as_millis() {
            self.entries.remove(id);
            return Err(RetryRejection::Expired);
        }
        let slot = match entry
            .retries
            .iter()
            .position(|(j, _)| j.same_device(requester))
        {
            Some(i) => i,
            None => {
                if entry.retries.len() >= MAX_REQUESTERS {
                    entry.retries.remove(0);
                }
                entry.retries.push((requester.clone(), 0));
                entry.retries.len() - 1
            }
        };
        let answered = &mut entry.retries[slot].1;
        if *answered >= max_retries {
            return Err(RetryRejection::LimitReached);
        }
        *answered += 1;
        Ok(entry.message.clone())
    }
}

/// The frames of a [`Held`] ack.
pub(crate) type HeldFrames = smallvec::SmallVec<[Node; 1]>;

/// What confirming one held stanza sends and forgets.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Frames sent in order on confirmation: the delivery receipt of a decrypted message,
    /// which acknowledges it on its own (SESSION.md §5.1), or the ack of another stanza.
    /// Inline room for one: a held message has its delivery receipt alone.
    pub(crate) frames: HeldFrames,
    /// The ack sent instead, with `error`, when the application refuses the stanza.
    pub(crate) nack: Nack,
    /// The stored copy of a decrypted message, forgotten on confirmation.
    pub(crate) pending: Option<PendingKey>,
}

/// What a refusal ([`Confirm::Nack`](crate::machine::Confirm::Nack)) of a held stanza sends,
/// the error added to it.
#[derive(Debug, Clone)]
pub(crate) enum Nack {
    /// Nothing.
    None,
    /// This ack.
    Ack(Node),
    /// The ack of the decrypted message whose delivery receipt is the first held frame, built
    /// from that receipt when a refusal comes: most messages are confirmed, so it seldom is.
    OfReceipt,
}

impl From<Option<Node>> for Nack {
    fn from(ack: Option<Node>) -> Self {
        ack.map_or(Self::None, Self::Ack)
    }
}

/// Acks held until the application confirms the stanza; bounded, oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct HeldAcks {
    acks: HashMap<u64, Held>,
    order: VecDeque<u64>,
    next: u64,
}

impl HeldAcks {
    /// Holds `ack` and returns its token number. Past `capacity`, the oldest held ack is
    /// dropped unsent: the server delivers that stanza again on the next connection.
    pub(crate) fn hold(&mut self, ack: Held, capacity: usize) -> u64 {
        self.next += 1;
        let token = self.next;
        self.acks.insert(token, ack);
        self.order.push_back(token);
        while self.acks.len() > capacity.max(1) {
            match self.order.pop_front() {
                Some(old) => {
                    self.acks.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() > 2 * capacity.max(1) + 16 {
            let acks = &self.acks;
            self.order.retain(|t| acks.contains_key(t));
        }
        token
    }

    pub(crate) fn take(&mut self, token: u64) -> Option<Held> {
        self.acks.remove(&token)
    }

    pub(crate) fn len(&self) -> usize {
        self.acks.len()
    }

    pub(crate) fn clear(&mut self) {
        self.acks.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, t: u64) -> SentMessage {
        SentMessage {
            id: id.into(),
            to: Jid::user("1"),
            kind: "text".into(),
            context: bytes::Bytes::new(),
            sent_unix_ms: t,
        }
    }

    #[test]
    fn evicts_least_recently_relayed() {
        let mut c = RetryCache::new(2, Duration::from_secs(60));
        let dev = Jid::user("2").with_device(1);
        c.insert(msg("a", 0));
        c.insert(msg("b", 0));
        c.insert(msg("a", 0)); // refreshed
        c.insert(msg("c", 0)); // evicts b
        assert_eq!(c.len(), 2);
        assert_eq!(c.request("b", &dev, 0, 5), Err(RetryRejection::Unknown));
        assert!(c.request("a", &dev, 0, 5).is_ok());
        assert!(c.request("c", &dev, 0, 5).is_ok());
    }

    #[test]
    fn limit_is_per_device_and_age_expires() {
        let mut c = RetryCache::new(8, Duration::from_secs(60));
        let d1 = Jid::user("2").with_device(1);
        let d2 = Jid::user("2").with_device(2);
        c.insert(msg("a", 1000));
        for _ in 0..5 {
            assert!(c.request("a", &d1, 1000, 5).is_ok());
        }
        assert_eq!(
            c.request("a", &d1, 1000, 5),
            Err(RetryRejection::LimitReached)
        );
        assert!(c.request("a", &d2, 1000, 5).is_ok());
        assert_eq!(c.request("a", &d2, 62_000, 5), Err(RetryRejection::Expired));
        assert_eq!(c.request("a", &d2, 62_000, 5), Err(RetryRejection::Unknown));
    }

    #[test]
    fn order_stays_bounded() {
        let mut c = RetryCache::new(4, Duration::from_secs(60));
        for _ in 0..10_000 {
            c.insert(msg("same", 0));
        }
        assert!(c.order.len() <= 2 * 4 + 16);
        let mut h = HeldAcks::default();
        for _ in 0..10_000 {
            let t = h.hold(
                Held {
                    frames: smallvec::smallvec![Node::new("ack")],
                    nack: Nack::None,
                    pending: None,
                },
                3,
            );
            h.take(t);
        }
        assert!(h.order.len() <= 2 * 3 + 16);
        for _ in 0..10 {
            h.hold(
                Held {
                    frames: smallvec::smallvec![Node::new("ack")],
                    nack: Nack::None,
                    pending: None,
                },
                3,
            );
        }
        assert_eq!(h.len(), 3);
    }
}
