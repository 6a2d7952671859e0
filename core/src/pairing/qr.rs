//! QR pairing (PAIRING.md §2.1–§2.3): the pair-device IQ, the QR string, and its rotation.

use std::fmt;
use std::time::Duration;

use amarula_proto::device_props::PlatformType;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::error::{PairingError, QrError};
use super::payload::ClientConfig;
use super::util::{Hex, iq_id, is_from_server};
use crate::binary::Node;
use crate::credentials::Credentials;
use crate::jid::Jid;

/// What precedes the comma-separated parts in the current QR format.
pub const QR_PREFIX: &str = "https://wa.me/settings/linked_devices#";

/// How long the first ref is shown.
pub const QR_FIRST_REF_TIMEOUT: Duration = Duration::from_secs(60);

/// How long every following ref is shown.
pub const QR_NEXT_REF_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the ref at `index` (0-based) of a pair-device IQ stays valid before the next one is
/// shown: 60 s for the first, 20 s for the others (PAIRING.md §2.3). After the last one the
/// client disconnects; a new connection brings new refs.
pub fn qr_ref_timeout(index: usize) -> Duration {
    if index == 0 {
        QR_FIRST_REF_TIMEOUT
    } else {
        QR_NEXT_REF_TIMEOUT
    }
}

/// The companion type code of a `DeviceProps.platformType`, used as the QR TYPE part and as the
/// phone-code `companion_platform_id` (PAIRING.md §2.2).
///
/// The code set is `0` unknown, `1` Chrome, `2` Edge, `3` Firefox, `4` IE, `5` Opera, `6` Safari,
/// `7` Electron, `8` UWP, `9` other web client, `c` macOS, `e` Android. Platform types without a
/// code of their own map to `9`; the desktop (Electron) type to `7`; the macOS app types
/// (Catalina, iOS Catalyst) to `c`; the Android ones to `e`.
pub fn qr_platform_code(platform_type: PlatformType) -> &'static str {
    match platform_type {
        PlatformType::Unknown => "0",
        PlatformType::Chrome => "1",
        PlatformType::Edge => "2",
        PlatformType::Firefox => "3",
        PlatformType::Ie => "4",
        PlatformType::Opera => "5",
        PlatformType::Safari => "6",
        PlatformType::Desktop => "7",
        PlatformType::Uwp => "8",
        PlatformType::Catalina | PlatformType::IosCatalyst => "c",
        PlatformType::AndroidTablet
        | PlatformType::AndroidPhone
        | PlatformType::AndroidAmbiguous => "e",
        _ => "9",
    }
}

/// The QR string for one ref:
/// `https://wa.me/settings/linked_devices#REF,NOISE,IDENTITY,ADV,TYPE`, the keys in standard
/// base64 with padding.
///
/// TYPE is [`ClientConfig::platform_code`]. The ref goes in as the text it is; refs are ASCII,
/// and bytes that are not UTF-8 (never seen) are replaced, which only makes the phone refuse the
/// code.
pub fn qr_string(ref_: &[u8], creds: &Credentials, cfg: &ClientConfig) -> String {
    qr_string_with_code(ref_, creds, cfg.platform_code())
}

/// [`qr_string`] with an explicit TYPE code (see [`qr_platform_code`]).
pub fn qr_string_with_code(ref_: &[u8], creds: &Credentials, platform_code: &str) -> String {
    format!(
        "{QR_PREFIX}{},{},{},{},{platform_code}",
        String::from_utf8_lossy(ref_),
        STANDARD.encode(creds.noise_key.public_bytes()),
        STANDARD.encode(creds.identity_key.public_bytes()),
        STANDARD.encode(creds.adv_secret.as_slice()),
    )
}

/// A parsed QR string: what the primary phone learns by scanning it.
#[derive(Clone, PartialEq, Eq)]
pub struct QrParts {
    /// The ref, as text.
    pub ref_: String,
    /// The companion's static Noise public key.
    pub noise_pub: [u8; 32],
    /// The companion's Signal identity public key.
    pub identity_pub: [u8; 32],
    /// The adv secret that the phone uses for the pair-success HMAC.
    pub adv_secret: [u8; 32],
    /// The companion type code (`1` for Chrome, …); `None` in the older four-part format,
    /// which has none.
    pub platform: Option<String>,
}

impl fmt::Debug for QrParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QrParts")
            .field("ref_", &self.ref_)
            .field("noise_pub", &Hex(&self.noise_pub))
            .field("identity_pub", &Hex(&self.identity_pub))
            .field("adv_secret", &"[redacted]")
            .field("platform", &self.platform)
            .finish()
    }
}

/// Parses a QR string as the phone does when it scans it. Both forms of PAIRING.md §2.2 are
/// read, as a real phone reads them:
/// - the current one, `https://wa.me/settings/linked_devices#REF,NOISE,IDENTITY,ADV,TYPE`;
/// - the older one, `REF,NOISE,IDENTITY,ADV`: no link prefix and no TYPE (what Baileys 6.x
///   shows).
///
/// A string without the prefix that does not have the older form's four parts is refused as
/// [`QrError::MissingPrefix`]; one with the prefix but not five parts as [`QrError::PartCount`].
pub fn parse_qr(qr: &str) -> Result<QrParts, QrError> {
    let (body, with_type) = match qr.strip_prefix(QR_PREFIX) {
        Some(body) => (body, true),
        None => (qr, false),
    };
    let parts: Vec<&str> = body.split(',').collect();
    let (ref_, noise, identity, adv, platform) = match (with_type, parts.as_slice()) {
        (true, [ref_, noise, identity, adv, platform]) => {
            if platform.is_empty() {
                return Err(QrError::EmptyPlatform);
            }
            (ref_, noise, identity, adv, Some((*platform).to_owned()))
        }
        (true, _) => return Err(QrError::PartCount),
        (false, [ref_, noise, identity, adv]) => (ref_, noise, identity, adv, None),
        (false, _) => return Err(QrError::MissingPrefix),
    };
    if ref_.is_empty() {
        return Err(QrError::EmptyRef);
    }
    Ok(QrParts {
        ref_: (*ref_).to_owned(),
        noise_pub: decode_key(noise, "noise")?,
        identity_pub: decode_key(identity, "identity")?,
        adv_secret: decode_key(adv, "adv")?,
        platform,
    })
}

/// Standard base64 of exactly 32 bytes.
fn decode_key(text: &str, what: &'static str) -> Result<[u8; 32], QrError> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| QrError::BadKey { what })?;
    bytes.try_into().map_err(|_| QrError::BadKey { what })
}

/// The pair-device IQ the server sends after a registration handshake (PAIRING.md §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairDevice {
    /// The IQ id, echoed by [`PairDevice::ack`].
    pub id: String,
    /// The refs, in the order to show them (typically 6).
    pub refs: Vec<Bytes>,
}

impl PairDevice {
    /// Reads `<iq from="s.whatsapp.net" type="set" id=…><pair-device><ref>…</ref>…</pair-device>
    /// </iq>`. Children of `pair-device` other than `ref` are ignored; at least one ref must be
    /// there.
    pub fn parse(iq: &Node) -> Result<Self, PairingError> {
        if iq.tag != "iq" || iq.attr_str("type") != Some("set") {
            return Err(PairingError::Malformed { what: "iq" });
        }
        if !is_from_server(iq) {
            return Err(PairingError::Malformed { what: "iq from" });
        }
        let id = iq_id(iq).ok_or(PairingError::Malformed { what: "iq id" })?;
        let pair_device = iq.child("pair-device").ok_or(PairingError::Malformed {
            what: "pair-device",
        })?;
        let refs: Vec<Bytes> = pair_device
            .child_nodes()
            .iter()
            .filter(|n| n.tag == "ref")
            .filter_map(|n| n.content_bytes())
            .filter(|b| !b.is_empty())
            .map(Bytes::copy_from_slice)
            .collect();
        if refs.is_empty() {
            return Err(PairingError::Malformed { what: "ref" });
        }
        Ok(Self {
            id: id.to_owned(),
            refs,
        })
    }

    /// The acknowledgement to send at once: `<iq to="s.whatsapp.net" type="result" id=ID/>`.
    pub fn ack(&self) -> Node {
        Node::new("iq")
            .attr("to", Jid::server())
            .attr("type", "result")
            .attr("id", self.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn round_trip() {
        let c = Credentials::generate(&mut ChaCha20Rng::from_seed([3; 32]));
        let qr = qr_string(b"2@abc+/=", &c, &ClientConfig::default());
        assert!(qr.starts_with(QR_PREFIX));
        let p = parse_qr(&qr).unwrap();
        assert_eq!(p.ref_, "2@abc+/=");
        assert_eq!(&p.noise_pub, c.noise_key.public_bytes());
        assert_eq!(&p.identity_pub, c.identity_key.public_bytes());
        assert_eq!(p.adv_secret, *c.adv_secret);
        assert_eq!(p.platform.as_deref(), Some("1"));
        assert!(!format!("{p:?}").contains(&hex::encode(p.adv_secret)));
    }

    #[test]
    fn known_encoding() {
        let mut c = Credentials::generate(&mut ChaCha20Rng::from_seed([3; 32]));
        *c.adv_secret = [0xFF; 32];
        let qr = qr_string_with_code(b"R", &c, "9");
        assert!(
            qr.ends_with(",//////////////////////////////////////////8=,9"),
            "{qr}"
        );
    }

    #[test]
    fn malformed() {
        let k = STANDARD.encode([1u8; 32]);
        let short = STANDARD.encode([1u8; 31]);
        let ok = format!("{QR_PREFIX}r,{k},{k},{k},1");
        assert!(parse_qr(&ok).is_ok());
        // The older form: four parts, no prefix, no TYPE.
        let old = parse_qr(&format!("r,{k},{k},{k}")).unwrap();
        assert_eq!((old.ref_.as_str(), old.platform), ("r", None));
        assert_eq!(old.noise_pub, [1; 32]);
        let cases = [
            (format!("r,{k},{k},{k},1"), QrError::MissingPrefix),
            (format!("r,{k},{k}"), QrError::MissingPrefix),
            (format!(",{k},{k},{k}"), QrError::EmptyRef),
            (
                format!("r,{k},{short},{k}"),
                QrError::BadKey { what: "identity" },
            ),
            (format!("{QR_PREFIX}r,{k},{k},{k}"), QrError::PartCount),
            (format!("{QR_PREFIX}r,{k},{k},{k},1,x"), QrError::PartCount),
            (format!("{QR_PREFIX},{k},{k},{k},1"), QrError::EmptyRef),
            (format!("{QR_PREFIX}r,{k},{k},{k},"), QrError::EmptyPlatform),
            (
                format!("{QR_PREFIX}r,{short},{k},{k},1"),
                QrError::BadKey { what: "noise" },
            ),
            (
                format!("{QR_PREFIX}r,{k},!!,{k},1"),
                QrError::BadKey { what: "identity" },
            ),
            (
                format!("{QR_PREFIX}r,{k},{k},{}x,1", &k[..43]),
                QrError::BadKey { what: "adv" },
            ),
            (String::new(), QrError::MissingPrefix),
        ];
        for (s, e) in cases {
            assert_eq!(parse_qr(&s), Err(e), "{s}");
        }
    }

    #[test]
    fn platform_codes() {
        assert_eq!(qr_platform_code(PlatformType::Chrome), "1");
        assert_eq!(qr_platform_code(PlatformType::Edge), "2");
        assert_eq!(qr_platform_code(PlatformType::Desktop), "7");
        assert_eq!(qr_platform_code(PlatformType::Catalina), "c");
        assert_eq!(qr_platform_code(PlatformType::AndroidPhone), "e");
        assert_eq!(qr_platform_code(PlatformType::Vr), "9");
    }

    #[test]
    fn pair_device_parse_and_ack() {
        let iq = Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "set")
            .attr("id", "42")
            .children([Node::new("pair-device").children([
                Node::new("ref").bytes(&b"one"[..]),
                Node::new("other"),
                Node::new("ref").bytes(&b"two"[..]),
            ])]);
        let pd = PairDevice::parse(&iq).unwrap();
        assert_eq!(
            pd.refs,
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
        assert_eq!(
            pd.ack(),
            Node::new("iq")
                .attr("to", Jid::server())
                .attr("type", "result")
                .attr("id", "42")
        );
        let empty = Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "set")
            .attr("id", "42")
            .children([Node::new("pair-device")]);
        assert_eq!(
            PairDevice::parse(&empty),
            Err(PairingError::Malformed { what: "ref" })
        );
        assert_eq!(qr_ref_timeout(0), Duration::from_secs(60));
        assert_eq!(qr_ref_timeout(5), Duration::from_secs(20));
    }
}
