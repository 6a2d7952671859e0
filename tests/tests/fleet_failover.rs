//! Failover of a fleet of workers on one Postgres database: two worker processes
//! (`fleet_worker`, tokio driver) share `FLEET_ACCOUNTS` accounts (default 50) against the
//! simulator (in this process, on loopback); a peer in this process sends to every account in
//! turn; worker A is killed with SIGKILL while the messages flow.
//!
//! Asserted:
//! - A's accounts resume on worker B within the lease time (plus one renewal period, the
//!   time B's next step comes, and a login);
//! - no message lost: every message the server accepted from the peer is handed to the
//!   application of its account;
//! - none delivered twice: each message is handled once by the applications of both workers
//!   together (`RECV` once). The client hands a message again when its ack may not have reached
//!   the server (A died between handling and the ack leaving); the worker's application skips
//!   it by its own record (`DUP`), as a fleet's application must, and the test counts those;
//! - nothing undecryptable;
//! - no account ever connected twice at once (the simulator's connection events, per device).
//!
//! Needs Postgres: `AMARULA_TEST_POSTGRES` (see the rule in `amarula_tests::pg`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amarula::core::jid::Jid;
use amarula::core::machine::{Config, Confirm, Event};
use amarula::store::{CredentialStore, MemoryStore, PostgresDatabase};
use amarula::{ClientConfig, ClientEvent};
use amarula_tests::pg::TestSchema;
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{ConnKind, SimEvent};
use amarula_tests::sim::{SimConfig, Simulator};
use tokio::sync::watch;
use tokio::time::Instant;

const PEER_PHONE: &str = "15552009999";
const LEASE_MS: u64 = 3000;
/// Time between the peer's sends.
const SEND_EVERY: Duration = Duration::from_millis(20);
/// The bound of each wait.
const WAIT: Duration = Duration::from_secs(90);

fn phone(i: usize) -> String {
    format!("1555200{i:04}")
}

fn account(i: usize) -> String {
    format!("acct{i:03}")
}

/// Everything the test watches: the workers' lines and the simulator's connections.
#[derive(Default)]
struct Seen {
    /// (worker, line) in arrival order.
    lines: Vec<(char, String)>,
    /// Open login connections per device.
    open: HashMap<String, usize>,
    conn_device: HashMap<u64, String>,
    /// Devices that logged in while another connection of theirs was open.
    doubles: Vec<String>,
    /// Users whose prekeys the simulator stored.
    prekeys: HashSet<String>,
}

type Shared = (Arc<Mutex<Seen>>, watch::Sender<u64>);

fn with<T>(s: &Arc<Mutex<Seen>>, f: impl FnOnce(&mut Seen) -> T) -> T {
    f(&mut s.lock().unwrap_or_else(PoisonError::into_inner))
}

/// A worker process, killed when dropped.
struct Worker(Child);

impl Worker {
    fn spawn(name: char, args: &[String], shared: &Shared) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleet_worker"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fleet_worker");
        let stdout = child.stdout.take().expect("piped");
        let (seen, tx) = (Arc::clone(&shared.0), shared.1.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                with(&seen, |s| s.lines.push((name, line)));
                tx.send_modify(|v| *v += 1);
            }
        });
        Self(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `cond` holds, at most [`WAIT`]; panics with `what` otherwise.
async fn until(
    what: &str,
    seen: &Arc<Mutex<Seen>>,
    changes: &mut watch::Receiver<u64>,
    mut cond: impl FnMut(&Seen) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        if with(seen, |s| cond(s)) {
            return;
        }
        tokio::select! {
            r = changes.changed() => r.expect("watchers run"),
            () = tokio::time::sleep_until(deadline) => panic!("no {what} within {WAIT:?}"),
        }
    }
}

/// Accounts with a `<tag> <account>` line from `worker` (any worker when `None`).
fn accounts_with(s: &Seen, worker: Option<char>, tag: &str) -> HashSet<String> {
    s.lines
        .iter()
        .filter(|(w, _)| worker.is_none_or(|x| x == *w))
        .filter_map(|(_, l)| {
            let mut words = l.split(' ');
            (words.next() == Some(tag)).then(|| words.next().unwrap_or_default().to_owned())
        })
        .collect()
}

fn count_tag(s: &Seen, tag: &str) -> usize {
    s.lines
        .iter()
        .filter(|(_, l)| l.split(' ').next() == Some(tag))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_failover() {
    let Some(schema) = TestSchema::new("failover") else {
        return;
    };
    let n: usize = std::env::var("FLEET_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let sim = Simulator::start(SimConfig {
        event_capacity: 1 << 18,
        ..SimConfig::default()
    })
    .await
    .expect("start the simulator");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (tx, mut changes) = watch::channel(0u64);
    let shared: Shared = (Arc::clone(&seen), tx);
    {
        let mut events = sim.subscribe();
        let (seen, tx) = (Arc::clone(&seen), shared.1.clone());
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                with(&seen, |s| track(s, event));
                tx.send_modify(|v| *v += 1);
            }
        });
    }

    // The accounts: linked devices whose credentials wait in Postgres.
    let db = PostgresDatabase::open(&schema.url).await.expect("open");
    for i in 0..n {
        let mut creds = fresh_credentials(u8::try_from(i % 250).unwrap_or(0) + 1);
        creds.device = Some(sim.add_account(&phone(i)).link_device(&creds));
        db.account(&account(i))
            .await
            .expect("account")
            .save(&creds)
            .await
            .expect("save");
    }

    // The peer, in this process.
    let mut creds = fresh_credentials(251);
    creds.device = Some(sim.add_account(PEER_PHONE).link_device(&creds));
    let config = ClientConfig {
        url: sim.url(),
        machine: Config {
            end_to_end: true,
            ..config_for(&sim)
        },
        close_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let (peer, mut peer_events) =
        amarula::tokio::connect(config, MemoryStore::with_credentials(creds))
            .await
            .expect("connect the peer");
    {
        let peer = peer.clone();
        tokio::spawn(async move {
            while let Some(e) = peer_events.recv().await {
                let token = match e {
                    ClientEvent::Event(Event::Message(m)) => m.ack,
                    ClientEvent::Event(Event::Stanza { ack, .. }) => ack,
                    _ => None,
                };
                if let Some(t) = token {
                    let _ = peer.confirm(t, Confirm::Ack).await;
                }
            }
        });
    }

    let root = hex::encode(sim.trust_anchor().root_public);
    let args = |owner: &str, max: usize| {
        vec![
            sim.url(),
            root.clone(),
            schema.url.clone(),
            owner.to_owned(),
            max.to_string(),
            LEASE_MS.to_string(),
        ]
    };
    // A takes half, then B the rest.
    let half = n / 2;
    let a = Worker::spawn('A', &args("worker-a", half), &shared);
    until("A's logins", &seen, &mut changes, |s| {
        accounts_with(s, Some('A'), "LOGGEDIN").len() == half
    })
    .await;
    let _b = Worker::spawn('B', &args("worker-b", n), &shared);
    let phones: HashSet<String> = (0..n).map(phone).collect();
    until("every login and prekey upload", &seen, &mut changes, |s| {
        accounts_with(s, None, "LOGGEDIN").len() == n && phones.is_subset(&s.prekeys)
    })
    .await;
    let on_a = with(&seen, |s| accounts_with(s, Some('A'), "LEASED"));
    assert_eq!(on_a.len(), half, "A runs half");

    // The peer sends to every account in turn.
    let sent: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let send_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop_tx, mut stop) = watch::channel(false);
    let sender = {
        let (peer, sent, errors) = (peer.clone(), Arc::clone(&sent), Arc::clone(&send_errors));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SEND_EVERY);
            for k in 0usize.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let i = k % n;
                let text = format!("F-{k}");
                match peer.send_text(&Jid::user(phone(i)), &text).await {
                    Ok(id) => sent.lock().unwrap_or_else(PoisonError::into_inner).push((
                        id,
                        account(i),
                        text,
                    )),
                    Err(e) => errors
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(format!("{text}: {e}")),
                }
            }
        })
    };
    // Traffic on A's accounts, then A dies.
    until("traffic before the kill", &seen, &mut changes, |s| {
        count_tag(s, "DONE") >= 2 * n
    })
    .await;
    let mut a = a;
    a.0.kill().expect("SIGKILL worker A");
    a.0.wait().expect("reap worker A");
    let killed = Instant::now();
    let dones_at_kill = with(&seen, |s| count_tag(s, "DONE"));
    until("A's accounts on B", &seen, &mut changes, |s| {
        on_a.is_subset(&accounts_with(s, Some('B'), "LOGGEDIN"))
    })
    .await;
    let takeover = killed.elapsed();
    // More traffic after the takeover, then the peer stops.
    until("traffic after the takeover", &seen, &mut changes, |s| {
        count_tag(s, "DONE") >= dones_at_kill + 2 * n
    })
    .await;
    stop_tx.send(true).expect("stop the sender");
    sender.await.expect("sender");
    let sent = sent.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let all_ids: HashSet<String> = sent.iter().map(|(id, _, _)| id.clone()).collect();
    until(
        "every accepted message confirmed",
        &seen,
        &mut changes,
        |s| {
            let done: HashSet<&str> = s
                .lines
                .iter()
                .filter_map(|(_, l)| l.strip_prefix("DONE "))
                .filter_map(|l| l.split(' ').nth(1))
                .collect();
            all_ids.iter().all(|id| done.contains(id.as_str()))
        },
    )
    .await;

    // The checks.
    let s = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let mut failures = Vec::new();
    let bound = Duration::from_millis(LEASE_MS + LEASE_MS / 3) + Duration::from_secs(5);
    if takeover > bound {
        failures.push(format!("takeover took {takeover:?} (bound {bound:?})"));
    }
    let mut received: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut redelivered = 0;
    for (w, line) in &s.lines {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["RECV", acct, id, text] => {
                if received.contains_key(id) {
                    failures.push(format!("{id} handled twice (again on {w})"));
                }
                received.insert(id, (acct, text));
            }
            ["DUP", _, id] => {
                if !received.contains_key(id) {
                    failures.push(format!("{id} skipped on {w} as handled, never handled"));
                }
                redelivered += 1;
            }
            ["UNDECRYPTABLE", acct, id] => failures.push(format!("{acct}: {id} undecryptable")),
            _ => {}
        }
    }
    for (id, acct, text) in &sent {
        match received.get(id.as_str()) {
            None => failures.push(format!("{id} ({text}) to {acct} lost")),
            Some((a, t)) if a != acct || t != text => {
                failures.push(format!("{id}: sent {text} to {acct}, got {t} on {a}"));
            }
            Some(_) => {}
        }
    }
    if !s.doubles.is_empty() {
        failures.push(format!("connected twice at once: {:?}", s.doubles));
    }
    let errors = send_errors.lock().unwrap_or_else(PoisonError::into_inner);
    eprintln!(
        "fleet failover: {n} accounts, {} on A; {} messages sent ({} send errors), takeover \
         {takeover:?} (lease {LEASE_MS} ms), {redelivered} handed again and skipped by \
         the application's record",
        on_a.len(),
        sent.len(),
        errors.len(),
    );
    if !errors.is_empty() {
        failures.push(format!("send errors: {:?}", &errors[..errors.len().min(5)]));
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    drop(s);
    sim.shutdown();
}

/// Connections per device, and prekey uploads.
fn track(s: &mut Seen, event: SimEvent) {
    match event {
        SimEvent::ConnectionOpened {
            conn,
            kind: ConnKind::Login { device },
        } => {
            let device = device.to_string();
            let open = s.open.entry(device.clone()).or_default();
            if *open > 0 {
                s.doubles.push(device.clone());
            }
            *open += 1;
            s.conn_device.insert(conn.0, device);
        }
        SimEvent::ConnectionClosed { conn, .. } => {
            if let Some(device) = s.conn_device.remove(&conn.0) {
                if let Some(open) = s.open.get_mut(&device) {
                    *open = open.saturating_sub(1);
                }
            }
        }
        SimEvent::StanzaReceived {
            device: Some(device),
            node,
            ..
        } if node.tag == "iq"
            && node.attr_str("xmlns") == Some("encrypt")
            && node.attr_str("type") == Some("set")
            && node.child("list").is_some() =>
        {
            s.prekeys.insert(device.user_part().to_owned());
        }
        _ => {}
    }
}
