//! The async facade: [`Client`] sends commands to the drive task, [`Events`] receives what
//! happened.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::content::build::{MessageRef, Quote, Text};
use amarula_core::content::{Contact, Location};
use amarula_core::iq::IqError;
use amarula_core::jid::Jid;
use amarula_core::machine::{
    AckToken, Answer, ChatState, CloseReason, Config, Confirm, ConnectionMachine, Event, IqRequest,
    IqResult, MessageAckResult, MessagingError, Presence, Query, Reconnect, SendError, SentPoll,
};
use amarula_core::notify::call::CallEvent;
use amarula_core::time::Instant;
use amarula_proto::e2e::Message;
use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::Stream;

use crate::status::Status;
use crate::store::{CredentialStore, StoreError};

/// The production WebSocket endpoint.
pub const WHATSAPP_URL: &str = "wss://web.whatsapp.com/ws/chat";

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The WebSocket URL: `wss://` (TLS with the webpki roots) or `ws://` (plain, for a local
    /// simulator). Default [`WHATSAPP_URL`].
    pub url: String,
    /// Settings of the connection machine (timeouts, trust anchor, client identity).
    pub machine: Config,
    /// How long closing a socket may wait for the server's close frame (default 1 s).
    pub close_timeout: Duration,
    /// Media transfers (scheme, retries, timeouts).
    pub media: crate::media::MediaConfig,
    /// Bounds how many clients log in at once ([`LoginGate`](crate::LoginGate)): by default
    /// the process-wide gate; `None` for none.
    pub login_gate: Option<crate::LoginGate>,
    /// The largest WebSocket frame written (default [`WS_FRAGMENT_SIZE`]): a larger protocol
    /// frame (a prekey upload, a message to a large group) goes out as WebSocket fragments of
    /// at most this many bytes, which the server's WebSocket layer joins (RFC 6455 §5.4). The
    /// connection's output buffer keeps the size of the largest frame it wrote, so this bounds
    /// the memory an idle connection keeps; `usize::MAX` writes every frame whole.
    pub ws_fragment_size: usize,
}

/// The default [`ClientConfig::ws_fragment_size`]: 4 KiB, more than most frames (a text, a
/// receipt, a keepalive), far less than a prekey upload (about 40 KiB).
pub const WS_FRAGMENT_SIZE: usize = 4 * 1024;

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            url: WHATSAPP_URL.to_owned(),
            machine: Config::default(),
            close_timeout: Duration::from_secs(1),
            media: crate::media::MediaConfig::default(),
            login_gate: Some(crate::LoginGate::shared()),
            ws_fragment_size: WS_FRAGMENT_SIZE,
        }
    }
}

/// What the client reports, in order, on [`Events`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A connection attempt starts (TCP, TLS, WebSocket, then the Noise handshake).
    Connecting {
        /// Attempts since the client started, from 1.
        attempt: u32,
    },
    /// The WebSocket is open; the Noise handshake and login follow.
    Connected,
    /// An event of the connection machine. Not repeated here: [`Event::Closed`] (it becomes
    /// [`Disconnected`](Self::Disconnected)), and [`Event::IqResponse`] /
    /// [`Event::QueryResponse`] / [`Event::MessageAck`] answering a call that is still waiting
    /// ([`Client::query_iq`], the typed calls such as [`Client::group_metadata`],
    /// [`Client::relay_stanza`]). [`Event::CredentialsChanged`] and
    /// [`Event::MessageCached`] arrive after the store has written them.
    Event(Event),
    /// The connection ended.
    Disconnected {
        /// Why.
        reason: CloseReason,
        /// What the client does next: the machine's decision, except that
        /// [`Client::disconnect`] reconnects [`Now`](Reconnect::Now) and [`Client::stop`]
        /// [`Never`](Reconnect::Never). After `Never`, [`Stopped`](Self::Stopped) follows.
        reconnect: Reconnect,
    },
    /// The store failed; the client stops, since going on could lose state the server already
    /// relies on.
    StoreFailed(StoreError),
    /// The client has stopped; this is the last event.
    Stopped,
}

/// Why a [`Client`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The machine refused the command (not connected, not logged in, …). Between connections
    /// (during a reconnect delay) every command gets [`SendError::NotConnected`].
    #[error(transparent)]
    Send(#[from] SendError),
    /// The client has stopped.
    #[error("the client has stopped")]
    Stopped,
    /// The message could not be encrypted or relayed (no devices, a failed query, …).
    #[error(transparent)]
    Messaging(#[from] MessagingError),
    /// The server did not accept the message: its ack carried an error, or it did not come in
    /// time, or the connection ended first (then send it again).
    #[error("the server did not accept the message: {0:?}")]
    NotAccepted(MessageAckResult),
    /// A media upload or download failed.
    #[error(transparent)]
    Media(#[from] crate::media::MediaTransferError),
    /// The media hosts could not be had (`media_conn` failed).
    #[error("media hosts unavailable: {0}")]
    MediaConn(String),
    /// Our phone did not upload a file again (it no longer has it, or its answer could not
    /// be read).
    #[error("media re-upload failed: {0}")]
    Reupload(String),
    /// The server refused an app-state patch (or did not answer).
    #[error("app-state patch not accepted: {0}")]
    AppState(String),
    /// A typed query failed: the server's error (with its code), a timeout, the end of the
    /// connection, or an answer without what it must hold.
    #[error(transparent)]
    Iq(#[from] IqError),
    /// The store failed to delete the account after a logout (the server has already removed
    /// the device).
    #[error("the store could not delete the account: {0}")]
    Store(String),
}

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// What a send command queued on the machine.
pub(crate) enum Sent {
    /// A message, by id.
    Id(String),
    /// A poll, with its secret.
    Poll(SentPoll),
}

impl Sent {
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::Id(id) => id,
            Self::Poll(p) => &p.id,
        }
    }
}

/// A send command, run by the drive task on its machine: one of the machine's `send_*`
/// verbs with the caller's arguments.
pub(crate) type Compose =
    Box<dyn FnOnce(&mut ConnectionMachine, Instant) -> Result<Sent, SendError> + Send>;

/// A request to the drive task.
pub(crate) enum Command {
    Iq(IqRequest, Reply<IqResult>),
    Relay(Node, Bytes, Reply<MessageAckResult>),
    Compose(Compose, Reply<Sent>),
    Send(Node, Reply<()>),
    Confirm(AckToken, Confirm, Reply<()>),
    PairingCode(String, Reply<String>),
    MediaConn(bool, Reply<amarula_core::media::MediaConn>),
    Reupload(
        amarula_core::machine::ReuploadRequest,
        zeroize::Zeroizing<[u8; 32]>,
        Reply<String>,
    ),
    /// Receipts, presence, chat state and the push name: fire-and-forget stanzas.
    Status(StatusCommand, Reply<()>),
    Query(Query, Reply<Answer>),
    RejectCall(Box<CallEvent>, Reply<()>),
    Logout(Reply<()>),
    /// A file the machine asked for ([`amarula_core::machine::Event::FetchBlob`]), fetched by
    /// a background task.
    BlobFetched(
        amarula_core::machine::BlobId,
        Result<Vec<u8>, amarula_core::machine::BlobError>,
    ),
    Disconnect(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
    // ---- app state (syncd) ----
    /// An outgoing app-state patch; answered with the collection's new version.
    AppState(amarula_core::appstate::AppStateAction, Reply<u64>),
    /// Pull app-state collections (all when empty).
    AppStateSync(Vec<amarula_core::appstate::Collection>, Reply<()>),
}

impl Command {
    /// Answers a command that cannot run now with `error` (or, for disconnect and stop,
    /// with done).
    pub(crate) fn refuse(self, error: ClientError) {
        // A caller that stopped waiting does not mind.
        let _ = match self {
            Self::Iq(_, tx) => tx.send(Err(error)).map_err(drop),
            Self::Relay(_, _, tx) => tx.send(Err(error)).map_err(drop),
            Self::Compose(_, tx) => tx.send(Err(error)).map_err(drop),
            Self::Send(_, tx) | Self::Confirm(_, _, tx) => tx.send(Err(error)).map_err(drop),
            Self::PairingCode(_, tx) => tx.send(Err(error)).map_err(drop),
            Self::MediaConn(_, tx) => tx.send(Err(error)).map_err(drop),
            Self::Reupload(_, _, tx) => tx.send(Err(error)).map_err(drop),
            Self::Status(_, tx) => tx.send(Err(error)).map_err(drop),
            Self::Query(_, tx) => tx.send(Err(error)).map_err(drop),
            Self::RejectCall(_, tx) | Self::Logout(tx) => tx.send(Err(error)).map_err(drop),
            Self::Disconnect(tx) | Self::Stop(tx) => tx.send(()),
            Self::AppState(_, tx) => tx.send(Err(error)).map_err(drop),
            Self::AppStateSync(_, tx) => tx.send(Err(error)).map_err(drop),
            // Its connection is gone: the stanza that asked comes again.
            Self::BlobFetched(..) => Ok(()),
        };
    }
}

/// The commands of [`Command::Status`]: one machine call each, answered when the stanza is
/// queued.
pub(crate) enum StatusCommand {
    Receipt {
        played: bool,
        chat: Jid,
        ids: Vec<String>,
        participant: Option<Jid>,
    },
    Presence(Presence),
    Subscribe(Jid),
    ChatState(Jid, ChatState),
    PushName(String),
}

/// A [`Client`] that does not keep the drive task running (held by the drive task itself).
#[derive(Debug, Clone)]
pub(crate) struct WeakClient {
    commands: async_channel::WeakSender<Command>,
    media: crate::media::Transfers,
    status: Arc<Status>,
    lids: Arc<dyn LidLookup>,
}

impl WeakClient {
    /// The client, while any handle is alive.
    pub(crate) fn upgrade(&self) -> Option<Client> {
        Some(Client::new(
            self.commands.upgrade()?,
            self.media.clone(),
            Arc::clone(&self.status),
            Arc::clone(&self.lids),
        ))
    }
}

/// A handle to a running client. Cheap to clone; every clone talks to the same connection.
///
/// The drive task stops when [`stop`](Self::stop) is called, when the connection closes for
/// good (logged out, replaced, banned, …), or when every `Client` handle is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    commands: async_channel::Sender<Command>,
    pub(crate) media: crate::media::Transfers,
    status: Arc<Status>,
    /// The store, for LID mappings ([`canonical_jid`](Self::canonical_jid)).
    lids: Arc<dyn LidLookup>,
}

impl std::fmt::Debug for dyn LidLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LidLookup")
    }
}

/// Reads LID mappings from a store (object-safe, for the non-generic [`Client`]).
pub(crate) trait LidLookup: Send + Sync {
    /// The other identity of `user` (a JID without device), when the store maps it.
    fn other_identity<'a>(
        &'a self,
        user: Jid,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Jid>, StoreError>> + Send + 'a>>;
}

impl<S: CredentialStore> LidLookup for S {
    fn other_identity<'a>(
        &'a self,
        user: Jid,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Jid>, StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let mut request = amarula_core::persist::LoadRequest::default();
            request.lid_mappings.push(user);
            let loaded = self.load_keys(&request).await?;
            Ok(loaded.lid_mappings.into_iter().next().and_then(|(_, o)| o))
        })
    }
}

impl Client {
    pub(crate) fn new(
        commands: async_channel::Sender<Command>,
        media: crate::media::Transfers,
        status: Arc<Status>,
        lids: Arc<dyn LidLookup>,
    ) -> Self {
        Self {
            lids,
            commands,
            media,
            status,
        }
    }

    pub(crate) fn status(&self) -> &Status {
        &self.status
    }

    /// A handle for background work of the drive task that does not keep the client alive.
    pub(crate) fn downgrade(&self) -> WeakClient {
        WeakClient {
            commands: self.commands.downgrade(),
            media: self.media.clone(),
            status: Arc::clone(&self.status),
            lids: Arc::clone(&self.lids),
        }
    }

    /// Sends a command without waiting for an answer.
    pub(crate) async fn send_command(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Stopped)
    }

    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// Sends an IQ and waits for how it ends: the reply, the server's error, a timeout
    /// ([`IqResult::Timeout`]) or the end of the connection ([`IqResult::Disconnected`]).
    pub async fn query_iq(&self, request: IqRequest) -> Result<IqResult, ClientError> {
        self.call(|tx| Command::Iq(request, tx)).await
    }

    /// Relays a `<message>` stanza (with `id` and `to`) and waits for the server's ack.
    /// `context` is kept with it in the sent-message cache (and the store) for retry receipts.
    /// [`MessageAckResult::Disconnected`] means: relay it again after the reconnect.
    pub async fn relay_stanza(
        &self,
        node: Node,
        context: Bytes,
    ) -> Result<MessageAckResult, ClientError> {
        self.call(|tx| Command::Relay(node, context, tx)).await
    }

    /// Runs a machine send verb in the drive task and waits until the server accepted the
    /// message (or the send failed).
    async fn compose(
        &self,
        send: impl FnOnce(&mut ConnectionMachine, Instant) -> Result<Sent, SendError> + Send + 'static,
    ) -> Result<Sent, ClientError> {
        self.call(|tx| Command::Compose(Box::new(send), tx)).await
    }

    /// [`compose`](Self::compose) for the verbs that return an id.
    async fn send_with(
        &self,
        send: impl FnOnce(&mut ConnectionMachine, Instant) -> Result<String, SendError> + Send + 'static,
    ) -> Result<String, ClientError> {
        let sent = self
            .compose(move |m, now| send(m, now).map(Sent::Id))
            .await?;
        Ok(sent.id().to_owned())
    }

    /// History sync: asks our phone for up to `count` messages of `oldest.chat` older than
    /// `oldest`, and returns the request id once the server accepted the request. The answer
    /// comes as [`Event::HistorySync`](amarula_core::machine::Event::HistorySync) parts of
    /// type `OnDemand` whose `request_id` is this id.
    pub async fn request_history(
        &self,
        oldest: &amarula_core::machine::OldestMessage,
        count: u32,
    ) -> Result<String, ClientError> {
        let oldest = oldest.clone();
        self.send_with(move |m, now| m.request_history(now, &oldest, count))
            .await
    }

    /// History sync: asks our phone to send again a message this device could not decrypt,
    /// and returns the request id once the server accepted the request. The answer comes as
    /// [`Event::PlaceholderResend`](amarula_core::machine::Event::PlaceholderResend) with
    /// this `request_id`.
    pub async fn request_resend(&self, key: &MessageRef) -> Result<String, ClientError> {
        let key = key.clone();
        self.send_with(move |m, now| m.request_resend(now, &key))
            .await
    }

    /// Sends an end-to-end encrypted text message to a user (every device of theirs, and our
    /// own other devices) or a group, and returns its id once the server has accepted it.
    /// `text` is a `&str`, or a [`Text`] with a reply and mentions. A send the connection
    /// cut off goes again, with the same id, after the reconnect; the call waits for it.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use amarula::Text;
    /// let to = "15551234567@s.whatsapp.net".parse()?;
    /// let id = client.send_text(&to, "hi").await?;
    /// let mention = "15557654321@s.whatsapp.net".parse()?;
    /// client.send_text(&to, Text::new("hi @15557654321").mention(mention)).await?;
    /// # let _ = id; Ok(()) }
    /// ```
    pub async fn send_text(&self, to: &Jid, text: impl Into<Text>) -> Result<String, ClientError> {
        let (to, text) = (to.clone(), text.into());
        self.send_with(move |m, now| m.send_text(now, &to, text))
            .await
    }

    /// Sends `text` in reply to `quote` (a received message's
    /// [`quote`](amarula_core::machine::IncomingMessage::quote), or a [`Quote`] of one of ours).
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client, m: amarula::core::machine::IncomingMessage)
    /// # -> Result<(), amarula::ClientError> {
    /// client.send_reply(&m.chat, "agreed", m.quote()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_reply(
        &self,
        to: &Jid,
        text: &str,
        quote: Quote,
    ) -> Result<String, ClientError> {
        let (to, text) = (to.clone(), text.to_owned());
        self.send_with(move |m, now| m.send_reply(now, &to, &text, quote))
            .await
    }

    /// Reacts to `target` with `emoji`; `""` removes our reaction.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client, m: amarula::core::machine::IncomingMessage)
    /// # -> Result<(), amarula::ClientError> {
    /// client.send_reaction(&m.reference(), "👍").await?;
    /// client.send_reaction(&m.reference(), "").await?; // taken back
    /// # Ok(()) }
    /// ```
    pub async fn send_reaction(
        &self,
        target: &MessageRef,
        emoji: &str,
    ) -> Result<String, ClientError> {
        let (target, emoji) = (target.clone(), emoji.to_owned());
        self.send_with(move |m, now| m.send_reaction(now, &target, &emoji))
            .await
    }

    /// Replaces the content of our message `target` with `content`.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use amarula::core::content::build;
    /// use amarula::MessageRef;
    /// let chat: amarula::core::jid::Jid = "15551234567@s.whatsapp.net".parse()?;
    /// let id = client.send_text(&chat, "helo").await?;
    /// let fixed = build::Text::new("hello").to_message(&chat, &chat);
    /// client.send_edit(&MessageRef::ours(chat, id), fixed).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_edit(
        &self,
        target: &MessageRef,
        content: Message,
    ) -> Result<String, ClientError> {
        let target = target.clone();
        self.send_with(move |m, now| m.send_edit(now, &target, content))
            .await
    }

    /// Deletes `target` for everyone: our own message, or someone else's in a group we
    /// administer.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client, m: amarula::core::machine::IncomingMessage)
    /// # -> Result<(), amarula::ClientError> {
    /// client.send_revoke(&m.reference()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_revoke(&self, target: &MessageRef) -> Result<String, ClientError> {
        let target = target.clone();
        self.send_with(move |m, now| m.send_revoke(now, &target))
            .await
    }

    /// Sends a poll; returns its id and its secret once the server accepted it. The secret
    /// is stored before the poll leaves, so votes decrypt after a restart too; they arrive
    /// as messages whose content is a [`PollVote`](amarula_core::content::PollVote).
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let group = "120363000000000001@g.us".parse()?;
    /// let poll = client.send_poll(&group, "Lunch?", &["pizza", "sushi"], 1).await?;
    /// # let _ = poll.id; Ok(()) }
    /// ```
    pub async fn send_poll<S: AsRef<str>>(
        &self,
        to: &Jid,
        name: &str,
        options: &[S],
        selectable: u32,
    ) -> Result<SentPoll, ClientError> {
        let (to, name) = (to.clone(), name.to_owned());
        let options: Vec<String> = options.iter().map(|o| o.as_ref().to_owned()).collect();
        let sent = self
            .compose(move |m, now| {
                m.send_poll(now, &to, &name, &options, selectable)
                    .map(Sent::Poll)
            })
            .await?;
        match sent {
            Sent::Poll(p) => Ok(p),
            Sent::Id(_) => unreachable!("the closure above queues a poll"),
        }
    }

    /// Votes on `poll` for the options named `selected` (the whole selection; empty
    /// withdraws the vote).
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client, poll: amarula::core::machine::IncomingMessage)
    /// # -> Result<(), amarula::ClientError> {
    /// client.send_poll_vote(&poll.reference(), &["sushi"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_poll_vote<S: AsRef<str>>(
        &self,
        poll: &MessageRef,
        selected: &[S],
    ) -> Result<String, ClientError> {
        let poll = poll.clone();
        let selected: Vec<String> = selected.iter().map(|o| o.as_ref().to_owned()).collect();
        self.send_with(move |m, now| m.send_poll_vote(now, &poll, &selected))
            .await
    }

    /// Sends a contact card.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use amarula::core::content::build::vcard;
    /// use amarula::Contact;
    /// let to = "15551234567@s.whatsapp.net".parse()?;
    /// let ann = Contact::new("Ann", vcard("Ann", "15550001111"));
    /// client.send_contact(&to, &ann).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_contact(&self, to: &Jid, card: &Contact) -> Result<String, ClientError> {
        let (to, card) = (to.clone(), card.clone());
        self.send_with(move |m, now| m.send_contact(now, &to, &card))
            .await
    }

    /// Sends several contact cards under one name.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client, ann: amarula::Contact, bob: amarula::Contact)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// let to = "15551234567@s.whatsapp.net".parse()?;
    /// client.send_contacts(&to, "Ann and Bob", &[ann, bob]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_contacts(
        &self,
        to: &Jid,
        display_name: &str,
        cards: &[Contact],
    ) -> Result<String, ClientError> {
        let (to, name, cards) = (to.clone(), display_name.to_owned(), cards.to_vec());
        self.send_with(move |m, now| m.send_contacts(now, &to, &name, &cards))
            .await
    }

    /// Sends a location pin.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use amarula::Location;
    /// let to = "15551234567@s.whatsapp.net".parse()?;
    /// let mut dam = Location::new(52.3731, 4.8922);
    /// dam.name = Some("Dam Square".into());
    /// client.send_location(&to, &dam).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_location(&self, to: &Jid, place: &Location) -> Result<String, ClientError> {
        let (to, place) = (to.clone(), place.clone());
        self.send_with(move |m, now| m.send_location(now, &to, &place))
            .await
    }

    /// Sends any `Message`: the stanza attributes follow from its content, and a message
    /// secret it carries is kept (see [`send_text`](Self::send_text) for the rest).
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use amarula::proto::e2e;
    /// let to = "15551234567@s.whatsapp.net".parse()?;
    /// let live = e2e::Message {
    ///     live_location_message: Some(Box::new(e2e::LiveLocationMessage {
    ///         degrees_latitude: Some(52.37),
    ///         degrees_longitude: Some(4.89),
    ///         ..Default::default()
    ///     })),
    ///     ..Default::default()
    /// };
    /// client.send_message(&to, live).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_message(&self, to: &Jid, message: Message) -> Result<String, ClientError> {
        let to = to.clone();
        self.send_with(move |m, now| m.send_message(now, &to, message))
            .await
    }

    /// Marks messages of `chat` as read (`<receipt type="read">`, one stanza for up to 256
    /// ids of one author); their sender's devices get [`Event::Receipt`]. In a group,
    /// `participant` is the author ([`IncomingMessage::sender`]) and required; in a 1:1 chat
    /// it is ignored.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client, m: amarula::core::machine::IncomingMessage) -> Result<(), amarula::ClientError> {
    /// client.mark_read(&m.chat, &[&m.id], Some(&m.sender)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`IncomingMessage::sender`]: amarula_core::machine::IncomingMessage::sender
    pub async fn mark_read(
        &self,
        chat: &Jid,
        ids: &[impl AsRef<str>],
        participant: Option<&Jid>,
    ) -> Result<(), ClientError> {
        self.receipt(false, chat, ids, participant).await
    }

    /// Marks voice or video notes of `chat` as played (`<receipt type="played">`), as
    /// [`mark_read`](Self::mark_read).
    pub async fn mark_played(
        &self,
        chat: &Jid,
        ids: &[impl AsRef<str>],
        participant: Option<&Jid>,
    ) -> Result<(), ClientError> {
        self.receipt(true, chat, ids, participant).await
    }

    async fn receipt(
        &self,
        played: bool,
        chat: &Jid,
        ids: &[impl AsRef<str>],
        participant: Option<&Jid>,
    ) -> Result<(), ClientError> {
        let command = StatusCommand::Receipt {
            played,
            chat: chat.clone(),
            ids: ids.iter().map(|id| id.as_ref().to_owned()).collect(),
            participant: participant.cloned(),
        };
        self.call(|tx| Command::Status(command, tx)).await
    }

    /// Sets our presence (`<presence type="available|unavailable" name>`). Needs a push name
    /// ([`set_push_name`](Self::set_push_name)); fails with [`SendError::NoPushName`]
    /// otherwise. Every connection starts unavailable: call it after each
    /// [`Event::LoggedIn`] to receive presence and typing updates.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), amarula::ClientError> {
    /// client.set_presence(amarula::core::machine::Presence::Available).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_presence(&self, presence: Presence) -> Result<(), ClientError> {
        self.call(|tx| Command::Status(StatusCommand::Presence(presence), tx))
            .await
    }

    /// Subscribes to `user`'s presence for this connection: [`Event::Presence`] follows (the
    /// current state, then changes, with the last-seen time) while we are available.
    pub async fn presence_subscribe(&self, user: &Jid) -> Result<(), ClientError> {
        let user = user.clone();
        self.call(|tx| Command::Status(StatusCommand::Subscribe(user), tx))
            .await
    }

    /// Tells `chat` (a user or a group) that we are typing, recording or stopped
    /// (`<chatstate>`); the other side gets [`Event::ChatState`].
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), amarula::ClientError> {
    /// use amarula::core::machine::ChatState;
    /// let chat = "15551234567@s.whatsapp.net".parse().expect("a JID");
    /// client.send_chatstate(&chat, ChatState::Composing).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_chatstate(&self, chat: &Jid, state: ChatState) -> Result<(), ClientError> {
        let chat = chat.clone();
        self.call(|tx| Command::Status(StatusCommand::ChatState(chat, state), tx))
            .await
    }

    /// Sends a setting to our other devices as an app-state patch: mute / unmute
    /// ([`AppStateAction::Mute`](amarula_core::appstate::AppStateAction::Mute)), pin / unpin,
    /// archive / unarchive, mark read / unread, star / unstar, labels (create, rename,
    /// delete, put on a chat or a message), a contact's name, our push name, a message
    /// deleted for us, a chat cleared or deleted. Waits until the server accepted
    /// it (then it is applied locally, with its `Event::AppState`) and returns the collection's
    /// new version. Needs the app-state keys our phone shares after pairing.
    pub async fn send_app_state(
        &self,
        action: amarula_core::appstate::AppStateAction,
    ) -> Result<u64, ClientError> {
        self.call(|tx| Command::AppState(action, tx)).await
    }

    /// Pulls app-state collections from the server (all five when `collections` is empty);
    /// returns once the requests are sent. Each ends with `Event::AppStateSynced` or
    /// `Event::AppStateFailed`.
    pub async fn sync_app_state(
        &self,
        collections: Vec<amarula_core::appstate::Collection>,
    ) -> Result<(), ClientError> {
        self.call(|tx| Command::AppStateSync(collections, tx)).await
    }

    /// Sets our display name: stored with the credentials (written to the store before the
    /// announcement leaves, [`Event::CredentialsChanged`] follows) and announced to the server
    /// when logged in. Used by
    /// [`set_presence`](Self::set_presence). Between connections it fails with
    /// [`SendError::NotConnected`].
    pub async fn set_push_name(&self, name: &str) -> Result<(), ClientError> {
        let name = name.to_owned();
        self.call(|tx| Command::Status(StatusCommand::PushName(name), tx))
            .await
    }

    /// The canonical form of a user or device JID (LID.md §0): its LID, device kept, when
    /// the mapping is known (learned from usync, groups, notifications, message envelopes or
    /// the primary's migration push); otherwise the JID itself. A LID, a group or another
    /// server is returned as is.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn canonical_jid(&self, jid: &Jid) -> Result<Jid, StoreError> {
        if jid.is_lid() || !matches!(jid.server_part(), amarula_core::jid::Server::User) {
            return Ok(jid.clone());
        }
        self.other_form(jid).await
    }

    /// The reverse of [`canonical_jid`](Self::canonical_jid): the phone number JID of a LID,
    /// device kept, when the mapping is known; otherwise the JID itself.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn phone_jid(&self, jid: &Jid) -> Result<Jid, StoreError> {
        if !matches!(jid.server_part(), amarula_core::jid::Server::Lid) {
            return Ok(jid.clone());
        }
        self.other_form(jid).await
    }

    async fn other_form(&self, jid: &Jid) -> Result<Jid, StoreError> {
        let user = jid.to_non_device();
        let Some(other) = self.lids.other_identity(user).await? else {
            return Ok(jid.clone());
        };
        let other = other.to_non_device();
        Ok(match jid.explicit_device() {
            Some(d) => other.with_device(d),
            None => other,
        })
    }

    /// Sends a node that needs no answer (receipts, presence, …); returns once it is queued
    /// for the socket.
    pub async fn send_node(&self, node: Node) -> Result<(), ClientError> {
        self.call(|tx| Command::Send(node, tx)).await
    }

    /// Sends the held ack of a stanza ([`Event::Stanza`] with `ack: Some(token)`) once the
    /// application has handled it durably.
    pub async fn confirm(&self, token: AckToken, how: Confirm) -> Result<(), ClientError> {
        self.call(|tx| Command::Confirm(token, how, tx)).await
    }

    /// Starts phone-code pairing for `phone` (international digits, no `+`) and returns the
    /// 8-character code to type on the phone. Needs the pairing phase: an unpaired device after
    /// the first [`Event::PairingQr`].
    pub async fn request_pairing_code(&self, phone: &str) -> Result<String, ClientError> {
        let phone = phone.to_owned();
        self.call(|tx| Command::PairingCode(phone, tx)).await
    }

    /// Closes the current socket only: the machine closes locally
    /// ([`CloseReason::Local`]), pending calls end as disconnected, and the client reconnects
    /// **right away** (the event says [`Reconnect::Now`]). During a reconnect delay it cuts
    /// the delay short. Returns once the old socket is closed. Use [`stop`](Self::stop) to end
    /// everything.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Disconnect(tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        rx.await.map_err(|_| ClientError::Stopped)
    }

    /// Ends everything: closes the connection without reconnecting and stops the drive task.
    /// [`Events`] ends with [`ClientEvent::Stopped`]. Returns once the task has stopped;
    /// stopping a stopped client does nothing.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the drive task has stopped.
    pub fn is_stopped(&self) -> bool {
        self.commands.is_closed()
    }
}

/// The events of a [`Client`], in order; ends after [`ClientEvent::Stopped`].
///
/// The queue is unbounded so that the drive task never waits for the application (it must
/// keep answering the server); read it steadily. Also a [`Stream`].
#[derive(Debug)]
pub struct Events {
    rx: futures_channel::mpsc::UnboundedReceiver<ClientEvent>,
}

impl Events {
    pub(crate) fn new(rx: futures_channel::mpsc::UnboundedReceiver<ClientEvent>) -> Self {
        Self { rx }
    }

    /// The next event; `None` after [`ClientEvent::Stopped`].
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        futures_util::StreamExt::next(&mut self.rx).await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<ClientEvent> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Events {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}
