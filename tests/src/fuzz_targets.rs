//! Bodies of the codec fuzz targets. `cargo fuzz` runs them from `tests/fuzz/`, and the test
//! `fuzz_corpus` replays the checked-in corpus through them, so a crash found once stays fixed.

use amarula_core::binary::{self, DEFAULT_MAX_INFLATED};

/// Decodes arbitrary bytes as a node and as a frame. Must never panic; whatever decodes must
/// encode again, and that encoding must decode to the same node.
pub fn binary_decode(data: &[u8]) {
    let direct = binary::decode_owned(data);
    assert_eq!(
        direct.is_ok(),
        binary::decode(data).is_ok(),
        "the two decoders disagree on validity"
    );
    if let Ok(node) = binary::decode(data) {
        let owned = node.to_node();
        // The one-pass owned decoder and the borrowed view agree.
        assert_eq!(direct.as_ref().ok(), Some(&owned));
        // Iterate everything lazily held, to exercise the re-reading of attributes.
        for (k, v) in node.attrs.iter() {
            let _ = (k.as_str(), v.to_value());
        }
        let bytes = binary::to_vec(&owned).expect("a decoded node is always encodable");
        let again = binary::decode(&bytes)
            .expect("our own encoding always decodes")
            .to_node();
        // The wire has one form for some distinct nodes (empty text and an empty child list
        // are both `0x00`), so compare with what the wire can say of the node.
        let want = crate::binary_vectors::canonical_reading(&owned);
        assert!(
            crate::binary_vectors::same_node(&again, &want),
            "re-encoding changed the node: {want:?} vs {again:?}"
        );
        // And from there it is a fixpoint: encoding again gives the same bytes.
        assert_eq!(
            binary::to_vec(&again).ok(),
            Some(bytes),
            "encoding is not stable"
        );
    }
    // The frame path: flag byte, maybe zlib, with a small cap so bombs are cheap to refuse.
    let _ = binary::decode_frame(data, 1 << 20);
    let _ = binary::decode_frame(data, DEFAULT_MAX_INFLATED.min(1 << 16));
}

// ---- the machine target ----

use amarula_core::binary::Node;
use bytes::Bytes;

/// Settings of the machine fuzz target: small tables, so their bounds are reached.
const FUZZ_MAX_HELD_ACKS: usize = 8;
const FUZZ_RETRY_CACHE: usize = 4;

/// Reads the fuzz input front to back; past the end every read gives zeros.
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

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A length byte, then that many bytes (fewer at the end of the input).
    fn chunk(&mut self) -> &[u8] {
        let len = usize::from(self.byte()).min(self.data.len());
        let (chunk, rest) = self.data.split_at(len);
        self.data = rest;
        chunk
    }
}

/// What the machine fuzz target tracks of the client's requests.
#[derive(Default)]
struct Issued {
    iqs: Vec<amarula_core::machine::RequestId>,
    messages: Vec<String>,
    tokens: Vec<amarula_core::machine::AckToken>,
    confirmed: Vec<amarula_core::machine::AckToken>,
    events_seen: usize,
}

/// Drives a logged-in connection with operations read from arbitrary bytes. One byte picks
/// each operation (`op % 12`), and the bytes after it are its arguments:
///
/// - 0 `len bytes…`: the server sends an encrypted frame with this plaintext (flag + body);
/// - 1 `len bytes…`: raw bytes on the socket, outside the encryption;
/// - 2 `hi lo`: time advances by `(hi·256 + lo) · 10` ms;
/// - 3: time moves to the next deadline;
/// - 4 `t`: `send_iq` (timeout `t` s, the default when 0);
/// - 5 `to ctx`: `relay_message` of a new id;
/// - 6 `which how code`: `confirm` of a held token (or a made-up one) with ack, NACK or a
///   receipt;
/// - 7 `kind a b`: the server sends a stanza built from a template (IQ answer, message,
///   receipt, retry receipt, notification, server ack, ping, ib, failure, stream error, …);
/// - 8: the socket closes; 9: `close_locally`; 10: `send_node`;
/// - 11 `len bytes…`: the server sends a node decoded from these bytes, when they decode.
///
/// It must never panic, and at the end (after a local close): every issued IQ and every
/// relayed message got exactly one response, at most one close happened and it was the last
/// event, and the held-ack table and the sent-message cache stayed within their bounds.
pub fn machine(data: &[u8]) {
    use crate::expect;
    use crate::harness::Pair;
    use amarula_core::machine::{Config, Event};

    let config = Config {
        max_held_acks: FUZZ_MAX_HELD_ACKS,
        retry_cache_size: FUZZ_RETRY_CACHE,
        ..Pair::config()
    };
    let mut pair = expect::logged_in(config, expect::seeds(1));
    let mut ops = Ops { data };
    let mut issued = Issued::default();
    let mut n = 0u32;
    while !ops.data.is_empty() && n < 512 {
        n += 1;
        machine_op(&mut pair, &mut ops, &mut issued);
        note_tokens(&pair.events, &mut issued);
        assert!(expect::close_count(&pair.events) <= 1, "closed twice");
        // Memory stays bounded after every operation: each table within its cap, no output
        // left queued (the harness drains), less than one frame of input buffered.
        let stats = pair.client.stats();
        assert!(stats.held_acks <= FUZZ_MAX_HELD_ACKS, "{stats:?}");
        assert!(stats.cached_messages <= FUZZ_RETRY_CACHE, "{stats:?}");
        assert!(
            stats.pending_iqs <= Pair::config().max_pending_iqs,
            "{stats:?}"
        );
        assert!(
            stats.pending_messages <= Pair::config().max_pending_iqs,
            "{stats:?}"
        );
        assert_eq!(stats.queued_outputs, 0, "{stats:?}");
        assert!(stats.buffered_input < 1 << 24, "{stats:?}");
    }
    // The held-ack table is bounded: of the tokens never confirmed, at most the cap still
    // confirm.
    let open: Vec<_> = issued
        .tokens
        .iter()
        .filter(|t| !issued.confirmed.contains(t))
        .copied()
        .collect();
    let still_held = open
        .iter()
        .filter(|t| {
            pair.confirm(**t, amarula_core::machine::Confirm::Ack)
                .is_ok()
        })
        .count();
    assert!(still_held <= FUZZ_MAX_HELD_ACKS, "{still_held} acks held");
    // The sent-message cache is bounded: ask for every relayed id from a fresh device.
    if pair.client.is_logged_in() && pair.server.is_open() {
        let seen = pair.events.len();
        let device = amarula_core::jid::Jid::user("19990000000").with_device(9);
        for id in &issued.messages {
            pair.server_send(&retry_receipt(id, &device));
        }
        let answered = pair
            .events_since(seen)
            .iter()
            .filter(|e| matches!(e, Event::RetryRequested(_)))
            .count();
        assert!(answered <= FUZZ_RETRY_CACHE, "{answered} messages cached");
    }
    pair.close_locally();
    assert!(pair.client.is_closed());
    assert_eq!(expect::close_count(&pair.events), 1);
    assert!(matches!(pair.events.last(), Some(Event::Closed { .. })));
    assert_eq!(pair.client.poll_timeout(), None);
    expect::assert_iq_exactly_once(&issued.iqs, &pair.events);
    let relayed: Vec<&str> = issued.messages.iter().map(String::as_str).collect();
    expect::assert_message_ack_exactly_once(&relayed, &pair.events);
}

fn note_tokens(events: &[amarula_core::machine::Event], issued: &mut Issued) {
    for e in &events[issued.events_seen..] {
        if let amarula_core::machine::Event::Stanza { ack: Some(t), .. } = e {
            issued.tokens.push(*t);
        }
    }
    issued.events_seen = events.len();
}

fn retry_receipt(id: &str, from: &amarula_core::jid::Jid) -> Node {
    Node::new("receipt")
        .attr("id", id.to_owned())
        .attr("from", from.clone())
        .attr("type", "retry")
        .children([
            Node::new("retry")
                .attr("count", "1")
                .attr("id", id.to_owned())
                .attr("v", "1"),
            Node::new("registration").bytes(vec![0, 0, 0, 1]),
        ])
}

fn machine_op(pair: &mut crate::harness::Pair, ops: &mut Ops<'_>, issued: &mut Issued) {
    use amarula_core::jid::Jid;
    use amarula_core::machine::{AckToken, Confirm, IqRequest};
    use amarula_core::time::Instant;
    use std::time::Duration;

    match ops.byte() % 12 {
        0 => {
            let plain = ops.chunk().to_vec();
            if pair.server.is_open() {
                pair.server.send_plaintext(&plain);
                pair.drive();
            }
        }
        1 => {
            let raw = ops.chunk().to_vec();
            pair.server.send_raw(&raw);
            pair.drive();
        }
        2 => {
            let steps = u64::from(ops.u16());
            pair.advance(Duration::from_millis(steps * 10));
        }
        3 => {
            pair.step_until(Instant::from_origin(Duration::MAX));
        }
        4 => {
            let t = ops.byte();
            let mut req = IqRequest::iq("w", "get", Jid::server(), vec![Node::new("q")]);
            if t != 0 {
                req = req.with_timeout(Duration::from_secs(u64::from(t)));
            }
            if let Ok(id) = pair.client.send_iq(pair.now, req) {
                issued.iqs.push(id);
            }
            pair.drive();
        }
        5 => {
            let (to, ctx) = (ops.byte(), ops.byte());
            let id = format!("FZ{}", issued.messages.len());
            let to = if to % 2 == 0 {
                Jid::user(format!("1555000{}", to % 8))
            } else {
                Jid::group("120363000000000001")
            };
            let node = Node::new("message")
                .attr("id", id.clone())
                .attr("to", to)
                .attr("type", "text");
            if pair
                .client
                .relay_message(pair.now, node, Bytes::from(vec![ctx; 3]))
                .is_ok()
            {
                issued.messages.push(id);
            }
            pair.drive();
        }
        6 => {
            let (which, how, code) = (ops.byte(), ops.byte(), ops.byte());
            let token = if issued.tokens.is_empty() || which == 255 {
                AckToken::from_raw(u64::from(which) << 8 | u64::from(code))
            } else {
                issued.tokens[usize::from(which) % issued.tokens.len()]
            };
            let how = match how % 3 {
                0 => Confirm::Ack,
                1 => Confirm::Nack(400 + u16::from(code)),
                _ => Confirm::Replace(
                    Node::new("receipt")
                        .attr("id", "x")
                        .attr("to", Jid::user("1")),
                ),
            };
            if pair.client.confirm(pair.now, token, how).is_ok() {
                issued.confirmed.push(token);
            }
            pair.drive();
        }
        7 => {
            let (kind, a, b) = (ops.byte(), ops.byte(), ops.byte());
            if let Some(node) = template(pair, issued, kind, a, b) {
                if pair.server.is_open() {
                    pair.server_send(&node);
                }
            }
        }
        8 => pair.socket_closed(),
        9 => pair.close_locally(),
        10 => {
            // Receipts, presence, chat state and the push name: each may be refused, never
            // panics.
            use amarula_core::machine::{ChatState, Presence};
            let (what, a) = (ops.byte(), ops.byte());
            let chat = if a % 2 == 0 {
                Jid::user(format!("1555000{}", a % 8)).with_device(u16::from(a % 3))
            } else {
                Jid::group("120363000000000001")
            };
            let ids: Vec<String> = (0..usize::from(a % 5)).map(|i| format!("R{i}")).collect();
            let author = (a % 3 != 0).then(|| Jid::user("1666"));
            let now = pair.now;
            let c = &mut pair.client;
            let _ = match what % 8 {
                0 => c.send_node(now, &Node::new("presence").attr("type", "available")),
                1 => c.mark_read(now, &chat, &ids, author.as_ref()),
                2 => c.mark_played(now, &chat, &ids, author.as_ref()),
                3 => c.set_push_name(now, if a % 4 == 0 { "@" } else { "Fuzz" }),
                4 => c.set_presence(
                    now,
                    if a % 2 == 0 {
                        Presence::Available
                    } else {
                        Presence::Unavailable
                    },
                ),
                5 => c.presence_subscribe(now, &chat),
                6 => c.send_chatstate(
                    now,
                    &chat,
                    [
                        ChatState::Composing,
                        ChatState::Recording,
                        ChatState::Paused,
                    ][usize::from(a % 3)],
                ),
                _ => c.send_node(now, &Node::new("chatstate").attr("to", chat)),
            };
            pair.drive();
        }
        _ => {
            let bytes = ops.chunk().to_vec();
            if let Ok(node) = binary::decode_owned(&bytes) {
                if binary::to_vec(&node).is_ok() && pair.server.is_open() {
                    pair.server_send(&node);
                }
            }
        }
    }
}

/// A server stanza of kind `kind`, shaped by `a` and `b`.
fn template(pair: &crate::harness::Pair, issued: &Issued, kind: u8, a: u8, b: u8) -> Option<Node> {
    use amarula_core::jid::Jid;

    let peer = Jid::user(format!("1666000{}", a % 4)).with_device(u16::from(b % 3));
    let relayed = |i: u8| -> String {
        if issued.messages.is_empty() {
            format!("FZ{i}")
        } else {
            issued.messages[usize::from(i) % issued.messages.len()].clone()
        }
    };
    let node = match kind % 14 {
        // The answer to one of the IQs the client sent.
        0 | 1 => {
            let iqs: Vec<&Node> = pair
                .server
                .received
                .iter()
                .filter(|n| n.tag == "iq" && n.attr_str("type") != Some("result"))
                .collect();
            let iq = iqs.get(usize::from(a) % iqs.len().max(1))?;
            let reply = Node::new("iq")
                .attr("id", iq.attr_str("id")?.to_owned())
                .attr("from", Jid::server());
            if b % 2 == 0 {
                reply.attr("type", "result")
            } else {
                reply.attr("type", "error").children([Node::new("error")
                    .attr("code", (400 + u16::from(b)).to_string())
                    .attr("text", "fuzz")])
            }
        }
        2 => Node::new("message")
            .attr("id", format!("IN{a}"))
            .attr("from", peer)
            .attr("type", "text")
            .children([Node::new("enc").bytes(vec![b; 4])]),
        3 => {
            let n = Node::new("receipt")
                .attr("id", relayed(a))
                .attr("from", peer.clone());
            match b % 8 {
                0 => n,
                1 => n.attr("type", "read").children([Node::new("list")
                    .children([Node::new("item").attr("id", relayed(a.wrapping_add(1)))])]),
                2 => n
                    .attr("type", "played-self")
                    .attr("recipient", Jid::user("1888")),
                3 => Node::new("receipt")
                    .attr("id", relayed(a))
                    .attr("from", Jid::group("120363000000000001"))
                    .children([Node::new("participants")
                        .attr("key", relayed(a))
                        .children([Node::new("user").attr("jid", peer).attr("t", "x")])]),
                4 => Node::new("presence")
                    .attr("from", peer)
                    .attr("type", "unavailable")
                    .attr("last", a.to_string()),
                5 => Node::new("presence").attr("from", peer),
                6 => Node::new("chatstate")
                    .attr("from", peer)
                    .children([Node::new(if a % 2 == 0 { "composing" } else { "paused" })]),
                _ => Node::new("chatstate").attr("to", peer),
            }
        }
        4 => {
            let mut r = retry_receipt(&relayed(a), &peer);
            if b % 3 == 0 {
                r = r.attr("participant", Jid::user("1777").with_device(1));
            }
            r
        }
        5 => Node::new("notification")
            .attr("id", format!("N{a}"))
            .attr("from", Jid::server())
            .attr("type", if b % 2 == 0 { "encrypt" } else { "devices" })
            .children([Node::new(if b % 4 == 0 { "identity" } else { "count" })]),
        6 => {
            let ack = Node::new("ack")
                .attr("class", "message")
                .attr("id", relayed(a))
                .attr("from", peer)
                .attr("t", "1750000000");
            if b % 4 == 0 {
                ack.attr("error", (460 + u16::from(b % 30)).to_string())
            } else {
                ack
            }
        }
        7 => Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "get")
            .attr("xmlns", "urn:xmpp:ping")
            .attr("id", format!("P{a}")),
        8 => Node::new("call")
            .attr("id", format!("C{a}"))
            .attr("from", peer)
            .children([Node::new("offer")]),
        9 => match b % 4 {
            0 => Node::new("ib").children([Node::new("offline").attr("count", a.to_string())]),
            1 => Node::new("ib")
                .children([Node::new("edge_routing")
                    .children([Node::new("routing_info").bytes(vec![a; 3])])]),
            2 => Node::new("ib").children([Node::new("dirty").attr("type", "groups")]),
            _ => Node::new("ib").children([Node::new("downgrade_webclient")]),
        },
        10 => Node::new("failure").attr("reason", (400 + u16::from(a)).to_string()),
        11 => {
            let n = Node::new("stream:error").attr("code", (400 + u16::from(a)).to_string());
            if b % 2 == 0 {
                n
            } else {
                n.children([Node::new("conflict").attr("type", "replaced")])
            }
        }
        12 => Node::new("success").attr("t", "1750000000"),
        _ => Node::new("xmlstreamend"),
    };
    Some(node)
}
