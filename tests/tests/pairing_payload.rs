//! The ClientPayload builders reproduce, byte for byte, the payloads of the Noise handshake
//! vectors (made by Baileys), given the same inputs and a Baileys-shaped [`ClientConfig`].

use std::path::PathBuf;

use amarula_core::credentials::{Credentials, DeviceIdentity, SignedPreKey};
use amarula_core::noise::KeyPair;
use amarula_core::pairing::{self, ClientConfig, PairingError};
use amarula_proto::client_payload::web_info::WebSubPlatform;
use amarula_proto::device_props::{HistorySyncConfig, PlatformType};
use amarula_proto::{ClientPayload, DeviceProps, Message};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::Value;

fn vectors() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vectors/noise_handshake.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn transcript<'a>(v: &'a Value, kind: &str) -> &'a Value {
    v["transcripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["client_payload"]["kind"] == kind)
        .unwrap()
}

fn hex_of(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn key32(v: &Value) -> [u8; 32] {
    hex_of(v).try_into().unwrap()
}

/// Baileys' history sync configuration at the version that made the vectors.
fn baileys_history_sync() -> HistorySyncConfig {
    HistorySyncConfig {
        storage_quota_mb: Some(10240),
        inline_initial_payload_in_e2_ee_msg: Some(true),
        support_call_log_history: Some(false),
        support_bot_user_agent_chat_history: Some(true),
        support_cag_reactions_and_polls: Some(true),
        support_biz_hosted_msg: Some(true),
        support_recent_sync_chunk_message_count_tuning: Some(true),
        support_hosted_group_msg: Some(true),
        support_fbid_bot_chat_history: Some(true),
        support_message_association: Some(true),
        ..HistorySyncConfig::default()
    }
}

/// The [`ClientConfig`] equivalent of a Baileys socket config (`inputs.config`).
fn baileys_config(config: &Value) -> ClientConfig {
    let version: Vec<u32> = config["version"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| u32::try_from(n.as_u64().unwrap()).unwrap())
        .collect();
    let os = config["browser"][0].as_str().unwrap();
    let platform_type = match config["browser"][1].as_str().unwrap() {
        "Chrome" => PlatformType::Chrome,
        "Safari" => PlatformType::Safari,
        "Firefox" => PlatformType::Firefox,
        other => panic!("browser {other} not mapped"),
    };
    let full_sync = config["syncFullHistory"].as_bool().unwrap();
    // Baileys poses as the desktop app of Mac OS / Windows when it asks for the full history.
    let web_sub_platform = match (full_sync, os) {
        (true, "Mac OS") => WebSubPlatform::Darwin,
        (true, "Windows") => WebSubPlatform::Win32,
        _ => WebSubPlatform::WebBrowser,
    };
    ClientConfig {
        version: version.try_into().unwrap(),
        os: os.to_owned(),
        os_version: None,
        platform_type,
        require_full_sync: full_sync,
        history_sync: baileys_history_sync(),
        web_sub_platform,
        manufacturer: None,
        locale_language: "en".to_owned(),
        locale_country: config["countryCode"].as_str().unwrap().to_owned(),
        login_passive: false,
        lid_db_migrated: None,
        lc: None,
        ..ClientConfig::default()
    }
}

fn fresh_credentials() -> Credentials {
    Credentials::generate(&mut ChaCha20Rng::from_seed([9; 32]))
}

#[test]
fn registration_payload_matches_the_vector() {
    let v = vectors();
    let t = transcript(&v, "registration");
    let cp = &t["client_payload"];
    let inputs = &cp["inputs"];
    let mut creds = fresh_credentials();
    creds.noise_key =
        KeyPair::from_private_bytes(key32(&t["keys"]["client_static_noise_key"]["private"]));
    creds.identity_key =
        KeyPair::from_private_bytes(key32(&inputs["signed_identity_key"]["private"]));
    assert_eq!(
        creds.identity_key.public_bytes(),
        &key32(&inputs["signed_identity_key"]["public"])
    );
    let spk = &inputs["signed_prekey"];
    creds.signed_prekey = SignedPreKey {
        id: u32::try_from(spk["key_id"].as_u64().unwrap()).unwrap(),
        key_pair: KeyPair::from_private_bytes(key32(&spk["private"])),
        signature: hex_of(&spk["signature"]).try_into().unwrap(),
    };
    assert_eq!(
        creds.signed_prekey.key_pair.public_bytes(),
        &key32(&spk["public"])
    );
    creds.registration_id = u32::try_from(inputs["registration_id"].as_u64().unwrap()).unwrap();
    let cfg = baileys_config(&inputs["config"]);

    let ours = pairing::registration_payload(&creds, &cfg);
    let expected = hex_of(&cp["hex"]);
    if ours != expected {
        // Show the field-level difference before failing on the bytes.
        let a = ClientPayload::decode(ours.as_slice()).unwrap();
        let b = ClientPayload::decode(expected.as_slice()).unwrap();
        assert_eq!(a, b);
    }
    assert_eq!(hex::encode(&ours), hex::encode(&expected));

    // The nested DeviceProps decode to the recorded fields.
    let pairing_data = ClientPayload::decode(ours.as_slice())
        .unwrap()
        .device_pairing_data
        .unwrap();
    let props = DeviceProps::decode(pairing_data.device_props.unwrap()).unwrap();
    assert_eq!(props.os.as_deref(), Some("Ubuntu"));
    assert_eq!(props.platform_type, Some(PlatformType::Chrome as i32));
    // The build hash is MD5 of the dotted version.
    assert_eq!(
        hex::encode(pairing_data.build_hash.unwrap()),
        "73d9507943254ddaccac88bff9870f88"
    );
}

#[test]
fn login_payload_matches_the_vector() {
    let v = vectors();
    let t = transcript(&v, "login");
    let cp = &t["client_payload"];
    let inputs = &cp["inputs"];
    let mut creds = fresh_credentials();
    creds.device = Some(DeviceIdentity {
        jid: inputs["me"].as_str().unwrap().parse().unwrap(),
        lid: None,
        account: Default::default(),
        platform: "android".to_owned(),
        business_name: None,
    });
    let cfg = baileys_config(&inputs["config"]);
    let ours = pairing::login_payload(&creds, &cfg).unwrap();
    assert_eq!(hex::encode(&ours), cp["hex"].as_str().unwrap());
}

#[test]
fn default_config_follows_whatsmeow() {
    let mut creds = fresh_credentials();
    let cfg = ClientConfig::default();
    assert_eq!(
        pairing::login_payload(&creds, &cfg),
        Err(PairingError::NotPaired)
    );
    creds.device = Some(DeviceIdentity {
        jid: "15551234567:12@s.whatsapp.net".parse().unwrap(),
        lid: None,
        account: Default::default(),
        platform: "android".to_owned(),
        business_name: None,
    });
    let login =
        ClientPayload::decode(pairing::login_payload(&creds, &cfg).unwrap().as_slice()).unwrap();
    assert_eq!(login.username, Some(15_551_234_567));
    assert_eq!(login.device, Some(12));
    assert_eq!(
        (login.passive, login.pull, login.lid_db_migrated, login.lc),
        (Some(true), Some(true), Some(true), Some(1))
    );
    let ua = login.user_agent.unwrap();
    let version = ua.app_version.unwrap();
    assert_eq!(
        [version.primary, version.secondary, version.tertiary],
        pairing::WA_WEB_VERSION.map(Some)
    );
    assert_eq!(ua.manufacturer.as_deref(), Some(""));

    let reg = pairing::registration_client_payload(&creds, &cfg);
    let props =
        DeviceProps::decode(reg.device_pairing_data.unwrap().device_props.unwrap()).unwrap();
    assert_eq!(props.os.as_deref(), Some(pairing::DEFAULT_OS));
    let version = props.version.unwrap();
    assert_eq!(
        (version.primary, version.secondary, version.tertiary),
        (Some(0), Some(1), Some(0))
    );
    let history = props.history_sync_config.unwrap();
    assert_eq!(history, pairing::handled_history_sync());
    assert_eq!(history.inline_initial_payload_in_e2_ee_msg, Some(true));
    assert_eq!(history.support_call_log_history, None);
    assert_eq!(history.thumbnail_sync_days_limit, Some(60));
}
