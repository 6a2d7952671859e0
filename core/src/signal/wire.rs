//! The serialized Signal messages: `msg`, `pkmsg`, `skmsg` and the sender-key distribution
//! message (vectors/README.md §3).
//!
//! Each is the version byte `0x33` followed by a protobuf; a `msg` ends with an 8-byte MAC and a
//! `skmsg` with a 64-byte signature. Parsing keeps the received bytes, because the MAC and the
//! signature cover exactly those bytes, never a re-encoding.

use amarula_proto as pb;
use prost::Message as _;
use zeroize::Zeroizing;

use super::SignalError;
use super::keys::PublicKey;
use super::pbwrite::{Fields, Sink};

/// The `SignalMessage` protobuf of a message being built.
struct SignalFields<'a> {
    ratchet_key: &'a [u8],
    counter: u32,
    previous_counter: u32,
    ciphertext: &'a [u8],
}

impl Fields for SignalFields<'_> {
    fn visit(&self, s: &mut impl Sink) {
        s.bytes(1, self.ratchet_key);
        s.uint(2, self.counter);
        s.uint(3, self.previous_counter);
        s.bytes(4, self.ciphertext);
    }
}

/// The `PreKeySignalMessage` protobuf of a message being built.
struct PreKeyFields<'a> {
    pre_key_id: Option<u32>,
    base_key: &'a [u8],
    identity_key: &'a [u8],
    message: &'a [u8],
    registration_id: u32,
    signed_pre_key_id: u32,
}

impl Fields for PreKeyFields<'_> {
    fn visit(&self, s: &mut impl Sink) {
        if let Some(id) = self.pre_key_id {
            s.uint(1, id);
        }
        s.bytes(2, self.base_key);
        s.bytes(3, self.identity_key);
        s.bytes(4, self.message);
        s.uint(5, self.registration_id);
        s.uint(6, self.signed_pre_key_id);
    }
}

/// The version byte in front of every message: message version 3 (high nibble), current
/// version 3 (low nibble).
pub const VERSION_BYTE: u8 = 0x33;
/// Length of the truncated MAC at the end of a `msg`.
pub const MAC_LEN: usize = 8;
/// Length of the signature at the end of a `skmsg`.
pub const SIGNATURE_LEN: usize = 64;

/// Checks the version byte: only protocol version 3 exists on WhatsApp.
fn check_version(bytes: &[u8]) -> Result<&[u8], SignalError> {
    let (&v, rest) = bytes.split_first().ok_or(SignalError::InvalidMessage {
        what: "empty message",
    })?;
    if v >> 4 != 3 {
        return Err(SignalError::UnsupportedVersion { version: v >> 4 });
    }
    Ok(rest)
}

fn required<T>(v: Option<T>, what: &'static str) -> Result<T, SignalError> {
    v.ok_or(SignalError::InvalidMessage { what })
}

/// A `msg`: one Double Ratchet message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalMessage {
    /// The sender's current ratchet key.
    pub ratchet_key: PublicKey,
    /// The message's index in the sender's chain.
    pub counter: u32,
    /// The length of the sender's previous chain (informational).
    pub previous_counter: u32,
    /// The AES-256-CBC ciphertext.
    pub ciphertext: Vec<u8>,
    serialized: Vec<u8>,
}

impl SignalMessage {
    /// Parses a complete `msg` (version byte, protobuf, MAC). The MAC is checked later, by
    /// the session that decrypts it.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignalError> {
        let view = SignalMessageView::parse(bytes)?;
        Ok(Self {
            ratchet_key: view.ratchet_key,
            counter: view.counter,
            previous_counter: view.previous_counter,
            ciphertext: view.ciphertext.to_vec(),
            serialized: bytes.to_vec(),
        })
    }

    /// The message as a view (what decryption works on).
    pub(crate) fn view(&self) -> SignalMessageView<'_> {
        SignalMessageView {
            ratchet_key: self.ratchet_key,
            counter: self.counter,
            previous_counter: self.previous_counter,
            ciphertext: &self.ciphertext,
            serialized: &self.serialized,
        }
    }

    /// Builds a message and its MAC with `mac_key` over both identities (sender first).
    pub(crate) fn build(
        ratchet_key: PublicKey,
        counter: u32,
        previous_counter: u32,
        ciphertext: Vec<u8>,
        mac_key: &[u8; 32],
        sender_identity: &PublicKey,
        receiver_identity: &PublicKey,
    ) -> Self {
        let ratchet = ratchet_key.serialize();
        let fields = SignalFields {
            ratchet_key: &ratchet,
            counter,
            previous_counter,
            ciphertext: &ciphertext,
        };
        let mut serialized = Vec::with_capacity(1 + fields.len() + MAC_LEN);
        serialized.push(VERSION_BYTE);
        fields.write(&mut serialized);
        let mac = compute_mac(mac_key, sender_identity, receiver_identity, &serialized);
        serialized.extend_from_slice(&mac);
        Self {
            ratchet_key,
            counter,
            previous_counter,
            ciphertext,
            serialized,
        }
    }

    /// The complete bytes (version, protobuf, MAC).
    #[must_use]
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}

/// A `msg` parsed in place: the fields of [`SignalMessage`] borrowing the received bytes, so
/// that decrypting a message copies nothing but the plaintext out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SignalMessageView<'a> {
    pub(crate) ratchet_key: PublicKey,
    pub(crate) counter: u32,
    pub(crate) previous_counter: u32,
    pub(crate) ciphertext: &'a [u8],
    serialized: &'a [u8],
}

impl<'a> SignalMessageView<'a> {
    /// Parses a complete `msg`, as [`SignalMessage::parse`] does.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, SignalError> {
        let rest = check_version(bytes)?;
        let Some(body_len) = rest.len().checked_sub(MAC_LEN) else {
            return Err(SignalError::InvalidMessage { what: "too short" });
        };
        let fields = SignalMessageFields::decode(&rest[..body_len])?;
        Ok(Self {
            ratchet_key: PublicKey::from_wire(
                required(fields.ratchet_key, "ratchet key")?,
                "ratchet key",
            )?,
            counter: required(fields.counter, "counter")?,
            previous_counter: fields.previous_counter.unwrap_or(0),
            ciphertext: required(fields.ciphertext, "ciphertext")?,
            serialized: bytes,
        })
    }

    /// Checks the MAC with `mac_key`; identities in sender, receiver order.
    pub(crate) fn verify_mac(
        &self,
        mac_key: &[u8; 32],
        sender_identity: &PublicKey,
        receiver_identity: &PublicKey,
    ) -> Result<(), SignalError> {
        // `parse` guaranteed at least 1 + MAC_LEN bytes.
        let split = self.serialized.len().saturating_sub(MAC_LEN);
        let (body, mac) = self.serialized.split_at(split);
        let expected = compute_mac(mac_key, sender_identity, receiver_identity, body);
        if super::crypto::mac_eq(&expected, mac) {
            Ok(())
        } else {
            Err(SignalError::BadMac)
        }
    }
}

/// The `SignalMessage` protobuf read in place (prost's rules: unknown fields skipped, the last
/// of a repeated field wins, a wrong wire type is an error), borrowing its bytes fields.
#[derive(Default)]
struct SignalMessageFields<'a> {
    ratchet_key: Option<&'a [u8]>,
    counter: Option<u32>,
    previous_counter: Option<u32>,
    ciphertext: Option<&'a [u8]>,
}

impl<'a> SignalMessageFields<'a> {
    fn decode(buf: &'a [u8]) -> Result<Self, SignalError> {
        Self::read(buf).ok_or(SignalError::InvalidMessage {
            what: "signal message protobuf",
        })
    }

    fn read(mut buf: &'a [u8]) -> Option<Self> {
        use prost::encoding::{
            DecodeContext, WireType, check_wire_type, decode_key, decode_varint, skip_field,
        };
        fn take<'b>(buf: &mut &'b [u8], wire: WireType) -> Option<&'b [u8]> {
            check_wire_type(WireType::LengthDelimited, wire).ok()?;
            let len = decode_varint(buf).ok()?;
            let len = usize::try_from(len).ok().filter(|l| *l <= buf.len())?;
            let (field, rest) = buf.split_at(len);
            *buf = rest;
            Some(field)
        }
        fn uint32(buf: &mut &[u8], wire: WireType) -> Option<u32> {
            check_wire_type(WireType::Varint, wire).ok()?;
            // Truncated to 32 bits, as prost reads a `uint32`.
            #[allow(clippy::cast_possible_truncation, reason = "protobuf uint32 semantics")]
            Some(decode_varint(buf).ok()? as u32)
        }
        let mut out = Self::default();
        while !buf.is_empty() {
            let (tag, wire) = decode_key(&mut buf).ok()?;
            match tag {
                1 => out.ratchet_key = Some(take(&mut buf, wire)?),
                2 => out.counter = Some(uint32(&mut buf, wire)?),
                3 => out.previous_counter = Some(uint32(&mut buf, wire)?),
                4 => out.ciphertext = Some(take(&mut buf, wire)?),
                _ => skip_field(wire, tag, &mut buf, DecodeContext::default()).ok()?,
            }
        }
        Some(out)
    }
}

/// The truncated MAC: HMAC-SHA256(mac key, sender identity ‖ receiver identity ‖ body)[..8].
fn compute_mac(
    mac_key: &[u8; 32],
    sender: &PublicKey,
    receiver: &PublicKey,
    body: &[u8],
) -> [u8; MAC_LEN] {
    let full = super::crypto::hmac(mac_key, &[&sender.serialize(), &receiver.serialize(), body]);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

/// A `pkmsg`: the first messages of a session, carrying what the receiver needs to build it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeySignalMessage {
    /// The receiver's one-time prekey that was used, if any.
    pub pre_key_id: Option<u32>,
    /// The receiver's signed prekey that was used.
    pub signed_pre_key_id: u32,
    /// The sender's base (ephemeral) key.
    pub base_key: PublicKey,
    /// The sender's identity key.
    pub identity_key: PublicKey,
    /// The sender's registration id.
    pub registration_id: u32,
    /// The inner `msg`.
    pub message: SignalMessage,
    serialized: Vec<u8>,
}

impl PreKeySignalMessage {
    /// Parses a complete `pkmsg`, including its inner `msg`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignalError> {
        let rest = check_version(bytes)?;
        let proto =
            pb::PreKeySignalMessage::decode(rest).map_err(|_| SignalError::InvalidMessage {
                what: "prekey message protobuf",
            })?;
        Ok(Self {
            pre_key_id: proto.pre_key_id,
            signed_pre_key_id: required(proto.signed_pre_key_id, "signed prekey id")?,
            base_key: PublicKey::from_wire(&required(proto.base_key, "base key")?, "base key")?,
            identity_key: PublicKey::from_wire(
                &required(proto.identity_key, "identity key")?,
                "identity key",
            )?,
            registration_id: proto.registration_id.unwrap_or(0),
            message: SignalMessage::parse(&required(proto.message, "inner message")?)?,
            serialized: bytes.to_vec(),
        })
    }

    pub(crate) fn build(
        pre_key_id: Option<u32>,
        signed_pre_key_id: u32,
        base_key: PublicKey,
        identity_key: PublicKey,
        registration_id: u32,
        message: SignalMessage,
    ) -> Self {
        let (base, identity) = (base_key.serialize(), identity_key.serialize());
        let fields = PreKeyFields {
            pre_key_id,
            base_key: &base,
            identity_key: &identity,
            message: &message.serialized,
            registration_id,
            signed_pre_key_id,
        };
        let mut serialized = Vec::with_capacity(1 + fields.len());
        serialized.push(VERSION_BYTE);
        fields.write(&mut serialized);
        Self {
            pre_key_id,
            signed_pre_key_id,
            base_key,
            identity_key,
            registration_id,
            message,
            serialized,
        }
    }

    /// The complete bytes.
    #[must_use]
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}

/// An encrypted pairwise message: `pkmsg` while the peer has not answered yet, then `msg`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CiphertextMessage {
    /// A `pkmsg`.
    PreKey(PreKeySignalMessage),
    /// A `msg`.
    Whisper(SignalMessage),
}

impl CiphertextMessage {
    /// The bytes to put in the `<enc>` node.
    #[must_use]
    pub fn serialized(&self) -> &[u8] {
        match self {
            Self::PreKey(m) => m.serialized(),
            Self::Whisper(m) => m.serialized(),
        }
    }

    /// The `type` attribute of the `<enc>` node: `pkmsg` or `msg`.
    #[must_use]
    pub fn enc_type(&self) -> &'static str {
        match self {
            Self::PreKey(_) => "pkmsg",
            Self::Whisper(_) => "msg",
        }
    }
}

/// A `skmsg`: a group message encrypted with the sender's sender key and signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderKeyMessage {
    /// The sender key id.
    pub key_id: u32,
    /// The chain iteration of the message key.
    pub iteration: u32,
    /// The AES-256-CBC ciphertext.
    pub ciphertext: Vec<u8>,
    serialized: Vec<u8>,
}

impl SenderKeyMessage {
    /// Parses a complete `skmsg` (version byte, protobuf, signature). The signature is checked
    /// by the sender-key state that decrypts it.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignalError> {
        let rest = check_version(bytes)?;
        let Some(body_len) = rest.len().checked_sub(SIGNATURE_LEN) else {
            return Err(SignalError::InvalidMessage { what: "too short" });
        };
        let proto = pb::SenderKeyMessage::decode(&rest[..body_len]).map_err(|_| {
            SignalError::InvalidMessage {
                what: "sender key message protobuf",
            }
        })?;
        Ok(Self {
            key_id: required(proto.id, "sender key id")?,
            iteration: required(proto.iteration, "iteration")?,
            ciphertext: required(proto.ciphertext, "ciphertext")?.to_vec(),
            serialized: bytes.to_vec(),
        })
    }

    pub(crate) fn build(
        key_id: u32,
        iteration: u32,
        ciphertext: Vec<u8>,
        signing_private: &[u8; 32],
    ) -> Self {
        let proto = pb::SenderKeyMessage {
            id: Some(key_id),
            iteration: Some(iteration),
            ciphertext: Some(ciphertext.clone().into()),
        };
        let mut serialized = Vec::with_capacity(1 + proto.encoded_len() + SIGNATURE_LEN);
        serialized.push(VERSION_BYTE);
        proto
            .encode(&mut serialized)
            .expect("a Vec grows as needed");
        let signature = crate::xeddsa::sign_deterministic(signing_private, &serialized);
        serialized.extend_from_slice(&signature);
        Self {
            key_id,
            iteration,
            ciphertext,
            serialized,
        }
    }

    /// Checks the signature with the sender's signing key.
    pub(crate) fn verify(&self, signing_key: &PublicKey) -> Result<(), SignalError> {
        let split = self.serialized.len().saturating_sub(SIGNATURE_LEN);
        let (body, sig) = self.serialized.split_at(split);
        let sig: &[u8; SIGNATURE_LEN] = sig.try_into().map_err(|_| SignalError::BadSignature)?;
        if signing_key.verify(body, sig) {
            Ok(())
        } else {
            Err(SignalError::BadSignature)
        }
    }

    /// The complete bytes (for the `<enc type="skmsg">` node).
    #[must_use]
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}

/// A sender-key distribution message: what a group member needs to decrypt our `skmsg`.
#[derive(Clone, PartialEq, Eq)]
pub struct SenderKeyDistributionMessage {
    /// The sender key id.
    pub key_id: u32,
    /// The iteration of `chain_key`.
    pub iteration: u32,
    /// The chain key at `iteration`.
    pub chain_key: Zeroizing<[u8; 32]>,
    /// The public key that signs the `skmsg`.
    pub signing_key: PublicKey,
    serialized: Vec<u8>,
}

impl std::fmt::Debug for SenderKeyDistributionMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKeyDistributionMessage")
            .field("key_id", &self.key_id)
            .field("iteration", &self.iteration)
            .field("chain_key", &"[redacted]")
            .field("signing_key", &self.signing_key)
            .finish()
    }
}

impl SenderKeyDistributionMessage {
    /// Parses a complete SKDM (version byte and protobuf; it is not signed).
    pub fn parse(bytes: &[u8]) -> Result<Self, SignalError> {
        let rest = check_version(bytes)?;
        let proto = pb::SignalSenderKeyDistributionMessage::decode(rest).map_err(|_| {
            SignalError::InvalidMessage {
                what: "sender key distribution protobuf",
            }
        })?;
        let chain = required(proto.chain_key, "chain key")?;
        let chain_key: [u8; 32] =
            chain[..]
                .try_into()
                .map_err(|_| SignalError::InvalidMessage {
                    what: "chain key length",
                })?;
        Ok(Self {
            key_id: required(proto.id, "sender key id")?,
            iteration: required(proto.iteration, "iteration")?,
            chain_key: Zeroizing::new(chain_key),
            signing_key: PublicKey::from_wire(
                &required(proto.signing_key, "signing key")?,
                "signing key",
            )?,
            serialized: bytes.to_vec(),
        })
    }

    pub(crate) fn build(
        key_id: u32,
        iteration: u32,
        chain_key: &[u8; 32],
        signing_key: PublicKey,
    ) -> Self {
        let proto = pb::SignalSenderKeyDistributionMessage {
            id: Some(key_id),
            iteration: Some(iteration),
            chain_key: Some(chain_key.to_vec().into()),
            signing_key: Some(signing_key.serialize().to_vec().into()),
        };
        let mut serialized = Vec::with_capacity(1 + proto.encoded_len());
        serialized.push(VERSION_BYTE);
        proto
            .encode(&mut serialized)
            .expect("a Vec grows as needed");
        Self {
            key_id,
            iteration,
            chain_key: Zeroizing::new(*chain_key),
            signing_key,
            serialized,
        }
    }

    /// The complete bytes (for `axolotlSenderKeyDistributionMessage`).
    #[must_use]
    pub fn serialized(&self) -> &[u8] {
        &self.serialized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written `msg` and `pkmsg` are prost's encoding, byte for byte.
    #[test]
    fn built_messages_are_prosts() {
        let (ratchet, ours, theirs) = (PublicKey([3; 32]), PublicKey([4; 32]), PublicKey([5; 32]));
        let msg = SignalMessage::build(ratchet, 0, 70_000, vec![6; 160], &[7; 32], &ours, &theirs);
        let proto = pb::SignalMessage {
            ratchet_key: Some(ratchet.serialize().to_vec().into()),
            counter: Some(0),
            previous_counter: Some(70_000),
            ciphertext: Some(vec![6; 160].into()),
        };
        let body = &msg.serialized()[1..msg.serialized().len() - MAC_LEN];
        assert_eq!(body, &proto.encode_to_vec()[..]);
        assert_eq!(msg.serialized().len(), msg.serialized.capacity());
        for pre_key_id in [None, Some(0x00FF_FFFF)] {
            let pk = PreKeySignalMessage::build(pre_key_id, 9, ratchet, ours, 12_345, msg.clone());
            let proto = pb::PreKeySignalMessage {
                pre_key_id,
                base_key: Some(ratchet.serialize().to_vec().into()),
                identity_key: Some(ours.serialize().to_vec().into()),
                message: Some(msg.serialized().to_vec().into()),
                registration_id: Some(12_345),
                signed_pre_key_id: Some(9),
            };
            assert_eq!(&pk.serialized()[1..], &proto.encode_to_vec()[..]);
            assert_eq!(
                PreKeySignalMessage::parse(pk.serialized()).expect("parses"),
                pk
            );
        }
    }

    /// The in-place reader accepts and refuses what prost does, with the same fields.
    #[test]
    fn signal_message_fields_read_as_prost_does() {
        let full = pb::SignalMessage {
            ratchet_key: Some(vec![5; 33].into()),
            counter: Some(300),
            previous_counter: Some(7),
            ciphertext: Some(vec![9; 48].into()),
        }
        .encode_to_vec();
        let mut inputs: Vec<Vec<u8>> = vec![
            full.clone(),
            Vec::new(),
            // An unknown varint field and an unknown bytes field, then a repeated counter.
            [
                &[0x28, 0x01, 0x32, 0x02, 0xAA, 0xBB][..],
                &full,
                &[0x10, 0x05],
            ]
            .concat(),
            // A counter wider than 32 bits (truncated), a wrong wire type, a length past the end.
            vec![0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F],
            vec![0x12, 0x01, 0x00],
            vec![0x0A, 0x05, 0x01],
            vec![0x0B, 0x0C],
        ];
        // Deterministic mutations of the full message.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let mut m = full.clone();
            for _ in 0..3 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = (x >> 8) as usize % m.len();
                m[i] = (x >> 24) as u8;
            }
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            m.truncate(m.len() - (x >> 28) as usize);
            inputs.push(m);
        }
        for input in &inputs {
            let ours = SignalMessageFields::read(input);
            let theirs = pb::SignalMessage::decode(&input[..]).ok();
            match (ours, theirs) {
                (None, None) => {}
                (Some(o), Some(t)) => {
                    assert_eq!(o.ratchet_key, t.ratchet_key.as_deref(), "{input:02x?}");
                    assert_eq!(o.counter, t.counter, "{input:02x?}");
                    assert_eq!(o.previous_counter, t.previous_counter, "{input:02x?}");
                    assert_eq!(o.ciphertext, t.ciphertext.as_deref(), "{input:02x?}");
                }
                (o, t) => panic!("{input:02x?}: ours {}, prost {}", o.is_some(), t.is_some()),
            }
        }
    }
}
