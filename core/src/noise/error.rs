//! Errors of the handshake, the certificate check and the transport.

use crate::binary::DecodeError;
use crate::frame::FrameError;

/// Why the server's certificate chain was refused. One variant per check of TRANSPORT.md §4, in
/// the order they are made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The decrypted payload is not a `CertChain` protobuf.
    #[error("certificate chain is not a valid protobuf")]
    MalformedChain,
    /// Check 1: a certificate or one of its fields is absent (`field` names which).
    #[error("certificate chain lacks {field}")]
    Missing {
        /// e.g. `"leaf.signature"`.
        field: &'static str,
    },
    /// Check 1: a signature that is not 64 bytes long.
    #[error("{field} is {len} bytes, not 64")]
    SignatureLength {
        /// `"leaf.signature"` or `"intermediate.signature"`.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// Check 2: the intermediate is not signed by the trusted root key.
    #[error("intermediate certificate not signed by the trusted root")]
    IntermediateSignature,
    /// The intermediate's details are not a valid protobuf.
    #[error("intermediate certificate details are not a valid protobuf")]
    MalformedIntermediate,
    /// Check 3: the intermediate names another issuer than the trust anchor's.
    #[error("intermediate issuer serial {actual}, expected {expected}")]
    IntermediateIssuerSerial {
        /// The trust anchor's serial.
        expected: u32,
        /// The certificate's.
        actual: u32,
    },
    /// Check 3: the intermediate's key is not 32 bytes.
    #[error("intermediate key is {len} bytes, not 32")]
    IntermediateKeyLength {
        /// Its length.
        len: usize,
    },
    /// Check 4: the leaf is not signed by the intermediate's key.
    #[error("leaf certificate not signed by the intermediate")]
    LeafSignature,
    /// Check 5: the time is outside the intermediate's validity.
    #[error("intermediate certificate not valid at {now} (valid {not_before}..={not_after})")]
    IntermediateValidity {
        /// Unix seconds the check was made at.
        now: u64,
        /// Start of validity.
        not_before: u64,
        /// End of validity.
        not_after: u64,
    },
    /// The leaf's details are not a valid protobuf.
    #[error("leaf certificate details are not a valid protobuf")]
    MalformedLeaf,
    /// Check 6: the leaf's issuer serial is not the intermediate's serial.
    #[error("leaf issuer serial {actual}, expected the intermediate's {expected}")]
    LeafIssuerSerial {
        /// The intermediate's serial.
        expected: u32,
        /// The leaf's issuer serial.
        actual: u32,
    },
    /// Check 7: the leaf certifies another key than the server static key of the handshake.
    #[error("leaf certificate key does not match the server static key")]
    LeafKeyMismatch,
    /// Check 8: the time is outside the leaf's validity.
    #[error("leaf certificate not valid at {now} (valid {not_before}..={not_after})")]
    LeafValidity {
        /// Unix seconds the check was made at.
        now: u64,
        /// Start of validity.
        not_before: u64,
        /// End of validity.
        not_after: u64,
    },
}

/// Why a handshake failed. Any error ends the connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A handshake frame is not a valid protobuf of the expected message.
    #[error("malformed {what} protobuf")]
    Protobuf {
        /// The message that failed to parse, e.g. `"HandshakeMessage"`.
        what: &'static str,
    },
    /// A required message or field is absent (`field` names which, e.g. `"serverHello.static"`).
    #[error("handshake message lacks {field}")]
    MissingField {
        /// The protobuf path of the missing field.
        field: &'static str,
    },
    /// A key or encrypted field has the wrong length.
    #[error("{field} is {len} bytes, expected {expected}")]
    BadLength {
        /// The protobuf path of the field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The required length.
        expected: usize,
    },
    /// An AES-GCM tag did not verify: wrong keys, a tampered frame or a man in the middle.
    #[error("handshake decryption failed")]
    Decrypt,
    /// A Diffie-Hellman with a peer key gave all zeros (a low-order point).
    #[error("peer sent a weak public key")]
    WeakKey,
    /// The server's certificate chain was refused.
    #[error("bad server certificate: {0}")]
    Certificate(#[from] CertError),
    /// A frame that cannot be written (e.g. a payload of 2^24 bytes or more).
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
}

/// Why a transport frame could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The GCM tag did not verify (or the frame is shorter than a tag). Fatal: close the
    /// connection.
    #[error("frame decryption failed")]
    Decrypt,
    /// 2^32 frames went one way: the u32 nonce counter would repeat.
    #[error("nonce counter exhausted")]
    CounterExhausted,
    /// The encrypted frame would not fit the 24-bit frame length.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The decrypted frame has no flag byte, a corrupt zlib stream, or inflates past the limit.
    #[error("frame content: {0}")]
    Unpack(#[from] DecodeError),
}
