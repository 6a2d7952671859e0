//! Sending (SESSION.md §8): each send waits for the device lists, group participants, stored
//! records and prekey bundles it needs, then is encrypted and relayed. Sends to one chat keep
//! their order; a send waiting for one chat does not hold up another chat.

use std::collections::{BTreeSet, HashSet};

use amarula_proto::e2e::Message;
use amarula_proto::e2e::{DeviceSentMessage, SenderKeyDistributionMessage};
use bytes::Bytes;
use prost::Message as _;
use rand_core::RngCore;

use super::nodes::{self, device_address, user_of};
use super::records::Lookup;
use super::{LoadBatch, Messaging, MessagingError, MsgIq};
use crate::binary::Node;
use crate::content::StanzaAttrs;
use crate::content::build::MessageRef;
use crate::jid::Jid;
use crate::machine::{ConnectionMachine, Event, IqRequest, IqResult};
use crate::persist::DeviceList;
use crate::signal::{Identity, IdentityPolicy, PreKeyBundle, SenderKeyRecord, SessionRecord};
use crate::time::Instant;

/// A retry resend: one device, one message (§7.2).
#[derive(Clone)]
pub(crate) struct Resend {
    /// The device that asked.
    pub(crate) requester: Jid,
    /// Its retry count.
    pub(crate) count: u8,
    /// The keys it sent with the receipt, to start a new session from.
    pub(crate) bundle: Option<PreKeyBundle>,
}

/// A poll vote whose message is built once the poll's secret is at hand (it may have to be
/// loaded from the store first, like a session).
#[derive(Clone)]
pub(crate) struct PendingVote {
    /// The poll, its author resolved (our own user for our own poll).
    pub(crate) poll: MessageRef,
    /// The option names selected.
    pub(crate) selected: Vec<String>,
    /// When the vote was cast (unix milliseconds).
    pub(crate) timestamp_ms: i64,
}

/// A message waiting to go out.
#[derive(Clone)]
pub(crate) struct SendJob {
    pub(crate) id: String,
    /// The user (without device) or the group.
    pub(crate) chat: Jid,
    /// The serialized `Message`, unpadded (empty while `vote` is pending).
    pub(crate) message: Vec<u8>,
    pub(crate) resend: Option<Resend>,
    /// A vote still to be encrypted with its poll's secret.
    pub(crate) vote: Option<PendingVote>,
    /// A peer message to our own phone (`category="peer"`), sent through the
    /// one-device `resend` path.
    pub(crate) peer: bool,
}

impl SendJob {
    pub(crate) fn new(id: String, chat: Jid, message: Vec<u8>) -> Self {
        Self {
            id,
            chat,
            message,
            resend: None,
            vote: None,
            peer: false,
        }
    }
}

/// An `<enc>` with the attributes its content calls for: `mediatype` when it carries the
/// content (not on a group's key-distribution encs), `decrypt-fail` when hidden.
/// History sync: whether `message` is an on-demand history request.
fn is_on_demand(message: &Message) -> bool {
    use amarula_proto::e2e::PeerDataOperationRequestType;
    message
        .protocol_message
        .as_ref()
        .and_then(|p| p.peer_data_operation_request_message.as_ref())
        .and_then(|r| r.peer_data_operation_request_type)
        == Some(PeerDataOperationRequestType::HistorySyncOnDemand as i32)
}

fn enc_node(kind: &str, bytes: Vec<u8>, attrs: &StanzaAttrs, carries_content: bool) -> Node {
    let mut enc = Node::new("enc").attr("v", "2").attr("type", kind);
    if let (true, Some(media)) = (carries_content, attrs.media_type) {
        enc = enc.attr("mediatype", media);
    }
    if attrs.hide {
        enc = enc.attr("decrypt-fail", "hide");
    }
    enc.bytes(bytes)
}

/// History sync: the attributes of a peer message to our own phone; an on-demand history
/// request is pushed with the highest priority, as privacy-sensitive.
fn peer_attrs(node: Node, on_demand: bool) -> Node {
    let node = node.attr("category", "peer");
    if on_demand {
        node.attr("push_priority", "high_force")
            .attr("privacy_sensitive", "1")
    } else {
        node
    }
}

/// What the sent-message cache keeps for a message (its `context`): the chat and the plaintext,
/// enough to encrypt it again for a retry receipt.
pub(crate) fn encode_context(chat: &Jid, message: &[u8]) -> Bytes {
    let chat = chat.to_string();
    let mut out = Vec::with_capacity(2 + chat.len() + message.len());
    out.extend_from_slice(b"m1");
    out.push(u8::try_from(chat.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&chat.as_bytes()[..chat.len().min(255)]);
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// The chat and plaintext of a cached message; `None` for a context this layer did not write.
pub(crate) fn decode_context(context: &[u8]) -> Option<(Jid, Vec<u8>)> {
    let rest = context.strip_prefix(b"m1")?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let chat = std::str::from_utf8(&rest[..len]).ok()?.parse().ok()?;
    Some((chat, rest[len..].to_vec()))
}

/// How a ready send is addressed.
struct Route<'a> {
    to: &'a Jid,
    sender: &'a Jid,
    own: &'a Jid,
    own_lid: Option<&'a Jid>,
}

impl Route<'_> {
    fn is_own_user(&self, jid: &Jid) -> bool {
        let user = user_of(jid);
        user == user_of(self.own) || self.own_lid.is_some_and(|l| user == user_of(l))
    }
}

/// Requests gathered while looking at the waiting sends.
#[derive(Default)]
struct Asks {
    usync: BTreeSet<Jid>,
    bundles: BTreeSet<Jid>,
    groups: BTreeSet<Jid>,
    /// Changes made while looking (sessions moved to their LID address), persisted before
    /// anything is sent with them.
    persist: Vec<crate::persist::Change>,
}

/// Where a send stands.
enum Status {
    Waiting,
    Failed(MessagingError),
    /// Ready: every device to reach, and those that get a pairwise `enc` (all of them for a
    /// 1:1 message; for a group, those lacking our sender key).
    Ready {
        devices: Vec<Jid>,
        pairwise: Vec<Jid>,
        /// Where the stanza goes (the chat in the namespace chosen for it).
        to: Jid,
        /// Our sending device in the same namespace (sender key owner, phash member).
        sender: Jid,
    },
}

struct Ctx<'a> {
    own: &'a Jid,
    /// Our LID device, when our LID is known.
    own_lid: Option<Jid>,
    /// Whether 1:1 chats are addressed by LID (the account is LID-migrated).
    lid_mode: bool,
    now_ms: u64,
    ttl_ms: u64,
    cap: usize,
}

impl Ctx<'_> {
    /// Whether `jid` is one of our users (phone number or LID).
    fn is_own_user(&self, jid: &Jid) -> bool {
        let user = user_of(jid);
        user == user_of(self.own) || self.own_lid.as_ref().is_some_and(|l| user == user_of(l))
    }

    /// Our device in the namespace of `to`.
    fn sender_for(&self, to: &Jid) -> Jid {
        match &self.own_lid {
            Some(lid) if to.is_lid() => lid.clone(),
            _ => self.own.clone(),
        }
    }
}

/// Device lists of `users`, or what is missing.
fn devices_of(
    m: &mut Messaging,
    users: &[Jid],
    ctx: &Ctx<'_>,
    loads: &mut LoadBatch,
    asks: &mut Asks,
) -> Result<Option<Vec<Jid>>, MessagingError> {
    let mut out = Vec::new();
    let mut waiting = false;
    // The store is asked for every mapping and list at once; the server only for what the
    // store did not have, once it answered for all (one usync query).
    let mut loading = false;
    let mut stale = Vec::new();
    for user in users {
        if let Some(e) = m.usync_failed.get(user) {
            return Err(MessagingError::DeviceList(e.clone()));
        }
        if !m.lid_known(user, loads) {
            waiting = true;
            loading = true;
        }
        match m.devices.lookup(user) {
            Lookup::Held(list)
                if ctx.now_ms.saturating_sub(list.updated_unix_ms) < ctx.ttl_ms
                    && list.updated_unix_ms <= ctx.now_ms =>
            {
                out.extend(
                    list.devices
                        .iter()
                        .map(|d| device_address(&user.clone().with_device(*d))),
                );
            }
            Lookup::Held(_) | Lookup::Absent => {
                if !m.usync_inflight.contains(user) {
                    stale.push(user.clone());
                }
                waiting = true;
            }
            Lookup::Unknown => {
                loads.device_list(m, user);
                waiting = true;
                loading = true;
            }
        }
    }
    if !loading {
        asks.usync.extend(stale);
    }
    if waiting {
        return Ok(None);
    }
    // Our sending device is left out under either identity.
    out.retain(|d| d != ctx.own && Some(d) != ctx.own_lid.as_ref());
    Ok(Some(out))
}

/// Whether every device of `devices` has a session (those whose bundle failed are dropped).
fn sessions_ready(
    m: &mut Messaging,
    devices: &mut Vec<Jid>,
    cap: usize,
    loads: &mut LoadBatch,
    asks: &mut Asks,
) -> bool {
    let mut ready = true;
    let mut loading = false;
    let mut skip = Vec::new();
    let mut wanted = Vec::new();
    for d in devices.iter() {
        let addr = m.signal_address(d);
        if addr != device_address(d) {
            // A PN device with a known LID: a session kept only under the number moves once.
            let pn = device_address(d);
            match (m.sessions.lookup(&addr), m.sessions.lookup(&pn)) {
                (Lookup::Unknown, Lookup::Unknown) => {
                    // Both asked at once: one store round.
                    loads.session(m, &pn);
                    loading = true;
                }
                (Lookup::Absent, Lookup::Unknown) => {
                    loads.session(m, &pn);
                    ready = false;
                    loading = true;
                    continue;
                }
                (Lookup::Absent, Lookup::Held(_)) => {
                    let changes = m.migrate_session(&pn, &addr, cap);
                    asks.persist.extend(changes);
                }
                _ => {}
            }
        }
        match m.sessions.lookup(&addr) {
            Lookup::Held(r) if r.has_session() => {}
            Lookup::Held(_) | Lookup::Absent => {
                if m.bundle_failed.contains(d) {
                    skip.push(d.clone());
                } else {
                    if !m.bundles_inflight.contains(d) {
                        wanted.push(d.clone());
                    }
                    ready = false;
                }
            }
            Lookup::Unknown => {
                loads.session(m, &addr);
                ready = false;
                loading = true;
            }
        }
    }
    // Bundles are asked for once the store has answered for every device: one query.
    if !loading {
        asks.bundles.extend(wanted);
    }
    devices.retain(|d| !skip.contains(d));
    ready
}

fn status(
    m: &mut Messaging,
    job: &SendJob,
    ctx: &Ctx<'_>,
    loads: &mut LoadBatch,
    asks: &mut Asks,
) -> Status {
    let group = job.chat.is_group();
    let lid_group = group && m.lid_groups.contains(&job.chat);
    if let Some(resend) = &job.resend {
        let mut waiting = false;
        let d = &resend.requester;
        if !m.lid_known(d, loads) {
            return Status::Waiting;
        }
        let sender = if group {
            if lid_group {
                ctx.own_lid.clone().unwrap_or_else(|| ctx.own.clone())
            } else {
                ctx.own.clone()
            }
        } else {
            ctx.sender_for(d)
        };
        if group {
            let key = (job.chat.clone(), sender.clone());
            if !m.sender_keys.is_known(&key) {
                loads.sender_key(m, &key);
                waiting = true;
            }
        }
        let addr = m.signal_address(d);
        match m.sessions.lookup(&addr) {
            Lookup::Unknown => {
                loads.session(m, &addr);
                waiting = true;
            }
            _ if resend.bundle.is_some() => {}
            Lookup::Held(r) if r.has_session() => {}
            _ => {
                if m.bundle_failed.contains(d) {
                    return Status::Failed(MessagingError::NoDevices);
                }
                if !m.bundles_inflight.contains(d) {
                    asks.bundles.insert(d.clone());
                }
                waiting = true;
            }
        }
        return if waiting {
            Status::Waiting
        } else {
            Status::Ready {
                devices: vec![d.clone()],
                pairwise: vec![d.clone()],
                to: if group { job.chat.clone() } else { d.clone() },
                sender,
            }
        };
    }
    // LID.md §3.1: a 1:1 chat goes by LID when the account is LID-migrated and the peer's
    // LID is known, else by phone number (a LID chat goes back to its number when known).
    let to = if group {
        job.chat.clone()
    } else {
        let settled = m.lid_known(&job.chat, loads);
        if !settled {
            // Our own list is asked for meanwhile, in the same store round.
            let own_user = user_of(ctx.own);
            let _ = devices_of(m, &[own_user], ctx, loads, &mut Asks::default());
            return Status::Waiting;
        }
        if ctx.is_own_user(&job.chat) {
            if ctx.lid_mode {
                ctx.own_lid
                    .as_ref()
                    .map_or_else(|| user_of(ctx.own), user_of)
            } else {
                user_of(ctx.own)
            }
        } else if ctx.lid_mode && ctx.own_lid.is_some() {
            m.to_lid(&job.chat)
        } else if job.chat.is_lid() {
            m.alt_user(&job.chat)
                .filter(|p| !p.is_lid())
                .unwrap_or_else(|| job.chat.clone())
        } else {
            job.chat.clone()
        }
    };
    let sender = if group {
        if lid_group {
            ctx.own_lid.clone().unwrap_or_else(|| ctx.own.clone())
        } else {
            ctx.own.clone()
        }
    } else {
        ctx.sender_for(&to)
    };
    let own_user = user_of(&sender);
    let users: Vec<Jid> = if group {
        let Some(participants) = m.groups.get(&job.chat) else {
            if let Some(e) = m.group_failed.get(&job.chat) {
                return Status::Failed(MessagingError::GroupMetadata(e.clone()));
            }
            if !m.groups_inflight.contains(&job.chat) {
                asks.groups.insert(job.chat.clone());
            }
            return Status::Waiting;
        };
        // Our own devices under the group's namespace, never twice.
        let mut users: Vec<Jid> = participants
            .iter()
            .filter(|u| !ctx.is_own_user(u))
            .cloned()
            .collect();
        users.push(own_user);
        users
    } else if to == own_user {
        vec![own_user]
    } else {
        vec![to.clone(), own_user]
    };
    // A 1:1 message to someone else carries their privacy token when we hold a valid one:
    // it is loaded with the rest.
    let token_ready = group || ctx.is_own_user(&to) || {
        let key = m.token_key(&to);
        m.token_known(&key, loads)
    };
    let mut devices = match devices_of(m, &users, ctx, loads, asks) {
        Err(e) => return Status::Failed(e),
        Ok(None) => return Status::Waiting,
        Ok(Some(d)) => d,
    };
    if !token_ready {
        return Status::Waiting;
    }
    if !group && !devices.iter().any(|d| user_of(d) == to) {
        return Status::Failed(MessagingError::NoDevices);
    }
    if group {
        let key = (job.chat.clone(), sender.clone());
        if !m.sender_keys.is_known(&key) {
            loads.sender_key(m, &key);
            return Status::Waiting;
        }
        let memory = m.sk_memory.get(&job.chat);
        let mut pairwise: Vec<Jid> = devices
            .iter()
            .filter(|d| memory.is_none_or(|mem| !mem.contains(*d)))
            .cloned()
            .collect();
        if !sessions_ready(m, &mut pairwise, ctx.cap, loads, asks) {
            return Status::Waiting;
        }
        Status::Ready {
            devices,
            pairwise,
            to,
            sender,
        }
    } else {
        if !sessions_ready(m, &mut devices, ctx.cap, loads, asks) {
            return Status::Waiting;
        }
        if !devices.iter().any(|d| user_of(d) == to) {
            return Status::Failed(MessagingError::NoDevices);
        }
        Status::Ready {
            pairwise: devices.clone(),
            devices,
            to,
            sender,
        }
    }
}

impl ConnectionMachine {
    /// Moves the waiting sends on (see the module docs).
    pub(super) fn advance_sends(&mut self, now: Instant, loads: &mut LoadBatch) {
        let Some(own) = self.own_device() else {
            return;
        };
        if !self.is_logged_in() {
            return;
        }
        let own_lid = self
            .creds
            .own_lid
            .clone()
            .or_else(|| self.creds.device.as_ref().and_then(|d| d.lid.clone()))
            .map(|l| user_of(&l).with_device(own.device()));
        let ctx = Ctx {
            own: &own,
            own_lid,
            lid_mode: self.creds.lid_migrated,
            cap: self.config.max_loaded_records,
            now_ms: self.clock.unix_ms(now),
            ttl_ms: u64::try_from(self.config.device_list_ttl.as_millis()).unwrap_or(u64::MAX),
        };
        let mut asks = Asks::default();
        let mut blocked: HashSet<Jid> = HashSet::new();
        let mut i = 0;
        while i < self.session_msg.sends.len() {
            let mut job = self.session_msg.sends[i].clone();
            let key = match &job.resend {
                Some(r) => r.requester.clone(),
                None => job.chat.clone(),
            };
            if blocked.contains(&key) {
                i += 1;
                continue;
            }
            if let Some(vote) = job.vote.take() {
                match self.build_vote(&own, &vote, loads) {
                    Err(None) => {
                        blocked.insert(key);
                        i += 1;
                        continue;
                    }
                    Err(Some(error)) => {
                        self.session_msg.sends.remove(i);
                        self.emit(Event::SendFailed { id: job.id, error });
                        continue;
                    }
                    Ok(message) => {
                        // Built once: a resend after a retry receipt or a restart sends these
                        // very bytes again.
                        job.message = message;
                        self.session_msg.sends[i] = job.clone();
                    }
                }
            }
            let state = status(&mut self.session_msg, &job, &ctx, loads, &mut asks);
            for change in std::mem::take(&mut asks.persist) {
                self.persist(change);
            }
            match state {
                Status::Waiting => {
                    blocked.insert(key);
                    i += 1;
                }
                Status::Failed(error) => {
                    self.session_msg.sends.remove(i);
                    self.emit(Event::SendFailed { id: job.id, error });
                }
                Status::Ready {
                    devices,
                    pairwise,
                    to,
                    sender,
                } => {
                    self.session_msg.sends.remove(i);
                    let route = Route {
                        to: &to,
                        sender: &sender,
                        own: ctx.own,
                        own_lid: ctx.own_lid.as_ref(),
                    };
                    if let Err(error) =
                        self.encrypt_and_relay(now, &job, &route, &devices, &pairwise)
                    {
                        self.emit(Event::SendFailed { id: job.id, error });
                    }
                }
            }
        }
        if self.session_msg.sends.is_empty() {
            self.session_msg.bundle_failed.clear();
            self.session_msg.usync_failed.clear();
            self.session_msg.group_failed.clear();
        }
        self.send_asks(now, asks);
    }

    fn send_asks(&mut self, now: Instant, asks: Asks) {
        if !asks.usync.is_empty() {
            let users: Vec<Jid> = asks.usync.into_iter().collect();
            let mut sid = [0u8; 8];
            self.rng.fill_bytes(&mut sid);
            let sid: String = sid.iter().map(|b| format!("{b:02x}")).collect();
            let req = IqRequest::iq(
                "usync",
                "get",
                Jid::server(),
                vec![nodes::usync_query(&sid, &users)],
            );
            if self.send_messaging_iq(now, req, MsgIq::Usync(users.clone())) {
                self.session_msg.usync_inflight.extend(users);
            }
        }
        if !asks.bundles.is_empty() {
            let devices: Vec<Jid> = asks.bundles.into_iter().collect();
            let req = IqRequest::iq(
                "encrypt",
                "get",
                Jid::server(),
                vec![nodes::bundle_query(&devices)],
            );
            if self.send_messaging_iq(now, req, MsgIq::Bundles(devices.clone())) {
                self.session_msg.bundles_inflight.extend(devices);
            }
        }
        for group in asks.groups {
            let req = IqRequest::iq(
                "w:g2",
                "get",
                group.clone(),
                vec![Node::new("query").attr("request", "interactive")],
            );
            if self.send_messaging_iq(now, req, MsgIq::Group(group.clone())) {
                self.session_msg.groups_inflight.insert(group);
            }
        }
    }

    pub(super) fn on_usync(&mut self, now: Instant, users: &[Jid], result: IqResult) {
        let m = &mut self.session_msg;
        for u in users {
            m.usync_inflight.remove(u);
        }
        match result {
            IqResult::Ok(node) => {
                let now_ms = self.clock.unix_ms(now);
                let lists = nodes::parse_usync(&node, now_ms);
                self.learn_lid_pairs(
                    nodes::parse_usync_lids(&node)
                        .into_iter()
                        .map(|(phone, lid)| (lid, phone)),
                );
                let cap = self.config.max_loaded_records;
                for user in users {
                    let list = lists
                        .iter()
                        .find(|(u, _)| u == user)
                        .map(|(_, l)| l.clone())
                        .unwrap_or(DeviceList {
                            devices: Vec::new(),
                            updated_unix_ms: now_ms,
                        });
                    self.session_msg
                        .devices
                        .put(user.clone(), Some(list.clone()), cap);
                    self.persist(crate::persist::Change::DeviceList {
                        user: user.clone(),
                        list,
                    });
                }
            }
            other => {
                let why = format!("{other:?}");
                for u in users {
                    self.session_msg.usync_failed.insert(u.clone(), why.clone());
                }
            }
        }
        self.advance(now);
    }

    pub(super) fn on_bundles(&mut self, now: Instant, devices: &[Jid], result: IqResult) {
        for d in devices {
            self.session_msg.bundles_inflight.remove(d);
        }
        let bundles = match &result {
            IqResult::Ok(node) => nodes::parse_bundles(node),
            _ => Vec::new(),
        };
        let identity = Identity::from_credentials(&self.creds);
        let cap = self.config.max_loaded_records;
        for d in devices {
            let bundle = bundles.iter().find(|(j, _)| j == d).map(|(_, b)| b);
            let Some(Ok(bundle)) = bundle else {
                tracing::debug!(device = %d, "no prekey bundle");
                self.session_msg.bundle_failed.insert(d.clone());
                continue;
            };
            // Kept under the device's Signal address (its LID device when known).
            let addr = self.session_msg.signal_address(d);
            let mut record = match self.session_msg.sessions.get_mut(&addr) {
                Some(r) => r.clone(),
                None => SessionRecord::new(),
            };
            match record.process_bundle(&identity, bundle, IdentityPolicy::default(), &mut self.rng)
            {
                Ok(change) => {
                    self.session_msg
                        .sessions
                        .put(addr.clone(), Some(record), cap);
                    self.persist_session(&addr);
                    self.report_identity(&addr, change);
                }
                Err(e) => {
                    tracing::warn!(device = %d, error = %e, "bad prekey bundle");
                    self.session_msg.bundle_failed.insert(d.clone());
                }
            }
        }
        self.advance(now);
    }

    pub(super) fn on_group(&mut self, now: Instant, group: &Jid, result: IqResult) {
        self.session_msg.groups_inflight.remove(group);
        match result {
            IqResult::Ok(node) => match nodes::parse_group(&node) {
                Some(nodes::GroupMembers {
                    users,
                    lid_mode,
                    pairs,
                }) => {
                    self.learn_lid_pairs(pairs);
                    if lid_mode {
                        self.session_msg.lid_groups.insert(group.clone());
                    } else {
                        self.session_msg.lid_groups.remove(group);
                    }
                    self.session_msg.groups.insert(group.clone(), users);
                }
                None => {
                    self.session_msg
                        .group_failed
                        .insert(group.clone(), "no <group> in the answer".into());
                }
            },
            other => {
                let why = match other {
                    IqResult::Error { code, text, .. } => format!("{code} {text}"),
                    other => format!("{other:?}"),
                };
                self.session_msg.group_failed.insert(group.clone(), why);
            }
        }
        self.advance(now);
    }

    /// Pads a plaintext with random padding.
    fn padded(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let r = (self.rng.next_u32() & 0xFF) as u8;
        nodes::pad(plaintext.to_vec(), r)
    }

    /// Our SKDM for `group`, creating our sender key if needed (persisted).
    fn own_skdm(&mut self, group: &Jid, own: &Jid) -> Vec<u8> {
        let key = (group.clone(), own.clone());
        let cap = self.config.max_loaded_records;
        if self.session_msg.sender_keys.get_mut(&key).is_none() {
            self.session_msg
                .sender_keys
                .put(key.clone(), Some(SenderKeyRecord::new()), cap);
        }
        let Some(record) = self.session_msg.sender_keys.get_mut(&key) else {
            return Vec::new();
        };
        let skdm = record.own_distribution_message(&mut self.rng);
        skdm.serialized().to_vec()
    }

    fn encrypt_and_relay(
        &mut self,
        now: Instant,
        job: &SendJob,
        route: &Route<'_>,
        devices: &[Jid],
        pairwise: &[Jid],
    ) -> Result<(), MessagingError> {
        let message =
            Message::decode(job.message.as_slice()).map_err(|_| MessagingError::Encode)?;
        // Derived from the plaintext, so a resend (retry receipt, restart) carries the same.
        let attrs = StanzaAttrs::of(&message);
        let own = route.sender;
        let is_own_user = |j: &Jid| route.is_own_user(j);
        let on_demand = job.peer && is_on_demand(&message);
        let group = job.chat.is_group();
        let cap = self.config.max_loaded_records;
        if let Some(Resend {
            requester,
            bundle: Some(bundle),
            ..
        }) = &job.resend
        {
            let identity = Identity::from_credentials(&self.creds);
            let addr = self.session_msg.signal_address(requester);
            let mut record = self
                .session_msg
                .sessions
                .get_mut(&addr)
                .cloned()
                .unwrap_or_default();
            let change = record
                .process_bundle(&identity, bundle, IdentityPolicy::default(), &mut self.rng)
                .map_err(MessagingError::Encrypt)?;
            self.session_msg
                .sessions
                .put(addr.clone(), Some(record), cap);
            self.report_identity(&addr, change);
        }
        // The plaintexts: the message itself, wrapped for our own devices, and the SKDM.
        let plain = job.message.clone();
        // The chat as our other devices see it, in the stanza's namespace (LID.md §3.2).
        let destination = match &job.resend {
            Some(r) if r.requester.is_lid() => self.session_msg.to_lid(&job.chat),
            Some(_) => job.chat.clone(),
            None => user_of(route.to),
        };
        let to_own = if group || is_own_user(&job.chat) {
            plain.clone()
        } else {
            Message {
                device_sent_message: Some(Box::new(DeviceSentMessage {
                    destination_jid: Some(destination.to_string()),
                    message: Some(Box::new(message.clone())),
                    phash: None,
                })),
                message_context_info: message.message_context_info.clone(),
                ..Message::default()
            }
            .encode_to_vec()
        };
        let skdm = if group {
            let bytes = self.own_skdm(&job.chat, own);
            let key = (job.chat.clone(), own.clone());
            self.persist_sender_key(&key);
            let mut with_key = if job.resend.is_some() {
                message
            } else {
                Message::default()
            };
            with_key.sender_key_distribution_message = Some(SenderKeyDistributionMessage {
                group_id: Some(job.chat.to_string()),
                axolotl_sender_key_distribution_message: Some(Bytes::from(bytes)),
            });
            Some(with_key.encode_to_vec())
        } else {
            None
        };
        let mut participants = Vec::new();
        let mut single_enc = None;
        let mut any_pkmsg = false;
        for d in pairwise {
            let body = match (&skdm, job.resend.is_some()) {
                (Some(s), _) => s.clone(),
                (None, _) if is_own_user(d) => to_own.clone(),
                (None, _) => plain.clone(),
            };
            let padded = self.padded(&body);
            let addr = self.session_msg.signal_address(d);
            let Some(record) = self.session_msg.sessions.get_mut(&addr) else {
                continue;
            };
            let ct = match record.encrypt(&padded) {
                Ok(ct) => ct,
                Err(e) => {
                    tracing::warn!(device = %d, error = %e, "cannot encrypt for device");
                    continue;
                }
            };
            self.persist_session(&addr);
            any_pkmsg |= ct.enc_type() == "pkmsg";
            // A group's pairwise encs carry only our sender key, except in a resend.
            let carries_content = !group || job.resend.is_some();
            let mut enc = enc_node(
                ct.enc_type(),
                ct.serialized().to_vec(),
                &attrs,
                carries_content,
            );
            if let Some(r) = &job.resend {
                if !job.peer {
                    enc = enc.attr("count", r.count.to_string());
                }
                single_enc = Some(enc);
            } else {
                participants.push(Node::new("to").attr("jid", d.clone()).children([enc]));
            }
        }
        let mut children = Vec::new();
        // A peer request goes to our own user (its one `enc` is for our phone).
        let to = match &job.resend {
            Some(_) if job.peer => job.chat.clone(),
            _ => route.to.clone(),
        };
        let mut node = Node::new("message")
            .attr("id", job.id.as_str())
            .attr("to", to)
            .attr("type", attrs.message_type.as_str());
        if let Some(edit) = attrs.edit {
            node = node.attr("edit", edit.as_str());
        }
        match &job.resend {
            Some(r) => {
                let Some(enc) = single_enc else {
                    return Err(MessagingError::NoDevices);
                };
                if job.peer {
                    node = peer_attrs(node, on_demand);
                    children.push(Node::new("meta").attr("appdata", "default"));
                } else if group {
                    node = node.attr("participant", r.requester.clone());
                } else {
                    node = node.attr("device_fanout", "false");
                    if is_own_user(&r.requester) && !is_own_user(&job.chat) {
                        let chat = if r.requester.is_lid() {
                            self.session_msg.to_lid(&job.chat)
                        } else {
                            job.chat.clone()
                        };
                        node = node.attr("recipient", chat);
                    }
                }
                children.push(enc);
            }
            None => {
                if group {
                    let padded = self.padded(&plain);
                    let key = (job.chat.clone(), own.clone());
                    let Some(record) = self.session_msg.sender_keys.get_mut(&key) else {
                        return Err(MessagingError::Encrypt(
                            crate::signal::SignalError::NoSenderKey,
                        ));
                    };
                    let skmsg = record.encrypt(&padded).map_err(MessagingError::Encrypt)?;
                    self.persist_sender_key(&key);
                    let mut all = devices.to_vec();
                    all.push(own.clone());
                    let phash = nodes::phash(&all);
                    self.remember_group_phash(&job.id, &job.chat, phash.clone());
                    node = node.attr("phash", phash);
                    if !participants.is_empty() {
                        children.push(Node::new("participants").children(participants));
                    }
                    children.push(enc_node("skmsg", skmsg.serialized().to_vec(), &attrs, true));
                    self.session_msg
                        .sk_memory
                        .entry(job.chat.clone())
                        .or_default()
                        .extend(pairwise.iter().cloned());
                } else {
                    if participants.is_empty() {
                        return Err(MessagingError::NoDevices);
                    }
                    children.push(Node::new("participants").children(participants));
                }
            }
        }
        if any_pkmsg {
            if let Some(device) = &self.creds.device {
                children.push(Node::new("device-identity").bytes(device.account.clone()));
            }
        }
        if let Some(meta) = attrs.meta {
            children.push(meta.node());
        }
        let dm_peer =
            (!group && job.resend.is_none() && !is_own_user(route.to)).then(|| user_of(route.to));
        if let Some(peer) = &dm_peer {
            let key = self.session_msg.token_key(peer);
            let now_s = self.clock.unix_secs(now);
            if let Some(token) = self.session_msg.valid_token(&key, now_s) {
                children.push(Node::new("tctoken").bytes(token));
            }
        }
        if group && self.session_msg.lid_groups.contains(&job.chat) && job.resend.is_none() {
            node = node.attr("addressing_mode", "lid");
        }
        let node = node.children(children);
        let context = encode_context(&job.chat, &job.message);
        self.relay_message(now, node, context)
            .map_err(|e| MessagingError::Relay(e.to_string()))?;
        if let Some(peer) = dm_peer {
            // LID.md §5.3: our token goes to whom we write (fire and forget).
            self.remember_dm_peer(&job.id, &peer);
            self.issue_privacy_token(now, &peer, false);
        }
        Ok(())
    }

    /// Queues the resend a retry receipt asks for, if this layer sent the message.
    pub(in crate::machine) fn queue_resend(
        &mut self,
        now: Instant,
        id: &str,
        requester: &Jid,
        count: u8,
        context: &[u8],
        receipt: &Node,
    ) {
        let Some((chat, message)) = decode_context(context) else {
            return;
        };
        let bundle = receipt.child("keys").and_then(|keys| {
            let user = Node::new("user").children(
                keys.child_nodes()
                    .iter()
                    .cloned()
                    .chain(receipt.child("registration").cloned())
                    .collect::<Vec<_>>(),
            );
            nodes::parse_bundle(&user).ok()
        });
        let requester = device_address(requester);
        if chat.is_group() {
            // The device evidently lacks our sender key: it gets the SKDM with the resend.
            if let Some(mem) = self.session_msg.sk_memory.get_mut(&chat) {
                mem.remove(&requester);
            }
        }
        if self.session_msg.sends.len() >= self.config.max_pending_sends {
            return;
        }
        self.session_msg.sends.push_back(SendJob {
            id: id.to_owned(),
            chat,
            message,
            resend: Some(Resend {
                requester,
                count,
                bundle,
            }),
            vote: None,
            peer: false,
        });
        self.advance(now);
    }

    /// Stores a new or changed identity of `device` (from its session record) and reports a
    /// change.
    pub(super) fn report_identity(&mut self, device: &Jid, change: crate::signal::IdentityChange) {
        use crate::signal::IdentityChange;
        if matches!(change, IdentityChange::Unchanged) {
            return;
        }
        let key = self
            .session_msg
            .sessions
            .get_mut(device)
            .and_then(|r| r.remote_identity());
        if let Some(key) = key {
            self.persist(crate::persist::Change::Identity {
                address: device.clone(),
                key: key.0.to_vec(),
            });
        }
        if let IdentityChange::Changed { .. } = change {
            self.emit(Event::IdentityChanged {
                device: device.clone(),
            });
        }
    }
}
