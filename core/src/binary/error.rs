//! Errors of the binary node codec.

/// Why a frame or node could not be decoded. `at` is the byte offset into the input (the node
/// bytes, after the flag byte and any inflation) where the problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value that starts or continues at `at` was complete.
    #[error("unexpected end of input at byte {at}")]
    UnexpectedEnd {
        /// Offset where more bytes were needed.
        at: usize,
    },
    /// A tag byte that is not allowed in this position (e.g. `0xF0..=0xF4`, or a list where a
    /// string is expected).
    #[error("invalid tag byte {tag:#04x} at byte {at}")]
    InvalidTag {
        /// The offending byte.
        tag: u8,
        /// Its offset.
        at: usize,
    },
    /// A length or count larger than the bytes left in the input could ever hold.
    #[error("length {len} at byte {at} exceeds the {left} bytes left")]
    LengthTooLarge {
        /// The announced length or count.
        len: u64,
        /// Offset of the length field.
        at: usize,
        /// Bytes left after the length field.
        left: usize,
    },
    /// A node list with size 0, or a node without a tag.
    #[error("node without a tag at byte {at}")]
    EmptyNode {
        /// Offset of the node's list header.
        at: usize,
    },
    /// A packed (nibble or hex) string with a nibble that has no character.
    #[error("invalid packed nibble {nibble:#x} at byte {at}")]
    InvalidNibble {
        /// The nibble value.
        nibble: u8,
        /// Offset of the byte that holds it.
        at: usize,
    },
    /// A raw string (tag, attribute key or value) that is not UTF-8.
    #[error("string at byte {at} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's bytes.
        at: usize,
    },
    /// A JID whose parts are not what the form requires (e.g. an FB_JID server other than
    /// `msgr`).
    #[error("malformed JID at byte {at}")]
    InvalidJid {
        /// Offset of the JID tag byte.
        at: usize,
    },
    /// Children nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    #[error("nodes nested deeper than the limit at byte {at}")]
    TooDeep {
        /// Offset of the node that went past the limit.
        at: usize,
    },
    /// More nodes than [`MAX_NODES`](super::MAX_NODES) in one frame.
    #[error("more nodes than the limit, at byte {at}")]
    TooManyNodes {
        /// Offset of the child list that went past the limit.
        at: usize,
    },
    /// Bytes left over after the top-level node.
    #[error("{left} trailing bytes after the node at byte {at}")]
    TrailingBytes {
        /// Offset where the node ended.
        at: usize,
        /// How many bytes follow it.
        left: usize,
    },
    /// A frame with no flag byte.
    #[error("empty frame")]
    EmptyFrame,
    /// The zlib stream of a compressed frame is corrupt or truncated.
    #[error("corrupt zlib stream in compressed frame")]
    Inflate,
    /// A compressed frame that inflates past the configured limit (a decompression bomb).
    #[error("compressed frame inflates past the limit of {limit} bytes")]
    InflatedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}
