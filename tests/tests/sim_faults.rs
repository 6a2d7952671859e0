//! Every fault kind of the simulator, observed from the client machine's side.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use amarula_core::machine::{Config, Event, IqRequest, IqResult, MessageAckResult, Session};
use amarula_tests::sim::client::{TestClient, config_for, linked_session};
use amarula_tests::sim::{Action, Direction, Rule, SimConfig, SimEvent, Simulator, Target};

const T: Duration = Duration::from_secs(10);

async fn sim() -> Simulator {
    Simulator::start(SimConfig::pn_legacy())
        .await
        .expect("bind")
}

/// A linked device of a fresh account, connected (not yet waited for login).
async fn connect(sim: &Simulator, phone: &str, seed: u8, config: Config) -> TestClient {
    let account = sim.add_account(phone);
    let session: Session = linked_session(&account, seed, &config);
    TestClient::connect(&sim.url(), config, session, [seed; 32])
        .await
        .expect("connect")
}

async fn logged_in(c: &mut TestClient) {
    c.wait_for(T, |e| matches!(e, Event::LoggedIn { .. }).then_some(()))
        .await
        .expect("logged in");
}

async fn close_reason(c: &mut TestClient) -> String {
    c.wait_for(T, |e| match e {
        Event::Closed { reason, .. } => Some(format!("{reason:?}")),
        _ => None,
    })
    .await
    .expect("closed")
}

async fn conn_of(events: &mut amarula_tests::sim::Subscription) -> amarula_tests::sim::ConnId {
    events
        .wait_for(T, |e| match e {
            SimEvent::ConnectionOpened { conn, .. } => Some(*conn),
            _ => None,
        })
        .await
        .expect("opened")
}

#[tokio::test]
async fn drop_at_server_frame_2_loses_the_success() {
    let sim = sim().await;
    // Frame 1 is the ServerHello, frame 2 the <success>.
    sim.faults().add(
        Target::Any,
        Rule::DropAtFrame {
            dir: Direction::ServerToClient,
            frame: 2,
        },
    );
    let mut c = connect(&sim, "15551000001", 1, config_for(&sim)).await;
    let reason = close_reason(&mut c).await;
    assert!(reason.contains("SocketClosed"), "{reason}");
}

#[tokio::test]
async fn drop_at_client_frame_1_kills_the_handshake() {
    let sim = sim().await;
    let mut events = sim.subscribe();
    sim.faults().add_times(
        Target::Any,
        Rule::DropAtFrame {
            dir: Direction::ClientToServer,
            frame: 1,
        },
        1,
    );
    let mut c = connect(&sim, "15551000002", 2, config_for(&sim)).await;
    let reason = close_reason(&mut c).await;
    assert!(reason.contains("SocketClosed"), "{reason}");
    events
        .wait_for(T, |e| {
            matches!(e, SimEvent::FaultFired { .. }).then_some(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn delayed_frames_arrive_late() {
    let sim = sim().await;
    sim.faults().add(
        Target::Any,
        Rule::Delay {
            dir: Direction::ServerToClient,
            by: Duration::from_millis(150),
        },
    );
    let start = tokio::time::Instant::now();
    let mut c = connect(&sim, "15551000003", 3, config_for(&sim)).await;
    logged_in(&mut c).await;
    // ServerHello and success, each held 150 ms.
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn withheld_iq_reply_times_out() {
    let sim = sim().await;
    sim.faults().add(
        Target::Any,
        Rule::WithholdIqReply {
            xmlns: Some("w:m".into()),
            id: None,
        },
    );
    let mut c = connect(&sim, "15551000004", 4, config_for(&sim)).await;
    logged_in(&mut c).await;
    let req = IqRequest::iq("w:m", "set", Jid::server(), vec![Node::new("media_conn")])
        .with_timeout(Duration::from_millis(300));
    let id = c.send_iq(req).await.unwrap();
    let result = c
        .wait_for(T, |e| match e {
            Event::IqResponse { id: got, result } if *got == id => Some(result.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(result, IqResult::Timeout);
}

#[tokio::test]
async fn withheld_message_ack_times_out() {
    let sim = sim().await;
    sim.faults().add(
        Target::Any,
        Rule::WithholdMessageAck {
            id: Some("M1".into()),
        },
    );
    let config = Config {
        message_ack_timeout: Duration::from_millis(300),
        ..config_for(&sim)
    };
    let bob = sim.add_account("15551000099");
    let mut c = connect(&sim, "15551000005", 5, config).await;
    logged_in(&mut c).await;
    c.relay(
        Node::new("message")
            .attr("id", "M1")
            .attr("to", bob.jid())
            .attr("type", "text"),
    )
    .await
    .unwrap();
    let result = c
        .wait_for(T, |e| match e {
            Event::MessageAck { id, result } if id == "M1" => Some(result.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert!(matches!(result, MessageAckResult::Timeout), "{result:?}");
}

#[tokio::test]
async fn injected_actions() {
    let sim = sim().await;
    let cases: Vec<(Action, &str)> = vec![
        (
            Action::StreamError {
                code: None,
                child: Some(Node::new("conflict").attr("type", "replaced")),
            },
            "Replaced",
        ),
        (Action::Failure { reason: 503 }, "ServiceUnavailable"),
        (Action::Garbled, "Transport"),
        (Action::Raw(vec![0, 0, 0].into()), "Transport"),
        (Action::Drop, "SocketClosed"),
    ];
    for (i, (action, want)) in cases.into_iter().enumerate() {
        let mut events = sim.subscribe();
        let seed = 10 + i as u8;
        let mut c = connect(&sim, &format!("1555200000{i}"), seed, config_for(&sim)).await;
        let conn = conn_of(&mut events).await;
        logged_in(&mut c).await;
        assert!(sim.faults().inject(conn, action.clone()));
        let reason = close_reason(&mut c).await;
        assert!(reason.contains(want), "{action:?}: {reason}");
    }
}

#[tokio::test]
async fn oversized_frame_ends_the_connection() {
    let sim = sim().await;
    let mut events = sim.subscribe();
    let mut c = connect(&sim, "15551000006", 6, config_for(&sim)).await;
    let conn = conn_of(&mut events).await;
    logged_in(&mut c).await;
    sim.faults().inject(conn, Action::Oversized);
    // The client's WebSocket refuses the 16 MiB message, or the machine fails to decrypt it.
    let reason = close_reason(&mut c).await;
    assert!(
        reason.contains("SocketClosed") || reason.contains("Transport"),
        "{reason}"
    );
}

#[tokio::test]
async fn failure_at_login() {
    let sim = sim().await;
    sim.faults().add_times(
        Target::Any,
        Rule::AtLogin(Action::Failure { reason: 403 }),
        1,
    );
    let mut c = connect(&sim, "15551000007", 7, config_for(&sim)).await;
    let reason = close_reason(&mut c).await;
    assert!(reason.contains("LoggedOut { code: 403 }"), "{reason}");
}

#[tokio::test]
async fn retry_receipt_reaches_the_sender() {
    let sim = sim().await;
    let mut events = sim.subscribe();
    let bob = sim.add_account("15551000098");
    let mut c = connect(&sim, "15551000008", 8, config_for(&sim)).await;
    let conn = conn_of(&mut events).await;
    logged_in(&mut c).await;
    c.relay(
        Node::new("message")
            .attr("id", "R1")
            .attr("to", bob.jid())
            .attr("type", "text"),
    )
    .await
    .unwrap();
    c.wait_for(T, |e| matches!(e, Event::MessageAck { .. }).then_some(()))
        .await
        .unwrap();
    sim.faults().inject(
        conn,
        Action::RetryReceipt {
            id: "R1".into(),
            from: bob.jid().with_device(3),
        },
    );
    let got = c
        .wait_for(T, |e| match e {
            Event::RetryRequested(r) => Some(r.id.clone()),
            Event::RetryRejected { id, .. } => Some(format!("rejected {id}")),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(got, "R1");
}

#[tokio::test]
async fn server_pings_are_answered() {
    let sim = Simulator::start(SimConfig {
        server_ping_interval: Some(Duration::from_millis(100)),
        ..SimConfig::pn_legacy()
    })
    .await
    .unwrap();
    let mut events = sim.subscribe();
    let mut c = connect(&sim, "15551000009", 9, config_for(&sim)).await;
    logged_in(&mut c).await;
    // The client's reply to the server ping: an iq result with no xmlns.
    events
        .wait_for(T, |e| match e {
            SimEvent::StanzaReceived { node, .. }
                if node.tag == "iq"
                    && node.attr_str("type") == Some("result")
                    && node.attr_str("xmlns").is_none() =>
            {
                Some(())
            }
            _ => None,
        })
        .await
        .unwrap();
}
