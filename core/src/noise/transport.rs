//! The encrypted transport after the handshake (TRANSPORT.md §3.3 step 14, §5, §6).
//!
//! Each direction has its own AES-256-GCM key (key schedule built once, when the handshake
//! splits) and its own u32 counter from 0; the nonce is 8 zero bytes ‖ counter (u32 BE) and the
//! AAD is empty. Frames are sealed and opened in place: no copy of the payload beyond the one
//! the caller asks for.

use std::borrow::Cow;
use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use bytes::{Buf, Bytes, BytesMut};
use zeroize::Zeroizing;

use super::error::TransportError;
use super::keys::Hex;
use super::symmetric::{TAG_LEN, nonce};
use crate::binary::{DEFAULT_MAX_INFLATED, unpack};
use crate::frame::{LEN_PREFIX_LEN, encode_len};

/// One direction: a key schedule and its counter.
struct Direction {
    cipher: Aes256Gcm,
    /// Frames sealed or opened so far; only values below 2^32 are usable as nonces.
    counter: u64,
    /// The raw key, kept only for [`NoiseTransport::keys_for_testing_only`].
    key: Zeroizing<[u8; 32]>,
}

impl Direction {
    fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self {
            cipher: Aes256Gcm::new(&(*key).into()),
            counter: 0,
            key,
        }
    }

    /// The nonce counter for the next frame, advancing it. Refuses to wrap: a repeated nonce
    /// under the same key would expose the GCM authentication key.
    fn next_counter(&mut self) -> Result<u32, TransportError> {
        let n = u32::try_from(self.counter).map_err(|_| TransportError::CounterExhausted)?;
        self.counter += 1;
        Ok(n)
    }
}

/// The transport cipher of an established connection: seals outgoing node frames, opens
/// incoming ones. Only a completed handshake creates one.
///
/// # Decrypt failures
/// A frame whose tag does not verify still uses up its read counter, as WM does, so the
/// counters of both sides stay aligned if the caller chooses to drop the frame and go on.
/// Whatever the caller does, a failed tag means tampering or a broken peer, and the connection
/// should be closed.
pub struct NoiseTransport {
    write: Direction,
    read: Direction,
    handshake_hash: [u8; 32],
    max_inflated: usize,
}

impl fmt::Debug for NoiseTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseTransport")
            .field("write_key", &"[redacted]")
            .field("read_key", &"[redacted]")
            .field("write_counter", &self.write.counter)
            .field("read_counter", &self.read.counter)
            .field("handshake_hash", &Hex(&self.handshake_hash))
            .field("max_inflated", &self.max_inflated)
            .finish()
    }
}

impl NoiseTransport {
    /// Built by the handshake's split.
    pub(crate) fn new(
        write_key: Zeroizing<[u8; 32]>,
        read_key: Zeroizing<[u8; 32]>,
        handshake_hash: [u8; 32],
    ) -> Self {
        Self {
            write: Direction::new(write_key),
            read: Direction::new(read_key),
            handshake_hash,
            max_inflated: DEFAULT_MAX_INFLATED,
        }
    }

    /// A transport from raw keys, skipping the handshake: only for tests, benchmarks and
    /// fuzzing. A real connection must get its transport from the handshake.
    #[must_use]
    pub fn from_keys_for_testing_only(write_key: [u8; 32], read_key: [u8; 32]) -> Self {
        Self::new(Zeroizing::new(write_key), Zeroizing::new(read_key), [0; 32])
    }

    /// The raw `(write, read)` keys, for comparing with recorded transcripts in tests. Never log
    /// them.
    #[must_use]
    pub fn keys_for_testing_only(&self) -> (&[u8; 32], &[u8; 32]) {
        (&self.write.key, &self.read.key)
    }

    /// The final handshake hash `h`, a public value unique to this session.
    #[must_use]
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// Frames sealed so far: the counter the next outgoing frame will use.
    #[must_use]
    pub fn write_counter(&self) -> u64 {
        self.write.counter
    }

    /// Frames opened (or refused) so far: the counter the next incoming frame will use.
    #[must_use]
    pub fn read_counter(&self) -> u64 {
        self.read.counter
    }

    /// Sets the cap on the inflated size of compressed incoming frames (default
    /// [`DEFAULT_MAX_INFLATED`]); a frame inflating past it is refused as a decompression bomb.
    pub fn set_max_inflated(&mut self, max_inflated: usize) {
        self.max_inflated = max_inflated;
    }

    /// Seals the plaintext in `buf` (flag byte + node bytes) in place: on success `buf` holds
    /// ciphertext ‖ tag, the payload of one wire frame. On error `buf` is unchanged and no
    /// counter is used.
    ///
    /// # Errors
    /// [`TransportError::Frame`] when the sealed frame would not fit 24 bits,
    /// [`TransportError::CounterExhausted`] after 2^32 frames.
    pub fn encrypt_in_place(&mut self, buf: &mut Vec<u8>) -> Result<(), TransportError> {
        // Refuse before touching the counter: the sealed frame must fit the 24-bit length.
        encode_len(buf.len().saturating_add(TAG_LEN))?;
        let tag = self.seal(buf)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Seals `plaintext` (flag byte + node bytes) into a new wire frame payload
    /// (ciphertext ‖ tag), without the length prefix.
    ///
    /// # Errors
    /// As [`encrypt_in_place`](Self::encrypt_in_place).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.encrypt_in_place(&mut buf)?;
        Ok(buf)
    }

    /// Seals `plaintext` into the complete bytes to put on the socket: the 3-byte length prefix
    /// then ciphertext ‖ tag, in one allocation and one copy.
    ///
    /// # Errors
    /// As [`encrypt_in_place`](Self::encrypt_in_place).
    pub fn encrypt_frame(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, TransportError> {
        let len = encode_len(plaintext.len().saturating_add(TAG_LEN))?;
        let mut buf = Vec::with_capacity(LEN_PREFIX_LEN + plaintext.len() + TAG_LEN);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(plaintext);
        let body = buf
            .get_mut(LEN_PREFIX_LEN..)
            .expect("the buffer starts with the 3-byte prefix");
        let tag = self.seal(body)?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    /// Encrypts `buf` in place with the next write counter; callers checked its size.
    fn seal(&mut self, buf: &mut [u8]) -> Result<Tag, TransportError> {
        let n = self.write.next_counter()?;
        let tag = self
            .write
            .cipher
            .encrypt_in_place_detached(&nonce(n), &[], buf)
            .expect("callers checked the frame is below 2^24 bytes, far under GCM's limit");
        Ok(tag)
    }

    /// Opens `buf` (ciphertext ‖ tag, one wire frame payload) in place and returns the plaintext
    /// length; the plaintext (flag byte + node bytes) is then `buf[..len]`. The tag is checked
    /// before anything is decrypted, so a bad frame leaves `buf` as it was. Uses one read
    /// counter either way.
    fn open(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let n = self.read.next_counter()?;
        let body_len = buf
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(TransportError::Decrypt)?;
        let (body, tag) = buf.split_at_mut(body_len);
        let tag = Tag::clone_from_slice(tag);
        self.read
            .cipher
            .decrypt_in_place_detached(&nonce(n), &[], body, &tag)
            .map_err(|_| TransportError::Decrypt)?;
        Ok(body_len)
    }

    /// Opens a wire frame payload in place: on success `frame` holds the plaintext, flag byte
    /// then node bytes (or zlib stream). Zero-copy with the frames of
    /// [`FrameDecoder`](crate::frame::FrameDecoder).
    ///
    /// # Errors
    /// [`TransportError::Decrypt`] when the tag does not verify or the frame is shorter than a
    /// tag; the read counter is used anyway (see the type's docs).
    pub fn decrypt_in_place(&mut self, frame: &mut BytesMut) -> Result<(), TransportError> {
        let len = self.open(frame)?;
        frame.truncate(len);
        Ok(())
    }

    /// Opens a wire frame payload into a new buffer holding the raw plaintext: flag byte then
    /// node bytes (or zlib stream).
    ///
    /// # Errors
    /// As [`decrypt_in_place`](Self::decrypt_in_place).
    pub fn decrypt_frame(&mut self, frame: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut buf = frame.to_vec();
        let len = self.open(&mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens a wire frame payload and unpacks it (TRANSPORT.md §6): reads the flag byte and
    /// inflates the rest when bit `0x02` is set, refusing more than the
    /// [`set_max_inflated`](Self::set_max_inflated) cap. Returns the encoded node bytes, without
    /// a copy when the frame is not compressed.
    ///
    /// # Errors
    /// [`TransportError::Decrypt`] as in [`decrypt_in_place`](Self::decrypt_in_place), and
    /// [`TransportError::Unpack`] for an empty plaintext, a corrupt zlib stream or a
    /// decompression bomb.
    pub fn decrypt_node(&mut self, mut frame: BytesMut) -> Result<Bytes, TransportError> {
        self.decrypt_in_place(&mut frame)?;
        unpack_node(frame.freeze(), self.max_inflated)
    }
}

/// Runs [`unpack`] over a decrypted frame, keeping the uncompressed case zero-copy.
fn unpack_node(mut plain: Bytes, max_inflated: usize) -> Result<Bytes, TransportError> {
    let inflated = match unpack(&plain, max_inflated)? {
        Cow::Borrowed(_) => None,
        Cow::Owned(v) => Some(v),
    };
    if let Some(v) = inflated {
        return Ok(Bytes::from(v));
    }
    // Uncompressed: the node is the plaintext after the flag byte (`unpack` refused an empty
    // frame, so that byte is there).
    plain.advance(1.min(plain.len()));
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::frame::MAX_PAYLOAD_LEN;

    fn pair() -> (NoiseTransport, NoiseTransport) {
        (
            NoiseTransport::from_keys_for_testing_only([1; 32], [2; 32]),
            NoiseTransport::from_keys_for_testing_only([2; 32], [1; 32]),
        )
    }

    #[test]
    fn roundtrip_and_counters() {
        let (mut a, mut b) = pair();
        for i in 0u8..5 {
            let pt = vec![0, i, i, i];
            let framed = a.encrypt_frame(&pt).unwrap();
            assert_eq!(framed.get(..3), Some(&[0, 0, 20][..]));
            assert_eq!(b.decrypt_frame(&framed[3..]).unwrap(), pt);
        }
        assert_eq!(a.write_counter(), 5);
        assert_eq!(b.read_counter(), 5);
        let ct = b.encrypt(&[0, 9]).unwrap();
        assert_eq!(
            a.decrypt_node(BytesMut::from(&ct[..])).unwrap().as_ref(),
            [9]
        );
        let mut ct = BytesMut::from(&b.encrypt(&[0, 8]).unwrap()[..]);
        a.decrypt_in_place(&mut ct).unwrap();
        assert_eq!(ct.as_ref(), [0, 8]);
    }

    #[test]
    fn bad_tag_uses_a_counter_and_fails() {
        let (mut a, mut b) = pair();
        let mut ct = a.encrypt(&[0, 1, 2]).unwrap();
        let last = ct.len() - 1;
        ct[last] ^= 1;
        assert_eq!(b.decrypt_frame(&ct), Err(TransportError::Decrypt));
        assert_eq!(b.read_counter(), 1);
        assert_eq!(b.decrypt_frame(&[0; 5]), Err(TransportError::Decrypt));
        assert_eq!(b.decrypt_frame(&[]), Err(TransportError::Decrypt));
        // The next honest frame still opens: counters stay aligned as in WM.
        let _ = a.encrypt(&[0]).unwrap();
        let _ = a.encrypt(&[0]).unwrap();
        let ct = a.encrypt(&[0, 7]).unwrap();
        assert_eq!(b.decrypt_frame(&ct).unwrap(), [0, 7]);
    }

    #[test]
    fn too_large_refused_without_using_a_counter() {
        let (mut a, _) = pair();
        let mut big = vec![0u8; MAX_PAYLOAD_LEN - TAG_LEN + 1];
        assert!(matches!(
            a.encrypt_in_place(&mut big),
            Err(TransportError::Frame(_))
        ));
        assert!(matches!(
            a.encrypt_frame(&big),
            Err(TransportError::Frame(_))
        ));
        assert_eq!(a.write_counter(), 0);
        big.pop();
        assert!(a.encrypt_in_place(&mut big).is_ok());
        assert_eq!(big.len(), MAX_PAYLOAD_LEN);
    }

    #[test]
    fn counter_exhaustion_refused() {
        let (mut a, mut b) = pair();
        a.write.counter = u64::from(u32::MAX);
        let ct = a.encrypt(&[0]).unwrap();
        assert_eq!(a.encrypt(&[0]), Err(TransportError::CounterExhausted));
        b.read.counter = u64::from(u32::MAX);
        assert_eq!(b.decrypt_frame(&ct).unwrap(), [0]);
        assert_eq!(b.decrypt_frame(&ct), Err(TransportError::CounterExhausted));
    }

    #[test]
    fn decompression_bomb_refused() {
        let (mut a, mut b) = pair();
        b.set_max_inflated(1 << 16);
        let mut z = flate2::write::ZlibEncoder::new(vec![2u8], flate2::Compression::best());
        z.write_all(&vec![0u8; 1 << 20]).unwrap();
        let pt = z.finish().unwrap();
        let ct = a.encrypt(&pt).unwrap();
        assert!(matches!(
            b.decrypt_node(BytesMut::from(&ct[..])),
            Err(TransportError::Unpack(_))
        ));
        let ct = a.encrypt(&[]).unwrap();
        assert!(matches!(
            b.decrypt_node(BytesMut::from(&ct[..])),
            Err(TransportError::Unpack(_))
        ));
    }

    #[test]
    fn debug_redacts() {
        let (a, _) = pair();
        let s = format!("{a:?}");
        assert!(s.contains("[redacted]"));
        assert!(!s.contains(&hex::encode([1u8; 32])));
    }
}
