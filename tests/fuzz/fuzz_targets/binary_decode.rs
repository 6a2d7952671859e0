//! Decodes arbitrary bytes as a binary node and as a frame.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amarula_tests::fuzz_targets::binary_decode(data);
});
