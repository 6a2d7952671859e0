//! Checker for files of the `noise_handshake.json` schema (vectors/README.md §2).
//!
//! Every transcript is replayed three ways, each one case of the report:
//! - **initiator**: with the recorded client keys our client writes every client frame byte for
//!   byte (intro header included), accepts the recorded ServerHello (certificate verified against
//!   the file's fake root at a time inside its validity), derives the recorded split keys, and
//!   seals / opens every transport frame exactly;
//! - **responder**: with the recorded server keys and certificate payload our server writes the
//!   recorded ServerHello, decrypts the recorded ClientFinish to the recorded client static key
//!   and ClientPayload, and seals / opens the transport frames the other way round;
//! - **certificate**: the two certificate signatures verify with the fake keys and the
//!   deterministic signer reproduces them.
//!
//! Transcripts are identified by index; names only decorate the failure lines.

use amarula_core::binary::{DEFAULT_MAX_INFLATED, unpack};
use amarula_core::frame::FrameDecoder;
use amarula_core::noise::{KeyPair, NoiseHandshake, NoiseTransport, TrustAnchor};
use amarula_core::xeddsa;
use bytes::BytesMut;
use serde_json::Value;

use crate::json::{arr, get, hex_at};
use crate::report::Report;

/// Checks every transcript of a `noise_handshake.json`-shaped file.
pub fn check(file: &Value) -> Report {
    let mut report = Report::default();
    let Some(transcripts) = file.get("transcripts").and_then(Value::as_array) else {
        report.fail("file has no `transcripts` array".to_owned());
        return report;
    };
    for (i, t) in transcripts.iter().enumerate() {
        let name = t.get("name").and_then(Value::as_str).unwrap_or("?");
        let tag = |side: &str, r: Result<(), String>| {
            r.map_err(|e| format!("transcript {i} ({name}) {side}: {e}"))
        };
        report.record(tag("initiator", initiator(t)));
        report.record(tag("responder", responder(t)));
        report.record(tag("certificate", certificate(t)));
    }
    report
}

/// A 32-byte hex key at `path`.
fn key_at(v: &Value, path: &[&str]) -> Result<[u8; 32], String> {
    arr::<32>(v, path)
}

/// A key pair from `{private, public}`, checking that the public half matches.
fn key_pair(v: &Value, path: &[&str]) -> Result<KeyPair, String> {
    let mut p = path.to_vec();
    p.push("private");
    let kp = KeyPair::from_private_bytes(key_at(v, &p)?);
    p.pop();
    p.push("public");
    let public = key_at(v, &p)?;
    same(
        &format!("{} public key", path.join(".")),
        &public,
        kp.public_bytes(),
    )?;
    Ok(kp)
}

/// Equal bytes, or a line with both in hex.
fn same(what: &str, expected: &[u8], actual: &[u8]) -> Result<(), String> {
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{what} differs: expected {} actual {}",
            hex::encode(expected),
            hex::encode(actual)
        ))
    }
}

/// A number that JSON may hold as a number or (64-bit protobuf JSON) as a string.
fn number_at(v: &Value, path: &[&str]) -> Result<u64, String> {
    let n = get(v, path)?;
    n.as_u64()
        .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("{} is not a number", path.join(".")))
}

/// The handshake and transport frames of one direction, in file order.
fn frames<'a>(t: &'a Value, list: &str, dir: &str) -> Result<Vec<&'a Value>, String> {
    Ok(get(t, &[list])?
        .as_array()
        .ok_or_else(|| format!("{list} is not an array"))?
        .iter()
        .filter(|f| f.get("dir").and_then(Value::as_str) == Some(dir))
        .collect())
}

/// The single frame payload in `wire`, via the frame decoder (client side: no intro).
fn one_frame(mut dec: FrameDecoder, wire: &[u8], what: &str) -> Result<BytesMut, String> {
    dec.push(wire);
    let frame = dec
        .next_frame()
        .map_err(|e| format!("{what}: frame decoder: {e}"))?
        .ok_or_else(|| format!("{what}: incomplete frame"))?;
    if dec.buffered_len() != 0 {
        return Err(format!(
            "{what}: {} bytes after the frame",
            dec.buffered_len()
        ));
    }
    Ok(frame)
}

/// A time inside both certificates' validity: the later of the two notBefore.
fn cert_time(t: &Value) -> Result<u64, String> {
    let d = ["server_certificate", "decoded"];
    let leaf = number_at(t, &[d[0], d[1], "leaf", "notBefore"])?;
    let inter = number_at(t, &[d[0], d[1], "intermediate", "notBefore"])?;
    Ok(leaf.max(inter))
}

fn trust(t: &Value) -> Result<TrustAnchor, String> {
    Ok(TrustAnchor::new(
        key_at(t, &["server_certificate", "fake_root_key", "public"])?,
        0,
    ))
}

fn routing_info(t: &Value) -> Result<Option<Vec<u8>>, String> {
    match t.get("routing_info_hex") {
        None | Some(Value::Null) => Ok(None),
        Some(_) => hex_at(t, &["routing_info_hex"]).map(Some),
    }
}

/// Compares a handshake hash with the `h` the responder trace recorded after `step`, when the
/// file has such a step (the trace is a debugging aid, so a missing step is not a failure).
fn trace_h(t: &Value, step: &str, actual: &[u8; 32]) -> Result<(), String> {
    let Some(trace) = t.get("responder_trace").and_then(Value::as_array) else {
        return Ok(());
    };
    let Some(entry) = trace
        .iter()
        .find(|e| e.get("step").and_then(Value::as_str) == Some(step))
    else {
        return Ok(());
    };
    same(
        &format!("handshake hash after {step}"),
        &hex_at(entry, &["h"])?,
        actual,
    )
}

/// Seals our side's transport frames and opens the peer's, comparing with the recording.
fn transport_frames(
    t: &Value,
    transport: &mut NoiseTransport,
    parallel_reader: &mut NoiseTransport,
    our_dir: &str,
) -> Result<(), String> {
    let list = get(t, &["transport_frames"])?
        .as_array()
        .ok_or("transport_frames is not an array")?;
    for (j, f) in list.iter().enumerate() {
        let dir = get(f, &["dir"])?.as_str().unwrap_or_default();
        let counter = number_at(f, &["counter"])?;
        let plaintext = hex_at(f, &["plaintext_hex"])?;
        let wire = hex_at(f, &["frame_hex"])?;
        if dir == our_dir {
            if transport.write_counter() != counter {
                return Err(format!(
                    "transport frame {j}: write counter {} instead of {counter}",
                    transport.write_counter()
                ));
            }
            let ours = transport
                .encrypt_frame(&plaintext)
                .map_err(|e| format!("transport frame {j}: encrypt: {e}"))?;
            same(&format!("transport frame {j} ({dir})"), &wire, &ours)?;
        } else {
            if transport.read_counter() != counter {
                return Err(format!(
                    "transport frame {j}: read counter {} instead of {counter}",
                    transport.read_counter()
                ));
            }
            let what = format!("transport frame {j} ({dir})");
            let payload = one_frame(FrameDecoder::new(), &wire, &what)?;
            let plain = transport
                .decrypt_frame(&payload)
                .map_err(|e| format!("{what}: decrypt: {e}"))?;
            same(&format!("{what} plaintext"), &plaintext, &plain)?;
            let node = parallel_reader
                .decrypt_node(payload)
                .map_err(|e| format!("{what}: decrypt_node: {e}"))?;
            let expected_node = if f.get("compressed").and_then(Value::as_bool) == Some(true) {
                hex_at(f, &["uncompressed_node_hex"])?
            } else {
                plaintext.get(1..).unwrap_or_default().to_vec()
            };
            same(&format!("{what} node"), &expected_node, &node)?;
            let unpacked =
                unpack(&plain, DEFAULT_MAX_INFLATED).map_err(|e| format!("{what}: unpack: {e}"))?;
            same(&format!("{what} unpacked"), &expected_node, &unpacked)?;
        }
    }
    Ok(())
}

fn initiator(t: &Value) -> Result<(), String> {
    let s = key_pair(t, &["keys", "client_static_noise_key"])?;
    let e = key_pair(t, &["keys", "client_ephemeral"])?;
    let c2s = frames(t, "handshake_frames", "c2s")?;
    let s2c = frames(t, "handshake_frames", "s2c")?;
    let (Some(hello_rec), Some(finish_rec), Some(server_hello_rec)) =
        (c2s.first(), c2s.get(1), s2c.first())
    else {
        return Err("need 2 c2s and 1 s2c handshake frames".to_owned());
    };

    let mut init = NoiseHandshake::initiator_fixed_ephemeral_for_testing_only(s, e);
    if let Some(info) = routing_info(t)? {
        init = init
            .with_routing_info(&info)
            .map_err(|e| format!("routing info: {e}"))?;
    }
    let (hello, state) = init.client_hello();
    same(
        "client_hello frame",
        &hex_at(hello_rec, &["frame_hex"])?,
        &hello,
    )?;
    trace_h(t, "mix_hash(client_ephemeral)", state.handshake_hash())?;
    same(
        "intro header",
        &hex_at(t, &["intro_header_hex"])?,
        hello
            .get(..hello.len().saturating_sub(3 + 36))
            .unwrap_or_default(),
    )?;

    let server_hello = one_frame(
        FrameDecoder::new(),
        &hex_at(server_hello_rec, &["frame_hex"])?,
        "server_hello",
    )?;
    let state = state
        .read_server_hello(&server_hello, cert_time(t)?, &trust(t)?)
        .map_err(|e| format!("read_server_hello: {e}"))?;
    trace_h(t, "mix_hash(enc_cert_payload)", state.handshake_hash())?;
    same(
        "server static key",
        &key_at(t, &["keys", "server_static", "public"])?,
        state.server_static(),
    )?;
    let (finish, mut transport) = state
        .client_finish(&hex_at(t, &["client_payload", "hex"])?)
        .map_err(|e| format!("client_finish: {e}"))?;
    same(
        "client_finish frame",
        &hex_at(finish_rec, &["frame_hex"])?,
        &finish,
    )?;
    trace_h(
        t,
        "mix_hash(enc_client_payload)",
        transport.handshake_hash(),
    )?;

    let c2s_key = key_at(t, &["split", "c2s_key"])?;
    let s2c_key = key_at(t, &["split", "s2c_key"])?;
    let (write, read) = transport.keys_for_testing_only();
    same("split write key (c2s)", &c2s_key, write)?;
    same("split read key (s2c)", &s2c_key, read)?;
    let mut parallel = NoiseTransport::from_keys_for_testing_only(c2s_key, s2c_key);
    transport_frames(t, &mut transport, &mut parallel, "c2s")
}

fn responder(t: &Value) -> Result<(), String> {
    let s = key_pair(t, &["keys", "server_static"])?;
    let e = key_pair(t, &["keys", "server_ephemeral"])?;
    let cert = hex_at(t, &["server_certificate", "payload_hex"])?;
    let c2s = frames(t, "handshake_frames", "c2s")?;
    let s2c = frames(t, "handshake_frames", "s2c")?;
    let (Some(hello_rec), Some(finish_rec), Some(server_hello_rec)) =
        (c2s.first(), c2s.get(1), s2c.first())
    else {
        return Err("need 2 c2s and 1 s2c handshake frames".to_owned());
    };

    // The server side reads the intro header, then the frames.
    let mut dec = FrameDecoder::expecting_intro();
    dec.push(&hex_at(hello_rec, &["frame_hex"])?);
    let hello = dec
        .next_frame()
        .map_err(|e| format!("client_hello: frame decoder: {e}"))?
        .ok_or("client_hello: incomplete frame")?;
    same(
        "routing info read from the intro",
        &routing_info(t)?.unwrap_or_default(),
        dec.routing_info().unwrap_or_default(),
    )?;

    let responder = NoiseHandshake::responder_fixed_ephemeral_for_testing_only(s, e, cert);
    let (server_hello, state) = responder
        .read_client_hello(&hello)
        .map_err(|e| format!("read_client_hello: {e}"))?;
    same(
        "server_hello frame",
        &hex_at(server_hello_rec, &["frame_hex"])?,
        &server_hello,
    )?;
    trace_h(t, "mix_hash(enc_cert_payload)", state.handshake_hash())?;

    let finish = one_frame(
        FrameDecoder::new(),
        &hex_at(finish_rec, &["frame_hex"])?,
        "client_finish",
    )?;
    let done = state
        .read_client_finish(&finish)
        .map_err(|e| format!("read_client_finish: {e}"))?;
    trace_h(
        t,
        "mix_hash(enc_client_payload)",
        done.transport.handshake_hash(),
    )?;
    same(
        "client static key",
        &key_at(t, &["keys", "client_static_noise_key", "public"])?,
        &done.client_static,
    )?;
    same(
        "client payload",
        &hex_at(t, &["client_payload", "hex"])?,
        &done.client_payload,
    )?;

    let c2s_key = key_at(t, &["split", "c2s_key"])?;
    let s2c_key = key_at(t, &["split", "s2c_key"])?;
    let mut transport = done.transport;
    let (write, read) = transport.keys_for_testing_only();
    same("split write key (s2c)", &s2c_key, write)?;
    same("split read key (c2s)", &c2s_key, read)?;
    let mut parallel = NoiseTransport::from_keys_for_testing_only(s2c_key, c2s_key);
    transport_frames(t, &mut transport, &mut parallel, "s2c")
}

fn certificate(t: &Value) -> Result<(), String> {
    let sc = get(t, &["server_certificate"])?;
    let root = key_pair(sc, &["fake_root_key"])?;
    let inter = key_pair(sc, &["fake_intermediate_key"])?;
    for (what, signer, details, sig) in [
        (
            "intermediate",
            &root,
            "intermediate_details_hex",
            "intermediate_signature_hex",
        ),
        ("leaf", &inter, "leaf_details_hex", "leaf_signature_hex"),
    ] {
        let details = hex_at(sc, &[details])?;
        let sig = hex_at(sc, &[sig])?;
        let sig64 = <[u8; 64]>::try_from(sig.as_slice())
            .map_err(|_| format!("{what} signature is {} bytes", sig.len()))?;
        if !xeddsa::verify(signer.public_bytes(), &details, &sig64) {
            return Err(format!("{what} signature does not verify"));
        }
        let ours = xeddsa::sign_deterministic(&signer.private_bytes(), &details);
        same(&format!("{what} deterministic signature"), &sig, &ours)?;
    }
    Ok(())
}
