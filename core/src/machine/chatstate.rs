//! Chat state, the typing indicator (MESSAGES.md §7, SESSION.md §11): what we send with
//! [`send_chatstate`](ConnectionMachine::send_chatstate) and what arrives as
//! [`ChatStateUpdate`]s. Chat state stanzas are not acked.

use super::receipts::{is_user, jid_attr, user_of};
use super::{ConnectionMachine, Event, SendError};
use crate::binary::Node;
use crate::jid::Jid;
use crate::time::Instant;

/// What someone is doing in a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChatState {
    /// Typing (`<composing/>`).
    Composing,
    /// Recording a voice note (`<composing media="audio"/>`).
    Recording,
    /// Stopped typing or recording (`<paused/>`).
    Paused,
}

impl ChatState {
    /// The child node that says it.
    fn node(self) -> Node {
        match self {
            Self::Composing => Node::new("composing"),
            Self::Recording => Node::new("composing").attr("media", "audio"),
            Self::Paused => Node::new("paused"),
        }
    }

    /// The state a received child says, if it is one of ours.
    fn from_node(child: &Node) -> Option<Self> {
        match &*child.tag {
            "composing" if child.attr_str("media") == Some("audio") => Some(Self::Recording),
            // Any other media (or none) is typing.
            "composing" => Some(Self::Composing),
            "paused" => Some(Self::Paused),
            _ => None,
        }
    }
}

/// Someone's chat state changed ([`Event::ChatState`]). Arrives only while we are
/// [`Available`](super::Presence::Available).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChatStateUpdate {
    /// The chat: the other user (without device) or the group.
    pub chat: Jid,
    /// Who is typing: the user in a 1:1 chat, the member (`participant`) in a group.
    pub sender: Jid,
    /// What they are doing.
    pub state: ChatState,
    /// The stanza as it arrived.
    pub node: Node,
}

/// What an incoming `<chatstate>` is.
pub(super) enum Incoming {
    /// Someone else's state (boxed, as the event carries it).
    Update(Box<ChatStateUpdate>),
    /// The echo of our own state from another of our devices (`to` and no `from`, WR): ignored.
    Echo,
    /// A shape this client does not know.
    Unknown,
}

/// Parses an incoming `<chatstate from [participant]><composing|paused/></chatstate>`.
pub(super) fn parse(node: &Node) -> Incoming {
    let Some(from) = jid_attr(node, "from") else {
        return if node.get_attr("to").is_some() {
            Incoming::Echo
        } else {
            Incoming::Unknown
        };
    };
    // Exactly one child says the state (WM refuses other counts).
    let [child] = node.child_nodes() else {
        return Incoming::Unknown;
    };
    let Some(state) = ChatState::from_node(child) else {
        return Incoming::Unknown;
    };
    let (chat, sender) = if from.is_group() {
        let Some(participant) = jid_attr(node, "participant") else {
            return Incoming::Unknown;
        };
        (from.to_non_device(), participant)
    } else {
        (
            user_of(&from),
            jid_attr(node, "participant").unwrap_or(from),
        )
    };
    Incoming::Update(Box::new(ChatStateUpdate {
        chat,
        sender,
        state,
        node: node.clone(),
    }))
}

impl ConnectionMachine {
    /// Tells `chat` (a user or a group) what we are doing there: `<chatstate to="…">` with
    /// `<composing/>`, `<composing media="audio"/>` for recording, or `<paused/>`. Send
    /// [`Paused`](ChatState::Paused) when typing stops without a message; a sent message ends
    /// it by itself on the other side.
    pub fn send_chatstate(
        &mut self,
        now: Instant,
        chat: &Jid,
        state: ChatState,
    ) -> Result<(), SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        if !chat.is_group() && !is_user(chat) {
            return Err(SendError::InvalidRecipient);
        }
        // No `from` (WM); BL's `from` only matters for LID chats, which we do not address.
        let node = Node::new("chatstate")
            .attr("to", chat.to_non_device())
            .children([state.node()]);
        self.send_node(now, &node)
    }

    /// An incoming `<chatstate>`: [`Event::ChatState`], nothing for the echo of our own, or
    /// the raw stanza for shapes this client does not know.
    pub(super) fn on_chatstate(&mut self, node: Node) {
        match parse(&node) {
            Incoming::Update(update) => self.emit(Event::ChatState(update)),
            Incoming::Echo => tracing::trace!("own chat state echoed from another device"),
            Incoming::Unknown => self.emit(Event::Stanza { node, ack: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            ChatState::Composing,
            ChatState::Recording,
            ChatState::Paused,
        ] {
            assert_eq!(ChatState::from_node(&s.node()), Some(s));
        }
        let group: Jid = "120363000000000001@g.us".parse().unwrap();
        let member: Jid = "15550001111@s.whatsapp.net".parse().unwrap();
        let node = Node::new("chatstate")
            .attr("from", group.clone())
            .attr("participant", member.clone())
            .children([ChatState::Recording.node()]);
        let Incoming::Update(u) = parse(&node) else {
            panic!("not parsed")
        };
        assert_eq!(
            (u.chat, u.sender, u.state),
            (group, member, ChatState::Recording)
        );
        let echo = Node::new("chatstate")
            .attr("to", "x@s.whatsapp.net")
            .children([Node::new("paused")]);
        assert!(matches!(parse(&echo), Incoming::Echo));
    }
}
