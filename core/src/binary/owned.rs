//! Decoder: bytes straight to an owned [`Node`], in one pass, with the checks of [`decode`].
//!
//! This is the decoder the connection machine runs on every incoming frame, so it is built for
//! speed without giving up any check: it reads the same bytes in the same order as the borrowed
//! decoder and fails with the same error at the same byte (a test holds the two to that).
//!
//! Where the time goes, and what keeps it low:
//! - strings: tokens (most tags, keys and many values) are clones of owned strings prepared at
//!   compile time, a copy of 24 bytes; packed strings are unpacked two characters per byte from
//!   a table; every string of up to 24 bytes is stored inline, so only longer ones allocate;
//! - attributes: the first two live inside the node ([`Attrs`]), so an `<item jid index>` or
//!   `<enc v type>` costs no allocation;
//! - JIDs: a server written as a token becomes its [`Server`] through a table, without
//!   comparing names;
//! - binary content is shared with the frame's buffer ([`decode_owned_shared`]) or copied.
//!
//! [`decode`]: super::decode

use bytes::Bytes;

use super::attrs::Attrs;
use super::decode::{HEX_CHARS, MIN_ATTR_LEN, MIN_NODE_LEN, Result, bad_nibble};
use super::node::{AttrValue, Content, Node, NodeStr};
use super::token::{DOUBLE_BYTE, SINGLE_BYTE};
use super::{DecodeError, MAX_DEPTH, MAX_NODES, tag};
use crate::jid::{Jid, Server};

/// Decodes one node from `buf` (the bytes after the flag byte) straight into an owned [`Node`]
/// (one pass, no intermediate view), refusing trailing bytes. Binary content is copied.
pub fn decode_owned(buf: &[u8]) -> Result<Node> {
    finish(buf, &Copied)
}

/// Like [`decode_owned`], but binary content shares `frame`'s buffer instead of being copied:
/// the decoder of the receive path, where the frame was just decrypted into its own buffer.
pub fn decode_owned_shared(frame: &Bytes) -> Result<Node> {
    finish(frame, &Shared(frame))
}

fn finish(buf: &[u8], sink: &impl BytesSink) -> Result<Node> {
    let mut r = Cur {
        buf,
        pos: 0,
        error: DecodeError::EmptyFrame,
        nodes_left: MAX_NODES,
    };
    // The root is built in the result itself, which saves copying it out at the end.
    let mut result = Ok(EMPTY_NODE);
    if let Ok(root) = &mut result {
        if node(&mut r, 0, sink, root).is_err() {
            result = Err(r.error);
        } else if r.pos != buf.len() {
            result = Err(DecodeError::TrailingBytes {
                at: r.pos,
                left: buf.len() - r.pos,
            });
        }
    }
    result
}

/// Decoding stopped; the reason waits in [`Cur::error`]. Errors are rare and the decoder's
/// calls are many: a zero-sized error keeps every step's result in a register, where a
/// [`DecodeError`] would go through memory at each call.
struct Stop;

/// The result of one decoding step.
type Step<T> = std::result::Result<T, Stop>;

/// A cursor over the input; every read is bounds-checked, and failures leave their error here.
/// The checks and errors are those of the borrowed decoder's reader.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
    error: DecodeError,
    /// Nodes this frame may still decode into ([`MAX_NODES`]).
    nodes_left: usize,
}

impl<'a> Cur<'a> {
    /// Records `error` and stops.
    #[cold]
    fn fail(&mut self, error: DecodeError) -> Stop {
        self.error = error;
        Stop
    }

    #[cold]
    fn too_large(&mut self, len: usize, at: usize) -> Stop {
        let left = self.left();
        self.fail(DecodeError::LengthTooLarge {
            len: len as u64,
            at,
            left,
        })
    }

    #[inline]
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn byte(&mut self) -> Step<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.fail(DecodeError::UnexpectedEnd { at: self.pos })),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let Some(bytes) = self.buf.get(self.pos..self.pos + N) else {
            return Err(self.fail(DecodeError::UnexpectedEnd { at: self.pos }));
        };
        self.pos += N;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// `len` bytes announced by the length field at `at`.
    #[inline]
    fn take(&mut self, len: usize, at: usize) -> Step<&'a [u8]> {
        let Some(out) = self.buf.get(self.pos..self.pos.saturating_add(len)) else {
            return Err(self.too_large(len, at));
        };
        self.pos += len;
        Ok(out)
    }

    /// List size for tag byte `b` read at `at`: `LIST_EMPTY`, `LIST_8` or `LIST_16`.
    #[inline]
    fn list_size(&mut self, b: u8, at: usize) -> Step<usize> {
        match b {
            tag::LIST_EMPTY => Ok(0),
            tag::LIST_8 => Ok(usize::from(self.byte()?)),
            tag::LIST_16 => Ok(usize::from(u16::from_be_bytes(self.array()?))),
            _ => Err(self.fail(DecodeError::InvalidTag { tag: b, at })),
        }
    }

    /// A child list's size for tag byte `b` read at `at`, checked against the input before
    /// anything is allocated for it.
    #[inline]
    fn children_capacity(&mut self, b: u8, at: usize) -> Step<usize> {
        let count = self.list_size(b, at)?;
        if count.saturating_mul(MIN_NODE_LEN) > self.left() {
            return Err(self.too_large(count, at));
        }
        match self.nodes_left.checked_sub(count) {
            Some(left) => self.nodes_left = left,
            None => return Err(self.fail(DecodeError::TooManyNodes { at })),
        }
        Ok(count)
    }

    /// A binary value for tag byte `b` (`BINARY_8/20/32`), its length checked against the
    /// input.
    #[inline]
    fn binary(&mut self, b: u8) -> Step<&'a [u8]> {
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
                match usize::try_from(n) {
                    Ok(n) => n,
                    Err(_) => {
                        let left = self.left();
                        return Err(self.fail(DecodeError::LengthTooLarge {
                            len: u64::from(n),
                            at,
                            left,
                        }));
                    }
                }
            }
        };
        self.take(len, at)
    }
}

/// The node every decoded node starts as, filled in place: a node is about 250 bytes (two
/// attributes inline, each with room for a JID), and building it where it finally lives
/// instead of returning it up the recursion saves copying it several times.
const EMPTY_NODE: Node = Node {
    tag: NodeStr::const_new(""),
    attrs: Attrs::new(),
    content: Content::None,
};

/// Puts `value` in `slot`, which holds an empty value with nothing to free: a part of an
/// [`EMPTY_NODE`] or [`EMPTY_ATTR`] not yet filled. Skipping the drop of the old value lets the
/// new one be written straight into place; with the drop in between, it is built aside and
/// copied, and reading it back right after it was written stalls the processor.
#[inline(always)]
fn put<T>(slot: &mut T, value: T) {
    std::mem::forget(std::mem::replace(slot, value));
}

/// How binary content becomes owned [`Bytes`].
trait BytesSink {
    fn bytes(&self, b: &[u8]) -> Bytes;
}

/// Binary content is copied out of the input.
struct Copied;

impl BytesSink for Copied {
    #[inline]
    fn bytes(&self, b: &[u8]) -> Bytes {
        Bytes::copy_from_slice(b)
    }
}

/// Binary content is a slice of the frame (`b` always lies inside it: the reader only hands
/// out slices of its input, which is this frame).
struct Shared<'f>(&'f Bytes);

impl BytesSink for Shared<'_> {
    #[inline]
    fn bytes(&self, b: &[u8]) -> Bytes {
        self.0.slice_ref(b)
    }
}

/// A node into `out` (an [`EMPTY_NODE`]): list header, tag, attributes, then content when the
/// list size is even.
fn node(r: &mut Cur<'_>, depth: usize, sink: &impl BytesSink, out: &mut Node) -> Step<()> {
    let at = r.pos;
    if depth > MAX_DEPTH {
        return Err(r.fail(DecodeError::TooDeep { at }));
    }
    let b = r.byte()?;
    // The list size is `1 + 2·attributes (+ 1 with content)`; a node needs at least its tag.
    let size = r.list_size(b, at)?;
    if size == 0 {
        return Err(r.fail(DecodeError::EmptyNode { at }));
    }
    string_into(r, &mut out.tag)?;
    if out.tag.is_empty() {
        return Err(r.fail(DecodeError::EmptyNode { at }));
    }
    let count = (size - 1) / 2;
    // Refuse attribute counts the input cannot hold before allocating for them.
    if count.saturating_mul(MIN_ATTR_LEN) > r.left() {
        return Err(r.too_large(count, at));
    }
    // Made empty all at once and filled in place, like the node: an attribute is 80 bytes,
    // and returning it through the call chain costs more than reading it.
    out.attrs.extend((0..count).map(|_| EMPTY_ATTR));
    for (key, value) in out.attrs.iter_mut() {
        string_into(r, key)?;
        value_into(r, value)?;
    }
    if size % 2 == 0 {
        content(r, depth, sink, &mut out.content)?;
    }
    Ok(())
}

/// Content into `out`: a child list, bytes, a JID, or a string (token or packed; raw strings
/// are bytes).
fn content(r: &mut Cur<'_>, depth: usize, sink: &impl BytesSink, out: &mut Content) -> Step<()> {
    let at = r.pos;
    let b = r.byte()?;
    match b {
        tag::LIST_EMPTY | tag::LIST_8 | tag::LIST_16 => {
            // Checked against the bytes left before the vector is allocated.
            let count = r.children_capacity(b, at)?;
            // The list is put in place first, then its nodes are made empty all at once
            // (`push` would build each aside and copy it in) and filled where they are.
            put(out, Content::Nodes(Vec::with_capacity(count)));
            if let Content::Nodes(children) = out {
                children.resize_with(count, || EMPTY_NODE);
                for child in children.iter_mut() {
                    node(r, depth + 1, sink, child)?;
                }
            }
        }
        tag::BINARY_8 | tag::BINARY_20 | tag::BINARY_32 => {
            put(out, Content::Bytes(sink.bytes(r.binary(b)?)));
        }
        tag::JID_PAIR | tag::AD_JID | tag::FB_JID | tag::INTEROP_JID => {
            jid_into(r, b, at, out, Content::Jid)?;
        }
        _ => put(out, Content::Text(string_of(r, b, at)?)),
    }
    Ok(())
}

/// The attribute every decoded attribute starts as.
const EMPTY_ATTR: (NodeStr, AttrValue) = (
    NodeStr::const_new(""),
    AttrValue::Str(NodeStr::const_new("")),
);

/// An attribute value into `out` (an empty string): a JID for the JID tags, else a string.
#[inline]
fn value_into(r: &mut Cur<'_>, out: &mut AttrValue) -> Step<()> {
    let at = r.pos;
    let b = r.byte()?;
    match b {
        tag::JID_PAIR | tag::AD_JID | tag::FB_JID | tag::INTEROP_JID => {
            jid_into(r, b, at, out, AttrValue::Jid)
        }
        _ => match out {
            AttrValue::Str(s) => string_of_into(r, b, at, s),
            AttrValue::Jid(_) => Ok(()),
        },
    }
}

/// A string in any string position (tag, key, value) into `out` (an empty string).
///
/// Strings are written into their place rather than returned up the calls: a value returned
/// through memory and copied on is read back right after being written, and when the reads and
/// writes differ in width the processor stalls on each one.
#[inline(always)]
fn string_into(r: &mut Cur<'_>, out: &mut NodeStr) -> Step<()> {
    let at = r.pos;
    let b = r.byte()?;
    string_of_into(r, b, at, out)
}

/// A string for tag byte `b` read at `at`.
fn string_of(r: &mut Cur<'_>, b: u8, at: usize) -> Step<NodeStr> {
    let mut s = NodeStr::const_new("");
    string_of_into(r, b, at, &mut s)?;
    Ok(s)
}

/// A string for tag byte `b` read at `at`, into `out` (an empty string).
#[inline(always)]
fn string_of_into(r: &mut Cur<'_>, b: u8, at: usize, out: &mut NodeStr) -> Step<()> {
    // Tags, keys and most values are single-byte tokens: that case is inlined everywhere.
    match SINGLE_STRS.get(usize::from(b)) {
        Some(token) => {
            put(out, token.clone());
            Ok(())
        }
        None => other_string_into(r, b, at, out),
    }
}

/// A string that is not a single-byte token, into `out` (an empty string).
#[inline(never)]
fn other_string_into(r: &mut Cur<'_>, b: u8, at: usize, out: &mut NodeStr) -> Step<()> {
    match b {
        // Single-byte tokens; 0 (LIST_EMPTY) in a string position is the empty string, which is
        // entry 0 of the table.
        0..=235 => put(out, SINGLE_STRS[usize::from(b)].clone()),
        tag::DICTIONARY_0..=tag::DICTIONARY_3 => {
            let i = r.byte()?;
            put(
                out,
                DOUBLE_STRS[usize::from(b - tag::DICTIONARY_0)][usize::from(i)].clone(),
            );
        }
        tag::BINARY_8 | tag::BINARY_20 | tag::BINARY_32 => {
            let bytes = r.binary(b)?;
            let Ok(s) = std::str::from_utf8(bytes) else {
                return Err(r.fail(DecodeError::InvalidUtf8 {
                    at: r.pos - bytes.len(),
                }));
            };
            put(out, NodeStr::new(s));
        }
        tag::NIBBLE_8 => packed_into(r, true, out)?,
        tag::HEX_8 => packed_into(r, false, out)?,
        _ => return Err(r.fail(DecodeError::InvalidTag { tag: b, at })),
    }
    Ok(())
}

/// A JID for tag byte `b` (`JID_PAIR`, `AD_JID`, `FB_JID`, `INTEROP_JID`) read at `at`, into
/// `out` as `wrap(jid)`. Reads and checks exactly what the borrowed decoder's `jid` does, in
/// the same order.
#[inline(always)]
fn jid_into<T>(
    r: &mut Cur<'_>,
    b: u8,
    at: usize,
    out: &mut T,
    wrap: impl FnOnce(Jid) -> T,
) -> Step<()> {
    let mut user = NodeStr::const_new("");
    let jid = match b {
        tag::JID_PAIR => {
            string_into(r, &mut user)?;
            Jid::from_parts(user, server(r)?, 0, None, 0)
        }
        tag::AD_JID => {
            let [domain, device] = r.array()?;
            string_into(r, &mut user)?;
            // Domain type: 0 s.whatsapp.net, 1 lid, 128 hosted, 129 hosted.lid; any other
            // value is an agent on s.whatsapp.net.
            let (server, agent) = match domain {
                0 => (Server::User, 0),
                1 => (Server::Lid, 0),
                128 => (Server::Hosted, 0),
                129 => (Server::HostedLid, 0),
                a => (Server::User, a),
            };
            Jid::from_parts(user, server, agent, Some(u16::from(device)), 0)
        }
        tag::FB_JID => {
            string_into(r, &mut user)?;
            let device = u16::from_be_bytes(r.array()?);
            // A Messenger JID names its server, and only `msgr` is allowed.
            if server(r)? != Server::Messenger {
                return Err(r.fail(DecodeError::InvalidJid { at }));
            }
            Jid::from_parts(user, Server::Messenger, 0, Some(device), 0)
        }
        _ => {
            string_into(r, &mut user)?;
            let device = u16::from_be_bytes(r.array()?);
            let integrator = u16::from_be_bytes(r.array()?);
            // Likewise, an interop JID's server must be `interop`.
            if server(r)? != Server::Interop {
                return Err(r.fail(DecodeError::InvalidJid { at }));
            }
            Jid::from_parts(user, Server::Interop, 0, Some(device), integrator)
        }
    };
    put(out, wrap(jid));
    Ok(())
}

/// The server string of a JID. Known servers are tokens on the wire and map through
/// [`TOKEN_SERVERS`]; any other string is looked up by name.
#[inline]
fn server(r: &mut Cur<'_>) -> Step<Server> {
    let at = r.pos;
    let b = r.byte()?;
    if let Some(&code) = TOKEN_SERVERS.get(usize::from(b)) {
        if code != 0 {
            return Ok(known_server(code));
        }
    }
    let name = string_of(r, b, at)?;
    Ok(Server::from_name(&name))
}

/// A packed string (nibble or hex): length byte (bit 7 = odd), then two characters per byte.
/// Checked exactly as the borrowed decoder's `packed` checks it (same rules, same errors), then
/// unpacked.
#[inline]
fn packed_into(r: &mut Cur<'_>, nibble: bool, out: &mut NodeStr) -> Step<()> {
    let at = r.pos;
    let l = r.byte()?;
    let odd = l & 0x80 != 0;
    let n = usize::from(l & 0x7F);
    if odd && n == 0 {
        // An odd length needs at least one byte to drop a character from.
        return Err(r.fail(DecodeError::InvalidNibble { nibble: 0x0F, at }));
    }
    let bytes = r.take(n, at)?;
    let pairs = if nibble { &NIBBLE_PAIRS } else { &HEX_PAIRS };
    let total = n * 2 - usize::from(odd);
    // A nibble string may only use codes 0..=11. Codes 12..=15 unpack to 0xFF, which is not
    // UTF-8, so the check that makes the unpacked bytes a `str` is also the nibble check. The
    // final nibble of an odd string is dropped unread (the reference writes the filler 15
    // there), as `total` leaves it out.
    if total <= INLINE_STR {
        // Ids, phone numbers and timestamps fit the inline size. Characters are gathered in
        // words and stored whole: they are read back at once right after, and a wide read of
        // many narrow stores stalls the processor.
        let mut buf = [0u8; INLINE_STR];
        for (out, four) in buf.chunks_exact_mut(8).zip(bytes.chunks(4)) {
            let mut w = 0u64;
            for (i, &b) in four.iter().enumerate() {
                w |= u64::from(pairs[usize::from(b)]) << (16 * i);
            }
            out.copy_from_slice(&w.to_le_bytes());
        }
        return match std::str::from_utf8(buf.get(..total).unwrap_or_default()) {
            // Copied into place: a string made aside is read back at once to be moved, and
            // that read stalls on the writes that just made it.
            Ok(s) => {
                out.push_str(s);
                Ok(())
            }
            Err(_) => Err(r.fail(bad_nibble(bytes, odd, at))),
        };
    }
    // Longer strings (at most 127 bytes packed) unpack on a larger buffer.
    let mut buf = [0u8; 2 * 127];
    for (out, &b) in buf.chunks_exact_mut(2).zip(bytes) {
        out.copy_from_slice(&pairs[usize::from(b)].to_le_bytes());
    }
    match std::str::from_utf8(buf.get(..total).unwrap_or_default()) {
        Ok(s) => {
            put(out, NodeStr::new(s));
            Ok(())
        }
        Err(_) => Err(r.fail(bad_nibble(bytes, odd, at))),
    }
}

/// Longest string a [`NodeStr`] holds without allocating.
const INLINE_STR: usize = 24;

/// The two characters of every byte of a nibble-packed string, first in the low byte; a nibble
/// with no character (12..=15) gives 0xFF, which makes the string fail the UTF-8 check.
static NIBBLE_PAIRS: [u16; 256] = pairs(b"0123456789-.\xFF\xFF\xFF\xFF");
/// The two characters of every byte of a hex-packed string.
static HEX_PAIRS: [u16; 256] = pairs(HEX_CHARS);

const fn pairs(alphabet: &[u8; 16]) -> [u16; 256] {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = u16::from_le_bytes([alphabet[b >> 4], alphabet[b & 0x0F]]);
        b += 1;
    }
    t
}

/// The single-byte tokens as owned strings, built at compile time: a token is then a 24-byte
/// copy instead of a string construction.
static SINGLE_STRS: [NodeStr; 236] = node_strs(&SINGLE_BYTE);
/// The double-byte dictionaries as owned strings.
static DOUBLE_STRS: [[NodeStr; 256]; 4] = [
    node_strs(&DOUBLE_BYTE[0]),
    node_strs(&DOUBLE_BYTE[1]),
    node_strs(&DOUBLE_BYTE[2]),
    node_strs(&DOUBLE_BYTE[3]),
];

const fn node_strs<const N: usize>(tokens: &[&'static str; N]) -> [NodeStr; N] {
    let mut out = [const { NodeStr::const_new("") }; N];
    let mut i = 0;
    while i < N {
        // Assigning would drop the old value, which a constant cannot do; the old value is an
        // inline empty string with nothing to free, so it is forgotten instead.
        std::mem::forget(std::mem::replace(
            &mut out[i],
            NodeStr::const_new(tokens[i]),
        ));
        i += 1;
    }
    out
}

/// The servers a token can name, in the order of their codes in [`TOKEN_SERVERS`] (code =
/// index + 1).
const SERVER_NAMES: [&str; 12] = [
    "s.whatsapp.net",
    "c.us",
    "g.us",
    "broadcast",
    "lid",
    "newsletter",
    "call",
    "hosted",
    "hosted.lid",
    "interop",
    "bot",
    "msgr",
];

/// The server named by a code of [`TOKEN_SERVERS`].
fn known_server(code: u8) -> Server {
    match code {
        1 => Server::User,
        2 => Server::LegacyUser,
        3 => Server::Group,
        4 => Server::Broadcast,
        5 => Server::Lid,
        6 => Server::Newsletter,
        7 => Server::Call,
        8 => Server::Hosted,
        9 => Server::HostedLid,
        10 => Server::Interop,
        11 => Server::Bot,
        _ => Server::Messenger,
    }
}

/// For each single-byte token, the code of the server it names (see [`SERVER_NAMES`]), or 0.
static TOKEN_SERVERS: [u8; 236] = {
    let mut t = [0u8; 236];
    let mut i = 0;
    while i < t.len() {
        let mut j = 0;
        while j < SERVER_NAMES.len() {
            if const_eq(SINGLE_BYTE[i], SERVER_NAMES[j]) {
                t[i] = j as u8 + 1;
            }
            j += 1;
        }
        i += 1;
    }
    t
};

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary::{decode, to_vec};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// The owned decoders give what the borrowed view gives, or fail with the same error.
    fn agree(bytes: &[u8]) {
        let view = decode(bytes);
        let owned = decode_owned(bytes);
        let shared = decode_owned_shared(&Bytes::copy_from_slice(bytes));
        match view {
            Ok(v) => {
                let want = v.to_node();
                assert_eq!(owned.as_ref(), Ok(&want), "{}", hex::encode(bytes));
                assert_eq!(shared.as_ref(), Ok(&want), "{}", hex::encode(bytes));
            }
            Err(e) => {
                assert_eq!(owned.err(), Some(e), "{}", hex::encode(bytes));
                assert_eq!(shared.err(), Some(e), "{}", hex::encode(bytes));
            }
        }
    }

    #[test]
    fn tables() {
        for (i, s) in SINGLE_BYTE.iter().enumerate() {
            assert_eq!(SINGLE_STRS[i], *s);
            let want = Server::known(s).map(|k| k.as_str().to_owned());
            let got =
                (TOKEN_SERVERS[i] != 0).then(|| known_server(TOKEN_SERVERS[i]).as_str().to_owned());
            assert_eq!(got, want, "token {i} {s:?}");
        }
        for (d, table) in DOUBLE_BYTE.iter().enumerate() {
            for (i, s) in table.iter().enumerate() {
                assert_eq!(DOUBLE_STRS[d][i], *s);
            }
        }
        for (code, name) in SERVER_NAMES.iter().enumerate() {
            assert_eq!(known_server(code as u8 + 1).as_str(), *name);
        }
    }

    #[test]
    fn same_as_the_view() {
        let message = Node::new("message")
            .attr("to", Jid::user("15551234567"))
            .attr("id", "3EB0C767D0D1A6F8A5A1")
            .attr("t", "1700000000")
            .attr("notify", "Alice Example, Inc. and a name longer than 24")
            .children([
                Node::new("enc").attr("v", "2").bytes(vec![1u8; 300]),
                Node::new("participant").attr("jid", "7-15:3@interop".parse::<Jid>().unwrap()),
                Node::new("x").text("abc"),
                Node::new("y").attr("server", Jid::new("u", Server::from_name("example"))),
                Node::new("z").children([]),
            ]);
        agree(&to_vec(&message).unwrap());
        for hex in [
            "f80a1908ff021234 11fa0003 0429 1657 f801f80156",
            "f801 ff82123f",
            "f801 fb82a1bf",
            "f801 ff82c23f",
            "f801 ff80",
            "",
            "00",
            "f8",
            "f80100",
            "f801f4",
            "f802 19 f9ffff",
            "f802 19 feffffffff",
            "f80119 00",
            "f801 fc02c328",
            "f803 19 08 f8",
            "f802 19 f6 ff0112 0001 03",
            "f802 19 f6 ff0112 0001 fc046d736772",
            "f802 19 f5 ff0112 0001 0002 fc05696e7465",
            "f9ffff 19",
            "f802 19 f70005ff82123f",
            "f802 19 f781 02 ff0115",
            "f802 19 f705 02 ff0115",
            "f802 19 f6 ff0115 0102 cc",
            "f802 19 fa ff0115 fc03616263",
            "f803 19 ec05 fc0161",
        ] {
            agree(&h(hex));
        }
    }

    /// Every input of the `binary_decode` fuzz corpus, and every prefix of the first ones.
    #[test]
    fn fuzz_corpus_agrees() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fuzz/corpus/binary_decode");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            agree(&bytes);
            if n < 200 {
                for cut in 0..bytes.len() {
                    agree(&bytes[..cut]);
                }
            }
            n += 1;
        }
        assert!(n > 0);
    }

    #[test]
    fn shared_bytes() {
        let frame = Bytes::from(to_vec(&Node::new("enc").bytes(vec![7u8; 300])).unwrap());
        let n = decode_owned_shared(&frame).unwrap();
        let Content::Bytes(b) = &n.content else {
            panic!()
        };
        assert_eq!(b.len(), 300);
        assert!(frame.as_ptr_range().contains(&b.as_ptr()));
    }
}
