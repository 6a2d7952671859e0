//! Drives an end-to-end logged-in machine with messaging operations read from arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amarula_tests::fuzz_messaging::messaging(data);
});
