//! Opens arbitrary bytes as transport frames (bad and valid tags) and as handshake messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amarula_tests::fuzz_noise::transport_decrypt(data);
});
