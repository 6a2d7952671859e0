//! Heap allocations made by the machine for one received message on an established session:
//! socket bytes in (Noise decrypt, unpack, decode, dispatch, Signal decrypt, unpad, pending
//! record) until its `Event::Message` and every other output are drained. A counting global
//! allocator counts the calls; the count is deterministic, and the README quotes it
//! (`cargo test -p amarula-tests --test receive_allocs -- --nocapture` prints it).

// A global allocator needs `unsafe impl GlobalAlloc`; this test binary does it only to count
// allocation calls around the system allocator.
#![allow(
    unsafe_code,
    reason = "a counting global allocator needs `unsafe impl GlobalAlloc`"
)]

#[path = "../benches/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use amarula_core::binary;
use amarula_core::frame::FrameDecoder;
use amarula_core::machine::{Event, Output};
use amarula_core::noise::NoiseTransport;

/// Counts allocation calls (`alloc`, `alloc_zeroed`, `realloc`) made through it.
struct Counting;

thread_local! {
    /// Allocation calls made by this thread. Per thread, so that the test harness's own
    /// threads stay out of the figure. A `const` initializer never allocates.
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: during thread teardown the slot may be gone; those calls are not ours.
    let _ = CALLS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees on `layout` are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (through this wrapper).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees are passed on; `ptr` came from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn calls() -> u64 {
    CALLS.with(Cell::get)
}

/// Allocation calls for each of `n` messages received in a row.
fn per_message(n: u64) -> Vec<u64> {
    let (mut pair, mut peers) = support::established();
    let bob = &mut peers[0];
    support::bob_has_session(&pair, bob);
    (1..=n)
        .map(|i| {
            let frames = support::incoming_frames(&mut pair.server, bob, i);
            let before = calls();
            for f in &frames {
                pair.client.handle_input(pair.now, f);
            }
            let mut got = false;
            while let Some(o) = pair.client.poll_output() {
                got |= matches!(o, Output::Event(Event::Message(_)));
            }
            let spent = calls() - before;
            assert!(got, "message {i} was handed out");
            spent
        })
        .collect()
}

/// The ceiling on allocations per received message once the machine is warm: 6, and two more
/// when one of its tables (duplicate check, held acks) grows to its next size. The 6, with
/// what needs each (README, "Messaging through the machine"):
/// - the decoder: the stanza's attributes past two and its child list (2);
/// - Signal: the changed session record's bytes for the store (1); the plaintext is
///   decrypted into a buffer the machine reuses;
/// - the `Message` protobuf: its text, which the decoder copies (1);
/// - the pending record for the store, one shared buffer whose tail is the raw plaintext
///   handed out, which the classified text is a slice of (1);
/// - the event's box, the message and its protobuf inside (1).
///
/// The message id and the pending key are held inline, and the ack is built only when a
/// refusal sends it.
const RECEIVE_CEILING: u64 = 6 + 2;

#[test]
fn allocations_per_received_message() {
    let counts = per_message(16);
    println!("allocations per received message: {counts:?}");
    // The first message warms the machine's tables; after it the count settles (it moves by
    // two as a table grows).
    let steady = counts[1..].iter().copied().max().unwrap_or_default();
    assert!(
        steady <= RECEIVE_CEILING,
        "{steady} allocations per received message (ceiling {RECEIVE_CEILING}): {counts:?}"
    );
    assert!(
        counts[1..]
            .iter()
            .filter(|c| **c <= RECEIVE_CEILING - 2)
            .count()
            >= counts.len() / 2,
        "most messages take no table growth: {counts:?}"
    );
}

/// Allocation calls for one text sent to a user with three devices and our phone (four
/// pairwise encryptions, the stanza, five persistence events, one Noise frame), once warm.
/// Printed for the README; the ceiling keeps the figure from creeping back up.
#[test]
fn allocations_per_sent_message() {
    let (mut pair, _) = support::established();
    let to = support::jid(&format!("{}@s.whatsapp.net", support::BOB));
    let counts: Vec<u64> = (0..8)
        .map(|_| {
            let before = calls();
            pair.client
                .send_text(pair.now, &to, "hello there")
                .expect("send");
            while let Some(o) = pair.client.poll_output() {
                std::hint::black_box(&o);
            }
            calls() - before
        })
        .collect();
    println!("allocations per sent message (4 devices): {counts:?}");
    let steady = counts[1..].iter().copied().max().unwrap_or_default();
    assert!(
        steady <= 90,
        "{steady} allocations per sent message: {counts:?}"
    );
}

/// The transport and codec share of the path: the socket bytes of the same message through
/// the frame decoder, Noise decryption, the flag byte and the owned decoder. Two allocations,
/// both in the decoder: the root's four attributes (two fit inline) and its child list.
#[test]
fn transport_and_codec_allocations() {
    let (pair, mut peers) = support::established();
    support::bob_has_session(&pair, &mut peers[0]);
    let stanza = support::incoming(&mut peers[0], 1);
    let mut plain = Vec::new();
    binary::encode_frame(&stanza, &mut plain).expect("encodes");
    let mut server = NoiseTransport::from_keys_for_testing_only([1; 32], [2; 32]);
    let mut client = NoiseTransport::from_keys_for_testing_only([2; 32], [1; 32]);
    let mut frames = FrameDecoder::new();
    let mut spent = Vec::new();
    for _ in 0..4 {
        let wire = server.encrypt_frame(&plain).expect("encrypts");
        let before = calls();
        frames.push(&wire);
        let frame = frames.next_frame().expect("a frame").expect("whole");
        let body = client.decrypt_node(frame).expect("decrypts");
        let node = binary::decode_owned_shared(&body).expect("decodes");
        spent.push(calls() - before);
        assert_eq!(node, stanza);
    }
    println!("transport and codec allocations per message: {spent:?}");
    assert_eq!(spent[1..], [2, 2, 2]);
}
