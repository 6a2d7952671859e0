//! Groups through the real drivers (tokio and smol) against the simulator: every `w:g2` call
//! of `Client` with its typed result and its errors (admin rules, per-participant codes,
//! invite codes), each change reaching the other members as a typed `Event::GroupChanged`,
//! and the member list group sends use kept in step without fetching the metadata again.

use std::time::Duration;

use amarula::ClientError;
use amarula::core::iq::IqError;
use amarula::core::iq::groups::{
    CreateGroup, INVITE_LINK_PREFIX, JoinOutcome, MemberAddMode, ParticipantRole, ParticipantStatus,
};
use amarula::core::jid::Jid;
use amarula::core::notify::group::{GroupChange, GroupNotification};
use amarula_tests::e2e::{Device, Env, sim_wait, user};
use amarula_tests::runtimes::Runtime as Rt;
use amarula_tests::sim::SimEvent;

fn server_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Err(ClientError::Iq(IqError::Server { code, .. })) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn changed(n: &GroupNotification, group: &Jid, f: impl Fn(&GroupChange) -> bool) -> bool {
    n.group == *group && n.changes.iter().any(f)
}

fn names(list: &[amarula::core::iq::groups::Participant]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|p| p.jid.user_part().to_owned()).collect();
    v.sort();
    v
}

/// Sends `text` from `from` to `group` and tells whether the sender asked the server for the
/// group's metadata first (it should not when its member list is in step).
async fn sent_without_metadata(env: &Env, from: &Device, group: &Jid, text: &str) -> bool {
    // Subscribed now: earlier queries of the device do not count.
    let mut events = env.sim.subscribe();
    let id = from.client.send_text(group, text).await.expect("sent");
    let device = from.jid().clone();
    let fetched = sim_wait(&mut events, "routed", |e| match e {
        SimEvent::StanzaReceived {
            device: Some(d),
            node,
            ..
        } if *d == device
            && node.tag == "iq"
            && node.attr_str("xmlns") == Some("w:g2")
            && node.child("query").is_some() =>
        {
            Some(true)
        }
        SimEvent::MessageRouted { id: got, .. } if *got == id => Some(false),
        _ => None,
    })
    .await;
    !fetched
}

async fn groups_end_to_end<R: Rt>(env: &Env) {
    let (a, b, c, d, e) = (
        "15550101001",
        "15550101002",
        "15550101003",
        "15550101004",
        "15550101005",
    );
    let nobody = "15550101999";
    let mut a1 = Device::start::<R>(env, "a1", a, 101).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 102).await;
    let mut c1 = Device::start::<R>(env, "c1", c, 103).await;
    let mut d1 = Device::start::<R>(env, "d1", d, 104).await;
    let e_account = env.sim.add_account(e);

    // Create: numbers without an account are left out; we are the super admin.
    let created = a1
        .client
        .create_group("Trip", &[user(b), user(c), user(nobody)])
        .await
        .unwrap();
    let group = created.jid.clone();
    assert!(group.is_group());
    assert_eq!(created.subject.text, "Trip");
    assert_eq!(created.owner, Some(user(a)));
    assert_eq!(names(&created.participants), [a, b, c]);
    let me = created.participant(&user(a)).unwrap();
    assert_eq!(me.role, ParticipantRole::SuperAdmin);
    assert!(me.lid.is_some(), "participants carry their LID: {me:?}");
    assert_eq!(
        created.settings.member_add_mode,
        Some(MemberAddMode::AdminAdd)
    );
    for dev in [&mut b1, &mut c1] {
        let n = dev
            .group_change("create", |n| {
                changed(n, &group, |c| matches!(c, GroupChange::Created(_)))
            })
            .await;
        assert_eq!(n.actor, Some(user(a)));
        let GroupChange::Created(g) = &n.changes[0] else {
            panic!("{n:?}")
        };
        assert_eq!(g.subject.text, "Trip");
    }

    // Metadata and the participating list.
    let meta = b1.client.group_metadata(&group).await.unwrap();
    assert_eq!(meta.participants.len(), 3);
    assert_eq!(
        meta.participant(&user(b)).map(|p| p.role),
        Some(ParticipantRole::Member)
    );
    assert_eq!(meta.size, Some(3));
    let listed = c1.client.list_groups().await.unwrap();
    assert!(listed.iter().any(|g| g.jid == group));
    assert_eq!(server_code(d1.client.group_metadata(&group).await), 403);
    assert_eq!(
        server_code(
            d1.client
                .group_metadata(&Jid::group("120363999999999999"))
                .await
        ),
        404
    );

    // A message reaches the members.
    a1.client.send_text(&group, "hello trip").await.unwrap();
    b1.receive("hello trip").await;
    c1.receive("hello trip").await;

    // A non-admin cannot add.
    assert_eq!(
        server_code(b1.client.add_participants(&group, &[user(d)]).await),
        401
    );
    // Each participant gets its own answer.
    let r = a1
        .client
        .add_participants(&group, &[user(d), user(b), user(nobody)])
        .await
        .unwrap();
    let statuses: Vec<(String, ParticipantStatus)> = r
        .iter()
        .map(|r| (r.participant.jid.user_part().to_owned(), r.status.clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            (d.to_owned(), ParticipantStatus::Done),
            (b.to_owned(), ParticipantStatus::Conflict),
            (nobody.to_owned(), ParticipantStatus::NotFound),
        ]
    );
    for dev in [&mut b1, &mut c1, &mut d1] {
        let n = dev
            .group_change("add of d", |n| {
                changed(n, &group, |c| {
                    matches!(c, GroupChange::Added { participants, .. }
                        if participants.iter().any(|p| p.jid == user(d)))
                })
            })
            .await;
        assert_eq!(n.actor, Some(user(a)));
    }
    // The adder's member list follows the answer, the others' the notification: the next
    // sends need no metadata and reach the new member.
    assert!(sent_without_metadata(env, &a1, &group, "welcome d").await);
    d1.receive("welcome d").await;
    assert!(sent_without_metadata(env, &b1, &group, "hi d, from b").await);
    d1.receive("hi d, from b").await;

    // Someone whose privacy refuses gets an invite code instead (403 with add_request).
    e_account.set_privacy("groupadd", "none");
    let r = a1
        .client
        .add_participants(&group, &[user(e)])
        .await
        .unwrap();
    assert!(
        matches!(&r[0].status, ParticipantStatus::Forbidden { add_request: Some(req) } if !req.code.is_empty()),
        "{r:?}"
    );

    // Promote B: B may now remove; D removed cannot simply be added again (408).
    let r = a1
        .client
        .promote_participants(&group, &[user(b)])
        .await
        .unwrap();
    assert!(r[0].is_done());
    for dev in [&mut c1, &mut d1] {
        dev.group_change("promote", |n| {
            changed(
                n,
                &group,
                |c| matches!(c, GroupChange::Promoted(p) if p.iter().any(|p| p.jid == user(b))),
            )
        })
        .await;
    }
    assert_eq!(
        env.sim.account(a).unwrap().group_admins(&group),
        Some(vec![a.to_owned(), b.to_owned()])
    );
    let r = b1
        .client
        .remove_participants(&group, &[user(d), user(nobody)])
        .await
        .unwrap();
    assert!(r[0].is_done());
    assert_eq!(r[1].status, ParticipantStatus::NotFound);
    for dev in [&mut a1, &mut c1, &mut d1] {
        dev.group_change("remove of d", |n| {
            changed(n, &group, |c| {
                matches!(c, GroupChange::Removed { participants } if participants.iter().any(|p| p.jid == user(d)))
            })
        })
        .await;
    }
    let r = a1
        .client
        .add_participants(&group, &[user(d)])
        .await
        .unwrap();
    assert_eq!(r[0].status, ParticipantStatus::InviteInstead);
    let r = a1
        .client
        .demote_participants(&group, &[user(b)])
        .await
        .unwrap();
    assert!(r[0].is_done());
    c1.group_change("demote", |n| {
        changed(n, &group, |c| matches!(c, GroupChange::Demoted(_)))
    })
    .await;
    // The removed member's list no longer has the group, and the next message skips it.
    let listed = d1.client.list_groups().await.unwrap();
    assert!(!listed.iter().any(|g| g.jid == group));
    assert!(sent_without_metadata(env, &a1, &group, "without d").await);
    c1.receive("without d").await;

    // Subject and description.
    c1.client
        .set_group_subject(&group, "Trip 2026")
        .await
        .unwrap();
    for dev in [&mut a1, &mut b1] {
        let n = dev
            .group_change("subject", |n| {
                changed(n, &group, |c| matches!(c, GroupChange::Subject(_)))
            })
            .await;
        let Some(GroupChange::Subject(s)) = n.changes.first() else {
            panic!("{n:?}")
        };
        assert_eq!(s.text, "Trip 2026");
        assert_eq!(s.set_by, Some(user(c)));
    }
    a1.client
        .set_group_description(&group, Some("Bring boots"))
        .await
        .unwrap();
    let n = c1
        .group_change("description", |n| {
            changed(n, &group, |c| {
                matches!(c, GroupChange::Description(Some(_)))
            })
        })
        .await;
    assert!(
        matches!(n.changes.first(), Some(GroupChange::Description(Some(d))) if d.text == "Bring boots")
    );
    // A second change names the first as its predecessor.
    a1.client
        .set_group_description(&group, Some("Bring boots and a hat"))
        .await
        .unwrap();
    let meta = c1.client.group_metadata(&group).await.unwrap();
    assert_eq!(meta.subject.text, "Trip 2026");
    assert_eq!(
        meta.description.as_ref().map(|d| d.text.as_str()),
        Some("Bring boots and a hat")
    );
    a1.client.set_group_description(&group, None).await.unwrap();
    c1.group_change("description deleted", |n| {
        changed(n, &group, |c| matches!(c, GroupChange::Description(None)))
    })
    .await;

    // Settings: admins only; locked keeps members from editing the info.
    assert_eq!(
        server_code(c1.client.set_group_announce(&group, true).await),
        401
    );
    a1.client.set_group_announce(&group, true).await.unwrap();
    a1.client.set_group_locked(&group, true).await.unwrap();
    a1.client
        .set_group_ephemeral(&group, Some(86_400))
        .await
        .unwrap();
    a1.client
        .set_group_member_add_mode(&group, MemberAddMode::AllMemberAdd)
        .await
        .unwrap();
    for want in [
        GroupChange::Announce(true),
        GroupChange::Locked(true),
        GroupChange::Ephemeral(Some(86_400)),
        GroupChange::MemberAddMode(MemberAddMode::AllMemberAdd),
    ] {
        c1.group_change(&format!("{want:?}"), |n| changed(n, &group, |c| *c == want))
            .await;
    }
    assert_eq!(
        server_code(c1.client.set_group_subject(&group, "mine").await),
        401
    );
    let meta = b1.client.group_metadata(&group).await.unwrap();
    assert!(meta.settings.announce && meta.settings.locked);
    assert_eq!(meta.settings.ephemeral, Some(86_400));
    a1.client.set_group_ephemeral(&group, None).await.unwrap();
    c1.group_change("not ephemeral", |n| {
        changed(n, &group, |c| *c == GroupChange::Ephemeral(None))
    })
    .await;

    // Invite links; with approval on, joining waits for an admin.
    assert_eq!(server_code(c1.client.group_invite_link(&group).await), 401);
    let link = a1.client.group_invite_link(&group).await.unwrap();
    assert!(link.starts_with(INVITE_LINK_PREFIX), "{link}");
    a1.client.set_group_approval(&group, true).await.unwrap();
    c1.group_change("approval", |n| {
        changed(n, &group, |c| *c == GroupChange::Approval(true))
    })
    .await;
    let info = d1.client.group_info_from_invite(&link).await.unwrap();
    assert_eq!(info.jid, group);
    assert_eq!(info.subject.text, "Trip 2026");
    assert_eq!(
        d1.client.join_group(&link).await.unwrap(),
        JoinOutcome::Requested(group.clone())
    );
    a1.group_change("join request", |n| {
        changed(n, &group, |c| matches!(c, GroupChange::MembershipRequested { participants, .. } if participants.iter().any(|p| p.jid == user(d))))
    })
    .await;
    let pending = a1.client.membership_requests(&group).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].jid, user(d));
    assert_eq!(
        server_code(c1.client.membership_requests(&group).await),
        401
    );
    let r = a1
        .client
        .answer_membership_requests(&group, &[user(d), user(e)], true)
        .await
        .unwrap();
    assert!(r[0].is_done());
    assert_eq!(r[1].status, ParticipantStatus::NotFound);
    d1.group_change("approved", |n| {
        changed(n, &group, |c| matches!(c, GroupChange::Added { participants, .. } if participants.iter().any(|p| p.jid == user(d))))
    })
    .await;

    // Leaving; a reset link revokes the old one (410), a made-up one is invalid (406).
    c1.client.leave_group(&group).await.unwrap();
    for dev in [&mut a1, &mut d1] {
        dev.group_change("c left", |n| {
            changed(n, &group, |ch| matches!(ch, GroupChange::Removed { participants } if participants.iter().any(|p| p.jid == user(c))))
        })
        .await;
    }
    assert_eq!(server_code(c1.client.group_metadata(&group).await), 403);
    let new_link = a1.client.reset_group_invite_link(&group).await.unwrap();
    assert_ne!(new_link, link);
    d1.group_change("invite reset", |n| {
        changed(n, &group, |c| matches!(c, GroupChange::InviteReset { .. }))
    })
    .await;
    assert_eq!(server_code(c1.client.join_group(&link).await), 410);
    assert_eq!(
        server_code(c1.client.group_info_from_invite("nope").await),
        406
    );
    a1.client.set_group_approval(&group, false).await.unwrap();
    let joined = c1.client.join_group(&new_link).await.unwrap();
    assert_eq!(joined, JoinOutcome::Joined(group.clone()));
    a1.group_change("c joined", |n| {
        changed(n, &group, |ch| matches!(ch, GroupChange::Added { participants, reason } if reason.as_deref() == Some("invite") && participants.iter().any(|p| p.jid == user(c))))
    })
    .await;
    assert!(sent_without_metadata(env, &a1, &group, "all here").await);
    for dev in [&mut b1, &mut c1, &mut d1] {
        dev.receive("all here").await;
    }
    d1.settle(Duration::from_millis(50)).await;
    for dev in [a1, b1, c1, d1] {
        dev.stop().await;
    }
}

/// Communities (create, a group inside, link, list, unlink), group and own pictures, and an
/// invite v4 accepted after a privacy refusal.
async fn communities_pictures_invites<R: Rt>(env: &Env) {
    let (a, b, e) = ("15550102001", "15550102002", "15550102003");
    let a1 = Device::start::<R>(env, "a1", a, 111).await;
    let b1 = Device::start::<R>(env, "b1", b, 112).await;
    let e1 = Device::start::<R>(env, "e1", e, 113).await;

    // A community, a group created inside it, and an existing group linked into it.
    let community = a1.client.create_community("Neighbours").await.unwrap();
    assert!(
        community.community.is_community,
        "{:?}",
        community.community
    );
    let mut spec = CreateGroup::new("Garden", vec![user(b)]);
    spec.parent = Some(community.jid.clone());
    let garden = a1.client.create_group_with(spec).await.unwrap();
    assert_eq!(garden.community.parent.as_ref(), Some(&community.jid));
    let street = a1.client.create_group("Street", &[user(b)]).await.unwrap();
    a1.client
        .link_group(&community.jid, &street.jid)
        .await
        .unwrap();
    let mut listed: Vec<Jid> = a1
        .client
        .community_groups(&community.jid)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.jid)
        .collect();
    listed.sort();
    let mut expected = vec![garden.jid.clone(), street.jid.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    let meta = b1.client.group_metadata(&street.jid).await.unwrap();
    assert_eq!(meta.community.parent.as_ref(), Some(&community.jid));
    // Linked twice: a conflict. Someone outside the community may not link into it.
    assert_eq!(
        server_code(a1.client.link_group(&community.jid, &street.jid).await),
        409
    );
    assert_eq!(
        server_code(b1.client.link_group(&community.jid, &street.jid).await),
        403
    );
    a1.client
        .unlink_group(&community.jid, &street.jid)
        .await
        .unwrap();
    let after = a1.client.community_groups(&community.jid).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].jid, garden.jid);
    assert_eq!(after[0].subject.as_deref(), Some("Garden"));

    // Pictures: a group's (admins only), our own; read back by another member; removed.
    let id = a1
        .client
        .set_picture(&street.jid, vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3])
        .await
        .unwrap();
    let seen = b1.client.profile_picture(&street.jid, false).await.unwrap();
    assert_eq!(seen.map(|p| p.id), Some(id));
    assert_eq!(
        server_code(b1.client.set_picture(&street.jid, vec![0xFF, 0xD8]).await),
        401
    );
    a1.client.remove_picture(&street.jid).await.unwrap();
    assert_eq!(
        b1.client.profile_picture(&street.jid, false).await.unwrap(),
        None
    );
    let own = b1
        .client
        .set_picture(&user(b), vec![0xFF, 0xD8, 9])
        .await
        .unwrap();
    let seen = a1.client.profile_picture(&user(b), true).await.unwrap();
    assert_eq!(seen.map(|p| p.id), Some(own));

    // Invite v4: E's privacy refuses adds, so A gets an invite code to send E; E joins with it.
    env.sim.account(e).unwrap().set_privacy("groupadd", "none");
    let r = a1
        .client
        .add_participants(&street.jid, &[user(e)])
        .await
        .unwrap();
    let ParticipantStatus::Forbidden {
        add_request: Some(req),
    } = &r[0].status
    else {
        panic!("{r:?}");
    };
    let (code, expiration) = (req.code.clone(), req.expiration.unwrap() as i64);
    assert_eq!(
        server_code(
            e1.client
                .accept_group_invite(&street.jid, &user(a), "WRONGCODE", expiration)
                .await
        ),
        401
    );
    e1.client
        .accept_group_invite(&street.jid, &user(a), &code, expiration)
        .await
        .unwrap();
    let meta = e1.client.group_metadata(&street.jid).await.unwrap();
    assert!(meta.participant(&user(e)).is_some(), "{meta:?}");
    for dev in [a1, b1, e1] {
        dev.stop().await;
    }
}

amarula_tests::on_both_drivers!(
    Env::pn_legacy();
    groups_end_to_end,
    communities_pictures_invites,
);
