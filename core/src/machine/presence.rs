//! Presence and the push name (MESSAGES.md §8, SESSION.md §11): our own availability
//! ([`set_presence`](ConnectionMachine::set_presence)), subscriptions to a contact's
//! ([`presence_subscribe`](ConnectionMachine::presence_subscribe)), incoming updates as
//! [`PresenceUpdate`]s, and our display name ([`set_push_name`](ConnectionMachine::set_push_name),
//! learned from pairing and from our own devices' messages).
//!
//! Presence stanzas are not acked (SESSION.md §5.1).

use super::receipts::{is_user, jid_attr};
use super::{ConnectionMachine, Event, SendError};
use crate::binary::Node;
use crate::jid::Jid;
use crate::time::Instant;

/// Our availability, or a contact's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    /// Online (`type="available"`).
    Available,
    /// Offline (`type="unavailable"`).
    Unavailable,
}

impl Presence {
    /// The `type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A contact's presence changed ([`Event::Presence`]), for a user we subscribed to with
/// [`presence_subscribe`](ConnectionMachine::presence_subscribe). Updates only arrive while we
/// are [`Available`](Presence::Available) ourselves.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PresenceUpdate {
    /// Whose presence (the stanza's `from`, usually a user without device).
    pub from: Jid,
    /// Online or offline.
    pub presence: Presence,
    /// When they were last online (`last`, unix seconds), when they went offline and their
    /// privacy settings show it; `None` when absent or hidden (`last="deny"`).
    pub last_seen: Option<u64>,
    /// The stanza as it arrived.
    pub node: Node,
}

/// The push name as announced, or `None` when nothing is left of it.
fn clean_push_name(name: &str) -> Option<String> {
    // BL strips `@` from the name it announces (MESSAGES.md §8); an empty name is no name.
    let cleaned: String = name.trim().chars().filter(|c| *c != '@').collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// Parses an incoming `<presence from [type] [last]/>`; `None` for other shapes (a type other
/// than `available`/`unavailable`, or no `from`).
pub(super) fn parse(node: &Node) -> Option<PresenceUpdate> {
    let from = jid_attr(node, "from")?;
    let presence = match node.attr_str("type") {
        None | Some("available") => Presence::Available,
        Some("unavailable") => Presence::Unavailable,
        Some(_) => return None,
    };
    // WM ignores `last="deny"` (the contact hides it); only a number is a time.
    let last_seen = node
        .attr_str("last")
        .and_then(|l| l.parse::<u64>().ok())
        .filter(|t| *t > 0);
    Some(PresenceUpdate {
        from,
        presence,
        last_seen,
        node: node.clone(),
    })
}

impl ConnectionMachine {
    /// Tells the server (and the contacts subscribed to us) whether we are online:
    /// `<presence type="available|unavailable" name="…"/>`. Needs a push name
    /// ([`set_push_name`](Self::set_push_name), or one learned at pairing): without one it is
    /// [`SendError::NoPushName`], as the server would show "-" for us.
    ///
    /// Call it after [`Event::LoggedIn`] (every connection starts unavailable): being
    /// available is what makes the server send us presence updates and typing notifications.
    pub fn set_presence(&mut self, now: Instant, presence: Presence) -> Result<(), SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        let name = self
            .creds
            .push_name
            .as_deref()
            .and_then(clean_push_name)
            .ok_or(SendError::NoPushName)?;
        let node = Node::new("presence")
            .attr("type", presence.as_str())
            .attr("name", name);
        self.send_node(now, &node)
    }

    /// Asks for `user`'s presence updates: `<presence type="subscribe" to="…"/>`, carrying
    /// their privacy token (`<tctoken>`) when we hold a valid one (it may be loaded from the
    /// store first, so the stanza can leave a step later). They arrive as [`Event::Presence`]
    /// (the current state first) while we are available. A subscription lasts for this
    /// connection: subscribe again after a reconnect.
    pub fn presence_subscribe(&mut self, now: Instant, user: &Jid) -> Result<(), SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        if !is_user(user) {
            return Err(SendError::InvalidRecipient);
        }
        // With the contact's privacy token (`<tctoken>`) when we hold a valid one, which may
        // have to be loaded first.
        self.queue_subscribe(now, user)
    }

    /// Sets our display name: stored in the credentials ([`Event::CredentialsChanged`], before
    /// anything else) and, when logged in, announced at once with `<presence name="…"/>` (no
    /// `type`, as BL does on a change) so the server shows it to others. `@` is removed; an
    /// empty name is [`SendError::NoPushName`].
    ///
    /// Works from the start of the connection (before login it is only stored); after the
    /// close it is [`SendError::NotConnected`]. It is kept across connections; the name set on
    /// the phone (app state) is not synced back yet.
    pub fn set_push_name(&mut self, now: Instant, name: &str) -> Result<(), SendError> {
        // Nothing follows the close, not even a credentials change: the next machine takes it.
        if self.is_closed() {
            return Err(SendError::NotConnected);
        }
        let name = clean_push_name(name).ok_or(SendError::NoPushName)?;
        self.store_push_name(name.clone());
        if self.is_logged_in() {
            self.send_node(now, &Node::new("presence").attr("name", name))?;
        }
        Ok(())
    }

    /// Stores `name` as our push name when it differs, persisting it first.
    pub(super) fn store_push_name(&mut self, name: String) {
        if self.creds.push_name.as_deref() != Some(name.as_str()) {
            self.creds.push_name = Some(name);
            self.emit(Event::CredentialsChanged(Box::new(self.creds.clone())));
        }
    }

    /// Learns our push name from a `<message notify="…">` sent by one of our own devices: the
    /// server stamps every message with its sender's push name, so ours comes with the
    /// messages our phone sends (BL does the same).
    pub(super) fn learn_push_name(&mut self, message: &Node) {
        let Some(name) = message.attr_str("notify").and_then(clean_push_name) else {
            return;
        };
        let sender = jid_attr(message, "participant").or_else(|| jid_attr(message, "from"));
        if sender.is_some_and(|s| !s.is_group() && self.is_own_user(&s)) {
            self.store_push_name(name);
        }
    }

    /// An incoming `<presence>`: [`Event::Presence`], or the raw stanza for other shapes.
    pub(super) fn on_presence(&mut self, node: Node) {
        match parse(&node) {
            Some(update) => self.emit(Event::Presence(Box::new(update))),
            None => self.emit(Event::Stanza { node, ack: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_presence_and_last_seen() {
        let from: Jid = "15550001111@s.whatsapp.net".parse().unwrap();
        let p = parse(&Node::new("presence").attr("from", from.clone())).unwrap();
        assert_eq!((p.presence, p.last_seen), (Presence::Available, None));
        let off = Node::new("presence")
            .attr("from", from.clone())
            .attr("type", "unavailable")
            .attr("last", "1750000000");
        assert_eq!(parse(&off).unwrap().last_seen, Some(1_750_000_000));
        let deny = Node::new("presence")
            .attr("from", from.clone())
            .attr("type", "unavailable")
            .attr("last", "deny");
        assert_eq!(parse(&deny).unwrap().last_seen, None);
        assert!(
            parse(
                &Node::new("presence")
                    .attr("from", from)
                    .attr("type", "error")
            )
            .is_none()
        );
        assert!(parse(&Node::new("presence")).is_none());
    }

    #[test]
    fn push_names_lose_at_signs_and_blanks() {
        assert_eq!(clean_push_name(" a@b ").as_deref(), Some("ab"));
        assert_eq!(clean_push_name("@ "), None);
    }
}
