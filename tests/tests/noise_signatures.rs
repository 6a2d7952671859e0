//! Known-answer tests of the curve25519 (XEdDSA-style) signatures: the certificate signatures
//! of the noise vectors and the signed prekeys and sender-key message signatures of the Signal
//! vectors verify, and the deterministic signer reproduces them byte for byte.

use std::path::PathBuf;

use amarula_core::noise::KeyPair;
use amarula_core::xeddsa;
use serde_json::Value;

fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vectors")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex_at(v: &Value, path: &[&str]) -> Vec<u8> {
    let s = path.iter().fold(v, |v, k| &v[k]).as_str().unwrap();
    hex::decode(s).unwrap()
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap()
}

/// Checks one known signature: it verifies, tampering breaks it, the deterministic signer
/// reproduces it, and a randomized signature over the same message verifies too.
fn known_answer(private: [u8; 32], public: [u8; 32], msg: &[u8], sig: [u8; 64]) {
    assert_eq!(KeyPair::from_private_bytes(private).public_bytes(), &public);
    assert!(xeddsa::verify(&public, msg, &sig));
    assert_eq!(xeddsa::sign_deterministic(&private, msg), sig);
    let mut bad = sig;
    bad[10] ^= 4;
    assert!(!xeddsa::verify(&public, msg, &bad));
    let mut bad_msg = msg.to_vec();
    bad_msg[0] ^= 1;
    assert!(!xeddsa::verify(&public, &bad_msg, &sig));
    let randomized = xeddsa::sign(&private, msg, &[0x5A; 64]);
    assert_ne!(randomized, sig);
    assert!(xeddsa::verify(&public, msg, &randomized));
}

#[test]
fn certificate_signatures_of_the_noise_vectors() {
    let file = vectors("noise_handshake.json");
    let mut sign_bits = Vec::new();
    for t in file["transcripts"].as_array().unwrap() {
        let sc = &t["server_certificate"];
        for (key, details, sig) in [
            (
                "fake_root_key",
                "intermediate_details_hex",
                "intermediate_signature_hex",
            ),
            (
                "fake_intermediate_key",
                "leaf_details_hex",
                "leaf_signature_hex",
            ),
        ] {
            let sig = arr(&hex_at(sc, &[sig]));
            sign_bits.push(sig[63] >> 7);
            known_answer(
                arr(&hex_at(sc, &[key, "private"])),
                arr(&hex_at(sc, &[key, "public"])),
                &hex_at(sc, &[details]),
                sig,
            );
        }
    }
    // The README: the sign bit is set in three of the four signatures.
    assert_eq!(sign_bits.iter().filter(|b| **b == 1).count(), 3);
}

#[test]
fn signed_prekeys_of_the_signal_vectors() {
    let file = vectors("signal_vectors.json");
    let mut count = 0;
    for scenario in file["scenarios"].as_array().unwrap() {
        for who in ["alice", "bob"] {
            let p = &scenario[who];
            let identity_public = hex_at(p, &["identity_key", "public"]);
            assert_eq!(identity_public.first(), Some(&0x05));
            // Signed over the 33-byte 05-prefixed prekey, verified with the identity key's 32
            // bytes after 05.
            known_answer(
                arr(&hex_at(p, &["identity_key", "private"])),
                arr(&identity_public[1..]),
                &hex_at(p, &["signed_prekey", "public"]),
                arr(&hex_at(p, &["signed_prekey", "signature"])),
            );
            count += 1;
        }
    }
    assert!(count >= 2);
}

#[test]
fn sender_key_message_signatures_of_the_signal_vectors() {
    let file = vectors("signal_vectors.json");
    let mut count = 0;
    for scenario in file["scenarios"].as_array().unwrap() {
        let group = &scenario["group"];
        let public = hex_at(group, &["signing_key", "public"]);
        let private = arr(&hex_at(group, &["signing_key", "private"]));
        for m in group["messages"].as_array().unwrap() {
            // skmsg = 33 ‖ protobuf ‖ 64-byte signature over 33 ‖ protobuf.
            let wire = hex_at(m, &["ciphertext_hex"]);
            let (msg, sig) = wire.split_at(wire.len() - 64);
            known_answer(private, arr(&public[1..]), msg, arr(sig));
            count += 1;
        }
    }
    assert!(count >= 2);
}
