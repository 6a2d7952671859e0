//! `xmlns="w:g2"`: groups (SESSION.md §13).
//!
//! Every request is `<iq xmlns="w:g2" type="get|set" to=X>child</iq>` where X is the group, or
//! the bare group server `@g.us` for what concerns no single group yet (the participating
//! list, create, leave, invite codes). Answers carry `<group>` nodes ([`Group::from_node`]) or
//! the request's own tag with one `<participant>` per member asked for, each with its own
//! result ([`ParticipantResult`]).

use super::{IqError, MAX_LIST, children, jid_attr, num_attr, ok, str_attr, text_of};
use crate::binary::Node;
use crate::jid::{Jid, Server};
use crate::machine::{IqRequest, IqResult};

/// The link of an invite code: `https://chat.whatsapp.com/CODE`.
pub const INVITE_LINK_PREFIX: &str = "https://chat.whatsapp.com/";

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ParticipantRole {
    /// A plain member.
    #[default]
    Member,
    /// An admin (`type="admin"`).
    Admin,
    /// The creator or another super admin (`type="superadmin"`); also an admin.
    SuperAdmin,
}

impl ParticipantRole {
    /// Whether this role may change the group (add, remove, settings).
    pub fn is_admin(self) -> bool {
        matches!(self, Self::Admin | Self::SuperAdmin)
    }

    fn from_attr(v: Option<&str>) -> Self {
        match v {
            Some("admin") => Self::Admin,
            Some("superadmin") => Self::SuperAdmin,
            _ => Self::Member,
        }
    }
}

/// A member of a group as the server lists it.
///
/// LID.md §1 row 4: in a LID-addressed group `jid` is the LID and `phone_number` the PN; in a
/// PN-addressed group `jid` is the PN and `lid` the LID. [`lid`](Self::lid) and
/// [`phone`](Self::phone) hold both identities whichever way they came.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Participant {
    /// The member as the group addresses it (`jid`).
    pub jid: Jid,
    /// The member's LID, when known.
    pub lid: Option<Jid>,
    /// The member's phone-number JID, when known.
    pub phone: Option<Jid>,
    /// Admin or not.
    pub role: ParticipantRole,
    /// `display_name` (LID groups may show a name instead of the number).
    pub display_name: Option<String>,
}

impl Participant {
    /// A plain member addressed by `jid`.
    pub fn new(jid: Jid) -> Self {
        let (lid, phone) = match jid.server_part() {
            Server::Lid => (Some(jid.to_non_device()), None),
            Server::User => (None, Some(jid.to_non_device())),
            _ => (None, None),
        };
        Self {
            jid,
            lid,
            phone,
            role: ParticipantRole::Member,
            display_name: None,
        }
    }

    /// A `<participant jid type? phone_number|lid? display_name?>` node; `None` without `jid`.
    pub fn from_node(node: &Node) -> Option<Self> {
        let jid = jid_attr(node, "jid")?;
        let mut p = Self::new(jid);
        p.role = ParticipantRole::from_attr(node.attr_str("type"));
        p.display_name = str_attr(node, "display_name");
        match p.jid.server_part() {
            Server::Lid => p.phone = jid_attr(node, "phone_number").map(|j| j.to_non_device()),
            Server::User => p.lid = jid_attr(node, "lid").map(|j| j.to_non_device()),
            _ => {}
        }
        Some(p)
    }

    /// The (LID, PN) pair when both identities are known (feeds the LID mappings).
    pub fn lid_mapping(&self) -> Option<(Jid, Jid)> {
        Some((self.lid.clone()?, self.phone.clone()?))
    }
}

/// How a group addresses its members (`addressing_mode`, LID.md §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AddressingMode {
    /// By phone number (`pn`), the default when absent.
    #[default]
    Pn,
    /// By LID (`lid`).
    Lid,
    /// Another value, verbatim.
    Other(String),
}

impl AddressingMode {
    fn from_attr(v: Option<&str>) -> Self {
        match v {
            None | Some("pn") => Self::Pn,
            Some("lid") => Self::Lid,
            Some(other) => Self::Other(other.to_owned()),
        }
    }
}

/// Who may add members (`<member_add_mode>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberAddMode {
    /// Only admins (`admin_add`).
    AdminAdd,
    /// Every member (`all_member_add`).
    AllMemberAdd,
    /// Another value, verbatim.
    Other(String),
}

impl MemberAddMode {
    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::AdminAdd => "admin_add",
            Self::AllMemberAdd => "all_member_add",
            Self::Other(s) => s,
        }
    }

    fn parse(v: &str) -> Self {
        match v {
            "admin_add" => Self::AdminAdd,
            "all_member_add" => Self::AllMemberAdd,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// The name of a group and who set it when.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GroupSubject {
    /// The name.
    pub text: String,
    /// Who set it (`s_o`).
    pub set_by: Option<Jid>,
    /// Who set it, by phone number (`s_o_pn`), when `set_by` is a LID.
    pub set_by_pn: Option<Jid>,
    /// When (`s_t`, unix seconds).
    pub set_at: Option<u64>,
}

impl GroupSubject {
    fn from_attrs(node: &Node, key: &str) -> Self {
        Self {
            text: str_attr(node, key).unwrap_or_default(),
            set_by: jid_attr(node, "s_o"),
            set_by_pn: jid_attr(node, "s_o_pn"),
            set_at: num_attr(node, "s_t"),
        }
    }
}

/// The description ("topic") of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GroupDescription {
    /// The text.
    pub text: String,
    /// Its id; a change names the id it replaces (`prev`).
    pub id: String,
    /// Who set it (`participant`).
    pub set_by: Option<Jid>,
    /// Who set it, by phone number (`participant_pn`).
    pub set_by_pn: Option<Jid>,
    /// When (`t`, unix seconds).
    pub set_at: Option<u64>,
}

impl GroupDescription {
    /// `<description id participant? participant_pn? t?><body>text</body></description>`.
    pub(crate) fn from_node(node: &Node) -> Self {
        Self {
            text: node.child("body").and_then(text_of).unwrap_or_default(),
            id: str_attr(node, "id").unwrap_or_default(),
            set_by: jid_attr(node, "participant"),
            set_by_pn: jid_attr(node, "participant_pn"),
            set_at: num_attr(node, "t"),
        }
    }
}

/// The settings of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GroupSettings {
    /// Only admins may send (`<announcement/>`).
    pub announce: bool,
    /// Only admins may edit the group info (`<locked/>`).
    pub locked: bool,
    /// The disappearing-messages timer in seconds (`<ephemeral expiration/>`), when on.
    pub ephemeral: Option<u32>,
    /// Joining needs an admin's approval (`<membership_approval_mode>`).
    pub approval: bool,
    /// Who may add members, when the server says.
    pub member_add_mode: Option<MemberAddMode>,
}

/// Community links of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CommunityLinks {
    /// The group is a community (`<parent/>`).
    pub is_community: bool,
    /// The community this group belongs to (`<linked_parent jid/>`).
    pub parent: Option<Jid>,
    /// The group is the community's announcement group (`<default_sub_group/>`).
    pub is_default_sub_group: bool,
}

/// A group's metadata: the answer to [`metadata`], one entry of [`participating`], the
/// result of [`create`] and of [`invite_info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Group {
    /// `ID@g.us`.
    pub jid: Jid,
    /// The name and who set it when.
    pub subject: GroupSubject,
    /// The description, when there is one.
    pub description: Option<GroupDescription>,
    /// The creator (`creator`).
    pub owner: Option<Jid>,
    /// The creator by phone number (`creator_pn`), in LID groups.
    pub owner_pn: Option<Jid>,
    /// Creation time (`creation`, unix seconds).
    pub created_at: Option<u64>,
    /// The members with their roles (empty in some answers, e.g. an invite's group info).
    pub participants: Vec<Participant>,
    /// How the group addresses members.
    pub addressing_mode: AddressingMode,
    /// Announce, locked, disappearing timer, approval, add mode.
    pub settings: GroupSettings,
    /// The member count (`size`), when given.
    pub size: Option<u32>,
    /// Community links.
    pub community: CommunityLinks,
    /// The participant-list version (`p_v_id`).
    pub participant_version: Option<String>,
}

impl Group {
    /// A `<group>` node. Its JID comes from `jid`, or from `id` (the user part, sometimes a
    /// whole JID). `None` without either.
    pub fn from_node(node: &Node) -> Option<Self> {
        let jid = jid_attr(node, "jid").filter(Jid::is_group).or_else(|| {
            let id = node.attr_str("id")?;
            let user = id.strip_suffix("@g.us").unwrap_or(id);
            (!user.is_empty() && !user.contains('@')).then(|| Jid::group(user))
        })?;
        let mut group = Self {
            jid,
            subject: GroupSubject::from_attrs(node, "subject"),
            description: None,
            owner: jid_attr(node, "creator"),
            owner_pn: jid_attr(node, "creator_pn"),
            created_at: num_attr(node, "creation"),
            participants: Vec::new(),
            addressing_mode: AddressingMode::from_attr(node.attr_str("addressing_mode")),
            settings: GroupSettings::default(),
            size: num_attr(node, "size"),
            community: CommunityLinks::default(),
            participant_version: str_attr(node, "p_v_id"),
        };
        for child in node.child_nodes().iter().take(MAX_LIST) {
            match &*child.tag {
                "participant" => group.participants.extend(Participant::from_node(child)),
                "description" if child.child("body").is_some() => {
                    group.description = Some(GroupDescription::from_node(child));
                }
                "announcement" => group.settings.announce = true,
                "locked" => group.settings.locked = true,
                "ephemeral" => {
                    group.settings.ephemeral = num_attr(child, "expiration").filter(|t| *t > 0);
                }
                "membership_approval_mode" => {
                    // Present means on, unless it says otherwise.
                    let state = child.child("group_join").and_then(|g| g.attr_str("state"));
                    group.settings.approval = state != Some("off");
                }
                "member_add_mode" => {
                    group.settings.member_add_mode =
                        text_of(child).map(|t| MemberAddMode::parse(&t));
                }
                "parent" => group.community.is_community = true,
                "linked_parent" => group.community.parent = jid_attr(child, "jid"),
                "default_sub_group" => group.community.is_default_sub_group = true,
                _ => {}
            }
        }
        Some(group)
    }

    /// The member with this user (either identity), if any.
    pub fn participant(&self, user: &Jid) -> Option<&Participant> {
        let user = user.to_non_device();
        self.participants.iter().find(|p| {
            p.jid.to_non_device() == user
                || p.lid.as_ref() == Some(&user)
                || p.phone.as_ref() == Some(&user)
        })
    }

    /// The members' users as the group addresses them (`jid`, without device): what a group
    /// send fans out to.
    pub fn member_users(&self) -> Vec<Jid> {
        let mut users: Vec<Jid> = self
            .participants
            .iter()
            .map(|p| p.jid.to_non_device())
            .collect();
        users.sort_by_key(ToString::to_string);
        users.dedup();
        users
    }
}

/// What to create: [`create`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CreateGroup {
    /// The name.
    pub subject: String,
    /// The first members (besides us).
    pub participants: Vec<Jid>,
    /// Start in announce mode.
    pub announce: bool,
    /// Start locked.
    pub locked: bool,
    /// Start with this disappearing timer (seconds).
    pub ephemeral: Option<u32>,
    /// Start with join approval on.
    pub approval: bool,
    /// Create a community (a parent group: `<parent/>`) rather than a group.
    pub community: bool,
    /// Create the group inside this community (`<linked_parent jid/>`).
    pub parent: Option<Jid>,
}

impl CreateGroup {
    /// A group named `subject` with `participants`, default settings.
    pub fn new(subject: impl Into<String>, participants: Vec<Jid>) -> Self {
        Self {
            subject: subject.into(),
            participants,
            ..Self::default()
        }
    }
}

/// The membership change of [`participants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParticipantAction {
    /// `add`.
    Add,
    /// `remove`.
    Remove,
    /// `promote` to admin.
    Promote,
    /// `demote` to member.
    Demote,
}

impl ParticipantAction {
    /// The tag of the request and of the answer.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::Promote => "promote",
            Self::Demote => "demote",
        }
    }
}

/// A setting of [`set_setting`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSetting {
    /// Only admins may send (`<announcement/>` / `<not_announcement/>`).
    Announce(bool),
    /// Only admins may edit the info (`<locked/>` / `<unlocked/>`).
    Locked(bool),
    /// Disappearing messages after this many seconds (`<ephemeral expiration/>`), or off
    /// (`<not_ephemeral/>`).
    Ephemeral(Option<u32>),
    /// Joining needs approval (`<membership_approval_mode><group_join state="on|off"/>`).
    Approval(bool),
    /// Who may add members.
    MemberAddMode(MemberAddMode),
}

/// The invite sent instead when a number cannot be added directly (403 with
/// `<add_request code expiration/>`): send it to the person as a group invite message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AddRequest {
    /// The invite code.
    pub code: String,
    /// When it expires (unix seconds).
    pub expiration: Option<u64>,
}

/// How the change went for one member: the server answers each with its own code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParticipantStatus {
    /// Done (no `error`, or 200).
    Done,
    /// 403: refused (the person's privacy settings forbid adding; an invite may be sent with
    /// the `add_request`, when given).
    Forbidden {
        /// The invite to send instead, when given.
        add_request: Option<AddRequest>,
    },
    /// 404: not on WhatsApp, or not a member (remove, promote, demote).
    NotFound,
    /// 408: cannot be added now (they recently left); invite them instead.
    InviteInstead,
    /// 409: already so (already a member, already an admin).
    Conflict,
    /// Any other code.
    Other(u16),
}

impl ParticipantStatus {
    fn from_code(code: u16, add_request: Option<AddRequest>) -> Self {
        match code {
            0 | 200 => Self::Done,
            403 => Self::Forbidden { add_request },
            404 => Self::NotFound,
            408 => Self::InviteInstead,
            409 => Self::Conflict,
            other => Self::Other(other),
        }
    }

    /// The code (200 for [`Done`](Self::Done)).
    pub fn code(&self) -> u16 {
        match self {
            Self::Done => 200,
            Self::Forbidden { .. } => 403,
            Self::NotFound => 404,
            Self::InviteInstead => 408,
            Self::Conflict => 409,
            Self::Other(c) => *c,
        }
    }
}

/// One member's result of [`participants`] or [`membership_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParticipantResult {
    /// The member.
    pub participant: Participant,
    /// How it went.
    pub status: ParticipantStatus,
}

impl ParticipantResult {
    /// Whether the change was made.
    pub fn is_done(&self) -> bool {
        self.status == ParticipantStatus::Done
    }

    /// `<participant jid error? …><add_request code expiration/>?</participant>`.
    fn from_node(node: &Node) -> Option<Self> {
        let participant = Participant::from_node(node)?;
        let code: u16 = num_attr(node, "error").unwrap_or(0);
        let add_request = node.child("add_request").map(|a| AddRequest {
            code: str_attr(a, "code").unwrap_or_default(),
            expiration: num_attr(a, "expiration"),
        });
        Some(Self {
            participant,
            status: ParticipantStatus::from_code(code, add_request),
        })
    }
}

/// The result of [`join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined this group.
    Joined(Jid),
    /// The group needs approval: a request to join it is waiting for an admin.
    Requested(Jid),
}

/// A pending request to join: [`membership_requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipRequest {
    /// Who asked.
    pub jid: Jid,
    /// When (`request_time`, unix seconds).
    pub requested_at: Option<u64>,
}

fn group_iq(kind: &str, to: Jid, child: Node) -> IqRequest {
    IqRequest::iq("w:g2", kind, to, vec![child])
}

fn group_server() -> Jid {
    Jid::server_only(Server::Group)
}

fn participant_nodes(jids: &[Jid]) -> Vec<Node> {
    jids.iter()
        .map(|j| Node::new("participant").attr("jid", j.to_non_device()))
        .collect()
}

// ---- builders ----

/// Metadata of one group: `get` to the group, `<query request="interactive"/>`.
pub fn metadata(group: &Jid) -> IqRequest {
    group_iq(
        "get",
        group.to_non_device(),
        Node::new("query").attr("request", "interactive"),
    )
}

/// The groups we are in, with members and descriptions: `get` to `@g.us`,
/// `<participating><participants/><description/></participating>`.
pub fn participating() -> IqRequest {
    group_iq(
        "get",
        group_server(),
        Node::new("participating").children([Node::new("participants"), Node::new("description")]),
    )
}

/// Creates a group: `set` to `@g.us`, `<create subject>` with a `<participant jid>` per member
/// and the starting settings.
pub fn create(spec: &CreateGroup) -> IqRequest {
    let mut kids = participant_nodes(&spec.participants);
    if let Some(t) = spec.ephemeral.filter(|t| *t > 0) {
        kids.push(Node::new("ephemeral").attr("expiration", t.to_string()));
    }
    let state = if spec.approval { "on" } else { "off" };
    kids.push(
        Node::new("membership_approval_mode")
            .children([Node::new("group_join").attr("state", state)]),
    );
    if spec.locked {
        kids.push(Node::new("locked"));
    }
    if spec.announce {
        kids.push(Node::new("announcement"));
    }
    if spec.community {
        // Joining a community asks its admins, as the apps create them.
        kids.push(Node::new("parent").attr("default_membership_approval_mode", "request_required"));
    }
    if let Some(parent) = &spec.parent {
        kids.push(Node::new("linked_parent").attr("jid", parent.to_non_device()));
    }
    group_iq(
        "set",
        group_server(),
        Node::new("create")
            .attr("subject", spec.subject.as_str())
            .children(kids),
    )
}

/// Adds, removes, promotes or demotes members: `set` to the group,
/// `<add|remove|promote|demote><participant jid/>…</…>`.
pub fn participants(group: &Jid, action: ParticipantAction, jids: &[Jid]) -> IqRequest {
    group_iq(
        "set",
        group.to_non_device(),
        Node::new(action.as_str()).children(participant_nodes(jids)),
    )
}

/// Renames the group: `<subject>name</subject>`.
pub fn set_subject(group: &Jid, subject: &str) -> IqRequest {
    group_iq(
        "set",
        group.to_non_device(),
        Node::new("subject").bytes(subject.as_bytes().to_vec()),
    )
}

/// Sets the description (`Some`) or deletes it (`None`): `<description id=new prev=old>
/// <body>text</body></description>`, or `delete="true"` without a body. `new_id` is a fresh
/// random id; `previous` the id of the current description, when there is one.
pub fn set_description(
    group: &Jid,
    text: Option<&str>,
    new_id: &str,
    previous: Option<&str>,
) -> IqRequest {
    let mut node = Node::new("description").attr("id", new_id);
    if let Some(prev) = previous {
        node = node.attr("prev", prev);
    }
    node = match text {
        Some(text) => node.children([Node::new("body").bytes(text.as_bytes().to_vec())]),
        None => node.attr("delete", "true"),
    };
    group_iq("set", group.to_non_device(), node)
}

/// Changes one setting of the group.
pub fn set_setting(group: &Jid, setting: &GroupSetting) -> IqRequest {
    let node = match setting {
        GroupSetting::Announce(true) => Node::new("announcement"),
        GroupSetting::Announce(false) => Node::new("not_announcement"),
        GroupSetting::Locked(true) => Node::new("locked"),
        GroupSetting::Locked(false) => Node::new("unlocked"),
        GroupSetting::Ephemeral(Some(t)) if *t > 0 => {
            Node::new("ephemeral").attr("expiration", t.to_string())
        }
        GroupSetting::Ephemeral(_) => Node::new("not_ephemeral"),
        GroupSetting::Approval(on) => Node::new("membership_approval_mode")
            .children([Node::new("group_join").attr("state", if *on { "on" } else { "off" })]),
        GroupSetting::MemberAddMode(mode) => {
            Node::new("member_add_mode").bytes(mode.as_str().as_bytes().to_vec())
        }
    };
    group_iq("set", group.to_non_device(), node)
}

/// Leaves a group: `set` to `@g.us`, `<leave><group id=GROUP/></leave>`.
pub fn leave(group: &Jid) -> IqRequest {
    group_iq(
        "set",
        group_server(),
        Node::new("leave").children([Node::new("group").attr("id", group.to_non_device())]),
    )
}

/// The invite code of a group (`get`), or a new one that revokes the old (`set`, `reset`):
/// `<invite/>` to the group.
pub fn invite_code(group: &Jid, reset: bool) -> IqRequest {
    let kind = if reset { "set" } else { "get" };
    group_iq(kind, group.to_non_device(), Node::new("invite"))
}

/// The code of an invite link or code (the link prefix removed).
pub fn strip_invite_link(code: &str) -> &str {
    code.strip_prefix(INVITE_LINK_PREFIX).unwrap_or(code)
}

/// A group's info from an invite code, without joining: `get` to `@g.us`, `<invite code/>`.
pub fn invite_info(code: &str) -> IqRequest {
    group_iq(
        "get",
        group_server(),
        Node::new("invite").attr("code", strip_invite_link(code)),
    )
}

/// Joins with an invite code: `set` to `@g.us`, `<invite code/>`.
pub fn join(code: &str) -> IqRequest {
    group_iq(
        "set",
        group_server(),
        Node::new("invite").attr("code", strip_invite_link(code)),
    )
}

/// The pending requests to join: `get` to the group, `<membership_approval_requests/>`.
pub fn membership_requests(group: &Jid) -> IqRequest {
    group_iq(
        "get",
        group.to_non_device(),
        Node::new("membership_approval_requests"),
    )
}

/// Approves or rejects requests to join: `<membership_requests_action><approve|reject>
/// <participant jid/>…</…></…>`.
pub fn membership_action(group: &Jid, approve: bool, jids: &[Jid]) -> IqRequest {
    let action = if approve { "approve" } else { "reject" };
    group_iq(
        "set",
        group.to_non_device(),
        Node::new("membership_requests_action")
            .children([Node::new(action).children(participant_nodes(jids))]),
    )
}

/// Links an existing group into a community: `set` to the community,
/// `<links><link link_type="sub_group"><group jid/></link></links>`. Needs admin rights in
/// both.
pub fn link_group(community: &Jid, group: &Jid) -> IqRequest {
    group_iq(
        "set",
        community.to_non_device(),
        Node::new("links").children([Node::new("link")
            .attr("link_type", "sub_group")
            .children([Node::new("group").attr("jid", group.to_non_device())])]),
    )
}

/// Takes a group out of its community: `set` to the community,
/// `<unlink unlink_type="sub_group"><group jid/></unlink>`.
pub fn unlink_group(community: &Jid, group: &Jid) -> IqRequest {
    group_iq(
        "set",
        community.to_non_device(),
        Node::new("unlink")
            .attr("unlink_type", "sub_group")
            .children([Node::new("group").attr("jid", group.to_non_device())]),
    )
}

/// The groups of a community: `get` to the community, `<sub_groups/>`.
pub fn sub_groups(community: &Jid) -> IqRequest {
    group_iq("get", community.to_non_device(), Node::new("sub_groups"))
}

/// Joins a group with the invite a member sent in a message (`GroupInviteMessage`, "invite
/// v4"): `set` to the group, `<accept code expiration admin/>`.
pub fn accept_invite(group: &Jid, inviter: &Jid, code: &str, expiration: i64) -> IqRequest {
    group_iq(
        "set",
        group.to_non_device(),
        Node::new("accept")
            .attr("code", code)
            .attr("expiration", expiration.to_string())
            .attr("admin", inviter.to_non_device()),
    )
}

/// One group of a community ([`sub_groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubGroup {
    /// `ID@g.us`.
    pub jid: Jid,
    /// Its name, when given.
    pub subject: Option<String>,
    /// Whether it is the community's announcement group.
    pub is_default_sub_group: bool,
}

// ---- parsers ----

/// The `<sub_groups><group id subject/>…</sub_groups>` of [`sub_groups`].
pub fn parse_sub_groups(result: IqResult) -> Result<Vec<SubGroup>, IqError> {
    let node = ok(result)?;
    let list = node
        .child("sub_groups")
        .ok_or(IqError::Malformed("no <sub_groups>"))?;
    Ok(children(list, "group")
        .take(MAX_LIST)
        .filter_map(|g| {
            let jid = jid_attr(g, "jid").filter(Jid::is_group).or_else(|| {
                let id = str_attr(g, "id")?;
                if id.contains('@') {
                    id.parse().ok().filter(Jid::is_group)
                } else {
                    format!("{id}@g.us").parse().ok()
                }
            })?;
            Some(SubGroup {
                jid,
                subject: str_attr(g, "subject"),
                is_default_sub_group: g.child("default_sub_group").is_some(),
            })
        })
        .collect())
}

/// The `<group>` of an answer (metadata, create, invite info).
pub fn parse_group(result: IqResult) -> Result<Group, IqError> {
    let node = ok(result)?;
    node.child("group")
        .and_then(Group::from_node)
        .ok_or(IqError::Malformed("no <group>"))
}

/// The `<groups><group/>…</groups>` of the participating list.
pub fn parse_participating(result: IqResult) -> Result<Vec<Group>, IqError> {
    let node = ok(result)?;
    let groups = node
        .child("groups")
        .ok_or(IqError::Malformed("no <groups>"))?;
    Ok(children(groups, "group")
        .take(MAX_LIST)
        .filter_map(Group::from_node)
        .collect())
}

/// The per-member results of [`participants`]: the answer's `<add|remove|…>` child.
pub fn parse_participants(
    result: IqResult,
    action: ParticipantAction,
) -> Result<Vec<ParticipantResult>, IqError> {
    let node = ok(result)?;
    let list = node
        .child(action.as_str())
        .ok_or(IqError::Malformed("no participant list"))?;
    Ok(participant_results(list))
}

fn participant_results(list: &Node) -> Vec<ParticipantResult> {
    children(list, "participant")
        .take(MAX_LIST)
        .filter_map(ParticipantResult::from_node)
        .collect()
}

/// The `<invite code/>` of [`invite_code`].
pub fn parse_invite_code(result: IqResult) -> Result<String, IqError> {
    let node = ok(result)?;
    node.child("invite")
        .and_then(|i| str_attr(i, "code"))
        .filter(|c| !c.is_empty())
        .ok_or(IqError::Malformed("no invite code"))
}

/// The answer to [`join`]: `<group jid/>`, or `<membership_approval_request jid/>` when an admin
/// must approve.
pub fn parse_join(result: IqResult) -> Result<JoinOutcome, IqError> {
    let node = ok(result)?;
    if let Some(jid) = node
        .child("membership_approval_request")
        .and_then(|r| jid_attr(r, "jid"))
    {
        return Ok(JoinOutcome::Requested(jid));
    }
    node.child("group")
        .and_then(|g| Group::from_node(g).map(|g| g.jid))
        .map(JoinOutcome::Joined)
        .ok_or(IqError::Malformed("no <group>"))
}

/// The requests of [`membership_requests`].
pub fn parse_membership_requests(result: IqResult) -> Result<Vec<MembershipRequest>, IqError> {
    let node = ok(result)?;
    let list = node
        .child("membership_approval_requests")
        .ok_or(IqError::Malformed("no <membership_approval_requests>"))?;
    Ok(children(list, "membership_approval_request")
        .take(MAX_LIST)
        .filter_map(|r| {
            Some(MembershipRequest {
                jid: jid_attr(r, "jid")?,
                requested_at: num_attr(r, "request_time"),
            })
        })
        .collect())
}

/// The per-member results of [`membership_action`].
pub fn parse_membership_action(
    result: IqResult,
    approve: bool,
) -> Result<Vec<ParticipantResult>, IqError> {
    let node = ok(result)?;
    let action = if approve { "approve" } else { "reject" };
    let list = node
        .child("membership_requests_action")
        .and_then(|a| a.child(action))
        .ok_or(IqError::Malformed("no membership action list"))?;
    Ok(participant_results(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    fn result(children: Vec<Node>) -> IqResult {
        IqResult::Ok(
            Node::new("iq")
                .attr("type", "result")
                .attr("id", "1")
                .children(children),
        )
    }

    #[test]
    fn community_requests_and_sub_groups() {
        let c = jid("120363000000000009@g.us");
        let g = jid("120363000000000001@g.us");
        let link = link_group(&c, &g).node;
        assert_eq!(link.attr_str("xmlns"), Some("w:g2"));
        let group = link
            .child("links")
            .and_then(|l| l.child("link"))
            .filter(|l| l.attr_str("link_type") == Some("sub_group"))
            .and_then(|l| l.child("group"))
            .expect("links/link/group");
        assert_eq!(group.attr_jid("jid"), Some(&g));
        let unlink = unlink_group(&c, &g).node;
        assert_eq!(
            unlink
                .child("unlink")
                .and_then(|u| u.attr_str("unlink_type")),
            Some("sub_group")
        );
        let mut spec = CreateGroup::new("Hood", Vec::new());
        spec.community = true;
        let created = create(&spec).node;
        assert!(
            created
                .child("create")
                .and_then(|c| c.child("parent"))
                .is_some()
        );
        let accept = accept_invite(
            &g,
            &jid("15550000001@s.whatsapp.net"),
            "CODE",
            1_900_000_000,
        );
        let a = accept.node.child("accept").expect("accept");
        assert_eq!(a.attr_str("code"), Some("CODE"));
        assert_eq!(a.attr_str("expiration"), Some("1900000000"));
        let answer = result(vec![
            Node::new("sub_groups").children([
                Node::new("group")
                    .attr("id", "120363000000000001")
                    .attr("subject", "Garden")
                    .children([Node::new("default_sub_group")]),
                Node::new("group").attr("id", "120363000000000002@g.us"),
                Node::new("group"),
            ]),
        ]);
        let subs = parse_sub_groups(answer).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].jid, g);
        assert_eq!(subs[0].subject.as_deref(), Some("Garden"));
        assert!(subs[0].is_default_sub_group);
        assert_eq!(subs[1].jid, jid("120363000000000002@g.us"));
        assert!(parse_sub_groups(result(Vec::new())).is_err());
    }

    fn group_node() -> Node {
        Node::new("group")
            .attr("id", "120363000000000001")
            .attr("subject", "Weekend")
            .attr("s_t", "1700000100")
            .attr("s_o", jid("15550000001@s.whatsapp.net"))
            .attr("creation", "1700000000")
            .attr("creator", jid("15550000001@s.whatsapp.net"))
            .attr("addressing_mode", "pn")
            .attr("size", "3")
            .attr("p_v_id", "42")
            .children([
                Node::new("participant")
                    .attr("jid", jid("15550000001@s.whatsapp.net"))
                    .attr("type", "superadmin")
                    .attr("lid", jid("100000000000001@lid")),
                Node::new("participant")
                    .attr("jid", jid("15550000002@s.whatsapp.net"))
                    .attr("type", "admin"),
                Node::new("participant").attr("jid", "100000000000003@lid"),
                Node::new("participant"),
                Node::new("description")
                    .attr("id", "DESC1")
                    .attr("participant", jid("15550000002@s.whatsapp.net"))
                    .attr("t", "1700000200")
                    .children([Node::new("body").bytes(b"plans".to_vec())]),
                Node::new("announcement"),
                Node::new("ephemeral").attr("expiration", "86400"),
                Node::new("membership_approval_mode")
                    .children([Node::new("group_join").attr("state", "on")]),
                Node::new("member_add_mode").bytes(b"admin_add".to_vec()),
                Node::new("linked_parent").attr("jid", jid("120363000000000009@g.us")),
                Node::new("something_new"),
            ])
    }

    #[test]
    fn metadata_parses_every_field() {
        let g = parse_group(result(vec![group_node()])).unwrap();
        assert_eq!(g.jid, jid("120363000000000001@g.us"));
        assert_eq!(g.subject.text, "Weekend");
        assert_eq!(g.subject.set_at, Some(1_700_000_100));
        assert_eq!(g.subject.set_by, Some(jid("15550000001@s.whatsapp.net")));
        assert_eq!(g.owner, Some(jid("15550000001@s.whatsapp.net")));
        assert_eq!(g.created_at, Some(1_700_000_000));
        assert_eq!(g.size, Some(3));
        assert_eq!(g.participant_version.as_deref(), Some("42"));
        assert_eq!(g.addressing_mode, AddressingMode::Pn);
        // The participant without jid is skipped.
        assert_eq!(g.participants.len(), 3);
        let owner = &g.participants[0];
        assert_eq!(owner.role, ParticipantRole::SuperAdmin);
        assert!(owner.role.is_admin());
        assert_eq!(
            owner.lid_mapping(),
            Some((
                jid("100000000000001@lid"),
                jid("15550000001@s.whatsapp.net")
            ))
        );
        assert_eq!(g.participants[1].role, ParticipantRole::Admin);
        let lid_member = &g.participants[2];
        assert_eq!(lid_member.role, ParticipantRole::Member);
        assert_eq!(lid_member.lid, Some(jid("100000000000003@lid")));
        assert_eq!(lid_member.phone, None);
        let d = g.description.as_ref().unwrap();
        assert_eq!((d.text.as_str(), d.id.as_str()), ("plans", "DESC1"));
        assert_eq!(d.set_at, Some(1_700_000_200));
        assert!(g.settings.announce && !g.settings.locked && g.settings.approval);
        assert_eq!(g.settings.ephemeral, Some(86400));
        assert_eq!(g.settings.member_add_mode, Some(MemberAddMode::AdminAdd));
        assert_eq!(g.community.parent, Some(jid("120363000000000009@g.us")));
        assert!(g.participant(&jid("100000000000001@lid")).is_some());
        assert!(
            g.participant(&jid("15550000002:3@s.whatsapp.net"))
                .is_some()
        );
        assert_eq!(g.member_users().len(), 3);
    }

    #[test]
    fn lid_groups_carry_the_phone_number() {
        let node = Node::new("group")
            .attr("id", "1@g.us")
            .attr("addressing_mode", "lid")
            .children([Node::new("participant")
                .attr("jid", jid("100000000000001@lid"))
                .attr("phone_number", jid("15550000001@s.whatsapp.net"))
                .attr("display_name", "Al")]);
        let g = Group::from_node(&node).unwrap();
        assert_eq!(g.jid, jid("1@g.us"));
        assert_eq!(g.addressing_mode, AddressingMode::Lid);
        let p = &g.participants[0];
        assert_eq!(p.phone, Some(jid("15550000001@s.whatsapp.net")));
        assert_eq!(p.display_name.as_deref(), Some("Al"));
        assert!(p.lid_mapping().is_some());
    }

    #[test]
    fn bad_answers_are_typed_errors() {
        assert_eq!(
            parse_group(result(vec![])),
            Err(IqError::Malformed("no <group>"))
        );
        assert_eq!(
            parse_group(result(vec![Node::new("group")])),
            Err(IqError::Malformed("no <group>"))
        );
        assert_eq!(
            parse_group(result(vec![Node::new("group").attr("id", "a@b@c")])),
            Err(IqError::Malformed("no <group>"))
        );
        assert!(parse_participating(result(vec![])).is_err());
        assert!(parse_invite_code(result(vec![Node::new("invite")])).is_err());
        assert!(parse_join(result(vec![])).is_err());
        let err = IqResult::Error {
            code: 404,
            text: "item-not-found".into(),
            node: Node::new("iq"),
        };
        assert_eq!(parse_group(err).unwrap_err().code(), Some(404));
    }

    #[test]
    fn participating_lists_groups() {
        let groups = Node::new("groups").children([
            group_node(),
            Node::new("group").attr("id", "120363000000000002"),
        ]);
        let list = parse_participating(result(vec![groups])).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].jid, jid("120363000000000002@g.us"));
        assert!(list[1].participants.is_empty());
    }

    #[test]
    fn every_participant_has_its_own_code() {
        let add = Node::new("add").children([
            Node::new("participant").attr("jid", jid("1@s.whatsapp.net")),
            Node::new("participant")
                .attr("jid", jid("2@s.whatsapp.net"))
                .attr("error", "403")
                .children([Node::new("add_request")
                    .attr("code", "AbCd")
                    .attr("expiration", "1700100000")]),
            Node::new("participant")
                .attr("jid", jid("3@s.whatsapp.net"))
                .attr("error", "404"),
            Node::new("participant")
                .attr("jid", jid("4@s.whatsapp.net"))
                .attr("error", "408"),
            Node::new("participant")
                .attr("jid", jid("5@s.whatsapp.net"))
                .attr("error", "409"),
            Node::new("participant")
                .attr("jid", jid("6@s.whatsapp.net"))
                .attr("error", "500"),
        ]);
        let r = parse_participants(result(vec![add]), ParticipantAction::Add).unwrap();
        let codes: Vec<u16> = r.iter().map(|p| p.status.code()).collect();
        assert_eq!(codes, [200, 403, 404, 408, 409, 500]);
        assert!(r[0].is_done());
        assert_eq!(
            r[1].status,
            ParticipantStatus::Forbidden {
                add_request: Some(AddRequest {
                    code: "AbCd".into(),
                    expiration: Some(1_700_100_000)
                })
            }
        );
        assert_eq!(r[3].status, ParticipantStatus::InviteInstead);
        assert_eq!(r[4].status, ParticipantStatus::Conflict);
        // The answer must be for the action asked.
        let remove = Node::new("remove");
        assert!(parse_participants(result(vec![remove]), ParticipantAction::Add).is_err());
    }

    #[test]
    fn builders_have_the_wire_shapes() {
        let g = jid("120363000000000001@g.us");
        let m = metadata(&g).node;
        assert_eq!(m.attr_str("xmlns"), Some("w:g2"));
        assert_eq!(m.attr_str("type"), Some("get"));
        assert_eq!(m.attr_jid("to"), Some(&g));
        assert_eq!(
            m.child("query").and_then(|q| q.attr_str("request")),
            Some("interactive")
        );
        let p = participating().node;
        assert_eq!(
            p.attr_jid("to").map(ToString::to_string).as_deref(),
            Some("@g.us")
        );
        let part = p.child("participating").unwrap();
        assert!(part.child("participants").is_some() && part.child("description").is_some());

        let mut spec = CreateGroup::new("Trip", vec![jid("1@s.whatsapp.net")]);
        spec.ephemeral = Some(604_800);
        spec.locked = true;
        let c = create(&spec).node;
        let create = c.child("create").unwrap();
        assert_eq!(create.attr_str("subject"), Some("Trip"));
        assert_eq!(children(create, "participant").count(), 1);
        assert_eq!(
            create
                .child("ephemeral")
                .and_then(|e| e.attr_str("expiration")),
            Some("604800")
        );
        assert!(create.child("locked").is_some() && create.child("announcement").is_none());

        let r = participants(&g, ParticipantAction::Promote, &[jid("1:5@s.whatsapp.net")]).node;
        let promote = r.child("promote").unwrap();
        assert_eq!(
            promote.child("participant").and_then(|p| p.attr_jid("jid")),
            Some(&jid("1@s.whatsapp.net"))
        );
        let s = set_subject(&g, "New").node;
        assert_eq!(
            s.child("subject").and_then(Node::content_bytes),
            Some(&b"New"[..])
        );
        let d = set_description(&g, Some("text"), "NEW", Some("OLD")).node;
        let desc = d.child("description").unwrap();
        assert_eq!(desc.attr_str("prev"), Some("OLD"));
        assert_eq!(
            desc.child("body").and_then(Node::content_bytes),
            Some(&b"text"[..])
        );
        let del = set_description(&g, None, "NEW", None).node;
        assert_eq!(
            del.child("description").and_then(|d| d.attr_str("delete")),
            Some("true")
        );
        for (setting, tag) in [
            (GroupSetting::Announce(true), "announcement"),
            (GroupSetting::Announce(false), "not_announcement"),
            (GroupSetting::Locked(true), "locked"),
            (GroupSetting::Locked(false), "unlocked"),
            (GroupSetting::Ephemeral(Some(60)), "ephemeral"),
            (GroupSetting::Ephemeral(None), "not_ephemeral"),
            (GroupSetting::Ephemeral(Some(0)), "not_ephemeral"),
            (GroupSetting::Approval(true), "membership_approval_mode"),
            (
                GroupSetting::MemberAddMode(MemberAddMode::AllMemberAdd),
                "member_add_mode",
            ),
        ] {
            let n = set_setting(&g, &setting).node;
            assert_eq!(n.child_nodes()[0].tag, tag, "{setting:?}");
        }
        let l = leave(&g).node;
        assert_eq!(
            l.child("leave")
                .and_then(|l| l.child("group"))
                .and_then(|g| g.attr_jid("id")),
            Some(&g)
        );
        assert_eq!(invite_code(&g, false).node.attr_str("type"), Some("get"));
        assert_eq!(invite_code(&g, true).node.attr_str("type"), Some("set"));
        let j = join("https://chat.whatsapp.com/XyZ").node;
        assert_eq!(
            j.child("invite").and_then(|i| i.attr_str("code")),
            Some("XyZ")
        );
        assert_eq!(invite_info("XyZ").node.attr_str("type"), Some("get"));
        let a = membership_action(&g, false, &[jid("1@s.whatsapp.net")]).node;
        assert!(
            a.child("membership_requests_action")
                .and_then(|a| a.child("reject"))
                .is_some()
        );
    }

    #[test]
    fn invites_and_requests_parse() {
        assert_eq!(
            parse_invite_code(result(vec![Node::new("invite").attr("code", "C0DE")])),
            Ok("C0DE".to_owned())
        );
        assert_eq!(
            parse_join(result(vec![Node::new("group").attr("jid", jid("9@g.us"))])),
            Ok(JoinOutcome::Joined(jid("9@g.us")))
        );
        assert_eq!(
            parse_join(result(vec![
                Node::new("membership_approval_request").attr("jid", jid("9@g.us"))
            ])),
            Ok(JoinOutcome::Requested(jid("9@g.us")))
        );
        let reqs = Node::new("membership_approval_requests").children([
            Node::new("membership_approval_request")
                .attr("jid", jid("1@s.whatsapp.net"))
                .attr("request_time", "1700000000"),
            Node::new("membership_approval_request"),
        ]);
        let r = parse_membership_requests(result(vec![reqs])).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].requested_at, Some(1_700_000_000));
        let action = Node::new("membership_requests_action").children([Node::new("approve")
            .children([Node::new("participant").attr("jid", jid("1@s.whatsapp.net"))])]);
        let done = parse_membership_action(result(vec![action]), true).unwrap();
        assert!(done[0].is_done());
    }
}
