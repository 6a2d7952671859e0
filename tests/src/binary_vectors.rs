//! Checker for files of the binary node schema (`binary_nodes.json`, `binary_nodes_large.json`;
//! vectors/README.md §1).
//!
//! For every case not marked `reference_quirk`:
//! - encoding `node` as a frame gives exactly the frame (`frame_hex`, or for large cases its
//!   length, SHA-256, head and tail), and `node_hex` is that frame without its flag byte;
//! - decoding the frame gives the reference decoder's reading, `decoded` (which is `node` up to
//!   the documented round-trip notes). JIDs compare as devices, so an explicit `:0` that our
//!   decoder keeps matches the reference's reading without it.
//!
//! A case whose `decoded` is `null` records a frame the reference's own decoder refuses: ours
//! must refuse it too, and that refusal is its decode check.
//!
//! A quirk case is one where the reference encoder's bytes are believed non-canonical. Its
//! frame must still decode to `decoded` and our own encoding of `node` must decode back to
//! `node`; it then counts as skipped, because its encoding is not compared.

use amarula_core::binary::{self, Content, DEFAULT_MAX_INFLATED, Node};
use amarula_core::jid::{Jid, Server};
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::report::Report;

/// Checks every case of a binary node vector file.
pub fn check(file: &Value) -> Report {
    let mut report = Report::default();
    let Some(cases) = file.get("cases").and_then(Value::as_array) else {
        report.fail("file has no `cases` array".into());
        return report;
    };
    for (i, case) in cases.iter().enumerate() {
        let name = case.get("name").and_then(Value::as_str).unwrap_or("?");
        let label = format!("case {i} ({name})");
        let quirk = case
            .get("reference_quirk")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match check_case(case, quirk) {
            Ok(()) if quirk => report.skip(format!(
                "{label}: reference quirk, encoding not compared ({})",
                quirk_reason(case)
            )),
            Ok(()) => report.pass(),
            Err(e) => report.fail(format!("{label}: {e}")),
        }
    }
    report
}

fn quirk_reason(case: &Value) -> String {
    case.get("quirk_note")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            case.get("roundtrip_notes")
                .and_then(Value::as_array)
                .and_then(|n| n.first())
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn check_case(case: &Value, quirk: bool) -> Result<(), String> {
    let node = node_from_json(field(case, "node")?)?;
    let mut ours = Vec::new();
    binary::encode_frame(&node, &mut ours).map_err(|e| format!("encode failed: {e}"))?;

    // The expected frame: literal hex, or for large cases the hash and edges of it.
    let literal = case.get("frame_hex").and_then(Value::as_str);
    let frame: Vec<u8> = match literal {
        Some(h) => hex::decode(h).map_err(|e| format!("bad frame_hex: {e}"))?,
        None => {
            if !quirk {
                compare_digest(case, &ours)?;
            }
            // The frame is ours when it matched the digest; decode it for the content check.
            ours.clone()
        }
    };
    if literal.is_some() {
        if let Some(node_hex) = case.get("node_hex").and_then(Value::as_str) {
            if frame.first() != Some(&0) || hex::encode(&frame[1..]) != node_hex {
                return Err("vector inconsistent: frame_hex is not 00 + node_hex".into());
            }
        }
        if !quirk && ours != frame {
            return Err(format!(
                "encode differs\n  expected {}\n  actual   {}",
                hex::encode(&frame),
                hex::encode(&ours)
            ));
        }
    }

    let result = binary::decode_frame(&frame, DEFAULT_MAX_INFLATED);
    match case.get("decoded") {
        // The reference's own decoder refuses this frame (vectors/README.md §1): ours must too.
        Some(Value::Null) => {
            if let Ok(node) = result {
                return Err(format!(
                    "decode accepted a frame the reference refuses\n  actual   {node}\n  frame    {}",
                    short_hex(&frame)
                ));
            }
        }
        Some(want) => {
            let decoded =
                result.map_err(|e| format!("decode failed: {e}\n  frame {}", short_hex(&frame)))?;
            let want = node_from_json(want)?;
            if !same_node(&decoded, &want) {
                return Err(format!(
                    "decode differs\n  expected {want}\n  actual   {decoded}\n  frame    {}",
                    short_hex(&frame)
                ));
            }
        }
        None => {
            let decoded =
                result.map_err(|e| format!("decode failed: {e}\n  frame {}", short_hex(&frame)))?;
            check_large_decoded(case, &node, &decoded)?;
        }
    }

    if quirk {
        // Our canonical bytes for a quirk case must read back as the node we meant.
        let back = binary::decode_frame(&ours, DEFAULT_MAX_INFLATED)
            .map_err(|e| format!("our encoding does not decode: {e}"))?;
        let want = canonical_reading(&node);
        if !same_node(&back, &want) {
            return Err(format!(
                "our encoding reads back differently\n  expected {want}\n  actual   {back}"
            ));
        }
    }
    Ok(())
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, String> {
    v.get(name).ok_or_else(|| format!("missing field `{name}`"))
}

fn short_hex(b: &[u8]) -> String {
    if b.len() <= 512 {
        hex::encode(b)
    } else {
        format!("{}… ({} bytes)", hex::encode(&b[..64]), b.len())
    }
}

/// Large cases: frame length, SHA-256 of frame and node, head and tail bytes.
fn compare_digest(case: &Value, ours: &[u8]) -> Result<(), String> {
    let want_len = field(case, "frame_len")?.as_u64().unwrap_or(0);
    let want_sha = field(case, "frame_sha256")?.as_str().unwrap_or("");
    let sha = hex::encode(Sha256::digest(ours));
    let head = hex::encode(&ours[..ours.len().min(24)]);
    let tail = hex::encode(&ours[ours.len().saturating_sub(16)..]);
    let node_sha = hex::encode(Sha256::digest(ours.get(1..).unwrap_or_default()));
    let checks = [
        ("frame_len", want_len.to_string(), ours.len().to_string()),
        ("frame_sha256", want_sha.to_owned(), sha),
        (
            "node_sha256",
            case.get("node_sha256")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            node_sha,
        ),
        (
            "frame_head_hex",
            case.get("frame_head_hex")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            head,
        ),
        (
            "frame_tail_hex",
            case.get("frame_tail_hex")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            tail,
        ),
    ];
    for (what, want, got) in checks {
        if want.is_empty() && what != "frame_len" && what != "frame_sha256" {
            continue;
        }
        if want != got {
            return Err(format!(
                "encode differs in {what}\n  expected {want}\n  actual   {got}"
            ));
        }
    }
    Ok(())
}

/// Large cases have no `decoded` tree: the content must come back as bytes equal to what was
/// generated (text decodes as its UTF-8 bytes).
fn check_large_decoded(case: &Value, node: &Node, decoded: &Node) -> Result<(), String> {
    let want: &[u8] = match &node.content {
        Content::Bytes(b) => b,
        Content::Text(t) => t.as_bytes(),
        _ => return Err("large case without bytes or text content".into()),
    };
    let kind = case
        .get("decoded_content_kind")
        .and_then(Value::as_str)
        .unwrap_or("bytes");
    match (&decoded.content, kind) {
        (Content::Bytes(b), "bytes") if b.as_ref() == want => {}
        (Content::Text(t), "text") if t.as_bytes() == want => {}
        _ => {
            return Err(format!(
                "decoded content is not the generated {kind} ({} bytes expected)",
                want.len()
            ));
        }
    }
    if decoded.tag != node.tag || !same_attrs(&decoded.attrs, &node.attrs) {
        return Err(format!("decode differs: {decoded} vs {node}"));
    }
    Ok(())
}

/// What our decoder gives for our own encoding of `node`: raw text comes back as bytes, empty
/// text as an empty child list, and JIDs lose an agent no wire form carries ([`wire_jid`]);
/// everything else is unchanged.
pub fn canonical_reading(node: &Node) -> Node {
    let content = match &node.content {
        Content::Jid(j) => Content::Jid(wire_jid(j)),
        Content::Text(t) if t.is_empty() => Content::Nodes(Vec::new()),
        Content::Text(t) => {
            let probe = Node::new("iq").text(t.clone());
            match binary::to_vec(&probe).ok().as_deref() {
                // A raw string starts with a BINARY_x tag after `f8 02 19` (the token of `iq`).
                Some([_, _, _, 0xFC..=0xFE, ..]) => {
                    Content::Bytes(Bytes::copy_from_slice(t.as_bytes()))
                }
                _ => Content::Text(t.clone()),
            }
        }
        Content::Nodes(n) => Content::Nodes(n.iter().map(canonical_reading).collect()),
        other => other.clone(),
    };
    let attrs = node
        .attrs
        .iter()
        .map(|(k, v)| match v {
            binary::AttrValue::Jid(j) => (k.clone(), wire_jid(j).into()),
            other => (k.clone(), other.clone()),
        })
        .collect();
    Node {
        tag: node.tag.clone(),
        attrs,
        content,
    }
}

/// The JID as the wire carries it: an agent survives only in the AD_JID domain byte of a
/// `s.whatsapp.net` device, and only when it is not a server value (0, 1, 128, 129).
fn wire_jid(j: &Jid) -> Jid {
    let kept = j.explicit_device().is_some()
        && *j.server_part() == Server::User
        && !matches!(j.agent(), 0 | 1 | 128 | 129);
    if kept {
        j.clone()
    } else {
        j.clone().with_agent(0)
    }
}

fn same_attrs(
    a: &[(binary::NodeStr, binary::AttrValue)],
    b: &[(binary::NodeStr, binary::AttrValue)],
) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (va, vb) {
                    (binary::AttrValue::Jid(x), binary::AttrValue::Jid(y)) => x.same_device(y),
                    (x, y) => x == y,
                }
        })
}

/// Node equality for vector comparison: exact, except that JIDs compare as devices.
pub fn same_node(a: &Node, b: &Node) -> bool {
    a.tag == b.tag
        && same_attrs(&a.attrs, &b.attrs)
        && match (&a.content, &b.content) {
            (Content::Nodes(x), Content::Nodes(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_node(p, q))
            }
            (Content::Jid(x), Content::Jid(y)) => x.same_device(y),
            (x, y) => x == y,
        }
}

/// Builds a node from its JSON form (vectors/README.md §1).
pub fn node_from_json(v: &Value) -> Result<Node, String> {
    let tag = field(v, "tag")?
        .as_str()
        .ok_or("tag is not a string")?
        .to_owned();
    let mut node = Node::new(tag);
    if let Some(attrs) = v.get("attrs") {
        let attrs = attrs.as_array().ok_or("attrs is not a list")?;
        for pair in attrs {
            let (Some(k), Some(val)) = (pair.get(0).and_then(Value::as_str), pair.get(1)) else {
                return Err(format!("bad attribute {pair}"));
            };
            let value = match val {
                Value::String(s) => binary::AttrValue::from(s.clone()),
                other => binary::AttrValue::Jid(jid_from_json(other)?),
            };
            node.attrs.push((k.to_owned().into(), value));
        }
    }
    node.content = match v.get("content") {
        None | Some(Value::Null) => Content::None,
        Some(Value::Array(children)) => Content::Nodes(
            children
                .iter()
                .map(node_from_json)
                .collect::<Result<_, _>>()?,
        ),
        Some(c) => content_from_json(c)?,
    };
    Ok(node)
}

fn jid_from_json(v: &Value) -> Result<Jid, String> {
    let s = v
        .get("jid")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("bad JID value {v}"))?;
    s.parse().map_err(|e| format!("JID {s:?}: {e}"))
}

fn content_from_json(c: &Value) -> Result<Content, String> {
    if let Some(h) = c.get("bytes").and_then(Value::as_str) {
        return Ok(Content::Bytes(
            hex::decode(h)
                .map_err(|e| format!("bad bytes: {e}"))?
                .into(),
        ));
    }
    if let Some(t) = c.get("text").and_then(Value::as_str) {
        return Ok(Content::Text(t.to_owned().into()));
    }
    if c.get("jid").is_some() {
        return Ok(Content::Jid(jid_from_json(c)?));
    }
    if let Some(r) = c.get("bytes_repeat") {
        let pattern = hex::decode(field(r, "pattern")?.as_str().unwrap_or(""))
            .map_err(|e| format!("bad pattern: {e}"))?;
        let len = field(r, "len")?.as_u64().ok_or("bad len")? as usize;
        return Ok(Content::Bytes(repeat(&pattern, len).into()));
    }
    if let Some(r) = c.get("text_repeat") {
        let pattern = field(r, "pattern")?.as_str().unwrap_or("");
        let len = field(r, "len")?.as_u64().ok_or("bad len")? as usize;
        // ASCII patterns: characters and bytes agree.
        let text = String::from_utf8(repeat(pattern.as_bytes(), len))
            .map_err(|_| "text_repeat pattern is not ASCII")?;
        return Ok(Content::Text(text.into()));
    }
    Err(format!("unknown content {c}"))
}

fn repeat(pattern: &[u8], len: usize) -> Vec<u8> {
    if pattern.is_empty() {
        return Vec::new();
    }
    pattern.iter().copied().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check;

    /// A frame the reference refuses (`decoded: null`) passes when ours refuses it too, and fails
    /// when ours accepts it.
    #[test]
    fn null_decoded_means_refused() {
        let file = json!({ "cases": [
            // The reference writes the tag `toString` as 0x00 (the empty string), which no
            // decoder accepts; our encoder writes it raw, so the case is a quirk.
            {
                "name": "tag_tostring", "reference_quirk": true,
                "node": { "tag": "toString", "attrs": [], "content": null },
                "frame_hex": "00f80100", "node_hex": "f80100", "decoded": null
            },
            // A frame that decodes: claiming the reference refuses it is a failure.
            {
                "name": "accepted",
                "node": { "tag": "iq", "attrs": [], "content": null },
                "frame_hex": "00f80119", "node_hex": "f80119", "decoded": null
            }
        ]});
        let report = check(&file);
        assert_eq!((report.passed, report.skipped, report.failed), (0, 1, 1));
        assert!(
            report.failures[0].contains("accepted a frame"),
            "{:?}",
            report.failures
        );
    }
}
