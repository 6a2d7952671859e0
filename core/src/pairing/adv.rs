//! pair-success (PAIRING.md §2.4): check that the primary phone vouched for our identity key,
//! sign the device identity with it, and build the `pair-device-sign` reply.
//!
//! Three layers of protobuf arrive in `<device-identity>`:
//! `ADVSignedDeviceIdentityHMAC { details: ADVSignedDeviceIdentity { details: ADVDeviceIdentity,
//! accountSignatureKey, accountSignature }, HMAC, accountType }`. The HMAC, keyed with the adv
//! secret that only the QR code (or the phone-code exchange) carried, proves the phone pairing
//! with us is the one that scanned our code; the account signature, by the phone's identity key,
//! binds the device identity to our identity key; our device signature closes the loop.

use amarula_proto::{AdvDeviceIdentity, AdvEncryptionType, AdvSignedDeviceIdentity};
use amarula_proto::{AdvSignedDeviceIdentityHmac, Message};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::error::{PairError, PairRefused};
use super::util::{array32, attr_as_jid, child_bytes, iq_id, is_from_server};
use crate::binary::Node;
use crate::credentials::{Credentials, DeviceIdentity};
use crate::jid::Jid;
use crate::xeddsa;

/// Prefix of the HMAC input when the account is hosted (`accountType == HOSTED`).
pub(crate) const HMAC_HOSTED_PREFIX: [u8; 2] = [6, 5];
/// Prefix of the account signature input for an ordinary (end-to-end encrypted) device.
pub(crate) const ACCOUNT_SIGNATURE_PREFIX: [u8; 2] = [6, 0];
/// Prefix of the account signature input when `ADVDeviceIdentity.deviceType == HOSTED`.
pub(crate) const ACCOUNT_SIGNATURE_HOSTED_PREFIX: [u8; 2] = [6, 5];
/// Prefix of the device signature input. Both references always use `06 01` here, also for
/// hosted accounts (the `06 06` "hosted device" constant they define is unused).
pub(crate) const DEVICE_SIGNATURE_PREFIX: [u8; 2] = [6, 1];

/// `HMAC-SHA256` as used for the device identity container.
type HmacSha256 = Hmac<Sha256>;

/// An accepted pair-success: who we are now, and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSuccess {
    /// Our device identity, to persist in [`Credentials::device`]. Its `account` is the
    /// re-serialized `ADVSignedDeviceIdentity` with the account signature key and our device
    /// signature.
    pub device: DeviceIdentity,
    /// `<iq to="s.whatsapp.net" type="result" id=ID><pair-device-sign><device-identity
    /// key-index=K>…</device-identity></pair-device-sign></iq>`, the signed identity without the
    /// account signature key.
    pub reply: Node,
    /// The primary device's identity key (`accountSignatureKey`): the Signal identity of our
    /// account's device 0 (store it for the LID user's device 0, PAIRING.md §2.4 step 6).
    pub primary_identity: [u8; 32],
    /// `ADVDeviceIdentity.keyIndex`.
    pub key_index: u32,
}

/// Handles the server's `<iq type="set"><pair-success>…</pair-success></iq>` (PAIRING.md §2.4).
///
/// `iq` is the whole IQ. On success the caller persists [`PairSuccess::device`] and the primary
/// identity, sends [`PairSuccess::reply`], and expects `<stream:error code="515"/>` next, after
/// which it reconnects with the login payload. On refusal it sends [`PairRefused::reply`] when
/// there is one; the credentials stay unpaired.
///
/// `rng` supplies the 64 random bytes of our device signature.
pub fn handle_pair_success(
    iq: &Node,
    creds: &Credentials,
    rng: &mut impl CryptoRngCore,
) -> Result<PairSuccess, PairRefused> {
    check_pair_success(iq, creds, rng).map_err(|reason| PairRefused {
        reply: iq_id(iq).map(|id| Box::new(error_reply(id, &reason))),
        reason,
    })
}

/// The error IQ of PAIRING.md §2.4 step 8 for `reason`.
pub fn error_reply(id: &str, reason: &PairError) -> Node {
    let (code, text) = reason.reply_code();
    Node::new("iq")
        .attr("to", Jid::server())
        .attr("type", "error")
        .attr("id", id)
        .children([Node::new("error")
            .attr("code", code.to_string())
            .attr("text", text)])
}

/// The checks and the signing of [`handle_pair_success`], without the error reply.
fn check_pair_success(
    iq: &Node,
    creds: &Credentials,
    rng: &mut impl CryptoRngCore,
) -> Result<PairSuccess, PairError> {
    if iq.tag != "iq" || iq.attr_str("type") != Some("set") {
        return Err(PairError::Malformed { what: "iq" });
    }
    let id = iq_id(iq).ok_or(PairError::Malformed { what: "iq id" })?;
    if !is_from_server(iq) {
        return Err(PairError::NotFromServer);
    }
    let success = iq.child("pair-success").ok_or(PairError::Malformed {
        what: "pair-success",
    })?;
    let container = child_bytes(success, "device-identity").ok_or(PairError::Malformed {
        what: "device-identity",
    })?;
    let device_node = success
        .child("device")
        .ok_or(PairError::Malformed { what: "device" })?;
    let jid = attr_as_jid(device_node, "jid").ok_or(PairError::Malformed { what: "device jid" })?;
    let lid = match device_node.get_attr("lid") {
        None => None,
        Some(_) => Some(
            attr_as_jid(device_node, "lid").ok_or(PairError::Malformed { what: "device lid" })?,
        ),
    };
    // The platform only labels the primary device; a missing one is not worth refusing over.
    let platform = success
        .child("platform")
        .and_then(|p| p.attr_str("name"))
        .unwrap_or_default()
        .to_owned();
    let business_name = success
        .child("biz")
        .and_then(|b| b.attr_str("name"))
        .map(str::to_owned);

    // Layer 1: the HMAC container, keyed with our adv secret.
    let container =
        AdvSignedDeviceIdentityHmac::decode(container).map_err(|_| PairError::Malformed {
            what: "ADVSignedDeviceIdentityHMAC",
        })?;
    let signed_bytes = container.details.ok_or(PairError::Malformed {
        what: "ADVSignedDeviceIdentityHMAC.details",
    })?;
    let mac = container.hmac.ok_or(PairError::Malformed {
        what: "ADVSignedDeviceIdentityHMAC.HMAC",
    })?;
    let hosted_account = container.account_type == Some(AdvEncryptionType::Hosted as i32);
    if !hmac_matches(&creds.adv_secret, hosted_account, &signed_bytes, &mac) {
        return Err(PairError::HmacMismatch);
    }

    // Layer 2: the account-signed identity.
    let signed =
        AdvSignedDeviceIdentity::decode(signed_bytes).map_err(|_| PairError::Malformed {
            what: "ADVSignedDeviceIdentity",
        })?;
    let details = signed.details.ok_or(PairError::Malformed {
        what: "ADVSignedDeviceIdentity.details",
    })?;
    let identity =
        AdvDeviceIdentity::decode(details.clone()).map_err(|_| PairError::Malformed {
            what: "ADVDeviceIdentity",
        })?;
    // Missing or wrongly sized key or signature cannot verify: a signature mismatch (as whatsmeow
    // reports it), not a malformed message.
    let account_key = signed
        .account_signature_key
        .as_deref()
        .and_then(array32)
        .ok_or(PairError::SignatureMismatch)?;
    let account_signature: [u8; 64] = signed
        .account_signature
        .as_deref()
        .and_then(|s| s.try_into().ok())
        .ok_or(PairError::SignatureMismatch)?;
    let our_identity = creds.identity_key.public_bytes();
    let hosted_device = identity.device_type == Some(AdvEncryptionType::Hosted as i32);
    let message = account_signature_message(hosted_device, &details, our_identity);
    if !xeddsa::verify(&account_key, &message, &account_signature) {
        return Err(PairError::SignatureMismatch);
    }

    // Layer 3: our device signature over the same details, our key and the account key.
    let mut random = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(random.as_mut_slice());
    let device_signature = xeddsa::sign(
        &creds.identity_key.private_bytes(),
        &device_signature_message(&details, our_identity, &account_key),
        &random,
    );
    let mut full = AdvSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: signed.account_signature_key,
        account_signature: signed.account_signature,
        device_signature: Some(Bytes::copy_from_slice(&device_signature)),
    };
    let account = Bytes::from(full.encode_to_vec());
    // The reply leaves the account signature key out: the server knows it already.
    full.account_signature_key = None;
    let key_index = identity.key_index.unwrap_or_default();
    let reply = Node::new("iq")
        .attr("to", Jid::server())
        .attr("type", "result")
        .attr("id", id)
        .children([
            Node::new("pair-device-sign").children([Node::new("device-identity")
                .attr("key-index", key_index.to_string())
                .bytes(full.encode_to_vec())]),
        ]);
    Ok(PairSuccess {
        device: DeviceIdentity {
            jid,
            lid,
            account,
            platform,
            business_name,
        },
        reply,
        primary_identity: account_key,
        key_index,
    })
}

/// Whether `mac` is `HMAC-SHA256(adv_secret, [06 05 if hosted] ‖ signed_bytes)`, compared in
/// constant time.
pub(crate) fn hmac_matches(
    adv_secret: &[u8; 32],
    hosted: bool,
    signed_bytes: &[u8],
    mac: &[u8],
) -> bool {
    hmac_of(adv_secret, hosted, signed_bytes)
        .verify_slice(mac)
        .is_ok()
}

/// The keyed HMAC state over the container's input, ready to finalize or verify.
pub(crate) fn hmac_of(adv_secret: &[u8; 32], hosted: bool, signed_bytes: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; 32 bytes cannot fail.
    let mut h = <HmacSha256 as Mac>::new_from_slice(adv_secret)
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    if hosted {
        h.update(&HMAC_HOSTED_PREFIX);
    }
    h.update(signed_bytes);
    h
}

/// `06 00|06 05 ‖ details ‖ companion identity`: what the account signature covers.
pub(crate) fn account_signature_message(
    hosted_device: bool,
    details: &[u8],
    companion_identity: &[u8; 32],
) -> Vec<u8> {
    let prefix = if hosted_device {
        ACCOUNT_SIGNATURE_HOSTED_PREFIX
    } else {
        ACCOUNT_SIGNATURE_PREFIX
    };
    [&prefix[..], details, companion_identity].concat()
}

/// `06 01 ‖ details ‖ companion identity ‖ account key`: what the device signature covers.
pub(crate) fn device_signature_message(
    details: &[u8],
    companion_identity: &[u8; 32],
    account_key: &[u8; 32],
) -> Vec<u8> {
    [
        &DEVICE_SIGNATURE_PREFIX[..],
        details,
        companion_identity,
        account_key,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::KeyPair;
    use crate::pairing::phone::{self, PairSuccessSpec};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn accepted_and_signed() {
        let mut rng = ChaCha20Rng::from_seed([11; 32]);
        let creds = Credentials::generate(&mut rng);
        let account = KeyPair::generate(&mut rng);
        let spec = PairSuccessSpec::new("7", "1555:4@s.whatsapp.net".parse().unwrap(), 2, 9);
        let iq = phone::sign_pair_success(
            &spec,
            &account,
            creds.identity_key.public_bytes(),
            &creds.adv_secret,
            &mut rng,
        );
        let ok = handle_pair_success(&iq, &creds, &mut rng).unwrap();
        assert_eq!(ok.key_index, 2);
        let signed = AdvSignedDeviceIdentity::decode(ok.device.account).unwrap();
        let details = signed.details.unwrap();
        let sig: [u8; 64] = signed
            .device_signature
            .as_deref()
            .unwrap()
            .try_into()
            .unwrap();
        assert!(xeddsa::verify(
            creds.identity_key.public_bytes(),
            &device_signature_message(
                &details,
                creds.identity_key.public_bytes(),
                account.public_bytes()
            ),
            &sig
        ));
    }

    #[test]
    fn prefixes_and_hmac() {
        assert_eq!(
            account_signature_message(false, b"d", &[9; 32])[..3],
            [6, 0, b'd']
        );
        assert_eq!(
            account_signature_message(true, b"d", &[9; 32])[..3],
            [6, 5, b'd']
        );
        let m = device_signature_message(b"d", &[1; 32], &[2; 32]);
        assert_eq!(
            (m.len(), &m[..3], m[3], m[35]),
            (67, &[6, 1, b'd'][..], 1, 2)
        );
        let key = [3; 32];
        let plain = hmac_of(&key, false, b"x").finalize().into_bytes();
        let hosted = hmac_of(&key, true, b"x").finalize().into_bytes();
        assert_ne!(plain, hosted);
        assert!(hmac_matches(&key, false, b"x", &plain));
        assert!(!hmac_matches(&key, true, b"x", &plain));
        assert!(!hmac_matches(&key, false, b"x", &plain[..31]));
    }

    #[test]
    fn refusal_replies() {
        let iq = Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "set")
            .attr("id", "5");
        let mut rng = ChaCha20Rng::from_seed([12; 32]);
        let creds = Credentials::generate(&mut rng);
        let refused = handle_pair_success(&iq, &creds, &mut rng).unwrap_err();
        assert_eq!(
            refused.reason,
            PairError::Malformed {
                what: "pair-success"
            }
        );
        let reply = refused.reply.unwrap();
        assert_eq!(reply.attr_str("type"), Some("error"));
        let error = reply.child("error").unwrap();
        assert_eq!(
            (error.attr_str("code"), error.attr_str("text")),
            (Some("500"), Some("internal-error"))
        );
        assert_eq!(PairError::HmacMismatch.reply_code(), (401, "hmac-mismatch"));
        assert_eq!(
            PairError::SignatureMismatch.reply_code(),
            (401, "signature-mismatch")
        );
    }
}
