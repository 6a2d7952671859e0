//! Pairing a companion device with a WhatsApp account, and the ClientPayload of every connection
//! (PAIRING.md).
//!
//! Everything here is synchronous and pure: nodes and credentials in, nodes, payload bytes and
//! new credential parts out. Randomness comes from the caller's [`rand_core::CryptoRngCore`] and
//! time as arguments, so a seeded generator reproduces every output.
//!
//! - [`registration_payload`] / [`login_payload`]: the ClientPayload sent in the Noise
//!   `ClientFinish`, before and after pairing (§1), shaped by a [`ClientConfig`].
//! - QR pairing (§2): [`PairDevice`] reads the refs of the pair-device IQ, [`qr_string`] makes the
//!   QR text for each ref, shown for [`qr_ref_timeout`].
//! - Phone-code pairing (§3): [`PhoneCodePairing`] makes the code and the two IQs, and turns the
//!   server's notification into a new adv secret.
//! - Both end in a pair-success, checked and signed by [`handle_pair_success`] (§2.4).
//! - [`phone`]: the primary device's side of all of this, for tests and the simulator.

mod adv;
mod code;
mod error;
mod payload;
pub mod phone;
mod qr;
mod util;

pub use adv::{PairSuccess, error_reply, handle_pair_success};
pub use code::{
    LINK_CODE_ALPHABET, LINK_CODE_LEN, LINK_CODE_PBKDF2_ROUNDS, PhoneCodePairing,
    WRAPPED_BUNDLE_LEN, WRAPPED_KEY_LEN, encode_link_code, format_link_code, validate_phone,
};
pub use error::{PairError, PairRefused, PairingError, QrError};
pub use payload::{
    ClientConfig, DEFAULT_BROWSER_DISPLAY, DEFAULT_OS, WA_WEB_VERSION, device_props,
    handled_history_sync, login_client_payload, login_payload, registration_client_payload,
    registration_payload, whatsmeow_history_sync,
};
pub use qr::{
    PairDevice, QR_FIRST_REF_TIMEOUT, QR_NEXT_REF_TIMEOUT, QR_PREFIX, QrParts, parse_qr,
    qr_platform_code, qr_ref_timeout, qr_string, qr_string_with_code,
};
