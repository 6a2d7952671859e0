//! Serialization of Signal state for the application's store: session records, sender-key
//! records and prekeys, as versioned protobuf records (`Stored*` in proto/signal.proto).
//!
//! The bytes contain private keys: keep them where the credentials are kept. Decoding checks
//! every field and its length, and applies the same bounds as the live state, so a damaged
//! store gives [`SignalError::Storage`], never a panic.

use std::collections::VecDeque;

use amarula_proto as pb;
use prost::Message as _;
use prost::bytes::Bytes;
use zeroize::Zeroizing;

use super::SignalError;
use super::group::{MAX_SENDER_KEY_STATES, SenderKeyRecord, SenderKeyState};
use super::keys::{PreKey, PublicKey};
use super::pbwrite::{Fields, Sink};
use super::ratchet::{Chain, MAX_SKIPPED_KEYS, RootKey, Skipped};
use super::session::{
    MAX_PREVIOUS_STATES, MAX_RECEIVER_CHAINS, Pending, ReceiverChain, SenderChain, SessionRecord,
    SessionState,
};
use crate::credentials::SignedPreKey;
use crate::noise::KeyPair;

/// The current version of every stored record.
const STORE_VERSION: u32 = 1;

fn bad(what: &'static str) -> SignalError {
    SignalError::Storage { what }
}

fn b32(b: Option<&Bytes>, what: &'static str) -> Result<[u8; 32], SignalError> {
    b.and_then(|b| <[u8; 32]>::try_from(&b[..]).ok())
        .ok_or_else(|| bad(what))
}

fn secret(b: Option<&Bytes>, what: &'static str) -> Result<Zeroizing<[u8; 32]>, SignalError> {
    b32(b, what).map(Zeroizing::new)
}

fn bytes(b: &[u8]) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(b))
}

fn check_version(v: Option<u32>) -> Result<(), SignalError> {
    if v == Some(STORE_VERSION) {
        Ok(())
    } else {
        Err(bad("unknown record version"))
    }
}

/// Encodes a record, zeroizing the intermediate buffer is not possible with prost's `Bytes`,
/// so the output itself is returned in a zeroizing vector.
fn encode(m: &impl prost::Message) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(m.encode_to_vec())
}

#[cfg(test)]
fn skipped_to(s: &Skipped) -> Vec<pb::stored_chain::Skipped> {
    s.iter()
        .map(|(i, seed)| pb::stored_chain::Skipped {
            index: Some(*i),
            seed: bytes(seed.as_slice()),
        })
        .collect()
}

fn skipped_from(s: &[pb::stored_chain::Skipped]) -> Result<Skipped, SignalError> {
    if s.len() > MAX_SKIPPED_KEYS {
        return Err(bad("too many skipped keys"));
    }
    s.iter()
        .map(|k| {
            Ok((
                k.index.ok_or_else(|| bad("skipped index"))?,
                secret(k.seed.as_ref(), "skipped seed")?,
            ))
        })
        .collect()
}

#[cfg(test)]
fn session_to(s: &SessionState) -> pb::StoredSession {
    pb::StoredSession {
        session_version: Some(3),
        local_identity: bytes(&s.local_identity.0),
        remote_identity: bytes(&s.remote_identity.0),
        root_key: bytes(s.root.0.as_slice()),
        previous_counter: Some(s.previous_counter),
        sender_chain: Some(pb::StoredChain {
            ratchet_public: None,
            ratchet_private: bytes(s.sender.ratchet.private_bytes().as_slice()),
            chain_key: bytes(s.sender.chain.key.as_slice()),
            index: Some(s.sender.chain.index),
            skipped: Vec::new(),
        }),
        receiver_chains: s
            .receivers
            .iter()
            .map(|r| pb::StoredChain {
                ratchet_public: bytes(&r.ratchet.0),
                ratchet_private: None,
                chain_key: bytes(r.chain.key.as_slice()),
                index: Some(r.chain.index),
                skipped: skipped_to(&r.skipped),
            })
            .collect(),
        pending: s.pending.map(|p| pb::stored_session::Pending {
            pre_key_id: p.pre_key_id,
            signed_pre_key_id: Some(p.signed_pre_key_id),
            base_key: bytes(&p.base_key.0),
        }),
        local_registration_id: Some(s.local_registration_id),
        remote_registration_id: Some(s.remote_registration_id),
        alice_base_key: bytes(&s.alice_base_key.0),
    }
}

fn session_from(s: &pb::StoredSession) -> Result<SessionState, SignalError> {
    if s.session_version != Some(3) {
        return Err(bad("session version"));
    }
    let sender = s.sender_chain.as_ref().ok_or_else(|| bad("sender chain"))?;
    if s.receiver_chains.len() > MAX_RECEIVER_CHAINS {
        return Err(bad("too many receiver chains"));
    }
    let receivers = s
        .receiver_chains
        .iter()
        .map(|r| {
            Ok(ReceiverChain {
                ratchet: PublicKey(b32(r.ratchet_public.as_ref(), "receiver ratchet")?),
                chain: Chain {
                    key: secret(r.chain_key.as_ref(), "receiver chain key")?,
                    index: r.index.ok_or_else(|| bad("receiver index"))?,
                },
                skipped: skipped_from(&r.skipped)?,
            })
        })
        .collect::<Result<VecDeque<_>, SignalError>>()?;
    let pending = match &s.pending {
        None => None,
        Some(p) => Some(Pending {
            pre_key_id: p.pre_key_id,
            signed_pre_key_id: p.signed_pre_key_id.ok_or_else(|| bad("signed prekey id"))?,
            base_key: PublicKey(b32(p.base_key.as_ref(), "pending base key")?),
        }),
    };
    Ok(SessionState {
        local_identity: PublicKey(b32(s.local_identity.as_ref(), "local identity")?),
        remote_identity: PublicKey(b32(s.remote_identity.as_ref(), "remote identity")?),
        root: RootKey(secret(s.root_key.as_ref(), "root key")?),
        previous_counter: s.previous_counter.unwrap_or(0),
        sender: SenderChain {
            ratchet: KeyPair::from_private_bytes(*secret(
                sender.ratchet_private.as_ref(),
                "sender ratchet",
            )?),
            chain: Chain {
                key: secret(sender.chain_key.as_ref(), "sender chain key")?,
                index: sender.index.ok_or_else(|| bad("sender index"))?,
            },
        },
        receivers,
        pending,
        local_registration_id: s.local_registration_id.unwrap_or(0),
        remote_registration_id: s.remote_registration_id.unwrap_or(0),
        alice_base_key: PublicKey(b32(s.alice_base_key.as_ref(), "base key")?),
    })
}

impl SessionRecord {
    /// The record as bytes for the store (contains private keys).
    #[must_use]
    ///
    /// The bytes are the `StoredSessionRecord` protobuf, written straight from the state into
    /// one buffer of the exact size (no intermediate protobuf structs or copies of the keys).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let record = RecordFields(self);
        let mut out = Zeroizing::new(Vec::with_capacity(record.len()));
        record.write(&mut out);
        out
    }

    /// A record from [`to_bytes`](Self::to_bytes) output.
    pub fn from_bytes(data: &[u8]) -> Result<Self, SignalError> {
        let r = pb::StoredSessionRecord::decode(data).map_err(|_| bad("session protobuf"))?;
        check_version(r.version)?;
        if r.previous.len() > MAX_PREVIOUS_STATES {
            return Err(bad("too many previous states"));
        }
        Ok(Self {
            current: r.current.as_ref().map(session_from).transpose()?,
            previous: r
                .previous
                .iter()
                .map(session_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl SenderKeyRecord {
    /// The record as bytes for the store (contains our signing key when it is ours).
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        encode(&pb::StoredSenderKeyRecord {
            version: Some(STORE_VERSION),
            states: self
                .states
                .iter()
                .map(|s| pb::StoredSenderKeyState {
                    key_id: Some(s.key_id),
                    iteration: Some(s.chain.index),
                    chain_key: bytes(s.chain.key.as_slice()),
                    signing_public: bytes(&s.signing_public.0),
                    signing_private: s.signing_private.as_ref().and_then(|k| bytes(k.as_slice())),
                    skipped: s
                        .skipped
                        .iter()
                        .map(|(i, seed)| pb::stored_sender_key_state::Skipped {
                            iteration: Some(*i),
                            seed: bytes(seed.as_slice()),
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// A record from [`to_bytes`](Self::to_bytes) output.
    pub fn from_bytes(data: &[u8]) -> Result<Self, SignalError> {
        let r = pb::StoredSenderKeyRecord::decode(data).map_err(|_| bad("sender key protobuf"))?;
        check_version(r.version)?;
        if r.states.len() > MAX_SENDER_KEY_STATES {
            return Err(bad("too many sender key states"));
        }
        let states = r
            .states
            .iter()
            .map(|s| {
                if s.skipped.len() > MAX_SKIPPED_KEYS {
                    return Err(bad("too many skipped keys"));
                }
                Ok(SenderKeyState {
                    key_id: s.key_id.ok_or_else(|| bad("key id"))?,
                    chain: Chain {
                        key: secret(s.chain_key.as_ref(), "chain key")?,
                        index: s.iteration.ok_or_else(|| bad("iteration"))?,
                    },
                    signing_public: PublicKey(b32(s.signing_public.as_ref(), "signing key")?),
                    signing_private: s
                        .signing_private
                        .as_ref()
                        .map(|k| secret(Some(k), "signing private"))
                        .transpose()?,
                    skipped: s
                        .skipped
                        .iter()
                        .map(|k| {
                            Ok((
                                k.iteration.ok_or_else(|| bad("skipped iteration"))?,
                                secret(k.seed.as_ref(), "skipped seed")?,
                            ))
                        })
                        .collect::<Result<_, SignalError>>()?,
                })
            })
            .collect::<Result<_, SignalError>>()?;
        Ok(Self { states })
    }
}

impl PreKey {
    /// The prekey as bytes for the store (contains the private key).
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        encode(&pb::StoredPreKey {
            version: Some(STORE_VERSION),
            id: Some(self.id),
            private: bytes(self.key_pair.private_bytes().as_slice()),
            signature: None,
        })
    }

    /// A prekey from [`to_bytes`](Self::to_bytes) output.
    pub fn from_bytes(data: &[u8]) -> Result<Self, SignalError> {
        let r = pb::StoredPreKey::decode(data).map_err(|_| bad("prekey protobuf"))?;
        check_version(r.version)?;
        Ok(Self {
            id: r.id.ok_or_else(|| bad("prekey id"))?,
            key_pair: KeyPair::from_private_bytes(*secret(r.private.as_ref(), "prekey private")?),
        })
    }
}

/// A signed prekey as bytes for the store (contains the private key).
#[must_use]
pub fn signed_prekey_to_bytes(spk: &SignedPreKey) -> Zeroizing<Vec<u8>> {
    encode(&pb::StoredPreKey {
        version: Some(STORE_VERSION),
        id: Some(spk.id),
        private: bytes(spk.key_pair.private_bytes().as_slice()),
        signature: bytes(&spk.signature),
    })
}

/// A signed prekey from [`signed_prekey_to_bytes`] output.
pub fn signed_prekey_from_bytes(data: &[u8]) -> Result<SignedPreKey, SignalError> {
    let r = pb::StoredPreKey::decode(data).map_err(|_| bad("signed prekey protobuf"))?;
    check_version(r.version)?;
    let signature: [u8; 64] = r
        .signature
        .as_ref()
        .and_then(|s| <[u8; 64]>::try_from(&s[..]).ok())
        .ok_or_else(|| bad("signed prekey signature"))?;
    Ok(SignedPreKey {
        id: r.id.ok_or_else(|| bad("signed prekey id"))?,
        key_pair: KeyPair::from_private_bytes(*secret(r.private.as_ref(), "signed prekey")?),
        signature,
    })
}

// ---- The session record written by hand ----
//
// `SessionRecord::to_bytes` runs after every message sent or received, so it writes the
// protobuf itself: each message's fields are listed once (`Fields::visit`) and visited twice,
// once to size it and once to write it, in field-number order as prost does. The output is
// byte for byte what prost gives for the `Stored*` structs (a test below checks it).

/// `StoredSessionRecord`.
struct RecordFields<'a>(&'a SessionRecord);

impl Fields for RecordFields<'_> {
    fn visit(&self, s: &mut impl Sink) {
        s.uint(1, STORE_VERSION);
        if let Some(current) = &self.0.current {
            s.message(2, &SessionFields(current));
        }
        for previous in &self.0.previous {
            s.message(3, &SessionFields(previous));
        }
    }
}

/// `StoredSession`.
struct SessionFields<'a>(&'a SessionState);

impl Fields for SessionFields<'_> {
    fn visit(&self, s: &mut impl Sink) {
        let st = self.0;
        s.uint(1, 3);
        s.bytes(2, &st.local_identity.0);
        s.bytes(3, &st.remote_identity.0);
        s.bytes(4, st.root.0.as_slice());
        s.uint(5, st.previous_counter);
        s.message(6, &SenderFields(&st.sender));
        for r in &st.receivers {
            s.message(7, &ReceiverFields(r));
        }
        if let Some(p) = &st.pending {
            s.message(8, &PendingFields(p));
        }
        s.uint(9, st.local_registration_id);
        s.uint(10, st.remote_registration_id);
        s.bytes(11, &st.alice_base_key.0);
    }
}

/// `StoredChain` of our sending chain (private ratchet key, no skipped keys).
struct SenderFields<'a>(&'a SenderChain);

impl Fields for SenderFields<'_> {
    fn visit(&self, s: &mut impl Sink) {
        s.bytes(2, self.0.ratchet.private_bytes().as_slice());
        s.bytes(3, self.0.chain.key.as_slice());
        s.uint(4, self.0.chain.index);
    }
}

/// `StoredChain` of a receiving chain.
struct ReceiverFields<'a>(&'a ReceiverChain);

impl Fields for ReceiverFields<'_> {
    fn visit(&self, s: &mut impl Sink) {
        s.bytes(1, &self.0.ratchet.0);
        s.bytes(3, self.0.chain.key.as_slice());
        s.uint(4, self.0.chain.index);
        for (index, seed) in &self.0.skipped {
            s.message(5, &SkippedFields(*index, seed));
        }
    }
}

/// `StoredChain.Skipped`.
struct SkippedFields<'a>(u32, &'a [u8; 32]);

impl Fields for SkippedFields<'_> {
    fn visit(&self, s: &mut impl Sink) {
        s.uint(1, self.0);
        s.bytes(2, self.1);
    }
}

/// `StoredSession.Pending`.
struct PendingFields<'a>(&'a Pending);

impl Fields for PendingFields<'_> {
    fn visit(&self, s: &mut impl Sink) {
        if let Some(id) = self.0.pre_key_id {
            s.uint(1, id);
        }
        s.uint(2, self.0.signed_pre_key_id);
        s.bytes(3, &self.0.base_key.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn state(
        seed: u8,
        receivers: usize,
        skipped: u32,
        pending: Option<Option<u32>>,
    ) -> SessionState {
        SessionState {
            local_identity: key(seed),
            remote_identity: key(seed + 1),
            root: RootKey(Zeroizing::new([seed + 2; 32])),
            previous_counter: u32::from(seed) * 1000,
            sender: SenderChain {
                ratchet: KeyPair::from_private_bytes([seed + 3; 32]),
                chain: Chain::new([seed + 4; 32], 300),
            },
            receivers: (0..receivers)
                .map(|r| ReceiverChain {
                    ratchet: key(seed + 5 + r as u8),
                    chain: Chain::new([seed + 6; 32], 200_000 + r as u32),
                    skipped: (0..skipped)
                        .map(|i| (i * 70, Zeroizing::new([i as u8; 32])))
                        .collect(),
                })
                .collect(),
            pending: pending.map(|pre_key_id| Pending {
                pre_key_id,
                signed_pre_key_id: 0x00AB_CDEF,
                base_key: key(seed + 9),
            }),
            local_registration_id: 16_000,
            remote_registration_id: 3,
            alice_base_key: key(seed + 10),
        }
    }

    /// The hand-written encoding is prost's, byte for byte, and reads back.
    #[test]
    fn session_record_bytes_are_prosts() {
        let records = [
            SessionRecord::new(),
            SessionRecord {
                current: Some(state(1, 1, 0, None)),
                previous: VecDeque::new(),
            },
            SessionRecord {
                current: Some(state(20, 5, 40, Some(Some(7_000_000)))),
                previous: (0..3)
                    .map(|i| state(40 + i * 12, usize::from(i), u32::from(i) * 3, Some(None)))
                    .collect(),
            },
            SessionRecord {
                current: None,
                previous: [state(100, 2, 2, None)].into(),
            },
        ];
        for r in &records {
            let prost = encode(&pb::StoredSessionRecord {
                version: Some(STORE_VERSION),
                current: r.current.as_ref().map(session_to),
                previous: r.previous.iter().map(session_to).collect(),
            });
            let ours = r.to_bytes();
            assert_eq!(*ours, *prost);
            assert_eq!(ours.capacity(), ours.len(), "sized exactly");
            let back = SessionRecord::from_bytes(&ours).expect("reads back");
            assert_eq!(*back.to_bytes(), *ours);
        }
    }
}
