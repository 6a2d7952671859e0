//! Recorded sessions: scripted conversations recorded from the harness into
//! `vectors/sessions/`, and replayed into a fresh machine, which must give every output frame
//! byte for byte and every event. `UPDATE_VECTORS=1 cargo test --test machine_sessions`
//! re-records them (the recording is deterministic, so a re-record changes nothing unless the
//! machine's behaviour changed).

use std::path::PathBuf;
use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{Confirm, Event, IqRequest, Session};
use amarula_core::noise::KeyPair;
use amarula_core::pairing::{parse_qr, phone};
use amarula_tests::harness::{BASE_UNIX_MS, Pair, Seeds, paired_credentials, success_node};
use amarula_tests::record;
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vectors/sessions")
}

fn logged_in() -> Pair {
    let config = Pair::config();
    let session = Session::new(paired_credentials(31), &config);
    let mut pair = Pair::new(config, session, Seeds::default());
    pair.server_send(&success_node(BASE_UNIX_MS / 1000 + 2));
    let active = pair
        .server
        .last("iq")
        .unwrap()
        .attr_str("id")
        .unwrap()
        .to_owned();
    pair.server_send(&result(&active));
    pair
}

fn result(id: &str) -> Node {
    Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "result")
        .attr("id", id.to_owned())
}

/// Login, an IQ answered and one timed out, a server ping, a held message ack confirmed, a
/// receipt acked, a relayed message acked, keepalive, then the server closes the stream.
fn login_and_traffic() -> Pair {
    let mut pair = logged_in();
    let usync = pair.send_iq(IqRequest::iq(
        "usync",
        "get",
        Jid::server(),
        vec![Node::new("usync")],
    ));
    let _ = usync;
    let id = pair
        .server
        .last("iq")
        .unwrap()
        .attr_str("id")
        .unwrap()
        .to_owned();
    pair.server_send(&result(&id).children([Node::new("usync")]));
    pair.send_iq(
        IqRequest::iq("w:g2", "get", Jid::server(), vec![]).with_timeout(Duration::from_secs(5)),
    );
    pair.advance(Duration::from_secs(6));
    pair.server_send(
        &Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "get")
            .attr("xmlns", "urn:xmpp:ping")
            .attr("id", "srv-ping-1"),
    );
    pair.server_send(
        &Node::new("message")
            .attr("id", "3EB0AA")
            .attr("from", "15550001111@s.whatsapp.net".parse::<Jid>().unwrap())
            .attr("type", "text")
            .attr("t", "1750000003")
            .children([Node::new("enc")
                .attr("v", "2")
                .attr("type", "msg")
                .bytes(vec![1, 2, 3])]),
    );
    let token = pair
        .events
        .iter()
        .find_map(|e| match e {
            Event::Stanza { ack: Some(t), .. } => Some(*t),
            _ => None,
        })
        .unwrap();
    pair.confirm(token, Confirm::Ack).unwrap();
    pair.server_send(
        &Node::new("receipt")
            .attr("id", "3EB0BB")
            .attr("from", "15550001111@s.whatsapp.net".parse::<Jid>().unwrap())
            .attr("type", "read"),
    );
    let msg = Node::new("message")
        .attr("id", "3EB0CC")
        .attr("to", "15550001111@s.whatsapp.net".parse::<Jid>().unwrap())
        .attr("type", "text")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(vec![9; 16])]);
    pair.relay(msg, Bytes::from_static(b"plaintext")).unwrap();
    pair.server_send(
        &Node::new("ack")
            .attr("class", "message")
            .attr("id", "3EB0CC")
            .attr("t", "1750000010")
            .attr("from", "15550001111@s.whatsapp.net".parse::<Jid>().unwrap()),
    );
    pair.advance(Duration::from_secs(35));
    pair.server_send(&Node::new("xmlstreamend"));
    pair
}

/// Registration, QR rotation, a valid pair-success answered, then stream error 515.
fn qr_pairing() -> Pair {
    let config = Pair::config();
    let session = Session::new(Pair::credentials(32), &config);
    let mut pair = Pair::new(config, session, Seeds::default());
    pair.server_send(
        &Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "set")
            .attr("id", "pd")
            .children([Node::new("pair-device")
                .children((1..=3).map(|i| Node::new("ref").bytes(Bytes::from(format!("R{i}")))))]),
    );
    pair.advance(Duration::from_secs(70));
    let qr = pair
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::PairingQr { qr, .. } => Some(qr.clone()),
            _ => None,
        })
        .unwrap();
    let parts = parse_qr(&qr).unwrap();
    let mut spec = phone::PairSuccessSpec::new(
        "ps",
        "15551234567:9@s.whatsapp.net".parse().unwrap(),
        2,
        BASE_UNIX_MS / 1000,
    );
    spec.lid = Some("99999:9@lid".parse().unwrap());
    let success = phone::sign_pair_success(
        &spec,
        &KeyPair::from_private_bytes([70; 32]),
        &parts.identity_pub,
        &parts.adv_secret,
        &mut ChaCha20Rng::from_seed([71; 32]),
    );
    pair.server_send(&success);
    pair.server_send(&Node::new("stream:error").attr("code", "515"));
    pair
}

/// A relayed message asked for again by two devices, past the limit for one of them.
fn retry_receipts() -> Pair {
    let mut pair = logged_in();
    let to: Jid = "15550002222@s.whatsapp.net".parse().unwrap();
    let msg = Node::new("message")
        .attr("id", "3EB0DD")
        .attr("to", to.clone())
        .attr("type", "text")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "pkmsg")
            .bytes(vec![4; 8])]);
    pair.relay(msg, Bytes::from_static(b"ctx")).unwrap();
    for n in 1..=6u8 {
        for device in [1u16, 2] {
            if device == 2 && n > 1 {
                continue;
            }
            pair.server_send(
                &Node::new("receipt")
                    .attr("id", "3EB0DD")
                    .attr("from", to.clone().with_device(device))
                    .attr("type", "retry")
                    .children([
                        Node::new("retry")
                            .attr("count", n.to_string())
                            .attr("id", "3EB0DD")
                            .attr("t", "1750000001")
                            .attr("v", "1"),
                        Node::new("registration").bytes(vec![0, 0, 1, 2]),
                    ]),
            );
        }
    }
    pair.server_send(
        &Node::new("receipt")
            .attr("id", "UNKNOWN")
            .attr("from", to.with_device(3))
            .attr("type", "retry")
            .children([Node::new("retry").attr("count", "1").attr("id", "UNKNOWN")]),
    );
    pair
}

/// A logged-out failure at login.
fn logged_out() -> Pair {
    let config = Pair::config();
    let session = Session::new(paired_credentials(33), &config);
    let mut pair = Pair::new(config, session, Seeds::default());
    pair.send_iq(IqRequest::iq("usync", "get", Jid::server(), vec![]));
    pair.server_send(&Node::new("failure").attr("reason", "401"));
    pair
}

type Scenario = (&'static str, &'static str, fn() -> Pair);

const SCENARIOS: [Scenario; 4] = [
    (
        "login_and_traffic",
        "login, IQ result and timeout, server ping, held ack, receipt ack, message ack, keepalive, stream end",
        login_and_traffic,
    ),
    (
        "qr_pairing",
        "registration, QR rotation, pair-success, 515",
        qr_pairing,
    ),
    (
        "retry_receipts",
        "retry receipts from two devices up to and past the limit, unknown id",
        retry_receipts,
    ),
    (
        "logged_out",
        "failure 401 at login with an IQ pending",
        logged_out,
    ),
];

#[test]
fn recorded_sessions_replay_byte_for_byte() {
    let update = std::env::var_os("UPDATE_VECTORS").is_some();
    for (name, description, scenario) in SCENARIOS {
        let recorded = scenario().recorder.to_json(name, description);
        let path = dir().join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&recorded).unwrap() + "\n",
            )
            .unwrap();
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_VECTORS=1)", path.display()));
        let stored: Value = serde_json::from_str(&text).unwrap();
        // The machine is deterministic: recording again gives the stored file exactly.
        assert!(
            stored == recorded,
            "{name}: a new recording differs from the stored one"
        );
        // And a fresh machine fed the stored inputs gives the stored outputs.
        record::replay(&stored).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn a_changed_output_is_caught() {
    let mut v = login_and_traffic().recorder.to_json("x", "x");
    let steps = v["steps"].as_array_mut().unwrap();
    let step = steps
        .iter_mut()
        .find(|s| {
            s["outputs"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x.get("transmit").is_some()))
                && s.get("bytes").is_some()
        })
        .unwrap();
    let out = step["outputs"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o.get("transmit").is_some())
        .unwrap();
    let mut hex = out["transmit"].as_str().unwrap().to_owned();
    let last = if hex.ends_with('0') { "1" } else { "0" };
    hex.replace_range(hex.len() - 1.., last);
    out["transmit"] = Value::String(hex);
    let err = record::replay(&v).unwrap_err();
    assert!(err.contains("differs"), "{err}");
}
