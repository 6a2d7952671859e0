//! Replays the checked-in fuzz corpus (tests/fuzz/corpus/<target>/*) through the fuzz target
//! bodies on stable Rust, so every input a fuzzer once found stays harmless.

use std::path::PathBuf;

use amarula_tests::{fuzz_noise, fuzz_signal, fuzz_targets};

fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        body(&data);
        count += 1;
    }
    assert!(count > 0, "empty corpus for {target}");
}

#[test]
fn binary_decode_corpus() {
    replay("binary_decode", fuzz_targets::binary_decode);
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", fuzz_noise::frame_decoder);
}

#[test]
fn transport_decrypt_corpus() {
    replay("transport_decrypt", fuzz_noise::transport_decrypt);
}

#[test]
fn machine_corpus() {
    replay("machine", fuzz_targets::machine);
}

#[test]
fn messaging_corpus() {
    replay("messaging", amarula_tests::fuzz_messaging::messaging);
}

#[test]
fn signal_parse_corpus() {
    replay("signal_parse", fuzz_signal::signal_parse);
}

/// Every corpus folder has a replay test above.
#[test]
fn every_corpus_is_replayed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            [
                "binary_decode",
                "frame_decoder",
                "transport_decrypt",
                "machine",
                "signal_parse",
                "messaging"
            ]
            .contains(&name.as_str()),
            "corpus {name} has no replay test"
        );
    }
}
