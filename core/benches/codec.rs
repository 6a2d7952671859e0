//! Binary node codec benchmarks, amarula beside the published `wacore-binary` 0.7.0 on the same
//! workloads in the same run (`cargo bench -p amarula-core --bench codec`).
//!
//! Workloads:
//! - `message`: a typical 258-byte `<message>` (5 attributes including a phone JID, one
//!   `<enc v=2 type=msg>` child with 200 bytes of ciphertext);
//! - `iq_list500`: an `<iq>` with a `<list>` of 500 `<item jid=… index=N>` children.
//!
//! For each: `encode` (node → bytes into a reused buffer), `decode_ref` (bytes → the borrowed,
//! validated view each crate offers: our `decode`, wacore's `unmarshal_ref`), `decode_owned`
//! (bytes → owned node, binary content copied: our `decode_owned`, wacore's
//! `unmarshal_ref(..).to_owned()`) and `decode_shared_amarula` (our `decode_owned_shared`,
//! binary content sharing the frame's `Bytes`: the decoder the connection machine runs on every
//! frame). Every owned decode includes dropping the node. Before measuring, the setup checks that
//! both crates produce the same bytes and decode each other's output, so the work compared is
//! the same.

use std::hint::black_box;

use amarula_core::binary::{self, Node};
use amarula_core::jid::Jid;
use divan::Bencher;
use divan::counter::BytesCount;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::marshal::{marshal_to_vec, unmarshal_ref};

fn main() {
    // Every sample times 100 calls: with divan's automatic sample size, a disturbance during
    // calibration can leave sub-microsecond benches at one call per sample, and then the timer's
    // precision dominates what is measured.
    divan::Divan::default()
        .sample_size(100)
        .config_with_args()
        .main();
}

const PHONE: &str = "15551234567";

fn message_ours() -> Node {
    Node::new("message")
        .attr("to", Jid::user(PHONE))
        .attr("id", "3EB0C767D0D1A6F8A5A1")
        .attr("type", "text")
        .attr("t", "1700000000")
        .attr("notify", "Alice Example, Inc.")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(enc_payload())])
}

fn message_theirs() -> wacore_binary::Node {
    let to: wacore_binary::Jid = format!("{PHONE}@s.whatsapp.net").parse().unwrap();
    NodeBuilder::new("message")
        .attr("to", to)
        .attr("id", "3EB0C767D0D1A6F8A5A1")
        .attr("type", "text")
        .attr("t", "1700000000")
        .attr("notify", "Alice Example, Inc.")
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(enc_payload())
            .build()])
        .build()
}

fn enc_payload() -> Vec<u8> {
    (0..200u32).map(|i| (i * 37 + 11) as u8).collect()
}

fn item_user(i: usize) -> String {
    format!("1555{:07}", i * 7919 % 10_000_000)
}

fn list_ours() -> Node {
    Node::new("iq")
        .attr("id", "3EB0C767D0D1A6F8")
        .attr("type", "get")
        .attr("xmlns", "usync")
        .attr("to", Jid::server())
        .children([Node::new("list").children((0..500).map(|i| {
            Node::new("item")
                .attr("jid", Jid::user(item_user(i)))
                .attr("index", i.to_string())
        }))])
}

fn list_theirs() -> wacore_binary::Node {
    let server: wacore_binary::Jid = "s.whatsapp.net".parse().unwrap();
    NodeBuilder::new("iq")
        .attr("id", "3EB0C767D0D1A6F8")
        .attr("type", "get")
        .attr("xmlns", "usync")
        .attr("to", server)
        .children([NodeBuilder::new("list")
            .children((0..500).map(|i| {
                let jid: wacore_binary::Jid =
                    format!("{}@s.whatsapp.net", item_user(i)).parse().unwrap();
                NodeBuilder::new("item")
                    .attr("jid", jid)
                    .attr("index", i.to_string())
                    .build()
            }))
            .build()])
        .build()
}

/// Encodes both and checks that the bytes agree and each crate decodes the other's output.
fn prepared(ours: &Node, theirs: &wacore_binary::Node) -> Vec<u8> {
    let a = binary::to_vec(ours).unwrap();
    let mut b = Vec::new();
    marshal_to_vec(theirs, &mut b).unwrap();
    // wacore writes the flag byte itself; compare the node bytes.
    let b_node = if b.len() == a.len() + 1 {
        &b[1..]
    } else {
        &b[..]
    };
    assert_eq!(
        hex(&a),
        hex(b_node),
        "the two encoders disagree on the workload"
    );
    unmarshal_ref(&a).expect("wacore decodes our bytes");
    binary::decode(b_node).expect("we decode wacore's bytes");
    a
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn theirs_input(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

macro_rules! workload {
    ($name:ident, $ours:expr, $theirs:expr) => {
        mod $name {
            use super::*;

            #[divan::bench]
            fn encode_amarula(b: Bencher<'_, '_>) {
                let node = $ours;
                let len = prepared(&node, &$theirs).len();
                let mut buf = Vec::with_capacity(len);
                b.counter(BytesCount::new(len)).bench_local(|| {
                    buf.clear();
                    binary::encode(black_box(&node), &mut buf).unwrap();
                    black_box(buf.len());
                });
            }

            #[divan::bench]
            fn encode_wacore(b: Bencher<'_, '_>) {
                let node = $theirs;
                let len = prepared(&$ours, &node).len();
                let mut buf = Vec::with_capacity(len + 1);
                b.counter(BytesCount::new(len)).bench_local(|| {
                    buf.clear();
                    marshal_to_vec(black_box(&node), &mut buf).unwrap();
                    black_box(buf.len());
                });
            }

            #[divan::bench]
            fn decode_ref_amarula(b: Bencher<'_, '_>) {
                let bytes = prepared(&$ours, &$theirs);
                b.counter(BytesCount::new(bytes.len())).bench_local(|| {
                    black_box(binary::decode(black_box(&bytes)).unwrap());
                });
            }

            #[divan::bench]
            fn decode_ref_wacore(b: Bencher<'_, '_>) {
                let bytes = theirs_input(&prepared(&$ours, &$theirs));
                b.counter(BytesCount::new(bytes.len())).bench_local(|| {
                    black_box(unmarshal_ref(black_box(&bytes)).unwrap());
                });
            }

            #[divan::bench]
            fn decode_owned_amarula(b: Bencher<'_, '_>) {
                let bytes = prepared(&$ours, &$theirs);
                b.counter(BytesCount::new(bytes.len())).bench_local(|| {
                    black_box(binary::decode_owned(black_box(&bytes)).unwrap());
                });
            }

            #[divan::bench]
            fn decode_shared_amarula(b: Bencher<'_, '_>) {
                let bytes = bytes::Bytes::from(prepared(&$ours, &$theirs));
                b.counter(BytesCount::new(bytes.len())).bench_local(|| {
                    black_box(binary::decode_owned_shared(black_box(&bytes)).unwrap());
                });
            }

            #[divan::bench]
            fn decode_owned_wacore(b: Bencher<'_, '_>) {
                let bytes = theirs_input(&prepared(&$ours, &$theirs));
                b.counter(BytesCount::new(bytes.len())).bench_local(|| {
                    black_box(unmarshal_ref(black_box(&bytes)).unwrap().to_owned());
                });
            }
        }
    };
}

workload!(message, message_ours(), message_theirs());
workload!(iq_list500, list_ours(), list_theirs());
