//! ClientPayload builders (PAIRING.md §1): the protobuf the client encrypts into the Noise
//! `ClientFinish`, in its registration form (first connection, before pairing) and its login form
//! (every connection after pairing).

use amarula_proto::client_payload::{
    DevicePairingRegistrationData, UserAgent, WebInfo, user_agent, web_info,
};
use amarula_proto::device_props::{self, HistorySyncConfig, PlatformType};
use amarula_proto::{ClientPayload, DeviceProps, Message};
use md5::{Digest, Md5};

use super::error::PairingError;
use crate::credentials::Credentials;

/// The WhatsApp Web version we claim to be (whatsmeow's at the snapshot PAIRING.md was written
/// from). The server refuses versions it considers too old with connect failure 405 ("client
/// outdated"), so this constant has to be bumped from time to time; a deployment can also
/// override it per connection through [`ClientConfig::version`].
pub const WA_WEB_VERSION: [u32; 3] = [2, 3000, 1_045_649_367];

/// The default `DeviceProps.os`, the name the phone shows under "Linked devices".
pub const DEFAULT_OS: &str = "amarula";

/// The default `companion_platform_display` of phone-code pairing. The server only accepts
/// values of the form `Browser (OS)` with common names, and answers 400 otherwise.
pub const DEFAULT_BROWSER_DISPLAY: &str = "Chrome (Linux)";

/// ConnectType `WIFI_UNKNOWN`.
const CONNECT_TYPE_WIFI_UNKNOWN: i32 = 1;
/// ConnectReason `USER_ACTIVATED`.
const CONNECT_REASON_USER_ACTIVATED: i32 = 1;
/// Signal's key type byte for Curve25519 ("DJB") keys.
const SIGNAL_KEY_TYPE: u8 = 0x05;

/// What the client says about itself in the ClientPayload and during phone-code pairing.
///
/// [`Default`] follows whatsmeow (WM) where PAIRING.md §1 lets the two references differ, with
/// our own name as the OS and Chrome as the platform type; every field can be changed, enough to
/// reproduce Baileys' (BL) payloads byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// WA Web version `[primary, secondary, tertiary]` (UserAgent.appVersion and the
    /// registration build hash). Default [`WA_WEB_VERSION`].
    pub version: [u32; 3],
    /// `DeviceProps.os`, shown on the phone. Default [`DEFAULT_OS`].
    pub os: String,
    /// `DeviceProps.version`. WM sends `{0, 1, 0}` (the default), BL `{10, 15, 7}` or nothing.
    pub os_version: Option<[u32; 3]>,
    /// `DeviceProps.platformType`, shown on the phone as an icon; also picks the QR TYPE code and
    /// the phone-code `companion_platform_id`. Default `CHROME`.
    pub platform_type: PlatformType,
    /// `DeviceProps.requireFullSync`: ask the phone for the full history. Default false.
    pub require_full_sync: bool,
    /// `DeviceProps.historySyncConfig`. Default [`handled_history_sync`] (what amarula's
    /// history sync decodes); [`whatsmeow_history_sync`] is WM's.
    pub history_sync: HistorySyncConfig,
    /// `WebInfo.webSubPlatform`. Default `WEB_BROWSER` (BL sends `DARWIN`/`WIN32` when it poses
    /// as a desktop app).
    pub web_sub_platform: web_info::WebSubPlatform,
    /// `UserAgent.manufacturer`: WM sends `""` (the default), BL leaves it out (`None`).
    pub manufacturer: Option<String>,
    /// `UserAgent.localeLanguageIso6391`. Default `"en"`.
    pub locale_language: String,
    /// `UserAgent.localeCountryIso31661Alpha2`. Default `"US"`.
    pub locale_country: String,
    /// `companion_platform_display` of phone-code pairing, `Browser (OS)`. Default
    /// [`DEFAULT_BROWSER_DISPLAY`].
    pub browser_display: String,
    /// `ClientPayload.pushName`; when `None`, [`Credentials::push_name`] is used.
    pub push_name: Option<String>,
    /// `passive` of the login payload: WM true (the default), BL false. The registration payload
    /// always sends false.
    pub login_passive: bool,
    /// `lidDbMigrated` of the login payload: WM `Some(true)` (the default), BL `None`.
    pub lid_db_migrated: Option<bool>,
    /// `lc` of the login payload: WM `Some(1)` (the default), BL `None`.
    pub lc: Option<i32>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            version: WA_WEB_VERSION,
            os: DEFAULT_OS.to_owned(),
            os_version: Some([0, 1, 0]),
            platform_type: PlatformType::Chrome,
            require_full_sync: false,
            history_sync: handled_history_sync(),
            web_sub_platform: web_info::WebSubPlatform::WebBrowser,
            manufacturer: Some(String::new()),
            locale_language: "en".to_owned(),
            locale_country: "US".to_owned(),
            browser_display: DEFAULT_BROWSER_DISPLAY.to_owned(),
            push_name: None,
            login_passive: true,
            lid_db_migrated: Some(true),
            lc: Some(1),
        }
    }
}

impl ClientConfig {
    /// The version as the dotted string the build hash is taken of, e.g. `2.3000.1045649367`.
    pub fn version_string(&self) -> String {
        let [a, b, c] = self.version;
        format!("{a}.{b}.{c}")
    }

    /// The companion type code of [`Self::platform_type`] for the QR string and
    /// `companion_platform_id` (see [`qr_platform_code`](super::qr_platform_code)).
    pub fn platform_code(&self) -> &'static str {
        super::qr::qr_platform_code(self.platform_type)
    }
}

/// WM's history sync configuration (PAIRING.md §1.2), our default.
pub fn whatsmeow_history_sync() -> HistorySyncConfig {
    HistorySyncConfig {
        storage_quota_mb: Some(10240),
        inline_initial_payload_in_e2_ee_msg: Some(true),
        support_call_log_history: Some(true),
        support_bot_user_agent_chat_history: Some(true),
        support_cag_reactions_and_polls: Some(true),
        support_biz_hosted_msg: Some(true),
        support_recent_sync_chunk_message_count_tuning: Some(true),
        support_hosted_group_msg: Some(true),
        support_fbid_bot_chat_history: Some(true),
        support_message_association: Some(true),
        support_group_history: Some(true),
        thumbnail_sync_days_limit: Some(60),
        support_manus_history: Some(true),
        support_hatch_history: Some(true),
        ..HistorySyncConfig::default()
    }
}

/// The history sync configuration amarula claims by default: only what `history` decodes
/// into typed values (chats and their messages, groups included, inline bootstrap payload,
/// chunk tuning); no call logs, bot chats or message associations, which it would not hand
/// out.
pub fn handled_history_sync() -> HistorySyncConfig {
    HistorySyncConfig {
        storage_quota_mb: Some(10240),
        inline_initial_payload_in_e2_ee_msg: Some(true),
        support_cag_reactions_and_polls: Some(true),
        support_biz_hosted_msg: Some(true),
        support_recent_sync_chunk_message_count_tuning: Some(true),
        support_hosted_group_msg: Some(true),
        support_group_history: Some(true),
        thumbnail_sync_days_limit: Some(60),
        ..HistorySyncConfig::default()
    }
}

/// The `DeviceProps` sent (serialized) in the registration payload.
pub fn device_props(cfg: &ClientConfig) -> DeviceProps {
    DeviceProps {
        os: Some(cfg.os.clone()),
        version: cfg.os_version.map(|[a, b, c]| device_props::AppVersion {
            primary: Some(a),
            secondary: Some(b),
            tertiary: Some(c),
            ..device_props::AppVersion::default()
        }),
        platform_type: Some(cfg.platform_type as i32),
        require_full_sync: Some(cfg.require_full_sync),
        history_sync_config: Some(cfg.history_sync.clone()),
    }
}

/// The fields common to registration and login (PAIRING.md §1.1).
fn base_payload(creds: &Credentials, cfg: &ClientConfig) -> ClientPayload {
    let [primary, secondary, tertiary] = cfg.version;
    ClientPayload {
        user_agent: Some(UserAgent {
            platform: Some(user_agent::Platform::Web as i32),
            app_version: Some(user_agent::AppVersion {
                primary: Some(primary),
                secondary: Some(secondary),
                tertiary: Some(tertiary),
                ..user_agent::AppVersion::default()
            }),
            mcc: Some("000".to_owned()),
            mnc: Some("000".to_owned()),
            os_version: Some("0.1".to_owned()),
            manufacturer: cfg.manufacturer.clone(),
            device: Some("Desktop".to_owned()),
            os_build_number: Some("0.1".to_owned()),
            release_channel: Some(user_agent::ReleaseChannel::Release as i32),
            locale_language_iso6391: Some(cfg.locale_language.clone()),
            locale_country_iso31661_alpha2: Some(cfg.locale_country.clone()),
            ..UserAgent::default()
        }),
        web_info: Some(WebInfo {
            web_sub_platform: Some(cfg.web_sub_platform as i32),
            ..WebInfo::default()
        }),
        push_name: cfg.push_name.clone().or_else(|| creds.push_name.clone()),
        connect_type: Some(CONNECT_TYPE_WIFI_UNKNOWN),
        connect_reason: Some(CONNECT_REASON_USER_ACTIVATED),
        ..ClientPayload::default()
    }
}

/// The registration ClientPayload (PAIRING.md §1.2) as a protobuf struct: the common fields,
/// `passive = false`, `pull = false` and the device pairing data (our registration id, identity
/// key, signed prekey, build hash and device props).
pub fn registration_client_payload(creds: &Credentials, cfg: &ClientConfig) -> ClientPayload {
    let spk = &creds.signed_prekey;
    // The signed prekey id travels as 3 big-endian bytes (ids are 24-bit in Signal).
    let [_, id_hi, id_mid, id_lo] = spk.id.to_be_bytes();
    let build_hash = Md5::digest(cfg.version_string().as_bytes());
    let mut payload = base_payload(creds, cfg);
    payload.passive = Some(false);
    payload.pull = Some(false);
    payload.device_pairing_data = Some(DevicePairingRegistrationData {
        e_regid: Some(creds.registration_id.to_be_bytes().to_vec().into()),
        e_keytype: Some(vec![SIGNAL_KEY_TYPE].into()),
        e_ident: Some(creds.identity_key.public_bytes().to_vec().into()),
        e_skey_id: Some(vec![id_hi, id_mid, id_lo].into()),
        e_skey_val: Some(spk.key_pair.public_bytes().to_vec().into()),
        e_skey_sig: Some(spk.signature.to_vec().into()),
        build_hash: Some(build_hash.to_vec().into()),
        device_props: Some(device_props(cfg).encode_to_vec().into()),
    });
    payload
}

/// The registration ClientPayload, encoded.
pub fn registration_payload(creds: &Credentials, cfg: &ClientConfig) -> Vec<u8> {
    registration_client_payload(creds, cfg).encode_to_vec()
}

/// The login ClientPayload (PAIRING.md §1.3) as a protobuf struct: the common fields, our phone
/// number as `username`, our device number, `pull = true`, and `passive`, `lidDbMigrated` and
/// `lc` from `cfg`.
///
/// Fails with [`PairingError::NotPaired`] before pairing and with
/// [`PairingError::NonNumericUser`] when the device JID's user is not a decimal number.
pub fn login_client_payload(
    creds: &Credentials,
    cfg: &ClientConfig,
) -> Result<ClientPayload, PairingError> {
    let device = creds.device.as_ref().ok_or(PairingError::NotPaired)?;
    let user = device.jid.user_part();
    // `u64::from_str` accepts a leading '+', which is not part of a JID user.
    if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PairingError::NonNumericUser);
    }
    let username: u64 = user.parse().map_err(|_| PairingError::NonNumericUser)?;
    let mut payload = base_payload(creds, cfg);
    payload.username = Some(username);
    payload.device = Some(u32::from(device.jid.device()));
    payload.passive = Some(cfg.login_passive);
    payload.pull = Some(true);
    payload.lid_db_migrated = cfg.lid_db_migrated;
    payload.lc = cfg.lc;
    Ok(payload)
}

/// The login ClientPayload, encoded.
pub fn login_payload(creds: &Credentials, cfg: &ClientConfig) -> Result<Vec<u8>, PairingError> {
    login_client_payload(creds, cfg).map(|p| p.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::DeviceIdentity;
    use crate::jid::Jid;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn creds() -> Credentials {
        Credentials::generate(&mut ChaCha20Rng::from_seed([1; 32]))
    }

    fn paired(jid: &str) -> Credentials {
        let mut c = creds();
        c.device = Some(DeviceIdentity {
            jid: jid.parse().unwrap_or_else(|_| Jid::user("x")),
            lid: None,
            account: Default::default(),
            platform: "android".into(),
            business_name: None,
        });
        c
    }

    #[test]
    fn registration_fields() {
        let c = creds();
        let cfg = ClientConfig::default();
        let bytes = registration_payload(&c, &cfg);
        let p = ClientPayload::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            (p.passive, p.pull, p.username),
            (Some(false), Some(false), None)
        );
        let d = p.device_pairing_data.unwrap();
        assert_eq!(
            d.e_regid.as_deref(),
            Some(&c.registration_id.to_be_bytes()[..])
        );
        assert_eq!(d.e_keytype.as_deref(), Some(&[5u8][..]));
        assert_eq!(d.e_skey_id.as_deref(), Some(&[0u8, 0, 1][..]));
        assert_eq!(d.e_skey_sig.as_ref().map(|s| s.len()), Some(64));
        // MD5("2.3000.1045649367").
        assert_eq!(
            d.build_hash.as_deref(),
            Some(&Md5::digest(b"2.3000.1045649367")[..])
        );
        let props = DeviceProps::decode(d.device_props.unwrap()).unwrap();
        assert_eq!(props.os.as_deref(), Some("amarula"));
        assert_eq!(props.platform_type, Some(1));
        let ua = p.user_agent.unwrap();
        assert_eq!(ua.platform, Some(14));
        assert_eq!(ua.manufacturer.as_deref(), Some(""));
    }

    #[test]
    fn md5_known_answer() {
        assert_eq!(
            hex::encode(Md5::digest(b"abc")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn login_fields_and_errors() {
        let cfg = ClientConfig::default();
        assert_eq!(login_payload(&creds(), &cfg), Err(PairingError::NotPaired));
        let p = login_client_payload(&paired("15551234567:12@s.whatsapp.net"), &cfg).unwrap();
        assert_eq!(p.username, Some(15_551_234_567));
        assert_eq!(p.device, Some(12));
        assert_eq!((p.passive, p.pull), (Some(true), Some(true)));
        assert_eq!((p.lid_db_migrated, p.lc), (Some(true), Some(1)));
        assert!(p.device_pairing_data.is_none());
        for bad in [
            "abc:1@s.whatsapp.net",
            "+1555:1@s.whatsapp.net",
            "99999999999999999999999@s.whatsapp.net",
        ] {
            assert_eq!(
                login_payload(&paired(bad), &cfg),
                Err(PairingError::NonNumericUser),
                "{bad}"
            );
        }
    }

    #[test]
    fn push_name_falls_back_to_credentials() {
        let mut c = creds();
        c.push_name = Some("from creds".into());
        let mut cfg = ClientConfig::default();
        assert_eq!(
            registration_client_payload(&c, &cfg).push_name.as_deref(),
            Some("from creds")
        );
        cfg.push_name = Some("from cfg".into());
        assert_eq!(
            registration_client_payload(&c, &cfg).push_name.as_deref(),
            Some("from cfg")
        );
    }
}
