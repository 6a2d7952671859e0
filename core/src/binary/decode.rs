//! Decoder: bytes to a borrowed [`NodeRef`], validated in one pass, without copying.
//!
//! Attributes are validated while decoding but kept as the slice that holds them
//! ([`AttrsRef`]): iterating re-reads that slice, so a decoded node costs no allocation for its
//! attributes. Packed strings stay packed until they are read ([`StrRef`]).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use super::node::{AttrValue, Content, Node, NodeStr};
use super::token::{DOUBLE_BYTE, SINGLE_BYTE};
use super::{DecodeError, MAX_DEPTH, MAX_NODES, tag};
use crate::jid::{Jid, Server};

/// Smallest encoded node: `LIST_8 1 <token>`. Used to refuse counts the input cannot hold.
pub(super) const MIN_NODE_LEN: usize = 3;
/// Smallest encoded attribute: a one-byte key and a one-byte value.
pub(super) const MIN_ATTR_LEN: usize = 2;

/// Decodes one node from `buf` (the bytes after the flag byte), refusing trailing bytes.
pub fn decode(buf: &[u8]) -> Result<NodeRef<'_>> {
    let mut r = Reader {
        buf,
        pos: 0,
        nodes_left: MAX_NODES,
    };
    let node = r.node(0)?;
    if r.pos != buf.len() {
        return Err(DecodeError::TrailingBytes {
            at: r.pos,
            left: buf.len() - r.pos,
        });
    }
    Ok(node)
}

/// A string borrowed from a frame: a token, raw UTF-8, or a packed string not yet unpacked.
#[derive(Clone, Copy)]
pub enum StrRef<'a> {
    /// A token or other string known at compile time.
    Static(&'static str),
    /// Raw UTF-8 from the frame.
    Raw(&'a str),
    /// A nibble-packed string (`0-9 - .`): the packed bytes and whether the length is odd.
    Nibble(&'a [u8], bool),
    /// A hex-packed string (`0-9 A-F`): the packed bytes and whether the length is odd.
    Hex(&'a [u8], bool),
}

impl<'a> StrRef<'a> {
    /// The string, borrowed when it is a token or raw, unpacked otherwise.
    pub fn as_str(&self) -> Cow<'a, str> {
        match *self {
            Self::Static(s) => Cow::Borrowed(s),
            Self::Raw(s) => Cow::Borrowed(s),
            Self::Nibble(..) | Self::Hex(..) => Cow::Owned(self.chars().collect()),
        }
    }

    /// The string as an owned node string (tokens stay borrowed from the tables, short strings
    /// are inline).
    pub fn to_node_str(&self) -> NodeStr {
        match *self {
            Self::Static(s) => NodeStr::const_new(s),
            Self::Raw(s) => NodeStr::new(s),
            Self::Nibble(b, odd) => unpack_packed(b, odd, NIBBLE_CHARS),
            Self::Hex(b, odd) => unpack_packed(b, odd, HEX_CHARS),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match *self {
            Self::Static(s) => s.len(),
            Self::Raw(s) => s.len(),
            Self::Nibble(b, odd) | Self::Hex(b, odd) => b.len() * 2 - usize::from(odd),
        }
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The characters, unpacking packed strings on the fly.
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        let (packed, odd, alphabet): (&[u8], bool, &[u8; 16]) = match *self {
            Self::Nibble(b, odd) => (b, odd, NIBBLE_CHARS),
            Self::Hex(b, odd) => (b, odd, HEX_CHARS),
            Self::Static(_) | Self::Raw(_) => (&[], false, NIBBLE_CHARS),
        };
        let plain = match *self {
            Self::Static(s) => s,
            Self::Raw(s) => s,
            _ => "",
        };
        let total = packed.len() * 2 - usize::from(odd);
        let unpacked = packed
            .iter()
            .flat_map(|&b| [b >> 4, b & 0x0F])
            .take(total)
            .map(move |n| char::from(alphabet[usize::from(n)]));
        plain.chars().chain(unpacked)
    }

    /// Whether the string equals `s`, without unpacking into a new string.
    pub fn eq_str(&self, s: &str) -> bool {
        match *self {
            Self::Static(x) => x == s,
            Self::Raw(x) => x == s,
            _ => self.len() == s.len() && self.chars().eq(s.chars()),
        }
    }
}

impl PartialEq<str> for StrRef<'_> {
    fn eq(&self, other: &str) -> bool {
        self.eq_str(other)
    }
}

impl PartialEq<&str> for StrRef<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.eq_str(other)
    }
}

impl fmt::Display for StrRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Static(s) => f.write_str(s),
            Self::Raw(s) => f.write_str(s),
            _ => self.chars().try_for_each(|c| fmt::Write::write_char(f, c)),
        }
    }
}

impl fmt::Debug for StrRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Unpacks a validated packed string (at most 127 characters, so one stack buffer holds it).
fn unpack_packed(packed: &[u8], odd: bool, alphabet: &[u8; 16]) -> NodeStr {
    let mut buf = [0u8; 2 * 127];
    let total = (packed.len() * 2 - usize::from(odd)).min(buf.len());
    for (pair, &b) in buf.chunks_exact_mut(2).zip(packed) {
        pair[0] = alphabet[usize::from(b >> 4)];
        pair[1] = alphabet[usize::from(b & 0x0F)];
    }
    // Both alphabets are ASCII, so any prefix is UTF-8 and the error arm is never taken.
    std::str::from_utf8(&buf[..total])
        .map(NodeStr::new)
        .unwrap_or_default()
}

/// Characters of nibble codes; 12..=14 are invalid (rejected while decoding), 15 is the filler.
const NIBBLE_CHARS: &[u8; 16] = b"0123456789-.\0\0\0\0";
/// Characters of hex codes.
pub(super) const HEX_CHARS: &[u8; 16] = b"0123456789ABCDEF";

/// A JID borrowed from a frame.
#[derive(Debug, Clone, Copy)]
pub struct JidRef<'a> {
    /// The user (empty for a server-only JID).
    pub user: StrRef<'a>,
    /// The server name.
    pub server: StrRef<'a>,
    /// The agent (AD_JID domain types other than the four known ones), else 0.
    pub agent: u8,
    /// The device, when the wire form carries one.
    pub device: Option<u16>,
    /// The interop integrator, else 0.
    pub integrator: u16,
}

impl JidRef<'_> {
    /// The owned JID.
    pub fn to_jid(&self) -> Jid {
        // Known servers are tokens or static names, so this borrows and does not allocate.
        let server = Server::from_name(&self.server.as_str());
        Jid::from_parts(
            self.user.to_node_str(),
            server,
            self.agent,
            self.device,
            self.integrator,
        )
    }
}

impl fmt::Display for JidRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_jid().fmt(f)
    }
}

/// An attribute value borrowed from a frame.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    /// A string.
    Str(StrRef<'a>),
    /// A JID.
    Jid(JidRef<'a>),
}

impl ValueRef<'_> {
    /// The owned attribute value.
    pub fn to_value(&self) -> AttrValue {
        match self {
            Self::Str(s) => AttrValue::Str(s.to_node_str()),
            Self::Jid(j) => AttrValue::Jid(j.to_jid()),
        }
    }
}

/// The attributes of a decoded node: the validated bytes that hold them, read on demand.
#[derive(Clone, Copy)]
pub struct AttrsRef<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> AttrsRef<'a> {
    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The attributes in wire order.
    pub fn iter(&self) -> AttrsIter<'a> {
        AttrsIter {
            // Attributes hold no child lists: the node budget does not apply.
            r: Reader {
                buf: self.bytes,
                pos: 0,
                nodes_left: 0,
            },
            left: self.count,
        }
    }

    /// The value of the first attribute with this key.
    pub fn get(&self, key: &str) -> Option<ValueRef<'a>> {
        self.iter().find(|(k, _)| k.eq_str(key)).map(|(_, v)| v)
    }
}

impl fmt::Debug for AttrsRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`AttrsRef`].
pub struct AttrsIter<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for AttrsIter<'a> {
    type Item = (StrRef<'a>, ValueRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were validated by `decode`, so reading them again cannot fail; if it ever
        // did, ending the iteration is the safe answer.
        self.r.attr().ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// The content of a decoded node.
#[derive(Debug, Clone)]
pub enum ContentRef<'a> {
    /// No content.
    None,
    /// Child nodes (empty for `LIST_EMPTY`).
    Nodes(Vec<NodeRef<'a>>),
    /// Binary content (raw strings decode as this too: the wire does not tell them apart).
    Bytes(&'a [u8]),
    /// A token or packed string.
    Str(StrRef<'a>),
    /// A JID.
    Jid(JidRef<'a>),
}

/// A node borrowed from a frame.
#[derive(Debug, Clone)]
pub struct NodeRef<'a> {
    /// The tag.
    pub tag: StrRef<'a>,
    /// The attributes.
    pub attrs: AttrsRef<'a>,
    /// The content.
    pub content: ContentRef<'a>,
}

impl<'a> NodeRef<'a> {
    /// The value of the first attribute with this key.
    pub fn attr(&self, key: &str) -> Option<ValueRef<'a>> {
        self.attrs.get(key)
    }

    /// The child nodes (empty when the content is not a list).
    pub fn children(&self) -> &[Self] {
        match &self.content {
            ContentRef::Nodes(n) => n,
            _ => &[],
        }
    }

    /// The first child with this tag.
    pub fn child(&self, tag: &str) -> Option<&Self> {
        self.children().iter().find(|n| n.tag.eq_str(tag))
    }

    /// The owned node, copying binary content.
    pub fn to_node(&self) -> Node {
        self.to_node_with(&|b| Bytes::copy_from_slice(b))
    }

    /// The owned node, sharing binary content with `frame` instead of copying it. `frame` must
    /// be the buffer this node was decoded from; content outside it is copied.
    pub fn to_node_shared(&self, frame: &Bytes) -> Node {
        let range = frame.as_ptr_range();
        self.to_node_with(&|b: &[u8]| {
            let r = b.as_ptr_range();
            if range.start <= r.start && r.end <= range.end {
                frame.slice_ref(b)
            } else {
                Bytes::copy_from_slice(b)
            }
        })
    }

    fn to_node_with(&self, bytes: &dyn Fn(&[u8]) -> Bytes) -> Node {
        let content = match &self.content {
            ContentRef::None => Content::None,
            ContentRef::Nodes(n) => {
                Content::Nodes(n.iter().map(|c| c.to_node_with(bytes)).collect())
            }
            ContentRef::Bytes(b) => Content::Bytes(bytes(b)),
            ContentRef::Str(s) => Content::Text(s.to_node_str()),
            ContentRef::Jid(j) => Content::Jid(j.to_jid()),
        };
        Node {
            tag: self.tag.to_node_str(),
            attrs: self
                .attrs
                .iter()
                .map(|(k, v)| (k.to_node_str(), v.to_value()))
                .collect(),
            content,
        }
    }
}

/// Bytes whose two nibbles are both in the nibble alphabet (codes 0..=11).
static NIBBLE_PAIR_OK: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b >> 4) <= 11 && (b & 0x0F) <= 11;
        b += 1;
    }
    t
};

#[cold]
fn unexpected_end(at: usize) -> DecodeError {
    DecodeError::UnexpectedEnd { at }
}

#[cold]
fn too_large(len: usize, at: usize, left: usize) -> DecodeError {
    DecodeError::LengthTooLarge {
        len: len as u64,
        at,
        left,
    }
}

/// The error for a packed nibble string that failed the fast check: finds the first bad nibble.
#[cold]
pub(super) fn bad_nibble(bytes: &[u8], odd: bool, at: usize) -> DecodeError {
    let total = bytes.len() * 2 - usize::from(odd);
    let bad = bytes
        .iter()
        .flat_map(|&b| [b >> 4, b & 0x0F])
        .take(total)
        .enumerate()
        .find(|&(_, x)| x > 11);
    match bad {
        Some((i, nibble)) => DecodeError::InvalidNibble {
            nibble,
            at: at + 1 + i / 2,
        },
        None => DecodeError::InvalidNibble { nibble: 15, at },
    }
}

/// A cursor over the input; every read is bounds-checked.
#[derive(Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Nodes this frame may still decode into ([`MAX_NODES`]).
    nodes_left: usize,
}

pub(super) type Result<T> = std::result::Result<T, DecodeError>;

impl<'a> Reader<'a> {
    #[inline]
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn byte(&mut self) -> Result<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(unexpected_end(self.pos)),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let Some(bytes) = self.buf.get(self.pos..self.pos + N) else {
            return Err(unexpected_end(self.pos));
        };
        self.pos += N;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// `len` bytes announced by the length field at `at`.
    #[inline]
    fn take(&mut self, len: usize, at: usize) -> Result<&'a [u8]> {
        let Some(out) = self.buf.get(self.pos..self.pos.saturating_add(len)) else {
            return Err(too_large(len, at, self.left()));
        };
        self.pos += len;
        Ok(out)
    }

    /// List size for tag byte `b` read at `at`: `LIST_EMPTY`, `LIST_8` or `LIST_16`.
    #[inline]
    fn list_size(&mut self, b: u8, at: usize) -> Result<usize> {
        match b {
            tag::LIST_EMPTY => Ok(0),
            tag::LIST_8 => Ok(usize::from(self.byte()?)),
            tag::LIST_16 => Ok(usize::from(u16::from_be_bytes(self.array()?))),
            _ => Err(DecodeError::InvalidTag { tag: b, at }),
        }
    }

    /// Length of a binary value for tag byte `b` (`BINARY_8/20/32`), checked against the input.
    #[inline]
    fn binary(&mut self, b: u8) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = match b {
            tag::BINARY_8 => usize::from(self.byte()?),
            // 20-bit length in three bytes: only the low four bits of the first byte count.
            tag::BINARY_20 => {
                let [a, b, c] = self.array()?;
                (usize::from(a & 0x0F) << 16) | (usize::from(b) << 8) | usize::from(c)
            }
            _ => {
                let n = u32::from_be_bytes(self.array()?);
                usize::try_from(n).map_err(|_| DecodeError::LengthTooLarge {
                    len: u64::from(n),
                    at,
                    left: self.left(),
                })?
            }
        };
        self.take(len, at)
    }

    /// A string in any string position, for tag byte `b` read at `at`.
    #[inline]
    fn string(&mut self, b: u8, at: usize) -> Result<StrRef<'a>> {
        match b {
            // LIST_EMPTY in a string position is the empty string.
            tag::LIST_EMPTY => Ok(StrRef::Static("")),
            1..=235 => Ok(StrRef::Static(SINGLE_BYTE[usize::from(b)])),
            tag::DICTIONARY_0..=tag::DICTIONARY_3 => {
                let i = self.byte()?;
                Ok(StrRef::Static(
                    DOUBLE_BYTE[usize::from(b - tag::DICTIONARY_0)][usize::from(i)],
                ))
            }
            tag::BINARY_8 | tag::BINARY_20 | tag::BINARY_32 => {
                let bytes = self.binary(b)?;
                let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 {
                    at: self.pos - bytes.len(),
                })?;
                Ok(StrRef::Raw(s))
            }
            tag::NIBBLE_8 => self.packed(true),
            tag::HEX_8 => self.packed(false),
            _ => Err(DecodeError::InvalidTag { tag: b, at }),
        }
    }

    #[inline]
    fn read_string(&mut self) -> Result<StrRef<'a>> {
        let at = self.pos;
        let b = self.byte()?;
        self.string(b, at)
    }

    /// Packed string: length byte (bit 7 = odd), then two characters per byte. A nibble string
    /// may only use codes 0..=11, and the filler 15 only as the last nibble of an odd string.
    fn packed(&mut self, nibble: bool) -> Result<StrRef<'a>> {
        let at = self.pos;
        let l = self.byte()?;
        let odd = l & 0x80 != 0;
        let n = usize::from(l & 0x7F);
        if odd && n == 0 {
            // An odd length needs at least one byte to drop a character from.
            return Err(DecodeError::InvalidNibble { nibble: 0x0F, at });
        }
        let bytes = self.take(n, at)?;
        if nibble {
            // The final nibble of an odd string is dropped (the reference writes 15 there), so
            // only its high nibble is checked.
            let full = n - usize::from(odd);
            if !bytes[..full]
                .iter()
                .all(|&b| NIBBLE_PAIR_OK[usize::from(b)])
                || (odd && bytes[full] >> 4 > 11)
            {
                return Err(bad_nibble(bytes, odd, at));
            }
            Ok(StrRef::Nibble(bytes, odd))
        } else {
            Ok(StrRef::Hex(bytes, odd))
        }
    }

    /// A JID for tag byte `b` (`JID_PAIR`, `AD_JID`, `FB_JID`, `INTEROP_JID`) read at `at`.
    fn jid(&mut self, b: u8, at: usize) -> Result<JidRef<'a>> {
        match b {
            tag::JID_PAIR => {
                let user = self.read_string()?;
                let server = self.read_string()?;
                Ok(JidRef {
                    user,
                    server,
                    agent: 0,
                    device: None,
                    integrator: 0,
                })
            }
            tag::AD_JID => {
                let [domain, device] = self.array()?;
                let user = self.read_string()?;
                // Domain type: 0 s.whatsapp.net, 1 lid, 128 hosted, 129 hosted.lid; any other
                // value is an agent on s.whatsapp.net.
                let (server, agent) = match domain {
                    0 => ("s.whatsapp.net", 0),
                    1 => ("lid", 0),
                    128 => ("hosted", 0),
                    129 => ("hosted.lid", 0),
                    a => ("s.whatsapp.net", a),
                };
                Ok(JidRef {
                    user,
                    server: StrRef::Static(server),
                    agent,
                    device: Some(u16::from(device)),
                    integrator: 0,
                })
            }
            tag::FB_JID => {
                let user = self.read_string()?;
                let device = u16::from_be_bytes(self.array()?);
                let server = self.read_string()?;
                if !server.eq_str("msgr") {
                    return Err(DecodeError::InvalidJid { at });
                }
                Ok(JidRef {
                    user,
                    server,
                    agent: 0,
                    device: Some(device),
                    integrator: 0,
                })
            }
            _ => {
                let user = self.read_string()?;
                let device = u16::from_be_bytes(self.array()?);
                let integrator = u16::from_be_bytes(self.array()?);
                let server = self.read_string()?;
                if !server.eq_str("interop") {
                    return Err(DecodeError::InvalidJid { at });
                }
                Ok(JidRef {
                    user,
                    server,
                    agent: 0,
                    device: Some(device),
                    integrator,
                })
            }
        }
    }

    /// Validates a string without building it (attributes are read again lazily).
    #[inline]
    fn skip_string(&mut self) -> Result<()> {
        let at = self.pos;
        let b = self.byte()?;
        match b {
            // Tokens and the empty string: nothing more to check.
            0..=235 => Ok(()),
            tag::DICTIONARY_0..=tag::DICTIONARY_3 => self.byte().map(drop),
            _ => self.string(b, at).map(drop),
        }
    }

    /// Validates an attribute without building it.
    #[inline]
    fn skip_attr(&mut self) -> Result<()> {
        self.skip_string()?;
        let at = self.pos;
        let b = self.byte()?;
        match b {
            0..=235 => Ok(()),
            tag::DICTIONARY_0..=tag::DICTIONARY_3 => self.byte().map(drop),
            tag::JID_PAIR => {
                self.skip_string()?;
                self.skip_string()
            }
            tag::AD_JID => {
                self.array::<2>()?;
                self.skip_string()
            }
            tag::FB_JID | tag::INTEROP_JID => self.jid(b, at).map(drop),
            _ => self.string(b, at).map(drop),
        }
    }

    /// An attribute: key string, then a string or JID value.
    #[inline]
    fn attr(&mut self) -> Result<(StrRef<'a>, ValueRef<'a>)> {
        let key = self.read_string()?;
        let at = self.pos;
        let b = self.byte()?;
        let value = match b {
            tag::JID_PAIR | tag::AD_JID | tag::FB_JID | tag::INTEROP_JID => {
                ValueRef::Jid(self.jid(b, at)?)
            }
            _ => ValueRef::Str(self.string(b, at)?),
        };
        Ok((key, value))
    }

    /// A node's list header and tag: returns the tag, the number of attributes and whether
    /// content follows. The list size is `1 + 2·attributes (+ 1 with content)`.
    #[inline]
    fn head(&mut self, depth: usize) -> Result<(StrRef<'a>, usize, bool)> {
        let at = self.pos;
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep { at });
        }
        let b = self.byte()?;
        let size = self.list_size(b, at)?;
        if size == 0 {
            return Err(DecodeError::EmptyNode { at });
        }
        let tag = self.read_string()?;
        if tag.is_empty() {
            return Err(DecodeError::EmptyNode { at });
        }
        let count = (size - 1) / 2;
        // Refuse attribute counts the input cannot hold before allocating for them.
        if count.saturating_mul(MIN_ATTR_LEN) > self.left() {
            return Err(too_large(count, at, self.left()));
        }
        Ok((tag, count, size % 2 == 0))
    }

    /// A list of `count` children announced at `at`, checked against the input first.
    #[inline]
    fn children_capacity(&mut self, b: u8, at: usize) -> Result<usize> {
        let count = self.list_size(b, at)?;
        if count.saturating_mul(MIN_NODE_LEN) > self.left() {
            return Err(too_large(count, at, self.left()));
        }
        self.nodes_left = self
            .nodes_left
            .checked_sub(count)
            .ok_or(DecodeError::TooManyNodes { at })?;
        Ok(count)
    }

    /// A node as a borrowed view: attributes are validated and kept as their bytes.
    fn node(&mut self, depth: usize) -> Result<NodeRef<'a>> {
        let (tag, count, has_content) = self.head(depth)?;
        let start = self.pos;
        for _ in 0..count {
            self.skip_attr()?;
        }
        let attrs = AttrsRef {
            bytes: &self.buf[start..self.pos],
            count,
        };
        let content = if has_content {
            self.content(depth)?
        } else {
            ContentRef::None
        };
        Ok(NodeRef {
            tag,
            attrs,
            content,
        })
    }

    /// Content: a child list, bytes, a JID, or a token/packed string.
    fn content(&mut self, depth: usize) -> Result<ContentRef<'a>> {
        let at = self.pos;
        let b = self.byte()?;
        match b {
            tag::LIST_EMPTY | tag::LIST_8 | tag::LIST_16 => {
                let count = self.children_capacity(b, at)?;
                let mut children = Vec::with_capacity(count);
                for _ in 0..count {
                    children.push(self.node(depth + 1)?);
                }
                Ok(ContentRef::Nodes(children))
            }
            tag::BINARY_8 | tag::BINARY_20 | tag::BINARY_32 => {
                Ok(ContentRef::Bytes(self.binary(b)?))
            }
            tag::JID_PAIR | tag::AD_JID | tag::FB_JID | tag::INTEROP_JID => {
                Ok(ContentRef::Jid(self.jid(b, at)?))
            }
            _ => Ok(ContentRef::Str(self.string(b, at)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary::{encode_frame, to_vec};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn ping_iq() {
        let b = h(&("f80a1908ff021234".to_owned() + "11fa0003" + "0429" + "1657" + "f801f80156"));
        let n = decode(&b).unwrap();
        assert!(n.tag.eq_str("iq"));
        assert_eq!(n.attr("id").map(|v| v.to_value()), Some("1234".into()));
        let to = match n.attr("to") {
            Some(ValueRef::Jid(j)) => j.to_jid(),
            other => panic!("{other:?}"),
        };
        assert_eq!(to, Jid::server());
        assert_eq!(n.children().len(), 1);
        assert!(n.child("ping").is_some());
        let mut again = Vec::new();
        encode_frame(&n.to_node(), &mut again).unwrap();
        assert_eq!(&again[1..], &b[..]);
    }

    #[test]
    fn packed_strings() {
        let b = h("f801 ff82123f");
        let n = decode(&b).unwrap();
        assert_eq!(n.tag.as_str(), "123");
        assert!(n.tag == "123");
        let b = h("f801 fb82a1bf");
        let n = decode(&b).unwrap();
        assert_eq!(n.tag.to_string(), "A1B");
        assert_eq!(
            decode(&h("f801 ff82c23f")).unwrap_err(),
            DecodeError::InvalidNibble { nibble: 0xC, at: 4 }
        );
        assert_eq!(
            decode(&h("f801 ff80")).unwrap_err(),
            DecodeError::InvalidNibble { nibble: 0xF, at: 3 }
        );
    }

    #[test]
    fn bad_input() {
        use DecodeError::*;
        let cases: &[(&str, DecodeError)] = &[
            ("", UnexpectedEnd { at: 0 }),
            ("00", EmptyNode { at: 0 }),
            ("f8", UnexpectedEnd { at: 1 }),
            ("f801", UnexpectedEnd { at: 2 }),
            ("f80100", EmptyNode { at: 0 }),
            ("f0", InvalidTag { tag: 0xF0, at: 0 }),
            ("f801f4", InvalidTag { tag: 0xF4, at: 2 }),
            // 4 bytes claiming a list of 65535 children: refused before allocating.
            (
                "f802 19 f9ffff",
                LengthTooLarge {
                    len: 65535,
                    at: 3,
                    left: 0,
                },
            ),
            // BINARY_32 of 4 GiB.
            (
                "f802 19 feffffffff",
                LengthTooLarge {
                    len: 0xFFFF_FFFF,
                    at: 4,
                    left: 0,
                },
            ),
            ("f80119 00", TrailingBytes { at: 3, left: 1 }),
            ("f801 fc02c328", InvalidUtf8 { at: 4 }),
            ("f803 19 08 f8", InvalidTag { tag: 0xF8, at: 4 }),
            ("f802 19 f6 ff0112 0001 03", InvalidJid { at: 3 }),
            (
                "f9ffff 19",
                LengthTooLarge {
                    len: 32767,
                    at: 0,
                    left: 0,
                },
            ),
        ];
        for (hex, err) in cases {
            assert_eq!(decode(&h(hex)).unwrap_err(), *err, "{hex}");
        }
    }

    #[test]
    fn depth_limit() {
        let mut b = Vec::new();
        for _ in 0..=MAX_DEPTH + 1 {
            b.extend_from_slice(&[0xF8, 0x02, 0x19, 0xF8, 0x01]);
        }
        b.extend_from_slice(&[0xF8, 0x01, 0x19]);
        assert!(matches!(decode(&b), Err(DecodeError::TooDeep { .. })));
    }

    /// A root whose `lists` children each hold a list of 65,535 one-byte-tag leaves.
    fn wide(lists: usize) -> Vec<u8> {
        let mut b = vec![0xF8, 0x02, 0x19, 0xF8, lists as u8];
        for _ in 0..lists {
            b.extend_from_slice(&[0xF8, 0x02, 0x19, 0xF9, 0xFF, 0xFF]);
            for _ in 0..0xFFFF {
                b.extend_from_slice(&[0xF8, 0x01, 0x19]);
            }
        }
        b
    }

    #[test]
    fn node_budget() {
        // 2 + 2·65,535 = 131,072 nodes below the root: exactly the limit.
        let at_limit = wide(2);
        assert_eq!(decode(&at_limit).unwrap().children().len(), 2);
        assert!(crate::binary::decode_owned(&at_limit).is_ok());
        // With a third list the root's own three children leave no room for the second
        // list's leaves: refused by both decoders, at that list's header.
        let past = wide(3);
        for result in [
            decode(&past).map(|_| ()),
            crate::binary::decode_owned(&past).map(|_| ()),
        ] {
            assert!(
                matches!(result, Err(DecodeError::TooManyNodes { at }) if at == 5 + (6 + 3 * 0xFFFF) + 3),
                "{result:?}"
            );
        }
    }

    #[test]
    fn jid_forms() {
        let cases = [
            ("f802 19 f70005ff82123f", "123:5@s.whatsapp.net"),
            ("f802 19 f781 02 ff0115", "15:2@hosted.lid"),
            ("f802 19 f705 02 ff0115", "15_5:2@s.whatsapp.net"),
            ("f802 19 f6 ff0115 0102 cc", "15:258@msgr"),
        ];
        for (hex, text) in cases {
            let n = decode(&h(hex)).unwrap().to_node();
            assert_eq!(n.content, Content::Jid(text.parse().unwrap()), "{hex}");
        }
        // INTEROP_JID round trip through the encoder.
        let j: Jid = "7-15:3@interop".parse().unwrap();
        let b = to_vec(&Node::new("iq").attr("to", j.clone())).unwrap();
        assert_eq!(b[4], tag::INTEROP_JID);
        assert_eq!(decode(&b).unwrap().to_node().attr_jid("to"), Some(&j));
    }

    #[test]
    fn shared_bytes() {
        let frame = Bytes::from(to_vec(&Node::new("enc").bytes(vec![7u8; 300])).unwrap());
        let n = decode(&frame).unwrap().to_node_shared(&frame);
        let Content::Bytes(b) = &n.content else {
            panic!()
        };
        assert_eq!(b.len(), 300);
        assert!(frame.as_ptr_range().contains(&b.as_ptr()));
    }
}
