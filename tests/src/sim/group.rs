//! Groups (SESSION.md §13): who is in them, the metadata IQ, and the `w:gp2` notification that
//! tells members someone was added. Message routing to members is in `route.rs`.

use amarula_core::binary::{AttrValue, Node};
use amarula_core::jid::Jid;
use rand_core::RngCore;

use super::iq::{error, result};
use super::state::{State, notification};

/// A simulated group.
#[derive(Debug, Clone)]
pub(crate) struct GroupState {
    /// The numeric id (the user part of `ID@g.us`).
    pub(crate) id: String,
    pub(crate) subject: String,
    /// The phone number of the account that created it (the superadmin).
    pub(crate) creator: String,
    /// Phone numbers of the members, in the order they joined (the creator first).
    pub(crate) participants: Vec<String>,
    /// Unix seconds of creation.
    pub(crate) creation: u64,
}

impl GroupState {
    pub(crate) fn jid(&self) -> Jid {
        Jid::group(self.id.as_str())
    }

    pub(crate) fn is_member(&self, phone: &str) -> bool {
        self.participants.iter().any(|p| p == phone)
    }

    /// The `<group>` node of the metadata answer.
    fn info(&self) -> Node {
        let participants = self.participants.iter().map(|p| {
            let n = Node::new("participant").attr("jid", Jid::user(p.as_str()));
            if *p == self.creator {
                n.attr("type", "superadmin")
            } else {
                n
            }
        });
        Node::new("group")
            .attr("id", self.id.as_str())
            .attr("subject", self.subject.as_str())
            .attr("creation", self.creation.to_string())
            .attr("creator", Jid::user(self.creator.as_str()))
            .attr("addressing_mode", "pn")
            .attr("size", self.participants.len().to_string())
            .children(participants.collect::<Vec<_>>())
    }
}

/// Why a group change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No group has this JID.
    #[error("unknown group")]
    UnknownGroup,
    /// The account is a member already.
    #[error("already a member")]
    AlreadyMember,
}

impl State {
    /// Creates a group of `creator` and `members` (accounts created when missing; repeats and
    /// the creator among `members` are ignored) with a fresh numeric id.
    pub(crate) fn create_group(&mut self, creator: &str, subject: &str, members: &[&str]) -> Jid {
        let id = loop {
            // Ids of the modern form: 120363 followed by 12 digits.
            let id = format!("120363{:012}", self.rng.next_u64() % 1_000_000_000_000);
            if !self.groups.contains_key(&id) {
                break id;
            }
        };
        let mut participants = vec![creator.to_owned()];
        for m in members {
            if !participants.iter().any(|p| p == m) {
                participants.push((*m).to_owned());
            }
        }
        for p in &participants {
            self.new_account(p);
        }
        let group = GroupState {
            id: id.clone(),
            subject: subject.to_owned(),
            creator: creator.to_owned(),
            participants,
            creation: super::unix_now(),
        };
        let jid = group.jid();
        self.groups.insert(id, group);
        jid
    }

    /// Adds `phone` to `group` (the account is created when missing) and sends every member
    /// device, the new member's included, `<notification type="w:gp2"><add><participant/>`.
    pub(crate) fn add_to_group(&mut self, group: &Jid, phone: &str) -> Result<(), GroupError> {
        let g = self
            .groups
            .get_mut(group.user_part())
            .filter(|_| group.is_group())
            .ok_or(GroupError::UnknownGroup)?;
        if g.is_member(phone) {
            return Err(GroupError::AlreadyMember);
        }
        g.participants.push(phone.to_owned());
        let members = g.participants.clone();
        let from = g.jid();
        self.new_account(phone);
        let node = notification(
            self,
            "w:gp2",
            from,
            vec![
                Node::new("add").children([Node::new("participant").attr("jid", Jid::user(phone))]),
            ],
        );
        for member in &members {
            for d in self.companion_devices(member) {
                self.deliver(member, d, node.clone());
            }
        }
        Ok(())
    }
}

/// `xmlns="w:g2"` IQs: the metadata query (`get` with `<query request="interactive"/>`) of a
/// group the asking device's account is in.
pub(crate) fn answer(st: &State, device: &Jid, iq: &Node) -> Node {
    let kind = iq.attr_str("type").unwrap_or_default();
    let first = iq.child_nodes().first().map(|c| &*c.tag);
    if (kind, first) != ("get", Some("query")) {
        return error(iq, 501, "feature-not-implemented");
    }
    let Some(to) = super::state::jid_attr(iq, "to").filter(Jid::is_group) else {
        return error(iq, 400, "bad-request");
    };
    let Some(group) = st.groups.get(to.user_part()) else {
        return error(iq, 404, "item-not-found");
    };
    let Some(asker) = st.phone_of(device.user_part()) else {
        return error(iq, 403, "forbidden");
    };
    if !group.is_member(asker) {
        return error(iq, 403, "forbidden");
    }
    let mut reply = result(iq, vec![group.info()]);
    // The answer comes from the group, as the real server's does.
    for (k, v) in &mut reply.attrs {
        if k == "from" {
            *v = AttrValue::Jid(to.clone());
        }
    }
    reply
}
