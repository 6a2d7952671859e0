//! The set-up every end-to-end suite shares: the simulator on its own tokio runtime ([`Env`]),
//! running clients that keep what they saw ([`Device`]), waits on the simulator's events
//! ([`sim_wait`]), and [`on_both_drivers!`](crate::on_both_drivers) to run each scenario once
//! on tokio and once on smol. Every wait is bounded (by [`WAIT`] unless a device says otherwise); nothing sleeps.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amarula::core::appstate::Collection;
use amarula::core::credentials::Credentials;
use amarula::core::jid::Jid;
use amarula::core::machine::{
    AppStateSyncError, AppStateUpdate, ChatState, ChatStateUpdate, Confirm, Event, IncomingMessage,
    PresenceUpdate, Receipt, ReceiptKind, UndecryptableMessage,
};
use amarula::core::notify::call::CallEvent;
use amarula::core::notify::group::GroupNotification;
use amarula::media::MediaConfig;
use amarula::store::{CredentialStore, MemoryStore};
use amarula::{Client, ClientConfig, ClientEvent, Events};

use crate::runtimes::Runtime;
use crate::sim::client::{config_for, fresh_credentials};
use crate::sim::{Account, SimConfig, SimEvent, Simulator, Subscription};

/// How long any one wait may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// The simulator on its own tokio runtime (its tasks keep running while a client runs on
/// either runtime).
#[derive(Debug)]
pub struct Env {
    /// The simulator.
    pub sim: Simulator,
    /// Its runtime (also the tokio driver's).
    pub rt: tokio::runtime::Runtime,
}

impl Env {
    /// A simulator as WhatsApp works in 2026: LID addressing (the default [`SimConfig`]).
    ///
    /// # Panics
    /// When the runtime or the listener cannot be set up.
    pub fn new() -> Self {
        Self::with(SimConfig::default())
    }

    /// A simulator addressing by phone number, as before the LID migration
    /// ([`SimConfig::pn_legacy`]).
    ///
    /// # Panics
    /// When the runtime or the listener cannot be set up.
    pub fn pn_legacy() -> Self {
        Self::with(SimConfig::pn_legacy())
    }

    /// A simulator with `config`.
    ///
    /// # Panics
    /// When the runtime or the listener cannot be set up.
    pub fn with(config: SimConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let sim = rt
            .block_on(Simulator::start(config))
            .expect("the simulator listens");
        Self { sim, rt }
    }

    /// A client configuration for the simulator: small prekey uploads (the server asks for
    /// more when it runs low), short reconnect backoff, media over plain HTTP with short
    /// retry delays.
    pub fn config(&self) -> ClientConfig {
        let mut machine = config_for(&self.sim);
        machine.max_backoff = Duration::from_millis(100);
        machine.prekey_upload_count = 30;
        ClientConfig {
            url: self.sim.url(),
            machine,
            close_timeout: Duration::from_millis(200),
            media: MediaConfig {
                scheme: "http".into(),
                attempts: 3,
                backoff: Duration::from_millis(5),
                ..MediaConfig::default()
            },
            ..ClientConfig::default()
        }
    }

    /// The simulator's account of `phone`, created on first use.
    pub fn account(&self, phone: &str) -> Account {
        self.sim
            .account(phone)
            .unwrap_or_else(|| self.sim.add_account(phone))
    }

    /// Credentials of a new device linked to `phone`'s account (created on first use).
    pub fn linked_credentials(&self, phone: &str, seed: u8) -> Credentials {
        let mut creds = fresh_credentials(seed);
        self.account(phone).link_into(&mut creds);
        creds
    }

    /// A memory store holding a new device linked to `phone`'s account.
    pub fn linked(&self, phone: &str, seed: u8) -> MemoryStore {
        MemoryStore::with_credentials(self.linked_credentials(phone, seed))
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.sim.shutdown();
    }
}

/// A path for a test database, removed (with its journal files) first.
pub fn fresh_db(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("amarula-{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// What a device saw of app state.
#[derive(Debug, Default)]
pub struct AppStateSeen {
    /// Every mutation handed out, in order.
    pub updates: Vec<AppStateUpdate>,
    /// The last version each collection was synced to.
    pub synced: BTreeMap<Collection, u64>,
    /// Failures the machine recovers from by itself (refetching the snapshot).
    pub recovering: Vec<(Collection, AppStateSyncError)>,
    /// Failures it gave up on.
    pub failed: Vec<(Collection, AppStateSyncError)>,
}

impl AppStateSeen {
    /// Whether every collection has been synced at least once.
    pub fn all_synced(&self) -> bool {
        Collection::ALL.iter().all(|c| self.synced.contains_key(c))
    }
}

/// What a device waits for before [`Device::connect`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Nothing: returns as soon as the client runs (pairing tests).
    Started,
    /// The login of a device that was already running before (a restart).
    LoggedIn,
    /// The first prekey upload of a new device, after which others can start sessions.
    PreKeysUploaded,
}

/// One running client and what it saw: every event as text (for failure messages) and the
/// typed events tests look at. Messages are confirmed as they come.
#[derive(Debug)]
pub struct Device {
    /// A name for failure messages.
    pub name: String,
    /// Its device JID (phone-number form); `None` until paired.
    pub jid: Option<Jid>,
    /// The client.
    pub client: Client,
    /// Its events.
    pub events: Events,
    /// Every event, as text.
    pub seen: Vec<String>,
    /// Decrypted messages, in arrival order (each confirmed when it came).
    pub messages: Vec<IncomingMessage>,
    /// How many of `messages` [`next_message`](Self::next_message) has handed out.
    taken: usize,
    /// Messages that could not be decrypted, in arrival order.
    pub undecryptable: Vec<UndecryptableMessage>,
    /// Group notifications not yet taken by [`group_change`](Self::group_change).
    pub group_changes: Vec<GroupNotification>,
    /// Call stanzas not yet taken by [`call`](Self::call).
    pub calls: Vec<CallEvent>,
    /// Receipts, in arrival order.
    pub receipts: Vec<Receipt>,
    /// Presence updates, in arrival order.
    pub presence: Vec<PresenceUpdate>,
    /// Chat states, in arrival order.
    pub chat_states: Vec<ChatStateUpdate>,
    /// The push name of every stored credentials change.
    pub stored_names: Vec<Option<String>>,
    /// App-state events.
    pub app_state: AppStateSeen,
    /// More to say when a wait fails (e.g. another process's log).
    pub diagnostics: Option<Diagnostics>,
    /// How long one wait may take ([`WAIT`] unless set).
    pub wait: Duration,
}

/// What a test adds to a [`Device`]'s failure messages.
#[derive(Clone)]
pub struct Diagnostics(Arc<dyn Fn() -> String + Send + Sync>);

impl Diagnostics {
    /// `describe` is called when a wait fails.
    pub fn new(describe: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self(Arc::new(describe))
    }
}

impl std::fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Diagnostics")
    }
}

impl Device {
    /// A new device linked to `phone`'s account with a memory store, connected on `R`, once
    /// its prekeys are on the server.
    ///
    /// # Panics
    /// When it does not connect or upload in time.
    pub async fn start<R: Runtime>(env: &Env, name: &str, phone: &str, seed: u8) -> Self {
        Self::start_with::<R, _>(env, name, env.linked(phone, seed)).await
    }

    /// A new device from `store` (holding linked credentials), once its prekeys are on the
    /// server.
    ///
    /// # Panics
    /// When it does not connect or upload in time.
    pub async fn start_with<R: Runtime, S: CredentialStore>(
        env: &Env,
        name: &str,
        store: S,
    ) -> Self {
        Self::connect::<R, S>(name, env.config(), store, Ready::PreKeysUploaded).await
    }

    /// A device started again from `store` (its prekeys already uploaded), once logged in.
    ///
    /// # Panics
    /// When it does not connect or log in in time.
    pub async fn restart<R: Runtime, S: CredentialStore>(env: &Env, name: &str, store: S) -> Self {
        Self::connect::<R, S>(name, env.config(), store, Ready::LoggedIn).await
    }

    /// A client with `config` and `store`, connected on `R`, once `ready` happened.
    ///
    /// # Panics
    /// When the store fails, the client does not start, or `ready` does not come in time.
    pub async fn connect<R: Runtime, S: CredentialStore>(
        name: &str,
        config: ClientConfig,
        store: S,
        ready: Ready,
    ) -> Self {
        let creds = store.load().await.expect("the store loads");
        let jid = creds.and_then(|c| c.device).map(|d| d.jid);
        let (client, events) = R::connect(config, store).await.expect("the client starts");
        let mut d = Self {
            name: name.to_owned(),
            jid,
            client,
            events,
            seen: Vec::new(),
            messages: Vec::new(),
            taken: 0,
            undecryptable: Vec::new(),
            group_changes: Vec::new(),
            calls: Vec::new(),
            receipts: Vec::new(),
            presence: Vec::new(),
            chat_states: Vec::new(),
            stored_names: Vec::new(),
            app_state: AppStateSeen::default(),
            diagnostics: None,
            wait: WAIT,
        };
        match ready {
            Ready::Started => {}
            Ready::LoggedIn => {
                d.until("LoggedIn", |_, e| {
                    matches!(e, ClientEvent::Event(Event::LoggedIn { .. })).then_some(())
                })
                .await;
            }
            Ready::PreKeysUploaded => {
                d.until("PreKeysUploaded", |_, e| {
                    matches!(e, ClientEvent::Event(Event::PreKeysUploaded { .. })).then_some(())
                })
                .await;
            }
        }
        d
    }

    /// Its device JID.
    ///
    /// # Panics
    /// When it is not paired.
    pub fn jid(&self) -> &Jid {
        self.jid
            .as_ref()
            .unwrap_or_else(|| panic!("[{}] not paired", self.name))
    }

    /// Its user (phone-number JID, no device).
    ///
    /// # Panics
    /// When it is not paired.
    pub fn user(&self) -> Jid {
        self.jid().to_non_device()
    }

    /// What it saw, and the [`diagnostics`](Self::diagnostics), for a failure message.
    fn report(&self) -> String {
        let extra = self
            .diagnostics
            .as_ref()
            .map(|d| (d.0)())
            .unwrap_or_default();
        format!("saw:\n{}\n{extra}", self.seen.join("\n"))
    }

    /// The next event within `left`; `None` when time is up.
    ///
    /// # Panics
    /// When the client's events end.
    async fn next_event(&mut self, left: Duration) -> Option<ClientEvent> {
        let next = smol::future::or(async { Some(self.events.recv().await) }, async {
            smol::Timer::after(left).await;
            None
        })
        .await;
        match next {
            Some(Some(event)) => Some(event),
            Some(None) => panic!("[{}] the events ended; {}", self.name, self.report()),
            None => None,
        }
    }

    /// Handles events until `pred` picks one out; returns what it gave.
    ///
    /// # Panics
    /// When nothing matches within [`wait`](Self::wait), naming `what`.
    pub async fn until<T>(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Self, &ClientEvent) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + self.wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(event) = self.next_event(left).await else {
                panic!(
                    "[{}] no {what} within {:?}; {}",
                    self.name,
                    self.wait,
                    self.report()
                )
            };
            self.record(&event).await;
            if let Some(t) = pred(self, &event) {
                return t;
            }
        }
    }

    /// Handles events until `done` holds of what was seen; checked first, before waiting.
    ///
    /// # Panics
    /// When it does not hold within [`wait`](Self::wait), naming `what`.
    pub async fn wait_until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        if done(self) {
            return;
        }
        self.until(what, |d, _| done(d).then_some(())).await;
    }

    /// Keeps what `event` says; confirms messages at once.
    async fn record(&mut self, event: &ClientEvent) {
        self.seen.push(format!("{event:?}"));
        let ClientEvent::Event(event) = event else {
            return;
        };
        match event {
            Event::Message(m) => {
                if let Some(token) = m.ack {
                    // Only a stopping client refuses; the server would send the message again.
                    let _ = self.client.confirm(token, Confirm::Ack).await;
                }
                self.messages.push((**m).clone());
            }
            Event::Paired { device } => self.jid = Some(device.jid.clone()),
            Event::Undecryptable(u) => self.undecryptable.push((**u).clone()),
            Event::GroupChanged(n) => self.group_changes.push((**n).clone()),
            Event::Call(c) => self.calls.push((**c).clone()),
            Event::Receipt(r) => self.receipts.push((**r).clone()),
            Event::Presence(p) => self.presence.push((**p).clone()),
            Event::ChatState(c) => self.chat_states.push((**c).clone()),
            Event::CredentialsChanged(c) => self.stored_names.push(c.push_name.clone()),
            Event::AppState(u) => self.app_state.updates.push((**u).clone()),
            Event::AppStateSynced {
                collection,
                version,
            } => {
                self.app_state.synced.insert(*collection, *version);
            }
            Event::AppStateFailed {
                collection,
                error,
                recovering,
            } => {
                let list = if *recovering {
                    &mut self.app_state.recovering
                } else {
                    &mut self.app_state.failed
                };
                list.push((*collection, error.clone()));
            }
            _ => {}
        }
    }

    /// Handles events until `done` holds of the app state seen; checked first.
    ///
    /// # Panics
    /// When it does not hold within [`wait`](Self::wait), naming `what`.
    pub async fn until_app_state(&mut self, what: &str, done: impl Fn(&AppStateSeen) -> bool) {
        self.wait_until(what, |d| done(&d.app_state)).await;
    }

    /// The first message not yet handed out by this call, waiting for one if need be.
    ///
    /// # Panics
    /// When none comes within [`wait`](Self::wait).
    pub async fn next_message(&mut self) -> IncomingMessage {
        let taken = self.taken;
        self.wait_until("a message", |d| d.messages.len() > taken)
            .await;
        self.taken += 1;
        self.messages[taken].clone()
    }

    /// Waits for the message with id `id` (seen before or arriving); returns it.
    ///
    /// # Panics
    /// When it does not come within [`wait`](Self::wait).
    pub async fn receive_id(&mut self, id: &str) -> IncomingMessage {
        self.message_where(&format!("message {id}"), |m| m.id == id)
            .await
    }

    /// Waits for a message with `text` (seen before or arriving); returns it.
    ///
    /// # Panics
    /// When it does not come within [`wait`](Self::wait).
    pub async fn receive(&mut self, text: &str) -> IncomingMessage {
        self.message_where(&format!("message {text:?}"), |m| m.text() == Some(text))
            .await
    }

    /// Waits for the first message `pred` accepts (seen before or arriving); returns it.
    ///
    /// # Panics
    /// When none comes within [`wait`](Self::wait).
    pub async fn message_where(
        &mut self,
        what: &str,
        pred: impl Fn(&IncomingMessage) -> bool,
    ) -> IncomingMessage {
        self.wait_until(what, |d| d.messages.iter().any(&pred))
            .await;
        self.messages
            .iter()
            .find(|m| pred(m))
            .cloned()
            .expect("just seen")
    }

    /// How many messages with `text` arrived.
    pub fn count(&self, text: &str) -> usize {
        self.messages
            .iter()
            .filter(|m| m.text() == Some(text))
            .count()
    }

    /// Waits for the first group notification (seen before or arriving) that `pred` accepts,
    /// and removes it from [`group_changes`](Self::group_changes).
    ///
    /// # Panics
    /// When none comes within [`wait`](Self::wait).
    pub async fn group_change(
        &mut self,
        what: &str,
        pred: impl Fn(&GroupNotification) -> bool,
    ) -> GroupNotification {
        self.wait_until(what, |d| d.group_changes.iter().any(&pred))
            .await;
        let i = self
            .group_changes
            .iter()
            .position(&pred)
            .expect("just seen");
        self.group_changes.remove(i)
    }

    /// Waits for the next call stanza not yet taken; removes it.
    ///
    /// # Panics
    /// When none comes within [`wait`](Self::wait).
    pub async fn call(&mut self) -> CallEvent {
        self.wait_until("a call", |d| !d.calls.is_empty()).await;
        self.calls.remove(0)
    }

    /// Waits for a receipt of `kind` naming every id of `ids` (seen before or arriving).
    ///
    /// # Panics
    /// When none comes within [`wait`](Self::wait).
    pub async fn receipt(&mut self, kind: ReceiptKind, ids: &[String]) -> Receipt {
        let find = |d: &Self| {
            d.receipts
                .iter()
                .find(|r| r.kind == kind && ids.iter().all(|id| r.ids.contains(id)))
                .cloned()
        };
        self.wait_until(&format!("{kind:?} receipt for {ids:?}"), |d| {
            find(d).is_some()
        })
        .await;
        find(self).expect("just seen")
    }

    /// Waits for a presence update of `user` that `pred` accepts (the latest seen, or
    /// arriving); later waits look only at updates after it.
    ///
    /// # Panics
    /// When none comes within [`wait`](Self::wait).
    pub async fn presence_of(
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
        self.wait_until(what, |d| find(d).is_some()).await;
        let found = find(self).expect("just seen");
        self.presence.clear();
        found
    }

    /// Waits for `state` in `chat` (seen before or arriving).
    ///
    /// # Panics
    /// When it does not come within [`wait`](Self::wait).
    pub async fn chat_state(&mut self, chat: &Jid, state: ChatState) -> ChatStateUpdate {
        let find = |d: &Self| {
            d.chat_states
                .iter()
                .find(|c| c.chat == *chat && c.state == state)
                .cloned()
        };
        self.wait_until(&format!("{state:?} in {chat}"), |d| find(d).is_some())
            .await;
        find(self).expect("just seen")
    }

    /// Lets queued events in for `d` (to see that nothing more comes).
    pub async fn settle(&mut self, d: Duration) {
        let until = std::time::Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let Some(event) = self.next_event(left).await else {
                return;
            };
            self.record(&event).await;
        }
    }

    /// Asserts that every message this device received decrypted.
    ///
    /// # Panics
    /// When one did not, naming the device and what failed.
    pub fn assert_all_decrypted(&self) {
        assert!(
            self.undecryptable.is_empty(),
            "[{}] {:?}",
            self.name,
            self.undecryptable
        );
    }

    /// Stops the client and waits for its last event.
    ///
    /// # Panics
    /// When it does not stop within [`wait`](Self::wait).
    pub async fn stop(mut self) {
        self.client.stop().await;
        self.until("Stopped", |_, e| {
            matches!(e, ClientEvent::Stopped).then_some(())
        })
        .await;
    }
}

/// Waits at most [`WAIT`] for the first simulator event `pred` maps to `Some`, on any
/// runtime (the simulator's own [`Subscription::wait_for`] needs tokio's timer).
///
/// # Panics
/// When nothing matches in time, naming `what`, or the simulator closes.
pub async fn sim_wait<T>(
    events: &mut Subscription,
    what: &str,
    mut pred: impl FnMut(&SimEvent) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let got = smol::future::or(async { events.next().await.map(Some) }, async {
            smol::Timer::after(left).await;
            Some(None)
        })
        .await;
        match got {
            Some(Some(e)) => {
                if let Some(t) = pred(&e) {
                    return t;
                }
            }
            Some(None) => panic!("no {what} within {WAIT:?}"),
            None => panic!("the simulator closed while waiting for {what}"),
        }
    }
}

/// `PHONE@s.whatsapp.net`.
pub fn user(phone: &str) -> Jid {
    Jid::user(phone)
}

/// Runs each named scenario, an `async fn NAME<R: Runtime>(env: &Env)`, once on the tokio
/// driver and once on the smol driver, each in a fresh [`Env`] made by `$env`:
/// `on_both_drivers!(Env::new(); first, second);` makes the tests `tokio_driver::first`,
/// `smol_driver::first`, and so on.
#[macro_export]
macro_rules! on_both_drivers {
    ($env:expr; $($name:ident),* $(,)?) => {
        mod tokio_driver {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let env: $crate::e2e::Env = $env;
                    <$crate::runtimes::Tokio as $crate::runtimes::Runtime>::block_on(
                        &env.rt,
                        super::$name::<$crate::runtimes::Tokio>(&env),
                    );
                }
            )*
        }
        mod smol_driver {
            use super::*;
            $(
                #[test]
                fn $name() {
                    let env: $crate::e2e::Env = $env;
                    <$crate::runtimes::Smol as $crate::runtimes::Runtime>::block_on(
                        &env.rt,
                        super::$name::<$crate::runtimes::Smol>(&env),
                    );
                }
            )*
        }
    };
}
