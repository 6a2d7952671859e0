//! A two-party harness: the [`ConnectionMachine`] against a scripted in-process fake server,
//! on virtual time (after quinn's `Pair`). Nothing sleeps and nothing touches a socket:
//! [`Pair::drive`] moves frames both ways until both sides are quiet, and
//! [`Pair::advance`] moves time to the next deadline.
//!
//! The fake server speaks the real protocol from the server side with our own Noise responder
//! and codec, and a test certificate chain the client is configured to trust. It is passive:
//! tests script what it sends ([`FakeServer::send`]) and inspect what it received.

use std::collections::VecDeque;
use std::time::Duration;

use amarula_core::binary::{self, Node};
use amarula_core::credentials::Credentials;
use amarula_core::frame::FrameDecoder;
use amarula_core::machine::{
    AckToken, Config, Confirm, ConnectionMachine, Event, IqRequest, Output, RequestId, SendError,
    Session,
};
use amarula_core::noise::{
    AwaitClientFinish, CertDetails, KeyPair, NoiseHandshake, NoiseTransport, Responder, TrustAnchor,
};
use amarula_core::time::{Clock, Instant};
use amarula_proto::Message as _;
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::keystore::TestStore;
use crate::record::{Recorder, Step};

/// Unix time (ms) of virtual time zero in every harness run: inside the test chain's validity.
pub const BASE_UNIX_MS: u64 = 1_750_000_000_000;

/// A test certificate chain and the trust anchor that accepts it.
pub struct TestPki {
    /// The anchor to put in the client's [`Config::trust`].
    pub trust: TrustAnchor,
    /// The server's static key (the leaf key).
    pub server_static: KeyPair,
    /// The `CertChain` protobuf the server sends.
    pub chain: Vec<u8>,
}

impl TestPki {
    /// A chain made deterministically from `seed`, valid from 2020 to 2040.
    pub fn new(seed: u8) -> Self {
        let key = |n: u8| KeyPair::from_private_bytes([seed.wrapping_add(n); 32]);
        let (root, inter, server_static) = (key(1), key(2), key(3));
        let intermediate = CertDetails {
            serial: 7,
            issuer_serial: 0,
            key: *inter.public_bytes(),
            not_before: 1_577_836_800,
            not_after: 2_208_988_800,
        };
        let leaf = CertDetails {
            serial: 8,
            issuer_serial: 7,
            key: *server_static.public_bytes(),
            not_before: 1_577_836_800,
            not_after: 2_208_988_800,
        };
        let chain = CertDetails::sign_chain(
            &root.private_bytes(),
            &intermediate,
            &inter.private_bytes(),
            &leaf,
        );
        Self {
            trust: TrustAnchor {
                root_public: *root.public_bytes(),
                issuer_serial: 0,
            },
            server_static,
            chain,
        }
    }
}

enum ServerPhase {
    AwaitHello(Responder),
    AwaitFinish(Box<AwaitClientFinish>),
    Open(Box<NoiseTransport>),
    Failed,
}

/// The server side of one connection.
pub struct FakeServer {
    phase: ServerPhase,
    frames_in: FrameDecoder,
    to_client: VecDeque<Bytes>,
    /// Every stanza the client sent, in order.
    pub received: Vec<Node>,
    /// The decoded ClientPayload, once the handshake is done.
    pub client_payload: Option<amarula_proto::ClientPayload>,
    /// The client's static Noise key, once the handshake is done.
    pub client_static: Option<[u8; 32]>,
    /// Set when the client sent something the server could not read.
    pub error: Option<String>,
}

impl FakeServer {
    /// A server that answers the handshake with `pki`'s chain.
    pub fn new(pki: &TestPki, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let responder =
            NoiseHandshake::responder(pki.server_static.clone(), &mut rng, pki.chain.clone());
        Self {
            phase: ServerPhase::AwaitHello(responder),
            frames_in: FrameDecoder::expecting_intro(),
            to_client: VecDeque::new(),
            received: Vec::new(),
            client_payload: None,
            client_static: None,
            error: None,
        }
    }

    /// Whether the handshake is done and stanzas can be sent.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, ServerPhase::Open(_))
    }

    /// Feeds bytes the client wrote.
    pub fn handle_client_bytes(&mut self, bytes: &[u8]) {
        self.frames_in.push(bytes);
        loop {
            let frame = match self.frames_in.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => return self.fail(format!("frame: {e}")),
            };
            match std::mem::replace(&mut self.phase, ServerPhase::Failed) {
                ServerPhase::AwaitHello(r) => match r.read_client_hello(&frame) {
                    Ok((wire, next)) => {
                        self.to_client.push_back(wire.into());
                        self.phase = ServerPhase::AwaitFinish(Box::new(next));
                    }
                    Err(e) => return self.fail(format!("client hello: {e}")),
                },
                ServerPhase::AwaitFinish(f) => match f.read_client_finish(&frame) {
                    Ok(done) => {
                        self.client_payload =
                            amarula_proto::ClientPayload::decode(&done.client_payload[..]).ok();
                        self.client_static = Some(done.client_static);
                        self.phase = ServerPhase::Open(Box::new(done.transport));
                    }
                    Err(e) => return self.fail(format!("client finish: {e}")),
                },
                ServerPhase::Open(mut t) => {
                    let result = t.decrypt_node(frame);
                    self.phase = ServerPhase::Open(t);
                    match result.map(|b| binary::decode_owned(&b)) {
                        Ok(Ok(node)) => self.received.push(node),
                        Ok(Err(e)) => return self.fail(format!("client stanza: {e}")),
                        Err(e) => return self.fail(format!("client frame: {e}")),
                    }
                }
                ServerPhase::Failed => return,
            }
        }
    }

    fn fail(&mut self, why: String) {
        self.error.get_or_insert(why);
        self.phase = ServerPhase::Failed;
    }

    /// Encrypts `node` and queues it for the client.
    ///
    /// # Panics
    /// When the handshake is not done: a test scripting error.
    pub fn send(&mut self, node: &Node) {
        let mut plain = Vec::new();
        binary::encode_frame(node, &mut plain).expect("test nodes encode");
        self.send_plaintext(&plain);
    }

    /// Encrypts a raw frame plaintext (flag byte + body) and queues it for the client.
    ///
    /// # Panics
    /// When the handshake is not done.
    pub fn send_plaintext(&mut self, plaintext: &[u8]) {
        let ServerPhase::Open(t) = &mut self.phase else {
            panic!("fake server: handshake not done");
        };
        let wire = t.encrypt_frame(plaintext).expect("encrypt");
        self.to_client.push_back(wire.into());
    }

    /// Queues raw bytes for the client, outside the encryption (to inject garbage).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.to_client.push_back(Bytes::copy_from_slice(bytes));
    }

    /// Takes what is queued for the client.
    pub fn take_to_client(&mut self) -> Vec<Bytes> {
        self.to_client.drain(..).collect()
    }

    /// The stanzas received since `from`.
    pub fn received_since(&self, from: usize) -> &[Node] {
        self.received.get(from..).unwrap_or_default()
    }

    /// The last received stanza with this tag.
    pub fn last(&self, tag: &str) -> Option<&Node> {
        self.received.iter().rev().find(|n| n.tag == tag)
    }
}

/// The client machine and the fake server on one virtual clock, with every client event kept.
pub struct Pair {
    /// The client.
    pub client: ConnectionMachine,
    /// The server.
    pub server: FakeServer,
    /// Virtual now.
    pub now: Instant,
    /// Every event the client emitted, in order.
    pub events: Vec<Event>,
    /// The client's store: persistence events are applied to it and load requests answered
    /// from it, as a driver does (answers to loads are not recorded).
    pub store: TestStore,
    /// What was fed to and taken from the client, for recorded sessions.
    pub recorder: Recorder,
    seeds: Seeds,
}

/// Seeds of a harness run.
#[derive(Debug, Clone, Copy)]
pub struct Seeds {
    /// Seed of the client machine.
    pub client: [u8; 32],
    /// Seed of the fake server (its ephemeral keys).
    pub server: u8,
    /// Seed of the test certificate chain.
    pub pki: u8,
}

impl Default for Seeds {
    fn default() -> Self {
        Self {
            client: [1; 32],
            server: 2,
            pki: 3,
        }
    }
}

impl Pair {
    /// A connection of `session` to a fresh fake server, at virtual time zero.
    pub fn new(config: Config, session: Session, seeds: Seeds) -> Self {
        Self::at(config, session, seeds, Instant::ZERO)
    }

    /// Like [`Pair::new`], starting at `now`.
    pub fn at(config: Config, session: Session, seeds: Seeds, now: Instant) -> Self {
        Self::at_with_store(config, session, seeds, now, TestStore::default())
    }

    /// Like [`Pair::at`], with a store that already holds records (a restart).
    pub fn at_with_store(
        mut config: Config,
        session: Session,
        seeds: Seeds,
        now: Instant,
        store: TestStore,
    ) -> Self {
        let pki = TestPki::new(seeds.pki);
        config.trust = pki.trust;
        let clock = Clock {
            at: now,
            unix_ms: BASE_UNIX_MS + now.as_millis(),
        };
        let recorder = Recorder::new(&config, &session, clock, seeds.client);
        let client = ConnectionMachine::new(config, session, clock, seeds.client);
        let server = FakeServer::new(&pki, [seeds.server; 32]);
        let mut pair = Self {
            client,
            server,
            now,
            events: Vec::new(),
            store,
            recorder,
            seeds,
        };
        pair.drive();
        pair
    }

    /// The config of the connection-layer tests: the defaults (held acks on) with end-to-end
    /// handling off, so the machine sends nothing unasked after login. Messaging tests turn
    /// it on.
    pub fn config() -> Config {
        Config {
            end_to_end: false,
            ..Config::default()
        }
    }

    /// Fresh credentials from a seed.
    pub fn credentials(seed: u8) -> Credentials {
        Credentials::generate(&mut ChaCha20Rng::from_seed([seed; 32]))
    }

    /// Moves frames both ways and collects client events until both sides are quiet.
    pub fn drive(&mut self) {
        loop {
            let mut moved = self.drain_client();
            for frame in self.server.take_to_client() {
                moved = true;
                self.recorder.push(Step::Input {
                    at: self.now,
                    bytes: frame.clone(),
                });
                self.client.handle_input(self.now, &frame);
                self.drain_client();
            }
            if !moved {
                return;
            }
        }
    }

    /// Takes the client's outputs: frames go to the server, events to `events`.
    fn drain_client(&mut self) -> bool {
        let mut any = false;
        while let Some(out) = self.client.poll_output() {
            any = true;
            self.recorder.output(&out);
            match out {
                Output::Transmit(bytes) => self.server.handle_client_bytes(&bytes),
                Output::Event(Event::Load(request)) => {
                    let loaded = self.store.answer(&request);
                    self.events.push(Event::Load(request));
                    self.client.provide(self.now, loaded);
                }
                Output::Event(e) => {
                    self.store.apply_event(&e);
                    self.events.push(e);
                }
            }
        }
        any
    }

    /// Moves time to the client's next deadline if it is at or before `limit`, fires it and
    /// drives. Returns whether a deadline fired.
    pub fn step_until(&mut self, limit: Instant) -> bool {
        match self.client.poll_timeout() {
            Some(t) if t <= limit => {
                self.now = self.now.max(t);
                self.recorder.push(Step::Timeout { at: self.now });
                self.client.handle_timeout(self.now);
                self.drive();
                true
            }
            _ => false,
        }
    }

    /// Advances virtual time by `d`, firing every deadline on the way (bounded: at most 10,000
    /// timer firings, so a machine that re-arms at the same instant cannot loop forever).
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        let mut fired = 0;
        while self.step_until(target) {
            fired += 1;
            assert!(fired < 10_000, "timer storm: deadlines do not advance");
        }
        self.now = target;
    }

    /// Sends an IQ from the client (recorded) and drives.
    pub fn send_iq(&mut self, req: IqRequest) -> RequestId {
        self.recorder.push(Step::SendIq {
            at: self.now,
            node: req.node.clone(),
            timeout: req.timeout,
        });
        let id = self.client.send_iq(self.now, req).expect("send_iq");
        self.drive();
        id
    }

    /// Relays a message from the client (recorded) and drives.
    pub fn relay(&mut self, node: Node, context: Bytes) -> Result<(), SendError> {
        self.recorder.push(Step::Relay {
            at: self.now,
            node: node.clone(),
            context: context.clone(),
        });
        let r = self.client.relay_message(self.now, node, context);
        self.drive();
        r
    }

    /// Confirms a held ack (recorded) and drives.
    pub fn confirm(&mut self, token: AckToken, how: Confirm) -> Result<(), SendError> {
        self.recorder.push(Step::Confirm {
            at: self.now,
            token,
            how: how.clone(),
        });
        let r = self.client.confirm(self.now, token, how);
        self.drive();
        r
    }

    /// Starts phone-code pairing (recorded) and drives.
    pub fn pairing_code(&mut self, phone: &str) -> Result<String, SendError> {
        self.recorder.push(Step::PairingCode {
            at: self.now,
            phone: phone.to_owned(),
        });
        let r = self.client.request_pairing_code(self.now, phone);
        self.drive();
        r
    }

    /// Closes from the client side (recorded) and drives.
    pub fn close_locally(&mut self) {
        self.recorder.push(Step::Close { at: self.now });
        self.client.close_locally(self.now);
        self.drive();
    }

    /// The server sends `node` to the client; drives.
    pub fn server_send(&mut self, node: &Node) {
        self.server.send(node);
        self.drive();
    }

    /// The socket breaks (recorded); drives.
    pub fn socket_closed(&mut self) {
        self.recorder.push(Step::SocketClosed { at: self.now });
        self.client.handle_socket_closed(self.now);
        self.drive();
    }

    /// Starts the next connection of the same client against a fresh fake server (same test
    /// chain), as a driver does after a close; the current machine's session carries over,
    /// and the events so far are kept.
    #[must_use]
    pub fn reconnect(self, config: Config, client_seed: [u8; 32]) -> Self {
        let session = self.client.into_session();
        let seeds = Seeds {
            client: client_seed,
            server: self.seeds.server.wrapping_add(1),
            pki: self.seeds.pki,
        };
        let mut next = Self::at_with_store(config, session, seeds, self.now, self.store);
        let mut events = self.events;
        events.append(&mut next.events);
        next.events = events;
        next
    }

    /// The events emitted since index `from`.
    pub fn events_since(&self, from: usize) -> &[Event] {
        self.events.get(from..).unwrap_or_default()
    }
}

/// A paired device's credentials (as if pairing had happened), for login tests.
pub fn paired_credentials(seed: u8) -> Credentials {
    let mut creds = Pair::credentials(seed);
    creds.device = Some(amarula_core::credentials::DeviceIdentity {
        jid: "15551234567:7@s.whatsapp.net".parse().expect("valid"),
        lid: Some("123456789012345:7@lid".parse().expect("valid")),
        account: Bytes::from_static(b"account"),
        platform: "android".into(),
        business_name: None,
    });
    creds
}

/// `<success t=… lid=…/>` as the server sends it at login.
pub fn success_node(t_unix: u64) -> Node {
    Node::new("success")
        .attr("t", t_unix.to_string())
        .attr(
            "lid",
            "123456789012345@lid"
                .parse::<amarula_core::jid::Jid>()
                .expect("valid"),
        )
        .attr("props", "23")
}
