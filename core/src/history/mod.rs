//! History sync: the chats, messages, push names, LID mappings and privacy tokens our phone
//! sends a newly linked device (and later on request).
//!
//! The phone announces each chunk with a `HISTORY_SYNC_NOTIFICATION` protocol message; the
//! chunk itself is an external blob (media type "WhatsApp History Keys") or, for the first
//! chunk of a bootstrap, inline in the notification. Either way its plaintext is a
//! zlib-deflated `HistorySync` protobuf. This module is pure: [`inflate`] (with a hard cap)
//! and [`decode`] turn those bytes into typed values; the machine
//! (`machine/history.rs`) fetches, hands out and acknowledges.

use std::io::Read;

use amarula_proto::e2e::Message;
use amarula_proto::generated::wa_web_protobufs_web::WebMessageInfo;
use amarula_proto::history_sync;
use bytes::Bytes;
use prost::Message as _;

use crate::content::{self, Content, Context, Wrappers};
use crate::jid::{Jid, Server};

#[cfg(test)]
mod tests;

/// Default cap on an inflated history chunk: 128 MiB (real chunks are a few MiB).
pub const DEFAULT_MAX_INFLATED: usize = 128 * 1024 * 1024;

/// Why a history chunk could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The inflated chunk is larger than the cap.
    #[error("inflated history chunk exceeds {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The zlib stream is broken.
    #[error("history chunk does not inflate: {0}")]
    Inflate(String),
    /// The protobuf does not decode.
    #[error("history chunk does not decode: {0}")]
    Decode(String),
}

/// Which kind of history a chunk carries (`HistorySync.syncType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncType {
    /// The first, recent part sent right after linking.
    InitialBootstrap,
    /// Status updates at linking (old form).
    InitialStatusV3,
    /// The full history, after the bootstrap, when asked for.
    Full,
    /// More recent history after the bootstrap.
    Recent,
    /// Push names of contacts.
    PushName,
    /// Other data (LID mappings, tokens, settings) that does not block the first use.
    NonBlockingData,
    /// An answer to [`request_history`](crate::machine::ConnectionMachine::request_history).
    OnDemand,
    /// A type this schema does not know.
    Unknown(i32),
}

impl SyncType {
    /// From the wire value.
    #[must_use]
    pub fn from_i32(v: i32) -> Self {
        use history_sync::history_sync::HistorySyncType as T;
        match T::try_from(v) {
            Ok(T::InitialBootstrap) => Self::InitialBootstrap,
            Ok(T::InitialStatusV3) => Self::InitialStatusV3,
            Ok(T::Full) => Self::Full,
            Ok(T::Recent) => Self::Recent,
            Ok(T::PushName) => Self::PushName,
            Ok(T::NonBlockingData) => Self::NonBlockingData,
            Ok(T::OnDemand) => Self::OnDemand,
            Err(_) => Self::Unknown(v),
        }
    }

    /// The wire value.
    #[must_use]
    pub fn to_i32(self) -> i32 {
        use history_sync::history_sync::HistorySyncType as T;
        match self {
            Self::InitialBootstrap => T::InitialBootstrap as i32,
            Self::InitialStatusV3 => T::InitialStatusV3 as i32,
            Self::Full => T::Full as i32,
            Self::Recent => T::Recent as i32,
            Self::PushName => T::PushName as i32,
            Self::NonBlockingData => T::NonBlockingData as i32,
            Self::OnDemand => T::OnDemand as i32,
            Self::Unknown(v) => v,
        }
    }
}

/// A chat as the phone describes it.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct HistoryConversation {
    /// The chat (user, LID or group JID).
    pub id: Option<Jid>,
    /// The chat id as sent, also when it does not parse as a JID.
    pub raw_id: String,
    /// The chat's name (groups) or display name.
    pub name: Option<String>,
    /// Unread messages.
    pub unread_count: Option<u32>,
    /// Marked as unread by the user.
    pub marked_as_unread: bool,
    /// Archived.
    pub archived: bool,
    /// Pinned, with the pin's timestamp (seconds); `None`: not pinned.
    pub pinned: Option<u32>,
    /// Muted until this time (unix milliseconds); `None`: not muted.
    pub mute_end_ms: Option<u64>,
    /// The disappearing-messages timer in seconds, when set.
    pub ephemeral_expiration: Option<u32>,
    /// When the last message arrived (unix seconds).
    pub last_message_timestamp: Option<u64>,
    /// The phone number JID of a LID chat, when the phone gave it.
    pub pn_jid: Option<Jid>,
    /// The LID JID of a phone number chat, when the phone gave it.
    pub lid_jid: Option<Jid>,
    /// The phone has no older messages of this chat to send.
    pub end_of_history: bool,
    /// The messages of this chat in the chunk (the phone sends them newest first).
    pub messages: Vec<HistoryMessage>,
}

/// One message from history: typed like a live message, marked by where it came from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryMessage {
    /// The message id.
    pub id: String,
    /// The chat.
    pub chat: Jid,
    /// The sender (the chat itself in a one-to-one chat with someone else, us when
    /// `from_me`).
    pub sender: Jid,
    /// Sent by us (any of our devices).
    pub from_me: bool,
    /// When it was sent (unix seconds; 0 when the phone did not say).
    pub timestamp: u64,
    /// The sender's push name, when given.
    pub push_name: Option<String>,
    /// The delivery status (`WebMessageInfo.status`), when given.
    pub status: Option<i32>,
    /// A system message's stub type (`WebMessageInfo.messageStubType`), when it is one.
    pub stub_type: Option<i32>,
    /// The message's order in its chat, when given.
    pub order_id: Option<u64>,
    /// What it is ([`Content::Unknown`] for a system message without content).
    pub content: Content,
    /// The wrappers peeled off.
    pub wrappers: Wrappers,
    /// Reply, mentions, forwarding.
    pub context: Option<Context>,
    /// The decoded content message, when there is one.
    pub message: Option<Box<Message>>,
    /// The `WebMessageInfo` as the phone encoded it (fields no schema knows survive).
    pub raw: Bytes,
}

/// A contact's push name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushName {
    /// The contact.
    pub jid: Jid,
    /// The name they set.
    pub name: String,
}

/// A LID user and the phone number user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LidPn {
    /// The LID user.
    pub lid: Jid,
    /// The phone number user.
    pub phone: Jid,
}

/// A trusted-contact privacy token the phone holds for a chat (`Conversation.tcToken`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrivacyToken {
    /// The chat it is for.
    pub jid: Jid,
    /// The token.
    pub token: Bytes,
    /// When it was issued (unix seconds), when given.
    pub timestamp: Option<u64>,
    /// When we last sent ours to them (unix seconds), when given.
    pub sender_timestamp: Option<u64>,
}

impl std::fmt::Debug for PrivacyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivacyToken")
            .field("jid", &self.jid)
            .field("token_len", &self.token.len())
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// One decoded history chunk.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryChunk {
    /// Which history.
    pub sync_type: SyncType,
    /// The chunk's place in its sync (from 0 or 1 as the phone counts), when given.
    pub chunk_order: Option<u32>,
    /// How far the sync is, in percent, when given.
    pub progress: Option<u32>,
    /// The chats with their messages.
    pub conversations: Vec<HistoryConversation>,
    /// Contacts' push names.
    pub push_names: Vec<PushName>,
    /// LID to phone number mappings (from `phoneNumberToLidMappings` and the conversations'
    /// own `lidJID`/`pnJID` pairs), without duplicates.
    pub lid_mappings: Vec<LidPn>,
    /// Privacy tokens of the chats.
    pub tokens: Vec<PrivacyToken>,
    /// Messages that did not carry the fields a message needs (key, chat) and were skipped.
    pub skipped_messages: usize,
}

impl HistoryChunk {
    /// How many messages the chunk holds.
    #[must_use]
    pub fn message_count(&self) -> usize {
        self.conversations.iter().map(|c| c.messages.len()).sum()
    }
}

/// Inflates a zlib stream, refusing more than `max` bytes of output.
///
/// # Errors
/// [`HistoryError::TooLarge`] past the cap, [`HistoryError::Inflate`] on a broken stream.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, HistoryError> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(max).min(1 << 20));
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::ZlibDecoder::new(compressed)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| HistoryError::Inflate(e.to_string()))?;
    if out.len() > max {
        return Err(HistoryError::TooLarge { limit: max });
    }
    Ok(out)
}

/// Deflates a `HistorySync` protobuf the way the phone does (for simulators and tests).
#[must_use]
pub fn deflate(plain: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(plain);
    z.finish().unwrap_or_default()
}

/// Inflates (at most `max` bytes) and decodes a history chunk; `own` are our own users
/// (phone number and LID), which make a message "from me".
///
/// The chunk is read in two levels: the outer `HistorySync` and each `Conversation` with their
/// messages left as bytes (the generated `WebMessageInfo` is 16 KiB in memory, so decoding a
/// whole chunk of them at once would take gigabytes), then each message on its own. A
/// message's `raw` bytes are a slice of the inflated chunk, not a copy.
///
/// # Errors
/// See [`inflate`]; [`HistoryError::Decode`] when the protobuf does not decode.
pub fn decode(compressed: &[u8], own: &[Jid], max: usize) -> Result<HistoryChunk, HistoryError> {
    let plain = Bytes::from(inflate(compressed, max)?);
    let sync = wire::Sync::decode(plain).map_err(|e| HistoryError::Decode(e.to_string()))?;
    let mut chunk = HistoryChunk {
        sync_type: SyncType::from_i32(sync.sync_type.unwrap_or(0)),
        chunk_order: sync.chunk_order,
        progress: sync.progress,
        conversations: Vec::with_capacity(sync.conversations.len()),
        push_names: Vec::with_capacity(sync.pushnames.len()),
        lid_mappings: Vec::new(),
        tokens: Vec::new(),
        skipped_messages: 0,
    };
    let mut seen = std::collections::HashSet::new();
    let mut add_mapping = |chunk: &mut HistoryChunk, lid: Option<Jid>, pn: Option<Jid>| {
        if let (Some(lid), Some(phone)) = (lid, pn) {
            if is_lid(&lid) && !is_lid(&phone) && !phone.is_group() {
                let m = LidPn {
                    lid: user(&lid),
                    phone: user(&phone),
                };
                if seen.insert(m.clone()) {
                    chunk.lid_mappings.push(m);
                }
            }
        }
    };
    for m in sync.phone_number_to_lid_mappings {
        let m = history_sync::PhoneNumberToLidMapping::decode(m)
            .map_err(|e| HistoryError::Decode(e.to_string()))?;
        add_mapping(
            &mut chunk,
            jid(m.lid_jid.as_deref()),
            jid(m.pn_jid.as_deref()),
        );
    }
    for p in sync.pushnames {
        let p =
            history_sync::Pushname::decode(p).map_err(|e| HistoryError::Decode(e.to_string()))?;
        if let (Some(j), Some(name)) = (jid(p.id.as_deref()), p.pushname) {
            chunk.push_names.push(PushName { jid: j, name });
        }
    }
    for c in sync.conversations {
        let c = wire::Conversation::decode(c).map_err(|e| HistoryError::Decode(e.to_string()))?;
        let id = jid(Some(&c.id));
        let lid_jid = jid(c.lid_jid.as_deref());
        let pn_jid = jid(c.pn_jid.as_deref());
        match &id {
            Some(i) if is_lid(i) => add_mapping(&mut chunk, Some(i.clone()), pn_jid.clone()),
            Some(i) if !i.is_group() => add_mapping(&mut chunk, lid_jid.clone(), Some(i.clone())),
            _ => {}
        }
        if let (Some(i), Some(token)) = (&id, c.tc_token.clone()) {
            if !token.is_empty() {
                chunk.tokens.push(PrivacyToken {
                    jid: user(i),
                    token,
                    timestamp: c.tc_token_timestamp,
                    sender_timestamp: c.tc_token_sender_timestamp,
                });
            }
        }
        let mut conv = HistoryConversation {
            raw_id: c.id.clone(),
            name: c.name.clone().or_else(|| c.display_name.clone()),
            unread_count: c.unread_count,
            marked_as_unread: c.marked_as_unread.unwrap_or(false),
            archived: c.archived.unwrap_or(false),
            pinned: c.pinned.filter(|p| *p != 0),
            mute_end_ms: c.mute_end_time.filter(|t| *t != 0),
            ephemeral_expiration: c.ephemeral_expiration.filter(|e| *e != 0),
            last_message_timestamp: c.last_msg_timestamp.or(c.conversation_timestamp),
            pn_jid,
            lid_jid,
            end_of_history: c.end_of_history_transfer.unwrap_or(false),
            messages: Vec::with_capacity(c.messages.len()),
            id,
        };
        for hm in c.messages {
            let parsed = wire::Msg::decode(hm)
                .ok()
                .and_then(|hm| Some((hm.msg_order_id, hm.message?)))
                .and_then(|(order, raw)| message(raw, conv.id.as_ref(), order, own));
            match parsed {
                Some(m) => conv.messages.push(m),
                None => chunk.skipped_messages += 1,
            }
        }
        chunk.conversations.push(conv);
    }
    Ok(chunk)
}

/// The outer levels of the history schema with the parts read later left as bytes (same
/// field numbers as `WAWebProtobufsHistorySync.proto`).
mod wire {
    use bytes::Bytes;

    /// `HistorySync`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Sync {
        #[prost(int32, optional, tag = "1")]
        pub(super) sync_type: Option<i32>,
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub(super) conversations: Vec<Bytes>,
        #[prost(uint32, optional, tag = "5")]
        pub(super) chunk_order: Option<u32>,
        #[prost(uint32, optional, tag = "6")]
        pub(super) progress: Option<u32>,
        #[prost(bytes = "bytes", repeated, tag = "7")]
        pub(super) pushnames: Vec<Bytes>,
        #[prost(bytes = "bytes", repeated, tag = "15")]
        pub(super) phone_number_to_lid_mappings: Vec<Bytes>,
    }

    /// `Conversation`, the fields we read.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Conversation {
        #[prost(string, tag = "1")]
        pub(super) id: String,
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub(super) messages: Vec<Bytes>,
        #[prost(uint64, optional, tag = "5")]
        pub(super) last_msg_timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "6")]
        pub(super) unread_count: Option<u32>,
        #[prost(bool, optional, tag = "8")]
        pub(super) end_of_history_transfer: Option<bool>,
        #[prost(uint32, optional, tag = "9")]
        pub(super) ephemeral_expiration: Option<u32>,
        #[prost(uint64, optional, tag = "12")]
        pub(super) conversation_timestamp: Option<u64>,
        #[prost(string, optional, tag = "13")]
        pub(super) name: Option<String>,
        #[prost(bool, optional, tag = "16")]
        pub(super) archived: Option<bool>,
        #[prost(bool, optional, tag = "19")]
        pub(super) marked_as_unread: Option<bool>,
        #[prost(bytes = "bytes", optional, tag = "21")]
        pub(super) tc_token: Option<Bytes>,
        #[prost(uint64, optional, tag = "22")]
        pub(super) tc_token_timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "24")]
        pub(super) pinned: Option<u32>,
        #[prost(uint64, optional, tag = "25")]
        pub(super) mute_end_time: Option<u64>,
        #[prost(uint64, optional, tag = "28")]
        pub(super) tc_token_sender_timestamp: Option<u64>,
        #[prost(string, optional, tag = "38")]
        pub(super) display_name: Option<String>,
        #[prost(string, optional, tag = "39")]
        pub(super) pn_jid: Option<String>,
        #[prost(string, optional, tag = "42")]
        pub(super) lid_jid: Option<String>,
    }

    /// `HistorySyncMsg`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Msg {
        #[prost(bytes = "bytes", optional, tag = "1")]
        pub(super) message: Option<Bytes>,
        #[prost(uint64, optional, tag = "2")]
        pub(super) msg_order_id: Option<u64>,
    }
}

fn jid(s: Option<&str>) -> Option<Jid> {
    s.filter(|s| !s.is_empty()).and_then(|s| s.parse().ok())
}

fn is_lid(j: &Jid) -> bool {
    matches!(j.server_part(), Server::Lid | Server::HostedLid)
}

fn user(j: &Jid) -> Jid {
    j.to_non_device()
}

/// One serialized `WebMessageInfo` (a placeholder resend answer carries them) as a
/// [`HistoryMessage`]; `None` when it does not decode or lacks an id or a chat.
#[must_use]
pub fn web_message(bytes: &[u8], own: &[Jid]) -> Option<HistoryMessage> {
    message(Bytes::copy_from_slice(bytes), None, None, own)
}

/// One `WebMessageInfo` as a [`HistoryMessage`]; `None` without an id or a chat.
fn message(
    raw: Bytes,
    conv: Option<&Jid>,
    order_id: Option<u64>,
    own: &[Jid],
) -> Option<HistoryMessage> {
    // Boxed: the generated type is 16 KiB.
    let mut info = Box::new(WebMessageInfo::decode(raw.clone()).ok()?);
    let key = &info.key;
    let id = key.id.clone().filter(|i| !i.is_empty())?;
    let chat = jid(key.remote_jid.as_deref()).or_else(|| conv.cloned())?;
    let chat = chat.to_non_device();
    let from_me = key.from_me.unwrap_or(false);
    let participant = jid(key.participant.as_deref()).or_else(|| jid(info.participant.as_deref()));
    let sender = if from_me {
        own.first().cloned().unwrap_or_else(|| chat.clone())
    } else {
        participant.unwrap_or_else(|| chat.clone())
    };
    let message = info.message.take();
    let (content, wrappers, context) = match &message {
        Some(m) => {
            let c = content::classify(
                m,
                &content::Origin {
                    chat: &chat,
                    sender: &sender,
                    own,
                },
            );
            (c.content, c.wrappers, c.context)
        }
        None => (Content::Unknown, Wrappers::default(), None),
    };
    Some(HistoryMessage {
        id,
        chat,
        sender,
        from_me,
        timestamp: info.message_timestamp.unwrap_or(0),
        push_name: info.push_name.take(),
        status: info.status,
        stub_type: info.message_stub_type.filter(|s| *s != 0),
        order_id,
        content,
        wrappers,
        context,
        message: message.map(Box::new),
        raw,
    })
}
