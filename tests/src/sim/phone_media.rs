//! Media from and for the simulator's phones: a phone sends a media message of any kind (the
//! file encrypted with a fresh media key, the blob stored on the simulator's media host, the
//! message naming it), and checks and decrypts the file of a media message it received, as
//! the real phone does (SESSION.md §12).

use amarula_core::jid::Jid;
use amarula_core::media::{self, FileHashes, MediaError, MediaType};
use amarula_proto::e2e;
use bytes::Bytes;
use rand_core::RngCore;

use super::Account;
use super::phone_send::PhoneSendError;

/// Why a phone could not fetch a media file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneMediaError {
    /// The message names no complete media file (key, hashes, path).
    #[error("the message names no downloadable media")]
    NotMedia,
    /// The media host does not have it.
    #[error("the media host does not have the file")]
    Missing,
    /// The file failed a check.
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// The kinds a phone sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhoneMediaKind {
    /// An image.
    Image,
    /// A video.
    Video,
    /// A voice note.
    VoiceNote,
    /// A document.
    Document,
    /// A sticker.
    Sticker,
}

impl PhoneMediaKind {
    fn media_type(self) -> MediaType {
        match self {
            Self::Image => MediaType::Image,
            Self::Video => MediaType::Video,
            Self::VoiceNote => MediaType::Audio,
            Self::Document => MediaType::Document,
            Self::Sticker => MediaType::Sticker,
        }
    }
}

/// The media file of a message: its type, key, hashes and path (`None` when the message
/// names no complete file).
pub(super) fn file_of(message: &e2e::Message) -> Option<(MediaType, [u8; 32], FileHashes, String)> {
    macro_rules! pick {
        ($($field:ident => $kind:expr),*) => {
            $(if let Some(m) = &message.$field {
                let key = <[u8; 32]>::try_from(m.media_key.as_deref()?).ok()?;
                let sha = <[u8; 32]>::try_from(m.file_sha256.as_deref()?).ok()?;
                let enc = <[u8; 32]>::try_from(m.file_enc_sha256.as_deref()?).ok()?;
                let hashes = FileHashes::new(sha, enc, m.file_length?);
                return Some(($kind, key, hashes, m.direct_path.clone()?));
            })*
        };
    }
    pick!(
        image_message => MediaType::Image,
        video_message => MediaType::Video,
        audio_message => MediaType::Audio,
        document_message => MediaType::Document,
        sticker_message => MediaType::Sticker
    );
    None
}

impl Account {
    /// The phone sends `data` as a media message of `kind` to `to` (a user or a group): the
    /// file is encrypted under a fresh media key, stored on the simulator's media host, and
    /// named by the message, which goes out as [`phone_send`](Self::phone_send) sends. The
    /// phone remembers the file for re-upload requests. Returns the message id.
    ///
    /// # Errors
    /// As [`phone_send`](Self::phone_send).
    pub fn phone_send_media(
        &self,
        to: &Jid,
        kind: PhoneMediaKind,
        data: &[u8],
        mimetype: &str,
        caption: Option<&str>,
    ) -> Result<String, PhoneSendError> {
        let mut key = [0u8; 32];
        self.shared.lock().rng.fill_bytes(&mut key);
        let (blob, hashes) = media::encrypt(&key, kind.media_type(), data);
        let direct_path = self.shared.media.store(blob);
        let url = format!("http://{}{direct_path}", self.shared.media.host());
        let b = |v: &[u8]| Some(Bytes::copy_from_slice(v));
        let (key_b, sha, enc) = (b(&key), b(&hashes.file_sha256), b(&hashes.file_enc_sha256));
        let len = Some(hashes.file_length);
        let (url, path, mime) = (Some(url), Some(direct_path), Some(mimetype.to_owned()));
        let caption = caption.map(str::to_owned);
        let mut message = e2e::Message::default();
        match kind {
            PhoneMediaKind::Image => {
                message.image_message = Some(Box::new(e2e::ImageMessage {
                    url,
                    mimetype: mime,
                    caption,
                    file_sha256: sha,
                    file_length: len,
                    media_key: key_b,
                    file_enc_sha256: enc,
                    direct_path: path,
                    ..Default::default()
                }));
            }
            PhoneMediaKind::Video => {
                message.video_message = Some(Box::new(e2e::VideoMessage {
                    url,
                    mimetype: mime,
                    caption,
                    file_sha256: sha,
                    file_length: len,
                    media_key: key_b,
                    file_enc_sha256: enc,
                    direct_path: path,
                    seconds: Some(1),
                    ..Default::default()
                }));
            }
            PhoneMediaKind::VoiceNote => {
                message.audio_message = Some(Box::new(e2e::AudioMessage {
                    url,
                    mimetype: mime,
                    file_sha256: sha,
                    file_length: len,
                    media_key: key_b,
                    file_enc_sha256: enc,
                    direct_path: path,
                    ptt: Some(true),
                    seconds: Some(1),
                    ..Default::default()
                }));
            }
            PhoneMediaKind::Document => {
                message.document_message = Some(Box::new(e2e::DocumentMessage {
                    url,
                    mimetype: mime,
                    caption,
                    file_sha256: sha,
                    file_length: len,
                    media_key: key_b,
                    file_enc_sha256: enc,
                    direct_path: path,
                    file_name: Some("from-the-phone.bin".to_owned()),
                    ..Default::default()
                }));
            }
            PhoneMediaKind::Sticker => {
                message.sticker_message = Some(Box::new(e2e::StickerMessage {
                    url,
                    mimetype: mime,
                    file_sha256: sha,
                    file_length: len,
                    media_key: key_b,
                    file_enc_sha256: enc,
                    direct_path: path,
                    ..Default::default()
                }));
            }
        }
        let id = self.phone_send(to, &message)?;
        self.shared
            .lock()
            .phone_media
            .record(&self.phone, &id, &message);
        Ok(id)
    }

    /// The phone fetches, checks and decrypts the file of a media message it received (from
    /// [`SimEvent::PhoneMessage`](super::SimEvent::PhoneMessage)).
    ///
    /// # Errors
    /// No media in the message, a file the host does not have, a failed check.
    pub fn phone_download(&self, message: &e2e::Message) -> Result<Vec<u8>, PhoneMediaError> {
        let (kind, key, hashes, path) = file_of(message).ok_or(PhoneMediaError::NotMedia)?;
        let blob = self
            .shared
            .media
            .blob(&path)
            .ok_or(PhoneMediaError::Missing)?;
        Ok(media::decrypt(&key, kind, &hashes, &blob)?)
    }
}
