//! Receiving (SESSION.md §9): an encrypted `<message>` waits (in arrival order) until the
//! records it needs are loaded, is decrypted enc by enc, and becomes an
//! [`IncomingMessage`] held for the application's confirmation, or a retry receipt (§7.1).

use amarula_proto::e2e::Message;
use bytes::Bytes;
use prost::Message as _;
use zeroize::Zeroizing;

use super::nodes::{self, device_address, jid_attr, user_of};
use super::records::Lookup;
use super::{DecryptError, IncomingMessage, LoadBatch, UndecryptableMessage};
use crate::binary::{self, Node, NodeStr};
use crate::content::{self, Content, SecretError, SecretRecord, VoteState};
use crate::jid::Jid;
use crate::machine::cache::{Held, Nack};
use crate::machine::{AckToken, ConnectionMachine, Event};
use crate::persist::{Change, PendingKey, PendingMessage, SecretKey};
use crate::signal::{
    Identity, IdentityPolicy, PreKeySignalMessage, SenderKeyDistributionMessage, SessionRecord,
    SignalError,
};
use crate::time::Instant;

/// Our own users (phone number, LID; see `own_identities`), as a slice, without a heap
/// allocation: they are looked up for every message.
pub(in crate::machine) struct OwnUsers {
    users: [Jid; 2],
    len: usize,
}

impl std::ops::Deref for OwnUsers {
    type Target = [Jid];

    fn deref(&self) -> &[Jid] {
        &self.users[..self.len]
    }
}

/// An incoming message waiting for records. Its ack is built from it when it is sent: when
/// the message cannot be handled, or with an error on a refusal. A decrypted message is
/// acknowledged by its delivery receipt alone (SESSION.md §5.1).
#[derive(Clone)]
pub(crate) struct Parked {
    pub(crate) node: Node,
}

/// Who sent a message and in which chat (§9.1, LID.md §2.1–§2.2).
struct Origin<'a> {
    /// The stanza's id, borrowed from it.
    id: &'a str,
    from: Jid,
    sender: Jid,
    /// The sender device's other identity, from the stanza (`sender_pn`/`sender_lid`,
    /// `participant_pn`/`participant_lid`), with the sender's device number.
    sender_alt: Option<Jid>,
    chat: Jid,
    /// The chat's other identity, when the stanza names it (`peer_recipient_pn`/`_lid` on our
    /// own messages, the sender's alternate on a 1:1 message).
    chat_alt: Option<Jid>,
    from_me: bool,
}

impl Origin<'_> {
    /// The (LID, PN) user pairs the stanza tells.
    fn lid_pairs(&self) -> impl Iterator<Item = (Jid, Jid)> {
        [
            (&self.sender, &self.sender_alt),
            (&self.chat, &self.chat_alt),
        ]
        .into_iter()
        .filter_map(|(a, b)| {
            let b = b.as_ref()?;
            Some(if a.is_lid() {
                (user_of(a), user_of(b))
            } else {
                (user_of(b), user_of(a))
            })
        })
    }
}

/// The other identity named by `key`, when it is in the other namespace than `primary`; it
/// gets `primary`'s device number when it has none.
fn alt_attr(node: &Node, key: &str, primary: &Jid) -> Option<Jid> {
    let alt = jid_attr(node, key)?;
    if alt.is_lid() == primary.is_lid() || !nodes::is_user(&alt) {
        return None;
    }
    Some(match alt.explicit_device() {
        Some(_) => device_address(&alt),
        None => user_of(&alt).with_device(primary.device()),
    })
}

/// Resolves a stanza's chat, sender and `from_me`; `own` holds our users (phone number and,
/// when known, LID): either is "me".
fn origin<'a>(node: &'a Node, own: &[Jid]) -> Option<Origin<'a>> {
    let id = node.attr_str("id")?;
    let from = jid_attr(node, "from")?;
    let is_own = |j: &Jid| own.contains(&user_of(j));
    let (sender, chat, sender_alt, chat_alt);
    if from.is_group() || !nodes::is_user(&from) {
        let participant = jid_attr(node, "participant")?;
        let lid_mode = match node.attr_str("addressing_mode") {
            Some(mode) => mode == "lid",
            None => participant.is_lid(),
        };
        let key = if lid_mode {
            "participant_pn"
        } else {
            "participant_lid"
        };
        sender_alt = alt_attr(node, key, &participant);
        sender = device_address(&participant);
        chat = from.to_non_device();
        chat_alt = None;
    } else if is_own(&from) {
        chat = jid_attr(node, "recipient").map_or_else(|| user_of(&from), |r| user_of(&r));
        let key = if chat.is_lid() {
            "peer_recipient_pn"
        } else {
            "peer_recipient_lid"
        };
        chat_alt = alt_attr(node, key, &chat).map(|j| user_of(&j));
        sender = device_address(&from);
        sender_alt = None;
    } else {
        let key = if from.is_lid() {
            "sender_pn"
        } else {
            "sender_lid"
        };
        sender_alt = alt_attr(node, key, &from);
        sender = device_address(&from);
        chat = user_of(&from);
        chat_alt = sender_alt.as_ref().map(user_of);
    }
    let from_me = is_own(&sender);
    Some(Origin {
        id,
        from,
        sender,
        sender_alt,
        chat,
        chat_alt,
        from_me,
    })
}

/// The content of a decrypted plaintext: the `Message`, taken out of `deviceSentMessage` when
/// it came from our own device (the outer message context is kept when the inner has none).
fn content_message(raw: &[u8], from_me: bool) -> Option<Message> {
    let mut message = Message::decode(raw).ok()?;
    if from_me {
        if let Some(inner) = message.device_sent_message.take().and_then(|d| d.message) {
            let context = message.message_context_info.take();
            message = *inner;
            if message.message_context_info.is_none() {
                message.message_context_info = context;
            }
        }
    }
    Some(message)
}

/// What the stored form of a pending message is written from: the message's metadata and
/// its plaintext.
struct PendingParts<'a> {
    id: &'a str,
    chat: &'a Jid,
    sender: &'a Jid,
    timestamp: u64,
    from_me: bool,
    push_name: Option<&'a str>,
    sender_alt: Option<&'a Jid>,
    raw: &'a [u8],
}

/// The stored form of a pending message: a node with the metadata and the plaintext bytes as
/// received (so that fields no schema knows survive a restart too):
/// `<pending id chat sender t [from_me] [notify] [sender_alt]><plaintext>…</plaintext></pending>`.
/// Written straight into `scratch` (the machine's reused encode buffer) from its parts, byte
/// for byte what encoding that node gives, then copied out into one shared allocation
/// ([`shared_copy`]): the plaintext at its end is the message's [`raw`](IncomingMessage::raw)
/// too.
fn pending_record(parts: &PendingParts<'_>, scratch: &mut Vec<u8>) -> Bytes {
    scratch.clear();
    let out = match write_pending(parts, scratch) {
        Ok(()) => shared_copy(scratch),
        Err(_) => Bytes::new(),
    };
    scratch.clear();
    if scratch.capacity() > crate::machine::ENCODE_BUF_KEPT {
        // A large plaintext does not keep its room (as after a large send).
        *scratch = Vec::with_capacity(crate::machine::ENCODE_BUF_START);
    }
    out
}

/// A copy of `bytes` whose clones and slices share one allocation, the reference count
/// included: up to 4 KiB the bytes go into an array of the next size class (256 B, 1 KiB,
/// 4 KiB) that owns the `Bytes`, allocated once with its count; past that, a `Vec` of the
/// exact size, to which the first clone or slice adds the count's allocation.
fn shared_copy(bytes: &[u8]) -> Bytes {
    /// `len` bytes at the start of an array: the owner of a `Bytes`.
    struct Fixed<const N: usize> {
        len: usize,
        buf: [u8; N],
    }
    impl<const N: usize> AsRef<[u8]> for Fixed<N> {
        fn as_ref(&self) -> &[u8] {
            self.buf.get(..self.len).unwrap_or_default()
        }
    }
    fn fixed<const N: usize>(bytes: &[u8]) -> Bytes {
        let mut buf = [0u8; N];
        match buf.get_mut(..bytes.len()) {
            Some(room) => room.copy_from_slice(bytes),
            None => return Bytes::copy_from_slice(bytes),
        }
        Bytes::from_owner(Fixed {
            len: bytes.len(),
            buf,
        })
    }
    match bytes.len() {
        0..=256 => fixed::<256>(bytes),
        257..=1024 => fixed::<1024>(bytes),
        1025..=4096 => fixed::<4096>(bytes),
        _ => Bytes::copy_from_slice(bytes),
    }
}

fn write_pending(msg: &PendingParts<'_>, out: &mut Vec<u8>) -> Result<(), binary::EncodeError> {
    use binary::{write_bytes, write_jid, write_list_start, write_str};
    use compact_str::ToCompactString as _;
    // Inline: a timestamp fits a `CompactString` without the heap.
    let t = msg.timestamp.to_compact_string();
    let attrs = 4
        + usize::from(msg.from_me)
        + usize::from(msg.push_name.is_some())
        + usize::from(msg.sender_alt.is_some());
    // The list: tag, a key and a value per attribute, the content.
    write_list_start(out, 1 + 2 * attrs + 1);
    write_str(out, "pending")?;
    write_str(out, "id")?;
    write_str(out, msg.id)?;
    write_str(out, "chat")?;
    write_jid(out, msg.chat)?;
    write_str(out, "sender")?;
    write_jid(out, msg.sender)?;
    write_str(out, "t")?;
    write_str(out, &t)?;
    if msg.from_me {
        write_str(out, "from_me")?;
        write_str(out, "1")?;
    }
    if let Some(name) = msg.push_name {
        write_str(out, "notify")?;
        write_str(out, name)?;
    }
    if let Some(alt) = msg.sender_alt {
        write_str(out, "sender_alt")?;
        write_jid(out, alt)?;
    }
    // One child, `<plaintext>` with the bytes as its content, last: the record ends with
    // the plaintext.
    write_list_start(out, 1);
    write_list_start(out, 2);
    write_str(out, "plaintext")?;
    write_bytes(out, msg.raw)
}

fn from_pending_record(p: &PendingMessage, own: &[Jid]) -> Option<Box<IncomingMessage>> {
    let node = binary::decode_owned(&p.node).ok()?;
    let raw = Bytes::copy_from_slice(node.child("plaintext")?.content_bytes()?);
    let from_me = node.attr_str("from_me") == Some("1");
    let message = content_message(&raw, from_me)?;
    let sender_alt = jid_attr(&node, "sender_alt");
    let mut msg = incoming(
        node.attr_str("id")?.into(),
        jid_attr(&node, "chat")?,
        jid_attr(&node, "sender")?,
        from_me,
        node.attr_str("t")?.parse().ok()?,
        node.attr_str("notify").map(str::to_owned),
        message,
        raw,
        p.id.clone(),
        own,
    );
    msg.sender_alt = sender_alt;
    Some(msg)
}

/// An incoming message with its content classified, in the box its event carries.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per field of the message"
)]
fn incoming(
    id: NodeStr,
    chat: Jid,
    sender: Jid,
    from_me: bool,
    timestamp: u64,
    push_name: Option<String>,
    message: Message,
    raw: Bytes,
    pending_key: PendingKey,
    own: &[Jid],
) -> Box<IncomingMessage> {
    let classified = content::classify_shared(
        &message,
        &content::Origin {
            chat: &chat,
            sender: &sender,
            own,
        },
        &raw,
    );
    Box::new(IncomingMessage {
        id,
        chat,
        sender,
        sender_alt: None,
        from_me,
        timestamp,
        push_name,
        message,
        raw,
        content: classified.content,
        wrappers: classified.wrappers,
        context: classified.context,
        pending_key,
        ack: None,
    })
}

/// Decrypts a vote, trying our other identity where the creator or the voter is us (the
/// sender may have keyed it by our phone number or our LID).
fn decrypt_vote(
    vote: &mut content::PollVote,
    record: &SecretRecord,
    creator: &Jid,
    voter: &Jid,
    own: &[Jid],
) {
    let alternates = |j: &Jid| -> Vec<Jid> {
        let mut out = vec![j.clone()];
        if own.contains(j) {
            out.extend(own.iter().filter(|o| *o != j).cloned());
        }
        out
    };
    let mut last = SecretError::Decrypt;
    for c in alternates(creator) {
        for v in alternates(voter) {
            match vote.decrypt(&record.secret, &record.options, &c, &v) {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
    }
    vote.state = VoteState::Undecrypted(last);
}

impl ConnectionMachine {
    /// Takes an encrypted `<message>` in; true when this layer handles it (and its ack).
    pub(in crate::machine) fn receive_encrypted(&mut self, now: Instant, node: Node) {
        if self.session_msg.incoming.len() >= self.config.max_parked_messages {
            tracing::warn!("too many messages waiting for stored records; left unacked");
            return;
        }
        self.session_msg.incoming.push_back(Parked { node });
        self.advance(now);
    }

    /// Decrypts waiting messages in order while their records are at hand.
    pub(super) fn advance_incoming(&mut self, now: Instant, loads: &mut LoadBatch) {
        if self.own_device().is_none() {
            return;
        }
        let own = self.own_identities();
        while let Some(parked) = self.session_msg.incoming.pop_front() {
            if !self.gather_needs(&parked.node, &own, loads) {
                // Back in front, to wait for its records (nothing else touched the queue).
                self.session_msg.incoming.push_front(parked);
                break;
            }
            self.decrypt_parked(now, parked, &own);
        }
    }

    /// The Signal addresses to decrypt a message of `o` under: the primary (the LID device
    /// whenever the mapping is known) and the alternate identity to retry under.
    fn addresses(&self, o: &Origin<'_>) -> (Jid, Option<Jid>) {
        let m = &self.session_msg;
        let primary = m.signal_address(&o.sender);
        let alternate = if primary == o.sender {
            o.sender_alt.clone().or_else(|| {
                m.alt_user(&o.sender)
                    .map(|u| super::lid::same_device_on(&u, &o.sender))
            })
        } else {
            Some(o.sender.clone())
        };
        let alternate = alternate.filter(|a| *a != primary);
        (primary, alternate)
    }

    /// Whether every record `node` needs is known; asks for the others. Pairs the stanza
    /// tells are learned (and persisted) first.
    fn gather_needs(&mut self, node: &Node, own: &[Jid], loads: &mut LoadBatch) -> bool {
        let Some(o) = origin(node, own) else {
            return true;
        };
        self.learn_lid_pairs(o.lid_pairs());
        if !self.session_msg.lid_known(&o.sender, loads) {
            return false;
        }
        let (primary, alternate) = self.addresses(&o);
        let m = &mut self.session_msg;
        let mut ready = true;
        let addresses = std::iter::once(&primary).chain(alternate.as_ref());
        for enc in node.child_nodes().iter().filter(|c| c.tag == "enc") {
            match enc.attr_str("type") {
                Some(kind @ ("pkmsg" | "msg")) => {
                    for addr in addresses.clone() {
                        if !m.sessions.is_known(addr) {
                            loads.session(m, addr);
                            ready = false;
                        }
                    }
                    let prekey = (kind == "pkmsg")
                        .then(|| enc.content_bytes())
                        .flatten()
                        .and_then(|b| PreKeySignalMessage::parse(b).ok())
                        .and_then(|p| p.pre_key_id);
                    if let Some(id) = prekey {
                        if !m.prekeys.is_known(&id) {
                            loads.prekey(m, id);
                            ready = false;
                        }
                    }
                }
                Some("skmsg") => {
                    for addr in addresses.clone() {
                        let key = (o.chat.clone(), addr.clone());
                        if !m.sender_keys.is_known(&key) {
                            loads.sender_key(m, &key);
                            ready = false;
                        }
                    }
                }
                _ => {}
            }
        }
        ready
    }

    /// Decrypts one pairwise `enc` under `primary`, and on a failure under `alternate` when it
    /// holds a session (LID.md §2.3).
    fn decrypt_pairwise_either(
        &mut self,
        primary: &Jid,
        alternate: Option<&Jid>,
        kind: &str,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SignalError> {
        match self.decrypt_pairwise(primary, kind, bytes, out) {
            Err(e) if !matches!(e, SignalError::DuplicateMessage { .. }) => {
                let Some(alt) = alternate else {
                    return Err(e);
                };
                let has = matches!(
                    self.session_msg.sessions.lookup(alt),
                    Lookup::Held(r) if r.has_session()
                );
                if !has {
                    return Err(e);
                }
                tracing::debug!(%primary, %alt, error = %e, "retrying under the alternate identity");
                self.decrypt_pairwise(alt, kind, bytes, out).map_err(|_| e)
            }
            other => other,
        }
    }

    /// Decrypts a group `enc` under the primary sender, then the alternate one.
    fn decrypt_group_either(
        &mut self,
        chat: &Jid,
        primary: &Jid,
        alternate: Option<&Jid>,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SignalError> {
        match self.decrypt_group(chat, primary, bytes, out) {
            Err(e) if !matches!(e, SignalError::DuplicateMessage { .. }) => match alternate {
                Some(alt)
                    if matches!(
                        self.session_msg
                            .sender_keys
                            .lookup(&(chat.clone(), alt.clone())),
                        Lookup::Held(_)
                    ) =>
                {
                    self.decrypt_group(chat, alt, bytes, out).map_err(|_| e)
                }
                _ => Err(e),
            },
            other => other,
        }
    }

    fn decrypt_pairwise(
        &mut self,
        sender: &Jid,
        kind: &str,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SignalError> {
        if kind != "pkmsg" {
            // Decrypted in place: on an error `SessionRecord::decrypt_into` leaves the record
            // as it was, so nothing is copied for the usual case. Without a record it fails
            // too.
            match self.session_msg.sessions.get_mut(sender) {
                Some(record) => record.decrypt_into(bytes, &mut self.rng, out)?,
                None => SessionRecord::new().decrypt_into(bytes, &mut self.rng, out)?,
            }
            self.persist_session(sender);
            return Ok(());
        }
        let identity = Identity::from_credentials(&self.creds);
        let cap = self.config.max_loaded_records;
        let mut record = self
            .session_msg
            .sessions
            .get_mut(sender)
            .cloned()
            .unwrap_or_else(SessionRecord::new);
        let msg = PreKeySignalMessage::parse(bytes)?;
        let one_time = msg
            .pre_key_id
            .and_then(|id| self.session_msg.prekeys.get_mut(&id).map(|k| k.clone()));
        let decrypted = record.decrypt_prekey_message(
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
        if let Some(id) = decrypted.used_prekey {
            self.session_msg.prekeys.put(id, None, cap);
            self.persist(Change::RemovePreKey(id));
        }
        self.report_identity(sender, decrypted.identity);
        out.clear();
        out.extend_from_slice(&decrypted.plaintext);
        Ok(())
    }

    fn decrypt_group(
        &mut self,
        chat: &Jid,
        sender: &Jid,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SignalError> {
        let key = (chat.clone(), sender.clone());
        let Some(record) = self.session_msg.sender_keys.get_mut(&key) else {
            let key_id = crate::signal::SenderKeyMessage::parse(bytes)?.key_id;
            return Err(SignalError::UnknownSenderKey { key_id });
        };
        let plaintext = record.decrypt(bytes)?;
        self.persist_sender_key(&key);
        out.clear();
        out.extend_from_slice(&plaintext);
        Ok(())
    }

    /// Takes in a sender key distributed by `sender` for the group the message names.
    fn process_skdm(
        &mut self,
        chat: &Jid,
        sender: &Jid,
        skdm: &amarula_proto::e2e::SenderKeyDistributionMessage,
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

    fn decrypt_parked(&mut self, now: Instant, parked: Parked, own: &[Jid]) {
        let Parked { node } = parked;
        let Some(o) = origin(&node, own) else {
            tracing::debug!("encrypted message without id or sender");
            if let Some(ack) = self.ack_for(&node) {
                self.send_internal(now, &ack);
            }
            return;
        };
        // A copy of a message handed out already (the server hands it out again when its
        // receipt was lost with a crash) is receipted before any decryption: by then its
        // receiving chain may be gone, dropped by later ratchet steps, and decrypting it
        // would fail instead of telling a duplicate.
        let keys = super::pending_key(&o.chat, &o.sender, o.id);
        if self.session_msg.delivered.contains(&keys.0) {
            tracing::debug!(id = %o.id, "delivered again; receipted without decrypting");
            let receipt = self.delivery_receipt(&node, &o);
            self.send_internal(now, &receipt);
            return;
        }
        let (primary, alternate) = self.addresses(&o);
        if let Some(alt) = alternate
            .as_ref()
            .filter(|a| primary.is_lid() && !a.is_lid())
        {
            // A PN sender with a known LID: its state moves to the LID address once.
            self.migrate_session(alt, &primary);
            if o.chat.is_group() {
                self.migrate_sender_key(&o.chat, alt, &primary);
            }
        }
        // The content's message and its plaintext's length at the start of `kept`.
        let mut content: Option<(Message, usize)> = None;
        let mut error: Option<DecryptError> = None;
        let mut pairwise_ok = false;
        let mut hide = false;
        let mut enc_count: u8 = 0;
        // The machine's plaintext buffer, taken for the loop (the calls in it need the
        // machine) and zeroized before it goes back.
        let mut plaintext = Zeroizing::new(std::mem::take(&mut self.plain));
        // The content's plaintext, kept out of the way of the encs after it.
        let mut kept = Zeroizing::new(Vec::new());
        for enc in node.child_nodes().iter().filter(|c| c.tag == "enc") {
            hide |= enc.attr_str("decrypt-fail") == Some("hide");
            if let Some(c) = enc.attr_str("count").and_then(|c| c.parse::<u8>().ok()) {
                enc_count = enc_count.max(c);
            }
            let kind = enc.attr_str("type").unwrap_or_default();
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
            let result = match kind {
                "pkmsg" | "msg" => self.decrypt_pairwise_either(
                    &primary,
                    alternate.as_ref(),
                    kind,
                    bytes,
                    &mut plaintext,
                ),
                "skmsg" => self.decrypt_group_either(
                    &o.chat,
                    &primary,
                    alternate.as_ref(),
                    bytes,
                    &mut plaintext,
                ),
                other => {
                    error.get_or_insert_with(|| DecryptError::Unsupported(other.to_owned()));
                    continue;
                }
            };
            if let Err(e) = result {
                error.get_or_insert(DecryptError::Signal(e));
                continue;
            }
            if kind != "skmsg" {
                pairwise_ok = true;
            }
            let Some(body) = nodes::unpad(&plaintext) else {
                error.get_or_insert(DecryptError::Padding);
                continue;
            };
            let Some(message) = content_message(body, o.from_me) else {
                error.get_or_insert(DecryptError::Protobuf);
                continue;
            };
            if let Some(skdm) = &message.sender_key_distribution_message {
                self.process_skdm(&o.chat, &primary, skdm);
            }
            if o.from_me {
                self.lid_migration_sync(&message);
            }
            // Only pure key distribution is the machine's own to consume. The check is on the
            // bytes, not the decoded message: a field our schema lacks is content too.
            if content.is_none() && !content::is_key_distribution_only(body) {
                // The body is a prefix of the plaintext (the padding is cut off its end).
                content = Some((message, body.len()));
                std::mem::swap(&mut plaintext, &mut kept);
            }
        }
        match (content, error) {
            (Some((message, len)), _) => {
                let body = kept.get(..len).unwrap_or_default();
                self.deliver(now, &node, o, message, body, keys);
            }
            (None, None)
            | (None, Some(DecryptError::Signal(SignalError::DuplicateMessage { .. }))) => {
                // Key distribution only, or a message we already handled (delivered again
                // after a restart): confirm it to the server. The delivery receipt is the
                // acknowledgement (§5.1); no ack goes with it.
                let receipt = self.delivery_receipt(&node, &o);
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
                if let Some(ack) = self.ack_for(&node) {
                    self.send_internal(now, &ack);
                }
                tracing::debug!(id = %o.id, sender = %o.sender, %error, "undecryptable message");
                self.emit(Event::Undecryptable(Box::new(UndecryptableMessage {
                    id: o.id.to_owned(),
                    chat: o.chat,
                    sender: o.sender,
                    error,
                    retry_count: count,
                    hide,
                })));
            }
        }
        // The buffer with room goes back (the content's, when it was swapped out).
        if kept.capacity() > plaintext.capacity() {
            std::mem::swap(&mut plaintext, &mut kept);
        }
        self.give_back_plaintext(plaintext);
    }

    /// Puts the plaintext buffer back, zeroized; a large one is not kept.
    fn give_back_plaintext(&mut self, mut plaintext: Zeroizing<Vec<u8>>) {
        use zeroize::Zeroize as _;
        plaintext.zeroize();
        if plaintext.capacity() <= crate::machine::ENCODE_BUF_KEPT {
            self.plain = std::mem::take(&mut *plaintext);
        }
    }

    /// The delivery receipt of §6.2.
    fn delivery_receipt(&self, node: &Node, o: &Origin<'_>) -> Node {
        let mut receipt = Node::new("receipt")
            .attr("id", o.id)
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
        o: Origin<'_>,
        message: Message,
        body: &[u8],
        (delivered, pending_key): (super::DeliveredKey, PendingKey),
    ) {
        let receipt = self.delivery_receipt(node, &o);
        if !self.session_msg.remember_delivered(delivered) {
            // The sender sent it again with the same id (after a crash of its own): it was
            // handed out already.
            tracing::debug!(id = %o.id, "duplicate message id; receipted without an event");
            self.send_internal(now, &receipt);
            return;
        }
        let own = self.own_identities();
        let sender_alt = o.sender_alt.clone().or_else(|| {
            self.session_msg
                .alt_user(&o.sender)
                .map(|u| super::lid::same_device_on(&u, &o.sender))
        });
        let timestamp = node
            .attr_str("t")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| self.clock.unix_secs(now));
        let push_name = node.attr_str("notify");
        // The stored copy of a held message, whose plaintext is the raw plaintext handed out
        // (one allocation for both).
        let record = self.config.hold_message_acks.then(|| {
            let parts = PendingParts {
                id: o.id,
                chat: &o.chat,
                sender: &o.sender,
                timestamp,
                from_me: o.from_me,
                push_name,
                sender_alt: sender_alt.as_ref(),
                raw: body,
            };
            pending_record(&parts, &mut self.buf)
        });
        let raw = match &record {
            Some(r) if !r.is_empty() => r.slice(r.len().saturating_sub(body.len())..),
            _ => Bytes::copy_from_slice(body),
        };
        let mut incoming = incoming(
            o.id.into(),
            o.chat,
            o.sender,
            o.from_me,
            timestamp,
            push_name.map(str::to_owned),
            message,
            raw,
            pending_key.clone(),
            &own,
        );
        incoming.sender_alt = sender_alt;
        self.keep_secret(&incoming);
        // App-state keys from our phone are stored before the message is acknowledged.
        self.appstate_on_message(now, incoming.from_me, &incoming.message);
        // History sync: the machine's own to fetch and hand out; acked once handed out.
        if let Some(input) = crate::machine::history::from_phone(&incoming) {
            if let Some(node) = record {
                self.persist(Change::Pending(PendingMessage {
                    id: pending_key.clone(),
                    node,
                    ack_token: None,
                    received_unix_ms: self.clock.unix_ms(now),
                }));
            }
            let pending = Some(pending_key).filter(|_| self.config.hold_message_acks);
            let nack = self.ack_for(node).into();
            self.receive_from_phone(now, &incoming, input, Some(receipt), nack, pending);
            return;
        }
        let Some(record) = record else {
            self.hand_out(incoming);
            self.send_internal(now, &receipt);
            return;
        };
        // The receipt alone acknowledges the message, as with Baileys and whatsmeow (§5.1,
        // §5.4); a refusal (`Confirm::Nack`) sends the ack instead, built from the receipt.
        let n = self.held.hold(
            Held {
                frames: smallvec::smallvec![receipt],
                nack: Nack::OfReceipt,
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
            node: record,
            ack_token: Some(token.to_raw()),
            received_unix_ms: self.clock.unix_ms(now),
        }));
        self.hand_out(incoming);
    }

    /// Our own users: the phone number one and, once known, the LID.
    pub(in crate::machine) fn own_identities(&self) -> OwnUsers {
        let mut own = OwnUsers {
            users: [Jid::server(), Jid::server()],
            len: 0,
        };
        for user in [
            self.creds.device.as_ref().map(|d| &d.jid),
            self.creds.own_lid.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            own.users[own.len] = user_of(user);
            own.len += 1;
        }
        own
    }

    /// Keeps the secret of a message that has one (a poll, an event), with a poll's options,
    /// before the application sees the message: votes that arrive later decrypt with it,
    /// after a restart too.
    fn keep_secret(&mut self, msg: &IncomingMessage) {
        let secret = match &msg.content {
            Content::Poll(p) => p.secret.clone(),
            _ => msg
                .message
                .message_context_info
                .as_ref()
                .and_then(|c| c.message_secret.clone()),
        };
        let Some(secret) = secret.filter(|s| s.len() == 32) else {
            return;
        };
        let options = match &msg.content {
            Content::Poll(p) => p.options.clone(),
            _ => Vec::new(),
        };
        let key = SecretKey {
            chat: msg.chat.to_non_device(),
            author: user_of(&msg.sender),
            id: msg.id.to_string(),
        };
        self.store_secret(key, SecretRecord::new(secret, options));
    }

    /// Gives a message to the application, or queues a poll vote until its poll's secret is
    /// at hand.
    fn hand_out(&mut self, msg: Box<IncomingMessage>) {
        // Bounded like the messages waiting for records: past the cap a vote goes out
        // undecrypted rather than memory growing without end.
        if matches!(msg.content, Content::PollVote(_))
            && self.session_msg.votes.len() < self.config.max_parked_messages
        {
            self.session_msg.votes.push_back(msg);
        } else {
            self.emit(Event::Message(msg));
        }
    }

    /// Decrypts the waiting votes in order while their polls' secrets are known (or known to
    /// be missing); asks the store for the first one that is not.
    pub(super) fn advance_votes(&mut self, loads: &mut LoadBatch) {
        let own = self.own_identities();
        while let Some(front) = self.session_msg.votes.front() {
            let Content::PollVote(vote) = &front.content else {
                if let Some(msg) = self.session_msg.votes.pop_front() {
                    self.emit(Event::Message(msg));
                }
                continue;
            };
            let key = vote.poll.author.as_ref().map(|author| SecretKey {
                chat: front.chat.to_non_device(),
                author: author.clone(),
                id: vote.poll.id.clone(),
            });
            let record = match &key {
                None => None,
                Some(key) => match self.session_msg.secrets.lookup(key) {
                    Lookup::Held(r) => Some(r.clone()),
                    Lookup::Absent => None,
                    Lookup::Unknown => {
                        let key = key.clone();
                        loads.secret(&mut self.session_msg, &key);
                        break;
                    }
                },
            };
            let Some(mut msg) = self.session_msg.votes.pop_front() else {
                break;
            };
            if let (Content::PollVote(vote), Some(record), Some(key)) =
                (&mut msg.content, record, key)
            {
                decrypt_vote(vote, &record, &key.author, &user_of(&msg.sender), &own);
            }
            if msg.ack.is_none() && self.config.hold_message_acks {
                // Its token went with an earlier connection: confirming the new one forgets
                // the stored copy (the server's copy was acked as a duplicate).
                let n = self.held.hold(
                    Held {
                        frames: crate::machine::cache::HeldFrames::new(),
                        nack: Nack::None,
                        pending: Some(msg.pending_key.clone()),
                    },
                    self.config.max_held_acks,
                );
                msg.ack = Some(AckToken((self.generation << 40) | n));
            }
            self.emit(Event::Message(msg));
        }
    }

    /// A stored pending message, handed out again after a restart; confirming it forgets it.
    pub(super) fn redeliver_pending(&mut self, now: Instant, pending: PendingMessage) {
        let own = self.own_identities();
        let Some(mut incoming) = from_pending_record(&pending, &own) else {
            tracing::warn!(id = %pending.id, "unreadable pending message dropped");
            self.persist(Change::PendingDone(pending.id));
            return;
        };
        // History sync: fetched and handed out again (the hist_sync receipt still owed).
        if let Some(input) = crate::machine::history::from_phone(&incoming) {
            self.receive_from_phone(now, &incoming, input, None, Nack::None, Some(pending.id));
            return;
        }
        let n = self.held.hold(
            Held {
                frames: crate::machine::cache::HeldFrames::new(),
                nack: Nack::None,
                pending: Some(pending.id),
            },
            self.config.max_held_acks,
        );
        incoming.ack = Some(AckToken((self.generation << 40) | n));
        self.hand_out(incoming);
    }

    /// Sends the retry receipt of §7.1 unless the limit is reached; returns its count.
    fn retry_receipt(
        &mut self,
        now: Instant,
        node: &Node,
        o: &Origin<'_>,
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
            .attr("id", o.id)
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
                .attr("id", o.id)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The pending key is inline, and a stored key of either form gives the duplicate check
    /// the same entry as the message it names.
    #[test]
    fn pending_keys_are_inline_and_match_the_older_form() {
        let jid = |s: &str| s.parse::<Jid>().expect("jid");
        let (chat, sender) = (
            jid("15550009999@s.whatsapp.net"),
            jid("15550009999:3@s.whatsapp.net"),
        );
        let (digest, key) = super::super::pending_key(&chat, &sender, "3EB0ABCDEF");
        assert_eq!(key.len(), 22);
        assert!(!key.is_heap_allocated());
        assert_eq!(super::super::delivered_key_of(&key), digest);
        let older = format!("{chat}|{sender}|3EB0ABCDEF");
        assert_eq!(super::super::delivered_key_of(&older), digest);
        let (other, _) = super::super::pending_key(&chat, &sender, "3EB0ABCDEG");
        assert_ne!(other, digest);
    }

    /// A received text is a slice of the raw plaintext, not a copy.
    #[test]
    fn a_received_text_shares_the_raw_plaintext() {
        let jid = |s: &str| s.parse::<Jid>().expect("jid");
        for message in [
            Message {
                conversation: Some("hello there, a text past 24 bytes".into()),
                ..Message::default()
            },
            Message {
                extended_text_message: Some(Box::new(amarula_proto::e2e::ExtendedTextMessage {
                    text: Some("see https://example.com".into()),
                    ..Default::default()
                })),
                ..Message::default()
            },
        ] {
            let raw = Bytes::from(message.encode_to_vec());
            let msg = incoming(
                "3EB0ABCDEF".into(),
                jid("15550009999@s.whatsapp.net"),
                jid("15550009999:3@s.whatsapp.net"),
                false,
                1_700_000_000,
                None,
                message,
                raw.clone(),
                "key".into(),
                &[],
            );
            let Content::Text { text, .. } = &msg.content else {
                panic!("a text: {:?}", msg.content);
            };
            let (start, end) = (raw.as_ptr() as usize, raw.as_ptr() as usize + raw.len());
            let at = text.as_ptr() as usize;
            assert!(
                at >= start && at + text.len() <= end,
                "inside the plaintext"
            );
            assert_eq!(msg.text(), Some(&**text));
        }
    }

    /// The pending record written from its parts is the encoding of its node.
    #[test]
    fn pending_record_is_the_nodes_encoding() {
        let message = Message {
            conversation: Some("hi".into()),
            ..Message::default()
        };
        let jid = |s: &str| s.parse::<Jid>().expect("jid");
        for (from_me, notify, alt) in [
            (false, None, None),
            (true, Some("Bob ✓"), Some("12345:3@lid")),
        ] {
            let mut msg = incoming(
                "3EB0ABCDEF".into(),
                jid("15550009999@s.whatsapp.net"),
                jid("15550009999:3@s.whatsapp.net"),
                from_me,
                1_700_000_000,
                notify.map(str::to_owned),
                message.clone(),
                Bytes::from(message.encode_to_vec()),
                "key".into(),
                &[],
            );
            msg.sender_alt = alt.map(jid);
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
            if let Some(alt) = &msg.sender_alt {
                node = node.attr("sender_alt", alt.clone());
            }
            let node = node.children([Node::new("plaintext").bytes(msg.raw.clone())]);
            let mut scratch = Vec::new();
            let parts = PendingParts {
                id: &msg.id,
                chat: &msg.chat,
                sender: &msg.sender,
                timestamp: msg.timestamp,
                from_me: msg.from_me,
                push_name: msg.push_name.as_deref(),
                sender_alt: msg.sender_alt.as_ref(),
                raw: &msg.raw,
            };
            let ours = pending_record(&parts, &mut scratch);
            assert_eq!(ours, binary::to_vec(&node).expect("encodes"));
            assert!(ours.ends_with(&msg.raw), "the plaintext ends the record");
            let back = from_pending_record(
                &PendingMessage {
                    id: "key".into(),
                    node: ours,
                    ack_token: None,
                    received_unix_ms: 0,
                },
                &[],
            )
            .expect("reads back");
            assert_eq!(back.sender_alt, msg.sender_alt);
            assert_eq!(back.push_name, msg.push_name);
            assert_eq!(back.raw, msg.raw);
        }
    }
}
