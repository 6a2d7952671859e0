//! Checks `vectors/signal_vectors.json` both ways: decrypt-only with the recorded keys, and a
//! replay from the recorded generated key pairs that reproduces every ciphertext.

use std::path::PathBuf;

fn vectors(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("vector file is readable");
    serde_json::from_str(&text).expect("vector file is JSON")
}

#[test]
fn signal_vectors_pass_both_ways() {
    let report = amarula_tests::signal_vectors::check(&vectors("signal_vectors.json"));
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.failed, 0);
    assert_eq!(report.skipped, 0);
    // One scenario: 4 pairwise messages decrypt-only and replayed (8), the SKDM and 2 skmsg
    // decrypt-only (3), the SKDM and 2 skmsg replayed (3).
    assert_eq!(report.passed, 14);
}

#[test]
fn a_changed_ciphertext_is_reported() {
    let mut file = vectors("signal_vectors.json");
    let msg = &mut file["scenarios"][0]["messages"][2]["ciphertext_hex"];
    let mut hex = msg.as_str().unwrap().to_owned();
    let last = hex.pop().unwrap();
    hex.push(if last == '0' { '1' } else { '0' });
    *msg = serde_json::Value::String(hex);
    let report = amarula_tests::signal_vectors::check(&file);
    // Both the decrypt-only (bad MAC) and the replay (bytes differ) cases of message 3 fail.
    assert_eq!(report.failed, 2, "{:#?}", report.failures);
    assert!(report.failures.iter().all(|l| l.contains("scenario 0")));
    assert!(report.failures.iter().any(|l| l.contains("expected")));
}
