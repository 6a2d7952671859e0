//! Crash test of the durable client: a child process (`crash_client`) runs a client with an
//! SQLite store against the simulator, sending to and receiving from a second account, and is
//! killed with SIGKILL at seeded random points; after each restart it logs in from its store.
//!
//! Asserted, for any interleaving of the kills with the traffic:
//! - every start logs in without pairing;
//! - every message sent before a kill is either acknowledged by the server or sent again with
//!   the same id after the restart (nothing is left unacknowledged in the store at the end, and
//!   every message the server routed reached the peer once);
//! - every message received is handed to the application exactly once (its log records each
//!   id once, and none of the peer's messages is missing);
//! - no message fails to decrypt, on either side, and every message the peer got decrypted to
//!   the text the client logged.
//!
//! Settings (environment): `CRASH_KILLS` (default 100), `CRASH_MAX_SECS` (the time bound of
//! the kill phase, default 120), `CRASH_SEED` (the seed of the kill delays, a u64; default from
//! the clock, printed).
//!
//! The simulator, as a real server, keeps every message it hands to A until A acks it, and
//! hands the unacked ones to A's next login again (counted in the summary as server
//! redeliveries): a message lost with a killed process is the client's doing only if the
//! client acked it. [`Observer`] records what the simulator routed, and nothing more.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amarula::core::binary::Node;
use amarula::core::jid::Jid;
use amarula::core::machine::{Config, Confirm, Event, IqRequest, IqResult};
use amarula::store::{CredentialStore, MemoryStore, SqliteStore};
use amarula::{Client, ClientConfig, ClientEvent, Events};
use amarula_tests::crash::{LogLine, Observer, parse_log, read_log};
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{SimConfig, Simulator};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The account of the client that is killed.
const A_PHONE: &str = "15550007001";
/// The peer's account, whose client runs in this process and is never killed.
const B_PHONE: &str = "15550007002";
/// Time between the killed client's sends.
const A_INTERVAL_MS: u64 = 50;
/// Time between the peer's sends.
const B_INTERVAL: Duration = Duration::from_millis(30);
/// The bound of each wait for something to happen.
const WAIT: Duration = Duration::from_secs(30);

/// What the environment asks for.
struct Settings {
    kills: u32,
    budget: Duration,
    seed: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|e| panic!("{name}={v}: not a number ({e})")),
    )
}

fn settings() -> Settings {
    let clock_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Settings {
        kills: env_u64("CRASH_KILLS").map_or(100, |k| u32::try_from(k).unwrap_or(u32::MAX)),
        budget: Duration::from_secs(env_u64("CRASH_MAX_SECS").unwrap_or(120)),
        seed: env_u64("CRASH_SEED").unwrap_or(clock_seed),
    }
}

/// Paths and arguments of the client process.
struct Setup {
    url: String,
    root_hex: String,
    db: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
    peer: Jid,
}

/// One life of the client process. Killed when dropped.
struct ChildRun {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines of its stdout (the log lines it wrote), `None` at the end.
    lines: mpsc::UnboundedReceiver<Option<String>>,
    /// Its lines so far.
    seen: Vec<LogLine>,
    /// Whether stdout ended.
    ended: bool,
}

impl ChildRun {
    fn spawn(setup: &Setup) -> Self {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&setup.stderr)
            .expect("open the children's stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_client"))
            .arg(&setup.url)
            .arg(&setup.root_hex)
            .arg(&setup.db)
            .arg(setup.peer.to_string())
            .arg(&setup.log)
            .arg(A_INTERVAL_MS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn crash_client");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Some(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(None);
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            ended: false,
        }
    }

    /// SIGKILL (what `Child::kill` sends on unix), then reaps it.
    fn kill(mut self) {
        self.child.kill().expect("kill crash_client");
        self.child.wait().expect("reap crash_client");
    }

    /// Takes in one stdout line; false at the end of stdout.
    fn take(&mut self, line: Option<String>) -> bool {
        match line {
            Some(l) => {
                let parsed = LogLine::parse(&l)
                    .unwrap_or_else(|| panic!("crash_client printed a foreign line: {l}"));
                self.seen.push(parsed);
                true
            }
            None => {
                self.ended = true;
                false
            }
        }
    }

    fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to crash_client");
        stdin.flush().expect("flush crash_client's stdin");
    }
}

impl Drop for ChildRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the peer (account B) did.
#[derive(Debug, Default)]
struct PeerState {
    logged_in: bool,
    /// (id, text) of the messages it sent that the server accepted.
    sent: Vec<(String, String)>,
    /// Sends that failed.
    send_errors: Vec<String>,
    /// (id, text) of the messages received from A, in order.
    received: Vec<(String, String)>,
    /// Ids of messages that did not decrypt.
    undecryptable: Vec<String>,
}

/// The peer's client and what it records.
struct Peer {
    client: Client,
    state: Arc<Mutex<PeerState>>,
    changes: watch::Receiver<u64>,
}

impl Peer {
    fn start(client: Client, events: Events) -> Self {
        let state = Arc::new(Mutex::new(PeerState::default()));
        let (tx, changes) = watch::channel(0u64);
        tokio::spawn(peer_events(client.clone(), events, Arc::clone(&state), tx));
        Self {
            client,
            state,
            changes,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut PeerState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Records and confirms what the peer receives.
async fn peer_events(
    client: Client,
    mut events: Events,
    state: Arc<Mutex<PeerState>>,
    changes: watch::Sender<u64>,
) {
    let a_user = Jid::user(A_PHONE);
    while let Some(event) = events.recv().await {
        let token = match event {
            ClientEvent::Event(Event::LoggedIn { .. }) => {
                state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .logged_in = true;
                None
            }
            ClientEvent::Event(Event::Message(m)) => {
                if m.sender.user_part() == a_user.user_part() {
                    let text = m.text().unwrap_or_default().to_owned();
                    state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .received
                        .push((m.id.to_string(), text));
                }
                m.ack
            }
            ClientEvent::Event(Event::Undecryptable(u)) => {
                state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .undecryptable
                    .push(u.id.clone());
                None
            }
            ClientEvent::Event(Event::Stanza { ack, .. }) => ack,
            _ => None,
        };
        if let Some(token) = token {
            // A failure here means the stanza comes again; nothing to record.
            let _ = client.confirm(token, Confirm::Ack).await;
        }
        changes.send_modify(|v| *v += 1);
    }
}

/// The peer's sends: `B-<n>` to A every [`B_INTERVAL`] until `stop`.
async fn peer_sends(
    client: Client,
    state: Arc<Mutex<PeerState>>,
    mut stop: watch::Receiver<bool>,
    first: u64,
) {
    let to = Jid::user(A_PHONE);
    let mut tick = tokio::time::interval(B_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in first.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let text = format!("B-{n}");
        let result = client.send_text(&to, &text).await;
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(id) => st.sent.push((id, text)),
            Err(e) => st.send_errors.push(format!("{text}: {e}")),
        }
    }
}

/// Wakes on what the observer, the peer or the child report, until `cond` holds.
struct Waiter {
    observer: watch::Receiver<u64>,
    peer: watch::Receiver<u64>,
}

impl Waiter {
    /// Waits until `cond` (given the lines of `child`, if any) holds; panics after [`WAIT`].
    async fn until(
        &mut self,
        what: &str,
        child: Option<&mut ChildRun>,
        cond: impl FnMut(&[LogLine]) -> bool,
    ) {
        if !self.wait(what, child, cond).await {
            panic!("no {what} within {WAIT:?}");
        }
    }

    /// Waits until `cond` (given the lines of `child`, if any) holds, at most [`WAIT`]; false
    /// when it did not. Panics when the child exits first.
    async fn wait(
        &mut self,
        what: &str,
        mut child: Option<&mut ChildRun>,
        mut cond: impl FnMut(&[LogLine]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + WAIT;
        enum Wake {
            Line(Option<String>),
            Changed,
            Timeout,
        }
        loop {
            let lines = child.as_deref().map_or(&[][..], |c| &c.seen);
            if cond(lines) {
                return true;
            }
            assert!(
                !child.as_deref().is_some_and(|c| c.ended),
                "crash_client exited while waiting for {what}; its lines: {lines:?}"
            );
            let next_line = async {
                match child.as_deref_mut() {
                    Some(c) => c.lines.recv().await.flatten(),
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                line = next_line => Wake::Line(line),
                r = self.observer.changed() => {
                    r.expect("the observer runs");
                    Wake::Changed
                }
                r = self.peer.changed() => {
                    r.expect("the peer runs");
                    Wake::Changed
                }
                () = tokio::time::sleep_until(deadline) => Wake::Timeout,
            };
            match wake {
                Wake::Line(line) => {
                    if let Some(c) = child.as_deref_mut() {
                        c.take(line);
                    }
                }
                Wake::Changed => {}
                Wake::Timeout => {
                    let lines = child.as_deref().map_or(&[][..], |c| &c.seen);
                    eprintln!("no {what} within {WAIT:?}; the child's lines: {lines:?}");
                    return false;
                }
            }
        }
    }
}

/// A scratch folder, removed unless the test failed (then its path is printed).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("amarula-crash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Everything the checks look at.
struct Outcome {
    kills: u32,
    /// Whether everything settled in the last life within [`WAIT`].
    settled: bool,
    elapsed: Duration,
    /// The whole log, by process life.
    runs: Vec<Vec<LogLine>>,
    unparsed: Vec<String>,
    peer: PeerState,
    routed_from_a: Vec<String>,
    routed_to_a: Vec<String>,
    refused_logins: u32,
    redelivered: u64,
    /// Sent messages the store still holds as unacknowledged at the end.
    unacked: Vec<String>,
    /// Ids in the store's sent-message cache at the end.
    sent_cache: HashSet<String>,
    /// Incoming messages the store still holds as unconfirmed at the end.
    pending: Vec<String>,
}

fn ids_of<'a>(
    lines: impl IntoIterator<Item = &'a LogLine>,
    f: fn(&LogLine) -> Option<&str>,
) -> Vec<String> {
    lines.into_iter().filter_map(f).map(str::to_owned).collect()
}

fn recv_id(l: &LogLine) -> Option<&str> {
    match l {
        LogLine::Recv { id, .. } => Some(id),
        _ => None,
    }
}

/// Lines of every life that name `id`, with the life's number, for failure reports.
fn excerpt(runs: &[Vec<LogLine>], id: &str) -> String {
    let mut out = String::new();
    for (n, run) in runs.iter().enumerate() {
        for line in run {
            let text = line.to_string();
            if text.split(' ').any(|w| w == id) {
                out.push_str(&format!("    life {n}: {text}\n"));
            }
        }
    }
    out
}

/// Checks every invariant; returns the failures (empty when all hold) and prints a summary.
fn check(o: &Outcome) -> Vec<String> {
    let mut failures = Vec::new();
    let all: Vec<&LogLine> = o.runs.iter().flatten().collect();

    if !o.settled {
        failures.push(format!(
            "the last life did not settle within {WAIT:?} (see the failures below)"
        ));
    }
    // The log itself.
    if !o.unparsed.is_empty() {
        failures.push(format!("unparsable log lines: {:?}", o.unparsed));
    }
    // A process killed before it wrote its first line leaves no trace (and did nothing).
    if o.runs.len() > o.kills as usize + 1 || o.runs.is_empty() {
        failures.push(format!(
            "{} process lives logged, {} started",
            o.runs.len(),
            o.kills + 1
        ));
    }

    // Every start logs in without pairing.
    for (n, run) in o.runs.iter().enumerate() {
        if run.contains(&LogLine::Pairing) {
            failures.push(format!("life {n} was asked to pair: {run:?}"));
        }
    }
    if !o
        .runs
        .last()
        .is_some_and(|r| r.contains(&LogLine::LoggedIn))
    {
        failures.push("the last life did not log in".to_owned());
    }
    if o.refused_logins > 0 {
        failures.push(format!("{} logins refused by the server", o.refused_logins));
    }
    let logged_in = o
        .runs
        .iter()
        .filter(|r| r.contains(&LogLine::LoggedIn))
        .count();

    // Received: each id once, none of the peer's missing, each with the peer's text.
    let mut recv_count: HashMap<&str, usize> = HashMap::new();
    let mut recv_text: HashMap<&str, &str> = HashMap::new();
    for l in &all {
        if let LogLine::Recv { id, text } = l {
            *recv_count.entry(id).or_default() += 1;
            recv_text.insert(id, text);
        }
    }
    for (id, n) in &recv_count {
        if *n > 1 {
            failures.push(format!(
                "message {id} handed to the application {n} times:\n{}",
                excerpt(&o.runs, id)
            ));
        }
    }
    let routed_to_a: HashSet<&str> = o.routed_to_a.iter().map(String::as_str).collect();
    for id in recv_count.keys() {
        if !routed_to_a.contains(id) {
            failures.push(format!("received {id}, which the server never routed to A"));
        }
    }
    for (id, text) in &o.peer.sent {
        match recv_text.get(id.as_str()) {
            None => failures.push(format!(
                "the peer's message {id} ({text}) never reached the application:\n{}",
                excerpt(&o.runs, id)
            )),
            Some(got) if got != text => failures.push(format!(
                "the peer's message {id} was {text}, the application got {got}"
            )),
            Some(_) => {}
        }
    }

    // Nothing failed to decrypt.
    for l in &all {
        if let LogLine::Undecryptable { id, error } = l {
            failures.push(format!(
                "A could not decrypt {id} ({error}):\n{}",
                excerpt(&o.runs, id)
            ));
        }
    }
    for id in &o.peer.undecryptable {
        failures.push(format!(
            "the peer could not decrypt {id}:\n{}",
            excerpt(&o.runs, id)
        ));
    }

    // Sent: acknowledged or sent again, each reaching the peer once with its text.
    let sent_texts: HashSet<&str> = all
        .iter()
        .filter_map(|l| match l {
            LogLine::Send { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let mut acked_text: HashMap<&str, Option<&str>> = HashMap::new();
    let mut resend_acks = 0usize;
    for l in &all {
        if let LogLine::Acked { id, text } = l {
            if text.is_none() {
                resend_acks += 1;
            }
            let entry = acked_text.entry(id).or_default();
            if entry.is_none() {
                *entry = text.as_deref();
            }
        }
    }
    let routed_from_a: HashSet<&str> = o.routed_from_a.iter().map(String::as_str).collect();
    let mut routings: HashMap<&str, usize> = HashMap::new();
    for id in &o.routed_from_a {
        *routings.entry(id).or_default() += 1;
    }
    for id in acked_text.keys() {
        if !routed_from_a.contains(id) {
            failures.push(format!(
                "{id} logged as acked but never routed by the server"
            ));
        }
    }
    for l in &all {
        if let LogLine::Outbox { ids } = l {
            for id in ids {
                if !routed_from_a.contains(id.as_str()) {
                    failures.push(format!(
                        "{id} was in the outbox but never reached the server:\n{}",
                        excerpt(&o.runs, id)
                    ));
                }
            }
        }
    }
    for id in &o.unacked {
        failures.push(format!(
            "{id} is still unacknowledged in the store at the end:\n{}",
            excerpt(&o.runs, id)
        ));
    }
    let mut got_by_peer: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut ids_by_text: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (id, text) in &o.peer.received {
        got_by_peer.entry(id).or_default().push(text);
        ids_by_text.entry(text).or_default().insert(id);
    }
    for (id, texts) in &got_by_peer {
        if texts.len() > 1 {
            failures.push(format!(
                "the peer was handed {id} {} times:\n{}",
                texts.len(),
                excerpt(&o.runs, id)
            ));
        }
        let text = texts[0];
        if !sent_texts.contains(text) {
            failures.push(format!("the peer got {id} as {text}, which A never sent"));
        }
        if let Some(Some(logged)) = acked_text.get(id) {
            if *logged != text {
                failures.push(format!("{id}: A sent {logged}, the peer got {text}"));
            }
        }
    }
    for (text, ids) in &ids_by_text {
        if ids.len() > 1 {
            failures.push(format!(
                "{text} reached the peer under several ids: {ids:?}"
            ));
        }
    }
    for id in &routed_from_a {
        if !got_by_peer.contains_key(id) {
            failures.push(format!(
                "{id} was routed from A but never reached the peer:\n{}",
                excerpt(&o.runs, id)
            ));
        }
    }
    // The cache keeps 1024 entries: below that, everything the server got must be in it.
    if o.sent_cache.len() < 1000 {
        for id in &routed_from_a {
            if !o.sent_cache.contains(*id) {
                failures.push(format!(
                    "{id} was routed from A but is not in A's sent cache"
                ));
            }
        }
    }
    // Routed, never logged as acked, not unacked in the store: the server's ack reached the
    // library, and the process was killed before `send_text` returned.
    let acked_unseen = routed_from_a
        .iter()
        .filter(|id| !acked_text.contains_key(*id))
        .count();

    for key in &o.pending {
        failures.push(format!(
            "{key} is still pending (unconfirmed) in the store at the end"
        ));
    }

    let count = |f: fn(&LogLine) -> bool| all.iter().filter(|l| f(l)).count();
    let dups = count(|l| matches!(l, LogLine::Dup { .. }));
    println!("--- crash test summary ---");
    println!(
        "kills: {}, lives logged: {} ({logged_in} logged in), kill phase: {:.1} s",
        o.kills,
        o.runs.len(),
        o.elapsed.as_secs_f64()
    );
    println!(
        "A -> peer: {} SEND, {} acked to the app ({} of them resends acked after a restart), \
         {} distinct ids routed, {} resent (routed more than once), {} acked while the app was \
         killed, {} received by the peer, {} SENDERR",
        sent_texts.len(),
        acked_text.len(),
        resend_acks,
        routed_from_a.len(),
        routings.values().filter(|n| **n > 1).count(),
        acked_unseen,
        got_by_peer.len(),
        count(|l| matches!(l, LogLine::SendErr { .. })),
    );
    println!(
        "peer -> A: {} sent, {} routed, {} RECV, {} library redeliveries (DUP), {} server \
         redeliveries at login, {} peer send errors",
        o.peer.sent.len(),
        o.routed_to_a.len(),
        recv_count.len(),
        dups,
        o.redelivered,
        o.peer.send_errors.len(),
    );
    println!(
        "other: {} CONFIRMERR, {} DISCONNECTED, {} STOREFAILED",
        count(|l| matches!(l, LogLine::ConfirmErr { .. })),
        count(|l| matches!(l, LogLine::Disconnected { .. })),
        count(|l| matches!(l, LogLine::StoreFailed { .. })),
    );
    failures
}

/// Splits the log into process lives (each starts with `START`).
fn lives(lines: Vec<LogLine>) -> Vec<Vec<LogLine>> {
    let mut runs: Vec<Vec<LogLine>> = Vec::new();
    for line in lines {
        if matches!(line, LogLine::Start { .. }) || runs.is_empty() {
            runs.push(Vec::new());
        }
        runs.last_mut().expect("one life at least").push(line);
    }
    runs
}

async fn crash_run(settings: &Settings, dir: &Path) -> Outcome {
    let sim = Simulator::start(SimConfig {
        event_capacity: 1 << 16,
        ..SimConfig::pn_legacy()
    })
    .await
    .expect("start the simulator");
    let observer = Observer::start(&sim, A_PHONE);

    // A: a linked device whose credentials wait in a fresh SQLite file.
    let setup = Setup {
        url: sim.url(),
        root_hex: hex::encode(sim.trust_anchor().root_public),
        db: dir.join("a.db"),
        log: dir.join("a.log"),
        stderr: dir.join("a.stderr"),
        peer: Jid::user(B_PHONE),
    };
    let mut creds = fresh_credentials(71);
    creds.device = Some(sim.add_account(A_PHONE).link_device(&creds));
    SqliteStore::open(&setup.db)
        .expect("open A's store")
        .save(&creds)
        .await
        .expect("save A's credentials");

    // B: the peer, in this process.
    let mut creds = fresh_credentials(72);
    creds.device = Some(sim.add_account(B_PHONE).link_device(&creds));
    let config = ClientConfig {
        url: sim.url(),
        machine: Config {
            end_to_end: true,
            ..config_for(&sim)
        },
        close_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let (client, events) = amarula::tokio::connect(config, MemoryStore::with_credentials(creds))
        .await
        .expect("connect the peer");
    let peer = Peer::start(client, events);
    let mut waiter = Waiter {
        observer: observer.changes(),
        peer: peer.changes.clone(),
    };
    waiter
        .until("peer login and prekeys", None, |_| {
            peer.with(|p| p.logged_in) && observer.with(|o| o.prekey_uploads.contains(B_PHONE))
        })
        .await;
    // A stanza after the upload, answered: the simulator has stored the peer's prekeys.
    let ping = IqRequest::iq("w:p", "get", Jid::server(), vec![Node::new("ping")]);
    let pong = tokio::time::timeout(WAIT, peer.client.query_iq(ping))
        .await
        .expect("the peer's ping returns")
        .expect("the peer's ping");
    assert!(matches!(pong, IqResult::Ok(_)), "{pong:?}");

    // The first life: log in, upload prekeys, and receive a first message.
    let mut run = ChildRun::spawn(&setup);
    waiter
        .until("A's first login", Some(&mut run), |l| {
            l.contains(&LogLine::LoggedIn)
        })
        .await;
    waiter
        .until("A's prekeys", Some(&mut run), |_| {
            observer.with(|o| o.prekeys_stored.contains(A_PHONE))
        })
        .await;
    let first = tokio::time::timeout(WAIT, peer.client.send_text(&Jid::user(A_PHONE), "B-0"))
        .await
        .expect("the peer's first send returns")
        .expect("the peer's first message");
    peer.with(|p| p.sent.push((first.clone(), "B-0".to_owned())));
    waiter
        .until("the first message at A", Some(&mut run), |l| {
            ids_of(l, recv_id).contains(&first)
        })
        .await;

    // The kill phase, with the peer sending all along.
    let (stop_tx, stop) = watch::channel(false);
    let sender = tokio::spawn(peer_sends(
        peer.client.clone(),
        Arc::clone(&peer.state),
        stop,
        1,
    ));
    let mut rng = ChaCha20Rng::seed_from_u64(settings.seed);
    let started = Instant::now();
    let mut base = None;
    for k in 0..settings.kills {
        assert!(
            started.elapsed() < settings.budget,
            "only {k} kills within {:?}",
            settings.budget
        );
        let delay = Duration::from_millis(50 + u64::from(rng.next_u32() % 351));
        // The deliberate random delay: where in its work the process dies.
        tokio::time::sleep(delay).await;
        run.kill();
        if k + 1 == settings.kills {
            // Every earlier life is dead: the log is final up to here.
            base = Some(read_log(&setup.log).expect("read A's log"));
        }
        run = ChildRun::spawn(&setup);
    }
    let elapsed = started.elapsed();
    // No kill: the first life is the last, and nothing came before it.
    let (base, _) = base.unwrap_or_default();
    let base_recv: HashSet<String> = ids_of(&base, recv_id).into_iter().collect();

    // The last life: log in, let the peer stop, then settle everything.
    waiter
        .until("the last login", Some(&mut run), |l| {
            l.contains(&LogLine::LoggedIn)
        })
        .await;
    let _ = stop_tx.send(true);
    tokio::time::timeout(WAIT, sender)
        .await
        .expect("the peer's sender stops")
        .expect("the peer's sender does not panic");
    let peer_sent: Vec<String> = peer.with(|p| p.sent.iter().map(|(id, _)| id.clone()).collect());
    waiter
        .until("the routing of the peer's messages", None, |_| {
            observer.with(|o| {
                let routed: HashSet<&String> = o.routed_to_watched.iter().collect();
                peer_sent.iter().all(|id| routed.contains(id))
            })
        })
        .await;
    run.tell("quiet");
    waiter
        .until("QUIET", Some(&mut run), |l| l.contains(&LogLine::Quiet))
        .await;
    // Not met in time: the checks below say what is missing.
    let settled = waiter
        .wait("everything delivered", Some(&mut run), |l| {
            let recv: HashSet<String> = ids_of(l, recv_id).into_iter().collect();
            let all_received = peer_sent
                .iter()
                .all(|id| base_recv.contains(id) || recv.contains(id));
            // The outbox of this life is settled: each id acked, refused or failed.
            let settled: HashSet<&str> = l
                .iter()
                .filter_map(|x| match x {
                    LogLine::Acked { id, .. }
                    | LogLine::Nacked { id, .. }
                    | LogLine::SendFailed { id, .. } => Some(id.as_str()),
                    _ => None,
                })
                .collect();
            let outbox_done = l.iter().all(|x| match x {
                LogLine::Outbox { ids } => ids.iter().all(|id| settled.contains(id.as_str())),
                _ => true,
            });
            let got: HashSet<String> =
                peer.with(|p| p.received.iter().map(|(id, _)| id.clone()).collect());
            let peer_has_all =
                observer.with(|o| o.routed_from_watched.iter().all(|id| got.contains(id)));
            all_received && outbox_done && peer_has_all
        })
        .await;

    // Stop it the clean way: the end of stdin.
    drop(run.stdin.take());
    waiter
        .until("STOPPED", Some(&mut run), |l| l.contains(&LogLine::Stopped))
        .await;
    let status = run.child.wait().expect("reap the last life");
    assert!(status.success(), "the last life exited with {status}");

    // What the store holds now that no process has it open.
    let store = SqliteStore::open(&setup.db).expect("reopen A's store");
    let unacked = store.load_unacked_sent().await.expect("load unacked");
    let sent_cache = store.load_sent().await.expect("load sent");
    let pending = store.load_pending().await.expect("load pending");
    drop(store);
    tokio::time::timeout(WAIT, peer.client.stop())
        .await
        .expect("the peer stops");

    let text = std::fs::read_to_string(&setup.log).expect("read A's log");
    let (lines, unparsed) = parse_log(&text);
    // The last life's stdout is its share of the file.
    let tail: Vec<LogLine> = lines[base.len().min(lines.len())..].to_vec();
    assert_eq!(tail, run.seen, "the last life's stdout and its log differ");
    let peer = std::mem::take(&mut *peer.state.lock().unwrap_or_else(PoisonError::into_inner));
    let outcome = observer.with(|o| Outcome {
        kills: settings.kills,
        settled,
        elapsed,
        runs: lives(lines),
        unparsed,
        peer,
        routed_from_a: o.routed_from_watched.clone(),
        routed_to_a: o.routed_to_watched.clone(),
        refused_logins: o.refused_logins,
        redelivered: o.redelivered,
        unacked: unacked.into_iter().map(|m| m.id).collect(),
        sent_cache: sent_cache.into_iter().map(|m| m.id).collect(),
        pending: pending.into_iter().map(|p| p.id.to_string()).collect(),
    });
    sim.shutdown();
    outcome
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    let settings = settings();
    println!(
        "crash test: seed {} (CRASH_SEED), {} kills (CRASH_KILLS), bound {:?} (CRASH_MAX_SECS)",
        settings.seed, settings.kills, settings.budget
    );
    let scratch = Scratch::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = rt.block_on(crash_run(&settings, &scratch.0));
    let failures = check(&outcome);
    let stderr = std::fs::read_to_string(scratch.0.join("a.stderr")).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "seed {}: {} invariant failures:\n{}\ncrash_client stderr:\n{stderr}",
        settings.seed,
        failures.len(),
        failures.join("\n")
    );
}
