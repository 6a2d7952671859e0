//! What the messaging layer hands to the application: decrypted messages, undecryptable ones,
//! and why a send failed.

use std::fmt;

use amarula_proto::e2e::Message;
use bytes::Bytes;

use super::super::AckToken;
use crate::binary::NodeStr;
use crate::content::build::{BuildError, MessageRef, Quote};
use crate::content::{Content, Context, Wrappers};
use crate::jid::Jid;
use crate::persist::PendingKey;
use crate::signal::SignalError;

/// A decrypted incoming message: the content typed ([`content`](Self::content)), decoded
/// ([`message`](Self::message)) and as received ([`raw`](Self::raw)).
///
/// Every decrypted message that carries anything besides key distribution reaches the
/// application this way, whatever its kind, even one whose fields no schema knows
/// ([`Content::Unknown`]): nothing is acknowledged to the sender that the application did not
/// get.
///
/// When `ack` is set the server has not been told yet: handle the message durably, then give
/// the token to [`confirm`](crate::machine::ConnectionMachine::confirm); the delivery receipt
/// and the ack leave then, and the stored copy is forgotten. Until then the message is kept
/// in the store ([`Change::Pending`](crate::persist::Change::Pending)) and comes back after a
/// restart.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct IncomingMessage {
    /// The message id (the stanza's `id`), read as a `&str`. Ids of up to 24 bytes (those
    /// from the wire are about 20 to 32) are held inline, without an allocation.
    pub id: NodeStr,
    /// The chat: the other user for a 1:1 message (also for our own messages sent from
    /// another device), or the group.
    pub chat: Jid,
    /// The device that sent it, as the stanza names it (a phone number or a LID device).
    pub sender: Jid,
    /// The same device in the other namespace (LID for a phone number sender and back),
    /// when known (LID.md §2.1).
    pub sender_alt: Option<Jid>,
    /// Whether it was sent by another device of our own account.
    pub from_me: bool,
    /// The server's timestamp (unix seconds).
    pub timestamp: u64,
    /// The sender's display name, when the server gave one.
    pub push_name: Option<String>,
    /// The content (unwrapped from `deviceSentMessage` when it came from our own device), as
    /// decoded with the full upstream schema; fields the schema lacks are only in
    /// [`raw`](Self::raw).
    pub message: Message,
    /// The decrypted plaintext (padding removed) exactly as the sender encoded it, with the
    /// `deviceSentMessage` wrapper when it came from our own device.
    pub raw: Bytes,
    /// What the message is, wrappers peeled off.
    pub content: Content,
    /// The wrappers that were peeled off (ephemeral, view once, …).
    pub wrappers: Wrappers,
    /// Reply, mentions, forwarding and timer of the content.
    pub context: Option<Context>,
    /// The key of the stored copy ([`PendingMessage::id`](crate::persist::PendingMessage)).
    pub pending_key: PendingKey,
    /// The held confirmation.
    pub ack: Option<AckToken>,
}

impl IncomingMessage {
    /// The text of a text message (`conversation` or `extendedTextMessage.text`, inside any
    /// wrapper), or the caption of a media message.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Text { text, .. } => Some(&**text),
            Content::Media(m) => m.caption.as_deref(),
            _ => None,
        }
    }

    /// This message as the target of a reply, reaction, edit, revoke or vote: its chat, its
    /// id and its author (none when it is ours, from another of our devices).
    pub fn reference(&self) -> MessageRef {
        if self.from_me {
            MessageRef::ours(self.chat.clone(), self.id.as_str())
        } else {
            MessageRef::theirs(self.chat.clone(), self.id.as_str(), self.sender.clone())
        }
    }

    /// This message, to quote in a reply
    /// ([`send_reply`](crate::machine::ConnectionMachine::send_reply)).
    pub fn quote(&self) -> Quote {
        Quote::new(self.reference(), self.message.clone())
    }
}

impl fmt::Debug for IncomingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The content is the user's: it stays out of logs.
        f.debug_struct("IncomingMessage")
            .field("id", &self.id)
            .field("chat", &self.chat)
            .field("sender", &self.sender)
            .field("from_me", &self.from_me)
            .field("timestamp", &self.timestamp)
            .field("wrappers", &self.wrappers)
            .field("raw_len", &self.raw.len())
            .field("ack", &self.ack)
            .finish_non_exhaustive()
    }
}

/// A message that could not be decrypted. A retry receipt was sent when the protocol asks for
/// one (`retry_count` says which), and the stanza was acked.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UndecryptableMessage {
    /// The message id.
    pub id: String,
    /// The chat.
    pub chat: Jid,
    /// The sending device.
    pub sender: Jid,
    /// What went wrong.
    pub error: DecryptError,
    /// The count of the retry receipt sent for it, or `None` when no more are sent.
    pub retry_count: Option<u8>,
    /// The sender asked not to show a placeholder (`decrypt-fail="hide"`).
    pub hide: bool,
}

/// Why an incoming message did not decrypt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The Signal layer refused it (bad MAC, unknown session or sender key, …).
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// The plaintext padding is wrong.
    #[error("bad plaintext padding")]
    Padding,
    /// The plaintext is not a `Message` protobuf.
    #[error("plaintext is not a Message")]
    Protobuf,
    /// An `<enc>` of a type or version this client does not handle.
    #[error("unsupported enc type {0}")]
    Unsupported(String),
    /// The stanza has no usable sender.
    #[error("message without sender")]
    NoSender,
}

/// Why a send did not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessagingError {
    /// The recipient has no device to send to.
    #[error("the recipient has no devices")]
    NoDevices,
    /// The device list query failed.
    #[error("device list query failed: {0}")]
    DeviceList(String),
    /// The group metadata query failed (e.g. 404 unknown group, 403 not a member).
    #[error("group metadata query failed: {0}")]
    GroupMetadata(String),
    /// Encrypting failed.
    #[error("encryption failed: {0}")]
    Encrypt(SignalError),
    /// The machine could not relay it.
    #[error("relay refused: {0}")]
    Relay(String),
    /// The message cannot be encoded.
    #[error("message cannot be encoded")]
    Encode,
    /// A vote's poll has no known secret (never seen, or from before this store).
    #[error("the poll's secret is unknown")]
    PollSecretUnknown,
    /// The message cannot be built (e.g. a vote for an option the poll lacks).
    #[error(transparent)]
    Build(#[from] BuildError),
}
