//! Where the credentials live between runs: the [`CredentialStore`] trait, a JSON
//! [`FileStore`], an in-memory [`MemoryStore`], and the credentials' JSON form.
//!
//! The drive task calls the store in protocol order and waits for each write before it applies
//! the next output of the machine: the credentials reach the store before the frame that
//! commits the phone (or the server) to them leaves. A write that fails ends the client (see
//! [`ClientEvent::StoreFailed`](crate::ClientEvent::StoreFailed)): going on would send frames
//! whose state could be lost.
//!
//! The trait is async so that a store may do real IO (the durable SQLite store that comes later
//! implements it too); every future must be `Send`, as the drive task may move between threads.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use amarula_core::credentials::{Credentials, DeviceIdentity, SignedPreKey};
use amarula_core::jid::{Jid, JidParseError};
use amarula_core::machine::SentMessage;
use amarula_core::noise::KeyPair;
use bytes::Bytes;
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// Persistence of the long-term credentials (and, optionally, of sent messages).
///
/// All methods are async and their futures `Send`. Implement them with `async fn`:
///
/// ```
/// # use amarula::store::{CredentialStore, StoreError};
/// # use amarula::core::credentials::Credentials;
/// # use amarula::core::machine::SentMessage;
/// struct Nowhere;
///
/// impl CredentialStore for Nowhere {
///     async fn load(&self) -> Result<Option<Credentials>, StoreError> {
///         Ok(None)
///     }
///     async fn save(&self, _: &Credentials) -> Result<(), StoreError> {
///         Ok(())
///     }
///     async fn save_sent(&self, _: &SentMessage) -> Result<(), StoreError> {
///         Ok(())
///     }
///     async fn delete(&self) -> Result<(), StoreError> {
///         Ok(())
///     }
/// }
/// ```
pub trait CredentialStore: Send + Sync + 'static {
    /// The stored credentials, or `None` when there are none yet (a fresh device: the client
    /// then generates credentials and [`save`](Self::save)s them before connecting).
    fn load(&self) -> impl Future<Output = Result<Option<Credentials>, StoreError>> + Send;

    /// Replaces the stored credentials. Called at start for fresh credentials and on every
    /// [`Event::CredentialsChanged`](amarula_core::machine::Event::CredentialsChanged); the
    /// client sends nothing more until it returns.
    fn save(
        &self,
        credentials: &Credentials,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a relayed message ([`Event::MessageCached`](amarula_core::machine::Event)), so
    /// retry receipts for it can still be answered after a restart. A store may ignore it
    /// (return `Ok(())`): those receipts are then refused as unknown after a restart.
    fn save_sent(
        &self,
        message: &SentMessage,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The recorded sent messages, oldest first, put back into the machine's cache at start.
    /// The default returns none.
    fn load_sent(&self) -> impl Future<Output = Result<Vec<SentMessage>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Forgets everything: called when the server logged the device out
    /// ([`CloseReason::is_logged_out`](amarula_core::machine::CloseReason::is_logged_out)).
    /// Deleting what does not exist is not an error.
    fn delete(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("store io: {0}")]
    Io(#[from] io::Error),
    /// The stored file is not JSON.
    #[error("stored credentials are not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The stored JSON does not describe credentials.
    #[error("stored credentials are malformed: {0}")]
    Format(#[from] CredentialsJsonError),
}

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

/// Credentials as JSON, private keys in hex. This is the file format of [`FileStore`] and the
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
        "push_name": c.push_name,
        "routing_info": c.routing_info.as_ref().map(hex::encode),
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
        push_name: opt_str(v, "push_name")?.map(str::to_owned),
        routing_info: opt_str(v, "routing_info")?
            .map(|s| unhex(s, "routing_info"))
            .transpose()?
            .map(Bytes::from),
    })
}

/// Credentials in one JSON file ([`credentials_to_json`]), replaced atomically on every save.
///
/// A save writes a temporary file beside the target, flushes it to disk, renames it over the
/// target and flushes the directory, so a crash leaves either the old or the new credentials,
/// never a mix. On Unix the file is created readable by its owner only (it holds private
/// keys). Sent messages are not stored ([`save_sent`](CredentialStore::save_sent) does
/// nothing): after a restart, retry receipts for messages sent before it are refused.
///
/// The file IO runs on a blocking thread pool, away from the async runtime.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store in the file at `path` (it need not exist yet; its directory must).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn temp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        self.path.with_file_name(name)
    }
}

fn read_credentials(path: &Path) -> Result<Option<Credentials>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let value: Value = serde_json::from_slice(&bytes)?;
    Ok(Some(credentials_from_json(&value)?))
}

fn write_atomically(path: &Path, temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temp, path)?;
    // The rename itself is durable only once the directory is flushed.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl CredentialStore for FileStore {
    async fn load(&self) -> Result<Option<Credentials>, StoreError> {
        let path = self.path.clone();
        blocking::unblock(move || read_credentials(&path)).await
    }

    async fn save(&self, credentials: &Credentials) -> Result<(), StoreError> {
        // The serialized secrets are wiped when the write is done.
        let text = Zeroizing::new(serde_json::to_vec_pretty(&credentials_to_json(
            credentials,
        ))?);
        let (path, temp) = (self.path.clone(), self.temp_path());
        blocking::unblock(move || write_atomically(&path, &temp, &text)).await?;
        Ok(())
    }

    async fn save_sent(&self, _message: &SentMessage) -> Result<(), StoreError> {
        Ok(())
    }

    async fn delete(&self) -> Result<(), StoreError> {
        let path = self.path.clone();
        blocking::unblock(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }
}

/// Most sent messages a [`MemoryStore`] keeps (the oldest go first).
pub const MEMORY_SENT_LIMIT: usize = 1024;

/// Credentials and sent messages in memory: for tests, and for programs that pair every run.
/// Clones share the same contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    credentials: Option<Credentials>,
    sent: VecDeque<SentMessage>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `credentials`.
    pub fn with_credentials(credentials: Credentials) -> Self {
        let store = Self::default();
        store.lock().credentials = Some(credentials);
        store
    }

    /// The credentials held now.
    pub fn credentials(&self) -> Option<Credentials> {
        self.lock().credentials.clone()
    }

    /// The sent messages held now, oldest first (at most [`MEMORY_SENT_LIMIT`]).
    pub fn sent(&self) -> Vec<SentMessage> {
        self.lock().sent.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // The data stays consistent even if a holder panicked: every write is one assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CredentialStore for MemoryStore {
    async fn load(&self) -> Result<Option<Credentials>, StoreError> {
        Ok(self.credentials())
    }

    async fn save(&self, credentials: &Credentials) -> Result<(), StoreError> {
        self.lock().credentials = Some(credentials.clone());
        Ok(())
    }

    async fn save_sent(&self, message: &SentMessage) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.sent.retain(|m| m.id != message.id);
        inner.sent.push_back(message.clone());
        while inner.sent.len() > MEMORY_SENT_LIMIT {
            inner.sent.pop_front();
        }
        Ok(())
    }

    async fn load_sent(&self) -> Result<Vec<SentMessage>, StoreError> {
        Ok(self.sent())
    }

    async fn delete(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.credentials = None;
        inner.sent.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn credentials(seed: u8) -> Credentials {
        Credentials::generate(&mut ChaCha20Rng::from_seed([seed; 32]))
    }

    fn paired(seed: u8) -> Credentials {
        let mut c = credentials(seed);
        c.device = Some(DeviceIdentity {
            jid: "15551234567:7@s.whatsapp.net".parse().expect("valid"),
            lid: Some("123456789012345:7@lid".parse().expect("valid")),
            account: Bytes::from_static(b"account"),
            platform: "android".into(),
            business_name: Some("Shop".into()),
        });
        c.own_lid = Some("123456789012345@lid".parse().expect("valid"));
        c.push_name = Some("amarula".into());
        c.routing_info = Some(Bytes::from_static(&[8, 1, 8, 5]));
        c
    }

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("amarula-store-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn same(a: &Credentials, b: &Credentials) -> bool {
        credentials_to_json(a) == credentials_to_json(b)
    }

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

    #[test]
    fn file_store_saves_loads_and_deletes() {
        let dir = TempDir::new("cycle");
        let store = FileStore::new(dir.0.join("creds.json"));
        smol::block_on(async {
            assert!(store.load().await.expect("load").is_none());
            let first = credentials(4);
            store.save(&first).await.expect("save");
            let loaded = store.load().await.expect("load").expect("present");
            assert!(same(&first, &loaded));
            // A second save replaces the first, and leaves no temporary file.
            let second = paired(5);
            store.save(&second).await.expect("save");
            assert!(same(
                &second,
                &store.load().await.expect("load").expect("present")
            ));
            assert!(!store.temp_path().exists());
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(store.path())
                    .expect("meta")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            store.delete().await.expect("delete");
            assert!(store.load().await.expect("load").is_none());
            // Deleting again is fine.
            store.delete().await.expect("delete twice");
        });
    }

    #[test]
    fn file_store_write_is_atomic() {
        let dir = TempDir::new("atomic");
        let store = FileStore::new(dir.0.join("creds.json"));
        smol::block_on(async {
            let old = credentials(6);
            store.save(&old).await.expect("save");
            // A crash in the middle of a save leaves a partial temporary file behind; the
            // stored credentials are still the old ones.
            std::fs::write(store.temp_path(), b"{\"noise_priv").expect("write");
            assert!(same(
                &old,
                &store.load().await.expect("load").expect("present")
            ));
            // The next save overwrites the leftover and completes.
            let new = paired(7);
            store.save(&new).await.expect("save");
            assert!(same(
                &new,
                &store.load().await.expect("load").expect("present")
            ));
            assert!(!store.temp_path().exists());
        });
    }

    #[test]
    fn corrupt_file_is_a_typed_error() {
        let dir = TempDir::new("corrupt");
        let store = FileStore::new(dir.0.join("creds.json"));
        smol::block_on(async {
            std::fs::write(store.path(), b"not json").expect("write");
            assert!(matches!(store.load().await, Err(StoreError::Json(_))));
            std::fs::write(store.path(), b"{\"registration_id\": 1}").expect("write");
            assert!(matches!(
                store.load().await,
                Err(StoreError::Format(CredentialsJsonError::Missing(
                    "signed_prekey"
                )))
            ));
        });
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = TempDir::new("nodir");
        let store = FileStore::new(dir.0.join("absent").join("creds.json"));
        smol::block_on(async {
            assert!(matches!(
                store.save(&credentials(8)).await,
                Err(StoreError::Io(_))
            ));
        });
    }

    #[test]
    fn memory_store() {
        smol::block_on(async {
            let store = MemoryStore::new();
            assert!(store.load().await.expect("load").is_none());
            let c = paired(9);
            store.save(&c).await.expect("save");
            assert!(same(
                &c,
                &store.load().await.expect("load").expect("present")
            ));
            let message = |n: usize| SentMessage {
                id: format!("m{n}"),
                to: "15550001111@s.whatsapp.net".parse().expect("valid"),
                kind: "text".into(),
                context: Bytes::new(),
                sent_unix_ms: n as u64,
            };
            for n in 0..MEMORY_SENT_LIMIT + 5 {
                store.save_sent(&message(n)).await.expect("save_sent");
            }
            // Saving an id again moves it to the end.
            store.save_sent(&message(10)).await.expect("save_sent");
            let sent = store.load_sent().await.expect("load_sent");
            assert_eq!(sent.len(), MEMORY_SENT_LIMIT);
            assert_eq!(sent.first().map(|m| m.id.as_str()), Some("m5"));
            assert_eq!(sent.last().map(|m| m.id.as_str()), Some("m10"));
            store.delete().await.expect("delete");
            assert!(store.load().await.expect("load").is_none());
            assert!(store.sent().is_empty());
        });
    }
}
