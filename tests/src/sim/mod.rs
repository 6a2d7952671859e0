//! A WhatsApp-server stand-in on a loopback WebSocket, for end-to-end tests of real clients.
//!
//! [`Simulator::start`] binds `127.0.0.1:0` (or [`SimConfig::listen`]) and serves
//! `ws://127.0.0.1:PORT/ws/chat` on the current tokio runtime. Every connection gets the real
//! server side of the protocol, written with amarula's own core: the Noise XX responder with
//! a test certificate chain ([`Simulator::trust_anchor`] is what a client must trust), the
//! ClientPayload, then either registration (pair-device IQ, QR or phone-code pairing played by
//! a virtual phone, pair-success, stream error 515) or login (`<success>` for a registered
//! device and Noise key, `<failure reason="401">` otherwise).
//!
//! After login the simulator answers the IQs a client sends (ping, passive, prekey upload and
//! count, prekey bundles, usync device lists, group metadata, media_conn; `501
//! feature-not-implemented` for the rest) and routes `<message>` stanzas between devices, acked
//! to the sender:
//! - a 1:1 message with `<participants>` goes to each listed device of the recipient and of the
//!   sender's own account, with only that device's `<enc>` (own devices also get `recipient`);
//!   one without goes to the device `to` names, or to every companion of the user;
//! - a group message (`to` = `ID@g.us`) goes to every device of every member, `from` the group
//!   with `participant` = the sender: the device's pairwise `<enc>` (the SKDM), then the `skmsg`;
//!   a non-member is refused with 403, an unknown group with 404.
//!
//! Online devices get their copy at once; the others get it with `offline` on their next
//! login, followed by `<ib><offline count=N/></ib>`. As a real server, the simulator keeps
//! each `<message>` it hands to a live connection until the device acknowledges it: with its
//! delivery receipt (`<receipt id to participant?>` with no type or type `inactive`, `sender`
//! or `peer_msg`: what clients send for a message they decrypted, SESSION.md §5.1) or an `<ack
//! class="message" id to participant?>` (with or without `error`); it hands the unacked ones
//! (at most 4096 a device, the oldest forgotten past that) to the device's next login again,
//! with `offline`, before the offline queue and each once ([`SimEvent::Redelivered`]): a
//! message written to a client that dies before acking it is not lost. A connection never
//! gets the same message twice from this; receipts and notifications are not kept.
//!
//! Each account's phone (device 0) never connects but is a real Signal endpoint: its keys are
//! served like any device's, and the copies routed to it are decrypted at once
//! ([`SimEvent::PhoneMessage`], [`SimEvent::PhoneUndecryptable`]); it also sends, every kind
//! with the attributes its content calls for ([`Account::phone_send`]), and the receipts for
//! what it sent come back as [`SimEvent::PhoneReceipt`]. Receipts are forwarded to the device
//! they name (a group receipt to the original sender named by `participant`), read and played
//! ones also to the reader's other devices (`read-self` / `played-self` only to those); a
//! recipient's plain ack of a plaintext test message (one without a Signal ciphertext) is
//! turned into a receipt too. Presence (availability with last seen, to subscribed devices)
//! and chat state (to the recipient's or the group's devices) reach only available, connected
//! devices.
//! Linking a companion sends the account's other companions a `devices` notification; adding
//! a group member ([`Account::add_to_group`]) sends members a `w:gp2` one.
//!
//! Groups, contacts and the account (`groups_iq.rs`, `contacts.rs`): every `w:g2` IQ with the
//! real answer shapes and admin rules (a non-admin cannot add: 401; a non-member is refused:
//! 403; per-participant codes 403 with an invite, 404, 408, 409), each change told to the
//! members' devices as a `w:gp2` notification; usync contact and user-info queries, the about
//! text, profile pictures, privacy settings, the blocklist, and the logout
//! (`remove-companion-device`: the device is unlinked). A call offer can be rung on a device
//! ([`Account::ring`]); what clients send back (`<call><reject>`) is seen as
//! [`SimEvent::StanzaReceived`].
//!
//! # Use
//! - Accounts: [`Simulator::add_account`] gives an [`Account`], whose virtual phone scans a QR
//!   code ([`Account::scan_qr`]) or types a pairing code ([`Account::enter_code`]), or links a
//!   device directly ([`Account::link_device`]).
//! - Observation: [`Simulator::subscribe`] yields [`SimEvent`]s; wait on them with
//!   [`Subscription::wait_for`] and a time bound instead of sleeping.
//! - Groups: [`Account::create_group`], [`Account::add_to_group`].
//! - Faults: [`Simulator::faults`] adds [`Rule`]s (drop at frame N, delays, withheld IQ replies
//!   or acks, corrupted deliveries, login failures) and injects [`Action`]s into one connection
//!   (stream errors, `<failure>`, garbled or oversized frames, retry receipts, raw bytes, drops).
//! - [`peer`]: Signal helpers for tests that encrypt by hand (bundles, padding, `<enc>`).
//! - [`client::TestClient`]: a minimal client, the sans-IO `ConnectionMachine` over a real
//!   WebSocket, for the simulator's own tests.
//!
//! Randomness (refs, ids, keys, LIDs, random drops) comes from ChaCha20 seeded with
//! [`SimConfig::seed`]. A malformed client frame closes that connection only; nothing a client
//! sends can panic the simulator.

mod account;
mod account_ops;
mod appstate;
pub mod client;
mod conn;
mod contacts;
mod events;
mod faults;
mod group;
mod groups_iq;
pub mod history;
mod iq;
pub mod media;
pub mod peer;
mod phone;
mod phone_media;
mod phone_send;
mod presence;
mod receipts;
mod reupload;
mod route;
mod state;
mod unacked;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amarula_core::noise::TrustAnchor;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

pub use account::{Account, PairingError};
pub use appstate::PatchCorruption;
pub use events::{ConnKind, SimEvent, Subscription, WaitError};
pub use faults::{Action, Direction, Faults, Rule, RuleId, Target};
pub use group::GroupError;
pub use phone_media::{PhoneMediaError, PhoneMediaKind};
pub use phone_send::PhoneSendError;

use crate::harness::TestPki;
use state::{Shared, State};

/// How many (device, message id) pairs of encrypted copies are remembered for the ack rule.
const ENCRYPTED_COPIES: usize = 4096;

/// The number of a connection, in accept order from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// How the simulated server addresses users (LID.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressing {
    /// WhatsApp as of 2026, the default: every account has a LID and is LID-migrated
    /// (pair-success `client-props` say so); 1:1 messages addressed by LID are delivered from
    /// the sender's LID device with `sender_pn` (own copies with `recipient` and
    /// `peer_recipient_pn`), groups are in `addressing_mode="lid"` (metadata, `w:gp2` and
    /// messages name members by LID with their numbers), a stanza mixing namespaces is
    /// refused with ack error 400, and a 1:1 send to a non-contact without a valid privacy
    /// token with 463. Phone-number addressed 1:1 messages are still delivered, with
    /// `sender_lid`.
    #[default]
    Lid,
    /// The legacy phone-number world: the same accounts and LIDs (told in `<success>`,
    /// usync and group metadata), but every message is delivered by phone number, groups are
    /// phone-number groups, and no privacy token is required.
    Pn,
}

/// Settings of a [`Simulator`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; `None` binds `127.0.0.1:0`.
    pub listen: Option<SocketAddr>,
    /// Seed of every random choice (refs, ids, keys, LIDs, random faults).
    pub seed: [u8; 32],
    /// Seed byte of the test certificate chain ([`TestPki::new`]).
    pub pki_seed: u8,
    /// How many QR refs the pair-device IQ carries (6, as the real server).
    pub qr_refs: usize,
    /// When set, the server pings each logged-in client (`urn:xmpp:ping`) at this interval.
    pub server_ping_interval: Option<Duration>,
    /// Host name given in `media_conn` answers; the default is replaced by the simulator's
    /// own media host ([`Simulator::media`]).
    pub media_host: String,
    /// Platform named in pair-success (`<platform name=…>`).
    pub platform: String,
    /// Capacity of the event channel (events a slow subscriber may fall behind by).
    pub event_capacity: usize,
    /// LID (default) or legacy phone-number addressing.
    pub addressing: Addressing,
    /// History sync: the phone sends its initial history (the sample bootstrap chunk, then
    /// push names) to each device paired by QR or code, once the device has published its
    /// keys. Off by default, so that other tests see no history.
    pub initial_history: bool,
}

impl SimConfig {
    /// The default settings with legacy phone-number addressing ([`Addressing::Pn`]), for
    /// tests written against phone-number chats.
    pub fn pn_legacy() -> Self {
        Self {
            addressing: Addressing::Pn,
            ..Self::default()
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: None,
            seed: [7; 32],
            pki_seed: 3,
            qr_refs: 6,
            server_ping_interval: None,
            media_host: "media.sim.invalid".to_owned(),
            platform: "android".to_owned(),
            event_capacity: 4096,
            addressing: Addressing::default(),
            initial_history: false,
        }
    }
}

/// A running simulator. Dropping it shuts it down too.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    trust: TrustAnchor,
    media: media::MediaServer,
}

impl Simulator {
    /// Binds the listener and spawns the accept loop on the current tokio runtime.
    ///
    /// # Errors
    /// When the address cannot be bound.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn start(mut config: SimConfig) -> io::Result<Self> {
        let media = media::MediaServer::start().await?;
        if config.media_host == SimConfig::default().media_host {
            config.media_host = media.host();
        }
        let listen = config
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let pki = TestPki::new(config.pki_seed);
        let trust = pki.trust;
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rng: ChaCha20Rng::from_seed(config.seed),
                accounts: Default::default(),
                conns: Default::default(),
                qr_refs: Default::default(),
                code_requests: Default::default(),
                next_conn: 0,
                groups: Default::default(),
                profiles: Default::default(),
                encrypted: state::BoundedSet::new(ENCRYPTED_COPIES),
                presence: Default::default(),
                phone_media: Default::default(),
                lid_mode: config.addressing == Addressing::Lid,
                trusted: Default::default(),
                restricted: Default::default(),
                history_due: Default::default(),
                appstate: Default::default(),
            }),
            media: media.clone(),
            config,
            rules: Mutex::default(),
            events,
            shutdown,
        });
        tokio::spawn(conn::accept_loop(
            listener,
            Arc::clone(&shared),
            Arc::new(pki),
        ));
        tracing::info!(%addr, "simulator listening");
        Ok(Self {
            shared,
            addr,
            trust,
            media,
        })
    }

    /// The media host (plain HTTP on loopback; clients use the `http` media scheme).
    pub fn media(&self) -> &media::MediaServer {
        &self.media
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to: `ws://127.0.0.1:PORT/ws/chat`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// The anchor of the simulator's certificate chain, for the client's config.
    pub fn trust_anchor(&self) -> TrustAnchor {
        self.trust
    }

    /// A stream of events from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.shared.events.subscribe())
    }

    /// The fault control.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Creates an account for `phone` (digits, international, no `+`) with its primary phone
    /// (device 0), a random LID and account key; returns the existing one when it exists.
    pub fn add_account(&self, phone: &str) -> Account {
        self.shared.lock().new_account(phone);
        Account::new(Arc::clone(&self.shared), phone)
    }

    /// The account of `phone`, if it was added.
    pub fn account(&self, phone: &str) -> Option<Account> {
        self.shared
            .lock()
            .accounts
            .contains_key(phone)
            .then(|| Account::new(Arc::clone(&self.shared), phone))
    }

    /// Switches the addressing mode from now on (a server-side LID migration in the middle of
    /// a test); messages already routed stay as they were.
    pub fn set_addressing(&self, addressing: Addressing) {
        self.shared.lock().lid_mode = addressing == Addressing::Lid;
    }

    /// Stops accepting and closes every connection (without a close frame).
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Unix time in seconds (the simulator is a test tool and reads the wall clock).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
