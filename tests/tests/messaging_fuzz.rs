//! The messaging fuzz target on stable Rust: random encrypted stanzas, sends, IQ answers,
//! notifications, retry receipts and time never panic, tables stay within their caps, and
//! every send ends.

use amarula_tests::fuzz_messaging::messaging;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        messaging(&data);
    }
}

#[test]
fn empty_input() {
    messaging(&[]);
}

#[test]
fn many_messages_fill_the_parking() {
    // Twenty encrypted stanzas that need stored records, no answers.
    let data: Vec<u8> = (0..20u8)
        .flat_map(|i| [0, 0, i, i, 1, 4, 0x33, 1, 2, 3])
        .collect();
    messaging(&data);
}
