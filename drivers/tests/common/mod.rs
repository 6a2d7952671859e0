//! A minimal WhatsApp server for the loopback tests: the Noise responder handshake with a test
//! certificate chain, `<success>`, a result for every IQ (echoing its children) and an ack for
//! every message. Generic over the WebSocket, so both runtimes use it.

#![allow(dead_code, reason = "each test file uses a part")]

use std::time::Duration;

use amarula::core::binary::{self, Node};
use amarula::core::credentials::{Credentials, DeviceIdentity};
use amarula::core::frame::FrameDecoder;
use amarula::core::jid::Jid;
use amarula::core::machine::Config;
use amarula::core::noise::{CertDetails, KeyPair, NoiseHandshake, NoiseTransport, TrustAnchor};
use amarula::{ClientConfig, ClientEvent};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// How long a test waits for any one thing.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// A test certificate chain and the anchor that accepts it.
#[derive(Clone)]
pub(crate) struct Pki {
    pub(crate) trust: TrustAnchor,
    pub(crate) server_static: KeyPair,
    pub(crate) chain: Vec<u8>,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let key = |n: u8| KeyPair::from_private_bytes([40 + n; 32]);
        let (root, inter, server_static) = (key(1), key(2), key(3));
        let details = |serial, issuer_serial, key: &KeyPair| CertDetails {
            serial,
            issuer_serial,
            key: *key.public_bytes(),
            // 2020 to 2040.
            not_before: 1_577_836_800,
            not_after: 2_208_988_800,
        };
        let chain = CertDetails::sign_chain(
            &root.private_bytes(),
            &details(7, 0, &inter),
            &inter.private_bytes(),
            &details(8, 7, &server_static),
        );
        Self {
            trust: TrustAnchor::new(*root.public_bytes(), 0),
            server_static,
            chain,
        }
    }
}

/// Credentials of a paired device (the server only sends `<success>` to those).
pub(crate) fn paired_credentials() -> Credentials {
    let mut creds = Credentials::generate(&mut ChaCha20Rng::from_seed([9; 32]));
    creds.device = Some(DeviceIdentity {
        jid: "15551234567:7@s.whatsapp.net".parse().expect("valid"),
        lid: None,
        account: Bytes::from_static(b"account"),
        platform: "android".into(),
        business_name: None,
    });
    creds
}

/// A client config for the server at `addr`.
pub(crate) fn client_config(addr: std::net::SocketAddr, pki: &Pki) -> ClientConfig {
    ClientConfig {
        url: format!("ws://{addr}/ws/chat"),
        machine: Config {
            trust: pki.trust,
            ..Config::default()
        },
        ..ClientConfig::default()
    }
}

fn seal(transport: &mut NoiseTransport, node: &Node) -> Message {
    let mut plain = Vec::new();
    binary::encode_frame(node, &mut plain).expect("test nodes encode");
    Message::Binary(transport.encrypt_frame(&plain).expect("encrypt").into())
}

/// `<success>` as the server sends it at login.
pub(crate) fn success() -> Node {
    Node::new("success")
        .attr("t", "1750000000")
        .attr("lid", "123456789012345@lid".parse::<Jid>().expect("valid"))
}

/// Serves one connection with [`success`] until the client goes away.
pub(crate) async fn serve<W>(ws: W, pki: Pki)
where
    W: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    serve_with(ws, pki, success()).await;
}

/// Serves one connection, answering the handshake with `login`, until the client goes away.
pub(crate) async fn serve_with<W>(mut ws: W, pki: Pki, login: Node)
where
    W: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let mut frames = FrameDecoder::expecting_intro();
    let mut responder = Some(NoiseHandshake::responder(
        pki.server_static.clone(),
        &mut ChaCha20Rng::from_seed([5; 32]),
        pki.chain.clone(),
    ));
    let mut finish = None;
    let mut transport: Option<NoiseTransport> = None;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        frames.push(&bytes);
        while let Ok(Some(frame)) = frames.next_frame() {
            let mut replies = Vec::new();
            if let Some(r) = responder.take() {
                let (wire, next) = r.read_client_hello(&frame).expect("client hello");
                replies.push(Message::Binary(wire.into()));
                finish = Some(next);
            } else if let Some(f) = finish.take() {
                let done = f.read_client_finish(&frame).expect("client finish");
                let mut t = done.transport;
                replies.push(seal(&mut t, &login));
                transport = Some(t);
            } else if let Some(t) = transport.as_mut() {
                let body = t.decrypt_node(frame).expect("client frame");
                let node = binary::decode_owned(&body).expect("client node");
                if let Some(reply) = answer(&node) {
                    replies.push(seal(t, &reply));
                }
            }
            for reply in replies {
                if ws.send(reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The server's answer to a client stanza.
fn answer(node: &Node) -> Option<Node> {
    let id = node.attr_str("id")?.to_owned();
    match &*node.tag {
        "iq" => {
            let mut children = vec![Node::new("served")];
            children.extend(node.child_nodes().iter().cloned());
            Some(
                Node::new("iq")
                    .attr("id", id)
                    .attr("type", "result")
                    .attr("from", Jid::server())
                    .children(children),
            )
        }
        "message" => Some(
            Node::new("ack")
                .attr("id", id)
                .attr("class", "message")
                .attr("t", "1750000001"),
        ),
        _ => None,
    }
}

/// Whether `event` is the machine's `LoggedIn`.
pub(crate) fn is_logged_in(event: &ClientEvent) -> bool {
    matches!(
        event,
        ClientEvent::Event(amarula::core::machine::Event::LoggedIn { .. })
    )
}
