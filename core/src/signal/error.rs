//! Errors of the Signal layer.

/// Why a Signal operation failed.
///
/// Crypto failures are coarse on purpose ([`BadMac`](Self::BadMac), [`Decrypt`](Self::Decrypt)):
/// they say nothing an attacker could use. Protocol problems get a named variant so the
/// messaging layer can answer them (a retry receipt, a new session, a user-visible warning).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The message MAC did not verify.
    #[error("bad message mac")]
    BadMac,
    /// The ciphertext did not decrypt (wrong length or bad padding).
    #[error("decryption failed")]
    Decrypt,
    /// A signature (signed prekey or sender-key message) did not verify.
    #[error("bad signature")]
    BadSignature,
    /// The message is malformed; `what` names the part.
    #[error("invalid message: {what}")]
    InvalidMessage {
        /// The missing or malformed part.
        what: &'static str,
    },
    /// A public key is malformed or unusable (wrong length or type byte, or a low-order point).
    #[error("invalid key: {what}")]
    InvalidKey {
        /// Which key.
        what: &'static str,
    },
    /// The message uses a protocol version other than 3.
    #[error("unsupported message version {version}")]
    UnsupportedVersion {
        /// The version nibble found.
        version: u8,
    },
    /// There is no session to encrypt with or decrypt from.
    #[error("no session")]
    NoSession,
    /// The one-time prekey the message names is not available.
    #[error("unknown prekey {id}")]
    UnknownPreKey {
        /// The prekey id of the message.
        id: u32,
    },
    /// The signed prekey the message names is not the one given.
    #[error("unknown signed prekey {id}")]
    UnknownSignedPreKey {
        /// The signed prekey id of the message.
        id: u32,
    },
    /// The peer's identity key differs from the stored one and the policy rejects changes.
    #[error("untrusted identity")]
    UntrustedIdentity,
    /// The message key of this counter was already used (a replay or a duplicate delivery).
    #[error("duplicate message {counter}")]
    DuplicateMessage {
        /// The counter (or sender-key iteration) of the message.
        counter: u32,
    },
    /// The message is further ahead of the chain than we are willing to compute.
    #[error("message too far in the future ({jump} steps)")]
    TooFarInFuture {
        /// How many chain steps it would take.
        jump: u32,
    },
    /// No sender key with this id is known.
    #[error("unknown sender key {key_id}")]
    UnknownSenderKey {
        /// The key id of the message.
        key_id: u32,
    },
    /// We have no sender key of our own to encrypt with.
    #[error("no own sender key")]
    NoSenderKey,
    /// Stored state did not decode; `what` names the part.
    #[error("corrupt stored state: {what}")]
    Storage {
        /// The missing or malformed part.
        what: &'static str,
    },
}
