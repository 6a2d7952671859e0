//! The messaging fuzz target: an end-to-end logged-in machine fed random encrypted stanzas,
//! properly encrypted messages of every kind (and of arbitrary plaintext) from a peer with a
//! session, sends of every kind, IQ answers, notifications, retry receipts, confirmations and
//! time.

use std::collections::BTreeSet;
use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::content::build::{self, MessageRef, Quote, Text};
use amarula_core::content::{Contact, Location};
use amarula_core::jid::Jid;
use amarula_core::machine::{AckToken, Config, Confirm, Event};
use amarula_core::signal::{Identity, PreKeyBundle, PublicKey};
use amarula_core::time::Instant;
use amarula_proto::common::MessageKey;
use amarula_proto::e2e::{self, Message};
use prost::Message as _;

use crate::expect::{self, result_for};
use crate::harness::Pair;
use crate::peer::Peer;

/// Caps small enough for the fuzzer to reach.
const FUZZ_RECORDS: usize = 8;
const FUZZ_SENDS: usize = 6;
const FUZZ_PARKED: usize = 6;

struct Ops<'a> {
    data: &'a [u8],
}

impl Ops<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn chunk(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte() % 96).min(self.data.len());
        let (c, rest) = self.data.split_at(n);
        self.data = rest;
        c.to_vec()
    }

    /// A short string: one of a few meaningful ones (JIDs, ids, option names), or bytes.
    fn text(&mut self) -> String {
        match self.byte() % 8 {
            0 => String::new(),
            1 => "1777000@s.whatsapp.net".to_owned(),
            2 => group().to_string(),
            3 => "FM1".to_owned(),
            4 => "a".to_owned(),
            5 => "b".to_owned(),
            _ => String::from_utf8_lossy(&self.chunk()).into_owned(),
        }
    }

    fn opt_text(&mut self) -> Option<String> {
        (self.byte() & 1 == 0).then(|| self.text())
    }

    fn key(&mut self) -> MessageKey {
        MessageKey {
            remote_jid: self.opt_text(),
            from_me: (self.byte() & 1 == 0).then(|| self.byte() & 1 == 0),
            id: self.opt_text(),
            participant: self.opt_text(),
        }
    }
}

/// A plaintext of one of the kinds of MESSAGES.md §4, its fields drawn from `ops`: reactions,
/// polls and votes, edits and revokes (nested), replies, contacts, locations, wrappers, a
/// message secret of any length, and arbitrary bytes.
fn plaintext(ops: &mut Ops<'_>, depth: u8) -> Vec<u8> {
    let kind = ops.byte();
    let mut m = Message::default();
    match kind % 12 {
        0 => {
            m.reaction_message = Some(
                build::reaction(ops.key(), &ops.text(), 1)
                    .reaction_message
                    .unwrap_or_default(),
            )
        }
        1 => {
            m.poll_creation_message = Some(Box::new(e2e::PollCreationMessage {
                name: ops.opt_text(),
                options: (0..ops.byte() % 4)
                    .map(|_| e2e::poll_creation_message::Option {
                        option_name: ops.opt_text(),
                        option_hash: None,
                    })
                    .collect(),
                selectable_options_count: Some(u32::from(ops.byte())),
                ..e2e::PollCreationMessage::default()
            }));
        }
        2 => {
            m.poll_update_message = Some(e2e::PollUpdateMessage {
                poll_creation_message_key: Some(ops.key()),
                vote: Some(e2e::PollEncValue {
                    enc_payload: Some(ops.chunk().into()),
                    enc_iv: Some(ops.chunk().into()),
                }),
                metadata: None,
                sender_timestamp_ms: Some(i64::from(ops.byte())),
            });
        }
        3 if depth < 3 => {
            let inner = Message::decode(plaintext(ops, depth + 1).as_slice()).unwrap_or_default();
            m = build::edit(ops.key(), inner, 1);
            if ops.byte() & 1 == 0 {
                // The bare shape (Baileys, WA Web).
                m = m
                    .edited_message
                    .and_then(|w| w.message)
                    .map(|b| *b)
                    .unwrap_or_default();
            }
        }
        4 => m = build::revoke(ops.key()),
        5 if depth < 3 => {
            let quoted = Message::decode(plaintext(ops, depth + 1).as_slice()).unwrap_or_default();
            let chat = Jid::user("1777000");
            let target = MessageRef::theirs(chat.clone(), ops.text(), chat.clone());
            m = Text::new(ops.text())
                .reply_to(Quote::new(target, quoted))
                .mention(Jid::user("1777001"))
                .to_message(&chat, &chat);
        }
        6 => m = build::contact(&Contact::new(ops.text(), ops.text())),
        7 => {
            let cards: Vec<Contact> = (0..ops.byte() % 3)
                .map(|_| Contact::new(ops.text(), ops.text()))
                .collect();
            m = build::contacts(&ops.text(), &cards);
        }
        8 => {
            let mut l = Location::new(f64::from(ops.byte()) - 90.0, f64::from(ops.byte()));
            l.name = ops.opt_text();
            m = build::location(&l);
        }
        9 if depth < 3 => {
            // Wrapped in one of the wrappers.
            let inner = Message::decode(plaintext(ops, depth + 1).as_slice()).unwrap_or_default();
            let w = Some(Box::new(e2e::FutureProofMessage {
                message: Some(Box::new(inner)),
            }));
            match ops.byte() % 4 {
                0 => m.ephemeral_message = w,
                1 => m.view_once_message_v2 = w,
                2 => m.edited_message = w,
                _ => m.document_with_caption_message = w,
            }
        }
        10 => {
            m.protocol_message = Some(Box::new(e2e::ProtocolMessage {
                key: Some(ops.key()),
                r#type: Some(i32::from(ops.byte() % 32)),
                ephemeral_expiration: Some(u32::from(ops.byte())),
                ..e2e::ProtocolMessage::default()
            }));
        }
        _ => return ops.chunk(),
    }
    if kind & 0x80 != 0 {
        // A message secret of any length: a poll's, or garbage.
        m.message_context_info = Some(e2e::MessageContextInfo {
            message_secret: Some(ops.chunk().into()),
            ..e2e::MessageContextInfo::default()
        });
    }
    m.encode_to_vec()
}

/// The bundle another device would fetch for the machine: its identity and signed prekey, no
/// one-time prekey (so a peer needs no upload to start a session).
fn own_bundle(pair: &Pair) -> PreKeyBundle {
    let creds = pair.client.credentials();
    let spk = &creds.signed_prekey;
    PreKeyBundle {
        registration_id: creds.registration_id,
        identity_key: Identity::from_credentials(creds).public(),
        signed_prekey_id: spk.id,
        signed_prekey: PublicKey::from_bytes_lenient(spk.key_pair.public_bytes(), "spk")
            .expect("the machine's own signed prekey is a valid key"),
        signed_prekey_signature: spk.signature,
        prekey: None,
    }
}

/// Peers with a session with the machine: another user, and another device of our own
/// account (whose messages are wrapped in `deviceSentMessage`).
struct Peers {
    bundle: PreKeyBundle,
    own: Jid,
    peers: Vec<Peer>,
    /// Messages sent so far (their ids differ; replays come from the random stanzas).
    sent: usize,
}

impl Peers {
    fn new(pair: &Pair) -> Self {
        let own = pair
            .client
            .credentials()
            .device
            .as_ref()
            .map(|d| d.jid.clone())
            .expect("a logged-in machine is paired");
        let own_other = Jid::user(own.user_part()).with_device(3).to_string();
        Self {
            bundle: own_bundle(pair),
            own,
            peers: vec![
                Peer::new("17770009:0@s.whatsapp.net", 77),
                Peer::new(&own_other, 78),
            ],
            sent: 0,
        }
    }

    /// A `<message>` from peer `which` (0: another user, 1: our own other device) carrying
    /// `plaintext`, properly encrypted.
    fn message(&mut self, which: u8, plaintext: &[u8]) -> Node {
        let which = usize::from(which % 2);
        self.sent += 1;
        let peer = &mut self.peers[which];
        let body = if which == 1 {
            // Our own other device: the content goes in `deviceSentMessage`.
            let inner = Message::decode(plaintext).unwrap_or_default();
            Message {
                device_sent_message: Some(Box::new(e2e::DeviceSentMessage {
                    destination_jid: Some("1777000@s.whatsapp.net".to_owned()),
                    message: Some(Box::new(inner)),
                    phash: None,
                })),
                ..Message::default()
            }
            .encode_to_vec()
        } else {
            plaintext.to_vec()
        };
        // The first message starts the session (a `pkmsg` without a one-time prekey).
        let started = peer
            .sessions
            .get(&self.own)
            .is_some_and(amarula_core::signal::SessionRecord::has_session);
        let bundle = (!started).then_some(&self.bundle);
        let enc = peer.encrypt(&self.own, bundle, &body);
        Node::new("message")
            .attr("from", peer.jid.clone())
            .attr("id", format!("FK{}", self.sent))
            .attr("t", "1700000000")
            .attr("type", "text")
            .children([enc])
    }
}

/// Targets the fuzzer's sends refer to: the messages received so far, and made-up ones.
fn target(pair: &Pair, ops: &mut Ops<'_>) -> MessageRef {
    let received: Vec<MessageRef> = pair
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.reference()),
            _ => None,
        })
        .collect();
    match received.get(usize::from(ops.byte()) % (received.len() + 2)) {
        Some(r) => r.clone(),
        None if ops.byte() & 1 == 0 => MessageRef::ours(Jid::user("1777001"), ops.text()),
        None => MessageRef::theirs(group(), ops.text(), Jid::user("1777002")),
    }
}

/// A send of one of the kinds, through the machine's commands.
fn send_kind(pair: &mut Pair, ops: &mut Ops<'_>) -> Option<String> {
    let to = match ops.byte() % 3 {
        0 => group(),
        k => Jid::user(format!("1777000{k}")),
    };
    let now = pair.now;
    let target = target(pair, ops);
    let c = &mut pair.client;
    let sent = match ops.byte() % 9 {
        0 => c.send_reaction(now, &target, &ops.text()),
        1 => c.send_edit(
            now,
            &target,
            Message::decode(plaintext(ops, 2).as_slice()).unwrap_or_default(),
        ),
        2 => c.send_revoke(now, &target),
        3 => {
            let options: Vec<String> = (0..ops.byte() % 4).map(|_| ops.text()).collect();
            c.send_poll(now, &to, &ops.text(), &options, u32::from(ops.byte() % 4))
                .map(|p| p.id)
        }
        4 => {
            let selected: Vec<String> = (0..ops.byte() % 3).map(|_| ops.text()).collect();
            c.send_poll_vote(now, &target, &selected)
        }
        5 => c.send_reply(
            now,
            &to,
            &ops.text(),
            Quote::new(target, Message::default()),
        ),
        6 => c.send_contact(now, &to, &Contact::new(ops.text(), ops.text())),
        7 => c.send_location(now, &to, &Location::new(1.0, 2.0)),
        _ => c.send_message(
            now,
            &to,
            Message::decode(plaintext(ops, 0).as_slice()).unwrap_or_default(),
        ),
    };
    pair.drive();
    sent.ok()
}

fn peer(n: u8) -> Jid {
    Jid::user(format!("1777000{}", n % 3)).with_device(u16::from(n / 3 % 3))
}

fn group() -> Jid {
    Jid::group("120363000000000009")
}

/// An encrypted-message stanza with one to three `<enc>`s of random type and bytes.
fn message(ops: &mut Ops<'_>) -> Node {
    let shape = ops.byte();
    let sender = peer(ops.byte());
    let mut node = Node::new("message")
        .attr("id", format!("FM{}", ops.byte() % 16))
        .attr("t", "1700000000")
        .attr("type", "text");
    node = if shape & 1 == 0 {
        node.attr("from", sender)
    } else {
        node.attr("from", group()).attr("participant", sender)
    };
    let encs: Vec<Node> = (0..=(shape >> 1) % 3)
        .map(|_| {
            let kind = ["pkmsg", "msg", "skmsg", "msmsg"][usize::from(ops.byte() % 4)];
            let mut bytes = ops.chunk();
            // Mostly well-versioned, so parsing goes deeper.
            if let Some(b) = bytes.first_mut() {
                if *b & 1 == 0 {
                    *b = 0x33;
                }
            }
            Node::new("enc")
                .attr("v", if shape & 0x40 == 0 { "2" } else { "3" })
                .attr("type", kind)
                .bytes(bytes)
        })
        .collect();
    node.children(encs)
}

/// An answer to the last IQ the client sent: shaped after what it asked, bent by `how`.
fn answer(pair: &Pair, ops: &mut Ops<'_>) -> Option<Node> {
    let iq = pair.server.received.iter().rev().find(|n| n.tag == "iq")?;
    let how = ops.byte();
    let base = result_for(iq);
    Some(match (iq.attr_str("xmlns"), how % 4) {
        (_, 0) => Node::new("iq")
            .attr("id", iq.attr_str("id").unwrap_or_default().to_owned())
            .attr("type", "error")
            .attr("from", Jid::server())
            .children([Node::new("error").attr("code", "500").attr("text", "x")]),
        (Some("usync"), _) => {
            let users: Vec<Node> = (0..how % 4)
                .map(|i| {
                    let devices: Vec<Node> = (0..ops.byte() % 4)
                        .map(|d| {
                            Node::new("device")
                                .attr("id", d.to_string())
                                .attr("key-index", "1")
                        })
                        .collect();
                    Node::new("user")
                        .attr("jid", Jid::user(format!("1777000{i}")))
                        .children([Node::new("devices")
                            .children([Node::new("device-list").children(devices)])])
                })
                .collect();
            base.children([Node::new("usync").children([Node::new("list").children(users)])])
        }
        (Some("encrypt"), 1) => {
            base.children([Node::new("count").attr("value", (how / 4).to_string())])
        }
        (Some("encrypt"), _) => {
            let user = Node::new("user").attr("jid", peer(how)).children([
                Node::new("registration").bytes(ops.chunk()),
                Node::new("identity").bytes(ops.chunk()),
                Node::new("skey").children([
                    Node::new("id").bytes(ops.chunk()),
                    Node::new("value").bytes(ops.chunk()),
                    Node::new("signature").bytes(ops.chunk()),
                ]),
            ]);
            base.children([Node::new("list").children([user])])
        }
        (Some("w:g2"), _) => base.children([Node::new("group").children(
            (0..how % 4)
                .map(|i| Node::new("participant").attr("jid", Jid::user(format!("1777000{i}"))))
                .collect::<Vec<_>>(),
        )]),
        _ => base,
    })
}

/// Drives an end-to-end machine with operations read from `data`. It must never panic, every
/// table stays within its cap after every operation, and at the end every send got exactly
/// one outcome (a server ack result, or a failure).
pub fn messaging(data: &[u8]) {
    messaging_contents(data);
}

/// [`messaging`], returning the contents of the messages handed out (for tests that check
/// the input got that far).
pub fn messaging_contents(data: &[u8]) -> Vec<amarula_core::content::Content> {
    let config = Config {
        end_to_end: true,
        prekey_upload_count: 3,
        prekey_refill_count: 2,
        max_loaded_records: FUZZ_RECORDS,
        max_pending_sends: FUZZ_SENDS,
        max_parked_messages: FUZZ_PARKED,
        ..Pair::config()
    };
    let mut pair = expect::logged_in(config, expect::seeds(4));
    let mut peers = Peers::new(&pair);
    let mut ops = Ops { data };
    let mut sent: BTreeSet<String> = BTreeSet::new();
    let mut n = 0;
    while !ops.data.is_empty() && n < 256 {
        n += 1;
        match ops.byte() % 11 {
            0 | 1 => {
                let node = message(&mut ops);
                if pair.server.is_open() {
                    pair.server_send(&node);
                }
            }
            2 => {
                let to = match ops.byte() % 3 {
                    0 => group(),
                    k => Jid::user(format!("1777000{k}")),
                };
                if let Ok(id) = pair.client.send_text(pair.now, &to, "fuzz") {
                    sent.insert(id);
                }
                pair.drive();
            }
            3 => {
                if let Some(node) = answer(&pair, &mut ops) {
                    if pair.server.is_open() {
                        pair.server_send(&node);
                    }
                }
            }
            4 => {
                let kind = ["devices", "w:gp2", "encrypt"][usize::from(ops.byte() % 3)];
                let from = if kind == "w:gp2" {
                    group()
                } else {
                    peer(ops.byte())
                };
                let node = Node::new("notification")
                    .attr("id", "N")
                    .attr("type", kind)
                    .attr("from", from)
                    .children([Node::new("identity")]);
                if pair.server.is_open() {
                    pair.server_send(&node);
                }
            }
            5 => {
                let id = sent
                    .iter()
                    .nth(usize::from(ops.byte()) % sent.len().max(1))
                    .cloned();
                let keys = ops.chunk();
                if let (Some(id), true) = (id, pair.server.is_open()) {
                    pair.server_send(
                        &Node::new("receipt")
                            .attr("id", id.as_str())
                            .attr("from", peer(ops.byte()))
                            .attr("type", "retry")
                            .children([
                                Node::new("retry")
                                    .attr("count", "2")
                                    .attr("id", id.as_str()),
                                Node::new("registration").bytes(vec![0, 0, 1, 2]),
                                Node::new("keys").children([Node::new("identity").bytes(keys)]),
                            ]),
                    );
                }
            }
            6 => {
                let tokens: Vec<AckToken> = pair
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Message(m) => m.ack,
                        _ => None,
                    })
                    .collect();
                if let Some(t) = tokens.get(usize::from(ops.byte()) % tokens.len().max(1)) {
                    let _ = pair.client.confirm(pair.now, *t, Confirm::Ack);
                    pair.drive();
                }
            }
            7 => pair.advance(Duration::from_millis(u64::from(ops.byte()) * 500)),
            8 => {
                pair.step_until(Instant::from_origin(Duration::MAX));
            }
            9 => {
                let which = ops.byte();
                let plain = plaintext(&mut ops, 0);
                let node = peers.message(which, &plain);
                if pair.server.is_open() {
                    pair.server_send(&node);
                }
            }
            _ => {
                if let Some(id) = send_kind(&mut pair, &mut ops) {
                    sent.insert(id);
                }
            }
        }
        let stats = pair.client.stats();
        assert!(stats.loaded_records <= 4 * FUZZ_RECORDS, "{stats:?}");
        assert!(
            stats.waiting_messages <= FUZZ_SENDS + FUZZ_PARKED,
            "{stats:?}"
        );
        assert_eq!(stats.queued_outputs, 0, "{stats:?}");
    }
    pair.close_locally();
    assert!(pair.client.is_closed());
    // Sends the connection ended before they were relayed wait for the next login.
    let carried = pair.client.stats().waiting_messages;
    for id in &sent {
        let outcomes = pair
            .events
            .iter()
            .filter(|e| match e {
                Event::SendFailed { id: i, .. } => i == id,
                Event::MessageAck { id: i, .. } => i == id,
                _ => false,
            })
            .count();
        assert!(outcomes >= 1 || carried > 0, "send {id} never ended");
    }
    pair.events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.content.clone()),
            _ => None,
        })
        .collect()
}
