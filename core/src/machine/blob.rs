//! Files the machine itself needs from the media hosts: history-sync blobs and app-state
//! snapshots and patches stored as external blobs (SESSION.md §12).
//!
//! The core does no IO, so it asks: [`Event::FetchBlob`] names the file (a [`MediaRef`] with
//! its keys and hashes, and the [`MediaType`] that chooses the key derivation), the driver
//! downloads, checks and decrypts it like any media file, and hands the plaintext (or why it
//! could not) back through [`ConnectionMachine::handle_blob`]. The work that needed the file
//! waits meanwhile; other work goes on.
//!
//! A request belongs to its connection: an answer that arrives after the connection ended is
//! ignored (the stanza that asked for the file was not acknowledged, so the server delivers it
//! again and the file is fetched again).

use std::fmt;

use super::{ConnectionMachine, Event};
use crate::content::MediaRef;
use crate::media::MediaType;
use crate::time::Instant;

/// Names one [`Event::FetchBlob`] request, unique within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub u64);

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blob-{}", self.0)
    }
}

/// A file the machine needs: download it from the media hosts, check and decrypt it with
/// `kind`'s keys, and answer with [`ConnectionMachine::handle_blob`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobRequest {
    /// Names the answer.
    pub id: BlobId,
    /// Where the file is and how to check and decrypt it.
    pub media: MediaRef,
    /// Which key derivation the file uses ([`MediaType::History`] or
    /// [`MediaType::AppState`]).
    pub kind: MediaType,
}

/// Why a requested file could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The hosts no longer have it (404 or 410).
    #[error("the file is gone from the media hosts")]
    Gone,
    /// The download failed (network, server errors, retries exhausted, no media hosts).
    #[error("download failed: {0}")]
    Download(String),
    /// The file arrived but failed a check (hash, MAC, padding).
    #[error("the file failed its checks: {0}")]
    Invalid(String),
}

/// What a requested file is for: the work that waits for it. Each feature that needs
/// external blobs (history sync, app state) adds its variant and its arm in `on_blob`.
#[derive(Debug)]
pub(crate) enum BlobPurpose {
    /// A history-sync chunk (history sync).
    /// Names the chunk in the machine's history queue.
    History(u64),
    /// An app-state snapshot or a patch's mutations.
    AppState(super::appstate::AppStateBlob),
}

impl ConnectionMachine {
    /// Asks the driver for a file and remembers what it is for; the answer comes to
    /// [`handle_blob`](Self::handle_blob).
    pub(crate) fn request_blob(
        &mut self,
        media: MediaRef,
        kind: MediaType,
        purpose: BlobPurpose,
    ) -> BlobId {
        let id = BlobId(self.ids.next().0);
        self.blobs.insert(id, purpose);
        tracing::debug!(%id, ?kind, "asking the driver for a blob");
        self.emit(Event::FetchBlob(BlobRequest { id, media, kind }));
        id
    }

    /// The answer to an [`Event::FetchBlob`]: the checked and decrypted file, or why it could
    /// not be had. The work that waited for it goes on (a failure is reported through that
    /// work's own events). An answer for a request this connection did not make (an earlier
    /// connection's, or a repeated answer) is ignored.
    pub fn handle_blob(&mut self, now: Instant, id: BlobId, result: Result<Vec<u8>, BlobError>) {
        let Some(purpose) = self.blobs.remove(&id) else {
            tracing::debug!(%id, "answer for an unknown blob request ignored");
            return;
        };
        tracing::debug!(%id, ok = result.is_ok(), "blob answered");
        self.on_blob(now, id, purpose, result);
    }

    /// Hands a fetched file to the work that waited for it.
    fn on_blob(
        &mut self,
        now: Instant,
        id: BlobId,
        purpose: BlobPurpose,
        result: Result<Vec<u8>, BlobError>,
    ) {
        match purpose {
            BlobPurpose::History(seq) => self.history_file(now, seq, result),
            BlobPurpose::AppState(what) => self.appstate_on_blob(now, id, what, result),
        }
    }
}
