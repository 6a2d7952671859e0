//! Unit tests of the SQLite store: every table, batches, accounts, pruning, corruption and
//! migrations.

use std::path::Path;

use super::*;
use crate::store::testutil::{TempDir, contract, paired, same, sent};

fn jid(s: &str) -> Jid {
    s.parse().expect("valid jid")
}

fn memory() -> SqliteStore {
    SqliteDatabase::open_in_memory()
        .expect("open")
        .account(DEFAULT_ACCOUNT)
        .expect("account")
}

#[test]
fn contract_in_memory_and_on_disk() {
    smol::block_on(contract(&memory(), true));
    let dir = TempDir::new("sqlite-contract");
    let store = SqliteStore::open(dir.0.join("a.db")).expect("open");
    smol::block_on(contract(&store, true));
}

#[test]
fn every_table_round_trips() {
    let store = memory();
    let (alice1, alice2, bob) = (
        jid("15550001111:1@s.whatsapp.net"),
        jid("15550001111:2@s.whatsapp.net"),
        jid("15550002222:1@s.whatsapp.net"),
    );
    let group = jid("120363000000000001@g.us");
    let lid = jid("123456789012345@lid");
    let pending = PendingMessage {
        id: "15550002222@s.whatsapp.net/3EB0A".into(),
        node: vec![0xf8, 1, 2].into(),
        ack_token: Some(u64::MAX),
        received_unix_ms: 1_750_000_000_000,
    };
    smol::block_on(async {
        store
            .apply(&[
                Change::PreKey {
                    id: 1,
                    record: vec![1],
                },
                Change::PreKey {
                    id: 2,
                    record: vec![2],
                },
                Change::SignedPreKey {
                    id: 7,
                    record: vec![7],
                },
                Change::Session {
                    address: alice1.clone(),
                    record: vec![11],
                },
                Change::Session {
                    address: alice2.clone(),
                    record: vec![12],
                },
                Change::Session {
                    address: bob.clone(),
                    record: vec![21],
                },
                Change::SenderKey {
                    group: group.clone(),
                    sender: alice1.clone(),
                    record: vec![31],
                },
                Change::Identity {
                    address: bob.clone(),
                    key: vec![5; 33],
                },
                Change::DeviceList {
                    user: jid("15550001111@s.whatsapp.net"),
                    list: DeviceList {
                        devices: vec![0, 1, 2, 65535],
                        updated_unix_ms: 9,
                    },
                },
                Change::LidMapping {
                    lid: lid.clone(),
                    phone: jid("15550001111@s.whatsapp.net"),
                },
                Change::Pending(pending.clone()),
                Change::Pending(PendingMessage {
                    id: "second".into(),
                    ..pending.clone()
                }),
            ])
            .await
            .expect("apply");
        assert_eq!(store.prekey(1).await.expect("get"), Some(vec![1]));
        assert_eq!(store.prekey(3).await.expect("get"), None);
        assert_eq!(store.prekey_count().await.expect("count"), 2);
        assert_eq!(store.signed_prekey(7).await.expect("get"), Some(vec![7]));
        assert_eq!(store.session(&alice2).await.expect("get"), Some(vec![12]));
        assert_eq!(store.session_count().await.expect("count"), 3);
        // Every device of a user, by the user or by any of its devices.
        let alice = store
            .sessions_for(&jid("15550001111@s.whatsapp.net"))
            .await
            .expect("for");
        assert_eq!(
            alice,
            vec![(alice1.clone(), vec![11]), (alice2.clone(), vec![12])]
        );
        assert_eq!(
            store.sessions_for(&bob).await.expect("for"),
            vec![(bob.clone(), vec![21])]
        );
        assert_eq!(
            store.sender_key(&group, &alice1).await.expect("get"),
            Some(vec![31])
        );
        assert_eq!(store.sender_key(&group, &alice2).await.expect("get"), None);
        assert_eq!(store.identity(&bob).await.expect("get"), Some(vec![5; 33]));
        let list = store
            .device_list(&alice1)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(list.devices, [0, 1, 2, 65535]);
        assert_eq!(list.updated_unix_ms, 9);
        assert_eq!(
            store.phone_for_lid(&lid).await.expect("get"),
            Some(jid("15550001111@s.whatsapp.net"))
        );
        assert_eq!(
            store.lid_for_phone(&alice1).await.expect("get"),
            Some(lid.clone())
        );
        let got = store.pending().await.expect("pending");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], pending);
        assert_eq!(got[1].id, "second");

        // Replacements and removals.
        let new_lid = jid("999@lid");
        store
            .apply(&[
                Change::RemovePreKey(1),
                Change::RemoveSignedPreKey(7),
                Change::Session {
                    address: alice1.clone(),
                    record: vec![13],
                },
                Change::RemoveSession(alice2.clone()),
                Change::LidMapping {
                    lid: new_lid.clone(),
                    phone: jid("15550001111@s.whatsapp.net"),
                },
                Change::PendingDone(pending.id.clone()),
            ])
            .await
            .expect("apply");
        assert_eq!(store.prekey(1).await.expect("get"), None);
        assert_eq!(store.prekey(2).await.expect("get"), Some(vec![2]));
        assert_eq!(store.signed_prekey(7).await.expect("get"), None);
        assert_eq!(
            store.sessions_for(&alice1).await.expect("for"),
            vec![(alice1.clone(), vec![13])]
        );
        assert_eq!(
            store.phone_for_lid(&lid).await.expect("get"),
            None,
            "the old pair went"
        );
        assert_eq!(
            store.lid_for_phone(&alice1).await.expect("get"),
            Some(new_lid)
        );
        let got = store.pending().await.expect("pending");
        assert_eq!(
            got.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["second"]
        );

        // Logging out forgets every table.
        store.delete().await.expect("delete");
        assert_eq!(store.prekey_count().await.expect("count"), 0);
        assert_eq!(store.session_count().await.expect("count"), 0);
        assert!(store.pending().await.expect("pending").is_empty());
        assert!(store.device_list(&alice1).await.expect("get").is_none());
    });
}

#[test]
fn a_failed_batch_leaves_nothing() {
    let store = memory();
    smol::block_on(async {
        store.save(&paired(1)).await.expect("save");
        let before = store.load().await.expect("load").expect("present");
        // The third change cannot be stored (a time past SQLite's integers): the whole batch
        // is rolled back, including the changes before it.
        let bad = SentMessage {
            sent_unix_ms: u64::MAX,
            ..sent(1)
        };
        let result = store
            .apply(&[
                Change::Credentials(Box::new(paired(2))),
                Change::Session {
                    address: jid("1:1@s.whatsapp.net"),
                    record: vec![1],
                },
                Change::SentMessage(bad),
                Change::PreKey {
                    id: 1,
                    record: vec![1],
                },
            ])
            .await;
        assert!(result.is_err());
        assert!(same(
            &before,
            &store.load().await.expect("load").expect("present")
        ));
        assert_eq!(store.session_count().await.expect("count"), 0);
        assert_eq!(store.prekey_count().await.expect("count"), 0);
        assert!(store.load_sent().await.expect("load_sent").is_empty());
        // The store is usable afterwards.
        store
            .apply(&[Change::PreKey {
                id: 1,
                record: vec![1],
            }])
            .await
            .expect("apply");
        assert_eq!(store.prekey_count().await.expect("count"), 1);
    });
}

#[test]
fn accounts_are_isolated() {
    let dir = TempDir::new("sqlite-accounts");
    let path = dir.0.join("multi.db");
    let db = SqliteDatabase::open(&path).expect("open");
    let (a, b) = (db.account("a").expect("a"), db.account("b").expect("b"));
    let peer = jid("15550001111:1@s.whatsapp.net");
    smol::block_on(async {
        a.save(&paired(1)).await.expect("save");
        a.apply(&[
            Change::Session {
                address: peer.clone(),
                record: vec![1],
            },
            Change::SentMessage(sent(1)),
            Change::PreKey {
                id: 1,
                record: vec![1],
            },
        ])
        .await
        .expect("apply");
        b.apply(&[Change::Session {
            address: peer.clone(),
            record: vec![2],
        }])
        .await
        .expect("apply");
        assert!(b.load().await.expect("load").is_none());
        assert!(b.load_sent().await.expect("load_sent").is_empty());
        assert_eq!(b.prekey(1).await.expect("get"), None);
        assert_eq!(a.session(&peer).await.expect("get"), Some(vec![1]));
        assert_eq!(b.session(&peer).await.expect("get"), Some(vec![2]));
        // Deleting one account leaves the other.
        b.delete().await.expect("delete");
        assert_eq!(a.session(&peer).await.expect("get"), Some(vec![1]));
        assert!(a.load().await.expect("load").is_some());
    });
    drop((a, b, db));
    // Reopened, the same names find the same data.
    let db = SqliteDatabase::open(&path).expect("reopen");
    assert_eq!(db.accounts().expect("accounts"), ["a", "b"]);
    let a = db.account("a").expect("a");
    assert_eq!(a.account_name(), "a");
    assert!(smol::block_on(a.load()).expect("load").is_some());
}

#[test]
fn sent_cache_is_bounded_by_count_and_age() {
    let dir = TempDir::new("sqlite-prune");
    let options = SqliteOptions {
        sent_limit: 10,
        ..SqliteOptions::default()
    };
    let store = SqliteDatabase::open_with(dir.0.join("p.db"), options)
        .expect("open")
        .account("x")
        .expect("account");
    smol::block_on(async {
        for n in 0..25 {
            store.save_sent(&sent(n)).await.expect("save_sent");
        }
        // Re-relaying one of the kept messages moves it last and keeps the bound.
        store.save_sent(&sent(20)).await.expect("save_sent");
        let kept: Vec<String> = store
            .load_sent()
            .await
            .expect("load_sent")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert!(kept.len() <= 10, "{kept:?}");
        assert_eq!(kept.first().map(String::as_str), Some("m16"));
        assert_eq!(kept.last().map(String::as_str), Some("m20"));
        // Age: everything before m22 goes.
        let removed = store
            .prune_sent(sent(22).sent_unix_ms)
            .await
            .expect("prune");
        assert!(removed > 0);
        let kept: Vec<String> = store
            .load_sent()
            .await
            .expect("load")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(kept, ["m22", "m23", "m24"]);
        // load_sent drops what is older than the maximum age (these are from 2025, and
        // the default age is a week).
        let old = SentMessage {
            sent_unix_ms: 1_000,
            ..sent(99)
        };
        store.save_sent(&old).await.expect("save_sent");
        assert!(
            !store
                .load_sent()
                .await
                .expect("load")
                .iter()
                .any(|m| m.id == "m99")
        );
    });
}

#[cfg(unix)]
#[test]
fn the_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("sqlite-mode");
    let path = dir.0.join("private.db");
    let _store = SqliteStore::open(&path).expect("open");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A database with some data in every table, closed.
fn populated(path: &Path) {
    let store = SqliteStore::open(path).expect("open");
    smol::block_on(async {
        store.save(&paired(3)).await.expect("save");
        for n in 0..200u32 {
            store
                .apply(&[
                    Change::Session {
                        address: jid(&format!("1555{n:07}:1@s.whatsapp.net")),
                        record: vec![n as u8; 300],
                    },
                    Change::SentMessage(sent(u64::from(n))),
                ])
                .await
                .expect("apply");
        }
    });
}

/// Opening and reading `path` fails with a typed error somewhere, and never panics.
fn refused(path: &Path) -> StoreError {
    let store = match SqliteStore::open(path) {
        Ok(store) => store,
        Err(e) => return e,
    };
    smol::block_on(async {
        if let Err(e) = store.load().await {
            return e;
        }
        if let Err(e) = store.load_sent().await {
            return e;
        }
        if let Err(e) = store.database().check().await {
            return e;
        }
        panic!("a damaged database was read without error");
    })
}

#[test]
fn a_truncated_file_is_a_typed_error() {
    let dir = TempDir::new("sqlite-truncated");
    let path = dir.0.join("t.db");
    populated(&path);
    let len = std::fs::metadata(&path).expect("meta").len();
    assert!(len > 8192, "checkpointed on close: {len}");
    for keep in [len / 2, len - 1000, 4096 + 10, 50] {
        let copy = dir.0.join(format!("t{keep}.db"));
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&copy, &bytes[..keep as usize]).expect("write");
        let e = refused(&copy);
        assert!(
            matches!(e, StoreError::Corrupt(_)),
            "truncated to {keep}: {e:?}"
        );
    }
}

#[test]
fn a_garbage_file_is_a_typed_error() {
    let dir = TempDir::new("sqlite-garbage");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for (i, len) in [1usize, 100, 4096, 100_000].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                // xorshift: deterministic noise.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let path = dir.0.join(format!("g{i}.db"));
        std::fs::write(&path, &bytes).expect("write");
        let e = refused(&path);
        assert!(matches!(e, StoreError::Corrupt(_)), "{len} bytes: {e:?}");
        // The file is left as it was.
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
    }
    // A text file.
    let path = dir.0.join("text.db");
    std::fs::write(&path, "{\"noise_private\": \"00\"}").expect("write");
    assert!(matches!(refused(&path), StoreError::Corrupt(_)));
}

#[test]
fn a_foreign_database_is_refused() {
    let dir = TempDir::new("sqlite-foreign");
    let path = dir.0.join("other.db");
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch("CREATE TABLE songs (title TEXT)")
        .expect("create");
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("sqlite-newer");
    let path = dir.0.join("newer.db");
    populated(&path);
    let conn = Connection::open(&path).expect("open");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump");
    drop(conn);
    match SqliteStore::open(&path) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

/// What a database of `version` holds, written with the SQL of that version.
fn fill_version(db: &SqliteDatabase, version: u32) {
    db.with_conn(|c| {
        let account = tables::account(c, "old").expect("account");
        if version >= 1 {
            let text = crate::store::credentials_to_json(&paired(5)).to_string();
            c.execute(
                "INSERT INTO credentials(account, json) VALUES (?1, ?2)",
                params![account, text],
            )
            .expect("credentials");
            c.execute(
                "INSERT INTO sent_messages(account, seq, id, recipient, kind, context, sent_unix_ms)
                 VALUES (?1, 1, 'm1', '15550001111@s.whatsapp.net', 'text', x'01', ?2)",
                params![account, i64::try_from(unix_now_ms()).expect("now")],
            )
            .expect("sent");
        }
        if version >= 2 {
            c.execute(
                "INSERT INTO sessions(account, address, user, record)
                 VALUES (?1, '15550001111:1@s.whatsapp.net', '15550001111@s.whatsapp.net', x'02')",
                [account],
            )
            .expect("session");
        }
    });
}

#[test]
fn migrates_from_every_earlier_version() {
    let dir = TempDir::new("sqlite-migrate");
    for old in 0..SCHEMA_VERSION {
        let path = dir.0.join(format!("v{old}.db"));
        if old == 0 {
            // Version 0 is an empty file (as left by a crash right after creating it).
            std::fs::write(&path, b"").expect("create");
        } else {
            let db = SqliteDatabase::open_at_version(&path, old).expect("old schema");
            fill_version(&db, old);
        }
        let db = SqliteDatabase::open(&path).expect("migrated");
        let version: u32 = db.with_conn(|c| {
            c.pragma_query_value(None, "user_version", |r| r.get(0))
                .expect("version")
        });
        assert_eq!(version, SCHEMA_VERSION, "from {old}");
        let accounts = db.accounts().expect("accounts");
        let store = db.account("old").expect("account");
        smol::block_on(async {
            let peer = jid("15550001111:1@s.whatsapp.net");
            if old >= 1 {
                assert_eq!(accounts, ["old"]);
                assert!(same(
                    &paired(5),
                    &store.load().await.expect("load").expect("kept")
                ));
                let kept = store.load_sent().await.expect("load_sent");
                assert_eq!(
                    kept.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
                    ["m1"]
                );
            }
            if old >= 2 {
                assert_eq!(store.session(&peer).await.expect("get"), Some(vec![2]));
            }
            // Every table of the newest version works.
            store
                .apply(&[
                    Change::Session {
                        address: peer.clone(),
                        record: vec![3],
                    },
                    Change::PreKey {
                        id: 1,
                        record: vec![1],
                    },
                    Change::SentMessage(sent(7)),
                    Change::MessageSecret {
                        key: amarula_core::persist::SecretKey {
                            chat: peer.to_non_device(),
                            author: peer.to_non_device(),
                            id: "P".into(),
                        },
                        record: vec![9],
                    },
                    Change::AppStateSyncKey(amarula_core::appstate::SyncKey {
                        id: vec![1],
                        data: vec![2; 32],
                        timestamp: 3,
                    }),
                    Change::AppStateCollection(Box::new(amarula_core::persist::AppStateDelta {
                        collection: amarula_core::appstate::Collection::Regular,
                        version: 4,
                        hash: amarula_core::appstate::LtHash([5; 128]),
                        replace: true,
                        removed: Vec::new(),
                        added: vec![([6; 32], [7; 32])],
                    })),
                ])
                .await
                .expect("apply");
            assert_eq!(store.session(&peer).await.expect("get"), Some(vec![3]));
            let app = store.load_app_state().await.expect("app state");
            assert_eq!((app.keys.len(), app.collections.len()), (1, 1));
            assert_eq!(app.collections[0].1.version, 4);
        });
        // Opening again does nothing more.
        drop((store, db));
        SqliteDatabase::open(&path).expect("reopened");
    }
}

/// A store whose rows were written by something else: `sql` (with the account as `?1`) puts
/// in one damaged row.
fn damaged(sql: &str) -> SqliteStore {
    let store = memory();
    store.db.with_conn(|c| {
        c.execute(sql, [store.account]).expect("damage");
    });
    store
}

#[test]
fn an_unreadable_app_state_is_corrupt_not_a_panic() {
    for sql in [
        "INSERT INTO app_state_versions(account, collection, version, hash)
         VALUES (?1, 'regular', 1, x'00')",
        "INSERT INTO app_state_versions(account, collection, version, hash)
         VALUES (?1, 'no_such_collection', 1, zeroblob(128))",
    ] {
        let store = damaged(sql);
        let got = smol::block_on(store.load_app_state());
        assert!(matches!(got, Err(StoreError::Corrupt(_))), "{sql}: {got:?}");
    }
}

#[test]
fn an_unreadable_record_is_corrupt_not_a_panic() {
    let peer = "15550001111:0@s.whatsapp.net";
    let mut sessions = LoadRequest::default();
    sessions.sessions = vec![jid("15550002222:0@s.whatsapp.net"), jid(peer)];
    let mut lists = LoadRequest::default();
    lists.device_lists = vec![jid("15550001111@s.whatsapp.net")];
    let mut sender_keys = LoadRequest::default();
    sender_keys.sender_keys = vec![(jid("1@g.us"), jid(peer))];
    let mut prekeys = LoadRequest::default();
    prekeys.prekeys = vec![5];
    let cases: [(&str, &LoadRequest); 5] = [
        // A session record stored as text.
        (
            "INSERT INTO sessions(account, address, user, record)
             VALUES (?1, '15550001111:0@s.whatsapp.net', '15550001111@s.whatsapp.net', 'text')",
            &sessions,
        ),
        // A device list of an odd number of bytes.
        (
            "INSERT INTO device_lists(account, user, devices, updated_unix_ms)
             VALUES (?1, '15550001111@s.whatsapp.net', x'010203', 1)",
            &lists,
        ),
        // A device list fetched before 1970.
        (
            "INSERT INTO device_lists(account, user, devices, updated_unix_ms)
             VALUES (?1, '15550001111@s.whatsapp.net', x'0100', -5)",
            &lists,
        ),
        // A sender key stored as a number.
        (
            "INSERT INTO sender_keys(account, group_jid, sender, record)
             VALUES (?1, '1@g.us', '15550001111:0@s.whatsapp.net', 42)",
            &sender_keys,
        ),
        // A prekey stored as a real.
        (
            "INSERT INTO prekeys(account, id, record) VALUES (?1, 5, 1.5)",
            &prekeys,
        ),
    ];
    for (i, (sql, request)) in cases.into_iter().enumerate() {
        let store = damaged(sql);
        match smol::block_on(store.load_keys(request)) {
            Err(StoreError::Corrupt(_)) => {}
            other => panic!("case {i}: expected Corrupt, got {other:?}"),
        }
    }
    // Pending messages: a negative arrival time, a stanza stored as text.
    for (i, sql) in [
        "INSERT INTO pending_messages(account, id, node, ack_token, received_unix_ms)
         VALUES (?1, 'a', x'f8', NULL, -1)",
        "INSERT INTO pending_messages(account, id, node, ack_token, received_unix_ms)
         VALUES (?1, 'a', 'stanza', NULL, 1)",
        "INSERT INTO pending_messages(account, id, node, ack_token, received_unix_ms)
         VALUES (?1, 'a', x'f8', 'token', 1)",
    ]
    .into_iter()
    .enumerate()
    {
        let store = damaged(sql);
        match smol::block_on(store.load_pending()) {
            Err(StoreError::Corrupt(_)) => {}
            other => panic!("pending case {i}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn load_keys_answers_in_request_order() {
    let store = memory();
    let peers: Vec<Jid> = (0..50)
        .map(|n| jid(&format!("1555{n:07}:{}@s.whatsapp.net", n % 3)))
        .collect();
    smol::block_on(async {
        let batch: Vec<Change> = peers
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 2 == 0)
            .map(|(n, p)| Change::Session {
                address: p.clone(),
                record: vec![n as u8],
            })
            .collect();
        store.apply(&batch).await.expect("apply");
        let mut request = LoadRequest::default();
        request.sessions = peers.iter().rev().cloned().collect();
        let loaded = store.load_keys(&request).await.expect("load_keys");
        assert_eq!(loaded.sessions.len(), 50);
        for ((address, record), n) in loaded.sessions.iter().zip((0..50usize).rev()) {
            assert_eq!(address, &peers[n]);
            let expected = (n % 2 == 0).then(|| vec![n as u8]);
            assert_eq!(record, &expected, "peer {n}");
        }
    });
}
