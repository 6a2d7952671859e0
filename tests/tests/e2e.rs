//! End to end: the real drivers (tokio and smol) over real loopback sockets against the
//! simulator. Every scenario runs once per runtime; every wait is bounded and the tests stop by
//! themselves.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use amarula::core::binary::Node;
use amarula::core::jid::Jid;
use amarula::core::machine::{
    CloseReason, Confirm, Event, IqRequest, IqResult, MessageAckResult, Reconnect,
};
use amarula::store::{CredentialStore, FileStore, MemoryStore};
use amarula::{Client, ClientConfig, ClientEvent, Events};
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{Action, Direction, Rule, SimConfig, Simulator, Target};
use bytes::Bytes;

/// The simulator on its own tokio runtime (its tasks keep running while a client runs on
/// either runtime), and a scratch folder.
struct Env {
    sim: Simulator,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
}

impl Env {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt
            .block_on(Simulator::start(SimConfig::pn_legacy()))
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "amarula-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self { sim, rt, dir }
    }

    fn config(&self) -> ClientConfig {
        let mut machine = config_for(&self.sim);
        // Keep reconnect delays short so fault tests stay fast.
        machine.max_backoff = Duration::from_millis(100);
        // These scenarios test the connection layer over the drivers, with a credentials-only
        // store; end-to-end messaging has its own suite (e2e_messaging.rs).
        machine.end_to_end = false;
        ClientConfig {
            url: self.sim.url(),
            machine,
            close_timeout: Duration::from_millis(200),
            ..ClientConfig::default()
        }
    }

    fn store(&self, name: &str) -> FileStore {
        FileStore::new(self.dir.join(format!("{name}.json")))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.sim.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A runtime: how to connect a client and how to run a test body.
use amarula_tests::runtimes::{Runtime as Rt, Smol, Tokio};

const WAIT: Duration = Duration::from_secs(10);

/// The first event for which `pred` gives `Some`, within `WAIT`; every event seen is kept in
/// `seen`. Panics on timeout or when the client stops first.
async fn wait<T>(
    events: &mut Events,
    seen: &mut Vec<String>,
    what: &str,
    mut pred: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    let deadline = smol::Timer::after(WAIT);
    let found = smol::future::or(
        async {
            while let Some(e) = events.recv().await {
                seen.push(format!("{e:?}"));
                if let Some(t) = pred(&e) {
                    return Some(t);
                }
            }
            None
        },
        async {
            deadline.await;
            None
        },
    )
    .await;
    found.unwrap_or_else(|| panic!("no {what} within {WAIT:?}; saw:\n{}", seen.join("\n")))
}

fn logged_in(e: &ClientEvent) -> Option<()> {
    matches!(e, ClientEvent::Event(Event::LoggedIn { .. })).then_some(())
}

fn disconnected(e: &ClientEvent) -> Option<(String, Reconnect)> {
    match e {
        ClientEvent::Disconnected { reason, reconnect } => {
            Some((format!("{reason:?}"), *reconnect))
        }
        _ => None,
    }
}

async fn stop(client: Client, events: &mut Events, seen: &mut Vec<String>) {
    client.stop().await;
    wait(events, seen, "Stopped", |e| {
        matches!(e, ClientEvent::Stopped).then_some(())
    })
    .await;
}

/// A store holding a device already linked to the account `phone`.
fn linked_store(env: &Env, phone: &str, seed: u8) -> MemoryStore {
    let account = env
        .sim
        .account(phone)
        .unwrap_or_else(|| env.sim.add_account(phone));
    let mut creds = fresh_credentials(seed);
    creds.device = Some(account.link_device(&creds));
    MemoryStore::with_credentials(creds)
}

async fn qr_pairing_then_login<R: Rt>(env: &Env) {
    let account = env.sim.add_account("15550001001");
    let store = env.store("qr");
    let mut seen = Vec::new();
    let (client, mut events) = R::connect(env.config(), store.clone()).await.unwrap();
    let qr = wait(&mut events, &mut seen, "QR", |e| match e {
        ClientEvent::Event(Event::PairingQr { qr, .. }) => Some(qr.clone()),
        _ => None,
    })
    .await;
    let device = account.scan_qr(&qr).unwrap();
    let paired = wait(&mut events, &mut seen, "Paired", |e| match e {
        ClientEvent::Event(Event::Paired { device }) => Some(device.jid.clone()),
        _ => None,
    })
    .await;
    assert_eq!(paired, device);
    let (reason, reconnect) = wait(&mut events, &mut seen, "515", disconnected).await;
    assert!(reason.contains("RestartRequired"), "{reason}");
    assert_eq!(reconnect, Reconnect::Now);
    wait(&mut events, &mut seen, "LoggedIn", logged_in).await;
    stop(client, &mut events, &mut seen).await;

    // A restart with the stored credentials logs in without pairing.
    let stored = store.load().await.unwrap().expect("credentials stored");
    assert!(stored.is_paired());
    let mut seen = Vec::new();
    let (client, mut events) = R::connect(env.config(), store).await.unwrap();
    wait(&mut events, &mut seen, "LoggedIn", logged_in).await;
    assert!(
        !seen.iter().any(|e| e.contains("PairingQr")),
        "paired again: {seen:?}"
    );
    stop(client, &mut events, &mut seen).await;
}

async fn phone_code_pairing<R: Rt>(env: &Env) {
    let account = env.sim.add_account("15550001002");
    let mut seen = Vec::new();
    let (client, mut events) = R::connect(env.config(), env.store("code")).await.unwrap();
    wait(&mut events, &mut seen, "QR", |e| {
        matches!(e, ClientEvent::Event(Event::PairingQr { .. })).then_some(())
    })
    .await;
    let code = client.request_pairing_code("15550001002").await.unwrap();
    assert_eq!(code.len(), 8);
    wait(&mut events, &mut seen, "code accepted", |e| {
        matches!(e, ClientEvent::Event(Event::PairingCodeAccepted)).then_some(())
    })
    .await;
    account.enter_code(&code).unwrap();
    wait(&mut events, &mut seen, "Paired", |e| {
        matches!(e, ClientEvent::Event(Event::Paired { .. })).then_some(())
    })
    .await;
    wait(&mut events, &mut seen, "LoggedIn", logged_in).await;
    stop(client, &mut events, &mut seen).await;
}

async fn iq_round_trips_and_timeout<R: Rt>(env: &Env) {
    let store = linked_store(env, "15550001003", 30);
    let mut seen = Vec::new();
    let (client, mut events) = R::connect(env.config(), store).await.unwrap();
    wait(&mut events, &mut seen, "LoggedIn", logged_in).await;
    let usync = IqRequest::iq("usync", "get", Jid::server(), vec![Node::new("usync")]);
    assert!(matches!(
        client.query_iq(usync).await.unwrap(),
        IqResult::Ok(_)
    ));
    let unknown = IqRequest::iq("amarula:nothing", "get", Jid::server(), vec![]);
    match client.query_iq(unknown).await.unwrap() {
        IqResult::Error { code, .. } => assert_eq!(code, 501),
        other => panic!("{other:?}"),
    }
    env.sim.faults().add_times(
        Target::Any,
        Rule::WithholdIqReply {
            xmlns: Some("w:stats".into()),
            id: None,
        },
        1,
    );
    let stats = IqRequest::iq("w:stats", "set", Jid::server(), vec![])
        .with_timeout(Duration::from_millis(300));
    assert_eq!(client.query_iq(stats).await.unwrap(), IqResult::Timeout);
    stop(client, &mut events, &mut seen).await;
}

async fn message_between_two_clients<R: Rt>(env: &Env) {
    let a = linked_store(env, "15550001004", 31);
    let b = linked_store(env, "15550001005", 32);
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    let (client_a, mut events_a) = R::connect(env.config(), a).await.unwrap();
    let (client_b, mut events_b) = R::connect(env.config(), b).await.unwrap();
    wait(&mut events_a, &mut seen_a, "A logged in", logged_in).await;
    wait(&mut events_b, &mut seen_b, "B logged in", logged_in).await;
    let to: Jid = "15550001005@s.whatsapp.net".parse().unwrap();
    let msg = Node::new("message")
        .attr("id", "3EB0E2E0000001")
        .attr("to", to)
        .attr("type", "text")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(vec![7; 32])]);
    let ack = client_a
        .relay_stanza(msg, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert!(matches!(ack, MessageAckResult::Delivered { .. }), "{ack:?}");
    let token = wait(&mut events_b, &mut seen_b, "message at B", |e| match e {
        ClientEvent::Event(Event::Stanza { node, ack: Some(t) })
            if node.tag == "message" && node.attr_str("id") == Some("3EB0E2E0000001") =>
        {
            Some(*t)
        }
        _ => None,
    })
    .await;
    client_b.confirm(token, Confirm::Ack).await.unwrap();
    stop(client_a, &mut events_a, &mut seen_a).await;
    stop(client_b, &mut events_b, &mut seen_b).await;
}

/// The drop points: the first three frames each way (ClientHello, ClientFinish, the active IQ;
/// ServerHello, `<success>`, the offline marker).
fn drop_points() -> Vec<(Direction, u64)> {
    [Direction::ClientToServer, Direction::ServerToClient]
        .into_iter()
        .flat_map(|dir| (1..=3).map(move |frame| (dir, frame)))
        .collect()
}

/// The server drops the connection at `frame` of `dir`; the client reconnects and logs in.
async fn drop_then_reconnect<R: Rt>(env: &Env, dir: Direction, frame: u64) {
    let store = linked_store(env, "15550001006", 33);
    env.sim
        .faults()
        .add_times(Target::Any, Rule::DropAtFrame { dir, frame }, 1);
    let mut seen = Vec::new();
    let (client, mut events) = R::connect(env.config(), store).await.unwrap();
    let (reason, reconnect) = wait(&mut events, &mut seen, "the drop", disconnected).await;
    assert_ne!(reconnect, Reconnect::Never, "{dir:?} {frame}: {reason}");
    wait(&mut events, &mut seen, "LoggedIn after the drop", logged_in).await;
    stop(client, &mut events, &mut seen).await;
}

/// (fault, expected close reason, expected decision, whether the client logs in again)
type CloseCase = (Rule, &'static str, fn(Reconnect) -> bool, bool);

fn close_cases() -> Vec<CloseCase> {
    vec![
        (
            Rule::AtLogin(Action::Failure { reason: 401 }),
            "LoggedOut",
            |r| r == Reconnect::Never,
            false,
        ),
        (
            Rule::AtLogin(Action::Failure { reason: 405 }),
            "ClientOutdated",
            |r| r == Reconnect::Never,
            false,
        ),
        (
            Rule::AtLogin(Action::Failure { reason: 503 }),
            "ServiceUnavailable",
            |r| matches!(r, Reconnect::After(_)),
            true,
        ),
        (
            Rule::AfterLogin(Action::StreamError {
                code: Some("515".into()),
                child: None,
            }),
            "RestartRequired",
            |r| r == Reconnect::Now,
            true,
        ),
        (
            Rule::AfterLogin(Action::StreamError {
                code: None,
                child: Some(Node::new("conflict").attr("type", "replaced")),
            }),
            "Replaced",
            |r| r == Reconnect::Never,
            false,
        ),
        (
            Rule::AfterLogin(Action::StreamError {
                code: Some("401".into()),
                child: Some(Node::new("conflict").attr("type", "device_removed")),
            }),
            "LoggedOut",
            |r| r == Reconnect::Never,
            false,
        ),
        (
            Rule::AfterLogin(Action::Garbled),
            "Transport",
            |r| matches!(r, Reconnect::After(_)),
            true,
        ),
    ]
}

/// One injected failure or stream error: the close reason and reconnect decision surface as
/// the `Disconnected` event, and the client reconnects or stops accordingly.
async fn close_case<R: Rt>(env: &Env, (rule, want, decision, relogs): CloseCase) {
    let store = linked_store(env, "15550001007", 40);
    env.sim.faults().add_times(Target::Any, rule.clone(), 1);
    let mut seen = Vec::new();
    let (client, mut events) = R::connect(env.config(), store).await.unwrap();
    let (reason, reconnect) = wait(&mut events, &mut seen, "the close", disconnected).await;
    assert!(reason.contains(want), "{rule:?}: {reason}");
    assert!(decision(reconnect), "{rule:?}: {reconnect:?}");
    if relogs {
        wait(&mut events, &mut seen, "LoggedIn again", logged_in).await;
        stop(client, &mut events, &mut seen).await;
    } else {
        wait(&mut events, &mut seen, "Stopped", |e| {
            matches!(e, ClientEvent::Stopped).then_some(())
        })
        .await;
    }
}

macro_rules! suite {
    ($module:ident, $rt:ty) => {
        mod $module {
            use super::*;

            #[test]
            fn qr_pairing_then_login_then_restart() {
                let env = Env::new();
                <$rt>::block_on(&env.rt, qr_pairing_then_login::<$rt>(&env));
            }

            #[test]
            fn phone_code() {
                let env = Env::new();
                <$rt>::block_on(&env.rt, phone_code_pairing::<$rt>(&env));
            }

            #[test]
            fn iq() {
                let env = Env::new();
                <$rt>::block_on(&env.rt, iq_round_trips_and_timeout::<$rt>(&env));
            }

            #[test]
            fn messages() {
                let env = Env::new();
                <$rt>::block_on(&env.rt, message_between_two_clients::<$rt>(&env));
            }

            #[test]
            fn drops_at_every_handshake_and_login_frame() {
                // A fresh simulator per case: no rule can be taken by an earlier connection.
                for (dir, frame) in drop_points() {
                    let env = Env::new();
                    <$rt>::block_on(&env.rt, drop_then_reconnect::<$rt>(&env, dir, frame));
                }
            }

            #[test]
            fn close_reasons() {
                for case in close_cases() {
                    let env = Env::new();
                    <$rt>::block_on(&env.rt, close_case::<$rt>(&env, case));
                }
            }
        }
    };
}

suite!(tokio_driver, Tokio);
suite!(smol_driver, Smol);

#[test]
fn close_reason_names_are_stable() {
    // The scenarios match close reasons by their Debug names; keep them honest.
    let r = format!("{:?}", CloseReason::RestartRequired);
    assert_eq!(r, "RestartRequired");
}
