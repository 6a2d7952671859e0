//! Phone-number ("link code") pairing (PAIRING.md §3): instead of scanning a QR code, the user
//! types an 8-character code shown by the companion into the phone.
//!
//! The code never travels: both sides wrap an ephemeral X25519 key with a key stretched from it
//! (PBKDF2) and the server relays the wrapped keys. From the two ephemeral keys, the two identity
//! keys and a random value chosen by the companion, both derive a new adv secret, which then
//! authenticates the ordinary pair-success (§2.4) exactly as the QR code's adv secret would.
//!
//! Flow for the companion, on a connection made with the registration payload once the
//! pair-device IQ has arrived:
//! 1. [`PhoneCodePairing::start`] → show the code, send the `companion_hello` IQ;
//! 2. [`PhoneCodePairing::set_ref`] with the IQ's result;
//! 3. on `<notification type="link_code_companion_reg">`: [`PhoneCodePairing::finish`] → send the
//!    `companion_finish` IQ and replace the credentials' adv secret with the one returned;
//! 4. handle the pair-success with [`handle_pair_success`](super::handle_pair_success).

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use bytes::Bytes;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::error::PairingError;
use super::payload::ClientConfig;
use super::util::{array32, child_bytes};
use crate::binary::Node;
use crate::credentials::Credentials;
use crate::jid::Jid;
use crate::noise::KeyPair;

/// The 32 symbols of linking codes: digits and capitals without `0`, `I`, `O` and `U`, which
/// read too much like others.
pub const LINK_CODE_ALPHABET: &[u8; 32] = b"123456789ABCDEFGHJKLMNPQRSTVWXYZ";

/// Length of a linking code in characters (5 random bytes in base32).
pub const LINK_CODE_LEN: usize = 8;

/// PBKDF2-HMAC-SHA256 iterations stretching the linking code (2 << 16).
pub const LINK_CODE_PBKDF2_ROUNDS: u32 = 131_072;

/// Length of a wrapped ephemeral key: salt (32) ‖ iv (16) ‖ AES-CTR encrypted public key (32).
pub const WRAPPED_KEY_LEN: usize = 80;

/// Length of the wrapped key bundle: salt (32) ‖ nonce (12) ‖ AES-GCM of 96 bytes with its tag.
pub const WRAPPED_BUNDLE_LEN: usize = 32 + 12 + 96 + 16;

/// HKDF info of the key bundle encryption key.
const BUNDLE_KEY_INFO: &[u8] = b"link_code_pairing_key_bundle_encryption_key";

/// HKDF info of the new adv secret.
const ADV_SECRET_INFO: &[u8] = b"adv_secret";

/// AES-256-CTR with a 128-bit big-endian counter: the whole 16-byte IV is the first counter
/// block.
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Encodes 5 bytes as an 8-character linking code: 40 bits, 5 at a time from the most
/// significant, each an index into [`LINK_CODE_ALPHABET`] (base32 without padding).
pub fn encode_link_code(bytes: &[u8; 5]) -> String {
    let v = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    (0..LINK_CODE_LEN)
        .map(|i| {
            let index = (v >> (35 - 5 * i)) & 31;
            char::from(LINK_CODE_ALPHABET[index as usize])
        })
        .collect()
}

/// The code as the user sees it: `XXXX-XXXX`.
pub fn format_link_code(code: &str) -> String {
    match (code.get(..4), code.get(4..)) {
        (Some(a), Some(b)) if !b.is_empty() => format!("{a}-{b}"),
        _ => code.to_owned(),
    }
}

/// Checks a phone number for phone-code pairing: international format, digits only (no `+`,
/// spaces or dashes), more than 6 digits, at most 15 (E.164), no leading 0 (a national trunk
/// prefix, so not an international number).
pub fn validate_phone(phone: &str) -> Result<(), PairingError> {
    let invalid = |reason| Err(PairingError::InvalidPhone { reason });
    if !phone.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("not digits only");
    }
    if phone.len() <= 6 {
        return invalid("too short");
    }
    if phone.len() > 15 {
        return invalid("too long");
    }
    if phone.starts_with('0') {
        return invalid("leading zero");
    }
    Ok(())
}

/// The companion's state of a phone-code pairing between `companion_hello` and
/// `companion_finish`. Holds the code and the ephemeral key; `Debug` shows neither.
#[derive(Clone)]
pub struct PhoneCodePairing {
    phone: String,
    code: Zeroizing<String>,
    ephemeral: KeyPair,
    pairing_ref: Option<Bytes>,
}

impl fmt::Debug for PhoneCodePairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneCodePairing")
            .field("phone", &self.phone)
            .field("code", &"[redacted]")
            .field("ephemeral", &self.ephemeral)
            .field("has_ref", &self.pairing_ref.is_some())
            .finish()
    }
}

impl PhoneCodePairing {
    /// Starts pairing with the account of `phone` (international digits, e.g. `15551234567`):
    /// draws a random code and ephemeral key and builds the `companion_hello` IQ. Returns the
    /// state, the 8-character code to show (see [`format_link_code`]) and the IQ to send, which
    /// has no `id` attribute: the caller allocates IQ ids and adds it.
    pub fn start(
        phone: &str,
        creds: &Credentials,
        cfg: &ClientConfig,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, String, Node), PairingError> {
        let mut raw = Zeroizing::new([0u8; 5]);
        rng.fill_bytes(raw.as_mut_slice());
        let code = encode_link_code(&raw);
        Self::start_with_code(phone, &code, creds, cfg, rng)
    }

    /// Like [`Self::start`] with a code chosen by the caller: 8 characters of
    /// [`LINK_CODE_ALPHABET`] (lowercase letters are accepted and upper-cased). A chosen code is
    /// only as strong as the choice; prefer [`Self::start`].
    pub fn start_with_code(
        phone: &str,
        code: &str,
        creds: &Credentials,
        cfg: &ClientConfig,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, String, Node), PairingError> {
        validate_phone(phone)?;
        let code = normalize_code(code)?;
        let ephemeral = KeyPair::generate(rng);
        let wrapped = wrap_key(&code, ephemeral.public_bytes(), rng);
        let iq = md_iq().children([Node::new("link_code_companion_reg")
            .attr("jid", Jid::user(phone))
            .attr("stage", "companion_hello")
            .attr("should_show_push_notification", "true")
            .children([
                Node::new("link_code_pairing_wrapped_companion_ephemeral_pub")
                    .bytes(wrapped.to_vec()),
                Node::new("companion_server_auth_key_pub")
                    .bytes(creds.noise_key.public_bytes().to_vec()),
                Node::new("companion_platform_id").text(cfg.platform_code()),
                Node::new("companion_platform_display").text(cfg.browser_display.as_str()),
                // whatsmeow sends one zero byte; Baileys the text "0".
                Node::new("link_code_pairing_nonce").bytes(vec![0u8]),
            ])]);
        let shown = code.as_str().to_owned();
        Ok((
            Self {
                phone: phone.to_owned(),
                code,
                ephemeral,
                pairing_ref: None,
            },
            shown,
            iq,
        ))
    }

    /// The 8-character code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The phone number pairing is with.
    pub fn phone(&self) -> &str {
        &self.phone
    }

    /// The pairing ref, once [`Self::set_ref`] stored it.
    pub fn pairing_ref(&self) -> Option<&[u8]> {
        self.pairing_ref.as_deref()
    }

    /// Stores the pairing ref from the result of the `companion_hello` IQ:
    /// `<iq type="result"><link_code_companion_reg><link_code_pairing_ref>REF</…></…></iq>`.
    /// An error result gives [`PairingError::ServerError`] (400 when the server disliked the
    /// platform display name).
    pub fn set_ref(&mut self, reply: &Node) -> Result<(), PairingError> {
        if reply.tag != "iq" {
            return Err(PairingError::Malformed { what: "iq" });
        }
        match reply.attr_str("type") {
            Some("result") => {}
            Some("error") => return Err(server_error(reply)),
            _ => return Err(PairingError::Malformed { what: "iq type" }),
        }
        let pairing_ref = reply
            .child("link_code_companion_reg")
            .and_then(|r| child_bytes(r, "link_code_pairing_ref"))
            .filter(|r| !r.is_empty())
            .ok_or(PairingError::NoRef)?;
        self.pairing_ref = Some(Bytes::copy_from_slice(pairing_ref));
        Ok(())
    }

    /// Handles the server's `<notification type="link_code_companion_reg">` (sent once the user
    /// typed the code) and builds the `companion_finish` IQ (without `id`, like
    /// [`Self::start`]'s). Returns the IQ and the new adv secret, which replaces [`Credentials::adv_secret`] before the pair-success
    /// arrives.
    ///
    /// Takes `&self` so a notification that does not match (wrong ref) leaves the pairing
    /// usable; drop the state after success.
    pub fn finish(
        &self,
        notification: &Node,
        creds: &Credentials,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Node, Zeroizing<[u8; 32]>), PairingError> {
        if notification.tag != "notification"
            || notification.attr_str("type") != Some("link_code_companion_reg")
        {
            return Err(PairingError::Malformed {
                what: "notification",
            });
        }
        let reg = notification
            .child("link_code_companion_reg")
            .ok_or(PairingError::Malformed {
                what: "link_code_companion_reg",
            })?;
        // The notification must answer our companion_hello, not someone else's.
        let our_ref = self.pairing_ref.as_deref().ok_or(PairingError::NoRef)?;
        let their_ref =
            child_bytes(reg, "link_code_pairing_ref").ok_or(PairingError::Malformed {
                what: "link_code_pairing_ref",
            })?;
        if their_ref != our_ref {
            return Err(PairingError::RefMismatch);
        }
        let wrapped = child_bytes(reg, "link_code_pairing_wrapped_primary_ephemeral_pub").ok_or(
            PairingError::Malformed {
                what: "link_code_pairing_wrapped_primary_ephemeral_pub",
            },
        )?;
        let primary_identity = child_bytes(reg, "primary_identity_pub")
            .and_then(array32)
            .ok_or(PairingError::Malformed {
                what: "primary_identity_pub",
            })?;
        let primary_ephemeral = unwrap_key(&self.code, wrapped)?;

        let eph_shared = self
            .ephemeral
            .dh(&primary_ephemeral)
            .ok_or(PairingError::WeakKey)?;
        let mut adv_random = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(adv_random.as_mut_slice());
        let mut bundle_salt = [0u8; 32];
        rng.fill_bytes(&mut bundle_salt);
        let mut bundle_nonce = [0u8; 12];
        rng.fill_bytes(&mut bundle_nonce);

        let our_identity = creds.identity_key.public_bytes();
        let mut plain = Zeroizing::new([0u8; 96]);
        plain[..32].copy_from_slice(our_identity);
        plain[32..64].copy_from_slice(&primary_identity);
        plain[64..].copy_from_slice(adv_random.as_slice());
        let bundle_key = bundle_key(&eph_shared, &bundle_salt);
        let sealed = Aes256Gcm::new(bundle_key.as_slice().into())
            .encrypt(Nonce::from_slice(&bundle_nonce), plain.as_slice())
            .map_err(|_| PairingError::Decrypt)?;
        let wrapped_bundle = [&bundle_salt[..], &bundle_nonce[..], &sealed[..]].concat();

        let identity_shared = creds
            .identity_key
            .dh(&primary_identity)
            .ok_or(PairingError::WeakKey)?;
        let adv_secret = derive_adv_secret(&eph_shared, &identity_shared, &adv_random);

        let iq = md_iq().children([Node::new("link_code_companion_reg")
            .attr("jid", Jid::user(self.phone.as_str()))
            .attr("stage", "companion_finish")
            .children([
                Node::new("link_code_pairing_wrapped_key_bundle").bytes(wrapped_bundle),
                Node::new("companion_identity_public").bytes(our_identity.to_vec()),
                Node::new("link_code_pairing_ref").bytes(Bytes::copy_from_slice(our_ref)),
            ])]);
        Ok((iq, adv_secret))
    }
}

/// `<iq to="s.whatsapp.net" type="set" xmlns="md">`, the envelope of both client IQs (the
/// caller adds the `id`).
fn md_iq() -> Node {
    Node::new("iq")
        .attr("to", Jid::server())
        .attr("type", "set")
        .attr("xmlns", "md")
}

/// The error of an `<iq type="error"><error code=…/></iq>`; code 0 when it has none.
fn server_error(reply: &Node) -> PairingError {
    let code = reply
        .child("error")
        .and_then(|e| e.attr_str("code"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    PairingError::ServerError { code }
}

/// Upper-cases a chosen code and checks it is 8 symbols of the alphabet.
pub(crate) fn normalize_code(code: &str) -> Result<Zeroizing<String>, PairingError> {
    let code = Zeroizing::new(code.to_ascii_uppercase());
    if code.len() != LINK_CODE_LEN || !code.bytes().all(|b| LINK_CODE_ALPHABET.contains(&b)) {
        return Err(PairingError::InvalidCode);
    }
    Ok(code)
}

/// `PBKDF2-HMAC-SHA256(code, salt, 131072, 32)`.
fn code_key(code: &str, salt: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(
        code.as_bytes(),
        salt,
        LINK_CODE_PBKDF2_ROUNDS,
        key.as_mut_slice(),
    );
    key
}

/// AES-256-CTR of 32 bytes in place with the full 16-byte IV as the first counter block.
fn ctr_apply(key: &[u8; 32], iv: &[u8; 16], data: &mut [u8; 32]) {
    Aes256Ctr::new(key.into(), iv.into()).apply_keystream(data);
}

/// Wraps a public key with the code: `salt ‖ iv ‖ AES-256-CTR(PBKDF2(code, salt), iv, key)`.
pub(crate) fn wrap_key(
    code: &str,
    public: &[u8; 32],
    rng: &mut impl CryptoRngCore,
) -> [u8; WRAPPED_KEY_LEN] {
    let mut salt = [0u8; 32];
    rng.fill_bytes(&mut salt);
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    let mut body = *public;
    ctr_apply(&code_key(code, &salt), &iv, &mut body);
    let mut out = [0u8; WRAPPED_KEY_LEN];
    out[..32].copy_from_slice(&salt);
    out[32..48].copy_from_slice(&iv);
    out[48..].copy_from_slice(&body);
    out
}

/// Unwraps a public key wrapped by [`wrap_key`]. Only the first 80 bytes count (whatsmeow reads
/// them the same way); fewer is [`PairingError::WrappedKeyTooShort`].
pub(crate) fn unwrap_key(code: &str, wrapped: &[u8]) -> Result<[u8; 32], PairingError> {
    let (Some(salt), Some(iv), Some(body)) = (
        wrapped.get(..32),
        wrapped
            .get(32..48)
            .and_then(|iv| <[u8; 16]>::try_from(iv).ok()),
        wrapped.get(48..80).and_then(array32),
    ) else {
        return Err(PairingError::WrappedKeyTooShort);
    };
    let mut key = body;
    ctr_apply(&code_key(code, salt), &iv, &mut key);
    Ok(key)
}

/// `HKDF-SHA256(ikm = ephShared, salt = bundleSalt, info = "link_code_pairing_key_bundle_
/// encryption_key", 32)`.
pub(crate) fn bundle_key(eph_shared: &[u8; 32], salt: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    hkdf32(Some(salt), &[eph_shared], BUNDLE_KEY_INFO)
}

/// The new adv secret: `HKDF-SHA256(ikm = ephShared ‖ identityShared ‖ advRandom, no salt,
/// info = "adv_secret", 32)`.
pub(crate) fn derive_adv_secret(
    eph_shared: &[u8; 32],
    identity_shared: &[u8; 32],
    adv_random: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    hkdf32(
        None,
        &[eph_shared, identity_shared, adv_random],
        ADV_SECRET_INFO,
    )
}

/// 32 bytes of HKDF-SHA256 over the concatenation of `ikm`.
fn hkdf32(salt: Option<&[u8]>, ikm: &[&[u8; 32]], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut input = Zeroizing::new(Vec::with_capacity(32 * ikm.len()));
    for part in ikm {
        input.extend_from_slice(&part[..]);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 × 32.
    Hkdf::<Sha256>::new(salt, &input)
        .expand(info, out.as_mut_slice())
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF length"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn base32_known_answers() {
        assert_eq!(encode_link_code(&[0; 5]), "11111111");
        assert_eq!(encode_link_code(&[0xFF; 5]), "ZZZZZZZZ");
        // RFC 4648's "ABCDEFGH" example: indices 0..=7.
        assert_eq!(
            encode_link_code(&[0x00, 0x44, 0x32, 0x14, 0xC7]),
            "12345678"
        );
        // Indices 24..=31.
        assert_eq!(
            encode_link_code(&[0xC6, 0x75, 0xBE, 0x77, 0xDF]),
            "RSTVWXYZ"
        );
        assert_eq!(format_link_code("ABCD1234"), "ABCD-1234");
    }

    #[test]
    fn phone_validation() {
        assert!(validate_phone("15551234567").is_ok());
        assert!(validate_phone("1234567").is_ok());
        for (bad, reason) in [
            ("+15551234567", "not digits only"),
            ("1555 123 4567", "not digits only"),
            ("", "too short"),
            ("123456", "too short"),
            ("0155512345", "leading zero"),
            ("1234567890123456", "too long"),
        ] {
            assert_eq!(
                validate_phone(bad),
                Err(PairingError::InvalidPhone { reason }),
                "{bad}"
            );
        }
    }

    #[test]
    fn wrap_unwrap() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let key = [0x42; 32];
        let w = wrap_key("ABCDEFGH", &key, &mut rng);
        assert_eq!(unwrap_key("ABCDEFGH", &w), Ok(key));
        let mut longer = w.to_vec();
        longer.push(0);
        assert_eq!(unwrap_key("ABCDEFGH", &longer), Ok(key));
        assert_ne!(unwrap_key("ABCDEFGJ", &w), Ok(key));
        assert_eq!(
            unwrap_key("ABCDEFGH", &w[..79]),
            Err(PairingError::WrappedKeyTooShort)
        );
    }

    #[test]
    fn debug_redacts_code() {
        let mut rng = ChaCha20Rng::from_seed([6; 32]);
        let creds = Credentials::generate(&mut rng);
        let (state, code, hello) = PhoneCodePairing::start_with_code(
            "15551234567",
            "QWERTYZX",
            &creds,
            &ClientConfig::default(),
            &mut rng,
        )
        .unwrap();
        assert_eq!(code, "QWERTYZX");
        assert!(!format!("{state:?}").contains("QWERTYZX"));
        assert!(!hello.to_string().contains("QWERTYZX"));
    }

    #[test]
    fn codes_normalized() {
        assert_eq!(
            normalize_code("abcdefgh").map(|c| c.to_string()),
            Ok("ABCDEFGH".into())
        );
        for bad in ["ABCDEFG", "ABCDEFGHJ", "ABCDEFGO", "ABCDEFG0", "ABCDEFGÉ"] {
            assert_eq!(
                normalize_code(bad).map(|_| ()),
                Err(PairingError::InvalidCode),
                "{bad}"
            );
        }
    }
}
