//! What the machine hands out: frames to write and events for the application.

use std::time::Duration;

use bytes::Bytes;

use super::RequestId;
use super::chatstate::ChatStateUpdate;
use super::messaging::{IncomingMessage, MessagingError, UndecryptableMessage};
use super::presence::PresenceUpdate;
use super::receipts::Receipt;
use crate::binary::Node;
use crate::credentials::{Credentials, DeviceIdentity};
use crate::iq::IqError;
use crate::jid::Jid;
use crate::noise::{HandshakeError, TransportError};
use crate::notify::call::CallEvent;
use crate::notify::group::GroupNotification;
use crate::pairing::{PairError, PairingError};
use crate::persist::{Change, LoadRequest};

/// One output of the machine. Apply them in the order [`poll_output`] returns them: an event
/// that must be persisted comes before any frame that depends on it.
///
/// [`poll_output`]: super::ConnectionMachine::poll_output
#[derive(Debug)]
pub enum Output {
    /// Bytes to write to the socket, as one WebSocket binary message.
    Transmit(Bytes),
    /// Something for the application.
    Event(Event),
}

/// Events for the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The credentials changed (pairing, phone-code pairing, own LID, routing info). Persist
    /// them before applying any later output.
    CredentialsChanged(Box<Credentials>),
    /// A QR code to show until `valid_for` has passed, when the next one follows (or pairing
    /// ends with [`CloseReason::PairingTimedOut`]).
    PairingQr {
        /// The text to render as a QR code.
        qr: String,
        /// Which ref this is, from 0.
        index: usize,
        /// How long it is valid.
        valid_for: Duration,
    },
    /// Phone-code pairing: the server accepted the code; the user can now type it on the phone.
    PairingCodeAccepted,
    /// Phone-code pairing failed before the phone confirmed (the server refused the request,
    /// or the phone's answer did not check out). QR pairing goes on.
    PairingCodeFailed {
        /// What went wrong.
        reason: PairingCodeFailure,
    },
    /// Pairing succeeded; the server restarts the stream next (515) and the driver reconnects
    /// to log in. The new identity was persisted with [`Event::CredentialsChanged`] before.
    Paired {
        /// Who this device now is.
        device: Box<DeviceIdentity>,
    },
    /// Logged in: `<success>` arrived.
    LoggedIn {
        /// Our own LID user, when the server sent it.
        own_lid: Option<Jid>,
        /// Server clock minus local clock, in milliseconds.
        server_time_offset_ms: i64,
    },
    /// The result of an IQ sent with [`send_iq`](super::ConnectionMachine::send_iq).
    /// Exactly one follows for each request id.
    IqResponse {
        /// The request.
        id: RequestId,
        /// How it ended.
        result: IqResult,
    },
    /// A stanza for the application. When `ack` is set, the machine has not acknowledged it
    /// yet: handle it durably, then hand the token to
    /// [`confirm`](super::ConnectionMachine::confirm).
    Stanza {
        /// The stanza.
        node: Node,
        /// The ack held for the application's confirmation.
        ack: Option<AckToken>,
    },
    /// A message given to [`relay_message`](super::ConnectionMachine::relay_message) was stored
    /// in the sent-message cache; persist it (retry receipts may ask for it after a restart)
    /// before applying later outputs.
    MessageCached(SentMessage),
    /// The outcome of a relayed message: the server's ack, an error, a timeout or a
    /// disconnect. Exactly one follows for each relayed message id on this connection.
    MessageAck {
        /// The message id.
        id: String,
        /// How it ended.
        result: MessageAckResult,
    },
    /// A device could not decrypt a message we sent and asks for it again. Messages sent with
    /// [`send_text`](super::ConnectionMachine::send_text) and the other `send_*` commands
    /// are encrypted again (with the same stanza attributes) for exactly
    /// `requester` and relayed with the same id by the machine itself; for others (relayed
    /// with [`relay_message`](super::ConnectionMachine::relay_message) and a context of the
    /// application's own), the application does it.
    RetryRequested(Box<RetryRequest>),
    /// A retry receipt that will not be answered.
    RetryRejected {
        /// The message id it asked for.
        id: String,
        /// The device that asked.
        requester: Jid,
        /// Why.
        reason: RetryRejection,
    },
    /// A change to state that must outlive the process (a Signal session, sender key, prekey,
    /// device list, or an incoming message kept until confirmed). Persist it before applying
    /// any later output; consecutive ones form one batch.
    Persist(Change),
    /// Records the machine needs from the store: look them up and hand them to
    /// [`provide`](super::ConnectionMachine::provide). The work that needs them waits.
    Load(LoadRequest),
    /// A decrypted message. Confirm its `ack` once handled durably.
    Message(Box<IncomingMessage>),
    /// A delivery, read or played receipt for messages (usually ours), typed; the machine has
    /// acked it. `retry` receipts are not typed: they lead to [`Event::RetryRequested`] or
    /// [`Event::RetryRejected`] and come as [`Event::Stanza`] too. [`Receipt::node`] keeps
    /// the stanza.
    Receipt(Box<Receipt>),
    /// A contact's presence changed (after
    /// [`presence_subscribe`](super::ConnectionMachine::presence_subscribe)).
    /// [`PresenceUpdate::node`] keeps the stanza; presence of other shapes comes as
    /// [`Event::Stanza`].
    Presence(Box<PresenceUpdate>),
    /// Someone is typing, recording or stopped in a chat. [`ChatStateUpdate::node`] keeps the
    /// stanza; chat state of other shapes comes as [`Event::Stanza`], the echo of our own
    /// is dropped.
    ChatState(Box<ChatStateUpdate>),
    /// A message that did not decrypt (a retry receipt was sent where the protocol asks).
    Undecryptable(Box<UndecryptableMessage>),
    /// The answer to [`media_conn`](super::ConnectionMachine::media_conn): the media hosts and
    /// upload token, or why they could not be had.
    MediaConn(Result<crate::media::MediaConn, String>),
    /// The machine needs a file from the media hosts (a history-sync blob, an app-state
    /// snapshot or patch): download, check and decrypt it like media and answer with
    /// [`handle_blob`](super::ConnectionMachine::handle_blob). The `amarula` drivers do this
    /// by themselves.
    FetchBlob(super::BlobRequest),
    /// A part of a history-sync chunk from our phone (history sync): chats, messages, push
    /// names, LID mappings (already persisted) and privacy tokens. Parts of one chunk come in
    /// order; confirm the last part's `ack` once the chunk is stored.
    HistorySync(Box<super::HistorySyncBatch>),
    /// A history-sync chunk could not be had or read (history sync): nothing of it was
    /// applied. Unless `gave_up`, the notification was not acknowledged and comes again after
    /// a restart.
    HistorySyncFailed {
        /// The notification message's id.
        message_id: String,
        /// Which history.
        sync_type: crate::history::SyncType,
        /// Why.
        error: super::HistorySyncError,
        /// The chunk was older than
        /// [`history_give_up_after`](super::Config::history_give_up_after): it was
        /// acknowledged and forgotten, and will not come again.
        gave_up: bool,
    },
    /// Our phone answered a [`request_resend`](super::ConnectionMachine::request_resend)
    /// (history sync): the messages it had, matched by `request_id`. Confirm its `ack` once
    /// handled.
    PlaceholderResend(Box<super::ResendAnswer>),
    /// Our phone answered a
    /// [`request_media_reupload`](super::ConnectionMachine::request_media_reupload): the new
    /// direct path of the file, or why not (already acked).
    MediaRetry(Box<super::MediaRetryAnswer>),
    /// One app-state mutation applied (from a sync, or our own patch once accepted).
    AppState(Box<super::AppStateUpdate>),
    /// A collection's pull ended: it is at `version`.
    AppStateSynced {
        /// The collection.
        collection: crate::appstate::Collection,
        /// The version reached.
        version: u64,
    },
    /// A collection's pull failed. Nothing of the failing snapshot or patch was applied;
    /// `recovering` says the collection is being refetched from a fresh snapshot.
    AppStateFailed {
        /// The collection.
        collection: crate::appstate::Collection,
        /// Why.
        error: super::AppStateSyncError,
        /// Whether a pull from the snapshot follows.
        recovering: bool,
    },
    /// The outcome of a [`send_app_state`](super::ConnectionMachine::send_app_state): the
    /// collection's new version, or the server's refusal (a pull follows to catch up).
    AppStatePatchSent {
        /// The request id `send_app_state` returned.
        id: RequestId,
        /// The collection.
        collection: crate::appstate::Collection,
        /// The new version, or why not.
        result: Result<u64, IqResult>,
    },
    /// A message given to [`send_text`](super::ConnectionMachine::send_text) or another
    /// `send_*` command could not be relayed (or, for a vote, built); no
    /// [`Event::MessageAck`] follows for it.
    SendFailed {
        /// The message id.
        id: String,
        /// Why.
        error: MessagingError,
    },
    /// The server took an upload of our one-time prekeys, every IQ of it
    /// ([`Config::prekey_upload_batch`](super::Config::prekey_upload_batch)): other devices can
    /// now start sessions with this one (after the first login, it can receive messages from
    /// here on).
    PreKeysUploaded {
        /// How many were uploaded.
        count: u32,
    },
    /// A device's identity key changed (its owner reinstalled, or someone else took over the
    /// number): the "security code changed" notice.
    IdentityChanged {
        /// The device.
        device: Jid,
    },
    /// The answer to a query sent with [`send_query`](super::ConnectionMachine::send_query).
    /// Exactly one follows for each request id.
    QueryResponse {
        /// The request.
        id: RequestId,
        /// The typed answer, or why there is none.
        result: Result<super::Answer, IqError>,
    },
    /// A group changed (`<notification type="w:gp2">`, typed); already acked. The member list
    /// group sends use follows it.
    GroupChanged(Box<GroupNotification>),
    /// A call stanza (an offer, or what followed it), typed; already acked. Reject an offer
    /// with [`reject_call`](super::ConnectionMachine::reject_call).
    Call(Box<CallEvent>),
    /// The connection ended. No further output follows except what was already queued; the
    /// driver closes the socket and, as `reconnect` says, starts a new machine from
    /// [`into_session`](super::ConnectionMachine::into_session).
    Closed {
        /// Why.
        reason: CloseReason,
        /// What to do next.
        reconnect: Reconnect,
    },
}

/// How an IQ ended.
#[derive(Debug, Clone, PartialEq)]
pub enum IqResult {
    /// The server answered `type="result"`.
    Ok(Node),
    /// The server answered `type="error"`.
    Error {
        /// The `<error code>`.
        code: u16,
        /// The `<error text>`.
        text: String,
        /// The whole reply.
        node: Node,
    },
    /// No answer within the timeout.
    Timeout,
    /// The connection ended first.
    Disconnected,
}

/// How a relayed message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageAckResult {
    /// The server accepted it.
    Delivered {
        /// Server timestamp (`t`), unix seconds.
        t: Option<u64>,
        /// The server's participant hash (`phash`), for groups.
        phash: Option<String>,
        /// Newsletter server id.
        server_id: Option<String>,
    },
    /// The server refused it with this code (463, 479, …).
    Error {
        /// The `error` attribute.
        code: u16,
    },
    /// No ack within the timeout.
    Timeout,
    /// The connection ended first; relay it again on the next connection.
    Disconnected,
}

/// An entry of the sent-message cache, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The message id.
    pub id: String,
    /// Where it went (`to` of the stanza).
    pub to: Jid,
    /// The stanza's `type` (text, media, …).
    pub kind: String,
    /// Application data needed to re-encrypt it (e.g. the serialized plaintext), given to
    /// [`relay_message`](super::ConnectionMachine::relay_message) and returned in
    /// [`RetryRequest`].
    pub context: Bytes,
    /// Unix time in milliseconds when it was relayed.
    pub sent_unix_ms: u64,
}

/// A retry receipt to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryRequest {
    /// The message id.
    pub id: String,
    /// The device that asked (`participant` in groups, else `from`).
    pub requester: Jid,
    /// The retry count the device sent.
    pub count: u8,
    /// The cached message.
    pub message: SentMessage,
    /// The whole receipt (its `<registration>` and `<keys>` are needed to rebuild the session).
    pub receipt: Node,
}

/// Why a retry receipt is not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRejection {
    /// The id is not in the sent-message cache (never sent, evicted, or from before a restart
    /// that lost it).
    Unknown,
    /// The message is older than the cache's age limit.
    Expired,
    /// This device already asked as often as the limit allows.
    LimitReached,
    /// The receipt has no usable id or sender.
    Malformed,
}

/// Why phone-code pairing failed.
#[derive(Debug)]
pub enum PairingCodeFailure {
    /// The server refused the companion_hello request.
    Refused(IqResult),
    /// The phone's answer did not check out.
    Crypto(PairingError),
}

/// A held ack of an incoming stanza: hand it back to
/// [`confirm`](super::ConnectionMachine::confirm) once the stanza is handled durably.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AckToken(pub(crate) u64);

impl AckToken {
    /// The token as a number, for recording a session.
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// A token from [`to_raw`](Self::to_raw), for replaying a recorded session.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

/// What to send for a held ack.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    /// The standard acknowledgement: the delivery receipt of a decrypted message (no `<ack>`
    /// goes with it, SESSION.md §5.1), the `<ack>` of any other stanza.
    Ack,
    /// An `<ack>` with `error` (a NACK code of SESSION.md §5.2, e.g. 491).
    Nack(u16),
    /// This node instead of the ack, e.g. the delivery receipt that acks a message.
    Replace(Node),
}

/// Misuse of a command. Never caused by what the peer sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is not open (still in the handshake, or closed).
    #[error("not connected")]
    NotConnected,
    /// The command needs a logged-in connection.
    #[error("not logged in")]
    NotLoggedIn,
    /// The command needs the pairing phase (an unpaired device waiting for the phone).
    #[error("not pairing")]
    NotPairing,
    /// The node cannot be encoded.
    #[error("cannot encode the node: {0}")]
    Encode(#[from] crate::binary::EncodeError),
    /// Too many requests are waiting for answers ([`Config::max_pending_iqs`](super::Config)).
    #[error("too many pending requests")]
    TooManyPending,
    /// A relayed message needs `id` and `to` attributes.
    #[error("message without id or to")]
    MissingAttribute,
    /// The recipient is neither a user nor a group.
    #[error("the recipient is neither a user nor a group")]
    InvalidRecipient,
    /// The ack token is unknown: already confirmed, forgotten, or from an earlier connection
    /// (the server delivers that stanza again, so nothing is lost).
    #[error("unknown or expired ack token")]
    UnknownAckToken,
    /// Phone-code pairing could not start.
    #[error("phone-code pairing: {0}")]
    Pairing(#[from] PairingError),
    /// Presence needs our push name, and none is known (set one with
    /// [`set_push_name`](super::ConnectionMachine::set_push_name)); or the name given is empty.
    #[error("no push name")]
    NoPushName,
    /// A receipt needs at least one message id, and ids are not empty.
    #[error("no message ids")]
    NoMessageIds,
    /// No app-state sync key is held yet (our phone shares them after pairing).
    #[error("no app-state sync key")]
    NoAppStateKey,
    /// A receipt in a group, broadcast list or status needs the author (`participant`).
    #[error("a group receipt needs the participant")]
    MissingParticipant,
    /// The message cannot be built from what was given (a poll without options, an edit of
    /// someone else's message, …).
    #[error("invalid message: {0}")]
    InvalidContent(#[from] crate::content::build::BuildError),
}

/// Why the connection ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application closed it.
    Local,
    /// Stream error 515: the server wants a new connection (always right after pairing).
    RestartRequired,
    /// Logged out: failure 401/403/406, stream error 401 `device_removed` or 516. Delete the
    /// credentials.
    LoggedOut {
        /// The failure reason or stream error code.
        code: u16,
    },
    /// This device logged itself out ([`Query::Logout`](super::Query::Logout) succeeded): the
    /// server no longer knows it. Delete the credentials and every record.
    Logout,
    /// Another connection with the same credentials took over.
    Replaced,
    /// Failure 402: temporarily banned.
    TemporaryBan {
        /// The ban reason code (101–106), if given.
        code: Option<u32>,
        /// Time until the ban ends, if given.
        expire: Option<Duration>,
    },
    /// Failure 405: this client version is too old.
    ClientOutdated,
    /// Failure 500/503 or stream error 503: the server is having trouble.
    ServiceUnavailable {
        /// The code.
        code: u16,
    },
    /// Stream error 429.
    RateLimited,
    /// Another `<failure reason>`; no reconnect.
    Failure {
        /// The reason code.
        code: u16,
        /// The `message` attribute, if any.
        message: Option<String>,
    },
    /// Another `<stream:error>`; reconnect with backoff.
    StreamError {
        /// The `code` attribute, if any.
        code: Option<u16>,
        /// The first child's tag (e.g. `ack`), if any.
        condition: Option<String>,
    },
    /// `<ib><downgrade_webclient/></ib>`: the account is not multi-device.
    MultideviceMismatch,
    /// The server ended the stream (`<xmlstreamend/>`).
    ServerClosedStream,
    /// The driver reported the socket closed or failed.
    SocketClosed,
    /// The handshake or login took longer than the configured timeout.
    HandshakeTimeout,
    /// The Noise handshake failed (including a bad server certificate).
    Handshake(HandshakeError),
    /// A frame could not be read or decrypted.
    Transport(TransportError),
    /// A request went out and nothing at all came back in time.
    DeadSocket,
    /// A keepalive ping got no answer and nothing else arrived either.
    KeepaliveTimeout,
    /// All QR refs expired without the phone scanning one.
    PairingTimedOut,
    /// The pair-success failed a check; pairing was refused.
    PairingRefused(PairError),
    /// The credentials could not be turned into a ClientPayload.
    BadCredentials(PairingError),
}

/// What the driver should do after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Connect again at once.
    Now,
    /// Connect again after this delay.
    After(Duration),
    /// Do not reconnect.
    Never,
}

/// The reconnect decision for a close reason: restart-type closes reconnect at once, transient
/// failures with backoff, and closes that another attempt cannot fix (logged out, replaced,
/// banned, outdated, local) never.
pub(crate) enum Policy {
    Now,
    Backoff { extra_attempts: u32 },
    Never,
}

impl CloseReason {
    pub(crate) fn policy(&self) -> Policy {
        match self {
            Self::RestartRequired | Self::DeadSocket | Self::KeepaliveTimeout => Policy::Now,
            Self::ServiceUnavailable { .. }
            | Self::StreamError { .. }
            | Self::ServerClosedStream
            | Self::SocketClosed
            | Self::HandshakeTimeout
            | Self::Handshake(_)
            | Self::Transport(_) => Policy::Backoff { extra_attempts: 0 },
            // SESSION.md §1.3: rate limiting lengthens the backoff.
            Self::RateLimited => Policy::Backoff { extra_attempts: 5 },
            Self::Local
            | Self::LoggedOut { .. }
            | Self::Logout
            | Self::Replaced
            | Self::TemporaryBan { .. }
            | Self::ClientOutdated
            | Self::Failure { .. }
            | Self::MultideviceMismatch
            | Self::PairingTimedOut
            | Self::PairingRefused(_)
            | Self::BadCredentials(_) => Policy::Never,
        }
    }

    /// Whether the credentials are no longer valid and should be deleted.
    pub fn is_logged_out(&self) -> bool {
        matches!(self, Self::LoggedOut { .. } | Self::Logout)
    }
}

/// Fibonacci backoff (1, 1, 2, 3, 5, 8 … seconds) capped at `cap`, for the `attempt`-th
/// consecutive failure (from 0), with ±10 % jitter from `jitter` (a value in `0..=1000`).
pub(crate) fn backoff(attempt: u32, cap: Duration, jitter: u32) -> Duration {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 0..attempt.min(40) {
        (a, b) = (b, a.saturating_add(b));
    }
    let base = Duration::from_secs(a).min(cap);
    // jitter 0..=1000 maps to a factor of 0.9..=1.1.
    let millis = base.as_millis() as u64;
    let scaled = millis.saturating_mul(900 + u64::from(jitter.min(1000)) / 5) / 1000;
    Duration::from_millis(scaled).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fibonacci_backoff() {
        let cap = Duration::from_secs(900);
        let plain: Vec<u64> = (0..8).map(|n| backoff(n, cap, 500).as_secs()).collect();
        assert_eq!(plain, [1, 1, 2, 3, 5, 8, 13, 21]);
        assert_eq!(backoff(100, cap, 500), cap);
        assert_eq!(backoff(4, cap, 0), Duration::from_millis(4500));
        assert_eq!(backoff(4, cap, 1000), Duration::from_millis(5500));
    }
}
