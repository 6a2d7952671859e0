//! Where a `<message>` or `<receipt>` from a client goes (SESSION.md §6, §8, §9): the copy each
//! recipient device gets, for a 1:1 fan-out by `<participants>`, a plain relay, or a group.
//!
//! Planning is pure over the state; the connection then applies the fault rules to each copy
//! and hands the copies out (device 0 to the phone's decryption, the others to their devices).

use amarula_core::binary::{AttrValue, Content, Node};
use amarula_core::jid::Jid;
use amarula_core::signal::{PreKeySignalMessage, SenderKeyMessage, SignalMessage};
use amarula_proto::Message as _;
use amarula_proto::wa;

use super::SimEvent;
use super::state::{State, is_user_jid, jid_attr};

/// Attributes of a client's message that never reach the recipients.
const SERVER_ONLY: [&str; 5] = ["to", "from", "device_fanout", "phash", "t"];

/// One device's copy of a message.
#[derive(Debug)]
pub(crate) struct Copy {
    /// The phone number of the device's account.
    pub(crate) phone: String,
    /// The device number (0 = the phone).
    pub(crate) device: u16,
    /// The device JID (phone-number form).
    pub(crate) jid: Jid,
    /// The stanza it receives.
    pub(crate) node: Node,
}

/// Where a message goes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) copies: Vec<Copy>,
    /// The group, for a group message (the phone decrypts its `skmsg` under it).
    pub(crate) group: Option<Jid>,
    /// The `error` of the server's ack, when the message was refused.
    pub(crate) error: Option<&'static str>,
}

impl Plan {
    fn refused(code: &'static str) -> Self {
        Self {
            error: Some(code),
            ..Self::default()
        }
    }
}

/// Where `msg` from device `sender` goes, addressed `to`, stamped `t`.
pub(crate) fn plan(st: &mut State, sender: &Jid, to: &Jid, msg: &Node, t: &str) -> Plan {
    if let Some(code) = addressing_error(st, sender, to, msg) {
        return Plan::refused(code);
    }
    if to.is_group() {
        group(st, sender, to, msg, t)
    } else if !is_user_jid(to) {
        // Broadcasts and other servers are not simulated: refused as bad addressing.
        Plan::refused("479")
    } else if msg.child("participants").is_some() && to.explicit_device().is_none() {
        fan_out(st, sender, to, msg, t)
    } else {
        direct(st, sender, to, msg, t)
    }
}

/// Whether a stanza is wrongly addressed (LID.md §3.5): the ack error the real server gives.
/// - 400: `<to jid>` entries in another namespace than the 1:1 `to` (or, in a LID group,
///   than the group's `lid`); a LID-addressed 1:1 message in legacy phone-number mode.
/// - 463: in LID mode, a 1:1 message to another user who has not issued the sender a privacy
///   token and is not in its contacts (no earlier conversation), when the stanza carries no
///   `<tctoken>`.
fn addressing_error(st: &State, sender: &Jid, to: &Jid, msg: &Node) -> Option<&'static str> {
    let tos: Vec<Jid> = msg
        .child("participants")
        .map(Node::child_nodes)
        .unwrap_or_default()
        .iter()
        .filter(|c| c.tag == "to")
        .filter_map(|c| jid_attr(c, "jid"))
        .collect();
    if to.is_group() {
        let lid_group = st.lid_mode && st.groups.contains_key(to.user_part());
        if lid_group && tos.iter().any(|j| !j.is_lid()) {
            return Some("400");
        }
        return None;
    }
    if !is_user_jid(to) {
        return None;
    }
    if tos.iter().any(|j| j.is_lid() != to.is_lid()) {
        return Some("400");
    }
    if to.is_lid() && !st.lid_mode {
        return Some("400");
    }
    if st.lid_mode && to.explicit_device().is_none() && msg.attr_str("category") != Some("peer") {
        let me = st.phone_of(sender.user_part())?;
        let them = st.phone_of(to.user_part())?;
        let token_ok = msg
            .child("tctoken")
            .and_then(Node::content_bytes)
            .is_some_and(|b| {
                st.trusted.contains(&(them.to_owned(), me.to_owned()))
                    && b == super::contacts::token_bytes(them, me).as_slice()
            });
        if me != them && !st.may_reach(me, them) && !token_ok {
            return Some("463");
        }
    }
    None
}

/// The identity of `sender` a copy names, in the namespace of the stanza's `to`, and the
/// alternate attribute (`sender_pn` or `sender_lid`) with the other identity, in LID mode.
/// The alternate is the user without device, as the real server gives it (whatsmeow copies the
/// sender's device onto it; Baileys 7 keeps it as `remoteJidAlt` "without device data").
fn sender_as(st: &State, sender: &Jid, to: &Jid) -> (Jid, Option<(&'static str, Jid)>) {
    if to.is_lid() {
        let lid = st.to_lid(sender).unwrap_or_else(|| sender.clone());
        let pn = st.to_pn(sender).map(|p| ("sender_pn", p.to_non_device()));
        (lid, pn)
    } else if st.lid_mode {
        let lid = st.to_lid(sender).map(|l| ("sender_lid", l.to_non_device()));
        (sender.clone(), lid)
    } else {
        (sender.clone(), None)
    }
}

/// The copy's stanza: `from` (and `participant` for groups), the client's other attributes but
/// `skip`, `t`, then `children`.
fn stanza(msg: &Node, from: &Jid, participant: Option<&Jid>, t: &str, skip: &[&str]) -> Node {
    let mut out = Node::new("message").attr("from", from.clone());
    if let Some(p) = participant {
        out = out.attr("participant", p.clone());
    }
    for (k, v) in &msg.attrs {
        if !SERVER_ONLY.contains(&&**k) && !skip.contains(&&**k) {
            out = out.attr(k.clone(), v.clone());
        }
    }
    out.attr("t", t)
}

fn with_children(node: Node, children: Vec<Node>) -> Node {
    if children.is_empty() {
        node
    } else {
        node.children(children)
    }
}

/// `(phone number, device)` of the device `jid` names (phone-number or LID form), when the
/// account exists and has that device.
fn known_device(st: &State, jid: &Jid) -> Option<(String, u16)> {
    let phone = st.phone_of(jid.user_part())?;
    let device = jid.device();
    st.accounts
        .get(phone)
        .is_some_and(|a| a.devices.contains_key(&device))
        .then(|| (phone.to_owned(), device))
}

fn sender_phone(st: &State, sender: &Jid) -> String {
    st.phone_of(sender.user_part())
        .unwrap_or_else(|| sender.user_part())
        .to_owned()
}

/// Children of `msg` other than `<participants>` (and other than top-level `<enc>`s when
/// `without_enc`).
fn other_children(msg: &Node, without_enc: bool) -> Vec<Node> {
    msg.child_nodes()
        .iter()
        .filter(|c| c.tag != "participants" && !(without_enc && c.tag == "enc"))
        .cloned()
        .collect()
}

/// The `<to jid>` entries of `<participants>`, resolved to known devices.
fn pairwise(st: &State, msg: &Node) -> Vec<((String, u16), Vec<Node>)> {
    msg.child("participants")
        .map(Node::child_nodes)
        .unwrap_or_default()
        .iter()
        .filter(|to| to.tag == "to")
        .filter_map(|to| {
            let dev = known_device(st, &jid_attr(to, "jid")?)?;
            Some((dev, to.child_nodes().to_vec()))
        })
        .collect()
}

/// 1:1 fan-out (§8.1, §8.2): each device listed in `<participants>`, of the recipient or of the
/// sender's own account, gets its own `<enc>`; copies for the sender's other devices say
/// `recipient`.
fn fan_out(st: &mut State, sender: &Jid, to: &Jid, msg: &Node, t: &str) -> Plan {
    let Some(to_phone) = st.phone_of(to.user_part()).map(str::to_owned) else {
        return Plan::refused("479");
    };
    let me = sender_phone(st, sender);
    let others = other_children(msg, false);
    let (from, alt) = sender_as(st, sender, to);
    let peer_alt = if to.is_lid() {
        st.to_pn(&to.to_non_device())
            .map(|j| ("peer_recipient_pn", j))
    } else if st.lid_mode {
        st.to_lid(&to.to_non_device())
            .map(|j| ("peer_recipient_lid", j))
    } else {
        None
    };
    let mut copies = Vec::new();
    for ((phone, device), encs) in pairwise(st, msg) {
        let own = phone == me;
        if (!own && phone != to_phone) || (own && device == sender.device()) {
            continue;
        }
        let mut node = stanza(msg, &from, None, t, &["recipient", "peer_recipient_pn"]);
        if own {
            node = node.attr("recipient", to.to_non_device());
            if let Some((key, jid)) = &peer_alt {
                node = node.attr(*key, jid.clone());
            }
        } else if let Some((key, jid)) = &alt {
            node = node.attr(*key, jid.clone());
        }
        let mut children = encs;
        children.extend(others.iter().cloned());
        copies.push(Copy {
            jid: Jid::user(phone.as_str()).with_device(device),
            phone,
            device,
            node: with_children(node, children),
        });
    }
    Plan {
        copies,
        ..Plan::default()
    }
}

/// A message without `<participants>`, or to an explicit device (a retry resend): the device
/// `to` names, or every companion of the user; a peer message (§8.5) goes to the phone.
fn direct(st: &mut State, sender: &Jid, to: &Jid, msg: &Node, t: &str) -> Plan {
    let Some(to_phone) = st.phone_of(to.user_part()).map(str::to_owned) else {
        return Plan::refused("479");
    };
    let devices: Vec<u16> = match to.explicit_device() {
        Some(d) => vec![d],
        None if msg.attr_str("category") == Some("peer") => vec![0],
        None => st.companion_devices(&to_phone),
    };
    let me = sender_phone(st, sender);
    let pairwise = pairwise(st, msg);
    let others = other_children(msg, false);
    let (from, alt) = sender_as(st, sender, to);
    let copies = devices
        .into_iter()
        .filter(|d| !(to_phone == me && *d == sender.device()))
        .filter(|d| known_device(st, &Jid::user(to_phone.as_str()).with_device(*d)).is_some())
        .map(|device| {
            // An `<enc>` addressed to this device inside `<participants>` comes first.
            let mut children: Vec<Node> = pairwise
                .iter()
                .filter(|((p, d), _)| *p == to_phone && *d == device)
                .flat_map(|(_, encs)| encs.iter().cloned())
                .collect();
            children.extend(others.iter().cloned());
            let mut node = stanza(msg, &from, None, t, &[]);
            if let Some((key, jid)) = &alt {
                if to_phone != me {
                    node = node.attr(*key, jid.clone());
                }
            }
            Copy {
                jid: Jid::user(to_phone.as_str()).with_device(device),
                phone: to_phone.clone(),
                device,
                node: with_children(node, children),
            }
        })
        .collect();
    Plan {
        copies,
        ..Plan::default()
    }
}

/// A group message (§8.1, §8.2): every device of every member but the sender's gets its
/// pairwise `<enc>` (the SKDM) if any, then the `skmsg`, `from` the group with `participant` =
/// the sender. With a `participant` attribute (a retry resend) only that device gets it.
fn group(st: &mut State, sender: &Jid, to: &Jid, msg: &Node, t: &str) -> Plan {
    let Some(group) = st.groups.get(to.user_part()) else {
        return Plan::refused("404");
    };
    let me = sender_phone(st, sender);
    if !group.is_member(&me) {
        return Plan::refused("403");
    }
    let gjid = group.jid();
    let members = group.participants.clone();
    // LID groups name the sender by LID with `participant_pn` (LID.md §2.1), a user JID
    // without device.
    let (participant, mode_attrs): (Jid, Vec<(&str, Jid)>) = if st.lid_mode {
        let lid = st.to_lid(sender).unwrap_or_else(|| sender.clone());
        let pn = st.to_pn(sender).unwrap_or_else(|| sender.clone());
        (lid, vec![("participant_pn", pn.to_non_device())])
    } else {
        (sender.clone(), Vec::new())
    };
    let group_stanza = |skip: &[&str]| {
        let mut node = stanza(msg, &gjid, Some(&participant), t, skip);
        for (k, v) in &mode_attrs {
            node = node.attr(*k, v.clone());
        }
        if st.lid_mode {
            node = node.attr("addressing_mode", "lid");
        }
        node
    };
    let is_member_device = |dev: &(String, u16)| members.contains(&dev.0);
    let is_sender = |dev: &(String, u16)| dev.0 == me && dev.1 == sender.device();
    let mut copies = Vec::new();
    if let Some(target) = jid_attr(msg, "participant") {
        let children = other_children(msg, false);
        if let Some(dev) = known_device(st, &target).filter(|d| is_member_device(d)) {
            if !is_sender(&dev) {
                let node = group_stanza(&["participant", "addressing_mode"]);
                copies.push(Copy {
                    jid: Jid::user(dev.0.as_str()).with_device(dev.1),
                    phone: dev.0,
                    device: dev.1,
                    node: with_children(node, children),
                });
            }
        }
    } else {
        let pairwise = pairwise(st, msg);
        let top_encs: Vec<Node> = msg
            .child_nodes()
            .iter()
            .filter(|c| c.tag == "enc")
            .cloned()
            .collect();
        let others = other_children(msg, true);
        for member in &members {
            let Some(account) = st.accounts.get(member) else {
                continue;
            };
            for device in account.devices.keys().copied() {
                let dev = (member.clone(), device);
                if is_sender(&dev) {
                    continue;
                }
                let mut children: Vec<Node> = pairwise
                    .iter()
                    .filter(|(d, _)| *d == dev)
                    .flat_map(|(_, encs)| encs.iter().cloned())
                    .collect();
                children.extend(top_encs.iter().cloned());
                children.extend(others.iter().cloned());
                let node = group_stanza(&["participant", "addressing_mode"]);
                copies.push(Copy {
                    jid: account.pn(device),
                    phone: dev.0,
                    device,
                    node: with_children(node, children),
                });
            }
        }
    }
    Plan {
        copies,
        group: Some(gjid),
        error: None,
    }
}

/// Whether a copy carries a Signal ciphertext: an `<enc>` that parses as the message its `type`
/// names. Placeholder payloads of plaintext tests do not.
pub(crate) fn is_encrypted(node: &Node) -> bool {
    node.child_nodes()
        .iter()
        .filter(|c| c.tag == "enc")
        .any(|enc| {
            let Some(b) = enc.content_bytes() else {
                return false;
            };
            match enc.attr_str("type") {
                Some("pkmsg") => PreKeySignalMessage::parse(b).is_ok(),
                Some("msg") => SignalMessage::parse(b).is_ok(),
                Some("skmsg") => SenderKeyMessage::parse(b).is_ok(),
                _ => false,
            }
        })
}

/// Flips every bit of the last byte of the first `<enc>`: the MAC of a `msg`, the signature
/// of a `skmsg`, and for a `pkmsg` the last byte of the inner `msg` (its MAC; the outer
/// protobuf is re-encoded around it), so the receiver fails the check. False when there is no
/// `<enc>` with content.
pub(crate) fn corrupt_first_enc(node: &mut Node) -> bool {
    let Content::Nodes(children) = &mut node.content else {
        return false;
    };
    let Some(enc) = children.iter_mut().find(|c| c.tag == "enc") else {
        return false;
    };
    let Some(bytes) = enc.content_bytes() else {
        return false;
    };
    let inner = match enc.attr_str("type") {
        Some("pkmsg") => corrupt_inner_mac(bytes),
        _ => None,
    };
    let bytes = match inner {
        Some(b) => b,
        None => {
            let mut b = bytes.to_vec();
            let Some(last) = b.last_mut() else {
                return false;
            };
            *last ^= 0xFF;
            b
        }
    };
    enc.content = Content::Bytes(bytes.into());
    true
}

/// A `pkmsg` whose inner `msg` has its last byte flipped, or `None` when it does not parse.
fn corrupt_inner_mac(pkmsg: &[u8]) -> Option<Vec<u8>> {
    let (version, rest) = pkmsg.split_first()?;
    let mut proto = wa::PreKeySignalMessage::decode(rest).ok()?;
    let mut inner = proto.message.as_deref()?.to_vec();
    *inner.last_mut()? ^= 0xFF;
    proto.message = Some(inner.into());
    let mut out = vec![*version];
    out.extend_from_slice(&proto.encode_to_vec());
    Some(out)
}

/// Forwards a receipt (or the receipt synthesized from an ack) of device `me`, addressed `to`
/// (with `participant`), stamped `t`; `receipt` carries `id`, `type` and the children.
///
/// - `to` a group: to the original sender device `participant` names, `from` the group,
///   `participant` = `me`.
/// - `to` a device: to exactly that device; `to` a user: to each of its companions; `from` = `me`.
///
/// A receipt for a phone (device 0, which never connects) becomes a
/// [`SimEvent::PhoneReceipt`], returned for the caller to emit.
pub(crate) fn receipt(
    st: &mut State,
    me: &Jid,
    to: &Jid,
    participant: Option<Jid>,
    receipt: &Node,
    t: &str,
) -> Vec<SimEvent> {
    // The receipting device is named in the namespace the receipt names the sender in (a LID
    // chat or LID group: by LID), as the real server echoes it (LID.md §3.6).
    let (target, from, about) = if to.is_group() {
        match participant {
            Some(p) if is_user_jid(&p) => {
                let about = st.in_namespace_of(me, &p);
                (p, to.clone(), Some(about))
            }
            _ => return Vec::new(),
        }
    } else if is_user_jid(to) {
        (to.clone(), st.in_namespace_of(me, to), None)
    } else {
        return Vec::new();
    };
    let Some(phone) = st.phone_of(target.user_part()).map(str::to_owned) else {
        return Vec::new();
    };
    let mut fwd = Node::new("receipt")
        .attr(
            "id",
            receipt
                .get_attr("id")
                .cloned()
                .unwrap_or_else(|| AttrValue::from("")),
        )
        .attr("from", from);
    if let Some(p) = about {
        fwd = fwd.attr("participant", p);
    }
    for key in ["type", "recipient"] {
        if let Some(v) = receipt.get_attr(key) {
            fwd = fwd.attr(key, v.clone());
        }
    }
    fwd = fwd.attr("t", t);
    if let Content::Nodes(children) = &receipt.content {
        fwd = fwd.children(children.clone());
    }
    let devices = match target.explicit_device() {
        Some(d) => vec![d],
        None => st.companion_devices(&phone),
    };
    let mut events = Vec::new();
    for d in devices {
        if d == 0 {
            events.push(SimEvent::PhoneReceipt {
                account: phone.clone(),
                from: me.clone(),
                id: receipt.attr_str("id").unwrap_or_default().to_owned(),
                kind: receipt.attr_str("type").map(str::to_owned),
            });
            continue;
        }
        st.deliver(&phone, d, fwd.clone());
    }
    events
}
