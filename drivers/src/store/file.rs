//! [`FileStore`]: the credentials in one JSON file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use amarula_core::credentials::Credentials;
use amarula_core::machine::SentMessage;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{CredentialStore, StoreError, credentials_from_json, credentials_to_json};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CredentialsJsonError;
    use crate::store::testutil::{TempDir, contract, credentials, paired, same};

    #[test]
    fn file_store_contract() {
        let dir = TempDir::new("contract");
        smol::block_on(contract(&FileStore::new(dir.0.join("creds.json")), false));
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
}
