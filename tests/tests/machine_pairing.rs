//! Pairing through the machine: registration, QR rotation, pair-success checked and answered,
//! stream error 515, and the login that follows; QR refs running out; forged pair-success
//! refused; phone-code pairing.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{CloseReason, Event, Reconnect, Session};
use amarula_core::noise::KeyPair;
use amarula_core::pairing::{PairError, parse_qr, phone};
use amarula_proto::Message as _;
use amarula_tests::harness::{BASE_UNIX_MS, Pair, Seeds, success_node};
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const DEVICE: &str = "15551234567:7@s.whatsapp.net";

fn fresh() -> Pair {
    let config = Pair::config();
    let session = Session::new(Pair::credentials(21), &config);
    let pair = Pair::new(config, session, Seeds::default());
    assert!(pair.server.is_open(), "{:?}", pair.server.error);
    pair
}

fn pair_device(refs: usize) -> Node {
    Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "set")
        .attr("id", "pd-1")
        .children([Node::new("pair-device")
            .children((1..=refs).map(|i| Node::new("ref").bytes(Bytes::from(format!("REF-{i}")))))])
}

fn qr_events(pair: &Pair) -> Vec<(String, usize, Duration)> {
    pair.events
        .iter()
        .filter_map(|e| match e {
            Event::PairingQr {
                qr,
                index,
                valid_for,
            } => Some((qr.clone(), *index, *valid_for)),
            _ => None,
        })
        .collect()
}

fn closed(pair: &Pair) -> Option<(&CloseReason, Reconnect)> {
    pair.events.iter().find_map(|e| match e {
        Event::Closed { reason, reconnect } => Some((reason, *reconnect)),
        _ => None,
    })
}

fn spec(id: &str) -> phone::PairSuccessSpec {
    let mut s = phone::PairSuccessSpec::new(id, DEVICE.parse().unwrap(), 3, BASE_UNIX_MS / 1000);
    s.lid = Some("123456789012345:7@lid".parse().unwrap());
    s
}

#[test]
fn qr_pairing_then_515_then_login() {
    let mut pair = fresh();
    let payload = pair.server.client_payload.clone().expect("payload");
    assert!(
        payload.device_pairing_data.is_some(),
        "registration payload"
    );
    pair.server_send(&pair_device(6));
    // The pair-device IQ is answered at once.
    let reply = pair.server.last("iq").unwrap();
    assert_eq!(reply.attr_str("type"), Some("result"));
    assert_eq!(reply.attr_str("id"), Some("pd-1"));
    // First ref for 60 s, then 20 s each.
    pair.advance(Duration::from_secs(61));
    let qrs = qr_events(&pair);
    assert_eq!(qrs.len(), 2);
    assert_eq!((qrs[0].1, qrs[0].2), (0, Duration::from_secs(60)));
    assert_eq!((qrs[1].1, qrs[1].2), (1, Duration::from_secs(20)));
    // The phone scans the second QR.
    let parts = parse_qr(&qrs[1].0).unwrap();
    assert_eq!(parts.ref_, "REF-2");
    let creds = pair.client.credentials().clone();
    assert_eq!(&parts.noise_pub, creds.noise_key.public_bytes());
    let account = KeyPair::from_private_bytes([77; 32]);
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let success = phone::sign_pair_success(
        &spec("ps-1"),
        &account,
        &parts.identity_pub,
        &parts.adv_secret,
        &mut rng,
    );
    let before = pair.events.len();
    pair.server_send(&success);
    // The identity is persisted before the reply leaves: CredentialsChanged is the first new
    // event, and it was emitted before the transmit in the same step.
    let new = pair.events_since(before);
    let Event::CredentialsChanged(stored) = &new[0] else {
        panic!("{new:?}");
    };
    let device = stored.device.clone().expect("device stored");
    assert_eq!(device.jid.to_string(), DEVICE);
    assert!(matches!(new[1], Event::Paired { .. }));
    let step = pair
        .recorder
        .to_json("t", "t")
        .get("steps")
        .and_then(|s| s.as_array())
        .and_then(|s| s.last().cloned())
        .unwrap();
    let kinds: Vec<&str> = step["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            if o.get("event").is_some() {
                "event"
            } else {
                "transmit"
            }
        })
        .collect();
    assert_eq!(kinds, ["event", "event", "transmit"]);
    // The phone checks our device signature.
    let sign = pair.server.last("iq").unwrap();
    let checked =
        phone::verify_pair_device_sign(sign, &parts.identity_pub, account.public_bytes()).unwrap();
    assert_eq!(checked.key_index, 3);
    // No more QR codes after success.
    pair.advance(Duration::from_secs(5));
    assert_eq!(qr_events(&pair).len(), 2);
    // 515, then a login with the new identity.
    pair.server_send(&Node::new("stream:error").attr("code", "515"));
    let (reason, reconnect) = closed(&pair).expect("closed");
    assert!(matches!(reason, CloseReason::RestartRequired));
    assert_eq!(reconnect, Reconnect::Now);
    let mut pair = pair.reconnect(Pair::config(), [9; 32]);
    let login = pair.server.client_payload.clone().expect("login payload");
    assert!(login.device_pairing_data.is_none());
    assert_eq!(login.username, Some(15551234567));
    assert_eq!(login.device, Some(7));
    pair.server_send(&success_node(BASE_UNIX_MS / 1000));
    assert!(pair.client.is_logged_in());
}

#[test]
fn qr_refs_running_out_end_pairing() {
    let mut pair = fresh();
    pair.server_send(&pair_device(6));
    pair.advance(Duration::from_secs(159));
    assert_eq!(qr_events(&pair).len(), 6);
    assert!(closed(&pair).is_none());
    pair.advance(Duration::from_secs(2));
    let (reason, reconnect) = closed(&pair).expect("closed");
    assert!(matches!(reason, CloseReason::PairingTimedOut));
    assert_eq!(reconnect, Reconnect::Never);
}

fn forged(
    pair: &mut Pair,
    tamper: impl FnOnce(&mut amarula_proto::AdvSignedDeviceIdentity),
    adv: Option<[u8; 32]>,
) {
    pair.server_send(&pair_device(6));
    let parts = parse_qr(&qr_events(pair)[0].0).unwrap();
    let account = KeyPair::from_private_bytes([77; 32]);
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let s = spec("ps-bad");
    let details = phone::device_identity_details(&s);
    let mut signed = phone::account_sign(&account, &details, &parts.identity_pub, false, &mut rng);
    tamper(&mut signed);
    let container = phone::hmac_wrap(&signed, &adv.unwrap_or(parts.adv_secret), false);
    pair.server_send(&phone::pair_success_node(&s, &container.encode_to_vec()));
}

fn assert_refused(pair: &Pair, want: PairError, code: &str, text: &str) {
    let reply = pair.server.last("iq").unwrap();
    assert_eq!(reply.attr_str("type"), Some("error"));
    assert_eq!(reply.attr_str("id"), Some("ps-bad"));
    let err = reply.child("error").unwrap();
    assert_eq!(
        (err.attr_str("code"), err.attr_str("text")),
        (Some(code), Some(text))
    );
    let (reason, reconnect) = closed(pair).expect("closed");
    match reason {
        CloseReason::PairingRefused(e) => assert_eq!(*e, want),
        other => panic!("{other:?}"),
    }
    assert_eq!(reconnect, Reconnect::Never);
    assert!(!pair.client.credentials().is_paired());
    assert!(
        !pair
            .events
            .iter()
            .any(|e| matches!(e, Event::CredentialsChanged(_) | Event::Paired { .. }))
    );
}

#[test]
fn pair_success_with_a_bad_hmac_is_refused() {
    let mut pair = fresh();
    forged(&mut pair, |_| {}, Some([9; 32]));
    assert_refused(&pair, PairError::HmacMismatch, "401", "hmac-mismatch");
}

#[test]
fn pair_success_with_a_bad_account_signature_is_refused() {
    let mut pair = fresh();
    forged(
        &mut pair,
        |signed| {
            let mut sig = signed.account_signature.clone().unwrap().to_vec();
            sig[5] ^= 1;
            signed.account_signature = Some(sig.into());
        },
        None,
    );
    assert_refused(
        &pair,
        PairError::SignatureMismatch,
        "401",
        "signature-mismatch",
    );
}

#[test]
fn phone_code_pairing() {
    let mut pair = fresh();
    // Not before the pairing phase.
    assert!(
        pair.client
            .request_pairing_code(pair.now, "15551234567")
            .is_err()
    );
    pair.server_send(&pair_device(6));
    let code = pair.pairing_code("15551234567").unwrap();
    assert_eq!(code.len(), 8);
    let hello = pair.server.last("iq").unwrap().clone();
    assert_eq!(hello.attr_str("xmlns"), Some("md"));
    let id = hello.attr_str("id").unwrap().to_owned();
    pair.server_send(&phone::companion_hello_result(&id, b"PAIR-REF"));
    assert!(
        pair.events
            .iter()
            .any(|e| matches!(e, Event::PairingCodeAccepted))
    );
    // The user types the code on the phone.
    let phone_identity = KeyPair::from_private_bytes([88; 32]);
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let (notification, state) =
        phone::link_code_notification(&hello, &code, &phone_identity, b"PAIR-REF", &mut rng)
            .unwrap();
    let before = pair.events.len();
    let old_secret = *pair.client.credentials().adv_secret;
    pair.server_send(&notification);
    // The notification is acked, the new adv secret persisted, then companion_finish sent.
    let new_secret = *pair.client.credentials().adv_secret;
    assert_ne!(new_secret, old_secret);
    assert!(
        pair.events_since(before)
            .iter()
            .any(|e| matches!(e, Event::CredentialsChanged(_)))
    );
    let ack = pair
        .server
        .received
        .iter()
        .rev()
        .find(|n| n.tag == "ack")
        .unwrap();
    assert_eq!(ack.attr_str("class"), Some("notification"));
    let finish = pair.server.last("iq").unwrap();
    let outcome = phone::finish(&state, finish).unwrap();
    assert_eq!(*outcome.adv_secret, new_secret);
    // The phone now sends a pair-success authenticated with the new secret.
    let identity_pub = *pair.client.credentials().identity_key.public_bytes();
    let account = KeyPair::from_private_bytes([77; 32]);
    let success = phone::sign_pair_success(
        &spec("ps-2"),
        &account,
        &identity_pub,
        &outcome.adv_secret,
        &mut rng,
    );
    pair.server_send(&success);
    assert!(
        pair.events
            .iter()
            .any(|e| matches!(e, Event::Paired { .. }))
    );
    assert!(pair.client.credentials().is_paired());
}

#[test]
fn phone_code_refused_by_the_server_keeps_qr_pairing() {
    let mut pair = fresh();
    pair.server_send(&pair_device(6));
    pair.pairing_code("15551234567").unwrap();
    let id = pair
        .server
        .last("iq")
        .unwrap()
        .attr_str("id")
        .unwrap()
        .to_owned();
    pair.server_send(
        &Node::new("iq")
            .attr("id", id)
            .attr("type", "error")
            .attr("from", Jid::server())
            .children([Node::new("error")
                .attr("code", "400")
                .attr("text", "bad-request")]),
    );
    assert!(
        pair.events
            .iter()
            .any(|e| matches!(e, Event::PairingCodeFailed { .. }))
    );
    assert!(closed(&pair).is_none());
    // Invalid phone numbers are refused before anything is sent.
    assert!(pair.pairing_code("0123").is_err());
}
