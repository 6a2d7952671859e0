//! Building the messages of each kind (MESSAGES.md §4), pure: the caller gives everything,
//! time and randomness included. The machine's send commands
//! ([`send_reaction`](crate::machine::ConnectionMachine::send_reaction) and the others) use
//! these with its clock and seeded generator; an application may use them to build a
//! `Message` for [`send_message`](crate::machine::ConnectionMachine::send_message).
//!
//! Messages refer to earlier messages by a [`MessageRef`]: the chat, the id and the author
//! (none for our own messages). [`IncomingMessage::reference`] gives one for a received
//! message.
//!
//! [`IncomingMessage::reference`]: crate::machine::IncomingMessage::reference

use amarula_proto::common::MessageKey;
use amarula_proto::e2e::{self, Message};
use bytes::Bytes;

use super::{Contact, Location, UseCase, option_hash, unwrap};
use crate::jid::{Jid, Server};

/// Why a message cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A poll needs at least one option.
    #[error("a poll needs options")]
    NoOptions,
    /// Two options of a poll have the same name (votes name options by the hash of the name).
    #[error("poll option {0:?} given twice")]
    DuplicateOption(String),
    /// More selectable options than the poll has.
    #[error("{count} selectable options out of {options}")]
    SelectableCount {
        /// The count asked for.
        count: u32,
        /// The number of options.
        options: usize,
    },
    /// Only our own messages can be edited.
    #[error("only our own messages can be edited")]
    NotOurs,
    /// Someone else's message can be revoked only in a group (by an admin).
    #[error("someone else's message can be revoked only in a group")]
    AdminRevokeOutsideGroup,
    /// A vote names an option the poll does not have.
    #[error("the poll has no option {0:?}")]
    UnknownOption(String),
}

/// A message an outgoing message refers to: the one replied to, reacted to, edited, revoked
/// or voted on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MessageRef {
    /// The chat it is in (a user or a group).
    pub chat: Jid,
    /// Its id.
    pub id: String,
    /// Its author (a user JID), or `None` for our own message (sent from any of our devices).
    pub author: Option<Jid>,
}

impl MessageRef {
    /// One of our own messages in `chat`.
    pub fn ours(chat: Jid, id: impl Into<String>) -> Self {
        Self {
            chat: chat.to_non_device(),
            id: id.into(),
            author: None,
        }
    }

    /// A message `author` wrote in `chat`.
    pub fn theirs(chat: Jid, id: impl Into<String>, author: Jid) -> Self {
        Self {
            chat: chat.to_non_device(),
            id: id.into(),
            author: Some(author.to_non_device()),
        }
    }

    /// Whether the message is ours: no author, or an author that is one of `own` (our phone
    /// number and LID users).
    pub fn is_ours(&self, own: &[Jid]) -> bool {
        self.author.as_ref().is_none_or(|a| {
            let a = a.to_non_device();
            own.iter().any(|o| o.to_non_device() == a)
        })
    }

    /// The author, `own` standing for our own messages.
    pub fn author_or(&self, own: &Jid) -> Jid {
        self.author.clone().unwrap_or_else(|| own.to_non_device())
    }

    /// The `MessageKey` naming it, from our point of view (MESSAGES.md §4.5, whatsmeow
    /// `BuildMessageKey`): the chat, whether it is ours, the id, and in a group the author
    /// of someone else's message. `own` are our own users.
    pub fn key(&self, own: &[Jid]) -> MessageKey {
        let from_me = self.is_ours(own);
        let in_chat_of_two = matches!(self.chat.server_part(), Server::User | Server::Lid);
        MessageKey {
            remote_jid: Some(self.chat.to_string()),
            from_me: Some(from_me),
            id: Some(self.id.clone()),
            participant: match &self.author {
                Some(a) if !from_me && !in_chat_of_two => Some(a.to_non_device().to_string()),
                _ => None,
            },
        }
    }
}

/// A message to quote in a reply: which one, and its content.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Quote {
    /// The quoted message.
    pub target: MessageRef,
    /// Its content, as received or sent (wrappers and its own context are stripped when
    /// quoting).
    pub message: Message,
}

impl Quote {
    /// Quotes `message`, the content of `target`.
    pub fn new(target: MessageRef, message: Message) -> Self {
        Self { target, message }
    }
}

/// A text message, with an optional reply and mentions.
///
/// ```
/// use amarula_core::content::build::{MessageRef, Quote, Text};
/// use amarula_core::jid::Jid;
///
/// let chat: Jid = "15550001111@s.whatsapp.net".parse()?;
/// let me: Jid = "15550002222@s.whatsapp.net".parse()?;
/// let quoted = Quote::new(
///     MessageRef::theirs(chat.clone(), "3EB0AA", chat.clone()),
///     Text::new("lunch?").to_message(&chat, &me),
/// );
/// let text = Text::new("yes @15550003333")
///     .reply_to(quoted)
///     .mention("15550003333@s.whatsapp.net".parse()?);
/// let message = text.to_message(&chat, &me);
/// let context = message.extended_text_message.unwrap().context_info.unwrap();
/// assert_eq!(context.stanza_id.as_deref(), Some("3EB0AA"));
/// assert_eq!(context.mentioned_jid, ["15550003333@s.whatsapp.net"]);
/// # Ok::<(), amarula_core::jid::JidParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Text {
    /// The text.
    pub text: String,
    /// The message replied to.
    pub quote: Option<Quote>,
    /// Users mentioned (the text should contain `@` and their user part).
    pub mentions: Vec<Jid>,
}

impl Text {
    /// Plain text.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Makes it a reply to `quote`.
    #[must_use]
    pub fn reply_to(mut self, quote: Quote) -> Self {
        self.quote = Some(quote);
        self
    }

    /// Mentions `user`.
    #[must_use]
    pub fn mention(mut self, user: Jid) -> Self {
        self.mentions.push(user.to_non_device());
        self
    }

    /// The message to send to `chat`; `own` is our own user, the author of a quoted message
    /// of ours. Plain text is a `conversation`; a reply or mentions make it an
    /// `extendedTextMessage` with a `contextInfo` (MESSAGES.md §4.1).
    pub fn to_message(&self, chat: &Jid, own: &Jid) -> Message {
        if self.quote.is_none() && self.mentions.is_empty() {
            return Message {
                conversation: Some(self.text.clone()),
                ..Message::default()
            };
        }
        let mut context = e2e::ContextInfo {
            mentioned_jid: self.mentions.iter().map(ToString::to_string).collect(),
            ..e2e::ContextInfo::default()
        };
        if let Some(q) = &self.quote {
            context.stanza_id = Some(q.target.id.clone());
            // The author is named in chats of two too, our own JID when we quote ourselves.
            context.participant = Some(q.target.author_or(own).to_string());
            context.quoted_message = Some(Box::new(quoted(&q.message)));
            if q.target.chat != chat.to_non_device() {
                context.remote_jid = Some(q.target.chat.to_string());
            }
        }
        Message {
            extended_text_message: Some(Box::new(e2e::ExtendedTextMessage {
                text: Some(self.text.clone()),
                context_info: Some(Box::new(context)),
                ..e2e::ExtendedTextMessage::default()
            })),
            ..Message::default()
        }
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<&String> for Text {
    fn from(text: &String) -> Self {
        Self::new(text.as_str())
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

/// Clears the `contextInfo` of whichever content fields are present.
macro_rules! clear_context {
    ($m:expr, $($field:ident),* $(,)?) => {
        $(if let Some(c) = $m.$field.as_deref_mut() { c.context_info = None; })*
    };
}

/// The quoted copy of a message: the content without its wrappers, its own reply and
/// mentions, its message secret and any key distribution.
pub fn quoted(message: &Message) -> Message {
    let mut m = unwrap(message).0.clone();
    m.message_context_info = None;
    m.sender_key_distribution_message = None;
    m.fast_ratchet_key_sender_key_distribution_message = None;
    m.device_sent_message = None;
    clear_context!(
        m,
        extended_text_message,
        image_message,
        video_message,
        ptv_message,
        audio_message,
        document_message,
        sticker_message,
        contact_message,
        contacts_array_message,
        location_message,
        live_location_message,
        poll_creation_message,
        poll_creation_message_v2,
        poll_creation_message_v3,
        poll_creation_message_v5,
        poll_creation_message_v6,
        group_invite_message,
    );
    m
}

/// A reaction to `key` with `emoji`; an empty `emoji` removes our reaction (MESSAGES.md
/// §4.5). `timestamp_ms` is our clock in unix milliseconds.
pub fn reaction(key: MessageKey, emoji: &str, timestamp_ms: i64) -> Message {
    Message {
        reaction_message: Some(e2e::ReactionMessage {
            key: Some(key),
            text: Some(emoji.to_owned()),
            grouping_key: None,
            sender_timestamp_ms: Some(timestamp_ms),
        }),
        ..Message::default()
    }
}

/// An edit of our message `key` to `content` (MESSAGES.md §4.7): a `MESSAGE_EDIT` protocol
/// message inside `editedMessage`, as whatsmeow sends it. Send it with a fresh id.
pub fn edit(key: MessageKey, content: Message, timestamp_ms: i64) -> Message {
    let protocol = Message {
        protocol_message: Some(Box::new(e2e::ProtocolMessage {
            key: Some(key),
            r#type: Some(e2e::protocol_message::Type::MessageEdit as i32),
            edited_message: Some(Box::new(content)),
            timestamp_ms: Some(timestamp_ms),
            ..e2e::ProtocolMessage::default()
        })),
        ..Message::default()
    };
    Message {
        edited_message: Some(Box::new(e2e::FutureProofMessage {
            message: Some(Box::new(protocol)),
        })),
        ..Message::default()
    }
}

/// A deletion for everyone of `key` (MESSAGES.md §4.8): ours when `key.fromMe`, else an admin
/// revoke (groups only; the key names the author).
pub fn revoke(key: MessageKey) -> Message {
    Message {
        protocol_message: Some(Box::new(e2e::ProtocolMessage {
            key: Some(key),
            r#type: Some(e2e::protocol_message::Type::Revoke as i32),
            ..e2e::ProtocolMessage::default()
        })),
        ..Message::default()
    }
}

/// A new poll (MESSAGES.md §4.6): `pollCreationMessage` (field 49, as whatsmeow always sends)
/// with the option names, how many a voter may pick (0: any number), and `secret` as its
/// `messageSecret`, the key of its votes.
pub fn poll(
    name: &str,
    options: &[String],
    selectable: u32,
    secret: [u8; 32],
) -> Result<Message, BuildError> {
    if options.is_empty() {
        return Err(BuildError::NoOptions);
    }
    for (i, o) in options.iter().enumerate() {
        if options[..i].contains(o) {
            return Err(BuildError::DuplicateOption(o.clone()));
        }
    }
    if usize::try_from(selectable).map_or(true, |s| s > options.len()) {
        return Err(BuildError::SelectableCount {
            count: selectable,
            options: options.len(),
        });
    }
    Ok(Message {
        poll_creation_message: Some(Box::new(e2e::PollCreationMessage {
            name: Some(name.to_owned()),
            options: options
                .iter()
                .map(|o| e2e::poll_creation_message::Option {
                    option_name: Some(o.clone()),
                    option_hash: None,
                })
                .collect(),
            selectable_options_count: Some(selectable),
            ..e2e::PollCreationMessage::default()
        })),
        message_context_info: Some(e2e::MessageContextInfo {
            message_secret: Some(Bytes::copy_from_slice(&secret)),
            ..e2e::MessageContextInfo::default()
        }),
        ..Message::default()
    })
}

/// What a vote needs besides the selection: the poll (its key as we name it, its id, its
/// author), its secret, and who votes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VoteKeys<'a> {
    /// The poll's key.
    pub key: MessageKey,
    /// The poll's id.
    pub poll_id: &'a str,
    /// The poll's author (a user JID).
    pub creator: &'a Jid,
    /// The voter: our own user.
    pub voter: &'a Jid,
    /// The poll's message secret.
    pub secret: &'a [u8],
}

impl<'a> VoteKeys<'a> {
    /// The keys of a vote by `voter` on the poll `key` / `poll_id` by `creator`.
    pub fn new(
        key: MessageKey,
        poll_id: &'a str,
        creator: &'a Jid,
        voter: &'a Jid,
        secret: &'a [u8],
    ) -> Self {
        Self {
            key,
            poll_id,
            creator,
            voter,
            secret,
        }
    }
}

/// A vote selecting `selected` (option names; empty withdraws the vote), encrypted with the
/// poll's secret (MESSAGES.md §4.6, §5): the whole current selection, as hashes. `iv` is 12
/// random bytes. When `options` (the poll's option names) is not empty, every selected name
/// must be one of them.
pub fn poll_vote(
    keys: &VoteKeys<'_>,
    options: &[String],
    selected: &[String],
    iv: [u8; 12],
    timestamp_ms: i64,
) -> Result<Message, BuildError> {
    if let Some(unknown) = selected
        .iter()
        .find(|s| !options.is_empty() && !options.contains(s))
    {
        return Err(BuildError::UnknownOption(unknown.clone()));
    }
    let vote = e2e::PollVoteMessage {
        selected_options: selected
            .iter()
            .map(|s| Bytes::copy_from_slice(&option_hash(s)))
            .collect(),
    };
    let payload = super::encrypt_addon(
        keys.secret,
        keys.poll_id,
        keys.creator,
        keys.voter,
        UseCase::PollVote,
        &iv,
        &prost::Message::encode_to_vec(&vote),
    );
    Ok(Message {
        poll_update_message: Some(e2e::PollUpdateMessage {
            poll_creation_message_key: Some(keys.key.clone()),
            vote: Some(e2e::PollEncValue {
                enc_payload: Some(payload.into()),
                enc_iv: Some(Bytes::copy_from_slice(&iv)),
            }),
            metadata: None,
            sender_timestamp_ms: Some(timestamp_ms),
        }),
        ..Message::default()
    })
}

fn contact_proto(c: &Contact) -> e2e::ContactMessage {
    e2e::ContactMessage {
        display_name: c.display_name.clone(),
        vcard: c.vcard.clone(),
        ..e2e::ContactMessage::default()
    }
}

/// One contact card (MESSAGES.md §4.3).
pub fn contact(card: &Contact) -> Message {
    Message {
        contact_message: Some(Box::new(contact_proto(card))),
        ..Message::default()
    }
}

/// Several contact cards under one name (MESSAGES.md §4.3).
pub fn contacts(display_name: &str, cards: &[Contact]) -> Message {
    Message {
        contacts_array_message: Some(Box::new(e2e::ContactsArrayMessage {
            display_name: Some(display_name.to_owned()),
            contacts: cards.iter().map(contact_proto).collect(),
            context_info: None,
        })),
        ..Message::default()
    }
}

/// A location pin (MESSAGES.md §4.4).
pub fn location(place: &Location) -> Message {
    Message {
        location_message: Some(Box::new(e2e::LocationMessage {
            degrees_latitude: Some(place.latitude),
            degrees_longitude: Some(place.longitude),
            name: place.name.clone(),
            address: place.address.clone(),
            url: place.url.clone(),
            comment: place.comment.clone(),
            accuracy_in_meters: place.accuracy_m,
            ..e2e::LocationMessage::default()
        })),
        ..Message::default()
    }
}

/// A vCard 3.0 for `name` with the WhatsApp number `phone` (international digits), with the
/// `waid` parameter WhatsApp uses to link the card to the account (MESSAGES.md §4.3).
pub fn vcard(name: &str, phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    // vCard text values escape `\`, `,`, `;` and line breaks (RFC 2426 §4).
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\\' | ',' | ';' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\n' => escaped.push_str("\\n"),
            '\r' => {}
            c => escaped.push(c),
        }
    }
    format!(
        "BEGIN:VCARD\nVERSION:3.0\nFN:{escaped}\nTEL;type=CELL;type=VOICE;waid={digits}:+{digits}\nEND:VCARD"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().expect("test JID")
    }

    fn own() -> Vec<Jid> {
        vec![jid("111@s.whatsapp.net"), jid("9111@lid")]
    }

    #[test]
    fn keys_name_the_author_only_for_others_in_groups() {
        let dm = jid("222@s.whatsapp.net");
        let group = jid("120363000000000001@g.us");
        let k = MessageRef::ours(dm.clone(), "A").key(&own());
        assert_eq!(k.remote_jid.as_deref(), Some("222@s.whatsapp.net"));
        assert_eq!((k.from_me(), k.participant), (true, None));
        let k = MessageRef::theirs(dm, "A", jid("222:3@s.whatsapp.net")).key(&own());
        assert_eq!((k.from_me(), k.participant), (false, None));
        let k = MessageRef::theirs(group.clone(), "B", jid("333:2@s.whatsapp.net")).key(&own());
        assert!(!k.from_me());
        assert_eq!(k.participant.as_deref(), Some("333@s.whatsapp.net"));
        // Our LID as the author is still us.
        let k = MessageRef::theirs(group, "C", jid("9111@lid")).key(&own());
        assert_eq!((k.from_me(), k.participant), (true, None));
    }

    #[test]
    fn a_quote_is_stripped_of_wrappers_context_and_secret() {
        let inner = Message {
            extended_text_message: Some(Box::new(e2e::ExtendedTextMessage {
                text: Some("first".into()),
                context_info: Some(Box::new(e2e::ContextInfo {
                    stanza_id: Some("OLDER".into()),
                    ..e2e::ContextInfo::default()
                })),
                ..e2e::ExtendedTextMessage::default()
            })),
            ..Message::default()
        };
        let wrapped = Message {
            ephemeral_message: Some(Box::new(e2e::FutureProofMessage {
                message: Some(Box::new(inner)),
            })),
            message_context_info: Some(e2e::MessageContextInfo {
                message_secret: Some(vec![1; 32].into()),
                ..e2e::MessageContextInfo::default()
            }),
            ..Message::default()
        };
        let q = quoted(&wrapped);
        let t = q.extended_text_message.expect("the content");
        assert_eq!(t.text.as_deref(), Some("first"));
        assert!(t.context_info.is_none());
        assert!(q.message_context_info.is_none() && q.ephemeral_message.is_none());
    }

    #[test]
    fn a_reply_names_the_quoted_message_and_its_author() {
        let chat = jid("222@s.whatsapp.net");
        let me = jid("111@s.whatsapp.net");
        let ours = Quote::new(
            MessageRef::ours(chat.clone(), "MINE"),
            Text::new("q").to_message(&chat, &me),
        );
        let m = Text::new("a").reply_to(ours).to_message(&chat, &me);
        let c = m.extended_text_message.unwrap().context_info.unwrap();
        assert_eq!(c.stanza_id.as_deref(), Some("MINE"));
        assert_eq!(c.participant.as_deref(), Some("111@s.whatsapp.net"));
        assert_eq!(c.remote_jid, None);
        assert_eq!(c.quoted_message.unwrap().conversation.as_deref(), Some("q"));
        // Quoting a message of another chat names that chat.
        let other = Quote::new(
            MessageRef::theirs(jid("333@s.whatsapp.net"), "X", jid("333@s.whatsapp.net")),
            Message::default(),
        );
        let m = Text::new("b").reply_to(other).to_message(&chat, &me);
        let c = m.extended_text_message.unwrap().context_info.unwrap();
        assert_eq!(c.remote_jid.as_deref(), Some("333@s.whatsapp.net"));
        assert_eq!(
            Text::new("plain")
                .to_message(&chat, &me)
                .conversation
                .as_deref(),
            Some("plain")
        );
    }

    #[test]
    fn polls_are_checked() {
        let o = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(poll("q", &[], 0, [0; 32]), Err(BuildError::NoOptions));
        assert_eq!(
            poll("q", &o(&["a", "a"]), 0, [0; 32]),
            Err(BuildError::DuplicateOption("a".into()))
        );
        assert!(matches!(
            poll("q", &o(&["a", "b"]), 3, [0; 32]),
            Err(BuildError::SelectableCount { count: 3, .. })
        ));
        let m = poll("q", &o(&["a", "b"]), 1, [7; 32]).unwrap();
        let p = m.poll_creation_message.unwrap();
        assert_eq!(p.options.len(), 2);
        assert_eq!(p.selectable_options_count, Some(1));
        assert_eq!(
            m.message_context_info.unwrap().message_secret.as_deref(),
            Some(&[7u8; 32][..])
        );
    }

    #[test]
    fn a_vote_decrypts_with_the_poll_secret() {
        let creator = jid("222@s.whatsapp.net");
        let voter = jid("111@s.whatsapp.net");
        let options = vec!["red".to_owned(), "blue".to_owned()];
        let poll_ref = MessageRef::theirs(creator.clone(), "POLL", creator.clone());
        let keys = VoteKeys::new(poll_ref.key(&own()), "POLL", &creator, &voter, &[5; 32]);
        assert_eq!(
            poll_vote(&keys, &options, &["green".into()], [1; 12], 0),
            Err(BuildError::UnknownOption("green".into()))
        );
        let m = poll_vote(&keys, &options, &["blue".into()], [1; 12], 42).unwrap();
        let u = m.poll_update_message.unwrap();
        let mut vote = crate::content::PollVote {
            poll: crate::content::Origin {
                chat: &voter,
                sender: &creator,
                own: &own(),
            }
            .target(&u.poll_creation_message_key.clone().unwrap()),
            enc_payload: u.vote.clone().unwrap().enc_payload.unwrap(),
            enc_iv: u.vote.unwrap().enc_iv.unwrap(),
            timestamp_ms: u.sender_timestamp_ms,
            state: crate::content::VoteState::Undecrypted(crate::content::SecretError::Decrypt),
        };
        vote.decrypt(&[5; 32], &options, &creator, &voter).unwrap();
        assert_eq!(
            vote.state,
            crate::content::VoteState::Decrypted {
                options: vec!["blue".into()],
                hashes: vec![Bytes::copy_from_slice(&option_hash("blue"))],
            }
        );
    }

    #[test]
    fn vcards_carry_the_whatsapp_id() {
        let v = vcard("Ann; Lee", "+1 555 000 1111");
        assert!(v.contains("FN:Ann\\; Lee\n"), "{v}");
        assert!(v.contains("waid=15550001111:+15550001111"), "{v}");
    }
}
