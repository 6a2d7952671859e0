//! Media transfers over HTTP (SESSION.md §12.4, §12.5): upload of encrypted blobs to the hosts
//! `media_conn` names, download with host failover and bounded retries, decryption on the fly.
//!
//! The HTTP client is [ureq](https://docs.rs/ureq) (blocking, rustls with ring and the webpki
//! roots, maintained by the author of str0m): a transfer runs on the `blocking` thread pool,
//! so the same code serves the tokio and the smol driver, and a download streams through a
//! fixed buffer into the caller's writer.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use amarula_core::content::MediaRef;
use amarula_core::media::{self, Decryptor, FileHashes, MediaConn, MediaError, MediaType};

/// Settings of media transfers.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// URL scheme of the media hosts: `https` (default), or `http` for a local simulator.
    pub scheme: String,
    /// Attempts per host after a network error or a 5xx answer (default 3).
    pub attempts: u32,
    /// Wait before the second attempt, doubled for each further one (default 500 ms).
    pub backoff: Duration,
    /// Timeout of one whole request (default 10 minutes).
    pub timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            scheme: "https".to_owned(),
            attempts: 3,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
        }
    }
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaTransferError {
    /// No host to try.
    #[error("no media host")]
    NoHosts,
    /// The file is gone from the hosts (404 or 410): ask the sender's phone to upload it
    /// again (a media re-upload request).
    #[error("media gone from the hosts (HTTP {0})")]
    Gone(u16),
    /// Every host refused it; the last answer.
    #[error("media host answered HTTP {0}")]
    Status(u16),
    /// The network failed on every attempt; the last error.
    #[error("media transfer failed: {0}")]
    Network(String),
    /// The upload answer is not what a media host sends.
    #[error("bad upload answer: {0}")]
    BadAnswer(String),
    /// The downloaded blob failed a check.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Writing the file failed.
    #[error("writing the media failed: {0}")]
    Io(String),
    /// Encrypting or decrypting on the blocking pool failed to complete.
    #[error("media task failed")]
    Task,
    /// The message names no media key, hash or path.
    #[error("the message names no downloadable media")]
    NotDownloadable,
}

impl From<std::io::Error> for MediaTransferError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// Where an uploaded blob is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uploaded {
    /// The full URL.
    pub url: String,
    /// The path on the media hosts.
    pub direct_path: String,
}

/// The HTTP side of media, shared by the clients of one process.
#[derive(Debug, Clone)]
pub(crate) struct Transfers {
    /// Made at the first transfer: most accounts of a large process never move media, and an
    /// agent (its pool, its TLS setup) per account adds up over thousands.
    agent: std::sync::Arc<std::sync::OnceLock<ureq::Agent>>,
    config: MediaConfig,
}

enum Attempt<T> {
    Done(T),
    /// Try again on this host (network error, 5xx).
    Retry(MediaTransferError),
    /// Go to the next host.
    NextHost(MediaTransferError),
    /// Stop.
    Fail(MediaTransferError),
}

impl Transfers {
    pub(crate) fn new(config: MediaConfig) -> Self {
        Self {
            agent: std::sync::Arc::default(),
            config,
        }
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent.get_or_init(|| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(self.config.timeout))
                .build()
                .into()
        })
    }

    /// Tries `host` by host, each up to `attempts` times with backoff, as SESSION.md §12.5
    /// says: network errors and 5xx are retried, 404/410 end everything, other answers move
    /// on to the next host.
    fn each_host<T>(
        &self,
        hosts: &[String],
        mut f: impl FnMut(&str) -> Attempt<T>,
    ) -> Result<T, MediaTransferError> {
        let mut last = MediaTransferError::NoHosts;
        for host in hosts {
            let mut wait = self.config.backoff;
            for attempt in 0..self.config.attempts.max(1) {
                if attempt > 0 {
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
                match f(host) {
                    Attempt::Done(t) => return Ok(t),
                    Attempt::Retry(e) => {
                        tracing::debug!(%host, error = %e, "media transfer failed; retrying");
                        last = e;
                    }
                    Attempt::NextHost(e) => {
                        last = e;
                        break;
                    }
                    Attempt::Fail(e) => return Err(e),
                }
            }
        }
        Err(last)
    }

    /// Uploads an encrypted blob (blocking), from memory or streamed from a file.
    pub(crate) fn upload(
        &self,
        conn: &MediaConn,
        kind: MediaType,
        blob: &Blob,
        file_enc_sha256: &[u8],
    ) -> Result<Uploaded, MediaTransferError> {
        let len = blob.len();
        let hosts: Vec<String> = conn
            .hosts
            .iter()
            .filter(|h| h.max_content_length.is_none_or(|max| len <= max))
            .map(|h| h.hostname.clone())
            .collect();
        self.each_host(&hosts, |host| {
            let url =
                media::upload_url(&self.config.scheme, host, kind, &conn.auth, file_enc_sha256);
            let request = self
                .agent()
                .post(&url)
                .header("Origin", "https://web.whatsapp.com")
                .header("Referer", "https://web.whatsapp.com/");
            let answer = match blob {
                Blob::Memory(bytes) => request.send(&bytes[..]),
                // Every attempt reads the file from its start again, through ureq's buffer.
                Blob::File(file, len) => {
                    let mut reader = match file
                        .try_clone()
                        .and_then(|mut f| f.seek(SeekFrom::Start(0)).map(|_| f))
                    {
                        Ok(f) => f.take(*len),
                        Err(e) => return Attempt::Fail(e.into()),
                    };
                    request
                        .header("Content-Length", len.to_string())
                        .send(ureq::SendBody::from_reader(&mut reader))
                }
            };
            let mut answer = match answer {
                Ok(a) => a,
                Err(e) => return Attempt::Retry(MediaTransferError::Network(e.to_string())),
            };
            let status = answer.status().as_u16();
            if status >= 500 {
                return Attempt::Retry(MediaTransferError::Status(status));
            }
            if status != 200 {
                return Attempt::NextHost(MediaTransferError::Status(status));
            }
            let body = match answer
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
            {
                Ok(b) => b,
                Err(e) => return Attempt::Retry(MediaTransferError::Network(e.to_string())),
            };
            match parse_upload_answer(&body) {
                Ok(u) => Attempt::Done(u),
                Err(e) => Attempt::NextHost(e),
            }
        })
    }

    /// Downloads, checks and decrypts a file into `sink` (blocking); returns its length. On
    /// an error, what was written to `sink` must be discarded.
    pub(crate) fn download(
        &self,
        hosts: &[String],
        media: &MediaRef,
        kind: MediaType,
        sink: &mut dyn Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, MediaTransferError> {
        let (Some(direct_path), Ok(key), Ok(enc), Ok(file)) = (
            media.direct_path.as_deref().filter(|p| p.starts_with('/')),
            <[u8; 32]>::try_from(&media.media_key[..]),
            <[u8; 32]>::try_from(&media.file_enc_sha256[..]),
            <[u8; 32]>::try_from(&media.file_sha256[..]),
        ) else {
            return Err(MediaTransferError::NotDownloadable);
        };
        let expected = FileHashes::new(file, enc, media.file_length);
        let total = media.file_length;
        self.each_host(hosts, |host| {
            let url = media::download_url(&self.config.scheme, host, direct_path, kind, &enc);
            let answer = match self
                .agent()
                .get(&url)
                .header("Origin", "https://web.whatsapp.com")
                .call()
            {
                Ok(a) => a,
                Err(e) => return Attempt::Retry(MediaTransferError::Network(e.to_string())),
            };
            let status = answer.status().as_u16();
            match status {
                200 => {}
                403 | 404 | 410 => return Attempt::Fail(MediaTransferError::Gone(status)),
                s if s >= 500 => return Attempt::Retry(MediaTransferError::Status(s)),
                s => return Attempt::NextHost(MediaTransferError::Status(s)),
            }
            let mut body = answer.into_body().into_reader();
            let mut dec = Decryptor::new(&key, kind, expected.clone());
            let mut buf = vec![0u8; 64 * 1024];
            let mut plain = Vec::with_capacity(buf.len() + 32);
            let mut written = 0u64;
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => return Attempt::Retry(MediaTransferError::Network(e.to_string())),
                };
                plain.clear();
                if let Err(e) = dec.update(&buf[..n], &mut plain) {
                    return Attempt::Fail(e.into());
                }
                if let Err(e) = sink.write_all(&plain) {
                    return Attempt::Fail(e.into());
                }
                written += plain.len() as u64;
                progress(written, total);
            }
            plain.clear();
            if let Err(e) = dec.finish(&mut plain) {
                return Attempt::Fail(e.into());
            }
            if let Err(e) = sink.write_all(&plain).and_then(|()| sink.flush()) {
                return Attempt::Fail(e.into());
            }
            written += plain.len() as u64;
            progress(written, total);
            Attempt::Done(written)
        })
    }
}

/// An encrypted blob to upload.
pub(crate) enum Blob {
    /// In memory.
    Memory(std::sync::Arc<Vec<u8>>),
    /// In a (temporary) file of this length.
    File(std::fs::File, u64),
}

impl Blob {
    fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File(_, len) => *len,
        }
    }
}

/// Encrypts the file at `path` into an anonymous temporary file through a fixed buffer
/// (blocking): memory stays the same whatever the file's size.
fn encrypt_file(
    key: &[u8; 32],
    kind: MediaType,
    path: &std::path::Path,
) -> Result<(Blob, FileHashes), MediaTransferError> {
    let mut input = std::fs::File::open(path)?;
    let mut output = std::io::BufWriter::with_capacity(64 * 1024, tempfile::tempfile()?);
    let mut enc = media::Encryptor::new(key, kind);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(buf.len() + 32);
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.clear();
        enc.update(&buf[..n], &mut out);
        output.write_all(&out)?;
    }
    out.clear();
    let hashes = enc.finish(&mut out);
    output.write_all(&out)?;
    let file = output
        .into_inner()
        .map_err(|e| MediaTransferError::Io(e.error().to_string()))?;
    let len = file.metadata()?.len();
    Ok((Blob::File(file, len), hashes))
}

/// Reads a media host's upload answer: JSON with `url` and `direct_path`.
fn parse_upload_answer(body: &str) -> Result<Uploaded, MediaTransferError> {
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| MediaTransferError::BadAnswer(e.to_string()))?;
    let field = |k: &str| {
        json.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (field("url"), field("direct_path")) {
        (Some(url), Some(direct_path)) if direct_path.starts_with('/') => {
            Ok(Uploaded { url, direct_path })
        }
        _ => Err(MediaTransferError::BadAnswer(
            "no url or direct_path".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_answers() {
        assert_eq!(
            parse_upload_answer(r#"{"url":"https://h/x","direct_path":"/v/x","handle":null}"#)
                .expect("parsed"),
            Uploaded {
                url: "https://h/x".into(),
                direct_path: "/v/x".into()
            }
        );
        for bad in ["", "{}", r#"{"url":"u","direct_path":"no-slash"}"#, "[1]"] {
            assert!(parse_upload_answer(bad).is_err(), "{bad}");
        }
    }
}

/// A file uploaded with [`Client::upload`]: what a media message names.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadedMedia {
    /// The type it was encrypted as.
    pub kind: MediaType,
    /// The media key (32 random bytes): whoever has it can decrypt the file.
    pub media_key: zeroize::Zeroizing<[u8; 32]>,
    /// The file's hashes and length.
    pub hashes: FileHashes,
    /// Where it is.
    pub uploaded: Uploaded,
    /// When the media key was made (unix seconds).
    pub media_key_timestamp: i64,
}

impl std::fmt::Debug for UploadedMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadedMedia")
            .field("kind", &self.kind)
            .field("uploaded", &self.uploaded)
            .field("file_length", &self.hashes.file_length)
            .finish_non_exhaustive()
    }
}

/// A media message to send with [`Client::send_media`]: the file and what the message says
/// about it.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct OutgoingMedia {
    kind: Option<MediaKind>,
    data: Vec<u8>,
    /// A file to stream instead of `data`.
    path: Option<std::path::PathBuf>,
    mimetype: String,
    caption: Option<String>,
    file_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    seconds: Option<u32>,
    ptt: bool,
    gif: bool,
    animated: bool,
    page_count: Option<u32>,
    thumbnail: Option<Vec<u8>>,
    waveform: Option<Vec<u8>>,
}

impl std::fmt::Debug for OutgoingMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMedia")
            .field("kind", &self.kind)
            .field("len", &self.data.len())
            .field("path", &self.path)
            .field("mimetype", &self.mimetype)
            .finish_non_exhaustive()
    }
}

use amarula_core::content::MediaKind;

impl OutgoingMedia {
    fn new(kind: MediaKind, data: Vec<u8>, mimetype: &str) -> Self {
        Self {
            kind: Some(kind),
            data,
            mimetype: mimetype.to_owned(),
            ..Self::default()
        }
    }

    /// A file of any kind sent from disk, streamed: encrypted into a temporary file and
    /// uploaded from there, so a large video or document never sits in memory. The other
    /// builders' settings (caption, file name, …) apply as usual.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), amarula::ClientError> {
    /// use amarula::core::content::MediaKind;
    /// use amarula::media::OutgoingMedia;
    /// let to = "15551234567@s.whatsapp.net".parse().expect("a JID");
    /// let video = OutgoingMedia::from_file(MediaKind::Video, "talk.mp4", "video/mp4").seconds(3600);
    /// client.send_media(&to, video).await?;
    /// # Ok(()) }
    /// ```
    pub fn from_file(kind: MediaKind, path: impl Into<std::path::PathBuf>, mimetype: &str) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::new(kind, Vec::new(), mimetype)
        }
    }

    /// An image (`image/jpeg`, `image/png`, …).
    pub fn image(data: Vec<u8>, mimetype: &str) -> Self {
        Self::new(MediaKind::Image, data, mimetype)
    }

    /// A video (`video/mp4`).
    pub fn video(data: Vec<u8>, mimetype: &str) -> Self {
        Self::new(MediaKind::Video, data, mimetype)
    }

    /// An audio file (`audio/ogg; codecs=opus`, `audio/mpeg`, …).
    pub fn audio(data: Vec<u8>, mimetype: &str) -> Self {
        Self::new(MediaKind::Audio, data, mimetype)
    }

    /// A voice note: audio shown as recorded (push to talk), with an optional waveform.
    pub fn voice_note(
        data: Vec<u8>,
        mimetype: &str,
        seconds: u32,
        waveform: Option<Vec<u8>>,
    ) -> Self {
        Self {
            ptt: true,
            seconds: Some(seconds),
            waveform,
            ..Self::new(MediaKind::Audio, data, mimetype)
        }
    }

    /// A document with its file name.
    pub fn document(data: Vec<u8>, mimetype: &str, file_name: &str) -> Self {
        Self {
            file_name: Some(file_name.to_owned()),
            ..Self::new(MediaKind::Document, data, mimetype)
        }
    }

    /// A sticker (`image/webp`).
    pub fn sticker(data: Vec<u8>, animated: bool) -> Self {
        Self {
            animated,
            ..Self::new(MediaKind::Sticker, data, "image/webp")
        }
    }

    /// Sets the caption (image, video, document).
    #[must_use]
    pub fn caption(mut self, caption: &str) -> Self {
        self.caption = Some(caption.to_owned());
        self
    }

    /// Sets the file name a document shows.
    #[must_use]
    pub fn file_name(mut self, name: &str) -> Self {
        self.file_name = Some(name.to_owned());
        self
    }

    /// Sets the dimensions in pixels (image, video, sticker).
    #[must_use]
    pub fn dimensions(mut self, width: u32, height: u32) -> Self {
        self.width = Some(width);
        self.height = Some(height);
        self
    }

    /// Sets the duration in seconds (audio, video).
    #[must_use]
    pub fn seconds(mut self, seconds: u32) -> Self {
        self.seconds = Some(seconds);
        self
    }

    /// Plays a video as a GIF.
    #[must_use]
    pub fn gif(mut self) -> Self {
        self.gif = true;
        self
    }

    /// Sets a document's page count.
    #[must_use]
    pub fn page_count(mut self, pages: u32) -> Self {
        self.page_count = Some(pages);
        self
    }

    /// Sets the inline thumbnail (JPEG; PNG for stickers).
    #[must_use]
    pub fn thumbnail(mut self, thumbnail: Vec<u8>) -> Self {
        self.thumbnail = Some(thumbnail);
        self
    }

    fn media_type(&self) -> MediaType {
        self.kind.map_or(MediaType::Document, MediaType::from)
    }

    /// The message naming `up`.
    fn message(&self, up: &UploadedMedia) -> amarula_proto::e2e::Message {
        use amarula_proto::e2e;
        let b = |v: &[u8]| Some(bytes::Bytes::copy_from_slice(v));
        let key = b(&up.media_key[..]);
        let sha = b(&up.hashes.file_sha256);
        let enc = b(&up.hashes.file_enc_sha256);
        let len = Some(up.hashes.file_length);
        let url = Some(up.uploaded.url.clone());
        let path = Some(up.uploaded.direct_path.clone());
        let ts = Some(up.media_key_timestamp);
        let mime = Some(self.mimetype.clone());
        let thumb = self.thumbnail.as_deref().and_then(b);
        let mut m = e2e::Message::default();
        match self.kind.unwrap_or(MediaKind::Document) {
            MediaKind::Image => {
                m.image_message = Some(Box::new(e2e::ImageMessage {
                    url,
                    mimetype: mime,
                    caption: self.caption.clone(),
                    file_sha256: sha,
                    file_length: len,
                    height: self.height,
                    width: self.width,
                    media_key: key,
                    file_enc_sha256: enc,
                    direct_path: path,
                    media_key_timestamp: ts,
                    jpeg_thumbnail: thumb,
                    ..Default::default()
                }));
            }
            kind @ (MediaKind::Video | MediaKind::VideoNote) => {
                let video = Box::new(e2e::VideoMessage {
                    url,
                    mimetype: mime,
                    file_sha256: sha,
                    file_length: len,
                    seconds: self.seconds,
                    media_key: key,
                    caption: self.caption.clone(),
                    gif_playback: Some(self.gif),
                    height: self.height,
                    width: self.width,
                    file_enc_sha256: enc,
                    direct_path: path,
                    media_key_timestamp: ts,
                    jpeg_thumbnail: thumb,
                    ..Default::default()
                });
                if kind == MediaKind::VideoNote {
                    m.ptv_message = Some(video);
                } else {
                    m.video_message = Some(video);
                }
            }
            MediaKind::Audio => {
                m.audio_message = Some(Box::new(e2e::AudioMessage {
                    url,
                    mimetype: mime,
                    file_sha256: sha,
                    file_length: len,
                    seconds: self.seconds,
                    ptt: Some(self.ptt),
                    media_key: key,
                    file_enc_sha256: enc,
                    direct_path: path,
                    media_key_timestamp: ts,
                    waveform: self.waveform.as_deref().and_then(b),
                    ..Default::default()
                }));
            }
            MediaKind::Sticker => {
                m.sticker_message = Some(Box::new(e2e::StickerMessage {
                    url,
                    file_sha256: sha,
                    file_enc_sha256: enc,
                    media_key: key,
                    mimetype: mime,
                    height: self.height,
                    width: self.width,
                    direct_path: path,
                    file_length: len,
                    media_key_timestamp: ts,
                    is_animated: Some(self.animated),
                    png_thumbnail: thumb,
                    ..Default::default()
                }));
            }
            _ => {
                m.document_message = Some(Box::new(e2e::DocumentMessage {
                    url,
                    mimetype: mime,
                    title: self.file_name.clone(),
                    file_sha256: sha,
                    file_length: len,
                    page_count: self.page_count,
                    media_key: key,
                    file_name: self.file_name.clone(),
                    file_enc_sha256: enc,
                    direct_path: path,
                    media_key_timestamp: ts,
                    jpeg_thumbnail: thumb,
                    caption: self.caption.clone(),
                    ..Default::default()
                }));
            }
        }
        m
    }
}

fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl crate::Client {
    /// The media hosts and upload token (cached by the connection while fresh; `force` asks the
    /// server again).
    pub async fn media_conn(&self, force: bool) -> Result<MediaConn, crate::ClientError> {
        self.call(|tx| crate::client::Command::MediaConn(force, tx))
            .await
    }

    /// Encrypts `data` with a new random media key and uploads it, trying the hosts in
    /// order (a refused token is renewed once).
    pub async fn upload(
        &self,
        kind: MediaType,
        data: Vec<u8>,
    ) -> Result<UploadedMedia, crate::ClientError> {
        let mut media_key = zeroize::Zeroizing::new([0u8; 32]);
        rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, media_key.as_mut())
            .map_err(|_| MediaTransferError::Task)?;
        let key = media_key.clone();
        let (blob, hashes) = blocking::unblock(move || media::encrypt(&key, kind, &data)).await;
        self.upload_blob(
            kind,
            media_key,
            Blob::Memory(std::sync::Arc::new(blob)),
            hashes,
        )
        .await
    }

    /// Like [`upload`](Self::upload), for the file at `path`, streamed: it is encrypted into
    /// a temporary file and uploaded from there through fixed buffers, so memory stays the
    /// same whatever the file's size.
    pub async fn upload_file(
        &self,
        kind: MediaType,
        path: impl Into<std::path::PathBuf>,
    ) -> Result<UploadedMedia, crate::ClientError> {
        let mut media_key = zeroize::Zeroizing::new([0u8; 32]);
        rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, media_key.as_mut())
            .map_err(|_| MediaTransferError::Task)?;
        let key = media_key.clone();
        let path = path.into();
        let (blob, hashes) = blocking::unblock(move || encrypt_file(&key, kind, &path)).await?;
        self.upload_blob(kind, media_key, blob, hashes).await
    }

    /// Uploads an encrypted blob, renewing a refused upload token once.
    async fn upload_blob(
        &self,
        kind: MediaType,
        media_key: zeroize::Zeroizing<[u8; 32]>,
        blob: Blob,
        hashes: FileHashes,
    ) -> Result<UploadedMedia, crate::ClientError> {
        let blob = std::sync::Arc::new(blob);
        let mut force = false;
        loop {
            let conn = self.media_conn(force).await?;
            let transfers = self.media.clone();
            let (b, enc) = (blob.clone(), hashes.file_enc_sha256);
            let result = blocking::unblock(move || transfers.upload(&conn, kind, &b, &enc)).await;
            match result {
                Ok(uploaded) => {
                    return Ok(UploadedMedia {
                        kind,
                        media_key,
                        hashes,
                        uploaded,
                        media_key_timestamp: unix_secs(),
                    });
                }
                Err(MediaTransferError::Status(401 | 403)) if !force => force = true,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Uploads a file and sends the media message naming it; returns the message id once the
    /// server accepted it.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client, jpeg: Vec<u8>) -> Result<(), amarula::ClientError> {
    /// use amarula::media::OutgoingMedia;
    /// let to = "15551234567@s.whatsapp.net".parse().expect("a JID");
    /// client.send_media(&to, OutgoingMedia::image(jpeg, "image/jpeg").caption("look")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_media(
        &self,
        to: &amarula_core::jid::Jid,
        media: OutgoingMedia,
    ) -> Result<String, crate::ClientError> {
        let mut media = media;
        let up = match media.path.take() {
            Some(path) => self.upload_file(media.media_type(), path).await?,
            None => {
                let data = std::mem::take(&mut media.data);
                self.upload(media.media_type(), data).await?
            }
        };
        self.send_message(to, media.message(&up)).await
    }

    /// Downloads, checks and decrypts the file a media message names, into memory.
    pub async fn download(
        &self,
        media: &MediaRef,
        kind: MediaKind,
    ) -> Result<Vec<u8>, crate::ClientError> {
        self.download_as(media, kind.into()).await
    }

    /// Asks our own phone to upload the file of a message again (after the hosts answered
    /// 404 or 410: [`MediaTransferError::Gone`]) and waits for its answer: the file's new
    /// direct path. The phone must still have the file.
    pub async fn request_media_reupload(
        &self,
        request: amarula_core::machine::ReuploadRequest,
        media: &MediaRef,
    ) -> Result<String, crate::ClientError> {
        let key: [u8; 32] = media
            .media_key
            .as_ref()
            .try_into()
            .map_err(|_| MediaTransferError::NotDownloadable)?;
        let key = zeroize::Zeroizing::new(key);
        self.call(|tx| crate::client::Command::Reupload(request, key, tx))
            .await
    }

    /// Downloads the file of an incoming media message like [`download`](Self::download);
    /// when the hosts no longer have it, asks our phone to upload it again
    /// ([`request_media_reupload`](Self::request_media_reupload)) and downloads it from its
    /// new path.
    pub async fn download_message_media(
        &self,
        message: &amarula_core::machine::IncomingMessage,
        media: &MediaRef,
        kind: MediaKind,
    ) -> Result<Vec<u8>, crate::ClientError> {
        match self.download(media, kind).await {
            Err(crate::ClientError::Media(MediaTransferError::Gone(status))) => {
                tracing::debug!(id = %message.id, status, "media gone; asking for a re-upload");
                let participant = message
                    .chat
                    .is_group()
                    .then(|| message.sender.to_non_device());
                let request = amarula_core::machine::ReuploadRequest::new(
                    message.id.clone(),
                    message.chat.clone(),
                    message.from_me,
                    participant,
                );
                let direct_path = self.request_media_reupload(request, media).await?;
                let mut moved = media.clone();
                moved.direct_path = Some(direct_path);
                moved.url = None;
                self.download(&moved, kind).await
            }
            other => other,
        }
    }

    /// Downloads a file the machine asked for ([`Event::FetchBlob`]) and answers it.
    ///
    /// [`Event::FetchBlob`]: amarula_core::machine::Event::FetchBlob
    pub(crate) async fn fetch_blob(&self, request: amarula_core::machine::BlobRequest) {
        use amarula_core::machine::BlobError;
        let result = self
            .download_as(&request.media, request.kind)
            .await
            .map_err(|e| match e {
                crate::ClientError::Media(MediaTransferError::Gone(_)) => BlobError::Gone,
                crate::ClientError::Media(MediaTransferError::Media(e)) => {
                    BlobError::Invalid(e.to_string())
                }
                other => BlobError::Download(other.to_string()),
            });
        if let Err(e) = &result {
            tracing::warn!(id = %request.id, error = %e, "blob download failed");
        }
        // A client that stopped meanwhile no longer needs it.
        let _ = self
            .send_command(crate::client::Command::BlobFetched(request.id, result))
            .await;
    }

    /// Downloads, checks and decrypts a file with `kind`'s keys, into memory.
    async fn download_as(
        &self,
        media: &MediaRef,
        kind: MediaType,
    ) -> Result<Vec<u8>, crate::ClientError> {
        let conn = self.media_conn(false).await?;
        let hosts = download_hosts(&conn, media);
        let transfers = self.media.clone();
        let media = media.clone();
        blocking::unblock(move || {
            let mut out = Vec::with_capacity(
                usize::try_from(media.file_length)
                    .unwrap_or(0)
                    .min(64 << 20),
            );
            transfers
                .download(&hosts, &media, kind, &mut out, &mut |_, _| {})
                .map(|_| out)
        })
        .await
        .map_err(Into::into)
    }

    /// Downloads into the file at `path` through a fixed buffer (any size), calling
    /// `progress(bytes so far, total)`. The plaintext goes to `<path>.part` and is renamed to
    /// `path` only once every check passed; a failed download leaves no file.
    pub async fn download_to_file(
        &self,
        media: &MediaRef,
        kind: MediaKind,
        path: impl Into<std::path::PathBuf>,
        mut progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<u64, crate::ClientError> {
        let conn = self.media_conn(false).await?;
        let hosts = download_hosts(&conn, media);
        let transfers = self.media.clone();
        let media = media.clone();
        let path = path.into();
        blocking::unblock(move || {
            let mut part = path.clone().into_os_string();
            part.push(".part");
            let part = std::path::PathBuf::from(part);
            let file = std::fs::File::create(&part)?;
            let mut writer = std::io::BufWriter::new(file);
            let result =
                transfers.download(&hosts, &media, kind.into(), &mut writer, &mut progress);
            drop(writer);
            match result {
                Ok(n) => {
                    std::fs::rename(&part, &path)?;
                    Ok(n)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    Err(e)
                }
            }
        })
        .await
        .map_err(Into::into)
    }
}

/// The hosts to download from: `media_conn`'s, then the host of the message's own URL.
fn download_hosts(conn: &MediaConn, media: &MediaRef) -> Vec<String> {
    let mut hosts: Vec<String> = conn.hosts.iter().map(|h| h.hostname.clone()).collect();
    if let Some(host) = media
        .url
        .as_deref()
        .and_then(|u| u.split_once("://"))
        .and_then(|(_, rest)| rest.split('/').next())
        .filter(|h| !h.is_empty() && !hosts.iter().any(|x| x == h))
    {
        hosts.push(host.to_owned());
    }
    hosts
}
