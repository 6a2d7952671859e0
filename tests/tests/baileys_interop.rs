//! A real third-party client against the simulator, beside amarula clients: Baileys 6.7.24
//! (npm `@whiskeysockets/baileys`, with `libsignal` 6.0.0 from npm in place of its git
//! dependency; pinned by `tests/interop/package-lock.json`), driven by
//! `tests/interop/baileys_client.mjs`. Both amarula and the simulator are written from one
//! understanding of the protocol; an independent client keeps both honest.
//!
//! The scenario: Baileys pairs with the QR it shows (the older four-part form), follows the 515
//! restart and logs in; it exchanges 1:1 messages both ways with an amarula device of another
//! account, with ratchet steps, while an amarula companion of its own account gets (and sends)
//! the own-device copies; a group message each way; a retry receipt each way (a corrupted
//! delivery); then it reconnects twice: the messages sent while it was away come once with
//! `offline`, and nothing it already receipted comes again.
//!
//! Baileys runs as `node --require tests/interop/loopback_only.cjs`, a preload that refuses every
//! connection, name lookup, DNS query, UDP socket and subprocess that is not on the loopback
//! interface; the test probes the guard first and asserts that Baileys was refused nothing after.
//! Baileys 6.7.24 checks only that the server's intermediate certificate names issuer serial 0
//! (`lib/Utils/noise-handler.js`), not the signatures, so the simulator's test chain, whose
//! intermediate is issued by serial 0, passes as it is.
//!
//! Three things Baileys 6.7.24 does that only show over loopback are met halfway, not hidden:
//! it loses a server frame that comes right after its ClientFinish ([`first_frame_late`]); a
//! retry receipt can come before `sendMessage` has returned the message its `getMessage` must
//! find (the script waits for the sends under way); and it emits the events of offline messages
//! only with the next live stanza (the test sends one, after seeing Baileys' receipts for them).
//!
//! The Baileys process and the waits on it are in `amarula_tests::interop`. Needs `node` (20 or
//! newer) and the packages: `npm ci --prefix tests/interop` (`.ci/run` does it). Without them
//! the test fails and says so.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use amarula::core::binary::Node;
use amarula::core::jid::Jid;
use amarula_tests::e2e::{Env, user};
use amarula_tests::interop::{Baileys, SimLog, amarula_device, check_installed};
use amarula_tests::sim::{ConnId, ConnKind, Direction, Rule, SimEvent, Simulator, Target};
use serde_json::{Value, json};

/// How long "nothing more comes" is watched.
const QUIET: Duration = Duration::from_millis(1500);
/// How long the simulator holds its first frame after the handshake of a Baileys connection
/// (see [`first_frame_late`]).
const ROUND_TRIP: Duration = Duration::from_millis(250);

/// Baileys 6.7.24 sends its ClientFinish and then derives the transport keys without waiting
/// (`noise.finishInit()` is not awaited in `validateConnection`, and it awaits WebCrypto's
/// HKDF): a server frame that comes before the keys are set is taken as a handshake frame and
/// lost. Over the internet the round trip hides this; over loopback the pair-device IQ or
/// `<success>` can win the race. The simulator so holds its first frame after the handshake of
/// the next connection `target` names for [`ROUND_TRIP`].
fn first_frame_late(sim: &Simulator, target: Target) {
    sim.faults().add_times(
        target,
        Rule::Delay {
            dir: Direction::ServerToClient,
            by: ROUND_TRIP,
        },
        1,
    );
}

fn is_message_ack(n: &Node) -> bool {
    n.tag == "ack" && n.attr_str("class") == Some("message")
}

fn is_retry_receipt(n: &Node, id: &str) -> bool {
    n.tag == "receipt" && n.attr_str("type") == Some("retry") && n.attr_str("id") == Some(id)
}

/// Takes Baileys offline (its own `end`) and waits until the simulator saw the connection
/// `conn` close; returns the index of the simulator log after it.
async fn bl_offline(
    sim: &Simulator,
    log: &mut SimLog,
    bl: &mut Baileys,
    bl_jid: &Jid,
    conn: ConnId,
) -> usize {
    bl.command(&json!({"cmd": "disconnect"}));
    bl.wait("close after disconnect", |e| {
        (e["ev"] == "close").then_some(())
    })
    .await;
    let (_, mark) = log
        .wait("Baileys' connection closed", 0, |e| match e {
            SimEvent::ConnectionClosed { conn: c, .. } if *c == conn => Some(()),
            _ => None,
        })
        .await;
    assert!(
        !sim.account(bl_jid.user_part())
            .expect("account")
            .is_online(bl_jid)
    );
    mark
}

/// Brings Baileys back and checks what the server queued for it: `queued` offline stanzas, and
/// no message handed out again ([`SimEvent::Redelivered`]). Returns the new connection and
/// the index of the simulator log after its login.
async fn bl_online(
    sim: &Simulator,
    log: &mut SimLog,
    bl: &mut Baileys,
    bl_jid: &Jid,
    mark: usize,
    queued: usize,
) -> (ConnId, usize) {
    first_frame_late(sim, Target::Device(bl_jid.clone()));
    let since = bl.seen.len();
    bl.command(&json!({"cmd": "connect"}));
    bl.wait("login after the reconnect", |e| {
        (e["ev"] == "open").then_some(())
    })
    .await;
    let (conn, after) = log
        .wait("Baileys' login", mark, |e| match e {
            SimEvent::ConnectionOpened {
                conn,
                kind: ConnKind::Login { device },
            } if device.same_device(bl_jid) => Some(*conn),
            _ => None,
        })
        .await;
    let count = bl
        .wait_from("the server's offline count", since, |e| {
            (e["ev"] == "offline_count").then(|| e["count"].as_u64())
        })
        .await;
    log.drain();
    let redelivered: Vec<&SimEvent> = log.seen[mark..]
        .iter()
        .filter(|e| matches!(e, SimEvent::Redelivered { conn: c, .. } if *c == conn))
        .collect();
    if !redelivered.is_empty() {
        bl.fail(&format!(
            "the simulator handed Baileys again messages it had receipted: {redelivered:?}"
        ));
    }
    if count != Some(queued as u64) {
        bl.fail(&format!(
            "the server queued {count:?} stanzas for Baileys, not {queued}"
        ));
    }
    (conn, after)
}

#[test]
fn baileys_against_the_simulator() {
    check_installed();
    let env = Env::pn_legacy();
    let mut log = SimLog::start(&env.sim, &env.rt);
    env.rt.block_on(scenario(&env, &mut log));
}

async fn scenario(env: &Env, log: &mut SimLog) {
    let sim = &env.sim;
    let (a, b) = ("15550007001", "15550007002");
    let account_a = sim.add_account(a);
    sim.add_account(b);
    // B's amarula device, and an amarula companion of Baileys' own account.
    let mut b1 = amarula_device(env, "b1", b, 71, &log.tails).await;
    let mut a2 = amarula_device(env, "a2", a, 72, &log.tails).await;

    first_frame_late(sim, Target::Registrations);
    let mut bl = Baileys::spawn(&sim.url(), log.tails.clone());
    bl.wait("ready", |e| (e["ev"] == "ready").then_some(()))
        .await;

    // Step 0: the Baileys process reaches nothing but the loopback.
    let probes_blocked = bl.probe_loopback_guard().await;

    // Step 1: QR pairing with the QR as Baileys shows it, 515, login.
    let qr = bl
        .wait("QR code", |e| e["qr"].as_str().map(str::to_owned))
        .await;
    assert!(
        !qr.starts_with("https://") && qr.split(',').count() == 4,
        "Baileys 6.7 shows the older four-part QR: {qr}"
    );
    let bl_jid = match account_a.scan_qr(&qr) {
        Ok(j) => j,
        Err(e) => bl.fail(&format!("the phone refused Baileys' QR {qr:?}: {e}")),
    };
    first_frame_late(sim, Target::Device(bl_jid.clone()));
    let (paired, at) = log
        .wait("Paired", 0, |e| match e {
            SimEvent::Paired { device, .. } => Some(device.clone()),
            _ => None,
        })
        .await;
    assert_eq!(paired, bl_jid);
    bl.wait("the 515 close", |e| {
        (e["ev"] == "close" && e["status"] == 515).then_some(())
    })
    .await;
    let me = bl
        .wait("login (connection open)", |e| {
            (e["ev"] == "open").then(|| e["me"].as_str().unwrap_or_default().to_owned())
        })
        .await;
    let me: Jid = me.parse().expect("Baileys' own JID");
    assert!(me.same_device(&bl_jid), "{me} is not {bl_jid}");
    let (mut bl_conn, _) = log
        .wait("Baileys' login", at, |e| match e {
            SimEvent::ConnectionOpened {
                conn,
                kind: ConnKind::Login { device },
            } if device.same_device(&bl_jid) => Some(*conn),
            _ => None,
        })
        .await;

    // Step 2: 1:1 both ways with ratchet steps; A's amarula companion gets A's side too.
    for round in 0..3 {
        let to_bl = format!("b1 to baileys {round}");
        let id = b1
            .client
            .send_text(&user(a), &to_bl)
            .await
            .expect("b1 sends");
        let got = bl.receive(&to_bl).await;
        assert_eq!(got["id"], id.as_str());
        assert_eq!(got["fromMe"], false);
        assert_eq!(got["undecryptable"], false);
        let copy = a2.receive(&to_bl).await;
        assert!(!copy.from_me);

        let to_b = format!("baileys to b1 {round}");
        let id = bl.send_text(&user(b), &to_b).await;
        let got = b1.receive(&to_b).await;
        assert_eq!(got.id, id);
        assert_eq!(got.chat, user(a));
        assert!(!got.from_me);
        // The own-device copy (DeviceSentMessage) for A's amarula companion.
        let own = a2.receive(&to_b).await;
        assert!(own.from_me, "{own:?}");
        assert_eq!(own.chat, user(b));
    }

    // Step 3: A's amarula companion writes to B; Baileys gets the own-device copy.
    let id = a2
        .client
        .send_text(&user(b), "a2 to b1")
        .await
        .expect("a2 sends");
    b1.receive("a2 to b1").await;
    let own = bl.receive("a2 to b1").await;
    assert_eq!(own["id"], id.as_str());
    assert_eq!(own["fromMe"], true, "{own}");
    assert_eq!(own["remoteJid"], user(b).to_string());

    // Step 4: a group of A and B, a message each way.
    let group = account_a.create_group("interop", &[b]);
    let id = bl.send_text(&group, "baileys in the group").await;
    for d in [&mut b1, &mut a2] {
        let got = d.receive("baileys in the group").await;
        assert_eq!(got.chat, group, "[{}]", d.name);
        assert_eq!(got.id, id);
    }
    assert!(a2.receive("baileys in the group").await.from_me);
    let id = b1
        .client
        .send_text(&group, "b1 in the group")
        .await
        .expect("b1 sends to the group");
    let got = bl.receive("b1 in the group").await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["remoteJid"], group.to_string());
    assert_eq!(
        got["participant"]
            .as_str()
            .map(|p| p.split(['@', ':']).next()),
        Some(Some(b))
    );
    a2.receive("b1 in the group").await;

    // Step 5a: a retry receipt from Baileys. Its copy of b1's next message is corrupted; it
    // asks again and decrypts the resend.
    log.drain();
    let mark = log.seen.len();
    sim.faults().corrupt_next_delivery(bl_jid.clone());
    let id = b1
        .client
        .send_text(&user(a), "corrupted for baileys")
        .await
        .expect("b1 sends");
    let got = bl.receive("corrupted for baileys").await;
    assert_eq!(got["id"], id.as_str());
    log.wait("Baileys' retry receipt", mark, |e| match e {
        SimEvent::StanzaReceived {
            device: Some(d),
            node,
            ..
        } if d.same_device(&bl_jid) && is_retry_receipt(node, &id) => Some(()),
        _ => None,
    })
    .await;
    let copies = bl.messages_with_id(&id);
    assert!(
        copies.iter().any(|m| m["undecryptable"] == true),
        "Baileys did not see the corrupted copy: {copies:?}"
    );
    a2.receive("corrupted for baileys").await;

    // Step 5b: a retry receipt from amarula; Baileys resends from its `getMessage`.
    let mark = log.seen.len();
    sim.faults().corrupt_next_delivery(b1.jid().clone());
    let id = bl.send_text(&user(b), "corrupted for b1").await;
    let corrupted_for_b1 = id.clone();
    let got = b1.receive("corrupted for b1").await;
    assert_eq!(got.id, id);
    let b1_jid = b1.jid().clone();
    log.wait("b1's retry receipt", mark, |e| match e {
        SimEvent::StanzaReceived {
            device: Some(d),
            node,
            ..
        } if d.same_device(&b1_jid) && is_retry_receipt(node, &id) => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(
        b1.undecryptable
            .iter()
            .map(|u| u.id.as_str())
            .collect::<Vec<_>>(),
        [id.as_str()],
        "{:?}",
        b1.undecryptable
    );
    a2.receive("corrupted for b1").await;
    // Still on speaking terms after the retries.
    b1.client
        .send_text(&user(a), "after the retries")
        .await
        .expect("b1 sends");
    bl.receive("after the retries").await;
    let id = bl.send_text(&user(b), "baileys after the retries").await;
    assert_eq!(b1.receive("baileys after the retries").await.id, id);
    b1.settle(QUIET).await;
    a2.settle(QUIET).await;
    bl.settle(QUIET).await;

    // Step 6: a reconnect with offline delivery, and no redelivery of what Baileys receipted.
    let received_before: HashSet<String> = bl
        .seen
        .iter()
        .filter(|e| e["ev"] == "message")
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    let mark = bl_offline(sim, log, &mut bl, &bl_jid, bl_conn).await;
    let mut away = Vec::new();
    for n in 0..2 {
        let text = format!("while baileys was away {n}");
        away.push(
            b1.client
                .send_text(&user(a), &text)
                .await
                .expect("b1 sends"),
        );
    }
    away.push(
        a2.client
            .send_text(&user(b), "a2 while baileys was away")
            .await
            .expect("a2 sends"),
    );
    for id in &away {
        log.wait("the message queued for Baileys", mark, |e| match e {
            SimEvent::MessageRouted { id: i, queued, .. }
                if i == id && queued.iter().any(|q| q.same_device(&bl_jid)) =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    }
    let since = bl.seen.len();
    let (conn, mark) = bl_online(sim, log, &mut bl, &bl_jid, mark, away.len()).await;
    bl_conn = conn;
    // Baileys decrypted them (its receipts), but holds their events until a live stanza
    // comes.
    for id in &away {
        log.wait(
            "Baileys' receipt of an offline message",
            mark,
            |e| match e {
                SimEvent::StanzaReceived {
                    device: Some(d),
                    node,
                    ..
                } if d.same_device(&bl_jid)
                    && node.tag == "receipt"
                    && node.attr_str("id") == Some(id.as_str()) =>
                {
                    Some(())
                }
                _ => None,
            },
        )
        .await;
    }
    b1.client
        .send_text(&user(a), "welcome back")
        .await
        .expect("b1 sends");
    bl.receive("welcome back").await;
    for text in [
        "while baileys was away 0",
        "while baileys was away 1",
        "a2 while baileys was away",
    ] {
        let got = bl.receive(text).await;
        assert_eq!(got["undecryptable"], false, "{got}");
    }
    bl.settle(QUIET).await;
    let again: Vec<&Value> = bl.seen[since..]
        .iter()
        .filter(|e| e["ev"] == "message")
        .filter(|e| {
            e["id"]
                .as_str()
                .is_some_and(|i| received_before.contains(i))
        })
        .collect();
    if !again.is_empty() {
        bl.fail(&format!("received again after the reconnect: {again:?}"));
    }
    let undecryptable: Vec<&Value> = bl.seen[since..]
        .iter()
        .filter(|e| e["ev"] == "message" && e["undecryptable"] == true)
        .collect();
    if !undecryptable.is_empty() {
        bl.fail(&format!(
            "undecryptable after the reconnect: {undecryptable:?}"
        ));
    }
    for id in &away {
        if bl.messages_with_id(id).len() != 1 {
            bl.fail(&format!("{id} not received exactly once"));
        }
    }

    // Once more: nothing at all is queued or handed out again.
    let mark = bl_offline(sim, log, &mut bl, &bl_jid, bl_conn).await;
    let since = bl.seen.len();
    bl_online(sim, log, &mut bl, &bl_jid, mark, 0).await;
    b1.client
        .send_text(&user(a), "welcome back again")
        .await
        .expect("b1 sends");
    bl.receive("welcome back again").await;
    bl.settle(QUIET).await;
    let messages: Vec<&Value> = bl.seen[since..]
        .iter()
        .filter(|e| e["ev"] == "message" && e["text"] != "welcome back again")
        .collect();
    if !messages.is_empty() {
        bl.fail(&format!(
            "messages after the second reconnect: {messages:?}"
        ));
    }
    // And the conversation goes on the other way too.
    let id = bl.send_text(&user(b), "thanks").await;
    assert_eq!(b1.receive("thanks").await.id, id);

    // How each side acknowledged what it received: the delivery receipt alone for a decrypted
    // message (SESSION.md §5.1). amarula adds an `<ack class="message">` after its retry
    // receipt for the corrupted copy (as whatsmeow does); Baileys 6.7.24 sends none at all.
    b1.settle(QUIET).await;
    a2.settle(QUIET).await;
    log.drain();
    let acked = |jid: &Jid| -> Vec<String> {
        log.sent_by(jid, 0)
            .filter(|n| is_message_ack(n))
            .map(|n| n.attr_str("id").unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        acked(b1.jid()),
        [corrupted_for_b1],
        "b1 acks besides its receipts"
    );
    assert_eq!(
        acked(a2.jid()),
        Vec::<String>::new(),
        "a2 acks besides its receipts"
    );
    let bl_acks = acked(&bl_jid);
    if !bl_acks.is_empty() {
        bl.fail(&format!("Baileys sent message acks: {bl_acks:?}"));
    }

    // Everyone got each message once.
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for e in bl
        .seen
        .iter()
        .filter(|e| e["ev"] == "message" && !e["text"].is_null())
    {
        *by_id
            .entry(e["id"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let twice: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    if !twice.is_empty() {
        bl.fail(&format!("Baileys got messages more than once: {twice:?}"));
    }
    for d in [&b1, &a2] {
        let mut ids: Vec<&str> = d.messages.iter().map(|m| m.id.as_str()).collect();
        let all = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all, "[{}] got a message twice", d.name);
    }
    assert!(a2.undecryptable.is_empty(), "{:?}", a2.undecryptable);

    // Baileys was refused nothing beyond the probes: it needed nothing outside the loopback.
    bl.check_only_probes_blocked(probes_blocked);
    bl.command(&json!({"cmd": "exit"}));
    b1.stop().await;
    a2.stop().await;
}
