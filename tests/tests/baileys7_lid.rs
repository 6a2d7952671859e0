//! A second third-party client, in the simulator's 2026 LID mode: Baileys 7 (npm `baileys`,
//! pinned by `tests/interop7/package-lock.json`), driven by
//! `tests/interop7/baileys7_client.mjs` under the same loopback guard as the Baileys 6 test
//! (`tests/interop/loopback_only.cjs`). Baileys 7 speaks LID on its own terms (its sources, not
//! ours, decide which namespace each stanza uses), so it checks that the simulator's LID mode
//! and amarula's LID handling agree with an independent reading of the protocol.
//!
//! The scenario (accounts: A = Baileys' account, with an amarula companion `a2`; B with the
//! amarula device `b1`; C with the amarula device `c1`, who takes no message from strangers):
//! - Baileys pairs with the QR it shows (the `https://wa.me/settings/linked_devices#` form with
//!   the platform), follows the 515 restart, logs in and takes its LID from `<success lid>`;
//! - 1:1 both ways by LID with `b1`, with ratchet steps: Baileys addresses B by LID (one
//!   namespace per stanza, which the simulator checks), sees `b1`'s messages in B's LID chat
//!   with the phone number as `remoteJidAlt`; `a2` gets (and sends) the own-device copies,
//!   Baileys' own copy names the LID chat with `peer_recipient_pn`;
//! - the LID/PN mapping Baileys learned (from usync `<lid/>` and the envelopes), both ways;
//! - a LID group (`addressing_mode="lid"`): the metadata Baileys reads, a message each way;
//! - privacy tokens: Baileys' first message to C is refused with 463 (reported as an error
//!   update); Baileys gives C its token; C writes back and gives Baileys C's token, which
//!   Baileys keeps under C's LID and attaches (`<tctoken>`) to its next message, delivered.
//!
//! Baileys 7 checks the server's certificate chain against WhatsApp's root key; the script pins
//! the simulator's root in its place (`WA_CERT_DETAILS.PUBLIC_KEY`), the check still runs.
//!
//! Needs `node` (20 or newer) and the packages: `npm ci --prefix tests/interop7` (`.ci/run`
//! does it). Without them the test fails and says so.

use std::time::Duration;

use amarula::core::binary::Node;
use amarula::core::jid::Jid;
use amarula_tests::e2e::{Env, user};
use amarula_tests::interop::{BAILEYS7, Baileys, SimLog, amarula_device};
use amarula_tests::sim::{ConnKind, SimEvent};
use serde_json::{Value, json};

/// How long "nothing more comes" is watched.
const QUIET: Duration = Duration::from_millis(1500);

/// Sends `cmd` with a fresh request number and waits for its answer (`ev` or `failed`).
async fn ask(bl: &mut Baileys, req: &mut u64, ev: &str, mut cmd: Value) -> Value {
    *req += 1;
    let n = 1_000_000 + *req;
    cmd["req"] = json!(n);
    bl.command(&cmd);
    let got = bl
        .wait(&format!("answer to {cmd}"), |e| {
            (e["req"] == n && (e["ev"] == ev || e["ev"] == "failed")).then(|| e.clone())
        })
        .await;
    if got["ev"] == "failed" {
        bl.fail(&format!("{cmd} failed: {got}"));
    }
    got
}

/// The `<to jid>` entries of a message stanza's `<participants>`.
fn to_jids(n: &Node) -> Vec<Jid> {
    n.child("participants")
        .map(Node::child_nodes)
        .unwrap_or_default()
        .iter()
        .filter(|c| c.tag == "to")
        .filter_map(|c| c.attr_jid("jid").cloned())
        .collect()
}

/// The message stanza Baileys sent with `id`.
async fn sent_stanza(log: &mut SimLog, bl_jid: &Jid, id: &str) -> Node {
    let (node, _) = log
        .wait(&format!("Baileys' stanza {id}"), 0, |e| match e {
            SimEvent::StanzaReceived {
                device: Some(d),
                node,
                ..
            } if d.same_device(bl_jid)
                && node.tag == "message"
                && node.attr_str("id") == Some(id) =>
            {
                Some(node.clone())
            }
            _ => None,
        })
        .await;
    node
}

/// The `error` of the server's ack of message `id` (`None`: routed).
async fn ack_error(log: &mut SimLog, id: &str) -> Option<String> {
    let (error, _) = log
        .wait(&format!("the routing of {id}"), 0, |e| match e {
            SimEvent::MessageRefused { id: i, error, .. } if i == id => Some(Some(error.clone())),
            SimEvent::MessageRouted { id: i, .. } if i == id => Some(None),
            _ => None,
        })
        .await;
    error
}

#[test]
fn baileys7_in_lid_mode() {
    BAILEYS7.check_installed();
    let env = Env::new();
    let mut log = SimLog::start(&env.sim, &env.rt);
    env.rt.block_on(scenario(&env, &mut log));
}

#[allow(clippy::too_many_lines)]
async fn scenario(env: &Env, log: &mut SimLog) {
    let sim = &env.sim;
    let (a, b, c) = ("15550007101", "15550007102", "15550007103");
    let account_a = sim.add_account(a);
    let account_b = sim.add_account(b);
    let account_c = sim.add_account(c);
    let (lid_a, lid_b, lid_c) = (account_a.lid(), account_b.lid(), account_c.lid());
    let mut b1 = amarula_device(env, "b1", b, 81, &log.tails).await;
    let mut a2 = amarula_device(env, "a2", a, 82, &log.tails).await;
    let mut c1 = amarula_device(env, "c1", c, 83, &log.tails).await;

    let root = hex::encode(sim.trust_anchor().root_public);
    let mut bl = Baileys::spawn_project(
        &BAILEYS7,
        &sim.url(),
        &[("SIM_ROOT", root)],
        log.tails.clone(),
    );
    let mut req = 0;
    bl.wait("ready", |e| (e["ev"] == "ready").then_some(()))
        .await;

    // Step 0: the Baileys process reaches nothing but the loopback.
    let probes_blocked = bl.probe_loopback_guard().await;

    // Step 1: QR pairing with the QR as Baileys 7 shows it, 515, login with its LID.
    let qr = bl
        .wait("QR code", |e| e["qr"].as_str().map(str::to_owned))
        .await;
    assert!(
        qr.starts_with("https://wa.me/settings/linked_devices#") && qr.split(',').count() == 5,
        "Baileys 7 shows the link form of the QR, with the platform: {qr}"
    );
    let bl_jid = match account_a.scan_qr(&qr) {
        Ok(j) => j,
        Err(e) => bl.fail(&format!("the phone refused Baileys' QR {qr:?}: {e}")),
    };
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
    let open = bl
        .wait("login (connection open)", |e| {
            (e["ev"] == "open").then(|| e.clone())
        })
        .await;
    let me: Jid = open["me"].as_str().unwrap_or_default().parse().expect("me");
    assert!(me.same_device(&bl_jid), "{me} is not {bl_jid}");
    let my_lid: Jid = open["lid"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|_| bl.fail(&format!("Baileys knows no LID of its own: {open}")));
    assert_eq!(my_lid.to_non_device(), lid_a, "{open}");
    assert_eq!(my_lid.device(), bl_jid.device(), "{open}");
    log.wait("Baileys' login", at, |e| match e {
        SimEvent::ConnectionOpened {
            kind: ConnKind::Login { device },
            ..
        } if device.same_device(&bl_jid) => Some(()),
        _ => None,
    })
    .await;

    // Step 2: 1:1 both ways by LID, with ratchet steps; A's amarula companion gets A's side.
    for round in 0..3 {
        let to_bl = format!("b1 to baileys {round}");
        let id = b1
            .client
            .send_text(&user(a), &to_bl)
            .await
            .expect("b1 sends");
        let got = bl.receive(&to_bl).await;
        assert_eq!(got["id"], id.as_str());
        assert_eq!(got["fromMe"], false, "{got}");
        assert_eq!(got["undecryptable"], false, "{got}");
        assert_eq!(got["remoteJid"], lid_b.to_string(), "B's LID chat: {got}");
        assert_eq!(got["remoteJidAlt"], user(b).to_string(), "{got}");
        assert_eq!(got["addressingMode"], "lid", "{got}");
        let copy = a2.receive(&to_bl).await;
        assert!(!copy.from_me);
        assert_eq!(copy.chat, lid_b);

        let to_b = format!("baileys to b1 {round}");
        let id = bl.send_text(&lid_b, &to_b).await;
        let got = b1.receive(&to_b).await;
        assert_eq!(got.id, id);
        assert_eq!(got.chat, lid_a);
        assert_eq!(got.sender, my_lid);
        assert_eq!(
            got.sender_alt.as_ref().map(Jid::to_non_device),
            Some(user(a))
        );
        assert!(!got.from_me);
        let own = a2.receive(&to_b).await;
        assert!(own.from_me, "{own:?}");
        assert_eq!(own.chat, lid_b);
        // One namespace in the stanza: `to` and every `<to jid>` by LID.
        let stanza = sent_stanza(log, &bl_jid, &id).await;
        assert_eq!(stanza.attr_jid("to"), Some(&lid_b), "{stanza}");
        assert_eq!(
            stanza.attr_str("phash"),
            None,
            "no phash on a 1:1 message: {stanza}"
        );
        let tos = to_jids(&stanza);
        assert!(
            !tos.is_empty() && tos.iter().all(Jid::is_lid),
            "Baileys' fan-out: {tos:?}"
        );
        assert_eq!(ack_error(log, &id).await, None);
    }

    // b1's delivery receipts reach Baileys from B's LID device, in the chat's namespace.
    let to_b_ids: Vec<String> = bl
        .seen
        .iter()
        .filter(|e| e["ev"] == "sent")
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    for id in &to_b_ids {
        let update = bl
            .wait_from(&format!("the delivery of {id}"), 0, |e| {
                (e["ev"] == "update" && e["id"] == id.as_str() && e["status"] == 3)
                    .then(|| e.clone())
            })
            .await;
        let from = update["remoteJid"]
            .as_str()
            .and_then(|j| j.parse::<Jid>().ok());
        assert_eq!(
            from.map(|j| j.to_non_device()),
            Some(lid_b.clone()),
            "the receipt names B by LID: {update}"
        );
    }

    // Step 3: A's amarula companion writes to B; Baileys gets the own-device copy in B's LID
    // chat.
    let id = a2
        .client
        .send_text(&user(b), "a2 to b1")
        .await
        .expect("a2 sends");
    b1.receive("a2 to b1").await;
    let own = bl.receive("a2 to b1").await;
    assert_eq!(own["id"], id.as_str());
    assert_eq!(own["fromMe"], true, "{own}");
    assert_eq!(own["remoteJid"], lid_b.to_string(), "{own}");
    assert_eq!(own["remoteJidAlt"], user(b).to_string(), "{own}");

    // Step 4: the mapping Baileys learned, both ways, for B and for itself (Baileys answers
    // with device JIDs, device 0 for a user).
    let user_of = |v: &Value| {
        v.as_str()
            .and_then(|j| j.parse::<Jid>().ok())
            .map(|j| j.to_non_device())
    };
    for (pn, lid) in [(user(b), &lid_b), (user(a), &lid_a)] {
        let got = ask(
            &mut bl,
            &mut req,
            "mapping",
            json!({"cmd": "mapping", "pn": pn.to_string()}),
        )
        .await;
        assert_eq!(
            user_of(&got["lid"]).as_ref(),
            Some(lid),
            "LID of {pn}: {got}"
        );
        let got = ask(
            &mut bl,
            &mut req,
            "mapping",
            json!({"cmd": "mapping", "lid": lid.to_string()}),
        )
        .await;
        assert_eq!(
            user_of(&got["pn"]),
            Some(pn.clone()),
            "number of {lid}: {got}"
        );
    }

    // Step 5: a LID group of A and B, a message each way.
    let group = account_a.create_group("interop lid", &[b]);
    let meta = ask(
        &mut bl,
        &mut req,
        "group",
        json!({"cmd": "group", "jid": group.to_string()}),
    )
    .await;
    let meta = &meta["meta"];
    assert_eq!(meta["addressingMode"], "lid", "{meta}");
    let mut members: Vec<(String, String)> = meta["participants"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["id"].as_str().unwrap_or_default().to_owned(),
                        p["phoneNumber"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    let mut expected = vec![
        (lid_a.to_string(), user(a).to_string()),
        (lid_b.to_string(), user(b).to_string()),
    ];
    expected.sort();
    assert_eq!(members, expected, "{meta}");

    let id = bl.send_text(&group, "baileys in the group").await;
    for d in [&mut b1, &mut a2] {
        let got = d.receive("baileys in the group").await;
        assert_eq!(got.chat, group, "[{}]", d.name);
        assert_eq!(got.id, id);
        assert_eq!(got.sender, my_lid, "[{}]", d.name);
    }
    assert!(a2.receive("baileys in the group").await.from_me);
    let stanza = sent_stanza(log, &bl_jid, &id).await;
    assert_eq!(stanza.attr_str("addressing_mode"), Some("lid"), "{stanza}");
    let tos = to_jids(&stanza);
    assert!(
        tos.iter().all(Jid::is_lid),
        "the sender key went to LID devices: {tos:?}"
    );
    assert_eq!(ack_error(log, &id).await, None);
    let id = b1
        .client
        .send_text(&group, "b1 in the group")
        .await
        .expect("b1 sends to the group");
    let got = bl.receive("b1 in the group").await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["remoteJid"], group.to_string());
    assert_eq!(got["addressingMode"], "lid", "{got}");
    assert_eq!(
        got["participant"]
            .as_str()
            .and_then(|p| p.parse::<Jid>().ok())
            .map(|p| p.to_non_device()),
        Some(lid_b.clone()),
        "{got}"
    );
    assert_eq!(
        got["participantAlt"]
            .as_str()
            .and_then(|p| p.parse::<Jid>().ok())
            .map(|p| p.to_non_device()),
        Some(user(b)),
        "{got}"
    );
    a2.receive("b1 in the group").await;

    // Step 6: privacy tokens. C takes no message from strangers: Baileys' first message is
    // refused with 463, and Baileys gives C its token instead.
    account_c.restrict_strangers(true);
    let since = bl.seen.len();
    let id = bl.send_text(&lid_c, "hello stranger").await;
    assert_eq!(ack_error(log, &id).await.as_deref(), Some("463"));
    let update = bl
        .wait_from("the error update of the refused message", since, |e| {
            (e["ev"] == "update" && e["id"] == id.as_str()).then(|| e.clone())
        })
        .await;
    assert_eq!(update["status"], 0, "status ERROR: {update}");
    assert_eq!(update["stub"][0], "463", "{update}");
    c1.until("Baileys' privacy token", |d, _| {
        d.seen
            .iter()
            .any(|e| e.contains("Persist(TcToken("))
            .then_some(())
    })
    .await;
    assert!(account_a.trusts(c), "Baileys issued no token to C");
    // C writes back; amarula gives Baileys C's token after the send.
    c1.client
        .send_text(&user(a), "who is this?")
        .await
        .expect("c1 sends");
    let got = bl.receive("who is this?").await;
    assert_eq!(got["remoteJid"], lid_c.to_string(), "{got}");
    let mut token = Value::Null;
    for _ in 0..50 {
        let got = ask(
            &mut bl,
            &mut req,
            "tctoken",
            json!({"cmd": "tctoken", "jid": lid_c.to_string()}),
        )
        .await;
        if !got["token"].is_null() {
            token = got["token"].clone();
            break;
        }
        bl.settle(Duration::from_millis(100)).await;
    }
    assert!(account_c.trusts(a), "C issued no token to A");
    let token = token
        .as_str()
        .unwrap_or_else(|| bl.fail("Baileys keeps no token of C under C's LID"))
        .to_owned();
    let id = bl.send_text(&lid_c, "hello again").await;
    assert_eq!(ack_error(log, &id).await, None);
    let stanza = sent_stanza(log, &bl_jid, &id).await;
    assert_eq!(
        stanza
            .child("tctoken")
            .and_then(Node::content_bytes)
            .map(hex::encode),
        Some(token),
        "Baileys attaches C's token: {stanza}"
    );
    c1.receive("hello again").await;
    assert_eq!(
        c1.count("hello stranger"),
        0,
        "the refused message was delivered"
    );

    // Nobody saw an undecryptable message.
    for d in [&b1, &a2, &c1] {
        d.assert_all_decrypted();
    }
    b1.settle(QUIET).await;
    bl.settle(QUIET).await;
    let undecryptable: Vec<&Value> = bl
        .seen
        .iter()
        .filter(|e| e["ev"] == "message" && e["undecryptable"] == true)
        .collect();
    if !undecryptable.is_empty() {
        bl.fail(&format!("Baileys could not decrypt: {undecryptable:?}"));
    }

    // Baileys was refused nothing beyond the probes: it needed nothing outside the loopback.
    bl.check_only_probes_blocked(probes_blocked);
    bl.command(&json!({"cmd": "exit"}));
    b1.stop().await;
    a2.stop().await;
    c1.stop().await;
}
