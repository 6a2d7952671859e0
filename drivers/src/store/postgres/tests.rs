//! Tests of the Postgres store against a real server.
//!
//! The server is named by `AMARULA_TEST_POSTGRES` (a libpq URL or `key=value` string; `.ci/run`
//! starts a throwaway cluster and sets it). The rule: under CI (`CI` set) a missing variable
//! fails the test; on a developer's machine without it the test prints how to set it and
//! passes without checking anything. Each test works in a schema of its own, dropped at the end.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{POSTGRES_SCHEMA_VERSION, PostgresDatabase, PostgresOptions, schema};
use crate::store::conformance::{Inspect, conformance, kept_apart};
use crate::store::testutil::{contract, paired, same};
use crate::store::{Change, CredentialStore, DeviceList, PendingMessage, StoreError};
use amarula_core::jid::Jid;

/// The variable naming the test server.
pub(crate) const URL_VAR: &str = "AMARULA_TEST_POSTGRES";

/// The test server's URL; `None` (with a message) on a developer's machine without one.
///
/// # Panics
/// Under CI when the variable is missing.
pub(crate) fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{URL_VAR} is not set: under CI the Postgres tests must run (.ci/run sets it)")
        }
        _ => {
            eprintln!(
                "{URL_VAR} is not set: the Postgres store tests check nothing. Start a server \
                 and set it, e.g. {URL_VAR}='host=/tmp/pg port=5432 user=postgres dbname=postgres'"
            );
            None
        }
    }
}

/// A schema of its own for one test, dropped when this is dropped.
pub(crate) struct TestSchema {
    base: String,
    name: String,
    /// The URL whose connections work in the schema.
    pub(crate) url: String,
}

impl TestSchema {
    pub(crate) fn new(tag: &str) -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = server_url()?;
        let name = format!(
            "amarula_test_{}_{}_{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};");
        admin(&base, &sql);
        let url = if base.starts_with("postgres://") || base.starts_with("postgresql://") {
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-csearch_path%3D{name}")
        } else {
            format!("{base} options='-csearch_path={name}'")
        };
        Some(Self { base, name, url })
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        admin(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// Runs `sql` on a connection of its own, on a thread of its own (the synchronous client must
/// not run on an async executor's thread).
fn admin(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        client.batch_execute(&sql).expect("admin sql");
    })
    .join()
    .expect("admin thread");
}

impl Inspect for super::PostgresStore {
    async fn prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Self::prekey(self, id).await
    }
    async fn prekey_count(&self) -> Result<u64, StoreError> {
        Self::prekey_count(self).await
    }
    async fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Self::signed_prekey(self, id).await
    }
    async fn session(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Self::session(self, address).await
    }
    async fn sessions_for(&self, user: &Jid) -> Result<Vec<(Jid, Vec<u8>)>, StoreError> {
        Self::sessions_for(self, user).await
    }
    async fn session_count(&self) -> Result<u64, StoreError> {
        Self::session_count(self).await
    }
    async fn sender_key(&self, group: &Jid, sender: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Self::sender_key(self, group, sender).await
    }
    async fn identity(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Self::identity(self, address).await
    }
    async fn device_list(&self, user: &Jid) -> Result<Option<DeviceList>, StoreError> {
        Self::device_list(self, user).await
    }
    async fn phone_for_lid(&self, lid: &Jid) -> Result<Option<Jid>, StoreError> {
        Self::phone_for_lid(self, lid).await
    }
    async fn lid_for_phone(&self, phone: &Jid) -> Result<Option<Jid>, StoreError> {
        Self::lid_for_phone(self, phone).await
    }
    async fn pending(&self) -> Result<Vec<PendingMessage>, StoreError> {
        Self::pending(self).await
    }
}

/// The same suite as the memory and SQLite stores, from the smol executor.
#[test]
fn postgres_store_conforms_on_smol() {
    let Some(schema) = TestSchema::new("conf_smol") else {
        return;
    };
    smol::block_on(async {
        let db = PostgresDatabase::open(&schema.url).await.expect("open");
        contract(&db.account("contract").await.expect("account"), true).await;
        conformance(&db.account("default").await.expect("account")).await;
        kept_apart(
            &db.account("a").await.expect("a"),
            &db.account("b").await.expect("b"),
        )
        .await;
        assert_eq!(
            db.accounts().await.expect("accounts"),
            ["contract", "default", "a", "b"]
        );
    });
}

/// The same suite from a multi-threaded tokio runtime (the client's own runtime must never run
/// on, or be dropped on, a tokio thread), with one pooled connection shared by all accounts.
#[test]
fn postgres_store_conforms_on_tokio() {
    let Some(schema) = TestSchema::new("conf_tokio") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let options = PostgresOptions {
            connections: 1,
            ..PostgresOptions::default()
        };
        let db = PostgresDatabase::open_with(&schema.url, options)
            .await
            .expect("open");
        conformance(&db.account("default").await.expect("account")).await;
        // Accounts written from many tasks at once share the one connection.
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let store = db.account(&format!("acct{i}")).await.expect("account");
                store
                    .apply(&[
                        Change::Credentials(Box::new(paired(i))),
                        Change::PreKey {
                            id: u32::from(i),
                            record: vec![i],
                        },
                    ])
                    .await
                    .expect("apply");
                assert!(same(
                    &paired(i),
                    &store.load().await.expect("load").expect("creds")
                ));
                assert_eq!(
                    store.prekey(u32::from(i)).await.expect("prekey"),
                    Some(vec![i])
                );
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        // The last clone is dropped on a tokio thread: the pool closes its connections on a
        // thread of its own.
        drop(db);
    });
}

/// A batch is all or nothing: a change the store refuses midway leaves nothing of the batch.
#[test]
fn postgres_batch_is_atomic() {
    let Some(schema) = TestSchema::new("atomic") else {
        return;
    };
    smol::block_on(async {
        let db = PostgresDatabase::open(&schema.url).await.expect("open");
        let store = db.account("x").await.expect("account");
        // The second change fails inside the transaction (a time past i64 ms).
        let bad = Change::DeviceList {
            user: "15550001111@s.whatsapp.net".parse().expect("jid"),
            list: DeviceList {
                devices: vec![0],
                updated_unix_ms: u64::MAX,
            },
        };
        let result = store
            .apply(&[Change::Credentials(Box::new(paired(3))), bad])
            .await;
        assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
        assert!(store.load().await.expect("load").is_none(), "rolled back");
    });
}

/// Migrations: a fresh database gets every step; a database at version 1 is taken to the
/// newest; one from a newer build is refused.
#[test]
fn postgres_migrations() {
    let Some(schema) = TestSchema::new("migrate") else {
        return;
    };
    smol::block_on(async {
        let config: postgres::Config = schema.url.parse().expect("config");
        let old = PostgresDatabase::open_at_version(config.clone(), PostgresOptions::default(), 1)
            .await
            .expect("open at 1");
        assert_eq!(old.schema_version().await.expect("version"), 1);
        let store = old.account("kept").await.expect("account");
        store.save(&paired(5)).await.expect("save");
        drop(store);
        drop(old);
        let db = PostgresDatabase::open(&schema.url).await.expect("open");
        assert_eq!(
            db.schema_version().await.expect("version"),
            POSTGRES_SCHEMA_VERSION
        );
        let store = db.account("kept").await.expect("account");
        assert!(same(
            &paired(5),
            &store.load().await.expect("load").expect("kept")
        ));
        // Opening again changes nothing.
        let again = PostgresDatabase::open(&schema.url).await.expect("reopen");
        assert_eq!(again.accounts().await.expect("accounts"), ["kept"]);
    });
    admin(
        &schema.url,
        &format!(
            "UPDATE amarula_schema SET version = {}",
            schema::MIGRATIONS.len() + 1
        ),
    );
    smol::block_on(async {
        match PostgresDatabase::open(&schema.url).await {
            Err(StoreError::NewerSchema { found, supported }) => {
                assert_eq!(found, POSTGRES_SCHEMA_VERSION + 1);
                assert_eq!(supported, POSTGRES_SCHEMA_VERSION);
            }
            other => panic!("a newer schema must be refused: {other:?}"),
        }
    });
}

/// Leases: one owner at a time; renewals; expiry (a lease of zero length is expired at once,
/// so no test waits); a takeover hands out a larger token; the stale owner's writes and renewals
/// fail and write nothing; release frees the account at once.
#[test]
fn postgres_leases_fence_writes() {
    let Some(schema) = TestSchema::new("lease") else {
        return;
    };
    smol::block_on(async {
        let db = PostgresDatabase::open(&schema.url).await.expect("open");
        let long = Duration::from_secs(60);
        let a = db
            .acquire("acct", "worker-a", long)
            .await
            .expect("acquire")
            .expect("free");
        assert_eq!(a.token(), 1);
        assert_eq!((a.account(), a.owner()), ("acct", "worker-a"));
        assert!(
            db.acquire("acct", "worker-b", long)
                .await
                .expect("acquire")
                .is_none(),
            "held by a"
        );
        assert!(db.leasable(10).await.expect("leasable").is_empty());
        db.renew(&a, long).await.expect("renew");
        let store_a = db.fenced(&a);
        store_a.save(&paired(1)).await.expect("fenced write");

        // a stalls: its lease runs out (renewed to zero length) and b takes the account.
        db.renew(&a, Duration::ZERO).await.expect("renew to zero");
        assert_eq!(db.leasable(10).await.expect("leasable"), ["acct"]);
        let b = db
            .acquire("acct", "worker-b", long)
            .await
            .expect("acquire")
            .expect("expired");
        assert!(b.token() > a.token());
        let store_b = db.fenced(&b);
        store_b.save(&paired(2)).await.expect("new owner writes");

        // a wakes up: every write fails, whole, and nothing of it is kept.
        let stale = store_a
            .apply(&[
                Change::Credentials(Box::new(paired(1))),
                Change::PreKey {
                    id: 1,
                    record: vec![1],
                },
            ])
            .await;
        assert!(
            matches!(&stale, Err(StoreError::LeaseLost { account }) if account == "acct"),
            "{stale:?}"
        );
        // The privacy-token and app-state writes are fenced like every other.
        let peer: Jid = "15550001111@s.whatsapp.net".parse().expect("jid");
        let later = [
            Change::TcToken {
                user: peer.clone(),
                token: amarula_core::persist::TcToken {
                    token: vec![1; 4],
                    timestamp: 1,
                },
            },
            Change::AppStateSyncKey(amarula_core::appstate::SyncKey {
                id: vec![1],
                data: vec![2; 32],
                timestamp: 3,
            }),
            Change::AppStateCollection(Box::new(amarula_core::persist::AppStateDelta {
                collection: amarula_core::appstate::Collection::Regular,
                version: 1,
                hash: amarula_core::appstate::LtHash([4; 128]),
                replace: true,
                removed: vec![],
                added: vec![([5; 32], [6; 32])],
            })),
        ];
        for change in &later {
            let stale = store_a.apply(std::slice::from_ref(change)).await;
            assert!(
                matches!(stale, Err(StoreError::LeaseLost { .. })),
                "{}: {stale:?}",
                change.kind()
            );
        }
        let app = store_b.load_app_state().await.expect("app state");
        assert!(app.keys.is_empty() && app.collections.is_empty());
        let mut tokens = crate::store::LoadRequest::default();
        tokens.tc_tokens = vec![peer];
        let loaded = store_b.load_keys(&tokens).await.expect("tokens");
        assert_eq!(loaded.tc_tokens[0].1, None);
        assert!(matches!(
            store_a.delete().await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(matches!(
            db.renew(&a, long).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(same(
            &paired(2),
            &store_b.load().await.expect("load").expect("b's")
        ));
        assert_eq!(store_b.prekey(1).await.expect("prekey"), None);
        // Reads are not fenced.
        assert!(store_a.load().await.expect("read").is_some());

        // Releasing a lost lease does nothing; releasing the live one frees the account.
        db.release(&a).await.expect("release lost");
        assert!(
            db.acquire("acct", "worker-c", long)
                .await
                .expect("acquire")
                .is_none()
        );
        db.release(&b).await.expect("release");
        let c = db
            .acquire("acct", "worker-c", long)
            .await
            .expect("acquire")
            .expect("released");
        assert!(c.token() > b.token());
        assert!(matches!(
            store_b.save(&paired(3)).await,
            Err(StoreError::LeaseLost { .. })
        ));
        // A logout keeps the lease's row: tokens keep growing.
        db.fenced(&c).delete().await.expect("delete");
        db.release(&c).await.expect("release");
        let d = db
            .acquire("acct", "worker-d", long)
            .await
            .expect("acquire")
            .expect("free");
        assert!(d.token() > c.token());
        // An unfenced store of the same account is not checked.
        db.account("acct")
            .await
            .expect("account")
            .save(&paired(4))
            .await
            .expect("unfenced");
    });
}

/// An app state the store cannot read (a hash of the wrong length, an unknown collection,
/// a MAC without its collection) is reported as corrupt, not a panic.
#[test]
fn postgres_unreadable_app_state_is_corrupt() {
    let Some(schema) = TestSchema::new("corrupt") else {
        return;
    };
    for sql in [
        "INSERT INTO amarula_app_state_versions(account, collection, version, hash)
         VALUES ($1, 'regular', 1, '\\x00')",
        "INSERT INTO amarula_app_state_versions(account, collection, version, hash)
         VALUES ($1, 'no_such_collection', 1, decode(repeat('00', 128), 'hex'))",
        "INSERT INTO amarula_app_state_macs(account, collection, index_mac, value_mac)
         VALUES ($1, 'regular', decode(repeat('01', 32), 'hex'), decode(repeat('02', 32), 'hex'))",
    ] {
        smol::block_on(async {
            let db = PostgresDatabase::open(&schema.url).await.expect("open");
            let store = db.account("damaged").await.expect("account");
            store.delete().await.expect("clean");
            let account = store.account;
            db.in_tx(move |tx, _| {
                tx.tx.execute(sql, &[&account])?;
                Ok(())
            })
            .await
            .expect("damage");
            let got = store.load_app_state().await;
            assert!(matches!(got, Err(StoreError::Corrupt(_))), "{sql}: {got:?}");
        });
    }
}

/// A table added to the schema must be wiped by `delete` too (or be one of the three kept).
#[test]
fn postgres_every_account_table_is_wiped() {
    let Some(schema) = TestSchema::new("tables") else {
        return;
    };
    smol::block_on(async {
        let db = PostgresDatabase::open(&schema.url).await.expect("open");
        let names = db
            .in_tx(|tx, _| {
                tx.query(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = current_schema()",
                    &[],
                )?
                .iter()
                .map(|r| Ok(r.try_get::<_, String>(0)?))
                .collect::<Result<Vec<String>, StoreError>>()
            })
            .await
            .expect("tables");
        assert!(names.len() > 10, "{names:?}");
        for name in names {
            let kept = ["amarula_accounts", "amarula_leases", "amarula_schema"];
            assert!(
                kept.contains(&name.as_str())
                    || super::tables::ACCOUNT_TABLES.contains(&name.as_str()),
                "{name} is not wiped"
            );
        }
    });
}

/// Two fleets share five accounts: each takes up to its limit, a worker that stops renewing
/// loses its accounts to the other at the next step, and learns it lost them at its own.
#[test]
fn fleets_share_and_take_over() {
    use crate::fleet::{Fleet, FleetOptions};
    let Some(schema) = TestSchema::new("fleet") else {
        return;
    };
    smol::block_on(async {
        let db = PostgresDatabase::open(&schema.url).await.expect("open");
        for i in 0..5 {
            db.account(&format!("acct{i}")).await.expect("account");
        }
        let options = |max| FleetOptions {
            max_accounts: max,
            lease_time: Duration::from_secs(60),
        };
        let mut a = Fleet::new(db.clone(), "a", options(3));
        let mut b = Fleet::new(db.clone(), "b", options(5));
        assert_eq!(a.renew_every(), Duration::from_secs(20));
        let step = a.step().await;
        assert!(step.error.is_none());
        let names = |s: &crate::fleet::FleetStep| {
            s.started
                .iter()
                .map(|(l, _)| l.account().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&step), ["acct0", "acct1", "acct2"]);
        let step = b.step().await;
        assert_eq!(names(&step), ["acct3", "acct4"]);
        assert!(a.step().await.started.is_empty());

        // a dies (stops renewing): its leases expire.
        admin(
            &schema.url,
            "UPDATE amarula_leases SET expires_at = now() WHERE owner = 'a'",
        );
        let step = b.step().await;
        assert_eq!(names(&step), ["acct0", "acct1", "acct2"]);
        assert!(step.lost.is_empty());
        assert_eq!(b.held().count(), 5);
        // b holds them now: nobody else can lease them; a's next step reports the loss.
        assert!(
            db.acquire("acct0", "probe", Duration::from_secs(1))
                .await
                .expect("acquire")
                .is_none()
        );
        let step = a.step().await;
        assert_eq!(step.lost, ["acct0", "acct1", "acct2"]);
        assert!(step.started.is_empty(), "b holds everything");
        // b finishes one account: released, a takes it.
        b.finished("acct4").await.expect("finished");
        assert_eq!(names(&a.step().await), ["acct4"]);
        a.release_all().await.expect("release");
        b.release_all().await.expect("release");
        assert_eq!(db.leasable(10).await.expect("leasable").len(), 5);
    });
}
