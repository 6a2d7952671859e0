//! The WhatsApp binary node codec ("WABinary", TRANSPORT.md §7).
//!
//! A stanza is a [`Node`]: a tag, ordered attributes and content. [`encode`] writes one into a
//! caller's buffer; [`decode`] reads one into a borrowed [`NodeRef`] without copying (and
//! [`NodeRef::to_node`] turns that into an owned [`Node`]); [`decode_owned`] builds the owned
//! node in one pass, and [`decode_owned_shared`] does the same with binary content sharing the
//! frame's buffer (the receive path's decoder). [`unpack`] handles the flag byte (and zlib) in
//! front of a decrypted frame, and [`decode_frame`] does all of it at once.
//!
//! An owned node allocates little: its first two attributes are stored inside it ([`Attrs`]),
//! strings of up to 24 bytes (tokens, ids, phone numbers, timestamps) are stored inline, and
//! binary content can be a slice of the frame. Decoding a typical `<message>` with one `<enc>`
//! child allocates twice (the root's attributes past two, and the child list).
//!
//! Decoding never trusts the input: every length and count is checked against the bytes that
//! are actually there before anything is allocated, token indexes and nesting depth are
//! checked, and the error says what was wrong and at which byte.

mod attrs;
mod decode;
mod encode;
mod error;
mod node;
mod owned;
pub mod tag;
pub mod token;
mod unpack;

pub use attrs::{Attr, Attrs, IntoIter as AttrsIntoIter};
pub use decode::{AttrsIter, AttrsRef, ContentRef, JidRef, NodeRef, StrRef, ValueRef, decode};
pub use encode::{EncodeError, encode, encode_frame, to_vec};
/// The pieces of the encoder, for a node written straight from its parts (no `Node` built).
pub(crate) use encode::{write_bytes, write_jid, write_list_start, write_str};
pub use error::DecodeError;
pub use node::{AttrValue, Content, Node, NodeStr};
pub use owned::{decode_owned, decode_owned_shared};
pub use unpack::{DEFAULT_MAX_INFLATED, FLAG_COMPRESSED, unpack};

/// Deepest nesting of child lists the codec accepts. Real stanzas nest fewer than ten levels;
/// the limit keeps a hostile frame from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// Most nodes one frame may decode into (the root's descendants). The largest real stanzas
/// (group metadata of a 1,024-member group, a usync answer for thousands of contacts) hold a
/// few tens of thousands; the limit keeps a hostile frame from turning a few bytes per node
/// into a large allocation each (an owned [`Node`] is about 250 bytes, so the limit bounds
/// one frame's nodes at about 32 MiB).
pub const MAX_NODES: usize = 1 << 17;

/// Decodes a whole decrypted frame (flag byte, maybe zlib, then one node) into an owned node,
/// refusing frames that inflate past `max_inflated` bytes.
pub fn decode_frame(frame: &[u8], max_inflated: usize) -> Result<Node, DecodeError> {
    let body = unpack(frame, max_inflated)?;
    decode_owned(&body)
}
