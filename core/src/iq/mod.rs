//! Typed IQs: one file per namespace, each with pure builders of the request (an
//! [`IqRequest`](crate::machine::IqRequest)) and pure parsers of the answer (from an [`IqResult`]) into typed values.
//!
//! - [`groups`]: `w:g2` (group metadata, the participating list, create, participants, subject,
//!   description, settings, leave, invites, membership requests), SESSION.md §13.
//! - [`usync`]: `usync` contact queries (is a number on WhatsApp) and user info (status text,
//!   picture id, devices, LID), SESSION.md §10.4 and LID.md §1.1.
//! - [`privacy`]: `privacy` settings get and set.
//! - [`blocklist`]: `blocklist` get, block and unblock.
//! - [`profile`]: `w:profile:picture` picture URLs and `status` (the "about" text).
//! - [`md`]: `md` remove-companion-device, the logout of this device (SESSION.md §15).
//!
//! The [`ConnectionMachine`](crate::machine::ConnectionMachine) runs them as typed queries
//! ([`Query`](crate::machine::Query)) so that it can keep its own state in step with the
//! answers (the group members used by group sends, LID mappings); the builders and parsers are
//! public for a program that sends IQs itself.
//!
//! Parsers never panic on what the server sent: a missing element or attribute the answer
//! cannot do without is [`IqError::Malformed`], anything optional is `None`.

pub mod blocklist;
pub mod groups;
pub mod md;
pub mod privacy;
pub mod profile;
pub mod usync;

use crate::binary::{AttrValue, Node};
use crate::jid::Jid;
use crate::machine::IqResult;

/// Why a typed IQ did not give its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IqError {
    /// The server answered `type="error"` (SESSION.md §3.2: 401 not-authorized, 403
    /// forbidden, 404 item-not-found, 406 not-acceptable, 409 conflict, 410 gone, …).
    #[error("server error {code} {text}")]
    Server {
        /// The `<error code>`.
        code: u16,
        /// The `<error text>`.
        text: String,
    },
    /// No answer within the timeout.
    #[error("no answer in time")]
    Timeout,
    /// The connection ended before the answer.
    #[error("the connection ended first")]
    Disconnected,
    /// The answer lacks something it must have (named here).
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
}

impl IqError {
    /// The server's error code, for [`IqError::Server`].
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The reply node of a successful IQ, or the error.
pub(crate) fn ok(result: IqResult) -> Result<Node, IqError> {
    match result {
        IqResult::Ok(node) => Ok(node),
        IqResult::Error { code, text, .. } => Err(IqError::Server { code, text }),
        IqResult::Timeout => Err(IqError::Timeout),
        IqResult::Disconnected => Err(IqError::Disconnected),
    }
}

/// A successful IQ whose answer carries nothing needed.
pub fn parse_done(result: IqResult) -> Result<(), IqError> {
    ok(result).map(drop)
}

/// The JID in attribute `key`, sent as a JID or as a string.
pub(crate) fn jid_attr(node: &Node, key: &str) -> Option<Jid> {
    match node.get_attr(key)? {
        AttrValue::Jid(j) => Some(j.clone()),
        AttrValue::Str(s) => s.parse().ok(),
    }
}

/// The number in attribute `key`.
pub(crate) fn num_attr<T: std::str::FromStr>(node: &Node, key: &str) -> Option<T> {
    node.attr_str(key).and_then(|v| v.parse().ok())
}

/// A string attribute, owned.
pub(crate) fn str_attr(node: &Node, key: &str) -> Option<String> {
    match node.get_attr(key)? {
        AttrValue::Str(s) => Some(s.to_string()),
        AttrValue::Jid(j) => Some(j.to_string()),
    }
}

/// The content as UTF-8 text (invalid sequences replaced).
pub(crate) fn text_of(node: &Node) -> Option<String> {
    node.content_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The children of `node` with `tag`.
pub(crate) fn children<'a>(node: &'a Node, tag: &'a str) -> impl Iterator<Item = &'a Node> {
    node.child_nodes().iter().filter(move |c| c.tag == tag)
}

/// At most this many entries are read from any list in an answer.
pub(crate) const MAX_LIST: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_code() {
        let node = Node::new("iq");
        let e = ok(IqResult::Error {
            code: 403,
            text: "forbidden".into(),
            node,
        })
        .unwrap_err();
        assert_eq!(e.code(), Some(403));
        assert_eq!(e.to_string(), "server error 403 forbidden");
        assert_eq!(ok(IqResult::Timeout).unwrap_err(), IqError::Timeout);
        assert_eq!(
            parse_done(IqResult::Disconnected),
            Err(IqError::Disconnected)
        );
    }
}
