//! Recorded sessions: everything fed to a client machine (seed, clock, credentials, and each
//! step: bytes, timeouts, commands) and everything it gave back, as JSON in
//! `vectors/sessions/`. A replay feeds the same inputs to a fresh machine and checks every
//! output frame byte for byte and every event.
//!
//! Schema (`"schema": "amarula-session-v1"`): `seed` (hex, 32 bytes), `clock` (`at_ms`,
//! `unix_ms`), `trust` (`root_public` hex, `issuer_serial`), `credentials` (see
//! [`credentials_to_json`]), and `steps`, each `{ "at": ms, <input>, "outputs": [...] }` where
//! the input is one of `"start": true`, `"bytes": hex`, `"timeout": true`,
//! `"socket_closed": true`, `"send_iq": {"node": hex, "timeout_ms": n|null}`,
//! `"relay": {"node": hex, "context": hex}`, `"confirm": {"token": n, "how": ...}`,
//! `"pairing_code": phone`, `"close": true`; and each output is `{"transmit": hex}` or
//! `{"event": "<Debug form of the event>"}`. The config is the default one with the recorded
//! trust anchor.

use std::time::Duration;

pub use amarula::store::{credentials_from_json, credentials_to_json};
use amarula_core::binary::{self, Node};
use amarula_core::machine::{
    AckToken, Config, Confirm, ConnectionMachine, IqRequest, Output, Session,
};
use amarula_core::noise::TrustAnchor;
use amarula_core::time::{Clock, Instant};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::report::Report;

/// One input to the client.
#[derive(Debug, Clone)]
pub enum Step {
    /// The machine was created.
    Start {
        /// When.
        at: Instant,
    },
    /// Bytes from the socket.
    Input {
        /// When.
        at: Instant,
        /// The bytes.
        bytes: Bytes,
    },
    /// `handle_timeout`.
    Timeout {
        /// When.
        at: Instant,
    },
    /// `handle_socket_closed`.
    SocketClosed {
        /// When.
        at: Instant,
    },
    /// `send_iq`.
    SendIq {
        /// When.
        at: Instant,
        /// The node.
        node: Node,
        /// Its timeout.
        timeout: Option<Duration>,
    },
    /// `relay_message`.
    Relay {
        /// When.
        at: Instant,
        /// The node.
        node: Node,
        /// Its context.
        context: Bytes,
    },
    /// `confirm`.
    Confirm {
        /// When.
        at: Instant,
        /// The token.
        token: AckToken,
        /// What to send.
        how: Confirm,
    },
    /// `request_pairing_code`.
    PairingCode {
        /// When.
        at: Instant,
        /// The phone number.
        phone: String,
    },
    /// `close_locally`.
    Close {
        /// When.
        at: Instant,
    },
}

/// Collects the steps of one machine's life and the outputs after each.
#[derive(Debug, Clone)]
pub struct Recorder {
    header: Value,
    steps: Vec<Value>,
}

fn hx(b: &[u8]) -> String {
    hex::encode(b)
}

fn node_hex(n: &Node) -> String {
    hx(&binary::to_vec(n).unwrap_or_default())
}

impl Recorder {
    /// Starts a recording of a machine created with these arguments.
    pub fn new(config: &Config, session: &Session, clock: Clock, seed: [u8; 32]) -> Self {
        let header = json!({
            "schema": "amarula-session-v1",
            "seed": hx(&seed),
            "clock": {"at_ms": clock.at.as_millis(), "unix_ms": clock.unix_ms},
            "trust": {
                "root_public": hx(&config.trust.root_public),
                "issuer_serial": config.trust.issuer_serial,
            },
            "credentials": credentials_to_json(session.credentials()),
        });
        let mut r = Self {
            header,
            steps: Vec::new(),
        };
        r.push(Step::Start { at: clock.at });
        r
    }

    /// Begins a step.
    pub fn push(&mut self, step: Step) {
        let (at, input) = match step {
            Step::Start { at } => (at, json!({"start": true})),
            Step::Input { at, bytes } => (at, json!({"bytes": hx(&bytes)})),
            Step::Timeout { at } => (at, json!({"timeout": true})),
            Step::SocketClosed { at } => (at, json!({"socket_closed": true})),
            Step::SendIq { at, node, timeout } => (
                at,
                json!({"send_iq": {
                    "node": node_hex(&node),
                    "timeout_ms": timeout.map(|t| t.as_millis() as u64),
                }}),
            ),
            Step::Relay { at, node, context } => (
                at,
                json!({"relay": {"node": node_hex(&node), "context": hx(&context)}}),
            ),
            Step::Confirm { at, token, how } => (
                at,
                json!({"confirm": {"token": token.to_raw(), "how": confirm_to_json(&how)}}),
            ),
            Step::PairingCode { at, phone } => (at, json!({"pairing_code": phone})),
            Step::Close { at } => (at, json!({"close": true})),
        };
        let mut v = input;
        v["at"] = json!(at.as_millis());
        v["outputs"] = json!([]);
        self.steps.push(v);
    }

    /// Records an output of the current step.
    pub fn output(&mut self, out: &Output) {
        let v = output_to_json(out);
        if let Some(step) = self.steps.last_mut() {
            if let Some(list) = step["outputs"].as_array_mut() {
                list.push(v);
            }
        }
    }

    /// The recording as JSON, with a name and a description.
    pub fn to_json(&self, name: &str, description: &str) -> Value {
        let mut v = self.header.clone();
        v["name"] = json!(name);
        v["description"] = json!(description);
        v["steps"] = Value::Array(self.steps.clone());
        v
    }
}

fn output_to_json(out: &Output) -> Value {
    match out {
        Output::Transmit(b) => json!({"transmit": hx(b)}),
        Output::Event(e) => json!({"event": format!("{e:?}")}),
    }
}

fn confirm_to_json(how: &Confirm) -> Value {
    match how {
        Confirm::Ack => json!("ack"),
        Confirm::Nack(code) => json!({"nack": code}),
        Confirm::Replace(node) => json!({"replace": node_hex(node)}),
    }
}

fn field<'a>(v: &'a Value, k: &str) -> Result<&'a Value, String> {
    v.get(k).ok_or_else(|| format!("missing `{k}`"))
}

fn hex_field(v: &Value, k: &str) -> Result<Vec<u8>, String> {
    let s = field(v, k)?
        .as_str()
        .ok_or_else(|| format!("`{k}` is not a string"))?;
    hex::decode(s).map_err(|e| format!("`{k}`: {e}"))
}

fn arr32(v: &Value, k: &str) -> Result<[u8; 32], String> {
    hex_field(v, k)?
        .try_into()
        .map_err(|_| format!("`{k}` is not 32 bytes"))
}

fn u64_field(v: &Value, k: &str) -> Result<u64, String> {
    field(v, k)?
        .as_u64()
        .ok_or_else(|| format!("`{k}` is not a number"))
}

/// Replays one recorded session; one report case for the whole session (the first difference
/// fails it, naming the step, and expected and actual output).
pub fn replay(file: &Value) -> Result<(), String> {
    let seed = arr32(file, "seed")?;
    let clock_v = field(file, "clock")?;
    let clock = Clock {
        at: Instant::from_millis(u64_field(clock_v, "at_ms")?),
        unix_ms: u64_field(clock_v, "unix_ms")?,
    };
    let trust_v = field(file, "trust")?;
    let config = Config {
        trust: TrustAnchor {
            root_public: arr32(trust_v, "root_public")?,
            issuer_serial: u64_field(trust_v, "issuer_serial")? as u32,
        },
        // Recordings are of the connection layer: end-to-end handling (which sends prekey
        // queries unasked) is off unless the file says otherwise.
        end_to_end: file
            .get("end_to_end")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..Config::default()
    };
    let creds = credentials_from_json(field(file, "credentials")?)
        .map_err(|e| format!("credentials: {e}"))?;
    let session = Session::new(creds, &config);
    let steps = field(file, "steps")?
        .as_array()
        .ok_or("`steps` is not a list")?;
    let mut machine: Option<ConnectionMachine> = None;
    for (i, step) in steps.iter().enumerate() {
        let at = Instant::from_millis(u64_field(step, "at")?);
        let node_of = |v: &Value| -> Result<Node, String> {
            binary::decode_owned(&hex_field(v, "node")?).map_err(|e| format!("step {i}: {e}"))
        };
        if step.get("start").is_some() {
            machine = Some(ConnectionMachine::new(
                config.clone(),
                session.clone(),
                clock,
                seed,
            ));
        } else {
            let m = machine
                .as_mut()
                .ok_or_else(|| format!("step {i}: no start step"))?;
            if step.get("bytes").is_some() {
                m.handle_input(at, &hex_field(step, "bytes")?);
            } else if step.get("timeout").is_some() {
                m.handle_timeout(at);
            } else if step.get("socket_closed").is_some() {
                m.handle_socket_closed(at);
            } else if let Some(q) = step.get("send_iq") {
                let timeout = q
                    .get("timeout_ms")
                    .and_then(Value::as_u64)
                    .map(Duration::from_millis);
                let req = IqRequest {
                    node: node_of(q)?,
                    timeout,
                };
                m.send_iq(at, req).map_err(|e| format!("step {i}: {e}"))?;
            } else if let Some(r) = step.get("relay") {
                let context = Bytes::from(hex_field(r, "context")?);
                m.relay_message(at, node_of(r)?, context)
                    .map_err(|e| format!("step {i}: {e}"))?;
            } else if let Some(c) = step.get("confirm") {
                let token = AckToken::from_raw(u64_field(c, "token")?);
                let how = match field(c, "how")? {
                    Value::String(s) if s == "ack" => Confirm::Ack,
                    h if h.get("nack").is_some() => Confirm::Nack(u64_field(h, "nack")? as u16),
                    h => Confirm::Replace(
                        binary::decode_owned(&hex_field(h, "replace")?)
                            .map_err(|e| format!("step {i}: {e}"))?,
                    ),
                };
                let _ = m.confirm(at, token, how);
            } else if let Some(p) = step.get("pairing_code") {
                let _ = m.request_pairing_code(at, p.as_str().unwrap_or(""));
            } else if step.get("close").is_some() {
                m.close_locally(at);
            } else {
                return Err(format!("step {i}: unknown input"));
            }
        }
        let m = machine
            .as_mut()
            .ok_or_else(|| format!("step {i}: no start step"))?;
        let mut actual = Vec::new();
        while let Some(out) = m.poll_output() {
            actual.push(output_to_json(&out));
        }
        let expected = field(step, "outputs")?
            .as_array()
            .ok_or("`outputs` is not a list")?;
        for (j, (e, a)) in expected.iter().zip(&actual).enumerate() {
            if e != a {
                return Err(format!(
                    "step {i} output {j} differs\n  expected {e}\n  actual   {a}"
                ));
            }
        }
        if expected.len() != actual.len() {
            return Err(format!(
                "step {i}: expected {} outputs, got {}\n  expected {}\n  actual   {}",
                expected.len(),
                actual.len(),
                Value::Array(expected.clone()),
                Value::Array(actual)
            ));
        }
    }
    Ok(())
}

/// Checks a recorded session file (or a file with a `sessions` list of them).
pub fn check(file: &Value) -> Report {
    let mut report = Report::default();
    let sessions: Vec<&Value> = match file.get("sessions").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![file],
    };
    for (i, s) in sessions.iter().enumerate() {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
        report.record(replay(s).map_err(|e| format!("session {i} ({name}): {e}")));
    }
    report
}
