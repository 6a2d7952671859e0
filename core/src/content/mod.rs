//! Message content, typed (MESSAGES.md §3, §4): what a decrypted `Message` is, with its wrappers
//! peeled off, beside the raw protobuf (which stays the source of truth).
//!
//! [`classify`] never drops anything: a kind it knows becomes a typed [`Content`]; a known
//! kind it does not type yet (events, payments, interactive messages …) becomes
//! [`Content::Other`] naming the field, to be read from the raw `Message`; and a message whose
//! fields no schema declares becomes [`Content::Unknown`], with the plaintext bytes kept by
//! the caller. Classification is pure: the one step that needs stored state, decrypting a
//! poll vote with the poll's secret, is left to the caller ([`PollVote::decrypt`]).
//!
//! The sending side: [`build`] makes the message of each kind (replies, reactions, edits,
//! revokes, polls and votes, contacts, locations), and [`StanzaAttrs`] derives the stanza
//! attributes a message is sent with (MESSAGES.md §2).

pub mod build;
mod secret;
mod stanza;
mod wire;

use std::fmt;

use amarula_proto::common::MessageKey;
use amarula_proto::e2e::{self, Message};
use bytes::Bytes;
/// The text of [`Content::Text`]: a `str` over [`Bytes`], which can share the buffer it was
/// received in. Read it as a `&str` (it dereferences to one).
pub use bytestring::ByteString;

pub use secret::{
    SecretError, UseCase, decrypt as decrypt_addon, encrypt as encrypt_addon, option_hash,
};
pub use stanza::{EditAttr, MessageType, Meta, StanzaAttrs};
pub use wire::{WireError, is_key_distribution_only, top_level_fields};

use crate::jid::Jid;

/// How deep wrappers and edits may nest before the rest is left unclassified.
const MAX_DEPTH: u8 = 8;

/// The wrappers that were peeled off the content (MESSAGES.md §3, §4.9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Wrappers {
    /// `ephemeralMessage`: sent in a chat with disappearing messages.
    pub ephemeral: bool,
    /// `viewOnceMessage` (V1, V2 or V2 extension), or a media `viewOnce` flag.
    pub view_once: bool,
    /// `documentWithCaptionMessage`.
    pub document_with_caption: bool,
    /// `editedMessage`: the content is an edit (see [`Content::Edit`]).
    pub edited: bool,
    /// `botInvokeMessage`.
    pub bot_invoke: bool,
    /// `lottieStickerMessage`.
    pub lottie_sticker: bool,
    /// `groupMentionedMessage`.
    pub group_mentioned: bool,
    /// Any other wrapper of the WA Web list (spoiler, associated child, group status, …).
    pub other: bool,
}

/// A message another message refers to (the target of a reaction, edit, revoke or vote), as
/// the receiver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// The target's message id.
    pub id: String,
    /// The target's author (a user JID without device), when it can be told.
    pub author: Option<Jid>,
    /// Whether the target was sent by us (from this account, any device).
    pub from_me: bool,
    /// The key exactly as the sender wrote it (its `fromMe` is from the sender's view).
    pub key: MessageKey,
}

/// Where a message was received: what a [`Target`] is resolved against.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The chat (a user or a group).
    pub chat: &'a Jid,
    /// The sender (any device of the user).
    pub sender: &'a Jid,
    /// Our own identities (phone number and LID users); either is "me".
    pub own: &'a [Jid],
}

impl Origin<'_> {
    fn is_own(&self, jid: &Jid) -> bool {
        let user = jid.to_non_device();
        self.own.iter().any(|o| o.to_non_device() == user)
    }

    /// Resolves a key written by this message's sender into the receiver's view.
    pub fn target(&self, key: &MessageKey) -> Target {
        let parse = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<Jid>().ok());
        let author = if key.from_me() {
            // The sender's own message.
            Some(self.sender.to_non_device())
        } else if let Some(p) = parse(&key.participant) {
            Some(p.to_non_device())
        } else if !self.chat.is_group() {
            // In a chat of two, "not mine" from the sender is the other one of the two.
            match parse(&key.remote_jid) {
                Some(r) if !r.is_group() => Some(r.to_non_device()),
                _ if self.is_own(self.sender) => Some(self.chat.to_non_device()),
                _ => self.own.first().map(Jid::to_non_device),
            }
        } else {
            None
        };
        let from_me = author.as_ref().is_some_and(|a| self.is_own(a));
        Target {
            id: key.id.clone().unwrap_or_default(),
            author,
            from_me,
            key: key.clone(),
        }
    }
}

/// A quoted message (a reply).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Reply {
    /// The quoted message's id.
    pub stanza_id: String,
    /// Its author, when given.
    pub participant: Option<Jid>,
    /// The chat it was in, when it is another chat.
    pub chat: Option<Jid>,
    /// The quoted content, as the sender copied it.
    pub quoted: Option<Box<Message>>,
}

/// The `contextInfo` of a content: reply, mentions, forwarding, disappearing timer.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Context {
    /// The message this one replies to.
    pub reply: Option<Reply>,
    /// Mentioned users.
    pub mentions: Vec<Jid>,
    /// Marked as forwarded.
    pub forwarded: bool,
    /// How often it was forwarded (127 = many times).
    pub forwarding_score: u32,
    /// The disappearing-messages timer (seconds), when set.
    pub expiration: Option<u32>,
}

impl Context {
    fn from_proto(c: &e2e::ContextInfo) -> Option<Self> {
        let reply = c.stanza_id.as_ref().map(|id| Reply {
            stanza_id: id.clone(),
            participant: c.participant.as_deref().and_then(|p| p.parse().ok()),
            chat: c.remote_jid.as_deref().and_then(|p| p.parse().ok()),
            quoted: c.quoted_message.clone(),
        });
        let context = Self {
            reply,
            mentions: c
                .mentioned_jid
                .iter()
                .filter_map(|j| j.parse().ok())
                .collect(),
            forwarded: c.is_forwarded(),
            forwarding_score: c.forwarding_score(),
            expiration: c.expiration.filter(|e| *e > 0),
        };
        (context != Self::default()).then_some(context)
    }
}

/// The kind of a media message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaKind {
    /// `imageMessage`.
    Image,
    /// `videoMessage`.
    Video,
    /// `ptvMessage`: a round video note.
    VideoNote,
    /// `audioMessage`.
    Audio,
    /// `documentMessage`.
    Document,
    /// `stickerMessage`.
    Sticker,
}

impl MediaKind {
    /// The media type name of uploads and of the HKDF info ("WhatsApp Image Keys" …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video | Self::VideoNote => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Sticker => "sticker",
        }
    }
}

/// Where an encrypted media file is and how to check and decrypt it.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MediaRef {
    /// The full URL, when given.
    pub url: Option<String>,
    /// The path on the media hosts.
    pub direct_path: Option<String>,
    /// The 32-byte media key.
    pub media_key: Bytes,
    /// SHA-256 of the plaintext file.
    pub file_sha256: Bytes,
    /// SHA-256 of the encrypted file.
    pub file_enc_sha256: Bytes,
    /// Size of the plaintext file.
    pub file_length: u64,
    /// When the media key was made (unix seconds).
    pub media_key_timestamp: Option<i64>,
}

impl fmt::Debug for MediaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The media key decrypts the file: it stays out of logs.
        f.debug_struct("MediaRef")
            .field("direct_path", &self.direct_path)
            .field("file_length", &self.file_length)
            .finish_non_exhaustive()
    }
}

/// A media message: image, video, audio, document or sticker.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Media {
    /// What kind.
    pub kind: Option<MediaKind>,
    /// The file's MIME type.
    pub mimetype: Option<String>,
    /// The caption.
    pub caption: Option<String>,
    /// A document's file name.
    pub file_name: Option<String>,
    /// A document's title.
    pub title: Option<String>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Duration in seconds (audio, video).
    pub seconds: Option<u32>,
    /// A voice note (audio with push-to-talk).
    pub ptt: bool,
    /// A video played as a GIF.
    pub gif: bool,
    /// An animated sticker.
    pub animated: bool,
    /// A document's page count.
    pub page_count: Option<u32>,
    /// The inline thumbnail (JPEG; PNG for stickers).
    pub thumbnail: Option<Bytes>,
    /// A voice note's waveform.
    pub waveform: Option<Bytes>,
    /// Where to download it.
    pub reference: MediaRef,
}

/// A contact card.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Contact {
    /// The name shown.
    pub display_name: Option<String>,
    /// The vCard text.
    pub vcard: Option<String>,
}

impl Contact {
    /// A card named `display_name` with the vCard text `vcard` (see [`build::vcard`]).
    pub fn new(display_name: impl Into<String>, vcard: impl Into<String>) -> Self {
        Self {
            display_name: Some(display_name.into()),
            vcard: Some(vcard.into()),
        }
    }

    fn from_proto(c: &e2e::ContactMessage) -> Self {
        Self {
            display_name: c.display_name.clone(),
            vcard: c.vcard.clone(),
        }
    }
}

/// A location pin.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Location {
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// The place's name.
    pub name: Option<String>,
    /// The place's address.
    pub address: Option<String>,
    /// A URL for the place.
    pub url: Option<String>,
    /// A comment.
    pub comment: Option<String>,
    /// Accuracy in meters.
    pub accuracy_m: Option<u32>,
}

impl Location {
    /// A pin at `latitude`, `longitude` (degrees); set the other fields as needed.
    pub fn new(latitude: f64, longitude: f64) -> Self {
        Self {
            latitude,
            longitude,
            ..Self::default()
        }
    }
}

/// A live location update.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct LiveLocation {
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// Accuracy in meters.
    pub accuracy_m: Option<u32>,
    /// Speed in meters per second.
    pub speed_mps: Option<f32>,
    /// Heading in degrees clockwise from magnetic north.
    pub heading: Option<u32>,
    /// The caption.
    pub caption: Option<String>,
    /// The update's sequence number.
    pub sequence_number: Option<i64>,
}

/// A reaction to a message, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reaction {
    /// The message reacted to.
    pub target: Target,
    /// The emoji; empty when the reaction is removed.
    pub emoji: String,
    /// When the reaction was made (sender's clock, unix milliseconds).
    pub timestamp_ms: Option<i64>,
}

impl Reaction {
    /// Whether this removes the sender's earlier reaction.
    pub fn is_removal(&self) -> bool {
        self.emoji.is_empty()
    }
}

/// A new poll.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Poll {
    /// The question.
    pub name: String,
    /// The options' names.
    pub options: Vec<String>,
    /// How many options a voter may select (0: any number).
    pub selectable_count: u32,
    /// Which creation field carried it (1, 2, 3, 5 or 6).
    pub version: u8,
    /// The poll's message secret, the key of its votes (`None` if the sender sent none).
    pub secret: Option<Bytes>,
}

/// What a vote selects, once decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VoteState {
    /// Decrypted: the options selected (empty: the vote was withdrawn).
    Decrypted {
        /// The names of the selected options that match an option of the poll.
        options: Vec<String>,
        /// The hashes as sent (SHA-256 of each option's name), matched or not.
        hashes: Vec<Bytes>,
    },
    /// Not decrypted (the poll's secret is unknown, or the vote does not authenticate).
    Undecrypted(SecretError),
}

/// A vote on a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollVote {
    /// The poll voted on.
    pub poll: Target,
    /// The encrypted vote as sent.
    pub enc_payload: Bytes,
    /// Its IV.
    pub enc_iv: Bytes,
    /// When the vote was cast (sender's clock, unix milliseconds).
    pub timestamp_ms: Option<i64>,
    /// The vote, once [`decrypt`](Self::decrypt)ed.
    pub state: VoteState,
}

impl PollVote {
    /// Decrypts the vote with the poll's secret and option names: `voter` is the vote's sender
    /// and `creator` the poll's author. The JIDs that enter the key depend on the addressing
    /// the voter used, so the caller may try its alternates (phone number and LID) in turn.
    pub fn decrypt(
        &mut self,
        secret: &[u8],
        options: &[String],
        creator: &Jid,
        voter: &Jid,
    ) -> Result<(), SecretError> {
        let plain = secret::decrypt(
            secret,
            &self.poll.id,
            creator,
            voter,
            UseCase::PollVote,
            &self.enc_iv,
            &self.enc_payload,
        )?;
        let vote = <e2e::PollVoteMessage as prost::Message>::decode(plain.as_slice())
            .map_err(|_| SecretError::Malformed)?;
        let names = vote
            .selected_options
            .iter()
            .filter_map(|h| {
                options
                    .iter()
                    .find(|o| option_hash(o).as_slice() == h.as_ref())
                    .cloned()
            })
            .collect();
        self.state = VoteState::Decrypted {
            options: names,
            hashes: vote.selected_options,
        };
        Ok(())
    }
}

/// An edit of an earlier message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Edit {
    /// The message edited.
    pub target: Target,
    /// The new content, classified.
    pub content: Box<Content>,
    /// The new content as sent.
    pub message: Box<Message>,
    /// When it was edited (sender's clock, unix milliseconds).
    pub timestamp_ms: Option<i64>,
    /// Whether the editor is the target's author (only authors may edit).
    pub by_author: bool,
}

/// A message deleted for everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revoke {
    /// The message deleted.
    pub target: Target,
    /// Deleted by someone other than its author: a group admin (the application may check
    /// the sender's role).
    pub by_admin: bool,
}

/// A message's secret as stored ([`Change::MessageSecret`](crate::persist::Change)), with the
/// option names of a poll so that its votes resolve to names after a restart.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SecretRecord {
    /// The 32-byte message secret.
    pub secret: Bytes,
    /// A poll's option names (empty for other messages).
    pub options: Vec<String>,
}

impl SecretRecord {
    /// A record of `secret` and a poll's `options`.
    pub fn new(secret: Bytes, options: Vec<String>) -> Self {
        Self { secret, options }
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&amarula_proto::StoredMessageSecret {
            version: Some(1),
            secret: Some(self.secret.clone()),
            options: self.options.clone(),
        })
    }

    /// Reads the stored form; `None` for bytes this version did not write.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let stored: amarula_proto::StoredMessageSecret = prost::Message::decode(bytes).ok()?;
        (stored.version == Some(1)).then(|| Self {
            secret: stored.secret.unwrap_or_default(),
            options: stored.options,
        })
    }
}

impl fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret decrypts votes: only the options are shown.
        f.debug_struct("SecretRecord")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A known protocol message kind (`ProtocolMessage.type`).
pub type ProtocolKind = e2e::protocol_message::Type;

/// What a message is, wrappers peeled off.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Content {
    /// Text (`conversation` or `extendedTextMessage`); reply and mentions are in the
    /// [`Classified::context`].
    Text {
        /// The text, read as a `&str`. In a received message it is a slice of the raw
        /// plaintext ([`IncomingMessage::raw`](crate::machine::IncomingMessage::raw)), which
        /// it shares rather than copies.
        text: ByteString,
        /// A link preview's matched URL, when the sender added one.
        matched_text: Option<String>,
    },
    /// Image, video, video note, audio, document or sticker.
    Media(Box<Media>),
    /// One contact card.
    Contact(Contact),
    /// Several contact cards.
    Contacts {
        /// The name shown for the set.
        display_name: Option<String>,
        /// The cards.
        contacts: Vec<Contact>,
    },
    /// A location.
    Location(Box<Location>),
    /// A live location update.
    LiveLocation(Box<LiveLocation>),
    /// A reaction (or its removal).
    Reaction(Reaction),
    /// A new poll.
    Poll(Poll),
    /// A vote on a poll.
    PollVote(Box<PollVote>),
    /// An edit.
    Edit(Box<Edit>),
    /// A deletion for everyone.
    Revoke(Revoke),
    /// The chat's disappearing-messages timer changed.
    EphemeralSetting {
        /// The new timer in seconds (0: off).
        expiration: u32,
    },
    /// Any other protocol message (history sync notification, app-state key share, …), typed
    /// by its kind; read the details from [`Classified::protocol`] or the raw `Message`.
    Protocol(ProtocolKind),
    /// A protocol message of a kind newer than our schema.
    ProtocolUnknown(i32),
    /// A content field the schema declares but this module does not type (events, pins,
    /// payments, interactive messages …): the upstream field name; read the raw `Message`.
    Other(&'static str),
    /// No field the schema declares: the plaintext bytes are all there is.
    Unknown,
}

/// A classified message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Classified {
    /// What it is.
    pub content: Content,
    /// The wrappers peeled off.
    pub wrappers: Wrappers,
    /// The content's context info (reply, mentions, forwarding, timer).
    pub context: Option<Context>,
    /// The `messageContextInfo.messageSecret` (polls, events): the key of the add-ons that
    /// will refer to this message.
    pub message_secret: Option<Bytes>,
    /// The protocol message, for [`Content::Protocol`] and the kinds built on it.
    pub protocol: Option<Box<e2e::ProtocolMessage>>,
}

/// The content inside the wrappers of a message, and which wrappers were peeled.
pub fn unwrap(message: &Message) -> (&Message, Wrappers) {
    let mut wrappers = Wrappers::default();
    let mut m = message;
    for _ in 0..MAX_DEPTH {
        let (inner, flag): (Option<&e2e::FutureProofMessage>, &mut bool) =
            if let Some(w) = m.ephemeral_message.as_deref() {
                (Some(w), &mut wrappers.ephemeral)
            } else if let Some(w) = m
                .view_once_message
                .as_deref()
                .or(m.view_once_message_v2.as_deref())
                .or(m.view_once_message_v2_extension.as_deref())
            {
                (Some(w), &mut wrappers.view_once)
            } else if let Some(w) = m.document_with_caption_message.as_deref() {
                (Some(w), &mut wrappers.document_with_caption)
            } else if let Some(w) = m.edited_message.as_deref() {
                (Some(w), &mut wrappers.edited)
            } else if let Some(w) = m.bot_invoke_message.as_deref() {
                (Some(w), &mut wrappers.bot_invoke)
            } else if let Some(w) = m.lottie_sticker_message.as_deref() {
                (Some(w), &mut wrappers.lottie_sticker)
            } else if let Some(w) = m.group_mentioned_message.as_deref() {
                (Some(w), &mut wrappers.group_mentioned)
            } else if let Some(w) = m
                .associated_child_message
                .as_deref()
                .or(m.group_status_message.as_deref())
                .or(m.group_status_message_v2.as_deref())
                .or(m.group_status_mention_message.as_deref())
                .or(m.status_mention_message.as_deref())
                .or(m.spoiler_message.as_deref())
                .or(m.limit_sharing_message.as_deref())
                .or(m.question_message.as_deref())
                .or(m.question_reply_message.as_deref())
                .or(m.status_add_yours.as_deref())
                .or(m.poll_creation_option_image_message.as_deref())
                .or(m.event_cover_image.as_deref())
                .or(m.poll_creation_message_v4.as_deref())
            {
                (Some(w), &mut wrappers.other)
            } else {
                (None, &mut wrappers.other)
            };
        match inner.and_then(|w| w.message.as_deref()) {
            Some(next) => {
                *flag = true;
                m = next;
            }
            None => break,
        }
    }
    (m, wrappers)
}

/// Classifies a decrypted message received in `origin`. `message` is the content as decoded
/// (after `deviceSentMessage` was taken off for our own devices' messages).
pub fn classify(message: &Message, origin: &Origin<'_>) -> Classified {
    classify_at(message, origin, None, 0)
}

/// [`classify`] a message decoded from `raw`: a text found in `raw` (where the decoder copied
/// it from) shares its allocation rather than being copied once more.
pub(crate) fn classify_shared(message: &Message, origin: &Origin<'_>, raw: &Bytes) -> Classified {
    classify_at(message, origin, Some(raw), 0)
}

/// `text` as a [`ByteString`]: a slice of `raw` when `raw` holds its bytes (any place that
/// does holds the same text), else a copy.
fn shared_text(text: &str, raw: Option<&Bytes>) -> ByteString {
    let found = raw.and_then(|raw| {
        let at = memchr::memmem::find(raw, text.as_bytes())?;
        let bytes = raw.slice(at..at + text.len());
        ByteString::try_from(bytes).ok()
    });
    found.unwrap_or_else(|| ByteString::from(text))
}

fn classify_at(
    message: &Message,
    origin: &Origin<'_>,
    raw: Option<&Bytes>,
    depth: u8,
) -> Classified {
    let (inner, mut wrappers) = unwrap(message);
    // The secret may sit on the outer message when a wrapper carries the content.
    let message_secret = inner
        .message_context_info
        .as_ref()
        .or(message.message_context_info.as_ref())
        .and_then(|c| c.message_secret.clone())
        .filter(|s| !s.is_empty());
    let mut out = Classified {
        content: Content::Unknown,
        wrappers,
        context: None,
        message_secret,
        protocol: None,
    };
    let (content, context) = content_of(inner, origin, raw, depth, &mut out);
    out.context = context.and_then(Context::from_proto);
    if let Content::Media(m) = &content {
        let flagged = match m.kind {
            Some(MediaKind::Image) => inner
                .image_message
                .as_deref()
                .is_some_and(|i| i.view_once()),
            Some(MediaKind::Video) => inner
                .video_message
                .as_deref()
                .is_some_and(|v| v.view_once()),
            Some(MediaKind::Audio) => inner
                .audio_message
                .as_deref()
                .is_some_and(|a| a.view_once()),
            _ => false,
        };
        wrappers.view_once |= flagged;
        out.wrappers = wrappers;
    }
    out.content = content;
    out
}

fn media_ref(
    url: &Option<String>,
    direct_path: &Option<String>,
    media_key: &Option<Bytes>,
    file_sha256: &Option<Bytes>,
    file_enc_sha256: &Option<Bytes>,
    file_length: Option<u64>,
    media_key_timestamp: Option<i64>,
) -> MediaRef {
    MediaRef {
        url: url.clone(),
        direct_path: direct_path.clone(),
        media_key: media_key.clone().unwrap_or_default(),
        file_sha256: file_sha256.clone().unwrap_or_default(),
        file_enc_sha256: file_enc_sha256.clone().unwrap_or_default(),
        file_length: file_length.unwrap_or_default(),
        media_key_timestamp,
    }
}

fn media(m: Media) -> Content {
    Content::Media(Box::new(m))
}

/// The content of an unwrapped message and its context info.
fn content_of<'m>(
    m: &'m Message,
    origin: &Origin<'_>,
    raw: Option<&Bytes>,
    depth: u8,
    out: &mut Classified,
) -> (Content, Option<&'m e2e::ContextInfo>) {
    if let Some(text) = &m.conversation {
        return (
            Content::Text {
                text: shared_text(text, raw),
                matched_text: None,
            },
            None,
        );
    }
    if let Some(t) = m.extended_text_message.as_deref() {
        return (
            Content::Text {
                text: t
                    .text
                    .as_deref()
                    .map_or_else(ByteString::new, |text| shared_text(text, raw)),
                matched_text: t.matched_text.clone(),
            },
            t.context_info.as_deref(),
        );
    }
    if let Some(i) = m.image_message.as_deref() {
        return (
            media(Media {
                kind: Some(MediaKind::Image),
                mimetype: i.mimetype.clone(),
                caption: i.caption.clone(),
                width: i.width,
                height: i.height,
                thumbnail: i.jpeg_thumbnail.clone(),
                reference: media_ref(
                    &i.url,
                    &i.direct_path,
                    &i.media_key,
                    &i.file_sha256,
                    &i.file_enc_sha256,
                    i.file_length,
                    i.media_key_timestamp,
                ),
                ..Media::default()
            }),
            i.context_info.as_deref(),
        );
    }
    for (v, kind) in [
        (m.video_message.as_deref(), MediaKind::Video),
        (m.ptv_message.as_deref(), MediaKind::VideoNote),
    ] {
        if let Some(v) = v {
            return (
                media(Media {
                    kind: Some(kind),
                    mimetype: v.mimetype.clone(),
                    caption: v.caption.clone(),
                    width: v.width,
                    height: v.height,
                    seconds: v.seconds,
                    gif: v.gif_playback(),
                    thumbnail: v.jpeg_thumbnail.clone(),
                    reference: media_ref(
                        &v.url,
                        &v.direct_path,
                        &v.media_key,
                        &v.file_sha256,
                        &v.file_enc_sha256,
                        v.file_length,
                        v.media_key_timestamp,
                    ),
                    ..Media::default()
                }),
                v.context_info.as_deref(),
            );
        }
    }
    if let Some(a) = m.audio_message.as_deref() {
        return (
            media(Media {
                kind: Some(MediaKind::Audio),
                mimetype: a.mimetype.clone(),
                seconds: a.seconds,
                ptt: a.ptt(),
                waveform: a.waveform.clone(),
                reference: media_ref(
                    &a.url,
                    &a.direct_path,
                    &a.media_key,
                    &a.file_sha256,
                    &a.file_enc_sha256,
                    a.file_length,
                    a.media_key_timestamp,
                ),
                ..Media::default()
            }),
            a.context_info.as_deref(),
        );
    }
    if let Some(d) = m.document_message.as_deref() {
        return (
            media(Media {
                kind: Some(MediaKind::Document),
                mimetype: d.mimetype.clone(),
                caption: d.caption.clone(),
                file_name: d.file_name.clone(),
                title: d.title.clone(),
                page_count: d.page_count,
                thumbnail: d.jpeg_thumbnail.clone(),
                reference: media_ref(
                    &d.url,
                    &d.direct_path,
                    &d.media_key,
                    &d.file_sha256,
                    &d.file_enc_sha256,
                    d.file_length,
                    d.media_key_timestamp,
                ),
                ..Media::default()
            }),
            d.context_info.as_deref(),
        );
    }
    if let Some(s) = m.sticker_message.as_deref() {
        return (
            media(Media {
                kind: Some(MediaKind::Sticker),
                mimetype: s.mimetype.clone(),
                width: s.width,
                height: s.height,
                animated: s.is_animated(),
                thumbnail: s.png_thumbnail.clone(),
                reference: media_ref(
                    &s.url,
                    &s.direct_path,
                    &s.media_key,
                    &s.file_sha256,
                    &s.file_enc_sha256,
                    s.file_length,
                    s.media_key_timestamp,
                ),
                ..Media::default()
            }),
            s.context_info.as_deref(),
        );
    }
    if let Some(c) = m.contact_message.as_deref() {
        return (
            Content::Contact(Contact::from_proto(c)),
            c.context_info.as_deref(),
        );
    }
    if let Some(c) = m.contacts_array_message.as_deref() {
        return (
            Content::Contacts {
                display_name: c.display_name.clone(),
                contacts: c.contacts.iter().map(Contact::from_proto).collect(),
            },
            c.context_info.as_deref(),
        );
    }
    if let Some(l) = m.location_message.as_deref() {
        return (
            Content::Location(Box::new(Location {
                latitude: l.degrees_latitude(),
                longitude: l.degrees_longitude(),
                name: l.name.clone(),
                address: l.address.clone(),
                url: l.url.clone(),
                comment: l.comment.clone(),
                accuracy_m: l.accuracy_in_meters,
            })),
            l.context_info.as_deref(),
        );
    }
    if let Some(l) = m.live_location_message.as_deref() {
        return (
            Content::LiveLocation(Box::new(LiveLocation {
                latitude: l.degrees_latitude(),
                longitude: l.degrees_longitude(),
                accuracy_m: l.accuracy_in_meters,
                speed_mps: l.speed_in_mps,
                heading: l.degrees_clockwise_from_magnetic_north,
                caption: l.caption.clone(),
                sequence_number: l.sequence_number,
            })),
            l.context_info.as_deref(),
        );
    }
    if let Some(r) = m.reaction_message.as_ref() {
        let key = r.key.clone().unwrap_or_default();
        return (
            Content::Reaction(Reaction {
                target: origin.target(&key),
                emoji: r.text.clone().unwrap_or_default(),
                timestamp_ms: r.sender_timestamp_ms,
            }),
            None,
        );
    }
    for (p, version) in [
        (m.poll_creation_message.as_deref(), 1),
        (m.poll_creation_message_v2.as_deref(), 2),
        (m.poll_creation_message_v3.as_deref(), 3),
        (m.poll_creation_message_v5.as_deref(), 5),
        (m.poll_creation_message_v6.as_deref(), 6),
    ] {
        if let Some(p) = p {
            return (
                Content::Poll(Poll {
                    name: p.name.clone().unwrap_or_default(),
                    options: p
                        .options
                        .iter()
                        .map(|o| o.option_name.clone().unwrap_or_default())
                        .collect(),
                    selectable_count: p.selectable_options_count(),
                    version,
                    secret: out.message_secret.clone(),
                }),
                p.context_info.as_deref(),
            );
        }
    }
    if let Some(u) = m.poll_update_message.as_ref() {
        let key = u.poll_creation_message_key.clone().unwrap_or_default();
        let vote = u.vote.clone().unwrap_or_default();
        return (
            Content::PollVote(Box::new(PollVote {
                poll: origin.target(&key),
                enc_payload: vote.enc_payload.unwrap_or_default(),
                enc_iv: vote.enc_iv.unwrap_or_default(),
                timestamp_ms: u.sender_timestamp_ms,
                state: VoteState::Undecrypted(SecretError::UnknownSecret),
            })),
            None,
        );
    }
    if let Some(p) = m.protocol_message.as_deref() {
        out.protocol = Some(Box::new(p.clone()));
        return (protocol(p, origin, depth), None);
    }
    (other_field(m), None)
}

fn protocol(p: &e2e::ProtocolMessage, origin: &Origin<'_>, depth: u8) -> Content {
    use e2e::protocol_message::Type;
    let Some(kind) = p.r#type.and_then(|t| Type::try_from(t).ok()) else {
        return Content::ProtocolUnknown(p.r#type.unwrap_or(-1));
    };
    let target = || origin.target(&p.key.clone().unwrap_or_default());
    match kind {
        Type::Revoke => {
            let target = target();
            let by_admin = target
                .author
                .as_ref()
                .is_some_and(|a| *a != origin.sender.to_non_device());
            Content::Revoke(Revoke { target, by_admin })
        }
        Type::MessageEdit if depth < MAX_DEPTH => {
            let target = target();
            let edited = p.edited_message.clone().unwrap_or_default();
            let inner = classify_at(&edited, origin, None, depth + 1);
            let by_author = target
                .author
                .as_ref()
                .is_none_or(|a| *a == origin.sender.to_non_device());
            Content::Edit(Box::new(Edit {
                target,
                content: Box::new(inner.content),
                message: edited,
                timestamp_ms: p.timestamp_ms,
                by_author,
            }))
        }
        Type::EphemeralSetting => Content::EphemeralSetting {
            expiration: p.ephemeral_expiration.unwrap_or_default(),
        },
        other => Content::Protocol(other),
    }
}

/// The upstream name of the first content field present, for kinds not typed here.
fn other_field(m: &Message) -> Content {
    let present: [(bool, &'static str); 40] = [
        (m.event_message.is_some(), "eventMessage"),
        (
            m.enc_event_response_message.is_some(),
            "encEventResponseMessage",
        ),
        (m.pin_in_chat_message.is_some(), "pinInChatMessage"),
        (m.keep_in_chat_message.is_some(), "keepInChatMessage"),
        (m.enc_reaction_message.is_some(), "encReactionMessage"),
        (
            m.secret_encrypted_message.is_some(),
            "secretEncryptedMessage",
        ),
        (m.group_invite_message.is_some(), "groupInviteMessage"),
        (
            m.poll_result_snapshot_message.is_some(),
            "pollResultSnapshotMessage",
        ),
        (
            m.poll_result_snapshot_message_v3.is_some(),
            "pollResultSnapshotMessageV3",
        ),
        (m.poll_add_option_message.is_some(), "pollAddOptionMessage"),
        (m.buttons_message.is_some(), "buttonsMessage"),
        (
            m.buttons_response_message.is_some(),
            "buttonsResponseMessage",
        ),
        (m.list_message.is_some(), "listMessage"),
        (m.list_response_message.is_some(), "listResponseMessage"),
        (m.template_message.is_some(), "templateMessage"),
        (
            m.template_button_reply_message.is_some(),
            "templateButtonReplyMessage",
        ),
        (m.interactive_message.is_some(), "interactiveMessage"),
        (
            m.interactive_response_message.is_some(),
            "interactiveResponseMessage",
        ),
        (
            m.highly_structured_message.is_some(),
            "highlyStructuredMessage",
        ),
        (m.product_message.is_some(), "productMessage"),
        (m.order_message.is_some(), "orderMessage"),
        (m.invoice_message.is_some(), "invoiceMessage"),
        (m.send_payment_message.is_some(), "sendPaymentMessage"),
        (m.request_payment_message.is_some(), "requestPaymentMessage"),
        (m.call.is_some(), "call"),
        (m.chat.is_some(), "chat"),
        (m.sticker_pack_message.is_some(), "stickerPackMessage"),
        (m.album_message.is_some(), "albumMessage"),
        (m.comment_message.is_some(), "commentMessage"),
        (m.enc_comment_message.is_some(), "encCommentMessage"),
        (
            m.scheduled_call_creation_message.is_some(),
            "scheduledCallCreationMessage",
        ),
        (
            m.scheduled_call_edit_message.is_some(),
            "scheduledCallEditMessage",
        ),
        (m.call_log_messsage.is_some(), "callLogMesssage"),
        (
            m.request_phone_number_message.is_some(),
            "requestPhoneNumberMessage",
        ),
        (
            m.newsletter_admin_invite_message.is_some(),
            "newsletterAdminInviteMessage",
        ),
        (m.placeholder_message.is_some(), "placeholderMessage"),
        (m.message_history_bundle.is_some(), "messageHistoryBundle"),
        (m.message_history_notice.is_some(), "messageHistoryNotice"),
        (m.bcall_message.is_some(), "bcallMessage"),
        (m.event_invite_message.is_some(), "eventInviteMessage"),
    ];
    if let Some((_, name)) = present.iter().find(|(p, _)| *p) {
        return Content::Other(name);
    }
    // Key distribution and message metadata are not content: what is left decides.
    let mut rest = m.clone();
    rest.sender_key_distribution_message = None;
    rest.fast_ratchet_key_sender_key_distribution_message = None;
    rest.message_context_info = None;
    if rest == Message::default() {
        Content::Unknown
    } else {
        Content::Other("message")
    }
}

#[cfg(test)]
mod tests;
