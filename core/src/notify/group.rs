//! `<notification type="w:gp2" from=GROUP participant=ACTOR [participant_pn] t id>`: what
//! changed in a group (SESSION.md §13, LID.md §1 row 5). One notification may carry several
//! changes, one child each:
//!
//! | child | change |
//! |---|---|
//! | `<create><group …/></create>` | the group was created (with us in it) |
//! | `<add [reason]>`, `<remove>`, `<leave>`, `<promote>`, `<demote>` | `<participant jid [lid\|phone_number] [type]/>`… |
//! | `<subject subject s_t s_o [s_o_pn]/>` | renamed |
//! | `<description id><body>…</body></description>` or with `<delete/>` | description set or deleted |
//! | `<announcement/>` / `<not_announcement/>`, `<locked/>` / `<unlocked/>` | settings |
//! | `<ephemeral expiration/>` / `<not_ephemeral/>` | disappearing timer |
//! | `<membership_approval_mode><group_join state/></…>` | join approval |
//! | `<member_add_mode>admin_add</member_add_mode>` | who may add |
//! | `<invite code/>` | the invite link was reset |
//! | `<created_membership_requests [request_method]>`, `<revoked_membership_requests>` | join requests |
//! | `<delete [reason]/>` | the group was deleted |

use crate::binary::Node;
use crate::iq::groups::{Group, GroupDescription, GroupSubject, MemberAddMode, Participant};
use crate::iq::{MAX_LIST, children, jid_attr, num_attr, str_attr, text_of};
use crate::jid::Jid;

/// One change of a [`GroupNotification`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupChange {
    /// The group was created, with us in it.
    Created(Box<Group>),
    /// Members joined or were added.
    Added {
        /// Who.
        participants: Vec<Participant>,
        /// Why (`reason`, e.g. `invite`, `linked_group_join`), when given.
        reason: Option<String>,
    },
    /// Members left or were removed.
    Removed {
        /// Who.
        participants: Vec<Participant>,
    },
    /// Members became admins.
    Promoted(Vec<Participant>),
    /// Admins became members.
    Demoted(Vec<Participant>),
    /// Renamed.
    Subject(GroupSubject),
    /// The description was set (`Some`) or deleted (`None`).
    Description(Option<GroupDescription>),
    /// Announce mode on or off.
    Announce(bool),
    /// Locked on or off.
    Locked(bool),
    /// The disappearing timer (seconds), or off.
    Ephemeral(Option<u32>),
    /// Join approval on or off.
    Approval(bool),
    /// Who may add members.
    MemberAddMode(MemberAddMode),
    /// The invite link was reset; the new code when given.
    InviteReset {
        /// The new code.
        code: Option<String>,
    },
    /// People asked to join (approval mode).
    MembershipRequested {
        /// Who.
        participants: Vec<Participant>,
        /// How (`request_method`, e.g. `invite_link`), when given.
        method: Option<String>,
    },
    /// Requests to join were withdrawn or rejected.
    MembershipRequestsRevoked {
        /// Whose.
        participants: Vec<Participant>,
    },
    /// The group was deleted.
    Deleted {
        /// Why, when given.
        reason: Option<String>,
    },
    /// A change this version does not type, as received.
    Other(Node),
}

/// A `w:gp2` notification, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupNotification {
    /// The stanza id.
    pub id: String,
    /// The group.
    pub group: Jid,
    /// Who made the change (`participant`), when given.
    pub actor: Option<Jid>,
    /// Who made the change, by phone number (`participant_pn`), when `actor` is a LID.
    pub actor_pn: Option<Jid>,
    /// When (`t`, unix seconds).
    pub timestamp: Option<u64>,
    /// Delivered from the offline queue (`offline`).
    pub offline: bool,
    /// What changed, in order.
    pub changes: Vec<GroupChange>,
}

impl GroupNotification {
    /// Parses a `<notification type="w:gp2">`; `None` when it is not one or names no group.
    pub fn from_node(node: &Node) -> Option<Self> {
        if node.tag != "notification" || node.attr_str("type") != Some("w:gp2") {
            return None;
        }
        let group = jid_attr(node, "from")
            .filter(Jid::is_group)?
            .to_non_device();
        let changes = node
            .child_nodes()
            .iter()
            .take(MAX_LIST)
            .map(change)
            .collect();
        Some(Self {
            id: str_attr(node, "id").unwrap_or_default(),
            group,
            actor: jid_attr(node, "participant"),
            actor_pn: jid_attr(node, "participant_pn"),
            timestamp: num_attr(node, "t"),
            offline: node.get_attr("offline").is_some(),
            changes,
        })
    }

    /// Every (LID, PN) pair the notification names (members, creator).
    pub fn lid_mappings(&self) -> Vec<(Jid, Jid)> {
        let mut out = Vec::new();
        for c in &self.changes {
            let list: &[Participant] = match c {
                GroupChange::Added { participants, .. }
                | GroupChange::Removed { participants }
                | GroupChange::Promoted(participants)
                | GroupChange::Demoted(participants)
                | GroupChange::MembershipRequested { participants, .. }
                | GroupChange::MembershipRequestsRevoked { participants } => participants,
                GroupChange::Created(g) => &g.participants,
                _ => &[],
            };
            out.extend(list.iter().filter_map(Participant::lid_mapping));
        }
        out
    }
}

fn participants(node: &Node) -> Vec<Participant> {
    children(node, "participant")
        .take(MAX_LIST)
        .filter_map(Participant::from_node)
        .collect()
}

fn change(child: &Node) -> GroupChange {
    match &*child.tag {
        "create" => match child.child("group").and_then(Group::from_node) {
            Some(g) => GroupChange::Created(Box::new(g)),
            None => GroupChange::Other(child.clone()),
        },
        "add" => GroupChange::Added {
            participants: participants(child),
            reason: str_attr(child, "reason"),
        },
        "remove" | "leave" => GroupChange::Removed {
            participants: participants(child),
        },
        "promote" => GroupChange::Promoted(participants(child)),
        "demote" => GroupChange::Demoted(participants(child)),
        "subject" => GroupChange::Subject(GroupSubject {
            text: str_attr(child, "subject").unwrap_or_default(),
            set_by: jid_attr(child, "s_o"),
            set_by_pn: jid_attr(child, "s_o_pn"),
            set_at: num_attr(child, "s_t"),
        }),
        "description" => {
            if child.child("delete").is_some() || child.attr_str("delete") == Some("true") {
                GroupChange::Description(None)
            } else {
                GroupChange::Description(Some(GroupDescription::from_node(child)))
            }
        }
        "announcement" => GroupChange::Announce(true),
        "not_announcement" => GroupChange::Announce(false),
        "locked" => GroupChange::Locked(true),
        "unlocked" => GroupChange::Locked(false),
        "ephemeral" => GroupChange::Ephemeral(num_attr(child, "expiration").filter(|t| *t > 0)),
        "not_ephemeral" => GroupChange::Ephemeral(None),
        "membership_approval_mode" => {
            let state = child.child("group_join").and_then(|g| g.attr_str("state"));
            GroupChange::Approval(state != Some("off"))
        }
        "member_add_mode" => match text_of(child) {
            Some(mode) => GroupChange::MemberAddMode(match mode.as_str() {
                "admin_add" => MemberAddMode::AdminAdd,
                "all_member_add" => MemberAddMode::AllMemberAdd,
                _ => MemberAddMode::Other(mode),
            }),
            None => GroupChange::Other(child.clone()),
        },
        "invite" => GroupChange::InviteReset {
            code: str_attr(child, "code"),
        },
        "created_membership_requests" => GroupChange::MembershipRequested {
            participants: participants(child),
            method: str_attr(child, "request_method"),
        },
        "revoked_membership_requests" => GroupChange::MembershipRequestsRevoked {
            participants: participants(child),
        },
        "delete" => GroupChange::Deleted {
            reason: str_attr(child, "reason"),
        },
        _ => GroupChange::Other(child.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    fn notification(children: Vec<Node>) -> Node {
        Node::new("notification")
            .attr("type", "w:gp2")
            .attr("from", jid("120363000000000001@g.us"))
            .attr("participant", jid("100000000000001@lid"))
            .attr("participant_pn", jid("15550000001@s.whatsapp.net"))
            .attr("id", "N1")
            .attr("t", "1700000000")
            .children(children)
    }

    #[test]
    fn every_change_is_typed() {
        let n = notification(vec![
            Node::new("add")
                .attr("reason", "invite")
                .children([Node::new("participant")
                    .attr("jid", jid("100000000000002@lid"))
                    .attr("phone_number", jid("15550000002@s.whatsapp.net"))]),
            Node::new("remove").children([
                Node::new("participant").attr("jid", jid("15550000003@s.whatsapp.net"))
            ]),
            Node::new("promote").children([
                Node::new("participant").attr("jid", jid("15550000004@s.whatsapp.net"))
            ]),
            Node::new("demote").children([Node::new("participant")]),
            Node::new("subject")
                .attr("subject", "New name")
                .attr("s_t", "1700000001")
                .attr("s_o", jid("100000000000001@lid")),
            Node::new("description")
                .attr("id", "D2")
                .children([Node::new("body").bytes(b"about".to_vec())]),
            Node::new("description")
                .attr("id", "D3")
                .children([Node::new("delete")]),
            Node::new("announcement"),
            Node::new("unlocked"),
            Node::new("ephemeral").attr("expiration", "604800"),
            Node::new("not_ephemeral"),
            Node::new("membership_approval_mode")
                .children([Node::new("group_join").attr("state", "off")]),
            Node::new("member_add_mode").bytes(b"all_member_add".to_vec()),
            Node::new("invite").attr("code", "NEW"),
            Node::new("created_membership_requests")
                .attr("request_method", "invite_link")
                .children(
                    [Node::new("participant").attr("jid", jid("15550000009@s.whatsapp.net"))],
                ),
            Node::new("revoked_membership_requests"),
            Node::new("delete").attr("reason", "owner"),
            Node::new("brand_new"),
        ]);
        let g = GroupNotification::from_node(&n).unwrap();
        assert_eq!(g.group, jid("120363000000000001@g.us"));
        assert_eq!(g.actor, Some(jid("100000000000001@lid")));
        assert_eq!(g.actor_pn, Some(jid("15550000001@s.whatsapp.net")));
        assert_eq!(g.timestamp, Some(1_700_000_000));
        assert_eq!(g.id, "N1");
        let c = &g.changes;
        assert_eq!(c.len(), 18);
        let GroupChange::Added {
            participants,
            reason,
        } = &c[0]
        else {
            panic!("{:?}", c[0])
        };
        assert_eq!(reason.as_deref(), Some("invite"));
        assert_eq!(
            participants[0].phone,
            Some(jid("15550000002@s.whatsapp.net"))
        );
        assert!(matches!(&c[1], GroupChange::Removed { participants } if participants.len() == 1));
        assert!(matches!(&c[2], GroupChange::Promoted(p) if p.len() == 1));
        assert!(matches!(&c[3], GroupChange::Demoted(p) if p.is_empty()));
        assert!(
            matches!(&c[4], GroupChange::Subject(s) if s.text == "New name" && s.set_at == Some(1_700_000_001))
        );
        assert!(matches!(&c[5], GroupChange::Description(Some(d)) if d.text == "about"));
        assert_eq!(c[6], GroupChange::Description(None));
        assert_eq!(c[7], GroupChange::Announce(true));
        assert_eq!(c[8], GroupChange::Locked(false));
        assert_eq!(c[9], GroupChange::Ephemeral(Some(604_800)));
        assert_eq!(c[10], GroupChange::Ephemeral(None));
        assert_eq!(c[11], GroupChange::Approval(false));
        assert_eq!(
            c[12],
            GroupChange::MemberAddMode(MemberAddMode::AllMemberAdd)
        );
        assert_eq!(
            c[13],
            GroupChange::InviteReset {
                code: Some("NEW".into())
            }
        );
        assert!(
            matches!(&c[14], GroupChange::MembershipRequested { method: Some(m), participants } if m == "invite_link" && participants.len() == 1)
        );
        assert!(matches!(
            &c[15],
            GroupChange::MembershipRequestsRevoked { .. }
        ));
        assert!(matches!(&c[16], GroupChange::Deleted { reason: Some(r) } if r == "owner"));
        assert!(matches!(&c[17], GroupChange::Other(n) if n.tag == "brand_new"));
        assert_eq!(
            g.lid_mappings(),
            [(
                jid("100000000000002@lid"),
                jid("15550000002@s.whatsapp.net")
            )]
        );
    }

    #[test]
    fn create_carries_the_group() {
        let n = notification(vec![
            Node::new("create").children([Node::new("group")
                .attr("id", "120363000000000001")
                .attr("subject", "Fresh")
                .children([Node::new("participant")
                    .attr("jid", jid("15550000001@s.whatsapp.net"))
                    .attr("type", "superadmin")])]),
        ]);
        let g = GroupNotification::from_node(&n).unwrap();
        let GroupChange::Created(group) = &g.changes[0] else {
            panic!()
        };
        assert_eq!(group.subject.text, "Fresh");
        assert_eq!(group.participants.len(), 1);
    }

    #[test]
    fn not_a_group_notification() {
        assert!(GroupNotification::from_node(&Node::new("notification")).is_none());
        let wrong_from = Node::new("notification")
            .attr("type", "w:gp2")
            .attr("from", jid("1@s.whatsapp.net"));
        assert!(GroupNotification::from_node(&wrong_from).is_none());
        let other = Node::new("notification")
            .attr("type", "devices")
            .attr("from", jid("1@g.us"));
        assert!(GroupNotification::from_node(&other).is_none());
    }
}
