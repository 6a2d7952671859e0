//! `xmlns="usync"`: who is on WhatsApp, and what others show of themselves (SESSION.md §10.4,
//! LID.md §1.1).
//!
//! ```text
//! <iq xmlns="usync" type="get" to="s.whatsapp.net">
//!   <usync sid mode context last="true" index="0">
//!     <query>protocols…</query>
//!     <list><user …/>…</list>
//!   </usync>
//! </iq>
//! → <usync><list><user jid>one child per protocol</user>…</list></usync>
//! ```
//! A protocol may fail for one user: its child then holds `<error code text/>`.

use super::{IqError, MAX_LIST, children, jid_attr, num_attr, ok, str_attr, text_of};
use crate::binary::Node;
use crate::jid::{Jid, Server};
use crate::machine::{IqRequest, IqResult};

/// One number of [`contacts`]: whether it has an account, and which.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Contact {
    /// The number as asked (international digits, with `+`).
    pub query: String,
    /// Whether the number has a WhatsApp account (`<contact type="in">`).
    pub exists: bool,
    /// The account's phone-number JID, when it has one.
    pub jid: Option<Jid>,
    /// The account's LID, when the server gave it.
    pub lid: Option<Jid>,
}

/// What a user shows of themselves: [`user_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserInfo {
    /// The user asked about.
    pub jid: Jid,
    /// The status ("about") text, when visible.
    pub status: Option<String>,
    /// When the status text was set (unix seconds).
    pub status_set_at: Option<u64>,
    /// The id of the current profile picture, when visible.
    pub picture_id: Option<String>,
    /// The device ids (0 is the phone).
    pub devices: Vec<u16>,
    /// The user's LID, when given.
    pub lid: Option<Jid>,
}

/// A phone number in the `+digits` form the contact protocol takes.
pub fn normalize_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    format!("+{digits}")
}

fn usync(sid: &str, mode: &str, context: &str, query: Vec<Node>, users: Vec<Node>) -> IqRequest {
    IqRequest::iq(
        "usync",
        "get",
        Jid::server(),
        vec![
            Node::new("usync")
                .attr("sid", sid)
                .attr("mode", mode)
                .attr("context", context)
                .attr("last", "true")
                .attr("index", "0")
                .children([
                    Node::new("query").children(query),
                    Node::new("list").children(users),
                ]),
        ],
    )
}

/// Whether these numbers have accounts: mode `query`, context `interactive`, protocols
/// `<contact/>` and `<lid/>`, users `<user><contact>+digits</contact></user>`. `sid` is a
/// fresh request id.
pub fn contacts(sid: &str, phones: &[String]) -> IqRequest {
    let users = phones
        .iter()
        .map(|p| {
            Node::new("user")
                .children([Node::new("contact").bytes(normalize_phone(p).into_bytes())])
        })
        .collect();
    usync(
        sid,
        "query",
        "interactive",
        vec![Node::new("contact"), Node::new("lid")],
        users,
    )
}

/// What these users show: mode `full`, context `background`, protocols `<status/>`,
/// `<picture/>`, `<devices version="2"/>` and `<lid/>`.
pub fn user_info(sid: &str, users: &[Jid]) -> IqRequest {
    let users = users
        .iter()
        .map(|u| Node::new("user").attr("jid", u.to_non_device()))
        .collect();
    usync(
        sid,
        "full",
        "background",
        vec![
            Node::new("status"),
            Node::new("picture"),
            Node::new("devices").attr("version", "2"),
            Node::new("lid"),
        ],
        users,
    )
}

fn user_list(result: IqResult) -> Result<Node, IqError> {
    let node = ok(result)?;
    let usync = node
        .child("usync")
        .ok_or(IqError::Malformed("no <usync>"))?;
    // A protocol that failed for everyone is reported in <result> (LID.md §1.1).
    if let Some(err) = usync
        .child("result")
        .and_then(|r| r.child("contact").or_else(|| r.child("status")))
        .and_then(|p| p.child("error"))
    {
        return Err(IqError::Server {
            code: num_attr(err, "code").unwrap_or(0),
            text: str_attr(err, "text").unwrap_or_default(),
        });
    }
    usync
        .child("list")
        .cloned()
        .ok_or(IqError::Malformed("no <list>"))
}

/// The LID of a `<user>`: `<lid val/>`, or the user's own `jid` when that is a LID.
fn lid_of(user: &Node, jid: Option<&Jid>) -> Option<Jid> {
    user.child("lid")
        .filter(|l| l.child("error").is_none())
        .and_then(|l| jid_attr(l, "val"))
        .or_else(|| {
            jid.filter(|j| matches!(j.server_part(), Server::Lid))
                .cloned()
        })
        .map(|j| j.to_non_device())
}

/// The answer to [`contacts`], one entry per `<user>` the server listed.
pub fn parse_contacts(result: IqResult) -> Result<Vec<Contact>, IqError> {
    let list = user_list(result)?;
    Ok(children(&list, "user")
        .take(MAX_LIST)
        .filter_map(|u| {
            let contact = u.child("contact")?;
            let jid = jid_attr(u, "jid");
            // With `addressing_mode="lid"` the user's jid is the LID and `pn_jid` the number.
            let pn = jid_attr(u, "pn_jid").or_else(|| {
                jid.clone()
                    .filter(|j| matches!(j.server_part(), Server::User))
            });
            let exists = contact.attr_str("type") == Some("in");
            Some(Contact {
                query: text_of(contact).unwrap_or_default(),
                exists,
                lid: lid_of(u, jid.as_ref()),
                jid: pn.filter(|_| exists).map(|j| j.to_non_device()),
            })
        })
        .collect())
}

/// The answer to [`user_info`], one entry per `<user jid>`.
pub fn parse_user_info(result: IqResult) -> Result<Vec<UserInfo>, IqError> {
    let list = user_list(result)?;
    Ok(children(&list, "user")
        .take(MAX_LIST)
        .filter_map(|u| {
            let jid = jid_attr(u, "jid")?;
            let status = u.child("status").filter(|s| s.child("error").is_none());
            let devices = u
                .child("devices")
                .and_then(|d| d.child("device-list"))
                .map(|l| {
                    children(l, "device")
                        .take(MAX_LIST)
                        .filter_map(|d| num_attr::<u16>(d, "id"))
                        .collect()
                })
                .unwrap_or_default();
            Some(UserInfo {
                status: status.and_then(text_of),
                status_set_at: status.and_then(|s| num_attr(s, "t")),
                picture_id: u
                    .child("picture")
                    .and_then(|p| str_attr(p, "id"))
                    .filter(|id| !id.is_empty()),
                devices,
                lid: lid_of(u, Some(&jid)),
                jid: jid.to_non_device(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    fn answer(users: Vec<Node>) -> IqResult {
        IqResult::Ok(
            Node::new("iq")
                .children([Node::new("usync").children([Node::new("list").children(users)])]),
        )
    }

    #[test]
    fn contact_query_shape() {
        let req = contacts("s1", &["1 (555) 000-1111".into(), "+15550002222".into()]).node;
        assert_eq!(req.attr_str("xmlns"), Some("usync"));
        let usync = req.child("usync").unwrap();
        assert_eq!(usync.attr_str("context"), Some("interactive"));
        assert!(usync.child("query").unwrap().child("contact").is_some());
        let users = usync.child("list").unwrap().child_nodes();
        let numbers: Vec<&[u8]> = users
            .iter()
            .filter_map(|u| u.child("contact").and_then(Node::content_bytes))
            .collect();
        assert_eq!(numbers, [&b"+15550001111"[..], &b"+15550002222"[..]]);
    }

    #[test]
    fn contacts_parse_in_and_out() {
        let r = parse_contacts(answer(vec![
            Node::new("user")
                .attr("jid", jid("15550001111@s.whatsapp.net"))
                .children([
                    Node::new("contact")
                        .attr("type", "in")
                        .bytes(b"+15550001111".to_vec()),
                    Node::new("lid").attr("val", jid("100000000000001@lid")),
                ]),
            Node::new("user")
                .attr("jid", jid("15550002222@s.whatsapp.net"))
                .children([Node::new("contact")
                    .attr("type", "out")
                    .bytes(b"+15550002222".to_vec())]),
            // The LID form.
            Node::new("user")
                .attr("jid", jid("100000000000003@lid"))
                .attr("pn_jid", jid("15550003333@s.whatsapp.net"))
                .children([Node::new("contact")
                    .attr("type", "in")
                    .bytes(b"+15550003333".to_vec())]),
            Node::new("user"),
        ]))
        .unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[0].exists);
        assert_eq!(r[0].jid, Some(jid("15550001111@s.whatsapp.net")));
        assert_eq!(r[0].lid, Some(jid("100000000000001@lid")));
        assert!(!r[1].exists);
        assert_eq!(r[1].jid, None);
        assert_eq!(r[1].query, "+15550002222");
        assert_eq!(r[2].jid, Some(jid("15550003333@s.whatsapp.net")));
        assert_eq!(r[2].lid, Some(jid("100000000000003@lid")));
    }

    #[test]
    fn user_info_parses() {
        let req = user_info("s2", &[jid("1:3@s.whatsapp.net")]).node;
        let usync = req.child("usync").unwrap();
        assert_eq!(usync.attr_str("mode"), Some("full"));
        assert_eq!(
            usync
                .child("list")
                .and_then(|l| l.child("user"))
                .and_then(|u| u.attr_jid("jid")),
            Some(&jid("1@s.whatsapp.net"))
        );
        let r = parse_user_info(answer(vec![
            Node::new("user")
                .attr("jid", jid("1@s.whatsapp.net"))
                .children([
                    Node::new("status")
                        .attr("t", "1700000000")
                        .bytes(b"busy".to_vec()),
                    Node::new("picture").attr("id", "777"),
                    Node::new("devices").children([Node::new("device-list").children([
                        Node::new("device").attr("id", "0"),
                        Node::new("device").attr("id", "4").attr("key-index", "1"),
                        Node::new("device").attr("id", "x"),
                    ])]),
                    Node::new("lid").attr("val", jid("9@lid")),
                ]),
        ]))
        .unwrap();
        assert_eq!(r[0].status.as_deref(), Some("busy"));
        assert_eq!(r[0].status_set_at, Some(1_700_000_000));
        assert_eq!(r[0].picture_id.as_deref(), Some("777"));
        assert_eq!(r[0].devices, [0, 4]);
        assert_eq!(r[0].lid, Some(jid("9@lid")));
    }

    #[test]
    fn failures_are_typed() {
        assert_eq!(
            parse_user_info(IqResult::Ok(Node::new("iq"))),
            Err(IqError::Malformed("no <usync>"))
        );
        let whole = IqResult::Ok(
            Node::new("iq").children([Node::new("usync").children([Node::new("result")
                .children([Node::new("contact").children([Node::new("error")
                    .attr("code", "429")
                    .attr("text", "rate-overlimit")])])])]),
        );
        assert_eq!(parse_contacts(whole).unwrap_err().code(), Some(429));
        let hidden = answer(vec![
            Node::new("user")
                .attr("jid", jid("1@s.whatsapp.net"))
                .children([Node::new("status").children([Node::new("error").attr("code", "401")])]),
        ]);
        assert_eq!(parse_user_info(hidden).unwrap()[0].status, None);
    }
}
