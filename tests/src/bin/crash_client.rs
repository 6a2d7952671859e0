//! The client process of the crash test (`tests/tests/crash.rs`), which kills it with SIGKILL
//! at random points and starts it again:
//!
//! ```text
//! crash_client URL ROOT_HEX DB PEER LOG INTERVAL_MS
//! ```
//!
//! - `URL`: the simulator's WebSocket URL; `ROOT_HEX`: the root public key of its certificate
//!   chain (32 bytes, hex; issuer serial 0).
//! - `DB`: the [`SqliteStore`] file, which must already hold the credentials of a linked
//!   device: the process never pairs (it logs `PAIRING` if it is ever asked to).
//! - `PEER`: the user JID it sends to; `LOG`: its append-only log ([`LogLine`]s, each on disk
//!   before the process goes on, and echoed on stdout); `INTERVAL_MS`: time between sends.
//!
//! It receives with end-to-end encryption on: a message whose id is not yet in the log is
//! recorded (`RECV`) and then confirmed; one already recorded is only confirmed (`DUP`). The
//! application has to be idempotent by message id because its record and the library's
//! confirmation cannot be one transaction. Every `INTERVAL_MS` it sends `A-<random hex>` to
//! `PEER`, logging `SEND` before the call and `ACKED` when the server accepted it.
//!
//! A line `quiet` on stdin stops the sending (`QUIET` once the last send returned); the end
//! of stdin stops the client (`STOPPED`) and the process.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use amarula::core::jid::Jid;
use amarula::core::machine::{Confirm, Event, MessageAckResult};
use amarula::store::{CredentialStore, SqliteStore};
use amarula::{Client, ClientError, ClientEvent};
use amarula_tests::crash::{AppLog, LogLine, read_log};
use amarula_tests::sim::client::{parse_root, remote_config};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::sync::{mpsc, watch};

const USAGE: &str = "usage: crash_client URL ROOT_HEX DB PEER_JID LOG INTERVAL_MS";

/// The command line.
struct Args {
    url: String,
    root: [u8; 32],
    db: PathBuf,
    peer: Jid,
    log: PathBuf,
    interval: Duration,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, root, db, peer, log, interval] = args.as_slice() else {
        return Err(USAGE.to_owned());
    };
    let root = parse_root(root)?;
    let peer = peer
        .parse()
        .map_err(|e| format!("PEER_JID {peer}: {e:?}"))?;
    let interval = interval
        .parse()
        .map(Duration::from_millis)
        .map_err(|e| format!("INTERVAL_MS {interval}: {e}"))?;
    Ok(Args {
        url: url.clone(),
        root,
        db: db.into(),
        peer,
        log: log.into(),
        interval,
    })
}

/// The log, echoed on stdout (where the test follows it) once it is on disk.
struct Log(AppLog);

impl Log {
    fn write(&self, line: LogLine) {
        if let Err(e) = self.0.append(&line) {
            // Going on without the record would break what the test checks.
            eprintln!("cannot write the log: {e}");
            std::process::exit(3);
        }
        println!("{line}");
    }
}

/// What stdin asks for.
enum Control {
    Quiet,
    Stop,
}

/// Forwards stdin: `quiet` lines, then the end.
fn watch_stdin(tx: mpsc::UnboundedSender<Control>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "quiet" => {
                    let _ = tx.send(Control::Quiet);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(Control::Stop);
    });
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash_client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // The ids handled in earlier lives of this process (the application's own record).
    let (earlier, _) = read_log(&args.log)?;
    let mut recorded: HashSet<String> = earlier
        .into_iter()
        .filter_map(|l| match l {
            LogLine::Recv { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    let log = Arc::new(Log(AppLog::open(&args.log)?));
    log.write(LogLine::Start {
        pid: std::process::id(),
    });

    let store = SqliteStore::open(&args.db)?;
    let outbox = store.load_unacked_sent().await?;
    log.write(LogLine::Outbox {
        ids: outbox.into_iter().map(|m| m.id).collect(),
    });
    let config = remote_config(&args.url, args.root);
    let (client, mut events) = amarula::tokio::connect(config, store).await?;

    let (control_tx, mut control) = mpsc::unbounded_channel();
    watch_stdin(control_tx);
    let (logged_in_tx, logged_in) = watch::channel(false);
    let (quiet_tx, quiet) = watch::channel(false);
    let sender = tokio::spawn(send_loop(
        client.clone(),
        Arc::clone(&log),
        args.peer.clone(),
        args.interval,
        logged_in,
        quiet,
    ));

    let mut pairing_logged = false;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            c = control.recv() => {
                match c {
                    Some(Control::Quiet) => {
                        let _ = quiet_tx.send(true);
                    }
                    Some(Control::Stop) | None => {
                        let _ = quiet_tx.send(true);
                        client.stop().await;
                    }
                }
                continue;
            }
        };
        let Some(event) = event else {
            break;
        };
        match event {
            ClientEvent::Event(Event::LoggedIn { .. }) => {
                log.write(LogLine::LoggedIn);
                let _ = logged_in_tx.send(true);
            }
            ClientEvent::Event(Event::PairingQr { .. }) if !pairing_logged => {
                pairing_logged = true;
                log.write(LogLine::Pairing);
            }
            ClientEvent::Event(Event::Message(m)) => {
                if recorded.contains(m.id.as_str()) {
                    log.write(LogLine::Dup {
                        id: m.id.to_string(),
                    });
                } else {
                    log.write(LogLine::Recv {
                        id: m.id.to_string(),
                        text: m.text().unwrap_or_default().to_owned(),
                    });
                    recorded.insert(m.id.to_string());
                }
                if let Some(token) = m.ack {
                    if let Err(e) = client.confirm(token, Confirm::Ack).await {
                        log.write(LogLine::ConfirmErr {
                            id: m.id.to_string(),
                            error: e.to_string(),
                        });
                    }
                }
            }
            ClientEvent::Event(Event::Undecryptable(u)) => log.write(LogLine::Undecryptable {
                id: u.id.clone(),
                error: u.error.to_string(),
            }),
            // Only messages sent again after a restart end here: the acks of this process's
            // own sends answer its `send_text` calls.
            ClientEvent::Event(Event::MessageAck { id, result }) => match result {
                MessageAckResult::Delivered { .. } => log.write(LogLine::Acked { id, text: None }),
                other => log.write(LogLine::Nacked {
                    id,
                    result: format!("{other:?}"),
                }),
            },
            ClientEvent::Event(Event::SendFailed { id, error }) => {
                log.write(LogLine::SendFailed {
                    id,
                    error: error.to_string(),
                });
            }
            // Receipts, notifications and the like: nothing to keep, confirm at once.
            ClientEvent::Event(Event::Stanza {
                ack: Some(token), ..
            }) => {
                let _ = client.confirm(token, Confirm::Ack).await;
            }
            ClientEvent::Disconnected { reason, .. } => log.write(LogLine::Disconnected {
                reason: format!("{reason:?}"),
            }),
            ClientEvent::StoreFailed(e) => log.write(LogLine::StoreFailed {
                error: e.to_string(),
            }),
            ClientEvent::Stopped => break,
            _ => {}
        }
    }
    let _ = quiet_tx.send(true);
    // The sender ends with the client: its calls fail as stopped.
    let _ = sender.await;
    log.write(LogLine::Stopped);
    Ok(())
}

/// Sends `A-<random hex>` every `interval` once logged in, until `quiet`.
async fn send_loop(
    client: Client,
    log: Arc<Log>,
    peer: Jid,
    interval: Duration,
    mut logged_in: watch::Receiver<bool>,
    mut quiet: watch::Receiver<bool>,
) {
    let mut rng = ChaCha20Rng::from_seed(seed());
    tokio::select! {
        r = logged_in.wait_for(|l| *l) => {
            if r.is_err() {
                return;
            }
        }
        _ = quiet.wait_for(|q| *q) => {
            log.write(LogLine::Quiet);
            return;
        }
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = quiet.wait_for(|q| *q) => break,
        }
        if *quiet.borrow() {
            break;
        }
        let mut random = [0u8; 8];
        rng.fill_bytes(&mut random);
        let text = format!("A-{}", hex::encode(random));
        log.write(LogLine::Send { text: text.clone() });
        match client.send_text(&peer, &text).await {
            Ok(id) => log.write(LogLine::Acked {
                id,
                text: Some(text),
            }),
            Err(ClientError::Stopped) => break,
            Err(e) => log.write(LogLine::SendErr {
                text,
                error: e.to_string(),
            }),
        }
    }
    log.write(LogLine::Quiet);
}

/// A seed for the texts: the clock and the process id (texts only need to differ).
fn seed() -> [u8; 32] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    seed
}
