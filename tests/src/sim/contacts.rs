//! Account-level IQs: usync contact and user-info queries (SESSION.md §10.4, LID.md §1.1),
//! `status` (the about text), `w:profile:picture`, `privacy`, `blocklist`, and the logout
//! (`md` remove-companion-device, SESSION.md §15). What an account shows lives in a
//! [`Profile`] next to the account.

use std::collections::{BTreeMap, BTreeSet};

use amarula_core::binary::Node;
use amarula_core::jid::{Jid, Server};
use rand_core::RngCore;

use super::iq::{error, result};
use super::state::{State, jid_attr, notification};

/// What an account shows of itself and decides for others.
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    /// The about text and when it was set.
    pub(crate) status: Option<(String, u64)>,
    /// The current picture's id.
    pub(crate) picture: Option<String>,
    /// Privacy settings by category; [`DEFAULT_PRIVACY`] for the rest.
    pub(crate) privacy: BTreeMap<String, String>,
    /// Blocked users, by LID user part.
    pub(crate) blocked: BTreeSet<String>,
}

/// Every category the server lists, with its default.
const DEFAULT_PRIVACY: [(&str, &str); 8] = [
    ("last", "all"),
    ("online", "all"),
    ("profile", "all"),
    ("status", "all"),
    ("readreceipts", "all"),
    ("groupadd", "all"),
    ("calladd", "all"),
    ("messages", "all"),
];

impl State {
    /// The profile of `phone`'s account (created empty on first use).
    pub(crate) fn profile(&mut self, phone: &str) -> &mut Profile {
        self.profiles.entry(phone.to_owned()).or_default()
    }

    /// The value of `phone`'s privacy `category`.
    pub(crate) fn privacy_value(&self, phone: &str, category: &str) -> Option<&str> {
        self.profiles
            .get(phone)
            .and_then(|p| p.privacy.get(category))
            .map(String::as_str)
            .or_else(|| {
                DEFAULT_PRIVACY
                    .iter()
                    .find(|(c, _)| *c == category)
                    .map(|(_, v)| *v)
            })
    }
}

/// Whether a usync query is for contacts or user info (not the device lists of sends).
pub(crate) fn is_profile_usync(iq: &Node) -> bool {
    iq.child("usync")
        .and_then(|u| u.child("query"))
        .is_some_and(|q| {
            q.child_nodes()
                .iter()
                .any(|p| matches!(&*p.tag, "contact" | "status" | "picture"))
        })
}

/// A usync query with the contact, status, picture, devices and lid protocols: one `<user>`
/// per user asked, with one child per protocol asked.
pub(crate) fn usync(st: &mut State, iq: &Node) -> Node {
    let query = iq.child("usync");
    let protocols: Vec<String> = query
        .and_then(|u| u.child("query"))
        .map(|q| q.child_nodes().iter().map(|p| p.tag.to_string()).collect())
        .unwrap_or_default();
    let users = query
        .and_then(|u| u.child("list"))
        .map(|l| l.child_nodes().to_vec())
        .unwrap_or_default();
    let mut out = Vec::new();
    for user in users.iter().filter(|u| u.tag == "user") {
        // A contact lookup names a number; the others a JID.
        let asked = user
            .child("contact")
            .and_then(Node::content_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let phone = match (&asked, jid_attr(user, "jid")) {
            (Some(number), _) => {
                let digits: String = number.chars().filter(char::is_ascii_digit).collect();
                st.accounts.contains_key(&digits).then_some(digits)
            }
            (None, Some(jid)) => st.phone_of(jid.user_part()).map(str::to_owned),
            (None, None) => None,
        };
        let mut children = Vec::new();
        for p in &protocols {
            match (p.as_str(), phone.as_deref()) {
                ("contact", found) => {
                    let kind = if found.is_some() { "in" } else { "out" };
                    children.push(
                        Node::new("contact")
                            .attr("type", kind)
                            .bytes(asked.clone().unwrap_or_default().into_bytes()),
                    );
                }
                ("lid", Some(phone)) => {
                    if let Some(a) = st.accounts.get(phone) {
                        children.push(Node::new("lid").attr("val", Jid::lid(a.lid.as_str())));
                    }
                }
                ("status", Some(phone)) => {
                    let status = st.profile(phone).status.clone();
                    children.push(match status {
                        Some((text, t)) => Node::new("status")
                            .attr("t", t.to_string())
                            .bytes(text.into_bytes()),
                        None => Node::new("status"),
                    });
                }
                ("picture", Some(phone)) => {
                    if let Some(id) = st.profile(phone).picture.clone() {
                        children.push(Node::new("picture").attr("id", id));
                    }
                }
                ("devices", Some(phone)) => {
                    let devices: Vec<Node> = st
                        .accounts
                        .get(phone)
                        .map(|a| {
                            a.devices
                                .iter()
                                .map(|(n, d)| {
                                    let dev = Node::new("device").attr("id", n.to_string());
                                    if *n == 0 {
                                        dev
                                    } else {
                                        dev.attr("key-index", d.key_index.to_string())
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    children.push(
                        Node::new("devices").children([Node::new("device-list").children(devices)]),
                    );
                }
                (_, None) if p != "contact" => children.push(
                    Node::new(p.as_str()).children([Node::new("error")
                        .attr("code", "404")
                        .attr("text", "item-not-found")]),
                ),
                _ => {}
            }
        }
        let mut entry = Node::new("user");
        if let Some(phone) = &phone {
            entry = entry.attr("jid", Jid::user(phone.as_str()));
        } else if let Some(jid) = jid_attr(user, "jid") {
            entry = entry.attr("jid", jid);
        }
        out.push(entry.children(children));
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

/// `xmlns="status"`: sets the asker's about text.
pub(crate) fn status(st: &mut State, me: &str, iq: &Node) -> Node {
    let Some(text) = iq
        .child("status")
        .and_then(Node::content_bytes)
        .map(|b| String::from_utf8_lossy(b).into_owned())
    else {
        return error(iq, 400, "bad-request");
    };
    st.profile(me).status = Some((text, super::unix_now()));
    result(iq, Vec::new())
}

/// `xmlns="w:profile:picture"`: the picture of `target` (a user or a group).
pub(crate) fn picture(st: &mut State, me: &str, iq: &Node) -> Node {
    if iq.attr_str("type") == Some("set") {
        return set_picture(st, me, iq);
    }
    let (Some(target), Some(pic)) = (jid_attr(iq, "target"), iq.child("picture")) else {
        return error(iq, 400, "bad-request");
    };
    let kind = pic.attr_str("type").unwrap_or("image").to_owned();
    let id = if target.is_group() {
        match st.groups.get(target.user_part()) {
            Some(g) => g.picture.clone(),
            None => return error(iq, 404, "item-not-found"),
        }
    } else {
        let Some(phone) = st.phone_of(target.user_part()).map(str::to_owned) else {
            return error(iq, 404, "item-not-found");
        };
        if phone != me && st.privacy_value(&phone, "profile") == Some("none") {
            return error(iq, 401, "not-authorized");
        }
        st.profile(&phone).picture.clone()
    };
    let Some(id) = id else {
        return error(iq, 404, "item-not-found");
    };
    if pic.attr_str("id") == Some(id.as_str()) {
        return result(iq, vec![Node::new("picture").attr("status", "304")]);
    }
    let url = format!(
        "https://pps.sim.invalid/v/{}/{id}/{kind}.jpg",
        target.user_part()
    );
    result(
        iq,
        vec![
            Node::new("picture")
                .attr("id", id.as_str())
                .attr("type", kind.as_str())
                .attr("url", url)
                .attr("direct_path", format!("/v/{id}/{kind}")),
        ],
    )
}

/// A `set` of `w:profile:picture`: our own picture, or a group's (admins only); a
/// `<picture type="image">` with the JPEG sets it (the answer names the new id), none removes
/// it.
fn set_picture(st: &mut State, me: &str, iq: &Node) -> Node {
    let Some(target) = jid_attr(iq, "target") else {
        return error(iq, 400, "bad-request");
    };
    let image = iq.child("picture").and_then(Node::content_bytes);
    if image.is_some_and(|b| b.is_empty()) {
        return error(iq, 406, "not-acceptable");
    }
    let id = image.map(|_| format!("{}", 1_000_000_000 + st.rng.next_u32() % 1_000_000_000));
    if target.is_group() {
        match st.groups.get_mut(target.user_part()) {
            None => return error(iq, 404, "item-not-found"),
            Some(g) if !g.is_admin(me) => return error(iq, 401, "not-authorized"),
            Some(g) => g.picture = id.clone(),
        }
    } else if st.phone_of(target.user_part()) == Some(me) {
        st.profile(me).picture = id.clone();
    } else {
        return error(iq, 401, "not-authorized");
    }
    match id {
        Some(id) => result(iq, vec![Node::new("picture").attr("id", id)]),
        None => result(iq, Vec::new()),
    }
}

/// `xmlns="privacy"`: the asker's settings, or one changed.
pub(crate) fn privacy(st: &mut State, me: &str, iq: &Node) -> Node {
    match iq.attr_str("type") {
        Some("get") => {
            let categories: Vec<Node> = DEFAULT_PRIVACY
                .iter()
                .map(|(c, _)| {
                    Node::new("category")
                        .attr("name", *c)
                        .attr("value", st.privacy_value(me, c).unwrap_or("all"))
                })
                .collect();
            result(iq, vec![Node::new("privacy").children(categories)])
        }
        _ if iq.child("tokens").is_some() => issue_tokens(st, me, iq),
        _ => {
            let Some(cat) = iq.child("privacy").and_then(|p| p.child("category")) else {
                return error(iq, 400, "bad-request");
            };
            let (Some(name), Some(value)) = (cat.attr_str("name"), cat.attr_str("value")) else {
                return error(iq, 400, "bad-request");
            };
            if !DEFAULT_PRIVACY.iter().any(|(c, _)| *c == name) {
                return error(iq, 400, "bad-request");
            }
            let (name, value) = (name.to_owned(), value.to_owned());
            st.profile(me).privacy.insert(name, value);
            result(iq, Vec::new())
        }
    }
}

/// `xmlns="blocklist"`: the asker's list, or a change (answered with the new list). Users are
/// named by LID; a phone number is accepted too.
pub(crate) fn blocklist(st: &mut State, me: &str, iq: &Node) -> Node {
    if iq.attr_str("type") == Some("set") {
        let Some(item) = iq.child("item") else {
            return error(iq, 400, "bad-request");
        };
        let Some(jid) = jid_attr(item, "jid") else {
            return error(iq, 400, "bad-request");
        };
        let Some(lid) = st
            .account_by_user(jid.user_part())
            .map(|a| a.lid.clone())
            .filter(|_| matches!(jid.server_part(), Server::Lid | Server::User))
        else {
            return error(iq, 404, "item-not-found");
        };
        let blocked = &mut st.profile(me).blocked;
        match item.attr_str("action") {
            Some("block") => {
                blocked.insert(lid);
            }
            Some("unblock") => {
                blocked.remove(&lid);
            }
            _ => return error(iq, 400, "bad-request"),
        }
    }
    let items: Vec<Node> = st
        .profile(me)
        .blocked
        .iter()
        .map(|lid| Node::new("item").attr("jid", Jid::lid(lid.as_str())))
        .collect();
    let dhash = format!("sim-{}", items.len());
    result(
        iq,
        vec![Node::new("list").attr("dhash", dhash).children(items)],
    )
}

/// `<remove-companion-device jid reason/>` from `device`: the device is unlinked (it can log
/// in no more) and the account's other companions hear of it. `None` when the IQ names
/// another device (refused by the caller with 403).
pub(crate) fn remove_companion(st: &mut State, device: &Jid, iq: &Node) -> Option<Node> {
    let named = iq
        .child("remove-companion-device")
        .and_then(|r| jid_attr(r, "jid"))?;
    if named.user_part() != device.user_part() || named.device() != device.device() {
        return None;
    }
    let phone = st.phone_of(device.user_part())?.to_owned();
    let account = st.account_by_user(&phone)?;
    let jid = account.pn(device.device());
    account.devices.remove(&device.device());
    let others = st.companion_devices(&phone);
    if !others.is_empty() {
        let node = notification(
            st,
            "devices",
            Jid::user(phone.as_str()),
            vec![Node::new("remove").children([Node::new("device").attr("jid", jid)])],
        );
        for d in others {
            st.deliver(&phone, d, node.clone());
        }
    }
    Some(result(iq, Vec::new()))
}

/// The privacy token `issuer` gives `holder` (opaque to clients; the simulator checks it).
pub(crate) fn token_bytes(issuer: &str, holder: &str) -> Vec<u8> {
    format!("sim-tctoken:{issuer}>{holder}").into_bytes()
}

/// `<iq xmlns="privacy" type="set"><tokens><token jid t type="trusted_contact"/></tokens>`
/// (LID.md §5.3): `me` trusts each named user, who gets a `privacy_token` notification from
/// `me` (with `sender_lid`) carrying the token; answered with a bare result.
fn issue_tokens(st: &mut State, me: &str, iq: &Node) -> Node {
    let tokens: Vec<Node> = iq
        .child("tokens")
        .map(|t| t.child_nodes().to_vec())
        .unwrap_or_default();
    let issuer = st
        .accounts
        .get(me)
        .map(|a| (a.pn(0).to_non_device(), a.lid.clone()));
    let Some((issuer_pn, issuer_lid)) = issuer else {
        return error(iq, 404, "item-not-found");
    };
    for token in tokens.iter().filter(|t| t.tag == "token").take(256) {
        if token.attr_str("type") != Some("trusted_contact") {
            continue;
        }
        let Some(target) = token.attr_jid("jid") else {
            continue;
        };
        let Some(holder) = st.phone_of(target.user_part()).map(str::to_owned) else {
            continue;
        };
        if holder == me {
            continue;
        }
        st.trusted.insert((me.to_owned(), holder.clone()));
        let t = token
            .attr_str("t")
            .map_or_else(|| super::unix_now().to_string(), str::to_owned);
        let body = Node::new("tokens").children([Node::new("token")
            .attr("type", "trusted_contact")
            .attr("t", t)
            .bytes(token_bytes(me, &holder))]);
        let note = notification(st, "privacy_token", issuer_pn.clone(), vec![body])
            .attr("sender_lid", Jid::lid(issuer_lid.as_str()));
        for device in st.companion_devices(&holder) {
            st.deliver(&holder, device, note.clone());
        }
    }
    result(iq, Vec::new())
}
