//! The typed calls of [`Client`]: groups, contacts, profile, privacy, blocklist, calls, logout,
//! state and identity. Each is one [`Query`] of the core (built and parsed there, one file per
//! IQ namespace in `amarula_core::iq`), so the machine keeps its group cache and LID mappings
//! in step with the answers.

use amarula_core::iq::IqError;
use amarula_core::iq::blocklist::Blocklist;
use amarula_core::iq::groups::{
    CreateGroup, Group, GroupSetting, INVITE_LINK_PREFIX, JoinOutcome, MemberAddMode,
    MembershipRequest, ParticipantAction, ParticipantResult, SubGroup,
};
use amarula_core::iq::privacy::{PrivacyCategory, PrivacySettings, PrivacyValue};
use amarula_core::iq::profile::ProfilePicture;
use amarula_core::iq::usync::{Contact, UserInfo};
use amarula_core::jid::{Jid, Server};
use amarula_core::machine::{Answer, IncomingMessage, OwnIdentity, Query};
use amarula_core::notify::call::CallEvent;

use crate::client::{Client, ClientError, Command};
use crate::status::ClientState;

/// An answer of another kind than the query asks for (a bug of the core if it ever happens).
fn unexpected<T>(_: Answer) -> Result<T, ClientError> {
    Err(ClientError::Iq(IqError::Malformed(
        "unexpected answer kind",
    )))
}

impl Client {
    /// Runs a typed query and waits for its answer: the core builds and parses the IQ and
    /// keeps its state in step (see [`Query`]). The typed methods below wrap it.
    pub async fn query(&self, query: Query) -> Result<Answer, ClientError> {
        self.call(|tx| Command::Query(query, tx)).await
    }

    // ---- groups ----

    /// A group's metadata: subject, description, owner, creation, members with roles and
    /// both identities, addressing mode, settings, size, community links.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), amarula::ClientError> {
    /// let group = "120363000000000001@g.us".parse().expect("a JID");
    /// let info = client.group_metadata(&group).await?;
    /// println!("{} has {} members", info.subject.text, info.participants.len());
    /// # Ok(()) }
    /// ```
    pub async fn group_metadata(&self, group: &Jid) -> Result<Group, ClientError> {
        match self.query(Query::GroupMetadata(group.clone())).await? {
            Answer::Group(g) => Ok(*g),
            other => unexpected(other),
        }
    }

    /// The groups we are in, with members and descriptions.
    pub async fn list_groups(&self) -> Result<Vec<Group>, ClientError> {
        match self.query(Query::ListGroups).await? {
            Answer::Groups(g) => Ok(g),
            other => unexpected(other),
        }
    }

    /// Creates a group named `subject` with `participants` (we are its super admin) and
    /// returns it.
    pub async fn create_group(
        &self,
        subject: &str,
        participants: &[Jid],
    ) -> Result<Group, ClientError> {
        self.create_group_with(CreateGroup::new(subject, participants.to_vec()))
            .await
    }

    /// Creates a group with starting settings.
    pub async fn create_group_with(&self, spec: CreateGroup) -> Result<Group, ClientError> {
        match self.query(Query::CreateGroup(spec)).await? {
            Answer::Group(g) => Ok(*g),
            other => unexpected(other),
        }
    }

    /// Adds, removes, promotes or demotes members: one result per member (the server answers
    /// each with its own code: 403 with an invite to send instead, 404, 408, 409 …). The whole
    /// call fails (e.g. 401) when we may not change the group.
    pub async fn update_participants(
        &self,
        group: &Jid,
        action: ParticipantAction,
        participants: &[Jid],
    ) -> Result<Vec<ParticipantResult>, ClientError> {
        let query = Query::Participants {
            group: group.clone(),
            action,
            participants: participants.to_vec(),
        };
        match self.query(query).await? {
            Answer::Participants(r) => Ok(r),
            other => unexpected(other),
        }
    }

    /// Adds members ([`update_participants`](Self::update_participants)).
    pub async fn add_participants(
        &self,
        group: &Jid,
        participants: &[Jid],
    ) -> Result<Vec<ParticipantResult>, ClientError> {
        self.update_participants(group, ParticipantAction::Add, participants)
            .await
    }

    /// Removes members.
    pub async fn remove_participants(
        &self,
        group: &Jid,
        participants: &[Jid],
    ) -> Result<Vec<ParticipantResult>, ClientError> {
        self.update_participants(group, ParticipantAction::Remove, participants)
            .await
    }

    /// Makes members admins.
    pub async fn promote_participants(
        &self,
        group: &Jid,
        participants: &[Jid],
    ) -> Result<Vec<ParticipantResult>, ClientError> {
        self.update_participants(group, ParticipantAction::Promote, participants)
            .await
    }

    /// Makes admins plain members.
    pub async fn demote_participants(
        &self,
        group: &Jid,
        participants: &[Jid],
    ) -> Result<Vec<ParticipantResult>, ClientError> {
        self.update_participants(group, ParticipantAction::Demote, participants)
            .await
    }

    async fn done(&self, query: Query) -> Result<(), ClientError> {
        match self.query(query).await? {
            Answer::Done => Ok(()),
            other => unexpected(other),
        }
    }

    /// Renames a group.
    pub async fn set_group_subject(&self, group: &Jid, subject: &str) -> Result<(), ClientError> {
        self.done(Query::SetSubject {
            group: group.clone(),
            subject: subject.to_owned(),
        })
        .await
    }

    /// Sets (`Some`) or deletes (`None`) a group's description. The current description's id,
    /// which the change must name, is read from the metadata first.
    pub async fn set_group_description(
        &self,
        group: &Jid,
        text: Option<&str>,
    ) -> Result<(), ClientError> {
        let previous = self
            .group_metadata(group)
            .await?
            .description
            .map(|d| d.id)
            .filter(|id| !id.is_empty());
        self.done(Query::SetDescription {
            group: group.clone(),
            text: text.map(str::to_owned),
            previous,
        })
        .await
    }

    /// Changes one setting of a group (the methods below name each).
    pub async fn set_group_setting(
        &self,
        group: &Jid,
        setting: GroupSetting,
    ) -> Result<(), ClientError> {
        self.done(Query::SetSetting {
            group: group.clone(),
            setting,
        })
        .await
    }

    /// Announce mode: only admins may send.
    pub async fn set_group_announce(&self, group: &Jid, on: bool) -> Result<(), ClientError> {
        self.set_group_setting(group, GroupSetting::Announce(on))
            .await
    }

    /// Locked: only admins may edit the group info.
    pub async fn set_group_locked(&self, group: &Jid, on: bool) -> Result<(), ClientError> {
        self.set_group_setting(group, GroupSetting::Locked(on))
            .await
    }

    /// The disappearing-messages timer in seconds, or off.
    pub async fn set_group_ephemeral(
        &self,
        group: &Jid,
        timer: Option<u32>,
    ) -> Result<(), ClientError> {
        self.set_group_setting(group, GroupSetting::Ephemeral(timer))
            .await
    }

    /// Join approval: requests to join wait for an admin.
    pub async fn set_group_approval(&self, group: &Jid, on: bool) -> Result<(), ClientError> {
        self.set_group_setting(group, GroupSetting::Approval(on))
            .await
    }

    /// Who may add members.
    pub async fn set_group_member_add_mode(
        &self,
        group: &Jid,
        mode: MemberAddMode,
    ) -> Result<(), ClientError> {
        self.set_group_setting(group, GroupSetting::MemberAddMode(mode))
            .await
    }

    /// Leaves a group.
    pub async fn leave_group(&self, group: &Jid) -> Result<(), ClientError> {
        self.done(Query::LeaveGroup(group.clone())).await
    }

    /// Creates a community (a parent group whose joins its admins approve); its groups are
    /// linked with [`link_group`](Self::link_group) or created inside it with
    /// [`CreateGroup::parent`].
    pub async fn create_community(&self, name: &str) -> Result<Group, ClientError> {
        let mut spec = CreateGroup::new(name, Vec::new());
        spec.community = true;
        self.create_group_with(spec).await
    }

    /// Links a group into a community (we must administer both).
    pub async fn link_group(&self, community: &Jid, group: &Jid) -> Result<(), ClientError> {
        self.done(Query::LinkGroup {
            community: community.clone(),
            group: group.clone(),
        })
        .await
    }

    /// Takes a group out of its community.
    pub async fn unlink_group(&self, community: &Jid, group: &Jid) -> Result<(), ClientError> {
        self.done(Query::UnlinkGroup {
            community: community.clone(),
            group: group.clone(),
        })
        .await
    }

    /// The groups of a community.
    pub async fn community_groups(&self, community: &Jid) -> Result<Vec<SubGroup>, ClientError> {
        match self.query(Query::SubGroups(community.clone())).await? {
            Answer::SubGroups(groups) => Ok(groups),
            other => unexpected(other),
        }
    }

    /// Joins a group with an invite received in a message (`Message.groupInviteMessage`:
    /// its group, code and expiry, and the admin who sent it).
    pub async fn accept_group_invite(
        &self,
        group: &Jid,
        inviter: &Jid,
        code: &str,
        expiration: i64,
    ) -> Result<(), ClientError> {
        self.done(Query::AcceptInvite {
            group: group.clone(),
            inviter: inviter.clone(),
            code: code.to_owned(),
            expiration,
        })
        .await
    }

    /// Sets the picture of our own user or of a group we administer (a square JPEG, as the
    /// apps send it); returns the new picture's id.
    pub async fn set_picture(&self, jid: &Jid, jpeg: Vec<u8>) -> Result<String, ClientError> {
        let query = Query::SetPicture {
            jid: jid.clone(),
            jpeg: Some(jpeg),
        };
        match self.query(query).await? {
            Answer::PictureSet(Some(id)) => Ok(id),
            other => unexpected(other),
        }
    }

    /// Removes the picture of our own user or of a group we administer.
    pub async fn remove_picture(&self, jid: &Jid) -> Result<(), ClientError> {
        let query = Query::SetPicture {
            jid: jid.clone(),
            jpeg: None,
        };
        match self.query(query).await? {
            Answer::PictureSet(None) => Ok(()),
            other => unexpected(other),
        }
    }

    async fn invite(&self, group: &Jid, reset: bool) -> Result<String, ClientError> {
        let query = Query::InviteCode {
            group: group.clone(),
            reset,
        };
        match self.query(query).await? {
            Answer::InviteCode(code) => Ok(format!("{INVITE_LINK_PREFIX}{code}")),
            other => unexpected(other),
        }
    }

    /// The group's invite link (`https://chat.whatsapp.com/CODE`; admins only).
    pub async fn group_invite_link(&self, group: &Jid) -> Result<String, ClientError> {
        self.invite(group, false).await
    }

    /// A new invite link; the old one stops working.
    pub async fn reset_group_invite_link(&self, group: &Jid) -> Result<String, ClientError> {
        self.invite(group, true).await
    }

    /// A group's info from an invite link or code, without joining (410 revoked, 406
    /// invalid).
    pub async fn group_info_from_invite(&self, code: &str) -> Result<Group, ClientError> {
        match self.query(Query::InviteInfo(code.to_owned())).await? {
            Answer::Group(g) => Ok(*g),
            other => unexpected(other),
        }
    }

    /// Joins a group with an invite link or code: joined, or a request waiting for approval.
    pub async fn join_group(&self, code: &str) -> Result<JoinOutcome, ClientError> {
        match self.query(Query::JoinGroup(code.to_owned())).await? {
            Answer::Joined(j) => Ok(j),
            other => unexpected(other),
        }
    }

    /// Pending requests to join a group (admins only).
    pub async fn membership_requests(
        &self,
        group: &Jid,
    ) -> Result<Vec<MembershipRequest>, ClientError> {
        match self.query(Query::MembershipRequests(group.clone())).await? {
            Answer::MembershipRequests(r) => Ok(r),
            other => unexpected(other),
        }
    }

    /// Approves (`approve`) or rejects requests to join: one result per person.
    pub async fn answer_membership_requests(
        &self,
        group: &Jid,
        participants: &[Jid],
        approve: bool,
    ) -> Result<Vec<ParticipantResult>, ClientError> {
        let query = Query::MembershipAction {
            group: group.clone(),
            approve,
            participants: participants.to_vec(),
        };
        match self.query(query).await? {
            Answer::Participants(r) => Ok(r),
            other => unexpected(other),
        }
    }

    // ---- contacts and profile ----

    /// Which phone numbers (international, any punctuation) have WhatsApp accounts, with
    /// their JIDs and LIDs.
    ///
    /// ```no_run
    /// # async fn demo(client: amarula::Client) -> Result<(), amarula::ClientError> {
    /// for c in client.is_on_whatsapp(&["+1 555 000 1111"]).await? {
    ///     println!("{}: {:?}", c.query, c.jid);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn is_on_whatsapp(&self, phones: &[&str]) -> Result<Vec<Contact>, ClientError> {
        let phones = phones.iter().map(|p| (*p).to_owned()).collect();
        match self.query(Query::Contacts(phones)).await? {
            Answer::Contacts(c) => Ok(c),
            other => unexpected(other),
        }
    }

    /// What users show of themselves: status text, picture id, devices, LID.
    pub async fn user_info(&self, users: &[Jid]) -> Result<Vec<UserInfo>, ClientError> {
        match self.query(Query::UserInfo(users.to_vec())).await? {
            Answer::Users(u) => Ok(u),
            other => unexpected(other),
        }
    }

    /// The URL of a user's or group's profile picture: the small `preview`, or the full
    /// image; `None` when there is none (401 when privacy hides it).
    pub async fn profile_picture(
        &self,
        jid: &Jid,
        preview: bool,
    ) -> Result<Option<ProfilePicture>, ClientError> {
        let query = Query::ProfilePicture {
            jid: jid.clone(),
            preview,
            known_id: None,
        };
        match self.query(query).await? {
            Answer::Picture(p) => Ok(p),
            other => unexpected(other),
        }
    }

    /// Sets our status ("about") text.
    pub async fn set_status_text(&self, text: &str) -> Result<(), ClientError> {
        self.done(Query::SetStatus(text.to_owned())).await
    }

    // ---- blocklist and privacy ----

    /// The users we blocked.
    pub async fn blocklist(&self) -> Result<Blocklist, ClientError> {
        match self.query(Query::Blocklist).await? {
            Answer::Blocklist(Some(b)) => Ok(b),
            other => unexpected(other),
        }
    }

    /// Blocks (`block`) or unblocks a user and returns the new list. The server names users
    /// by LID: for a phone number the LID is looked up first (user info).
    pub async fn update_blocklist(
        &self,
        user: &Jid,
        block: bool,
    ) -> Result<Blocklist, ClientError> {
        let user = user.to_non_device();
        let (jid, pn) = if matches!(user.server_part(), Server::User) {
            let lid = self
                .user_info(std::slice::from_ref(&user))
                .await?
                .into_iter()
                .find_map(|u| u.lid);
            match lid {
                Some(lid) => (lid, Some(user)),
                None => (user.clone(), Some(user)),
            }
        } else {
            (user, None)
        };
        let query = Query::UpdateBlocklist { jid, pn, block };
        match self.query(query).await? {
            Answer::Blocklist(Some(b)) => Ok(b),
            // The change went through without a list in the answer: read it.
            Answer::Blocklist(None) => self.blocklist().await,
            other => unexpected(other),
        }
    }

    /// Blocks a user ([`update_blocklist`](Self::update_blocklist)).
    pub async fn block(&self, user: &Jid) -> Result<Blocklist, ClientError> {
        self.update_blocklist(user, true).await
    }

    /// Unblocks a user.
    pub async fn unblock(&self, user: &Jid) -> Result<Blocklist, ClientError> {
        self.update_blocklist(user, false).await
    }

    /// The privacy settings.
    pub async fn privacy_settings(&self) -> Result<PrivacySettings, ClientError> {
        match self.query(Query::PrivacySettings).await? {
            Answer::Privacy(p) => Ok(p),
            other => unexpected(other),
        }
    }

    /// Changes one privacy setting.
    pub async fn set_privacy(
        &self,
        category: PrivacyCategory,
        value: PrivacyValue,
    ) -> Result<(), ClientError> {
        self.done(Query::SetPrivacy { category, value }).await
    }

    // ---- calls ----

    /// Rejects an incoming call ([`Event::Call`](amarula_core::machine::Event::Call) with
    /// [`CallKind::Offer`](amarula_core::notify::call::CallKind::Offer)).
    pub async fn reject_call(&self, call: &CallEvent) -> Result<(), ClientError> {
        let call = Box::new(call.clone());
        self.call(|tx| Command::RejectCall(call, tx)).await
    }

    // ---- the account ----

    /// Logs this device out: the server removes it (`remove-companion-device`), then every
    /// record of the account is deleted from the store and the client stops. Returns once
    /// the store is wiped. When the server refuses, nothing is deleted and the client goes on.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call(Command::Logout).await
    }

    /// Where the client is: connecting, pairing, logged in, closed (with the reason), or
    /// stopped.
    pub fn state(&self) -> ClientState {
        self.status().state()
    }

    /// Who we are (phone number, LID, push name, device); `None` before pairing and after a
    /// logout.
    pub fn credentials(&self) -> Option<OwnIdentity> {
        self.status().identity()
    }

    /// Whether `message` is in our own chat ("message yourself"), by phone number or LID: a
    /// command channel from the user's phone to this device.
    pub fn own_chat(&self, message: &IncomingMessage) -> bool {
        self.credentials()
            .is_some_and(|own| own.is_own_chat(&message.chat))
    }
}
