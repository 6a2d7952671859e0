//! End-to-end encrypted messaging through the real drivers (tokio and smol) over loopback
//! sockets against the simulator: two accounts with two linked devices each and their phones,
//! a group of three with a member added later, the retry path, and bad input. Every scenario
//! runs once per runtime; every wait is bounded.

use std::time::Duration;

use amarula::core::binary::Node;
use amarula::core::machine::Event;
use amarula::{ClientConfig, ClientEvent};
use amarula_tests::e2e::{Device, Env, Ready, sim_wait, user};
use amarula_tests::runtimes::Runtime as Rt;
use amarula_tests::sim::{Action, Rule, SimEvent, Subscription, Target};

/// Waits for the simulated phone of `account` to decrypt `text`.
async fn phone_receives(rx: &mut Subscription, account: &str, text: &str) {
    sim_wait(
        rx,
        &format!("the phone of {account} decrypting {text:?}"),
        |e| match e {
            SimEvent::PhoneMessage {
                account: a,
                message,
                ..
            } if a == account => {
                let body = message.conversation.as_deref().or_else(|| {
                    message
                        .device_sent_message
                        .as_ref()
                        .and_then(|d| d.message.as_ref())
                        .and_then(|m| m.conversation.as_deref())
                });
                (body == Some(text)).then_some(())
            }
            SimEvent::PhoneUndecryptable {
                account: a, error, ..
            } if a == account => {
                panic!("the phone of {account} could not decrypt: {error}")
            }
            _ => None,
        },
    )
    .await;
}

async fn two_accounts_with_two_devices<R: Rt>(env: &Env) {
    let (a, b) = ("15550002001", "15550002002");
    let mut phones = env.sim.subscribe();
    let mut a1 = Device::start::<R>(env, "a1", a, 1).await;
    let mut a2 = Device::start::<R>(env, "a2", a, 2).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 3).await;
    let mut b2 = Device::start::<R>(env, "b2", b, 4).await;

    let id = a1.client.send_text(&user(b), "hello b").await.unwrap();
    for d in [&mut b1, &mut b2] {
        let m = d.receive("hello b").await;
        assert_eq!(m.id, id);
        assert_eq!(m.chat, user(a));
        assert_eq!(m.sender.user_part(), a);
        assert!(!m.from_me);
    }
    // A's other device gets its own copy, as sent by A.
    let m = a2.receive("hello b").await;
    assert!(m.from_me, "{m:?}");
    assert_eq!(m.chat, user(b));
    phone_receives(&mut phones, b, "hello b").await;
    phone_receives(&mut phones, a, "hello b").await;

    // B answers from its first device.
    b1.client.send_text(&user(a), "hi a").await.unwrap();
    for d in [&mut a1, &mut a2] {
        let m = d.receive("hi a").await;
        assert_eq!(m.chat, user(b));
        assert!(!m.from_me);
    }
    let m = b2.receive("hi a").await;
    assert!(m.from_me);
    assert_eq!(m.chat, user(a));
    phone_receives(&mut phones, a, "hi a").await;

    // A conversation on established sessions.
    for n in 0..5 {
        let text = format!("again {n}");
        a2.client.send_text(&user(b), &text).await.unwrap();
        b2.receive(&text).await;
        b1.receive(&text).await;
        a1.receive(&text).await;
    }
    for d in [&a1, &a2, &b1, &b2] {
        d.assert_all_decrypted();
    }
    for d in [a1, a2, b1, b2] {
        d.stop().await;
    }
}

async fn group_of_three_and_a_late_member<R: Rt>(env: &Env) {
    let (a, b, c, d) = ("15550003001", "15550003002", "15550003003", "15550003004");
    let mut a1 = Device::start::<R>(env, "a1", a, 11).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 12).await;
    let mut c1 = Device::start::<R>(env, "c1", c, 13).await;
    let group = env.sim.account(a).unwrap().create_group("three", &[b, c]);
    for (n, sender) in ["a", "b", "c"].iter().enumerate() {
        let text = format!("from {sender}");
        let from = match n {
            0 => &a1,
            1 => &b1,
            _ => &c1,
        };
        from.client.send_text(&group, &text).await.unwrap();
        for (m, dev) in [&mut a1, &mut b1, &mut c1].into_iter().enumerate() {
            if m != n {
                let got = dev.receive(&text).await;
                assert_eq!(got.chat, group);
            }
        }
    }
    // D joins; the next message reaches D's device with the sender key before it.
    let mut d1 = Device::start::<R>(env, "d1", d, 14).await;
    env.sim
        .account(a)
        .unwrap()
        .add_to_group(&group, d)
        .expect("added");
    // Let the w:gp2 notification reach A before it sends.
    a1.settle(Duration::from_millis(300)).await;
    a1.client.send_text(&group, "welcome d").await.unwrap();
    for dev in [&mut b1, &mut c1, &mut d1] {
        let got = dev.receive("welcome d").await;
        assert_eq!(got.chat, group);
    }
    for dev in [&a1, &b1, &c1, &d1] {
        dev.assert_all_decrypted();
    }
    for dev in [a1, b1, c1, d1] {
        dev.stop().await;
    }
}

async fn a_corrupted_delivery_is_retried_for_that_device_only<R: Rt>(env: &Env) {
    let (a, b) = ("15550004001", "15550004002");
    let a1 = Device::start::<R>(env, "a1", a, 21).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 22).await;
    let mut b2 = Device::start::<R>(env, "b2", b, 23).await;
    // Sessions first, so the corrupted copy is a plain `msg`.
    a1.client.send_text(&user(b), "warm up").await.unwrap();
    b1.receive("warm up").await;
    b2.receive("warm up").await;
    env.sim.faults().corrupt_next_delivery(b1.jid().clone());
    a1.client.send_text(&user(b), "second try").await.unwrap();
    let got = b1.receive("second try").await;
    assert_eq!(got.text(), Some("second try"));
    b2.receive("second try").await;
    // B1 failed once (the retry receipt), then decrypted the resend; nobody got it twice.
    assert_eq!(b1.undecryptable.len(), 1, "{:?}", b1.undecryptable);
    b1.settle(Duration::from_millis(300)).await;
    b2.settle(Duration::from_millis(300)).await;
    assert_eq!(b1.count("second try"), 1);
    assert_eq!(b2.count("second try"), 1);
    assert!(b2.undecryptable.is_empty());
    for dev in [a1, b1, b2] {
        dev.stop().await;
    }
}

async fn bad_input_is_a_typed_error_and_the_session_goes_on<R: Rt>(env: &Env) {
    let (a, b) = ("15550005001", "15550005002");
    let mut a1 = Device::start::<R>(env, "a1", a, 31).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 32).await;
    a1.client.send_text(&user(b), "before").await.unwrap();
    b1.receive("before").await;
    let garbage = |id: &str, kind: &str, bytes: Vec<u8>| {
        Node::new("message")
            .attr("id", id)
            .attr("from", a1.jid().clone())
            .attr("type", "text")
            .attr("t", "1700000000")
            .children([Node::new("enc")
                .attr("v", "2")
                .attr("type", kind)
                .bytes(bytes)])
    };
    for (id, kind, bytes) in [
        ("BAD1", "msg", vec![0x33; 60]),
        ("BAD2", "msg", vec![0x33]),
        ("BAD3", "pkmsg", vec![]),
        ("BAD4", "skmsg", vec![0x33; 100]),
        ("BAD5", "frob", vec![1, 2, 3]),
    ] {
        assert!(
            env.sim
                .faults()
                .inject_device(b1.jid(), Action::Send(garbage(id, kind, bytes)))
        );
    }
    b1.until("five undecryptable", |d, _| {
        (d.undecryptable.len() >= 5).then_some(())
    })
    .await;
    // The session with A still works both ways.
    a1.client.send_text(&user(b), "after").await.unwrap();
    b1.receive("after").await;
    b1.client.send_text(&user(a), "still here").await.unwrap();
    a1.receive("still here").await;
    for dev in [a1, b1] {
        dev.stop().await;
    }
}

async fn a_send_survives_a_dropped_connection<R: Rt>(env: &Env) {
    let (a, b) = ("15550006001", "15550006002");
    let a1 = Device::start::<R>(env, "a1", a, 41).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 42).await;
    // The server routes A's next message but does not ack it; then A's connection drops.
    env.sim.faults().add_times(
        Target::Device(a1.jid().clone()),
        Rule::WithholdMessageAck { id: None },
        1,
    );
    let to = user(b);
    let send = a1.client.send_text(&to, "survives");
    let meanwhile = async {
        let got = b1.receive("survives").await;
        assert!(env.sim.faults().inject_device(a1.jid(), Action::Drop));
        got.id
    };
    let (sent, routed) = smol::future::zip(send, meanwhile).await;
    // The caller's send ends with the ack of the copy sent again, under the same id.
    assert_eq!(sent.unwrap(), routed);
    b1.settle(Duration::from_millis(300)).await;
    assert_eq!(
        b1.count("survives"),
        1,
        "the copy sent again is not handed out twice"
    );
    for dev in [a1, b1] {
        dev.stop().await;
    }
}

/// Three devices started at once behind a one-slot login gate: each logs in and uploads its
/// prekeys in turn (the slot is given back once the prekey work is answered), then they talk.
async fn logins_pass_a_one_slot_gate_in_turn<R: Rt>(env: &Env) {
    let gate = amarula::LoginGate::new(1);
    let config = ClientConfig {
        login_gate: Some(gate.clone()),
        ..env.config()
    };
    let (a, b, c) = ("15550006001", "15550006002", "15550006003");
    let mut devices = Vec::new();
    for (n, phone) in [a, b, c].into_iter().enumerate() {
        let store = env.linked(phone, 40 + n as u8);
        let name = format!("d{n}");
        devices.push(Device::connect::<R, _>(&name, config.clone(), store, Ready::Started).await);
    }
    for d in &mut devices {
        d.until("PreKeysUploaded", |_, e| {
            matches!(e, ClientEvent::Event(Event::PreKeysUploaded { .. })).then_some(())
        })
        .await;
    }
    // Every slot is free again.
    assert_eq!(format!("{gate:?}"), "LoginGate { free: 1, .. }");
    let mut it = devices.into_iter();
    let (mut d0, mut d1, d2) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    d0.client
        .send_text(&user(b), "through the gate")
        .await
        .unwrap();
    d1.receive("through the gate").await;
    d1.client.send_text(&user(a), "and back").await.unwrap();
    d0.receive("and back").await;
    for d in [d0, d1, d2] {
        d.assert_all_decrypted();
        d.stop().await;
    }
}

/// Every frame past 64 bytes written as WebSocket fragments, and the first prekey upload in
/// IQs of 7 keys: the simulator's WebSocket layer joins the fragments, the prekeys of every
/// batch reach it (a peer starts a session on one of them), and the conversation goes on.
async fn fragmented_frames_and_batched_prekeys_reach_the_server<R: Rt>(env: &Env) {
    let mut config = ClientConfig {
        ws_fragment_size: 64,
        ..env.config()
    };
    config.machine.prekey_upload_batch = 7;
    let (a, b) = ("15550007001", "15550007002");
    let mut a1 =
        Device::connect::<R, _>("a1", config.clone(), env.linked(a, 50), Ready::Started).await;
    let uploaded = a1
        .until("PreKeysUploaded", |_, e| match e {
            ClientEvent::Event(Event::PreKeysUploaded { count }) => Some(*count),
            _ => None,
        })
        .await;
    assert_eq!(uploaded, config.machine.prekey_upload_count);
    let mut b1 = Device::start::<R>(env, "b1", b, 51).await;
    let long = "a message longer than one fragment ".repeat(8);
    b1.client.send_text(&user(a), &long).await.unwrap();
    a1.receive(&long).await;
    a1.client.send_text(&user(b), &long).await.unwrap();
    b1.receive(&long).await;
    for d in [a1, b1] {
        d.assert_all_decrypted();
        d.stop().await;
    }
}

amarula_tests::on_both_drivers!(
    Env::pn_legacy();
    two_accounts_with_two_devices,
    group_of_three_and_a_late_member,
    a_corrupted_delivery_is_retried_for_that_device_only,
    bad_input_is_a_typed_error_and_the_session_goes_on,
    a_send_survives_a_dropped_connection,
    logins_pass_a_one_slot_gate_in_turn,
    fragmented_frames_and_batched_prekeys_reach_the_server,
);
