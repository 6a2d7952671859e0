//! The owned node: what the application builds to send and what a decoded frame becomes.

use std::fmt;

use bytes::Bytes;
use compact_str::CompactString;

use super::attrs::Attrs;
use crate::jid::Jid;

/// A string of a node (tag, attribute key or value, text content). Tokens borrow the static
/// token tables, strings of up to 24 bytes are stored inline, and only longer ones allocate.
pub type NodeStr = CompactString;

/// An attribute value: a string, or a JID written with the JID wire forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttrValue {
    /// A plain string, written as a token, packed or raw (never re-parsed as a JID).
    Str(NodeStr),
    /// A JID.
    Jid(Jid),
}

impl AttrValue {
    /// The value as a string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::Jid(_) => None,
        }
    }

    /// The value as a JID, when it is one.
    pub fn as_jid(&self) -> Option<&Jid> {
        match self {
            Self::Jid(j) => Some(j),
            Self::Str(_) => None,
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::Jid(j) => j.fmt(f),
        }
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        Self::Str(s.into())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        Self::Str(s.into())
    }
}

impl From<NodeStr> for AttrValue {
    fn from(s: NodeStr) -> Self {
        Self::Str(s)
    }
}

impl From<Jid> for AttrValue {
    fn from(j: Jid) -> Self {
        Self::Jid(j)
    }
}

impl From<&Jid> for AttrValue {
    fn from(j: &Jid) -> Self {
        Self::Jid(j.clone())
    }
}

/// The content of a node. Bytes and text are kept apart: bytes are always written as a binary
/// length and the raw bytes; text is written with the string rules (token, packed, raw).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Content {
    /// No content.
    #[default]
    None,
    /// Child nodes (an empty list is written as `LIST_EMPTY`).
    Nodes(Vec<Node>),
    /// Binary content.
    Bytes(Bytes),
    /// Text content. On the wire, raw text cannot be told apart from bytes, so text that is not
    /// a token or packable decodes as [`Content::Bytes`].
    Text(NodeStr),
    /// A JID as content.
    Jid(Jid),
}

/// A node of the binary XML: a tag, ordered attributes and content.
///
/// Attributes keep the order they were added in, because the encoding depends on it; the
/// receiver treats them as a map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// The tag (never empty on the wire).
    pub tag: NodeStr,
    /// The attributes in wire order (the first two are stored inline).
    pub attrs: Attrs,
    /// The content.
    pub content: Content,
}

impl Node {
    /// A node with this tag, no attributes and no content.
    pub fn new(tag: impl Into<NodeStr>) -> Self {
        Self {
            tag: tag.into(),
            attrs: Attrs::new(),
            content: Content::None,
        }
    }

    /// Adds an attribute (builder style).
    #[must_use]
    pub fn attr(mut self, key: impl Into<NodeStr>, value: impl Into<AttrValue>) -> Self {
        self.attrs.push((key.into(), value.into()));
        self
    }

    /// Sets child nodes as the content (builder style).
    #[must_use]
    pub fn children(mut self, children: impl IntoIterator<Item = Self>) -> Self {
        self.content = Content::Nodes(children.into_iter().collect());
        self
    }

    /// Sets bytes as the content (builder style).
    #[must_use]
    pub fn bytes(mut self, bytes: impl Into<Bytes>) -> Self {
        self.content = Content::Bytes(bytes.into());
        self
    }

    /// Sets text as the content (builder style).
    #[must_use]
    pub fn text(mut self, text: impl Into<NodeStr>) -> Self {
        self.content = Content::Text(text.into());
        self
    }

    /// The value of the first attribute with this key.
    pub fn get_attr(&self, key: &str) -> Option<&AttrValue> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The string value of the attribute with this key, when it is a string.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.get_attr(key).and_then(AttrValue::as_str)
    }

    /// The JID value of the attribute with this key, when it is a JID.
    pub fn attr_jid(&self, key: &str) -> Option<&Jid> {
        self.get_attr(key).and_then(AttrValue::as_jid)
    }

    /// The child nodes (empty when the content is not a list).
    pub fn child_nodes(&self) -> &[Self] {
        match &self.content {
            Content::Nodes(n) => n,
            _ => &[],
        }
    }

    /// The first child with this tag.
    pub fn child(&self, tag: &str) -> Option<&Self> {
        self.child_nodes().iter().find(|n| n.tag == tag)
    }

    /// The content as bytes: binary content, or the UTF-8 bytes of text content.
    pub fn content_bytes(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Bytes(b) => Some(b),
            Content::Text(t) => Some(t.as_bytes()),
            _ => None,
        }
    }
}

/// Writes the node as XML-like text, for logs and test failures. Binary content is shown by its
/// length only, so key material carried in nodes never reaches a log.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}", self.tag)?;
        for (k, v) in &self.attrs {
            write!(f, " {k}=\"{v}\"")?;
        }
        match &self.content {
            Content::None => f.write_str("/>"),
            Content::Nodes(children) => {
                f.write_str(">")?;
                for c in children {
                    c.fmt(f)?;
                }
                write!(f, "</{}>", self.tag)
            }
            Content::Bytes(b) => write!(f, ">[{} bytes]</{}>", b.len(), self.tag),
            Content::Text(t) => write!(f, ">{t}</{}>", self.tag),
            Content::Jid(j) => write!(f, ">{j}</{}>", self.tag),
        }
    }
}
