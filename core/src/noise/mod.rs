//! The Noise XX handshake and the encrypted transport of WhatsApp Web (TRANSPORT.md §3–§6).
//!
//! The protocol is `Noise_XX_25519_AESGCM_SHA256` with the prologue `57 41 06 03`
//! ([`INTRO_HEADER`](crate::frame::INTRO_HEADER)), carried in `HandshakeMessage` protobufs:
//!
//! ```text
//! client                                            server
//! ClientHello { ephemeral }                 ─────▶
//!                                           ◀─────  ServerHello { ephemeral, enc(static),
//!                                                                 enc(CertChain) }
//! ClientFinish { enc(static), enc(ClientPayload) } ─────▶
//! ══════ transport: AES-256-GCM, one key and one u32 counter per direction ══════
//! ```
//!
//! The client side is a typestate, so that steps cannot be skipped or reordered and a transport
//! only exists once the handshake is complete:
//!
//! [`NoiseHandshake::initiator`] → [`Initiator::client_hello`] →
//! [`AwaitServerHello::read_server_hello`] (decrypts the server static key, verifies the
//! certificate chain against a [`TrustAnchor`] at the given time) →
//! [`SendClientFinish::client_finish`] → [`NoiseTransport`].
//!
//! The server side ([`NoiseHandshake::responder`]), built on the same symmetric state, exists for
//! the loopback server simulator and the tests.
//!
//! Nothing here draws randomness or reads a clock: ephemeral keys come from a caller's
//! [`CryptoRngCore`](rand_core::CryptoRngCore) (or, for replaying recorded transcripts, from a
//! constructor whose name says it is for testing only) and the time for the certificate check is
//! an argument. Private keys are zeroized on drop and never printed by `Debug`.

mod cert;
mod error;
mod handshake;
mod keys;
mod symmetric;
mod transport;

pub use cert::{CertDetails, TrustAnchor, VerifiedCertChain, verify_cert_chain};
pub use error::{CertError, HandshakeError, TransportError};
pub use handshake::{
    AwaitClientFinish, AwaitServerHello, ClientFinished, Initiator, NoiseHandshake, Responder,
    SendClientFinish,
};
pub use keys::KeyPair;
pub use symmetric::{NOISE_PROTOCOL_NAME, TAG_LEN};
pub use transport::NoiseTransport;
