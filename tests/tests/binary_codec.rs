//! The binary node codec against the recorded vectors, the token tables, and generated nodes.

use std::path::PathBuf;

use amarula_core::binary::{self, AttrValue, Content, DecodeError, Node, token};
use amarula_core::jid::{Jid, Server};
use amarula_tests::binary_vectors::{self, canonical_reading, same_node};
use proptest::prelude::*;
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vectors")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(vectors_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn binary_nodes_vectors_replay() {
    let file = load("binary_nodes.json");
    let report = binary_vectors::check(&file);
    assert!(report.failures.is_empty(), "{}", report.failures.join("\n"));
    let cases = file["cases"].as_array().unwrap();
    let quirks = cases
        .iter()
        .filter(|c| c["reference_quirk"] == Value::Bool(true))
        .count();
    assert_eq!(report.passed, cases.len() - quirks);
    assert_eq!(report.skipped, quirks);
}

#[test]
fn large_binary_nodes_vectors_replay() {
    let report = binary_vectors::check(&load("binary_nodes_large.json"));
    assert!(report.failures.is_empty(), "{}", report.failures.join("\n"));
    assert_eq!((report.passed, report.skipped), (6, 0));
}

/// The reference quirk cases, with our canonical bytes: a `hosted` / `hosted.lid` device JID is
/// an AD_JID with domain type 128 / 129 (the reference writes 0 and the JID comes back on
/// `s.whatsapp.net`); an agent is dropped, as in the reference (no wire form carries it).
#[test]
fn quirk_cases_have_our_canonical_bytes() {
    let file = load("binary_nodes.json");
    let mut seen = 0;
    for case in file["cases"].as_array().unwrap() {
        if case["reference_quirk"] != Value::Bool(true) {
            continue;
        }
        let node = binary_vectors::node_from_json(&case["node"]).unwrap();
        let theirs = hex::decode(case["frame_hex"].as_str().unwrap()).unwrap();
        let mut ours = Vec::new();
        binary::encode_frame(&node, &mut ours).unwrap();
        let name = case["name"].as_str().unwrap();
        let expected = if name.contains("hosted_lid") {
            replace_once(&theirs, &[0xF7, 0x00], &[0xF7, 0x81])
        } else if name.contains("hosted") {
            replace_once(&theirs, &[0xF7, 0x00], &[0xF7, 0x80])
        } else if name.contains("agent") {
            theirs.clone()
        } else {
            panic!("unexpected quirk case {name}");
        };
        // Content JIDs appear twice (attribute and content): both get our domain byte.
        let expected = if name.contains("content_hosted") {
            let d = if name.contains("hosted_lid") {
                0x81
            } else {
                0x80
            };
            replace_once(&expected, &[0xF7, 0x00], &[0xF7, d])
        } else {
            expected
        };
        assert_eq!(hex::encode(&ours), hex::encode(&expected), "{name}");
        // Ours reads back as the JID we meant (hosted stays hosted), minus the agent.
        let back = binary::decode_frame(&ours, 1 << 20).unwrap();
        assert!(
            same_node(&back, &canonical_reading(&node)),
            "{name}: {back}"
        );
        seen += 1;
    }
    assert_eq!(seen, 5);
}

fn replace_once(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = haystack.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn token_tables_match_json() {
    let json: Value = serde_json::from_str(include_str!("../../core/tokens.json")).unwrap();
    let single: Vec<&str> = json["single_byte"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(single, token::SINGLE_BYTE.to_vec());
    let double = json["double_byte"].as_array().unwrap();
    assert_eq!(double.len(), 4);
    for (d, dict) in double.iter().enumerate() {
        let dict: Vec<&str> = dict
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(dict, token::DOUBLE_BYTE[d].to_vec(), "dictionary {d}");
    }
    // The shared reference copy is the source of ours.
    let shared = vectors_dir().join("../../shared/protocol/tokens.json");
    if let Ok(text) = std::fs::read_to_string(shared) {
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json,
            "core/tokens.json differs from shared/protocol/tokens.json"
        );
    }
}

#[test]
fn a_four_byte_frame_claiming_four_gib_fails_fast() {
    // LIST_16 of 65535 children in 4 bytes, and a BINARY_32 of 4 GiB in 7.
    assert!(matches!(
        binary::decode(&[0xF8, 0x02, 0x19, 0xF9, 0xFF, 0xFF]),
        Err(DecodeError::LengthTooLarge { .. })
    ));
    assert!(matches!(
        binary::decode(&[0xF8, 0x02, 0x19, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF]),
        Err(DecodeError::LengthTooLarge { .. })
    ));
}

#[test]
fn decompression_bomb_is_refused() {
    use std::io::Write;
    // 64 MiB of zeros compresses to ~64 KiB; with a 1 MiB cap it must be refused, and the
    // decoder must not inflate past the cap to find out.
    let mut z = flate2::write::ZlibEncoder::new(vec![0x02], flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        z.write_all(&chunk).unwrap();
    }
    let frame = z.finish().unwrap();
    assert!(frame.len() < 1 << 17);
    assert_eq!(
        binary::unpack(&frame, 1 << 20).unwrap_err(),
        DecodeError::InflatedTooLarge { limit: 1 << 20 }
    );
    // A corrupt or truncated stream is its own error.
    assert_eq!(
        binary::unpack(&frame[..frame.len() / 2], 1 << 30).unwrap_err(),
        DecodeError::Inflate
    );
    assert_eq!(
        binary::unpack(&[0x02, 1, 2, 3], 1 << 20).unwrap_err(),
        DecodeError::Inflate
    );
    assert_eq!(binary::unpack(&[], 1).unwrap_err(), DecodeError::EmptyFrame);
}

#[test]
fn compressed_frame_decodes() {
    use std::io::Write;
    let node = Node::new("message")
        .attr("id", "ABC")
        .children([Node::new("enc").bytes(vec![1u8; 1000])]);
    let plain = binary::to_vec(&node).unwrap();
    let mut z = flate2::write::ZlibEncoder::new(vec![0x02], flate2::Compression::default());
    z.write_all(&plain).unwrap();
    let frame = z.finish().unwrap();
    assert_eq!(binary::decode_frame(&frame, 1 << 20).unwrap(), node);
    // Exactly at the cap is fine, one byte under is not.
    assert!(binary::unpack(&frame, plain.len()).is_ok());
    assert!(binary::unpack(&frame, plain.len() - 1).is_err());
}

// ---- property tests ----

fn token_string() -> BoxedStrategy<String> {
    let all: Vec<&'static str> = token::SINGLE_BYTE[1..]
        .iter()
        .chain(token::DOUBLE_BYTE.iter().flatten())
        .copied()
        .collect();
    proptest::sample::select(all)
        .prop_map(str::to_owned)
        .boxed()
}

fn any_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => token_string(),
        2 => "[0-9.-]{1,130}",
        2 => "[0-9A-F]{1,130}",
        1 => "[0-9a-f]{1,20}",
        3 => "\\PC{0,40}",
        1 => Just(String::new()),
        1 => "[a-z]{200,300}",
    ]
    .boxed()
}

fn user() -> BoxedStrategy<String> {
    prop_oneof![
        "[0-9]{1,20}",
        "[a-z]{1,8}",
        token_string(),
        Just(String::new())
    ]
    .boxed()
}

/// Users whose text form is unambiguous (no `@ : _ .` inside).
fn text_user() -> BoxedStrategy<String> {
    prop_oneof!["[0-9]{1,20}", "[a-z]{1,8}", Just(String::new())].boxed()
}

/// JIDs the wire can carry exactly (no agents; devices only where a form has one).
fn wire_jid() -> impl Strategy<Value = Jid> {
    jid_with_users(user())
}

fn jid_with_users(user: BoxedStrategy<String>) -> impl Strategy<Value = Jid> {
    let plain_servers = prop_oneof![
        Just(Server::User),
        Just(Server::LegacyUser),
        Just(Server::Group),
        Just(Server::Broadcast),
        Just(Server::Lid),
        Just(Server::Newsletter),
        Just(Server::Call),
        Just(Server::Hosted),
        Just(Server::HostedLid),
        Just(Server::Bot),
        Just(Server::Messenger),
        Just(Server::Interop),
        Just(Server::Other("example.org".into())),
    ];
    let ad_servers = prop_oneof![
        Just(Server::User),
        Just(Server::Lid),
        Just(Server::Hosted),
        Just(Server::HostedLid)
    ];
    prop_oneof![
        (user.clone(), plain_servers).prop_map(|(u, s)| Jid::new(u, s)),
        (user.clone(), ad_servers, any::<u8>())
            .prop_map(|(u, s, d)| Jid::new(u, s).with_device(u16::from(d))),
        (user, any::<u16>()).prop_map(|(u, d)| Jid::new(u, Server::Messenger).with_device(d)),
        ("[0-9]{1,15}", any::<u16>(), 1..u16::MAX).prop_map(|(u, d, i)| {
            Jid::new(u, Server::Interop)
                .with_device(d)
                .with_integrator(i)
        }),
    ]
}

fn attr_value() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        3 => any_string().prop_map(AttrValue::from),
        1 => wire_jid().prop_map(AttrValue::Jid),
    ]
}

fn leaf_content() -> impl Strategy<Value = Content> {
    prop_oneof![
        Just(Content::None),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| Content::Bytes(b.into())),
        any_string().prop_map(|s| Content::Text(s.into())),
        wire_jid().prop_map(Content::Jid),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let tag = any_string()
        .prop_filter("tags are not empty", |s| !s.is_empty())
        .boxed();
    let leaf = (
        tag.clone(),
        proptest::collection::vec(("[a-z_]{0,10}", attr_value()), 0..6),
        leaf_content(),
    )
        .prop_map(|(tag, attrs, content)| Node {
            tag: tag.into(),
            attrs: attrs.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            content,
        });
    leaf.prop_recursive(4, 64, 8, move |inner| {
        (
            tag.clone(),
            proptest::collection::vec((token_string(), attr_value()), 0..4),
            proptest::collection::vec(inner, 0..8),
        )
            .prop_map(|(tag, attrs, children)| Node {
                tag: tag.into(),
                attrs: attrs.into_iter().map(|(k, v)| (k.into(), v)).collect(),
                content: Content::Nodes(children),
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every node encodes, and decodes (borrowed and owned) to what the wire can say of it.
    #[test]
    fn node_round_trip(n in node()) {
        let mut frame = Vec::new();
        binary::encode_frame(&n, &mut frame).unwrap();
        let back = binary::decode_frame(&frame, 1 << 20).unwrap();
        let want = canonical_reading(&n);
        prop_assert!(same_node(&back, &want), "{} vs {}", back, want);
        // Re-encoding what was decoded is stable.
        let again = binary::to_vec(&back).unwrap();
        prop_assert_eq!(&again[..], &frame[1..]);
    }

    /// Every truncation of a valid node is refused with an error, never a panic.
    #[test]
    fn truncations_fail_cleanly(n in node()) {
        let bytes = binary::to_vec(&n).unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(binary::decode(&bytes[..cut]).is_err());
        }
    }

    /// Random bytes never panic the decoder.
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        amarula_tests::fuzz_targets::binary_decode(&data);
    }

    /// Text JIDs round-trip through Display and FromStr, agents included.
    #[test]
    fn jid_text_round_trip(
        j in jid_with_users(text_user()),
        agent in prop_oneof![Just(0u8), any::<u8>()],
    ) {
        let j = if j.server_part() == &Server::User && !j.user_part().is_empty() {
            j.with_agent(agent)
        } else {
            j
        };
        let text = j.to_string();
        let parsed: Jid = text.parse().unwrap();
        prop_assert_eq!(parsed, j);
    }
}
