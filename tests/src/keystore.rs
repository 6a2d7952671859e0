//! A synchronous in-memory store for machine tests: applies the machine's persistence events
//! and answers its load requests, as a driver's store does.

use std::collections::HashMap;

use amarula_core::jid::Jid;
use amarula_core::machine::{Event, SentMessage};
use amarula_core::persist::{Change, DeviceList, LoadRequest, Loaded, PendingMessage, SecretKey};

/// Everything the machine handed out for persistence, by kind.
#[derive(Debug, Default, Clone)]
pub struct TestStore {
    /// Sessions by device.
    pub sessions: HashMap<Jid, Vec<u8>>,
    /// Sender keys by (group, sender).
    pub sender_keys: HashMap<(Jid, Jid), Vec<u8>>,
    /// One-time prekeys by id.
    pub prekeys: HashMap<u32, Vec<u8>>,
    /// Device lists by user.
    pub device_lists: HashMap<Jid, DeviceList>,
    /// Pending incoming messages by key, in arrival order.
    pub pending: Vec<PendingMessage>,
    /// Sent messages (the cache for retry receipts), oldest first.
    pub sent: Vec<SentMessage>,
    /// Ids of sent messages the server acknowledged.
    pub acked: Vec<String>,
    /// Message secrets (polls, events) by message.
    pub secrets: HashMap<SecretKey, Vec<u8>>,
    /// LID mappings: each user (LID or phone number) to the other.
    pub lids: HashMap<Jid, Jid>,
    /// Privacy tokens by contact user.
    pub tc_tokens: HashMap<Jid, amarula_core::persist::TcToken>,
    /// How many load requests were answered.
    pub loads: usize,
}

impl TestStore {
    /// Applies a persistence event (other events are ignored).
    pub fn apply_event(&mut self, event: &Event) {
        match event {
            Event::Persist(change) => self.apply(change),
            Event::MessageCached(m) => {
                self.sent.retain(|s| s.id != m.id);
                self.acked.retain(|a| *a != m.id);
                self.sent.push(m.clone());
            }
            _ => {}
        }
    }

    /// Applies one change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Session { address, record } => {
                self.sessions.insert(address.clone(), record.clone());
            }
            Change::RemoveSession(address) => {
                self.sessions.remove(address);
            }
            Change::SenderKey {
                group,
                sender,
                record,
            } => {
                self.sender_keys
                    .insert((group.clone(), sender.clone()), record.clone());
            }
            Change::PreKey { id, record } => {
                self.prekeys.insert(*id, record.clone());
            }
            Change::RemovePreKey(id) => {
                self.prekeys.remove(id);
            }
            Change::DeviceList { user, list } => {
                self.device_lists.insert(user.clone(), list.clone());
            }
            Change::Pending(p) => {
                self.pending.retain(|q| q.id != p.id);
                self.pending.push(p.clone());
            }
            Change::PendingDone(id) => self.pending.retain(|q| q.id != *id),
            Change::SentAcked(id) => self.acked.push(id.clone()),
            Change::MessageSecret { key, record } => {
                self.secrets.insert(key.clone(), record.clone());
            }
            Change::LidMapping { lid, phone } => {
                if let Some(old) = self.lids.remove(lid) {
                    self.lids.remove(&old);
                }
                if let Some(old) = self.lids.remove(phone) {
                    self.lids.remove(&old);
                }
                self.lids.insert(lid.clone(), phone.clone());
                self.lids.insert(phone.clone(), lid.clone());
            }
            Change::TcToken { user, token } => {
                self.tc_tokens.insert(user.clone(), token.clone());
            }
            _ => {}
        }
    }

    /// The sent messages without a server ack, oldest first.
    pub fn unacked(&self) -> Vec<SentMessage> {
        self.sent
            .iter()
            .filter(|m| !self.acked.contains(&m.id))
            .cloned()
            .collect()
    }

    /// The answer to `request`.
    pub fn answer(&mut self, request: &LoadRequest) -> Loaded {
        self.loads += 1;
        let mut loaded = Loaded::nothing_for(request);
        for (jid, slot) in &mut loaded.sessions {
            *slot = self.sessions.get(jid).cloned();
        }
        for (key, slot) in &mut loaded.sender_keys {
            *slot = self.sender_keys.get(key).cloned();
        }
        for (id, slot) in &mut loaded.prekeys {
            *slot = self.prekeys.get(id).cloned();
        }
        for (user, slot) in &mut loaded.device_lists {
            *slot = self.device_lists.get(user).cloned();
        }
        for (key, slot) in &mut loaded.message_secrets {
            *slot = self.secrets.get(key).cloned();
        }
        for (user, slot) in &mut loaded.lid_mappings {
            *slot = self.lids.get(&user.to_non_device()).cloned();
        }
        for (user, slot) in &mut loaded.tc_tokens {
            *slot = self.tc_tokens.get(&user.to_non_device()).cloned();
        }
        loaded
    }
}
