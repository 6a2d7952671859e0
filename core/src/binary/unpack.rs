//! The flag byte in front of every decrypted frame, and the zlib step of compressed frames.

use std::borrow::Cow;
use std::io::Read;

use super::DecodeError;

/// Flag bit: the rest of the frame is a zlib stream (RFC 1950) of the node bytes.
pub const FLAG_COMPRESSED: u8 = 0x02;

/// Default cap on the size of an inflated frame: the frame layer refuses payloads of 2^24 bytes
/// or more, and an honest server never compresses a node past four times that.
pub const DEFAULT_MAX_INFLATED: usize = 64 << 20;

/// Splits a decrypted frame into its node bytes: reads the flag byte and, when bit
/// [`FLAG_COMPRESSED`] is set, inflates the rest, refusing output larger than `max_inflated`
/// bytes. Other flag bits are ignored, as both reference clients do. Borrowed when the frame is
/// not compressed.
pub fn unpack(frame: &[u8], max_inflated: usize) -> Result<Cow<'_, [u8]>, DecodeError> {
    let (&flag, rest) = frame.split_first().ok_or(DecodeError::EmptyFrame)?;
    if flag & FLAG_COMPRESSED == 0 {
        return Ok(Cow::Borrowed(rest));
    }
    // Read at most one byte past the limit: that byte tells a too-large stream apart from one of
    // exactly `max_inflated` bytes, and memory never grows past the cap whatever the stream says.
    let mut out = Vec::with_capacity(rest.len().saturating_mul(4).min(max_inflated));
    let limit = u64::try_from(max_inflated)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    flate2::read::ZlibDecoder::new(rest)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Inflate)?;
    if out.len() > max_inflated {
        return Err(DecodeError::InflatedTooLarge {
            limit: max_inflated,
        });
    }
    Ok(Cow::Owned(out))
}
