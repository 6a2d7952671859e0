//! The primary device's side of pairing, for tests and the server simulator.
//!
//! A real companion never runs this code: it is what the phone (and the server relaying for it)
//! does, written down so that tests can pair end to end and the simulator can play the phone.
//! It follows the same protocol rules as the companion side and checks what the companion sends.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use amarula_proto::{AdvDeviceIdentity, AdvEncryptionType, AdvSignedDeviceIdentity};
use amarula_proto::{AdvSignedDeviceIdentityHmac, Message};
use bytes::Bytes;
use hmac::Mac;
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::adv::{account_signature_message, device_signature_message, hmac_of};
use super::code::{
    WRAPPED_BUNDLE_LEN, WRAPPED_KEY_LEN, bundle_key, derive_adv_secret, normalize_code, unwrap_key,
    wrap_key,
};
use super::error::{PairError, PairingError};
use super::util::{Hex, array32, child_bytes, iq_id};
use crate::binary::Node;
use crate::jid::Jid;
use crate::noise::KeyPair;
use crate::xeddsa;

/// What the phone puts into a pair-success besides the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSuccessSpec {
    /// The id of the pair-success IQ.
    pub iq_id: String,
    /// The companion's new phone-number device JID, e.g. `15551234567:12@s.whatsapp.net`.
    pub device_jid: Jid,
    /// The companion's LID device JID.
    pub lid: Option<Jid>,
    /// `ADVDeviceIdentity.rawID`.
    pub raw_id: u32,
    /// `ADVDeviceIdentity.timestamp` (Unix seconds).
    pub timestamp: u64,
    /// `ADVDeviceIdentity.keyIndex`.
    pub key_index: u32,
    /// `<platform name=…>`.
    pub platform: String,
    /// `<biz name=…>`, for business accounts.
    pub business_name: Option<String>,
    /// A hosted account: sets `accountType` and `deviceType` to HOSTED, which switches the HMAC
    /// and the account signature to their `06 05` prefixes.
    pub hosted: bool,
    /// `<client-props>`: serialized `ClientPairingProps` (e.g. `isChatDbLidMigrated`).
    pub client_props: Option<Vec<u8>>,
}

impl PairSuccessSpec {
    /// A spec for an ordinary Android account with the given ids and no LID, business name or
    /// hosting.
    pub fn new(iq_id: &str, device_jid: Jid, key_index: u32, timestamp: u64) -> Self {
        Self {
            iq_id: iq_id.to_owned(),
            device_jid,
            lid: None,
            raw_id: 1,
            timestamp,
            key_index,
            platform: "android".to_owned(),
            business_name: None,
            hosted: false,
            client_props: None,
        }
    }
}

/// The `ADVDeviceIdentity` bytes of `spec`.
pub fn device_identity_details(spec: &PairSuccessSpec) -> Vec<u8> {
    let hosted = spec.hosted.then_some(AdvEncryptionType::Hosted as i32);
    AdvDeviceIdentity {
        raw_id: Some(spec.raw_id),
        timestamp: Some(spec.timestamp),
        key_index: Some(spec.key_index),
        account_type: hosted,
        device_type: hosted,
    }
    .encode_to_vec()
}

/// Signs `details` for the companion with the account key: an `ADVSignedDeviceIdentity` with
/// `details`, `accountSignatureKey` and `accountSignature` over
/// `06 00|06 05 ‖ details ‖ companion identity`.
pub fn account_sign(
    account_identity: &KeyPair,
    details: &[u8],
    companion_identity_pub: &[u8; 32],
    hosted_device: bool,
    rng: &mut impl CryptoRngCore,
) -> AdvSignedDeviceIdentity {
    let mut random = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(random.as_mut_slice());
    let signature = xeddsa::sign(
        &account_identity.private_bytes(),
        &account_signature_message(hosted_device, details, companion_identity_pub),
        &random,
    );
    AdvSignedDeviceIdentity {
        details: Some(Bytes::copy_from_slice(details)),
        account_signature_key: Some(Bytes::copy_from_slice(account_identity.public_bytes())),
        account_signature: Some(Bytes::copy_from_slice(&signature)),
        device_signature: None,
    }
}

/// Wraps a signed identity in the HMAC container keyed with the companion's adv secret (with the
/// `06 05` prefix and `accountType = HOSTED` when `hosted`).
pub fn hmac_wrap(
    signed: &AdvSignedDeviceIdentity,
    adv_secret: &[u8; 32],
    hosted: bool,
) -> AdvSignedDeviceIdentityHmac {
    let signed_bytes = signed.encode_to_vec();
    let mac = hmac_of(adv_secret, hosted, &signed_bytes)
        .finalize()
        .into_bytes();
    AdvSignedDeviceIdentityHmac {
        details: Some(signed_bytes.into()),
        hmac: Some(Bytes::copy_from_slice(&mac)),
        account_type: hosted.then_some(AdvEncryptionType::Hosted as i32),
    }
}

/// The pair-success IQ carrying `container` as its device identity.
pub fn pair_success_node(spec: &PairSuccessSpec, container: &[u8]) -> Node {
    let mut device = Node::new("device").attr("jid", &spec.device_jid);
    if let Some(lid) = &spec.lid {
        device = device.attr("lid", lid);
    }
    let mut children = vec![
        Node::new("device-identity").bytes(Bytes::copy_from_slice(container)),
        device,
        Node::new("platform").attr("name", spec.platform.as_str()),
    ];
    if let Some(biz) = &spec.business_name {
        children.push(Node::new("biz").attr("name", biz.as_str()));
    }
    if let Some(props) = &spec.client_props {
        children.push(Node::new("client-props").bytes(props.clone()));
    }
    Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "set")
        .attr("id", spec.iq_id.as_str())
        .attr("t", spec.timestamp.to_string())
        .children([Node::new("pair-success").children(children)])
}

/// A complete, valid pair-success IQ for the companion whose identity key is
/// `companion_identity_pub` and whose adv secret is `adv_secret` (from its QR code or the
/// phone-code exchange), signed by the account key `account_identity`.
pub fn sign_pair_success(
    spec: &PairSuccessSpec,
    account_identity: &KeyPair,
    companion_identity_pub: &[u8; 32],
    adv_secret: &[u8; 32],
    rng: &mut impl CryptoRngCore,
) -> Node {
    let details = device_identity_details(spec);
    let signed = account_sign(
        account_identity,
        &details,
        companion_identity_pub,
        spec.hosted,
        rng,
    );
    let container = hmac_wrap(&signed, adv_secret, spec.hosted);
    pair_success_node(spec, &container.encode_to_vec())
}

/// A checked pair-device-sign reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSign {
    /// The IQ id (the pair-success's).
    pub id: String,
    /// The `key-index` attribute.
    pub key_index: u32,
    /// The signed identity as sent (without the account signature key).
    pub signed: AdvSignedDeviceIdentity,
}

/// Checks the companion's `pair-device-sign` reply: shape, no account signature key, the account
/// signature still ours, `key-index` equal to the details', and the companion's device signature
/// over `06 01 ‖ details ‖ companion identity ‖ account key`.
pub fn verify_pair_device_sign(
    reply: &Node,
    companion_identity_pub: &[u8; 32],
    account_identity_pub: &[u8; 32],
) -> Result<DeviceSign, PairError> {
    if reply.tag != "iq" || reply.attr_str("type") != Some("result") {
        return Err(PairError::Malformed { what: "iq" });
    }
    let id = iq_id(reply).ok_or(PairError::Malformed { what: "iq id" })?;
    let node = reply
        .child("pair-device-sign")
        .and_then(|n| n.child("device-identity"))
        .ok_or(PairError::Malformed {
            what: "device-identity",
        })?;
    let key_index: u32 = node
        .attr_str("key-index")
        .and_then(|k| k.parse().ok())
        .ok_or(PairError::Malformed { what: "key-index" })?;
    let bytes = node.content_bytes().ok_or(PairError::Malformed {
        what: "device-identity",
    })?;
    let signed = AdvSignedDeviceIdentity::decode(bytes).map_err(|_| PairError::Malformed {
        what: "ADVSignedDeviceIdentity",
    })?;
    if signed.account_signature_key.is_some() {
        return Err(PairError::Malformed {
            what: "accountSignatureKey present",
        });
    }
    let details = signed.details.as_deref().ok_or(PairError::Malformed {
        what: "ADVSignedDeviceIdentity.details",
    })?;
    let identity = AdvDeviceIdentity::decode(details).map_err(|_| PairError::Malformed {
        what: "ADVDeviceIdentity",
    })?;
    if identity.key_index.unwrap_or_default() != key_index {
        return Err(PairError::Malformed { what: "key-index" });
    }
    let account_signature =
        signature64(signed.account_signature.as_deref()).ok_or(PairError::SignatureMismatch)?;
    let hosted_device = identity.device_type == Some(AdvEncryptionType::Hosted as i32);
    let account_message = account_signature_message(hosted_device, details, companion_identity_pub);
    if !xeddsa::verify(account_identity_pub, &account_message, &account_signature) {
        return Err(PairError::SignatureMismatch);
    }
    let device_signature = signature64(signed.device_signature.as_deref())
        .ok_or(PairError::DeviceSignatureMismatch)?;
    let device_message =
        device_signature_message(details, companion_identity_pub, account_identity_pub);
    if !xeddsa::verify(companion_identity_pub, &device_message, &device_signature) {
        return Err(PairError::DeviceSignatureMismatch);
    }
    Ok(DeviceSign {
        id: id.to_owned(),
        key_index,
        signed,
    })
}

/// Exactly 64 bytes.
fn signature64(bytes: Option<&[u8]>) -> Option<[u8; 64]> {
    bytes.and_then(|b| b.try_into().ok())
}

/// The server's answer to `companion_hello`:
/// `<iq from="s.whatsapp.net" type="result" id=ID><link_code_companion_reg>
/// <link_code_pairing_ref>REF</…></…></iq>`.
pub fn companion_hello_result(iq_id: &str, pairing_ref: &[u8]) -> Node {
    Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "result")
        .attr("id", iq_id)
        .children([Node::new("link_code_companion_reg")
            .children([
                Node::new("link_code_pairing_ref").bytes(Bytes::copy_from_slice(pairing_ref))
            ])])
}

/// The phone's state of a phone-code pairing between the notification and `companion_finish`.
/// `Debug` shows no secrets.
#[derive(Clone)]
pub struct PhoneCodeState {
    identity: KeyPair,
    ephemeral: KeyPair,
    companion_ephemeral_pub: [u8; 32],
    companion_noise_pub: [u8; 32],
    pairing_ref: Bytes,
}

impl PhoneCodeState {
    /// The companion's static Noise key from `companion_server_auth_key_pub`.
    pub fn companion_noise_pub(&self) -> &[u8; 32] {
        &self.companion_noise_pub
    }
}

impl fmt::Debug for PhoneCodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneCodeState")
            .field("identity", &self.identity)
            .field("ephemeral", &self.ephemeral)
            .field(
                "companion_ephemeral_pub",
                &Hex(&self.companion_ephemeral_pub),
            )
            .field("pairing_ref", &Hex(&self.pairing_ref))
            .finish_non_exhaustive()
    }
}

/// The phone's (and server's) answer once the user typed `code`: checks the companion's
/// `companion_hello` IQ, unwraps its ephemeral key with the code, and builds the
/// `<notification type="link_code_companion_reg">` with the phone's own wrapped ephemeral key,
/// its identity key `phone_identity` and `pairing_ref` (the ref the server gave in
/// [`companion_hello_result`]). The notification id is drawn from `rng`.
pub fn link_code_notification(
    hello: &Node,
    code: &str,
    phone_identity: &KeyPair,
    pairing_ref: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<(Node, PhoneCodeState), PairingError> {
    let code = normalize_code(code)?;
    let reg = md_stage(hello, "companion_hello")?;
    let wrapped = child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub")
        .filter(|w| w.len() == WRAPPED_KEY_LEN)
        .ok_or(PairingError::Malformed {
            what: "link_code_pairing_wrapped_companion_ephemeral_pub",
        })?;
    let companion_noise_pub = child_bytes(reg, "companion_server_auth_key_pub")
        .and_then(array32)
        .ok_or(PairingError::Malformed {
            what: "companion_server_auth_key_pub",
        })?;
    let companion_ephemeral_pub = unwrap_key(&code, wrapped)?;
    let ephemeral = KeyPair::generate(rng);
    let our_wrapped = wrap_key(&code, ephemeral.public_bytes(), rng);
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    let id: String = id.iter().map(|b| format!("{b:02X}")).collect();
    let notification = Node::new("notification")
        .attr("from", Jid::server())
        .attr("type", "link_code_companion_reg")
        .attr("id", id)
        .children([Node::new("link_code_companion_reg")
            .attr("stage", "primary_hello")
            .children([
                Node::new("link_code_pairing_ref").bytes(Bytes::copy_from_slice(pairing_ref)),
                Node::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                    .bytes(our_wrapped.to_vec()),
                Node::new("primary_identity_pub").bytes(phone_identity.public_bytes().to_vec()),
            ])]);
    Ok((
        notification,
        PhoneCodeState {
            identity: phone_identity.clone(),
            ephemeral,
            companion_ephemeral_pub,
            companion_noise_pub,
            pairing_ref: Bytes::copy_from_slice(pairing_ref),
        },
    ))
}

/// What the phone learns from `companion_finish`.
#[derive(Clone)]
pub struct PhoneCodeOutcome {
    /// The adv secret, equal to the companion's; it keys the pair-success HMAC.
    pub adv_secret: Zeroizing<[u8; 32]>,
    /// The companion's identity key, which the account signature covers.
    pub companion_identity_pub: [u8; 32],
}

impl fmt::Debug for PhoneCodeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneCodeOutcome")
            .field("adv_secret", &"[redacted]")
            .field("companion_identity_pub", &Hex(&self.companion_identity_pub))
            .finish()
    }
}

/// Handles the companion's `companion_finish` IQ: checks the ref, decrypts the key bundle, checks
/// that it names the companion's identity key and ours, and derives the adv secret.
pub fn finish(
    state: &PhoneCodeState,
    companion_finish: &Node,
) -> Result<PhoneCodeOutcome, PairingError> {
    let reg = md_stage(companion_finish, "companion_finish")?;
    let their_ref = child_bytes(reg, "link_code_pairing_ref").ok_or(PairingError::Malformed {
        what: "link_code_pairing_ref",
    })?;
    if their_ref != state.pairing_ref.as_ref() {
        return Err(PairingError::RefMismatch);
    }
    let bundle = child_bytes(reg, "link_code_pairing_wrapped_key_bundle")
        .filter(|b| b.len() == WRAPPED_BUNDLE_LEN)
        .ok_or(PairingError::Malformed {
            what: "link_code_pairing_wrapped_key_bundle",
        })?;
    let companion_identity_pub = child_bytes(reg, "companion_identity_public")
        .and_then(array32)
        .ok_or(PairingError::Malformed {
            what: "companion_identity_public",
        })?;
    let (salt, rest) = bundle.split_at(32);
    let (nonce, sealed) = rest.split_at(12);
    let salt = array32(salt).ok_or(PairingError::Malformed {
        what: "link_code_pairing_wrapped_key_bundle",
    })?;
    let eph_shared = state
        .ephemeral
        .dh(&state.companion_ephemeral_pub)
        .ok_or(PairingError::WeakKey)?;
    let key = bundle_key(&eph_shared, &salt);
    let plain = Zeroizing::new(
        Aes256Gcm::new(key.as_slice().into())
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| PairingError::Decrypt)?,
    );
    let (Some(bundled_companion), Some(bundled_primary), Some(adv_random)) = (
        plain.get(..32),
        plain.get(32..64),
        plain.get(64..96).and_then(array32).map(Zeroizing::new),
    ) else {
        return Err(PairingError::Decrypt);
    };
    if bundled_companion != companion_identity_pub
        || bundled_primary != state.identity.public_bytes()
    {
        return Err(PairingError::BundleMismatch);
    }
    let identity_shared = state
        .identity
        .dh(&companion_identity_pub)
        .ok_or(PairingError::WeakKey)?;
    Ok(PhoneCodeOutcome {
        adv_secret: derive_adv_secret(&eph_shared, &identity_shared, &adv_random),
        companion_identity_pub,
    })
}

/// The `link_code_companion_reg` child of an `md` IQ from the companion, at `stage`.
fn md_stage<'a>(iq: &'a Node, stage: &str) -> Result<&'a Node, PairingError> {
    if iq.tag != "iq" || iq.attr_str("type") != Some("set") || iq.attr_str("xmlns") != Some("md") {
        return Err(PairingError::Malformed { what: "iq" });
    }
    let reg = iq
        .child("link_code_companion_reg")
        .ok_or(PairingError::Malformed {
            what: "link_code_companion_reg",
        })?;
    if reg.attr_str("stage") != Some(stage) {
        return Err(PairingError::Malformed { what: "stage" });
    }
    Ok(reg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn reply_with(signed: &AdvSignedDeviceIdentity, key_index: &str) -> Node {
        Node::new("iq")
            .attr("type", "result")
            .attr("id", "1")
            .children([
                Node::new("pair-device-sign").children([Node::new("device-identity")
                    .attr("key-index", key_index)
                    .bytes(signed.encode_to_vec())]),
            ])
    }

    #[test]
    fn device_sign_checks() {
        let mut rng = ChaCha20Rng::from_seed([13; 32]);
        let account = KeyPair::generate(&mut rng);
        let companion = KeyPair::generate(&mut rng);
        let spec = PairSuccessSpec::new("1", Jid::user("1555").with_device(2), 4, 1);
        let details = device_identity_details(&spec);
        let mut signed = account_sign(
            &account,
            &details,
            companion.public_bytes(),
            false,
            &mut rng,
        );
        let sig = xeddsa::sign(
            &companion.private_bytes(),
            &device_signature_message(&details, companion.public_bytes(), account.public_bytes()),
            &[0; 64],
        );
        signed.device_signature = Some(Bytes::copy_from_slice(&sig));
        let verify = |reply: &Node| {
            verify_pair_device_sign(reply, companion.public_bytes(), account.public_bytes())
        };
        // The account key must not be sent back.
        assert_eq!(
            verify(&reply_with(&signed, "4")),
            Err(PairError::Malformed {
                what: "accountSignatureKey present"
            })
        );
        signed.account_signature_key = None;
        assert_eq!(
            verify(&reply_with(&signed, "4")).map(|d| d.key_index),
            Ok(4)
        );
        assert_eq!(
            verify(&reply_with(&signed, "5")),
            Err(PairError::Malformed { what: "key-index" })
        );
        signed.device_signature = None;
        assert_eq!(
            verify(&reply_with(&signed, "4")),
            Err(PairError::DeviceSignatureMismatch)
        );
    }

    #[test]
    fn debug_redacts() {
        let outcome = PhoneCodeOutcome {
            adv_secret: Zeroizing::new([0xAB; 32]),
            companion_identity_pub: [1; 32],
        };
        assert!(!format!("{outcome:?}").contains("abab"));
    }
}
