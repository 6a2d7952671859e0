//! Answers to the IQs a logged-in client sends (SESSION.md §3, §4, §10, §12.1).

use amarula_core::binary::Node;
use amarula_core::jid::Jid;

use super::state::{KeyStore, PreKey, Shared, State};

/// `<iq from="s.whatsapp.net" type="result" id=ID>children</iq>`.
pub(crate) fn result(iq: &Node, children: Vec<Node>) -> Node {
    let mut n = Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "result")
        .attr("id", iq.attr_str("id").unwrap_or_default());
    if !children.is_empty() {
        n = n.children(children);
    }
    n
}

/// `<iq type="error"><error code text/></iq>`.
pub(crate) fn error(iq: &Node, code: u16, text: &str) -> Node {
    Node::new("iq")
        .attr("from", Jid::server())
        .attr("type", "error")
        .attr("id", iq.attr_str("id").unwrap_or_default())
        .children([Node::new("error")
            .attr("code", code.to_string())
            .attr("text", text)])
}

/// The answer to `iq` from `device` (`None` before login).
pub(crate) fn answer(shared: &Shared, device: Option<&Jid>, iq: &Node) -> Node {
    let xmlns = iq.attr_str("xmlns").unwrap_or_default();
    let kind = iq.attr_str("type").unwrap_or_default();
    let first = iq.child_nodes().first().map(|c| &*c.tag);
    match (xmlns, kind, first) {
        // Keepalive (§4): answered with the server time.
        ("w:p", "get", _) => result(iq, Vec::new()).attr("t", super::unix_now().to_string()),
        _ if device.is_none() => error(iq, 401, "not-authorized"),
        ("passive", "set", Some("active" | "passive")) => result(iq, Vec::new()),
        ("encrypt", _, _) => {
            let reply = encrypt(&mut shared.lock(), device, iq, kind, first);
            if kind == "set" && iq.child("list").is_some() {
                // With keys to share, the phone shares them once the new device can be
                // reached (its prekeys are up).
                super::appstate::after_prekey_upload(shared, device);
            }
            reply
        }
        ("usync", "get", Some("usync")) if super::contacts::is_profile_usync(iq) => {
            super::contacts::usync(&mut shared.lock(), iq)
        }
        ("usync", "get", Some("usync")) => usync(&mut shared.lock(), iq),
        ("w:g2", _, _) => match device {
            Some(d) => super::groups_iq::answer(&mut shared.lock(), d, iq),
            None => error(iq, 401, "not-authorized"),
        },
        ("status" | "w:profile:picture" | "privacy" | "blocklist", _, _) => {
            let mut st = shared.lock();
            let me = device.and_then(|d| st.phone_of(d.user_part()).map(str::to_owned));
            let Some(me) = me else {
                return error(iq, 401, "not-authorized");
            };
            match xmlns {
                "status" => super::contacts::status(&mut st, &me, iq),
                "w:profile:picture" => super::contacts::picture(&mut st, &me, iq),
                "privacy" => super::contacts::privacy(&mut st, &me, iq),
                _ => super::contacts::blocklist(&mut st, &me, iq),
            }
        }
        ("w:sync:app:state", "set", Some("sync")) => match device {
            Some(d) => super::appstate::answer(shared, d, iq),
            None => error(iq, 401, "not-authorized"),
        },
        ("abt", "get", Some("props")) => ab_props(&shared.lock(), iq),
        ("w:m", "set", Some("media_conn")) => result(
            iq,
            vec![
                Node::new("media_conn")
                    .attr("auth", super::media::AUTH)
                    .attr("ttl", "3600")
                    .attr("auth_ttl", "21600")
                    .attr("max_buckets", "12")
                    .children([
                        Node::new("host").attr("hostname", shared.config.media_host.as_str())
                    ]),
            ],
        ),
        _ => error(iq, 501, "feature-not-implemented"),
    }
}

fn bytes_of(node: &Node, tag: &str) -> Option<Vec<u8>> {
    node.child(tag)
        .and_then(Node::content_bytes)
        .map(<[u8]>::to_vec)
}

fn prekey(node: &Node, signed: bool) -> Option<PreKey> {
    Some(PreKey {
        id: bytes_of(node, "id").filter(|i| i.len() == 3)?,
        value: bytes_of(node, "value").filter(|v| v.len() == 32)?,
        signature: if signed {
            Some(bytes_of(node, "signature").filter(|s| s.len() == 64)?)
        } else {
            None
        },
    })
}

/// The key store of a logged-in device.
fn store<'a>(st: &'a mut State, device: &Jid) -> Option<&'a mut KeyStore> {
    st.account_by_user(device.user_part())?
        .devices
        .get_mut(&device.device())
        .map(|d| &mut d.keys)
}

/// `xmlns="encrypt"` (§10): upload, count, bundles, signed prekey rotation.
fn encrypt(
    st: &mut State,
    device: Option<&Jid>,
    iq: &Node,
    kind: &str,
    first: Option<&str>,
) -> Node {
    let Some(device) = device else {
        return error(iq, 401, "not-authorized");
    };
    match (kind, first) {
        ("set", _) if iq.child("list").is_some() => {
            let Some(store) = store(st, device) else {
                return error(iq, 404, "item-not-found");
            };
            let (Some(reg), Some(identity), Some(skey)) = (
                bytes_of(iq, "registration").filter(|r| r.len() == 4),
                bytes_of(iq, "identity").filter(|i| i.len() == 32),
                iq.child("skey").and_then(|s| prekey(s, true)),
            ) else {
                return error(iq, 400, "bad-request");
            };
            let keys: Option<Vec<PreKey>> = iq
                .child("list")
                .map(Node::child_nodes)
                .unwrap_or_default()
                .iter()
                .filter(|k| k.tag == "key")
                .map(|k| prekey(k, false))
                .collect();
            let Some(keys) = keys else {
                return error(iq, 400, "bad-request");
            };
            store.registration = Some(reg);
            store.identity = Some(identity);
            store.signed = Some(skey);
            store.one_time.extend(keys);
            result(iq, Vec::new())
        }
        ("set", Some("rotate")) => {
            let skey = iq
                .child("rotate")
                .and_then(|r| r.child("skey"))
                .and_then(|s| prekey(s, true));
            match (store(st, device), skey) {
                (Some(store), Some(skey)) => {
                    store.signed = Some(skey);
                    result(iq, Vec::new())
                }
                _ => error(iq, 400, "bad-request"),
            }
        }
        ("get", Some("digest")) => match store(st, device).map(|s| digest(s)) {
            Some(Some(d)) => result(iq, vec![d]),
            _ => error(iq, 404, "item-not-found"),
        },
        ("get", Some("count")) => {
            let n = store(st, device).map_or(0, |s| s.one_time.len());
            result(iq, vec![Node::new("count").attr("value", n.to_string())])
        }
        ("get", Some("key")) => {
            let users: Vec<Node> = iq
                .child("key")
                .map(Node::child_nodes)
                .unwrap_or_default()
                .iter()
                .filter(|u| u.tag == "user")
                .map(|u| bundle(st, u))
                .collect();
            result(iq, vec![Node::new("list").children(users)])
        }
        _ => error(iq, 501, "feature-not-implemented"),
    }
}

/// `<digest>`: what the server holds of the asking device's key bundle (WA Web's and Baileys
/// 7's key-bundle check after login): `<registration>`, `<type>`, `<identity>`, the signed
/// prekey as `<skey><id/><value/><signature/></skey>` and the ids of the one-time prekeys
/// left in `<list><id/>…</list>`. The real answer also carries a `<hash>` of the keys, which
/// the simulator leaves out (its computation is not confirmed by a source we have); `None`
/// before an upload.
fn digest(keys: &KeyStore) -> Option<Node> {
    let (reg, identity, skey) = (
        keys.registration.clone()?,
        keys.identity.clone()?,
        keys.signed.clone()?,
    );
    let mut signed = vec![
        Node::new("id").bytes(skey.id),
        Node::new("value").bytes(skey.value),
    ];
    if let Some(sig) = skey.signature {
        signed.push(Node::new("signature").bytes(sig));
    }
    let ids: Vec<Node> = keys
        .one_time
        .iter()
        .map(|k| Node::new("id").bytes(k.id.clone()))
        .collect();
    let mut list = Node::new("list");
    if !ids.is_empty() {
        list = list.children(ids);
    }
    Some(Node::new("digest").children([
        Node::new("registration").bytes(reg),
        Node::new("type").bytes(vec![5]),
        Node::new("identity").bytes(identity),
        Node::new("skey").children(signed),
        list,
    ]))
}

/// `xmlns="abt"` `<props protocol="1" [hash]/>`: the AB props the simulated server sets, as
/// `<props protocol="1" hash><prop config_code config_value/>…</props>` (the tokens are in the
/// binary dictionary; Baileys 7 reads `config_code`/`config_value`). They state what the
/// simulator enforces: privacy tokens on 1:1 messages (10518) and, in LID mode, LID 1:1 chats
/// (9435) and tokens issued to LIDs (14303).
fn ab_props(st: &State, iq: &Node) -> Node {
    let lid = if st.lid_mode { "true" } else { "false" };
    let props = [("10518", "true"), ("9435", lid), ("14303", lid)]
        .into_iter()
        .map(|(code, value)| {
            Node::new("prop")
                .attr("config_code", code)
                .attr("config_value", value)
        })
        .collect::<Vec<_>>();
    let hash = if st.lid_mode { "sim-lid-1" } else { "sim-pn-1" };
    result(
        iq,
        vec![
            Node::new("props")
                .attr("protocol", "1")
                .attr("hash", hash)
                .children(props),
        ],
    )
}

/// One `<user>` of a bundle answer: the stored keys with one one-time prekey taken, or an
/// `<error>`.
pub(crate) fn bundle(st: &mut State, user: &Node) -> Node {
    let Some(jid) = user.attr_jid("jid").cloned() else {
        return Node::new("user").children([Node::new("error")
            .attr("code", "400")
            .attr("text", "bad-request")]);
    };
    let not_found = || {
        Node::new("user")
            .attr("jid", jid.clone())
            .children([Node::new("error")
                .attr("code", "404")
                .attr("text", "item-not-found")])
    };
    let Some(store) = store(st, &jid) else {
        return not_found();
    };
    let (Some(reg), Some(identity), Some(skey)) =
        (&store.registration, &store.identity, &store.signed)
    else {
        return not_found();
    };
    let mut children = vec![
        Node::new("registration").bytes(reg.clone()),
        Node::new("type").bytes(vec![5u8]),
        Node::new("identity").bytes(identity.clone()),
        Node::new("skey").children([
            Node::new("id").bytes(skey.id.clone()),
            Node::new("value").bytes(skey.value.clone()),
            Node::new("signature").bytes(skey.signature.clone().unwrap_or_default()),
        ]),
    ];
    if let Some(k) = store.one_time.pop_front() {
        children.push(Node::new("key").children([
            Node::new("id").bytes(k.id),
            Node::new("value").bytes(k.value),
        ]));
    }
    Node::new("user")
        .attr("jid", jid.clone())
        .children(children)
}

/// `xmlns="usync"` (§10.4): the device list (and LID) of each user asked for.
fn usync(st: &mut State, iq: &Node) -> Node {
    let query = iq.child("usync");
    let users = query
        .and_then(|u| u.child("list"))
        .map(Node::child_nodes)
        .unwrap_or_default();
    let mut out = Vec::new();
    for user in users.iter().filter(|u| u.tag == "user") {
        let Some(jid) = user.attr_jid("jid").cloned() else {
            continue;
        };
        let entry = match st.account_by_user(jid.user_part()) {
            Some(account) => {
                let devices = account.devices.iter().map(|(n, d)| {
                    let dev = Node::new("device").attr("id", n.to_string());
                    if *n == 0 {
                        dev
                    } else {
                        dev.attr("key-index", d.key_index.to_string())
                    }
                });
                let mut user = Node::new("user").attr("jid", jid.to_non_device());
                // A LID-keyed user names its number (LID.md §1.1).
                if jid.is_lid() {
                    user = user.attr("pn_jid", Jid::user(account.phone.as_str()));
                }
                user.children([
                    Node::new("devices")
                        .children([Node::new("device-list").children(devices.collect::<Vec<_>>())]),
                    Node::new("lid").attr("val", Jid::lid(account.lid.as_str())),
                ])
            }
            None => Node::new("user")
                .attr("jid", jid.to_non_device())
                .children([Node::new("devices").children([Node::new("error")
                    .attr("code", "404")
                    .attr("text", "item-not-found")])]),
        };
        out.push(entry);
    }
    let mut usync = Node::new("usync");
    if let Some(q) = query {
        for key in ["sid", "mode", "context"] {
            if let Some(v) = q.get_attr(key) {
                usync = usync.attr(key, v.clone());
            }
        }
    }
    result(iq, vec![usync.children([Node::new("list").children(out)])])
}
