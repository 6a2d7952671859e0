//! Shared pieces of the end-to-end tests over the real drivers: the simulator on its own tokio
//! runtime ([`Env`]) and one running client with what it saw ([`Device`]). Every wait is
//! bounded; nothing sleeps.

use std::time::Duration;

use amarula::core::jid::Jid;
use amarula::core::machine::{Confirm, Event, IncomingMessage};
use amarula::core::notify::call::CallEvent;
use amarula::core::notify::group::GroupNotification;
use amarula::store::{CredentialStore, MemoryStore};
use amarula::{Client, ClientConfig, ClientEvent, Events};

use crate::runtimes::Runtime;
use crate::sim::client::{config_for, fresh_credentials};
use crate::sim::{SimConfig, SimEvent, Simulator, Subscription};

/// How long any one wait may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// The simulator on its own tokio runtime.
#[derive(Debug)]
pub struct Env {
    /// The simulator.
    pub sim: Simulator,
    /// Its runtime (also the tokio driver's).
    pub rt: tokio::runtime::Runtime,
}

impl Env {
    /// A fresh simulator.
    ///
    /// # Panics
    /// When the runtime or the listener cannot be set up.
    pub fn new() -> Self {
        Self::with(SimConfig::pn_legacy())
    }

    /// A fresh simulator with `config` (e.g. the default, LID addressing).
    ///
    /// # Panics
    /// When the runtime or the listener cannot be set up.
    pub fn with(config: SimConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sim = rt.block_on(Simulator::start(config)).expect("simulator");
        Self { sim, rt }
    }

    /// A client config for the simulator: small prekey uploads, short backoff.
    pub fn config(&self) -> ClientConfig {
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

    /// Credentials of a new device linked to `phone`'s account (created on first use).
    pub fn linked_credentials(
        &self,
        phone: &str,
        seed: u8,
    ) -> amarula::core::credentials::Credentials {
        let account = self
            .sim
            .account(phone)
            .unwrap_or_else(|| self.sim.add_account(phone));
        let mut creds = fresh_credentials(seed);
        account.link_into(&mut creds);
        creds
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

/// One running client and what it saw.
#[derive(Debug)]
pub struct Device {
    /// A name for failure messages.
    pub name: String,
    /// Its device JID.
    pub jid: Jid,
    /// The client.
    pub client: Client,
    /// Its events.
    pub events: Events,
    /// Every event, as text, for failure messages.
    pub seen: Vec<String>,
    /// Decrypted messages, in arrival order (each confirmed at once).
    pub messages: Vec<IncomingMessage>,
    /// Group notifications, in arrival order.
    pub group_changes: Vec<GroupNotification>,
    /// Call stanzas, in arrival order.
    pub calls: Vec<CallEvent>,
}

impl Device {
    /// A linked device of `phone` with a memory store, logged in with its prekeys uploaded.
    pub async fn start<R: Runtime>(env: &Env, name: &str, phone: &str, seed: u8) -> Self {
        let creds = env.linked_credentials(phone, seed);
        Self::start_with::<R, _>(env, name, MemoryStore::with_credentials(creds)).await
    }

    /// A device from `store` (holding linked credentials), logged in with its prekeys
    /// uploaded.
    ///
    /// # Panics
    /// When the store holds no paired credentials or the client does not start.
    pub async fn start_with<R: Runtime, S: CredentialStore>(
        env: &Env,
        name: &str,
        store: S,
    ) -> Self {
        let creds = store.load().await.expect("store").expect("credentials");
        let jid = creds.device.expect("paired").jid;
        let (client, events) = R::connect(env.config(), store).await.expect("connect");
        let mut d = Self {
            name: name.to_owned(),
            jid,
            client,
            events,
            seen: Vec::new(),
            messages: Vec::new(),
            group_changes: Vec::new(),
            calls: Vec::new(),
        };
        d.until("PreKeysUploaded", |_, e| {
            matches!(e, ClientEvent::Event(Event::PreKeysUploaded { .. })).then_some(())
        })
        .await;
        d
    }

    /// A device started again from `store` (its prekeys already uploaded): logged in.
    ///
    /// # Panics
    /// When the store holds no paired credentials or the client does not start.
    pub async fn restart<R: Runtime, S: CredentialStore>(env: &Env, name: &str, store: S) -> Self {
        let creds = store.load().await.expect("store").expect("credentials");
        let jid = creds.device.expect("paired").jid;
        let (client, events) = R::connect(env.config(), store).await.expect("connect");
        let mut d = Self {
            name: name.to_owned(),
            jid,
            client,
            events,
            seen: Vec::new(),
            messages: Vec::new(),
            group_changes: Vec::new(),
            calls: Vec::new(),
        };
        d.until("LoggedIn", |_, e| {
            matches!(e, ClientEvent::Event(Event::LoggedIn { .. })).then_some(())
        })
        .await;
        d
    }

    /// The user (phone number JID) of this device.
    pub fn user(&self) -> Jid {
        self.jid.to_non_device()
    }

    /// Handles events (confirming every message) until `pred` matches one.
    ///
    /// # Panics
    /// When nothing matches within [`WAIT`].
    pub async fn until<T>(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Self, &ClientEvent) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
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
            self.record(&event).await;
            if let Some(t) = pred(self, &event) {
                return t;
            }
        }
    }

    async fn record(&mut self, event: &ClientEvent) {
        self.seen.push(format!("{event:?}"));
        match event {
            ClientEvent::Event(Event::Message(m)) => {
                if let Some(token) = m.ack {
                    // A client stopped meanwhile is fine: the test is about something else.
                    let _ = self.client.confirm(token, Confirm::Ack).await;
                }
                self.messages.push((**m).clone());
            }
            ClientEvent::Event(Event::GroupChanged(n)) => self.group_changes.push((**n).clone()),
            ClientEvent::Event(Event::Call(c)) => self.calls.push((**c).clone()),
            _ => {}
        }
    }

    /// Waits until a message with `text` has arrived; returns it.
    pub async fn receive(&mut self, text: &str) -> IncomingMessage {
        if let Some(m) = self.messages.iter().find(|m| m.text() == Some(text)) {
            return m.clone();
        }
        let want = text.to_owned();
        self.until(&format!("message {text:?}"), move |_, e| match e {
            ClientEvent::Event(Event::Message(m)) if m.text() == Some(want.as_str()) => {
                Some((**m).clone())
            }
            _ => None,
        })
        .await
    }

    /// Waits for the first group notification (seen before or arriving) that `pred` accepts,
    /// and removes it from [`group_changes`](Self::group_changes).
    pub async fn group_change(
        &mut self,
        what: &str,
        pred: impl Fn(&GroupNotification) -> bool,
    ) -> GroupNotification {
        if let Some(i) = self.group_changes.iter().position(&pred) {
            return self.group_changes.remove(i);
        }
        self.until(what, |_, e| match e {
            ClientEvent::Event(Event::GroupChanged(n)) if pred(n) => Some(()),
            _ => None,
        })
        .await;
        let i = self
            .group_changes
            .iter()
            .rposition(&pred)
            .expect("recorded before the predicate ran");
        self.group_changes.remove(i)
    }

    /// Waits for the next call stanza.
    pub async fn call(&mut self) -> CallEvent {
        if !self.calls.is_empty() {
            return self.calls.remove(0);
        }
        self.until("a call", |_, e| match e {
            ClientEvent::Event(Event::Call(c)) => Some((**c).clone()),
            _ => None,
        })
        .await;
        self.calls.remove(0)
    }

    /// Lets queued events in for a short while (to see that nothing more comes).
    pub async fn settle(&mut self, d: Duration) {
        let until = std::time::Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let got = smol::future::or(async { self.events.recv().await }, async {
                smol::Timer::after(left).await;
                None
            })
            .await;
            let Some(event) = got else { return };
            self.record(&event).await;
        }
    }

    /// Stops the client and waits for its last event.
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
/// When nothing matches in time, naming `what`.
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
