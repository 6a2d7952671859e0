//! Signal helpers for tests that play an encrypting client by hand against the simulator:
//! fetch a device's prekey bundle with the `encrypt` IQ (SESSION.md §10.3), pad and encrypt a
//! [`e2e::Message`], and build the `<enc>` nodes of §8.1.
//!
//! ```no_run
//! # async fn f(c: &mut amarula_tests::sim::client::TestClient,
//! #            me: &amarula_core::signal::Identity, bob: &amarula_tests::sim::Account)
//! #            -> Result<(), Box<dyn std::error::Error>> {
//! use amarula_core::signal::{IdentityPolicy, SessionRecord};
//! use amarula_tests::sim::peer;
//! use rand_core::SeedableRng;
//! let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
//! let phone = bob.devices()[0].clone();
//! let bundle = peer::fetch_bundle(c, &phone, std::time::Duration::from_secs(5)).await?;
//! let mut session = SessionRecord::new();
//! session.process_bundle(me, &bundle, IdentityPolicy::default(), &mut rng)?;
//! let ct = session.encrypt(&peer::pad_message(&peer::text("hello")))?;
//! let enc = peer::enc(ct.enc_type(), ct.serialized());
//! # let _ = enc; Ok(()) }
//! ```

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{IqRequest, IqResult};
use amarula_core::signal::{PreKeyBundle, PublicKey};
use amarula_proto::Message as _;
use amarula_proto::e2e;

use super::client::TestClient;

/// Why a bundle could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The IQ failed, timed out or the connection ended.
    #[error("bundle query failed: {0}")]
    Query(String),
    /// The answer lacks a part or has one of the wrong size; names it.
    #[error("malformed bundle: {0}")]
    Malformed(&'static str),
    /// The server has no keys for this device (`<error>` in the `<user>`).
    #[error("no bundle for this device")]
    NotFound,
}

/// `<iq xmlns="encrypt" type="get"><key><user jid=D/>…</key></iq>` for `devices`.
pub fn bundle_request(devices: &[Jid]) -> IqRequest {
    IqRequest::iq(
        "encrypt",
        "get",
        Jid::server(),
        vec![
            Node::new("key").children(
                devices
                    .iter()
                    .map(|d| Node::new("user").attr("jid", d.clone()))
                    .collect::<Vec<_>>(),
            ),
        ],
    )
}

fn bytes<'a>(node: &'a Node, tag: &'static str) -> Result<&'a [u8], BundleError> {
    node.child(tag)
        .and_then(Node::content_bytes)
        .ok_or(BundleError::Malformed(tag))
}

/// A 3-byte (key id) or 4-byte (registration id) big-endian number.
fn be(b: &[u8], len: usize, what: &'static str) -> Result<u32, BundleError> {
    if b.len() != len {
        return Err(BundleError::Malformed(what));
    }
    Ok(b.iter().fold(0u32, |n, x| (n << 8) | u32::from(*x)))
}

fn key(b: &[u8], what: &'static str) -> Result<PublicKey, BundleError> {
    PublicKey::from_bytes_lenient(b, what).map_err(|_| BundleError::Malformed(what))
}

/// The bundle in one `<user>` of a bundle answer.
///
/// # Errors
/// A `<user>` with an `<error>`, or a missing or malformed part.
pub fn parse_bundle(user: &Node) -> Result<PreKeyBundle, BundleError> {
    if user.child("error").is_some() {
        return Err(BundleError::NotFound);
    }
    // WM accepts the parts nested in a `<keys>` child too.
    let user = user.child("keys").unwrap_or(user);
    let skey = user.child("skey").ok_or(BundleError::Malformed("skey"))?;
    let signature: [u8; 64] = bytes(skey, "signature")?
        .try_into()
        .map_err(|_| BundleError::Malformed("signature"))?;
    let prekey = match user.child("key") {
        Some(k) => Some((
            be(bytes(k, "id")?, 3, "prekey id")?,
            key(bytes(k, "value")?, "prekey")?,
        )),
        None => None,
    };
    Ok(PreKeyBundle {
        registration_id: be(bytes(user, "registration")?, 4, "registration")?,
        identity_key: key(bytes(user, "identity")?, "identity")?,
        signed_prekey_id: be(bytes(skey, "id")?, 3, "signed prekey id")?,
        signed_prekey: key(bytes(skey, "value")?, "signed prekey")?,
        signed_prekey_signature: signature,
        prekey,
    })
}

/// Fetches the bundle of `device` over `client`, waiting at most `within`.
///
/// # Errors
/// The query failed, or the answer has no usable bundle for `device`.
pub async fn fetch_bundle(
    client: &mut TestClient,
    device: &Jid,
    within: Duration,
) -> Result<PreKeyBundle, BundleError> {
    let reply = client
        .query(bundle_request(std::slice::from_ref(device)), within)
        .await
        .map_err(|e| BundleError::Query(e.to_string()))?;
    let IqResult::Ok(reply) = reply else {
        return Err(BundleError::Query(format!("{reply:?}")));
    };
    let user = reply
        .child("list")
        .and_then(|l| l.child("user"))
        .ok_or(BundleError::Malformed("user"))?;
    parse_bundle(user)
}

/// Pads a v=2 plaintext (SESSION.md §8.4) with n bytes of value n, n = 1 + (length mod 16)
/// (deterministic, so tests replay).
pub fn pad(plain: &[u8]) -> Vec<u8> {
    let n = 1 + (plain.len() % 16) as u8;
    let mut out = plain.to_vec();
    out.extend(std::iter::repeat_n(n, usize::from(n)));
    out
}

/// The padded serialization of `message`, ready to encrypt.
pub fn pad_message(message: &e2e::Message) -> Vec<u8> {
    pad(&message.encode_to_vec())
}

/// A text message (`conversation`).
pub fn text(s: &str) -> e2e::Message {
    e2e::Message {
        conversation: Some(s.to_owned()),
        ..e2e::Message::default()
    }
}

/// A message carrying only the sender-key distribution `skdm` (its serialized bytes) for
/// `group`.
pub fn skdm_message(group: &Jid, skdm: &[u8]) -> e2e::Message {
    e2e::Message {
        sender_key_distribution_message: Some(e2e::SenderKeyDistributionMessage {
            group_id: Some(group.to_string()),
            axolotl_sender_key_distribution_message: Some(skdm.to_vec().into()),
        }),
        ..e2e::Message::default()
    }
}

/// `<enc v="2" type=kind>ciphertext</enc>`.
pub fn enc(kind: &str, ciphertext: &[u8]) -> Node {
    Node::new("enc")
        .attr("v", "2")
        .attr("type", kind)
        .bytes(ciphertext.to_vec())
}

/// `<participants><to jid=D>enc</to>…</participants>`.
pub fn participants(encs: impl IntoIterator<Item = (Jid, Node)>) -> Node {
    Node::new("participants").children(
        encs.into_iter()
            .map(|(jid, enc)| Node::new("to").attr("jid", jid).children([enc]))
            .collect::<Vec<_>>(),
    )
}
