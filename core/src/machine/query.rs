//! Typed queries: the IQs of [`crate::iq`] run by the machine, so that it keeps its own state in
//! step with what they answer.
//!
//! [`ConnectionMachine::send_query`] builds the request from a [`Query`], tracks it like any
//! IQ, and ends it with exactly one [`Event::QueryResponse`]: the parsed [`Answer`] or an
//! [`IqError`]. Before that event the machine applies what the answer teaches it:
//! - group metadata (metadata, the participating list, create) refreshes the member list that
//!   group sends fan out to; a leave forgets the group; participant changes that went through
//!   add or remove members of the cached list;
//! - every LID/PN pair named (group members, contact and user queries) is persisted
//!   ([`Change::LidMapping`](crate::persist::Change::LidMapping)) when end-to-end state is
//!   kept;
//! - a successful [`Query::Logout`] closes the connection with [`CloseReason::Logout`]: the
//!   device is no longer linked, so its credentials and every record must be deleted.

use rand_core::RngCore;

use super::{CloseReason, ConnectionMachine, Event, IqKind, IqResult, RequestId, SendError};
use crate::iq::blocklist::{self, Blocklist};
use crate::iq::groups::{
    self, CreateGroup, Group, GroupSetting, JoinOutcome, MembershipRequest, ParticipantAction,
    ParticipantResult, SubGroup,
};
use crate::iq::privacy::{self, PrivacyCategory, PrivacySettings, PrivacyValue};
use crate::iq::profile::{self, ProfilePicture};
use crate::iq::usync::{self, Contact, UserInfo};
use crate::iq::{self, IqError, md};
use crate::jid::Jid;
use crate::time::Instant;

/// A typed request ([`ConnectionMachine::send_query`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Query {
    /// A group's metadata → [`Answer::Group`].
    GroupMetadata(Jid),
    /// The groups we are in, with members and descriptions → [`Answer::Groups`].
    ListGroups,
    /// Creates a group → [`Answer::Group`].
    CreateGroup(CreateGroup),
    /// Adds, removes, promotes or demotes members → [`Answer::Participants`].
    Participants {
        /// The group.
        group: Jid,
        /// The change.
        action: ParticipantAction,
        /// The members.
        participants: Vec<Jid>,
    },
    /// Renames a group → [`Answer::Done`].
    SetSubject {
        /// The group.
        group: Jid,
        /// The new name.
        subject: String,
    },
    /// Sets (`Some`) or deletes (`None`) a group's description → [`Answer::Done`]. `previous`
    /// is the id of the description it replaces, when there is one.
    SetDescription {
        /// The group.
        group: Jid,
        /// The text.
        text: Option<String>,
        /// The current description's id.
        previous: Option<String>,
    },
    /// Changes a group setting → [`Answer::Done`].
    SetSetting {
        /// The group.
        group: Jid,
        /// The setting.
        setting: GroupSetting,
    },
    /// Leaves a group → [`Answer::Done`].
    LeaveGroup(Jid),
    /// The group's invite code, or a new one that revokes the old → [`Answer::InviteCode`].
    InviteCode {
        /// The group.
        group: Jid,
        /// Make a new one.
        reset: bool,
    },
    /// A group's info from an invite code or link, without joining → [`Answer::Group`].
    InviteInfo(String),
    /// Joins a group with an invite code or link → [`Answer::Joined`].
    JoinGroup(String),
    /// Pending requests to join → [`Answer::MembershipRequests`].
    MembershipRequests(Jid),
    /// Approves or rejects requests to join → [`Answer::Participants`].
    MembershipAction {
        /// The group.
        group: Jid,
        /// Approve, or reject.
        approve: bool,
        /// Whose requests.
        participants: Vec<Jid>,
    },
    /// Which phone numbers have accounts → [`Answer::Contacts`].
    Contacts(Vec<String>),
    /// What users show of themselves → [`Answer::Users`].
    UserInfo(Vec<Jid>),
    /// A profile picture's URL → [`Answer::Picture`].
    ProfilePicture {
        /// A user or group.
        jid: Jid,
        /// The small preview, or the full image.
        preview: bool,
        /// The id already known ("unchanged" gives `None`).
        known_id: Option<String>,
    },
    /// Sets our status ("about") text → [`Answer::Done`].
    SetStatus(String),
    /// The blocklist → [`Answer::Blocklist`].
    Blocklist,
    /// Blocks or unblocks a user → [`Answer::Blocklist`] (the new list, when the server sent
    /// it). `jid` names the user as the server does (the LID), `pn` is their number.
    UpdateBlocklist {
        /// The user (LID when known).
        jid: Jid,
        /// Their phone number, when known.
        pn: Option<Jid>,
        /// Block, or unblock.
        block: bool,
    },
    /// The privacy settings → [`Answer::Privacy`].
    PrivacySettings,
    /// Changes one privacy setting → [`Answer::Done`].
    SetPrivacy {
        /// Which.
        category: PrivacyCategory,
        /// To what.
        value: PrivacyValue,
    },
    /// Removes this device from the account → [`Answer::Done`], then the connection closes
    /// with [`CloseReason::Logout`].
    Logout,
    /// Links a group into a community (admin of both) → [`Answer::Done`].
    LinkGroup {
        /// The community.
        community: Jid,
        /// The group.
        group: Jid,
    },
    /// Takes a group out of its community → [`Answer::Done`].
    UnlinkGroup {
        /// The community.
        community: Jid,
        /// The group.
        group: Jid,
    },
    /// The groups of a community → [`Answer::SubGroups`].
    SubGroups(Jid),
    /// Joins a group with an invite received in a message (`GroupInviteMessage`) →
    /// [`Answer::Done`].
    AcceptInvite {
        /// The group.
        group: Jid,
        /// Who sent the invite (an admin).
        inviter: Jid,
        /// The invite's code.
        code: String,
        /// The invite's expiry (unix seconds).
        expiration: i64,
    },
    /// Sets (or, with `None`, removes) the picture of our own user or of a group we
    /// administer → [`Answer::PictureSet`].
    SetPicture {
        /// Our user, or the group.
        jid: Jid,
        /// The JPEG image, or `None` to remove the picture.
        jpeg: Option<Vec<u8>>,
    },
}

/// The typed answer of a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// A group's metadata.
    Group(Box<Group>),
    /// Several groups.
    Groups(Vec<Group>),
    /// One result per member asked for.
    Participants(Vec<ParticipantResult>),
    /// An invite code.
    InviteCode(String),
    /// The result of joining.
    Joined(JoinOutcome),
    /// Requests to join.
    MembershipRequests(Vec<MembershipRequest>),
    /// Contact lookups.
    Contacts(Vec<Contact>),
    /// User infos.
    Users(Vec<UserInfo>),
    /// A profile picture, or none.
    Picture(Option<ProfilePicture>),
    /// The blocklist (absent when a change was answered without it).
    Blocklist(Option<Blocklist>),
    /// The privacy settings.
    Privacy(PrivacySettings),
    /// The groups of a community.
    SubGroups(Vec<SubGroup>),
    /// The new picture's id (`None` after a removal).
    PictureSet(Option<String>),
    /// Done; nothing to return.
    Done,
}

impl ConnectionMachine {
    /// Sends a typed query and returns its id at once. Exactly one [`Event::QueryResponse`]
    /// follows for it (the answer, the server's error, a timeout, or
    /// [`IqError::Disconnected`]). Needs a logged-in connection.
    pub fn send_query(&mut self, now: Instant, query: Query) -> Result<RequestId, SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        if self.iqs.len() >= self.config.max_pending_iqs {
            return Err(SendError::TooManyPending);
        }
        let request = match &query {
            Query::GroupMetadata(g) => groups::metadata(g),
            Query::ListGroups => groups::participating(),
            Query::CreateGroup(spec) => groups::create(spec),
            Query::Participants {
                group,
                action,
                participants,
            } => groups::participants(group, *action, participants),
            Query::SetSubject { group, subject } => groups::set_subject(group, subject),
            Query::SetDescription {
                group,
                text,
                previous,
            } => {
                let id = self.random_hex(8);
                groups::set_description(group, text.as_deref(), &id, previous.as_deref())
            }
            Query::SetSetting { group, setting } => groups::set_setting(group, setting),
            Query::LeaveGroup(g) => groups::leave(g),
            Query::LinkGroup { community, group } => groups::link_group(community, group),
            Query::UnlinkGroup { community, group } => groups::unlink_group(community, group),
            Query::SubGroups(c) => groups::sub_groups(c),
            Query::AcceptInvite {
                group,
                inviter,
                code,
                expiration,
            } => groups::accept_invite(group, inviter, code, *expiration),
            Query::SetPicture { jid, jpeg } => profile::set_picture(jid, jpeg.as_deref()),
            Query::InviteCode { group, reset } => groups::invite_code(group, *reset),
            Query::InviteInfo(code) => groups::invite_info(code),
            Query::JoinGroup(code) => groups::join(code),
            Query::MembershipRequests(g) => groups::membership_requests(g),
            Query::MembershipAction {
                group,
                approve,
                participants,
            } => groups::membership_action(group, *approve, participants),
            Query::Contacts(phones) => {
                let sid = self.ids.next().1;
                usync::contacts(&sid, phones)
            }
            Query::UserInfo(users) => {
                let sid = self.ids.next().1;
                usync::user_info(&sid, users)
            }
            Query::ProfilePicture {
                jid,
                preview,
                known_id,
            } => profile::picture(jid, *preview, known_id.as_deref()),
            Query::SetStatus(text) => profile::set_status(text),
            Query::Blocklist => blocklist::get(),
            Query::UpdateBlocklist { jid, pn, block } => {
                blocklist::update(jid, pn.as_ref(), *block)
            }
            Query::PrivacySettings => privacy::get(),
            Query::SetPrivacy { category, value } => privacy::set(category, value),
            Query::Logout => {
                let own = self
                    .creds
                    .device
                    .as_ref()
                    .map(|d| d.jid.clone())
                    .ok_or(SendError::NotLoggedIn)?;
                md::remove_companion_device(&own)
            }
        };
        let timeout = request.timeout.unwrap_or(self.config.iq_timeout);
        let (n, _) =
            self.send_tracked_iq(now, request.node, timeout, |n| IqKind::Query(RequestId(n)))?;
        let id = RequestId(n);
        self.queries.insert(id, query);
        Ok(id)
    }

    /// A query's IQ ended: parse, learn, answer.
    pub(super) fn query_done(&mut self, now: Instant, id: RequestId, result: IqResult) {
        let Some(query) = self.queries.remove(&id) else {
            return;
        };
        let answer = self.parse_answer(&query, result);
        if let Ok(answer) = &answer {
            self.learn(&query, answer);
        }
        let logged_out = matches!(query, Query::Logout) && answer.is_ok();
        self.emit(Event::QueryResponse { id, result: answer });
        if logged_out {
            // SESSION.md §15: the server removed the device; nothing of it is valid now.
            self.close(now, CloseReason::Logout);
        }
    }

    fn parse_answer(&self, query: &Query, result: IqResult) -> Result<Answer, IqError> {
        let boxed = |g: Group| Answer::Group(Box::new(g));
        Ok(match query {
            Query::GroupMetadata(_) | Query::CreateGroup(_) | Query::InviteInfo(_) => {
                boxed(groups::parse_group(result)?)
            }
            Query::ListGroups => Answer::Groups(groups::parse_participating(result)?),
            Query::Participants { action, .. } => {
                Answer::Participants(groups::parse_participants(result, *action)?)
            }
            Query::InviteCode { .. } => Answer::InviteCode(groups::parse_invite_code(result)?),
            Query::JoinGroup(_) => Answer::Joined(groups::parse_join(result)?),
            Query::MembershipRequests(_) => {
                Answer::MembershipRequests(groups::parse_membership_requests(result)?)
            }
            Query::MembershipAction { approve, .. } => {
                Answer::Participants(groups::parse_membership_action(result, *approve)?)
            }
            Query::Contacts(_) => Answer::Contacts(usync::parse_contacts(result)?),
            Query::UserInfo(_) => Answer::Users(usync::parse_user_info(result)?),
            Query::ProfilePicture { .. } => Answer::Picture(profile::parse_picture(result)?),
            Query::Blocklist => Answer::Blocklist(Some(blocklist::parse_list(result)?)),
            Query::UpdateBlocklist { .. } => Answer::Blocklist(blocklist::parse(result)?),
            Query::PrivacySettings => Answer::Privacy(privacy::parse(result)?),
            Query::SubGroups(_) => Answer::SubGroups(groups::parse_sub_groups(result)?),
            Query::SetPicture { jpeg, .. } => {
                Answer::PictureSet(profile::parse_set_picture(result, jpeg.is_none())?)
            }
            Query::SetSubject { .. }
            | Query::LinkGroup { .. }
            | Query::UnlinkGroup { .. }
            | Query::AcceptInvite { .. }
            | Query::SetDescription { .. }
            | Query::SetSetting { .. }
            | Query::LeaveGroup(_)
            | Query::SetStatus(_)
            | Query::SetPrivacy { .. }
            | Query::Logout => {
                iq::parse_done(result)?;
                Answer::Done
            }
        })
    }

    /// Keeps the machine's state in step with an answer (see the module docs).
    fn learn(&mut self, query: &Query, answer: &Answer) {
        match (query, answer) {
            (Query::InviteInfo(_), _) => {
                // Not a member (yet): nothing to cache, but the pairs are still true.
                if let Answer::Group(g) = answer {
                    self.learn_lid_pairs(g.participants.iter().filter_map(|p| p.lid_mapping()));
                }
            }
            (_, Answer::Group(g)) => self.group_known(g),
            (_, Answer::Groups(list)) => {
                for g in list {
                    self.group_known(g);
                }
            }
            (
                Query::Participants {
                    group,
                    action: action @ (ParticipantAction::Add | ParticipantAction::Remove),
                    ..
                },
                Answer::Participants(results),
            ) => {
                let done: Vec<Jid> = results
                    .iter()
                    .filter(|r| r.is_done())
                    .map(|r| r.participant.jid.to_non_device())
                    .collect();
                self.learn_lid_pairs(results.iter().filter_map(|r| r.participant.lid_mapping()));
                self.group_members_changed(group, *action == ParticipantAction::Add, &done);
            }
            (Query::LeaveGroup(group), _) => self.group_forgotten(group),
            (Query::Contacts(_), Answer::Contacts(list)) => {
                let pairs: Vec<(Jid, Jid)> = list
                    .iter()
                    .filter_map(|c| Some((c.lid.clone()?, c.jid.clone()?)))
                    .collect();
                self.learn_lid_pairs(pairs);
            }
            (Query::UserInfo(_), Answer::Users(list)) => {
                let pairs: Vec<(Jid, Jid)> = list
                    .iter()
                    .filter(|u| u.jid.server_part() == &crate::jid::Server::User)
                    .filter_map(|u| Some((u.lid.clone()?, u.jid.clone())))
                    .collect();
                self.learn_lid_pairs(pairs);
            }
            _ => {}
        }
    }

    /// `n` random bytes as upper-case hex (description ids, call message ids).
    pub(super) fn random_hex(&mut self, n: usize) -> String {
        let mut bytes = vec![0u8; n];
        self.rng.fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }
}
