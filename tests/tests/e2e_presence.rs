//! Receipts, presence and chat state through the real drivers (tokio and smol) over loopback
//! sockets against the simulator, with two accounts: read and played receipts flow back to
//! the sender's devices as typed `Event::Receipt`s (and to the reader's other device as its
//! own), in a 1:1 chat and a group; presence subscription with available / unavailable and
//! last seen, also when a connection ends; composing, recording and paused arrive as
//! `Event::ChatState`. Every scenario runs once per runtime; every wait is bounded.

use amarula::ClientError;
use amarula::core::jid::Jid;
use amarula::core::machine::{ChatState, Presence, ReceiptKind, SendError};
use amarula_tests::e2e::{Device, Env, user};
use amarula_tests::runtimes::Runtime as Rt;

/// Becomes available under `name`; returns once the server has taken it (our own
/// subscription to `watch` answers after the availability).
async fn go_available(d: &mut Device, name: &str, watch: &Jid) {
    d.client.set_push_name(name).await.unwrap();
    d.client.set_presence(Presence::Available).await.unwrap();
    d.client.presence_subscribe(watch).await.unwrap();
    d.presence_of(watch, "the first presence", |_| true).await;
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn read_receipts_flow_back<R: Rt>(env: &Env) {
    let (a, b) = ("15550007001", "15550007002");
    let mut a1 = Device::start::<R>(env, "a1", a, 51).await;
    let mut a2 = Device::start::<R>(env, "a2", a, 52).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 53).await;
    let mut b2 = Device::start::<R>(env, "b2", b, 54).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let text = format!("read me {n}");
        ids.push(a1.client.send_text(&user(b), &text).await.unwrap());
        b1.receive(&text).await;
    }
    // Delivery receipts come first, from B's device.
    let delivered = a1.receipt(ReceiptKind::Delivered, &ids[..1]).await;
    assert_eq!(delivered.chat, user(b));

    // B reads all three at once: one stanza, ids in a list.
    b1.client.mark_read(&user(a), &ids, None).await.unwrap();
    for sender in [&mut a1, &mut a2] {
        let read = sender.receipt(ReceiptKind::Read, &ids).await;
        assert_eq!(read.ids, ids, "[{}]", sender.name);
        assert_eq!(read.chat, user(b));
        assert_eq!(read.from.user_part(), b);
        assert!(!read.from_me);
        let t = read.time.expect("t");
        assert!(t.abs_diff(unix_now()) < 60, "t = {t}");
    }
    // B's other device learns that B read the chat: from us, about the chat with A.
    let own = b2.receipt(ReceiptKind::Read, &ids).await;
    assert!(own.from_me);
    assert_eq!(own.chat, user(a));

    // A voice note played.
    b1.client
        .mark_played(&user(a), &ids[2..], None)
        .await
        .unwrap();
    let played = a1.receipt(ReceiptKind::Played, &ids[2..]).await;
    assert_eq!(played.ids, &ids[2..]);

    // In a group the receipt names the reader, and B says whose message it read.
    let group = env.sim.account(a).unwrap().create_group("readers", &[b]);
    let gid = a1.client.send_text(&group, "group read").await.unwrap();
    let got = b1.receive("group read").await;
    assert_eq!(
        b1.client.mark_read(&group, &[&gid], None).await,
        Err(ClientError::Send(SendError::MissingParticipant))
    );
    b1.client
        .mark_read(&group, &[&gid], Some(&got.sender))
        .await
        .unwrap();
    let read = a1.receipt(ReceiptKind::Read, &[gid]).await;
    assert_eq!(read.chat, group);
    assert_eq!(&read.from, b1.jid());
    for d in [a1, a2, b1, b2] {
        d.stop().await;
    }
}

async fn presence_with_last_seen<R: Rt>(env: &Env) {
    let (a, b) = ("15550008001", "15550008002");
    let mut a1 = Device::start::<R>(env, "a1", a, 61).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 62).await;
    // No push name, no presence.
    assert_eq!(
        a1.client.set_presence(Presence::Available).await,
        Err(ClientError::Send(SendError::NoPushName))
    );
    go_available(&mut b1, "Bob", &user(a)).await;
    a1.client.set_push_name("Alice").await.unwrap();
    a1.wait_until("the stored push name", |d| {
        d.stored_names.last() == Some(&Some("Alice".to_owned()))
    })
    .await;
    a1.client.set_presence(Presence::Available).await.unwrap();
    b1.presence_of(&user(a), "A available", |p| {
        p.presence == Presence::Available
    })
    .await;
    assert_eq!(
        env.sim.account(a).unwrap().push_name().as_deref(),
        Some("Alice")
    );

    a1.client.set_presence(Presence::Unavailable).await.unwrap();
    let off = b1
        .presence_of(&user(a), "A unavailable with last seen", |p| {
            p.presence == Presence::Unavailable && p.last_seen.is_some()
        })
        .await;
    let last = off.last_seen.expect("last seen");
    assert!(last.abs_diff(unix_now()) < 60, "last seen {last}");

    // Online again, then the connection ends: offline for the others too.
    a1.client.set_presence(Presence::Available).await.unwrap();
    b1.presence_of(&user(a), "A available again", |p| {
        p.presence == Presence::Available
    })
    .await;
    a1.stop().await;
    b1.presence_of(&user(a), "A gone", |p| {
        p.presence == Presence::Unavailable && p.last_seen.is_some()
    })
    .await;
    b1.stop().await;
}

async fn chat_state_arrives<R: Rt>(env: &Env) {
    let (a, b) = ("15550009001", "15550009002");
    let mut a1 = Device::start::<R>(env, "a1", a, 71).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 72).await;
    // Typing reaches only available devices.
    go_available(&mut b1, "Bob", &user(a)).await;
    go_available(&mut a1, "Alice", &user(b)).await;
    for state in [
        ChatState::Composing,
        ChatState::Recording,
        ChatState::Paused,
    ] {
        a1.client.send_chatstate(&user(b), state).await.unwrap();
        let got = b1.chat_state(&user(a), state).await;
        assert_eq!(got.sender, user(a));
    }
    let group = env.sim.account(a).unwrap().create_group("typists", &[b]);
    b1.client
        .send_chatstate(&group, ChatState::Composing)
        .await
        .unwrap();
    let got = a1.chat_state(&group, ChatState::Composing).await;
    assert_eq!(got.sender, user(b));
    for d in [a1, b1] {
        d.stop().await;
    }
}

amarula_tests::on_both_drivers!(
    Env::pn_legacy();
    read_receipts_flow_back,
    presence_with_last_seen,
    chat_state_arrives,
);
