//! Groups (SESSION.md §13): who is in them with which role, their info and settings, and the
//! `w:gp2` notifications that tell members what changed. The `w:g2` IQs are answered in
//! `groups_iq.rs`; message routing to members is in `route.rs`.

use std::collections::{BTreeMap, BTreeSet};

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use rand_core::RngCore;

use super::state::{State, notification};

/// A simulated group.
#[derive(Debug, Clone)]
pub(crate) struct GroupState {
    /// The numeric id (the user part of `ID@g.us`).
    pub(crate) id: String,
    pub(crate) subject: String,
    /// Who set the subject (phone number) and when.
    pub(crate) subject_by: String,
    pub(crate) subject_at: u64,
    /// The phone number of the account that created it (the superadmin).
    pub(crate) creator: String,
    /// Phone numbers of the members, in the order they joined (the creator first).
    pub(crate) participants: Vec<String>,
    /// Members who are admins (the creator is the super admin, not listed here).
    pub(crate) admins: BTreeSet<String>,
    /// Unix seconds of creation.
    pub(crate) creation: u64,
    /// The description: id, text, who (phone) and when.
    pub(crate) description: Option<(String, String, String, u64)>,
    pub(crate) announce: bool,
    pub(crate) locked: bool,
    pub(crate) ephemeral: Option<u32>,
    pub(crate) approval: bool,
    /// Every member may add (`all_member_add`), or only admins (`admin_add`, the default).
    pub(crate) all_member_add: bool,
    /// The current invite code, and the codes it replaced (410 gone).
    pub(crate) invite: String,
    pub(crate) revoked: BTreeSet<String>,
    /// Requests to join waiting for an admin: phone number → unix seconds.
    pub(crate) requests: BTreeMap<String, u64>,
    /// Members removed: adding them again is refused with 408 (invite them instead).
    pub(crate) removed: BTreeSet<String>,
    /// Community links: a community (parent group), or the community this group is in.
    pub(crate) community: Community,
    /// The current picture's id.
    pub(crate) picture: Option<String>,
    /// Invite codes given out for adds the person's privacy refused (phone → code): the
    /// person joins by accepting it (invite v4).
    pub(crate) add_requests: BTreeMap<String, String>,
}

/// A group's place in a community.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Community {
    /// An ordinary group.
    #[default]
    None,
    /// A community (`<parent/>`).
    Parent,
    /// A group of the community with this id.
    Linked(String),
}

impl GroupState {
    pub(crate) fn jid(&self) -> Jid {
        Jid::group(self.id.as_str())
    }

    pub(crate) fn is_member(&self, phone: &str) -> bool {
        self.participants.iter().any(|p| p == phone)
    }

    pub(crate) fn is_admin(&self, phone: &str) -> bool {
        phone == self.creator || self.admins.contains(phone)
    }

    /// The `<participant>` of a member, with its role: by phone number with its LID (a
    /// PN-addressed group), or in LID mode by LID with its `phone_number` (LID.md §1 row 4).
    pub(crate) fn participant(st: &State, phone: &str, role: Option<&str>) -> Node {
        let account = st.accounts.get(phone);
        let mut n = match account {
            Some(a) if st.lid_mode => Node::new("participant")
                .attr("jid", Jid::lid(a.lid.as_str()))
                .attr("phone_number", Jid::user(phone)),
            Some(a) => Node::new("participant")
                .attr("jid", Jid::user(phone))
                .attr("lid", Jid::lid(a.lid.as_str())),
            None => Node::new("participant").attr("jid", Jid::user(phone)),
        };
        if let Some(role) = role {
            n = n.attr("type", role);
        }
        n
    }

    fn role(&self, phone: &str) -> Option<&'static str> {
        if phone == self.creator {
            Some("superadmin")
        } else if self.admins.contains(phone) {
            Some("admin")
        } else {
            None
        }
    }

    /// The `<group>` node of metadata answers, the participating list and create.
    pub(crate) fn info(&self, st: &State) -> Node {
        let mut children: Vec<Node> = self
            .participants
            .iter()
            .map(|p| Self::participant(st, p, self.role(p)))
            .collect();
        if let Some((id, text, by, t)) = &self.description {
            children.push(
                Node::new("description")
                    .attr("id", id.as_str())
                    .attr("participant", Jid::user(by.as_str()))
                    .attr("t", t.to_string())
                    .children([Node::new("body").bytes(text.as_bytes().to_vec())]),
            );
        }
        if self.announce {
            children.push(Node::new("announcement"));
        }
        if self.locked {
            children.push(Node::new("locked"));
        }
        if let Some(t) = self.ephemeral {
            children.push(Node::new("ephemeral").attr("expiration", t.to_string()));
        }
        if self.approval {
            children.push(
                Node::new("membership_approval_mode")
                    .children([Node::new("group_join").attr("state", "on")]),
            );
        }
        match &self.community {
            Community::None => {}
            Community::Parent => children.push(
                Node::new("parent").attr("default_membership_approval_mode", "request_required"),
            ),
            Community::Linked(parent) => {
                children.push(Node::new("linked_parent").attr("jid", Jid::group(parent.as_str())));
            }
        }
        let mode: &[u8] = if self.all_member_add {
            b"all_member_add"
        } else {
            b"admin_add"
        };
        children.push(Node::new("member_add_mode").bytes(mode.to_vec()));
        Node::new("group")
            .attr("id", self.id.as_str())
            .attr("subject", self.subject.as_str())
            .attr("s_o", Jid::user(self.subject_by.as_str()))
            .attr("s_t", self.subject_at.to_string())
            .attr("creation", self.creation.to_string())
            .attr("creator", Jid::user(self.creator.as_str()))
            .attr("addressing_mode", if st.lid_mode { "lid" } else { "pn" })
            .attr("size", self.participants.len().to_string())
            .children(children)
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

/// A random invite code (22 characters of the URL-safe alphabet).
pub(crate) fn invite_code(st: &mut State) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..22)
        .map(|_| {
            let i = (st.rng.next_u32() as usize) % ALPHABET.len();
            char::from(ALPHABET.get(i).copied().unwrap_or(b'A'))
        })
        .collect()
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
        let now = super::unix_now();
        let invite = invite_code(self);
        let group = GroupState {
            id: id.clone(),
            subject: subject.to_owned(),
            subject_by: creator.to_owned(),
            subject_at: now,
            creator: creator.to_owned(),
            participants,
            admins: BTreeSet::new(),
            creation: now,
            description: None,
            announce: false,
            locked: false,
            ephemeral: None,
            approval: false,
            all_member_add: false,
            invite,
            revoked: BTreeSet::new(),
            requests: BTreeMap::new(),
            removed: BTreeSet::new(),
            community: Community::None,
            picture: None,
            add_requests: BTreeMap::new(),
        };
        let jid = group.jid();
        self.groups.insert(id, group);
        jid
    }

    /// Sends `<notification type="w:gp2" from=GROUP participant=ACTOR>children</…>` to every
    /// device of `to` (phone numbers) except `skip` (the device that made the change, which
    /// has the IQ's answer), queued for the offline ones.
    pub(crate) fn notify_group(
        &mut self,
        group: &Jid,
        actor: Option<&str>,
        to: &[String],
        skip: Option<&Jid>,
        children: Vec<Node>,
    ) {
        let mut node = notification(self, "w:gp2", group.clone(), children);
        if let Some(actor) = actor {
            node = node.attr("participant", Jid::user(actor));
        }
        for member in to {
            for d in self.companion_devices(member) {
                let skipped = skip.is_some_and(|s| s.user_part() == member && s.device() == d);
                if !skipped {
                    self.deliver(member, d, node.clone());
                }
            }
        }
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
        let added = GroupState::participant(self, phone, None);
        self.notify_group(
            &from,
            None,
            &members,
            None,
            vec![Node::new("add").children([added])],
        );
        Ok(())
    }
}
