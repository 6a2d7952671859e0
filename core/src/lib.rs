//! amarula-core: the sans-IO core of amarula, a WhatsApp Web multi-device client.
//!
//! # Sans-IO
//! Nothing in this crate does IO, spawns a task, reads a clock or draws OS randomness. Bytes read
//! from the socket, the current time and random seeds come in as arguments; frames to write,
//! events and deadlines come out. The same inputs therefore always give the same outputs, and a
//! recorded conversation replays bit for bit in a test.
//!
//! # Layers
//! - [`binary`]: the WhatsApp binary node codec ("WABinary"): [`binary::Node`], the encoder, a
//!   zero-copy decoder, and the token tables.
//! - [`jid`]: WhatsApp ids ([`jid::Jid`]) in their textual and wire forms.
//! - [`frame`]: the 3-byte length framing and the intro header.
//! - [`noise`]: the Noise XX handshake and the encrypted transport, with the server certificate
//!   check.
//! - [`xeddsa`]: curve25519 (XEdDSA-style) signatures used by certificates and pairing.
//! - [`credentials`] and [`pairing`]: the device's long-term keys, the ClientPayload, QR and
//!   phone-code pairing.
//! - [`signal`]: the Signal protocol (X3DH, Double Ratchet, sender keys) for end-to-end
//!   encryption, as pure functions over records the caller persists.
//! - [`machine`]: the [`machine::ConnectionMachine`], which owns a whole server conversation,
//!   end-to-end messaging included (prekeys, device lists, fan-out, groups, receive, retries).
//! - [`iq`]: typed IQs, one file per namespace (groups, usync, privacy, blocklist, profile,
//!   logout): request builders and answer parsers. [`notify`]: typed group notifications and
//!   calls.
//! - [`appstate`]: app state ("syncd"): sync keys, MACs, the LTHash, decoding and encoding
//!   snapshots and patches, typed mutations.
//! - [`persist`]: what the machine hands out for the store ([`persist::Change`]) and asks it to
//!   load ([`persist::LoadRequest`]).
//! - [`time`]: the injected monotonic instant and wall-clock anchor.
//!
//! # Run loop
//! A driver owns one [`machine::ConnectionMachine`] per socket. After every call it drains
//! [`poll_output`](machine::ConnectionMachine::poll_output) to `None`, applying each output in
//! order, then waits for socket bytes, a command, or the instant of
//! [`poll_timeout`](machine::ConnectionMachine::poll_timeout):
//!
//! ```no_run
//! use amarula_core::credentials::Credentials;
//! use amarula_core::machine::{Config, ConnectionMachine, Event, Output, Reconnect, Session};
//! use amarula_core::time::{Clock, Instant};
//! use rand_core::SeedableRng;
//! # fn socket_read() -> Vec<u8> { Vec::new() }
//! # fn socket_write(_: &[u8]) {}
//! # fn persist(_: &Credentials) {}
//! # fn store(_: &amarula_core::persist::Change) {}
//! # fn lookup(r: &amarula_core::persist::LoadRequest) -> amarula_core::persist::Loaded {
//! #     amarula_core::persist::Loaded::nothing_for(r) }
//! # fn now() -> Instant { Instant::ZERO }
//! # fn unix_ms() -> u64 { 0 }
//! # fn seed() -> [u8; 32] { [0; 32] }
//!
//! let config = Config::default();
//! // A real program fills the seeds from the OS; the core itself never does.
//! let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed());
//! let mut session = Session::new(Credentials::generate(&mut rng), &config);
//! loop {
//!     let clock = Clock { at: now(), unix_ms: unix_ms() };
//!     let mut machine = ConnectionMachine::new(config.clone(), session, clock, seed());
//!     let mut reconnect = Reconnect::Never;
//!     'conn: loop {
//!         while let Some(output) = machine.poll_output() {
//!             match output {
//!                 Output::Transmit(frame) => socket_write(&frame),
//!                 // Persist before applying any later output.
//!                 Output::Event(Event::CredentialsChanged(creds)) => persist(&creds),
//!                 Output::Event(Event::Persist(change)) => store(&change),
//!                 // Records the machine needs: answer from the store (work waits until then).
//!                 Output::Event(Event::Load(request)) => machine.provide(now(), lookup(&request)),
//!                 Output::Event(Event::Message(m)) => {
//!                     println!("{}: {:?}", m.sender, m.text());
//!                     // Once handled durably: the delivery receipt (its acknowledgement) leaves.
//!                     if let Some(token) = m.ack {
//!                         let _ = machine.confirm(now(), token, amarula_core::machine::Confirm::Ack);
//!                     }
//!                 }
//!                 Output::Event(Event::Closed { reconnect: r, .. }) => {
//!                     reconnect = r;
//!                     break 'conn;
//!                 }
//!                 Output::Event(other) => println!("{other:?}"),
//!             }
//!         }
//!         // Wait for the socket or for machine.poll_timeout(), then feed what happened:
//!         let bytes = socket_read();
//!         machine.handle_input(now(), &bytes);
//!         machine.handle_timeout(now());
//!     }
//!     session = machine.into_session();
//!     if reconnect == Reconnect::Never {
//!         break;
//!     }
//! }
//! ```
//!
//! # Time and randomness
//! Every input carries `now` ([`time::Instant`], a point on the driver's monotonic clock); wall
//! time comes from the [`time::Clock`] anchor given at connect. Randomness comes from a 32-byte
//! seed per connection. `core/clippy.toml` forbids clock reads and OS randomness in this crate.
//!
//! # Panics
//! Data from the network never causes a panic: every length, count and index read from the wire
//! is checked and a typed error comes back. A panic in this crate is a bug.

#![forbid(unsafe_code)]

pub mod appstate;
pub mod binary;
pub mod content;
pub mod credentials;
pub mod frame;
pub mod history;
pub mod iq;
pub mod jid;
pub mod machine;
pub mod media;
pub mod noise;
pub mod notify;
pub mod pairing;
pub mod persist;
pub mod signal;
pub mod time;
pub mod xeddsa;
