//! A fleet worker for the failover test (`tests/tests/fleet_failover.rs`): runs every account
//! of a Postgres database it can lease, up to K, against the simulator, with the tokio driver.
//!
//! `fleet_worker URL ROOT_HEX PG_URL OWNER MAX LEASE_MS`
//!
//! It prints one line per fact to stdout, flushed at once (the test reads them):
//! `LEASED <account> <token>`, `LOGGEDIN <account>`, `RECV <account> <id> <text>` (a message
//! handled by the application), `DUP <account> <id>` (a message handed again that the
//! application had already handled, maybe on another worker: skipped), `DONE <account> <id>`
//! (the application confirmed it), `UNDECRYPTABLE <account> <id>`, `LOST <account>`,
//! `ENDED <account> <why>`.
//!
//! The application keeps what it handled in a table of the same database (`fleet_app_handled`),
//! as an application of a fleet must: `Client::confirm` returns once the ack is queued, so a
//! worker killed right after it may leave the message to be handed again to the next owner.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use amarula::core::machine::{Confirm, Event};
use amarula::fleet::{Fleet, FleetOptions};
use amarula::store::{PostgresDatabase, PostgresOptions, PostgresStore};
use amarula::{Client, ClientEvent, Events};
use amarula_tests::sim::client::{parse_root, remote_config};
use tokio::sync::{mpsc, watch};

const USAGE: &str = "usage: fleet_worker URL ROOT_HEX PG_URL OWNER MAX LEASE_MS";

struct Args {
    url: String,
    root: [u8; 32],
    pg_url: String,
    owner: String,
    max: usize,
    lease: Duration,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, root, pg_url, owner, max, lease] = args.as_slice() else {
        return Err(USAGE.to_owned());
    };
    let root = parse_root(root)?;
    Ok(Args {
        url: url.clone(),
        root,
        pg_url: pg_url.clone(),
        owner: owner.clone(),
        max: max.parse().map_err(|e| format!("MAX {max}: {e}"))?,
        lease: Duration::from_millis(
            lease
                .parse()
                .map_err(|e| format!("LEASE_MS {lease}: {e}"))?,
        ),
    })
}

/// One line to stdout, flushed (the test reads it as it comes).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
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
            eprintln!("fleet_worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The application's own record of the messages it handled, shared by the workers.
struct Handled(std::sync::Arc<std::sync::Mutex<postgres::Client>>);

impl Handled {
    fn open(url: &str) -> Result<Self, postgres::Error> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS fleet_app_handled (id TEXT PRIMARY KEY, account TEXT)",
        )?;
        Ok(Self(std::sync::Arc::new(std::sync::Mutex::new(client))))
    }

    /// Records `id` as handled; false when it already was.
    async fn first(&self, account: &str, id: &str) -> Result<bool, String> {
        let (client, account, id) = (self.0.clone(), account.to_owned(), id.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut c = client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            c.execute(
                "INSERT INTO fleet_app_handled (id, account) VALUES ($1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&id, &account],
            )
            .map(|n| n == 1)
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

impl Clone for Handled {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let handled = {
        let url = args.pg_url.clone();
        tokio::task::spawn_blocking(move || Handled::open(&url)).await??
    };
    let mut options = PostgresOptions::default();
    options.connections = 4;
    let db = PostgresDatabase::open_with(&args.pg_url, options).await?;
    let mut fleet_options = FleetOptions::default();
    fleet_options.max_accounts = args.max;
    fleet_options.lease_time = args.lease;
    let mut fleet = Fleet::new(db, args.owner.clone(), fleet_options);
    let args = std::sync::Arc::new(args);
    // Each running account's stop switch: the step loop never waits for a connection.
    let mut running: HashMap<String, watch::Sender<bool>> = HashMap::new();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<(String, bool)>();
    let mut tick = tokio::time::interval(fleet.renew_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((account, release)) = ended.recv() => {
                running.remove(&account);
                if release {
                    fleet.finished(&account).await?;
                }
                continue;
            }
        }
        let step = fleet.step().await;
        if let Some(e) = &step.error {
            eprintln!("fleet step: {e}");
        }
        for account in step.lost {
            say(&format!("LOST {account}"));
            if let Some(stop) = running.remove(&account) {
                let _ = stop.send(true);
            }
        }
        for (lease, store) in step.started {
            let account = lease.account().to_owned();
            say(&format!("LEASED {account} {}", lease.token()));
            let (stop_tx, stop) = watch::channel(false);
            running.insert(account.clone(), stop_tx);
            tokio::spawn(run_account(
                std::sync::Arc::clone(&args),
                account,
                store,
                handled.clone(),
                ended_tx.clone(),
                stop,
            ));
        }
    }
}

/// Connects one account and runs its application until the client stops (or the fleet stops
/// it: its lease is lost).
async fn run_account(
    args: std::sync::Arc<Args>,
    account: String,
    store: PostgresStore,
    handled: Handled,
    ended: mpsc::UnboundedSender<(String, bool)>,
    stop: watch::Receiver<bool>,
) {
    match start(&args, store).await {
        Ok((client, events)) => handle(account, client, events, handled, ended, stop).await,
        Err(e) => {
            say(&format!("ENDED {account} start:_{e}").replace(' ', "_"));
            let _ = ended.send((account, true));
        }
    }
}

async fn start(args: &Args, store: PostgresStore) -> Result<(Client, Events), amarula::Error> {
    let config = remote_config(&args.url, args.root);
    amarula::tokio::connect(config, store).await
}

/// The application of one account: records and confirms what it receives.
async fn handle(
    account: String,
    client: Client,
    mut events: Events,
    handled: Handled,
    ended: mpsc::UnboundedSender<(String, bool)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut why = String::from("stopped");
    let mut stopping = false;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            // The switch only ever turns on.
            _ = stop.changed(), if !stopping => {
                stopping = true;
                why = String::from("lease_lost");
                client.stop().await;
                continue;
            }
        };
        let Some(event) = event else {
            break;
        };
        match event {
            ClientEvent::Event(Event::LoggedIn { .. }) => say(&format!("LOGGEDIN {account}")),
            ClientEvent::Event(Event::Message(m)) => {
                let text = m.text().unwrap_or_default().replace(' ', "_");
                match handled.first(&account, &m.id).await {
                    Ok(true) => say(&format!("RECV {account} {} {text}", m.id)),
                    Ok(false) => say(&format!("DUP {account} {}", m.id)),
                    Err(e) => {
                        // Not recorded: not confirmed either, so it comes again.
                        eprintln!("{account}: record {}: {e}", m.id);
                        continue;
                    }
                }
                if let Some(token) = m.ack {
                    match client.confirm(token, Confirm::Ack).await {
                        Ok(()) => say(&format!("DONE {account} {}", m.id)),
                        Err(e) => eprintln!("{account}: confirm {}: {e}", m.id),
                    }
                }
            }
            ClientEvent::Event(Event::Undecryptable(u)) => {
                say(&format!("UNDECRYPTABLE {account} {}", u.id));
            }
            ClientEvent::Event(Event::Stanza {
                ack: Some(token), ..
            }) => {
                let _ = client.confirm(token, Confirm::Ack).await;
            }
            ClientEvent::StoreFailed(e) => why = format!("store: {e}").replace(' ', "_"),
            ClientEvent::Stopped => break,
            _ => {}
        }
    }
    say(&format!("ENDED {account} {why}"));
    // A lost lease is not this worker's to release.
    let _ = ended.send((account, !stopping));
}
