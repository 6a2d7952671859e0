//! A minimal client for the simulator's tests: amarula's sans-IO [`ConnectionMachine`] driven
//! over a real loopback WebSocket by a small tokio task. One [`TestClient`] is one connection;
//! after it closes, [`TestClient::finish`] gives the [`Session`] for the next one.
//!
//! This is test support, not the `amarula` driver: it reads the wall clock and forwards every
//! machine event to the test.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::machine::{
    AckToken, Config, Confirm, ConnectionMachine, Event, IqRequest, IqResult, Output, RequestId,
    SendError, Session,
};
use amarula_core::time::{Clock, Instant};
use async_tungstenite::tungstenite::Message;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::WaitError;

/// What the test asks the client task to do.
enum Cmd {
    Iq(IqRequest, oneshot::Sender<Result<RequestId, SendError>>),
    Relay(Node, oneshot::Sender<Result<(), SendError>>),
    Send(Node, oneshot::Sender<Result<(), SendError>>),
    Confirm(AckToken, Confirm, oneshot::Sender<Result<(), SendError>>),
    PairingCode(String, oneshot::Sender<Result<String, SendError>>),
    Close,
}

/// A running client connection.
#[derive(Debug)]
pub struct TestClient {
    cmds: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<Session>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

/// Why a command could not be given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection task ended.
    #[error("client task ended")]
    Gone,
    /// The machine refused the command.
    #[error(transparent)]
    Send(#[from] SendError),
}

impl TestClient {
    /// Connects to `url` and starts the machine with `session`; `seed` seeds the machine.
    /// The test client works at the stanza level: end-to-end handling is turned off
    /// ([`Config::end_to_end`]), so encrypted stanzas arrive as they are.
    ///
    /// # Errors
    /// When the WebSocket cannot be opened.
    pub async fn connect(
        url: &str,
        mut config: Config,
        session: Session,
        seed: [u8; 32],
    ) -> Result<Self, async_tungstenite::tungstenite::Error> {
        config.end_to_end = false;
        let (ws, _) = async_tungstenite::tokio::connect_async(url).await?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(ws, config, session, seed, cmd_rx, ev_tx));
        Ok(Self {
            cmds: cmd_tx,
            events: ev_rx,
            task,
        })
    }

    /// The next machine event within `within`.
    ///
    /// # Errors
    /// [`WaitError::Timeout`], or [`WaitError::Closed`] after the last event.
    pub async fn next_event(&mut self, within: Duration) -> Result<Event, WaitError> {
        match tokio::time::timeout(within, self.events.recv()).await {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(WaitError::Closed),
            Err(_) => Err(WaitError::Timeout),
        }
    }

    /// Waits at most `within` for the first event `pred` maps to `Some`; earlier events are
    /// consumed.
    ///
    /// # Errors
    /// As [`next_event`](Self::next_event).
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, WaitError> {
        let fut = async {
            while let Some(e) = self.events.recv().await {
                if let Some(t) = pred(&e) {
                    return Ok(t);
                }
            }
            Err(WaitError::Closed)
        };
        tokio::time::timeout(within, fut)
            .await
            .unwrap_or(Err(WaitError::Timeout))
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SendError>>) -> Cmd,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).map_err(|_| ClientError::Gone)?;
        Ok(rx.await.map_err(|_| ClientError::Gone)??)
    }

    /// Sends an IQ; the answer comes as [`Event::IqResponse`].
    ///
    /// # Errors
    /// When the task ended or the machine refused.
    pub async fn send_iq(&self, req: IqRequest) -> Result<RequestId, ClientError> {
        self.ask(|tx| Cmd::Iq(req, tx)).await
    }

    /// Sends an IQ and waits at most `within` for its answer (events before it are consumed).
    ///
    /// # Errors
    /// [`WaitError::Closed`] when the task ended or the machine refused, [`WaitError::Timeout`].
    pub async fn query(&mut self, req: IqRequest, within: Duration) -> Result<IqResult, WaitError> {
        let id = self.send_iq(req).await.map_err(|_| WaitError::Closed)?;
        self.wait_for(within, |e| match e {
            Event::IqResponse { id: got, result } if *got == id => Some(result.clone()),
            _ => None,
        })
        .await
    }

    /// Relays a `<message>`; the server's ack comes as [`Event::MessageAck`].
    ///
    /// # Errors
    /// When the task ended or the machine refused.
    pub async fn relay(&self, node: Node) -> Result<(), ClientError> {
        self.ask(|tx| Cmd::Relay(node, tx)).await
    }

    /// Sends a stanza the machine does not track (a receipt, presence, …).
    ///
    /// # Errors
    /// When the task ended or the machine refused.
    pub async fn send(&self, node: Node) -> Result<(), ClientError> {
        self.ask(|tx| Cmd::Send(node, tx)).await
    }

    /// Confirms a held ack.
    ///
    /// # Errors
    /// When the task ended or the machine refused.
    pub async fn confirm(&self, token: AckToken, how: Confirm) -> Result<(), ClientError> {
        self.ask(|tx| Cmd::Confirm(token, how, tx)).await
    }

    /// Starts phone-code pairing for `phone`; returns the code to type on the phone.
    ///
    /// # Errors
    /// When the task ended or the machine refused.
    pub async fn pairing_code(&self, phone: &str) -> Result<String, ClientError> {
        let phone = phone.to_owned();
        self.ask(|tx| Cmd::PairingCode(phone, tx)).await
    }

    /// Closes the connection from the client side.
    pub fn close(&self) {
        let _ = self.cmds.send(Cmd::Close);
    }

    /// Waits (at most `within`) for the connection to end and returns the session for the next
    /// one. Events not yet read are dropped.
    ///
    /// # Errors
    /// [`WaitError::Timeout`], or [`WaitError::Closed`] when the task failed.
    pub async fn finish(self, within: Duration) -> Result<Session, WaitError> {
        match tokio::time::timeout(within, self.task).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(_)) => Err(WaitError::Closed),
            Err(_) => Err(WaitError::Timeout),
        }
    }
}

type ClientWs = async_tungstenite::WebSocketStream<async_tungstenite::tokio::ConnectStream>;

enum In {
    Ws(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Cmd(Option<Cmd>),
    Timer,
}

/// The run loop: drain outputs, then wait on the socket, a command or the machine's deadline.
async fn drive(
    mut ws: ClientWs,
    config: Config,
    session: Session,
    seed: [u8; 32],
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<Event>,
) -> Session {
    let origin = tokio::time::Instant::now();
    let now = || Instant::from_origin(origin.elapsed());
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let clock = Clock {
        at: Instant::ZERO,
        unix_ms,
    };
    let mut machine = ConnectionMachine::new(config, session, clock, seed);
    loop {
        let mut closed = false;
        while let Some(out) = machine.poll_output() {
            match out {
                Output::Transmit(bytes) => {
                    if ws.send(Message::Binary(bytes)).await.is_err() {
                        machine.handle_socket_closed(now());
                    }
                }
                Output::Event(e) => {
                    closed |= matches!(e, Event::Closed { .. });
                    let _ = events.send(e);
                }
            }
        }
        if closed || machine.is_closed() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            return machine.into_session();
        }
        let deadline = machine
            .poll_timeout()
            .map(|t| origin + t.since_origin())
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let input = tokio::select! {
            m = ws.next() => In::Ws(m),
            c = cmds.recv() => In::Cmd(c),
            () = tokio::time::sleep_until(deadline) => In::Timer,
        };
        match input {
            In::Ws(Some(Ok(Message::Binary(b)))) => machine.handle_input(now(), &b),
            In::Ws(Some(Ok(Message::Close(_)) | Err(_)) | None) => {
                machine.handle_socket_closed(now());
            }
            In::Ws(Some(Ok(_))) => {}
            In::Cmd(Some(cmd)) => run_cmd(&mut machine, now(), cmd),
            In::Cmd(None) => machine.close_locally(now()),
            In::Timer => machine.handle_timeout(now()),
        }
    }
}

fn run_cmd(machine: &mut ConnectionMachine, now: Instant, cmd: Cmd) {
    match cmd {
        Cmd::Iq(req, tx) => {
            let _ = tx.send(machine.send_iq(now, req));
        }
        Cmd::Relay(node, tx) => {
            let _ = tx.send(machine.relay_message(now, node, Bytes::new()));
        }
        Cmd::Send(node, tx) => {
            let _ = tx.send(machine.send_node(now, &node));
        }
        Cmd::Confirm(token, how, tx) => {
            let _ = tx.send(machine.confirm(now, token, how));
        }
        Cmd::PairingCode(phone, tx) => {
            let _ = tx.send(machine.request_pairing_code(now, &phone));
        }
        Cmd::Close => machine.close_locally(now),
    }
}

/// A machine config that trusts the simulator's chain (other settings default).
pub fn config_for(sim: &super::Simulator) -> Config {
    Config {
        trust: sim.trust_anchor(),
        ..Config::default()
    }
}

/// The simulator's trust root from the hex it prints (the `ROOT_HEX` argument of the
/// child-process binaries).
///
/// # Errors
/// Not 32 bytes of hex.
pub fn parse_root(hex: &str) -> Result<[u8; 32], String> {
    hex::decode(hex)
        .ok()
        .and_then(|r| <[u8; 32]>::try_from(r).ok())
        .ok_or_else(|| "ROOT_HEX: 32 bytes of hex".to_owned())
}

/// A client configuration for a simulator in another process, reached at `url` and trusted
/// by its `root` (the child-process binaries and the load benchmark): end-to-end on, a short
/// close.
pub fn remote_config(url: &str, root: [u8; 32]) -> amarula::ClientConfig {
    amarula::ClientConfig {
        url: url.to_owned(),
        machine: Config {
            trust: amarula_core::noise::TrustAnchor::new(root, 0),
            end_to_end: true,
            ..Config::default()
        },
        close_timeout: Duration::from_millis(200),
        ..amarula::ClientConfig::default()
    }
}

/// Fresh, unpaired credentials drawn from `seed`.
pub fn fresh_credentials(seed: u8) -> amarula_core::credentials::Credentials {
    use rand_core::SeedableRng;
    amarula_core::credentials::Credentials::generate(&mut rand_chacha::ChaCha20Rng::from_seed(
        [seed; 32],
    ))
}

/// A session for a device of `account` linked directly ([`Account::link_device`]), ready to
/// log in.
///
/// [`Account::link_device`]: super::Account::link_device
pub fn linked_session(account: &super::Account, seed: u8, config: &Config) -> Session {
    let mut creds = fresh_credentials(seed);
    creds.device = Some(account.link_device(&creds));
    Session::new(creds, config)
}
