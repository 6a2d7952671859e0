//! Links amarula to a real WhatsApp account and logs in:
//!
//! `cargo run --release -p amarula --example login -- [CREDENTIALS_FILE]`
//!
//! On the first run it draws QR codes in the terminal: scan one with WhatsApp on your phone
//! (Settings > Linked devices > Link a device). The credentials are stored in
//! `CREDENTIALS_FILE` (default `amarula-credentials.json`; keep it private), so later runs log
//! in directly. It prints the events until Ctrl-C.

use amarula::core::machine::Event;
use amarula::store::FileStore;
use amarula::{ClientConfig, ClientEvent};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "amarula-credentials.json".to_owned());
    let (client, mut events) =
        amarula::tokio::connect(ClientConfig::default(), FileStore::new(&path)).await?;
    println!(
        "connecting to {} (credentials in {path})",
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
