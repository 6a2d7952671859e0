//! The demo: a WhatsApp-server simulator in this process, and a real amarula client (tokio
//! driver, real loopback sockets, a SQLite store) that pairs by QR code, logs in, asks the
//! server something, exchanges end-to-end encrypted messages with a second account, then
//! restarts from its database (no pairing) and gets what arrived while it was away.
//!
//! `cargo run --release -p amarula-tests --bin demo [-- --db PATH]`
//!
//! `--db` names Alice's database (default: `amarula-demo.db` in the system's temp dir). The
//! simulator starts empty each run, so the demo starts the file afresh too.
//!
//! The QR code is drawn in the terminal as a user would see it; the simulator's virtual phone
//! "scans" it a moment later. Everything ends by itself within a minute.

use std::time::Duration;

use amarula::core::jid::Jid;
use amarula::core::machine::{Confirm, Event};
use amarula::store::{MemoryStore, SqliteStore};
use amarula::{Client, ClientConfig, ClientEvent, Events};
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{SimConfig, Simulator};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

const ALICE: &str = "15551230001";
const BOB: &str = "15551230002";

#[tokio::main]
async fn main() {
    match tokio::time::timeout(Duration::from_secs(60), run()).await {
        Ok(Ok(())) => println!("\ndemo finished"),
        Ok(Err(e)) => {
            eprintln!("\ndemo failed: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("\ndemo did not finish within 60 s");
            std::process::exit(1);
        }
    }
}

async fn run() -> Result<(), String> {
    let sim = Simulator::start(SimConfig::default())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let alice = sim.add_account(ALICE);
    let bob = sim.add_account(BOB);
    println!("simulator listening on {}", sim.url());
    println!("accounts: alice {ALICE}, bob {BOB} (bob's computer is already linked)\n");

    let config = |machine| ClientConfig {
        url: sim.url(),
        machine,
        ..ClientConfig::default()
    };
    // Bob's linked device, to have someone to talk to.
    let mut bob_creds = fresh_credentials(2);
    bob_creds.device = Some(bob.link_device(&bob_creds));
    let (bob_client, mut bob_events) = amarula::tokio::connect(
        config(config_for(&sim)),
        MemoryStore::with_credentials(bob_creds),
    )
    .await
    .map_err(|e| e.to_string())?;

    // Alice's new computer: an empty database, so it pairs first.
    let db = db_path()?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    println!("[alice] database: {}", db.display());
    let store = SqliteStore::open(&db).map_err(|e| e.to_string())?;
    let (client, mut events) = amarula::tokio::connect(config(config_for(&sim)), store)
        .await
        .map_err(|e| e.to_string())?;
    println!("[alice] connecting to the (simulated) WhatsApp server…");
    loop {
        let event = next(&mut events, "alice").await?;
        match &event {
            ClientEvent::Event(Event::PairingQr {
                qr,
                index,
                valid_for,
            }) => {
                println!(
                    "\n[alice] scan this with WhatsApp > Linked devices (code {index}, valid {valid_for:?}):\n"
                );
                print_qr(qr);
                println!("{qr}\n");
                if *index == 0 {
                    // The virtual phone scans the code, as a user would.
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    println!("[phone] scanning the QR code…");
                    let device = alice.scan_qr(qr).map_err(|e| format!("scan: {e}"))?;
                    println!("[phone] linked {device}");
                }
            }
            ClientEvent::Event(Event::Paired { device }) => {
                println!(
                    "[alice] paired as {} (LID {:?})",
                    device.jid,
                    device.lid.as_ref().map(ToString::to_string)
                );
            }
            ClientEvent::Event(Event::CredentialsChanged(_)) => {
                println!("[alice] credentials changed: stored before anything else is sent");
            }
            ClientEvent::Disconnected { reason, reconnect } => {
                println!("[alice] disconnected: {reason:?}, next: {reconnect:?}");
            }
            ClientEvent::Event(Event::LoggedIn {
                own_lid,
                server_time_offset_ms,
            }) => {
                println!(
                    "[alice] logged in (own LID {}, server clock offset {server_time_offset_ms} ms)",
                    own_lid
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), ToString::to_string)
                );
                break;
            }
            other => println!("[alice] {}", short(other)),
        }
    }

    // End-to-end encrypted messages: Alice's client fetches Bob's devices and prekey bundles,
    // encrypts for each (and for her own other devices), and Bob's client decrypts.
    wait_logged_in(&mut bob_events).await?;
    let bob_jid: Jid = format!("{BOB}@s.whatsapp.net")
        .parse()
        .map_err(|e: amarula::core::jid::JidParseError| e.to_string())?;

    // A server query (usync): who Bob is, by phone number: his LID and his devices.
    for user in client
        .user_info(std::slice::from_ref(&bob_jid))
        .await
        .map_err(|e| e.to_string())?
    {
        let lid = user
            .lid
            .map_or_else(|| "none".to_owned(), |l| l.to_string());
        println!(
            "[alice] usync: {} is {lid}, devices {:?}",
            user.jid, user.devices
        );
    }
    let alice_jid: Jid = format!("{ALICE}@s.whatsapp.net")
        .parse()
        .map_err(|e: amarula::core::jid::JidParseError| e.to_string())?;
    let id = client
        .send_text(&bob_jid, "hello bob")
        .await
        .map_err(|e| e.to_string())?;
    println!("[alice] sent \"hello bob\" (id {id}); the server acknowledged it");
    let text = receive_text(&bob_client, &mut bob_events, "bob").await?;
    println!("[bob] decrypted: \"{text}\"; stored, then confirmed (delivery receipt sent)");
    bob_client
        .send_text(&alice_jid, "hi alice!")
        .await
        .map_err(|e| e.to_string())?;
    let text = receive_text(&client, &mut events, "alice").await?;
    println!("[alice] decrypted: \"{text}\"");

    // Alice's computer goes away; Bob writes meanwhile; Alice comes back from the database.
    stop(&client, &mut events, "alice").await?;
    bob_client
        .send_text(&alice_jid, "did you get this while you were away?")
        .await
        .map_err(|e| e.to_string())?;
    println!("[bob] sent a message while alice is offline (the server queues it)");
    let store = SqliteStore::open(&db).map_err(|e| e.to_string())?;
    let (client, mut events) = amarula::tokio::connect(config(config_for(&sim)), store)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "[alice] restarted from {}: no QR code this time",
        db.display()
    );
    let text = receive_text(&client, &mut events, "alice").await?;
    println!("[alice] decrypted: \"{text}\"");

    stop(&client, &mut events, "alice").await?;
    stop(&bob_client, &mut bob_events, "bob").await?;
    sim.shutdown();
    Ok(())
}

fn print_qr(text: &str) {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => println!(
            "{}",
            code.render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(true)
                .build()
        ),
        Err(e) => println!("(cannot draw the QR code: {e})"),
    }
}

/// The database path: `--db PATH`, or `amarula-demo.db` in the temp dir.
fn db_path() -> Result<std::path::PathBuf, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(std::env::temp_dir().join("amarula-demo.db")),
        (Some("--db"), Some(path)) => Ok(path.into()),
        _ => Err("usage: demo [--db PATH]".into()),
    }
}

/// Waits for the next decrypted text message, confirms it, and returns its text.
async fn receive_text(client: &Client, events: &mut Events, who: &str) -> Result<String, String> {
    loop {
        match next(events, who).await? {
            ClientEvent::Event(Event::Message(m)) => {
                let text = m.text().unwrap_or_default().to_owned();
                if let Some(token) = m.ack {
                    client
                        .confirm(token, Confirm::Ack)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                return Ok(text);
            }
            ClientEvent::Event(Event::Undecryptable(u)) => {
                return Err(format!("{who}: a message did not decrypt: {}", u.error));
            }
            ClientEvent::Event(Event::LoggedIn { .. }) => println!("[{who}] logged in"),
            _ => {}
        }
    }
}

async fn next(events: &mut Events, who: &str) -> Result<ClientEvent, String> {
    events
        .recv()
        .await
        .ok_or_else(|| format!("{who}: the client stopped unexpectedly"))
}

async fn wait_logged_in(events: &mut Events) -> Result<(), String> {
    loop {
        if let ClientEvent::Event(Event::LoggedIn { .. }) = next(events, "bob").await? {
            println!("[bob] logged in");
            return Ok(());
        }
    }
}

async fn stop(client: &Client, events: &mut Events, who: &str) -> Result<(), String> {
    client.stop().await;
    while let Some(e) = events.recv().await {
        if matches!(e, ClientEvent::Stopped) {
            println!("[{who}] stopped");
            return Ok(());
        }
    }
    Ok(())
}

/// A one-line description of an event for the log.
fn short(e: &ClientEvent) -> String {
    match e {
        ClientEvent::Event(Event::Stanza { node, .. }) => format!("stanza {node}"),
        other => {
            let s = format!("{other:?}");
            if s.len() > 160 {
                format!(
                    "{}…",
                    &s[..s.char_indices().nth(160).map_or(s.len(), |(i, _)| i)]
                )
            } else {
                s
            }
        }
    }
}
