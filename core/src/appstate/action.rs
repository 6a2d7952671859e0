//! The typed meaning of a mutation: its index names the action (`mute`, `pin_v1`, `contact`,
//! ...) and its arguments, its value carries the action's fields.

use amarula_proto::sync_action::{
    ArchiveChatAction, ClearChatAction, ContactAction, DeleteChatAction, DeleteMessageForMeAction,
    LabelAssociationAction, LabelEditAction, MarkChatAsReadAction, MuteAction, PinAction,
    PushNameSetting, StarAction, SyncActionValue,
};

use super::{Collection, DecodedMutation, Operation, PendingMutation};
use crate::jid::Jid;

/// A message named by an app-state index: chat, id, whether it is ours, and in a group its
/// sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessageRef {
    /// The chat.
    pub chat: Jid,
    /// The message id.
    pub id: String,
    /// Whether we sent it.
    pub from_me: bool,
    /// The sender in a group when not us (`None` in a direct chat).
    pub sender: Option<Jid>,
}

/// What one mutation means. For a REMOVE the action is named by its index and carries the
/// default ("unset") values.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AppStateAction {
    /// A contact's name in our address book.
    Contact {
        /// The contact.
        jid: Jid,
        /// Full name.
        full_name: Option<String>,
        /// First name.
        first_name: Option<String>,
        /// The contact's LID, when known.
        lid: Option<Jid>,
    },
    /// Our own push name.
    PushName(String),
    /// Our locale.
    Locale(String),
    /// A chat muted (until the time in ms since the epoch, `None`: forever) or unmuted.
    Mute {
        /// The chat.
        chat: Jid,
        /// Whether muted.
        muted: bool,
        /// End of the mute (ms since the epoch), `None` for forever or unmuted.
        until_ms: Option<i64>,
    },
    /// A chat pinned or unpinned.
    Pin {
        /// The chat.
        chat: Jid,
        /// Whether pinned.
        pinned: bool,
    },
    /// A chat archived or unarchived.
    Archive {
        /// The chat.
        chat: Jid,
        /// Whether archived.
        archived: bool,
    },
    /// A chat marked read or unread.
    MarkChatRead {
        /// The chat.
        chat: Jid,
        /// Whether read.
        read: bool,
    },
    /// A message starred or unstarred.
    Star {
        /// The message.
        message: ChatMessageRef,
        /// Whether starred.
        starred: bool,
    },
    /// A message deleted on this account's devices only.
    DeleteMessageForMe {
        /// The message.
        message: ChatMessageRef,
        /// Whether its media goes too.
        delete_media: bool,
    },
    /// A chat's messages cleared.
    ClearChat {
        /// The chat.
        chat: Jid,
        /// Whether starred messages go too.
        delete_starred: bool,
        /// Whether media goes too.
        delete_media: bool,
    },
    /// A chat deleted.
    DeleteChat {
        /// The chat.
        chat: Jid,
        /// Whether media goes too.
        delete_media: bool,
    },
    /// A label created, renamed or deleted.
    LabelEdit {
        /// The label id.
        label: String,
        /// Its name.
        name: Option<String>,
        /// Its colour index.
        color: Option<i32>,
        /// Whether deleted.
        deleted: bool,
    },
    /// A chat given or relieved of a label.
    LabelChat {
        /// The label id.
        label: String,
        /// The chat.
        chat: Jid,
        /// Whether labeled.
        labeled: bool,
    },
    /// A message given or relieved of a label.
    LabelMessage {
        /// The label id.
        label: String,
        /// The message.
        message: ChatMessageRef,
        /// Whether labeled.
        labeled: bool,
    },
    /// Anything else: the raw index and value.
    Unknown {
        /// The index strings.
        index: Vec<String>,
        /// The value.
        value: Option<Box<SyncActionValue>>,
    },
}

fn jid(s: Option<&String>) -> Option<Jid> {
    s?.parse().ok()
}

fn message_ref(index: &[String]) -> Option<ChatMessageRef> {
    // [action, chat, id, from_me, sender]
    let chat = jid(index.get(1))?;
    let id = index.get(2)?.clone();
    let from_me = index.get(3)? == "1";
    let sender = match index.get(4).map(String::as_str) {
        None | Some("0") | Some("") => None,
        Some(s) => Some(s.parse().ok()?),
    };
    Some(ChatMessageRef {
        chat,
        id,
        from_me,
        sender,
    })
}

impl AppStateAction {
    /// The typed meaning of `index` and `value`.
    pub fn parse(operation: Operation, index: &[String], value: Option<&SyncActionValue>) -> Self {
        Self::try_parse(operation, index, value).unwrap_or_else(|| Self::Unknown {
            index: index.to_vec(),
            value: value.cloned().map(Box::new),
        })
    }

    fn try_parse(op: Operation, index: &[String], value: Option<&SyncActionValue>) -> Option<Self> {
        let set = op == Operation::Set;
        let v = value.cloned().unwrap_or_default();
        let flag = |b: Option<bool>| set && b.unwrap_or(false);
        Some(match index.first()?.as_str() {
            "contact" => {
                let a = v.contact_action.unwrap_or_default();
                Self::Contact {
                    jid: jid(index.get(1))?,
                    full_name: a.full_name,
                    first_name: a.first_name,
                    lid: a.lid_jid.and_then(|s| s.parse().ok()),
                }
            }
            "setting_pushName" => Self::PushName(v.push_name_setting?.name.unwrap_or_default()),
            "setting_locale" => Self::Locale(v.locale_setting?.locale.unwrap_or_default()),
            "mute" => {
                let a = v.mute_action.unwrap_or_default();
                let muted = flag(a.muted);
                Self::Mute {
                    chat: jid(index.get(1))?,
                    muted,
                    until_ms: a.mute_end_timestamp.filter(|t| muted && *t > 0),
                }
            }
            "pin_v1" => Self::Pin {
                chat: jid(index.get(1))?,
                pinned: flag(v.pin_action.and_then(|a| a.pinned)),
            },
            "archive" => Self::Archive {
                chat: jid(index.get(1))?,
                archived: flag(v.archive_chat_action.and_then(|a| a.archived)),
            },
            "markChatAsRead" => Self::MarkChatRead {
                chat: jid(index.get(1))?,
                read: flag(v.mark_chat_as_read_action.and_then(|a| a.read)),
            },
            "star" => Self::Star {
                message: message_ref(index)?,
                starred: flag(v.star_action.and_then(|a| a.starred)),
            },
            "deleteMessageForMe" => Self::DeleteMessageForMe {
                message: message_ref(index)?,
                delete_media: flag(v.delete_message_for_me_action.and_then(|a| a.delete_media)),
            },
            // [clearChat, chat, delete_starred, delete_media]
            "clearChat" => Self::ClearChat {
                chat: jid(index.get(1))?,
                delete_starred: index.get(2).is_some_and(|s| s == "1"),
                delete_media: index.get(3).is_some_and(|s| s == "1"),
            },
            // [deleteChat, chat, delete_media]
            "deleteChat" => Self::DeleteChat {
                chat: jid(index.get(1))?,
                delete_media: index.get(2).is_some_and(|s| s == "1"),
            },
            "label_edit" => {
                let a = v.label_edit_action.unwrap_or_default();
                Self::LabelEdit {
                    label: index.get(1)?.clone(),
                    name: a.name,
                    color: a.color,
                    deleted: !set || a.deleted.unwrap_or(false),
                }
            }
            "label_jid" => Self::LabelChat {
                label: index.get(1)?.clone(),
                chat: jid(index.get(2))?,
                labeled: flag(v.label_association_action.and_then(|a| a.labeled)),
            },
            // [label_message, label, chat, id, from_me, sender]
            "label_message" => Self::LabelMessage {
                label: index.get(1)?.clone(),
                message: message_ref(&index[1..])?,
                labeled: flag(v.label_association_action.and_then(|a| a.labeled)),
            },
            _ => return None,
        })
    }

    /// The collection, index, schema version and value of an outgoing mutation (what the
    /// reference clients send for each: the index, the collection and the version are part
    /// of what the phone checks). `None` for what we do not send: [`Locale`](Self::Locale)
    /// and [`Unknown`](Self::Unknown). `timestamp_ms` goes into the value.
    pub fn to_pending(&self, timestamp_ms: i64) -> Option<(Collection, PendingMutation)> {
        let mut value = SyncActionValue {
            timestamp: Some(timestamp_ms),
            ..Default::default()
        };
        let (collection, index, version) = match self {
            Self::Mute {
                chat,
                muted,
                until_ms,
            } => {
                value.mute_action = Some(MuteAction {
                    muted: Some(*muted),
                    mute_end_timestamp: muted.then_some(until_ms.unwrap_or(-1)),
                    ..Default::default()
                });
                (
                    Collection::RegularHigh,
                    vec!["mute".into(), chat.to_string()],
                    2,
                )
            }
            Self::Pin { chat, pinned } => {
                value.pin_action = Some(PinAction {
                    pinned: Some(*pinned),
                });
                (
                    Collection::RegularLow,
                    vec!["pin_v1".into(), chat.to_string()],
                    5,
                )
            }
            Self::Archive { chat, archived } => {
                value.archive_chat_action = Some(ArchiveChatAction {
                    archived: Some(*archived),
                    message_range: Some(message_range(timestamp_ms)),
                });
                (
                    Collection::RegularLow,
                    vec!["archive".into(), chat.to_string()],
                    3,
                )
            }
            Self::MarkChatRead { chat, read } => {
                value.mark_chat_as_read_action = Some(MarkChatAsReadAction {
                    read: Some(*read),
                    message_range: Some(message_range(timestamp_ms)),
                });
                (
                    Collection::RegularLow,
                    vec!["markChatAsRead".into(), chat.to_string()],
                    3,
                )
            }
            Self::Star { message, starred } => {
                value.star_action = Some(StarAction {
                    starred: Some(*starred),
                });
                (Collection::RegularHigh, message_index("star", message), 2)
            }
            Self::DeleteMessageForMe {
                message,
                delete_media,
            } => {
                value.delete_message_for_me_action = Some(DeleteMessageForMeAction {
                    delete_media: Some(*delete_media),
                    message_timestamp: Some(timestamp_ms / 1000),
                });
                (
                    Collection::RegularHigh,
                    message_index("deleteMessageForMe", message),
                    3,
                )
            }
            Self::ClearChat {
                chat,
                delete_starred,
                delete_media,
            } => {
                value.clear_chat_action = Some(ClearChatAction {
                    message_range: Some(message_range(timestamp_ms)),
                });
                (
                    Collection::RegularHigh,
                    vec![
                        "clearChat".into(),
                        chat.to_string(),
                        bit(*delete_starred),
                        bit(*delete_media),
                    ],
                    6,
                )
            }
            Self::DeleteChat { chat, delete_media } => {
                value.delete_chat_action = Some(DeleteChatAction {
                    message_range: Some(message_range(timestamp_ms)),
                });
                (
                    Collection::RegularHigh,
                    vec!["deleteChat".into(), chat.to_string(), bit(*delete_media)],
                    6,
                )
            }
            Self::Contact {
                jid,
                full_name,
                first_name,
                lid,
            } => {
                value.contact_action = Some(ContactAction {
                    full_name: full_name.clone(),
                    first_name: first_name.clone(),
                    lid_jid: lid.as_ref().map(Jid::to_string),
                    save_on_primary_addressbook: Some(true),
                    ..Default::default()
                });
                (
                    Collection::CriticalUnblockLow,
                    vec!["contact".into(), jid.to_string()],
                    2,
                )
            }
            Self::PushName(name) => {
                value.push_name_setting = Some(PushNameSetting {
                    name: Some(name.clone()),
                });
                (
                    Collection::CriticalBlock,
                    vec!["setting_pushName".into()],
                    1,
                )
            }
            Self::LabelEdit {
                label,
                name,
                color,
                deleted,
            } => {
                value.label_edit_action = Some(LabelEditAction {
                    name: name.clone(),
                    color: *color,
                    deleted: Some(*deleted),
                    ..Default::default()
                });
                (
                    Collection::Regular,
                    vec!["label_edit".into(), label.clone()],
                    3,
                )
            }
            Self::LabelChat {
                label,
                chat,
                labeled,
            } => {
                value.label_association_action = Some(LabelAssociationAction {
                    labeled: Some(*labeled),
                    ..Default::default()
                });
                (
                    Collection::Regular,
                    vec!["label_jid".into(), label.clone(), chat.to_string()],
                    3,
                )
            }
            Self::LabelMessage {
                label,
                message,
                labeled,
            } => {
                value.label_association_action = Some(LabelAssociationAction {
                    labeled: Some(*labeled),
                    ..Default::default()
                });
                // [label_message, label, chat, id, from_me, sender]
                let mut index = message_index("label_message", message);
                index.insert(1, label.clone());
                (Collection::Regular, index, 3)
            }
            _ => return None,
        };
        Some((
            collection,
            PendingMutation {
                operation: Operation::Set,
                index,
                version,
                value,
            },
        ))
    }
}

/// `[action, chat, id, from_me, sender]` of a message, the sender `0` unless another member of
/// a group sent it.
fn message_index(action: &str, message: &ChatMessageRef) -> Vec<String> {
    let sender = match &message.sender {
        Some(s) if s.user_part() != message.chat.user_part() => s.to_string(),
        _ => "0".into(),
    };
    vec![
        action.into(),
        message.chat.to_string(),
        message.id.clone(),
        bit(message.from_me),
        sender,
    ]
}

fn bit(b: bool) -> String {
    if b { "1" } else { "0" }.into()
}

fn message_range(timestamp_ms: i64) -> amarula_proto::sync_action::SyncActionMessageRange {
    amarula_proto::sync_action::SyncActionMessageRange {
        last_message_timestamp: Some(timestamp_ms / 1000),
        ..Default::default()
    }
}

impl DecodedMutation {
    /// The typed meaning of this mutation.
    pub fn action(&self) -> AppStateAction {
        AppStateAction::parse(self.operation, &self.index, self.value.as_ref())
    }
}
