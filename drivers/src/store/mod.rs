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
//! Reads are lazy: only what a restart needs at once is read whole (the credentials, the sent
//! messages, the pending incoming messages of [`CredentialStore::load_pending`]); Signal
//! records are read by key when the core asks for them ([`CredentialStore::load_keys`]).
//!
//! The trait is async so that a store may do real IO; every future must be `Send`, as the
//! drive task may move between threads.

use std::future::Future;
use std::io;

use amarula_core::credentials::Credentials;
use amarula_core::machine::SentMessage;

#[cfg(test)]
mod conformance;
mod file;
mod json;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(test)]
pub(crate) mod testutil;

pub use amarula_core::persist::{Change, DeviceList, LoadRequest, Loaded, PendingMessage};
pub use file::FileStore;
pub use json::{CredentialsJsonError, credentials_from_json, credentials_to_json};
pub use memory::{MEMORY_SENT_LIMIT, MemoryStore};
#[cfg(feature = "postgres")]
pub use postgres::{
    Lease, POSTGRES_SCHEMA_VERSION, PostgresDatabase, PostgresOptions, PostgresStore,
};
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

    /// The records of `request` that the store holds: one entry per key asked for, in the
    /// order of the request, `None` for a key the store does not have. The drive task calls it
    /// on the machine's `Event::Load` and hands the answer back to the
    /// machine; work that needs the records waits until then.
    ///
    /// Keys compare by equality as given: a session asked for `15551234567:0@s.whatsapp.net`
    /// is not the one stored for `15551234567@s.whatsapp.net` (the core always names devices
    /// with an explicit device number). Device lists are by user: the device part of their key
    /// is ignored.
    ///
    /// The default answers `None` for every key: such a store keeps no Signal state (its
    /// [`apply`](Self::apply) refuses it), so the core starts every session afresh.
    fn load_keys(
        &self,
        request: &LoadRequest,
    ) -> impl Future<Output = Result<Loaded, StoreError>> + Send {
        let nothing = Loaded::nothing_for(request);
        async move { Ok(nothing) }
    }

    /// The incoming messages kept by [`Change::Pending`] and not yet confirmed by
    /// [`Change::PendingDone`], oldest first: what the application must handle (again) after a
    /// restart. The default returns none (a store that keeps no pending messages).
    fn load_pending(&self) -> impl Future<Output = Result<Vec<PendingMessage>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The app-state sync keys and collections kept by [`Change::AppStateSyncKey`] and
    /// [`Change::AppStateCollection`]: restored into the session at start. The default returns
    /// none.
    fn load_app_state(
        &self,
    ) -> impl Future<Output = Result<amarula_core::persist::StoredAppState, StoreError>> + Send
    {
        async { Ok(Default::default()) }
    }

    /// The sent messages the server never acknowledged ([`Change::SentAcked`]), oldest first:
    /// sent again with the same id after a restart. The default returns none.
    fn load_unacked_sent(
        &self,
    ) -> impl Future<Output = Result<Vec<SentMessage>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Whether the store keeps Signal state (sessions, prekeys, sender keys, pending
    /// messages): [`apply`](Self::apply) takes every [`Change`] and
    /// [`load_keys`](Self::load_keys) answers from them. The client refuses to start end-to-end
    /// messaging ([`Config::end_to_end`](amarula_core::machine::Config)) on a store that does
    /// not, rather than fail at the first prekey upload. The default says no.
    fn keeps_signal_state(&self) -> bool {
        false
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
    /// Postgres failed (cannot connect, connection lost, a statement failed, …).
    #[cfg(feature = "postgres")]
    #[error("postgres: {0}")]
    Postgres(::postgres::Error),
    /// The worker no longer holds the account's lease (it expired, or another worker took
    /// the account): nothing was written, and the worker must stop running the account.
    #[error("the lease on account {account} is lost")]
    LeaseLost {
        /// The account.
        account: String,
    },
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
