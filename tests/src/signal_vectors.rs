//! Checker for files of the `signal_vectors.json` schema (vectors/README.md §3).
//!
//! Every scenario is checked two ways, each message one case of the report:
//! - **decrypt-only**: the responder (the receiver of the first `pkmsg`) decrypts it with its
//!   recorded private keys, then every message sent to it; the initiator sets its session up
//!   from the bundle and decrypts every message sent to it. Each side's key source holds only
//!   the generated key pairs whose public keys appear in that side's own messages (its base key
//!   and its ratchet keys), in recorded order. The group part processes the SKDM and decrypts
//!   every `skmsg` with the signature checked.
//! - **replay**: one key source hands out all `generated_key_pairs` in order while the exchange
//!   is replayed; every ciphertext must match byte for byte, and the receiver must decrypt it.
//!   The group part rebuilds the sender key from the recorded seed and signing key and must
//!   reproduce the SKDM and every `skmsg`, signature included.
//!
//! Scenarios are identified by index; names only decorate the failure lines.

use std::collections::{HashMap, HashSet, VecDeque};

use amarula_core::credentials::SignedPreKey;
use amarula_core::noise::KeyPair;
use amarula_core::signal::{
    Identity, IdentityPolicy, KeySource, PreKey, PreKeyBundle, PreKeySignalMessage, PublicKey,
    SenderKeyDistributionMessage, SenderKeyMessage, SenderKeyRecord, SessionRecord, SignalMessage,
};
use rand_core::{RngCore, SeedableRng};
use serde_json::Value;

use crate::json::{arr, get, hex_at};
use crate::report::Report;

/// A key source that hands out recorded key pairs in order (then fresh ones from a fixed seed,
/// counting them), so a replay generates exactly the recorded keys.
pub struct RecordedKeys {
    pairs: VecDeque<KeyPair>,
    fallback: rand_chacha::ChaCha20Rng,
    /// How many key pairs were asked for after the recorded ones ran out.
    pub overdrawn: usize,
}

impl RecordedKeys {
    /// A source that yields `pairs` first.
    pub fn new(pairs: Vec<KeyPair>) -> Self {
        Self {
            pairs: pairs.into(),
            fallback: rand_chacha::ChaCha20Rng::from_seed([0x5A; 32]),
            overdrawn: 0,
        }
    }

    /// How many recorded pairs are left.
    pub fn remaining(&self) -> usize {
        self.pairs.len()
    }
}

impl KeySource for RecordedKeys {
    fn key_pair(&mut self) -> KeyPair {
        self.pairs.pop_front().unwrap_or_else(|| {
            self.overdrawn += 1;
            KeyPair::generate(&mut self.fallback)
        })
    }
    fn fill(&mut self, out: &mut [u8]) {
        self.fallback.fill_bytes(out);
    }
}

/// Checks every scenario of a `signal_vectors.json`-shaped file.
pub fn check(file: &Value) -> Report {
    let mut report = Report::default();
    let Some(scenarios) = file.get("scenarios").and_then(Value::as_array) else {
        report.fail("file has no `scenarios` array".to_owned());
        return report;
    };
    for (i, s) in scenarios.iter().enumerate() {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
        let mut sub = Report::default();
        match Scenario::load(s) {
            Err(e) => sub.fail(e),
            Ok(sc) => {
                decrypt_only(&sc, &mut sub);
                replay(&sc, &mut sub);
                if let Some(g) = s.get("group") {
                    group(g, &mut sub);
                }
            }
        }
        for line in &mut sub.failures {
            *line = format!("scenario {i} ({name}): {line}");
        }
        report.merge(sub);
    }
    report
}

fn u32_at(v: &Value, path: &[&str]) -> Result<u32, String> {
    get(v, path)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{} is not a u32", path.join(".")))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, String> {
    get(v, path)?
        .as_str()
        .ok_or_else(|| format!("{} is not a string", path.join(".")))
}

fn public(v: &Value, path: &[&str]) -> Result<PublicKey, String> {
    PublicKey::from_wire(&hex_at(v, path)?, "key").map_err(|e| format!("{}: {e}", path.join(".")))
}

/// A key pair from its recorded private key, checked against the recorded public key.
fn pair(v: &Value, path: &[&str]) -> Result<KeyPair, String> {
    let mut p: Vec<&str> = path.to_vec();
    p.push("private");
    let kp = KeyPair::from_private_bytes(arr::<32>(v, &p)?);
    p.pop();
    p.push("public");
    if let Ok(expected) = public(v, &p) {
        if expected != PublicKey::of(&kp) {
            return Err(format!("{} does not match its private key", p.join(".")));
        }
    }
    Ok(kp)
}

struct Party {
    identity: Identity,
    signed_prekey: SignedPreKey,
    one_time: Option<PreKey>,
}

struct Message {
    n: String,
    from: String,
    to: String,
    kind: String,
    plaintext: Vec<u8>,
    ciphertext: Vec<u8>,
}

struct Scenario {
    parties: HashMap<String, Party>,
    bundle: PreKeyBundle,
    generated: Vec<KeyPair>,
    messages: Vec<Message>,
}

impl Scenario {
    fn load(s: &Value) -> Result<Self, String> {
        let messages = get(s, &["messages"])?
            .as_array()
            .ok_or("messages is not a list")?
            .iter()
            .map(|m| {
                Ok(Message {
                    n: get(m, &["n"])?.to_string(),
                    from: str_at(m, &["from"])?.to_owned(),
                    to: str_at(m, &["to"])?.to_owned(),
                    kind: str_at(m, &["type"])?.to_owned(),
                    plaintext: hex_at(m, &["plaintext_hex"])?,
                    ciphertext: hex_at(m, &["ciphertext_hex"])?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut parties = HashMap::new();
        for m in &messages {
            for name in [&m.from, &m.to] {
                if parties.contains_key(name) {
                    continue;
                }
                let p = get(s, &[name.as_str()])?;
                let one_time = match p.get("one_time_prekey") {
                    Some(o) => Some(PreKey {
                        id: u32_at(o, &["key_id"])?,
                        key_pair: pair(o, &[])?,
                    }),
                    None => None,
                };
                parties.insert(
                    name.clone(),
                    Party {
                        identity: Identity {
                            key_pair: pair(p, &["identity_key"])?,
                            registration_id: u32_at(p, &["registration_id"])?,
                        },
                        signed_prekey: SignedPreKey {
                            id: u32_at(p, &["signed_prekey", "key_id"])?,
                            key_pair: pair(p, &["signed_prekey"])?,
                            signature: arr::<64>(p, &["signed_prekey", "signature"])?,
                        },
                        one_time,
                    },
                );
            }
        }
        let b = get(s, &["bob_bundle"])?;
        let bundle = PreKeyBundle {
            registration_id: u32_at(b, &["registration_id"])?,
            identity_key: public(b, &["identity_key"])?,
            signed_prekey_id: u32_at(b, &["signed_prekey", "key_id"])?,
            signed_prekey: public(b, &["signed_prekey", "public"])?,
            signed_prekey_signature: arr::<64>(b, &["signed_prekey", "signature"])?,
            prekey: match b.get("prekey") {
                Some(p) => Some((u32_at(p, &["key_id"])?, public(p, &["public"])?)),
                None => None,
            },
        };
        let generated = get(s, &["generated_key_pairs"])?
            .as_array()
            .ok_or("generated_key_pairs is not a list")?
            .iter()
            .map(|g| pair(g, &[]))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            parties,
            bundle,
            generated,
            messages,
        })
    }

    /// The initiator (sender of the first message, a `pkmsg`) and the responder.
    fn sides(&self) -> Result<(&str, &str), String> {
        let first = self.messages.first().ok_or("no messages")?;
        if first.kind != "pkmsg" {
            return Err("first message is not a pkmsg".into());
        }
        Ok((&first.from, &first.to))
    }

    fn party(&self, name: &str) -> Result<&Party, String> {
        self.parties
            .get(name)
            .ok_or_else(|| format!("no keys for {name}"))
    }

    /// The generated pairs whose public keys appear in `name`'s own messages, in order.
    fn keys_of(&self, name: &str) -> Vec<KeyPair> {
        let mut seen = HashSet::new();
        for m in self.messages.iter().filter(|m| m.from == name) {
            if let Ok(pk) = PreKeySignalMessage::parse(&m.ciphertext) {
                seen.insert(pk.base_key);
                seen.insert(pk.message.ratchet_key);
            } else if let Ok(msg) = SignalMessage::parse(&m.ciphertext) {
                seen.insert(msg.ratchet_key);
            }
        }
        self.generated
            .iter()
            .filter(|k| seen.contains(&PublicKey::of(k)))
            .cloned()
            .collect()
    }
}

fn hex_diff(what: &str, expected: &[u8], actual: &[u8]) -> String {
    format!(
        "{what}: expected {}, actual {}",
        hex::encode(expected),
        hex::encode(actual)
    )
}

/// Decrypts one message at its receiver; the first one is the `pkmsg` at the responder.
fn receive(
    sc: &Scenario,
    records: &mut HashMap<String, SessionRecord>,
    m: &Message,
    keys: &mut impl KeySource,
) -> Result<(), String> {
    let me = sc.party(&m.to)?;
    let record = records.entry(m.to.clone()).or_default();
    let plaintext = match m.kind.as_str() {
        "pkmsg" => {
            let msg = PreKeySignalMessage::parse(&m.ciphertext).map_err(|e| e.to_string())?;
            record
                .decrypt_prekey_message(
                    &me.identity,
                    &msg,
                    &me.signed_prekey,
                    me.one_time.as_ref(),
                    IdentityPolicy::Reject,
                    keys,
                )
                .map_err(|e| format!("decrypt: {e}"))?
                .plaintext
        }
        "msg" => record
            .decrypt(&m.ciphertext, keys)
            .map_err(|e| format!("decrypt: {e}"))?,
        other => return Err(format!("unknown message type {other}")),
    };
    if plaintext[..] != m.plaintext[..] {
        return Err(hex_diff("plaintext", &m.plaintext, &plaintext));
    }
    Ok(())
}

fn decrypt_only(sc: &Scenario, report: &mut Report) {
    let (initiator, responder) = match sc.sides() {
        Ok(s) => s,
        Err(e) => return report.fail(format!("decrypt-only: {e}")),
    };
    let mut records: HashMap<String, SessionRecord> = HashMap::new();
    let mut sources: HashMap<&str, RecordedKeys> = HashMap::new();
    for side in [initiator, responder] {
        sources.insert(side, RecordedKeys::new(sc.keys_of(side)));
    }
    // The initiator only sets its session up from the bundle (consuming its base and first
    // ratchet key); its messages are taken from the file, never encrypted here.
    let setup = (|| {
        let me = sc.party(initiator)?;
        let keys = sources.get_mut(initiator).ok_or("no key source")?;
        records
            .entry(initiator.to_owned())
            .or_default()
            .process_bundle(&me.identity, &sc.bundle, IdentityPolicy::Reject, keys)
            .map(|_| ())
            .map_err(|e| format!("process bundle: {e}"))
    })();
    if let Err(e) = setup {
        return report.fail(format!("decrypt-only: {e}"));
    }
    for m in &sc.messages {
        let r = match sources.get_mut(m.to.as_str()) {
            Some(keys) => receive(sc, &mut records, m, keys),
            None => Err(format!("unknown receiver {}", m.to)),
        };
        report.record(r.map_err(|e| format!("decrypt-only message {}: {e}", m.n)));
    }
}

fn replay(sc: &Scenario, report: &mut Report) {
    let (initiator, _) = match sc.sides() {
        Ok(s) => s,
        Err(e) => return report.fail(format!("replay: {e}")),
    };
    let mut keys = RecordedKeys::new(sc.generated.clone());
    let mut records: HashMap<String, SessionRecord> = HashMap::new();
    let setup = sc.party(initiator).and_then(|me| {
        records
            .entry(initiator.to_owned())
            .or_default()
            .process_bundle(&me.identity, &sc.bundle, IdentityPolicy::Reject, &mut keys)
            .map(|_| ())
            .map_err(|e| format!("process bundle: {e}"))
    });
    if let Err(e) = setup {
        return report.fail(format!("replay: {e}"));
    }
    for m in &sc.messages {
        let r = (|| {
            let sent = records
                .entry(m.from.clone())
                .or_default()
                .encrypt(&m.plaintext)
                .map_err(|e| format!("encrypt: {e}"))?;
            if sent.enc_type() != m.kind {
                return Err(format!(
                    "type: expected {}, actual {}",
                    m.kind,
                    sent.enc_type()
                ));
            }
            if sent.serialized() != m.ciphertext {
                return Err(hex_diff("ciphertext", &m.ciphertext, sent.serialized()));
            }
            receive(sc, &mut records, m, &mut keys)
        })();
        report.record(r.map_err(|e| format!("replay message {}: {e}", m.n)));
    }
    if keys.remaining() != 0 || keys.overdrawn != 0 {
        report.fail(format!(
            "replay: {} recorded key pairs unused, {} extra generated",
            keys.remaining(),
            keys.overdrawn
        ));
    }
}

fn group(g: &Value, report: &mut Report) {
    let messages = match get(g, &["messages"]).map(Value::as_array) {
        Ok(Some(m)) => m.as_slice(),
        _ => return report.fail("group: messages is not a list".into()),
    };
    // Decrypt-only: a member processes the SKDM and decrypts every skmsg.
    let mut member = SenderKeyRecord::new();
    let skdm = (|| {
        let bytes = hex_at(g, &["sender_key_distribution_message_hex"])?;
        let skdm = SenderKeyDistributionMessage::parse(&bytes).map_err(|e| e.to_string())?;
        if let Some(d) = g.get("sender_key_distribution_message_decoded") {
            let want = (
                u32_at(d, &["id"])?,
                u32_at(d, &["iteration"])?,
                arr::<32>(d, &["chain_key_hex"])?,
                public(d, &["signing_key_hex"])?,
            );
            let got = (
                skdm.key_id,
                skdm.iteration,
                *skdm.chain_key,
                skdm.signing_key,
            );
            if want != got {
                return Err(format!("decoded SKDM differs: {got:?}"));
            }
        }
        member.process_distribution(&skdm);
        Ok(bytes)
    })();
    report.record(
        skdm.as_ref()
            .map(|_| ())
            .map_err(|e| format!("group SKDM: {e}")),
    );
    for m in messages {
        let n = get(m, &["n"]).map(ToString::to_string).unwrap_or_default();
        let r = (|| {
            let ct = hex_at(m, &["ciphertext_hex"])?;
            let pt = hex_at(m, &["plaintext_hex"])?;
            let parsed = SenderKeyMessage::parse(&ct).map_err(|e| e.to_string())?;
            if parsed.iteration != u32_at(m, &["iteration"])? {
                return Err(format!("iteration {} differs", parsed.iteration));
            }
            let got = member.decrypt(&ct).map_err(|e| format!("decrypt: {e}"))?;
            if got[..] != pt[..] {
                return Err(hex_diff("plaintext", &pt, &got));
            }
            Ok(())
        })();
        report.record(r.map_err(|e| format!("group decrypt-only message {n}: {e}")));
    }
    // Replay: the sender's key from the recorded parts reproduces the SKDM and every skmsg.
    let mut sender = SenderKeyRecord::new();
    let setup = (|| {
        let signing = pair(g, &["signing_key"])?;
        sender.add_own(
            u32_at(g, &["key_id"])?,
            u32_at(g, &["initial_iteration"])?,
            &arr::<32>(g, &["chain_key_seed_hex"])?,
            &signing,
        );
        let mut unused = RecordedKeys::new(Vec::new());
        let ours = sender.own_distribution_message(&mut unused);
        match &skdm {
            Ok(want) if ours.serialized() != &want[..] => {
                Err(hex_diff("SKDM", want, ours.serialized()))
            }
            _ => Ok(()),
        }
    })();
    report.record(setup.map_err(|e| format!("group replay SKDM: {e}")));
    for m in messages {
        let n = get(m, &["n"]).map(ToString::to_string).unwrap_or_default();
        let r = (|| {
            let ct = hex_at(m, &["ciphertext_hex"])?;
            let pt = hex_at(m, &["plaintext_hex"])?;
            let target = u32_at(m, &["iteration"])?;
            // The sender may have skipped iterations: encrypt (and drop) until the recorded one.
            loop {
                let sent = sender.encrypt(&pt).map_err(|e| format!("encrypt: {e}"))?;
                if sent.iteration == target {
                    if sent.serialized() != ct {
                        return Err(hex_diff("skmsg", &ct, sent.serialized()));
                    }
                    return Ok(());
                }
                if sent.iteration > target {
                    return Err(format!("sender is past iteration {target}"));
                }
            }
        })();
        report.record(r.map_err(|e| format!("group replay message {n}: {e}")));
    }
}
