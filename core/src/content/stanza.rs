//! The stanza attributes a sender derives from the content it sends (MESSAGES.md §2): the
//! `<message>`'s `type` and `edit`, the `<enc>`'s `mediatype` and `decrypt-fail`, and the
//! `<meta>` child.
//!
//! The rules follow whatsmeow (`getTypeFromMessage`, `getMediaTypeFromMessage`,
//! `getEditAttribute`, `prepareMessageNode`) where the implementations disagree, with two
//! recorded exceptions (docs/protocol-notes.md): revokes are never hidden, and a vote inside a
//! wrapper is still a vote. Where the attributes go is the sender's business
//! (`machine/messaging/send.rs`); this module only says what they are.

use amarula_proto::e2e::{self, Message};

use crate::binary::Node;

/// How deep wrappers are followed (the same bound as classification).
const MAX_DEPTH: u8 = 8;

/// The `<message type>` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    /// `text`: text, protocol messages (edits, revokes), locations and anything else.
    Text,
    /// `media`: any content with a media type.
    Media,
    /// `reaction`: a reaction or an encrypted reaction.
    Reaction,
    /// `poll`: a poll creation (`pollCreationMessage`, field 49) or a vote.
    Poll,
}

impl MessageType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Media => "media",
            Self::Reaction => "reaction",
            Self::Poll => "poll",
        }
    }
}

/// The `<message edit>` attribute (MESSAGES.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EditAttr {
    /// `1`: an edit of our own message.
    MessageEdit,
    /// `2`: a pin or unpin.
    PinInChat,
    /// `7`: the sender takes something back: a revoke of its own message, a reaction removal,
    /// an undone keep-in-chat.
    SenderRevoke,
    /// `8`: a group admin revokes someone else's message.
    AdminRevoke,
}

impl EditAttr {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageEdit => "1",
            Self::PinInChat => "2",
            Self::SenderRevoke => "7",
            Self::AdminRevoke => "8",
        }
    }
}

/// The `<meta>` child (MESSAGES.md §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Meta {
    /// `<meta polltype="creation"/>`.
    PollCreation,
    /// `<meta polltype="vote"/>`.
    PollVote,
}

impl Meta {
    /// The node.
    pub fn node(self) -> Node {
        let kind = match self {
            Self::PollCreation => "creation",
            Self::PollVote => "vote",
        };
        Node::new("meta").attr("polltype", kind)
    }
}

/// What the stanza of a message says about its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct StanzaAttrs {
    /// `<message type>`.
    pub message_type: MessageType,
    /// `<enc mediatype>`, on the encs that carry the content (not on a group's key
    /// distribution encs).
    pub media_type: Option<&'static str>,
    /// `<message edit>`.
    pub edit: Option<EditAttr>,
    /// `<enc decrypt-fail="hide">`: a receiver that cannot decrypt it shows no placeholder.
    pub hide: bool,
    /// The `<meta>` child.
    pub meta: Option<Meta>,
}

impl StanzaAttrs {
    /// The attributes of `message` as it is sent (wrappers included: they are looked through
    /// as whatsmeow does).
    pub fn of(message: &Message) -> Self {
        let content = peel(message);
        let media_type = media_type(content);
        let message_type = if content.reaction_message.is_some()
            || content.enc_reaction_message.is_some()
        {
            MessageType::Reaction
        } else if content.poll_creation_message.is_some() || content.poll_update_message.is_some() {
            MessageType::Poll
        } else if media_type.is_some() {
            MessageType::Media
        } else {
            MessageType::Text
        };
        let vote = content.poll_update_message.is_some();
        let edit = edit_attr(message, 0);
        // WM hides every edit, reaction and vote. A revoke is never hidden: the server drops
        // revoke stanzas that carry `decrypt-fail="hide"` (MESSAGES.md §2.4, WR #621/#656).
        let hide = !is_revoke(message, 0)
            && (edit.is_some() || message_type == MessageType::Reaction || vote);
        let meta = (message_type == MessageType::Poll).then_some(if vote {
            Meta::PollVote
        } else {
            Meta::PollCreation
        });
        Self {
            message_type,
            media_type,
            edit,
            hide,
            meta,
        }
    }
}

/// The content under the wrappers whatsmeow looks through for `type` and `mediatype`: view
/// once (all three), lottie sticker, ephemeral, document with caption.
fn peel(message: &Message) -> &Message {
    let mut m = message;
    for _ in 0..MAX_DEPTH {
        let inner = m
            .view_once_message
            .as_deref()
            .or(m.view_once_message_v2.as_deref())
            .or(m.view_once_message_v2_extension.as_deref())
            .or(m.lottie_sticker_message.as_deref())
            .or(m.ephemeral_message.as_deref())
            .or(m.document_with_caption_message.as_deref())
            .and_then(|w| w.message.as_deref());
        match inner {
            Some(next) => m = next,
            None => break,
        }
    }
    m
}

/// `getMediaTypeFromMessage`, on peeled content. Locations, live locations and video notes
/// have none in whatsmeow (MESSAGES.md §2.2).
fn media_type(m: &Message) -> Option<&'static str> {
    Some(
        if m.extended_text_message
            .as_deref()
            .is_some_and(|t| t.title.is_some())
        {
            "url"
        } else if m.image_message.is_some() {
            "image"
        } else if m.sticker_message.is_some() {
            "sticker"
        } else if m.document_message.is_some() {
            "document"
        } else if let Some(a) = m.audio_message.as_deref() {
            if a.ptt() { "ptt" } else { "audio" }
        } else if let Some(v) = m.video_message.as_deref() {
            if v.gif_playback() { "gif" } else { "video" }
        } else if m.contact_message.is_some() {
            "vcard"
        } else if m.contacts_array_message.is_some() {
            "contact_array"
        } else if m.list_message.is_some() {
            "list"
        } else if m.list_response_message.is_some() {
            "list_response"
        } else if m.buttons_response_message.is_some() {
            "buttons_response"
        } else if m.order_message.is_some() {
            "order"
        } else if m.product_message.is_some() {
            "product"
        } else if m.interactive_response_message.is_some() {
            "native_flow_response"
        } else {
            return None;
        },
    )
}

/// `getEditAttribute`: through `editedMessage` only.
fn edit_attr(m: &Message, depth: u8) -> Option<EditAttr> {
    use e2e::protocol_message::Type;
    if let Some(inner) = m
        .edited_message
        .as_deref()
        .and_then(|w| w.message.as_deref())
    {
        return if depth < MAX_DEPTH {
            edit_attr(inner, depth + 1)
        } else {
            None
        };
    }
    if let Some(p) = m.protocol_message.as_deref() {
        let key = p.key.as_ref()?;
        return match p.r#type.and_then(|t| Type::try_from(t).ok()) {
            Some(Type::Revoke) if key.from_me() => Some(EditAttr::SenderRevoke),
            Some(Type::Revoke) => Some(EditAttr::AdminRevoke),
            Some(Type::MessageEdit) if p.edited_message.is_some() => Some(EditAttr::MessageEdit),
            _ => None,
        };
    }
    if let Some(r) = &m.reaction_message {
        // An absent text reads as empty: a removal.
        return r
            .text
            .as_deref()
            .unwrap_or_default()
            .is_empty()
            .then_some(EditAttr::SenderRevoke);
    }
    if let Some(k) = &m.keep_in_chat_message {
        let undo = k.keep_type == Some(e2e::KeepType::UndoKeepForAll as i32);
        return (undo && k.key.as_ref().is_some_and(|k| k.from_me()))
            .then_some(EditAttr::SenderRevoke);
    }
    m.pin_in_chat_message.as_ref().map(|_| EditAttr::PinInChat)
}

/// Whether the content is a revoke (a `protocolMessage` of type REVOKE, bare or inside
/// `editedMessage`).
fn is_revoke(m: &Message, depth: u8) -> bool {
    if let Some(inner) = m
        .edited_message
        .as_deref()
        .and_then(|w| w.message.as_deref())
    {
        return depth < MAX_DEPTH && is_revoke(inner, depth + 1);
    }
    m.protocol_message
        .as_deref()
        .is_some_and(|p| p.r#type == Some(e2e::protocol_message::Type::Revoke as i32))
}

#[cfg(test)]
mod tests;
