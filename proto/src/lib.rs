//! Protobuf types of the WhatsApp Web multi-device protocol.
//!
//! The types are generated at build time by [`prost`] from the `.proto` files kept in this
//! crate's folder (compiled with `protox`, so no system `protoc` is needed):
//!
//! - amarula's own files, package `wa`, re-exported at the crate root: the Noise handshake,
//!   `ClientPayload`, certificates, ADV identities, `DeviceProps`, the libsignal wire messages
//!   and amarula's storage records for Signal state;
//! - the complete upstream WhatsApp Web schema vendored from whatsmeow (`whatsmeow/README.md`
//!   names the revision), one module per upstream package, with short names for the ones the
//!   library uses: [`e2e`] (the end-to-end `Message` and all its content kinds), [`common`]
//!   (`MessageKey`), [`history_sync`], [`sync_action`] and [`server_sync`] (app state),
//!   [`mms_retry`] (media re-upload) and [`lid_migration`].
//!
//! Byte fields are [`bytes::Bytes`](prost::bytes::Bytes), so decoding from a `Bytes` buffer does
//! not copy them. Fields the schema does not know are skipped by the decoder: keep the raw bytes
//! when they must survive.

#![forbid(unsafe_code)]

/// Every generated package, as modules named after the package (snake case).
#[allow(
    missing_docs,
    reason = "generated code: documented by the .proto files"
)]
#[allow(unreachable_pub, reason = "generated code")]
#[allow(clippy::all, reason = "generated code")]
#[allow(clippy::use_self, reason = "generated code")]
#[allow(unused_qualifications, reason = "generated code")]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

pub use generated::wa;
pub use generated::wa_common as common;
pub use generated::wa_mms_retry as mms_retry;
pub use generated::wa_web_protobuf_lid_migration_sync_payload as lid_migration;
pub use generated::wa_web_protobuf_sync_action as sync_action;
pub use generated::wa_web_protobufs_e2e as e2e;
pub use generated::wa_web_protobufs_history_sync as history_sync;
pub use generated::wa_web_protobufs_server_sync as server_sync;
pub use prost::Message;
pub use wa::*;
