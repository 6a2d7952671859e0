//! A remote Signal device for machine tests: it answers with prekey bundles, decrypts what the
//! machine encrypts for it and encrypts messages for the machine, using the core's Signal
//! layer directly (no connection).

use std::collections::HashMap;

use amarula_core::binary::Node;
use amarula_core::credentials::SignedPreKey;
use amarula_core::jid::Jid;
use amarula_core::signal::{
    Identity, IdentityPolicy, PreKey, PreKeyBundle, PreKeySignalMessage, PublicKey,
    SenderKeyDistributionMessage, SenderKeyRecord, SessionRecord, SignalError,
};
use amarula_proto::e2e::Message;
use prost::Message as _;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// One remote device.
pub struct Peer {
    /// Its device JID.
    pub jid: Jid,
    /// Its identity.
    pub identity: Identity,
    signed: SignedPreKey,
    prekeys: Vec<PreKey>,
    /// Sessions by remote device.
    pub sessions: HashMap<Jid, SessionRecord>,
    /// Sender keys by (group, sender device).
    pub sender_keys: HashMap<(Jid, Jid), SenderKeyRecord>,
    rng: ChaCha20Rng,
}

fn key_id(id: u32) -> Vec<u8> {
    id.to_be_bytes()[1..].to_vec()
}

fn unpad(p: &[u8]) -> Option<&[u8]> {
    let n = usize::from(*p.last()?);
    (n >= 1 && n <= p.len()).then(|| &p[..p.len() - n])
}

pub use crate::sim::peer::pad;

impl Peer {
    /// A device with fresh keys drawn from `seed`.
    pub fn new(jid: &str, seed: u8) -> Self {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let identity = Identity::generate(&mut rng);
        let signed = identity.signed_prekey(1, &mut rng);
        let prekeys = PreKey::generate_batch(1, 5, &mut rng);
        Self {
            jid: jid.parse().expect("a device JID"),
            identity,
            signed,
            prekeys,
            sessions: HashMap::new(),
            sender_keys: HashMap::new(),
            rng,
        }
    }

    /// `<user jid=…>` of a bundle answer, with one one-time prekey.
    pub fn bundle_node(&mut self) -> Node {
        let mut children = vec![
            Node::new("registration").bytes(self.identity.registration_id.to_be_bytes().to_vec()),
            Node::new("type").bytes(vec![5u8]),
            Node::new("identity").bytes(self.identity.public().0.to_vec()),
            Node::new("skey").children([
                Node::new("id").bytes(key_id(self.signed.id)),
                Node::new("value").bytes(self.signed.key_pair.public_bytes().to_vec()),
                Node::new("signature").bytes(self.signed.signature.to_vec()),
            ]),
        ];
        if let Some(k) = self.prekeys.first() {
            children.push(Node::new("key").children([
                Node::new("id").bytes(key_id(k.id)),
                Node::new("value").bytes(k.public().0.to_vec()),
            ]));
        }
        Node::new("user")
            .attr("jid", self.jid.clone())
            .children(children)
    }

    /// Decrypts a pairwise `<enc>` from `from` into the (unpadded) Message.
    pub fn decrypt(&mut self, from: &Jid, enc: &Node) -> Result<Message, SignalError> {
        let bytes = enc.content_bytes().unwrap_or_default();
        let record = self.sessions.entry(from.clone()).or_default();
        let plain = match enc.attr_str("type") {
            Some("pkmsg") => {
                let msg = PreKeySignalMessage::parse(bytes)?;
                let one_time = msg
                    .pre_key_id
                    .and_then(|id| self.prekeys.iter().find(|k| k.id == id));
                record
                    .decrypt_prekey_message(
                        &self.identity,
                        &msg,
                        &self.signed,
                        one_time,
                        IdentityPolicy::default(),
                        &mut self.rng,
                    )?
                    .plaintext
            }
            _ => record.decrypt(bytes, &mut self.rng)?,
        };
        let body = unpad(&plain).ok_or(SignalError::Decrypt)?;
        let message = Message::decode(body).map_err(|_| SignalError::Decrypt)?;
        if let Some(skdm) = &message.sender_key_distribution_message {
            let group: Jid = skdm
                .group_id
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|_| SignalError::Decrypt)?;
            let parsed = SenderKeyDistributionMessage::parse(
                skdm.axolotl_sender_key_distribution_message
                    .as_deref()
                    .unwrap_or_default(),
            )?;
            self.sender_keys
                .entry((group, from.clone()))
                .or_default()
                .process_distribution(&parsed);
        }
        Ok(message)
    }

    /// Decrypts a `skmsg` `<enc>` of `group` from `from`.
    pub fn decrypt_group(
        &mut self,
        group: &Jid,
        from: &Jid,
        enc: &Node,
    ) -> Result<Message, SignalError> {
        let record = self
            .sender_keys
            .get_mut(&(group.clone(), from.clone()))
            .ok_or(SignalError::NoSenderKey)?;
        let plain = record.decrypt(enc.content_bytes().unwrap_or_default())?;
        let body = unpad(&plain).ok_or(SignalError::Decrypt)?;
        Message::decode(body).map_err(|_| SignalError::Decrypt)
    }

    /// Encrypts `text` for the device `to` whose bundle is `bundle` (the first message starts
    /// the session); returns the `<enc>`.
    pub fn encrypt_text(&mut self, to: &Jid, bundle: Option<&PreKeyBundle>, text: &str) -> Node {
        let message = Message {
            conversation: Some(text.to_owned()),
            ..Message::default()
        };
        self.encrypt(to, bundle, &message.encode_to_vec())
    }

    /// Encrypts a serialized Message (padded here) for `to`.
    pub fn encrypt(&mut self, to: &Jid, bundle: Option<&PreKeyBundle>, message: &[u8]) -> Node {
        let record = self.sessions.entry(to.clone()).or_default();
        if let Some(b) = bundle {
            record
                .process_bundle(&self.identity, b, IdentityPolicy::default(), &mut self.rng)
                .expect("a valid bundle");
        }
        let ct = record.encrypt(&pad(message)).expect("a session");
        Node::new("enc")
            .attr("v", "2")
            .attr("type", ct.enc_type())
            .bytes(ct.serialized().to_vec())
    }
}

/// The bundle of a device from its prekey upload IQ (SESSION.md §10.1), with its first
/// one-time prekey.
pub fn bundle_from_upload(upload: &Node) -> PreKeyBundle {
    let bytes = |n: &Node, tag: &str| -> Vec<u8> {
        n.child(tag)
            .and_then(Node::content_bytes)
            .expect("a part of the upload")
            .to_vec()
    };
    let id3 = |b: Vec<u8>| u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let skey = upload.child("skey").expect("skey");
    let key = upload
        .child("list")
        .and_then(|l| l.child("key"))
        .expect("a one-time prekey");
    PreKeyBundle {
        registration_id: u32::from_be_bytes(
            bytes(upload, "registration").try_into().expect("4 bytes"),
        ),
        identity_key: PublicKey::from_bytes_lenient(&bytes(upload, "identity"), "identity")
            .expect("a key"),
        signed_prekey_id: id3(bytes(skey, "id")),
        signed_prekey: PublicKey::from_bytes_lenient(&bytes(skey, "value"), "skey").expect("a key"),
        signed_prekey_signature: bytes(skey, "signature").try_into().expect("64 bytes"),
        prekey: Some((
            id3(bytes(key, "id")),
            PublicKey::from_bytes_lenient(&bytes(key, "value"), "key").expect("a key"),
        )),
    }
}
