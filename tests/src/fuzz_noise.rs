//! Bodies of the `frame_decoder` and `transport_decrypt` fuzz targets. They must never panic,
//! whatever the input; the assertions in them check invariants of our own code, not of the
//! input.

use amarula_core::frame::{FrameDecoder, FrameEncoder};
use amarula_core::noise::{KeyPair, NoiseHandshake, NoiseTransport, TrustAnchor};
use bytes::BytesMut;

/// Cap on inflated frames while fuzzing: small enough to keep every run fast, large enough to
/// reach the "too large" branch with a short zlib stream.
const FUZZ_MAX_INFLATED: usize = 1 << 20;

/// Feeds `data` to frame decoders in chunks whose sizes come from the data itself, checking
/// that every byte is accounted for and that re-encoding the frames gives the input back.
pub fn frame_decoder(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    // Client side (no intro) with the default limit, and with a small limit.
    for max in [usize::MAX, usize::from(seed) * 16] {
        let mut dec = FrameDecoder::new().with_max_len(max);
        let mut reencoded = Vec::new();
        let mut consumed_ok = true;
        for chunk in chunks(rest, seed) {
            dec.push(chunk);
            if !drain(&mut dec, &mut reencoded) {
                consumed_ok = false;
                break;
            }
        }
        if consumed_ok {
            // Every byte is either in a returned frame or still buffered.
            assert_eq!(reencoded.len() + dec.buffered_len(), rest.len());
            assert_eq!(
                reencoded.as_slice(),
                rest.get(..reencoded.len()).unwrap_or_default()
            );
        }
    }
    // Server side: the same bytes behind an intro header check.
    let mut dec = FrameDecoder::expecting_intro();
    for chunk in chunks(rest, seed.rotate_left(3)) {
        dec.push(chunk);
        if !drain(&mut dec, &mut Vec::new()) {
            break;
        }
    }
    let _ = dec.routing_info();
}

/// Splits `data` into chunks of 1..=16 bytes (sizes drawn from a tiny generator seeded by
/// `seed`), or whole when `seed` is 0.
fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut state = seed;
    let mut rest = data;
    while !rest.is_empty() {
        state = state.wrapping_mul(37).wrapping_add(11);
        let n = usize::from(state % 16 + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// Pulls every complete frame, appending its re-encoding to `out`; `false` on a decoder error.
fn drain(dec: &mut FrameDecoder, out: &mut Vec<u8>) -> bool {
    loop {
        match dec.next_frame() {
            Ok(Some(frame)) => {
                FrameEncoder::without_intro()
                    .encode_into(&frame, out)
                    .expect("a decoded frame is below 2^24 bytes");
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Opens `data` as transport frames with fixed keys (nearly always a tag failure), then seals it
/// so that it opens with a valid tag and its "plaintext" goes through the flag byte and zlib
/// step; also feeds it to the handshake message readers of both sides.
pub fn transport_decrypt(data: &[u8]) {
    let mut sender = NoiseTransport::from_keys_for_testing_only([7; 32], [8; 32]);
    let mut receiver = NoiseTransport::from_keys_for_testing_only([8; 32], [7; 32]);
    receiver.set_max_inflated(FUZZ_MAX_INFLATED);

    // As raw frame payloads: wrong tag (or too short), must fail cleanly.
    let _ = receiver.decrypt_frame(data);
    let _ = receiver.decrypt_node(BytesMut::from(data));

    // As a stream of frames.
    let mut dec = FrameDecoder::new();
    dec.push(data);
    while let Ok(Some(frame)) = dec.next_frame() {
        let _ = receiver.decrypt_node(frame);
    }

    // With a valid tag: the bytes as they are (flag byte from the input), and forced through
    // the zlib branch.
    for plaintext in [data.to_vec(), [&[0x02][..], data].concat()] {
        let sealed = sender.encrypt(&plaintext);
        let mut check = NoiseTransport::from_keys_for_testing_only([8; 32], [7; 32]);
        check.set_max_inflated(FUZZ_MAX_INFLATED);
        // Align the checking receiver with the sender's counter.
        while check.read_counter() + 1 < sender.write_counter() {
            let _ = check.decrypt_frame(&[]);
        }
        if let Ok(sealed) = sealed {
            let opened = check.decrypt_frame(&sealed).map(|p| p == plaintext);
            assert_eq!(
                opened,
                Ok(true),
                "a sealed frame must open to its plaintext"
            );
            let _ = receiver.decrypt_node(BytesMut::from(sealed.as_slice()));
        }
    }

    // As handshake messages.
    let e = KeyPair::from_private_bytes([1; 32]);
    let s = KeyPair::from_private_bytes([2; 32]);
    let (_, client) =
        NoiseHandshake::initiator_fixed_ephemeral_for_testing_only(s, e).client_hello();
    let _ = client.read_server_hello(data, 1_750_000_000, &TrustAnchor::WHATSAPP);
    let server = NoiseHandshake::responder_fixed_ephemeral_for_testing_only(
        KeyPair::from_private_bytes([3; 32]),
        KeyPair::from_private_bytes([4; 32]),
        Vec::new(),
    );
    let _ = server.read_client_hello(data);
}
