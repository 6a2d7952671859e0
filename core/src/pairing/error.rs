//! Error types of the pairing module.

use crate::binary::Node;

/// Why a ClientPayload, a phone-code pairing step, or the phone side of a pairing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// A login payload was asked for, but the credentials hold no device identity yet.
    #[error("not paired: no device identity")]
    NotPaired,
    /// The device JID's user part is not a phone number (login needs it as `username`).
    #[error("device jid user is not numeric")]
    NonNumericUser,
    /// The phone number given for phone-code pairing is not acceptable.
    #[error("invalid phone number: {reason}")]
    InvalidPhone {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A custom linking code is not 8 characters of the linking-code alphabet.
    #[error("invalid linking code")]
    InvalidCode,
    /// A node from the peer lacks a part or has a part of the wrong shape.
    #[error("malformed {what}")]
    Malformed {
        /// The node, attribute or field that is missing or wrong.
        what: &'static str,
    },
    /// The companion_hello result carried no pairing ref, or none was stored yet.
    #[error("no link code pairing ref")]
    NoRef,
    /// The notification's pairing ref is not the one the server gave us.
    #[error("link code pairing ref mismatch")]
    RefMismatch,
    /// A wrapped ephemeral key is shorter than salt ‖ iv ‖ key (80 bytes).
    #[error("wrapped key too short")]
    WrappedKeyTooShort,
    /// A peer public key is a low-order point (the X25519 result would be all zeros).
    #[error("weak peer public key")]
    WeakKey,
    /// The key bundle did not decrypt (wrong code, or tampered data).
    #[error("key bundle decryption failed")]
    Decrypt,
    /// The server answered an IQ with an error (code 0 when it gave none).
    #[error("server answered error {code}")]
    ServerError {
        /// The `code` attribute of `<error>`.
        code: u16,
    },
    /// The decrypted key bundle names other identity keys than the ones exchanged.
    #[error("key bundle identity mismatch")]
    BundleMismatch,
}

/// Why a pair-success was refused (PAIRING.md §2.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    /// The HMAC over the signed device identity does not match our adv secret: the pairing was
    /// not made with our QR code (or phone-code secret).
    #[error("hmac mismatch")]
    HmacMismatch,
    /// The account signature over the device identity does not verify.
    #[error("account signature mismatch")]
    SignatureMismatch,
    /// Our device signature in a pair-device-sign reply does not verify (phone side only).
    #[error("device signature mismatch")]
    DeviceSignatureMismatch,
    /// A node, attribute or protobuf is missing or malformed.
    #[error("malformed {what}")]
    Malformed {
        /// The node, attribute or field that is missing or wrong.
        what: &'static str,
    },
    /// The IQ does not come from `s.whatsapp.net`.
    #[error("pair-success not from the server")]
    NotFromServer,
}

impl PairError {
    /// The `code` and `text` of the error IQ sent back for this refusal (PAIRING.md §2.4 step 8):
    /// 401 for authentication failures, 500 `internal-error` for anything else.
    pub fn reply_code(&self) -> (u16, &'static str) {
        match self {
            Self::HmacMismatch => (401, "hmac-mismatch"),
            Self::SignatureMismatch | Self::DeviceSignatureMismatch => (401, "signature-mismatch"),
            Self::Malformed { .. } | Self::NotFromServer => (500, "internal-error"),
        }
    }
}

/// A refused pair-success: why, and the error IQ to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pair-success refused: {reason}")]
pub struct PairRefused {
    /// Why it was refused.
    pub reason: PairError,
    /// `<iq to="s.whatsapp.net" type="error" id=ID><error code=… text=…/></iq>`, or `None` when
    /// the IQ had no `id` to answer. Boxed to keep the error small.
    pub reply: Option<Box<Node>>,
}

/// Why a QR string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QrError {
    /// It does not start with `https://wa.me/settings/linked_devices#`, nor has the four parts
    /// of the older form.
    #[error("missing qr link prefix")]
    MissingPrefix,
    /// It has the link prefix but not exactly five comma-separated parts after it.
    #[error("wrong number of qr parts")]
    PartCount,
    /// The ref is empty.
    #[error("empty qr ref")]
    EmptyRef,
    /// A key part is not standard base64 of 32 bytes.
    #[error("bad qr {what} key")]
    BadKey {
        /// `noise`, `identity` or `adv`.
        what: &'static str,
    },
    /// The platform type code is empty.
    #[error("empty qr platform")]
    EmptyPlatform,
}
