//! [`MemoryStore`]: credentials and sent messages in memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use amarula_core::credentials::Credentials;
use amarula_core::machine::SentMessage;

use super::{CredentialStore, StoreError};

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
    use crate::store::testutil::{contract, paired, same};

    #[test]
    fn memory_store_contract() {
        smol::block_on(contract(&MemoryStore::new(), true));
    }
    use bytes::Bytes;

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
