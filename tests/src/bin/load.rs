//! Load benchmark: N accounts in one process against the simulator in another process over
//! loopback, all linked, logged in, keepalive running, exchanging end-to-end messages at a set
//! rate across the fleet.
//!
//! `cargo run --release -p amarula-tests --bin load -- --accounts N [--rate MSGS_PER_SEC]
//!     [--secs SECS] [--runtime tokio|smol] [--store sqlite|memory|postgres]`
//!
//! The store is by default one SQLite file (synchronous=NORMAL) holding every account, on one
//! connection, as a gateway would run them; `memory` keeps every account's Signal state (812
//! prekeys each, sessions) on the heap, where it counts as the accounts' memory; `postgres`
//! keeps them in the Postgres database `AMARULA_TEST_POSTGRES` names (a libpq URL or
//! `key=value` string), each account under a name of this run, through the store's small
//! connection pool, as a fleet worker would.
//!
//! It prints: connect+login throughput, resident memory per account (process RSS growth ÷ N)
//! and heap per account (a counting allocator), CPU per message (the process's user+system
//! time over the message phase ÷ messages), p50/p99 send-to-ack (`send_text` returning: the
//! server accepted it) and send-to-delivered (the recipient's application got it), and errors.
//! The simulator runs as `load --serve N` (this same binary), started by the benchmark.

// A global allocator needs `unsafe impl GlobalAlloc`; this binary measures the heap with one.
#![allow(
    unsafe_code,
    reason = "a counting global allocator needs `unsafe impl GlobalAlloc`"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use amarula::core::credentials::Credentials;
use amarula::core::jid::Jid;
use amarula::core::machine::{CloseReason, Confirm, Event};
use amarula::store::{CredentialStore, MemoryStore, credentials_from_json, credentials_to_json};
use amarula::{Client, ClientConfig, ClientEvent, Events};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to `System` unchanged; only the sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees are passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (through this wrapper).
        unsafe { System.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees are passed on; `ptr` came from `System`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const USAGE: &str = "usage: load --accounts N [--rate MSGS_PER_SEC] [--secs SECS] \
                     [--runtime tokio|smol] [--store sqlite|memory|postgres]";

fn phone(i: usize) -> String {
    format!("1555{i:07}")
}

fn credentials(i: usize) -> Credentials {
    Credentials::generate(&mut ChaCha20Rng::seed_from_u64(i as u64 + 1))
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU time of this process.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based) of the whole line: 11 and 12 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rt {
    Tokio,
    Smol,
}

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

fn spawn(rt: Rt, f: BoxFut) {
    match rt {
        Rt::Tokio => {
            tokio::spawn(f);
        }
        Rt::Smol => smol::spawn(f).detach(),
    }
}

async fn sleep(rt: Rt, d: Duration) {
    match rt {
        Rt::Tokio => tokio::time::sleep(d).await,
        Rt::Smol => {
            smol::Timer::after(d).await;
        }
    }
}

struct Args {
    accounts: usize,
    rate: f64,
    secs: u64,
    rt: Rt,
    store: StoreKind,
}

/// Where the accounts' state is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Sqlite,
    Memory,
    Postgres,
}

/// The database every account's store comes from.
enum Db {
    Sqlite(amarula::store::SqliteDatabase),
    Postgres(amarula::store::PostgresDatabase),
}

fn parse() -> Result<Option<(usize, bool)>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        let n = args
            .get(1)
            .and_then(|v| v.parse().ok())
            .ok_or("--serve N")?;
        return Ok(Some((n, true)));
    }
    Ok(None)
}

fn parse_args() -> Result<Args, String> {
    let mut out = Args {
        accounts: 100,
        rate: 10.0,
        secs: 20,
        rt: Rt::Tokio,
        store: StoreKind::Sqlite,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--accounts" => out.accounts = v()?.parse().map_err(|e| format!("--accounts: {e}"))?,
            "--rate" => out.rate = v()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--secs" => out.secs = v()?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--runtime" => {
                out.rt = match v()?.as_str() {
                    "tokio" => Rt::Tokio,
                    "smol" => Rt::Smol,
                    other => return Err(format!("--runtime {other}: tokio or smol")),
                }
            }
            "--store" => {
                out.store = match v()?.as_str() {
                    "sqlite" => StoreKind::Sqlite,
                    "memory" => StoreKind::Memory,
                    "postgres" => StoreKind::Postgres,
                    other => return Err(format!("--store {other}: sqlite, memory or postgres")),
                }
            }
            _ => return Err(USAGE.to_owned()),
        }
    }
    if out.accounts < 2 {
        return Err("--accounts: at least 2".to_owned());
    }
    Ok(out)
}

fn main() {
    match parse() {
        Ok(Some((n, _))) => serve(n),
        Ok(None) => match parse_args() {
            Ok(args) => {
                if let Err(e) = bench(args) {
                    eprintln!("load: {e}");
                    std::process::exit(1);
                }
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

/// The simulator process: links N devices, prints the URL, the trust root and each device's
/// credentials (one JSON line each), then serves until its stdin closes.
fn serve(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sim = amarula_tests::sim::Simulator::start(amarula_tests::sim::SimConfig::default())
            .await
            .expect("listen");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "url {}", sim.url());
        let _ = writeln!(out, "root {}", hex::encode(sim.trust_anchor().root_public));
        for i in 0..n {
            let mut creds = credentials(i);
            creds.device = Some(sim.add_account(&phone(i)).link_device(&creds));
            let _ = writeln!(out, "cred {}", credentials_to_json(&creds));
        }
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        drop(out);
        // Until the benchmark closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await;
    });
}

#[derive(Default)]
struct Stats {
    logged_in: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    /// Connections that ended before the benchmark stopped them (each one a lost login).
    disconnects: AtomicU64,
    ack_us: Mutex<Vec<u64>>,
    delivered_us: Mutex<Vec<u64>>,
}

fn bench(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", &args.accounts.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (mut url, mut root, mut creds) = (String::new(), [0u8; 32], Vec::new());
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(u) = line.strip_prefix("url ") {
            url = u.to_owned();
        } else if let Some(r) = line.strip_prefix("root ") {
            root = amarula_tests::sim::client::parse_root(r)?;
        } else if let Some(c) = line.strip_prefix("cred ") {
            creds.push(credentials_from_json(&serde_json::from_str(c)?)?);
        } else if line == "ready" {
            break;
        }
    }
    let n = creds.len();
    let rt = args.rt;
    let dir = std::env::temp_dir().join(format!("amarula-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = match args.store {
        StoreKind::Sqlite => Some(amarula::store::SqliteDatabase::open_with(
            dir.join("accounts.db"),
            amarula::store::SqliteOptions {
                synchronous: amarula::store::Synchronous::Normal,
                ..amarula::store::SqliteOptions::default()
            },
        )?),
        _ => None,
    };
    let postgres_url = match args.store {
        StoreKind::Postgres => Some(
            std::env::var("AMARULA_TEST_POSTGRES")
                .map_err(|_| "--store postgres: set AMARULA_TEST_POSTGRES to the database")?,
        ),
        _ => None,
    };
    let run = async move {
        let db = match (sqlite, postgres_url) {
            (Some(db), _) => Some(Db::Sqlite(db)),
            (None, Some(url)) => match amarula::store::PostgresDatabase::open(&url).await {
                Ok(db) => Some(Db::Postgres(db)),
                Err(e) => {
                    eprintln!("postgres: {e}");
                    return;
                }
            },
            (None, None) => None,
        };
        let base_rss = rss();
        let base_heap = HEAP.load(Ordering::Relaxed);
        let stats = Arc::new(Stats::default());
        let epoch = Instant::now();
        let started = Instant::now();
        let mut clients = Vec::with_capacity(n);
        for (i, c) in creds.into_iter().enumerate() {
            let config = amarula_tests::sim::client::remote_config(&url, root);
            let connected = match &db {
                Some(Db::Sqlite(db)) => match db.account(&phone(i)) {
                    Ok(store) => save_and_connect(rt, config, store, &c).await,
                    Err(e) => Err(e.to_string()),
                },
                Some(Db::Postgres(db)) => {
                    let name = format!("load-{}-{}", std::process::id(), phone(i));
                    match db.account(&name).await {
                        Ok(store) => save_and_connect(rt, config, store, &c).await,
                        Err(e) => Err(e.to_string()),
                    }
                }
                None => connect(rt, config, MemoryStore::with_credentials(c))
                    .await
                    .map_err(|e| e.to_string()),
            };
            match connected {
                Ok((client, events)) => {
                    spawn(
                        rt,
                        Box::pin(handle(client.clone(), events, Arc::clone(&stats), epoch)),
                    );
                    clients.push(client);
                }
                Err(e) => {
                    eprintln!("connect: {e}");
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        while stats.logged_in.load(Ordering::Relaxed) < n as u64 {
            sleep(rt, Duration::from_millis(20)).await;
            if started.elapsed() > Duration::from_secs(600) {
                eprintln!("not every account logged in within 600 s");
                break;
            }
        }
        let login = started.elapsed();
        // Let the prekey uploads and the first keepalives settle.
        sleep(rt, Duration::from_secs(2)).await;
        let rss_logged = rss();
        let heap_logged = HEAP.load(Ordering::Relaxed);

        // Messages: account k sends to account k+1, at `rate` per second across the fleet.
        let every = Duration::from_secs_f64(1.0 / args.rate);
        let total = (args.rate * args.secs as f64) as u64;
        let cpu0 = cpu();
        let phase = Instant::now();
        for k in 0..total {
            let due = every.mul_f64(k as f64);
            let now = phase.elapsed();
            if due > now {
                sleep(rt, due - now).await;
            }
            let (from, to) = (k as usize % n, (k as usize + 1) % n);
            let client = clients[from].clone();
            let stats = Arc::clone(&stats);
            let to = Jid::user(phone(to));
            spawn(
                rt,
                Box::pin(async move {
                    let t0 = epoch.elapsed().as_micros() as u64;
                    match client.send_text(&to, format!("L {t0}")).await {
                        Ok(_) => {
                            let us = epoch.elapsed().as_micros() as u64 - t0;
                            stats
                                .ack_us
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(us);
                        }
                        Err(e) => {
                            eprintln!("send: {e}");
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }),
            );
        }
        let wait = Instant::now();
        while stats.delivered.load(Ordering::Relaxed) + stats.errors.load(Ordering::Relaxed) < total
            && wait.elapsed() < Duration::from_secs(30)
        {
            sleep(rt, Duration::from_millis(20)).await;
        }
        let cpu_used = cpu().saturating_sub(cpu0);
        let delivered = stats.delivered.load(Ordering::Relaxed);
        let pct = |v: &Mutex<Vec<u64>>, p: f64| {
            let mut v = v.lock().unwrap_or_else(PoisonError::into_inner).clone();
            v.sort_unstable();
            if v.is_empty() {
                return f64::NAN;
            }
            let i = ((v.len() as f64 - 1.0) * p).round() as usize;
            v[i] as f64 / 1000.0
        };
        let runtime = if rt == Rt::Tokio { "tokio" } else { "smol" };
        let store = match args.store {
            StoreKind::Sqlite => "one SQLite file",
            StoreKind::Memory => "memory",
            StoreKind::Postgres => "Postgres",
        };
        println!("accounts                {n} ({runtime} driver, {store} store)");
        println!(
            "connect+login           {:.2} s, {:.0} accounts/s",
            login.as_secs_f64(),
            n as f64 / login.as_secs_f64()
        );
        println!(
            "RSS per account         {:.1} KiB (process RSS {:.1} MiB)",
            rss_logged.saturating_sub(base_rss) as f64 / n as f64 / 1024.0,
            rss_logged as f64 / 1048576.0
        );
        println!(
            "heap per account        {:.1} KiB",
            (heap_logged - base_heap) as f64 / n as f64 / 1024.0
        );
        println!(
            "messages                {total} sent at {} /s, {delivered} delivered",
            args.rate
        );
        println!(
            "CPU per message         {:.0} µs (user+system over the message phase, keepalives included)",
            cpu_used.as_micros() as f64 / total.max(1) as f64
        );
        println!(
            "send-to-ack             p50 {:.2} ms, p99 {:.2} ms",
            pct(&stats.ack_us, 0.5),
            pct(&stats.ack_us, 0.99)
        );
        println!(
            "send-to-delivered       p50 {:.2} ms, p99 {:.2} ms",
            pct(&stats.delivered_us, 0.5),
            pct(&stats.delivered_us, 0.99)
        );
        println!(
            "disconnects             {} (connections that ended on their own)",
            stats.disconnects.load(Ordering::Relaxed)
        );
        println!(
            "errors                  {}",
            stats.errors.load(Ordering::Relaxed) + total.saturating_sub(delivered)
        );
        for c in &clients {
            c.stop().await;
        }
    };
    match rt {
        Rt::Tokio => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run),
        Rt::Smol => smol::block_on(run),
    }
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn connect(
    rt: Rt,
    config: ClientConfig,
    store: impl CredentialStore,
) -> Result<(Client, Events), amarula::Error> {
    match rt {
        Rt::Tokio => amarula::tokio::connect(config, store).await,
        Rt::Smol => amarula::smol::connect(config, store).await,
    }
}

/// Stores the account's linked credentials in `store`, then connects with it.
async fn save_and_connect(
    rt: Rt,
    config: ClientConfig,
    store: impl CredentialStore,
    creds: &Credentials,
) -> Result<(Client, Events), String> {
    store.save(creds).await.map_err(|e| format!("store: {e}"))?;
    connect(rt, config, store).await.map_err(|e| e.to_string())
}

/// One account's application: counts the login, times and confirms what it receives.
async fn handle(client: Client, mut events: Events, stats: Arc<Stats>, epoch: Instant) {
    // An account counts once, at its first login (a reconnect logs in again).
    let mut counted = false;
    while let Some(event) = events.recv().await {
        let token = match event {
            ClientEvent::Event(Event::LoggedIn { .. }) => {
                if !counted {
                    counted = true;
                    stats.logged_in.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            ClientEvent::Disconnected { reason, .. } => {
                if !matches!(reason, CloseReason::Local)
                    && stats.disconnects.fetch_add(1, Ordering::Relaxed) < 10
                {
                    eprintln!("disconnected: {reason:?}");
                }
                None
            }
            ClientEvent::Event(Event::Message(m)) => {
                if let Some(t0) = m
                    .text()
                    .and_then(|t| t.strip_prefix("L "))
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    let us = (epoch.elapsed().as_micros() as u64).saturating_sub(t0);
                    stats
                        .delivered_us
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(us);
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                m.ack
            }
            ClientEvent::Event(Event::Undecryptable(_)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
            ClientEvent::Event(Event::Stanza { ack, .. }) => ack,
            ClientEvent::StoreFailed(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => None,
        };
        if let Some(t) = token {
            let _ = client.confirm(t, Confirm::Ack).await;
        }
    }
}
