//! Media re-upload (SESSION.md §12.5, whatsmeow mediaretry.go): when a file is gone from the
//! media hosts (404/410), the receiver asks the sender's phone to upload it again with a
//! `<receipt type="server-error">` carrying an encrypted `ServerErrorReceipt`; the answer comes
//! as a `mediaretry` notification with an encrypted `MediaRetryNotification` naming the new
//! direct path. Both are AES-256-GCM under HKDF-SHA256(media key, no salt, "WhatsApp Media
//! Retry Notification", 32 bytes), with the message id as AAD.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use amarula_proto::mms_retry::{
    MediaRetryNotification, ServerErrorReceipt, media_retry_notification,
};
use hkdf::Hkdf;
use prost::Message as _;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::binary::Node;
use crate::jid::Jid;

fn key(media_key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, media_key)
        .expand(b"WhatsApp Media Retry Notification", key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

/// The re-upload request for message `id` in `chat` (from us or not; `participant` is the
/// sender in a group), addressed to our own user `own`. `iv` is 12 random bytes.
pub fn retry_receipt(
    id: &str,
    own: &Jid,
    chat: &Jid,
    from_me: bool,
    participant: Option<&Jid>,
    media_key: &[u8; 32],
    iv: &[u8; 12],
) -> Node {
    let plain = ServerErrorReceipt {
        stanza_id: Some(id.to_owned()),
    }
    .encode_to_vec();
    let cipher = Aes256Gcm::new(key(media_key).as_ref().into());
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(iv),
            Payload {
                msg: &plain,
                aad: id.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut rmr = Node::new("rmr")
        .attr("jid", chat.clone())
        .attr("from_me", if from_me { "true" } else { "false" });
    if let Some(p) = participant {
        rmr = rmr.attr("participant", p.clone());
    }
    Node::new("receipt")
        .attr("id", id)
        .attr("to", own.to_non_device())
        .attr("type", "server-error")
        .children([
            Node::new("encrypt").children([
                Node::new("enc_p").bytes(ciphertext),
                Node::new("enc_iv").bytes(iv.to_vec()),
            ]),
            rmr,
        ])
}

/// A `mediaretry` notification, before decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaRetry {
    /// The message id.
    pub id: String,
    /// Its chat.
    pub chat: Jid,
    /// Whether it was ours.
    pub from_me: bool,
    /// Its sender in a group.
    pub participant: Option<Jid>,
    /// The phone's error code instead of an answer (2: the phone no longer has the file).
    pub error_code: Option<u32>,
    /// The encrypted answer.
    pub ciphertext: Vec<u8>,
    /// Its IV.
    pub iv: Vec<u8>,
}

/// Why a media retry notification could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaRetryError {
    /// A required attribute or child is missing.
    #[error("media retry notification without {0}")]
    Missing(&'static str),
    /// The phone answered with an error code.
    #[error("the phone could not upload the media again (code {0})")]
    Phone(u32),
    /// The answer does not decrypt with the media key.
    #[error("media retry notification does not decrypt")]
    Decrypt,
    /// The answer is not a `MediaRetryNotification`, or is for another message.
    #[error("media retry notification is malformed")]
    Malformed,
}

/// Reads a `<notification type="mediaretry">`.
pub fn parse_retry_notification(node: &Node) -> Result<MediaRetry, MediaRetryError> {
    let id = node
        .attr_str("id")
        .ok_or(MediaRetryError::Missing("id"))?
        .to_owned();
    let rmr = node.child("rmr").ok_or(MediaRetryError::Missing("rmr"))?;
    let jid = |n: &Node, k: &str| -> Option<Jid> {
        n.attr_jid(k)
            .cloned()
            .or_else(|| n.attr_str(k).and_then(|s| s.parse().ok()))
    };
    let chat = jid(rmr, "jid").ok_or(MediaRetryError::Missing("rmr jid"))?;
    let from_me = rmr.attr_str("from_me") == Some("true");
    let participant = jid(rmr, "participant");
    let error_code = node
        .child("error")
        .map(|e| e.attr_str("code").and_then(|c| c.parse().ok()).unwrap_or(0));
    let (ciphertext, iv) = match node.child("encrypt") {
        Some(enc) => (
            enc.child("enc_p")
                .and_then(Node::content_bytes)
                .ok_or(MediaRetryError::Missing("enc_p"))?
                .to_vec(),
            enc.child("enc_iv")
                .and_then(Node::content_bytes)
                .ok_or(MediaRetryError::Missing("enc_iv"))?
                .to_vec(),
        ),
        None if error_code.is_some() => (Vec::new(), Vec::new()),
        None => return Err(MediaRetryError::Missing("encrypt")),
    };
    Ok(MediaRetry {
        id,
        chat,
        from_me,
        participant,
        error_code,
        ciphertext,
        iv,
    })
}

/// What the phone answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaRetryOutcome {
    /// Uploaded again: the new direct path.
    Uploaded {
        /// Where the file is now.
        direct_path: String,
    },
    /// The phone does not have the file any more.
    NotFound,
    /// The phone could not decrypt the request.
    DecryptionError,
    /// Another error.
    GeneralError,
}

/// Decrypts the phone's answer with the media key of the message.
pub fn decrypt_retry_notification(
    retry: &MediaRetry,
    media_key: &[u8; 32],
) -> Result<MediaRetryOutcome, MediaRetryError> {
    if retry.ciphertext.is_empty() {
        return Err(MediaRetryError::Phone(retry.error_code.unwrap_or(0)));
    }
    let iv: &[u8; 12] = retry
        .iv
        .as_slice()
        .try_into()
        .map_err(|_| MediaRetryError::Decrypt)?;
    let cipher = Aes256Gcm::new(key(media_key).as_ref().into());
    let plain = cipher
        .decrypt(
            Nonce::from_slice(iv),
            Payload {
                msg: &retry.ciphertext,
                aad: retry.id.as_bytes(),
            },
        )
        .map_err(|_| MediaRetryError::Decrypt)?;
    let n =
        MediaRetryNotification::decode(plain.as_slice()).map_err(|_| MediaRetryError::Malformed)?;
    if n.stanza_id.as_deref().is_some_and(|s| s != retry.id) {
        return Err(MediaRetryError::Malformed);
    }
    use media_retry_notification::ResultType;
    Ok(match n.result.and_then(|r| ResultType::try_from(r).ok()) {
        Some(ResultType::Success) => match n.direct_path {
            Some(p) if !p.is_empty() => MediaRetryOutcome::Uploaded { direct_path: p },
            _ => return Err(MediaRetryError::Malformed),
        },
        Some(ResultType::NotFound) => MediaRetryOutcome::NotFound,
        Some(ResultType::DecryptionError) => MediaRetryOutcome::DecryptionError,
        _ => MediaRetryOutcome::GeneralError,
    })
}

/// The phone's side, for tests and the simulator: encrypts an answer to a re-upload request.
pub fn encrypt_retry_answer(
    id: &str,
    media_key: &[u8; 32],
    iv: &[u8; 12],
    outcome: &MediaRetryOutcome,
) -> Vec<u8> {
    use media_retry_notification::ResultType;
    let (result, direct_path) = match outcome {
        MediaRetryOutcome::Uploaded { direct_path } => {
            (ResultType::Success, Some(direct_path.clone()))
        }
        MediaRetryOutcome::NotFound => (ResultType::NotFound, None),
        MediaRetryOutcome::DecryptionError => (ResultType::DecryptionError, None),
        MediaRetryOutcome::GeneralError => (ResultType::GeneralError, None),
    };
    let plain = MediaRetryNotification {
        stanza_id: Some(id.to_owned()),
        direct_path,
        result: Some(result as i32),
        message_secret: None,
    }
    .encode_to_vec();
    Aes256Gcm::new(key(media_key).as_ref().into())
        .encrypt(
            Nonce::from_slice(iv),
            Payload {
                msg: &plain,
                aad: id.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail")
}

/// The phone's side: reads a re-upload request (`<receipt type="server-error">`) with the
/// media key of the message; returns the message id it names.
pub fn decrypt_retry_receipt(
    receipt: &Node,
    media_key: &[u8; 32],
) -> Result<String, MediaRetryError> {
    let id = receipt
        .attr_str("id")
        .ok_or(MediaRetryError::Missing("id"))?;
    let enc = receipt
        .child("encrypt")
        .ok_or(MediaRetryError::Missing("encrypt"))?;
    let ct = enc
        .child("enc_p")
        .and_then(Node::content_bytes)
        .ok_or(MediaRetryError::Missing("enc_p"))?;
    let iv: &[u8; 12] = enc
        .child("enc_iv")
        .and_then(Node::content_bytes)
        .ok_or(MediaRetryError::Missing("enc_iv"))?
        .try_into()
        .map_err(|_| MediaRetryError::Decrypt)?;
    let plain = Aes256Gcm::new(key(media_key).as_ref().into())
        .decrypt(
            Nonce::from_slice(iv),
            Payload {
                msg: ct,
                aad: id.as_bytes(),
            },
        )
        .map_err(|_| MediaRetryError::Decrypt)?;
    let r = ServerErrorReceipt::decode(plain.as_slice()).map_err(|_| MediaRetryError::Malformed)?;
    match r.stanza_id {
        Some(s) if s == id => Ok(s),
        _ => Err(MediaRetryError::Malformed),
    }
}
