//! Support of the crash test (`tests/tests/crash.rs` and the `crash_client` binary): the
//! client's append-only log, and an [`Observer`] of the simulator that records what it routed.
//!
//! # The log
//! The `crash_client` process is killed with SIGKILL at random points, so whatever it wants
//! the test to know must be on disk before it goes on: every [`LogLine`] is appended with
//! `O_APPEND` and flushed with `sync_data` ([`AppLog::append`]). The test reads the file back
//! with [`read_log`].
//!
//! # Redelivery
//! A real server keeps a message for a device until the device acks it, and delivers it again
//! on the next login when it did not; the simulator does the same (see [`crate::sim`]). A
//! message written to a process that is killed before it stored the message comes again to
//! the next life, possibly twice over several lives and possibly after the client already
//! stored it: delivery is at least once, and the client must hand each message out once. The
//! [`Observer`] only counts these redeliveries ([`SimEvent::Redelivered`]).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use amarula_core::binary::Node;
use tokio::sync::watch;

use crate::sim::{ConnId, ConnKind, SimEvent, Simulator, Subscription};

/// One line of the crash client's log. Identifiers never contain spaces; free text (message
/// text, errors) comes last on its line, with line breaks replaced by spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    /// `START pid`: a process started.
    Start {
        /// Its process id.
        pid: u32,
    },
    /// `OUTBOX id…`: the sent messages the store holds as never acknowledged by the server, read
    /// before connecting; the library sends them again (same ids) after the login.
    Outbox {
        /// Their ids.
        ids: Vec<String>,
    },
    /// `LOGGEDIN`: the client logged in.
    LoggedIn,
    /// `PAIRING`: the client showed a QR code (it should never have to pair again).
    Pairing,
    /// `RECV id text`: a message handed to the application for the first time, recorded
    /// before it was confirmed.
    Recv {
        /// The message id.
        id: String,
        /// Its text.
        text: String,
    },
    /// `DUP id`: the library handed out a message whose id is already recorded (it came back
    /// from the store after a restart); confirmed without recording it again.
    Dup {
        /// The message id.
        id: String,
    },
    /// `UNDECRYPTABLE id error`: a message that failed to decrypt.
    Undecryptable {
        /// The message id.
        id: String,
        /// Why.
        error: String,
    },
    /// `SEND text`: about to call `send_text` with this text.
    Send {
        /// The text.
        text: String,
    },
    /// `ACKED id [text]`: the server acknowledged a sent message: with the text when
    /// `send_text` returned, without when it was a message sent again after a restart.
    Acked {
        /// The message id.
        id: String,
        /// The text, when this process sent it.
        text: Option<String>,
    },
    /// `SENDERR text error`: `send_text` failed.
    SendErr {
        /// The text.
        text: String,
        /// Why.
        error: String,
    },
    /// `NACKED id result`: the server refused a message sent again after a restart, or its
    /// ack did not come.
    Nacked {
        /// The message id.
        id: String,
        /// The ack result.
        result: String,
    },
    /// `SENDFAILED id error`: a message sent again after a restart could not be relayed.
    SendFailed {
        /// The message id.
        id: String,
        /// Why.
        error: String,
    },
    /// `CONFIRMERR id error`: confirming a received message failed.
    ConfirmErr {
        /// The message id.
        id: String,
        /// Why.
        error: String,
    },
    /// `DISCONNECTED reason`: the connection ended.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// `STOREFAILED error`: the store failed and the client stops.
    StoreFailed {
        /// Why.
        error: String,
    },
    /// `QUIET`: the process stopped sending (asked on its stdin) and its last send returned.
    Quiet,
    /// `STOPPED`: the client stopped (stdin closed).
    Stopped,
}

/// `s` on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start { pid } => write!(f, "START {pid}"),
            Self::Outbox { ids } => {
                f.write_str("OUTBOX")?;
                for id in ids {
                    write!(f, " {id}")?;
                }
                Ok(())
            }
            Self::LoggedIn => f.write_str("LOGGEDIN"),
            Self::Pairing => f.write_str("PAIRING"),
            Self::Recv { id, text } => write!(f, "RECV {id} {}", one_line(text)),
            Self::Dup { id } => write!(f, "DUP {id}"),
            Self::Undecryptable { id, error } => {
                write!(f, "UNDECRYPTABLE {id} {}", one_line(error))
            }
            Self::Send { text } => write!(f, "SEND {}", one_line(text)),
            Self::Acked { id, text: Some(t) } => write!(f, "ACKED {id} {}", one_line(t)),
            Self::Acked { id, text: None } => write!(f, "ACKED {id}"),
            Self::SendErr { text, error } => {
                write!(f, "SENDERR {} {}", one_line(text), one_line(error))
            }
            Self::Nacked { id, result } => write!(f, "NACKED {id} {}", one_line(result)),
            Self::SendFailed { id, error } => write!(f, "SENDFAILED {id} {}", one_line(error)),
            Self::ConfirmErr { id, error } => write!(f, "CONFIRMERR {id} {}", one_line(error)),
            Self::Disconnected { reason } => write!(f, "DISCONNECTED {}", one_line(reason)),
            Self::StoreFailed { error } => write!(f, "STOREFAILED {}", one_line(error)),
            Self::Quiet => f.write_str("QUIET"),
            Self::Stopped => f.write_str("STOPPED"),
        }
    }
}

impl LogLine {
    /// Parses one line as [`Display`](std::fmt::Display) writes it; `None` when it is not one.
    pub fn parse(line: &str) -> Option<Self> {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        // An identifier, then the free text (possibly empty).
        let id_text = || {
            let (id, text) = rest.split_once(' ').unwrap_or((rest, ""));
            (!id.is_empty()).then(|| (id.to_owned(), text.to_owned()))
        };
        let word = || (!rest.is_empty() && !rest.contains(' ')).then(|| rest.to_owned());
        Some(match tag {
            "START" => Self::Start {
                pid: rest.parse().ok()?,
            },
            "OUTBOX" => Self::Outbox {
                ids: rest.split_whitespace().map(str::to_owned).collect(),
            },
            "LOGGEDIN" if rest.is_empty() => Self::LoggedIn,
            "PAIRING" if rest.is_empty() => Self::Pairing,
            "RECV" => {
                let (id, text) = id_text()?;
                Self::Recv { id, text }
            }
            "DUP" => Self::Dup { id: word()? },
            "UNDECRYPTABLE" => {
                let (id, error) = id_text()?;
                Self::Undecryptable { id, error }
            }
            "SEND" => Self::Send {
                text: rest.to_owned(),
            },
            "ACKED" => {
                let (id, text) = id_text()?;
                Self::Acked {
                    id,
                    text: (!text.is_empty()).then_some(text),
                }
            }
            "SENDERR" => {
                let (text, error) = id_text()?;
                Self::SendErr { text, error }
            }
            "NACKED" => {
                let (id, result) = id_text()?;
                Self::Nacked { id, result }
            }
            "SENDFAILED" => {
                let (id, error) = id_text()?;
                Self::SendFailed { id, error }
            }
            "CONFIRMERR" => {
                let (id, error) = id_text()?;
                Self::ConfirmErr { id, error }
            }
            "DISCONNECTED" => Self::Disconnected {
                reason: rest.to_owned(),
            },
            "STOREFAILED" => Self::StoreFailed {
                error: rest.to_owned(),
            },
            "QUIET" if rest.is_empty() => Self::Quiet,
            "STOPPED" if rest.is_empty() => Self::Stopped,
            _ => return None,
        })
    }
}

/// The lines of a log: the parsed ones in order, and any that did not parse (a torn line
/// would show up there).
pub fn parse_log(text: &str) -> (Vec<LogLine>, Vec<String>) {
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for raw in text.lines().filter(|l| !l.is_empty()) {
        match LogLine::parse(raw) {
            Some(l) => lines.push(l),
            None => bad.push(raw.to_owned()),
        }
    }
    (lines, bad)
}

/// Reads and parses the log at `path` (see [`parse_log`]); a missing file is an empty log.
pub fn read_log(path: &Path) -> io::Result<(Vec<LogLine>, Vec<String>)> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_log(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Vec::new(), Vec::new())),
        Err(e) => Err(e),
    }
}

/// An append-only log file: every line is on disk before [`append`](Self::append) returns.
#[derive(Debug)]
pub struct AppLog {
    file: Mutex<File>,
}

impl AppLog {
    /// Opens (or creates) the log at `path` for appending. A last line left without its line
    /// break by a killed process is ended first, so the next line starts on its own.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                // O_APPEND writes at the end whatever the position.
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Appends `line` and waits until it is on disk (`sync_data`).
    pub fn append(&self, line: &LogLine) -> io::Result<()> {
        let text = format!("{line}\n");
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        // One write of the whole line: a kill comes before it or after it.
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

/// What the [`Observer`] has seen so far.
#[derive(Debug, Default)]
pub struct Observed {
    /// Ids of the messages routed from the watched device, in routing order (a message sent
    /// again after a restart appears again).
    pub routed_from_watched: Vec<String>,
    /// Ids of the messages routed to the watched device, in routing order.
    pub routed_to_watched: Vec<String>,
    /// Users (phone numbers) a device of which uploaded prekeys.
    pub prekey_uploads: HashSet<String>,
    /// Users whose device sent another stanza on the connection of its prekey upload after
    /// it: the simulator handles a connection's stanzas in order, so it has stored the keys
    /// and hands out bundles.
    pub prekeys_stored: HashSet<String>,
    /// The connections the watched device logged in on, in order.
    pub logins: Vec<ConnId>,
    /// Logins of the watched device the simulator refused.
    pub refused_logins: u32,
    /// Ids of messages the watched device acked.
    pub acked_by_watched: HashSet<String>,
    /// Messages the simulator handed again to a new login of the watched device, because an
    /// earlier connection was given them and they were never acked.
    pub redelivered: u64,
    /// Messages routed to the watched device that it has not acked yet.
    pub outstanding: usize,
}

/// Private state of the observer task.
#[derive(Default)]
struct Tracker {
    /// Ids of the messages routed to the watched device and not acked yet.
    outstanding: HashSet<String>,
    /// The connection of each user's prekey upload.
    upload_conn: HashMap<String, ConnId>,
}

/// Records what the simulator routes from and to one device (the "watched" one, given by its
/// phone number), its logins, acks and the simulator's redeliveries to it. Runs as a task on
/// the current tokio runtime until dropped.
#[derive(Debug)]
pub struct Observer {
    observed: Arc<Mutex<Observed>>,
    version: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    /// Subscribes to `sim` and starts observing the devices of the account `watched` (a phone
    /// number). Start it before anything happens: it only sees events from now on.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(sim: &Simulator, watched: &str) -> Self {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let (version_tx, version) = watch::channel(0u64);
        let task = tokio::spawn(run_observer(
            sim.subscribe(),
            watched.to_owned(),
            Arc::clone(&observed),
            version_tx,
        ));
        Self {
            observed,
            version,
            task,
        }
    }

    /// Reads what was observed so far.
    pub fn with<T>(&self, f: impl FnOnce(&Observed) -> T) -> T {
        f(&self.observed.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A receiver that changes after every event the observer handled (to wait on instead of
    /// polling).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.clone()
    }
}

/// Whether `node` is a prekey upload (`<iq xmlns="encrypt" type="set"><list>…`).
fn is_prekey_upload(node: &Node) -> bool {
    node.tag == "iq"
        && node.attr_str("xmlns") == Some("encrypt")
        && node.attr_str("type") == Some("set")
        && node.child("list").is_some()
}

async fn run_observer(
    mut events: Subscription,
    watched: String,
    observed: Arc<Mutex<Observed>>,
    version: watch::Sender<u64>,
) {
    let mut t = Tracker::default();
    while let Some(event) = events.next().await {
        let mut o = observed.lock().unwrap_or_else(PoisonError::into_inner);
        handle(&mut t, &mut o, &watched, event);
        o.outstanding = t.outstanding.len();
        drop(o);
        version.send_modify(|v| *v += 1);
    }
}

fn handle(t: &mut Tracker, o: &mut Observed, watched: &str, event: SimEvent) {
    match event {
        SimEvent::ConnectionOpened {
            conn,
            kind: ConnKind::Login { device },
        } if device.user_part() == watched => o.logins.push(conn),
        SimEvent::ConnectionOpened {
            kind: ConnKind::LoginRefused {
                device: Some(device),
            },
            ..
        } if device.user_part() == watched => o.refused_logins += 1,
        SimEvent::Redelivered { device, ids, .. } if device.user_part() == watched => {
            o.redelivered += ids.len() as u64;
        }
        SimEvent::StanzaReceived {
            conn,
            device: Some(device),
            node,
        } => {
            let user = device.user_part();
            if t.upload_conn.get(user) == Some(&conn) {
                o.prekeys_stored.insert(user.to_owned());
            }
            if is_prekey_upload(&node) {
                o.prekey_uploads.insert(user.to_owned());
                t.upload_conn.insert(user.to_owned(), conn);
            }
            if user == watched
                && node.tag == "ack"
                && node.attr_str("class") == Some("message")
                && node.attr_str("error").is_none()
            {
                if let Some(id) = node.attr_str("id") {
                    o.acked_by_watched.insert(id.to_owned());
                    t.outstanding.remove(id);
                }
            }
        }
        SimEvent::MessageRouted {
            id,
            from,
            delivered,
            queued,
        } => {
            if from.user_part() == watched {
                o.routed_from_watched.push(id);
                return;
            }
            if !delivered
                .iter()
                .chain(&queued)
                .any(|d| d.user_part() == watched)
            {
                return;
            }
            o.routed_to_watched.push(id.clone());
            // An ack seen before the routing event (the events of two connections race).
            if !o.acked_by_watched.contains(&id) {
                t.outstanding.insert(id);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let lines = [
            LogLine::Start { pid: 42 },
            LogLine::Outbox { ids: vec![] },
            LogLine::Outbox {
                ids: vec!["3EB0A".into(), "3EB0B".into()],
            },
            LogLine::LoggedIn,
            LogLine::Pairing,
            LogLine::Recv {
                id: "X1".into(),
                text: "B-12 with spaces".into(),
            },
            LogLine::Dup { id: "X1".into() },
            LogLine::Undecryptable {
                id: "X2".into(),
                error: "no session".into(),
            },
            LogLine::Send {
                text: "A-00ff".into(),
            },
            LogLine::Acked {
                id: "X3".into(),
                text: Some("A-00ff".into()),
            },
            LogLine::Acked {
                id: "X3".into(),
                text: None,
            },
            LogLine::SendErr {
                text: "A-01".into(),
                error: "not logged in".into(),
            },
            LogLine::Nacked {
                id: "X4".into(),
                result: "Timeout".into(),
            },
            LogLine::SendFailed {
                id: "X5".into(),
                error: "disconnected".into(),
            },
            LogLine::ConfirmErr {
                id: "X6".into(),
                error: "unknown".into(),
            },
            LogLine::Disconnected {
                reason: "SocketClosed".into(),
            },
            LogLine::StoreFailed {
                error: "disk".into(),
            },
            LogLine::Quiet,
            LogLine::Stopped,
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let (parsed, bad) = parse_log(&text);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(parsed, lines);
    }

    #[test]
    fn torn_and_foreign_lines_do_not_parse() {
        let (parsed, bad) = parse_log("RECV\nSTART x\nACKED\nLOGGEDIN now\nQUIET\n");
        assert_eq!(parsed, [LogLine::Quiet]);
        assert_eq!(bad.len(), 4);
    }

    #[test]
    fn a_torn_last_line_is_ended_before_the_next() {
        let path = std::env::temp_dir().join(format!("amarula-crash-log-{}", std::process::id()));
        std::fs::write(&path, b"LOGGEDIN\nRECV X1 B-").unwrap();
        AppLog::open(&path)
            .unwrap()
            .append(&LogLine::Quiet)
            .unwrap();
        let (parsed, bad) = read_log(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            parsed,
            [
                LogLine::LoggedIn,
                LogLine::Recv {
                    id: "X1".into(),
                    text: "B-".into()
                },
                LogLine::Quiet
            ]
        );
        assert!(bad.is_empty());
    }
}
