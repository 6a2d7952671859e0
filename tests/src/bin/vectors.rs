//! Checks vector files: `cargo run --release -p amarula-tests --bin vectors -- FILE...`
//!
//! The schema of each file is recognised by its shape (vectors/README.md), never by its name:
//! a `cases` list of nodes is a binary node file, a `transcripts` list a Noise handshake file,
//! a `scenarios` list a Signal file, and `"schema": "amarula-session-v1"` (or a `sessions` list
//! of such) a recorded connection-machine session (vectors/sessions/). One line is printed per failing case (with expected and
//! actual hex), and the last line is `N passed, M failed, K skipped`. The exit status is
//! non-zero when a case failed or a file could not be read.

use std::process::ExitCode;

use amarula_tests::report::Report;
use amarula_tests::{binary_vectors, noise_vectors, record, signal_vectors};
use serde_json::Value;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    let verbose = std::env::var_os("VECTORS_VERBOSE").is_some();
    if files.is_empty() {
        eprintln!("usage: vectors FILE...");
        return ExitCode::from(2);
    }
    let mut total = Report::default();
    for path in &files {
        let report = check_file(path);
        for line in &report.failures {
            println!("FAIL {path}: {line}");
        }
        if verbose {
            for line in &report.skips {
                println!("SKIP {path}: {line}");
            }
        }
        eprintln!(
            "{path}: {} passed, {} failed, {} skipped",
            report.passed, report.failed, report.skipped
        );
        total.merge(report);
    }
    println!(
        "{} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    if total.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn check_file(path: &str) -> Report {
    let mut report = Report::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            report.fail(format!("cannot read file: {e}"));
            return report;
        }
    };
    let json: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            report.fail(format!("not JSON: {e}"));
            return report;
        }
    };
    let is_list = |key: &str| json.get(key).is_some_and(Value::is_array);
    let is_session = json.get("schema").and_then(Value::as_str) == Some("amarula-session-v1");
    if is_session || is_list("sessions") {
        record::check(&json)
    } else if is_list("cases") {
        binary_vectors::check(&json)
    } else if is_list("transcripts") {
        noise_vectors::check(&json)
    } else if is_list("scenarios") {
        signal_vectors::check(&json)
    } else {
        report.fail("unknown vector schema (no cases, transcripts or scenarios list)".into());
        report
    }
}
