//! The drive loop, written once for every runtime: one task owns the [`ConnectionMachine`],
//! feeds it the socket, the timer and the application's commands, and applies its outputs in
//! order (persist, write, forward). What differs per runtime (connect, sleep, spawn and the
//! one wait step) sits behind [`Runtime`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amarula_core::credentials::Credentials;
use amarula_core::iq::IqError;
use amarula_core::machine::{
    Answer, CloseReason, ConnectionMachine, Event, IqResult, MessageAckResult, Output, Query,
    Reconnect, RequestId, SendError, Session,
};
use amarula_core::media::MediaRetryOutcome;
use amarula_core::time::{Clock, Instant};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_channel::oneshot;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rand_core::{OsRng, RngCore, SeedableRng};

use crate::client::{
    Client, ClientConfig, ClientError, ClientEvent, Command, Events, Sent, StatusCommand,
    WeakClient,
};
use crate::status::{ClientState, Status};
use crate::store::{Change, CredentialStore};

/// What woke the drive task.
pub(crate) enum Wake<T> {
    /// The socket (or the connect future) produced this.
    Io(T),
    /// A command, or `None` when every [`Client`] is gone.
    Command(Option<Command>),
    /// The deadline passed.
    Timer,
}

/// The WebSocket settings of every connection. tungstenite's defaults suit one busy
/// connection: a 128 KiB read buffer allocated up front and writes held until 128 KiB. A
/// process with thousands of accounts pays that per connection (128 KiB × 10,000 is 1.25 GiB),
/// so the read buffer starts at 4 KiB (it grows for a larger frame) and every frame is written
/// at once (the drive task flushes after each anyway).
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Writes one frame of the machine as one WebSocket message: whole when it fits in `fragment`
/// bytes, otherwise as a run of fragments of at most `fragment` bytes (RFC 6455 §5.4: a binary
/// frame without FIN, continuation frames, the last with FIN), each sent and flushed before the
/// next. The peer's WebSocket layer joins them into the same message. tungstenite keeps its
/// output buffer at the size of the largest frame it ever wrote, so writing a 40 KiB prekey
/// upload whole would hold 40 KiB per connection for the rest of its life; in fragments it
/// holds one fragment.
pub(crate) async fn write_frame<S>(
    sock: &mut S,
    frame: bytes::Bytes,
    fragment: usize,
) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let fragment = fragment.max(1);
    if frame.len() <= fragment {
        return sock.send(Message::Binary(frame)).await;
    }
    let mut rest = frame;
    let mut opcode = OpData::Binary;
    while !rest.is_empty() {
        let part = rest.split_to(fragment.min(rest.len()));
        let last = rest.is_empty();
        sock.send(Message::Frame(Frame::message(
            part,
            OpCode::Data(opcode),
            last,
        )))
        .await?;
        opcode = OpData::Continue;
    }
    Ok(())
}

/// The few things a runtime provides to the drive loop.
pub(crate) trait Runtime: Send + Sync + 'static {
    /// An open WebSocket.
    type Socket: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Send
        + Unpin
        + 'static;

    /// Opens TCP, TLS for `wss://` (with `tls`), and the WebSocket.
    fn connect(
        request: Request,
        tls: Arc<rustls::ClientConfig>,
    ) -> impl Future<Output = Result<Self::Socket, WsError>> + Send;

    /// Completes at `deadline`.
    fn sleep_until(deadline: std::time::Instant) -> impl Future<Output = ()> + Send;

    /// Runs `task` in the background.
    fn spawn(task: impl Future<Output = ()> + Send + 'static);

    /// The wait step: whichever comes first of `io`, a command, or `deadline` (never, when
    /// `None`). `io` is polled first, so input is handled before a timer that is also due.
    /// Every branch must be cancel-safe: the losers are dropped.
    fn wait<F: Future + Send>(
        io: F,
        commands: &async_channel::Receiver<Command>,
        deadline: Option<std::time::Instant>,
    ) -> impl Future<Output = Wake<F::Output>> + Send;
}

/// Fills a seed from the OS.
fn os_seed() -> Result<[u8; 32], rand_core::Error> {
    let mut seed = [0u8; 32];
    OsRng.try_fill_bytes(&mut seed)?;
    Ok(seed)
}

/// Why [`connect`](crate::tokio::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or saving the credentials failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The URL cannot be used for a WebSocket.
    #[error("invalid url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS configuration could not be built.
    #[error("tls setup: {0}")]
    Tls(#[from] rustls::Error),
    /// End-to-end messaging is on ([`Config::end_to_end`](amarula_core::machine::Config)) but
    /// the store keeps no Signal state (e.g. [`FileStore`](crate::FileStore), which keeps
    /// only the credentials): use [`SqliteStore`](crate::store::SqliteStore) or
    /// [`MemoryStore`](crate::MemoryStore), or turn end-to-end handling off.
    #[error(
        "the store keeps no Signal state; use SqliteStore or MemoryStore, or turn end_to_end off"
    )]
    NoSignalState,
    /// The OS random source failed.
    #[error("os randomness unavailable: {0}")]
    Random(#[from] rand_core::Error),
}

/// The WebSocket handshake request: the URL with the headers web clients send.
pub(crate) fn handshake_request(url: &str) -> Result<Request, WsError> {
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    headers.insert(
        "Origin",
        HeaderValue::from_static("https://web.whatsapp.com"),
    );
    headers.insert("Cache-Control", HeaderValue::from_static("no-cache"));
    headers.insert("Pragma", HeaderValue::from_static("no-cache"));
    Ok(request)
}

/// rustls with the ring provider and the webpki roots, chosen explicitly so no process-wide
/// default provider is needed; built once and shared by every client of the process (a copy
/// of the root store per account adds up over thousands).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    static SHARED: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if let Some(c) = SHARED.get() {
        return Ok(Arc::clone(c));
    }
    let config = build_tls_config()?;
    Ok(Arc::clone(SHARED.get_or_init(|| config)))
}

fn build_tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Loads (or creates and saves) the credentials, then spawns the drive task on `R`.
pub(crate) async fn start<R: Runtime, S: CredentialStore>(
    config: ClientConfig,
    store: S,
) -> Result<(Client, Events), Error> {
    handshake_request(&config.url).map_err(|e| Error::InvalidUrl {
        url: config.url.clone(),
        reason: e.to_string(),
    })?;
    let tls = tls_config()?;
    if config.machine.end_to_end && !store.keeps_signal_state() {
        return Err(Error::NoSignalState);
    }
    let credentials = match store.load().await? {
        Some(c) => {
            tracing::debug!(paired = c.is_paired(), "loaded stored credentials");
            c
        }
        None => {
            let mut rng = rand_chacha::ChaCha20Rng::from_seed(os_seed()?);
            let c = Credentials::generate(&mut rng);
            store.save(&c).await?;
            tracing::info!("generated and saved new credentials");
            c
        }
    };
    let status = Arc::new(Status::new(&credentials));
    let mut session = Session::new(credentials, &config.machine);
    session.restore_sent(store.load_sent().await?);
    session.restore_pending(store.load_pending().await?);
    session.restore_outbox(store.load_unacked_sent().await?);
    let app_state = store.load_app_state().await?;
    session.restore_app_state(app_state.keys, app_state.collections);
    let media = crate::media::Transfers::new(config.media.clone());
    let (command_tx, command_rx) = async_channel::unbounded();
    let (event_tx, event_rx) = futures_channel::mpsc::unbounded();
    let store = Arc::new(store);
    let lids: Arc<dyn crate::client::LidLookup> = Arc::clone(&store) as _;
    let client = Client::new(command_tx, media, status.clone(), lids);
    let driver = Driver::<R, S> {
        config,
        store,
        tls,
        commands: command_rx,
        events: event_tx,
        origin: std::time::Instant::now(),
        iqs: HashMap::new(),
        acks: HashMap::new(),
        sends: HashMap::new(),
        queries: HashMap::new(),
        app_patches: HashMap::new(),
        logout: None,
        status: Arc::clone(&status),
        closed: None,
        failed: false,
        stopping: false,
        disconnect_waiters: Vec::new(),
        stop_waiters: Vec::new(),
        media_waiters: Vec::new(),
        reuploads: HashMap::new(),
        client: client.downgrade(),
        slot: None,
        runtime: std::marker::PhantomData,
    };
    R::spawn(driver.run(Box::new(session)));
    Ok((client, Events::new(event_rx)))
}

/// What follows a connection.
enum Next {
    Reconnect(Duration),
    Stop,
}

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

struct Driver<R, S> {
    config: ClientConfig,
    /// Shared with the [`Client`] handle, which reads LID mappings from it.
    store: Arc<S>,
    tls: Arc<rustls::ClientConfig>,
    commands: async_channel::Receiver<Command>,
    /// A linked queue: it keeps no block of slots once read, unlike `async_channel` (31 events'
    /// worth, about 9 KiB, per idle account).
    events: futures_channel::mpsc::UnboundedSender<ClientEvent>,
    /// `Instant::ZERO` of the machines' clock.
    origin: std::time::Instant,
    iqs: HashMap<RequestId, Reply<IqResult>>,
    /// By message id; a message relayed again while pending resolves every waiter.
    acks: HashMap<String, Vec<Reply<MessageAckResult>>>,
    /// Messages given to the `send_*` calls, by id, until the server's ack or a failure.
    sends: HashMap<String, (Reply<Sent>, Sent)>,
    /// Typed queries, by request id, until their answer.
    queries: HashMap<RequestId, Reply<Answer>>,
    /// Callers of `send_app_state`, until `Event::AppStatePatchSent`.
    app_patches: HashMap<RequestId, Reply<u64>>,
    /// A logout: its query id while the server has not answered (`Some(id)`), then `None`
    /// once it has removed the device and the store is to be wiped; answered after the wipe.
    logout: Option<(Option<RequestId>, Reply<()>)>,
    /// What the handles read without asking ([`Client::state`], [`Client::credentials`]).
    status: Arc<Status>,
    /// Set from [`Event::Closed`] while draining.
    closed: Option<(CloseReason, Reconnect)>,
    /// A store write failed: nothing more may be sent.
    failed: bool,
    /// [`Client::stop`] was called or every client is gone.
    stopping: bool,
    disconnect_waiters: Vec<oneshot::Sender<()>>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    /// Callers of `media_conn` waiting for [`Event::MediaConn`].
    media_waiters: Vec<Reply<amarula_core::media::MediaConn>>,
    /// Callers of `request_media_reupload`, by message id, until [`Event::MediaRetry`].
    reuploads: HashMap<String, Vec<Reply<String>>>,
    /// For the background downloads of [`Event::FetchBlob`].
    client: WeakClient,
    /// This connection's slot in the login gate, from before the socket opens until the
    /// login settles (or the connection ends, or pairing waits for a scan).
    slot: Option<crate::gate::LoginSlot>,
    runtime: std::marker::PhantomData<fn() -> R>,
}

impl<R: Runtime, S: CredentialStore> Driver<R, S> {
    fn now(&self) -> Instant {
        Instant::from_origin(self.origin.elapsed())
    }

    /// A machine deadline on the runtime's clock (`None`: never, also past the end of time).
    fn deadline(&self, machine: &ConnectionMachine) -> Option<std::time::Instant> {
        machine
            .poll_timeout()
            .and_then(|t| self.origin.checked_add(t.since_origin()))
    }

    fn emit(&self, event: ClientEvent) {
        // Nobody listening is fine: the client keeps working for its handles.
        let _ = self.events.unbounded_send(event);
    }

    /// The session is boxed while no connection holds it: inline, it would take its size
    /// (about 3 KiB) in the drive task's state beside the machine's copy, for the task's life.
    async fn run(mut self, mut session: Box<Session>) {
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            self.status.set_state(ClientState::Connecting { attempt });
            self.emit(ClientEvent::Connecting { attempt });
            if let Some(gate) = self.config.login_gate.clone() {
                match self.admit(&gate).await {
                    Some(slot) => self.slot = Some(slot),
                    None => break,
                }
            }
            let (next, s) = self.connection(session).await;
            self.slot = None;
            session = s;
            match next {
                Next::Stop => break,
                Next::Reconnect(Duration::ZERO) => {}
                Next::Reconnect(delay) => {
                    if !self.backoff(delay).await {
                        break;
                    }
                }
            }
        }
        self.status.set_state(ClientState::Stopped);
        self.emit(ClientEvent::Stopped);
        self.commands.close();
        // Commands that raced the close get an answer too.
        while let Ok(command) = self.commands.try_recv() {
            command.refuse(ClientError::Stopped);
        }
        for waiter in self.stop_waiters.drain(..) {
            let _ = waiter.send(());
        }
        tracing::debug!("drive task stopped");
    }

    /// Waits for a slot in the login gate; commands get "not connected". `None` to stop
    /// instead.
    async fn admit(&mut self, gate: &crate::LoginGate) -> Option<crate::gate::LoginSlot> {
        let mut enter = pin!(gate.enter());
        loop {
            match R::wait(enter.as_mut(), &self.commands, None).await {
                Wake::Io(slot) => return Some(slot),
                Wake::Timer => {}
                Wake::Command(Some(Command::Stop(tx))) => {
                    self.stop_waiters.push(tx);
                    return None;
                }
                Wake::Command(Some(Command::Disconnect(tx))) => {
                    let _ = tx.send(());
                }
                Wake::Command(Some(command)) => {
                    command.refuse(ClientError::Send(SendError::NotConnected));
                }
                Wake::Command(None) => return None,
            }
        }
    }

    /// Waits out a reconnect delay; commands get "not connected". False to stop instead.
    async fn backoff(&mut self, delay: Duration) -> bool {
        let until = std::time::Instant::now() + delay;
        tracing::debug!(?delay, "reconnecting after a delay");
        loop {
            match R::wait(std::future::pending::<()>(), &self.commands, Some(until)).await {
                Wake::Timer | Wake::Io(()) => return true,
                Wake::Command(Some(Command::Stop(tx))) => {
                    self.stop_waiters.push(tx);
                    return false;
                }
                Wake::Command(Some(Command::Disconnect(tx))) => {
                    let _ = tx.send(());
                    return true;
                }
                Wake::Command(Some(command)) => {
                    command.refuse(ClientError::Send(SendError::NotConnected));
                }
                Wake::Command(None) => return false,
            }
        }
    }

    /// One machine over one socket, from connect to close.
    async fn connection(&mut self, session: Box<Session>) -> (Next, Box<Session>) {
        let clock = Clock {
            at: self.now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let seed = match os_seed() {
            Ok(seed) => seed,
            Err(e) => {
                tracing::error!(error = %e, "no OS randomness; stopping");
                return (Next::Stop, session);
            }
        };
        let mut machine =
            ConnectionMachine::new(self.config.machine.clone(), *session, clock, seed);
        // The connect future (TCP, TLS, WebSocket handshake) and the store's futures are boxed
        // where they are awaited: inline, the largest of them would set the size of every
        // account's drive task for its whole life (tens of KiB per idle account).
        let mut socket = Box::pin(self.open(&mut machine)).await;
        if let Some(sock) = socket.as_mut() {
            self.emit(ClientEvent::Connected);
            self.drain(&mut machine, Some(sock)).await;
            while !machine.is_closed() {
                let deadline = self.deadline(&machine);
                let wake = R::wait(sock.next(), &self.commands, deadline).await;
                let now = self.now();
                match wake {
                    Wake::Io(Some(Ok(Message::Binary(bytes)))) => machine.handle_input(now, &bytes),
                    // Text, ping and pong are not part of the protocol (tungstenite answers
                    // pings itself).
                    Wake::Io(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => {}
                    Wake::Io(Some(Ok(other))) => {
                        tracing::debug!(message = ?other, "socket closed by the server");
                        machine.handle_socket_closed(now);
                    }
                    Wake::Io(Some(Err(e))) => {
                        tracing::debug!(error = %e, "socket failed");
                        machine.handle_socket_closed(now);
                    }
                    Wake::Io(None) => machine.handle_socket_closed(now),
                    Wake::Timer => machine.handle_timeout(now),
                    Wake::Command(command) => self.command(&mut machine, now, command),
                }
                // The slot goes back before the outputs are applied, so that an application
                // that sees the login's last event finds the slot free.
                if self.slot.is_some() && machine.is_login_settled() {
                    self.slot = None;
                }
                self.drain(&mut machine, Some(sock)).await;
            }
        }
        if let Some(mut sock) = socket {
            let close = pin!(sock.close());
            let timeout = pin!(R::sleep_until(
                std::time::Instant::now() + self.config.close_timeout
            ));
            let _ = futures_util::future::select(close, timeout).await;
        }
        let next = Box::pin(self.after_close()).await;
        (next, Box::new(machine.into_session()))
    }

    /// Connects the socket while serving commands and the machine's handshake timer. `None`
    /// when the machine closed first (its outputs are drained).
    async fn open(&mut self, machine: &mut ConnectionMachine) -> Option<R::Socket> {
        let request = match handshake_request(&self.config.url) {
            Ok(request) => request,
            // Checked at start; a failure here is reported like a failed connect.
            Err(e) => {
                tracing::warn!(error = %e, "bad url");
                machine.handle_socket_closed(self.now());
                self.drain(machine, None).await;
                return None;
            }
        };
        let mut connecting = pin!(R::connect(request, Arc::clone(&self.tls)));
        loop {
            let deadline = self.deadline(machine);
            let wake = R::wait(connecting.as_mut(), &self.commands, deadline).await;
            let now = self.now();
            match wake {
                Wake::Io(Ok(socket)) => return Some(socket),
                Wake::Io(Err(e)) => {
                    tracing::warn!(error = %e, url = %self.config.url, "connect failed");
                    machine.handle_socket_closed(now);
                }
                Wake::Timer => machine.handle_timeout(now),
                // Commands fail as "not connected" in the handshake phase; disconnect and
                // stop close the machine.
                Wake::Command(command) => self.command(machine, now, command),
            }
            if machine.is_closed() {
                break;
            }
        }
        // The queued ClientHello never leaves; the close events do.
        self.drain(machine, None).await;
        None
    }

    /// Applies one command to the machine.
    fn command(&mut self, machine: &mut ConnectionMachine, now: Instant, command: Option<Command>) {
        let Some(command) = command else {
            tracing::debug!("every client handle is gone; stopping");
            self.stopping = true;
            return machine.close_locally(now);
        };
        match command {
            Command::Iq(request, tx) => match machine.send_iq(now, request) {
                Ok(id) => {
                    self.iqs.insert(id, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::Relay(node, context, tx) => {
                let id = node.attr_str("id").map(str::to_owned);
                match (machine.relay_message(now, node, context), id) {
                    (Ok(()), Some(id)) => self.acks.entry(id).or_default().push(tx),
                    (Ok(()), None) => {
                        // relay_message refuses a message without id.
                        let _ = tx.send(Err(SendError::MissingAttribute.into()));
                    }
                    (Err(e), _) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            }
            Command::Compose(send, tx) => match send(machine, now) {
                Ok(sent) => {
                    self.sends.insert(sent.id().to_owned(), (tx, sent));
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::Send(node, tx) => {
                let _ = tx.send(machine.send_node(now, &node).map_err(Into::into));
            }
            Command::Confirm(token, how, tx) => {
                let _ = tx.send(machine.confirm(now, token, how).map_err(Into::into));
            }
            Command::PairingCode(phone, tx) => {
                let result = machine.request_pairing_code(now, &phone);
                let _ = tx.send(result.map_err(Into::into));
            }
            Command::MediaConn(force, tx) => match machine.media_conn(now, force) {
                Ok(Some(conn)) => {
                    let _ = tx.send(Ok(conn));
                }
                Ok(None) => self.media_waiters.push(tx),
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::AppState(action, tx) => match machine.send_app_state(now, &action) {
                Ok(id) => {
                    self.app_patches.insert(id, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::AppStateSync(collections, tx) => {
                let result = if machine.is_logged_in() {
                    machine.sync_app_state(now, &collections);
                    Ok(())
                } else {
                    Err(SendError::NotLoggedIn.into())
                };
                let _ = tx.send(result);
            }
            Command::Query(query, tx) => match machine.send_query(now, query) {
                Ok(id) => {
                    self.queries.insert(id, tx);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                }
            },
            Command::Status(status, tx) => {
                let result = match status {
                    StatusCommand::Receipt {
                        played: false,
                        chat,
                        ids,
                        participant,
                    } => machine.mark_read(now, &chat, &ids, participant.as_ref()),
                    StatusCommand::Receipt {
                        played: true,
                        chat,
                        ids,
                        participant,
                    } => machine.mark_played(now, &chat, &ids, participant.as_ref()),
                    StatusCommand::Presence(presence) => machine.set_presence(now, presence),
                    StatusCommand::Subscribe(user) => machine.presence_subscribe(now, &user),
                    StatusCommand::ChatState(chat, state) => {
                        machine.send_chatstate(now, &chat, state)
                    }
                    StatusCommand::PushName(name) => machine.set_push_name(now, &name),
                };
                let _ = tx.send(result.map_err(Into::into));
            }
            Command::RejectCall(call, tx) => {
                let _ = tx.send(machine.reject_call(now, &call).map_err(Into::into));
            }
            Command::BlobFetched(id, result) => machine.handle_blob(now, id, result),
            Command::Reupload(request, key, tx) => {
                match machine.request_media_reupload(now, &request, &key) {
                    Ok(()) => self.reuploads.entry(request.id).or_default().push(tx),
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            }
            Command::Logout(tx) => {
                if self.logout.is_some() {
                    // One logout at a time; the first one's answer tells.
                    let _ = tx.send(Err(SendError::TooManyPending.into()));
                    return;
                }
                match machine.send_query(now, Query::Logout) {
                    Ok(id) => self.logout = Some((Some(id), tx)),
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            }
            Command::Disconnect(tx) => {
                self.disconnect_waiters.push(tx);
                machine.close_locally(now);
            }
            Command::Stop(tx) => {
                self.stop_waiters.push(tx);
                self.stopping = true;
                machine.close_locally(now);
            }
        }
    }

    /// Applies every queued output in order. Writes wait for the socket and persisted events
    /// wait for the store, so nothing overtakes what it depends on. Consecutive persistence
    /// events form one batch, stored (one transaction) before the next output is applied.
    async fn drain(&mut self, machine: &mut ConnectionMachine, mut socket: Option<&mut R::Socket>) {
        // The changes are moved into the batch and back into their events once stored: a first
        // login's 812 prekeys are not copied.
        let mut batch: Vec<Change> = Vec::new();
        loop {
            let output = match machine.poll_output() {
                // After a failed store write nothing more is persisted (see below).
                Some(Output::Event(Event::CredentialsChanged(c))) if !self.failed => {
                    batch.push(Change::Credentials(c));
                    continue;
                }
                Some(Output::Event(Event::MessageCached(m))) if !self.failed => {
                    batch.push(Change::SentMessage(m));
                    continue;
                }
                Some(Output::Event(Event::Persist(change))) if !self.failed => {
                    batch.push(change);
                    continue;
                }
                other => other,
            };
            if !batch.is_empty() {
                Box::pin(self.persist(machine, std::mem::take(&mut batch))).await;
            }
            let Some(output) = output else {
                break;
            };
            match output {
                Output::Transmit(frame) => {
                    // After a failed store write nothing may leave.
                    if self.failed {
                        continue;
                    }
                    let Some(sock) = socket.as_mut() else {
                        continue;
                    };
                    let fragment = self.config.ws_fragment_size;
                    if let Err(e) = write_frame(sock, frame, fragment).await {
                        tracing::debug!(error = %e, "socket write failed");
                        socket = None;
                        machine.handle_socket_closed(self.now());
                    }
                }
                // After a failed store write, only what ends the connection and its pending
                // calls is applied; the rest happened on state that may not be stored.
                Output::Event(event)
                    if self.failed
                        && !matches!(
                            event,
                            Event::IqResponse { .. }
                                | Event::MessageAck { .. }
                                | Event::Closed { .. }
                        ) =>
                {
                    tracing::debug!(?event, "dropped after the store failed");
                }
                Output::Event(Event::Load(request)) => {
                    match Box::pin(self.store.load_keys(&request)).await {
                        Ok(loaded) => machine.provide(self.now(), loaded),
                        Err(e) => {
                            tracing::error!(error = %e, "store read failed; stopping");
                            self.emit(ClientEvent::StoreFailed(e));
                            self.failed = true;
                            self.stopping = true;
                            machine.close_locally(self.now());
                        }
                    }
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    /// Stores one batch of persistence events, then forwards them; a failure stops the client.
    /// `Credentials` and `SentMessage` changes come from the machine's
    /// [`Event::CredentialsChanged`] and [`Event::MessageCached`] (it never persists them
    /// otherwise) and go back to the application as those events once stored; every other
    /// change as [`Event::Persist`].
    async fn persist(&mut self, machine: &mut ConnectionMachine, batch: Vec<Change>) {
        match self.store.apply(&batch).await {
            Ok(()) => {
                for change in batch {
                    let event = match change {
                        Change::Credentials(c) => {
                            self.status.set_credentials(Some(&c));
                            Event::CredentialsChanged(c)
                        }
                        Change::SentMessage(m) => Event::MessageCached(m),
                        change => Event::Persist(change),
                    };
                    self.emit(ClientEvent::Event(event));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store write failed; stopping");
                self.emit(ClientEvent::StoreFailed(e));
                self.failed = true;
                self.stopping = true;
                machine.close_locally(self.now());
            }
        }
    }

    /// Resolves or forwards one machine event (persistence events are batched by `drain`).
    fn on_event(&mut self, event: Event) {
        match &event {
            Event::PairingQr { .. } => {
                self.status.set_state(ClientState::Pairing);
                // Pairing waits for a person: the gate is for logins that use the CPU.
                self.slot = None;
            }
            Event::LoggedIn { .. } => self.status.set_state(ClientState::LoggedIn),
            _ => {}
        }
        match event {
            Event::QueryResponse { id, result } => {
                if let Some((pending @ Some(_), _)) = &mut self.logout {
                    if *pending == Some(id) {
                        match result {
                            // The wipe follows the close; the caller hears after it.
                            Ok(_) => *pending = None,
                            Err(e) => {
                                if let Some((_, tx)) = self.logout.take() {
                                    let _ = tx.send(Err(e.into()));
                                }
                            }
                        }
                        return;
                    }
                }
                match self.queries.remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(result.map_err(Into::into));
                    }
                    None => self.emit(ClientEvent::Event(Event::QueryResponse { id, result })),
                }
            }
            Event::AppStatePatchSent {
                id,
                collection,
                result,
            } => match self.app_patches.remove(&id) {
                Some(tx) => {
                    let _ = tx.send(result.map_err(|r| ClientError::AppState(format!("{r:?}"))));
                }
                None => self.emit(ClientEvent::Event(Event::AppStatePatchSent {
                    id,
                    collection,
                    result,
                })),
            },
            Event::IqResponse { id, result } => match self.iqs.remove(&id) {
                Some(tx) => {
                    let _ = tx.send(Ok(result));
                }
                None => self.emit(ClientEvent::Event(Event::IqResponse { id, result })),
            },
            // A send the connection lost before the server's ack goes again, with the same id,
            // at the next login: its caller waits for that ack.
            Event::MessageAck {
                result: MessageAckResult::Disconnected,
                ref id,
            } if self.sends.contains_key(id) => {}
            Event::MessageAck { id, result } if self.sends.contains_key(&id) => {
                if let Some((tx, sent)) = self.sends.remove(&id) {
                    let answer = match result {
                        MessageAckResult::Delivered { .. } => Ok(sent),
                        other => Err(ClientError::NotAccepted(other)),
                    };
                    let _ = tx.send(answer);
                }
            }
            Event::SendFailed { id, error } => match self.sends.remove(&id) {
                Some((tx, _)) => {
                    let _ = tx.send(Err(error.into()));
                }
                None => self.emit(ClientEvent::Event(Event::SendFailed { id, error })),
            },
            Event::MessageAck { id, result } => match self.acks.remove(&id) {
                Some(waiters) => {
                    for tx in waiters {
                        let _ = tx.send(Ok(result.clone()));
                    }
                }
                None => self.emit(ClientEvent::Event(Event::MessageAck { id, result })),
            },
            Event::MediaConn(result) if !self.media_waiters.is_empty() => {
                for tx in self.media_waiters.drain(..) {
                    let _ = tx.send(result.clone().map_err(ClientError::MediaConn));
                }
            }
            Event::MediaRetry(answer) if self.reuploads.contains_key(&answer.id) => {
                let waiters = self.reuploads.remove(&answer.id).unwrap_or_default();
                for tx in waiters {
                    let result = match &answer.result {
                        Ok(MediaRetryOutcome::Uploaded { direct_path }) => Ok(direct_path.clone()),
                        Ok(other) => Err(ClientError::Reupload(format!("{other:?}"))),
                        Err(e) => Err(ClientError::Reupload(e.to_string())),
                    };
                    let _ = tx.send(result);
                }
            }
            Event::FetchBlob(request) => match self.client.upgrade() {
                Some(client) => R::spawn(async move { client.fetch_blob(request).await }),
                None => tracing::debug!("no client left to fetch a blob"),
            },
            Event::Closed { reason, reconnect } => self.closed = Some((reason, reconnect)),
            other => self.emit(ClientEvent::Event(other)),
        }
    }

    /// After the machine closed and the socket is shut: deletes logged-out credentials,
    /// decides what comes next and reports it.
    async fn after_close(&mut self) -> Next {
        // The machine ends every request before its close; anything left is answered anyway.
        for (_, tx) in self.iqs.drain() {
            let _ = tx.send(Ok(IqResult::Disconnected));
        }
        for (_, waiters) in self.acks.drain() {
            for tx in waiters {
                let _ = tx.send(Ok(MessageAckResult::Disconnected));
            }
        }
        for tx in self.media_waiters.drain(..) {
            let _ = tx.send(Err(ClientError::Send(SendError::NotConnected)));
        }
        for tx in self.reuploads.drain().flat_map(|(_, w)| w) {
            let _ = tx.send(Err(ClientError::Send(SendError::NotConnected)));
        }
        for (_, tx) in self.app_patches.drain() {
            let _ = tx.send(Err(ClientError::Send(SendError::NotConnected)));
        }
        for (_, tx) in self.queries.drain() {
            let _ = tx.send(Err(IqError::Disconnected.into()));
        }
        // A logout whose answer never came: the device may still be linked; nothing is wiped.
        let logout = match self.logout.take() {
            Some((None, tx)) => Some(tx),
            Some((Some(_), tx)) => {
                let _ = tx.send(Err(IqError::Disconnected.into()));
                None
            }
            None => None,
        };
        let (reason, machine_says) = self
            .closed
            .take()
            // A closed machine has always emitted its close; this is only a fallback.
            .unwrap_or((CloseReason::SocketClosed, Reconnect::Never));
        if reason.is_logged_out() {
            tracing::info!("logged out; deleting the credentials");
            self.status.set_credentials(None);
            let wiped = self.store.delete().await;
            if let Some(tx) = logout {
                let _ = tx.send(
                    wiped
                        .as_ref()
                        .map_err(|e| ClientError::Store(e.to_string()))
                        .map(drop),
                );
            }
            if let Err(e) = wiped {
                tracing::error!(error = %e, "could not delete the credentials");
                self.emit(ClientEvent::StoreFailed(e));
            }
        } else if let Some(tx) = logout {
            let _ = tx.send(Err(IqError::Disconnected.into()));
        }
        let user_disconnect =
            !self.disconnect_waiters.is_empty() && matches!(reason, CloseReason::Local);
        let reconnect = if self.stopping || self.failed {
            Reconnect::Never
        } else if user_disconnect {
            Reconnect::Now
        } else {
            machine_says
        };
        tracing::info!(?reason, ?reconnect, "disconnected");
        self.status.set_state(ClientState::Closed {
            reason: reason.clone(),
            reconnect,
        });
        self.emit(ClientEvent::Disconnected { reason, reconnect });
        for waiter in self.disconnect_waiters.drain(..) {
            let _ = waiter.send(());
        }
        if matches!(reconnect, Reconnect::Never) {
            // No next login to send them again: their callers learn it now.
            for (_, (tx, _)) in self.sends.drain() {
                let _ = tx.send(Err(ClientError::NotAccepted(
                    MessageAckResult::Disconnected,
                )));
            }
        }
        match reconnect {
            Reconnect::Now => Next::Reconnect(Duration::ZERO),
            Reconnect::After(delay) => Next::Reconnect(delay),
            Reconnect::Never => Next::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::protocol::frame::coding::OpCode;

    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A socket that keeps what is written to it, always ready.
    #[derive(Default)]
    struct Written(Vec<Message>);

    impl Sink<Message> for Written {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
            self.0.push(item);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What `write_frame` hands the WebSocket: (opcode, FIN, payload) per frame.
    fn written(frame: &[u8], fragment: usize) -> Vec<(String, bool, Vec<u8>)> {
        let mut sink = Written::default();
        let bytes = bytes::Bytes::copy_from_slice(frame);
        // The sink is always ready: the future completes on its first poll.
        futures_util::FutureExt::now_or_never(write_frame(&mut sink, bytes, fragment))
            .expect("the sink never waits")
            .unwrap();
        sink.0
            .into_iter()
            .map(|m| match m {
                Message::Binary(b) => ("whole".to_owned(), true, b.to_vec()),
                Message::Frame(f) => {
                    let op = match f.header().opcode {
                        OpCode::Data(OpData::Binary) => "binary",
                        OpCode::Data(OpData::Continue) => "continue",
                        other => panic!("unexpected opcode {other}"),
                    };
                    (op.to_owned(), f.header().is_final, f.payload().to_vec())
                }
                other => panic!("unexpected message {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_frame_that_fits_goes_whole() {
        let frame: Vec<u8> = (0..=255).collect();
        assert_eq!(written(&frame, 256), [("whole".to_owned(), true, frame)]);
    }

    #[test]
    fn a_larger_frame_goes_as_fragments_of_one_message() {
        let frame: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let parts = written(&frame, 4096);
        let shape: Vec<(&str, bool, usize)> = parts
            .iter()
            .map(|(op, fin, p)| (op.as_str(), *fin, p.len()))
            .collect();
        assert_eq!(
            shape,
            [
                ("binary", false, 4096),
                ("continue", false, 4096),
                ("continue", true, 1808)
            ]
        );
        let joined: Vec<u8> = parts.into_iter().flat_map(|(_, _, p)| p).collect();
        assert_eq!(joined, frame);
        // A frame of exactly two fragments ends on a final continuation, not an empty one.
        let two = written(&frame[..8192], 4096);
        assert_eq!(two.len(), 2);
        assert!(two[1].1 && two[1].2.len() == 4096);
    }
}
