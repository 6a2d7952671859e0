//! The group member cache that group sends fan out to, kept in step with what the server says:
//! metadata answers replace a group's list, `w:gp2` notifications and participant changes that
//! went through add or remove members, and leaving (or being removed) forgets the group.
//!
//! Members are kept as the group addresses them (the participant's `jid`, without device), as
//! the metadata fetch of the send path does.

use super::user_of;
use crate::iq::groups::Group;
use crate::jid::Jid;
use crate::machine::ConnectionMachine;
use crate::notify::group::{GroupChange, GroupNotification};

impl ConnectionMachine {
    /// A group's metadata arrived (metadata, the participating list, create): its member list
    /// replaces the cached one, and its LID/PN pairs are kept.
    pub(in crate::machine) fn group_known(&mut self, group: &Group) {
        self.learn_lid_pairs(group.participants.iter().filter_map(|p| p.lid_mapping()));
        let jid = group.jid.to_non_device();
        if group.participants.is_empty() {
            // An answer without members (e.g. size only) says nothing about who is in.
            return;
        }
        if !group.participants.iter().any(|p| self.is_own_user(&p.jid)) {
            return self.group_forgotten(&jid);
        }
        self.session_msg.groups.insert(jid, group.member_users());
    }

    /// Members were added (`added`) or removed: the cached list follows, when there is one.
    /// Our own removal forgets the group.
    pub(in crate::machine) fn group_members_changed(
        &mut self,
        group: &Jid,
        added: bool,
        users: &[Jid],
    ) {
        let group = group.to_non_device();
        if !added && users.iter().any(|u| self.is_own_user(u)) {
            return self.group_forgotten(&group);
        }
        let m = &mut self.session_msg;
        let Some(members) = m.groups.get_mut(&group) else {
            // Not cached: the next send fetches the metadata anyway.
            return;
        };
        for user in users.iter().map(Jid::to_non_device) {
            if added {
                if !members.contains(&user) {
                    members.push(user);
                }
            } else {
                members.retain(|u| *u != user);
            }
        }
        members.sort_by_key(ToString::to_string);
        if !added {
            // A member who comes back gets our sender key again.
            if let Some(have) = m.sk_memory.get_mut(&group) {
                have.retain(|d| !users.iter().any(|u| user_of(d) == user_of(u)));
            }
        }
    }

    /// We left the group (or it is gone): nothing of it is kept for sends.
    pub(in crate::machine) fn group_forgotten(&mut self, group: &Jid) {
        let group = group.to_non_device();
        self.session_msg.groups.remove(&group);
        self.session_msg.sk_memory.remove(&group);
    }

    /// A `w:gp2` notification (from the messaging hook): the cache follows each change; one
    /// that does not parse, or a change of a kind not typed, drops the group, to be fetched
    /// again at the next send.
    pub(in crate::machine) fn group_notification_cache(
        &mut self,
        from: &Jid,
        node: &crate::binary::Node,
    ) {
        let Some(n) = GroupNotification::from_node(node) else {
            self.session_msg.groups.remove(&from.to_non_device());
            return;
        };
        self.learn_lid_pairs(n.lid_mappings());
        for change in &n.changes {
            match change {
                GroupChange::Created(g) => self.group_known(g),
                GroupChange::Added { participants, .. } => {
                    let users: Vec<Jid> = participants.iter().map(|p| p.jid.clone()).collect();
                    self.group_members_changed(&n.group, true, &users);
                }
                GroupChange::Removed { participants } => {
                    let users: Vec<Jid> = participants.iter().map(|p| p.jid.clone()).collect();
                    self.group_members_changed(&n.group, false, &users);
                }
                GroupChange::Deleted { .. } => self.group_forgotten(&n.group),
                // A change we do not know (e.g. `modify`, a member's new number) may touch
                // the members: the list is fetched again at the next send.
                GroupChange::Other(_) => {
                    self.session_msg.groups.remove(&n.group);
                }
                // Roles, names and settings do not change who gets a message.
                _ => {}
            }
        }
    }
}
