//! The messaging fuzz target on stable Rust: random encrypted stanzas, sends, IQ answers,
//! notifications, retry receipts and time never panic, tables stay within their caps, and
//! every send ends.

use amarula_tests::fuzz_messaging::{messaging, messaging_contents};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        messaging(&data);
    }

    /// Only well-encrypted messages of every kind, built from random fields.
    #[test]
    fn random_plaintexts_of_every_kind(
        fields in proptest::collection::vec(any::<u8>(), 0..64),
        kinds in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let mut data = Vec::new();
        for k in kinds {
            data.extend_from_slice(&[9, k & 1, k]);
            data.extend_from_slice(&fields);
        }
        messaging(&data);
    }
}

#[test]
fn empty_input() {
    messaging(&[]);
}

#[test]
fn every_kind_of_plaintext_is_decrypted_and_classified() {
    // Op 9 (an encrypted message from a peer with a session: 0 another user, 1 our own other
    // device) for each kind selector, with and without a message secret, one run each. The
    // fields read 8 (short strings, 8-byte chunks); the 8s left over are op 8, which moves
    // time to the next deadline (after the message was handled).
    let mut contents = Vec::new();
    for kind in 0..12u8 {
        for peer in 0..2u8 {
            let mut data = vec![9, peer, kind | (peer << 7)];
            data.extend_from_slice(&[8; 48]);
            contents.extend(messaging_contents(&data));
        }
    }
    let kinds: std::collections::BTreeSet<String> = contents
        .iter()
        .map(|c| {
            format!("{c:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for k in [
        "Reaction", "Poll", "PollVote", "Edit", "Revoke", "Text", "Contact", "Contacts",
        "Location", "Protocol", "Unknown",
    ] {
        assert!(kinds.contains(k), "no {k} among {kinds:?}");
    }
}

#[test]
fn sends_of_every_kind_end() {
    // Op 10 (a send of a kind) for each kind selector, to a user, about a made-up message of
    // ours; then the usync answer (op 3) and time (op 8). Every send must end.
    for kind in 0..9u8 {
        let data = [10, 1, 1, 0, 4, kind, 4, 4, 4, 4, 4, 4, 3, 1, 8, 8];
        messaging(&data);
    }
}
