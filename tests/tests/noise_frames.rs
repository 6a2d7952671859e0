//! Frame decoder and transport properties: any chunking of a frame stream gives the same frames,
//! sealed frames survive the trip through the decoder, and oversized or garbled input is refused
//! with a typed error.

use amarula_core::frame::{FrameDecoder, FrameEncoder, FrameError, MAX_PAYLOAD_LEN};
use amarula_core::noise::{NoiseTransport, TAG_LEN, TransportError};
use bytes::BytesMut;
use proptest::prelude::*;

/// Pushes `wire` cut at `cuts` (sorted, deduplicated offsets) and collects the frames.
fn decode_chunked(mut dec: FrameDecoder, wire: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
        let cut = cut.clamp(start, wire.len());
        dec.push(&wire[start..cut]);
        start = cut;
        while let Some(f) = dec.next_frame().unwrap() {
            out.push(f.to_vec());
        }
    }
    assert_eq!(dec.buffered_len(), 0);
    out
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_frames(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        mut cuts in prop::collection::vec(0usize..3000, 0..20),
        with_intro in any::<bool>(),
        routing in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    ) {
        let mut enc = match (&routing, with_intro) {
            (Some(info), true) => FrameEncoder::with_routing_info(info).unwrap(),
            (None, true) => FrameEncoder::new(),
            (_, false) => FrameEncoder::without_intro(),
        };
        let mut wire = Vec::new();
        for p in &payloads {
            enc.encode_into(p, &mut wire).unwrap();
        }
        cuts.sort_unstable();
        let dec = if with_intro && !payloads.is_empty() {
            FrameDecoder::expecting_intro()
        } else {
            FrameDecoder::new()
        };
        let got = decode_chunked(dec, &wire, &cuts);
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn sealed_frames_open_through_any_chunking(
        plaintexts in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 1..6),
        mut cuts in prop::collection::vec(0usize..2000, 0..10),
    ) {
        let mut client = NoiseTransport::from_keys_for_testing_only([1; 32], [2; 32]);
        let mut server = NoiseTransport::from_keys_for_testing_only([2; 32], [1; 32]);
        let mut wire = Vec::new();
        for p in &plaintexts {
            wire.extend(client.encrypt_frame(p).unwrap());
        }
        cuts.sort_unstable();
        let frames = decode_chunked(FrameDecoder::new(), &wire, &cuts);
        prop_assert_eq!(frames.len(), plaintexts.len());
        for (f, p) in frames.iter().zip(&plaintexts) {
            let mut buf = BytesMut::from(f.as_slice());
            server.decrypt_in_place(&mut buf).unwrap();
            prop_assert_eq!(&buf[..], &p[..]);
        }
    }

    #[test]
    fn any_single_bit_flip_is_refused(
        plaintext in prop::collection::vec(any::<u8>(), 0..100),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut a = NoiseTransport::from_keys_for_testing_only([3; 32], [4; 32]);
        let mut b = NoiseTransport::from_keys_for_testing_only([4; 32], [3; 32]);
        let mut ct = a.encrypt(&plaintext).unwrap();
        let i = bit.index(ct.len() * 8);
        ct[i / 8] ^= 1 << (i % 8);
        prop_assert_eq!(b.decrypt_frame(&ct), Err(TransportError::Decrypt));
    }
}

#[test]
fn frames_of_2_pow_24_refused_both_ways() {
    let big = vec![0u8; 1 << 24];
    assert!(matches!(
        FrameEncoder::new().encode(&big),
        Err(FrameError::TooLarge { len, .. }) if len == 1 << 24
    ));
    assert!(FrameEncoder::new().encode(&big[..MAX_PAYLOAD_LEN]).is_ok());
    let mut t = NoiseTransport::from_keys_for_testing_only([1; 32], [2; 32]);
    assert!(matches!(
        t.encrypt_frame(&big[..=MAX_PAYLOAD_LEN - TAG_LEN]),
        Err(TransportError::Frame(FrameError::TooLarge { .. }))
    ));
    // Receiving: a decoder limit below 2^24 refuses the announced length before the payload.
    let mut dec = FrameDecoder::new().with_max_len(1 << 20);
    dec.push(&[0x10, 0x00, 0x01]);
    assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));
}

#[test]
fn truncated_and_garbled_transport_frames_refused() {
    let mut a = NoiseTransport::from_keys_for_testing_only([5; 32], [6; 32]);
    let mut b = NoiseTransport::from_keys_for_testing_only([6; 32], [5; 32]);
    let ct = a.encrypt(b"\x00node").unwrap();
    for len in 0..ct.len() {
        assert_eq!(b.decrypt_frame(&ct[..len]), Err(TransportError::Decrypt));
    }
    // Wrong counter (the frames above used up b's counters 0..len).
    assert_eq!(b.decrypt_frame(&ct), Err(TransportError::Decrypt));
    // A truncated frame on the wire is not an error, just incomplete.
    let framed = a.encrypt_frame(b"\x00x").unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&framed[..framed.len() - 1]);
    assert_eq!(dec.next_frame(), Ok(None));
}

#[test]
fn decompression_bomb_refused_by_transport() {
    use std::io::Write;
    let mut a = NoiseTransport::from_keys_for_testing_only([5; 32], [6; 32]);
    let mut b = NoiseTransport::from_keys_for_testing_only([6; 32], [5; 32]);
    let mut z = flate2::write::ZlibEncoder::new(vec![0x02], flate2::Compression::best());
    z.write_all(&vec![b'a'; 70 << 20]).unwrap();
    let bomb = z.finish().unwrap();
    assert!(bomb.len() < 100 << 10, "{} bytes", bomb.len());
    let ct = a.encrypt(&bomb).unwrap();
    // Default cap (64 MiB): 70 MiB of output is refused.
    assert!(matches!(
        b.decrypt_node(BytesMut::from(ct.as_slice())),
        Err(TransportError::Unpack(_))
    ));
}
