//! The phone's side of a media re-upload (SESSION.md §12.5): every media file a phone sees in
//! a message is remembered (its key and where it was); when a companion of the same account
//! sends `<receipt type="server-error">` for one of them, the phone reads the encrypted request
//! with that file's key, stores the file again under a new path on the media host, and
//! answers the companion with an encrypted `mediaretry` notification naming the new path (or
//! with the "not found" result for a message it never saw).

use std::collections::{HashMap, VecDeque};

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::media::{MediaRetryOutcome, decrypt_retry_receipt, encrypt_retry_answer};
use amarula_proto::e2e;
use rand_core::RngCore;

use super::media::MediaServer;
use super::state::State;

/// How many files each simulator remembers (the oldest are forgotten).
const CAPACITY: usize = 4096;

/// A media file a phone saw.
#[derive(Clone)]
struct Seen {
    media_key: [u8; 32],
    direct_path: String,
}

/// The media files the phones have seen, by (account, message id).
#[derive(Default)]
pub(crate) struct PhoneMedia {
    files: HashMap<(String, String), Seen>,
    order: VecDeque<(String, String)>,
}

impl std::fmt::Debug for PhoneMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneMedia")
            .field("files", &self.files.len())
            .finish()
    }
}

impl PhoneMedia {
    /// Remembers the media file of `message` (id `id`) seen by `account`'s phone.
    pub(crate) fn record(&mut self, account: &str, id: &str, message: &e2e::Message) {
        let Some((_, media_key, _, direct_path)) = super::phone_media::file_of(message) else {
            return;
        };
        let k = (account.to_owned(), id.to_owned());
        let seen = Seen {
            media_key,
            direct_path,
        };
        if self.files.insert(k.clone(), seen).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.files.remove(&old);
            }
        }
    }
}

/// A companion `me` asked its own phone to upload a file again: the phone's answer is
/// delivered to `me`. Returns whether the receipt was such a request.
pub(crate) fn on_server_error(
    st: &mut State,
    media: &MediaServer,
    me: &Jid,
    receipt: &Node,
    t: &str,
) -> bool {
    if receipt.attr_str("type") != Some("server-error") {
        return false;
    }
    let Some(id) = receipt.attr_str("id").map(str::to_owned) else {
        return true;
    };
    let account = me.user_part().to_owned();
    let seen = st
        .phone_media
        .files
        .get(&(account.clone(), id.clone()))
        .cloned();
    let Some(rmr) = receipt.child("rmr").cloned() else {
        return true;
    };
    let mut answer = Node::new("notification")
        .attr("from", me.to_non_device())
        .attr("type", "mediaretry")
        .attr("id", id.as_str())
        .attr("t", t);
    match seen {
        Some(seen) => {
            // The request must decrypt with the file's key, as the real phone checks.
            let outcome = match decrypt_retry_receipt(receipt, &seen.media_key) {
                Ok(named) if named == id => match media.upload_again(&seen.direct_path) {
                    Some(direct_path) => MediaRetryOutcome::Uploaded { direct_path },
                    None => MediaRetryOutcome::NotFound,
                },
                _ => MediaRetryOutcome::DecryptionError,
            };
            let mut iv = [0u8; 12];
            st.rng.fill_bytes(&mut iv);
            let ciphertext = encrypt_retry_answer(&id, &seen.media_key, &iv, &outcome);
            answer = answer.children([
                Node::new("encrypt").children([
                    Node::new("enc_p").bytes(ciphertext),
                    Node::new("enc_iv").bytes(iv.to_vec()),
                ]),
                rmr,
            ]);
        }
        // A message the phone never saw: its error code (2, "not found").
        None => {
            answer = answer.children([rmr, Node::new("error").attr("code", "2")]);
        }
    }
    st.deliver(&account, me.device(), answer);
    true
}
