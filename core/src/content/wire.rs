//! A look at the raw protobuf of a `Message`, below prost: which top-level fields are present.
//!
//! prost skips the fields its schema does not declare, so "the decoded message is empty" does
//! not mean "the sender sent nothing". Whether a message is pure key distribution is decided
//! here, on the bytes, so a content field newer than our schema still reaches the application.

/// `Message.senderKeyDistributionMessage`.
const SKDM: u64 = 2;
/// `Message.fastRatchetKeySenderKeyDistributionMessage`.
const FAST_RATCHET_SKDM: u64 = 15;
/// `Message.messageContextInfo`: metadata (device list hashes, message secret), not content.
const MESSAGE_CONTEXT_INFO: u64 = 35;

/// Why raw protobuf bytes could not be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A varint or a length runs past the end.
    #[error("truncated protobuf")]
    Truncated,
    /// A varint longer than 10 bytes.
    #[error("overlong varint")]
    Varint,
    /// A wire type that protobuf does not define (or a group, which messages do not use).
    #[error("bad wire type {0}")]
    WireType(u8),
    /// Field number 0.
    #[error("field number 0")]
    FieldZero,
}

fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for shift in 0..10 {
        let b = *bytes.get(*pos).ok_or(WireError::Truncated)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (shift * 7);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Varint)
}

/// The field numbers at the top level of a protobuf message, in order of appearance (repeated
/// ones as often as they appear). Every length is checked against the input.
pub fn top_level_fields(bytes: &[u8]) -> Result<Vec<u64>, WireError> {
    let mut out = Vec::new();
    walk_top_level(bytes, |field| {
        out.push(field);
        true
    })?;
    Ok(out)
}

/// Walks the top-level fields of a protobuf message, giving each field number to `visit` in
/// order, until `visit` returns false; checks every length as [`top_level_fields`] does.
/// Returns whether the walk reached the end.
fn walk_top_level(bytes: &[u8], mut visit: impl FnMut(u64) -> bool) -> Result<bool, WireError> {
    let mut pos = 0;
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos)?;
        let field = key >> 3;
        if field == 0 {
            return Err(WireError::FieldZero);
        }
        let skip = match key & 7 {
            0 => {
                varint(bytes, &mut pos)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(bytes, &mut pos)?).map_err(|_| WireError::Truncated)?,
            5 => 4,
            other => return Err(WireError::WireType(other as u8)),
        };
        pos = pos
            .checked_add(skip)
            .filter(|end| *end <= bytes.len())
            .ok_or(WireError::Truncated)?;
        if !visit(field) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a `Message`'s bytes carry nothing but sender-key distribution and message context
/// (metadata the machine consumes itself); false when any other field is present, declared
/// in our schema or not, and false for bytes that do not walk (they are not ours to drop).
pub fn is_key_distribution_only(bytes: &[u8]) -> bool {
    // Stops at the first other field; bytes that do not walk to their end are not ours.
    let mut only = true;
    let walked = walk_top_level(bytes, |f| {
        only = matches!(f, SKDM | FAST_RATCHET_SKDM | MESSAGE_CONTEXT_INFO);
        only
    });
    only && walked.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_every_wire_type() {
        // 1: varint 150, 2: bytes "ab", 3: fixed64, 4: fixed32, 200: varint 1
        let bytes = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'a', b'b', 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3,
            4, 0xc0, 0x0c, 0x01,
        ];
        assert_eq!(top_level_fields(&bytes), Ok(vec![1, 2, 3, 4, 200]));
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            top_level_fields(&[0x12, 0x05, 1]),
            Err(WireError::Truncated)
        );
        assert_eq!(top_level_fields(&[0x08]), Err(WireError::Truncated));
        assert_eq!(top_level_fields(&[0x0b]), Err(WireError::WireType(3)));
        assert_eq!(top_level_fields(&[0x00, 0x00]), Err(WireError::FieldZero));
        assert_eq!(
            top_level_fields(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(WireError::Varint)
        );
        // A length near u64::MAX must not overflow.
        let mut huge = vec![0x12];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(top_level_fields(&huge), Err(WireError::Truncated));
    }

    #[test]
    fn key_distribution_only() {
        // field 2 (SKDM) and 35 (context info), both empty
        assert!(is_key_distribution_only(&[0x12, 0x00, 0x9a, 0x02, 0x00]));
        assert!(is_key_distribution_only(&[]));
        // plus field 1 (conversation)
        assert!(!is_key_distribution_only(&[0x12, 0x00, 0x0a, 0x01, b'x']));
        // plus a field no schema knows (9999, varint)
        assert!(!is_key_distribution_only(&[
            0x12, 0x00, 0xf8, 0xe1, 0x04, 0x01
        ]));
        assert!(!is_key_distribution_only(&[0x12, 0x05]));
    }
}
