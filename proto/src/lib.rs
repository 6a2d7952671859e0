//! Protobuf types of the WhatsApp Web multi-device protocol.
//!
//! The types are generated at build time by [`prost`] from the `.proto` files kept in this crate's
//! folder (compiled with `protox`, so no system `protoc` is needed). All messages live in one
//! protobuf package, `wa`, with upstream message names and field numbers; they are re-exported at
//! the crate root.
//!
//! Byte fields are [`bytes::Bytes`](prost::bytes::Bytes), so decoding from a `Bytes` buffer does
//! not copy them.

#![forbid(unsafe_code)]

/// Generated types of the `wa` protobuf package.
#[allow(
    missing_docs,
    reason = "generated code: documented by the .proto files"
)]
#[allow(unreachable_pub, reason = "generated code")]
#[allow(clippy::all, reason = "generated code")]
pub mod wa {
    include!(concat!(env!("OUT_DIR"), "/wa.rs"));
}

pub use prost::Message;
pub use wa::*;
