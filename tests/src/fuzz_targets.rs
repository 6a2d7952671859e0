//! Bodies of the codec fuzz targets. `cargo fuzz` runs them from `tests/fuzz/`, and the test
//! `fuzz_corpus` replays the checked-in corpus through them, so a crash found once stays fixed.

use amarula_core::binary::{self, DEFAULT_MAX_INFLATED};

/// Decodes arbitrary bytes as a node and as a frame. Must never panic; whatever decodes must
/// encode again, and that encoding must decode to the same node.
pub fn binary_decode(data: &[u8]) {
    let direct = binary::decode_owned(data);
    assert_eq!(
        direct.is_ok(),
        binary::decode(data).is_ok(),
        "the two decoders disagree on validity"
    );
    if let Ok(node) = binary::decode(data) {
        let owned = node.to_node();
        // The one-pass owned decoder and the borrowed view agree.
        assert_eq!(direct.as_ref().ok(), Some(&owned));
        // Iterate everything lazily held, to exercise the re-reading of attributes.
        for (k, v) in node.attrs.iter() {
            let _ = (k.as_str(), v.to_value());
        }
        let bytes = binary::to_vec(&owned).expect("a decoded node is always encodable");
        let again = binary::decode(&bytes)
            .expect("our own encoding always decodes")
            .to_node();
        assert!(
            crate::binary_vectors::same_node(&again, &owned),
            "re-encoding changed the node: {owned} vs {again}"
        );
    }
    // The frame path: flag byte, maybe zlib, with a small cap so bombs are cheap to refuse.
    let _ = binary::decode_frame(data, 1 << 20);
    let _ = binary::decode_frame(data, DEFAULT_MAX_INFLATED.min(1 << 16));
}
