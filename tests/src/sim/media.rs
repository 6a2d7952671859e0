//! The simulator's media host: plain HTTP/1.1 on loopback, as a WhatsApp media host answers
//! (SESSION.md §12.4, §12.5).
//!
//! - `POST /mms/<type>/<token>?auth=<auth>&token=<token>`: the auth must be the one
//!   `media_conn` gave (else 401) and the token the URL-safe base64 of the body's SHA-256 (else
//!   400); the blob is kept and the answer is `{"url", "direct_path"}`.
//! - `GET <direct_path>&hash=…&mms-type=…`: the blob, 404 for an unknown path, 410 once
//!   [`MediaServer::expire`]d (a media re-upload case).
//!
//! Faults: [`MediaServer::fail_next`] answers the next requests with 503.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The upload token `media_conn` answers carry.
pub const AUTH: &str = "sim-media-auth";
/// The largest upload taken (the peak-memory test sends 200 MiB).
const MAX_BODY: usize = 256 << 20;
/// The largest request head taken.
const MAX_HEAD: usize = 16 << 10;

#[derive(Default)]
struct Blobs {
    /// Shared, so a download does not copy the blob.
    by_path: HashMap<String, Arc<Vec<u8>>>,
    expired: std::collections::HashSet<String>,
    next: u64,
    fail_next: u32,
    uploads: u64,
    downloads: u64,
}

/// The media host of a simulator.
#[derive(Clone)]
pub struct MediaServer {
    addr: SocketAddr,
    blobs: Arc<Mutex<Blobs>>,
}

impl std::fmt::Debug for MediaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MediaServer {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub(crate) async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let server = Self {
            addr: listener.local_addr()?,
            blobs: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    if let Err(e) = s.serve(stream).await {
                        tracing::debug!(error = %e, "media connection ended");
                    }
                });
            }
        });
        Ok(server)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blobs> {
        self.blobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `host:port` as `media_conn` names it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Makes a stored blob answer 410 Gone from now on.
    pub fn expire(&self, direct_path: &str) {
        let path = direct_path
            .split('?')
            .next()
            .unwrap_or(direct_path)
            .to_owned();
        self.lock().expired.insert(path);
    }

    /// Stores `blob` as an upload would (the simulator's own phones use it for the files
    /// they send: history, app state, media) and returns its direct path.
    pub fn store(&self, blob: Vec<u8>) -> String {
        let mut b = self.lock();
        b.next += 1;
        b.uploads += 1;
        let stored = format!("/v/t62.sim/{}.enc", b.next);
        b.by_path.insert(stored.clone(), Arc::new(blob));
        format!("{stored}?ccb=9-4&oh=sim")
    }

    /// What a phone does on a media re-upload request: the blob at `direct_path` (expired or
    /// not) is stored again under a new path, which is returned; `None` when the host never
    /// had it.
    pub fn upload_again(&self, direct_path: &str) -> Option<String> {
        let blob = self.blob(direct_path)?;
        Some(self.store(blob))
    }

    /// Answers the next `n` requests with 503.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Uploads and downloads served so far.
    pub fn counts(&self) -> (u64, u64) {
        let b = self.lock();
        (b.uploads, b.downloads)
    }

    /// The blob stored at `direct_path`, if any.
    pub fn blob(&self, direct_path: &str) -> Option<Vec<u8>> {
        let path = direct_path.split('?').next().unwrap_or(direct_path);
        self.lock().by_path.get(path).map(|b| b.to_vec())
    }

    async fn serve(&self, mut stream: TcpStream) -> io::Result<()> {
        // One request per connection keeps the server small; clients reconnect.
        let mut buf = Vec::with_capacity(1024);
        let (head_len, method, target, content_length) = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let content_length = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (
                        len,
                        req.method.unwrap_or("").to_owned(),
                        req.path.unwrap_or("").to_owned(),
                        content_length,
                    );
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return respond(&mut stream, 400, "text/plain", b"bad request").await,
            }
        };
        if content_length > MAX_BODY {
            return respond(&mut stream, 413, "text/plain", b"too large").await;
        }
        // Room for the whole body at once: no growth copies (the peak-memory test counts).
        let mut body = Vec::with_capacity(content_length.max(buf.len() - head_len));
        body.extend_from_slice(&buf[head_len..]);
        drop(buf);
        let mut chunk = vec![0u8; 64 << 10];
        while body.len() < content_length {
            let want = (content_length - body.len()).min(chunk.len());
            let n = stream.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Ok(());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(content_length);
        let fail = {
            let mut b = self.lock();
            let fail = b.fail_next > 0;
            b.fail_next = b.fail_next.saturating_sub(1);
            fail
        };
        if fail {
            return respond(&mut stream, 503, "text/plain", b"try again").await;
        }
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let param = |k: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_owned())
        };
        match method.as_str() {
            "POST" if path.starts_with("/mms/") => {
                if param("auth").as_deref() != Some(AUTH) {
                    return respond(&mut stream, 401, "text/plain", b"bad auth").await;
                }
                let token = amarula_core::media::enc_hash_token(&Sha256::digest(&body));
                if path.rsplit('/').next() != Some(token.as_str()) {
                    return respond(&mut stream, 400, "text/plain", b"hash mismatch").await;
                }
                let direct_path = self.store(body);
                let json = serde_json::json!({
                    "url": format!("http://{}{direct_path}", self.addr),
                    "direct_path": direct_path,
                    "handle": null,
                });
                respond(
                    &mut stream,
                    200,
                    "application/json",
                    json.to_string().as_bytes(),
                )
                .await
            }
            "GET" => {
                let found = {
                    let mut b = self.lock();
                    if b.expired.contains(path) {
                        Err(410)
                    } else if let Some(blob) = b.by_path.get(path).cloned() {
                        b.downloads += 1;
                        Ok(blob)
                    } else {
                        Err(404)
                    }
                };
                match found {
                    Ok(blob) => respond(&mut stream, 200, "application/octet-stream", &blob).await,
                    Err(code) => respond(&mut stream, code, "text/plain", b"not here").await,
                }
            }
            _ => respond(&mut stream, 405, "text/plain", b"method not allowed").await,
        }
    }
}

async fn respond(stream: &mut TcpStream, status: u16, kind: &str, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        413 => "Payload Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
