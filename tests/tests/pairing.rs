//! Pairing end to end against the phone side of `amarula_core::pairing::phone`: QR strings,
//! pair-success acceptance and refusal, and phone-code pairing. Nodes travel through the binary
//! codec on the way, as they would on the wire.

use amarula_core::binary::{self, Node};
use amarula_core::credentials::Credentials;
use amarula_core::jid::Jid;
use amarula_core::noise::KeyPair;
use amarula_core::pairing::phone::{self, PairSuccessSpec};
use amarula_core::pairing::{
    self, ClientConfig, PairError, PairingError, PhoneCodePairing, QrError,
};
use amarula_proto::{AdvSignedDeviceIdentity, AdvSignedDeviceIdentityHmac, Message};
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

/// The node as the other side decodes it after the binary codec.
fn wire(node: &Node) -> Node {
    binary::decode_owned(&binary::to_vec(node).unwrap()).unwrap()
}

fn device_jid() -> Jid {
    "15551234567:12@s.whatsapp.net".parse().unwrap()
}

fn lid_jid() -> Jid {
    "123456789012345:12@lid".parse().unwrap()
}

fn spec() -> PairSuccessSpec {
    let mut spec = PairSuccessSpec::new("pair-1", device_jid(), 3, 1_700_000_000);
    spec.lid = Some(lid_jid());
    spec.platform = "iphone".to_owned();
    spec.business_name = Some("Shop".to_owned());
    spec
}

/// A companion, its phone's account key, and a pair-success the phone made from our QR code.
struct Setup {
    creds: Credentials,
    account: KeyPair,
    rng: ChaCha20Rng,
}

fn setup() -> Setup {
    let mut rng = rng(1);
    let creds = Credentials::generate(&mut rng);
    let account = KeyPair::generate(&mut rng);
    Setup {
        creds,
        account,
        rng,
    }
}

impl Setup {
    fn pair_success(&mut self, spec: &PairSuccessSpec) -> Node {
        // The phone learns our keys from the QR code.
        let qr = pairing::qr_string(b"ref-1", &self.creds, &ClientConfig::default());
        let parts = pairing::parse_qr(&qr).unwrap();
        wire(&phone::sign_pair_success(
            spec,
            &self.account,
            &parts.identity_pub,
            &parts.adv_secret,
            &mut self.rng,
        ))
    }

    fn companion_identity(&self) -> [u8; 32] {
        *self.creds.identity_key.public_bytes()
    }

    /// Builds a pair-success from hand-made layers.
    fn forged(&self, spec: &PairSuccessSpec, container: &AdvSignedDeviceIdentityHmac) -> Node {
        wire(&phone::pair_success_node(spec, &container.encode_to_vec()))
    }

    fn refuse(&mut self, iq: &Node) -> pairing::PairRefused {
        pairing::handle_pair_success(iq, &self.creds, &mut self.rng).unwrap_err()
    }
}

fn error_iq(id: &str, code: &str, text: &str) -> Node {
    Node::new("iq")
        .attr("to", Jid::server())
        .attr("type", "error")
        .attr("id", id)
        .children([Node::new("error").attr("code", code).attr("text", text)])
}

#[test]
fn qr_string_round_trip() {
    let creds = Credentials::generate(&mut rng(2));
    let cfg = ClientConfig::default();
    let qr = pairing::qr_string(b"2@Xyz+/AbC==", &creds, &cfg);
    assert!(qr.starts_with("https://wa.me/settings/linked_devices#2@Xyz+/AbC==,"));
    assert!(qr.ends_with(",1"));
    let parts = pairing::parse_qr(&qr).unwrap();
    assert_eq!(parts.ref_, "2@Xyz+/AbC==");
    assert_eq!(&parts.noise_pub, creds.noise_key.public_bytes());
    assert_eq!(&parts.identity_pub, creds.identity_key.public_bytes());
    assert_eq!(parts.adv_secret, *creds.adv_secret);
    assert_eq!(parts.platform.as_deref(), Some("1"));
    assert_eq!(
        pairing::parse_qr("2@x,a,b,c,1"),
        Err(QrError::MissingPrefix)
    );
}

#[test]
fn pair_device_refs_and_ack() {
    let iq = wire(
        &Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "set")
            .attr("id", "pd-1")
            .children([Node::new("pair-device").children(
                (1..=6).map(|i| Node::new("ref").bytes(format!("2@ref{i}").into_bytes())),
            )]),
    );
    let pd = pairing::PairDevice::parse(&iq).unwrap();
    assert_eq!(pd.refs.len(), 6);
    assert_eq!(pd.refs[0], Bytes::from_static(b"2@ref1"));
    assert_eq!(
        wire(&pd.ack()),
        wire(
            &Node::new("iq")
                .attr("to", Jid::server())
                .attr("type", "result")
                .attr("id", "pd-1")
        )
    );
}

#[test]
fn pair_success_accepted_end_to_end() {
    let mut s = setup();
    let spec = spec();
    let iq = s.pair_success(&spec);
    let ok = pairing::handle_pair_success(&iq, &s.creds, &mut s.rng).unwrap();
    assert_eq!(ok.device.jid, device_jid());
    assert_eq!(ok.device.lid, Some(lid_jid()));
    assert_eq!(ok.device.platform, "iphone");
    assert_eq!(ok.device.business_name.as_deref(), Some("Shop"));
    assert_eq!(&ok.primary_identity, s.account.public_bytes());
    assert_eq!(ok.key_index, 3);

    // The stored account carries the account signature key and our device signature.
    let account = AdvSignedDeviceIdentity::decode(ok.device.account.clone()).unwrap();
    assert_eq!(
        account.account_signature_key.as_deref(),
        Some(&s.account.public_bytes()[..])
    );
    assert_eq!(account.device_signature.as_ref().map(Bytes::len), Some(64));

    // The reply has exactly the documented shape, and its identity lacks the account key.
    let reply = wire(&ok.reply);
    assert_eq!(reply.tag, "iq");
    assert_eq!(
        reply.attrs,
        vec![
            ("to".into(), Jid::server().into()),
            ("type".into(), "result".into()),
            ("id".into(), "pair-1".into()),
        ]
    );
    assert_eq!(reply.child_nodes().len(), 1);
    let sign = reply.child("pair-device-sign").unwrap();
    assert!(sign.attrs.is_empty());
    assert_eq!(sign.child_nodes().len(), 1);
    let identity = sign.child("device-identity").unwrap();
    assert_eq!(identity.attrs, vec![("key-index".into(), "3".into())]);
    let sent = AdvSignedDeviceIdentity::decode(identity.content_bytes().unwrap()).unwrap();
    assert_eq!(sent.account_signature_key, None);
    assert_eq!(sent.details, account.details);
    assert_eq!(sent.account_signature, account.account_signature);
    assert_eq!(sent.device_signature, account.device_signature);

    // The phone accepts our device signature.
    let checked =
        phone::verify_pair_device_sign(&reply, &s.companion_identity(), s.account.public_bytes())
            .unwrap();
    assert_eq!((checked.id.as_str(), checked.key_index), ("pair-1", 3));

    // ... and notices a tampered one, or one checked against another identity.
    let mut bad_sig = sent;
    let mut sig = bad_sig.device_signature.unwrap().to_vec();
    sig[5] ^= 1;
    bad_sig.device_signature = Some(sig.into());
    let tampered = Node::new("iq")
        .attr("to", Jid::server())
        .attr("type", "result")
        .attr("id", "pair-1")
        .children([
            Node::new("pair-device-sign").children([Node::new("device-identity")
                .attr("key-index", "3")
                .bytes(bad_sig.encode_to_vec())]),
        ]);
    assert_eq!(
        phone::verify_pair_device_sign(
            &tampered,
            &s.companion_identity(),
            s.account.public_bytes()
        ),
        Err(PairError::DeviceSignatureMismatch)
    );
    assert_eq!(
        phone::verify_pair_device_sign(&reply, &[9; 32], s.account.public_bytes()).map(|_| ()),
        Err(PairError::SignatureMismatch)
    );
}

#[test]
fn pair_success_without_optional_parts() {
    let mut s = setup();
    let spec = PairSuccessSpec::new("p", device_jid(), 0, 1);
    let iq = s.pair_success(&spec);
    let ok = pairing::handle_pair_success(&iq, &s.creds, &mut s.rng).unwrap();
    assert_eq!(ok.device.lid, None);
    assert_eq!(ok.device.business_name, None);
    assert_eq!(ok.device.platform, "android");
    assert_eq!(ok.key_index, 0);
}

#[test]
fn hosted_pair_success_accepted() {
    let mut s = setup();
    let mut spec = spec();
    spec.hosted = true;
    let iq = s.pair_success(&spec);
    let ok = pairing::handle_pair_success(&iq, &s.creds, &mut s.rng).unwrap();
    phone::verify_pair_device_sign(&ok.reply, &s.companion_identity(), s.account.public_bytes())
        .unwrap();
}

#[test]
fn bad_hmac_refused() {
    let mut s = setup();
    let spec = spec();
    let other_secret = [0x33; 32];
    let iq = wire(&phone::sign_pair_success(
        &spec,
        &s.account,
        &s.companion_identity(),
        &other_secret,
        &mut s.rng,
    ));
    let refused = s.refuse(&iq);
    assert_eq!(refused.reason, PairError::HmacMismatch);
    assert_eq!(
        refused.reply.as_deref(),
        Some(&error_iq("pair-1", "401", "hmac-mismatch"))
    );

    // A flipped HMAC byte, and a missing HMAC.
    let details = phone::device_identity_details(&spec);
    let signed = phone::account_sign(
        &s.account,
        &details,
        &s.companion_identity(),
        false,
        &mut s.rng,
    );
    let mut container = phone::hmac_wrap(&signed, &s.creds.adv_secret, false);
    let mut mac = container.hmac.clone().unwrap().to_vec();
    mac[31] ^= 0x80;
    container.hmac = Some(mac.into());
    assert_eq!(
        s.refuse(&s.forged(&spec, &container)).reason,
        PairError::HmacMismatch
    );
    container.hmac = None;
    assert!(matches!(
        s.refuse(&s.forged(&spec, &container)).reason,
        PairError::Malformed { .. }
    ));
}

#[test]
fn hosted_prefix_variants() {
    let mut s = setup();
    let mut spec = spec();
    let identity = s.companion_identity();
    let adv = *s.creds.adv_secret;

    // HMAC made without the 06 05 prefix, but the container says HOSTED.
    let details = phone::device_identity_details(&spec);
    let signed = phone::account_sign(&s.account, &details, &identity, false, &mut s.rng);
    let mut container = phone::hmac_wrap(&signed, &adv, false);
    container.account_type = Some(1);
    assert_eq!(
        s.refuse(&s.forged(&spec, &container)).reason,
        PairError::HmacMismatch
    );
    // HMAC made with the prefix, but the container does not say HOSTED.
    let mut container = phone::hmac_wrap(&signed, &adv, true);
    container.account_type = None;
    assert_eq!(
        s.refuse(&s.forged(&spec, &container)).reason,
        PairError::HmacMismatch
    );
    // A hosted account with an ordinary device: HMAC prefixed, signature 06 00 — accepted.
    let container = phone::hmac_wrap(&signed, &adv, true);
    pairing::handle_pair_success(&s.forged(&spec, &container), &s.creds, &mut s.rng).unwrap();

    // A hosted device (deviceType HOSTED) signed with the ordinary 06 00 prefix.
    spec.hosted = true;
    let details = phone::device_identity_details(&spec);
    let signed = phone::account_sign(&s.account, &details, &identity, false, &mut s.rng);
    let container = phone::hmac_wrap(&signed, &adv, true);
    let refused = s.refuse(&s.forged(&spec, &container));
    assert_eq!(refused.reason, PairError::SignatureMismatch);
    assert_eq!(
        refused.reply.as_deref(),
        Some(&error_iq("pair-1", "401", "signature-mismatch"))
    );
    // An ordinary device signed with the hosted 06 05 prefix.
    spec.hosted = false;
    let details = phone::device_identity_details(&spec);
    let signed = phone::account_sign(&s.account, &details, &identity, true, &mut s.rng);
    let container = phone::hmac_wrap(&signed, &adv, false);
    assert_eq!(
        s.refuse(&s.forged(&spec, &container)).reason,
        PairError::SignatureMismatch
    );
}

#[test]
fn bad_account_signature_refused() {
    let mut s = setup();
    let spec = spec();
    let adv = *s.creds.adv_secret;
    let details = phone::device_identity_details(&spec);

    // Signed for another companion identity.
    let signed = phone::account_sign(&s.account, &details, &[7; 32], false, &mut s.rng);
    let container = phone::hmac_wrap(&signed, &adv, false);
    let refused = s.refuse(&s.forged(&spec, &container));
    assert_eq!(refused.reason, PairError::SignatureMismatch);
    assert_eq!(
        refused.reply.as_deref(),
        Some(&error_iq("pair-1", "401", "signature-mismatch"))
    );

    // Signed by one key, claiming another.
    let good = phone::account_sign(
        &s.account,
        &details,
        &s.companion_identity(),
        false,
        &mut s.rng,
    );
    let mut swapped = good.clone();
    swapped.account_signature_key = Some(Bytes::copy_from_slice(
        KeyPair::generate(&mut s.rng).public_bytes(),
    ));
    let container = phone::hmac_wrap(&swapped, &adv, false);
    assert_eq!(
        s.refuse(&s.forged(&spec, &container)).reason,
        PairError::SignatureMismatch
    );

    // Wrong lengths or missing parts.
    let mutations: [fn(&mut AdvSignedDeviceIdentity); 4] = [
        |x| x.account_signature_key = Some(Bytes::from_static(&[5; 33])),
        |x| x.account_signature_key = None,
        |x| x.account_signature = Some(Bytes::from_static(&[1; 63])),
        |x| x.account_signature = None,
    ];
    for mutate in mutations {
        let mut signed = good.clone();
        mutate(&mut signed);
        let container = phone::hmac_wrap(&signed, &adv, false);
        assert_eq!(
            s.refuse(&s.forged(&spec, &container)).reason,
            PairError::SignatureMismatch
        );
    }
    // The details changed after signing.
    let mut changed = good;
    let mut other_spec = spec.clone();
    other_spec.key_index = 4;
    changed.details = Some(phone::device_identity_details(&other_spec).into());
    let container = phone::hmac_wrap(&changed, &adv, false);
    assert_eq!(
        s.refuse(&s.forged(&spec, &container)).reason,
        PairError::SignatureMismatch
    );
}

/// Rebuilds the pair-success IQ with its `pair-success` children filtered and mapped.
fn edit_children(iq: &Node, f: impl Fn(&Node) -> Option<Node>) -> Node {
    let mut out = iq.clone();
    let success = iq.child("pair-success").unwrap();
    out.content = Node::new("x")
        .children([Node::new("pair-success").children(success.child_nodes().iter().filter_map(f))])
        .content;
    out
}

#[test]
fn malformed_pair_success_refused() {
    let mut s = setup();
    let iq = s.pair_success(&spec());
    let internal = Some(error_iq("pair-1", "500", "internal-error"));

    let cases: Vec<(Node, &str)> = vec![
        (
            edit_children(&iq, |c| (c.tag != "device-identity").then(|| c.clone())),
            "device-identity",
        ),
        (
            edit_children(&iq, |c| (c.tag != "device").then(|| c.clone())),
            "device",
        ),
        (
            edit_children(&iq, |c| {
                Some(if c.tag == "device" {
                    Node::new("device").attr("lid", lid_jid())
                } else {
                    c.clone()
                })
            }),
            "device jid",
        ),
        (
            edit_children(&iq, |c| {
                Some(if c.tag == "device-identity" {
                    Node::new("device-identity").bytes(vec![0xFF, 0xFF, 0xFF])
                } else {
                    c.clone()
                })
            }),
            "ADVSignedDeviceIdentityHMAC",
        ),
        (
            edit_children(&iq, |c| {
                Some(if c.tag == "device-identity" {
                    Node::new("device-identity")
                } else {
                    c.clone()
                })
            }),
            "device-identity",
        ),
        (
            {
                let mut no_children = iq.clone();
                no_children.content = Default::default();
                no_children
            },
            "pair-success",
        ),
    ];
    for (node, what) in cases {
        let refused = s.refuse(&wire(&node));
        assert_eq!(refused.reason, PairError::Malformed { what }, "{node}");
        assert_eq!(refused.reply.as_deref(), internal.as_ref(), "{node}");
    }

    // Garbage under a valid HMAC: only the inner decode can fail.
    let container = valid_hmac_over(&[0x0A, 0x20, 1, 2], &s.creds.adv_secret);
    let refused = s.refuse(&s.forged(&spec(), &container));
    assert_eq!(
        refused.reason,
        PairError::Malformed {
            what: "ADVSignedDeviceIdentity"
        }
    );

    // No id: refused without a reply.
    let mut no_id = iq.clone();
    no_id.attrs.retain(|(k, _)| k != "id");
    let refused = s.refuse(&wire(&no_id));
    assert_eq!(refused.reason, PairError::Malformed { what: "iq id" });
    assert_eq!(refused.reply, None);

    // Not from the server.
    let mut foreign = iq.clone();
    foreign.attrs.retain(|(k, _)| k != "from");
    let foreign = wire(&foreign.attr("from", device_jid()));
    let refused = s.refuse(&foreign);
    assert_eq!(refused.reason, PairError::NotFromServer);

    // Not an iq set.
    let mut result = iq;
    result.attrs.retain(|(k, _)| k != "type");
    let result = result.attr("type", "result");
    assert_eq!(
        s.refuse(&result).reason,
        PairError::Malformed { what: "iq" }
    );
}

/// An HMAC container whose HMAC is valid for `details`, whatever they hold.
fn valid_hmac_over(details: &[u8], adv: &[u8; 32]) -> AdvSignedDeviceIdentityHmac {
    AdvSignedDeviceIdentityHmac {
        details: Some(Bytes::copy_from_slice(details)),
        hmac: Some(Bytes::copy_from_slice(&hmac_sha256(adv, details))),
        account_type: None,
    }
}

/// HMAC-SHA256 (RFC 2104) for a key of at most one block, written out so the test does not
/// share the implementation under test.
fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let inner: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x36)
        .chain(msg.iter().copied())
        .collect();
    let inner = Sha256::digest(inner);
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5C).chain(inner).collect();
    Sha256::digest(outer).into()
}

const PHONE: &str = "15551234567";
const PAIRING_REF: &[u8] = b"2@link-code-ref";

/// Companion and phone after companion_hello and the server's result.
struct CodeSetup {
    creds: Credentials,
    state: PhoneCodePairing,
    code: String,
    hello: Node,
    phone_identity: KeyPair,
    rng: ChaCha20Rng,
}

fn code_setup() -> CodeSetup {
    let mut rng = rng(4);
    let creds = Credentials::generate(&mut rng);
    let phone_identity = KeyPair::generate(&mut rng);
    let (mut state, code, hello) =
        PhoneCodePairing::start(PHONE, &creds, &ClientConfig::default(), &mut rng).unwrap();
    let hello = wire(&hello);
    state
        .set_ref(&wire(&phone::companion_hello_result("h-1", PAIRING_REF)))
        .unwrap();
    CodeSetup {
        creds,
        state,
        code,
        hello,
        phone_identity,
        rng,
    }
}

#[test]
fn companion_hello_shape() {
    let s = code_setup();
    assert_eq!(s.code.len(), 8);
    assert!(
        s.code
            .bytes()
            .all(|b| pairing::LINK_CODE_ALPHABET.contains(&b))
    );
    assert_eq!(s.state.code(), s.code);
    assert_eq!(s.state.pairing_ref(), Some(PAIRING_REF));
    let hello = &s.hello;
    // No id: the connection machine adds it.
    assert_eq!(hello.get_attr("id"), None);
    assert_eq!(hello.attr_str("type"), Some("set"));
    assert_eq!(hello.attr_str("xmlns"), Some("md"));
    assert_eq!(hello.attr_jid("to"), Some(&Jid::server()));
    let reg = hello.child("link_code_companion_reg").unwrap();
    assert_eq!(reg.attr_jid("jid"), Some(&Jid::user(PHONE)));
    assert_eq!(reg.attr_str("stage"), Some("companion_hello"));
    assert_eq!(reg.attr_str("should_show_push_notification"), Some("true"));
    let tags: Vec<&str> = reg.child_nodes().iter().map(|c| c.tag.as_str()).collect();
    assert_eq!(
        tags,
        [
            "link_code_pairing_wrapped_companion_ephemeral_pub",
            "companion_server_auth_key_pub",
            "companion_platform_id",
            "companion_platform_display",
            "link_code_pairing_nonce",
        ]
    );
    let bytes = |t: &str| reg.child(t).unwrap().content_bytes().unwrap().to_vec();
    assert_eq!(
        bytes("link_code_pairing_wrapped_companion_ephemeral_pub").len(),
        80
    );
    assert_eq!(
        bytes("companion_server_auth_key_pub"),
        s.creds.noise_key.public_bytes()
    );
    assert_eq!(bytes("companion_platform_id"), b"1");
    assert_eq!(bytes("companion_platform_display"), b"Chrome (Linux)");
    assert_eq!(bytes("link_code_pairing_nonce"), [0]);
}

#[test]
fn phone_code_pairing_end_to_end() {
    let mut s = code_setup();
    let (notification, phone_state) = phone::link_code_notification(
        &s.hello,
        &s.code,
        &s.phone_identity,
        PAIRING_REF,
        &mut s.rng,
    )
    .unwrap();
    assert_eq!(
        phone_state.companion_noise_pub(),
        s.creds.noise_key.public_bytes()
    );
    let (finish, adv_secret) = s
        .state
        .finish(&wire(&notification), &s.creds, &mut s.rng)
        .unwrap();
    let finish = wire(&finish);
    assert_eq!(finish.get_attr("id"), None);
    let reg = finish.child("link_code_companion_reg").unwrap();
    assert_eq!(reg.attr_str("stage"), Some("companion_finish"));
    assert_eq!(
        reg.child("link_code_pairing_wrapped_key_bundle")
            .and_then(Node::content_bytes)
            .map(<[u8]>::len),
        Some(pairing::WRAPPED_BUNDLE_LEN)
    );

    let outcome = phone::finish(&phone_state, &finish).unwrap();
    assert_eq!(*outcome.adv_secret, *adv_secret);
    assert_ne!(*adv_secret, *s.creds.adv_secret);
    assert_eq!(
        &outcome.companion_identity_pub,
        s.creds.identity_key.public_bytes()
    );

    // The pair-success the phone then sends is HMAC'd with the new secret: accepted once the
    // companion stored it, refused with the QR-code secret.
    let spec = spec();
    let iq = wire(&phone::sign_pair_success(
        &spec,
        &s.phone_identity,
        &outcome.companion_identity_pub,
        &outcome.adv_secret,
        &mut s.rng,
    ));
    assert_eq!(
        pairing::handle_pair_success(&iq, &s.creds, &mut s.rng)
            .unwrap_err()
            .reason,
        PairError::HmacMismatch
    );
    s.creds.adv_secret = adv_secret;
    let ok = pairing::handle_pair_success(&iq, &s.creds, &mut s.rng).unwrap();
    assert_eq!(&ok.primary_identity, s.phone_identity.public_bytes());
    phone::verify_pair_device_sign(
        &ok.reply,
        s.creds.identity_key.public_bytes(),
        s.phone_identity.public_bytes(),
    )
    .unwrap();
}

#[test]
fn wrong_code_on_the_phone_fails_the_bundle() {
    let mut s = code_setup();
    let wrong = if s.code == "ZZZZZZZZ" {
        "YYYYYYYY"
    } else {
        "ZZZZZZZZ"
    };
    let (notification, phone_state) =
        phone::link_code_notification(&s.hello, wrong, &s.phone_identity, PAIRING_REF, &mut s.rng)
            .unwrap();
    let (finish, _) = s.state.finish(&notification, &s.creds, &mut s.rng).unwrap();
    assert!(matches!(
        phone::finish(&phone_state, &finish),
        Err(PairingError::Decrypt | PairingError::WeakKey)
    ));
}

/// The notification with the child `tag` replaced by `content` bytes.
fn with_child(notification: &Node, tag: &str, content: &[u8]) -> Node {
    let mut out = notification.clone();
    let reg = notification.child("link_code_companion_reg").unwrap();
    let children = reg.child_nodes().iter().map(|c| {
        if c.tag == tag {
            Node::new(tag).bytes(content.to_vec())
        } else {
            c.clone()
        }
    });
    let mut new_reg = reg.clone();
    new_reg.content = Node::new("x").children(children).content;
    out.content = Node::new("x").children([new_reg]).content;
    out
}

#[test]
fn bad_notifications_refused() {
    let mut s = code_setup();
    let (notification, _) = phone::link_code_notification(
        &s.hello,
        &s.code,
        &s.phone_identity,
        PAIRING_REF,
        &mut s.rng,
    )
    .unwrap();
    let finish =
        |s: &mut CodeSetup, n: &Node| s.state.finish(&wire(n), &s.creds, &mut s.rng).map(|_| ());

    let wrong_ref = with_child(&notification, "link_code_pairing_ref", b"2@other");
    assert_eq!(finish(&mut s, &wrong_ref), Err(PairingError::RefMismatch));

    let wrapped = notification
        .child("link_code_companion_reg")
        .and_then(|r| r.child("link_code_pairing_wrapped_primary_ephemeral_pub"))
        .and_then(Node::content_bytes)
        .unwrap()
        .to_vec();
    let short = with_child(
        &notification,
        "link_code_pairing_wrapped_primary_ephemeral_pub",
        &wrapped[..79],
    );
    assert_eq!(
        finish(&mut s, &short),
        Err(PairingError::WrappedKeyTooShort)
    );

    let bad_identity = with_child(&notification, "primary_identity_pub", &[1; 31]);
    assert_eq!(
        finish(&mut s, &bad_identity),
        Err(PairingError::Malformed {
            what: "primary_identity_pub"
        })
    );

    let mut wrong_type = notification.clone();
    wrong_type.attrs.retain(|(k, _)| k != "type");
    let wrong_type = wrong_type.attr("type", "devices");
    assert_eq!(
        finish(&mut s, &wrong_type),
        Err(PairingError::Malformed {
            what: "notification"
        })
    );

    // Nothing of the above consumed the state: the real notification still works.
    assert_eq!(finish(&mut s, &notification), Ok(()));

    // Without a stored ref the notification cannot be matched.
    let (fresh, _, _) =
        PhoneCodePairing::start(PHONE, &s.creds, &ClientConfig::default(), &mut s.rng).unwrap();
    assert_eq!(
        fresh
            .finish(&notification, &s.creds, &mut s.rng)
            .map(|_| ()),
        Err(PairingError::NoRef)
    );
}

#[test]
fn companion_hello_error_result() {
    let mut s = code_setup();
    let error = Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "error")
        .attr("id", "h-1")
        .children([Node::new("error")
            .attr("code", "400")
            .attr("text", "bad-request")]);
    assert_eq!(
        s.state.set_ref(&wire(&error)),
        Err(PairingError::ServerError { code: 400 })
    );
    let empty = Node::new("iq").attr("type", "result").attr("id", "h-1");
    assert_eq!(s.state.set_ref(&empty), Err(PairingError::NoRef));
}

#[test]
fn invalid_phone_numbers_refused() {
    let mut rng = rng(6);
    let creds = Credentials::generate(&mut rng);
    let cfg = ClientConfig::default();
    for bad in [
        "",
        "123456",
        "+15551234567",
        "1555-123-4567",
        "05551234567",
        "1234567890123456",
    ] {
        assert!(
            matches!(
                PhoneCodePairing::start(bad, &creds, &cfg, &mut rng),
                Err(PairingError::InvalidPhone { .. })
            ),
            "{bad}"
        );
    }
    assert!(PhoneCodePairing::start("1234567", &creds, &cfg, &mut rng).is_ok());
    assert_eq!(
        PhoneCodePairing::start_with_code(PHONE, "ABCDEFGI", &creds, &cfg, &mut rng).map(|_| ()),
        Err(PairingError::InvalidCode)
    );
    let (_, code, _) =
        PhoneCodePairing::start_with_code(PHONE, "abcd1234", &creds, &cfg, &mut rng).unwrap();
    assert_eq!(code, "ABCD1234");
}

#[test]
fn base32_known_answers() {
    assert_eq!(pairing::encode_link_code(&[0; 5]), "11111111");
    assert_eq!(pairing::encode_link_code(&[0xFF; 5]), "ZZZZZZZZ");
    assert_eq!(
        pairing::encode_link_code(&[0x00, 0x44, 0x32, 0x14, 0xC7]),
        "12345678"
    );
    assert_eq!(
        pairing::encode_link_code(&[0x42, 0x96, 0xC6, 0xB9, 0xF0]),
        "9BCDEFGH"
    );
    assert_eq!(pairing::format_link_code("9BCDEFGH"), "9BCD-EFGH");
}
