//! The primary phone (device 0) of each account as a Signal endpoint: its keys, published like
//! any device's (SESSION.md §10.3), and the receiving half of the decrypt loop (§9.2), so tests
//! can check what a client encrypted for the phone.
//!
//! The phone never connects. A copy of a message routed to device 0 is decrypted here, at once,
//! and the outcome becomes a [`SimEvent::PhoneMessage`] or [`SimEvent::PhoneUndecryptable`].
//! Everything it keeps is bounded: sessions and sender keys are least-recently-used tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use amarula_core::binary::Node;
use amarula_core::content::is_key_distribution_only;
use amarula_core::credentials::SignedPreKey;
use amarula_core::jid::Jid;
use amarula_core::noise::KeyPair;
use amarula_core::signal::{
    Identity, IdentityPolicy, PreKey, PreKeyBundle, PreKeySignalMessage,
    SenderKeyDistributionMessage, SenderKeyRecord, SessionRecord, SignalError,
    generate_registration_id,
};
use amarula_proto::Message as _;
use amarula_proto::e2e;
use rand_chacha::ChaCha20Rng;

use super::SimEvent;
use super::state::{self, KeyStore};

/// One-time prekeys the phone publishes when its account is created.
pub(crate) const PHONE_PREKEYS: u32 = 50;
/// Peer devices the phone keeps a session with (least recently used dropped first).
const MAX_SESSIONS: usize = 256;
/// (group, sender device) pairs the phone keeps a sender key for.
const MAX_SENDER_KEYS: usize = 256;

/// A small least-recently-used table: a lookup moves the entry to the back, an insert past the
/// capacity drops the front.
struct Lru<K, V> {
    entries: Vec<(K, V)>,
    cap: usize,
}

impl<K: PartialEq, V: Default> Lru<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            entries: Vec::new(),
            cap,
        }
    }

    /// The entry of `key`, if any, without touching the order.
    fn peek(&self, key: &K) -> Option<&V> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The entry of `key`, created empty when missing.
    fn entry(&mut self, key: K) -> &mut V {
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let e = self.entries.remove(i);
                self.entries.push(e);
            }
            None => {
                if self.entries.len() >= self.cap {
                    self.entries.remove(0);
                }
                self.entries.push((key, V::default()));
            }
        }
        &mut self
            .entries
            .last_mut()
            .expect("the entry was just moved or pushed to the back")
            .1
    }
}

/// The phone's Signal state: identity, signed prekey, the private halves of its one-time
/// prekeys, and what it learned from senders.
pub(crate) struct PhoneSignal {
    identity: Identity,
    signed: SignedPreKey,
    one_time: BTreeMap<u32, PreKey>,
    sessions: Lru<Jid, SessionRecord>,
    sender_keys: Lru<(Jid, Jid), SenderKeyRecord>,
    /// Per group, the devices that got the phone's own sender key.
    skdm_sent: HashMap<Jid, HashSet<Jid>>,
}

impl fmt::Debug for PhoneSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneSignal")
            .field("registration_id", &self.identity.registration_id)
            .field("one_time_left", &self.one_time.len())
            .field("sessions", &self.sessions.entries.len())
            .field("sender_keys", &self.sender_keys.entries.len())
            .finish_non_exhaustive()
    }
}

/// 3-byte big-endian key id (SESSION.md §10).
fn key_id(id: u32) -> Vec<u8> {
    id.to_be_bytes()[1..].to_vec()
}

impl PhoneSignal {
    /// New keys for a phone whose identity key is the account key (the account signature key
    /// of every companion's ADV identity is the phone's identity key), and the [`KeyStore`]
    /// that publishes them.
    pub(crate) fn generate(account_key: &KeyPair, rng: &mut ChaCha20Rng) -> (Self, KeyStore) {
        let identity = Identity {
            key_pair: account_key.clone(),
            registration_id: generate_registration_id(rng),
        };
        let signed = identity.signed_prekey(1, rng);
        let batch = PreKey::generate_batch(1, PHONE_PREKEYS, rng);
        let store = KeyStore {
            registration: Some(identity.registration_id.to_be_bytes().to_vec()),
            identity: Some(identity.key_pair.public_bytes().to_vec()),
            signed: Some(state::PreKey {
                id: key_id(signed.id),
                value: signed.key_pair.public_bytes().to_vec(),
                signature: Some(signed.signature.to_vec()),
            }),
            one_time: batch
                .iter()
                .map(|k| state::PreKey {
                    id: key_id(k.id),
                    value: k.key_pair.public_bytes().to_vec(),
                    signature: None,
                })
                .collect(),
        };
        let phone = Self {
            identity,
            signed,
            one_time: batch.into_iter().map(|k| (k.id, k)).collect(),
            sessions: Lru::new(MAX_SESSIONS),
            sender_keys: Lru::new(MAX_SENDER_KEYS),
            skdm_sent: HashMap::new(),
        };
        (phone, store)
    }

    /// One-time prekeys whose private half the phone still holds.
    pub(crate) fn one_time_left(&self) -> usize {
        self.one_time.len()
    }

    /// Whether the phone has a session with `device` to encrypt on.
    pub(crate) fn has_session(&self, device: &Jid) -> bool {
        self.sessions
            .peek(device)
            .is_some_and(SessionRecord::has_session)
    }

    /// Encrypts a padded plaintext for `device`, starting a session from `bundle` first when
    /// given. Returns the enc type (`pkmsg` or `msg`) and the ciphertext.
    pub(crate) fn encrypt_pairwise(
        &mut self,
        device: &Jid,
        bundle: Option<&PreKeyBundle>,
        padded: &[u8],
        rng: &mut ChaCha20Rng,
    ) -> Result<(&'static str, Vec<u8>), String> {
        let record = self.sessions.entry(device.clone());
        if let Some(bundle) = bundle {
            record
                .process_bundle(&self.identity, bundle, IdentityPolicy::AcceptAndReport, rng)
                .map_err(err)?;
        }
        let ct = record.encrypt(padded).map_err(err)?;
        Ok((ct.enc_type(), ct.serialized().to_vec()))
    }

    /// The devices of `devices` that lack the phone's sender key for `group`; they count as
    /// having it from now on.
    pub(crate) fn take_skdm_targets(&mut self, group: &Jid, devices: &[Jid]) -> Vec<Jid> {
        let sent = self.skdm_sent.entry(group.clone()).or_default();
        devices
            .iter()
            .filter(|d| sent.insert((*d).clone()))
            .cloned()
            .collect()
    }

    /// The phone's SKDM for `group` (its own sender key, `me` the phone's JID), created on
    /// first use.
    pub(crate) fn own_skdm(&mut self, group: &Jid, me: &Jid, rng: &mut ChaCha20Rng) -> Vec<u8> {
        self.sender_keys
            .entry((group.clone(), me.clone()))
            .own_distribution_message(rng)
            .serialized()
            .to_vec()
    }

    /// A padded plaintext encrypted with the phone's sender key for `group`.
    pub(crate) fn group_encrypt(
        &mut self,
        group: &Jid,
        me: &Jid,
        padded: &[u8],
    ) -> Result<Vec<u8>, String> {
        let sk = self
            .sender_keys
            .entry((group.clone(), me.clone()))
            .encrypt(padded)
            .map_err(err)?;
        Ok(sk.serialized().to_vec())
    }

    /// Decrypts one `<enc>` from `sender` (a `pkmsg` or `msg` pairwise, a `skmsg` under the
    /// sender key of `group`), returning the unpadded plaintext. A used one-time prekey is
    /// deleted here and from `published`.
    fn decrypt_enc(
        &mut self,
        enc: &Node,
        sender: &Jid,
        group: Option<&Jid>,
        published: &mut KeyStore,
        rng: &mut ChaCha20Rng,
    ) -> Result<Vec<u8>, String> {
        let bytes = enc.content_bytes().ok_or("enc without content")?;
        let plain = match enc.attr_str("type") {
            Some("pkmsg") => {
                let msg = PreKeySignalMessage::parse(bytes).map_err(err)?;
                let one_time = msg.pre_key_id.and_then(|id| self.one_time.get(&id));
                let out = self
                    .sessions
                    .entry(sender.clone())
                    .decrypt_prekey_message(
                        &self.identity,
                        &msg,
                        &self.signed,
                        one_time,
                        IdentityPolicy::AcceptAndReport,
                        rng,
                    )
                    .map_err(err)?;
                if let Some(id) = out.used_prekey {
                    self.one_time.remove(&id);
                    let wire = key_id(id);
                    published.one_time.retain(|k| k.id != wire);
                }
                out.plaintext
            }
            Some("msg") => self
                .sessions
                .entry(sender.clone())
                .decrypt(bytes, rng)
                .map_err(err)?,
            Some("skmsg") => {
                let group = group.ok_or("skmsg outside a group")?;
                self.sender_keys
                    .entry((group.clone(), sender.clone()))
                    .decrypt(bytes)
                    .map_err(err)?
            }
            other => return Err(format!("unsupported enc type {other:?}")),
        };
        // v=3 payloads (MessageTransport) are not simulated; v=2 (the default) is padded.
        match enc.attr_str("v") {
            None | Some("2") => unpad(&plain).map(<[u8]>::to_vec),
            Some(v) => Err(format!("unsupported enc v={v}")),
        }
    }

    /// Takes in the SKDM a message carries: the sender key of (its group, `sender`).
    fn process_skdm(
        &mut self,
        skdm: &e2e::SenderKeyDistributionMessage,
        sender: &Jid,
    ) -> Result<(), String> {
        let group = skdm.group_id.as_deref().ok_or("skdm without group id")?;
        let group = match group.parse::<Jid>() {
            Ok(j) if j.is_group() => j,
            _ => Jid::group(group),
        };
        let bytes = skdm
            .axolotl_sender_key_distribution_message
            .as_deref()
            .ok_or("skdm without key")?;
        let parsed = SenderKeyDistributionMessage::parse(bytes).map_err(err)?;
        self.sender_keys
            .entry((group, sender.clone()))
            .process_distribution(&parsed);
        Ok(())
    }
}

fn err(e: SignalError) -> String {
    e.to_string()
}

/// Strips the padding of a v=2 plaintext (SESSION.md §8.4): the last byte n (1..=16) says how
/// many bytes to strip, and all of them equal n.
pub(crate) fn unpad(plain: &[u8]) -> Result<&[u8], String> {
    let n = *plain.last().ok_or("empty plaintext")?;
    let keep = plain
        .len()
        .checked_sub(usize::from(n))
        .filter(|_| (1..=16).contains(&n))
        .ok_or_else(|| format!("bad padding length {n}"))?;
    if plain[keep..].iter().all(|b| *b == n) {
        Ok(&plain[..keep])
    } else {
        Err("bad padding bytes".to_owned())
    }
}

/// What the copy of a message addressed to device 0 of `account` tells the phone: `sender` is
/// the sending device, `group` the group for a group message. Returns the events to emit.
pub(crate) fn receive(
    st: &mut state::State,
    account: &str,
    copy: &Node,
    sender: &Jid,
    group: Option<&Jid>,
) -> Vec<SimEvent> {
    let state::State {
        accounts,
        rng,
        phone_media,
        ..
    } = st;
    let id = copy.attr_str("id").unwrap_or_default().to_owned();
    let Some(acc) = accounts.get_mut(account) else {
        return Vec::new();
    };
    let Some(dev0) = acc.devices.get_mut(&0) else {
        return Vec::new();
    };
    let phone = &mut acc.signal;
    let published = &mut dev0.keys;
    let undecryptable = |error: String| SimEvent::PhoneUndecryptable {
        account: account.to_owned(),
        from: sender.clone(),
        id: id.clone(),
        error,
    };
    let mut events = Vec::new();
    let encs = copy.child_nodes().iter().filter(|c| c.tag == "enc");
    for enc in encs {
        let decoded = phone
            .decrypt_enc(enc, sender, group, published, rng)
            .and_then(|plain| {
                // Content is judged on the bytes: a field no schema declares is content too.
                let content = !is_key_distribution_only(&plain);
                e2e::Message::decode(&plain[..])
                    .map(|m| (m, content))
                    .map_err(|e| format!("message protobuf: {e}"))
            });
        let (mut message, has_content) = match decoded {
            Ok(m) => m,
            Err(e) => {
                events.push(undecryptable(e));
                continue;
            }
        };
        // Our own message from another of our devices (§9.2).
        let mut destination = None;
        if let Some(dsm) = message.device_sent_message.take() {
            destination = dsm.destination_jid.and_then(|d| d.parse::<Jid>().ok());
            message = dsm.message.map(|m| *m).unwrap_or_default();
        }
        if let Some(skdm) = &message.sender_key_distribution_message {
            if let Err(e) = phone.process_skdm(skdm, sender) {
                events.push(undecryptable(format!("skdm: {e}")));
            }
        }
        if !has_content {
            continue;
        }
        let chat = match group {
            Some(g) => g.clone(),
            None if sender.user_part() == account => state::jid_attr(copy, "recipient")
                .or(destination)
                .map_or_else(|| sender.to_non_device(), |j| j.to_non_device()),
            None => sender.to_non_device(),
        };
        phone_media.record(account, &id, &message);
        events.push(SimEvent::PhoneMessage {
            account: account.to_owned(),
            from: sender.clone(),
            chat,
            id: id.clone(),
            message: Box::new(message),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding() {
        assert_eq!(unpad(&[9, 9, 2, 2]), Ok(&[9u8, 9][..]));
        assert_eq!(unpad(&[1]), Ok(&[][..]));
        assert!(unpad(&[]).is_err());
        assert!(unpad(&[5, 0]).is_err());
        assert!(unpad(&[3, 2, 2]).is_ok());
        assert!(unpad(&[1, 2]).is_err());
        assert!(unpad(&[17; 17]).is_err());
        assert!(unpad(&[4, 4, 4]).is_err());
    }
}
