//! Persistence events: what the core hands out for the application's store, and what it asks
//! the store to load.
//!
//! The core never calls a store. Every change to state that must outlive the process (the
//! credentials, Signal sessions, prekeys, sender keys, device lists, sent messages, incoming
//! messages the application has not confirmed) leaves the machine as a [`Change`], in order and
//! before any frame that depends on it. A store applies consecutive changes as one batch.
//!
//! Loading is lazy: an account may hold tens of thousands of sessions, so the core keeps only
//! what it has used and asks for the rest with a [`LoadRequest`]
//! ([`Event::Load`](crate::machine::Event::Load)); the driver answers with [`Loaded`]
//! ([`ConnectionMachine::provide`](crate::machine::ConnectionMachine::provide)). Work that needs
//! the records waits meanwhile; other work goes on.

use std::fmt;

use crate::appstate::{Collection, CollectionState, LtHash, SyncKey};
use crate::credentials::Credentials;
use crate::jid::Jid;
use crate::machine::SentMessage;

/// The devices of one user as last fetched, with when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// The device ids (0 is the phone).
    pub devices: Vec<u16>,
    /// Unix time in milliseconds of the fetch.
    pub updated_unix_ms: u64,
}

/// The key of a stored [`PendingMessage`]. The machine makes it 22 characters long (16 bytes
/// of the SHA-256 of the chat, the sender and the message id, base64url), which a
/// `CompactString` holds inline, without an allocation; longer keys (from older stores) are
/// held on the heap. Read it as a `&str`.
pub type PendingKey = compact_str::CompactString;

/// An incoming stanza the application has not confirmed yet: kept so that it is handled after
/// a crash, and acked to the server only once it is handled.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// A key unique among the pending messages, e.g. the sender and the stanza id.
    pub id: PendingKey,
    /// The stanza, binary-encoded. Shared: the message handed out holds its plaintext (the
    /// record's tail) as its raw plaintext.
    pub node: bytes::Bytes,
    /// The held ack's raw token ([`AckToken::to_raw`](crate::machine::AckToken)), valid
    /// only on the connection that received it; `None` when the ack was already sent.
    pub ack_token: Option<u64>,
    /// Unix time in milliseconds when it arrived.
    pub received_unix_ms: u64,
}

impl fmt::Debug for PendingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The stanza may hold message content: only its size is shown.
        f.debug_struct("PendingMessage")
            .field("id", &self.id)
            .field("node_len", &self.node.len())
            .field("ack_token", &self.ack_token)
            .field("received_unix_ms", &self.received_unix_ms)
            .finish()
    }
}

/// One persistence event. A batch of them (`&[Change]`) is stored all or nothing by the store
/// (`CredentialStore::apply` in the `amarula` crate). Signal records are opaque bytes here;
/// their format belongs to the Signal layer.
#[derive(Clone)]
#[non_exhaustive]
pub enum Change {
    /// Replace the credentials (boxed: they are large next to the other changes).
    Credentials(Box<Credentials>),
    /// Record a relayed message for retry receipts (`CredentialStore::save_sent` in the
    /// `amarula` crate).
    SentMessage(SentMessage),
    /// The server acknowledged a relayed message (with or without an error): it is not sent
    /// again after a restart. Sent messages without it are resent, with the same id, at the
    /// next login ([`Session::restore_outbox`](crate::machine::Session::restore_outbox)).
    SentAcked(String),
    /// Store (or replace) a one-time prekey.
    PreKey {
        /// The prekey id.
        id: u32,
        /// The serialized prekey record.
        record: Vec<u8>,
    },
    /// Forget a one-time prekey (it was used).
    RemovePreKey(u32),
    /// Store (or replace) a signed prekey.
    SignedPreKey {
        /// The signed prekey id.
        id: u32,
        /// The serialized signed prekey record.
        record: Vec<u8>,
    },
    /// Forget a signed prekey.
    RemoveSignedPreKey(u32),
    /// Store (or replace) the Signal session with one device.
    Session {
        /// The device (a device JID).
        address: Jid,
        /// The serialized session record.
        record: Vec<u8>,
    },
    /// Forget the Signal session with one device.
    RemoveSession(Jid),
    /// Store (or replace) a group sender key.
    SenderKey {
        /// The group.
        group: Jid,
        /// The sending device.
        sender: Jid,
        /// The serialized sender key record.
        record: Vec<u8>,
    },
    /// Store (or replace) the identity key of a device.
    Identity {
        /// The device.
        address: Jid,
        /// The public identity key.
        key: Vec<u8>,
    },
    /// Store (or replace) a user's device list.
    DeviceList {
        /// The user (a JID without device).
        user: Jid,
        /// The devices.
        list: DeviceList,
    },
    /// Record that a LID and a phone number JID are the same user.
    LidMapping {
        /// The LID user.
        lid: Jid,
        /// The phone number user.
        phone: Jid,
    },
    /// Keep an incoming message until the application confirms it.
    Pending(PendingMessage),
    /// The application handled this pending message (by [`PendingMessage::id`]).
    PendingDone(PendingKey),
    // ---- LID addressing and privacy tokens ----
    /// Store (or replace) the privacy token a contact gave us (LID.md §5), keyed by the
    /// contact's user (its LID when known).
    TcToken {
        /// The contact (a user JID without device).
        user: Jid,
        /// The token.
        token: TcToken,
    },
    /// Store (or replace) a message's secret and what its add-ons need with it (a poll's
    /// option names), so that votes decrypt after a restart.
    MessageSecret {
        /// The message.
        key: SecretKey,
        /// The serialized record ([`SecretRecord`](crate::content::SecretRecord)).
        record: Vec<u8>,
    },
    // ---- app state (syncd) ----
    /// Store (or replace) an app-state sync key our phone shared.
    AppStateSyncKey(SyncKey),
    /// Update one app-state collection: its version and LTHash, and the value MACs of the
    /// indexes that changed (all of them, replacing the old, when `replace`).
    AppStateCollection(Box<AppStateDelta>),
}

/// The change of one app-state collection after a snapshot or patch applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStateDelta {
    /// The collection.
    pub collection: Collection,
    /// The version reached.
    pub version: u64,
    /// The LTHash reached.
    pub hash: LtHash,
    /// Whether every stored value MAC of the collection goes first (a snapshot, a reset).
    pub replace: bool,
    /// Index MACs no longer live.
    pub removed: Vec<[u8; 32]>,
    /// Index MACs now live, with their value MACs.
    pub added: Vec<([u8; 32], [u8; 32])>,
}

impl AppStateDelta {
    /// Applies the change to a stored collection state.
    pub fn apply_to(&self, state: &mut CollectionState) {
        if self.replace {
            state.macs.clear();
        }
        for r in &self.removed {
            state.macs.remove(r);
        }
        for (i, v) in &self.added {
            state.macs.insert(*i, *v);
        }
        state.version = self.version;
        state.hash = self.hash;
    }
}

/// What a store keeps of app state, handed to
/// [`Session::restore_app_state`](crate::machine::Session::restore_app_state) at start.
#[derive(Debug, Clone, Default)]
pub struct StoredAppState {
    /// The sync keys.
    pub keys: Vec<SyncKey>,
    /// Each collection's state.
    pub collections: Vec<(Collection, CollectionState)>,
}

impl Change {
    /// A short name of the kind of change, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Credentials(_) => "credentials",
            Self::SentMessage(_) | Self::SentAcked(_) => "sent messages",
            Self::PreKey { .. } | Self::RemovePreKey(_) => "prekeys",
            Self::SignedPreKey { .. } | Self::RemoveSignedPreKey(_) => "signed prekeys",
            Self::Session { .. } | Self::RemoveSession(_) => "sessions",
            Self::SenderKey { .. } => "sender keys",
            Self::Identity { .. } => "identities",
            Self::DeviceList { .. } => "device lists",
            Self::LidMapping { .. } => "LID mappings",
            Self::Pending(_) | Self::PendingDone(_) => "pending messages",
            Self::MessageSecret { .. } => "message secrets",
            Self::TcToken { .. } => "privacy tokens",
            Self::AppStateSyncKey(_) => "app-state keys",
            Self::AppStateCollection(_) => "app-state collections",
        }
    }
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Records hold private keys: only their size is shown, never their bytes.
        match self {
            Self::Credentials(_) => f.write_str("Credentials(..)"),
            Self::SentMessage(m) => write!(f, "SentMessage({})", m.id),
            Self::SentAcked(id) => write!(f, "SentAcked({id})"),
            Self::PreKey { id, record } => write!(f, "PreKey({id}, {} bytes)", record.len()),
            Self::RemovePreKey(id) => write!(f, "RemovePreKey({id})"),
            Self::SignedPreKey { id, record } => {
                write!(f, "SignedPreKey({id}, {} bytes)", record.len())
            }
            Self::RemoveSignedPreKey(id) => write!(f, "RemoveSignedPreKey({id})"),
            Self::Session { address, record } => {
                write!(f, "Session({address}, {} bytes)", record.len())
            }
            Self::RemoveSession(address) => write!(f, "RemoveSession({address})"),
            Self::SenderKey {
                group,
                sender,
                record,
            } => write!(f, "SenderKey({group}, {sender}, {} bytes)", record.len()),
            Self::Identity { address, .. } => write!(f, "Identity({address})"),
            Self::DeviceList { user, list } => write!(f, "DeviceList({user}, {list:?})"),
            Self::LidMapping { lid, phone } => write!(f, "LidMapping({lid}, {phone})"),
            Self::Pending(p) => write!(f, "Pending({p:?})"),
            Self::PendingDone(id) => write!(f, "PendingDone({id})"),
            Self::TcToken { user, token } => write!(f, "TcToken({user}, t={})", token.timestamp),
            Self::MessageSecret { key, .. } => {
                write!(f, "MessageSecret({}, {}, {})", key.chat, key.author, key.id)
            }
            Self::AppStateSyncKey(k) => write!(f, "AppStateSyncKey({k:?})"),
            Self::AppStateCollection(d) => write!(
                f,
                "AppStateCollection({}, v{}, -{} +{})",
                d.collection,
                d.version,
                d.removed.len(),
                d.added.len()
            ),
        }
    }
}

/// A privacy (`trusted_contact`) token a contact issued us, with the issuer's timestamp.
#[derive(Clone, PartialEq, Eq)]
pub struct TcToken {
    /// The opaque token bytes.
    pub token: Vec<u8>,
    /// When the contact issued it (unix seconds, the notification's `t`).
    pub timestamp: u64,
}

impl fmt::Debug for TcToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token proves trust to the server: only its size is shown.
        f.debug_struct("TcToken")
            .field("len", &self.token.len())
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

/// A sender key's name: the group and the sending device.
pub type SenderKeyName = (Jid, Jid);

/// Names a message whose secret (`messageContextInfo.messageSecret`) is kept: the chat, the
/// author (a user JID without device) and the message id. Polls and events have one; the
/// votes and responses that refer to them are encrypted with it (MESSAGES.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey {
    /// The chat (a user or a group).
    pub chat: Jid,
    /// The message's author, without device.
    pub author: Jid,
    /// The message id.
    pub id: String,
}

/// Records the core needs and does not hold: the driver looks each up in its store and
/// answers with [`Loaded`], giving `None` for what the store does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadRequest {
    /// Signal sessions, by device JID.
    pub sessions: Vec<Jid>,
    /// Sender keys, by (group, sending device).
    pub sender_keys: Vec<SenderKeyName>,
    /// One-time prekeys, by id.
    pub prekeys: Vec<u32>,
    /// Device lists, by user JID (without device).
    pub device_lists: Vec<Jid>,
    /// Message secrets, by message.
    pub message_secrets: Vec<SecretKey>,
    // ---- LID addressing ----
    /// LID/phone number mappings, by user JID (without device) of either kind: the answer
    /// names the other identity of the same user ([`Change::LidMapping`]).
    pub lid_mappings: Vec<Jid>,
    /// Privacy tokens, by contact user (without device).
    pub tc_tokens: Vec<Jid>,
}

impl LoadRequest {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.sender_keys.is_empty()
            && self.prekeys.is_empty()
            && self.device_lists.is_empty()
            && self.message_secrets.is_empty()
            && self.lid_mappings.is_empty()
            && self.tc_tokens.is_empty()
    }
}

/// The answer to a [`LoadRequest`]: one entry per record asked for, `None` when the store does
/// not have it. Records asked for but missing from the answer count as absent.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Loaded {
    /// Serialized session records.
    pub sessions: Vec<(Jid, Option<Vec<u8>>)>,
    /// Serialized sender key records.
    pub sender_keys: Vec<(SenderKeyName, Option<Vec<u8>>)>,
    /// Serialized prekey records.
    pub prekeys: Vec<(u32, Option<Vec<u8>>)>,
    /// Device lists.
    pub device_lists: Vec<(Jid, Option<DeviceList>)>,
    /// Serialized message secret records.
    pub message_secrets: Vec<(SecretKey, Option<Vec<u8>>)>,
    // ---- LID addressing ----
    /// The other identity of each user asked for: the phone number user of a LID, the LID of
    /// a phone number user.
    pub lid_mappings: Vec<(Jid, Option<Jid>)>,
    /// Privacy tokens.
    pub tc_tokens: Vec<(Jid, Option<TcToken>)>,
}

impl Loaded {
    /// An answer with nothing found (a store that keeps no Signal state).
    pub fn nothing_for(request: &LoadRequest) -> Self {
        Self {
            sessions: request.sessions.iter().map(|j| (j.clone(), None)).collect(),
            sender_keys: request
                .sender_keys
                .iter()
                .map(|k| (k.clone(), None))
                .collect(),
            prekeys: request.prekeys.iter().map(|id| (*id, None)).collect(),
            device_lists: request
                .device_lists
                .iter()
                .map(|j| (j.clone(), None))
                .collect(),
            message_secrets: request
                .message_secrets
                .iter()
                .map(|k| (k.clone(), None))
                .collect(),
            lid_mappings: request
                .lid_mappings
                .iter()
                .map(|j| (j.clone(), None))
                .collect(),
            tc_tokens: request
                .tc_tokens
                .iter()
                .map(|j| (j.clone(), None))
                .collect(),
        }
    }
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Records hold private keys: only counts are shown.
        f.debug_struct("Loaded")
            .field("sessions", &self.sessions.len())
            .field("sender_keys", &self.sender_keys.len())
            .field("prekeys", &self.prekeys.len())
            .field("device_lists", &self.device_lists.len())
            .field("message_secrets", &self.message_secrets.len())
            .field("lid_mappings", &self.lid_mappings.len())
            .field("tc_tokens", &self.tc_tokens.len())
            .finish()
    }
}
