//! amarula: a WhatsApp Web multi-device client library.
//!
//! This crate is the one applications add. It wraps the sans-IO core ([`core`]) in an async
//! [`Client`] driven by a background task on tokio ([`tokio::connect`], feature `tokio`, on by
//! default) or smol ([`smol::connect`], feature `smol`), with a [`CredentialStore`] that keeps
//! the device's credentials between runs. It also re-exports the protobuf types ([`proto`]).
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use amarula::core::machine::Event;
//! use amarula::store::FileStore;
//! use amarula::{ClientConfig, ClientEvent};
//!
//! let (client, mut events) =
//!     amarula::tokio::connect(ClientConfig::default(), FileStore::new("creds.json")).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         ClientEvent::Event(Event::PairingQr { qr, .. }) => println!("scan: {qr}"),
//!         ClientEvent::Event(Event::LoggedIn { .. }) => client.stop().await,
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # How the driver works
//! One task owns the [`ConnectionMachine`](core::machine::ConnectionMachine). It waits for
//! whichever comes first of a WebSocket message, the machine's next deadline, or a command
//! from a [`Client`] handle; feeds it to the machine; then applies every output in order:
//! frames are written to the socket, events that must be persisted
//! (`CredentialsChanged`, `MessageCached`) are written to the store before anything after
//! them, and the rest go to [`Events`] or to the call waiting for them. When the machine
//! closes, the driver closes the socket and follows the machine's reconnect decision with a
//! new machine built from the old one's session.
//!
//! The core needs nothing of a runtime, so a program can also drive it from a loop of its own:
//! see `examples/custom_loop.rs` (blocking std sockets, no async runtime).
//!
//! # Runtimes
//! The drive loop is written once; each runtime supplies connect, sleep, spawn and the wait
//! step (`tokio::select!` or `futures_lite::future::or`). The [`Client`] and [`Events`] handles
//! work from any executor, whichever runtime drives the connection.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(any(feature = "tokio", feature = "smol")),
    allow(
        dead_code,
        reason = "without a runtime feature only the store and the types are usable"
    )
)]

pub use amarula_core as core;
pub use amarula_proto as proto;

mod client;
mod driver;
#[cfg(feature = "postgres")]
pub mod fleet;
mod gate;
pub mod media;
mod ops;
#[cfg(feature = "smol")]
pub mod smol;
mod status;
pub mod store;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use amarula_core::content::build::{MessageRef, Quote, Text};
pub use amarula_core::content::{Contact, Location};
pub use amarula_core::machine::SentPoll;
pub use client::{
    Client, ClientConfig, ClientError, ClientEvent, Events, WHATSAPP_URL, WS_FRAGMENT_SIZE,
};
pub use driver::Error;
pub use gate::{DEFAULT_CONCURRENT_LOGINS, LoginGate};
pub use status::ClientState;
pub use store::{CredentialStore, FileStore, MemoryStore, StoreError};
#[cfg(feature = "postgres")]
pub use store::{PostgresDatabase, PostgresStore};
#[cfg(feature = "sqlite")]
pub use store::{SqliteDatabase, SqliteStore};
