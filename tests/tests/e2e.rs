//! End to end: the real drivers (tokio and smol) over real loopback sockets against the
//! simulator. Every scenario runs once per runtime; every wait is bounded and the tests stop by
//! themselves.

use std::time::Duration;

use amarula::core::binary::Node;
use amarula::core::jid::Jid;
use amarula::core::machine::{
    CloseReason, Confirm, Event, IqRequest, IqResult, MessageAckResult, Reconnect,
};
use amarula::store::{CredentialStore, FileStore};
use amarula::{ClientConfig, ClientEvent};
use amarula_tests::e2e::{Device, Env, Ready};
use amarula_tests::runtimes::{Runtime as Rt, Smol, Tokio};
use amarula_tests::sim::{Action, Direction, Rule, Target};
use bytes::Bytes;

/// These scenarios test the connection layer over the drivers, with a credentials-only store;
/// end-to-end messaging has its own suites.
fn config(env: &Env) -> ClientConfig {
    let mut config = env.config();
    config.machine.end_to_end = false;
    config
}

/// A client on `store`, as soon as it runs.
async fn connect<R: Rt, S: CredentialStore>(env: &Env, name: &str, store: S) -> Device {
    Device::connect::<R, S>(name, config(env), store, Ready::Started).await
}

fn logged_in(_: &Device, e: &ClientEvent) -> Option<()> {
    matches!(e, ClientEvent::Event(Event::LoggedIn { .. })).then_some(())
}

fn disconnected(_: &Device, e: &ClientEvent) -> Option<(String, Reconnect)> {
    match e {
        ClientEvent::Disconnected { reason, reconnect } => {
            Some((format!("{reason:?}"), *reconnect))
        }
        _ => None,
    }
}

async fn qr_pairing_then_login<R: Rt>(env: &Env) {
    let account = env.sim.add_account("15550001001");
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("qr.json"));
    let mut d = connect::<R, _>(env, "qr", store.clone()).await;
    let qr = d
        .until("QR", |_, e| match e {
            ClientEvent::Event(Event::PairingQr { qr, .. }) => Some(qr.clone()),
            _ => None,
        })
        .await;
    let device = account.scan_qr(&qr).unwrap();
    let paired = d
        .until("Paired", |_, e| match e {
            ClientEvent::Event(Event::Paired { device }) => Some(device.jid.clone()),
            _ => None,
        })
        .await;
    assert_eq!(paired, device);
    let (reason, reconnect) = d.until("515", disconnected).await;
    assert!(reason.contains("RestartRequired"), "{reason}");
    assert_eq!(reconnect, Reconnect::Now);
    d.until("LoggedIn", logged_in).await;
    d.stop().await;

    // A restart with the stored credentials logs in without pairing.
    let stored = store.load().await.unwrap().expect("credentials stored");
    assert!(stored.is_paired());
    let mut d = connect::<R, _>(env, "qr again", store).await;
    d.until("LoggedIn", logged_in).await;
    assert!(
        !d.seen.iter().any(|e| e.contains("PairingQr")),
        "paired again: {:?}",
        d.seen
    );
    d.stop().await;
}

async fn phone_code_pairing<R: Rt>(env: &Env) {
    let account = env.sim.add_account("15550001002");
    let dir = tempfile::tempdir().unwrap();
    let mut d = connect::<R, _>(env, "code", FileStore::new(dir.path().join("code.json"))).await;
    d.until("QR", |_, e| {
        matches!(e, ClientEvent::Event(Event::PairingQr { .. })).then_some(())
    })
    .await;
    let code = d.client.request_pairing_code("15550001002").await.unwrap();
    assert_eq!(code.len(), 8);
    d.until("code accepted", |_, e| {
        matches!(e, ClientEvent::Event(Event::PairingCodeAccepted)).then_some(())
    })
    .await;
    account.enter_code(&code).unwrap();
    d.until("Paired", |_, e| {
        matches!(e, ClientEvent::Event(Event::Paired { .. })).then_some(())
    })
    .await;
    d.until("LoggedIn", logged_in).await;
    d.stop().await;
}

async fn iq_round_trips_and_timeout<R: Rt>(env: &Env) {
    let store = env.linked("15550001003", 30);
    let mut d = connect::<R, _>(env, "client", store).await;
    d.until("LoggedIn", logged_in).await;
    let usync = IqRequest::iq("usync", "get", Jid::server(), vec![Node::new("usync")]);
    assert!(matches!(
        d.client.query_iq(usync).await.unwrap(),
        IqResult::Ok(_)
    ));
    let unknown = IqRequest::iq("amarula:nothing", "get", Jid::server(), vec![]);
    match d.client.query_iq(unknown).await.unwrap() {
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
    assert_eq!(d.client.query_iq(stats).await.unwrap(), IqResult::Timeout);
    d.stop().await;
}

async fn message_between_two_clients<R: Rt>(env: &Env) {
    let a = env.linked("15550001004", 31);
    let b = env.linked("15550001005", 32);
    let mut a = connect::<R, _>(env, "a", a).await;
    let mut b = connect::<R, _>(env, "b", b).await;
    a.until("A logged in", logged_in).await;
    b.until("B logged in", logged_in).await;
    let to: Jid = "15550001005@s.whatsapp.net".parse().unwrap();
    let msg = Node::new("message")
        .attr("id", "3EB0E2E0000001")
        .attr("to", to)
        .attr("type", "text")
        .children([Node::new("enc")
            .attr("v", "2")
            .attr("type", "msg")
            .bytes(vec![7; 32])]);
    let ack = a
        .client
        .relay_stanza(msg, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert!(matches!(ack, MessageAckResult::Delivered { .. }), "{ack:?}");
    let token = b
        .until("message at B", |_, e| match e {
            ClientEvent::Event(Event::Stanza { node, ack: Some(t) })
                if node.tag == "message" && node.attr_str("id") == Some("3EB0E2E0000001") =>
            {
                Some(*t)
            }
            _ => None,
        })
        .await;
    b.client.confirm(token, Confirm::Ack).await.unwrap();
    a.stop().await;
    b.stop().await;
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
    let store = env.linked("15550001006", 33);
    env.sim
        .faults()
        .add_times(Target::Any, Rule::DropAtFrame { dir, frame }, 1);
    let mut d = connect::<R, _>(env, "client", store).await;
    let (reason, reconnect) = d.until("the drop", disconnected).await;
    assert_ne!(reconnect, Reconnect::Never, "{dir:?} {frame}: {reason}");
    d.until("LoggedIn after the drop", logged_in).await;
    d.stop().await;
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
    let store = env.linked("15550001007", 40);
    env.sim.faults().add_times(Target::Any, rule.clone(), 1);
    let mut d = connect::<R, _>(env, "client", store).await;
    let (reason, reconnect) = d.until("the close", disconnected).await;
    assert!(reason.contains(want), "{rule:?}: {reason}");
    assert!(decision(reconnect), "{rule:?}: {reconnect:?}");
    if relogs {
        d.until("LoggedIn again", logged_in).await;
        d.stop().await;
    } else {
        d.until("Stopped", |_, e| {
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
                let env = Env::pn_legacy();
                <$rt>::block_on(&env.rt, qr_pairing_then_login::<$rt>(&env));
            }

            #[test]
            fn phone_code() {
                let env = Env::pn_legacy();
                <$rt>::block_on(&env.rt, phone_code_pairing::<$rt>(&env));
            }

            #[test]
            fn iq() {
                let env = Env::pn_legacy();
                <$rt>::block_on(&env.rt, iq_round_trips_and_timeout::<$rt>(&env));
            }

            #[test]
            fn messages() {
                let env = Env::pn_legacy();
                <$rt>::block_on(&env.rt, message_between_two_clients::<$rt>(&env));
            }

            #[test]
            fn drops_at_every_handshake_and_login_frame() {
                // A fresh simulator per case: no rule can be taken by an earlier connection.
                for (dir, frame) in drop_points() {
                    let env = Env::pn_legacy();
                    <$rt>::block_on(&env.rt, drop_then_reconnect::<$rt>(&env, dir, frame));
                }
            }

            #[test]
            fn close_reasons() {
                for case in close_cases() {
                    let env = Env::pn_legacy();
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
