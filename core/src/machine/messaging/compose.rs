//! The send commands of every kind (MESSAGES.md §4): each builds its `Message` with
//! [`content::build`](crate::content::build) from the machine's clock and seeded generator and
//! queues it like any message; the stanza attributes come from the content
//! ([`StanzaAttrs`](crate::content::StanzaAttrs)) when it is encrypted.

use std::fmt;

use amarula_proto::e2e::Message;
use prost::Message as _;
use rand_core::RngCore;

use super::nodes::{self, user_of};
use super::records::Lookup;
use super::send::{PendingVote, SendJob};
use super::{LoadBatch, MessagingError};
use crate::content::build::{self, BuildError, MessageRef, Quote, Text, VoteKeys};
use crate::content::{self, Contact, Content, Location, SecretRecord};
use crate::jid::Jid;
use crate::machine::{ConnectionMachine, SendError};
use crate::persist::{Change, SecretKey};
use crate::time::Instant;

/// A poll that was queued: its message id and its secret, the key of its votes (kept by the
/// machine too, and persisted before the poll left).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentPoll {
    /// The poll's message id.
    pub id: String,
    /// The poll's 32-byte `messageSecret`.
    pub secret: [u8; 32],
}

impl fmt::Debug for SentPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret decrypts the votes: it stays out of logs.
        f.debug_struct("SentPoll")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ConnectionMachine {
    /// Sends a text message to a user or a group and returns its id at once. `text` is a
    /// `&str`, or a [`Text`] with a reply and mentions. The message is encrypted for every
    /// device of the recipient and our own other devices (or with our sender key for a
    /// group) as soon as the device lists and keys it needs are at hand; then
    /// [`Event::MessageAck`](crate::machine::Event::MessageAck) follows for the id, or
    /// [`Event::SendFailed`](crate::machine::Event::SendFailed) if it could not go out.
    pub fn send_text(
        &mut self,
        now: Instant,
        to: &Jid,
        text: impl Into<Text>,
    ) -> Result<String, SendError> {
        let own = self.own_user()?;
        let message = text.into().to_message(to, &own);
        self.send_message(now, to, message)
    }

    /// Sends `text` as a reply to `quote` (see [`send_text`](Self::send_text)); the quoted
    /// message is copied without its wrappers and its own reply.
    pub fn send_reply(
        &mut self,
        now: Instant,
        to: &Jid,
        text: &str,
        quote: Quote,
    ) -> Result<String, SendError> {
        self.send_text(now, to, Text::new(text).reply_to(quote))
    }

    /// Reacts to `target` with `emoji` in its chat; an empty `emoji` removes our reaction
    /// (`edit="7"`). Reactions are hidden from receivers that cannot decrypt them.
    pub fn send_reaction(
        &mut self,
        now: Instant,
        target: &MessageRef,
        emoji: &str,
    ) -> Result<String, SendError> {
        let key = target.key(&self.own_identities());
        let message = build::reaction(key, emoji, self.unix_ms(now));
        self.send_message(now, &target.chat, message)
    }

    /// Replaces the content of our message `target` with `content` (`edit="1"`, a fresh id;
    /// receivers allow it within 20 minutes of the original).
    ///
    /// # Errors
    /// [`SendError::InvalidContent`] when `target` is not ours.
    pub fn send_edit(
        &mut self,
        now: Instant,
        target: &MessageRef,
        content: Message,
    ) -> Result<String, SendError> {
        let own = self.own_identities();
        if !target.is_ours(&own) {
            return Err(SendError::InvalidContent(BuildError::NotOurs));
        }
        let message = build::edit(target.key(&own), content, self.unix_ms(now));
        self.send_message(now, &target.chat, message)
    }

    /// Deletes `target` for everyone: our own message (`edit="7"`), or in a group someone
    /// else's as an admin (`edit="8"`; the server refuses it if we are not one).
    ///
    /// # Errors
    /// [`SendError::InvalidContent`] for someone else's message outside a group.
    pub fn send_revoke(&mut self, now: Instant, target: &MessageRef) -> Result<String, SendError> {
        let own = self.own_identities();
        if !target.is_ours(&own) && !target.chat.is_group() {
            return Err(SendError::InvalidContent(
                BuildError::AdminRevokeOutsideGroup,
            ));
        }
        self.send_message(now, &target.chat, build::revoke(target.key(&own)))
    }

    /// Sends a poll named `name` with `options`, of which a voter may select `selectable` (0:
    /// any number). Its secret is drawn from the machine's generator and kept (persisted
    /// with the option names before the poll leaves), so the votes that come back decrypt to
    /// option names, after a restart too.
    ///
    /// # Errors
    /// [`SendError::InvalidContent`] for no options, a repeated option or too large a
    /// `selectable`.
    pub fn send_poll<S: AsRef<str>>(
        &mut self,
        now: Instant,
        to: &Jid,
        name: &str,
        options: &[S],
        selectable: u32,
    ) -> Result<SentPoll, SendError> {
        let options: Vec<String> = options.iter().map(|o| o.as_ref().to_owned()).collect();
        let mut secret = [0u8; 32];
        self.rng.fill_bytes(&mut secret);
        let message = build::poll(name, &options, selectable, secret)?;
        let id = self.send_message(now, to, message)?;
        Ok(SentPoll { id, secret })
    }

    /// Votes on `poll`, selecting the options named `selected` (the whole selection; empty
    /// withdraws our vote). The vote is encrypted with the poll's secret, which the machine
    /// kept when the poll was sent or received; when it is not in memory it is asked of the
    /// store ([`Event::Load`](crate::machine::Event::Load)) and the vote waits for it. A
    /// poll whose secret is unknown, or a name that is not one of its options, ends in
    /// [`Event::SendFailed`](crate::machine::Event::SendFailed).
    pub fn send_poll_vote<S: AsRef<str>>(
        &mut self,
        now: Instant,
        poll: &MessageRef,
        selected: &[S],
    ) -> Result<String, SendError> {
        let own = self.own_user()?;
        let mut poll = poll.clone();
        if poll.is_ours(&self.own_identities()) {
            poll.author = Some(own);
        }
        let vote = PendingVote {
            poll: poll.clone(),
            selected: selected.iter().map(|s| s.as_ref().to_owned()).collect(),
            timestamp_ms: self.unix_ms(now),
        };
        self.queue(now, &poll.chat, Vec::new(), Some(vote))
    }

    /// Sends a contact card (`mediatype="vcard"`); [`build::vcard`] writes one.
    pub fn send_contact(
        &mut self,
        now: Instant,
        to: &Jid,
        card: &Contact,
    ) -> Result<String, SendError> {
        self.send_message(now, to, build::contact(card))
    }

    /// Sends several contact cards under `display_name` (`mediatype="contact_array"`).
    pub fn send_contacts(
        &mut self,
        now: Instant,
        to: &Jid,
        display_name: &str,
        cards: &[Contact],
    ) -> Result<String, SendError> {
        self.send_message(now, to, build::contacts(display_name, cards))
    }

    /// Sends a location pin.
    pub fn send_location(
        &mut self,
        now: Instant,
        to: &Jid,
        place: &Location,
    ) -> Result<String, SendError> {
        self.send_message(now, to, build::location(place))
    }

    /// Sends any `Message`: its stanza attributes (`type`, `mediatype`, `edit`,
    /// `decrypt-fail`, `<meta>`) are derived from its content, and a message secret it
    /// carries (a poll, an event) is kept like that of [`send_poll`](Self::send_poll). See
    /// [`send_text`](Self::send_text) for what follows.
    pub fn send_message(
        &mut self,
        now: Instant,
        to: &Jid,
        message: Message,
    ) -> Result<String, SendError> {
        self.queue(now, to, message.encode_to_vec(), None)
    }

    // ---- internals ----

    fn unix_ms(&self, now: Instant) -> i64 {
        i64::try_from(self.clock.unix_ms(now)).unwrap_or(i64::MAX)
    }

    /// Our own phone-number user, once logged in.
    fn own_user(&self) -> Result<Jid, SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        self.own_device()
            .map(|d| user_of(&d))
            .ok_or(SendError::NotLoggedIn)
    }

    /// Queues a send (a serialized message, or a vote still to be built) and returns its id.
    fn queue(
        &mut self,
        now: Instant,
        to: &Jid,
        message: Vec<u8>,
        vote: Option<PendingVote>,
    ) -> Result<String, SendError> {
        let own = self.own_user()?;
        if !(to.is_group() || nodes::is_user(to)) {
            return Err(SendError::InvalidRecipient);
        }
        if self.session_msg.sends.len() >= self.config.max_pending_sends {
            return Err(SendError::TooManyPending);
        }
        let mut random = [0u8; 16];
        self.rng.fill_bytes(&mut random);
        let id = nodes::message_id(self.clock.unix_secs(now), own.user_part(), &random);
        let chat = if to.is_group() {
            to.to_non_device()
        } else {
            user_of(to)
        };
        // The secret is stored before anything names it: the frame may leave in this very
        // call, and a vote may come back before the next.
        if vote.is_none() {
            self.keep_sent_secret(&chat, &own, &id, &message);
        }
        let mut job = SendJob::new(id.clone(), chat, message);
        job.vote = vote;
        self.session_msg.sends.push_back(job);
        self.advance(now);
        Ok(id)
    }

    /// Queues a peer message (`category="peer"`) for our own phone alone and returns its id:
    /// history requests and app-state key requests.
    pub(in crate::machine) fn queue_peer(
        &mut self,
        now: Instant,
        message: &Message,
    ) -> Result<String, SendError> {
        let own = self.own_user()?;
        if self.session_msg.sends.len() >= self.config.max_pending_sends {
            return Err(SendError::TooManyPending);
        }
        let mut random = [0u8; 16];
        self.rng.fill_bytes(&mut random);
        let id = nodes::message_id(self.clock.unix_secs(now), own.user_part(), &random);
        let mut job = SendJob::new(id.clone(), own.clone(), message.encode_to_vec());
        job.resend = Some(super::send::Resend {
            requester: nodes::device_address(&own.with_device(0)),
            count: 0,
            bundle: None,
        });
        job.peer = true;
        self.session_msg.sends.push_back(job);
        self.advance(now);
        Ok(id)
    }

    /// Keeps the secret of a message we send (a poll, an event) under (chat, us, id).
    fn keep_sent_secret(&mut self, chat: &Jid, own: &Jid, id: &str, bytes: &[u8]) {
        let Ok(message) = Message::decode(bytes) else {
            return;
        };
        let own_ids = self.own_identities();
        let classified = content::classify(
            &message,
            &content::Origin {
                chat,
                sender: own,
                own: &own_ids,
            },
        );
        let Some(secret) = classified.message_secret.filter(|s| s.len() == 32) else {
            return;
        };
        let options = match classified.content {
            Content::Poll(p) => p.options,
            _ => Vec::new(),
        };
        let key = SecretKey {
            chat: chat.to_non_device(),
            author: own.clone(),
            id: id.to_owned(),
        };
        self.store_secret(key, SecretRecord::new(secret, options));
    }

    /// Persists a message secret and holds it.
    pub(super) fn store_secret(&mut self, key: SecretKey, record: SecretRecord) {
        self.persist(Change::MessageSecret {
            key: key.clone(),
            record: record.to_bytes(),
        });
        let cap = self.config.max_loaded_records;
        self.session_msg.secrets.put(key, Some(record), cap);
    }

    /// The serialized vote once its poll's secret is at hand; `Err(None)` while it is being
    /// loaded, `Err(Some(_))` when the vote cannot be built.
    pub(super) fn build_vote(
        &mut self,
        own: &Jid,
        vote: &PendingVote,
        loads: &mut LoadBatch,
    ) -> Result<Vec<u8>, Option<MessagingError>> {
        let voter = user_of(own);
        let creator = vote.poll.author_or(&voter);
        let key = SecretKey {
            chat: vote.poll.chat.to_non_device(),
            author: creator.clone(),
            id: vote.poll.id.clone(),
        };
        let record = match self.session_msg.secrets.lookup(&key) {
            Lookup::Held(r) => r.clone(),
            Lookup::Absent => return Err(Some(MessagingError::PollSecretUnknown)),
            Lookup::Unknown => {
                loads.secret(&mut self.session_msg, &key);
                return Err(None);
            }
        };
        let mut iv = [0u8; 12];
        self.rng.fill_bytes(&mut iv);
        let keys = VoteKeys::new(
            vote.poll.key(&self.own_identities()),
            &vote.poll.id,
            &creator,
            &voter,
            &record.secret,
        );
        build::poll_vote(
            &keys,
            &record.options,
            &vote.selected,
            iv,
            vote.timestamp_ms,
        )
        .map(|m| m.encode_to_vec())
        .map_err(|e| Some(MessagingError::Build(e)))
    }
}
