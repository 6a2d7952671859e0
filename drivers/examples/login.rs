//! Links amarula to a real WhatsApp account and logs in:
//!
//! `cargo run --release -p amarula --example login -- [DATABASE_FILE [ACCOUNT]]`
//!
//! On the first run it draws QR codes in the terminal: scan one with WhatsApp on your phone
//! (Settings > Linked devices > Link a device). The device's state is stored in the SQLite
//! file `DATABASE_FILE` (default `amarula.db` in the current directory; it holds private keys,
//! keep it private) under the account name `ACCOUNT` (default `default`), so later runs log
//! in directly. It prints the events until Ctrl-C.

use amarula::core::machine::Event;
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
                }
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
