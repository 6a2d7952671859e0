//! End-to-end messaging in the machine, on virtual time against a scripted server and remote
//! Signal devices built from the core's Signal layer: prekey supply, receive (with the
//! pending store and crash redelivery), send fan-out, groups, retry receipts both ways, bad
//! input, and persistence before the frames that depend on it.

use amarula_core::binary::{Content, Node};
use amarula_core::jid::Jid;
use amarula_core::machine::{
    Config, Confirm, DecryptError, Event, IncomingMessage, MessageAckResult, Output, Session,
};
use amarula_core::persist::Change;
use amarula_core::signal::{PreKeyBundle, SignalError};
use amarula_tests::expect::{self, result_for};
use amarula_tests::harness::{Pair, paired_credentials};
use amarula_tests::peer::{Peer, bundle_from_upload};
use prost::Message as _;

const OWN: &str = "15551234567:7@s.whatsapp.net";
const OWN_USER: &str = "15551234567@s.whatsapp.net";
const OWN_PHONE: &str = "15551234567:0@s.whatsapp.net";
const BOB: &str = "15550009999:0@s.whatsapp.net";
const BOB_USER: &str = "15550009999@s.whatsapp.net";
const GROUP: &str = "120363000000000001@g.us";

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn config() -> Config {
    Config {
        end_to_end: true,
        prekey_upload_count: 8,
        prekey_refill_count: 4,
        ..Pair::config()
    }
}

/// A logged-in machine whose prekey count query was answered with 0, so it uploaded.
/// Returns the pair and the bundle a peer would fetch for it.
fn logged_in() -> (Pair, PreKeyBundle) {
    let mut pair = expect::logged_in(config(), expect::seeds(5));
    let count = pair.server.last("iq").unwrap().clone();
    assert_eq!(count.attr_str("xmlns"), Some("encrypt"));
    assert!(count.child("count").is_some());
    pair.server_send(&result_for(&count).children([Node::new("count").attr("value", "0")]));
    let upload = pair.server.last("iq").unwrap().clone();
    assert_eq!(upload.attr_str("type"), Some("set"));
    assert_eq!(
        upload.child("list").unwrap().child_nodes().len(),
        8,
        "initial upload count"
    );
    pair.server_send(&result_for(&upload));
    let bundle = bundle_from_upload(&upload);
    (pair, bundle)
}

fn messages(events: &[Event]) -> Vec<&IncomingMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(&**m),
            _ => None,
        })
        .collect()
}

fn incoming(from: &Jid, id: &str, enc: Node) -> Node {
    Node::new("message")
        .attr("from", from.clone())
        .attr("id", id)
        .attr("type", "text")
        .attr("t", "1700000000")
        .children([enc])
}

#[test]
fn prekeys_are_stored_before_the_upload_and_refilled_when_low() {
    let (mut pair, _) = logged_in();
    assert_eq!(pair.store.prekeys.len(), 8);
    assert_eq!(pair.client.credentials().next_prekey_id, 9);
    // Ordering: every prekey event precedes the frame of the refill upload.
    let low = Node::new("notification")
        .attr("id", "N1")
        .attr("from", Jid::server())
        .attr("type", "encrypt")
        .children([Node::new("count").attr("value", "2")]);
    pair.server.send(&low);
    for frame in pair.server.take_to_client() {
        pair.client.handle_input(pair.now, &frame);
    }
    let mut outputs = Vec::new();
    while let Some(o) = pair.client.poll_output() {
        outputs.push(o);
    }
    let last_prekey = outputs
        .iter()
        .rposition(|o| matches!(o, Output::Event(Event::Persist(Change::PreKey { .. }))))
        .expect("refill prekeys persisted");
    let creds = outputs
        .iter()
        .rposition(|o| matches!(o, Output::Event(Event::CredentialsChanged(_))))
        .expect("the next prekey id persisted");
    let first_frame = outputs
        .iter()
        .position(|o| matches!(o, Output::Transmit(_)))
        .expect("the upload and the ack");
    assert!(last_prekey < first_frame && creds < first_frame);
    let refill = outputs
        .iter()
        .filter(|o| matches!(o, Output::Event(Event::Persist(Change::PreKey { .. }))))
        .count();
    assert_eq!(refill, 4);
}

/// A logged-in machine uploading 8 prekeys in batches of 3, its count query answered with 0:
/// the first batch is on its way.
fn uploading_in_batches_of_3() -> Pair {
    let config = Config {
        prekey_upload_count: 8,
        prekey_upload_batch: 3,
        ..config()
    };
    let mut pair = expect::logged_in(config, expect::seeds(5));
    let count = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&count).children([Node::new("count").attr("value", "0")]));
    pair
}

/// A first upload larger than `prekey_upload_batch` goes as several IQs, each generated,
/// persisted and sent once the one before it is answered; the login is settled and
/// `PreKeysUploaded` reports the whole count only after the last one.
#[test]
fn a_large_first_upload_goes_in_batches_one_after_another() {
    let mut pair = uploading_in_batches_of_3();
    let mut ids = Vec::new();
    for (i, expected) in [3usize, 3, 2].into_iter().enumerate() {
        let upload = pair.server.last("iq").unwrap().clone();
        assert_eq!(upload.attr_str("xmlns"), Some("encrypt"));
        assert_eq!(upload.attr_str("type"), Some("set"));
        let keys = upload.child("list").unwrap().child_nodes();
        assert_eq!(keys.len(), expected, "batch {i}");
        for key in keys {
            let id = key.child("id").and_then(|c| c.content_bytes()).unwrap();
            ids.push(u32::from_be_bytes([0, id[0], id[1], id[2]]));
        }
        // Each batch's keys were stored before its frame left.
        assert_eq!(pair.store.prekeys.len(), ids.len());
        // One IQ at a time: nothing more goes out until this one is answered.
        let sent = pair.server.received.len();
        assert!(
            !pair.client.is_login_settled(),
            "batch {i} still unanswered"
        );
        assert!(
            !pair
                .events
                .iter()
                .any(|e| matches!(e, Event::PreKeysUploaded { .. })),
            "reported before the last batch"
        );
        assert_eq!(pair.server.received.len(), sent);
        pair.server_send(&result_for(&upload));
    }
    assert_eq!(
        ids,
        (1..=8).collect::<Vec<u32>>(),
        "ids follow on across batches"
    );
    assert!(pair.client.is_login_settled());
    let uploaded: Vec<u32> = pair
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PreKeysUploaded { count } => Some(*count),
            _ => None,
        })
        .collect();
    assert_eq!(uploaded, [8]);
    assert_eq!(pair.client.credentials().next_prekey_id, 9);
}

/// A failed batch ends the upload: no further batch, no `PreKeysUploaded`, and the next
/// prekey count starts over.
#[test]
fn a_failed_batch_ends_the_upload() {
    let mut pair = uploading_in_batches_of_3();
    let upload = pair.server.last("iq").unwrap().clone();
    let sent = pair.server.received.len();
    let error = Node::new("iq")
        .attr("id", upload.attr_str("id").unwrap())
        .attr("from", Jid::server())
        .attr("type", "error")
        .children([Node::new("error")
            .attr("code", "500")
            .attr("text", "internal")]);
    pair.server_send(&error);
    assert_eq!(pair.server.received.len(), sent, "no batch after a failure");
    assert!(
        !pair
            .events
            .iter()
            .any(|e| matches!(e, Event::PreKeysUploaded { .. }))
    );
    assert!(pair.client.is_login_settled());
    // The server's next low-supply notice asks again, for a refill.
    let low = Node::new("notification")
        .attr("id", "N1")
        .attr("from", Jid::server())
        .attr("type", "encrypt")
        .children([Node::new("count").attr("value", "1")]);
    pair.server_send(&low);
    let refill = pair.server.last("iq").unwrap().clone();
    assert_eq!(refill.attr_str("type"), Some("set"));
    assert_eq!(refill.child("list").unwrap().child_nodes().len(), 3);
}

#[test]
fn a_prekey_message_decrypts_and_waits_for_confirmation() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB, 21);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "hello");
    let sent_before = pair.server.received.len();
    pair.server_send(&incoming(&bob.jid, "M1", enc));
    let msgs = messages(&pair.events);
    assert_eq!(msgs.len(), 1);
    let m = msgs[0];
    assert_eq!(m.text(), Some("hello"));
    assert_eq!(m.chat, jid(BOB_USER));
    assert_eq!(m.sender, jid(BOB));
    assert!(!m.from_me);
    assert_eq!(m.timestamp, 1_700_000_000);
    let token = m.ack.expect("held");
    // Stored before the application saw it; the used prekey is gone; nothing sent yet.
    assert_eq!(pair.store.pending.len(), 1);
    assert_eq!(pair.store.prekeys.len(), 7);
    assert!(pair.store.sessions.contains_key(&jid(BOB)));
    assert!(pair.server.received_since(sent_before).is_empty());
    pair.confirm(token, Confirm::Ack).unwrap();
    // The delivery receipt alone acknowledges it (SESSION.md §5.1): no ack goes with it.
    let sent = pair.server.received_since(sent_before);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].tag, "receipt");
    assert_eq!(sent[0].attr_str("id"), Some("M1"));
    assert_eq!(sent[0].attr_str("type"), None);
    assert!(pair.store.pending.is_empty());
    // Bob's next message is a `msg` on the same session.
    let enc = bob.encrypt_text(&jid(OWN), None, "again");
    assert_eq!(
        enc.attr_str("type"),
        Some("pkmsg"),
        "Bob has not heard back"
    );
    pair.server_send(&incoming(&bob.jid, "M2", enc));
    assert_eq!(messages(&pair.events).last().unwrap().text(), Some("again"));
}

/// A decrypted message the application refuses gets the ack with the error, and no receipt.
#[test]
fn a_refused_message_gets_a_nack_and_no_receipt() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB, 25);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "no thanks");
    let before = pair.server.received.len();
    pair.server_send(&incoming(&bob.jid, "M1", enc));
    let token = messages(&pair.events)[0].ack.expect("held");
    pair.confirm(token, Confirm::Nack(491)).unwrap();
    let sent = pair.server.received_since(before);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].tag, "ack");
    assert_eq!(sent[0].attr_str("class"), Some("message"));
    assert_eq!(sent[0].attr_str("id"), Some("M1"));
    assert_eq!(sent[0].attr_str("error"), Some("491"));
    assert!(pair.store.pending.is_empty());
}

#[test]
fn records_are_loaded_lazily_after_a_restart() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB, 22);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "one");
    pair.server_send(&incoming(&bob.jid, "M1", enc));
    let token = messages(&pair.events)[0].ack.unwrap();
    pair.confirm(token, Confirm::Ack).unwrap();
    // A new process: a fresh session from the stored credentials, and the store.
    let creds = pair.client.credentials().clone();
    let store = pair.store.clone();
    let loads_before = store.loads;
    let session = Session::new(creds, &config());
    let mut next = Pair::at_with_store(config(), session, expect::seeds(6), pair.now, store);
    expect::log_in(&mut next);
    let enc = bob.encrypt_text(&jid(OWN), None, "two");
    next.server_send(&incoming(&bob.jid, "M2", enc));
    let loads: Vec<_> = next
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Load(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert!(
        loads.iter().any(|r| r.sessions == [jid(BOB)]),
        "the session is asked for: {loads:?}"
    );
    assert!(next.store.loads > loads_before);
    assert_eq!(messages(&next.events).last().unwrap().text(), Some("two"));
}

#[test]
fn an_unconfirmed_message_comes_back_once_after_a_crash() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB, 23);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "keep me");
    let stanza = incoming(&bob.jid, "M1", enc);
    pair.server_send(&stanza);
    assert_eq!(messages(&pair.events).len(), 1);
    // Crash before the application confirmed: the store keeps the pending copy.
    let creds = pair.client.credentials().clone();
    let store = pair.store.clone();
    assert_eq!(store.pending.len(), 1);
    let mut session = Session::new(creds, &config());
    session.restore_pending(store.pending.clone());
    let mut next = Pair::at_with_store(config(), session, expect::seeds(7), pair.now, store);
    expect::log_in(&mut next);
    let again = messages(&next.events);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].text(), Some("keep me"));
    assert_eq!(again[0].id, "M1");
    let token = again[0].ack.unwrap();
    // The server delivers its unacked copy again: the key is used, so it is receipted without
    // a second event or a retry receipt.
    let before = next.server.received.len();
    next.server_send(&stanza);
    assert_eq!(messages(&next.events).len(), 1);
    let sent = next.server.received_since(before);
    assert!(sent.iter().all(|n| n.attr_str("type") != Some("retry")));
    assert!(
        sent.iter()
            .any(|n| n.tag == "receipt" && n.attr_str("id") == Some("M1"))
    );
    assert!(sent.iter().all(|n| n.tag != "ack"), "{sent:?}");
    next.confirm(token, Confirm::Ack).unwrap();
    assert!(next.store.pending.is_empty());
}

/// Sends "hi" to Bob, answering the usync and bundle queries; returns the relayed stanza.
fn send_to_bob(pair: &mut Pair, bob: &mut Peer, phone: &mut Peer) -> (String, Node) {
    let id = pair
        .client
        .send_text(pair.now, &jid(BOB_USER), "hi")
        .unwrap();
    pair.drive();
    let usync = pair.server.last("iq").unwrap().clone();
    assert_eq!(usync.attr_str("xmlns"), Some("usync"));
    let user = |u: &str, devices: &[(u16, bool)]| {
        Node::new("user")
            .attr("jid", jid(u))
            .children([
                Node::new("devices").children([Node::new("device-list").children(
                    devices
                        .iter()
                        .map(|(d, key)| {
                            let n = Node::new("device").attr("id", d.to_string());
                            if *key { n.attr("key-index", "1") } else { n }
                        })
                        .collect::<Vec<_>>(),
                )]),
            ])
    };
    pair.server_send(&result_for(&usync).children([Node::new("usync").children([
        Node::new("list").children([
            user(BOB_USER, &[(0, false)]),
            user(OWN_USER, &[(0, false), (7, true)]),
        ]),
    ])]));
    let key = pair.server.last("iq").unwrap().clone();
    assert_eq!(key.attr_str("xmlns"), Some("encrypt"));
    let asked: Vec<String> = key
        .child("key")
        .unwrap()
        .child_nodes()
        .iter()
        .map(|u| u.attr_jid("jid").unwrap().to_string())
        .collect();
    assert_eq!(
        asked.len(),
        2,
        "Bob's phone and ours, not this device: {asked:?}"
    );
    pair.server_send(
        &result_for(&key)
            .children([Node::new("list").children([bob.bundle_node(), phone.bundle_node()])]),
    );
    let msg = pair.server.last("message").expect("relayed").clone();
    assert_eq!(msg.attr_str("id"), Some(id.as_str()));
    (id, msg)
}

fn enc_for<'a>(msg: &'a Node, device: &str) -> &'a Node {
    msg.child("participants")
        .unwrap()
        .child_nodes()
        .iter()
        .find(|t| t.attr_jid("jid").unwrap().to_string() == device)
        .and_then(|t| t.child("enc"))
        .unwrap_or_else(|| panic!("no enc for {device}"))
}

#[test]
fn a_text_fans_out_to_every_device_and_our_own() {
    let (mut pair, _) = logged_in();
    let (mut bob, mut phone) = (Peer::new(BOB, 24), Peer::new(OWN_PHONE, 25));
    let (id, msg) = send_to_bob(&mut pair, &mut bob, &mut phone);
    assert!(id.starts_with("3EB0") && id.len() == 22);
    assert_eq!(msg.attr_jid("to"), Some(&jid(BOB_USER)));
    assert_eq!(msg.attr_str("type"), Some("text"));
    assert!(msg.child("device-identity").is_some(), "pkmsg needs it");
    let to_bob = enc_for(&msg, BOB);
    assert_eq!(to_bob.attr_str("type"), Some("pkmsg"));
    let got = bob.decrypt(&jid(OWN), to_bob).unwrap();
    assert_eq!(got.conversation.as_deref(), Some("hi"));
    let to_phone = enc_for(&msg, OWN_PHONE);
    let got = phone.decrypt(&jid(OWN), to_phone).unwrap();
    let dsm = got.device_sent_message.expect("wrapped for our own device");
    assert_eq!(dsm.destination_jid.as_deref(), Some(BOB_USER));
    assert_eq!(dsm.message.unwrap().conversation.as_deref(), Some("hi"));
    // Sessions and identities are in the store; the server's ack completes the send.
    assert!(pair.store.sessions.contains_key(&jid(BOB)));
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::Persist(Change::Identity { address, key })
            if *address == jid(BOB) && key[..] == bob.identity.public().0[..]
    )));
    assert!(pair.store.device_lists.contains_key(&jid(BOB_USER)));
    pair.server_send(
        &Node::new("ack")
            .attr("class", "message")
            .attr("id", id.as_str())
            .attr("from", jid(BOB_USER))
            .attr("t", "1700000001"),
    );
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::MessageAck { id: i, result: MessageAckResult::Delivered { .. } } if *i == id
    )));
    // A second send needs no query: lists and sessions are cached; it is a `msg` now that…
    // (Bob has not answered, so still a pkmsg, but no bundle is fetched again).
    let before = pair.server.received.len();
    pair.client
        .send_text(pair.now, &jid(BOB_USER), "two")
        .unwrap();
    pair.drive();
    let sent = pair.server.received_since(before);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].tag, "message");
    let got = bob.decrypt(&jid(OWN), enc_for(&sent[0], BOB)).unwrap();
    assert_eq!(got.conversation.as_deref(), Some("two"));
}

#[test]
fn sessions_reach_the_store_before_the_message_frame() {
    let (mut pair, _) = logged_in();
    let (mut bob, mut phone) = (Peer::new(BOB, 26), Peer::new(OWN_PHONE, 27));
    send_to_bob(&mut pair, &mut bob, &mut phone);
    // Now send again and watch the raw output order.
    pair.client
        .send_text(pair.now, &jid(BOB_USER), "ordered")
        .unwrap();
    let mut outputs = Vec::new();
    while let Some(o) = pair.client.poll_output() {
        outputs.push(o);
    }
    let frame = outputs
        .iter()
        .position(|o| matches!(o, Output::Transmit(_)))
        .expect("the message frame");
    let sessions = outputs
        .iter()
        .filter(|o| matches!(o, Output::Event(Event::Persist(Change::Session { .. }))))
        .count();
    let cached = outputs
        .iter()
        .position(|o| matches!(o, Output::Event(Event::MessageCached(_))))
        .expect("cached for retries");
    assert_eq!(sessions, 2);
    assert!(
        outputs[..frame]
            .iter()
            .filter(|o| matches!(o, Output::Event(Event::Persist(Change::Session { .. }))))
            .count()
            == 2
            && cached < frame
    );
}

#[test]
fn a_retry_receipt_is_answered_for_that_device_only() {
    let (mut pair, _) = logged_in();
    let (mut bob, mut phone) = (Peer::new(BOB, 28), Peer::new(OWN_PHONE, 29));
    let (id, _) = send_to_bob(&mut pair, &mut bob, &mut phone);
    // Bob lost the message; he asks again with fresh keys.
    let mut bob2 = Peer::new(BOB, 30);
    let keys = bob2.bundle_node();
    let part = |tag: &str| keys.child(tag).unwrap().clone();
    let receipt = Node::new("receipt")
        .attr("id", id.as_str())
        .attr("from", jid(BOB))
        .attr("type", "retry")
        .attr("t", "1700000002")
        .children([
            Node::new("retry")
                .attr("count", "2")
                .attr("id", id.as_str())
                .attr("t", "1700000001")
                .attr("v", "1"),
            part("registration"),
            Node::new("keys").children([part("type"), part("identity"), part("key"), part("skey")]),
        ]);
    let before = pair.server.received.len();
    pair.server_send(&receipt);
    let resent: Vec<&Node> = pair
        .server
        .received_since(before)
        .iter()
        .filter(|n| n.tag == "message")
        .collect();
    assert_eq!(resent.len(), 1);
    let m = resent[0];
    assert_eq!(m.attr_str("id"), Some(id.as_str()));
    assert_eq!(m.attr_jid("to"), Some(&jid(BOB)));
    assert_eq!(m.attr_str("device_fanout"), Some("false"));
    assert!(m.child("participants").is_none());
    let enc = m.child("enc").unwrap();
    assert_eq!(enc.attr_str("count"), Some("2"));
    let got = bob2.decrypt(&jid(OWN), enc).unwrap();
    assert_eq!(got.conversation.as_deref(), Some("hi"));
}

#[test]
fn bad_input_gives_typed_errors_and_retry_receipts() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB, 31);
    let first = bob.encrypt_text(&jid(OWN), Some(&bundle), "ok");
    pair.server_send(&incoming(&bob.jid, "M1", first.clone()));
    assert_eq!(messages(&pair.events).len(), 1);
    let undecryptable = |pair: &Pair| -> Vec<(String, DecryptError, Option<u8>)> {
        pair.events
            .iter()
            .filter_map(|e| match e {
                Event::Undecryptable(u) => Some((u.id.clone(), u.error.clone(), u.retry_count)),
                _ => None,
            })
            .collect()
    };
    // A forged MAC. Bob's messages are still `pkmsg`s (he has not heard from us), whose last
    // 5 bytes are the registration id and signed prekey id fields; the 8-byte MAC of the
    // inner message ends just before them.
    let mut forged = bob.encrypt_text(&jid(OWN), None, "forged");
    assert_eq!(forged.attr_str("type"), Some("pkmsg"));
    let mut bytes = forged.content_bytes().unwrap().to_vec();
    let at = bytes.len() - 7;
    bytes[at] ^= 1;
    forged = forged.bytes(bytes.clone());
    let before = pair.server.received.len();
    pair.server_send(&incoming(&bob.jid, "M2", forged.clone()));
    let u = undecryptable(&pair);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].1, DecryptError::Signal(SignalError::BadMac));
    assert_eq!(u[0].2, Some(1));
    let sent = pair.server.received_since(before);
    let retry = sent
        .iter()
        .find(|n| n.tag == "receipt" && n.attr_str("type") == Some("retry"))
        .expect("a retry receipt");
    assert_eq!(retry.child("retry").unwrap().attr_str("count"), Some("1"));
    assert_eq!(
        retry
            .child("registration")
            .unwrap()
            .content_bytes()
            .unwrap()
            .len(),
        4
    );
    assert!(retry.child("keys").is_none(), "keys from count 2");
    assert!(sent.iter().any(|n| n.tag == "ack"));
    // The same message failing again: count 2 with keys, and a new prekey stored first.
    let prekeys = pair.store.prekeys.len();
    pair.server_send(&incoming(&bob.jid, "M2", forged));
    let retry = pair.server.last("receipt").unwrap();
    assert_eq!(retry.child("retry").unwrap().attr_str("count"), Some("2"));
    assert!(retry.child("keys").unwrap().child("key").is_some());
    assert_eq!(pair.store.prekeys.len(), prekeys + 1);
    // A truncated ciphertext.
    pair.server_send(&incoming(
        &bob.jid,
        "M3",
        Node::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(bytes[..10].to_vec()),
    ));
    assert!(matches!(
        undecryptable(&pair).last().unwrap().1,
        DecryptError::Signal(
            SignalError::InvalidMessage { .. } | SignalError::Decrypt | SignalError::BadMac
        )
    ));
    // A replayed message: already handled, acked without a retry receipt or an event.
    let n_msgs = messages(&pair.events).len();
    let n_undecryptable = undecryptable(&pair).len();
    let before = pair.server.received.len();
    pair.server_send(&incoming(&bob.jid, "M1", first));
    assert_eq!(messages(&pair.events).len(), n_msgs);
    assert_eq!(undecryptable(&pair).len(), n_undecryptable);
    let sent = pair.server.received_since(before);
    assert!(sent.iter().all(|n| n.attr_str("type") != Some("retry")));
    // A group message with an unknown sender key: a retry receipt with keys at once.
    let mut unknown = amarula_core::signal::SenderKeyRecord::new();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([4; 32]);
    unknown.own_distribution_message(&mut rng);
    let sk = unknown.encrypt(b"secret\x01").unwrap();
    let skmsg = Node::new("message")
        .attr("from", jid(GROUP))
        .attr("participant", jid(BOB))
        .attr("id", "G1")
        .attr("t", "1700000000")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "skmsg")
            .bytes(sk.serialized().to_vec())]);
    pair.server_send(&skmsg);
    let retry = pair.server.last("receipt").unwrap();
    assert_eq!(retry.attr_str("type"), Some("retry"));
    assert_eq!(retry.attr_jid("participant"), Some(&jid(BOB)));
    assert!(retry.child("keys").is_some());
    assert!(matches!(
        undecryptable(&pair).last().unwrap().1,
        DecryptError::Signal(SignalError::UnknownSenderKey { .. })
    ));
    // The session still works.
    let enc = bob.encrypt_text(&jid(OWN), None, "still fine");
    pair.server_send(&incoming(&bob.jid, "M4", enc));
    assert_eq!(
        messages(&pair.events).last().unwrap().text(),
        Some("still fine")
    );
}

#[test]
fn a_group_message_distributes_the_sender_key_once() {
    let (mut pair, _) = logged_in();
    let (mut bob, mut phone) = (Peer::new(BOB, 32), Peer::new(OWN_PHONE, 33));
    let group = jid(GROUP);
    let id = pair
        .client
        .send_text(pair.now, &group, "hello group")
        .unwrap();
    pair.drive();
    let meta = pair.server.last("iq").unwrap().clone();
    assert_eq!(meta.attr_str("xmlns"), Some("w:g2"));
    assert_eq!(meta.attr_jid("to"), Some(&group));
    pair.server_send(
        &result_for(&meta).children([Node::new("group")
            .attr("id", "120363000000000001")
            .attr("subject", "test")
            .children([
                Node::new("participant")
                    .attr("jid", jid(OWN_USER))
                    .attr("type", "superadmin"),
                Node::new("participant").attr("jid", jid(BOB_USER)),
            ])]),
    );
    let usync = pair.server.last("iq").unwrap().clone();
    assert_eq!(usync.attr_str("xmlns"), Some("usync"));
    let user = |u: &str, d: &str| {
        Node::new("user")
            .attr("jid", jid(u))
            .children([Node::new("devices").children([
                Node::new("device-list").children([Node::new("device").attr("id", d)])
            ])])
    };
    pair.server_send(
        &result_for(&usync).children([Node::new("usync")
            .children([Node::new("list").children([user(BOB_USER, "0"), user(OWN_USER, "0")])])]),
    );
    let key = pair.server.last("iq").unwrap().clone();
    pair.server_send(
        &result_for(&key)
            .children([Node::new("list").children([bob.bundle_node(), phone.bundle_node()])]),
    );
    let msg = pair.server.last("message").unwrap().clone();
    assert_eq!(msg.attr_str("id"), Some(id.as_str()));
    assert!(msg.attr_str("phash").unwrap().starts_with("2:"));
    let skmsg = msg.child("enc").unwrap();
    assert_eq!(skmsg.attr_str("type"), Some("skmsg"));
    for peer in [&mut bob, &mut phone] {
        let pairwise = enc_for(&msg, &peer.jid.to_string()).clone();
        let skdm = peer.decrypt(&jid(OWN), &pairwise).unwrap();
        assert!(skdm.sender_key_distribution_message.is_some());
        let got = peer.decrypt_group(&group, &jid(OWN), skmsg).unwrap();
        assert_eq!(got.conversation.as_deref(), Some("hello group"));
    }
    assert!(
        pair.store
            .sender_keys
            .contains_key(&(group.clone(), jid(OWN)))
    );
    // The next message goes with the sender key alone.
    let second = pair.client.send_text(pair.now, &group, "second").unwrap();
    pair.drive();
    let msg = pair.server.last("message").unwrap().clone();
    assert!(msg.child("participants").is_none());
    // The server's participant hash differs from ours: the group is fetched again next time.
    let metas = |pair: &Pair| {
        pair.server
            .received
            .iter()
            .filter(|n| n.attr_str("xmlns") == Some("w:g2"))
            .count()
    };
    let before = metas(&pair);
    pair.server_send(
        &Node::new("ack")
            .attr("class", "message")
            .attr("id", second.as_str())
            .attr("from", group.clone())
            .attr("phash", "2:AAAAAAAA"),
    );
    pair.client.send_text(pair.now, &group, "third").unwrap();
    pair.drive();
    assert_eq!(metas(&pair), before + 1, "group metadata asked again");
    let got = bob
        .decrypt_group(&group, &jid(OWN), msg.child("enc").unwrap())
        .unwrap();
    assert_eq!(got.conversation.as_deref(), Some("second"));
    // Receiving in the group: Bob distributes his key, then sends.
    let bob_group = jid(GROUP);
    let mut bob_key = amarula_core::signal::SenderKeyRecord::new();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([9; 32]);
    let skdm = bob_key.own_distribution_message(&mut rng);
    let with_key = amarula_proto::e2e::Message {
        sender_key_distribution_message: Some(amarula_proto::e2e::SenderKeyDistributionMessage {
            group_id: Some(GROUP.into()),
            axolotl_sender_key_distribution_message: Some(skdm.serialized().to_vec().into()),
        }),
        ..Default::default()
    };
    // Bob needs a session with us: he uses the bundle of our upload.
    let upload = pair
        .server
        .received
        .iter()
        .find(|n| n.tag == "iq" && n.child("list").is_some())
        .unwrap()
        .clone();
    let pairwise = bob.encrypt(
        &jid(OWN),
        Some(&bundle_from_upload(&upload)),
        &with_key.encode_to_vec(),
    );
    let text = amarula_proto::e2e::Message {
        conversation: Some("from bob".into()),
        ..Default::default()
    };
    let sk = bob_key
        .encrypt(&amarula_tests::peer::pad(&text.encode_to_vec()))
        .unwrap();
    pair.server_send(
        &Node::new("message")
            .attr("from", bob_group)
            .attr("participant", jid(BOB))
            .attr("id", "G2")
            .attr("t", "1700000000")
            .children([
                pairwise,
                Node::new("enc")
                    .attr("v", "2")
                    .attr("type", "skmsg")
                    .bytes(sk.serialized().to_vec()),
            ]),
    );
    let m = messages(&pair.events);
    let m = m.last().unwrap();
    assert_eq!(m.text(), Some("from bob"));
    assert_eq!(m.chat, group);
    assert_eq!(m.sender, jid(BOB));
}

#[test]
fn a_send_to_nobody_fails_and_other_chats_go_on() {
    let (mut pair, _) = logged_in();
    let nobody = pair
        .client
        .send_text(pair.now, &jid("15550000000@s.whatsapp.net"), "x")
        .unwrap();
    pair.drive();
    let usync = pair.server.last("iq").unwrap().clone();
    pair.server_send(
        &result_for(&usync).children([Node::new("usync").children([Node::new("list")])]),
    );
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::SendFailed { id, error: amarula_core::machine::MessagingError::NoDevices } if *id == nobody
    )));
    let _ = paired_credentials(1);
}

#[test]
fn an_unacknowledged_send_goes_again_with_the_same_id_after_a_crash() {
    let (mut pair, _) = logged_in();
    let (mut bob, mut phone) = (Peer::new(BOB, 34), Peer::new(OWN_PHONE, 35));
    let (acked, _) = send_to_bob(&mut pair, &mut bob, &mut phone);
    pair.server_send(
        &Node::new("ack")
            .attr("class", "message")
            .attr("id", acked.as_str())
            .attr("from", jid(BOB_USER)),
    );
    let lost = pair
        .client
        .send_text(pair.now, &jid(BOB_USER), "lost in the crash")
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.server.last("message").unwrap().attr_str("id"),
        Some(lost.as_str())
    );
    // Crash before the server's ack: the store has the message, not acknowledged.
    let store = pair.store.clone();
    let unacked = store.unacked();
    assert_eq!(
        unacked.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [lost.as_str()]
    );
    let mut session = Session::new(pair.client.credentials().clone(), &config());
    session.restore_outbox(unacked);
    let mut next = Pair::at_with_store(config(), session, expect::seeds(8), pair.now, store);
    expect::log_in(&mut next);
    // Device lists and sessions come from the store: no query, the same id again.
    let again = next.server.last("message").expect("sent again").clone();
    assert_eq!(again.attr_str("id"), Some(lost.as_str()));
    let got = bob.decrypt(&jid(OWN), enc_for(&again, BOB)).unwrap();
    assert_eq!(got.conversation.as_deref(), Some("lost in the crash"));
    assert!(
        next.server
            .received
            .iter()
            .all(|n| n.attr_str("xmlns") != Some("usync")),
        "the device list was loaded, not fetched"
    );
}

#[test]
fn a_message_sent_again_with_the_same_id_is_handed_out_once() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB, 36);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "once");
    pair.server_send(&incoming(&bob.jid, "M1", enc));
    // Bob crashed before the server's ack and sends it again: new ciphertext, same id.
    let enc = bob.encrypt_text(&jid(OWN), None, "once");
    let before = pair.server.received.len();
    pair.server_send(&incoming(&bob.jid, "M1", enc));
    assert_eq!(messages(&pair.events).len(), 1);
    let sent = pair.server.received_since(before);
    assert!(sent.iter().all(|n| n.tag != "ack"), "{sent:?}");
    assert!(
        sent.iter()
            .any(|n| n.tag == "receipt" && n.attr_str("type").is_none())
    );
}

/// The server hands out again a message already handed to the application (its ack was lost
/// with a crash): it is recognised by its chat, sender and id before any decryption, so it is
/// receipted even when its session can no longer decrypt it (its receiving chain dropped by
/// later ratchet steps; here, bytes no session decrypts stand in for that).
#[test]
fn a_redelivered_message_is_recognised_before_decrypting() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB, 39);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "already here");
    // Bytes no session decrypts, as the copy would be once its chain is gone.
    let mut stale = enc.clone();
    stale.content = Content::Bytes(vec![0x33; 64].into());
    pair.server_send(&incoming(&bob.jid, "M1", enc));
    assert_eq!(messages(&pair.events).len(), 1);
    let before = pair.server.received.len();
    pair.server_send(&incoming(&bob.jid, "M1", stale));
    assert_eq!(messages(&pair.events).len(), 1);
    assert!(
        !pair
            .events
            .iter()
            .any(|e| matches!(e, Event::Undecryptable(_))),
        "{:?}",
        pair.events
    );
    let sent = pair.server.received_since(before);
    assert!(
        sent.iter()
            .any(|n| n.tag == "receipt" && n.attr_str("type").is_none()),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .all(|n| n.tag != "ack" && n.attr_str("type") != Some("retry")),
        "{sent:?}"
    );
}

#[test]
fn a_send_needing_more_records_than_the_cap_completes() {
    let (mut pair, _) = logged_in();
    let (mut bob, mut phone) = (Peer::new(BOB, 37), Peer::new(OWN_PHONE, 38));
    send_to_bob(&mut pair, &mut bob, &mut phone);
    // A restart with room for one record of each kind: the send needs two device lists and
    // two sessions, all in the store.
    let small = Config {
        max_loaded_records: 1,
        ..config()
    };
    let session = Session::new(pair.client.credentials().clone(), &small);
    let mut next = Pair::at_with_store(
        small,
        session,
        expect::seeds(9),
        pair.now,
        pair.store.clone(),
    );
    expect::log_in(&mut next);
    let id = next
        .client
        .send_text(next.now, &jid(BOB_USER), "tight")
        .unwrap();
    next.drive();
    let loads = next
        .events
        .iter()
        .filter(|e| matches!(e, Event::Load(_)))
        .count();
    assert!(
        loads <= 3,
        "{loads} loads: the records must not push each other out"
    );
    let msg = next.server.last("message").expect("relayed");
    assert_eq!(msg.attr_str("id"), Some(id.as_str()));
    let got = bob.decrypt(&jid(OWN), enc_for(msg, BOB)).unwrap();
    assert_eq!(got.conversation.as_deref(), Some("tight"));
}

#[test]
fn sends_cut_off_by_a_disconnect_go_at_the_next_login_with_the_same_id() {
    let (mut pair, _) = logged_in();
    let (mut bob, mut phone) = (Peer::new(BOB, 39), Peer::new(OWN_PHONE, 40));
    let (relayed, _) = send_to_bob(&mut pair, &mut bob, &mut phone);
    // A second send is cut off before it is relayed: a user Bob's server has not answered for.
    let waiting = pair
        .client
        .send_text(pair.now, &jid("15550000001@s.whatsapp.net"), "later")
        .unwrap();
    pair.drive();
    pair.socket_closed();
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::MessageAck { id, result: MessageAckResult::Disconnected } if *id == relayed
    )));
    assert!(
        !pair
            .events
            .iter()
            .any(|e| matches!(e, Event::SendFailed { id, .. } if *id == waiting)),
        "a send is not failed by a disconnect"
    );
    // The next connection of the same session.
    let mut next = pair.reconnect(config(), [12; 32]);
    let before = next.server.received.len();
    expect::log_in(&mut next);
    let again = next
        .server
        .received_since(before)
        .iter()
        .find(|n| n.tag == "message")
        .expect("sent again")
        .clone();
    assert_eq!(again.attr_str("id"), Some(relayed.as_str()));
    let got = bob.decrypt(&jid(OWN), enc_for(&again, BOB)).unwrap();
    assert_eq!(got.conversation.as_deref(), Some("hi"));
    // The cut-off send asks for its device list again.
    let usync = next
        .server
        .received_since(before)
        .iter()
        .rev()
        .find(|n| n.attr_str("xmlns") == Some("usync"))
        .expect("the device list is asked for")
        .clone();
    assert!(usync.to_string().contains("15550000001"));
}

#[test]
fn a_redelivered_prekey_message_after_both_sides_started_sessions_is_a_duplicate() {
    let (mut pair, bundle) = logged_in();
    let (mut bob, mut phone) = (Peer::new(BOB, 41), Peer::new(OWN_PHONE, 42));
    // We start a session with Bob (he has not read it yet) and he one with us.
    send_to_bob(&mut pair, &mut bob, &mut phone);
    let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "crossing");
    let stanza = incoming(&bob.jid, "X1", enc);
    pair.server_send(&stanza);
    assert_eq!(
        messages(&pair.events).last().unwrap().text(),
        Some("crossing")
    );
    // A crash before confirming; the server delivers the stanza again after the restart.
    let store = pair.store.clone();
    let mut session = Session::new(pair.client.credentials().clone(), &config());
    session.restore_pending(store.pending.clone());
    session.restore_outbox(store.unacked());
    let mut next = Pair::at_with_store(config(), session, expect::seeds(13), pair.now, store);
    expect::log_in(&mut next);
    next.server_send(&stanza);
    let undecryptable: Vec<_> = next
        .events
        .iter()
        .filter(|e| matches!(e, Event::Undecryptable(_)))
        .collect();
    assert!(undecryptable.is_empty(), "{undecryptable:?}");
}

#[test]
fn a_sender_key_for_another_group_is_not_taken() {
    let (mut pair, bundle) = logged_in();
    let mut bob = Peer::new(BOB, 43);
    let mut key = amarula_core::signal::SenderKeyRecord::new();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([5; 32]);
    let skdm = key.own_distribution_message(&mut rng);
    let other = "120363000000000077@g.us";
    // In group GROUP's stanza, Bob hands over a key naming another group.
    let planted = amarula_proto::e2e::Message {
        sender_key_distribution_message: Some(amarula_proto::e2e::SenderKeyDistributionMessage {
            group_id: Some(other.into()),
            axolotl_sender_key_distribution_message: Some(skdm.serialized().to_vec().into()),
        }),
        ..Default::default()
    };
    let pairwise = bob.encrypt(&jid(OWN), Some(&bundle), &planted.encode_to_vec());
    pair.server_send(
        &Node::new("message")
            .attr("from", jid(GROUP))
            .attr("participant", jid(BOB))
            .attr("id", "P1")
            .attr("t", "1700000000")
            .children([pairwise]),
    );
    // Then a message "in" the other group with that key: not decryptable.
    let text = amarula_proto::e2e::Message {
        conversation: Some("spoofed".into()),
        ..Default::default()
    };
    let sk = key
        .encrypt(&amarula_tests::peer::pad(&text.encode_to_vec()))
        .unwrap();
    pair.server_send(
        &Node::new("message")
            .attr("from", jid(other))
            .attr("participant", jid(BOB))
            .attr("id", "P2")
            .attr("t", "1700000000")
            .children([Node::new("enc")
                .attr("v", "2")
                .attr("type", "skmsg")
                .bytes(sk.serialized().to_vec())]),
    );
    assert!(
        messages(&pair.events)
            .iter()
            .all(|m| m.text() != Some("spoofed"))
    );
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::Undecryptable(u) if u.id == "P2"
            && u.error == DecryptError::Signal(SignalError::UnknownSenderKey { key_id: skdm.key_id })
    )));
}
