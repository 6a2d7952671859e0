//! The simulator's shared state: accounts and their devices (the address book used for
//! routing), live connections, pending pairings, fault rules and the event channel.
//!
//! One `std::sync::Mutex` guards it; it is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use amarula_core::binary::{AttrValue, Node};
use amarula_core::jid::{Jid, Server};
use amarula_core::noise::KeyPair;
use amarula_core::pairing::phone::PhoneCodeState;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use tokio::sync::{broadcast, mpsc, watch};

use super::contacts::Profile;
use super::faults::{Action, RuleSet};
use super::group::GroupState;
use super::phone::PhoneSignal;
use super::unacked::Unacked;
use super::{ConnId, SimConfig, SimEvent, unix_now};

/// What other parts of the simulator ask a connection task to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a stanza.
    Send(Node),
    /// Send a pair-success and wait for its `pair-device-sign`.
    PairSuccess { node: Node, pending: PendingPair },
    /// The phone typed the code: send the notification and wait for `companion_finish`.
    CodeEntered {
        notification: Node,
        state: Box<PhoneCodeState>,
        phone: String,
    },
    /// A fault action.
    Inject(Action),
}

/// A pair-success sent, waiting for the companion's signature.
#[derive(Debug, Clone)]
pub(crate) struct PendingPair {
    pub(crate) iq_id: String,
    pub(crate) phone: String,
    pub(crate) device: u16,
    pub(crate) identity_pub: [u8; 32],
    pub(crate) noise_pub: [u8; 32],
}

/// A signed prekey or one-time prekey as uploaded: 3-byte id, value, signature.
#[derive(Debug, Clone)]
pub(crate) struct PreKey {
    pub(crate) id: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) signature: Option<Vec<u8>>,
}

/// What a device uploaded with `xmlns=encrypt`.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyStore {
    pub(crate) registration: Option<Vec<u8>>,
    pub(crate) identity: Option<Vec<u8>>,
    pub(crate) signed: Option<PreKey>,
    pub(crate) one_time: VecDeque<PreKey>,
}

/// One device of an account.
#[derive(Debug, Default)]
pub(crate) struct DeviceState {
    /// The companion's static Noise key (none for the primary phone, which never connects).
    pub(crate) noise_pub: Option<[u8; 32]>,
    pub(crate) key_index: u32,
    pub(crate) keys: KeyStore,
    /// Stanzas for this device while it is offline.
    pub(crate) offline: VecDeque<Node>,
    /// Messages handed to a live connection of this device and not acked yet: sent again at
    /// its next login.
    pub(crate) unacked: Unacked,
    /// Its live connection.
    pub(crate) conn: Option<ConnId>,
}

/// A simulated account: its phone number, LID, account key and devices (0 = the phone).
#[derive(Debug)]
pub(crate) struct AccountState {
    pub(crate) phone: String,
    pub(crate) lid: String,
    pub(crate) key: KeyPair,
    pub(crate) next_device: u16,
    pub(crate) devices: BTreeMap<u16, DeviceState>,
    /// The phone's Signal keys and sessions (device 0 decrypts what is routed to it).
    pub(crate) signal: Box<PhoneSignal>,
}

impl AccountState {
    pub(crate) fn pn(&self, device: u16) -> Jid {
        Jid::user(self.phone.as_str()).with_device(device)
    }

    pub(crate) fn lid_jid(&self, device: u16) -> Jid {
        Jid::lid(self.lid.as_str()).with_device(device)
    }
}

/// A phone-code pairing request waiting for the phone to type the code.
#[derive(Debug, Clone)]
pub(crate) struct CodeRequest {
    pub(crate) conn: ConnId,
    pub(crate) hello: Node,
    pub(crate) pairing_ref: Vec<u8>,
}

/// A live connection as the rest of the simulator sees it.
#[derive(Debug)]
pub(crate) struct ConnEntry {
    pub(crate) tx: mpsc::UnboundedSender<Command>,
}

/// Everything behind the lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) rng: ChaCha20Rng,
    pub(crate) accounts: BTreeMap<String, AccountState>,
    pub(crate) conns: HashMap<ConnId, ConnEntry>,
    /// QR ref → the registration connection that shows it.
    pub(crate) qr_refs: HashMap<String, ConnId>,
    /// Phone number → its pending phone-code request.
    pub(crate) code_requests: HashMap<String, CodeRequest>,
    pub(crate) next_conn: u64,
    /// Group id (the user part of `ID@g.us`) → the group.
    pub(crate) groups: BTreeMap<String, GroupState>,
    /// Phone number → what the account shows (status, picture, privacy, blocklist).
    pub(crate) profiles: BTreeMap<String, Profile>,
    /// Copies of Signal-encrypted messages handed to devices, as (device, message id): their
    /// acks are not turned into receipts, because the client sends real ones.
    pub(crate) encrypted: BoundedSet<(Jid, String)>,
    /// Who is available, last seen, push names and presence subscriptions.
    pub(crate) presence: super::presence::PresenceBook,
    /// The media files phones have seen, for re-upload requests.
    pub(crate) phone_media: super::reupload::PhoneMedia,
    // ---- LID addressing ----
    /// Whether the server runs in LID mode ([`Addressing::Lid`](super::Addressing::Lid)).
    pub(crate) lid_mode: bool,
    /// Privacy tokens: `(issuer phone, holder phone)` for each trusted-contact token the
    /// issuer gave the holder (a send from holder to issuer needs none then).
    pub(crate) trusted: std::collections::HashSet<(String, String)>,
    /// Accounts that refuse 1:1 messages from strangers without a privacy token (463).
    pub(crate) restricted: std::collections::HashSet<String>,
    /// History sync: newly paired devices the phone sends the initial history once their
    /// keys are published ([`SimConfig::initial_history`](super::SimConfig)).
    pub(crate) history_due: std::collections::HashSet<Jid>,
    /// App state by account phone number.
    pub(crate) appstate: HashMap<String, super::appstate::SimAppState>,
}

/// A set that forgets its oldest members past a capacity.
#[derive(Debug)]
pub(crate) struct BoundedSet<T> {
    order: VecDeque<T>,
    members: std::collections::HashSet<T>,
    cap: usize,
}

impl<T: std::hash::Hash + Eq + Clone> BoundedSet<T> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            order: VecDeque::new(),
            members: std::collections::HashSet::new(),
            cap,
        }
    }

    pub(crate) fn insert(&mut self, value: T) {
        if self.members.insert(value.clone()) {
            self.order.push_back(value);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.members.remove(&old);
                }
            }
        }
    }

    pub(crate) fn contains(&self, value: &T) -> bool {
        self.members.contains(value)
    }
}

/// Shared by the accept loop, every connection task and the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) rules: Mutex<RuleSet>,
    pub(crate) events: broadcast::Sender<SimEvent>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// The media host, for what the simulator's phones upload themselves.
    pub(crate) media: super::media::MediaServer,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn rules(&self) -> MutexGuard<'_, RuleSet> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn emit(&self, event: SimEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Sends `cmd` to connection `conn`; false when it is gone.
    pub(crate) fn command(&self, conn: ConnId, cmd: Command) -> bool {
        self.lock()
            .conns
            .get(&conn)
            .is_some_and(|c| c.tx.send(cmd).is_ok())
    }
}

impl State {
    /// The account whose phone number or LID is `user`.
    pub(crate) fn account_by_user(&mut self, user: &str) -> Option<&mut AccountState> {
        if self.accounts.contains_key(user) {
            return self.accounts.get_mut(user);
        }
        self.accounts.values_mut().find(|a| a.lid == user)
    }

    /// The device `jid` (phone-number or LID form) in the LID namespace, when its account is
    /// known.
    pub(crate) fn to_lid(&self, jid: &Jid) -> Option<Jid> {
        let phone = self.phone_of(jid.user_part())?;
        let account = self.accounts.get(phone)?;
        let lid = Jid::lid(account.lid.as_str());
        Some(match jid.explicit_device() {
            Some(d) => lid.with_device(d),
            None => lid,
        })
    }

    /// The device `jid` (phone-number or LID form) in the phone-number namespace, when its
    /// account is known.
    pub(crate) fn to_pn(&self, jid: &Jid) -> Option<Jid> {
        let phone = Jid::user(self.phone_of(jid.user_part())?);
        Some(match jid.explicit_device() {
            Some(d) => phone.with_device(d),
            None => phone,
        })
    }

    /// The device `jid` in the namespace of `like` (LID when `like` is a LID), as a stanza
    /// answering one addressed to `like` names it; `jid` itself when unmapped.
    pub(crate) fn in_namespace_of(&self, jid: &Jid, like: &Jid) -> Jid {
        let mapped = if like.is_lid() {
            self.to_lid(jid)
        } else {
            self.to_pn(jid)
        };
        mapped.unwrap_or_else(|| jid.clone())
    }

    /// Whether `me` may send 1:1 to `them` without a privacy token (LID mode): `them` takes
    /// messages from anyone, or shares a group with `me`. Otherwise the stanza must carry
    /// the token `them` issued `me`.
    pub(crate) fn may_reach(&self, me: &str, them: &str) -> bool {
        !self.restricted.contains(them)
            || self
                .groups
                .values()
                .any(|g| g.is_member(me) && g.is_member(them))
    }

    /// The phone number of the account whose phone number or LID is `user`.
    pub(crate) fn phone_of(&self, user: &str) -> Option<&str> {
        if let Some((phone, _)) = self.accounts.get_key_value(user) {
            return Some(phone);
        }
        self.accounts
            .values()
            .find(|a| a.lid == user)
            .map(|a| a.phone.as_str())
    }

    /// The account of `phone`, created when missing with a random LID and account key, and
    /// the phone's Signal keys published for device 0.
    pub(crate) fn new_account(&mut self, phone: &str) -> &mut AccountState {
        if !self.accounts.contains_key(phone) {
            let lid = format!(
                "{}",
                100_000_000_000_000 + self.rng.next_u64() % 900_000_000_000_000
            );
            let key = KeyPair::generate(&mut self.rng);
            let (signal, keys) = PhoneSignal::generate(&key, &mut self.rng);
            let mut devices = BTreeMap::new();
            devices.insert(
                0,
                DeviceState {
                    keys,
                    ..DeviceState::default()
                },
            );
            self.accounts.insert(
                phone.to_owned(),
                AccountState {
                    phone: phone.to_owned(),
                    lid,
                    key,
                    next_device: 1,
                    devices,
                    signal: Box::new(signal),
                },
            );
        }
        self.accounts
            .get_mut(phone)
            .expect("the account exists or was inserted above")
    }

    /// Hands `node` to device `device` of the account of `user`: sends it on the device's live
    /// connection (a `<message>` is then kept until the device acks it), or queues it. Returns
    /// the device JID and whether it went out at once; `None` for an unknown device or the
    /// phone (which never connects, so nothing is queued for it).
    pub(crate) fn deliver(&mut self, user: &str, device: u16, node: Node) -> Option<(Jid, bool)> {
        let account = self.account_by_user(user)?;
        let jid = account.pn(device);
        let dev = account.devices.get_mut(&device)?;
        dev.noise_pub?;
        let live = dev
            .conn
            .and_then(|c| self.conns.get(&c))
            .map(|c| c.tx.clone());
        let dev = self.account_by_user(user)?.devices.get_mut(&device)?;
        // Kept from the moment it is handed to the connection task: a connection that dies
        // before writing it (or right after) leaves it for the next login.
        match live {
            Some(tx) if tx.send(Command::Send(node.clone())).is_ok() => {
                dev.unacked.insert(&node);
                Some((jid, true))
            }
            _ => {
                dev.offline.push_back(node);
                Some((jid, false))
            }
        }
    }

    /// Tells the other companions of `phone`'s account that device `device` was linked
    /// (SESSION.md §10.4: `<notification type="devices"><add><device jid/></add>`), queued for
    /// the offline ones.
    pub(crate) fn announce_device(&mut self, phone: &str, device: u16) {
        let Some(account) = self.accounts.get(phone) else {
            return;
        };
        let user = Jid::user(phone);
        let added = account.pn(device);
        let others: Vec<u16> = self
            .companion_devices(phone)
            .into_iter()
            .filter(|d| *d != device)
            .collect();
        if others.is_empty() {
            return;
        }
        let node = notification(
            self,
            "devices",
            user,
            vec![Node::new("add").children([Node::new("device").attr("jid", added)])],
        );
        for d in others {
            self.deliver(phone, d, node.clone());
        }
    }

    /// The device numbers of `user`'s account that can receive stanzas (linked companions;
    /// the simulated phone never connects).
    pub(crate) fn companion_devices(&mut self, user: &str) -> Vec<u16> {
        self.account_by_user(user)
            .map(|a| {
                a.devices
                    .iter()
                    .filter(|(_, d)| d.noise_pub.is_some())
                    .map(|(n, _)| *n)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The JID in attribute `key`, whether it came as a JID or as a string.
pub(crate) fn jid_attr(node: &Node, key: &str) -> Option<Jid> {
    match node.get_attr(key)? {
        AttrValue::Jid(j) => Some(j.clone()),
        AttrValue::Str(s) => s.parse().ok(),
    }
}

/// A `<notification type=kind from=from id t>children</notification>` with a fresh id.
pub(crate) fn notification(st: &mut State, kind: &str, from: Jid, children: Vec<Node>) -> Node {
    let mut id = [0u8; 8];
    st.rng.fill_bytes(&mut id);
    Node::new("notification")
        .attr("type", kind)
        .attr("from", from)
        .attr("id", hex::encode_upper(id))
        .attr("t", unix_now().to_string())
        .children(children)
}

/// Whether `jid` names a user of the phone-number or LID server.
pub(crate) fn is_user_jid(jid: &Jid) -> bool {
    matches!(jid.server_part(), Server::User | Server::Lid) && !jid.user_part().is_empty()
}
