//! Small helpers for reading nodes from the wire and showing public bytes.

use std::fmt;

use crate::binary::{AttrValue, Node};
use crate::jid::{Jid, Server};

/// Whether the IQ comes from the server: a `from` of `s.whatsapp.net` (as a JID or as text).
/// Server IQs are the only ones the pairing steps act on (whatsmeow ignores any other).
pub(crate) fn is_from_server(iq: &Node) -> bool {
    match iq.get_attr("from") {
        Some(AttrValue::Jid(j)) => j.is_server_only() && *j.server_part() == Server::User,
        Some(AttrValue::Str(s)) => s == "s.whatsapp.net" || s == "@s.whatsapp.net",
        None => false,
    }
}

/// The non-empty `id` attribute.
pub(crate) fn iq_id(iq: &Node) -> Option<&str> {
    iq.attr_str("id").filter(|id| !id.is_empty())
}

/// An attribute holding a JID, whether the decoder produced it as a JID or as text.
pub(crate) fn attr_as_jid(node: &Node, key: &str) -> Option<Jid> {
    match node.get_attr(key)? {
        AttrValue::Jid(j) => Some(j.clone()),
        AttrValue::Str(s) => s.parse().ok(),
    }
}

/// The bytes content of the child `tag`, or `Malformed { what }`-style `None`.
pub(crate) fn child_bytes<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    node.child(tag).and_then(Node::content_bytes)
}

/// Exactly 32 bytes.
pub(crate) fn array32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

/// Lowercase hex for `Debug` output of public values.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
