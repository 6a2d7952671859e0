//! Protobuf written by hand, for the messages written on every message sent or received (the
//! Signal wire messages, the session record): each message's fields are listed once
//! ([`Fields::visit`]) and visited twice, once to size the message and once to write it, in
//! field-number order as prost does, straight from the state into one buffer of the exact size.
//! No intermediate protobuf structs, no copies of the keys. Tests compare every such message
//! with prost's encoding.

/// What a message's fields are written to: a size count or the output buffer.
pub(super) trait Sink {
    fn uint(&mut self, tag: u32, v: u32);
    fn bytes(&mut self, tag: u32, b: &[u8]);
    fn message(&mut self, tag: u32, m: &impl Fields);
}

/// A protobuf message whose fields can be visited.
pub(super) trait Fields {
    fn visit(&self, s: &mut impl Sink);

    /// The encoded length of the message's fields.
    fn len(&self) -> usize {
        let mut n = Size(0);
        self.visit(&mut n);
        n.0
    }

    fn write(&self, out: &mut Vec<u8>) {
        self.visit(out);
    }
}

struct Size(usize);

impl Sink for Size {
    fn uint(&mut self, tag: u32, v: u32) {
        self.0 += prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(v.into());
    }
    fn bytes(&mut self, tag: u32, b: &[u8]) {
        self.0 += prost::encoding::key_len(tag)
            + prost::encoding::encoded_len_varint(b.len() as u64)
            + b.len();
    }
    fn message(&mut self, tag: u32, m: &impl Fields) {
        let len = m.len();
        self.0 +=
            prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len;
    }
}

impl Sink for Vec<u8> {
    fn uint(&mut self, tag: u32, v: u32) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        encode_key(tag, WireType::Varint, self);
        encode_varint(v.into(), self);
    }
    fn bytes(&mut self, tag: u32, b: &[u8]) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        encode_key(tag, WireType::LengthDelimited, self);
        encode_varint(b.len() as u64, self);
        self.extend_from_slice(b);
    }
    fn message(&mut self, tag: u32, m: &impl Fields) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        encode_key(tag, WireType::LengthDelimited, self);
        encode_varint(m.len() as u64, self);
        m.write(self);
    }
}
