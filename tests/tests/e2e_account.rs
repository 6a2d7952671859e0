//! The account, contacts and calls through the real drivers (tokio and smol) against the
//! simulator: `state()`, `credentials()`, `own_chat`, `is_on_whatsapp`, user info, profile
//! pictures, push name, status text, blocklist, privacy, incoming calls with `reject_call`,
//! and `logout()` wiping every table of the account (SQLite and memory stores).

use amarula::core::iq::IqError;
use amarula::core::iq::privacy::{PrivacyCategory, PrivacyValue};
use amarula::core::machine::{CloseReason, Event, Reconnect};
use amarula::core::notify::call::CallKind;
use amarula::store::{CredentialStore, MemoryStore, SqliteDatabase, SqliteStore};
use amarula::{ClientError, ClientEvent, ClientState};
use amarula_tests::e2e::{Device, Env, sim_wait, user};
use amarula_tests::runtimes::Runtime as Rt;
use amarula_tests::sim::SimEvent;

async fn account_contacts_and_calls<R: Rt>(env: &Env) {
    let (a, b) = ("15550102001", "15550102002");
    let mut a1 = Device::start::<R>(env, "a1", a, 111).await;
    let mut a2 = Device::start::<R>(env, "a2", a, 112).await;
    let b1 = Device::start::<R>(env, "b1", b, 113).await;
    let alice = env.sim.account(a).unwrap();
    let bob = env.sim.account(b).unwrap();

    // State and identity.
    assert!(a1.client.state().is_logged_in(), "{:?}", a1.client.state());
    let me = a1.client.credentials().expect("paired");
    assert_eq!(me.pn, user(a));
    assert_eq!(&me.device, a1.jid());
    assert_eq!(me.lid, Some(alice.lid()));

    // Who is on WhatsApp: found with both identities, or not.
    let found = a1
        .client
        .is_on_whatsapp(&["+1 555 010 2002", "15550102999"])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(found[0].exists);
    assert_eq!(found[0].query, "+15550102002");
    assert_eq!(found[0].jid, Some(user(b)));
    assert_eq!(found[0].lid, Some(bob.lid()));
    assert!(!found[1].exists && found[1].jid.is_none());

    // Status text and user info.
    b1.client.set_status_text("on holiday").await.unwrap();
    assert_eq!(bob.status_text().as_deref(), Some("on holiday"));
    bob.set_picture(Some("pic1"));
    let info = a1.client.user_info(&[user(b)]).await.unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].jid, user(b));
    assert_eq!(info[0].status.as_deref(), Some("on holiday"));
    assert_eq!(info[0].picture_id.as_deref(), Some("pic1"));
    assert_eq!(info[0].lid, Some(bob.lid()));
    assert!(info[0].devices.contains(&0) && info[0].devices.contains(&b1.jid().device()));

    // Profile pictures: preview and full, none, hidden by privacy.
    let preview = a1
        .client
        .profile_picture(&user(b), true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (preview.id.as_str(), preview.kind.as_str()),
        ("pic1", "preview")
    );
    assert!(preview.url.starts_with("https://"));
    let full = a1
        .client
        .profile_picture(&user(b), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(full.kind, "image");
    assert_ne!(full.url, preview.url);
    assert_eq!(
        a1.client.profile_picture(&user(a), true).await.unwrap(),
        None
    );
    bob.set_privacy("profile", "none");
    match a1.client.profile_picture(&user(b), true).await {
        Err(ClientError::Iq(IqError::Server { code: 401, .. })) => {}
        other => panic!("{other:?}"),
    }

    // Push name: kept with the credentials, told to the server.
    let mut seen = env.sim.subscribe();
    a1.client.set_push_name("Alice").await.unwrap();
    let device = a1.jid().clone();
    sim_wait(&mut seen, "presence with the name", |e| match e {
        SimEvent::StanzaReceived {
            device: Some(d),
            node,
            ..
        } if *d == device && node.tag == "presence" => {
            (node.attr_str("name") == Some("Alice")).then_some(())
        }
        _ => None,
    })
    .await;
    a1.until("credentials saved", |_, e| {
        matches!(e, ClientEvent::Event(Event::CredentialsChanged(c)) if c.push_name.as_deref() == Some("Alice"))
            .then_some(())
    })
    .await;
    assert_eq!(
        a1.client.credentials().and_then(|c| c.push_name).as_deref(),
        Some("Alice")
    );

    // Blocklist: by phone number (the LID is looked up) and back.
    assert!(a1.client.blocklist().await.unwrap().jids.is_empty());
    let list = a1.client.block(&user(b)).await.unwrap();
    assert!(list.contains(&bob.lid()), "{list:?}");
    assert_eq!(alice.blocked(), [bob.lid()]);
    let list = a1.client.unblock(&bob.lid()).await.unwrap();
    assert!(list.jids.is_empty());
    assert!(alice.blocked().is_empty());

    // Privacy settings.
    let settings = a1.client.privacy_settings().await.unwrap();
    assert_eq!(
        settings.get(&PrivacyCategory::LastSeen),
        Some(&PrivacyValue::All)
    );
    a1.client
        .set_privacy(PrivacyCategory::LastSeen, PrivacyValue::Contacts)
        .await
        .unwrap();
    assert_eq!(alice.privacy("last").as_deref(), Some("contacts"));
    let settings = a1.client.privacy_settings().await.unwrap();
    assert_eq!(
        settings.get(&PrivacyCategory::LastSeen),
        Some(&PrivacyValue::Contacts)
    );
    match a1
        .client
        .set_privacy(PrivacyCategory::Other("nonsense".into()), PrivacyValue::All)
        .await
    {
        Err(ClientError::Iq(IqError::Server { code: 400, .. })) => {}
        other => panic!("{other:?}"),
    }

    // "Message yourself": a note from our other device is in our own chat; B's is not.
    a2.client.send_text(&user(a), "!status").await.unwrap();
    let note = a1.receive("!status").await;
    assert!(a1.client.own_chat(&note), "{note:?}");
    b1.client.send_text(&user(a), "hello a").await.unwrap();
    let other = a1.receive("hello a").await;
    assert!(!a1.client.own_chat(&other));

    // An incoming call: typed, acked, rejected.
    let mut seen = env.sim.subscribe();
    let call_id = bob.ring(a, true);
    let call = a1.call().await;
    assert_eq!(call.kind, CallKind::Offer);
    assert_eq!(call.call_id, call_id);
    assert!(call.video);
    assert_eq!(call.creator, user(b));
    assert_eq!(call.creator_alt, Some(bob.lid()));
    let other_device = a2.call().await;
    assert_eq!(other_device.call_id, call_id);
    let stanza_id = call.id.clone();
    sim_wait(&mut seen, "the call was acked", |e| match e {
        SimEvent::StanzaReceived {
            device: Some(d),
            node,
            ..
        } if *d == device && node.tag == "ack" => (node.attr_str("class") == Some("call")
            && node.attr_str("id") == Some(stanza_id.as_str()))
        .then_some(()),
        _ => None,
    })
    .await;
    a1.client.reject_call(&call).await.unwrap();
    let reject = sim_wait(&mut seen, "the reject", |e| match e {
        SimEvent::StanzaReceived {
            device: Some(d),
            node,
            ..
        } if *d == device && node.tag == "call" => node.child("reject").cloned(),
        _ => None,
    })
    .await;
    assert_eq!(reject.attr_str("call-id"), Some(call_id.as_str()));
    assert_eq!(reject.attr_jid("call-creator"), Some(&user(b)));
    assert_eq!(reject.attr_str("count"), Some("0"));

    for dev in [a1, a2, b1] {
        dev.stop().await;
    }
}

/// Runs a conversation so the store holds sessions, prekeys, device lists, sent messages and
/// LID mappings, then logs out and checks the outcome.
async fn logout_wipes_the_account<R: Rt>(env: &Env) {
    let (a, b) = ("15550103001", "15550103002");
    let db = SqliteDatabase::open_in_memory().unwrap();
    let store: SqliteStore = db.account("a1").unwrap();
    store.save(&env.linked_credentials(a, 121)).await.unwrap();
    let mut a1 = Device::start_with::<R, _>(env, "a1", store.clone()).await;
    let memory = MemoryStore::with_credentials(env.linked_credentials(a, 122));
    let mut a2 = Device::start_with::<R, _>(env, "a2", memory.clone()).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 123).await;
    a1.client.send_text(&user(b), "before").await.unwrap();
    b1.receive("before").await;
    b1.client.send_text(&user(a), "back").await.unwrap();
    a1.receive("back").await;
    a2.receive("back").await;
    a1.client.is_on_whatsapp(&[b]).await.unwrap();
    let rows: u64 = store
        .row_counts()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert!(rows > 10, "{rows} rows before the logout");
    assert!(memory.record_count() > 10);

    // SQLite: every table of the account is emptied, the client stops.
    let device = a1.jid().clone();
    a1.client.logout().await.unwrap();
    let reason = a1
        .until("Disconnected", |_, e| match e {
            ClientEvent::Disconnected { reason, reconnect } => Some((reason.clone(), *reconnect)),
            _ => None,
        })
        .await;
    assert!(
        matches!(reason, (CloseReason::Logout, Reconnect::Never)),
        "{reason:?}"
    );
    a1.until("Stopped", |_, e| {
        matches!(e, ClientEvent::Stopped).then_some(())
    })
    .await;
    assert!(matches!(a1.client.state(), ClientState::Stopped));
    assert!(a1.client.credentials().is_none());
    for (table, n) in store.row_counts().await.unwrap() {
        assert_eq!(n, 0, "{table} still holds {n} rows of the account");
    }
    assert!(store.load().await.unwrap().is_none());
    assert!(store.load_sent().await.unwrap().is_empty());
    assert!(store.load_pending().await.unwrap().is_empty());
    // The server no longer knows the device.
    let alice = env.sim.account(a).unwrap();
    assert!(!alice.devices().contains(&device));
    assert!(matches!(
        a1.client.logout().await,
        Err(ClientError::Stopped)
    ));

    // The memory store likewise.
    a2.client.logout().await.unwrap();
    a2.until("Stopped", |_, e| {
        matches!(e, ClientEvent::Stopped).then_some(())
    })
    .await;
    assert_eq!(memory.record_count(), 0);
    b1.stop().await;
}

amarula_tests::on_both_drivers!(
    Env::pn_legacy();
    account_contacts_and_calls,
    logout_wipes_the_account,
);
