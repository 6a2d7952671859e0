//! The messaging fuzz target: an end-to-end logged-in machine fed random encrypted stanzas,
//! sends, IQ answers, notifications, retry receipts, confirmations and time.

use std::collections::BTreeSet;
use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{AckToken, Config, Confirm, Event};
use amarula_core::time::Instant;

use crate::expect::{self, result_for};
use crate::harness::Pair;

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
    let mut ops = Ops { data };
    let mut sent: BTreeSet<String> = BTreeSet::new();
    let mut n = 0;
    while !ops.data.is_empty() && n < 256 {
        n += 1;
        match ops.byte() % 9 {
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
            _ => {
                pair.step_until(Instant::from_origin(Duration::MAX));
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
}
