//! Building and reading the stanzas of messaging (SESSION.md §7, §8, §10, §13): pure
//! functions, no state.

use std::fmt::Write as _;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::binary::{AttrValue, Node};
use crate::jid::{Jid, Server};
use crate::persist::DeviceList;
use crate::signal::{PreKey, PreKeyBundle, PublicKey, SignalError};

/// Most one-time prekeys one bundle answer or upload names (bounds parsing).
const MAX_LIST: usize = 4096;

/// A JID attribute, typed or textual.
pub(crate) fn jid_attr(node: &Node, key: &str) -> Option<Jid> {
    match node.get_attr(key)? {
        AttrValue::Jid(j) => Some(j.clone()),
        AttrValue::Str(s) => s.parse().ok(),
    }
}

/// The canonical key of a device: user, server and an explicit device number.
pub(crate) fn device_address(jid: &Jid) -> Jid {
    Jid::new(jid.user_part(), jid.server_part().clone()).with_device(jid.device())
}

/// The user of a JID, without device.
pub(crate) fn user_of(jid: &Jid) -> Jid {
    Jid::new(jid.user_part(), jid.server_part().clone())
}

/// The message id of SESSION.md §8.3: `3EB0` and the first 9 bytes of
/// SHA-256(unix seconds BE ‖ own user ‖ "@c.us" ‖ 16 random bytes) in upper-case hex.
pub(crate) fn message_id(unix_secs: u64, own_user: &str, random: &[u8; 16]) -> String {
    let mut h = Sha256::new();
    h.update(unix_secs.to_be_bytes());
    h.update(own_user.as_bytes());
    h.update(b"@c.us");
    h.update(random);
    let digest = h.finalize();
    let mut id = String::with_capacity(22);
    id.push_str("3EB0");
    for b in &digest[..9] {
        // Into the string itself: no string per byte.
        let _ = write!(id, "{b:02X}");
    }
    id
}

/// Appends the padding of §8.4: `n` bytes equal to `n`, `n` in 1..=16 from `random`.
pub(crate) fn pad(mut plaintext: Vec<u8>, random: u8) -> Vec<u8> {
    let n = (random & 0x0F) + 1;
    plaintext.extend(std::iter::repeat_n(n, usize::from(n)));
    plaintext
}

/// Strips the padding of §8.4, checking every padding byte.
pub(crate) fn unpad(plaintext: &[u8]) -> Option<&[u8]> {
    let n = *plaintext.last()?;
    let len = usize::from(n);
    if n == 0 || len > plaintext.len() {
        return None;
    }
    let (body, padding) = plaintext.split_at(plaintext.len() - len);
    padding.iter().all(|b| *b == n).then_some(body)
}

/// The `phash` of §8.1: SHA-256 over the sorted device JIDs, first 6 bytes, base64 (standard
/// alphabet, no padding), prefixed `2:`.
pub(crate) fn phash(devices: &[Jid]) -> String {
    let mut names: Vec<String> = devices.iter().map(ToString::to_string).collect();
    names.sort();
    let mut h = Sha256::new();
    for n in &names {
        h.update(n.as_bytes());
    }
    let digest = h.finalize();
    format!(
        "2:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..6])
    )
}

/// A key id as 3 bytes big-endian.
pub(crate) fn id3(id: u32) -> Vec<u8> {
    id.to_be_bytes()[1..].to_vec()
}

fn parse_id3(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [a, b, c] => Some(u32::from_be_bytes([0, *a, *b, *c])),
        _ => None,
    }
}

fn child_bytes<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    node.child(tag).and_then(Node::content_bytes)
}

/// `<usync>` device query for `users` (§10.4).
pub(crate) fn usync_query(sid: &str, users: &[Jid]) -> Node {
    Node::new("usync")
        .attr("sid", sid)
        .attr("mode", "query")
        .attr("context", "message")
        .attr("last", "true")
        .attr("index", "0")
        .children([
            // `<lid/>` always beside `<devices>` (LID.md §1.1): every answer maps the users.
            Node::new("query")
                .children([Node::new("devices").attr("version", "2"), Node::new("lid")]),
            Node::new("list").children(
                users
                    .iter()
                    .map(|u| Node::new("user").attr("jid", u.clone()))
                    .collect::<Vec<_>>(),
            ),
        ])
}

/// The device lists of a usync answer, per user; a user with an error gets an empty list.
pub(crate) fn parse_usync(result: &Node, now_ms: u64) -> Vec<(Jid, DeviceList)> {
    let Some(list) = result.child("usync").and_then(|u| u.child("list")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for user in list.child_nodes().iter().filter(|u| u.tag == "user") {
        let Some(jid) = jid_attr(user, "jid") else {
            continue;
        };
        let mut devices: Vec<u16> = user
            .child("devices")
            .and_then(|d| d.child("device-list"))
            .map(Node::child_nodes)
            .unwrap_or_default()
            .iter()
            .filter(|d| d.tag == "device")
            // Companions without a key index are not trusted (as Baileys).
            .filter(|d| d.attr_str("id") == Some("0") || d.get_attr("key-index").is_some())
            .filter(|d| d.attr_str("is_hosted") != Some("true"))
            .filter_map(|d| d.attr_str("id")?.parse::<u16>().ok())
            .take(MAX_LIST)
            .collect();
        devices.sort_unstable();
        devices.dedup();
        out.push((
            user_of(&jid),
            DeviceList {
                devices,
                updated_unix_ms: now_ms,
            },
        ));
    }
    out
}

/// The (phone number user, LID user) pairs of a usync answer's `<lid val>` children.
pub(crate) fn parse_usync_lids(result: &Node) -> Vec<(Jid, Jid)> {
    let Some(list) = result.child("usync").and_then(|u| u.child("list")) else {
        return Vec::new();
    };
    list.child_nodes()
        .iter()
        .filter(|u| u.tag == "user")
        .take(MAX_LIST)
        .filter_map(|u| {
            let jid = user_of(&jid_attr(u, "jid")?);
            // `<user jid="p@s.whatsapp.net"><lid val="l@lid"/>`, or for a LID query
            // `<user jid="l@lid" pn_jid="p@s.whatsapp.net">`.
            let (pn, lid) = if jid.is_lid() {
                (user_of(&jid_attr(u, "pn_jid")?), jid)
            } else {
                (jid, user_of(&jid_attr(u.child("lid")?, "val")?))
            };
            (matches!(pn.server_part(), Server::User) && matches!(lid.server_part(), Server::Lid))
                .then_some((pn, lid))
        })
        .collect()
}

/// The (LID, PN) user pairs of a `devices` notification (LID.md §1 row 6): `lid` on the root
/// beside `from`, and `<device jid lid>` in its `<add|remove|update>` children.
pub(crate) fn devices_notification_lids(node: &Node, from: &Jid) -> Vec<(Jid, Jid)> {
    let mut out = Vec::new();
    let mut push = |a: Jid, b: Jid| {
        let (lid, pn) = if a.is_lid() { (a, b) } else { (b, a) };
        if lid.is_lid() && matches!(pn.server_part(), Server::User) {
            out.push((user_of(&lid), user_of(&pn)));
        }
    };
    if let Some(lid) = jid_attr(node, "lid") {
        push(from.clone(), lid);
    }
    for change in node.child_nodes().iter().take(MAX_LIST) {
        for device in change
            .child_nodes()
            .iter()
            .filter(|d| d.tag == "device")
            .take(MAX_LIST)
        {
            if let (Some(jid), Some(lid)) = (jid_attr(device, "jid"), jid_attr(device, "lid")) {
                push(jid, lid);
            }
        }
    }
    out
}

/// `<key>` bundle query for `devices` (§10.3).
pub(crate) fn bundle_query(devices: &[Jid]) -> Node {
    Node::new("key").children(
        devices
            .iter()
            .map(|d| {
                Node::new("user")
                    .attr("jid", d.clone())
                    .attr("reason", "identity")
            })
            .collect::<Vec<_>>(),
    )
}

/// The bundles of an answer: per device, the bundle or why there is none.
pub(crate) fn parse_bundles(result: &Node) -> Vec<(Jid, Result<PreKeyBundle, SignalError>)> {
    let Some(list) = result.child("list") else {
        return Vec::new();
    };
    list.child_nodes()
        .iter()
        .filter(|u| u.tag == "user")
        .take(MAX_LIST)
        .filter_map(|u| {
            let jid = device_address(&jid_attr(u, "jid")?);
            Some((jid, parse_bundle(u)))
        })
        .collect()
}

fn bad(what: &'static str) -> SignalError {
    SignalError::InvalidMessage { what }
}

/// One bundle: `<registration>`, `<identity>`, `<skey>`, optional `<key>`, directly or inside
/// `<keys>`.
pub(crate) fn parse_bundle(user: &Node) -> Result<PreKeyBundle, SignalError> {
    if user.child("error").is_some() {
        return Err(bad("bundle error"));
    }
    let keys = user.child("keys").unwrap_or(user);
    let reg = child_bytes(user, "registration")
        .or_else(|| child_bytes(keys, "registration"))
        .ok_or_else(|| bad("registration"))?;
    let registration_id =
        u32::from_be_bytes(reg.try_into().map_err(|_| bad("registration length"))?);
    let identity = child_bytes(keys, "identity")
        .or_else(|| child_bytes(user, "identity"))
        .ok_or_else(|| bad("identity"))?;
    let identity_key = PublicKey::from_bytes_lenient(identity, "identity")?;
    let skey = keys
        .child("skey")
        .or_else(|| user.child("skey"))
        .ok_or_else(|| bad("skey"))?;
    let signed_prekey_id = child_bytes(skey, "id")
        .and_then(parse_id3)
        .ok_or_else(|| bad("skey id"))?;
    let signed_prekey = PublicKey::from_bytes_lenient(
        child_bytes(skey, "value").ok_or_else(|| bad("skey value"))?,
        "skey",
    )?;
    let signed_prekey_signature: [u8; 64] = child_bytes(skey, "signature")
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("skey signature"))?;
    let prekey = match keys.child("key").or_else(|| user.child("key")) {
        None => None,
        Some(k) => {
            let id = child_bytes(k, "id")
                .and_then(parse_id3)
                .ok_or_else(|| bad("key id"))?;
            let value = PublicKey::from_bytes_lenient(
                child_bytes(k, "value").ok_or_else(|| bad("key"))?,
                "key",
            )?;
            Some((id, value))
        }
    };
    Ok(PreKeyBundle {
        registration_id,
        identity_key,
        signed_prekey_id,
        signed_prekey,
        signed_prekey_signature,
        prekey,
    })
}

/// The prekey upload IQ's children (§10.1).
pub(crate) fn prekey_upload(
    registration_id: u32,
    identity: &[u8; 32],
    prekeys: &[PreKey],
    signed: (u32, &[u8; 32], &[u8; 64]),
) -> Vec<Node> {
    vec![
        Node::new("registration").bytes(registration_id.to_be_bytes().to_vec()),
        Node::new("type").bytes(vec![crate::signal::KEY_TYPE_DJB]),
        Node::new("identity").bytes(identity.to_vec()),
        Node::new("list").children(
            prekeys
                .iter()
                .map(|k| {
                    Node::new("key").children([
                        Node::new("id").bytes(id3(k.id)),
                        Node::new("value").bytes(k.public().0.to_vec()),
                    ])
                })
                .collect::<Vec<_>>(),
        ),
        signed_key_node(signed),
    ]
}

/// `<skey><id/><value/><signature/></skey>`.
pub(crate) fn signed_key_node((id, public, signature): (u32, &[u8; 32], &[u8; 64])) -> Node {
    Node::new("skey").children([
        Node::new("id").bytes(id3(id)),
        Node::new("value").bytes(public.to_vec()),
        Node::new("signature").bytes(signature.to_vec()),
    ])
}

/// A group's members as a send needs them: the users, whether the group is in
/// `addressing_mode="lid"`, and the (LID, PN) pairs its metadata tells.
pub(crate) struct GroupMembers {
    pub(crate) users: Vec<Jid>,
    pub(crate) lid_mode: bool,
    pub(crate) pairs: Vec<(Jid, Jid)>,
}

/// The participants of a `<group>` answer (§13), with its addressing mode and LID pairs.
pub(crate) fn parse_group(result: &Node) -> Option<GroupMembers> {
    let group = result.child("group")?;
    let mut pairs = Vec::new();
    let mut users: Vec<Jid> = group
        .child_nodes()
        .iter()
        .filter(|p| p.tag == "participant")
        .take(MAX_LIST)
        .filter_map(|p| {
            let jid = user_of(&jid_attr(p, "jid")?);
            // LID groups name each member's number, PN groups its LID (LID.md §1 row 4).
            let alt = jid_attr(p, if jid.is_lid() { "phone_number" } else { "lid" });
            if let Some(alt) = alt {
                let alt = user_of(&alt);
                if jid.is_lid() != alt.is_lid() {
                    pairs.push(if jid.is_lid() {
                        (jid.clone(), alt)
                    } else {
                        (alt, jid.clone())
                    });
                }
            }
            Some(jid)
        })
        .collect();
    users.sort_by_key(ToString::to_string);
    users.dedup();
    let lid_mode = match group.attr_str("addressing_mode") {
        Some(mode) => mode == "lid",
        None => users.first().is_some_and(Jid::is_lid),
    };
    Some(GroupMembers {
        users,
        lid_mode,
        pairs,
    })
}

/// Whether a JID names a user (phone number or LID), not a group or server.
pub(crate) fn is_user(jid: &Jid) -> bool {
    matches!(jid.server_part(), Server::User | Server::Lid) && !jid.user_part().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips_and_is_checked() {
        for r in 0..=255u8 {
            let padded = pad(b"hello".to_vec(), r);
            assert!(padded.len() > 5 && padded.len() <= 21);
            assert_eq!(unpad(&padded), Some(&b"hello"[..]));
        }
        assert_eq!(unpad(&[]), None);
        assert_eq!(unpad(&[1, 2, 0]), None);
        assert_eq!(unpad(&[1, 3, 2]), None);
        assert_eq!(unpad(&[9, 9]), None);
    }

    #[test]
    fn message_id_has_the_current_shape() {
        let id = message_id(1_700_000_000, "15551234567", &[7; 16]);
        assert_eq!(id.len(), 22);
        assert!(id.starts_with("3EB0"));
        assert!(
            id[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        assert_ne!(id, message_id(1_700_000_000, "15551234567", &[8; 16]));
    }

    #[test]
    fn phash_ignores_order() {
        let a: Jid = "1:2@s.whatsapp.net".parse().unwrap();
        let b: Jid = "3@s.whatsapp.net".parse().unwrap();
        let h = phash(&[a.clone(), b.clone()]);
        assert_eq!(h, phash(&[b, a]));
        assert!(h.starts_with("2:") && h.len() == 10);
    }
}
