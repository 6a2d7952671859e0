//! The frame layer under the Noise handshake and transport (TRANSPORT.md §2).
//!
//! Every frame on the WebSocket is a 3-byte big-endian payload length followed by the payload.
//! The stream of frames is independent of WebSocket message boundaries: one message may carry
//! several frames and a frame, even its length, may be split over several messages, so the
//! receiving side buffers ([`FrameDecoder`]). The client's very first bytes are an intro header
//! ([`INTRO_HEADER`], or the edge-routing form carrying a routing-info blob) in front of the first
//! frame ([`FrameEncoder`]).

use bytes::{Buf, BytesMut};

/// The plain intro header, sent once in front of the first frame: `'W' 'A'`, the WA magic
/// version 6 and token dictionary version 3. It is also the Noise prologue.
pub const INTRO_HEADER: [u8; 4] = [0x57, 0x41, 0x06, 0x03];

/// The prefix of the edge-routing intro (`'E' 'D' 00 01`), followed by a u24 length, the routing
/// info and [`INTRO_HEADER`].
pub const EDGE_ROUTING_PREFIX: [u8; 4] = [0x45, 0x44, 0x00, 0x01];

/// Size of the length prefix in front of every frame.
pub const LEN_PREFIX_LEN: usize = 3;

/// Largest payload a frame can carry: the length is 24 bits and WM refuses `len >= 1 << 24`.
pub const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;

/// Why a frame could not be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A payload (or routing info) of 2^24 bytes or more, or above the decoder's limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The payload length.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// The first bytes from the client are neither the plain nor the edge-routing intro.
    #[error("bad intro header")]
    BadIntro,
}

/// Writes the 3-byte big-endian length of a `len`-byte payload.
///
/// # Errors
/// [`FrameError::TooLarge`] when `len` does not fit in 24 bits.
pub fn encode_len(len: usize) -> Result<[u8; LEN_PREFIX_LEN], FrameError> {
    if len > MAX_PAYLOAD_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_PAYLOAD_LEN,
        });
    }
    let [_, a, b, c] = u32::try_from(len)
        .expect("len <= MAX_PAYLOAD_LEN < 2^24 fits in u32")
        .to_be_bytes();
    Ok([a, b, c])
}

/// Reads a 3-byte big-endian length.
fn decode_len([a, b, c]: [u8; 3]) -> usize {
    (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c)
}

/// Builds the intro header: [`INTRO_HEADER`] alone, or with routing info
/// `45 44 00 01 ‖ u24 len ‖ routing_info ‖ 57 41 06 03`.
///
/// # Errors
/// [`FrameError::TooLarge`] when the routing info is 2^24 bytes or longer.
pub fn intro_header(routing_info: Option<&[u8]>) -> Result<Vec<u8>, FrameError> {
    let Some(info) = routing_info else {
        return Ok(INTRO_HEADER.to_vec());
    };
    let len = encode_len(info.len())?;
    let mut out = Vec::with_capacity(EDGE_ROUTING_PREFIX.len() + 3 + info.len() + 4);
    out.extend_from_slice(&EDGE_ROUTING_PREFIX);
    out.extend_from_slice(&len);
    out.extend_from_slice(info);
    out.extend_from_slice(&INTRO_HEADER);
    Ok(out)
}

/// Writes outgoing frames, putting the intro header in front of the first one only.
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    /// The intro still to be sent; `None` once the first frame is out.
    pending_intro: Option<Vec<u8>>,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    /// An encoder whose first frame is preceded by the plain [`INTRO_HEADER`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            pending_intro: Some(INTRO_HEADER.to_vec()),
        }
    }

    /// An encoder whose first frame is preceded by the edge-routing intro carrying
    /// `routing_info` (from a server `<edge_routing>` stanza of an earlier connection).
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when the routing info is 2^24 bytes or longer.
    pub fn with_routing_info(routing_info: &[u8]) -> Result<Self, FrameError> {
        Ok(Self {
            pending_intro: Some(intro_header(Some(routing_info))?),
        })
    }

    /// An encoder that writes no intro (the intro was already sent, or on the server side).
    #[must_use]
    pub fn without_intro() -> Self {
        Self {
            pending_intro: None,
        }
    }

    /// Whether the intro header has already gone out with a frame.
    #[must_use]
    pub fn intro_sent(&self) -> bool {
        self.pending_intro.is_none()
    }

    /// Appends the frame for `payload` to `out`, preceded by the intro header if this is the
    /// first frame. On error nothing is appended and the intro stays pending.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when the payload is 2^24 bytes or longer.
    pub fn encode_into(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let len = encode_len(payload.len())?;
        if let Some(intro) = self.pending_intro.take() {
            out.extend_from_slice(&intro);
        }
        out.extend_from_slice(&len);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// Returns the bytes to send for `payload` (intro header first, if still pending).
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when the payload is 2^24 bytes or longer.
    pub fn encode(&mut self, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let intro_len = self.pending_intro.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(intro_len + LEN_PREFIX_LEN + payload.len());
        self.encode_into(payload, &mut out)?;
        Ok(out)
    }
}

/// Reassembles frames from a byte stream cut at arbitrary points.
///
/// Push every received WebSocket message with [`push`](Self::push), then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. Memory grows only with the bytes
/// actually received, never with an announced length. Frames come out as [`BytesMut`] split off
/// the buffer without copying, so the transport can decrypt them in place
/// ([`BytesMut::freeze`] gives a [`bytes::Bytes`]).
///
/// An error is final for the connection: the stream cannot be resynchronised.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: usize,
    /// Server side, before the intro header has been consumed.
    expect_intro: bool,
    routing_info: Option<Vec<u8>>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder for frames from the server (no intro), accepting payloads up to
    /// [`MAX_PAYLOAD_LEN`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            max_len: MAX_PAYLOAD_LEN,
            expect_intro: false,
            routing_info: None,
        }
    }

    /// A decoder for the server side: the stream must start with the plain or edge-routing intro
    /// header, which is consumed (its routing info is kept, see
    /// [`routing_info`](Self::routing_info)).
    #[must_use]
    pub fn expecting_intro() -> Self {
        Self {
            expect_intro: true,
            ..Self::new()
        }
    }

    /// Lowers the largest accepted payload length (values above [`MAX_PAYLOAD_LEN`] are capped
    /// to it). A frame announcing more is refused as soon as its length prefix is in.
    #[must_use]
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.min(MAX_PAYLOAD_LEN);
        self
    }

    /// Appends received bytes. Any chunking is fine.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// The routing info of an edge-routing intro, once the intro has been read.
    #[must_use]
    pub fn routing_info(&self) -> Option<&[u8]> {
        self.routing_info.as_deref()
    }

    /// Returns the next complete frame payload, or `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when a length prefix announces more than the limit, and
    /// [`FrameError::BadIntro`] (server side) when the stream does not start with an intro.
    pub fn next_frame(&mut self) -> Result<Option<BytesMut>, FrameError> {
        if self.expect_intro && !self.read_intro()? {
            return Ok(None);
        }
        let Some(&[a, b, c]) = self.buf.get(..LEN_PREFIX_LEN) else {
            return Ok(None);
        };
        let len = decode_len([a, b, c]);
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        // No reservation for the announced length: the buffer only grows with real bytes.
        if self.buf.len() - LEN_PREFIX_LEN < len {
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX_LEN);
        Ok(Some(self.buf.split_to(len)))
    }

    /// Consumes the intro header if it is complete; `Ok(false)` when more bytes are needed.
    fn read_intro(&mut self) -> Result<bool, FrameError> {
        let head = self.buf.get(..self.buf.len().min(4)).unwrap_or_default();
        // Refuse as soon as the bytes seen so far can start neither intro form.
        if !INTRO_HEADER.starts_with(head) && !EDGE_ROUTING_PREFIX.starts_with(head) {
            return Err(FrameError::BadIntro);
        }
        if head.len() < 4 {
            return Ok(false);
        }
        if head == INTRO_HEADER {
            self.buf.advance(INTRO_HEADER.len());
            self.expect_intro = false;
            return Ok(true);
        }
        // Edge routing: 45 44 00 01 ‖ u24 len ‖ routing info ‖ 57 41 06 03.
        let Some(&[a, b, c]) = self.buf.get(4..7) else {
            return Ok(false);
        };
        let info_end = 7 + decode_len([a, b, c]);
        let Some(tail) = self.buf.get(info_end..info_end + INTRO_HEADER.len()) else {
            return Ok(false);
        };
        if tail != INTRO_HEADER {
            return Err(FrameError::BadIntro);
        }
        self.routing_info = self.buf.get(7..info_end).map(<[u8]>::to_vec);
        self.buf.advance(info_end + INTRO_HEADER.len());
        self.expect_intro = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(dec: &mut FrameDecoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame().expect("valid stream") {
            out.push(f.to_vec());
        }
        out
    }

    #[test]
    fn encoder_writes_intro_once() {
        let mut enc = FrameEncoder::new();
        assert_eq!(
            enc.encode(b"ab").unwrap(),
            [0x57, 0x41, 6, 3, 0, 0, 2, b'a', b'b']
        );
        assert!(enc.intro_sent());
        assert_eq!(enc.encode(b"").unwrap(), [0, 0, 0]);
    }

    #[test]
    fn encoder_edge_routing() {
        let mut enc = FrameEncoder::with_routing_info(&[0xAA, 0xBB]).unwrap();
        assert_eq!(
            enc.encode(b"x").unwrap(),
            [
                0x45, 0x44, 0, 1, 0, 0, 2, 0xAA, 0xBB, 0x57, 0x41, 6, 3, 0, 0, 1, b'x'
            ]
        );
    }

    #[test]
    fn too_large_refused_both_directions() {
        let big = vec![0u8; 1 << 24];
        let mut enc = FrameEncoder::new();
        assert_eq!(
            enc.encode(&big),
            Err(FrameError::TooLarge {
                len: 1 << 24,
                max: MAX_PAYLOAD_LEN
            })
        );
        assert!(
            !enc.intro_sent(),
            "a refused frame must not consume the intro"
        );
        assert!(enc.encode(&big[1..]).is_ok());
        assert!(encode_len(MAX_PAYLOAD_LEN).is_ok());
        assert!(FrameEncoder::with_routing_info(&big).is_err());

        let mut dec = FrameDecoder::new().with_max_len(1000);
        dec.push(&[0, 0x03, 0xE9]);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                len: 1001,
                max: 1000
            })
        );
    }

    #[test]
    fn decoder_does_not_reserve_announced_length() {
        let mut dec = FrameDecoder::new();
        dec.push(&[0xFF, 0xFF, 0xFF, 1]);
        assert_eq!(dec.next_frame(), Ok(None));
        assert!(dec.buf.capacity() < 4096);
    }

    #[test]
    fn every_pair_of_split_points() {
        let mut enc = FrameEncoder::without_intro();
        let payloads: [&[u8]; 4] = [b"hello", b"", b"x", &[7u8; 300]];
        let mut wire = Vec::new();
        for p in payloads {
            enc.encode_into(p, &mut wire).unwrap();
        }
        for i in 0..=wire.len() {
            for j in i..=wire.len() {
                let mut dec = FrameDecoder::new();
                let mut got = Vec::new();
                for part in [&wire[..i], &wire[i..j], &wire[j..]] {
                    dec.push(part);
                    got.extend(frames(&mut dec));
                }
                assert_eq!(got, payloads.map(<[u8]>::to_vec), "split at {i},{j}");
                assert_eq!(dec.buffered_len(), 0);
            }
        }
    }

    #[test]
    fn server_side_intro() {
        for info in [None, Some(&[1u8, 2, 3][..]), Some(&[][..])] {
            let mut enc = match info {
                Some(i) => FrameEncoder::with_routing_info(i).unwrap(),
                None => FrameEncoder::new(),
            };
            let mut wire = enc.encode(b"first").unwrap();
            enc.encode_into(b"second", &mut wire).unwrap();
            for cut in 0..=wire.len() {
                let mut dec = FrameDecoder::expecting_intro();
                dec.push(&wire[..cut]);
                let mut got = frames(&mut dec);
                dec.push(&wire[cut..]);
                got.extend(frames(&mut dec));
                assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
                assert_eq!(dec.routing_info(), info);
            }
        }
        let mut dec = FrameDecoder::expecting_intro();
        dec.push(&[0x57, 0x42]);
        assert_eq!(dec.next_frame(), Err(FrameError::BadIntro));
        let mut dec = FrameDecoder::expecting_intro();
        dec.push(&[0x45, 0x44, 0, 1, 0, 0, 1, 9, 0x57, 0x41, 6, 4]);
        assert_eq!(dec.next_frame(), Err(FrameError::BadIntro));
    }
}
