//! Drives a logged-in connection machine with operations read from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amarula_tests::fuzz_targets::machine(data);
});
