//! Message-secret add-ons (MESSAGES.md §5): content that refers to an earlier message M (a poll
//! vote, an event response, an encrypted reaction or edit) is encrypted with a key derived from
//! M's `messageContextInfo.messageSecret`, so only those who saw M can read it.
//!
//! key = HKDF-SHA256(IKM = secret, no salt, info = M's id ‖ M's author ‖ the add-on's sender ‖
//! use case, 32 bytes), both JIDs as user JIDs without device; AES-256-GCM with a 12-byte IV,
//! the tag appended to the ciphertext; the AAD is `M's id ‖ 0x00 ‖ sender` for poll votes and
//! event responses, empty otherwise.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::jid::Jid;

/// What an add-on is, which enters its key (the HKDF info's last part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UseCase {
    /// A vote on a poll.
    PollVote,
    /// An encrypted reaction.
    EncReaction,
    /// An encrypted comment.
    EncComment,
    /// A response to an event.
    EventResponse,
    /// An edit of an event.
    EventEdit,
    /// A secret-encrypted message edit.
    MessageEdit,
    /// An edit of a poll.
    PollEdit,
    /// An option added to a poll.
    PollAddOption,
}

impl UseCase {
    /// The use case as it enters the key derivation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PollVote => "Poll Vote",
            Self::EncReaction => "Enc Reaction",
            Self::EncComment => "Enc Comment",
            Self::EventResponse => "Event Response",
            Self::EventEdit => "Event Edit",
            Self::MessageEdit => "Message Edit",
            Self::PollEdit => "Poll Edit",
            Self::PollAddOption => "Poll Add Option",
        }
    }

    /// Whether the AAD binds the target id and the sender (votes and event responses).
    fn binds_sender(self) -> bool {
        matches!(self, Self::PollVote | Self::EventResponse)
    }
}

/// Why an add-on did not decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The IV is not 12 bytes.
    #[error("add-on IV is not 12 bytes")]
    BadIv,
    /// Authentication failed: wrong secret, wrong JIDs, or tampered bytes.
    #[error("add-on does not authenticate")]
    Decrypt,
    /// The target message's secret is not known to this client.
    #[error("message secret of the target unknown")]
    UnknownSecret,
    /// The decrypted payload is not the protobuf it should be.
    #[error("add-on payload is malformed")]
    Malformed,
}

/// The JID string that enters the key: the user, without device or agent.
fn user_string(jid: &Jid) -> String {
    jid.to_non_device().to_string()
}

fn derive(
    secret: &[u8],
    target_id: &str,
    target_author: &Jid,
    sender: &Jid,
    use_case: UseCase,
) -> (Zeroizing<[u8; 32]>, Vec<u8>) {
    let author = user_string(target_author);
    let sender = user_string(sender);
    let mut info = Vec::with_capacity(target_id.len() + author.len() + sender.len() + 16);
    info.extend_from_slice(target_id.as_bytes());
    info.extend_from_slice(author.as_bytes());
    info.extend_from_slice(sender.as_bytes());
    info.extend_from_slice(use_case.as_str().as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, secret)
        .expand(&info, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let aad = if use_case.binds_sender() {
        let mut aad = Vec::with_capacity(target_id.len() + 1 + sender.len());
        aad.extend_from_slice(target_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(sender.as_bytes());
        aad
    } else {
        Vec::new()
    };
    (key, aad)
}

/// Encrypts an add-on's plaintext by `sender` for the message `target_id` written by
/// `target_author` whose secret is `secret`. Returns the ciphertext with its tag.
pub fn encrypt(
    secret: &[u8],
    target_id: &str,
    target_author: &Jid,
    sender: &Jid,
    use_case: UseCase,
    iv: &[u8; 12],
    plaintext: &[u8],
) -> Vec<u8> {
    let (key, aad) = derive(secret, target_id, target_author, sender, use_case);
    let cipher = Aes256Gcm::new(key.as_ref().into());
    cipher
        .encrypt(
            Nonce::from_slice(iv),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail")
}

/// Decrypts an add-on (see [`encrypt`]).
pub fn decrypt(
    secret: &[u8],
    target_id: &str,
    target_author: &Jid,
    sender: &Jid,
    use_case: UseCase,
    iv: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, SecretError> {
    let iv: &[u8; 12] = iv.try_into().map_err(|_| SecretError::BadIv)?;
    let (key, aad) = derive(secret, target_id, target_author, sender, use_case);
    let cipher = Aes256Gcm::new(key.as_ref().into());
    cipher
        .decrypt(
            Nonce::from_slice(iv),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SecretError::Decrypt)
}

/// The hash that stands for a poll option in a vote: SHA-256 of its name.
pub fn option_hash(name: &str) -> [u8; 32] {
    Sha256::digest(name.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().expect("test JID")
    }

    #[test]
    fn round_trip_and_binding() {
        let secret = [7u8; 32];
        let author = jid("111@s.whatsapp.net");
        let voter = jid("222:3@s.whatsapp.net");
        let iv = [1u8; 12];
        let ct = encrypt(
            &secret,
            "ABC",
            &author,
            &voter,
            UseCase::PollVote,
            &iv,
            b"vote",
        );
        // The device part does not enter the key.
        let voter0 = jid("222@s.whatsapp.net");
        assert_eq!(
            decrypt(
                &secret,
                "ABC",
                &author,
                &voter0,
                UseCase::PollVote,
                &iv,
                &ct
            )
            .as_deref(),
            Ok(&b"vote"[..])
        );
        for (id, a, v, u) in [
            ("ABD", &author, &voter0, UseCase::PollVote),
            ("ABC", &voter0, &voter0, UseCase::PollVote),
            ("ABC", &author, &author, UseCase::PollVote),
            ("ABC", &author, &voter0, UseCase::EventResponse),
        ] {
            assert_eq!(
                decrypt(&secret, id, a, v, u, &iv, &ct),
                Err(SecretError::Decrypt)
            );
        }
        assert_eq!(
            decrypt(
                &secret,
                "ABC",
                &author,
                &voter,
                UseCase::PollVote,
                &iv[..11],
                &ct
            ),
            Err(SecretError::BadIv)
        );
    }

    #[test]
    fn matches_an_independent_implementation() {
        // Computed with Node.js crypto (hkdfSync with an empty salt, aes-256-gcm) from the
        // rule in the module docs.
        let ct = encrypt(
            &[7; 32],
            "ABC",
            &jid("111@s.whatsapp.net"),
            &jid("222@s.whatsapp.net"),
            UseCase::PollVote,
            &[1; 12],
            b"vote",
        );
        assert_eq!(hex::encode(ct), "bce149edc324814fb18899031a3afedadb98c3f8");
    }

    #[test]
    fn option_hash_is_sha256_of_the_name() {
        assert_eq!(
            hex::encode(option_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
