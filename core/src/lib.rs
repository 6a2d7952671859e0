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
//!
//! # Panics
//! Data from the network never causes a panic: every length, count and index read from the wire
//! is checked and a typed error comes back. A panic in this crate is a bug.

#![forbid(unsafe_code)]

pub mod binary;
pub mod credentials;
pub mod frame;
pub mod jid;
pub mod machine;
pub mod noise;
pub mod pairing;
pub mod time;
pub mod xeddsa;
