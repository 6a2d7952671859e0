//! Links amarula to a real WhatsApp account and logs in:
//!
//! `cargo run --release -p amarula --example login -- [DATABASE_FILE [ACCOUNT]]`
//!
//! On the first run it draws QR codes in the terminal: scan one with WhatsApp on your phone
//! (Settings > Linked devices > Link a device). The device's state is stored in the SQLite
//! file `DATABASE_FILE` (default `amarula.db` in the current directory; it holds private keys,
//! keep it private) under the account name `ACCOUNT` (default `default`), so later runs log
//! in directly. It prints the messages it receives (decrypted, and confirmed once printed) and
//! the other events until Ctrl-C. With `AMARULA_SEND_TO=15551234567@s.whatsapp.net` and
//! `AMARULA_SEND_TEXT=hello` in the environment it also sends that text once logged in.

use amarula::core::machine::{Confirm, Event};
use amarula::store::{DEFAULT_ACCOUNT, SqliteDatabase};
use amarula::{ClientConfig, ClientEvent};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "amarula.db".to_owned());
    let account = args.next().unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned());
    // Opening blocks briefly (and migrates an older file): done before connecting.
    let store = SqliteDatabase::open(&path)?.account(&account)?;
    let (client, mut events) = amarula::tokio::connect(ClientConfig::default(), store).await?;
    println!(
        "connecting to {} (account `{account}` in {path})",
        amarula::WHATSAPP_URL
    );
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(ClientEvent::Event(Event::PairingQr { qr, valid_for, .. })) => {
                    let code = QrCode::new(qr.as_bytes())?;
                    let art = code
                        .render::<Dense1x2>()
                        .dark_color(Dense1x2::Light)
                        .light_color(Dense1x2::Dark)
                        .quiet_zone(true)
                        .build();
                    println!("\nScan with WhatsApp > Linked devices (valid {valid_for:?}):\n{art}");
                }
                Some(ClientEvent::Event(Event::LoggedIn { own_lid, .. })) => {
                    println!("logged in (own LID {own_lid:?}); Ctrl-C to stop");
                    if let (Ok(to), Ok(text)) =
                        (std::env::var("AMARULA_SEND_TO"), std::env::var("AMARULA_SEND_TEXT"))
                    {
                        let to = to.parse()?;
                        match client.send_text(&to, &text).await {
                            Ok(id) => println!("sent {id} to {to}"),
                            Err(e) => println!("send to {to} failed: {e}"),
                        }
                    }
                }
                Some(ClientEvent::Event(Event::Message(m))) => {
                    let who = if m.from_me { "me".to_owned() } else { m.sender.to_string() };
                    match m.text() {
                        Some(text) => println!("[{}] {who}: {text}", m.chat),
                        None => println!("[{}] {who}: (a message without text)", m.chat),
                    }
                    if let Some(token) = m.ack {
                        client.confirm(token, Confirm::Ack).await?;
                    }
                }
                // Persistence and loads are the store's business; not shown.
                Some(ClientEvent::Event(Event::Persist(_) | Event::Load(_))) => {}
                Some(ClientEvent::Stopped) | None => break,
                Some(other) => println!("{other:?}"),
            },
            _ = tokio::signal::ctrl_c() => {
                client.stop().await;
            }
        }
    }
    Ok(())
}
