//! The XX handshake as typestates, initiator (client) and responder (server) (TRANSPORT.md
//! §3.3).

use std::fmt;

use amarula_proto::handshake_message::{ClientFinish, ClientHello, ServerHello};
use amarula_proto::{HandshakeMessage, Message};
use bytes::Bytes;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::cert::{TrustAnchor, VerifiedCertChain, verify_cert_chain};
use super::error::HandshakeError;
use super::keys::{Hex, KeyPair};
use super::symmetric::SymmetricState;
use super::transport::NoiseTransport;
use crate::frame::{FrameEncoder, INTRO_HEADER};

/// Entry points of the handshake. Not instantiable: use [`initiator`](Self::initiator) (the
/// client) or [`responder`](Self::responder) (a test server).
#[derive(Debug)]
pub enum NoiseHandshake {}

impl NoiseHandshake {
    /// Starts a client handshake with the long-term static noise key and a fresh ephemeral drawn
    /// from `rng`. The first frame will carry the plain intro header.
    pub fn initiator(static_key: KeyPair, rng: &mut impl CryptoRngCore) -> Initiator {
        Self::initiator_fixed_ephemeral_for_testing_only(static_key, KeyPair::generate(rng))
    }

    /// Starts a client handshake with a given ephemeral key, to replay recorded transcripts.
    /// Never use it on a real connection: reusing an ephemeral breaks forward secrecy.
    #[must_use]
    pub fn initiator_fixed_ephemeral_for_testing_only(
        static_key: KeyPair,
        ephemeral: KeyPair,
    ) -> Initiator {
        Initiator {
            s: static_key,
            e: ephemeral,
            frames: FrameEncoder::new(),
        }
    }

    /// Starts a server handshake (for the simulator and tests) with the server's static key, a
    /// fresh ephemeral from `rng`, and the `CertChain` protobuf bytes to send in ServerHello.
    pub fn responder(
        static_key: KeyPair,
        rng: &mut impl CryptoRngCore,
        cert_chain: Vec<u8>,
    ) -> Responder {
        Self::responder_fixed_ephemeral_for_testing_only(
            static_key,
            KeyPair::generate(rng),
            cert_chain,
        )
    }

    /// Starts a server handshake with a given ephemeral key, to replay recorded transcripts.
    #[must_use]
    pub fn responder_fixed_ephemeral_for_testing_only(
        static_key: KeyPair,
        ephemeral: KeyPair,
        cert_chain: Vec<u8>,
    ) -> Responder {
        Responder {
            s: static_key,
            e: ephemeral,
            cert_chain,
        }
    }
}

/// Takes a required bytes field, or names it as missing.
fn required(field: Option<Bytes>, name: &'static str) -> Result<Bytes, HandshakeError> {
    field.ok_or(HandshakeError::MissingField { field: name })
}

/// A 32-byte key from a field, or a length error naming it.
fn key32(bytes: &[u8], name: &'static str) -> Result<[u8; 32], HandshakeError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| HandshakeError::BadLength {
        field: name,
        len: bytes.len(),
        expected: 32,
    })
}

/// X25519 that refuses low-order peer keys.
fn dh(own: &KeyPair, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    own.dh(peer).ok_or(HandshakeError::WeakKey)
}

/// Parses a handshake frame payload.
fn decode_message(frame: &[u8]) -> Result<HandshakeMessage, HandshakeError> {
    HandshakeMessage::decode(frame).map_err(|_| HandshakeError::Protobuf {
        what: "HandshakeMessage",
    })
}

/// Frames a handshake message (no intro).
fn frame(msg: &HandshakeMessage) -> Result<Vec<u8>, HandshakeError> {
    Ok(FrameEncoder::without_intro().encode(&msg.encode_to_vec())?)
}

/// Client, before anything is sent.
pub struct Initiator {
    s: KeyPair,
    e: KeyPair,
    frames: FrameEncoder,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("static", &self.s)
            .field("ephemeral", &self.e)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Sends the edge-routing intro carrying `routing_info` instead of the plain one. The
    /// prologue stays the plain [`INTRO_HEADER`].
    ///
    /// # Errors
    /// [`HandshakeError::Frame`] when the routing info is 2^24 bytes or longer.
    pub fn with_routing_info(mut self, routing_info: &[u8]) -> Result<Self, HandshakeError> {
        self.frames = FrameEncoder::with_routing_info(routing_info)?;
        Ok(self)
    }

    /// Writes ClientHello: returns the first bytes to send (intro header, length, protobuf)
    /// and the state waiting for ServerHello.
    #[must_use]
    pub fn client_hello(mut self) -> (Vec<u8>, AwaitServerHello) {
        // The prologue is always the 4-byte WA header, even behind an edge-routing intro.
        let mut sym = SymmetricState::new(&INTRO_HEADER);
        sym.mix_hash(self.e.public_bytes());
        let msg = HandshakeMessage {
            client_hello: Some(ClientHello {
                ephemeral: Some(Bytes::copy_from_slice(self.e.public_bytes())),
                ..ClientHello::default()
            }),
            ..HandshakeMessage::default()
        };
        let bytes = self
            .frames
            .encode(&msg.encode_to_vec())
            .expect("a 36-byte ClientHello always fits a frame");
        let next = AwaitServerHello {
            sym,
            s: self.s,
            e: self.e,
        };
        (bytes, next)
    }
}

/// Client, ClientHello sent, waiting for ServerHello.
#[derive(Debug)]
pub struct AwaitServerHello {
    sym: SymmetricState,
    s: KeyPair,
    e: KeyPair,
}

impl AwaitServerHello {
    /// The handshake hash so far (for debugging against recorded traces).
    #[must_use]
    pub fn handshake_hash(&self) -> &[u8; 32] {
        self.sym.handshake_hash()
    }

    /// Reads ServerHello (one frame payload, without its length prefix): learns the server's
    /// ephemeral and static keys and verifies its certificate chain against `trust` at
    /// `now_unix_secs`.
    ///
    /// # Errors
    /// [`HandshakeError::Protobuf`] / [`MissingField`](HandshakeError::MissingField) /
    /// [`BadLength`](HandshakeError::BadLength) for a malformed message,
    /// [`Decrypt`](HandshakeError::Decrypt) when the encrypted fields do not open,
    /// [`WeakKey`](HandshakeError::WeakKey) for a low-order server key, and
    /// [`Certificate`](HandshakeError::Certificate) when the chain is refused.
    pub fn read_server_hello(
        mut self,
        frame: &[u8],
        now_unix_secs: u64,
        trust: &TrustAnchor,
    ) -> Result<SendClientFinish, HandshakeError> {
        let msg = decode_message(frame)?;
        let hello = msg.server_hello.ok_or(HandshakeError::MissingField {
            field: "serverHello",
        })?;
        // WM: the ephemeral must be 32 bytes, static and payload must be present.
        let re = required(hello.ephemeral, "serverHello.ephemeral")?;
        let re = key32(&re, "serverHello.ephemeral")?;
        let enc_static = required(hello.r#static, "serverHello.static")?;
        let enc_payload = required(hello.payload, "serverHello.payload")?;

        let sym = &mut self.sym;
        sym.mix_hash(&re);
        sym.mix_key(dh(&self.e, &re)?.as_slice());
        let rs = sym.decrypt_and_hash(&enc_static)?;
        let rs = key32(&rs, "serverHello.static (decrypted)")?;
        sym.mix_key(dh(&self.e, &rs)?.as_slice());
        let cert_chain = sym.decrypt_and_hash(&enc_payload)?;
        let chain = verify_cert_chain(&cert_chain, &rs, now_unix_secs, trust)?;

        Ok(SendClientFinish {
            sym: self.sym,
            s: self.s,
            re,
            rs,
            chain,
        })
    }
}

/// Client, ServerHello accepted (server key and certificate verified), ready to send
/// ClientFinish.
#[derive(Debug)]
pub struct SendClientFinish {
    sym: SymmetricState,
    s: KeyPair,
    re: [u8; 32],
    rs: [u8; 32],
    chain: VerifiedCertChain,
}

impl SendClientFinish {
    /// The server's static public key, certified by the chain.
    #[must_use]
    pub fn server_static(&self) -> &[u8; 32] {
        &self.rs
    }

    /// The verified certificate chain.
    #[must_use]
    pub fn cert_chain(&self) -> &VerifiedCertChain {
        &self.chain
    }

    /// The handshake hash so far.
    #[must_use]
    pub fn handshake_hash(&self) -> &[u8; 32] {
        self.sym.handshake_hash()
    }

    /// Writes ClientFinish carrying our static key and the `ClientPayload` protobuf bytes, and
    /// splits into the transport. Returns the frame to send (length prefix + protobuf) and the
    /// transport, whose first frames use counter 0 both ways.
    ///
    /// # Errors
    /// [`HandshakeError::Frame`] when the payload is too large for a frame, and
    /// [`HandshakeError::WeakKey`] for a low-order server ephemeral (already refused earlier in
    /// practice).
    pub fn client_finish(
        mut self,
        client_payload: &[u8],
    ) -> Result<(Vec<u8>, NoiseTransport), HandshakeError> {
        let sym = &mut self.sym;
        // The counter continues at 1 under the key of the last MixKey.
        let enc_static = sym.encrypt_and_hash(self.s.public_bytes());
        sym.mix_key(dh(&self.s, &self.re)?.as_slice());
        let enc_payload = sym.encrypt_and_hash(client_payload);
        let bytes = frame(&HandshakeMessage {
            client_finish: Some(ClientFinish {
                r#static: Some(enc_static.into()),
                payload: Some(enc_payload.into()),
                ..ClientFinish::default()
            }),
            ..HandshakeMessage::default()
        })?;
        let ((c2s, s2c), h) = self.sym.split();
        Ok((bytes, NoiseTransport::new(c2s, s2c, h)))
    }
}

/// Server, waiting for ClientHello.
pub struct Responder {
    s: KeyPair,
    e: KeyPair,
    cert_chain: Vec<u8>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("static", &self.s)
            .field("ephemeral", &self.e)
            .field("cert_chain", &Hex(&self.cert_chain))
            .finish()
    }
}

impl Responder {
    /// Reads ClientHello (the first frame payload, after the intro header and length prefix)
    /// and writes ServerHello: returns its frame (length prefix + protobuf) and the state
    /// waiting for ClientFinish.
    ///
    /// # Errors
    /// [`HandshakeError::Protobuf`] / [`MissingField`](HandshakeError::MissingField) /
    /// [`BadLength`](HandshakeError::BadLength) for a malformed ClientHello,
    /// [`WeakKey`](HandshakeError::WeakKey) for a low-order client ephemeral, and
    /// [`Frame`](HandshakeError::Frame) for a certificate chain too large for a frame.
    pub fn read_client_hello(
        self,
        frame_payload: &[u8],
    ) -> Result<(Vec<u8>, AwaitClientFinish), HandshakeError> {
        let msg = decode_message(frame_payload)?;
        let hello = msg.client_hello.ok_or(HandshakeError::MissingField {
            field: "clientHello",
        })?;
        let ie = required(hello.ephemeral, "clientHello.ephemeral")?;
        let ie = key32(&ie, "clientHello.ephemeral")?;

        let mut sym = SymmetricState::new(&INTRO_HEADER);
        sym.mix_hash(&ie);
        sym.mix_hash(self.e.public_bytes());
        sym.mix_key(dh(&self.e, &ie)?.as_slice());
        let enc_static = sym.encrypt_and_hash(self.s.public_bytes());
        sym.mix_key(dh(&self.s, &ie)?.as_slice());
        let enc_cert = sym.encrypt_and_hash(&self.cert_chain);
        let bytes = frame(&HandshakeMessage {
            server_hello: Some(ServerHello {
                ephemeral: Some(Bytes::copy_from_slice(self.e.public_bytes())),
                r#static: Some(enc_static.into()),
                payload: Some(enc_cert.into()),
                ..ServerHello::default()
            }),
            ..HandshakeMessage::default()
        })?;
        Ok((bytes, AwaitClientFinish { sym, e: self.e }))
    }
}

/// Server, ServerHello sent, waiting for ClientFinish.
#[derive(Debug)]
pub struct AwaitClientFinish {
    sym: SymmetricState,
    e: KeyPair,
}

impl AwaitClientFinish {
    /// The handshake hash so far.
    #[must_use]
    pub fn handshake_hash(&self) -> &[u8; 32] {
        self.sym.handshake_hash()
    }

    /// Reads ClientFinish (one frame payload): decrypts the client's static key and its
    /// `ClientPayload`, and splits into the server's transport.
    ///
    /// # Errors
    /// [`HandshakeError::Protobuf`] / [`MissingField`](HandshakeError::MissingField) /
    /// [`BadLength`](HandshakeError::BadLength) for a malformed message,
    /// [`Decrypt`](HandshakeError::Decrypt) when the encrypted fields do not open, and
    /// [`WeakKey`](HandshakeError::WeakKey) for a low-order client static key.
    pub fn read_client_finish(
        mut self,
        frame_payload: &[u8],
    ) -> Result<ClientFinished, HandshakeError> {
        let msg = decode_message(frame_payload)?;
        let finish = msg.client_finish.ok_or(HandshakeError::MissingField {
            field: "clientFinish",
        })?;
        let enc_static = required(finish.r#static, "clientFinish.static")?;
        let enc_payload = required(finish.payload, "clientFinish.payload")?;

        let sym = &mut self.sym;
        let client_static = sym.decrypt_and_hash(&enc_static)?;
        let client_static = key32(&client_static, "clientFinish.static (decrypted)")?;
        sym.mix_key(dh(&self.e, &client_static)?.as_slice());
        let client_payload = sym.decrypt_and_hash(&enc_payload)?.to_vec();
        let ((c2s, s2c), h) = self.sym.split();
        Ok(ClientFinished {
            client_static,
            client_payload,
            transport: NoiseTransport::new(s2c, c2s, h),
        })
    }
}

/// What the server learns from a completed handshake.
#[derive(Debug)]
#[non_exhaustive]
pub struct ClientFinished {
    /// The client's static noise public key (the one in its QR code / registration).
    pub client_static: [u8; 32],
    /// The decrypted `ClientPayload` protobuf bytes.
    pub client_payload: Vec<u8>,
    /// The server's transport: writes with the server → client key, reads the other.
    pub transport: NoiseTransport,
}
