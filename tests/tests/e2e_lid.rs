//! LID addressing end to end (LID.md, issue 13): the real drivers (tokio and smol) against the
//! simulator in its default 2026 mode, where every account has a LID and is LID-migrated, 1:1
//! and group traffic is addressed by LID with the `*_pn` attributes, and a wrongly addressed
//! stanza is refused (400).
//!
//! - 1:1 both ways by LID, with the sender's other device getting its own copy, and
//!   `canonical_jid` / `phone_jid` both ways;
//! - a chat that starts by phone number (legacy mode) and moves to LID in the middle, with a
//!   restart of the receiver between the two halves, and no undecryptable message;
//! - a LID group with a member added later.

use amarula::core::jid::Jid;
use amarula::store::MemoryStore;
use amarula_tests::e2e::{Device, Env, sim_wait};
use amarula_tests::runtimes::Runtime;
use amarula_tests::sim::{Addressing, SimEvent};

const ALICE: &str = "15550001001";
const BOB: &str = "15550001002";
const CAROL: &str = "15550001003";

fn lid_of(env: &Env, phone: &str) -> Jid {
    env.sim.account(phone).expect("account").lid()
}

/// No device reported an undecryptable message.
fn none_undecryptable(devices: &[&Device]) {
    for d in devices {
        assert!(
            !d.seen.iter().any(|e| e.contains("Undecryptable")),
            "[{}] undecryptable message:\n{}",
            d.name,
            d.seen.join("\n")
        );
    }
}

async fn one_to_one_by_lid<R: Runtime>(env: &Env) {
    let mut alice = Device::start::<R>(env, "alice", ALICE, 11).await;
    let mut alice2 = Device::start::<R>(env, "alice2", ALICE, 12).await;
    let mut bob = Device::start::<R>(env, "bob", BOB, 13).await;
    let (alice_lid, bob_lid) = (lid_of(env, ALICE), lid_of(env, BOB));

    // The application names Bob by phone number; the send goes by LID (the account is
    // LID-migrated) and Bob sees a LID chat with the number as the sender's alternate.
    alice
        .client
        .send_text(&Jid::user(BOB), "hello by lid")
        .await
        .expect("send");
    let got = bob.receive("hello by lid").await;
    assert_eq!(got.chat, alice_lid);
    assert_eq!(got.sender.to_non_device(), alice_lid);
    assert_eq!(
        got.sender_alt.as_ref().map(Jid::to_non_device),
        Some(Jid::user(ALICE))
    );
    assert!(!got.from_me);
    // Alice's other device gets its own copy, in the LID chat.
    let own = alice2.receive("hello by lid").await;
    assert!(own.from_me);
    assert_eq!(own.chat, bob_lid);

    // Bob answers the chat he got; Alice sees it from Bob's LID.
    bob.client
        .send_text(&got.chat, "answer by lid")
        .await
        .expect("send");
    let back = alice.receive("answer by lid").await;
    assert_eq!(back.chat, bob_lid);
    assert!(!back.from_me);

    // The mappings are known both ways, device preserved.
    let bob_dev = bob.jid().clone();
    let bob_lid_dev = bob_lid.clone().with_device(bob_dev.device());
    assert_eq!(
        alice.client.canonical_jid(&Jid::user(BOB)).await.unwrap(),
        bob_lid
    );
    assert_eq!(
        alice.client.canonical_jid(&bob_dev).await.unwrap(),
        bob_lid_dev
    );
    assert_eq!(alice.client.phone_jid(&bob_lid_dev).await.unwrap(), bob_dev);
    assert_eq!(
        bob.client.phone_jid(&alice_lid).await.unwrap(),
        Jid::user(ALICE)
    );
    // A JID nothing maps stays as it is.
    let stranger = Jid::user("15559999999");
    assert_eq!(
        alice.client.canonical_jid(&stranger).await.unwrap(),
        stranger
    );
    none_undecryptable(&[&alice, &alice2, &bob]);
    alice.stop().await;
    alice2.stop().await;
    bob.stop().await;
}

async fn a_chat_moves_from_phone_number_to_lid<R: Runtime>(env: &Env) {
    let mut alice = Device::start::<R>(env, "alice", ALICE, 21).await;
    let bob_store = MemoryStore::with_credentials(env.linked_credentials(BOB, 22));
    let mut bob = Device::start_with::<R, _>(env, "bob", bob_store.clone()).await;
    let alice_lid = lid_of(env, ALICE);

    // Before the migration: phone-number chats; Bob keeps his session under Alice's number.
    alice
        .client
        .send_text(&Jid::user(BOB), "pn 1")
        .await
        .expect("send");
    let first = bob.receive("pn 1").await;
    assert_eq!(first.chat, Jid::user(ALICE));

    // Bob restarts between the two halves (the store is all that is left).
    bob.stop().await;

    // The server moves to LID addressing; both primaries tell their companions.
    env.sim.set_addressing(Addressing::Lid);
    let alice_account = env.sim.account(ALICE).expect("alice");
    let bob_account = env.sim.account(BOB).expect("bob");
    alice_account.push_lid_migration(&[BOB]).expect("push");
    bob_account.push_lid_migration(&[ALICE]).expect("push");
    alice
        .until("the migration push", |d, _| {
            d.seen
                .iter()
                .any(|e| e.contains("CredentialsChanged") && e.contains("lid_migrated: true"))
                .then_some(())
        })
        .await;

    // Alice writes by LID now: Bob (restarted) moves the session he had under her number
    // to her LID and decrypts without a retry.
    alice
        .client
        .send_text(&Jid::user(BOB), "lid 2")
        .await
        .expect("send");
    let mut bob = Device::restart::<R, _>(env, "bob again", bob_store).await;
    let second = bob.receive("lid 2").await;
    assert_eq!(second.chat, alice_lid);
    // The session moved: stored under her LID device, gone from her number, in one batch.
    let alice_dev = alice.jid().device();
    let moved = format!("Persist(Session({}:{alice_dev}@lid", alice_lid.user_part());
    let removed = format!("Persist(RemoveSession({ALICE}:{alice_dev}@s.whatsapp.net))");
    let at = |what: &str| bob.seen.iter().position(|e| e.contains(what));
    let (Some(m), Some(r)) = (at(&moved), at(&removed)) else {
        panic!("no session migration:\n{}", bob.seen.join("\n"));
    };
    assert!(m < r, "the new copy is stored before the old one goes");
    assert!(
        !bob.seen.iter().any(|e| e.contains("pkmsg")),
        "no new session was needed"
    );
    bob.client
        .send_text(&second.chat, "lid 3")
        .await
        .expect("send");
    let third = alice.receive("lid 3").await;
    assert_eq!(third.chat, lid_of(env, BOB));
    alice
        .client
        .send_text(&Jid::user(BOB), "lid 4")
        .await
        .expect("send");
    bob.receive("lid 4").await;
    none_undecryptable(&[&alice, &bob]);
    // No retry receipt went out for any of it.
    assert!(!alice.seen.iter().any(|e| e.contains("RetryRequested")));
    alice.stop().await;
    bob.stop().await;
}

async fn a_lid_group_with_a_late_joiner<R: Runtime>(env: &Env) {
    let mut alice = Device::start::<R>(env, "alice", ALICE, 31).await;
    let mut bob = Device::start::<R>(env, "bob", BOB, 32).await;
    let mut carol = Device::start::<R>(env, "carol", CAROL, 33).await;
    let alice_account = env.sim.account(ALICE).expect("alice");
    let group = alice_account.create_group("lid group", &[BOB]);

    alice
        .client
        .send_text(&group, "to the group")
        .await
        .expect("send");
    let got = bob.receive("to the group").await;
    assert_eq!(got.chat, group);
    assert_eq!(got.sender.to_non_device(), lid_of(env, ALICE));
    assert_eq!(
        got.sender_alt.as_ref().map(Jid::to_non_device),
        Some(Jid::user(ALICE))
    );
    // Bob got it: the server took the stanza (it refuses a LID group's stanza naming any
    // device by phone number with 400, and then routes nothing).

    // Carol joins late: she gets the sender key with the next message.
    alice_account.add_to_group(&group, CAROL).expect("add");
    carol
        .group_change("carol added", |n| n.group == group)
        .await;
    alice
        .group_change("carol added", |n| n.group == group)
        .await;
    alice
        .client
        .send_text(&group, "welcome carol")
        .await
        .expect("send");
    let welcome = carol.receive("welcome carol").await;
    assert_eq!(welcome.sender.to_non_device(), lid_of(env, ALICE));
    bob.receive("welcome carol").await;
    // Bob answers in the group: his sender key is named by his LID.
    bob.client.send_text(&group, "hi all").await.expect("send");
    let hi = carol.receive("hi all").await;
    assert_eq!(hi.sender.to_non_device(), lid_of(env, BOB));
    alice.receive("hi all").await;
    none_undecryptable(&[&alice, &bob, &carol]);
    alice.stop().await;
    bob.stop().await;
    carol.stop().await;
}

async fn a_463_is_recovered_with_privacy_tokens<R: Runtime>(env: &Env) {
    let mut alice = Device::start::<R>(env, "alice", ALICE, 41).await;
    let mut bob = Device::start::<R>(env, "bob", BOB, 42).await;
    let bob_account = env.sim.account(BOB).expect("bob");
    bob_account.restrict_strangers(true);

    // Alice never talked to Bob, who takes no message from strangers: 463, nothing routed.
    let refused = alice
        .client
        .send_text(&Jid::user(BOB), "hello stranger")
        .await;
    assert!(
        format!("{refused:?}").contains("code: 463"),
        "the send reports the refusal: {refused:?}"
    );
    // Alice's client gave Bob her token instead (the privacy IQ), which Bob keeps.
    bob.until("Alice's privacy token", |d, _| {
        d.seen
            .iter()
            .any(|e| e.contains("Persist(TcToken("))
            .then_some(())
    })
    .await;
    assert!(env.sim.account(ALICE).expect("alice").trusts(BOB));

    // Bob writes back; his client gives Alice his token after the send.
    bob.client
        .send_text(&Jid::user(ALICE), "who is this?")
        .await
        .expect("send");
    alice.receive("who is this?").await;
    alice
        .until("Bob's privacy token", |d, _| {
            d.seen
                .iter()
                .any(|e| e.contains("Persist(TcToken("))
                .then_some(())
        })
        .await;
    assert!(bob_account.trusts(ALICE));

    // Now Alice's message carries Bob's token and is delivered.
    alice
        .client
        .send_text(&Jid::user(BOB), "hello again")
        .await
        .expect("send");
    bob.receive("hello again").await;
    assert!(
        !bob.messages
            .iter()
            .any(|m| m.text() == Some("hello stranger")),
        "the refused message was not delivered"
    );
    // A presence subscription carries Bob's token too.
    let mut rx = env.sim.subscribe();
    alice
        .client
        .presence_subscribe(&Jid::user(BOB))
        .await
        .expect("subscribe");
    let token = sim_wait(&mut rx, "the subscription", |e| match e {
        SimEvent::StanzaReceived { node, .. }
            if node.tag == "presence" && node.attr_str("type") == Some("subscribe") =>
        {
            Some(
                node.child("tctoken")
                    .and_then(|t| t.content_bytes())
                    .map(<[u8]>::to_vec),
            )
        }
        _ => None,
    })
    .await;
    assert!(token.is_some_and(|t| !t.is_empty()), "no <tctoken>");
    none_undecryptable(&[&alice, &bob]);
    alice.stop().await;
    bob.stop().await;
}

amarula_tests::on_both_drivers!(
    Env::new();
    one_to_one_by_lid,
    a_lid_group_with_a_late_joiner,
    a_463_is_recovered_with_privacy_tokens,
);

/// The chat that moves starts in the legacy world.
mod from_phone_numbers {
    use super::*;

    amarula_tests::on_both_drivers!(Env::pn_legacy(); a_chat_moves_from_phone_number_to_lid);
}
