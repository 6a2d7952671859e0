//! Receipts, presence and chat state through the real drivers (tokio and smol) over loopback
//! sockets against the simulator, with two accounts: read and played receipts flow back to
//! the sender's devices as typed `Event::Receipt`s (and to the reader's other device as its
//! own), in a 1:1 chat and a group; presence subscription with available / unavailable and
//! last seen, also when a connection ends; composing, recording and paused arrive as
//! `Event::ChatState`. Every scenario runs once per runtime; every wait is bounded.

use std::time::Duration;

use amarula::core::jid::Jid;
use amarula::core::machine::{
    ChatState, ChatStateUpdate, Confirm, Event, IncomingMessage, Presence, PresenceUpdate, Receipt,
    ReceiptKind, SendError,
};
use amarula::store::MemoryStore;
use amarula::{Client, ClientConfig, ClientError, ClientEvent, Events};
use amarula_tests::runtimes::{Runtime as Rt, Smol, Tokio};
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{SimConfig, Simulator};

const WAIT: Duration = Duration::from_secs(15);

/// The simulator on its own tokio runtime.
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
        let sim = rt
            .block_on(Simulator::start(SimConfig::pn_legacy()))
            .unwrap();
        Self { sim, rt }
    }

    fn config(&self) -> ClientConfig {
        let mut machine = config_for(&self.sim);
        machine.max_backoff = Duration::from_millis(100);
        machine.prekey_upload_count = 30;
        ClientConfig {
            url: self.sim.url(),
            machine,
            close_timeout: Duration::from_millis(200),
            ..ClientConfig::default()
        }
    }

    /// A linked device of `phone`'s account (created on first use) with a memory store.
    fn linked(&self, phone: &str, seed: u8) -> MemoryStore {
        let account = self
            .sim
            .account(phone)
            .unwrap_or_else(|| self.sim.add_account(phone));
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

/// One running client and what it saw.
struct Device {
    name: String,
    jid: Jid,
    client: Client,
    events: Events,
    seen: Vec<String>,
    messages: Vec<IncomingMessage>,
    receipts: Vec<Receipt>,
    presence: Vec<PresenceUpdate>,
    chat_states: Vec<ChatStateUpdate>,
    /// The push name of every stored credentials change.
    stored_names: Vec<Option<String>>,
}

impl Device {
    async fn start<R: Rt>(env: &Env, name: &str, phone: &str, seed: u8) -> Self {
        let store = env.linked(phone, seed);
        let jid = store
            .credentials()
            .and_then(|c| c.device)
            .expect("paired")
            .jid;
        let (client, events) = R::connect(env.config(), store).await.unwrap();
        let mut d = Self {
            name: name.to_owned(),
            jid,
            client,
            events,
            seen: Vec::new(),
            messages: Vec::new(),
            receipts: Vec::new(),
            presence: Vec::new(),
            chat_states: Vec::new(),
            stored_names: Vec::new(),
        };
        d.until("PreKeysUploaded", |d| {
            d.seen.last().is_some_and(|e| e.contains("PreKeysUploaded"))
        })
        .await;
        d
    }

    /// Handles events (confirming every message) until `done` holds; it is checked after
    /// each event, and first against what was already seen.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        while !done(self) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let next = smol::future::or(async { self.events.recv().await.map(Some) }, async {
                smol::Timer::after(left).await;
                Some(None)
            })
            .await;
            let Some(Some(event)) = next else {
                panic!(
                    "[{}] no {what} within {WAIT:?}; saw:\n{}",
                    self.name,
                    self.seen.join("\n")
                )
            };
            self.record(event).await;
        }
    }

    async fn record(&mut self, event: ClientEvent) {
        self.seen.push(format!("{event:?}"));
        match event {
            ClientEvent::Event(Event::Message(m)) => {
                if let Some(token) = m.ack {
                    // Only a stopping client refuses; the message would come again.
                    let _ = self.client.confirm(token, Confirm::Ack).await;
                }
                self.messages.push(*m);
            }
            ClientEvent::Event(Event::Receipt(r)) => self.receipts.push(*r),
            ClientEvent::Event(Event::Presence(p)) => self.presence.push(*p),
            ClientEvent::Event(Event::ChatState(c)) => self.chat_states.push(*c),
            ClientEvent::Event(Event::CredentialsChanged(c)) => {
                self.stored_names.push(c.push_name);
            }
            _ => {}
        }
    }

    async fn receive(&mut self, text: &str) -> IncomingMessage {
        self.until(&format!("message {text:?}"), |d| {
            d.messages.iter().any(|m| m.text() == Some(text))
        })
        .await;
        self.messages
            .iter()
            .find(|m| m.text() == Some(text))
            .cloned()
            .expect("just seen")
    }

    /// Waits for a receipt of `kind` naming every id of `ids`; returns it.
    async fn receipt(&mut self, kind: ReceiptKind, ids: &[String]) -> Receipt {
        let find = |d: &Self| {
            d.receipts
                .iter()
                .find(|r| r.kind == kind && ids.iter().all(|id| r.ids.contains(id)))
                .cloned()
        };
        self.until(&format!("{kind:?} receipt for {ids:?}"), |d| {
            find(d).is_some()
        })
        .await;
        find(self).expect("just seen")
    }

    /// Waits for a presence update of `user` matching `pred`; returns it.
    async fn presence_of(
        &mut self,
        user: &Jid,
        what: &str,
        pred: impl Fn(&PresenceUpdate) -> bool,
    ) -> PresenceUpdate {
        let find = |d: &Self| {
            d.presence
                .iter()
                .rev()
                .find(|p| p.from == *user && pred(p))
                .cloned()
        };
        self.until(what, |d| find(d).is_some()).await;
        let found = find(self).expect("just seen");
        // Later waits look only at what comes next.
        self.presence.clear();
        found
    }

    async fn chat_state(&mut self, chat: &Jid, state: ChatState) -> ChatStateUpdate {
        let find = |d: &Self| {
            d.chat_states
                .iter()
                .find(|c| c.chat == *chat && c.state == state)
                .cloned()
        };
        self.until(&format!("{state:?} in {chat}"), |d| find(d).is_some())
            .await;
        find(self).expect("just seen")
    }

    /// Becomes available under `name`; returns once the server has taken it (our own
    /// subscription to `watch` answers after the availability).
    async fn go_available(&mut self, name: &str, watch: &Jid) {
        self.client.set_push_name(name).await.unwrap();
        self.client.set_presence(Presence::Available).await.unwrap();
        self.client.presence_subscribe(watch).await.unwrap();
        self.presence_of(watch, "the first presence", |_| true)
            .await;
    }

    async fn stop(mut self) {
        self.client.stop().await;
        self.until("Stopped", |d| d.seen.last().is_some_and(|e| e == "Stopped"))
            .await;
    }
}

fn user(phone: &str) -> Jid {
    format!("{phone}@s.whatsapp.net").parse().unwrap()
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
    assert_eq!(read.from, b1.jid);
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
    b1.go_available("Bob", &user(a)).await;
    a1.client.set_push_name("Alice").await.unwrap();
    a1.until("the stored push name", |d| {
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
    b1.go_available("Bob", &user(a)).await;
    a1.go_available("Alice", &user(b)).await;
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

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod tokio_driver {
            use super::*;
            $(#[test] fn $name() { let env = Env::new(); Tokio::block_on(&env.rt, super::$name::<Tokio>(&env)); })*
        }
        mod smol_driver {
            use super::*;
            $(#[test] fn $name() { let env = Env::new(); Smol::block_on(&env.rt, super::$name::<Smol>(&env)); })*
        }
    };
}

scenarios!(
    read_receipts_flow_back,
    presence_with_last_seen,
    chat_state_arrives,
);
