//! Tag bytes of the binary node codec (TRANSPORT.md §7.2).

/// List of size 0; also the empty string, and the "no value" marker.
pub const LIST_EMPTY: u8 = 0x00;
/// First double-byte dictionary; `DICTIONARY_0 + d` selects dictionary `d` (0..=3).
pub const DICTIONARY_0: u8 = 0xEC;
/// Last double-byte dictionary.
pub const DICTIONARY_3: u8 = 0xEF;
/// Interop JID: user, device (u16), integrator (u16), server.
pub const INTEROP_JID: u8 = 0xF5;
/// Messenger JID: user, device (u16), server.
pub const FB_JID: u8 = 0xF6;
/// Device JID: domain type, device, user.
pub const AD_JID: u8 = 0xF7;
/// List with a one-byte size.
pub const LIST_8: u8 = 0xF8;
/// List with a two-byte size.
pub const LIST_16: u8 = 0xF9;
/// JID as user and server strings.
pub const JID_PAIR: u8 = 0xFA;
/// Hex-packed string.
pub const HEX_8: u8 = 0xFB;
/// Bytes with a one-byte length.
pub const BINARY_8: u8 = 0xFC;
/// Bytes with a 20-bit length in three bytes.
pub const BINARY_20: u8 = 0xFD;
/// Bytes with a four-byte length.
pub const BINARY_32: u8 = 0xFE;
/// Nibble-packed string.
pub const NIBBLE_8: u8 = 0xFF;
/// Longest packed string, in characters.
pub const PACKED_MAX: usize = 127;
