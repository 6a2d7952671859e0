//! Receiving (SESSION.md §9): an encrypted `<message>` waits (in arrival order) until the
//! records it needs are loaded, is decrypted enc by enc, and becomes an
//! [`IncomingMessage`] held for the application's confirmation, or a retry receipt (§7.1).

use amarula_proto::wa::Message;
use bytes::Bytes;
use prost::Message as _;

use super::nodes::{self, device_address, jid_attr, user_of};
use super::{DecryptError, IncomingMessage, LoadBatch, UndecryptableMessage};
use crate::binary::{self, Node};
use crate::jid::Jid;
use crate::machine::cache::Held;
use crate::machine::{AckToken, ConnectionMachine, Event};
use crate::persist::{Change, PendingMessage};
use crate::signal::{
    Identity, IdentityPolicy, PreKeySignalMessage, SenderKeyDistributionMessage, SessionRecord,
    SignalError,
};
use crate::time::Instant;

/// An incoming message waiting for records.
#[derive(Clone)]
pub(crate) struct Parked {
    pub(crate) node: Node,
    /// Its ack (none when the stanza had no id or sender): sent when it cannot be handled, or
    /// with an error on a refusal. A decrypted message is acknowledged by its delivery
    /// receipt alone (SESSION.md §5.1).
    pub(crate) ack: Option<Node>,
}

/// Who sent a message and in which chat (§9.1).
struct Origin {
    id: String,
    from: Jid,
    sender: Jid,
    chat: Jid,
    from_me: bool,
}

fn origin(node: &Node, own: &Jid) -> Option<Origin> {
    let id = node.attr_str("id")?.to_owned();
    let from = jid_attr(node, "from")?;
    let participant = jid_attr(node, "participant");
    let own_user = user_of(own);
    let (sender, chat) = if from.is_group() || !nodes::is_user(&from) {
        (participant?, from.to_non_device())
    } else if user_of(&from) == own_user {
        let chat = jid_attr(node, "recipient").map_or_else(|| user_of(&from), |r| user_of(&r));
        (from.clone(), chat)
    } else {
        (from.clone(), user_of(&from))
    };
    let sender = device_address(&sender);
    let from_me = user_of(&sender) == own_user;
    Some(Origin {
        id,
        from,
        sender,
        chat,
        from_me,
    })
}

/// Whether a decoded message carries anything besides key distribution and metadata.
fn has_content(message: &Message) -> bool {
    let mut rest = message.clone();
    rest.sender_key_distribution_message = None;
    rest.message_context_info = None;
    rest != Message::default()
}

/// The stored form of a pending message: a node with the metadata and the `Message` bytes.
fn pending_record(msg: &IncomingMessage) -> Vec<u8> {
    let mut node = Node::new("pending")
        .attr("id", msg.id.as_str())
        .attr("chat", msg.chat.clone())
        .attr("sender", msg.sender.clone())
        .attr("t", msg.timestamp.to_string());
    if msg.from_me {
        node = node.attr("from_me", "1");
    }
    if let Some(name) = &msg.push_name {
        node = node.attr("notify", name.as_str());
    }
    let node = node.children([Node::new("plaintext").bytes(msg.message.encode_to_vec())]);
    binary::to_vec(&node).unwrap_or_default()
}

fn from_pending_record(p: &PendingMessage) -> Option<IncomingMessage> {
    let node = binary::decode_owned(&p.node).ok()?;
    let message = Message::decode(node.child("plaintext")?.content_bytes()?).ok()?;
    Some(IncomingMessage {
        id: node.attr_str("id")?.to_owned(),
        chat: jid_attr(&node, "chat")?,
        sender: jid_attr(&node, "sender")?,
        from_me: node.attr_str("from_me") == Some("1"),
        timestamp: node.attr_str("t")?.parse().ok()?,
        push_name: node.attr_str("notify").map(str::to_owned),
        message: Box::new(message),
        pending_key: p.id.clone(),
        ack: None,
    })
}

impl ConnectionMachine {
    /// Takes an encrypted `<message>` in; true when this layer handles it (and its ack).
    pub(in crate::machine) fn receive_encrypted(
        &mut self,
        now: Instant,
        node: Node,
        ack: Option<Node>,
    ) {
        if self.session_msg.incoming.len() >= self.config.max_parked_messages {
            tracing::warn!("too many messages waiting for stored records; left unacked");
            return;
        }
        self.session_msg.incoming.push_back(Parked { node, ack });
        self.advance(now);
    }

    /// Decrypts waiting messages in order while their records are at hand.
    pub(super) fn advance_incoming(&mut self, now: Instant, loads: &mut LoadBatch) {
        let Some(own) = self.own_device() else {
            return;
        };
        while let Some(front) = self.session_msg.incoming.front() {
            let node = front.node.clone();
            if !self.gather_needs(&node, &own, loads) {
                break;
            }
            if let Some(parked) = self.session_msg.incoming.pop_front() {
                self.decrypt_parked(now, parked, &own);
            }
        }
    }

    /// Whether every record `node` needs is known; asks for the others.
    fn gather_needs(&mut self, node: &Node, own: &Jid, loads: &mut LoadBatch) -> bool {
        let Some(o) = origin(node, own) else {
            return true;
        };
        let m = &mut self.session_msg;
        let mut ready = true;
        for enc in node.child_nodes().iter().filter(|c| c.tag == "enc") {
            match enc.attr_str("type") {
                Some("pkmsg") => {
                    if !m.sessions.is_known(&o.sender) {
                        loads.session(m, &o.sender);
                        ready = false;
                    }
                    let prekey = enc
                        .content_bytes()
                        .and_then(|b| PreKeySignalMessage::parse(b).ok())
                        .and_then(|p| p.pre_key_id);
                    if let Some(id) = prekey {
                        if !m.prekeys.is_known(&id) {
                            loads.prekey(m, id);
                            ready = false;
                        }
                    }
                }
                Some("msg") if !m.sessions.is_known(&o.sender) => {
                    loads.session(m, &o.sender);
                    ready = false;
                }
                Some("skmsg") => {
                    let key = (o.chat.clone(), o.sender.clone());
                    if !m.sender_keys.is_known(&key) {
                        loads.sender_key(m, &key);
                        ready = false;
                    }
                }
                _ => {}
            }
        }
        ready
    }

    fn decrypt_pairwise(
        &mut self,
        sender: &Jid,
        kind: &str,
        bytes: &[u8],
    ) -> Result<Vec<u8>, SignalError> {
        let identity = Identity::from_credentials(&self.creds);
        let cap = self.config.max_loaded_records;
        let mut record = self
            .session_msg
            .sessions
            .get_mut(sender)
            .cloned()
            .unwrap_or_else(SessionRecord::new);
        let plaintext = if kind == "pkmsg" {
            let msg = PreKeySignalMessage::parse(bytes)?;
            let one_time = msg
                .pre_key_id
                .and_then(|id| self.session_msg.prekeys.get_mut(&id).map(|k| k.clone()));
            let out = record.decrypt_prekey_message(
                &identity,
                &msg,
                &self.creds.signed_prekey,
                one_time.as_ref(),
                IdentityPolicy::default(),
                &mut self.rng,
            )?;
            self.session_msg
                .sessions
                .put(sender.clone(), Some(record), cap);
            self.persist_session(sender);
            if let Some(id) = out.used_prekey {
                self.session_msg.prekeys.put(id, None, cap);
                self.persist(Change::RemovePreKey(id));
            }
            self.report_identity(sender, out.identity);
            out.plaintext.to_vec()
        } else {
            let pt = record.decrypt(bytes, &mut self.rng)?;
            self.session_msg
                .sessions
                .put(sender.clone(), Some(record), cap);
            self.persist_session(sender);
            pt.to_vec()
        };
        Ok(plaintext)
    }

    fn decrypt_group(
        &mut self,
        chat: &Jid,
        sender: &Jid,
        bytes: &[u8],
    ) -> Result<Vec<u8>, SignalError> {
        let key = (chat.clone(), sender.clone());
        let Some(record) = self.session_msg.sender_keys.get_mut(&key) else {
            let key_id = crate::signal::SenderKeyMessage::parse(bytes)?.key_id;
            return Err(SignalError::UnknownSenderKey { key_id });
        };
        let pt = record.decrypt(bytes)?;
        self.persist_sender_key(&key);
        Ok(pt.to_vec())
    }

    /// Takes in a sender key distributed by `sender` for the group the message names.
    fn process_skdm(
        &mut self,
        chat: &Jid,
        sender: &Jid,
        skdm: &amarula_proto::wa::message::SenderKeyDistributionMessage,
    ) {
        let named = skdm
            .group_id
            .as_deref()
            .and_then(|g| g.parse::<Jid>().ok())
            .filter(Jid::is_group);
        // A key arriving in a group's stanza is for that group, whatever it names: a member
        // must not plant keys for groups the server did not route it from.
        let group = if chat.is_group() {
            if named
                .as_ref()
                .is_some_and(|g| g.to_non_device() != chat.to_non_device())
            {
                tracing::debug!(%chat, "sender key for another group ignored");
                return;
            }
            chat.clone()
        } else {
            match named {
                Some(g) => g,
                None => return,
            }
        };
        let Some(bytes) = skdm.axolotl_sender_key_distribution_message.as_deref() else {
            return;
        };
        let parsed = match SenderKeyDistributionMessage::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "bad sender key distribution");
                return;
            }
        };
        let key = (group.to_non_device(), sender.clone());
        let cap = self.config.max_loaded_records;
        if self.session_msg.sender_keys.get_mut(&key).is_none() {
            self.session_msg.sender_keys.put(
                key.clone(),
                Some(crate::signal::SenderKeyRecord::new()),
                cap,
            );
        }
        if let Some(record) = self.session_msg.sender_keys.get_mut(&key) {
            record.process_distribution(&parsed);
        }
        self.persist_sender_key(&key);
    }

    fn decrypt_parked(&mut self, now: Instant, parked: Parked, own: &Jid) {
        let Parked { node, ack } = parked;
        let Some(o) = origin(&node, own) else {
            tracing::debug!("encrypted message without id or sender");
            if let Some(ack) = ack {
                self.send_internal(now, &ack);
            }
            return;
        };
        let mut content: Option<Message> = None;
        let mut error: Option<DecryptError> = None;
        let mut pairwise_ok = false;
        let mut hide = false;
        let mut enc_count: u8 = 0;
        for enc in node.child_nodes().iter().filter(|c| c.tag == "enc") {
            hide |= enc.attr_str("decrypt-fail") == Some("hide");
            if let Some(c) = enc.attr_str("count").and_then(|c| c.parse::<u8>().ok()) {
                enc_count = enc_count.max(c);
            }
            let kind = enc.attr_str("type").unwrap_or_default().to_owned();
            let bytes = enc.content_bytes().unwrap_or_default();
            if enc.attr_str("v").unwrap_or("2") != "2" {
                error.get_or_insert_with(|| {
                    DecryptError::Unsupported(format!(
                        "{kind} v{}",
                        enc.attr_str("v").unwrap_or_default()
                    ))
                });
                continue;
            }
            let result = match kind.as_str() {
                "pkmsg" | "msg" => self.decrypt_pairwise(&o.sender, &kind, bytes),
                "skmsg" => self.decrypt_group(&o.chat, &o.sender, bytes),
                other => {
                    error.get_or_insert_with(|| DecryptError::Unsupported(other.to_owned()));
                    continue;
                }
            };
            let plaintext = match result {
                Ok(p) => p,
                Err(e) => {
                    error.get_or_insert(DecryptError::Signal(e));
                    continue;
                }
            };
            if kind != "skmsg" {
                pairwise_ok = true;
            }
            let Some(body) = nodes::unpad(&plaintext) else {
                error.get_or_insert(DecryptError::Padding);
                continue;
            };
            let Ok(mut message) = Message::decode(body) else {
                error.get_or_insert(DecryptError::Protobuf);
                continue;
            };
            if o.from_me {
                if let Some(inner) = message.device_sent_message.take().and_then(|d| d.message) {
                    let context = message.message_context_info.take();
                    message = *inner;
                    if message.message_context_info.is_none() {
                        message.message_context_info = context;
                    }
                }
            }
            if let Some(skdm) = message.sender_key_distribution_message.clone() {
                self.process_skdm(&o.chat, &o.sender, &skdm);
            }
            if has_content(&message) && content.is_none() {
                content = Some(message);
            }
        }
        let receipt = self.delivery_receipt(&node, &o);
        match (content, error) {
            (Some(message), _) => self.deliver(now, &node, o, message, receipt, ack),
            (None, None)
            | (None, Some(DecryptError::Signal(SignalError::DuplicateMessage { .. }))) => {
                // Key distribution only, or a message we already handled (delivered again
                // after a restart): confirm it to the server. The delivery receipt is the
                // acknowledgement (§5.1); no ack goes with it.
                self.send_internal(now, &receipt);
            }
            (None, Some(error)) => {
                let force_keys = matches!(
                    error,
                    DecryptError::Signal(
                        SignalError::NoSession
                            | SignalError::UnknownPreKey { .. }
                            | SignalError::UnknownSignedPreKey { .. }
                    )
                ) || (matches!(
                    error,
                    DecryptError::Signal(SignalError::UnknownSenderKey { .. })
                ) && !pairwise_ok);
                let count = self.retry_receipt(now, &node, &o, enc_count, force_keys);
                if let Some(ack) = ack {
                    self.send_internal(now, &ack);
                }
                tracing::debug!(id = %o.id, sender = %o.sender, %error, "undecryptable message");
                self.emit(Event::Undecryptable(Box::new(UndecryptableMessage {
                    id: o.id,
                    chat: o.chat,
                    sender: o.sender,
                    error,
                    retry_count: count,
                    hide,
                })));
            }
        }
    }

    /// The delivery receipt of §6.2.
    fn delivery_receipt(&self, node: &Node, o: &Origin) -> Node {
        let mut receipt = Node::new("receipt")
            .attr("id", o.id.as_str())
            .attr("to", o.from.clone());
        for key in ["participant", "recipient"] {
            if let Some(v) = node.get_attr(key) {
                receipt = receipt.attr(key, v.clone());
            }
        }
        if o.from_me {
            receipt = receipt.attr("type", "sender");
        } else if node.attr_str("category") == Some("peer") {
            receipt = receipt.attr("type", "peer_msg");
        }
        receipt
    }

    fn deliver(
        &mut self,
        now: Instant,
        node: &Node,
        o: Origin,
        message: Message,
        receipt: Node,
        ack: Option<Node>,
    ) {
        let pending_key = format!("{}|{}|{}", o.chat, o.sender, o.id);
        if !self.session_msg.remember_delivered(pending_key.clone()) {
            // The sender sent it again with the same id (after a crash of its own): it was
            // handed out already.
            tracing::debug!(id = %o.id, "duplicate message id; receipted without an event");
            self.send_internal(now, &receipt);
            return;
        }
        let mut incoming = IncomingMessage {
            id: o.id,
            chat: o.chat,
            sender: o.sender,
            from_me: o.from_me,
            timestamp: node
                .attr_str("t")
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| self.clock.unix_secs(now)),
            push_name: node.attr_str("notify").map(str::to_owned),
            message: Box::new(message),
            pending_key: pending_key.clone(),
            ack: None,
        };
        if !self.config.hold_message_acks {
            self.emit(Event::Message(Box::new(incoming)));
            self.send_internal(now, &receipt);
            return;
        }
        // The receipt alone acknowledges the message, as with Baileys and whatsmeow (§5.1,
        // §5.4); the ack is kept for a refusal (`Confirm::Nack`).
        let n = self.held.hold(
            Held {
                frames: vec![receipt],
                nack: ack,
                pending: Some(pending_key.clone()),
            },
            self.config.max_held_acks,
        );
        let token = AckToken((self.generation << 40) | n);
        incoming.ack = Some(token);
        // The message reaches the store before the application sees it: after a crash it is
        // handed out again, while the server copy (never acked) only finds a used key.
        self.persist(Change::Pending(PendingMessage {
            id: pending_key,
            node: pending_record(&incoming),
            ack_token: Some(token.to_raw()),
            received_unix_ms: self.clock.unix_ms(now),
        }));
        self.emit(Event::Message(Box::new(incoming)));
    }

    /// A stored pending message, handed out again after a restart; confirming it forgets it.
    pub(super) fn redeliver_pending(&mut self, pending: PendingMessage) {
        let Some(mut incoming) = from_pending_record(&pending) else {
            tracing::warn!(id = %pending.id, "unreadable pending message dropped");
            self.persist(Change::PendingDone(pending.id));
            return;
        };
        let n = self.held.hold(
            Held {
                frames: Vec::new(),
                nack: None,
                pending: Some(pending.id),
            },
            self.config.max_held_acks,
        );
        incoming.ack = Some(AckToken((self.generation << 40) | n));
        self.emit(Event::Message(Box::new(incoming)));
    }

    /// Sends the retry receipt of §7.1 unless the limit is reached; returns its count.
    fn retry_receipt(
        &mut self,
        now: Instant,
        node: &Node,
        o: &Origin,
        enc_count: u8,
        force_keys: bool,
    ) -> Option<u8> {
        let key = format!("{}|{}", o.id, o.sender);
        let m = &mut self.session_msg;
        let count = match m.retry_counts.get(&key) {
            Some(c) => c.saturating_add(1),
            None => {
                m.retry_order.push_back(key.clone());
                enc_count.saturating_add(1)
            }
        };
        m.retry_counts.insert(key, count);
        while m.retry_counts.len() > 1024 {
            match m.retry_order.pop_front() {
                Some(old) => {
                    m.retry_counts.remove(&old);
                }
                None => break,
            }
        }
        if count > self.config.max_decrypt_retries {
            return None;
        }
        let t = node
            .attr_str("t")
            .map(str::to_owned)
            .unwrap_or_else(|| self.clock.unix_secs(now).to_string());
        let mut receipt = Node::new("receipt")
            .attr("id", o.id.as_str())
            .attr("to", o.from.clone())
            .attr("type", "retry");
        for k in ["participant", "recipient"] {
            if let Some(v) = node.get_attr(k) {
                receipt = receipt.attr(k, v.clone());
            }
        }
        let mut children = vec![
            Node::new("retry")
                .attr("count", count.to_string())
                .attr("id", o.id.as_str())
                .attr("t", t)
                .attr("v", "1"),
            Node::new("registration").bytes(self.creds.registration_id.to_be_bytes().to_vec()),
        ];
        if count > 1 || force_keys {
            // A fresh one-time prekey, stored before the receipt names it.
            let prekey = self.generate_prekeys(1).into_iter().next()?;
            let spk = &self.creds.signed_prekey;
            let mut keys = vec![
                Node::new("type").bytes(vec![crate::signal::KEY_TYPE_DJB]),
                Node::new("identity").bytes(self.creds.identity_key.public_bytes().to_vec()),
                Node::new("key").children([
                    Node::new("id").bytes(nodes::id3(prekey.id)),
                    Node::new("value").bytes(prekey.public().0.to_vec()),
                ]),
                nodes::signed_key_node((spk.id, spk.key_pair.public_bytes(), &spk.signature)),
            ];
            if let Some(device) = &self.creds.device {
                keys.push(Node::new("device-identity").bytes(Bytes::clone(&device.account)));
            }
            children.push(Node::new("keys").children(keys));
        }
        let receipt = receipt.children(children);
        self.send_internal(now, &receipt);
        Some(count)
    }
}
