//! Replays `vectors/noise_handshake.json` through our initiator and responder.

use std::path::PathBuf;

fn vectors(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("vector file is readable");
    serde_json::from_str(&text).expect("vector file is JSON")
}

#[test]
fn noise_handshake_vectors_replay() {
    let report = amarula_tests::noise_vectors::check(&vectors("noise_handshake.json"));
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.failed, 0);
    assert!(report.passed > 0);
    // Three cases per transcript (initiator, responder, certificate), two transcripts.
    assert_eq!(report.passed, 6);
}
