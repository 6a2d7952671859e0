//! Media re-upload (SESSION.md §12.5): a file gone from the media hosts (404/410) is asked of
//! our own phone again with a `<receipt type="server-error">`; its answer, a `mediaretry`
//! notification encrypted with the message's media key, names the new direct path.
//!
//! The machine keeps the media key of each request it sent on this connection, so it can
//! decrypt the answer and hand out [`Event::MediaRetry`]; an answer to no request of ours goes
//! out raw as [`Event::Stanza`].

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::{ConnectionMachine, Event, SendError};
use crate::binary::Node;
use crate::jid::Jid;
use crate::media::{
    MediaRetryError, MediaRetryOutcome, decrypt_retry_notification, parse_retry_notification,
    retry_receipt,
};
use crate::time::Instant;

/// At most this many re-upload requests wait for their answer; the oldest is forgotten past
/// it (its answer then comes as a raw stanza).
const MAX_REUPLOADS: usize = 256;

/// Which message's file to upload again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReuploadRequest {
    /// The message id.
    pub id: String,
    /// Its chat.
    pub chat: Jid,
    /// Whether we sent it.
    pub from_me: bool,
    /// Its sender, in a group.
    pub participant: Option<Jid>,
}

impl ReuploadRequest {
    /// The request for message `id` in `chat`.
    pub fn new(id: impl Into<String>, chat: Jid, from_me: bool, participant: Option<Jid>) -> Self {
        Self {
            id: id.into(),
            chat,
            from_me,
            participant,
        }
    }
}

/// The answer to a [`ConnectionMachine::request_media_reupload`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaRetryAnswer {
    /// The message id.
    pub id: String,
    /// What the phone did (the new direct path when it uploaded the file again), or why
    /// its answer could not be read.
    pub result: Result<MediaRetryOutcome, MediaRetryError>,
}

/// The requests waiting for an answer, by message id (with the media key that decrypts it).
#[derive(Default)]
pub(crate) struct Reuploads {
    keys: HashMap<String, Zeroizing<[u8; 32]>>,
    order: std::collections::VecDeque<String>,
}

impl ConnectionMachine {
    /// Asks our own phone to upload the file of a message again (after the media hosts
    /// answered 404 or 410): sends the encrypted `<receipt type="server-error">`.
    /// [`Event::MediaRetry`] follows with the answer (the new direct path). `media_key` is
    /// the message's media key: it encrypts the request and decrypts the answer.
    pub fn request_media_reupload(
        &mut self,
        now: Instant,
        request: &ReuploadRequest,
        media_key: &[u8; 32],
    ) -> Result<(), SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        let own = self
            .own_identity()
            .map(|o| o.pn)
            .ok_or(SendError::NotLoggedIn)?;
        let mut iv = [0u8; 12];
        rand_core::RngCore::fill_bytes(&mut self.rng, &mut iv);
        let node = retry_receipt(
            &request.id,
            &own,
            &request.chat,
            request.from_me,
            request.participant.as_ref(),
            media_key,
            &iv,
        );
        self.send_node(now, &node)?;
        let r = &mut self.reuploads;
        if r.keys
            .insert(request.id.clone(), Zeroizing::new(*media_key))
            .is_none()
        {
            r.order.push_back(request.id.clone());
        }
        while r.order.len() > MAX_REUPLOADS {
            if let Some(old) = r.order.pop_front() {
                r.keys.remove(&old);
            }
        }
        Ok(())
    }

    /// A `mediaretry` notification answering one of our requests: the typed answer. `None`
    /// when it answers no request of ours (it then goes out raw).
    pub(super) fn media_retry_answer(&mut self, node: &Node) -> Option<Event> {
        if node.tag != "notification" || node.attr_str("type") != Some("mediaretry") {
            return None;
        }
        let id = node.attr_str("id")?;
        let key = self.reuploads.keys.remove(id)?;
        self.reuploads.order.retain(|k| k != id);
        let result = parse_retry_notification(node)
            .and_then(|retry| decrypt_retry_notification(&retry, &key));
        Some(Event::MediaRetry(Box::new(MediaRetryAnswer {
            id: id.to_owned(),
            result,
        })))
    }
}
