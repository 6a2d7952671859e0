//! The SQLite store's speed: persistence events per second for a send/receive workload
//! (batches of a few changes, as the drive task hands them over), start-up time (open,
//! load the credentials, restore the sent-message cache) of an account with 50,000 stored
//! Signal sessions, and the answer to one lazy-load request (20 sessions out of those 50,000,
//! as a send to a few users asks for).
//!
//! `cargo bench -p amarula --bench store`

use std::path::PathBuf;
use std::sync::OnceLock;

use amarula::core::credentials::Credentials;
use amarula::core::jid::Jid;
use amarula::core::machine::SentMessage;
use amarula::store::{
    Change, CredentialStore, LoadRequest, PendingMessage, SqliteDatabase, SqliteOptions,
    SqliteStore, Synchronous,
};
use bytes::Bytes;
use divan::counter::ItemsCount;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn main() {
    divan::main();
}

/// The benchmark files live here for the whole run.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fn peer(n: u32) -> Jid {
    format!("1555{:07}:{}@s.whatsapp.net", n / 4, n % 4)
        .parse()
        .expect("valid")
}

fn store(name: &str, synchronous: Synchronous) -> SqliteStore {
    let options = SqliteOptions {
        synchronous,
        ..SqliteOptions::default()
    };
    SqliteDatabase::open_with(dir().path().join(name), options)
        .expect("open")
        .account("bench")
        .expect("account")
}

/// One send and one receive: the send updates the session and caches the message; the
/// receive updates the sender's session, keeps the stanza pending, then (next batch) marks it
/// done. Five events in two batches.
fn round(n: u32) -> [Vec<Change>; 2] {
    let id = format!("3EB0{n:012}");
    let record = vec![n as u8; 600];
    [
        vec![
            Change::Session {
                address: peer(n % 1000),
                record: record.clone(),
            },
            Change::SentMessage(SentMessage {
                id: id.clone(),
                to: peer(n % 1000).to_non_device(),
                kind: "text".into(),
                context: Bytes::from(vec![1; 100]),
                sent_unix_ms: 4_000_000_000_000 + u64::from(n),
            }),
            Change::Session {
                address: peer((n + 1) % 1000),
                record,
            },
            Change::Pending(PendingMessage {
                id: format!("in/{id}").into(),
                node: vec![0xf8; 300].into(),
                ack_token: Some(u64::from(n)),
                received_unix_ms: 4_000_000_000_000,
            }),
        ],
        vec![Change::PendingDone(format!("in/{id}").into())],
    ]
}

#[divan::bench(args = ["full", "normal"], sample_count = 20, sample_size = 10)]
fn send_receive_round(bencher: divan::Bencher<'_, '_>, sync: &str) {
    let synchronous = if sync == "full" {
        Synchronous::Full
    } else {
        Synchronous::Normal
    };
    let store = store(&format!("events-{sync}.db"), synchronous);
    let mut n = 0u32;
    bencher.counter(ItemsCount::new(5usize)).bench_local(|| {
        n += 1;
        let [first, second] = round(n);
        smol::block_on(async {
            store.apply(&first).await.expect("apply");
            store.apply(&second).await.expect("apply");
        });
    });
}

/// A database with 50,000 sessions (and full sent cache) for `start_up_50k_sessions`.
fn big_database() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = dir().path().join("big.db");
        let store = SqliteStore::open(&path).expect("open");
        smol::block_on(async {
            let creds = Credentials::generate(&mut ChaCha20Rng::from_seed([1; 32]));
            store.save(&creds).await.expect("save");
            for chunk in (0..50_000u32).collect::<Vec<_>>().chunks(5_000) {
                let batch: Vec<Change> = chunk
                    .iter()
                    .map(|&n| Change::Session {
                        address: peer(n),
                        record: vec![n as u8; 600],
                    })
                    .collect();
                store.apply(&batch).await.expect("sessions");
            }
            for n in 0..1024u32 {
                let [first, _] = round(n);
                store.apply(&first[1..2]).await.expect("sent");
            }
            assert_eq!(store.session_count().await.expect("count"), 50_000);
        });
        path
    })
}

#[divan::bench(sample_count = 20)]
fn start_up_50k_sessions(bencher: divan::Bencher<'_, '_>) {
    let path = big_database();
    bencher.bench_local(|| {
        let store = SqliteStore::open(path).expect("open");
        smol::block_on(async {
            let creds = store.load().await.expect("load");
            let sent = store.load_sent().await.expect("load_sent");
            assert!(creds.is_some() && sent.len() == 1024);
            // The first send to a user reads only that user's sessions.
            let sessions = store.sessions_for(&peer(4_321)).await.expect("sessions");
            assert_eq!(sessions.len(), 4);
        });
        // Returned, so closing (a WAL checkpoint) is not part of the start-up time.
        store
    });
}

/// `load_keys` of 20 sessions spread over the 50,000 of `big_database`, on an open store: the
/// cost the drive task pays when the core asks for records it does not hold.
#[divan::bench(sample_count = 50, sample_size = 20)]
fn load_keys_20_of_50k_sessions(bencher: divan::Bencher<'_, '_>) {
    let store = SqliteStore::open(big_database()).expect("open");
    let mut request = LoadRequest::default();
    // Spread over the file, so each key is a separate index descent.
    request.sessions = (0..20u32).map(|i| peer(i * 2_477 + 13)).collect();
    // Warm: the statements are prepared and cached once, as in a running client.
    smol::block_on(store.load_keys(&request)).expect("load_keys");
    bencher.counter(ItemsCount::new(20usize)).bench_local(|| {
        let loaded = smol::block_on(store.load_keys(&request)).expect("load_keys");
        assert!(loaded.sessions.iter().all(|(_, r)| r.is_some()));
        loaded
    });
}
