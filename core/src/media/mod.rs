//! Media (SESSION.md §12): the encryption of uploaded files, the `media_conn` IQ that names
//! the upload hosts, and the media re-upload request. Pure: the HTTP transfers belong to the
//! drivers.

mod cipher;
mod conn;
mod retry;

pub use cipher::{
    Decryptor, Encryptor, FileHashes, MAC_LEN, MediaError, MediaKeys, decrypt, encrypt,
};
pub use conn::{MediaConn, MediaConnError, MediaHost, media_conn_request, parse_media_conn};
pub use retry::{
    MediaRetry, MediaRetryError, MediaRetryOutcome, decrypt_retry_notification,
    decrypt_retry_receipt, encrypt_retry_answer, parse_retry_notification, retry_receipt,
};

/// What a media file is: it chooses the HKDF info of its keys and its upload path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaType {
    /// An image.
    Image,
    /// A video (also a GIF and a video note).
    Video,
    /// Audio (also a voice note).
    Audio,
    /// A document.
    Document,
    /// A sticker (encrypted as an image).
    Sticker,
    /// A history sync blob.
    History,
    /// An app-state snapshot or patch blob.
    AppState,
    /// A link preview's thumbnail.
    LinkThumbnail,
}

impl MediaType {
    /// The HKDF info of the keys ("WhatsApp Image Keys" …).
    pub fn hkdf_info(self) -> &'static str {
        match self {
            Self::Image | Self::Sticker => "WhatsApp Image Keys",
            Self::Video => "WhatsApp Video Keys",
            Self::Audio => "WhatsApp Audio Keys",
            Self::Document => "WhatsApp Document Keys",
            Self::History => "WhatsApp History Keys",
            Self::AppState => "WhatsApp App State Keys",
            Self::LinkThumbnail => "WhatsApp Link Thumbnail Keys",
        }
    }

    /// The upload path on a media host (`/mms/<type>`), as whatsmeow uses.
    pub fn upload_path(self) -> &'static str {
        match self {
            Self::Image | Self::Sticker | Self::LinkThumbnail => "/mms/image",
            Self::Video => "/mms/video",
            Self::Audio => "/mms/audio",
            Self::Document => "/mms/document",
            Self::History => "/mms/md-msg-hist",
            Self::AppState => "/mms/md-app-state",
        }
    }

    /// The `mms-type` parameter of a download URL.
    pub fn mms_type(self) -> &'static str {
        match self {
            Self::Image | Self::Sticker | Self::LinkThumbnail => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::History => "md-msg-hist",
            Self::AppState => "md-app-state",
        }
    }
}

impl From<crate::content::MediaKind> for MediaType {
    fn from(kind: crate::content::MediaKind) -> Self {
        use crate::content::MediaKind;
        match kind {
            MediaKind::Image => Self::Image,
            MediaKind::Video | MediaKind::VideoNote => Self::Video,
            MediaKind::Audio => Self::Audio,
            MediaKind::Document => Self::Document,
            MediaKind::Sticker => Self::Sticker,
        }
    }
}

/// The URL-safe base64 (no padding) of a file's encrypted hash: the upload token and the
/// download `hash` parameter.
pub fn enc_hash_token(file_enc_sha256: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(file_enc_sha256)
}

/// The upload URL for a blob on `host` (SESSION.md §12.4).
pub fn upload_url(
    scheme: &str,
    host: &str,
    kind: MediaType,
    auth: &str,
    file_enc_sha256: &[u8],
) -> String {
    let token = enc_hash_token(file_enc_sha256);
    format!(
        "{scheme}://{host}{}/{token}?auth={}&token={token}",
        kind.upload_path(),
        percent_encode(auth)
    )
}

/// The download URL of `direct_path` on `host` (SESSION.md §12.5, whatsmeow's form).
pub fn download_url(
    scheme: &str,
    host: &str,
    direct_path: &str,
    kind: MediaType,
    file_enc_sha256: &[u8],
) -> String {
    let sep = if direct_path.contains('?') { '&' } else { '?' };
    format!(
        "{scheme}://{host}{direct_path}{sep}hash={}&mms-type={}&__wa-mms=",
        enc_hash_token(file_enc_sha256),
        kind.mms_type()
    )
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
