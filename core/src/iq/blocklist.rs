//! `xmlns="blocklist"`: who the account has blocked.
//!
//! Get: `<iq xmlns="blocklist" type="get" to="s.whatsapp.net"/>` →
//! `<list dhash><item jid/>…</list>`. Change: `<iq type="set"><item action="block|unblock"
//! jid=LID [pn_jid=PN (block)]/></iq>`, answered with the new list. The server names the
//! user by LID; the phone number goes along when blocking.

use super::{IqError, MAX_LIST, children, jid_attr, ok, str_attr};
use crate::binary::Node;
use crate::jid::Jid;
use crate::machine::{IqRequest, IqResult};

/// The blocked users.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Blocklist {
    /// The list's hash (`dhash`), when given.
    pub dhash: Option<String>,
    /// The blocked users, as the server names them.
    pub jids: Vec<Jid>,
}

impl Blocklist {
    /// Whether `user` (without device) is on the list.
    pub fn contains(&self, user: &Jid) -> bool {
        let user = user.to_non_device();
        self.jids.contains(&user)
    }
}

/// The list: `get`, no child.
pub fn get() -> IqRequest {
    IqRequest::iq("blocklist", "get", Jid::server(), Vec::new())
}

/// Blocks (`block`) or unblocks a user: `jid` is how the server names them (their LID when
/// known), `pn` their phone number, sent along when blocking.
pub fn update(jid: &Jid, pn: Option<&Jid>, block: bool) -> IqRequest {
    let mut item = Node::new("item")
        .attr("action", if block { "block" } else { "unblock" })
        .attr("jid", jid.to_non_device());
    if let (true, Some(pn)) = (block, pn) {
        if *pn != jid.to_non_device() {
            item = item.attr("pn_jid", pn.to_non_device());
        }
    }
    IqRequest::iq("blocklist", "set", Jid::server(), vec![item])
}

/// The `<list>` of an answer to [`get`] or [`update`]. An [`update`] answer without a list
/// counts as an empty change: `None`.
pub fn parse(result: IqResult) -> Result<Option<Blocklist>, IqError> {
    let node = ok(result)?;
    Ok(node.child("list").map(|list| Blocklist {
        dhash: str_attr(list, "dhash"),
        jids: children(list, "item")
            .take(MAX_LIST)
            .filter_map(|i| jid_attr(i, "jid"))
            .map(|j| j.to_non_device())
            .collect(),
    }))
}

/// The answer to [`get`], which must hold the list.
pub fn parse_list(result: IqResult) -> Result<Blocklist, IqError> {
    parse(result)?.ok_or(IqError::Malformed("no <list>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    #[test]
    fn shapes_and_parse() {
        let b = update(&jid("9@lid"), Some(&jid("1@s.whatsapp.net")), true).node;
        let item = b.child("item").unwrap();
        assert_eq!(item.attr_str("action"), Some("block"));
        assert_eq!(item.attr_jid("jid"), Some(&jid("9@lid")));
        assert_eq!(item.attr_jid("pn_jid"), Some(&jid("1@s.whatsapp.net")));
        let u = update(&jid("9@lid"), Some(&jid("1@s.whatsapp.net")), false).node;
        assert!(u.child("item").unwrap().get_attr("pn_jid").is_none());
        assert!(get().node.child_nodes().is_empty());
        let answer = IqResult::Ok(Node::new("iq").children([
            Node::new("list").attr("dhash", "h1").children([
                Node::new("item").attr("jid", jid("9@lid")),
                Node::new("item"),
            ]),
        ]));
        let list = parse_list(answer).unwrap();
        assert_eq!(list.dhash.as_deref(), Some("h1"));
        assert!(list.contains(&jid("9:2@lid")));
        assert_eq!(list.jids.len(), 1);
        assert_eq!(parse(IqResult::Ok(Node::new("iq"))), Ok(None));
        assert!(parse_list(IqResult::Ok(Node::new("iq"))).is_err());
    }
}
