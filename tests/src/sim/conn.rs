//! One connection: WebSocket, Noise responder, then registration or login and the stanza
//! exchange, with the fault rules consulted at every frame.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use amarula_core::binary::{self, AttrValue, Node};
use amarula_core::frame::{FrameDecoder, encode_len};
use amarula_core::jid::Jid;
use amarula_core::noise::{AwaitClientFinish, NoiseHandshake, NoiseTransport, Responder};
use amarula_core::pairing::phone::{self, PhoneCodeState};
use amarula_proto::Message as _;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::Message;
use bytes::Bytes;
use futures_util::StreamExt;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::account::pair_success;
use super::events::{ConnKind, SimEvent};
use super::faults::{Action, ConnView, Direction};
use super::state::{Command, ConnEntry, DeviceState, PendingPair, Shared, jid_attr};
use super::unacked::AckKey;
use super::{ConnId, unix_now};
use super::{iq, presence, receipts, route};
use crate::harness::TestPki;

/// Accepts connections until shutdown, one task each.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, pki: Arc<TestPki>) {
    let mut shutdown = shared.shutdown.subscribe();
    if *shutdown.borrow() {
        return;
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let id = {
                        let mut st = shared.lock();
                        st.next_conn += 1;
                        ConnId(st.next_conn)
                    };
                    tracing::debug!(%id, %peer, "accepted");
                    tokio::spawn(run(tcp, id, Arc::clone(&shared), Arc::clone(&pki)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// How a connection ends.
struct Stop {
    reason: String,
    /// Send a WebSocket close frame (after a stream error or failure); otherwise the TCP
    /// connection is just dropped.
    graceful: bool,
}

impl Stop {
    fn drop(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            graceful: false,
        }
    }

    fn close(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            graceful: true,
        }
    }
}

type Flow = Result<(), Stop>;

enum Phase {
    Hello(Responder),
    Finish(Box<AwaitClientFinish>),
    Open(Box<NoiseTransport>),
    Gone,
}

struct Conn {
    id: ConnId,
    shared: Arc<Shared>,
    ws: Ws,
    rng: ChaCha20Rng,
    decoder: FrameDecoder,
    phase: Phase,
    frames_in: u64,
    frames_out: u64,
    registration: bool,
    device: Option<Jid>,
    client_static: [u8; 32],
    pending_pair: Option<PendingPair>,
    code: Option<(Box<PhoneCodeState>, String)>,
}

/// What a new login of a device is sent before `<ib><offline>`, in this order.
#[derive(Debug, Default)]
struct Redelivery {
    /// The messages written to earlier connections and never acked (still kept).
    unacked: Vec<Node>,
    /// The offline queue (now empty); its messages are kept from here on until acked.
    queued: Vec<Node>,
}

/// Takes what a new login of `d` is sent: the unacked messages in delivery order, then the
/// offline queue. A message in both (a sender's resend of the same id while the device was
/// offline) is sent once, as the queued copy, so nothing comes twice on one connection.
fn redelivery(d: &mut DeviceState) -> Redelivery {
    let queued: Vec<Node> = d.offline.drain(..).collect();
    let queued_keys: HashSet<AckKey> = queued.iter().filter_map(AckKey::of_message).collect();
    let unacked = d
        .unacked
        .copies()
        .filter(|(k, _)| !queued_keys.contains(k))
        .map(|(_, n)| n.clone())
        .collect();
    for node in &queued {
        d.unacked.insert(node);
    }
    Redelivery { unacked, queued }
}

async fn run(tcp: TcpStream, id: ConnId, shared: Arc<Shared>, pki: Arc<TestPki>) {
    let _ = tcp.set_nodelay(true);
    let ws = match async_tungstenite::tokio::accept_async(tcp).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%id, error = %e, "websocket handshake failed");
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    shared.lock().conns.insert(id, ConnEntry { tx });
    // Each connection draws from its own stream of the seeded generator.
    let mut rng = ChaCha20Rng::from_seed(shared.config.seed);
    rng.set_stream(id.0);
    let responder =
        NoiseHandshake::responder(pki.server_static.clone(), &mut rng, pki.chain.clone());
    let mut conn = Conn {
        id,
        shared: Arc::clone(&shared),
        ws,
        rng,
        decoder: FrameDecoder::expecting_intro(),
        phase: Phase::Hello(responder),
        frames_in: 0,
        frames_out: 0,
        registration: false,
        device: None,
        client_static: [0; 32],
        pending_pair: None,
        code: None,
    };
    let stop = conn.run(rx).await;
    if stop.graceful {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.ws.close(None)).await;
    }
    {
        let mut st = shared.lock();
        st.conns.remove(&id);
        st.qr_refs.retain(|_, c| *c != id);
        st.code_requests.retain(|_, r| r.conn != id);
        if let Some(device) = &conn.device {
            let mut current = false;
            if let Some(d) = st
                .account_by_user(device.user_part())
                .and_then(|a| a.devices.get_mut(&device.device()))
            {
                if d.conn == Some(id) {
                    d.conn = None;
                    current = true;
                }
            }
            // A device whose connection ends goes offline (a newer connection of it is left
            // alone).
            if current {
                presence::session_ended(&mut st, device);
            }
        }
    }
    tracing::debug!(%id, reason = %stop.reason, "closed");
    shared.emit(SimEvent::ConnectionClosed {
        conn: id,
        reason: stop.reason,
    });
}

enum Input {
    Ws(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Cmd(Option<Command>),
    Ping,
    Shutdown,
}

impl Conn {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Command>) -> Stop {
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow() {
            return Stop::drop("shutdown");
        }
        let ping_every = self.shared.config.server_ping_interval;
        let period = ping_every.unwrap_or(Duration::from_secs(3600));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let pinging = ping_every.is_some() && self.device.is_some();
            let input = tokio::select! {
                m = self.ws.next() => Input::Ws(m),
                c = rx.recv() => Input::Cmd(c),
                _ = ping.tick(), if pinging => Input::Ping,
                _ = shutdown.changed() => Input::Shutdown,
            };
            let flow = match input {
                Input::Ws(Some(Ok(Message::Binary(b)))) => self.on_bytes(&b).await,
                Input::Ws(Some(Ok(Message::Close(_))) | None) => Err(Stop::drop("client closed")),
                Input::Ws(Some(Ok(_))) => Ok(()),
                Input::Ws(Some(Err(e))) => Err(Stop::drop(format!("websocket: {e}"))),
                Input::Cmd(Some(c)) => self.on_command(c).await,
                Input::Cmd(None) | Input::Shutdown => Err(Stop::drop("shutdown")),
                Input::Ping => self.server_ping().await,
            };
            if let Err(stop) = flow {
                return stop;
            }
        }
    }

    fn view(&self) -> ConnView<'_> {
        ConnView {
            id: self.id,
            device: self.device.as_ref(),
            registration: self.registration,
        }
    }

    fn fault(&self, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(conn = %self.id, %what, "fault");
        self.shared.emit(SimEvent::FaultFired {
            conn: self.id,
            what,
        });
    }

    /// Applies the frame rules (drop, delay) to frame `n` in `dir`.
    async fn frame_rules(&mut self, dir: Direction, n: u64) -> Flow {
        let view = ConnView {
            id: self.id,
            device: self.device.as_ref(),
            registration: self.registration,
        };
        let (dropped, delay) = {
            let mut rules = self.shared.rules();
            let dropped = rules.drop_at(view, dir, n, &mut self.rng);
            (
                dropped,
                if dropped {
                    None
                } else {
                    rules.delay(view, dir)
                },
            )
        };
        if dropped {
            self.fault(format!("drop at {dir:?} frame {n}"));
            return Err(Stop::drop(format!("fault: dropped at {dir:?} frame {n}")));
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }

    async fn on_bytes(&mut self, bytes: &[u8]) -> Flow {
        self.decoder.push(bytes);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Stop::drop(format!("client frame: {e}"))),
            };
            self.frames_in += 1;
            self.frame_rules(Direction::ClientToServer, self.frames_in)
                .await?;
            self.on_frame(frame).await?;
        }
    }

    async fn on_frame(&mut self, frame: bytes::BytesMut) -> Flow {
        match std::mem::replace(&mut self.phase, Phase::Gone) {
            Phase::Hello(responder) => {
                let (wire, next) = responder
                    .read_client_hello(&frame)
                    .map_err(|e| Stop::drop(format!("client hello: {e}")))?;
                self.phase = Phase::Finish(Box::new(next));
                self.write(wire.into()).await
            }
            Phase::Finish(finish) => {
                let done = finish
                    .read_client_finish(&frame)
                    .map_err(|e| Stop::drop(format!("client finish: {e}")))?;
                self.client_static = done.client_static;
                self.phase = Phase::Open(Box::new(done.transport));
                let payload = amarula_proto::ClientPayload::decode(&done.client_payload[..])
                    .map_err(|e| Stop::drop(format!("client payload: {e}")))?;
                self.on_client_payload(&payload).await
            }
            Phase::Open(mut transport) => {
                let body = transport.decrypt_node(frame);
                self.phase = Phase::Open(transport);
                let body = body.map_err(|e| Stop::drop(format!("client frame: {e}")))?;
                let node = binary::decode_owned(&body)
                    .map_err(|e| Stop::drop(format!("client stanza: {e}")))?;
                self.on_stanza(node).await
            }
            Phase::Gone => Err(Stop::drop("frame after close")),
        }
    }

    /// Writes one wire frame (prefix included), counting it and applying the frame rules.
    async fn write(&mut self, wire: Bytes) -> Flow {
        self.frames_out += 1;
        self.frame_rules(Direction::ServerToClient, self.frames_out)
            .await?;
        self.ws
            .send(Message::Binary(wire))
            .await
            .map_err(|e| Stop::drop(format!("websocket write: {e}")))
    }

    /// Encrypts and writes a stanza.
    async fn send(&mut self, node: &Node) -> Flow {
        let Phase::Open(transport) = &mut self.phase else {
            tracing::warn!(conn = %self.id, "stanza before the handshake is done");
            return Ok(());
        };
        let mut plain = Vec::new();
        binary::encode_frame(node, &mut plain).map_err(|e| Stop::drop(format!("encode: {e}")))?;
        let wire = transport
            .encrypt_frame(&plain)
            .map_err(|e| Stop::drop(format!("encrypt: {e}")))?;
        tracing::trace!(conn = %self.id, %node, "send");
        self.write(wire.into()).await
    }

    fn random_id(&mut self) -> String {
        let mut id = [0u8; 8];
        self.rng.fill_bytes(&mut id);
        hex::encode_upper(id)
    }

    // ---- registration and login ----

    async fn on_client_payload(&mut self, payload: &amarula_proto::ClientPayload) -> Flow {
        if payload.device_pairing_data.is_some() {
            return self.start_registration().await;
        }
        let (Some(user), Some(device)) = (payload.username, payload.device) else {
            return self.refuse_login(None).await;
        };
        let Ok(device) = u16::try_from(device) else {
            return self.refuse_login(None).await;
        };
        let jid = Jid::user(user.to_string()).with_device(device);
        let registered = {
            let mut st = self.shared.lock();
            st.account_by_user(jid.user_part())
                .and_then(|a| a.devices.get(&device))
                .is_some_and(|d| d.noise_pub == Some(self.client_static))
        };
        if !registered {
            return self.refuse_login(Some(jid)).await;
        }
        self.device = Some(jid.clone());
        let at_login = self.shared.rules().at_login(self.view());
        self.shared.emit(SimEvent::ConnectionOpened {
            conn: self.id,
            kind: ConnKind::Login {
                device: jid.clone(),
            },
        });
        if let Some(action) = at_login {
            self.fault(format!("at login: {action:?}"));
            return self.act(action).await;
        }
        // Online, the unacked messages and the offline queue taken under one lock, so nothing
        // routed meanwhile is lost or sent twice on this connection.
        let (lid, again) = {
            let mut st = self.shared.lock();
            match st.account_by_user(jid.user_part()) {
                Some(a) => {
                    // The LID device JID of the device logging in (LID.md §1; whatsmeow
                    // compares it with the pair-success `lid`, Baileys 7 keeps it as `me.lid`).
                    let lid = a.lid_jid(device);
                    let again = a
                        .devices
                        .get_mut(&device)
                        .map(|d| {
                            d.conn = Some(self.id);
                            redelivery(d)
                        })
                        .unwrap_or_default();
                    (lid, again)
                }
                None => return Err(Stop::drop("account vanished")),
            }
        };
        // A new connection starts unavailable and without presence subscriptions.
        presence::session_ended(&mut self.shared.lock(), &jid);
        if !again.unacked.is_empty() {
            self.shared.emit(SimEvent::Redelivered {
                conn: self.id,
                device: jid.clone(),
                ids: again
                    .unacked
                    .iter()
                    .filter_map(|n| n.attr_str("id").map(str::to_owned))
                    .collect(),
            });
        }
        let success = Node::new("success")
            .attr("t", unix_now().to_string())
            .attr("lid", lid)
            .attr("props", "0");
        self.send(&success).await?;
        let count = again.unacked.len() + again.queued.len();
        for node in again.unacked.into_iter().chain(again.queued) {
            self.send(&node.attr("offline", "1")).await?;
        }
        self.send(
            &Node::new("ib").children([Node::new("offline").attr("count", count.to_string())]),
        )
        .await?;
        let after = self.shared.rules().after_login(self.view());
        if let Some(action) = after {
            self.fault(format!("after login: {action:?}"));
            self.act(action).await?;
        }
        Ok(())
    }

    async fn refuse_login(&mut self, device: Option<Jid>) -> Flow {
        self.shared.emit(SimEvent::ConnectionOpened {
            conn: self.id,
            kind: ConnKind::LoginRefused { device },
        });
        self.send(&Node::new("failure").attr("reason", "401"))
            .await?;
        Err(Stop::close("login refused (401)"))
    }

    async fn start_registration(&mut self) -> Flow {
        self.registration = true;
        let refs: Vec<String> = (0..self.shared.config.qr_refs)
            .map(|_| {
                let mut r = [0u8; 12];
                self.rng.fill_bytes(&mut r);
                format!("2@{}", hex::encode(r))
            })
            .collect();
        {
            let mut st = self.shared.lock();
            for r in &refs {
                st.qr_refs.insert(r.clone(), self.id);
            }
        }
        self.shared.emit(SimEvent::ConnectionOpened {
            conn: self.id,
            kind: ConnKind::Registration,
        });
        let id = self.random_id();
        let iq = Node::new("iq")
            .attr("from", Jid::server())
            .attr("type", "set")
            .attr("id", id)
            .children([Node::new("pair-device").children(
                refs.into_iter()
                    .map(|r| Node::new("ref").bytes(Bytes::from(r.into_bytes()))),
            )]);
        self.send(&iq).await
    }

    // ---- stanzas ----

    async fn on_stanza(&mut self, node: Node) -> Flow {
        tracing::trace!(conn = %self.id, %node, "received");
        self.shared.emit(SimEvent::StanzaReceived {
            conn: self.id,
            device: self.device.clone(),
            node: node.clone(),
        });
        match &*node.tag {
            "iq" => self.on_iq(node).await,
            "message" => self.on_message(node).await,
            "receipt" => self.on_receipt(node).await,
            "ack" => self.on_ack(&node),
            // Neither is answered or acked.
            "presence" | "chatstate" => {
                if let Some(me) = &self.device {
                    let mut st = self.shared.lock();
                    if node.tag == "presence" {
                        presence::on_presence(&mut st, me, &node);
                    } else {
                        presence::on_chatstate(&mut st, me, &node);
                    }
                }
                Ok(())
            }
            // Telemetry: nothing to answer.
            _ => Ok(()),
        }
    }

    async fn on_iq(&mut self, node: Node) -> Flow {
        let Some(id) = node.attr_str("id").map(str::to_owned) else {
            return Ok(());
        };
        match node.attr_str("type") {
            Some("result" | "error") => return self.on_iq_reply(&id, &node).await,
            Some("get" | "set") => {}
            _ => return self.send(&iq::error(&node, 400, "bad-request")).await,
        }
        let xmlns = node.attr_str("xmlns");
        if self.shared.rules().withhold_iq(self.view(), xmlns, &id) {
            self.fault(format!("withheld reply to iq {id}"));
            return Ok(());
        }
        if xmlns == Some("md") {
            return self.on_md(&node).await;
        }
        if xmlns == Some("w:sync:app:state")
            && super::appstate::withhold(&self.shared, self.device.as_ref())
        {
            self.fault(format!("withheld app-state answer {id}"));
            return Ok(());
        }
        let reply = iq::answer(&self.shared, self.device.as_ref(), &node);
        self.send(&reply).await?;
        // History sync: a newly paired device that just published its keys gets the history.
        if xmlns == Some("encrypt") {
            if let Some(device) = &self.device {
                super::history::after_key_upload(&self.shared, device);
            }
        }
        Ok(())
    }

    /// A client's reply to a server IQ: pair-device, ping, or the pair-success.
    async fn on_iq_reply(&mut self, id: &str, node: &Node) -> Flow {
        let Some(pending) = self.pending_pair.take_if(|p| p.iq_id == id) else {
            return Ok(());
        };
        let account_pub = {
            let st = self.shared.lock();
            st.accounts
                .get(&pending.phone)
                .map(|a| *a.key.public_bytes())
        };
        let Some(account_pub) = account_pub else {
            return Err(Stop::drop("account vanished"));
        };
        if let Err(e) = phone::verify_pair_device_sign(node, &pending.identity_pub, &account_pub) {
            tracing::warn!(conn = %self.id, error = %e, "pair-device-sign refused");
            return Err(Stop::drop(format!("pair-device-sign refused: {e}")));
        }
        let jid = {
            let mut st = self.shared.lock();
            st.qr_refs.retain(|_, c| *c != self.id);
            let account = st
                .accounts
                .get_mut(&pending.phone)
                .ok_or_else(|| Stop::drop("account vanished"))?;
            account.devices.insert(
                pending.device,
                DeviceState {
                    noise_pub: Some(pending.noise_pub),
                    key_index: u32::from(pending.device),
                    ..Default::default()
                },
            );
            let jid = account.pn(pending.device);
            st.announce_device(&pending.phone, pending.device);
            if self.shared.config.initial_history {
                st.history_due.insert(jid.clone());
            }
            jid
        };
        self.shared.emit(SimEvent::Paired {
            conn: self.id,
            device: jid,
        });
        // PAIRING.md §2.4 step 9: restart required.
        self.send(&Node::new("stream:error").attr("code", "515"))
            .await?;
        Err(Stop::close("paired (515)"))
    }

    /// Phone-code pairing IQs (PAIRING.md §3).
    async fn on_md(&mut self, node: &Node) -> Flow {
        if node.child("remove-companion-device").is_some() {
            return self.on_remove_companion(node).await;
        }
        let reg = node.child("link_code_companion_reg");
        match reg.and_then(|r| r.attr_str("stage")) {
            Some("companion_hello") => {
                let phone = reg
                    .and_then(|r| r.get_attr("jid"))
                    .map(|j| match j {
                        AttrValue::Jid(j) => j.user_part().to_owned(),
                        AttrValue::Str(s) => s.split('@').next().unwrap_or_default().to_owned(),
                    })
                    .unwrap_or_default();
                let mut r = [0u8; 16];
                self.rng.fill_bytes(&mut r);
                let pairing_ref = hex::encode(r).into_bytes();
                let known = {
                    let mut st = self.shared.lock();
                    let known = st.accounts.contains_key(&phone);
                    if known {
                        st.code_requests.insert(
                            phone.clone(),
                            super::state::CodeRequest {
                                conn: self.id,
                                hello: node.clone(),
                                pairing_ref: pairing_ref.clone(),
                            },
                        );
                    }
                    known
                };
                if !known {
                    return self.send(&iq::error(node, 404, "item-not-found")).await;
                }
                let id = node.attr_str("id").unwrap_or_default();
                self.send(&phone::companion_hello_result(id, &pairing_ref))
                    .await?;
                self.shared.emit(SimEvent::PairingCodeRequested {
                    conn: self.id,
                    phone,
                });
                Ok(())
            }
            Some("companion_finish") => {
                let Some((state, phone)) = self.code.take() else {
                    return self.send(&iq::error(node, 400, "bad-request")).await;
                };
                let outcome = match phone::finish(&state, node) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(conn = %self.id, error = %e, "companion_finish refused");
                        return self.send(&iq::error(node, 400, "bad-request")).await;
                    }
                };
                self.send(&iq::result(node, Vec::new())).await?;
                let (success, pending, _) = pair_success(
                    &self.shared,
                    &phone,
                    outcome.companion_identity_pub,
                    self.client_static,
                    &outcome.adv_secret,
                );
                self.pending_pair = Some(pending);
                self.send(&success).await
            }
            _ => {
                self.send(&iq::error(node, 501, "feature-not-implemented"))
                    .await
            }
        }
    }

    /// The logout of this device (SESSION.md §15): unlinked, answered, then the stream ends
    /// with `device_removed` as the real server does.
    async fn on_remove_companion(&mut self, node: &Node) -> Flow {
        let Some(device) = self.device.clone() else {
            return self.send(&iq::error(node, 401, "not-authorized")).await;
        };
        let reply = super::contacts::remove_companion(&mut self.shared.lock(), &device, node);
        let Some(reply) = reply else {
            return self.send(&iq::error(node, 403, "forbidden")).await;
        };
        self.send(&reply).await?;
        let end = Node::new("stream:error")
            .attr("code", "401")
            .children([Node::new("conflict").attr("type", "device_removed")]);
        self.send(&end).await?;
        Err(Stop::close("device removed"))
    }

    /// Routes a `<message>` (SESSION.md §8, §13) and acks it to the sender (§5.5). Copies
    /// for the phone are decrypted at once; copies with Signal ciphertexts are remembered so
    /// their acks are not turned into receipts.
    async fn on_message(&mut self, node: Node) -> Flow {
        let (Some(sender), Some(id)) = (self.device.clone(), node.attr_str("id")) else {
            return Ok(());
        };
        let id = id.to_owned();
        let Some(to) = jid_attr(&node, "to") else {
            return Ok(());
        };
        let t = unix_now().to_string();
        let mut plan = route::plan(&mut self.shared.lock(), &sender, &to, &node, &t);
        for copy in &mut plan.copies {
            let corrupt = self.shared.rules().corrupt(self.view(), &id, &copy.jid);
            if corrupt && route::corrupt_first_enc(&mut copy.node) {
                self.fault(format!("corrupted the copy of {id} for {}", copy.jid));
            }
        }
        let mut delivered = Vec::new();
        let mut queued = Vec::new();
        let mut phone_events = Vec::new();
        {
            let mut st = self.shared.lock();
            for copy in plan.copies {
                if copy.device == 0 {
                    phone_events.extend(super::phone::receive(
                        &mut st,
                        &copy.phone,
                        &copy.node,
                        &sender,
                        plan.group.as_ref(),
                    ));
                    delivered.push(copy.jid);
                    continue;
                }
                if route::is_encrypted(&copy.node) {
                    st.encrypted.insert((copy.jid.clone(), id.clone()));
                }
                match st.deliver(&copy.phone, copy.device, copy.node) {
                    Some((jid, true)) => delivered.push(jid),
                    Some((jid, false)) => queued.push(jid),
                    None => {}
                }
            }
        }
        if let Some(error) = plan.error {
            self.shared.emit(SimEvent::MessageRefused {
                id: id.clone(),
                from: sender.clone(),
                error: error.to_owned(),
            });
        }
        self.shared.emit(SimEvent::MessageRouted {
            id: id.clone(),
            from: sender,
            delivered,
            queued,
        });
        for e in phone_events {
            // History sync: the phone answers peer data requests from its companions.
            super::history::answer_peer(&self.shared, &e);
            self.shared.emit(e);
        }
        if self.shared.rules().withhold_ack(self.view(), &id) {
            self.fault(format!("withheld ack of message {id}"));
            return Ok(());
        }
        let mut ack = Node::new("ack")
            .attr("class", "message")
            .attr("id", id)
            .attr("from", to)
            .attr("t", t);
        if let Some(code) = plan.error {
            ack = ack.attr("error", code);
        }
        self.send(&ack).await
    }

    /// A receipt from a client: forwarded (a group receipt to the original sender device its
    /// `participant` names; otherwise to the device, or the companions of the user, `to`
    /// names), and acked. A delivery receipt also acknowledges the messages it names, as the
    /// real server takes it (SESSION.md §5.1): they are not delivered again.
    async fn on_receipt(&mut self, node: Node) -> Flow {
        let (Some(me), Some(id), Some(to)) = (
            self.device.clone(),
            node.attr_str("id"),
            jid_attr(&node, "to"),
        ) else {
            return Ok(());
        };
        let events = {
            let mut st = self.shared.lock();
            if let Some(d) = st
                .account_by_user(me.user_part())
                .and_then(|a| a.devices.get_mut(&me.device()))
            {
                for key in AckKey::of_receipt(&node) {
                    d.unacked.remove(&key);
                }
            }
            let t = unix_now().to_string();
            // A re-upload request goes to our own phone, which answers it.
            if super::reupload::on_server_error(&mut st, &self.shared.media, &me, &node, &t) {
                Vec::new()
            } else {
                receipts::forward(&mut st, &me, &to, jid_attr(&node, "participant"), &node, &t)
            }
        };
        for e in events {
            self.shared.emit(e);
        }
        let mut ack = Node::new("ack")
            .attr("class", "receipt")
            .attr("id", id)
            .attr("from", to);
        if let Some(kind) = node.get_attr("type") {
            ack = ack.attr("type", kind.clone());
        }
        self.send(&ack).await
    }

    /// A client's ack. An ack of a message (with or without `error`) ends the server's copy of
    /// it, as its delivery receipt does: it is not delivered again. For a plaintext test message it also stands for the
    /// delivery: sent back to the message's sender as a receipt. A client that decrypted a
    /// Signal message sends its own receipt, so acks of encrypted copies (and every other ack)
    /// are consumed.
    fn on_ack(&mut self, node: &Node) -> Flow {
        let Some(me) = self.device.clone() else {
            return Ok(());
        };
        let mut st = self.shared.lock();
        if let Some(key) = AckKey::of_ack(node) {
            if let Some(d) = st
                .account_by_user(me.user_part())
                .and_then(|a| a.devices.get_mut(&me.device()))
            {
                d.unacked.remove(&key);
            }
        }
        if node.attr_str("class") != Some("message") || node.attr_str("error").is_some() {
            return Ok(());
        }
        let (Some(id), Some(to)) = (node.attr_str("id"), jid_attr(node, "to")) else {
            return Ok(());
        };
        if st.encrypted.contains(&(me.clone(), id.to_owned())) {
            return Ok(());
        }
        let receipt = Node::new("receipt").attr("id", id);
        let events = route::receipt(
            &mut st,
            &me,
            &to,
            jid_attr(node, "participant"),
            &receipt,
            &unix_now().to_string(),
        );
        drop(st);
        for e in events {
            self.shared.emit(e);
        }
        Ok(())
    }

    async fn server_ping(&mut self) -> Flow {
        let id = self.random_id();
        let ping = Node::new("iq")
            .attr("from", Jid::server())
            .attr("id", id)
            .attr("type", "get")
            .attr("xmlns", "urn:xmpp:ping")
            .attr("t", unix_now().to_string());
        self.send(&ping).await
    }

    // ---- commands and faults ----

    async fn on_command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Send(node) => self.send(&node).await,
            Command::PairSuccess { node, pending } => {
                if pending.noise_pub != self.client_static {
                    tracing::warn!(conn = %self.id, "QR noise key is not this connection's");
                    return Ok(());
                }
                self.pending_pair = Some(pending);
                self.send(&node).await
            }
            Command::CodeEntered {
                notification,
                state,
                phone,
            } => {
                self.code = Some((state, phone));
                self.send(&notification).await
            }
            Command::Inject(action) => {
                self.fault(format!("injected: {action:?}"));
                self.act(action).await
            }
        }
    }

    async fn act(&mut self, action: Action) -> Flow {
        match action {
            Action::StreamError { code, child } => {
                let mut n = Node::new("stream:error");
                if let Some(code) = code {
                    n = n.attr("code", code);
                }
                if let Some(child) = child {
                    n = n.children([child]);
                }
                self.send(&n).await?;
                Err(Stop::close("fault: stream error"))
            }
            Action::Failure { reason } => {
                self.send(&Node::new("failure").attr("reason", reason.to_string()))
                    .await?;
                Err(Stop::close(format!("fault: failure {reason}")))
            }
            Action::Garbled => {
                let mut body = [0u8; 64];
                self.rng.fill_bytes(&mut body);
                let mut wire = encode_len(body.len())
                    .map(|l| l.to_vec())
                    .unwrap_or_default();
                wire.extend_from_slice(&body);
                self.write(wire.into()).await
            }
            Action::Oversized => {
                let len = amarula_core::frame::MAX_PAYLOAD_LEN;
                let mut wire = vec![0u8; 3 + len];
                self.rng.fill_bytes(&mut wire[3..]);
                wire[..3].copy_from_slice(&[0xFF; 3]);
                self.write(wire.into()).await
            }
            Action::RetryReceipt { id, from } => {
                let t = unix_now().to_string();
                let receipt = Node::new("receipt")
                    .attr("id", id.as_str())
                    .attr("from", from)
                    .attr("type", "retry")
                    .attr("t", t.as_str())
                    .children([
                        Node::new("retry")
                            .attr("count", "1")
                            .attr("id", id.as_str())
                            .attr("t", t)
                            .attr("v", "1"),
                        Node::new("registration").bytes(vec![0, 0, 0, 1]),
                    ]);
                self.send(&receipt).await
            }
            Action::Send(node) => self.send(&node).await,
            Action::Raw(bytes) => self.write(bytes).await,
            Action::Drop => Err(Stop::drop("fault: dropped")),
        }
    }
}
