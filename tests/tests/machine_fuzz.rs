//! The machine fuzz target on stable Rust: random operation sequences (server stanzas,
//! garbage frames, time, commands) never panic, every IQ and relayed message ends exactly
//! once, and the held-ack table and sent-message cache stay within their bounds.

use amarula_tests::fuzz_targets::machine;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..192)) {
        machine(&data);
    }

    /// Mostly commands and templates (operations 2–10), the paths a random byte rarely
    /// keeps open for long.
    #[test]
    fn random_operations(ops in proptest::collection::vec((2u8..=10, any::<u8>(), any::<u8>(), any::<u8>()), 0..48)) {
        let data: Vec<u8> = ops.into_iter().flat_map(|(op, a, b, c)| [op, a, b, c]).collect();
        machine(&data);
    }
}

#[test]
fn empty_input() {
    machine(&[]);
}

#[test]
fn many_held_messages_and_confirms() {
    // 20 incoming messages (template 2), then confirms of assorted tokens.
    let mut data = Vec::new();
    for i in 0..20u8 {
        data.extend([7, 2, i, 0]);
    }
    for i in 0..10u8 {
        data.extend([6, i, i % 3, 91]);
    }
    machine(&data);
}

#[test]
fn requests_then_silence() {
    let mut data = Vec::new();
    for t in [0u8, 5, 30, 0] {
        data.extend([4, t]);
    }
    data.extend([5, 0, 1, 5, 1, 2]);
    // 100 s pass.
    data.extend([2, 0x27, 0x10]);
    machine(&data);
}
