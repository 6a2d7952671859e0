//! Support code of amarula's integration tests: the vector checkers behind the `vectors` runner,
//! the bodies of the fuzz targets (shared by `cargo fuzz` and the corpus replay test), the
//! crash test's client log and simulator observer (`crash`), and the Baileys process of the
//! third-party client test (`interop`).

#![forbid(unsafe_code)]

pub mod binary_vectors;
pub mod crash;
pub mod e2e;
pub mod expect;
pub mod fuzz_messaging;
pub mod fuzz_noise;
pub mod fuzz_signal;
pub mod fuzz_targets;
pub mod harness;
pub mod interop;
pub mod json;
pub mod keystore;
pub mod noise_vectors;
pub mod peer;
pub mod pg;
pub mod record;
pub mod report;
pub mod runtimes;
pub mod signal_vectors;
pub mod sim;
