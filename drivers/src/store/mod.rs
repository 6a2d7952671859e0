//! Where the device's state lives between runs: the [`CredentialStore`] trait, the durable
//! [`SqliteStore`] (feature `sqlite`, on by default), a JSON [`FileStore`] for the credentials
//! alone, an in-memory [`MemoryStore`], the credentials' JSON form, and [`Change`], one
//! persistence event of a batch.
//!
//! The drive task calls the store in protocol order and waits for each write before it applies
//! the next output of the machine: the credentials reach the store before the frame that
//! commits the phone (or the server) to them leaves. Consecutive persistence events are handed
//! over as one batch ([`CredentialStore::apply`]), which the SQLite store commits in one
//! transaction. A write that fails ends the client (see
//! [`ClientEvent::StoreFailed`](crate::ClientEvent::StoreFailed)): going on would send frames
//! whose state could be lost.
//!
//! The trait is async so that a store may do real IO; every future must be `Send`, as the
//! drive task may move between threads.

use std::fmt;
use std::future::Future;
use std::io;

use amarula_core::credentials::Credentials;
use amarula_core::jid::Jid;
use amarula_core::machine::SentMessage;

mod file;
mod json;
mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(test)]
pub(crate) mod testutil;

pub use file::FileStore;
pub use json::{CredentialsJsonError, credentials_from_json, credentials_to_json};
pub use memory::{MEMORY_SENT_LIMIT, MemoryStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{
    DEFAULT_ACCOUNT, SCHEMA_VERSION, SqliteDatabase, SqliteOptions, SqliteStore, Synchronous,
};

/// Persistence of the long-term credentials (and, optionally, of sent messages and of the
/// other [`Change`]s).
///
/// All methods are async and their futures `Send`. Implement them with `async fn`:
///
/// ```
/// # use amarula::store::{CredentialStore, StoreError};
/// # use amarula::core::credentials::Credentials;
/// # use amarula::core::machine::SentMessage;
/// struct Nowhere;
///
/// impl CredentialStore for Nowhere {
///     async fn load(&self) -> Result<Option<Credentials>, StoreError> {
///         Ok(None)
///     }
///     async fn save(&self, _: &Credentials) -> Result<(), StoreError> {
///         Ok(())
///     }
///     async fn save_sent(&self, _: &SentMessage) -> Result<(), StoreError> {
///         Ok(())
///     }
///     async fn delete(&self) -> Result<(), StoreError> {
///         Ok(())
///     }
/// }
/// ```
pub trait CredentialStore: Send + Sync + 'static {
    /// The stored credentials, or `None` when there are none yet (a fresh device: the client
    /// then generates credentials and [`save`](Self::save)s them before connecting).
    fn load(&self) -> impl Future<Output = Result<Option<Credentials>, StoreError>> + Send;

    /// Replaces the stored credentials. Called at start for fresh credentials and on every
    /// [`Event::CredentialsChanged`](amarula_core::machine::Event::CredentialsChanged); the
    /// client sends nothing more until it returns.
    fn save(
        &self,
        credentials: &Credentials,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a relayed message ([`Event::MessageCached`](amarula_core::machine::Event)), so
    /// retry receipts for it can still be answered after a restart. A store may ignore it
    /// (return `Ok(())`): those receipts are then refused as unknown after a restart.
    fn save_sent(
        &self,
        message: &SentMessage,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The recorded sent messages, oldest first, put back into the machine's cache at start.
    /// The default returns none.
    fn load_sent(&self) -> impl Future<Output = Result<Vec<SentMessage>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Stores a batch of persistence events, all or nothing where the store can (the SQLite
    /// store commits one transaction per batch). The drive task calls it with the consecutive
    /// persistence events of the machine and waits for it before applying anything after them.
    ///
    /// The default calls [`save`](Self::save) and [`save_sent`](Self::save_sent) in order and
    /// refuses every other change with [`StoreError::Unsupported`] (before writing anything),
    /// so a store that cannot keep Signal state never drops it silently.
    fn apply(&self, changes: &[Change]) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            if let Some(other) = changes
                .iter()
                .find(|c| !matches!(c, Change::Credentials(_) | Change::SentMessage(_)))
            {
                return Err(StoreError::Unsupported(other.kind()));
            }
            for change in changes {
                match change {
                    Change::Credentials(c) => self.save(c).await?,
                    Change::SentMessage(m) => self.save_sent(m).await?,
                    _ => {}
                }
            }
            Ok(())
        }
    }

    /// Forgets everything: called when the server logged the device out
    /// ([`CloseReason::is_logged_out`](amarula_core::machine::CloseReason::is_logged_out)).
    /// Deleting what does not exist is not an error.
    fn delete(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("store io: {0}")]
    Io(#[from] io::Error),
    /// The stored credentials are not JSON.
    #[error("stored credentials are not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The stored JSON does not describe credentials.
    #[error("stored credentials are malformed: {0}")]
    Format(#[from] CredentialsJsonError),
    /// SQLite failed (locked past the busy timeout, disk full, cannot open, …).
    #[cfg(feature = "sqlite")]
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// The database file is damaged, truncated, not a SQLite database, not an amarula
    /// database, or holds a value this build cannot read.
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer amarula (a later schema version); this build
    /// refuses to touch it.
    #[error("the database has schema version {found}; this build knows up to {supported}")]
    NewerSchema {
        /// The file's schema version.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// This store cannot keep this kind of change (see [`CredentialStore::apply`]).
    #[error("this store cannot keep {0}")]
    Unsupported(&'static str),
}

/// The devices of one user as last fetched, with when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// The device ids (0 is the phone).
    pub devices: Vec<u16>,
    /// Unix time in milliseconds of the fetch.
    pub updated_unix_ms: u64,
}

/// An incoming stanza the application has not confirmed yet: kept so that it is handled after
/// a crash, and acked to the server only once it is handled.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// A key unique among the pending messages, e.g. the sender and the stanza id.
    pub id: String,
    /// The stanza, binary-encoded.
    pub node: Vec<u8>,
    /// The held ack's raw token ([`AckToken::to_raw`](amarula_core::machine::AckToken)), valid
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

/// One persistence event. A batch of them (`&[Change]`) is stored all or nothing by
/// [`CredentialStore::apply`]. Signal records are opaque bytes here; their format belongs to
/// the Signal layer.
#[derive(Clone)]
#[non_exhaustive]
pub enum Change {
    /// Replace the credentials (boxed: they are large next to the other changes).
    Credentials(Box<Credentials>),
    /// Record a relayed message for retry receipts (see [`CredentialStore::save_sent`]).
    SentMessage(SentMessage),
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
    PendingDone(String),
}

impl Change {
    /// A short name of the kind of change, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Credentials(_) => "credentials",
            Self::SentMessage(_) => "sent messages",
            Self::PreKey { .. } | Self::RemovePreKey(_) => "prekeys",
            Self::SignedPreKey { .. } | Self::RemoveSignedPreKey(_) => "signed prekeys",
            Self::Session { .. } | Self::RemoveSession(_) => "sessions",
            Self::SenderKey { .. } => "sender keys",
            Self::Identity { .. } => "identities",
            Self::DeviceList { .. } => "device lists",
            Self::LidMapping { .. } => "LID mappings",
            Self::Pending(_) | Self::PendingDone(_) => "pending messages",
        }
    }
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Records hold private keys: only their size is shown, never their bytes.
        match self {
            Self::Credentials(_) => f.write_str("Credentials(..)"),
            Self::SentMessage(m) => write!(f, "SentMessage({})", m.id),
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
        }
    }
}
