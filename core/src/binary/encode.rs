//! Encoder: [`Node`] to bytes, written into a caller's reusable buffer.
//!
//! The string rules follow the reference encoder of the test vectors (TRANSPORT.md §7.6, "BL
//! order"): the empty string is `0x00`; then a token; then nibble packing; then hex packing;
//! otherwise raw bytes. Unlike that encoder, a string is never re-parsed as a JID because it
//! contains `@`: JIDs are typed values ([`AttrValue::Jid`], [`Content::Jid`]).

use super::node::{AttrValue, Content, Node};
use super::tag;
use super::token;
use crate::jid::{Jid, Server};

/// Why a node could not be encoded. Encoding fails only on nodes that no wire form can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A node with an empty tag.
    #[error("node with an empty tag")]
    EmptyTag,
    /// More attributes than a list header can count (32767).
    #[error("{count} attributes is more than a node can hold")]
    TooManyAttributes {
        /// The number of attributes.
        count: usize,
    },
    /// More children than a list header can count (65535).
    #[error("{count} children is more than a list can hold")]
    TooManyChildren {
        /// The number of children.
        count: usize,
    },
    /// Bytes or a string longer than the 32-bit length field.
    #[error("{len} bytes is more than a binary length can hold")]
    TooLong {
        /// The length in bytes.
        len: usize,
    },
    /// Children nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH): the decoder would refuse them.
    #[error("nodes nested deeper than the limit")]
    TooDeep,
    /// A JID with a device on a server whose wire forms carry none (only `s.whatsapp.net`,
    /// `lid`, `hosted`, `hosted.lid`, `msgr` and `interop` JIDs have devices on the wire).
    #[error("JID server has no wire form with a device")]
    DeviceNotEncodable,
    /// A device number that the JID's wire form cannot carry (AD_JID devices are one byte).
    #[error("device {device} does not fit the JID wire form")]
    DeviceOutOfRange {
        /// The device number.
        device: u16,
    },
}

/// Appends the encoding of `node` to `out` (no flag byte). `out` is a caller's buffer, reused
/// across calls to avoid allocations; on error, `out` may hold a partial node.
pub fn encode(node: &Node, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    write_node(out, node, 0)
}

/// Appends a whole uncompressed frame to `out`: the flag byte `0x00`, then the node.
pub fn encode_frame(node: &Node, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(0);
    encode(node, out)
}

/// Encodes `node` into a new vector (flag byte not included).
pub fn to_vec(node: &Node) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    encode(node, &mut out)?;
    Ok(out)
}

fn write_node(out: &mut Vec<u8>, node: &Node, depth: usize) -> Result<(), EncodeError> {
    if depth > super::MAX_DEPTH {
        return Err(EncodeError::TooDeep);
    }
    if node.tag.is_empty() {
        return Err(EncodeError::EmptyTag);
    }
    // List size = tag + 2 per attribute + 1 when there is content.
    let has_content = !matches!(node.content, Content::None);
    let size = node
        .attrs
        .len()
        .checked_mul(2)
        .and_then(|n| n.checked_add(1 + usize::from(has_content)))
        .filter(|&n| n <= usize::from(u16::MAX))
        .ok_or(EncodeError::TooManyAttributes {
            count: node.attrs.len(),
        })?;
    write_list_start(out, size);
    write_str(out, &node.tag)?;
    for (key, value) in &node.attrs {
        write_str(out, key)?;
        match value {
            AttrValue::Str(s) => write_str(out, s)?,
            AttrValue::Jid(j) => write_jid(out, j)?,
        }
    }
    match &node.content {
        Content::None => {}
        Content::Nodes(children) => {
            if children.len() > usize::from(u16::MAX) {
                return Err(EncodeError::TooManyChildren {
                    count: children.len(),
                });
            }
            write_list_start(out, children.len());
            for child in children {
                write_node(out, child, depth + 1)?;
            }
        }
        Content::Bytes(b) => write_bytes(out, b)?,
        Content::Text(t) => write_str(out, t)?,
        Content::Jid(j) => write_jid(out, j)?,
    }
    Ok(())
}

/// List header: 0 → `LIST_EMPTY`; up to 255 → `LIST_8 n`; up to 65535 → `LIST_16 n16`.
/// Callers have checked `size <= 65535`.
pub(crate) fn write_list_start(out: &mut Vec<u8>, size: usize) {
    match size {
        0 => out.push(tag::LIST_EMPTY),
        1..=255 => out.extend_from_slice(&[tag::LIST_8, size as u8]),
        _ => {
            let [hi, lo] = (size as u16).to_be_bytes();
            out.extend_from_slice(&[tag::LIST_16, hi, lo]);
        }
    }
}

/// Binary length class, then the bytes: `< 2^8` → `BINARY_8`; `< 2^20` → `BINARY_20` (3 bytes,
/// top nibble 0); otherwise `BINARY_32`.
pub(crate) fn write_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), EncodeError> {
    let len = b.len();
    if len < 1 << 8 {
        out.extend_from_slice(&[tag::BINARY_8, len as u8]);
    } else if len < 1 << 20 {
        out.extend_from_slice(&[
            tag::BINARY_20,
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
        ]);
    } else {
        let n = u32::try_from(len).map_err(|_| EncodeError::TooLong { len })?;
        out.push(tag::BINARY_32);
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(b);
    Ok(())
}

/// A string: `""` → `0x00`; token; nibble-packed; hex-packed; raw.
#[inline(always)]
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), EncodeError> {
    if s.is_empty() {
        // The reference writes "" as token index 0, which is the byte LIST_EMPTY.
        out.push(tag::LIST_EMPTY);
        return Ok(());
    }
    if let Some(t) = token::lookup(s) {
        match t {
            token::Token::Single(b) => out.push(b),
            token::Token::Double(d, i) => out.extend_from_slice(&[tag::DICTIONARY_0 + d, i]),
        }
        return Ok(());
    }
    let b = s.as_bytes();
    if b.len() <= tag::PACKED_MAX {
        // One pass classifies the string for both alphabets.
        let class = b
            .iter()
            .fold(NIBBLE | HEX, |acc, &c| acc & CLASS[usize::from(c)]);
        if class & NIBBLE != 0 {
            write_packed(out, tag::NIBBLE_8, b, &NIBBLE_CODE);
            return Ok(());
        }
        if class & HEX != 0 {
            write_packed(out, tag::HEX_8, b, &HEX_CODE);
            return Ok(());
        }
    }
    write_bytes(out, b)
}

/// Character class bit: in the nibble alphabet `0-9 - .`.
const NIBBLE: u8 = 1;
/// Character class bit: in the hex alphabet `0-9 A-F` (uppercase only).
const HEX: u8 = 2;

/// Class bits of every byte.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_digit() {
            t[c] = NIBBLE | HEX;
        } else if b == b'-' || b == b'.' {
            t[c] = NIBBLE;
        } else if b >= b'A' && b <= b'F' {
            t[c] = HEX;
        }
        c += 1;
    }
    t
};

/// Nibble codes: `0-9` → 0..9, `-` → 10, `.` → 11 (other bytes never reach the table).
static NIBBLE_CODE: [u8; 256] = {
    let mut t = [15u8; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    t[b'-' as usize] = 10;
    t[b'.' as usize] = 11;
    t
};

/// Hex codes: `0-9` → 0..9, `A-F` → 10..15.
static HEX_CODE: [u8; 256] = {
    let mut t = [15u8; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'A' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

/// Packed string: tag, then `ceil(len/2)` with bit 7 set when `len` is odd, then two characters
/// per byte, high nibble first; an odd string ends with the filler nibble 15. `s` is non-empty,
/// at most 127 bytes and all in the alphabet of `code` (checked by the caller).
#[inline(always)]
fn write_packed(out: &mut Vec<u8>, tag: u8, s: &[u8], code: &[u8; 256]) {
    let half = s.len().div_ceil(2);
    let mut buf = [0u8; 2 + tag::PACKED_MAX.div_ceil(2)];
    buf[0] = tag;
    buf[1] = (half as u8) | (((s.len() % 2) as u8) << 7);
    let c = |x: u8| code[usize::from(x)];
    let mut pairs = s.chunks_exact(2);
    for (slot, p) in buf[2..].iter_mut().zip(pairs.by_ref()) {
        *slot = (c(p[0]) << 4) | c(p[1]);
    }
    if let [last] = pairs.remainder() {
        buf[1 + half] = (c(*last) << 4) | 0x0F;
    }
    out.extend_from_slice(&buf[..2 + half]);
}

/// A JID in its wire form (TRANSPORT.md §7.7). The form follows the reference encoder of the
/// vectors where it is lossless: an explicit device gives an AD_JID on the user servers
/// (`s.whatsapp.net` 0, `lid` 1, `hosted` 128, `hosted.lid` 129); a Messenger device an FB_JID;
/// an interop JID with a device or integrator an INTEROP_JID; everything else a JID_PAIR. An
/// agent of a `s.whatsapp.net` device goes in the AD_JID domain byte unless it collides with a
/// server value (0, 1, 128, 129); otherwise agents have no wire form and are dropped, as both
/// reference encoders do.
pub(crate) fn write_jid(out: &mut Vec<u8>, j: &Jid) -> Result<(), EncodeError> {
    let server = j.server_part();
    match (j.explicit_device(), server) {
        (Some(device), Server::User | Server::Lid | Server::Hosted | Server::HostedLid) => {
            let domain = match server {
                Server::Lid => 1,
                Server::Hosted => 128,
                Server::HostedLid => 129,
                // Any other domain byte means "an agent on s.whatsapp.net" to a decoder, so an
                // agent that is not one of the server values goes there and round-trips.
                _ => match j.agent() {
                    0 | 1 | 128 | 129 => 0,
                    agent => agent,
                },
            };
            let device =
                u8::try_from(device).map_err(|_| EncodeError::DeviceOutOfRange { device })?;
            out.extend_from_slice(&[tag::AD_JID, domain, device]);
            write_str(out, j.user_part())
        }
        (Some(device), Server::Messenger) => {
            out.push(tag::FB_JID);
            write_str(out, j.user_part())?;
            out.extend_from_slice(&device.to_be_bytes());
            write_str(out, server.as_str())
        }
        (device, Server::Interop) if device.is_some() || j.integrator() != 0 => {
            out.push(tag::INTEROP_JID);
            write_str(out, j.user_part())?;
            out.extend_from_slice(&j.device().to_be_bytes());
            out.extend_from_slice(&j.integrator().to_be_bytes());
            write_str(out, server.as_str())
        }
        (Some(_), _) => Err(EncodeError::DeviceNotEncodable),
        _ => {
            out.push(tag::JID_PAIR);
            // An empty user (server-only JID) is LIST_EMPTY, which write_str gives for "".
            write_str(out, j.user_part())?;
            write_server(out, server)
        }
    }
}

/// A JID_PAIR server: the known servers that are single-byte tokens are written without a
/// lookup (the test `known_server_tokens` checks these bytes against the string rules).
#[inline]
fn write_server(out: &mut Vec<u8>, server: &Server) -> Result<(), EncodeError> {
    let token = match server {
        Server::User => 0x03,
        Server::Group => 0x1C,
        Server::Broadcast => 0x0D,
        Server::Lid => 0x76,
        Server::Call => 0x64,
        Server::Messenger => 0xCC,
        other => return write_str(out, other.as_str()),
    };
    out.push(token);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex::FromHex;

    macro_rules! enc {
        ($node:expr, $hex:expr) => {{
            let want = Vec::<u8>::from_hex($hex.replace(' ', "")).unwrap();
            assert_eq!(hex::encode(to_vec(&$node).unwrap()), hex::encode(want));
        }};
    }

    #[test]
    fn strings() {
        enc!(Node::new("123"), "f801 ff82123f");
        enc!(Node::new("A1B"), "f801 fb82a1bf");
        enc!(Node::new("3EB0"), "f801 fb023eb0");
        enc!(Node::new("abc"), "f801 fc03616263");
        enc!(
            Node::new("iq").attr("id", "").attr("type", "get"),
            "f805 19 08 00 04 29"
        );
    }

    #[test]
    fn jids() {
        let j = |s: &str| s.parse::<Jid>().unwrap();
        enc!(
            Node::new("iq").attr("to", j("123:5@s.whatsapp.net")),
            "f803 19 11 f70005ff82123f"
        );
        enc!(
            Node::new("iq").attr("to", j("123:5@lid")),
            "f803 19 11 f70105ff82123f"
        );
        enc!(
            Node::new("iq").attr("to", Jid::server()),
            "f803 19 11 fa0003"
        );
        enc!(
            Node::new("iq").attr("to", j("1203@g.us")),
            "f803 19 11 faff0212031c"
        );
        enc!(
            Node::new("iq").attr("to", j("0@c.us")),
            "f803 19 11 fa2dfc04632e7573"
        );
        enc!(
            Node::new("iq").attr("to", j("1555:3@hosted")),
            "f803 19 11 f780 03 ff021555"
        );
    }

    #[test]
    fn agents_in_the_domain_byte() {
        let j = |s: &str| s.parse::<Jid>().unwrap();
        // Agent 5 has its own domain byte and survives; agent 1 would read as a LID: dropped.
        enc!(
            Node::new("iq").attr("to", j("1555_5:2@s.whatsapp.net")),
            "f803 19 11 f705 02 ff021555"
        );
        enc!(
            Node::new("iq").attr("to", j("1555_1:2@s.whatsapp.net")),
            "f803 19 11 f700 02 ff021555"
        );
    }

    #[test]
    fn known_server_tokens() {
        for server in [
            Server::User,
            Server::LegacyUser,
            Server::Group,
            Server::Broadcast,
            Server::Lid,
            Server::Newsletter,
            Server::Call,
            Server::Hosted,
            Server::HostedLid,
            Server::Interop,
            Server::Bot,
            Server::Messenger,
        ] {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            write_server(&mut fast, &server).unwrap();
            write_str(&mut slow, server.as_str()).unwrap();
            assert_eq!(fast, slow, "{server}");
        }
    }

    #[test]
    fn ping_iq() {
        let n = Node::new("iq")
            .attr("id", "1234")
            .attr("to", Jid::server())
            .attr("type", "get")
            .attr("xmlns", "w:p")
            .children([Node::new("ping")]);
        let mut out = Vec::new();
        encode_frame(&n, &mut out).unwrap();
        // TRANSPORT.md §7.9.
        assert_eq!(
            hex::encode(out),
            "00f80a1908ff021234".to_owned() + "11fa0003" + "0429" + "1657" + "f801f80156"
        );
    }

    #[test]
    fn limits() {
        let deep = (0..=crate::binary::MAX_DEPTH + 1)
            .fold(Node::new("x"), |n, _| Node::new("x").children([n]));
        assert_eq!(to_vec(&deep), Err(EncodeError::TooDeep));
        assert_eq!(to_vec(&Node::new("")), Err(EncodeError::EmptyTag));
        let many = Node::new("x").children((0..70_000).map(|_| Node::new("y")));
        assert_eq!(
            to_vec(&many),
            Err(EncodeError::TooManyChildren { count: 70_000 })
        );
        let big_dev: Jid = "1:300@s.whatsapp.net".parse().unwrap();
        assert_eq!(
            to_vec(&Node::new("x").attr("to", big_dev)),
            Err(EncodeError::DeviceOutOfRange { device: 300 })
        );
        let group_dev: Jid = "1-2:3@g.us".parse().unwrap();
        assert_eq!(
            to_vec(&Node::new("x").attr("to", group_dev)),
            Err(EncodeError::DeviceNotEncodable)
        );
    }
}
