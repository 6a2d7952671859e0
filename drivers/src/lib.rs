//! amarula: a WhatsApp Web multi-device client library.
//!
//! This crate is the one applications add. It re-exports the sans-IO core ([`core`]) and the
//! protobuf types ([`proto`]); the async drivers (tokio, smol), the `Client` facade and the
//! durable store are built on top of them.

#![forbid(unsafe_code)]

pub use amarula_core as core;
pub use amarula_proto as proto;
