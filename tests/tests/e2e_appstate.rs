//! App state ("syncd") end to end through the real drivers (tokio and smol) against the
//! simulator: the phone shares its app-state key after linking, the companion pulls the five
//! collections (snapshots as external blobs from the simulated media host, then patches, every
//! MAC and the LTHash checked) and hands out typed names, mutes and pins; a patch sent by one
//! companion reaches another; a patch corrupted in transit (patch MAC, LTHash) is refused and
//! the collection recovered from its snapshot; a restart mid-sync applies no patch twice.
//! Every wait is bounded.

use amarula::ClientEvent;
use amarula::core::appstate::{AppStateAction, Collection};
use amarula::core::jid::Jid;
use amarula::core::machine::AppStateSyncError;
use amarula_tests::e2e::{AppStateSeen, Device, Env, Ready, sim_wait, user};
use amarula_tests::runtimes::Runtime as Rt;
use amarula_tests::sim::{PatchCorruption, SimEvent};

fn contact(n: &str, name: &str) -> AppStateAction {
    AppStateAction::Contact {
        jid: user(n),
        full_name: Some(name.into()),
        first_name: Some(name.split(' ').next().unwrap_or(name).into()),
        lid: None,
    }
}

fn pin(n: &str, pinned: bool) -> AppStateAction {
    AppStateAction::Pin {
        chat: user(n),
        pinned,
    }
}

fn actions(seen: &AppStateSeen) -> Vec<AppStateAction> {
    seen.updates.iter().map(|u| u.action.clone()).collect()
}

async fn names_mutes_pins_arrive<R: Rt>(env: &Env) {
    let phone = "15550007001";
    let account = env.account(phone);
    account.app_state_snapshot(&[
        contact("15550000001", "Ann Lee"),
        contact("15550000002", "Bo Chan"),
    ]);
    account.app_state_snapshot(&[AppStateAction::Mute {
        chat: user("15550000001"),
        muted: true,
        until_ms: Some(1_900_000_000_000),
    }]);
    account.app_state_snapshot(&[pin("15550000009", false)]);
    account.app_state_patch(&[pin("15550000001", true)]);
    account.app_state_patch(&[AppStateAction::PushName("Me".into())]);
    // As a phone does after pairing: the keys go to the new device once it can be reached.
    account.share_app_state_keys_after_linking();
    let mut d = Device::start_with::<R, _>(env, "d", env.linked(phone, 71)).await;
    d.until_app_state("every collection synced", AppStateSeen::all_synced)
        .await;
    let got = actions(&d.app_state);
    assert!(got.contains(&contact("15550000001", "Ann Lee")), "{got:?}");
    assert!(got.contains(&contact("15550000002", "Bo Chan")), "{got:?}");
    assert!(got.contains(&AppStateAction::Mute {
        chat: user("15550000001"),
        muted: true,
        until_ms: Some(1_900_000_000_000),
    }));
    assert!(got.contains(&pin("15550000001", true)));
    assert!(got.contains(&AppStateAction::PushName("Me".into())));
    assert_eq!(d.app_state.synced[&Collection::RegularLow], 2);
    assert_eq!(d.app_state.synced[&Collection::CriticalUnblockLow], 1);
    assert_eq!(d.app_state.synced[&Collection::CriticalBlock], 1);
    assert!(
        d.app_state.recovering.is_empty() && d.app_state.failed.is_empty(),
        "{:?}",
        d.app_state
    );
    // A later patch of the phone arrives through the server_sync notification.
    account.app_state_patch(&[contact("15550000003", "Cy Dee")]);
    d.app_state = AppStateSeen::default();
    d.until_app_state("the new contact", |s| {
        actions(s).contains(&contact("15550000003", "Cy Dee"))
    })
    .await;
    d.stop().await;
}

async fn patch_reaches_other_companion<R: Rt>(env: &Env) {
    let phone = "15550007002";
    let account = env.account(phone);
    account.app_state_snapshot(&[pin("15550000001", false)]);
    let mut a = Device::start_with::<R, _>(env, "a", env.linked(phone, 72)).await;
    let mut b = Device::start_with::<R, _>(env, "b", env.linked(phone, 73)).await;
    account.share_app_state_key().unwrap();
    a.until_app_state("a synced", AppStateSeen::all_synced)
        .await;
    b.until_app_state("b synced", AppStateSeen::all_synced)
        .await;
    // A pins; B hears of it; the phone (which checked every MAC) accepted it.
    let v = a
        .client
        .send_app_state(pin("15550000005", true))
        .await
        .unwrap();
    assert_eq!(v, 2);
    a.app_state = AppStateSeen::default();
    a.until_app_state("a's own pin applied", |s| {
        actions(s).contains(&pin("15550000005", true))
    })
    .await;
    b.app_state = AppStateSeen::default();
    b.until_app_state("a's pin at b", |s| {
        actions(s).contains(&pin("15550000005", true))
    })
    .await;
    // B mutes; A hears of it.
    let mute = AppStateAction::Mute {
        chat: user("15550000006"),
        muted: true,
        until_ms: None,
    };
    b.client.send_app_state(mute.clone()).await.unwrap();
    a.app_state = AppStateSeen::default();
    a.until_app_state("b's mute at a", |s| actions(s).contains(&mute))
        .await;
    assert_eq!(account.app_state_pushed(), 2);
    assert_eq!(account.app_state_version(Collection::RegularLow), 2);
    assert_eq!(account.app_state_version(Collection::RegularHigh), 1);
    a.stop().await;
    b.stop().await;
}

/// What a CRM inbox sends: a label created, a chat and a message labeled, a contact saved,
/// a chat cleared and another deleted, our push name; each reaches the other companion
/// typed as it was sent, in the collection the phone expects.
async fn labels_contacts_and_deletes_reach_other_companion<R: Rt>(env: &Env) {
    let phone = "15550007006";
    let account = env.account(phone);
    let mut a = Device::start_with::<R, _>(env, "a", env.linked(phone, 77)).await;
    let mut b = Device::start_with::<R, _>(env, "b", env.linked(phone, 78)).await;
    account.share_app_state_key().unwrap();
    a.until_app_state("a synced", AppStateSeen::all_synced)
        .await;
    b.until_app_state("b synced", AppStateSeen::all_synced)
        .await;
    let group = Jid::group("120363000000000001");
    let sent = [
        AppStateAction::LabelEdit {
            label: "7".into(),
            name: Some("Leads".into()),
            color: Some(3),
            deleted: false,
        },
        AppStateAction::LabelChat {
            label: "7".into(),
            chat: user("15550000011"),
            labeled: true,
        },
        AppStateAction::LabelMessage {
            label: "7".into(),
            message: amarula::core::appstate::ChatMessageRef {
                chat: group.clone(),
                id: "3EB0AB".into(),
                from_me: false,
                sender: Some(user("15550000012")),
            },
            labeled: true,
        },
        contact("15550000013", "Di Ek"),
        AppStateAction::ClearChat {
            chat: user("15550000014"),
            delete_starred: false,
            delete_media: true,
        },
        AppStateAction::DeleteChat {
            chat: group,
            delete_media: false,
        },
        AppStateAction::PushName("Shop".into()),
    ];
    b.app_state = AppStateSeen::default();
    for action in &sent {
        a.client.send_app_state(action.clone()).await.unwrap();
    }
    b.until_app_state("everything a sent", |s| {
        let got = actions(s);
        sent.iter().all(|a| got.contains(a))
    })
    .await;
    assert_eq!(account.app_state_pushed(), sent.len() as u64);
    for (collection, count) in [
        (Collection::Regular, 3),
        (Collection::CriticalUnblockLow, 1),
        (Collection::RegularHigh, 2),
        (Collection::CriticalBlock, 1),
    ] {
        assert_eq!(
            account.app_state_version(collection),
            count,
            "{collection:?}"
        );
    }
    a.stop().await;
    b.stop().await;
}

async fn corrupted_patch_recovered<R: Rt>(env: &Env) {
    let phone = "15550007003";
    let account = env.account(phone);
    account.app_state_snapshot(&[pin("15550000001", true)]);
    let mut d = Device::start_with::<R, _>(env, "d", env.linked(phone, 74)).await;
    account.share_app_state_key().unwrap();
    d.until_app_state("synced", AppStateSeen::all_synced).await;
    for (how, chat) in [
        (PatchCorruption::PatchMac, "15550000002"),
        (PatchCorruption::LtHash, "15550000003"),
    ] {
        account.corrupt_next_app_state_patch(how);
        let version = account.app_state_patch(&[pin(chat, true)]);
        d.app_state = AppStateSeen::default();
        d.until_app_state("recovered", |s| {
            s.synced.get(&Collection::RegularLow) == Some(&version)
        })
        .await;
        assert_eq!(d.app_state.recovering.len(), 1, "{:?}", d.app_state);
        let (c, e) = &d.app_state.recovering[0];
        assert_eq!(*c, Collection::RegularLow);
        let expected = match how {
            PatchCorruption::PatchMac => amarula::core::appstate::AppStateError::PatchMac(version),
            _ => amarula::core::appstate::AppStateError::LtHash(version),
        };
        assert_eq!(*e, AppStateSyncError::Decode(expected));
        // Refetched from the snapshot: its pin again (marked as such), then the patches.
        let got = actions(&d.app_state);
        assert!(got.contains(&pin(chat, true)), "{got:?}");
        assert!(
            d.app_state
                .updates
                .iter()
                .any(|u| u.from_snapshot && u.action == pin("15550000001", true))
        );
    }
    d.stop().await;
}

async fn restart_mid_sync<R: Rt>(env: &Env) {
    let phone = "15550007004";
    let account = env.account(phone);
    account.app_state_snapshot(&[pin("15550000001", true)]);
    // 120 patches: three pages of sync answers.
    let n = 120;
    for i in 0..n {
        account.app_state_patch(&[pin(&format!("1555100{i:04}"), true)]);
    }
    let store = env.linked(phone, 75);
    let mut d = Device::start_with::<R, _>(env, "d", store.clone()).await;
    // The five first pulls are answered, the next page of regular_low is not: the client
    // stops with the first page applied.
    account.answer_app_state_iqs(Some(5));
    account.share_app_state_key().unwrap();
    d.until_app_state("the first page", |s| s.updates.len() >= 51)
        .await;
    d.client.stop().await;
    account.answer_app_state_iqs(None);
    d.until("Stopped", |_, e| {
        matches!(e, ClientEvent::Stopped).then_some(())
    })
    .await;
    let seen = std::mem::take(&mut d.app_state);
    let first = seen.updates.len();
    // The first run stopped mid-sync.
    assert_eq!(first, 51, "the snapshot and the first page");
    assert!(!seen.synced.contains_key(&Collection::RegularLow));
    // Restart on the same store: the pull resumes from the stored version.
    let mut d = Device::connect::<R, _>("d again", env.config(), store, Ready::Started).await;
    d.app_state = seen;
    d.until_app_state("the rest", |s| {
        s.synced.get(&Collection::RegularLow) == Some(&(n + 1))
    })
    .await;
    let mut chats: Vec<Jid> = d
        .app_state
        .updates
        .iter()
        .filter(|u| !u.from_snapshot)
        .map(|u| match &u.action {
            AppStateAction::Pin { chat, .. } => chat.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let total = chats.len();
    chats.sort();
    chats.dedup();
    assert_eq!(
        total, n as usize,
        "each patch applied once (first run {first})"
    );
    assert_eq!(chats.len(), n as usize);
    d.stop().await;
}

async fn missing_key_requested<R: Rt>(env: &Env) {
    let phone = "15550007005";
    let account = env.account(phone);
    account.app_state_snapshot(&[pin("15550000001", true)]);
    let mut d = Device::start_with::<R, _>(env, "d", env.linked(phone, 76)).await;
    account.share_app_state_key().unwrap();
    d.until_app_state("synced", AppStateSeen::all_synced).await;
    // The phone rotates its key and patches with the new one, not shared yet.
    let mut phone_events = env.sim.subscribe();
    let new_key = account.rotate_app_state_key();
    let version = account.app_state_patch(&[pin("15550000002", true)]);
    d.app_state = AppStateSeen::default();
    d.until_app_state("the missing key", |s| !s.failed.is_empty())
        .await;
    assert_eq!(
        d.app_state.failed[0].1,
        AppStateSyncError::Decode(amarula::core::appstate::AppStateError::MissingKey(
            new_key.clone()
        ))
    );
    // The companion asked our phone for it (APP_STATE_SYNC_KEY_REQUEST).
    // As a peer message (`category="peer"`) to the phone alone.
    let mut peer_stanzas = Vec::new();
    let (id, asked) = sim_wait(&mut phone_events, "the key request", |e| match e {
        SimEvent::StanzaReceived { node, .. }
            if node.tag == "message" && node.attr_str("category") == Some("peer") =>
        {
            peer_stanzas.extend(node.attr_str("id").map(str::to_owned));
            None
        }
        SimEvent::PhoneMessage {
            account: a,
            id,
            message,
            ..
        } if a == phone => {
            let pm = message.protocol_message.as_ref()?;
            (pm.r#type == Some(7)).then(|| {
                let ids = pm
                    .app_state_sync_key_request
                    .as_ref()
                    .map(|r| {
                        r.key_i_ds
                            .iter()
                            .filter_map(|k| k.key_id.clone())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                (id.clone(), ids)
            })
        }
        _ => None,
    })
    .await;
    assert!(
        peer_stanzas.contains(&id),
        "{id} not sent as a peer message"
    );
    assert_eq!(asked, vec![bytes::Bytes::from(new_key)]);
    // The phone answers with its keys: the pull goes through.
    account.share_app_state_key().unwrap();
    d.app_state = AppStateSeen::default();
    d.until_app_state("the pin", |s| {
        s.synced.get(&Collection::RegularLow) == Some(&version)
    })
    .await;
    assert!(actions(&d.app_state).contains(&pin("15550000002", true)));
    d.stop().await;
}

amarula_tests::on_both_drivers!(
    Env::new();
    names_mutes_pins_arrive,
    patch_reaches_other_companion,
    labels_contacts_and_deletes_reach_other_companion,
    corrupted_patch_recovered,
    restart_mid_sync,
    missing_key_requested,
);
