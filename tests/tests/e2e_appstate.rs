//! App state ("syncd") end to end through the real drivers (tokio and smol) against the
//! simulator: the phone shares its app-state key after linking, the companion pulls the five
//! collections (snapshots as external blobs from the simulated media host, then patches, every
//! MAC and the LTHash checked) and hands out typed names, mutes and pins; a patch sent by one
//! companion reaches another; a patch corrupted in transit (patch MAC, LTHash) is refused and
//! the collection recovered from its snapshot; a restart mid-sync applies no patch twice.
//! Every wait is bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use amarula::core::appstate::{AppStateAction, Collection};
use amarula::core::jid::Jid;
use amarula::core::machine::{AppStateSyncError, AppStateUpdate, Event};
use amarula::store::MemoryStore;
use amarula::{Client, ClientConfig, ClientEvent, Events};
use amarula_tests::runtimes::{Runtime as Rt, Smol, Tokio};
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{Account, PatchCorruption, SimConfig, Simulator};

const WAIT: Duration = Duration::from_secs(20);

struct Env {
    sim: Simulator,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt.block_on(Simulator::start(SimConfig::default())).unwrap();
        Self { sim, rt }
    }

    fn config(&self) -> ClientConfig {
        let mut machine = config_for(&self.sim);
        machine.prekey_upload_count = 20;
        ClientConfig {
            url: self.sim.url(),
            machine,
            close_timeout: Duration::from_millis(200),
            media: amarula::media::MediaConfig {
                scheme: "http".into(),
                attempts: 3,
                backoff: Duration::from_millis(5),
                ..Default::default()
            },
            ..ClientConfig::default()
        }
    }

    fn account(&self, phone: &str) -> Account {
        self.sim
            .account(phone)
            .unwrap_or_else(|| self.sim.add_account(phone))
    }

    fn linked(&self, phone: &str, seed: u8) -> MemoryStore {
        let account = self.account(phone);
        let mut creds = fresh_credentials(seed);
        creds.device = Some(account.link_device(&creds));
        MemoryStore::with_credentials(creds)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.sim.shutdown();
    }
}

struct Device {
    client: Client,
    events: Events,
}

/// What a device saw of app state.
#[derive(Debug, Default)]
struct Seen {
    updates: Vec<AppStateUpdate>,
    synced: BTreeMap<Collection, u64>,
    recovering: Vec<(Collection, AppStateSyncError)>,
    failed: Vec<(Collection, AppStateSyncError)>,
}

impl Device {
    async fn start<R: Rt>(env: &Env, store: MemoryStore) -> Self {
        let (client, events) = R::connect(env.config(), store).await.unwrap();
        Self { client, events }
    }

    async fn next(&mut self, what: &str) -> Option<ClientEvent> {
        let next = smol::future::or(async { Some(self.events.recv().await) }, async {
            smol::Timer::after(WAIT).await;
            None
        })
        .await;
        match next {
            Some(e) => e,
            None => panic!("no {what} within {WAIT:?}"),
        }
    }

    /// Collects app-state events until `done` says the picture is complete.
    async fn until(&mut self, seen: &mut Seen, what: &str, done: impl Fn(&Seen) -> bool) {
        while !done(seen) {
            let Some(e) = self.next(what).await else {
                panic!("events ended before {what}: {seen:?}");
            };
            record(seen, e);
        }
    }

    async fn ready(&mut self) {
        let mut seen = Seen::default();
        loop {
            match self.next("prekeys uploaded").await {
                Some(ClientEvent::Event(Event::PreKeysUploaded { .. })) => return,
                Some(e) => record(&mut seen, e),
                None => panic!("closed"),
            }
        }
    }
}

fn record(seen: &mut Seen, e: ClientEvent) {
    match e {
        ClientEvent::Event(Event::AppState(u)) => seen.updates.push(*u),
        ClientEvent::Event(Event::AppStateSynced {
            collection,
            version,
        }) => {
            seen.synced.insert(collection, version);
        }
        ClientEvent::Event(Event::AppStateFailed {
            collection,
            error,
            recovering,
        }) => {
            if recovering {
                seen.recovering.push((collection, error));
            } else {
                seen.failed.push((collection, error));
            }
        }
        _ => {}
    }
}

fn user(n: &str) -> Jid {
    Jid::user(n)
}

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

fn actions(seen: &Seen) -> Vec<AppStateAction> {
    seen.updates.iter().map(|u| u.action.clone()).collect()
}

fn all_synced(seen: &Seen) -> bool {
    Collection::ALL.iter().all(|c| seen.synced.contains_key(c))
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
    let mut d = Device::start::<R>(env, env.linked(phone, 71)).await;
    let mut seen = Seen::default();
    d.until(&mut seen, "every collection synced", all_synced)
        .await;
    let got = actions(&seen);
    assert!(got.contains(&contact("15550000001", "Ann Lee")), "{got:?}");
    assert!(got.contains(&contact("15550000002", "Bo Chan")), "{got:?}");
    assert!(got.contains(&AppStateAction::Mute {
        chat: user("15550000001"),
        muted: true,
        until_ms: Some(1_900_000_000_000),
    }));
    assert!(got.contains(&pin("15550000001", true)));
    assert!(got.contains(&AppStateAction::PushName("Me".into())));
    assert_eq!(seen.synced[&Collection::RegularLow], 2);
    assert_eq!(seen.synced[&Collection::CriticalUnblockLow], 1);
    assert_eq!(seen.synced[&Collection::CriticalBlock], 1);
    assert!(
        seen.recovering.is_empty() && seen.failed.is_empty(),
        "{seen:?}"
    );
    // A later patch of the phone arrives through the server_sync notification.
    account.app_state_patch(&[contact("15550000003", "Cy Dee")]);
    let mut seen = Seen::default();
    d.until(&mut seen, "the new contact", |s| {
        actions(s).contains(&contact("15550000003", "Cy Dee"))
    })
    .await;
    d.client.stop().await;
}

async fn patch_reaches_other_companion<R: Rt>(env: &Env) {
    let phone = "15550007002";
    let account = env.account(phone);
    account.app_state_snapshot(&[pin("15550000001", false)]);
    let mut a = Device::start::<R>(env, env.linked(phone, 72)).await;
    a.ready().await;
    let mut b = Device::start::<R>(env, env.linked(phone, 73)).await;
    b.ready().await;
    account.share_app_state_key().unwrap();
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    a.until(&mut sa, "a synced", all_synced).await;
    b.until(&mut sb, "b synced", all_synced).await;
    // A pins; B hears of it; the phone (which checked every MAC) accepted it.
    let v = a
        .client
        .send_app_state(pin("15550000005", true))
        .await
        .unwrap();
    assert_eq!(v, 2);
    let mut sa = Seen::default();
    a.until(&mut sa, "a's own pin applied", |s| {
        actions(s).contains(&pin("15550000005", true))
    })
    .await;
    let mut sb = Seen::default();
    b.until(&mut sb, "a's pin at b", |s| {
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
    let mut sa = Seen::default();
    a.until(&mut sa, "b's mute at a", |s| actions(s).contains(&mute))
        .await;
    assert_eq!(account.app_state_pushed(), 2);
    assert_eq!(account.app_state_version(Collection::RegularLow), 2);
    assert_eq!(account.app_state_version(Collection::RegularHigh), 1);
    a.client.stop().await;
    b.client.stop().await;
}

async fn corrupted_patch_recovered<R: Rt>(env: &Env) {
    let phone = "15550007003";
    let account = env.account(phone);
    account.app_state_snapshot(&[pin("15550000001", true)]);
    let mut d = Device::start::<R>(env, env.linked(phone, 74)).await;
    d.ready().await;
    account.share_app_state_key().unwrap();
    let mut seen = Seen::default();
    d.until(&mut seen, "synced", all_synced).await;
    for (how, chat) in [
        (PatchCorruption::PatchMac, "15550000002"),
        (PatchCorruption::LtHash, "15550000003"),
    ] {
        account.corrupt_next_app_state_patch(how);
        let version = account.app_state_patch(&[pin(chat, true)]);
        let mut seen = Seen::default();
        d.until(&mut seen, "recovered", |s| {
            s.synced.get(&Collection::RegularLow) == Some(&version)
        })
        .await;
        assert_eq!(seen.recovering.len(), 1, "{seen:?}");
        let (c, e) = &seen.recovering[0];
        assert_eq!(*c, Collection::RegularLow);
        let expected = match how {
            PatchCorruption::PatchMac => amarula::core::appstate::AppStateError::PatchMac(version),
            _ => amarula::core::appstate::AppStateError::LtHash(version),
        };
        assert_eq!(*e, AppStateSyncError::Decode(expected));
        // Refetched from the snapshot: its pin again (marked as such), then the patches.
        let got = actions(&seen);
        assert!(got.contains(&pin(chat, true)), "{got:?}");
        assert!(
            seen.updates
                .iter()
                .any(|u| u.from_snapshot && u.action == pin("15550000001", true))
        );
    }
    d.client.stop().await;
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
    let mut d = Device::start::<R>(env, store.clone()).await;
    d.ready().await;
    // The five first pulls are answered, the next page of regular_low is not: the client
    // stops with the first page applied.
    account.answer_app_state_iqs(Some(5));
    account.share_app_state_key().unwrap();
    let mut seen = Seen::default();
    d.until(&mut seen, "the first page", |s| s.updates.len() >= 51)
        .await;
    d.client.stop().await;
    account.answer_app_state_iqs(None);
    while let Some(e) = d.events.recv().await {
        record(&mut seen, e);
    }
    let first = seen.updates.len();
    // The first run stopped mid-sync.
    assert_eq!(first, 51, "the snapshot and the first page");
    assert!(!seen.synced.contains_key(&Collection::RegularLow));
    // Restart on the same store: the pull resumes from the stored version.
    let mut d = Device::start::<R>(env, store).await;
    d.until(&mut seen, "the rest", |s| {
        s.synced.get(&Collection::RegularLow) == Some(&(n + 1))
    })
    .await;
    let mut chats: Vec<Jid> = seen
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
    d.client.stop().await;
}

async fn missing_key_requested<R: Rt>(env: &Env) {
    let phone = "15550007005";
    let account = env.account(phone);
    account.app_state_snapshot(&[pin("15550000001", true)]);
    let mut d = Device::start::<R>(env, env.linked(phone, 76)).await;
    d.ready().await;
    account.share_app_state_key().unwrap();
    let mut seen = Seen::default();
    d.until(&mut seen, "synced", all_synced).await;
    // The phone rotates its key and patches with the new one, not shared yet.
    let mut phone_events = env.sim.subscribe();
    let new_key = account.rotate_app_state_key();
    let version = account.app_state_patch(&[pin("15550000002", true)]);
    let mut seen = Seen::default();
    d.until(&mut seen, "the missing key", |s| !s.failed.is_empty())
        .await;
    assert_eq!(
        seen.failed[0].1,
        AppStateSyncError::Decode(amarula::core::appstate::AppStateError::MissingKey(
            new_key.clone()
        ))
    );
    // The companion asked our phone for it (APP_STATE_SYNC_KEY_REQUEST).
    let _rt = env.rt.enter();
    let asked = phone_events
        .wait_for(WAIT, |e| match e {
            amarula_tests::sim::SimEvent::PhoneMessage {
                account: a,
                message,
                ..
            } if a == phone => {
                let pm = message.protocol_message.as_ref()?;
                (pm.r#type == Some(7)).then(|| {
                    pm.app_state_sync_key_request
                        .as_ref()
                        .map(|r| {
                            r.key_i_ds
                                .iter()
                                .filter_map(|k| k.key_id.clone())
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(asked, vec![bytes::Bytes::from(new_key)]);
    // The phone answers with its keys: the pull goes through.
    account.share_app_state_key().unwrap();
    let mut seen = Seen::default();
    d.until(&mut seen, "the pin", |s| {
        s.synced.get(&Collection::RegularLow) == Some(&version)
    })
    .await;
    assert!(actions(&seen).contains(&pin("15550000002", true)));
    d.client.stop().await;
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[test]
            fn tokio() {
                let env = Env::new();
                Tokio::block_on(&env.rt, super::$name::<Tokio>(&env));
            }
            #[test]
            fn smol() {
                let env = Env::new();
                Smol::block_on(&env.rt, super::$name::<Smol>(&env));
            }
        }
    };
}

both!(names_mutes_pins_arrive);
both!(patch_reaches_other_companion);
both!(corrupted_patch_recovered);
both!(restart_mid_sync);
both!(missing_key_requested);
