//! Feeds arbitrary bytes, cut at arbitrary points, to the frame decoders.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amarula_tests::fuzz_noise::frame_decoder(data);
});
