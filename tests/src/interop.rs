//! Support of the third-party client tests (`tests/tests/baileys_interop.rs` with Baileys 6 in
//! `tests/interop/`, `tests/tests/baileys7_lid.rs` with Baileys 7 in `tests/interop7/`): the
//! Baileys process driven by its script over JSON lines, the simulator's events kept for
//! bounded waits, and the logs a failed step prints.
//!
//! Every wait is bounded by [`WAIT`]; a failed one panics with Baileys' events, the end of its
//! log and the simulator's last events.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use serde_json::{Value, json};

use crate::sim::{SimEvent, Simulator};

/// The bound of every wait.
pub const WAIT: Duration = Duration::from_secs(30);
/// The Baileys release under test (also pinned in tests/interop/package.json).
pub const BAILEYS_VERSION: &str = "6.7.24";
/// The Baileys 7 release under test (also pinned in tests/interop7/package.json).
pub const BAILEYS7_VERSION: &str = "7.0.0-rc14";
/// Lines of Baileys' log (and of simulator events) kept to show when a step fails.
const LOG_TAIL: usize = 300;

/// One npm project driving a Baileys release: where it is, its script, and the packages it
/// must have installed.
#[derive(Debug, Clone, Copy)]
pub struct Project {
    /// The folder under `tests/`.
    pub dir: &'static str,
    /// The driver script in it.
    pub script: &'static str,
    /// The pinned packages (`node_modules/<name>`, version) checked before a run.
    pub pinned: &'static [(&'static str, &'static str)],
}

/// Baileys 6.7.24 (`@whiskeysockets/baileys`) in `tests/interop/`.
pub const BAILEYS6: Project = Project {
    dir: "interop",
    script: "baileys_client.mjs",
    pinned: &[
        ("@whiskeysockets/baileys", BAILEYS_VERSION),
        ("libsignal", "6.0.0"),
    ],
};

/// Baileys 7 (`baileys`) in `tests/interop7/`.
pub const BAILEYS7: Project = Project {
    dir: "interop7",
    script: "baileys7_client.mjs",
    pinned: &[
        ("baileys", BAILEYS7_VERSION),
        ("libsignal", "6.0.0"),
        ("whatsapp-rust-bridge", "0.5.4"),
    ],
};

impl Project {
    /// The npm project's folder.
    pub fn path(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(self.dir)
    }

    /// Fails (never skips) when the pinned packages are not installed, saying how to install
    /// them.
    ///
    /// # Panics
    /// When `node_modules` lacks a pinned package or holds another version.
    pub fn check_installed(&self) {
        let dir = self.path();
        let how = format!(
            "Baileys is not installed: run `npm ci --prefix {}` (node 20+ and npm needed; \
             .ci/run does it before the tests)",
            dir.display()
        );
        for (name, version) in self.pinned {
            let manifest = dir.join("node_modules").join(name).join("package.json");
            let text = std::fs::read_to_string(&manifest).unwrap_or_else(|_| panic!("{how}"));
            let v: Value = serde_json::from_str(&text).expect("package.json");
            assert_eq!(
                v["version"], *version,
                "installed {name} is not the pinned one. {how}"
            );
        }
    }
}

/// `tests/interop/`: the npm project, the script and the loopback guard.
pub fn interop_dir() -> PathBuf {
    BAILEYS6.path()
}

/// Fails (never skips) when Baileys 6 is not installed, saying how to install it.
///
/// # Panics
/// When `node_modules` lacks the pinned Baileys or libsignal.
pub fn check_installed() {
    BAILEYS6.check_installed();
}

/// The Baileys process: commands in on stdin, JSON events out on stdout, its log on stderr.
/// Dropping it kills the process and removes its auth state.
pub struct Baileys {
    child: Child,
    stdin: ChildStdin,
    events: smol::channel::Receiver<Value>,
    /// Every event so far, in order.
    pub seen: Vec<Value>,
    /// Its log and the simulator's events.
    tails: Tails,
    auth_dir: PathBuf,
    next_req: u64,
}

impl Baileys {
    /// Starts `node --require loopback_only.cjs baileys_client.mjs` (Baileys 6) against the
    /// simulator at `url`, with a fresh auth state in a temporary folder; its log goes to
    /// `tails`.
    ///
    /// # Panics
    /// When `node` cannot be started.
    pub fn spawn(url: &str, tails: Tails) -> Self {
        Self::spawn_project(&BAILEYS6, url, &[], tails)
    }

    /// Starts `project`'s script under the loopback guard (`tests/interop/loopback_only.cjs`)
    /// against the simulator at `url`, with a fresh auth state in a temporary folder and the
    /// extra environment `env`; its log goes to `tails`.
    ///
    /// # Panics
    /// When `node` cannot be started.
    pub fn spawn_project(
        project: &Project,
        url: &str,
        env: &[(&str, String)],
        tails: Tails,
    ) -> Self {
        let dir = project.path();
        let auth_dir = std::env::temp_dir().join(format!(
            "amarula-baileys-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&auth_dir).expect("auth dir");
        let mut command = Command::new("node");
        command
            .arg("--require")
            .arg(interop_dir().join("loopback_only.cjs"))
            .arg(dir.join(project.script))
            .current_dir(&dir)
            .env("SIM_URL", url)
            .env("AUTH_DIR", &auth_dir)
            .env("LOG_LEVEL", "debug")
            .env_remove("NODE_OPTIONS");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node` (node 20+ is needed): {e}"));
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, events) = smol::channel::unbounded();
        {
            let log = Arc::clone(&tails.baileys);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let event = serde_json::from_str(&line)
                        .unwrap_or_else(|_| json!({"ev": "stdout", "line": line}));
                    if tx.send_blocking(event).is_err() {
                        break;
                    }
                }
                push_log(&log, "[stdout closed]".to_owned());
            });
        }
        {
            let log = Arc::clone(&tails.baileys);
            // `BAILEYS_LOG=<file>` keeps the whole log too, for reading a passing run.
            let mut whole = std::env::var_os("BAILEYS_LOG").and_then(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .ok()
            });
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(f) = whole.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    push_log(&log, line);
                }
            });
        }
        Self {
            child,
            stdin,
            events,
            seen: Vec::new(),
            tails,
            auth_dir,
            next_req: 0,
        }
    }

    /// Writes a command line (see the script's header).
    pub fn command(&mut self, cmd: &Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        if let Err(e) = self.stdin.write_all(line.as_bytes()) {
            self.fail(&format!("command {cmd} not written: {e}"));
        }
    }

    /// Panics with what Baileys said (its events and the end of its log) and the last events
    /// of the simulator.
    pub fn fail(&self, what: &str) -> ! {
        let events: Vec<String> = self.seen.iter().map(Value::to_string).collect();
        panic!(
            "{what}\n--- Baileys' events:\n{}\n{}",
            events.join("\n"),
            self.tails.dump()
        );
    }

    /// The next event within `left`, recorded; `None` on time out.
    async fn next(&mut self, left: Duration) -> Option<Value> {
        let got = smol::future::or(async { self.events.recv().await.ok().map(Some) }, async {
            smol::Timer::after(left).await;
            Some(None)
        })
        .await;
        match got {
            Some(Some(e)) => {
                let fatal = e["ev"] == "fatal";
                self.seen.push(e.clone());
                if fatal {
                    self.fail("Baileys reported an uncaught error");
                }
                Some(e)
            }
            Some(None) => None,
            None => self.fail("the Baileys process ended"),
        }
    }

    /// Like [`wait`](Self::wait), but first looks at the events already seen from index
    /// `from` on.
    pub async fn wait_from<T>(
        &mut self,
        what: &str,
        from: usize,
        mut pred: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        if let Some(t) = self.seen.iter().skip(from).find_map(&mut pred) {
            return t;
        }
        self.wait(what, pred).await
    }

    /// Waits (bounded) for the next event `pred` maps to `Some`.
    pub async fn wait<T>(&mut self, what: &str, mut pred: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(e) => {
                    if let Some(t) = pred(&e) {
                        return t;
                    }
                }
                None => self.fail(&format!("Baileys: no {what} within {WAIT:?}")),
            }
        }
    }

    /// Lets events in for `d` and returns them.
    pub async fn settle(&mut self, d: Duration) -> Vec<Value> {
        let until = Instant::now() + d;
        let mut got = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            match self.next(left).await {
                Some(e) => got.push(e),
                None => return got,
            }
        }
    }

    /// Sends a text and returns its message id.
    pub async fn send_text(&mut self, to: &Jid, text: &str) -> String {
        self.next_req += 1;
        let req = self.next_req;
        self.command(&json!({"cmd": "send", "req": req, "to": to.to_string(), "text": text}));
        let outcome = self
            .wait(&format!("send result of {text:?}"), |e| {
                (e["req"] == req && (e["ev"] == "sent" || e["ev"] == "failed")).then(|| e.clone())
            })
            .await;
        match outcome["id"].as_str() {
            Some(id) if outcome["ev"] == "sent" => id.to_owned(),
            _ => self.fail(&format!("Baileys could not send {text:?}: {outcome}")),
        }
    }

    /// Waits for a decrypted message with `text`.
    pub async fn receive(&mut self, text: &str) -> Value {
        if let Some(m) = self
            .seen
            .iter()
            .find(|e| e["ev"] == "message" && e["text"] == text)
        {
            return m.clone();
        }
        self.wait(&format!("message {text:?}"), |e| {
            (e["ev"] == "message" && e["text"] == text).then(|| e.clone())
        })
        .await
    }

    /// The messages seen (decrypted or not) with `id`.
    pub fn messages_with_id(&self, id: &str) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|e| e["ev"] == "message" && e["id"] == id)
            .collect()
    }

    /// Has the script try to reach beyond the loopback in five ways and fails the test unless
    /// the preloaded guard refused each. Returns how many refusals the guard reported so far,
    /// for [`check_only_probes_blocked`](Self::check_only_probes_blocked).
    pub async fn probe_loopback_guard(&mut self) -> usize {
        self.command(&json!({"cmd": "probe"}));
        let probe = self
            .wait("probe results", |e| (e["ev"] == "probe").then(|| e.clone()))
            .await;
        let results = probe["results"].as_array().cloned().unwrap_or_default();
        assert_eq!(results.len(), 5, "{probe}");
        for r in &results {
            if r["code"] != "ERR_LOOPBACK_ONLY" {
                self.fail(&format!("reaching out was not refused by the guard: {r}"));
            }
        }
        self.blocked().count()
    }

    /// Fails the test when the guard refused Baileys anything beyond the first `probes`
    /// refusals (those of [`probe_loopback_guard`](Self::probe_loopback_guard)): Baileys
    /// needed nothing outside the loopback.
    pub fn check_only_probes_blocked(&self, probes: usize) {
        let blocked: Vec<&Value> = self.blocked().skip(probes).collect();
        if !blocked.is_empty() {
            self.fail(&format!(
                "Baileys tried to reach outside the loopback: {blocked:?}"
            ));
        }
    }

    /// The guard's refusals, in order.
    fn blocked(&self) -> impl Iterator<Item = &Value> {
        self.seen.iter().filter(|e| e["ev"] == "blocked")
    }
}

/// An amarula device of `phone` (tokio driver, memory store) beside Baileys: its waits take
/// [`WAIT`], and its failure messages end with the Baileys and simulator logs.
pub async fn amarula_device(
    env: &crate::e2e::Env,
    name: &str,
    phone: &str,
    seed: u8,
    tails: &Tails,
) -> crate::e2e::Device {
    let mut d = crate::e2e::Device::start::<crate::runtimes::Tokio>(env, name, phone, seed).await;
    let tails = tails.clone();
    d.diagnostics = Some(crate::e2e::Diagnostics::new(move || tails.dump()));
    d.wait = WAIT;
    d
}

/// The lines of a tail, joined.
fn lines(tail: &Tail) -> String {
    tail.lock()
        .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// Appends a line, forgetting the oldest past [`LOG_TAIL`].
fn push_log(log: &Mutex<VecDeque<String>>, line: String) {
    if let Ok(mut l) = log.lock() {
        if l.len() == LOG_TAIL {
            l.pop_front();
        }
        l.push_back(line);
    }
}

impl Drop for Baileys {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.auth_dir);
    }
}

/// Everything the simulator reports, kept in order, with bounded waits on it.
pub struct SimLog {
    rx: smol::channel::Receiver<SimEvent>,
    /// Every event taken in so far, in order.
    pub seen: Vec<SimEvent>,
    /// The end of it in words (and Baileys' log), for failure reports.
    pub tails: Tails,
}

/// The last lines of a log, shared with the thread or task that writes them.
pub type Tail = Arc<Mutex<VecDeque<String>>>;

/// The logs a failed step shows, whichever side it waited on.
#[derive(Clone, Default)]
pub struct Tails {
    /// Baileys' log (stderr).
    pub baileys: Tail,
    /// The simulator's events.
    pub sim: Tail,
}

impl Tails {
    /// Both, for a failure message.
    pub fn dump(&self) -> String {
        format!(
            "--- the end of Baileys' log:\n{}\n--- the simulator's last events:\n{}",
            lines(&self.baileys),
            lines(&self.sim)
        )
    }
}

/// A simulator event in one line.
fn describe(e: &SimEvent) -> String {
    match e {
        SimEvent::StanzaReceived {
            conn, device, node, ..
        } => {
            let mut text = node.to_string();
            if text.len() > 300 {
                let mut end = 300;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            let who = device
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string);
            format!("{conn} {who} sent {text}")
        }
        other => format!("{other:?}"),
    }
}

impl SimLog {
    /// Subscribes to `sim`, forwarding its events from a task on `rt`.
    pub fn start(sim: &Simulator, rt: &tokio::runtime::Runtime) -> Self {
        let tail = Tail::default();
        let mut sub = sim.subscribe();
        let (tx, rx) = smol::channel::unbounded();
        let lines = Arc::clone(&tail);
        rt.spawn(async move {
            while let Some(e) = sub.next().await {
                push_log(&lines, describe(&e));
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
            tails: Tails {
                baileys: Tail::default(),
                sim: tail,
            },
        }
    }

    /// Takes in what has arrived, without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
    }

    /// Waits (bounded) for an event `pred` maps to `Some`, looking at the events seen since
    /// index `from` first. Returns the value and the index after the event.
    ///
    /// # Panics
    /// When nothing matches within [`WAIT`], with the logs.
    pub async fn wait<T>(
        &mut self,
        what: &str,
        from: usize,
        mut pred: impl FnMut(&SimEvent) -> Option<T>,
    ) -> (T, usize) {
        self.drain();
        if let Some((i, t)) = self
            .seen
            .iter()
            .enumerate()
            .skip(from)
            .find_map(|(i, e)| pred(e).map(|t| (i, t)))
        {
            return (t, i + 1);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = smol::future::or(async { self.rx.recv().await.ok().map(Some) }, async {
                smol::Timer::after(left).await;
                Some(None)
            })
            .await;
            match got {
                Some(Some(e)) => {
                    let t = pred(&e);
                    self.seen.push(e);
                    if let Some(t) = t {
                        return (t, self.seen.len());
                    }
                }
                _ => panic!(
                    "simulator: no {what} within {WAIT:?}\n{}",
                    self.tails.dump()
                ),
            }
        }
    }

    /// The stanzas `device` sent, from index `from` on.
    pub fn sent_by<'a>(&'a self, device: &'a Jid, from: usize) -> impl Iterator<Item = &'a Node> {
        self.seen.iter().skip(from).filter_map(move |e| match e {
            SimEvent::StanzaReceived {
                device: Some(d),
                node,
                ..
            } if d == device => Some(node),
            _ => None,
        })
    }
}
