//! Privacy tokens (LID.md §5): the `trusted_contact` tokens contacts give us, attached to our
//! 1:1 messages to them, and ours issued to the contacts we write to.
//!
//! - A `<notification type="privacy_token" from [sender_lid]><tokens><token
//!   type="trusted_contact" t>bytes</token></tokens>` stores the token under the issuer's LID
//!   (the `sender_lid`, else the mapped LID of `from`, else `from`), unless an equally new or
//!   newer one is held.
//! - A 1:1 message to a contact carries `<tctoken>` while the contact's token is valid:
//!   issued in the current bucket of `D` = 7 days or the `N - 1` = 3 before it, as the peers
//!   do.
//! - A presence subscription carries `<tctoken>` likewise (`<presence type="subscribe"
//!   to><tctoken>bytes</tctoken></presence>`), once the token is loaded; without one it goes
//!   bare, as whatsmeow's does.
//! - After a 1:1 send we issue our token to the peer (`<iq xmlns="privacy" type="set"><tokens>
//!   <token jid t type="trusted_contact"/>`) when we never did in this session or the bucket
//!   moved on; after an ack with error 463 at once (the peer may then write back, which gives
//!   us theirs).

use super::nodes::{jid_attr, user_of};
use super::records::Lookup;
use super::{LoadBatch, Messaging, MsgIq};
use crate::binary::Node;
use crate::jid::Jid;
use crate::machine::{ConnectionMachine, IqRequest};
use crate::persist::{Change, TcToken};
use crate::time::Instant;

/// Bucket length `D` (AB prop `tctoken_duration`, WA Web default), seconds.
pub(crate) const TOKEN_BUCKET_SECS: u64 = 604_800;
/// Buckets a token stays valid for (`tctoken_num_buckets`).
pub(crate) const TOKEN_BUCKETS: u64 = 4;
/// Most tokens one notification may carry that are looked at.
const MAX_TOKENS: usize = 16;
/// Most presence subscriptions waiting for a token load.
const MAX_SUBSCRIBES: usize = 256;

/// Whether a token issued at `issued` (unix seconds) has expired at `now`.
pub(crate) fn expired(issued: u64, now: u64) -> bool {
    let cutoff = (now / TOKEN_BUCKET_SECS).saturating_sub(TOKEN_BUCKETS - 1) * TOKEN_BUCKET_SECS;
    issued < cutoff
}

impl Messaging {
    /// The key a contact's token is kept under: its LID user when known.
    pub(crate) fn token_key(&self, user: &Jid) -> Jid {
        user_of(&self.to_lid(&user_of(user)))
    }

    /// Whether the token of `key` is settled in memory; asks the store otherwise.
    pub(super) fn token_known(&mut self, key: &Jid, loads: &mut LoadBatch) -> bool {
        if self.tc_tokens.is_known(key) {
            return true;
        }
        loads.tc_token(self, key);
        false
    }

    /// The valid token of `key` at `now` (unix seconds), when held.
    pub(crate) fn valid_token(&self, key: &Jid, now: u64) -> Option<Vec<u8>> {
        match self.tc_tokens.lookup(key) {
            Lookup::Held(t) if !expired(t.timestamp, now) => Some(t.token.clone()),
            _ => None,
        }
    }
}

impl ConnectionMachine {
    /// A `privacy_token` notification: keeps each `trusted_contact` token (persisted).
    pub(super) fn on_privacy_token(&mut self, node: &Node) {
        let Some(from) = jid_attr(node, "from").map(|j| user_of(&j)) else {
            return;
        };
        let sender_lid = jid_attr(node, "sender_lid").map(|j| user_of(&j));
        if let Some(lid) = &sender_lid {
            if !from.is_lid() {
                self.learn_lid_pairs([(lid.clone(), from.clone())]);
            }
        }
        let key = sender_lid.unwrap_or_else(|| self.session_msg.token_key(&from));
        let Some(tokens) = node.child("tokens") else {
            return;
        };
        for token in tokens
            .child_nodes()
            .iter()
            .filter(|t| t.tag == "token")
            .take(MAX_TOKENS)
        {
            if token.attr_str("type") != Some("trusted_contact") {
                continue;
            }
            let (Some(bytes), Some(t)) = (
                token
                    .content_bytes()
                    .filter(|b| !b.is_empty() && b.len() <= 4096),
                token.attr_str("t").and_then(|t| t.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let token = TcToken {
                token: bytes.to_vec(),
                timestamp: t,
            };
            tracing::debug!(contact = %key, t, "privacy token received");
            self.store_tc_token(&key, token);
        }
    }

    /// Keeps (and persists) the token `key` (a contact's user, its LID when known) gave us,
    /// unless the one held is newer.
    pub(in crate::machine) fn store_tc_token(&mut self, key: &Jid, token: TcToken) {
        if let Lookup::Held(old) = self.session_msg.tc_tokens.lookup(key) {
            if old.timestamp > token.timestamp {
                return;
            }
        }
        let cap = self.config.max_loaded_records;
        self.session_msg
            .tc_tokens
            .put(key.clone(), Some(token.clone()), cap);
        self.persist(Change::TcToken {
            user: key.clone(),
            token,
        });
    }

    /// Issues our token to `peer` (a user) when never issued in this session or the bucket
    /// moved on, or at once with `force`.
    pub(super) fn issue_privacy_token(&mut self, now: Instant, peer: &Jid, force: bool) {
        let peer = user_of(peer);
        if peer.is_server_only() || self.own_identities().contains(&peer) {
            return;
        }
        let now_s = self.clock.unix_secs(now);
        let key = self.session_msg.token_key(&peer);
        let due = match self.session_msg.tc_issued.get(&key) {
            Some(at) => force || now_s / TOKEN_BUCKET_SECS > at / TOKEN_BUCKET_SECS,
            None => true,
        };
        if !due {
            return;
        }
        if self.session_msg.tc_issued.len() >= 4096 {
            self.session_msg.tc_issued.clear();
        }
        self.session_msg.tc_issued.insert(key, now_s);
        let tokens = Node::new("tokens").children([Node::new("token")
            .attr("jid", peer.clone())
            .attr("t", now_s.to_string())
            .attr("type", "trusted_contact")]);
        let req = IqRequest::iq("privacy", "set", Jid::server(), vec![tokens]);
        tracing::debug!(%peer, "issuing our privacy token");
        self.send_messaging_iq(now, req, MsgIq::PrivacyToken);
    }

    /// Queues a presence subscription to `user`; it leaves once the contact's token is
    /// settled (see [`advance_subscribes`](Self::advance_subscribes)).
    pub(in crate::machine) fn queue_subscribe(
        &mut self,
        now: Instant,
        user: &Jid,
    ) -> Result<(), crate::machine::SendError> {
        let m = &mut self.session_msg;
        if m.subscribes.len() >= MAX_SUBSCRIBES {
            return Err(crate::machine::SendError::TooManyPending);
        }
        m.subscribes.push_back(user_of(user));
        self.advance(now);
        Ok(())
    }

    /// Sends the queued presence subscriptions, in order, each with the contact's valid
    /// token when we hold one; stops at the first whose LID or token is still loading.
    pub(super) fn advance_subscribes(&mut self, now: Instant, loads: &mut LoadBatch) {
        let now_s = self.clock.unix_secs(now);
        while let Some(user) = self.session_msg.subscribes.front().cloned() {
            let m = &mut self.session_msg;
            if !m.lid_known(&user, loads) {
                return;
            }
            let key = m.token_key(&user);
            if !m.token_known(&key, loads) {
                return;
            }
            m.subscribes.pop_front();
            let mut node = Node::new("presence")
                .attr("type", "subscribe")
                .attr("to", user.clone());
            if let Some(token) = m.valid_token(&key, now_s) {
                node = node.children([Node::new("tctoken").bytes(token)]);
            }
            if let Err(e) = self.send_node(now, &node) {
                tracing::debug!(%user, error = %e, "presence subscription not sent");
            }
        }
    }
}
