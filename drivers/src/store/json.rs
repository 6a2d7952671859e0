//! The credentials' JSON form: the file format of [`FileStore`](super::FileStore) and of the
//! SQLite store's credentials row.

use amarula_core::credentials::{Credentials, DeviceIdentity, SignedPreKey};
use amarula_core::jid::{Jid, JidParseError};
use amarula_core::noise::KeyPair;
use bytes::Bytes;
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// Why a JSON value is not credentials (see [`credentials_from_json`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsJsonError {
    /// A required field is absent.
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("`{0}` has the wrong type")]
    WrongType(&'static str),
    /// A field is not hex.
    #[error("`{field}` is not hex: {source}")]
    Hex {
        /// The field.
        field: &'static str,
        /// The decoder's complaint.
        source: hex::FromHexError,
    },
    /// A byte field has the wrong length.
    #[error("`{field}` is not {expected} bytes")]
    Length {
        /// The field.
        field: &'static str,
        /// The length it must have.
        expected: usize,
    },
    /// A number does not fit its field.
    #[error("`{0}` is out of range")]
    Range(&'static str),
    /// A JID field does not parse.
    #[error("`{field}` is not a JID: {source}")]
    Jid {
        /// The field.
        field: &'static str,
        /// The parser's complaint.
        source: JidParseError,
    },
}

type JsonResult<T> = Result<T, CredentialsJsonError>;

/// Credentials as JSON, private keys in hex. This is the file format of [`FileStore`](super::FileStore) and the
/// `credentials` field of recorded sessions; the result holds secrets, so keep it out of logs.
pub fn credentials_to_json(c: &Credentials) -> Value {
    json!({
        "noise_private": hex::encode(c.noise_key.private_bytes().as_slice()),
        "identity_private": hex::encode(c.identity_key.private_bytes().as_slice()),
        "signed_prekey": {
            "id": c.signed_prekey.id,
            "private": hex::encode(c.signed_prekey.key_pair.private_bytes().as_slice()),
            "signature": hex::encode(c.signed_prekey.signature),
        },
        "registration_id": c.registration_id,
        "adv_secret": hex::encode(c.adv_secret.as_slice()),
        "device": c.device.as_ref().map(|d| json!({
            "jid": d.jid.to_string(),
            "lid": d.lid.as_ref().map(ToString::to_string),
            "account": hex::encode(&d.account),
            "platform": d.platform,
            "business_name": d.business_name,
        })),
        "own_lid": c.own_lid.as_ref().map(ToString::to_string),
        "lid_migrated": c.lid_migrated,
        "push_name": c.push_name,
        "routing_info": c.routing_info.as_ref().map(hex::encode),
        "next_prekey_id": c.next_prekey_id,
    })
}

fn field<'a>(v: &'a Value, k: &'static str) -> JsonResult<&'a Value> {
    v.get(k).ok_or(CredentialsJsonError::Missing(k))
}

fn str_field<'a>(v: &'a Value, k: &'static str) -> JsonResult<&'a str> {
    field(v, k)?
        .as_str()
        .ok_or(CredentialsJsonError::WrongType(k))
}

/// A field that may be absent or null; present, it must be a string.
fn opt_str<'a>(v: &'a Value, k: &'static str) -> JsonResult<Option<&'a str>> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CredentialsJsonError::WrongType(k)),
    }
}

fn unhex(s: &str, field: &'static str) -> JsonResult<Vec<u8>> {
    hex::decode(s).map_err(|source| CredentialsJsonError::Hex { field, source })
}

fn hex_array<const N: usize>(v: &Value, k: &'static str) -> JsonResult<[u8; N]> {
    unhex(str_field(v, k)?, k)?
        .try_into()
        .map_err(|_| CredentialsJsonError::Length {
            field: k,
            expected: N,
        })
}

fn u32_field(v: &Value, k: &'static str) -> JsonResult<u32> {
    let n = field(v, k)?
        .as_u64()
        .ok_or(CredentialsJsonError::WrongType(k))?;
    u32::try_from(n).map_err(|_| CredentialsJsonError::Range(k))
}

fn jid(s: &str, field: &'static str) -> JsonResult<Jid> {
    s.parse()
        .map_err(|source| CredentialsJsonError::Jid { field, source })
}

fn opt_jid(v: &Value, k: &'static str) -> JsonResult<Option<Jid>> {
    opt_str(v, k)?.map(|s| jid(s, k)).transpose()
}

/// Credentials back from [`credentials_to_json`]. Unknown fields are ignored.
///
/// # Errors
/// A [`CredentialsJsonError`] naming the first field that is missing or malformed.
pub fn credentials_from_json(v: &Value) -> Result<Credentials, CredentialsJsonError> {
    let spk = field(v, "signed_prekey")?;
    let device = match v.get("device") {
        None | Some(Value::Null) => None,
        Some(d) => Some(DeviceIdentity {
            jid: jid(str_field(d, "jid")?, "device.jid")?,
            lid: opt_jid(d, "lid")?,
            account: unhex(str_field(d, "account")?, "device.account")?.into(),
            platform: str_field(d, "platform")?.to_owned(),
            business_name: opt_str(d, "business_name")?.map(str::to_owned),
        }),
    };
    Ok(Credentials {
        noise_key: KeyPair::from_private_bytes(hex_array(v, "noise_private")?),
        identity_key: KeyPair::from_private_bytes(hex_array(v, "identity_private")?),
        signed_prekey: SignedPreKey {
            id: u32_field(spk, "id")?,
            key_pair: KeyPair::from_private_bytes(hex_array(spk, "private")?),
            signature: hex_array(spk, "signature")?,
        },
        registration_id: u32_field(v, "registration_id")?,
        adv_secret: Zeroizing::new(hex_array(v, "adv_secret")?),
        device,
        own_lid: opt_jid(v, "own_lid")?,
        // Absent in files written before LID addressing: not migrated.
        lid_migrated: v
            .get("lid_migrated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        push_name: opt_str(v, "push_name")?.map(str::to_owned),
        routing_info: opt_str(v, "routing_info")?
            .map(|s| unhex(s, "routing_info"))
            .transpose()?
            .map(Bytes::from),
        // Absent in files written before prekeys were generated: start at 1.
        next_prekey_id: match v.get("next_prekey_id") {
            None | Some(Value::Null) => 1,
            Some(_) => u32_field(v, "next_prekey_id")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{credentials, paired, same};

    #[test]
    fn json_round_trip() {
        for c in [credentials(1), paired(2)] {
            let v = credentials_to_json(&c);
            let back = credentials_from_json(&v).expect("parses");
            assert!(same(&c, &back));
            assert_eq!(back.noise_key.public_bytes(), c.noise_key.public_bytes());
            assert_eq!(back.device, c.device);
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        let mut v = credentials_to_json(&paired(3));
        v["noise_private"] = json!("abc");
        assert!(matches!(
            credentials_from_json(&v),
            Err(CredentialsJsonError::Hex {
                field: "noise_private",
                ..
            })
        ));
        v["noise_private"] = json!("00");
        assert_eq!(
            credentials_from_json(&v).err(),
            Some(CredentialsJsonError::Length {
                field: "noise_private",
                expected: 32
            })
        );
        let mut v = credentials_to_json(&paired(3));
        v.as_object_mut().expect("object").remove("adv_secret");
        assert_eq!(
            credentials_from_json(&v).err(),
            Some(CredentialsJsonError::Missing("adv_secret"))
        );
        let mut v = credentials_to_json(&paired(3));
        v["registration_id"] = json!(u64::from(u32::MAX) + 1);
        assert_eq!(
            credentials_from_json(&v).err(),
            Some(CredentialsJsonError::Range("registration_id"))
        );
        let mut v = credentials_to_json(&paired(3));
        v["device"]["jid"] = json!("nobody");
        assert!(matches!(
            credentials_from_json(&v),
            Err(CredentialsJsonError::Jid {
                field: "device.jid",
                ..
            })
        ));
        v["device"]["jid"] = json!(7);
        assert_eq!(
            credentials_from_json(&v).err(),
            Some(CredentialsJsonError::WrongType("jid"))
        );
    }
}
