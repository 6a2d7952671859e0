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

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::frame::FrameDecoder;
    use crate::noise::{CertDetails, CertError};

    const NOW: u64 = 1_750_000_000;

    /// A server with static key `server_static` and a chain signed by `root_private`.
    fn server(
        root_private: &[u8; 32],
        server_static: &KeyPair,
        rng: &mut ChaCha20Rng,
    ) -> Responder {
        let inter = KeyPair::generate(rng);
        let chain = CertDetails::sign_chain(
            root_private,
            &CertDetails {
                serial: 7,
                issuer_serial: 0,
                key: *inter.public_bytes(),
                not_before: NOW - 100,
                not_after: NOW + 100,
            },
            &inter.private_bytes(),
            &CertDetails {
                serial: 8,
                issuer_serial: 7,
                key: *server_static.public_bytes(),
                not_before: NOW - 100,
                not_after: NOW + 100,
            },
        );
        NoiseHandshake::responder(server_static.clone(), rng, chain)
    }

    fn payload_of(wire: &[u8], server_side: bool) -> Vec<u8> {
        let mut dec = if server_side {
            FrameDecoder::expecting_intro()
        } else {
            FrameDecoder::new()
        };
        dec.push(wire);
        dec.next_frame().unwrap().unwrap().to_vec()
    }

    struct Setup {
        rng: ChaCha20Rng,
        root: KeyPair,
        trust: TrustAnchor,
        client_static: KeyPair,
        server_static: KeyPair,
    }

    fn setup(seed: u8) -> Setup {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let root = KeyPair::generate(&mut rng);
        let trust = TrustAnchor::new(*root.public_bytes(), 0);
        let client_static = KeyPair::generate(&mut rng);
        let server_static = KeyPair::generate(&mut rng);
        Setup {
            rng,
            root,
            trust,
            client_static,
            server_static,
        }
    }

    /// Runs the client up to the ServerHello; returns the server's reply payload and states.
    fn to_server_hello(s: &mut Setup) -> (Vec<u8>, AwaitServerHello, AwaitClientFinish) {
        let client = NoiseHandshake::initiator(s.client_static.clone(), &mut s.rng);
        let srv = server(&s.root.private_bytes(), &s.server_static, &mut s.rng);
        let (hello, client) = client.client_hello();
        let (server_hello, srv) = srv.read_client_hello(&payload_of(&hello, true)).unwrap();
        (payload_of(&server_hello, false), client, srv)
    }

    #[test]
    fn loopback_handshake_and_transport() {
        let mut s = setup(1);
        let (server_hello, client, srv) = to_server_hello(&mut s);
        let client = client
            .read_server_hello(&server_hello, NOW, &s.trust)
            .unwrap();
        assert_eq!(client.server_static(), s.server_static.public_bytes());
        assert_eq!(client.cert_chain().leaf.serial, 8);
        let (finish, mut ct) = client.client_finish(b"client payload").unwrap();
        let done = srv.read_client_finish(&payload_of(&finish, false)).unwrap();
        assert_eq!(&done.client_static, s.client_static.public_bytes());
        assert_eq!(done.client_payload, b"client payload");
        let mut st = done.transport;
        assert_eq!(ct.handshake_hash(), st.handshake_hash());
        for i in 0u8..3 {
            let f = ct.encrypt(&[0, i]).unwrap();
            assert_eq!(st.decrypt_frame(&f).unwrap(), [0, i]);
            let f = st.encrypt(&[0, i, i]).unwrap();
            assert_eq!(ct.decrypt_frame(&f).unwrap(), [0, i, i]);
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let hello = |seed| {
            let mut s = setup(seed);
            NoiseHandshake::initiator(s.client_static.clone(), &mut s.rng)
                .client_hello()
                .0
        };
        assert_eq!(hello(3), hello(3));
        assert_ne!(hello(3), hello(4));
    }

    #[test]
    fn man_in_the_middle_with_own_root_refused() {
        let mut s = setup(2);
        // The attacker answers with his own static key and a chain from his own root: the Noise
        // part succeeds, but the chain does not lead to the anchor the client trusts.
        let mut mitm = setup(9);
        for trust in [s.trust, TrustAnchor::WHATSAPP] {
            let client = NoiseHandshake::initiator(s.client_static.clone(), &mut s.rng);
            let (hello, client) = client.client_hello();
            let attacker = server(
                &mitm.root.private_bytes(),
                &mitm.server_static,
                &mut mitm.rng,
            );
            let (reply, _) = attacker
                .read_client_hello(&payload_of(&hello, true))
                .unwrap();
            assert_eq!(
                client
                    .read_server_hello(&payload_of(&reply, false), NOW, &trust)
                    .unwrap_err(),
                HandshakeError::Certificate(CertError::IntermediateSignature)
            );
        }
    }

    #[test]
    fn mitm_reusing_the_real_chain_with_his_own_key_refused() {
        let mut s = setup(5);
        // The attacker replays a genuine chain (for the real server key) but must use his own
        // static key, since he lacks the real one's private half.
        let real_chain = CertDetails::sign_chain(
            &s.root.private_bytes(),
            &CertDetails {
                serial: 7,
                issuer_serial: 0,
                key: *KeyPair::from_private_bytes([0x22; 32]).public_bytes(),
                not_before: 0,
                not_after: u64::MAX,
            },
            &[0x22; 32],
            &CertDetails {
                serial: 1,
                issuer_serial: 7,
                key: *s.server_static.public_bytes(),
                not_before: 0,
                not_after: u64::MAX,
            },
        );
        let attacker_static = KeyPair::generate(&mut s.rng);
        let attacker = NoiseHandshake::responder(attacker_static, &mut s.rng, real_chain);
        let client = NoiseHandshake::initiator(s.client_static.clone(), &mut s.rng);
        let (hello, client) = client.client_hello();
        let (reply, _) = attacker
            .read_client_hello(&payload_of(&hello, true))
            .unwrap();
        assert_eq!(
            client
                .read_server_hello(&payload_of(&reply, false), NOW, &s.trust)
                .unwrap_err(),
            HandshakeError::Certificate(CertError::LeafKeyMismatch)
        );
    }

    /// Re-encodes a ServerHello after `edit`.
    fn edited(server_hello: &[u8], edit: impl FnOnce(&mut ServerHello)) -> Vec<u8> {
        let mut msg = HandshakeMessage::decode(server_hello).unwrap();
        edit(msg.server_hello.as_mut().unwrap());
        msg.encode_to_vec()
    }

    #[test]
    fn malformed_server_hello_refused() {
        type Edit = fn(&mut ServerHello);
        let cases: [(Edit, HandshakeError); 6] = [
            (
                |h| h.ephemeral = None,
                HandshakeError::MissingField {
                    field: "serverHello.ephemeral",
                },
            ),
            (
                |h| h.r#static = None,
                HandshakeError::MissingField {
                    field: "serverHello.static",
                },
            ),
            (
                |h| h.payload = None,
                HandshakeError::MissingField {
                    field: "serverHello.payload",
                },
            ),
            (
                |h| h.ephemeral = Some(Bytes::from_static(&[1; 31])),
                HandshakeError::BadLength {
                    field: "serverHello.ephemeral",
                    len: 31,
                    expected: 32,
                },
            ),
            (
                |h| h.ephemeral = Some(Bytes::from_static(&[0; 32])),
                HandshakeError::WeakKey,
            ),
            (
                |h| {
                    let mut p = h.payload.clone().unwrap().to_vec();
                    p[0] ^= 1;
                    h.payload = Some(p.into());
                },
                HandshakeError::Decrypt,
            ),
        ];
        for (i, (edit, expected)) in cases.into_iter().enumerate() {
            let mut s = setup(10 + u8::try_from(i).unwrap());
            let (reply, client, _) = to_server_hello(&mut s);
            let reply = edited(&reply, edit);
            assert_eq!(
                client.read_server_hello(&reply, NOW, &s.trust).unwrap_err(),
                expected,
                "case {i}"
            );
        }

        let mut s = setup(30);
        let (reply, client, _) = to_server_hello(&mut s);
        // Truncated: the protobuf ends inside a field.
        assert_eq!(
            client
                .read_server_hello(&reply[..reply.len() - 1], NOW, &s.trust)
                .unwrap_err(),
            HandshakeError::Protobuf {
                what: "HandshakeMessage"
            }
        );
        let (_, client, _) = to_server_hello(&mut s);
        // A valid protobuf without a ServerHello.
        let other = HandshakeMessage {
            client_hello: Some(ClientHello::default()),
            ..HandshakeMessage::default()
        };
        assert_eq!(
            client
                .read_server_hello(&other.encode_to_vec(), NOW, &s.trust)
                .unwrap_err(),
            HandshakeError::MissingField {
                field: "serverHello"
            }
        );
        let (reply, client, _) = to_server_hello(&mut s);
        // Expired at the injected time.
        assert!(matches!(
            client.read_server_hello(&reply, NOW + 1000, &s.trust),
            Err(HandshakeError::Certificate(
                CertError::IntermediateValidity { .. }
            ))
        ));
    }

    #[test]
    fn malformed_client_messages_refused_by_responder() {
        let mut s = setup(40);
        let srv = server(&s.root.private_bytes(), &s.server_static, &mut s.rng);
        assert_eq!(
            srv.read_client_hello(&[0x12, 0x05]).unwrap_err(),
            HandshakeError::Protobuf {
                what: "HandshakeMessage"
            }
        );
        let srv = server(&s.root.private_bytes(), &s.server_static, &mut s.rng);
        assert_eq!(
            srv.read_client_hello(&[]).unwrap_err(),
            HandshakeError::MissingField {
                field: "clientHello"
            }
        );

        let (reply, client, srv) = to_server_hello(&mut s);
        let client = client.read_server_hello(&reply, NOW, &s.trust).unwrap();
        let (finish, _) = client.client_finish(b"p").unwrap();
        let mut msg = HandshakeMessage::decode(payload_of(&finish, false).as_slice()).unwrap();
        msg.client_finish.as_mut().unwrap().payload = None;
        assert_eq!(
            srv.read_client_finish(&msg.encode_to_vec()).unwrap_err(),
            HandshakeError::MissingField {
                field: "clientFinish.payload"
            }
        );

        let (reply, client, srv) = to_server_hello(&mut s);
        let client = client.read_server_hello(&reply, NOW, &s.trust).unwrap();
        let (finish, _) = client.client_finish(b"p").unwrap();
        let mut msg = HandshakeMessage::decode(payload_of(&finish, false).as_slice()).unwrap();
        let mut st = msg
            .client_finish
            .as_ref()
            .unwrap()
            .r#static
            .clone()
            .unwrap()
            .to_vec();
        st[40] ^= 0x80;
        msg.client_finish.as_mut().unwrap().r#static = Some(st.into());
        assert_eq!(
            srv.read_client_finish(&msg.encode_to_vec()).unwrap_err(),
            HandshakeError::Decrypt
        );
    }

    #[test]
    fn routing_info_goes_in_front_but_not_into_the_prologue() {
        let mut s = setup(50);
        let client = NoiseHandshake::initiator(s.client_static.clone(), &mut s.rng)
            .with_routing_info(&[1, 2, 3])
            .unwrap();
        let (hello, client) = client.client_hello();
        assert_eq!(
            hello.get(..10),
            Some(&[0x45, 0x44, 0, 1, 0, 0, 3, 1, 2, 3][..])
        );
        let srv = server(&s.root.private_bytes(), &s.server_static, &mut s.rng);
        let (reply, srv) = srv.read_client_hello(&payload_of(&hello, true)).unwrap();
        let client = client
            .read_server_hello(&payload_of(&reply, false), NOW, &s.trust)
            .unwrap();
        let (finish, ct) = client.client_finish(b"").unwrap();
        let done = srv.read_client_finish(&payload_of(&finish, false)).unwrap();
        assert_eq!(ct.handshake_hash(), done.transport.handshake_hash());
    }

    #[test]
    fn debug_redacts_private_keys() {
        let s = setup(60);
        let init = NoiseHandshake::initiator_fixed_ephemeral_for_testing_only(
            s.client_static.clone(),
            KeyPair::from_private_bytes([5; 32]),
        );
        let dbg = format!("{init:?}");
        assert!(!dbg.contains(&hex::encode(&s.client_static.private_bytes()[..])));
        assert!(dbg.contains("[redacted]"));
    }
}
