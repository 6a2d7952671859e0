//! The demo: a WhatsApp-server simulator in this process, and a real amarula client (tokio
//! driver, real loopback sockets) that pairs by QR code, logs in, asks the server something,
//! and messages a second account.
//!
//! `cargo run --release -p amarula-tests --bin demo`
//!
//! The QR code is drawn in the terminal as a user would see it; the simulator's virtual phone
//! "scans" it a moment later. Everything ends by itself within a minute.

use std::time::Duration;

use amarula::core::binary::Node;
use amarula::core::jid::Jid;
use amarula::core::machine::{Confirm, Event, IqRequest, IqResult};
use amarula::store::MemoryStore;
use amarula::{Client, ClientConfig, ClientEvent, Events};
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{SimConfig, Simulator};
use bytes::Bytes;
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

    // Alice's new computer: fresh credentials, so it pairs first.
    let (client, mut events) =
        amarula::tokio::connect(config(config_for(&sim)), MemoryStore::new())
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

    // A server query: the device list of Bob's account.
    let usync = IqRequest::iq("usync", "get", Jid::server(), vec![Node::new("usync")]);
    match client.query_iq(usync).await.map_err(|e| e.to_string())? {
        IqResult::Ok(reply) => println!("[alice] usync answered: {reply}"),
        other => println!("[alice] usync: {other:?}"),
    }

    // A message to Bob (end-to-end encryption is the next milestone: the payload is opaque).
    wait_logged_in(&mut bob_events).await?;
    let message = Node::new("message")
        .attr("id", "3EB0DE000000000001")
        .attr(
            "to",
            format!("{BOB}@s.whatsapp.net")
                .parse::<Jid>()
                .map_err(|e| e.to_string())?,
        )
        .attr("type", "text")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(vec![0x42; 48])]);
    let ack = client
        .relay_stanza(message, Bytes::from_static(b"hello bob"))
        .await
        .map_err(|e| e.to_string())?;
    println!("[alice] message to bob: server says {ack:?}");
    loop {
        if let ClientEvent::Event(Event::Stanza {
            node,
            ack: Some(token),
        }) = next(&mut bob_events, "bob").await?
        {
            println!("[bob] received {node}");
            bob_client
                .confirm(token, Confirm::Ack)
                .await
                .map_err(|e| e.to_string())?;
            println!("[bob] handled it durably, acked");
            break;
        }
    }

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
