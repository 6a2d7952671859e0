//! [`PostgresStore`] (feature `postgres`): many accounts in one Postgres database, shared by a
//! fleet of workers, with account leases ([`Lease`]) whose token fences every write.
//!
//! # Runtime
//! The store uses the synchronous `postgres` client. Each pooled connection runs its own small
//! current-thread runtime, and every call runs on the `blocking` thread pool, as the SQLite
//! store's do: the futures are `Send`, never block the executor, and need no particular
//! runtime, so the same store serves the tokio and the smol driver. (The async
//! `tokio-postgres` would tie the store to a tokio reactor, which a smol application does not
//! run.) Connections are plain TCP or a Unix socket without TLS: put the database on loopback,
//! a Unix socket or a private network.
//!
//! # Many accounts
//! Every table has an account column (`amarula_accounts.id`); [`PostgresDatabase::account`]
//! gives the store of one account. The accounts share a small pool of connections
//! ([`PostgresOptions::connections`]): a process with 10,000 accounts holds a few connections,
//! not 10,000.
//!
//! # Leases and fencing
//! A worker runs an account only while it holds the account's lease
//! ([`PostgresDatabase::acquire`]); it renews it while the connection lives
//! ([`PostgresDatabase::renew`]). A lease not renewed expires (by the database's clock) and
//! another worker may take it; every acquisition hands out a new, larger token. The store of a
//! leased account ([`PostgresDatabase::fenced`]) checks, in the same transaction as every
//! write, that its token is still the account's live lease: a worker that lost its lease (it
//! stalled, or the network split) fails every write with [`StoreError::LeaseLost`] and its
//! client ends before it sends anything that depends on the write, so it cannot overwrite what
//! the new owner wrote.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amarula_core::credentials::Credentials;
use amarula_core::jid::Jid;
use amarula_core::machine::SentMessage;
use postgres::NoTls;

use super::{Change, CredentialStore, DeviceList, LoadRequest, Loaded, PendingMessage, StoreError};

mod schema;
mod tables;
#[cfg(test)]
pub(crate) mod tests;

pub use schema::POSTGRES_SCHEMA_VERSION;
use tables::{AccountId, Conn, Tx};

/// Settings of a [`PostgresDatabase`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// How many connections the pool opens at most (opened when first needed). Every store
    /// call holds one for the length of one transaction. Default 4.
    pub connections: usize,
    /// At most this many sent messages are kept per account (the oldest go). Default 1024.
    pub sent_limit: usize,
    /// Sent messages older than this are dropped when they are loaded. Default 7 days.
    pub sent_max_age: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            connections: 4,
            sent_limit: 1024,
            sent_max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

/// A pool of connections: each call takes a free one (or waits for one).
struct Pool {
    config: postgres::Config,
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
}

impl Pool {
    fn slot(&self) -> MutexGuard<'_, Option<Conn>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            match self.slots[(start + i) % n].try_lock() {
                Ok(g) => return g,
                // A panic while holding it dropped its transaction, which rolled back.
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.slots[start % n]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a connection, opening it first when needed. A connection that broke is
    /// dropped and opened again by the next call.
    fn with<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = self.slot();
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = None;
            *slot = Some(Conn::new(self.config.connect(NoTls)?));
        }
        let Some(conn) = slot.as_mut() else {
            return Err(StoreError::Corrupt("no connection".into()));
        };
        let result = f(conn);
        if result.is_err() && conn.client.is_closed() {
            *slot = None;
        }
        result
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Each connection owns a small runtime, which must not be dropped on an async
        // executor's thread: they are closed on a thread of their own.
        let conns: Vec<Conn> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.get_mut().unwrap_or_else(PoisonError::into_inner).take())
            .collect();
        if !conns.is_empty() {
            let _ = std::thread::spawn(move || drop(conns)).join();
        }
    }
}

/// One Postgres database holding many accounts; cheap to clone (the clones share the pool).
#[derive(Clone)]
pub struct PostgresDatabase {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    options: PostgresOptions,
}

impl std::fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration may hold a password: only the hosts and the database are shown.
        let c = &self.shared.pool.config;
        f.debug_struct("PostgresDatabase")
            .field("hosts", &c.get_hosts())
            .field("dbname", &c.get_dbname())
            .field("connections", &self.shared.options.connections)
            .finish()
    }
}

impl PostgresDatabase {
    /// Connects to the database at `url` (a `postgresql://` URL or a `key=value` string, as
    /// libpq takes them) and migrates its schema to [`POSTGRES_SCHEMA_VERSION`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, PostgresOptions::default()).await
    }

    /// [`open`](Self::open) with options.
    pub async fn open_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let config: postgres::Config = url.parse()?;
        Self::open_at_version(config, options, POSTGRES_SCHEMA_VERSION).await
    }

    async fn open_at_version(
        config: postgres::Config,
        options: PostgresOptions,
        version: u32,
    ) -> Result<Self, StoreError> {
        let slots = (0..options.connections.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        let db = Self {
            shared: Arc::new(Shared {
                pool: Pool {
                    config,
                    slots,
                    next: AtomicUsize::new(0),
                },
                options,
            }),
        };
        db.run(move |conn, _| schema::migrate(&mut conn.client, version))
            .await?;
        tracing::debug!("postgres store opened");
        Ok(db)
    }

    /// Runs `f` on a pooled connection on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn, &PostgresOptions) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        blocking::unblock(move || shared.pool.with(|conn| f(conn, &shared.options))).await
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`.
    async fn in_tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>, &PostgresOptions) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(move |conn, options| {
            let mut tx = conn.tx()?;
            let out = f(&mut tx, options)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// The store of account `name`, created when new. Its writes are not fenced: use it for
    /// a process that runs the account alone; a fleet uses [`fenced`](Self::fenced).
    pub async fn account(&self, name: &str) -> Result<PostgresStore, StoreError> {
        let owned = name.to_owned();
        let id = self.in_tx(move |tx, _| tables::account(tx, &owned)).await?;
        Ok(PostgresStore {
            db: self.clone(),
            account: id,
            name: name.into(),
            fence: None,
        })
    }

    /// The names of the accounts, oldest first.
    pub async fn accounts(&self) -> Result<Vec<String>, StoreError> {
        self.in_tx(|tx, _| tables::accounts(tx)).await
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        self.in_tx(|tx, _| {
            let v: i32 = tx
                .query_opt("SELECT version FROM amarula_schema", &[])?
                .map_or(Ok(0), |r| r.try_get(0))?;
            u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v}")))
        })
        .await
    }

    /// Takes the lease of account `name` (created when new) for `owner`, valid for `ttl`, when
    /// no other owner holds a live lease on it; `None` when one does. Every acquisition hands
    /// out a new token, larger than every earlier one of the account.
    pub async fn acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        let ttl_ms = duration_ms(ttl);
        self.in_tx(move |tx, _| {
            let account = tables::account(tx, &name)?;
            // The row is kept for ever (tokens only grow): a taken lease is updated in place,
            // only when it expired or is the same owner's.
            let row = tx.query_opt(
                "INSERT INTO amarula_leases(account, owner, token, expires_at)
                 VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond')
                 ON CONFLICT(account) DO UPDATE
                     SET owner = excluded.owner, token = amarula_leases.token + 1,
                         expires_at = excluded.expires_at
                     WHERE amarula_leases.expires_at <= now()
                        OR amarula_leases.owner = excluded.owner
                 RETURNING token",
                &[&account, &owner, &ttl_ms],
            )?;
            match row {
                Some(r) => Ok(Some(Lease {
                    account: name,
                    account_id: account,
                    owner,
                    token: r.try_get(0)?,
                })),
                None => Ok(None),
            }
        })
        .await
    }

    /// Extends `lease` to `ttl` from now. Fails with [`StoreError::LeaseLost`] when it expired
    /// or another owner took the account: the worker must stop running it.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let (account, token, name) = (lease.account_id, lease.token, lease.account.clone());
        let ttl_ms = duration_ms(ttl);
        self.in_tx(move |tx, _| {
            let n = tx.exec(
                "UPDATE amarula_leases SET expires_at = now() + $3::bigint * interval '1 millisecond'
                 WHERE account = $1 AND token = $2 AND expires_at > now()",
                &[&account, &token, &ttl_ms],
            )?;
            if n == 1 {
                Ok(())
            } else {
                Err(StoreError::LeaseLost { account: name })
            }
        })
        .await
    }

    /// Extends every lease of `leases` to `ttl` from now, in one statement; answers, in the
    /// order of `leases`, whether each was still live (and is now extended). A lease answered
    /// `false` is lost: the worker must stop running its account.
    pub async fn renew_all(
        &self,
        leases: &[Lease],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let accounts: Vec<i64> = leases.iter().map(|l| l.account_id).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        let ttl_ms = duration_ms(ttl);
        let renewed = self
            .in_tx(move |tx, _| {
                tx.query(
                    "UPDATE amarula_leases l
                     SET expires_at = now() + $3::bigint * interval '1 millisecond'
                     FROM unnest($1::bigint[], $2::bigint[]) AS k(account, token)
                     WHERE l.account = k.account AND l.token = k.token AND l.expires_at > now()
                     RETURNING l.account, l.token",
                    &[&accounts, &tokens, &ttl_ms],
                )?
                .iter()
                .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?)))
                .collect::<Result<std::collections::HashSet<(i64, i64)>, StoreError>>()
            })
            .await?;
        Ok(leases
            .iter()
            .map(|l| renewed.contains(&(l.account_id, l.token)))
            .collect())
    }

    /// Gives `lease` up at once (another worker may take the account right away). Releasing a
    /// lease already lost is not an error.
    pub async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let (account, token) = (lease.account_id, lease.token);
        self.in_tx(move |tx, _| {
            tx.exec(
                "UPDATE amarula_leases SET expires_at = now()
                 WHERE account = $1 AND token = $2 AND expires_at > now()",
                &[&account, &token],
            )?;
            Ok(())
        })
        .await
    }

    /// Up to `limit` accounts that no worker holds a live lease on, oldest first: the ones a
    /// worker may try to [`acquire`](Self::acquire).
    pub async fn leasable(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.in_tx(move |tx, _| {
            tx.query(
                "SELECT a.name FROM amarula_accounts a
                 LEFT JOIN amarula_leases l ON l.account = a.id
                 WHERE l.account IS NULL OR l.expires_at <= now()
                 ORDER BY a.id LIMIT $1",
                &[&limit],
            )?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
        })
        .await
    }

    /// The store of `lease`'s account, every write of which is fenced by the lease's token:
    /// once the lease is lost (expired, or taken by another worker), every write fails with
    /// [`StoreError::LeaseLost`] and writes nothing.
    pub fn fenced(&self, lease: &Lease) -> PostgresStore {
        PostgresStore {
            db: self.clone(),
            account: lease.account_id,
            name: lease.account.as_str().into(),
            fence: Some(lease.token),
        }
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A worker's lease on one account (see [`PostgresDatabase::acquire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    account: String,
    account_id: AccountId,
    owner: String,
    token: i64,
}

impl Lease {
    /// The account's name.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The worker holding it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The fencing token: larger at every acquisition of the account.
    pub fn token(&self) -> i64 {
        self.token
    }
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One account of a [`PostgresDatabase`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    db: PostgresDatabase,
    account: AccountId,
    name: Arc<str>,
    /// The lease token every write checks, for a store of a leased account.
    fence: Option<i64>,
}

impl PostgresStore {
    /// The database the account lives in.
    pub fn database(&self) -> &PostgresDatabase {
        &self.db
    }

    /// The account's name.
    pub fn account_name(&self) -> &str {
        &self.name
    }

    /// The lease token its writes are fenced by, if any.
    pub fn fence(&self) -> Option<i64> {
        self.fence
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>, AccountId, &PostgresOptions) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let account = self.account;
        self.db.in_tx(move |tx, o| f(tx, account, o)).await
    }

    /// Runs `f` in one transaction after checking the fence, when there is one: the lease row
    /// is locked (shared) until the commit, so no worker can take the account in between.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>, AccountId, &PostgresOptions) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let (account, fence, name) = (self.account, self.fence, self.name.clone());
        self.db
            .in_tx(move |tx, o| {
                if let Some(token) = fence {
                    let live = tx.query_opt(
                        "SELECT 1 FROM amarula_leases
                         WHERE account = $1 AND token = $2 AND expires_at > now() FOR SHARE",
                        &[&account, &token],
                    )?;
                    if live.is_none() {
                        return Err(StoreError::LeaseLost {
                            account: name.to_string(),
                        });
                    }
                }
                f(tx, account, o)
            })
            .await
    }

    /// A stored one-time prekey.
    pub async fn prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let id = i64::from(id);
        self.read(move |tx, a, _| {
            tables::blob(
                tx,
                "SELECT record FROM amarula_prekeys WHERE account = $1 AND id = $2",
                &[&a, &id],
            )
        })
        .await
    }

    /// How many one-time prekeys are stored.
    pub async fn prekey_count(&self) -> Result<u64, StoreError> {
        self.read(|tx, a, _| tables::count(tx, "amarula_prekeys", a))
            .await
    }

    /// A stored signed prekey.
    pub async fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let id = i64::from(id);
        self.read(move |tx, a, _| {
            tables::blob(
                tx,
                "SELECT record FROM amarula_signed_prekeys WHERE account = $1 AND id = $2",
                &[&a, &id],
            )
        })
        .await
    }

    /// The Signal session with one device (the JID exactly as stored).
    pub async fn session(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        let address = address.to_string();
        self.read(move |tx, a, _| {
            tables::blob(
                tx,
                "SELECT record FROM amarula_sessions WHERE account = $1 AND address = $2",
                &[&a, &address],
            )
        })
        .await
    }

    /// The sessions with every device of `user` (its device part ignored), by address.
    pub async fn sessions_for(&self, user: &Jid) -> Result<Vec<(Jid, Vec<u8>)>, StoreError> {
        let user = user.clone();
        self.read(move |tx, a, _| tables::sessions_for(tx, a, &user))
            .await
    }

    /// How many sessions are stored.
    pub async fn session_count(&self) -> Result<u64, StoreError> {
        self.read(|tx, a, _| tables::count(tx, "amarula_sessions", a))
            .await
    }

    /// A group sender key.
    pub async fn sender_key(
        &self,
        group: &Jid,
        sender: &Jid,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (group, sender) = (group.to_string(), sender.to_string());
        self.read(move |tx, a, _| {
            tables::blob(
                tx,
                "SELECT record FROM amarula_sender_keys
                 WHERE account = $1 AND group_jid = $2 AND sender = $3",
                &[&a, &group, &sender],
            )
        })
        .await
    }

    /// The identity key of a device.
    pub async fn identity(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        let address = address.to_string();
        self.read(move |tx, a, _| {
            tables::blob(
                tx,
                "SELECT key FROM amarula_identities WHERE account = $1 AND address = $2",
                &[&a, &address],
            )
        })
        .await
    }

    /// A user's device list.
    pub async fn device_list(&self, user: &Jid) -> Result<Option<DeviceList>, StoreError> {
        let user = user.clone();
        self.read(move |tx, a, _| tables::device_list(tx, a, &user))
            .await
    }

    /// The phone number user of a LID.
    pub async fn phone_for_lid(&self, lid: &Jid) -> Result<Option<Jid>, StoreError> {
        let lid = lid.clone();
        self.read(move |tx, a, _| {
            tables::lid_mapping(
                tx,
                a,
                "SELECT phone FROM amarula_lid_mappings WHERE account = $1 AND lid = $2",
                &lid,
            )
        })
        .await
    }

    /// The LID of a phone number user.
    pub async fn lid_for_phone(&self, phone: &Jid) -> Result<Option<Jid>, StoreError> {
        let phone = phone.clone();
        self.read(move |tx, a, _| {
            tables::lid_mapping(
                tx,
                a,
                "SELECT lid FROM amarula_lid_mappings WHERE account = $1 AND phone = $2",
                &phone,
            )
        })
        .await
    }

    /// The pending incoming messages, oldest first.
    pub async fn pending(&self) -> Result<Vec<PendingMessage>, StoreError> {
        self.read(|tx, a, _| tables::pending(tx, a)).await
    }

    /// Drops the sent messages older than `before_unix_ms`; returns how many.
    pub async fn prune_sent(&self, before_unix_ms: u64) -> Result<u64, StoreError> {
        self.write(move |tx, a, _| tables::prune_sent(tx, a, before_unix_ms))
            .await
    }
}

impl CredentialStore for PostgresStore {
    fn keeps_signal_state(&self) -> bool {
        true
    }

    async fn load(&self) -> Result<Option<Credentials>, StoreError> {
        self.read(|tx, a, _| tables::load_credentials(tx, a)).await
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
        // Pruning writes: it is fenced like every write (a stale worker loads nothing).
        self.write(|tx, a, options| {
            let max_age = u64::try_from(options.sent_max_age.as_millis()).unwrap_or(u64::MAX);
            let pruned = tables::prune_sent(tx, a, unix_now_ms().saturating_sub(max_age))?;
            if pruned > 0 {
                tracing::debug!(pruned, "dropped expired sent messages");
            }
            tables::load_sent(tx, a, false)
        })
        .await
    }

    async fn load_unacked_sent(&self) -> Result<Vec<SentMessage>, StoreError> {
        self.read(|tx, a, _| tables::load_sent(tx, a, true)).await
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes.to_vec();
        // One transaction: all or nothing.
        self.write(move |tx, a, options| {
            for change in &changes {
                tables::apply(tx, a, change, options.sent_limit)?;
            }
            Ok(())
        })
        .await
    }

    async fn load_keys(&self, request: &LoadRequest) -> Result<Loaded, StoreError> {
        if request.is_empty() {
            return Ok(Loaded::nothing_for(request));
        }
        let request = request.clone();
        self.read(move |tx, a, _| tables::load_keys(tx, a, &request))
            .await
    }

    async fn load_pending(&self) -> Result<Vec<PendingMessage>, StoreError> {
        self.pending().await
    }

    async fn load_app_state(&self) -> Result<amarula_core::persist::StoredAppState, StoreError> {
        // One transaction: the keys, versions and MACs of one snapshot.
        self.read(|tx, a, _| tables::app_state(tx, a)).await
    }

    async fn delete(&self) -> Result<(), StoreError> {
        self.write(|tx, a, _| tables::delete_account_data(tx, a))
            .await
    }
}
