//! [`SqliteStore`]: the durable store, in one SQLite file that may hold several accounts.
//!
//! # Durability
//! The file is in WAL mode with `synchronous=FULL` by default: every committed batch is on
//! disk (the WAL is flushed at each commit) before [`CredentialStore::apply`] returns, so a
//! power cut loses nothing the server may have seen. [`Synchronous::Normal`] flushes only at
//! checkpoints: a crash of the process still loses nothing (the OS has the WAL), a power cut
//! may lose the last commits but never corrupts the file; it is several times faster on disks
//! with slow flushes.
//!
//! # Laziness
//! Nothing but the credentials and the sent-message cache is read at start. Signal sessions,
//! sender keys, prekeys and device lists are read by key when the core asks for them
//! ([`CredentialStore::load_keys`], one read transaction per request) or through the typed
//! getters ([`SqliteStore::session`], [`SqliteStore::sessions_for`]), so an account with
//! 50,000 contacts starts as fast as one with none (see `benches/store.rs`).
//!
//! # Threads
//! SQLite calls block, so every async method runs on the `blocking` thread pool, with the one
//! connection behind a mutex; the futures are `Send` and never block the executor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amarula_core::credentials::Credentials;
use amarula_core::jid::Jid;
use amarula_core::machine::SentMessage;
use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use super::{Change, CredentialStore, DeviceList, LoadRequest, Loaded, PendingMessage, StoreError};

mod schema;
mod tables;
#[cfg(test)]
mod tests;

pub use schema::SCHEMA_VERSION;
use tables::AccountId;

/// The account [`SqliteStore::open`] uses.
pub const DEFAULT_ACCOUNT: &str = "default";

/// How much a commit waits for the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is flushed: nothing is lost even on a power cut (the default).
    #[default]
    Full,
    /// Flushed at WAL checkpoints only: a process crash loses nothing, a power cut may lose
    /// the last commits (the file stays consistent).
    Normal,
}

/// Settings of a [`SqliteDatabase`]; write them as
/// `SqliteOptions { synchronous: Synchronous::Normal, ..SqliteOptions::default() }`.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of each commit.
    pub synchronous: Synchronous,
    /// How long a write waits for another connection (process) holding the lock.
    pub busy_timeout: Duration,
    /// Most sent messages kept per account; the oldest go first (default 1024).
    pub sent_limit: usize,
    /// Sent messages older than this are dropped when the cache is loaded (default 7 days).
    pub sent_max_age: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            sent_limit: 1024,
            sent_max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                Self::Corrupt(e.to_string())
            }
            // A stored value of the wrong type or range (a text where a record belongs, …):
            // the file holds something this build cannot read.
            _ if matches!(
                e,
                rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::FromSqlConversionFailure(..)
                    | rusqlite::Error::IntegralValueOutOfRange(..)
            ) =>
            {
                Self::Corrupt(e.to_string())
            }
            _ => Self::Sqlite(e),
        }
    }
}

/// One open database file (cheap to clone: clones share the connection). Get an account's
/// store from it with [`account`](Self::account).
#[derive(Debug, Clone)]
pub struct SqliteDatabase {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    conn: Mutex<Connection>,
    options: SqliteOptions,
    path: Option<PathBuf>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction, which rolled back: the
        // connection is usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SqliteDatabase {
    /// Opens (creating when absent) the database at `path` with default options. Blocks: call
    /// it before starting the runtime, or from a blocking task.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a damaged or foreign file, [`StoreError::NewerSchema`] for
    /// a file of a newer amarula, [`StoreError::Sqlite`] when it cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// [`open`](Self::open) with `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        create_private(path)?;
        check_header(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Self::setup(conn, options, Some(path.to_owned()), SCHEMA_VERSION)
    }

    /// A database in memory: for tests, gone when the last clone is dropped.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when SQLite cannot allocate it.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        Self::setup(conn, SqliteOptions::default(), None, SCHEMA_VERSION)
    }

    fn setup(
        mut conn: Connection,
        options: SqliteOptions,
        path: Option<PathBuf>,
        version: u32,
    ) -> Result<Self, StoreError> {
        conn.busy_timeout(options.busy_timeout)?;
        // The first statements read the header: a file that is not a database fails here.
        conn.pragma_update(None, "foreign_keys", true)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "journal mode {mode} instead of wal"
            )));
        }
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        schema::migrate(&mut conn, version)?;
        tracing::debug!(path = ?path, "store opened");
        Ok(Self {
            shared: Arc::new(Shared {
                conn: Mutex::new(conn),
                options,
                path,
            }),
        })
    }

    /// The store of account `name`, created (empty) when new. Accounts share nothing but the
    /// file. Blocks briefly (one small write when the account is new).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the write fails.
    pub fn account(&self, name: &str) -> Result<SqliteStore, StoreError> {
        let id = tables::account(&self.shared.lock(), name)?;
        Ok(SqliteStore {
            db: self.clone(),
            account: id,
            name: name.into(),
        })
    }

    /// The names of the accounts in the file, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Corrupt`] when reading fails.
    pub fn accounts(&self) -> Result<Vec<String>, StoreError> {
        tables::accounts(&self.shared.lock())
    }

    /// The file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }

    /// Reads every page and checks the file's structure (`PRAGMA quick_check`): for a store
    /// suspected to be damaged, or at start by applications that prefer to pay the read of the
    /// whole file (tens of milliseconds for tens of megabytes) to find damage before use.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] with SQLite's first complaint when the check fails.
    pub async fn check(&self) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        blocking::unblock(move || {
            let conn = shared.lock();
            let first: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
            if first == "ok" {
                Ok(())
            } else {
                Err(StoreError::Corrupt(first))
            }
        })
        .await
    }

    #[cfg(test)]
    fn open_at_version(path: &Path, version: u32) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::setup(
            conn,
            SqliteOptions::default(),
            Some(path.to_owned()),
            version,
        )
    }

    #[cfg(test)]
    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.shared.lock())
    }
}

/// Creates `path` readable by its owner only when it does not exist (it will hold private
/// keys; SQLite gives its WAL and shared-memory files the same permissions).
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What every SQLite database file starts with.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a non-empty file that does not start as an SQLite database. SQLite would take a
/// file shorter than its header for an empty database and write over it; this leaves any
/// such file as it is.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(MAGIC.len());
    std::fs::File::open(path)?
        .take(MAGIC.len() as u64)
        .read_to_end(&mut head)?;
    if head.is_empty() || head == MAGIC {
        Ok(())
    } else {
        Err(StoreError::Corrupt("not an SQLite database".into()))
    }
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One account's state in a [`SqliteDatabase`]: a [`CredentialStore`] with typed access to
/// every table. Clones share the connection.
///
/// Writes go through [`apply`](CredentialStore::apply) (one transaction per batch) or the
/// [`CredentialStore`] methods; reads are by key, so nothing large is loaded at start.
///
/// ```no_run
/// # async fn run() -> Result<(), amarula::StoreError> {
/// use amarula::store::{Change, CredentialStore, SqliteDatabase};
///
/// let db = SqliteDatabase::open("amarula.db")?;
/// let work = db.account("work")?;
/// let peer = "15550001111:2@s.whatsapp.net".parse().expect("valid");
/// work.apply(&[Change::Session { address: peer, record: vec![1, 2, 3] }]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: SqliteDatabase,
    account: AccountId,
    name: Arc<str>,
}

impl SqliteStore {
    /// The [`DEFAULT_ACCOUNT`] of the database at `path` (created when absent). Blocks.
    ///
    /// # Errors
    /// As [`SqliteDatabase::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        SqliteDatabase::open(path)?.account(DEFAULT_ACCOUNT)
    }

    /// The database this account lives in (for other accounts of the same file).
    pub fn database(&self) -> &SqliteDatabase {
        &self.db
    }

    /// The account's name.
    pub fn account_name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, AccountId, &SqliteOptions) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.db.shared);
        let account = self.account;
        blocking::unblock(move || f(&mut shared.lock(), account, &shared.options)).await
    }

    /// How many rows this account has in each table (credentials, sent messages, prekeys,
    /// signed prekeys, sessions, sender keys, identities, device lists, LID mappings, pending
    /// messages, message secrets): all 0 after [`delete`](CredentialStore::delete), e.g. after
    /// a logout.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when reading fails.
    pub async fn row_counts(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        self.run(|c, a, _| tables::account_rows(c, a)).await
    }

    /// The one-time prekey `id`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Corrupt`] when reading fails (for every getter).
    pub async fn prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(move |c, a, _| {
            tables::blob(
                c,
                "SELECT record FROM prekeys WHERE account = ?1 AND id = ?2",
                params![a, id],
            )
        })
        .await
    }

    /// How many one-time prekeys are stored (to know when to upload more).
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn prekey_count(&self) -> Result<u64, StoreError> {
        self.run(|c, a, _| tables::count(c, "prekeys", a)).await
    }

    /// The signed prekey `id`.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(move |c, a, _| {
            tables::blob(
                c,
                "SELECT record FROM signed_prekeys WHERE account = ?1 AND id = ?2",
                params![a, id],
            )
        })
        .await
    }

    /// The Signal session with one device.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn session(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        let address = address.to_string();
        self.run(move |c, a, _| {
            tables::blob(
                c,
                "SELECT record FROM sessions WHERE account = ?1 AND address = ?2",
                params![a, address],
            )
        })
        .await
    }

    /// The sessions with every device of `user` (its device part is ignored), by address:
    /// what a send to that user needs, read in one indexed query.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn sessions_for(&self, user: &Jid) -> Result<Vec<(Jid, Vec<u8>)>, StoreError> {
        let user = user.clone();
        self.run(move |c, a, _| tables::sessions_for(c, a, &user))
            .await
    }

    /// How many Signal sessions are stored.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn session_count(&self) -> Result<u64, StoreError> {
        self.run(|c, a, _| tables::count(c, "sessions", a)).await
    }

    /// The sender key of `sender` in `group`.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn sender_key(
        &self,
        group: &Jid,
        sender: &Jid,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (group, sender) = (group.to_string(), sender.to_string());
        self.run(move |c, a, _| {
            tables::blob(
                c,
                "SELECT record FROM sender_keys WHERE account = ?1 AND group_jid = ?2 AND sender = ?3",
                params![a, group, sender],
            )
        })
        .await
    }

    /// The identity key stored for a device.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn identity(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        let address = address.to_string();
        self.run(move |c, a, _| {
            tables::blob(
                c,
                "SELECT key FROM identities WHERE account = ?1 AND address = ?2",
                params![a, address],
            )
        })
        .await
    }

    /// The device list of `user` (its device part is ignored).
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn device_list(&self, user: &Jid) -> Result<Option<DeviceList>, StoreError> {
        let user = user.clone();
        self.run(move |c, a, _| tables::device_list(c, a, &user))
            .await
    }

    /// The phone number JID mapped to a LID.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn phone_for_lid(&self, lid: &Jid) -> Result<Option<Jid>, StoreError> {
        let lid = lid.clone();
        self.run(move |c, a, _| {
            tables::lid_mapping(
                c,
                a,
                "SELECT phone FROM lid_mappings WHERE account = ?1 AND lid = ?2",
                &lid,
            )
        })
        .await
    }

    /// The LID mapped to a phone number JID.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn lid_for_phone(&self, phone: &Jid) -> Result<Option<Jid>, StoreError> {
        let phone = phone.clone();
        self.run(move |c, a, _| {
            tables::lid_mapping(
                c,
                a,
                "SELECT lid FROM lid_mappings WHERE account = ?1 AND phone = ?2",
                &phone,
            )
        })
        .await
    }

    /// The pending incoming messages in arrival order: what the application must handle
    /// (again) after a restart.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn pending(&self) -> Result<Vec<PendingMessage>, StoreError> {
        self.run(|c, a, _| tables::pending(c, a)).await
    }

    /// Drops the sent messages relayed before `before_unix_ms`; returns how many.
    /// [`load_sent`](CredentialStore::load_sent) does it with the configured maximum age.
    ///
    /// # Errors
    /// As [`prekey`](Self::prekey).
    pub async fn prune_sent(&self, before_unix_ms: u64) -> Result<usize, StoreError> {
        self.run(move |c, a, _| tables::prune_sent(c, a, before_unix_ms))
            .await
    }
}

impl CredentialStore for SqliteStore {
    fn keeps_signal_state(&self) -> bool {
        true
    }

    async fn load(&self) -> Result<Option<Credentials>, StoreError> {
        self.run(|c, a, _| tables::load_credentials(c, a)).await
    }

    async fn save(&self, credentials: &Credentials) -> Result<(), StoreError> {
        self.apply(std::slice::from_ref(&Change::Credentials(Box::new(
            credentials.clone(),
        ))))
        .await
    }

    async fn save_sent(&self, message: &SentMessage) -> Result<(), StoreError> {
        self.apply(std::slice::from_ref(&Change::SentMessage(message.clone())))
            .await
    }

    async fn load_sent(&self) -> Result<Vec<SentMessage>, StoreError> {
        self.run(|c, a, options| {
            let max_age = u64::try_from(options.sent_max_age.as_millis()).unwrap_or(u64::MAX);
            let pruned = tables::prune_sent(c, a, unix_now_ms().saturating_sub(max_age))?;
            if pruned > 0 {
                tracing::debug!(pruned, "dropped expired sent messages");
            }
            tables::load_sent(c, a, false)
        })
        .await
    }

    async fn load_unacked_sent(&self) -> Result<Vec<SentMessage>, StoreError> {
        self.run(|c, a, _| tables::load_sent(c, a, true)).await
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        // The batch crosses to the blocking pool; records are small next to a commit.
        let changes = changes.to_vec();
        self.run(move |c, a, options| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for change in &changes {
                tables::apply(&tx, a, change, options.sent_limit)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn load_keys(&self, request: &LoadRequest) -> Result<Loaded, StoreError> {
        if request.is_empty() {
            return Ok(Loaded::nothing_for(request));
        }
        let request = request.clone();
        self.run(move |c, a, _| {
            // One read transaction: the answer is a snapshot, not a mix of two batches.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
            let loaded = tables::load_keys(&tx, a, &request)?;
            tx.commit()?;
            Ok(loaded)
        })
        .await
    }

    async fn load_pending(&self) -> Result<Vec<PendingMessage>, StoreError> {
        self.pending().await
    }

    async fn load_app_state(&self) -> Result<amarula_core::persist::StoredAppState, StoreError> {
        self.run(|c, a, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
            let out = tables::app_state(&tx, a)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self) -> Result<(), StoreError> {
        self.run(|c, a, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tables::delete_account_data(&tx, a)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
