//! The connection machine: one pure value that owns a whole server conversation.
//!
//! [`ConnectionMachine`] takes bytes received from the socket, the current time and the
//! application's commands, and gives back, in order, frames to write, events, and the next
//! time it wants to be woken. It does no IO, reads no clock and draws no OS randomness: time
//! comes in as [`Instant`] arguments, wall time from the [`Clock`] given at creation, and
//! randomness from a 32-byte seed. The same inputs always give the same outputs.
//!
//! # Method groups
//! - **Input** (`handle_*`): [`handle_input`](ConnectionMachine::handle_input) for bytes read
//!   from the socket, [`handle_timeout`](ConnectionMachine::handle_timeout) when the time from
//!   [`poll_timeout`](ConnectionMachine::poll_timeout) has come,
//!   [`handle_socket_closed`](ConnectionMachine::handle_socket_closed) when the socket ends.
//! - **Output** (`poll_*`): [`poll_output`](ConnectionMachine::poll_output) gives frames and
//!   events in protocol order; [`poll_timeout`](ConnectionMachine::poll_timeout) the next
//!   deadline.
//! - **Commands** (verbs taking `now` first): [`send_iq`](ConnectionMachine::send_iq),
//!   [`relay_message`](ConnectionMachine::relay_message),
//!   [`send_node`](ConnectionMachine::send_node), [`confirm`](ConnectionMachine::confirm),
//!   [`request_pairing_code`](ConnectionMachine::request_pairing_code),
//!   [`close_locally`](ConnectionMachine::close_locally); end-to-end messaging:
//!   [`send_text`](ConnectionMachine::send_text) (with a reply and mentions),
//!   [`send_reply`](ConnectionMachine::send_reply),
//!   [`send_reaction`](ConnectionMachine::send_reaction),
//!   [`send_edit`](ConnectionMachine::send_edit),
//!   [`send_revoke`](ConnectionMachine::send_revoke),
//!   [`send_poll`](ConnectionMachine::send_poll),
//!   [`send_poll_vote`](ConnectionMachine::send_poll_vote),
//!   [`send_contact`](ConnectionMachine::send_contact),
//!   [`send_contacts`](ConnectionMachine::send_contacts),
//!   [`send_location`](ConnectionMachine::send_location),
//!   [`send_message`](ConnectionMachine::send_message) for any content, and
//!   [`provide`](ConnectionMachine::provide) to answer [`Event::Load`]; receipts, presence
//!   and typing: [`mark_read`](ConnectionMachine::mark_read),
//!   [`mark_played`](ConnectionMachine::mark_played),
//!   [`set_presence`](ConnectionMachine::set_presence),
//!   [`presence_subscribe`](ConnectionMachine::presence_subscribe),
//!   [`send_chatstate`](ConnectionMachine::send_chatstate); typed queries (groups,
//!   contacts, profile, privacy, blocklist, logout): [`send_query`](ConnectionMachine::send_query);
//!   [`reject_call`](ConnectionMachine::reject_call),
//!   [`set_push_name`](ConnectionMachine::set_push_name); media hosts:
//!   [`media_conn`](ConnectionMachine::media_conn),
//!   [`request_media_reupload`](ConnectionMachine::request_media_reupload); files the machine needs (history, app
//!   state): [`handle_blob`](ConnectionMachine::handle_blob) answers [`Event::FetchBlob`].
//! - **Hand-over**: [`into_session`](ConnectionMachine::into_session) keeps what outlives one
//!   socket (credentials, the sent-message cache, id counters, the backoff state) for the next
//!   machine.
//!
//! **Drain rule:** after any call, drain `poll_output()` to `None`, applying each output in
//! order (persist events, write frames), then wait for socket input, a command, or the
//! instant of `poll_timeout()`.
//!
//! The crate docs show the whole run loop.

mod appstate;
mod blob;
mod cache;
mod chatstate;
mod config;
mod event;
mod history;
mod ids;
mod messaging;
mod presence;
mod push;
mod query;
mod receipts;
mod reupload;
mod stanza;
mod timer;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub use appstate::{AppStateSyncError, AppStateUpdate};
pub use blob::{BlobError, BlobId, BlobRequest};
pub use chatstate::{ChatState, ChatStateUpdate};
pub use config::Config;
pub use event::{
    AckToken, CloseReason, Confirm, Event, IqResult, MessageAckResult, Output, PairingCodeFailure,
    Reconnect, RetryRejection, RetryRequest, SendError, SentMessage,
};
pub use history::{HistorySyncBatch, HistorySyncError, OldestMessage, ResendAnswer};
pub use ids::RequestId;
pub use messaging::{
    DecryptError, IncomingMessage, MessagingError, SentPoll, UndecryptableMessage,
};
pub use presence::{Presence, PresenceUpdate};
pub use push::OwnIdentity;
pub use query::{Answer, Query};
pub use receipts::{MAX_RECEIPT_IDS, Receipt, ReceiptKind};
pub use reupload::{MediaRetryAnswer, ReuploadRequest};

use self::cache::{Held, HeldAcks, Nack, RetryCache};
use self::event::Policy;
use self::ids::IdGen;
use self::messaging::Messaging;
use self::timer::{Timer, TimerTable};
use crate::binary::{self, AttrValue, Content, Node};
use crate::credentials::Credentials;
use crate::frame::FrameDecoder;
use crate::jid::Jid;
use crate::noise::{AwaitServerHello, NoiseHandshake, NoiseTransport};
use crate::pairing::{self, PhoneCodePairing};
use crate::time::{Clock, Instant};

/// An IQ to send: the node (its `id` is set by the machine) and an optional timeout.
#[derive(Debug, Clone)]
pub struct IqRequest {
    /// The `<iq>` node, without `id`.
    pub node: Node,
    /// Overrides [`Config::iq_timeout`] for this request.
    pub timeout: Option<Duration>,
}

impl IqRequest {
    /// A request with the default timeout.
    pub fn new(node: Node) -> Self {
        Self {
            node,
            timeout: None,
        }
    }

    /// `<iq xmlns=… type=get|set to=…>children</iq>`.
    pub fn iq(xmlns: &str, kind: &str, to: Jid, children: Vec<Node>) -> Self {
        let mut node = Node::new("iq")
            .attr("xmlns", xmlns)
            .attr("type", kind)
            .attr("to", to);
        if !children.is_empty() {
            node.content = Content::Nodes(children);
        }
        Self::new(node)
    }

    /// Sets the timeout of this request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Sizes of a machine's tables ([`ConnectionMachine::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// IQs waiting for a reply (bounded by [`Config::max_pending_iqs`]).
    pub pending_iqs: usize,
    /// Relayed messages waiting for the server's ack (same bound).
    pub pending_messages: usize,
    /// Incoming stanzas whose ack waits for the application ([`Config::max_held_acks`]).
    pub held_acks: usize,
    /// Entries of the sent-message cache ([`Config::retry_cache_size`]).
    pub cached_messages: usize,
    /// Bytes received but not yet a complete frame (below one frame of 2^24 bytes).
    pub buffered_input: usize,
    /// Outputs not yet taken with [`ConnectionMachine::poll_output`].
    pub queued_outputs: usize,
    /// Signal records held in memory (each kind bounded by [`Config::max_loaded_records`]).
    pub loaded_records: usize,
    /// Sends and incoming messages waiting for keys or stored records (bounded by
    /// [`Config::max_pending_sends`] and [`Config::max_parked_messages`]).
    pub waiting_messages: usize,
}

/// What outlives one connection: handed from a machine to the next with
/// [`ConnectionMachine::into_session`].
#[derive(Debug, Clone)]
pub struct Session {
    credentials: Credentials,
    retry: RetryCache,
    id_counter: u64,
    attempts: u32,
    /// Connections made with this session; numbers each machine's ack tokens apart.
    connections: u64,
    messaging: Messaging,
    /// App-state keys and collections.
    appstate: appstate::AppStateHeld,
}

impl Session {
    /// A session for these credentials (fresh ones for a new device, stored ones to log in).
    pub fn new(credentials: Credentials, config: &Config) -> Self {
        Self {
            credentials,
            retry: RetryCache::new(config.retry_cache_size, config.retry_cache_age),
            id_counter: 0,
            attempts: 0,
            connections: 0,
            messaging: Messaging::default(),
            appstate: appstate::AppStateHeld::default(),
        }
    }

    /// The credentials as they are now.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Puts sent messages from the store back into the sent-message cache after a restart, so
    /// retry receipts for them are still answered. Give them oldest first.
    pub fn restore_sent(&mut self, messages: impl IntoIterator<Item = SentMessage>) {
        for m in messages {
            self.retry.insert(m);
        }
    }

    /// Puts incoming messages the application had not confirmed before a restart back: they
    /// are handed out again as [`Event::Message`] at the next login. Give them oldest first.
    pub fn restore_pending(
        &mut self,
        pending: impl IntoIterator<Item = crate::persist::PendingMessage>,
    ) {
        self.messaging
            .restore_pending(pending.into_iter().collect());
    }

    /// Puts messages sent with [`send_text`](ConnectionMachine::send_text) whose server ack
    /// never arrived back (the store's unacknowledged sent messages): they are encrypted again
    /// and relayed with the same id at the next login. Give them oldest first.
    pub fn restore_outbox(&mut self, unacked: impl IntoIterator<Item = SentMessage>) {
        self.messaging.restore_outbox(unacked.into_iter().collect());
    }

    /// Puts the app-state sync keys and the collections' states from the store back (at
    /// start; they are small and every patch needs them, so they are held whole).
    pub fn restore_app_state(
        &mut self,
        keys: impl IntoIterator<Item = crate::appstate::SyncKey>,
        collections: impl IntoIterator<
            Item = (
                crate::appstate::Collection,
                crate::appstate::CollectionState,
            ),
        >,
    ) {
        for k in keys {
            self.appstate.keys.insert(&k);
        }
        self.appstate.collections.extend(collections);
    }

    /// The app-state collections as the machine holds them (version, LTHash, live values).
    pub fn app_state(
        &self,
        collection: crate::appstate::Collection,
    ) -> Option<&crate::appstate::CollectionState> {
        self.appstate.collections.get(&collection)
    }

    /// Consecutive failed connection attempts (the backoff position); reset at login.
    pub fn reconnect_attempts(&self) -> u32 {
        self.attempts
    }
}

enum Phase {
    /// ClientHello sent; waiting for ServerHello.
    Handshake(Box<AwaitServerHello>),
    /// Transport open.
    Open(Box<NoiseTransport>),
    /// Closed; nothing more happens.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    /// Handshake done, waiting for `<success>` or the pairing IQ.
    Waiting,
    /// Unpaired device showing QR codes.
    Pairing,
    /// Paired and logged in.
    LoggedIn,
}

/// What an outstanding IQ belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IqKind {
    App(RequestId),
    Keepalive,
    Passive,
    CompanionHello,
    CompanionFinish,
    /// Prekeys, device lists, bundles, group metadata (the number keys the purpose).
    Messaging(u64),
    /// A typed query of the application ([`ConnectionMachine::send_query`]).
    Query(RequestId),
    /// An app-state pull or push (the number keys it).
    AppState(u64),
}

#[derive(Debug)]
struct PendingIq {
    kind: IqKind,
    deadline: Instant,
    /// Issue order (the id counter).
    seq: u64,
}

struct QrState {
    refs: Vec<Bytes>,
    next: usize,
}

/// Outputs the queue keeps room for once drained; a burst beyond it is given back.
const OUTPUTS_KEPT: usize = 8;
/// The encode buffer's first capacity, and the most it keeps between frames (larger frames
/// get a buffer of their own, freed after them), so an idle connection holds little.
const ENCODE_BUF_START: usize = 256;
const ENCODE_BUF_KEPT: usize = 4 * 1024;

/// One server conversation: handshake, login or pairing, IQs, acks, keepalive, close.
///
/// See the [module docs](self) for the method groups and the drain rule.
pub struct ConnectionMachine {
    config: Config,
    creds: Credentials,
    clock: Clock,
    rng: ChaCha20Rng,
    phase: Phase,
    closed: bool,
    login: Login,
    frames_in: FrameDecoder,
    outputs: VecDeque<Output>,
    timers: TimerTable,
    ids: IdGen,
    iqs: HashMap<String, PendingIq>,
    /// Deadlines by (instant, issue order), so requests that expire together end in the order
    /// they were sent.
    iq_deadlines: BTreeSet<(Instant, u64, String)>,
    messages: HashMap<String, Instant>,
    message_deadlines: BTreeSet<(Instant, String)>,
    retry: RetryCache,
    held: HeldAcks,
    generation: u64,
    attempts: u32,
    last_recv: Option<Instant>,
    keepalive_sent: Option<Instant>,
    qr: Option<QrState>,
    phone: Option<PhoneCodePairing>,
    buf: Vec<u8>,
    /// The plaintext of the message being decrypted, reused from message to message and
    /// zeroized after each.
    plain: Vec<u8>,
    session_msg: Messaging,
    /// Typed queries in flight, answered from their IQ's reply.
    queries: HashMap<RequestId, Query>,
    /// Files asked of the driver ([`Event::FetchBlob`]) and what they are for.
    blobs: HashMap<BlobId, blob::BlobPurpose>,
    /// Media re-upload requests waiting for the phone's answer.
    reuploads: reupload::Reuploads,
    /// History sync: chunks waiting for their files, handed out in arrival order.
    history: history::HistoryQueue,
    /// App-state keys and collections (kept across connections).
    appstate: appstate::AppStateHeld,
    /// App-state pulls and pushes of this connection.
    appsync: appstate::AppStateSync,
}

impl std::fmt::Debug for ConnectionMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionMachine")
            .field("login", &self.login)
            .field("closed", &matches!(self.phase, Phase::Closed))
            .field("pending_iqs", &self.iqs.len())
            .field("pending_messages", &self.messages.len())
            .finish_non_exhaustive()
    }
}

impl ConnectionMachine {
    /// Starts a connection: the ClientHello (with the intro header) is the first output.
    ///
    /// `clock` anchors wall time (certificate validity, server clock offset); `seed` feeds
    /// every random choice of this connection (ephemeral key, id prefix, jitter), so give a
    /// fresh one from the OS each time, or a fixed one to replay a recording.
    pub fn new(config: Config, session: Session, clock: Clock, seed: [u8; 32]) -> Self {
        let now = clock.at;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut prefix = [0u8; 2];
        rng.fill_bytes(&mut prefix);
        let Session {
            credentials,
            retry,
            id_counter,
            attempts,
            connections,
            messaging,
            appstate,
        } = session;
        let mut machine = Self {
            frames_in: FrameDecoder::new().with_max_len(crate::frame::MAX_PAYLOAD_LEN),
            ids: IdGen::new(prefix, id_counter),
            phase: Phase::Closed,
            closed: false,
            login: Login::Waiting,
            outputs: VecDeque::new(),
            timers: TimerTable::default(),
            iqs: HashMap::new(),
            iq_deadlines: BTreeSet::new(),
            messages: HashMap::new(),
            message_deadlines: BTreeSet::new(),
            held: HeldAcks::default(),
            // Distinguishes this connection's ack tokens from those of earlier connections of
            // the same session (24 bits: tokens are `generation << 40 | n`).
            generation: (connections + 1) & 0x00FF_FFFF,
            last_recv: None,
            keepalive_sent: None,
            qr: None,
            phone: None,
            buf: Vec::with_capacity(ENCODE_BUF_START),
            plain: Vec::new(),
            session_msg: messaging,
            queries: HashMap::new(),
            blobs: HashMap::new(),
            reuploads: reupload::Reuploads::default(),
            history: history::HistoryQueue::default(),
            appstate,
            appsync: appstate::AppStateSync::default(),
            retry,
            attempts,
            creds: credentials,
            clock,
            rng,
            config,
        };
        machine.start(now);
        machine
    }

    fn start(&mut self, now: Instant) {
        let mut hs = NoiseHandshake::initiator(self.creds.noise_key.clone(), &mut self.rng);
        if let Some(info) = self.creds.routing_info.clone() {
            match hs.with_routing_info(&info) {
                Ok(with) => hs = with,
                Err(e) => return self.close(now, CloseReason::Handshake(e)),
            }
        }
        let (hello, next) = hs.client_hello();
        self.outputs.push_back(Output::Transmit(hello.into()));
        self.phase = Phase::Handshake(Box::new(next));
        self.timers
            .set(Timer::Handshake, now + self.config.handshake_timeout);
    }

    // ---- output ----

    /// The next output, in protocol order; `None` when there is nothing more for now.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front();
        if output.is_none() && self.outputs.capacity() > OUTPUTS_KEPT {
            // A burst (the 812 prekeys of an upload persisted one by one) grows the queue to
            // hundreds of kilobytes; an idle connection gives that back once drained.
            self.outputs.shrink_to(OUTPUTS_KEPT);
        }
        output
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next; `None` when no
    /// timer is armed (after the close). Changes after every input and command.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            None
        } else {
            self.timers.next()
        }
    }

    /// Whether the connection has ended ([`Event::Closed`] was emitted).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether `<success>` arrived and the connection is usable for messaging.
    pub fn is_logged_in(&self) -> bool {
        self.login == Login::LoggedIn && !self.is_closed()
    }

    /// Whether the login and the work that follows it are done: logged in, and the prekey
    /// count query (and the upload it may start, hundreds of key pairs on a first login) has
    /// been answered. A driver that bounds how many connections log in at once holds a slot
    /// until this (or the close).
    pub fn is_login_settled(&self) -> bool {
        self.is_logged_in() && !self.prekey_work_pending()
    }

    /// The credentials as they are now.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Sizes of the machine's tables, for metrics and for checking that memory stays bounded.
    pub fn stats(&self) -> Stats {
        Stats {
            pending_iqs: self.iqs.len(),
            pending_messages: self.messages.len(),
            held_acks: self.held.len(),
            cached_messages: self.retry.len(),
            buffered_input: self.frames_in.buffered_len(),
            queued_outputs: self.outputs.len(),
            loaded_records: self.session_msg.held_records(),
            waiting_messages: self.session_msg.waiting(),
        }
    }

    /// Ends this machine and returns what the next connection needs.
    pub fn into_session(self) -> Session {
        Session {
            credentials: self.creds,
            retry: self.retry,
            id_counter: self.ids.counter(),
            attempts: self.attempts,
            connections: self.generation,
            messaging: self.session_msg,
            appstate: self.appstate,
        }
    }

    // ---- input ----

    /// Feeds bytes read from the socket (any chunking: several frames, or part of one).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.frames_in.push(bytes);
        loop {
            let frame = match self.frames_in.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    return self.close(
                        now,
                        CloseReason::Transport(crate::noise::TransportError::Frame(e)),
                    );
                }
            };
            self.last_recv = Some(now);
            // Anything received proves the socket alive.
            self.timers.stop(Timer::DeadSocket);
            match std::mem::replace(&mut self.phase, Phase::Closed) {
                Phase::Handshake(hs) => self.on_server_hello(now, *hs, &frame),
                Phase::Open(mut transport) => {
                    let result = transport.decrypt_node(frame);
                    self.phase = Phase::Open(transport);
                    match result {
                        Ok(body) => match binary::decode_owned_shared(&body) {
                            Ok(node) => self.on_node(now, node),
                            // A frame that decrypts but does not parse is the server's bug;
                            // it cannot even be acked, so it is dropped.
                            Err(e) => tracing::warn!(error = %e, "dropping undecodable stanza"),
                        },
                        Err(e) => self.close(now, CloseReason::Transport(e)),
                    }
                }
                Phase::Closed => return,
            }
            if self.closed {
                return;
            }
        }
    }

    /// Call when the time from [`poll_timeout`](Self::poll_timeout) has come (early calls do
    /// nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        let expired: Vec<Timer> = self.timers.take_expired(now).collect();
        for timer in expired {
            if self.is_closed() {
                return;
            }
            match timer {
                Timer::Handshake => self.close(now, CloseReason::HandshakeTimeout),
                Timer::DeadSocket => self.close(now, CloseReason::DeadSocket),
                Timer::Keepalive => self.on_keepalive_tick(now),
                Timer::Qr => self.next_qr(now),
                Timer::Iq => self.expire_iqs(now),
                Timer::MessageAck => self.expire_messages(now),
            }
        }
    }

    /// The socket was closed or failed (by the peer, or by an IO error).
    pub fn handle_socket_closed(&mut self, now: Instant) {
        if !self.is_closed() {
            self.close(now, CloseReason::SocketClosed);
        }
    }

    // ---- commands ----

    /// Sends an IQ and returns its request id at once. Exactly one
    /// [`Event::IqResponse`] follows for it: the reply, the server's error, a timeout, or
    /// [`IqResult::Disconnected`].
    pub fn send_iq(&mut self, now: Instant, req: IqRequest) -> Result<RequestId, SendError> {
        if !matches!(self.phase, Phase::Open(_)) {
            return Err(SendError::NotConnected);
        }
        if self.iqs.len() >= self.config.max_pending_iqs {
            return Err(SendError::TooManyPending);
        }
        let timeout = req.timeout.unwrap_or(self.config.iq_timeout);
        let (n, _) = self.send_tracked_iq(now, req.node, timeout, |n| IqKind::App(RequestId(n)))?;
        Ok(RequestId(n))
    }

    /// Relays a `<message>` stanza (with `id` and `to`), tracks it until the server's ack,
    /// and stores it in the sent-message cache with `context` (what the application needs to
    /// re-encrypt it for a retry receipt). Emits [`Event::MessageCached`] before the frame,
    /// then later one [`Event::MessageAck`].
    pub fn relay_message(
        &mut self,
        now: Instant,
        node: Node,
        context: Bytes,
    ) -> Result<(), SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        let to = match node.get_attr("to") {
            Some(AttrValue::Jid(j)) => Some(j.clone()),
            Some(AttrValue::Str(s)) => s.parse::<Jid>().ok(),
            None => None,
        };
        let (Some(id), Some(to)) = (node.attr_str("id"), to) else {
            return Err(SendError::MissingAttribute);
        };
        let id = id.to_owned();
        if self.messages.len() >= self.config.max_pending_iqs && !self.messages.contains_key(&id) {
            return Err(SendError::TooManyPending);
        }
        let frame = self.seal(&node)?;
        let entry = SentMessage {
            id: id.clone(),
            to,
            kind: node.attr_str("type").unwrap_or("text").to_owned(),
            context,
            sent_unix_ms: self.clock.unix_ms(now),
        };
        self.retry.insert(entry.clone());
        self.emit(Event::MessageCached(entry));
        let deadline = now + self.config.message_ack_timeout;
        if let Some(old) = self.messages.insert(id.clone(), deadline) {
            self.message_deadlines.remove(&(old, id.clone()));
        }
        self.message_deadlines.insert((deadline, id));
        self.arm_message_timer();
        self.transmit_expecting_reply(now, frame);
        Ok(())
    }

    /// Sends a node that needs no tracking (receipts, presence, …).
    pub fn send_node(&mut self, now: Instant, node: &Node) -> Result<(), SendError> {
        if !matches!(self.phase, Phase::Open(_)) {
            return Err(SendError::NotConnected);
        }
        let _ = now;
        let frame = self.seal(node)?;
        self.outputs.push_back(Output::Transmit(frame));
        Ok(())
    }

    /// Acknowledges a stanza the application has handled durably: [`Confirm::Ack`] sends the
    /// delivery receipt of a decrypted message (the server's acknowledgement of it, SESSION.md
    /// §5.1) or the `<ack>` of another stanza; [`Confirm::Nack`] the ack with an error and no
    /// receipt; [`Confirm::Replace`] a node of the caller's instead.
    pub fn confirm(
        &mut self,
        now: Instant,
        token: AckToken,
        how: Confirm,
    ) -> Result<(), SendError> {
        let (generation, n) = (token.0 >> 40, token.0 & ((1 << 40) - 1));
        if generation != self.generation || !matches!(self.phase, Phase::Open(_)) {
            return Err(SendError::UnknownAckToken);
        }
        let held = self.held.take(n).ok_or(SendError::UnknownAckToken)?;
        // The stored copy is forgotten before the server hears of it: a crash in between
        // leaves a message the server delivers again and that decrypts as already handled.
        if let Some(key) = held.pending {
            self.emit(Event::Persist(crate::persist::Change::PendingDone(key)));
        }
        let mut frames = held.frames;
        match how {
            Confirm::Ack => {}
            Confirm::Nack(code) => {
                // A refused message gets no delivery receipt, only the ack with the error.
                let mut ack = match held.nack {
                    Nack::None => return Ok(()),
                    Nack::Ack(ack) => ack,
                    Nack::OfReceipt => match frames.first() {
                        Some(receipt) => {
                            let own = self.creds.device.as_ref().map(|d| &d.jid);
                            stanza::message_ack_of_receipt(receipt, own)
                        }
                        None => return Ok(()),
                    },
                };
                ack.attrs
                    .push(("error".into(), AttrValue::from(code.to_string())));
                frames = smallvec::smallvec![ack];
            }
            Confirm::Replace(node) => frames = smallvec::smallvec![node],
        }
        for frame in &frames {
            self.send_node(now, frame)?;
        }
        Ok(())
    }

    /// Starts phone-code pairing for `phone` (international digits) and returns the 8-char
    /// code to type on the phone. Needs the pairing phase (an unpaired device after the
    /// server's pair-device IQ). [`Event::PairingCodeAccepted`] follows when the server took
    /// it; then the phone's answer leads to the usual pair-success.
    pub fn request_pairing_code(&mut self, now: Instant, phone: &str) -> Result<String, SendError> {
        if self.login != Login::Pairing || self.is_closed() {
            return Err(SendError::NotPairing);
        }
        let (state, code, hello) =
            PhoneCodePairing::start(phone, &self.creds, &self.config.client, &mut self.rng)?;
        let timeout = self.config.iq_timeout;
        self.send_tracked_iq(now, hello, timeout, |_| IqKind::CompanionHello)?;
        self.phone = Some(state);
        Ok(code)
    }

    /// Closes the connection from this side: pending requests end as disconnected, and
    /// [`Event::Closed`] with [`CloseReason::Local`] follows.
    pub fn close_locally(&mut self, now: Instant) {
        if !self.is_closed() {
            self.close(now, CloseReason::Local);
        }
    }

    // ---- internals: sending ----

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Encodes and encrypts a node into a wire frame.
    fn seal(&mut self, node: &Node) -> Result<Bytes, SendError> {
        let Phase::Open(transport) = &mut self.phase else {
            return Err(SendError::NotConnected);
        };
        self.buf.clear();
        binary::encode_frame(node, &mut self.buf)?;
        let wire = transport
            .encrypt_frame(&self.buf)
            .map_err(|_| SendError::NotConnected);
        if self.buf.capacity() > ENCODE_BUF_KEPT {
            // A large frame (a prekey upload, a big group send) does not keep its buffer.
            self.buf = Vec::with_capacity(ENCODE_BUF_START);
        }
        Ok(wire?.into())
    }

    /// Sends a node built by the machine itself (acks, replies); these always encode.
    fn send_internal(&mut self, now: Instant, node: &Node) {
        if let Err(e) = self.send_node(now, node) {
            tracing::warn!(error = %e, tag = %node.tag, "could not send");
        }
    }

    fn transmit_expecting_reply(&mut self, now: Instant, frame: Bytes) {
        self.outputs.push_back(Output::Transmit(frame));
        if !self.timers.is_armed(Timer::DeadSocket) {
            self.timers
                .set(Timer::DeadSocket, now + self.config.dead_socket_timeout);
        }
    }

    fn send_tracked_iq(
        &mut self,
        now: Instant,
        mut node: Node,
        timeout: Duration,
        kind: impl FnOnce(u64) -> IqKind,
    ) -> Result<(u64, String), SendError> {
        let (n, id) = self.ids.next();
        node.attrs.retain(|(k, _)| k != "id");
        node.attrs
            .insert(0, ("id".into(), AttrValue::from(id.clone())));
        let frame = self.seal(&node)?;
        let deadline = now + timeout;
        self.iqs.insert(
            id.clone(),
            PendingIq {
                kind: kind(n),
                deadline,
                seq: n,
            },
        );
        self.iq_deadlines.insert((deadline, n, id.clone()));
        self.arm_iq_timer();
        self.transmit_expecting_reply(now, frame);
        Ok((n, id))
    }

    fn arm_iq_timer(&mut self) {
        let next = self.iq_deadlines.first().map(|(t, _, _)| *t);
        self.timers.set_or_stop(Timer::Iq, next);
    }

    fn arm_message_timer(&mut self) {
        let next = self.message_deadlines.first().map(|(t, _)| *t);
        self.timers.set_or_stop(Timer::MessageAck, next);
    }

    // ---- internals: close ----

    fn close(&mut self, now: Instant, reason: CloseReason) {
        if self.closed {
            return;
        }
        tracing::debug!(?reason, "connection closed");
        self.closed = true;
        self.phase = Phase::Closed;
        self.timers.stop_all();
        // Every pending request ends exactly once.
        let mut iqs: Vec<(String, PendingIq)> = self.iqs.drain().collect();
        // In issue order: the ids of one connection share their prefix, so a shorter counter
        // is an earlier one ("…-9" before "…-10").
        iqs.sort_by_key(|(_, p)| p.seq);
        self.iq_deadlines.clear();
        for (_, p) in iqs {
            if !matches!(p.kind, IqKind::Messaging(_)) {
                self.finish_iq(now, p.kind, IqResult::Disconnected);
            }
        }
        let mut msgs: Vec<String> = self.messages.drain().map(|(id, _)| id).collect();
        msgs.sort();
        self.message_deadlines.clear();
        if self.config.end_to_end {
            // Our own sends the server never acked go again, same id, at the next login.
            let unacked: Vec<SentMessage> = msgs
                .iter()
                .filter_map(|id| self.retry.get(id).cloned())
                .collect();
            self.session_msg.restore_outbox(unacked);
        }
        for id in msgs {
            self.emit(Event::MessageAck {
                id,
                result: MessageAckResult::Disconnected,
            });
        }
        self.held.clear();
        self.messaging_closed();
        self.appstate_closed();
        self.qr = None;
        self.phone = None;
        let reconnect = match reason.policy() {
            Policy::Now => Reconnect::Now,
            Policy::Never => Reconnect::Never,
            Policy::Backoff { extra_attempts } => {
                let jitter = self.rng.next_u32() % 1001;
                let delay = event::backoff(
                    self.attempts.saturating_add(extra_attempts),
                    self.config.max_backoff,
                    jitter,
                );
                self.attempts = self.attempts.saturating_add(1 + extra_attempts);
                Reconnect::After(delay)
            }
        };
        let _ = now;
        self.emit(Event::Closed { reason, reconnect });
    }

    fn finish_iq(&mut self, now: Instant, kind: IqKind, result: IqResult) {
        match kind {
            IqKind::Messaging(n) => self.messaging_iq_done(now, n, result),
            IqKind::App(id) => self.emit(Event::IqResponse { id, result }),
            IqKind::Query(id) => self.query_done(now, id, result),
            IqKind::AppState(n) => self.appstate_iq_done(now, n, result),
            IqKind::CompanionHello => {
                if !matches!(result, IqResult::Ok(_)) && result != IqResult::Disconnected {
                    self.phone = None;
                    self.emit(Event::PairingCodeFailed {
                        reason: PairingCodeFailure::Refused(result),
                    });
                }
            }
            // Internal requests whose failure needs nothing more: keepalive failures are
            // judged by the silence rule, passive/active is best effort.
            IqKind::Keepalive | IqKind::Passive | IqKind::CompanionFinish => {}
        }
    }

    fn expire_iqs(&mut self, now: Instant) {
        while let Some((deadline, _, id)) = self.iq_deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.iq_deadlines.pop_first();
            if let Some(p) = self.iqs.remove(&id) {
                if p.kind == IqKind::Keepalive {
                    // SESSION.md §4: the ping went unanswered; if nothing else arrived since
                    // it was sent either, the server is silent.
                    let sent = self.keepalive_sent.take().unwrap_or(deadline);
                    if self.last_recv.is_none_or(|r| r < sent) {
                        return self.close(now, CloseReason::KeepaliveTimeout);
                    }
                    continue;
                }
                self.finish_iq(now, p.kind, IqResult::Timeout);
            }
        }
        self.arm_iq_timer();
    }

    fn expire_messages(&mut self, now: Instant) {
        while let Some((deadline, id)) = self.message_deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.message_deadlines.pop_first();
            if self.messages.remove(&id).is_some() {
                self.emit(Event::MessageAck {
                    id,
                    result: MessageAckResult::Timeout,
                });
            }
        }
        self.arm_message_timer();
    }

    // ---- internals: handshake ----

    fn on_server_hello(&mut self, now: Instant, hs: AwaitServerHello, frame: &[u8]) {
        let unix = self.clock.unix_secs(now);
        let finish = match hs.read_server_hello(frame, unix, &self.config.trust) {
            Ok(f) => f,
            Err(e) => return self.close(now, CloseReason::Handshake(e)),
        };
        let payload = if self.creds.is_paired() {
            match pairing::login_payload(&self.creds, &self.config.client) {
                Ok(p) => p,
                Err(e) => return self.close(now, CloseReason::BadCredentials(e)),
            }
        } else {
            pairing::registration_payload(&self.creds, &self.config.client)
        };
        match finish.client_finish(&payload) {
            Ok((wire, mut transport)) => {
                transport.set_max_inflated(self.config.max_inflated);
                // Already framed (length prefix) by the handshake.
                self.outputs.push_back(Output::Transmit(wire.into()));
                self.phase = Phase::Open(Box::new(transport));
            }
            Err(e) => self.close(now, CloseReason::Handshake(e)),
        }
    }

    // ---- internals: stanzas ----

    fn on_node(&mut self, now: Instant, node: Node) {
        match &*node.tag {
            "success" => self.on_success(now, &node),
            "failure" => self.close(now, stanza::failure_reason(&node)),
            "stream:error" => self.close(now, stanza::stream_error_reason(&node)),
            "xmlstreamend" => self.close(now, CloseReason::ServerClosedStream),
            "iq" => self.on_iq(now, node),
            "ack" => self.on_server_ack(now, node),
            "ib" => self.on_ib(now, node),
            "message" | "receipt" | "notification" | "call" | "appdata" | "status" => {
                self.on_ackable(now, node)
            }
            // Neither is acked (SESSION.md §5.1).
            "presence" => self.on_presence(node),
            "chatstate" => self.on_chatstate(node),
            _ => self.emit(Event::Stanza { node, ack: None }),
        }
    }

    fn on_success(&mut self, now: Instant, node: &Node) {
        if !self.creds.is_paired() {
            tracing::warn!("ignoring <success> on an unpaired device");
            return;
        }
        self.timers.stop(Timer::Handshake);
        self.login = Login::LoggedIn;
        self.attempts = 0;
        let local_ms = self.clock.unix_ms(now);
        let offset = node
            .attr_str("t")
            .and_then(|t| t.parse::<i64>().ok())
            .map_or(0, |t| {
                t.saturating_mul(1000).saturating_sub(local_ms as i64)
            });
        let own_lid = match node.get_attr("lid") {
            Some(AttrValue::Jid(j)) => Some(j.to_non_device()),
            Some(AttrValue::Str(s)) => s.parse::<Jid>().ok().map(|j| j.to_non_device()),
            None => None,
        };
        if own_lid.is_some() && own_lid != self.creds.own_lid {
            self.creds.own_lid.clone_from(&own_lid);
            self.emit(Event::CredentialsChanged(Box::new(self.creds.clone())));
        }
        // LID addressing: our own pair is a mapping like any other.
        self.learn_own_lid();
        self.emit(Event::LoggedIn {
            own_lid,
            server_time_offset_ms: offset,
        });
        // SESSION.md §2.1: become active so the server pushes everything.
        let active = IqRequest::iq("passive", "set", Jid::server(), vec![Node::new("active")]);
        let timeout = self.config.iq_timeout;
        let _ = self.send_tracked_iq(now, active.node, timeout, |_| IqKind::Passive);
        self.arm_keepalive(now);
        if self.config.end_to_end {
            self.messaging_logged_in(now);
            self.appstate_logged_in(now);
        }
    }

    fn arm_keepalive(&mut self, now: Instant) {
        let (lo, hi) = self.config.keepalive_interval;
        let span = hi.saturating_sub(lo).as_millis() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.rng.next_u64() % (span + 1)
        };
        self.timers
            .set(Timer::Keepalive, now + lo + Duration::from_millis(jitter));
    }

    fn on_keepalive_tick(&mut self, now: Instant) {
        self.arm_keepalive(now);
        // Ping only when idle: nothing received lately and no request outstanding.
        let recently = self
            .last_recv
            .is_some_and(|r| now - r < self.config.keepalive_idle);
        if recently || !self.iqs.is_empty() || self.keepalive_sent.is_some() {
            return;
        }
        let ping = IqRequest::iq("w:p", "get", Jid::server(), vec![Node::new("ping")]);
        let timeout = self.config.keepalive_timeout;
        if self
            .send_tracked_iq(now, ping.node, timeout, |_| IqKind::Keepalive)
            .is_ok()
        {
            self.keepalive_sent = Some(now);
        }
    }

    fn on_iq(&mut self, now: Instant, node: Node) {
        let kind = node.attr_str("type").unwrap_or("");
        if kind == "result" || kind == "error" {
            let Some(id) = node.attr_str("id").map(str::to_owned) else {
                return;
            };
            let Some(p) = self.iqs.remove(&id) else {
                tracing::debug!(%id, "late or unknown IQ reply");
                return;
            };
            self.iq_deadlines.remove(&(p.deadline, p.seq, id));
            self.arm_iq_timer();
            let result = stanza::iq_result(node);
            match p.kind {
                IqKind::Keepalive => self.keepalive_sent = None,
                IqKind::CompanionHello => self.on_companion_hello_reply(now, result),
                other => self.finish_iq(now, other, result),
            }
            return;
        }
        let from_server = node.attr_jid("from").is_some_and(|j| *j == Jid::server())
            || node.attr_str("from") == Some("s.whatsapp.net");
        if kind == "get" && stanza::is_server_ping(&node) && from_server {
            // SESSION.md §3.6: answer the server's ping.
            let reply = stanza::iq_reply(&node);
            return self.send_internal(now, &reply);
        }
        if kind == "set" && from_server {
            if node.child("pair-device").is_some() {
                return self.on_pair_device(now, &node);
            }
            if node.child("pair-success").is_some() {
                return self.on_pair_success(now, &node);
            }
        }
        self.emit(Event::Stanza { node, ack: None });
    }

    fn on_server_ack(&mut self, now: Instant, node: Node) {
        let Some(id) = node.attr_str("id").map(str::to_owned) else {
            return;
        };
        if node.attr_str("class") == Some("message") {
            if let Some(deadline) = self.messages.remove(&id) {
                self.message_deadlines.remove(&(deadline, id.clone()));
                self.arm_message_timer();
                let result = stanza::message_ack_result(&node);
                self.messaging_acked(now, &id, &result);
                // The server has it (or refused it for good): not to be resent after a restart.
                self.emit(Event::Persist(crate::persist::Change::SentAcked(
                    id.clone(),
                )));
                self.emit(Event::MessageAck { id, result });
            }
        }
    }

    fn on_ib(&mut self, now: Instant, node: Node) {
        if let Some(routing) = node
            .child("edge_routing")
            .and_then(|e| e.child("routing_info"))
            .and_then(Node::content_bytes)
        {
            let info = Bytes::copy_from_slice(routing);
            if self.creds.routing_info.as_ref() != Some(&info) {
                self.creds.routing_info = Some(info);
                self.emit(Event::CredentialsChanged(Box::new(self.creds.clone())));
            }
            return;
        }
        if node
            .child("dirty")
            .is_some_and(|d| matches!(d.attr_str("type"), Some("account_sync" | "syncd_app_state")))
            && self.config.end_to_end
            && !self.appstate.keys.is_empty()
        {
            self.sync_app_state(now, &[]);
        }
        if node.child("downgrade_webclient").is_some() {
            return self.close(now, CloseReason::MultideviceMismatch);
        }
        self.emit(Event::Stanza { node, ack: None });
    }

    /// The `<ack>` of an incoming stanza ([`stanza::ack_for`]), from our device.
    pub(in crate::machine) fn ack_for(&self, node: &Node) -> Option<Node> {
        stanza::ack_for(node, self.creds.device.as_ref().map(|d| &d.jid))
    }

    fn on_ackable(&mut self, now: Instant, node: Node) {
        if node.tag == "receipt" {
            if node.attr_str("type") != Some("retry") {
                let ack = self.ack_for(&node);
                return self.on_receipt(now, node, ack);
            }
            self.on_retry_receipt(now, &node);
        }
        if node.tag == "message" {
            self.learn_push_name(&node);
        }
        if node.tag == "notification" && self.config.end_to_end {
            self.messaging_notification(now, &node);
            if node.attr_str("type") == Some("server_sync") {
                self.appstate_on_server_sync(now, &node);
            }
        }
        let encrypted = node.tag == "message"
            && self.config.end_to_end
            && self.is_logged_in()
            && self.creds.is_paired()
            && node.child_nodes().iter().any(|c| c.tag == "enc");
        if encrypted {
            // Its ack is built only when it is sent (most messages are acknowledged by their
            // delivery receipt alone).
            return self.receive_encrypted(now, node);
        }
        let ack = self.ack_for(&node);
        if node.tag == "notification" && node.attr_str("type") == Some("link_code_companion_reg") {
            self.on_link_code_notification(now, &node);
        }
        let typed = match self.typed_push(&node) {
            Some(event) => Some(event),
            None => self.media_retry_answer(&node),
        };
        if let Some(event) = typed {
            // A group change, a call or a re-upload answer, typed: the event, then the ack as
            // for any push.
            self.emit(event);
            if let Some(ack) = ack {
                self.send_internal(now, &ack);
            }
            return;
        }
        let is_message = node.tag == "message";
        match ack {
            Some(ack) if is_message && self.config.hold_message_acks => {
                let held = Held {
                    frames: smallvec::smallvec![ack.clone()],
                    nack: Nack::Ack(ack),
                    pending: None,
                };
                let n = self.held.hold(held, self.config.max_held_acks);
                let token = AckToken((self.generation << 40) | n);
                self.emit(Event::Stanza {
                    node,
                    ack: Some(token),
                });
            }
            Some(ack) => {
                self.emit(Event::Stanza { node, ack: None });
                self.send_internal(now, &ack);
            }
            None => self.emit(Event::Stanza { node, ack: None }),
        }
    }

    fn on_retry_receipt(&mut self, now: Instant, node: &Node) {
        let retry = node.child("retry");
        let id = retry
            .and_then(|r| r.attr_str("id"))
            .or_else(|| node.attr_str("id"))
            .map(str::to_owned);
        let requester = node
            .attr_jid("participant")
            .or_else(|| node.attr_jid("from"))
            .cloned();
        let count = retry
            .and_then(|r| r.attr_str("count"))
            .and_then(|c| c.parse::<u8>().ok())
            .unwrap_or(1);
        let (Some(id), Some(requester)) = (id, requester) else {
            let requester = node.attr_jid("from").cloned().unwrap_or_else(Jid::server);
            let id = node.attr_str("id").unwrap_or("").to_owned();
            return self.emit(Event::RetryRejected {
                id,
                requester,
                reason: RetryRejection::Malformed,
            });
        };
        let now_ms = self.clock.unix_ms(self.last_recv.unwrap_or(self.clock.at));
        match self
            .retry
            .request(&id, &requester, now_ms, self.config.max_retries)
        {
            Ok(message) => {
                let context = message.context.clone();
                self.emit(Event::RetryRequested(Box::new(RetryRequest {
                    id: id.clone(),
                    requester: requester.clone(),
                    count,
                    message,
                    receipt: node.clone(),
                })));
                if self.config.end_to_end {
                    self.queue_resend(now, &id, &requester, count, &context, node);
                }
            }
            Err(reason) => self.emit(Event::RetryRejected {
                id,
                requester,
                reason,
            }),
        }
    }

    // ---- internals: pairing ----

    fn on_pair_device(&mut self, now: Instant, node: &Node) {
        let reply = stanza::iq_reply(node);
        self.send_internal(now, &reply);
        if self.creds.is_paired() {
            tracing::warn!("pair-device IQ for a paired device");
            return;
        }
        let refs: Vec<Bytes> = node
            .child("pair-device")
            .map(|p| {
                p.child_nodes()
                    .iter()
                    .filter(|c| c.tag == "ref")
                    .filter_map(Node::content_bytes)
                    .map(Bytes::copy_from_slice)
                    .collect()
            })
            .unwrap_or_default();
        self.timers.stop(Timer::Handshake);
        self.login = Login::Pairing;
        self.qr = Some(QrState { refs, next: 0 });
        self.next_qr(now);
    }

    fn next_qr(&mut self, now: Instant) {
        let Some(qr) = self.qr.as_mut() else {
            return;
        };
        let index = qr.next;
        let Some(r) = qr.refs.get(index).cloned() else {
            return self.close(now, CloseReason::PairingTimedOut);
        };
        qr.next += 1;
        let valid_for = if index == 0 {
            self.config.qr_first_ttl
        } else {
            self.config.qr_next_ttl
        };
        let qr = pairing::qr_string(&r, &self.creds, &self.config.client);
        self.timers.set(Timer::Qr, now + valid_for);
        self.emit(Event::PairingQr {
            qr,
            index,
            valid_for,
        });
    }

    fn on_pair_success(&mut self, now: Instant, node: &Node) {
        match pairing::handle_pair_success(node, &self.creds, &mut self.rng) {
            Ok(success) => {
                self.qr = None;
                self.phone = None;
                self.timers.stop(Timer::Qr);
                // BL's rule: a business account's name is its push name until one is known.
                if self.creds.push_name.is_none() {
                    self.creds
                        .push_name
                        .clone_from(&success.device.business_name);
                }
                self.creds.device = Some(success.device.clone());
                // LID addressing: the phone tells whether our 1:1 chats are LID-migrated.
                if messaging::pair_props_lid_migrated(node) {
                    self.creds.lid_migrated = true;
                }
                // The identity reaches the store before the reply that commits the phone to
                // it.
                self.emit(Event::CredentialsChanged(Box::new(self.creds.clone())));
                self.emit(Event::Paired {
                    device: Box::new(success.device),
                });
                // LID addressing: `<device jid lid>` pairs our two identities.
                self.learn_own_lid();
                self.send_internal(now, &success.reply);
                // The server answers with stream error 515; allow it the handshake timeout.
                self.timers
                    .set(Timer::Handshake, now + self.config.handshake_timeout);
            }
            Err(refused) => {
                if let Some(reply) = refused.reply {
                    self.send_internal(now, &reply);
                }
                self.close(now, CloseReason::PairingRefused(refused.reason));
            }
        }
    }

    fn on_companion_hello_reply(&mut self, now: Instant, result: IqResult) {
        match (&result, self.phone.as_mut()) {
            (IqResult::Ok(reply), Some(phone)) => match phone.set_ref(reply) {
                Ok(()) => self.emit(Event::PairingCodeAccepted),
                Err(e) => {
                    self.phone = None;
                    self.emit(Event::PairingCodeFailed {
                        reason: PairingCodeFailure::Crypto(e),
                    });
                }
            },
            _ => self.finish_iq(now, IqKind::CompanionHello, result),
        }
    }

    fn on_link_code_notification(&mut self, now: Instant, node: &Node) {
        let Some(phone) = self.phone.take() else {
            tracing::warn!("link-code notification without phone-code pairing");
            return;
        };
        match phone.finish(node, &self.creds, &mut self.rng) {
            Ok((finish, adv_secret)) => {
                self.creds.adv_secret = adv_secret;
                // The new adv secret authenticates the coming pair-success: persist it first.
                self.emit(Event::CredentialsChanged(Box::new(self.creds.clone())));
                let timeout = self.config.iq_timeout;
                let _ = self.send_tracked_iq(now, finish, timeout, |_| IqKind::CompanionFinish);
            }
            Err(e) => self.emit(Event::PairingCodeFailed {
                reason: PairingCodeFailure::Crypto(e),
            }),
        }
    }
}
