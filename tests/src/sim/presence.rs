//! Presence and chat state on the server side (MESSAGES.md §7, §8; SESSION.md §11).
//!
//! - A device says `<presence type="available|unavailable" name>`; an account is online while
//!   at least one of its devices is available, and its last-seen time is when the last one
//!   went unavailable (or its connection ended). `name` (also alone, without `type`) is the
//!   account's push name.
//! - `<presence type="subscribe" to>` subscribes the device, for its connection, to that
//!   account: it gets the current state at once, then every change, as
//!   `<presence from="<user>"/>` or `<presence from="<user>" type="unavailable" last="<t>"/>`.
//! - `<chatstate to><composing|paused/></chatstate>` goes to the recipient's devices as
//!   `<chatstate from="<sender user>">`, or for a group to every other member's devices as
//!   `<chatstate from="<group>" participant="<sender user>">`.
//!
//! As on the real server, presence updates and chat states reach only devices that are
//! themselves available and connected; nothing of this is queued for offline devices, and
//! nothing is acked.

use std::collections::{BTreeSet, HashMap};

use amarula_core::binary::Node;
use amarula_core::jid::Jid;

use super::state::{Command, State, jid_attr};
use super::unix_now;

/// One device: (phone number of its account, device number).
type Device = (String, u16);

/// The presence of one account.
#[derive(Debug, Default)]
struct Seen {
    /// Its devices that said `available` on their current connection.
    available: BTreeSet<u16>,
    /// When it was last online (unix seconds).
    last_seen: Option<u64>,
    /// Its push name, from the last `<presence name>`.
    name: Option<String>,
    /// Devices subscribed to it (for their current connection).
    subscribers: BTreeSet<Device>,
}

/// Presence of every account, by phone number.
#[derive(Debug, Default)]
pub(crate) struct PresenceBook {
    accounts: HashMap<String, Seen>,
}

impl PresenceBook {
    fn is_available(&self, (phone, device): &Device) -> bool {
        self.accounts
            .get(phone)
            .is_some_and(|s| s.available.contains(device))
    }

    /// The push name an account last announced.
    pub(crate) fn name(&self, phone: &str) -> Option<&str> {
        self.accounts.get(phone).and_then(|s| s.name.as_deref())
    }
}

/// Sends `node` to the device's live connection; nothing when it is offline.
fn send_live(st: &State, (phone, device): &Device, node: Node) {
    let conn = st
        .accounts
        .get(phone)
        .and_then(|a| a.devices.get(device))
        .and_then(|d| d.conn);
    if let Some(entry) = conn.and_then(|c| st.conns.get(&c)) {
        // A connection that just ended misses it, as a real one would.
        let _ = entry.tx.send(Command::Send(node));
    }
}

/// The stanza that tells a subscriber `phone`'s presence.
fn presence_of(st: &State, phone: &str) -> Node {
    let node = Node::new("presence").attr("from", Jid::user(phone));
    match st.presence.accounts.get(phone) {
        Some(s) if !s.available.is_empty() => node,
        Some(Seen {
            last_seen: Some(t), ..
        }) => node.attr("type", "unavailable").attr("last", t.to_string()),
        _ => node.attr("type", "unavailable"),
    }
}

/// Tells every available subscriber of `phone` its presence.
fn broadcast(st: &State, phone: &str) {
    let Some(seen) = st.presence.accounts.get(phone) else {
        return;
    };
    let node = presence_of(st, phone);
    for sub in &seen.subscribers {
        if st.presence.is_available(sub) {
            send_live(st, sub, node.clone());
        }
    }
}

/// The device `jid` names, when its account exists.
fn device_of(st: &State, jid: &Jid) -> Option<Device> {
    Some((st.phone_of(jid.user_part())?.to_owned(), jid.device()))
}

/// Marks the device unavailable; the account goes offline (last seen now, subscribers told)
/// when it was its last available device.
fn go_unavailable(st: &mut State, (phone, device): &Device) {
    let seen = st.presence.accounts.entry(phone.clone()).or_default();
    if seen.available.remove(device) && seen.available.is_empty() {
        seen.last_seen = Some(unix_now());
        broadcast(st, phone);
    }
}

/// A `<presence>` from device `me`.
pub(crate) fn on_presence(st: &mut State, me: &Jid, node: &Node) {
    let Some(dev) = device_of(st, me) else {
        return;
    };
    if let Some(name) = node.attr_str("name").filter(|n| !n.is_empty()) {
        st.presence.accounts.entry(dev.0.clone()).or_default().name = Some(name.to_owned());
    }
    match node.attr_str("type") {
        Some("available") => {
            let seen = st.presence.accounts.entry(dev.0.clone()).or_default();
            let came_online = seen.available.is_empty();
            seen.available.insert(dev.1);
            if came_online {
                broadcast(st, &dev.0);
            }
            // Now that it is available, the device learns where its subscriptions stand.
            let watched: Vec<String> = st
                .presence
                .accounts
                .iter()
                .filter(|(_, s)| s.subscribers.contains(&dev))
                .map(|(p, _)| p.clone())
                .collect();
            for phone in watched {
                send_live(st, &dev, presence_of(st, &phone));
            }
        }
        Some("unavailable") => go_unavailable(st, &dev),
        Some("subscribe") => {
            let Some(target) = jid_attr(node, "to").and_then(|to| device_of(st, &to)) else {
                return;
            };
            st.presence
                .accounts
                .entry(target.0.clone())
                .or_default()
                .subscribers
                .insert(dev.clone());
            if st.presence.is_available(&dev) {
                send_live(st, &dev, presence_of(st, &target.0));
            }
        }
        _ => {}
    }
}

/// The connection of device `jid` ended, or a new one logged in: it is no longer available and
/// its subscriptions are gone.
pub(crate) fn session_ended(st: &mut State, jid: &Jid) {
    let Some(dev) = device_of(st, jid) else {
        return;
    };
    for seen in st.presence.accounts.values_mut() {
        seen.subscribers.remove(&dev);
    }
    go_unavailable(st, &dev);
}

/// A `<chatstate to>` from device `me`: to the recipient's (or the group's other members')
/// available devices.
pub(crate) fn on_chatstate(st: &mut State, me: &Jid, node: &Node) {
    let (Some(dev), Some(to)) = (device_of(st, me), jid_attr(node, "to")) else {
        return;
    };
    let children = node.child_nodes().to_vec();
    let sender = Jid::user(dev.0.as_str());
    let (stanza, phones) = if to.is_group() {
        let Some(group) = st.groups.get(to.user_part()) else {
            return;
        };
        if !group.is_member(&dev.0) {
            return;
        }
        let others: Vec<String> = group
            .participants
            .iter()
            .filter(|p| **p != dev.0)
            .cloned()
            .collect();
        let stanza = Node::new("chatstate")
            .attr("from", group.jid())
            .attr("participant", sender);
        (stanza, others)
    } else {
        let Some(phone) = st.phone_of(to.user_part()).map(str::to_owned) else {
            return;
        };
        (Node::new("chatstate").attr("from", sender), vec![phone])
    };
    let stanza = stanza.children(children);
    for phone in phones {
        for device in st.companion_devices(&phone) {
            let target = (phone.clone(), device);
            if st.presence.is_available(&target) {
                send_live(st, &target, stanza.clone());
            }
        }
    }
}
