//! Feeds arbitrary bytes to the Signal message parsers and decryptors.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amarula_tests::fuzz_signal::signal_parse(data);
});
