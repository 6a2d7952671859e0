//! The set-up of end-to-end tests through the real drivers: the simulator on its own tokio
//! runtime ([`Env`]) and running clients that record what they saw ([`Device`]), with bounded
//! waits and no sleeps.

use std::path::PathBuf;
use std::time::Duration;

use amarula::core::credentials::Credentials;
use amarula::core::jid::Jid;
use amarula::core::machine::{Confirm, DecryptError, Event, IncomingMessage};
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
    /// The runtime it runs on (and the tokio driver with it).
    pub rt: tokio::runtime::Runtime,
}

impl Env {
    /// A simulator with the default settings.
    ///
    /// # Panics
    /// When the runtime or the listener cannot be set up.
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let sim = rt
            .block_on(Simulator::start(SimConfig::pn_legacy()))
            .expect("the simulator listens");
        Self { sim, rt }
    }

    /// A client configuration for the simulator: short backoff, small prekey uploads.
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

    /// Credentials of a device linked to `phone`'s account (created on first use).
    pub fn linked_credentials(&self, phone: &str, seed: u8) -> Credentials {
        let account = self
            .sim
            .account(phone)
            .unwrap_or_else(|| self.sim.add_account(phone));
        let mut creds = fresh_credentials(seed);
        creds.device = Some(account.link_device(&creds));
        creds
    }

    /// A memory store holding a device linked to `phone`'s account.
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

/// One running client and what it saw.
#[derive(Debug)]
pub struct Device {
    /// A name for messages.
    pub name: String,
    /// Its device JID.
    pub jid: Jid,
    /// The client.
    pub client: Client,
    /// Its events.
    pub events: Events,
    /// Every event, as text, for failure messages.
    pub seen: Vec<String>,
    /// Decrypted messages, in arrival order (each confirmed when it came).
    pub messages: Vec<IncomingMessage>,
    /// Decryption failures.
    pub undecryptable: Vec<DecryptError>,
}

impl Device {
    /// A device linked to `phone`'s account with a memory store, connected on `R`, once its
    /// prekeys are on the server.
    ///
    /// # Panics
    /// When it does not connect or upload in time.
    pub async fn start<R: Runtime>(env: &Env, name: &str, phone: &str, seed: u8) -> Self {
        Self::start_with::<R, _>(env, name, env.linked(phone, seed), true).await
    }

    /// A device with `store` (which holds linked credentials), connected on `R`; waits for
    /// the prekey upload when `fresh`.
    ///
    /// # Panics
    /// When the store has no linked device or it does not connect in time.
    pub async fn start_with<R: Runtime, S: CredentialStore>(
        env: &Env,
        name: &str,
        store: S,
        fresh: bool,
    ) -> Self {
        let creds = store.load().await.expect("the store").expect("credentials");
        let jid = creds.device.expect("a linked device").jid;
        let (client, events) = R::connect(env.config(), store)
            .await
            .expect("the client starts");
        let mut d = Self {
            name: name.to_owned(),
            jid,
            client,
            events,
            seen: Vec::new(),
            messages: Vec::new(),
            undecryptable: Vec::new(),
        };
        if fresh {
            // A new device can receive once its prekeys are on the server.
            d.until("PreKeysUploaded", |_, e| {
                matches!(e, ClientEvent::Event(Event::PreKeysUploaded { .. })).then_some(())
            })
            .await;
        } else {
            d.until("LoggedIn", |_, e| {
                matches!(e, ClientEvent::Event(Event::LoggedIn { .. })).then_some(())
            })
            .await;
        }
        d
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

    /// Keeps what `event` says: messages (confirmed at once) and decryption failures.
    async fn record(&mut self, event: &ClientEvent) {
        self.seen.push(format!("{event:?}"));
        match event {
            ClientEvent::Event(Event::Message(m)) => {
                if let Some(token) = m.ack {
                    // A confirmation that races a disconnect is refused; the server sends the
                    // message again.
                    let _ = self.client.confirm(token, Confirm::Ack).await;
                }
                self.messages.push((**m).clone());
            }
            ClientEvent::Event(Event::Undecryptable(u)) => {
                self.undecryptable.push(u.error.clone());
            }
            _ => {}
        }
    }

    /// Waits for the message with id `id`; returns it.
    ///
    /// # Panics
    /// When it does not come within [`WAIT`].
    pub async fn receive_id(&mut self, id: &str) -> IncomingMessage {
        if let Some(m) = self.messages.iter().find(|m| m.id == id) {
            return m.clone();
        }
        let want = id.to_owned();
        self.until(&format!("message {id}"), move |_, e| match e {
            ClientEvent::Event(Event::Message(m)) if m.id == want => Some((**m).clone()),
            _ => None,
        })
        .await
    }

    /// Waits until a message with `text` has arrived; returns it.
    ///
    /// # Panics
    /// When it does not come within [`WAIT`].
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

    /// Stops the client and waits for its last event.
    pub async fn stop(mut self) {
        self.client.stop().await;
        self.until("Stopped", |_, e| {
            matches!(e, ClientEvent::Stopped).then_some(())
        })
        .await;
    }
}

/// Waits for a simulator event `pred` picks out.
///
/// # Panics
/// When none comes within [`WAIT`].
pub async fn sim_event<T>(
    rx: &mut Subscription,
    what: &str,
    mut pred: impl FnMut(&SimEvent) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let got = smol::future::or(async { rx.next().await }, async {
            smol::Timer::after(left).await;
            None
        })
        .await;
        match got {
            Some(e) => {
                if let Some(t) = pred(&e) {
                    return t;
                }
            }
            None => panic!("no {what} within {WAIT:?}"),
        }
    }
}

/// A user JID of `phone`.
///
/// # Panics
/// When `phone` is not digits.
pub fn user(phone: &str) -> Jid {
    format!("{phone}@s.whatsapp.net")
        .parse()
        .expect("a phone number")
}
