//! The amarula core driven by a hand-written loop: a blocking `std::net::TcpStream`, the sync
//! `tungstenite` crate, no async runtime. It shows what the async drivers do, in one page.
//!
//! ```sh
//! cargo run -p amarula --example custom_loop -- ws://127.0.0.1:PORT/ws/chat ROOT_HEX [CREDS_JSON]
//! ```
//!
//! - `ROOT_HEX`: the root public key (32 bytes, hex) of the server's certificate chain, issuer
//!   serial 0: for the simulator, `hex::encode(sim.trust_anchor().root_public)`. The client
//!   refuses any server whose chain does not lead to it.
//! - `CREDS_JSON` (optional): credentials in the `FileStore` format. A paired device logs in
//!   with them; without (or when the file does not exist) fresh credentials are generated and
//!   the server's QR codes are printed. Changed credentials are written back to the file.
//!
//! It prints every event and exits after logging in, when the connection closes for good, or
//! after 60 seconds.

use std::error::Error;
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amarula::core::credentials::Credentials;
use amarula::core::machine::{Config, ConnectionMachine, Event, Output, Reconnect, Session};
use amarula::core::noise::TrustAnchor;
use amarula::core::persist::Loaded;
use amarula::core::time::{Clock, Instant};
use amarula::store::{credentials_from_json, credentials_to_json};
use rand_core::{OsRng, RngCore, SeedableRng};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const USAGE: &str = "usage: custom_loop ws://HOST:PORT/ws/chat ROOT_PUBLIC_HEX [CREDENTIALS_JSON]";

/// How long the example runs at most.
const RUN_FOR: Duration = Duration::from_secs(60);

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(root)) = (args.next(), args.next()) else {
        return Err(USAGE.into());
    };
    let creds_path = args.next();
    let root: [u8; 32] = hex::decode(root)?
        .try_into()
        .map_err(|_| "the root public key must be 32 bytes")?;
    let config = Config {
        trust: TrustAnchor::new(root, 0),
        ..Config::default()
    };

    // The machine's clock: time since we started. Only the driver reads clocks.
    let origin = std::time::Instant::now();
    let now = || Instant::from_origin(origin.elapsed());
    let give_up = now() + RUN_FOR;

    let stored = match &creds_path {
        Some(path) if std::path::Path::new(path).exists() => {
            let json = serde_json::from_slice(&std::fs::read(path)?)?;
            Some(credentials_from_json(&json)?)
        }
        _ => None,
    };
    let credentials = match stored {
        Some(c) => c,
        None => Credentials::generate(&mut rand_chacha::ChaCha20Rng::from_seed(os_seed()?)),
    };
    let mut session = Session::new(credentials, &config);

    // One turn per connection; a reconnect is a new machine from the old one's session.
    loop {
        let clock = Clock {
            at: now(),
            unix_ms: SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64,
        };
        let mut machine = ConnectionMachine::new(config.clone(), session, clock, os_seed()?);
        let mut socket = match open(&url) {
            Ok(ws) => Some(ws),
            Err(e) => {
                eprintln!("connect failed: {e}");
                machine.handle_socket_closed(now());
                None
            }
        };
        let mut logged_in = false;
        let reconnect = 'connection: loop {
            // Drain rule: apply every output, in order, before waiting again.
            while let Some(output) = machine.poll_output() {
                match output {
                    Output::Transmit(frame) => {
                        let sent = socket.as_mut().map(|ws| ws.send(Message::Binary(frame)));
                        if let Some(Err(e)) = sent {
                            eprintln!("write failed: {e}");
                            socket = None;
                            machine.handle_socket_closed(now());
                        }
                    }
                    // Persist before applying anything after it (a frame may depend on it).
                    Output::Event(Event::CredentialsChanged(creds)) => {
                        println!("credentials changed");
                        if let Some(path) = &creds_path {
                            // Plain write for brevity; amarula::FileStore replaces atomically.
                            std::fs::write(path, credentials_to_json(&creds).to_string())?;
                        }
                    }
                    // This example keeps no Signal state; a real loop answers from its store
                    // (e.g. `SqliteStore::load_keys`) and persists every `Event::Persist`.
                    Output::Event(Event::Load(request)) => {
                        machine.provide(now(), Loaded::nothing_for(&request));
                    }
                    Output::Event(Event::PairingQr { qr, index, .. }) => {
                        println!("QR #{index} (scan with the phone): {qr}");
                    }
                    Output::Event(Event::LoggedIn { own_lid, .. }) => {
                        println!("logged in (lid {own_lid:?}); closing");
                        logged_in = true;
                    }
                    Output::Event(Event::Closed { reason, reconnect }) => {
                        println!("closed: {reason:?}, then {reconnect:?}");
                        break 'connection reconnect;
                    }
                    Output::Event(other) => println!("event: {other:?}"),
                }
            }
            if logged_in || now() >= give_up {
                // Our own close: pending requests end, then `Closed` comes out next turn.
                machine.close_locally(now());
                continue;
            }
            let Some(ws) = socket.as_mut() else {
                // Without a socket the machine has closed: its outputs are drained above.
                continue;
            };
            // Wait for input, but no longer than the machine's next deadline (or the end of
            // the run): a read timeout turns the blocking read into the timer.
            let until = machine.poll_timeout().unwrap_or(give_up).min(give_up);
            let wait = until.saturating_duration_since(now());
            ws.get_mut()
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            match ws.read() {
                Ok(Message::Binary(bytes)) => machine.handle_input(now(), &bytes),
                Ok(Message::Close(_)) => machine.handle_socket_closed(now()),
                Ok(_) => {} // text, ping, pong: tungstenite answers pings itself
                // The read timed out: a partly read message stays buffered in tungstenite.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    machine.handle_timeout(now())
                }
                Err(e) => {
                    eprintln!("read failed: {e}");
                    machine.handle_socket_closed(now());
                }
            }
        };
        if let Some(mut ws) = socket {
            let _ = ws.close(None);
            let _ = ws.flush();
        }
        session = machine.into_session();
        match reconnect {
            _ if logged_in || now() >= give_up => return Ok(()),
            Reconnect::Never => return Ok(()),
            Reconnect::Now => {}
            Reconnect::After(delay) => std::thread::sleep(delay.min(give_up - now())),
        }
    }
}

/// TCP, then the WebSocket handshake with the headers WhatsApp Web sends.
fn open(url: &str) -> Result<WebSocket<TcpStream>, Box<dyn Error>> {
    let mut request = url.into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("Origin", "https://web.whatsapp.com".parse()?);
    let host = request.uri().host().ok_or("no host in the url")?.to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port))?;
    tcp.set_nodelay(true)?;
    let (ws, _response) = tungstenite::client(request, tcp).map_err(|e| e.to_string())?;
    Ok(ws)
}

/// 32 bytes from the OS: the seed of each machine (the core draws no randomness itself).
fn os_seed() -> Result<[u8; 32], rand_core::Error> {
    let mut seed = [0u8; 32];
    OsRng.try_fill_bytes(&mut seed)?;
    Ok(seed)
}
