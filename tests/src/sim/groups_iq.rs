//! `xmlns="w:g2"` IQs (SESSION.md §13) with the real answer shapes and the server's rules:
//!
//! - only members see a group's metadata (403 for others, 404 for an unknown group);
//! - adding needs an admin unless the group lets every member add; removing, promoting,
//!   demoting, the announce/locked/approval/add-mode settings, the invite link and join
//!   requests need an admin; the subject, description and timer need an admin when the group
//!   is locked. A member without the right gets `401 not-authorized` for the whole IQ, a
//!   non-member `403 forbidden`;
//! - participant changes answer each member with its own code: none (done), 403 with
//!   `<add_request code expiration/>` when the person's `groupadd` privacy refuses, 404 for a
//!   number without an account or a non-member, 408 for someone removed before (invite them
//!   instead), 409 for someone already in;
//! - a description change must name the current one (`prev`), else 409;
//! - invite codes: 406 for an unknown code, 410 for a revoked one.
//!
//! Every change is told to the members' other devices with a `w:gp2` notification (the device
//! that asked has the answer); a new member's devices hear of their own addition too, a
//! removed one's of their removal.

use amarula_core::binary::{AttrValue, Node};
use amarula_core::jid::{Jid, Server};

use super::group::{Community, GroupState, invite_code};
use super::iq::{error, result};
use super::state::{State, jid_attr};

/// The answer to a `w:g2` IQ from `device`.
pub(crate) fn answer(st: &mut State, device: &Jid, iq: &Node) -> Node {
    let Some(me) = st.phone_of(device.user_part()).map(str::to_owned) else {
        return error(iq, 401, "not-authorized");
    };
    let kind = iq.attr_str("type").unwrap_or_default();
    let Some(child) = iq.child_nodes().first().cloned() else {
        return error(iq, 400, "bad-request");
    };
    let to = jid_attr(iq, "to");
    let to_server = to
        .as_ref()
        .is_some_and(|t| t.user_part().is_empty() && *t.server_part() == Server::Group);
    let ctx = Ctx {
        iq,
        me: &me,
        device,
    };
    if to_server {
        return match (kind, &*child.tag) {
            ("get", "participating") => participating(st, &ctx),
            ("set", "create") => create(st, &ctx, &child),
            ("set", "leave") => leave(st, &ctx, &child),
            ("get", "invite") => invite_info(st, &ctx, &child),
            ("set", "invite") => join(st, &ctx, &child),
            _ => error(iq, 501, "feature-not-implemented"),
        };
    }
    let Some(group) = to.filter(Jid::is_group) else {
        return error(iq, 400, "bad-request");
    };
    let id = group.user_part().to_owned();
    let Some(g) = st.groups.get(&id) else {
        return error(iq, 404, "item-not-found");
    };
    // Accepting an invite v4 is what a non-member does.
    if kind == "set" && child.tag == "accept" {
        let reply = accept(st, &ctx, &id, &child);
        return from_group(reply, &group);
    }
    if !g.is_member(&me) {
        return error(iq, 403, "forbidden");
    }
    let admin = g.is_admin(&me);
    let reply = match (kind, &*child.tag) {
        ("get", "query") => {
            let info = g.info(st);
            result(iq, vec![info])
        }
        ("set", action @ ("add" | "remove" | "promote" | "demote")) => {
            let may = match action {
                "add" => admin || g.all_member_add,
                _ => admin,
            };
            if !may {
                return error(iq, 401, "not-authorized");
            }
            participants(st, &ctx, &id, action, &child)
        }
        ("set", "subject" | "description" | "ephemeral" | "not_ephemeral")
            if g.locked && !admin =>
        {
            return error(iq, 401, "not-authorized");
        }
        ("set", "subject") => subject(st, &ctx, &id, &child),
        ("set", "description") => description(st, &ctx, &id, &child),
        ("set", "ephemeral" | "not_ephemeral") => setting(st, &ctx, &id, &child),
        ("set", _) | ("get", "invite" | "membership_approval_requests") if !admin => {
            return error(iq, 401, "not-authorized");
        }
        (
            "set",
            "announcement"
            | "not_announcement"
            | "locked"
            | "unlocked"
            | "member_add_mode"
            | "membership_approval_mode",
        ) => setting(st, &ctx, &id, &child),
        (_, "invite") => invite(st, &ctx, &id, kind == "set"),
        ("get", "membership_approval_requests") => requests(st, &ctx, &id),
        ("get", "sub_groups") => sub_groups(st, &ctx, &id),
        ("set", "links" | "unlink") => links(st, &ctx, &id, &child),
        ("set", "membership_requests_action") => request_action(st, &ctx, &id, &child),
        _ => error(iq, 501, "feature-not-implemented"),
    };
    from_group(reply, &group)
}

/// `<accept code expiration admin/>`: joins with the invite an admin sent in a message after
/// our privacy refused their add. The code must be the one given out for us, unexpired.
fn accept(st: &mut State, ctx: &Ctx<'_>, id: &str, child: &Node) -> Node {
    let Some(g) = st.groups.get(id) else {
        return error(ctx.iq, 404, "item-not-found");
    };
    if g.is_member(ctx.me) {
        return error(ctx.iq, 409, "conflict");
    }
    let code = child.attr_str("code").unwrap_or_default();
    if g.add_requests.get(ctx.me).map(String::as_str) != Some(code) || code.is_empty() {
        return error(ctx.iq, 401, "not-authorized");
    }
    let expired = child
        .attr_str("expiration")
        .and_then(|e| e.parse::<u64>().ok())
        .is_some_and(|e| e < super::unix_now());
    if expired {
        return error(ctx.iq, 410, "gone");
    }
    if let Some(g) = st.groups.get_mut(id) {
        g.add_requests.remove(ctx.me);
    }
    apply_participants(st, ctx, id, "add", &[ctx.me.to_owned()], None);
    result(ctx.iq, Vec::new())
}

/// `<sub_groups/>` of a community: its groups, each `<group id subject>`.
fn sub_groups(st: &State, ctx: &Ctx<'_>, id: &str) -> Node {
    if st.groups.get(id).map(|g| &g.community) != Some(&Community::Parent) {
        return error(ctx.iq, 400, "bad-request");
    }
    let linked = Community::Linked(id.to_owned());
    let list: Vec<Node> = st
        .groups
        .values()
        .filter(|g| g.community == linked)
        .map(|g| {
            Node::new("group")
                .attr("id", g.id.as_str())
                .attr("subject", g.subject.as_str())
        })
        .collect();
    result(ctx.iq, vec![Node::new("sub_groups").children(list)])
}

/// `<links><link link_type="sub_group"><group jid/></link></links>` or `<unlink
/// unlink_type="sub_group"><group jid/></unlink>` to a community: we must administer the
/// community (checked by the caller) and the group.
fn links(st: &mut State, ctx: &Ctx<'_>, id: &str, child: &Node) -> Node {
    if st.groups.get(id).map(|g| &g.community) != Some(&Community::Parent) {
        return error(ctx.iq, 400, "bad-request");
    }
    let target = if child.tag == "links" {
        child.child("link").and_then(|l| l.child("group"))
    } else {
        child.child("group")
    };
    let Some(group) = target.and_then(|g| jid_attr(g, "jid")) else {
        return error(ctx.iq, 400, "bad-request");
    };
    let Some(g) = st.groups.get_mut(group.user_part()) else {
        return error(ctx.iq, 404, "item-not-found");
    };
    if !g.is_admin(ctx.me) {
        return error(ctx.iq, 403, "forbidden");
    }
    let linked = Community::Linked(id.to_owned());
    if child.tag == "links" {
        if g.community != Community::None {
            return error(ctx.iq, 409, "conflict");
        }
        g.community = linked;
    } else if g.community == linked {
        g.community = Community::None;
    } else {
        return error(ctx.iq, 404, "item-not-found");
    }
    result(ctx.iq, Vec::new())
}

/// Who asks what.
struct Ctx<'a> {
    iq: &'a Node,
    me: &'a str,
    device: &'a Jid,
}

/// Answers about one group come from the group, as the real server's do.
fn from_group(mut reply: Node, group: &Jid) -> Node {
    for (k, v) in &mut reply.attrs {
        if k == "from" {
            *v = AttrValue::Jid(group.clone());
        }
    }
    reply
}

/// The phone number a `<participant jid>` names (by PN or LID).
fn phone_of(st: &State, p: &Node) -> Option<(Jid, Option<String>)> {
    let jid = jid_attr(p, "jid")?;
    let phone = st.phone_of(jid.user_part()).map(str::to_owned);
    Some((jid.to_non_device(), phone))
}

fn members(st: &State, id: &str) -> Vec<String> {
    st.groups
        .get(id)
        .map(|g| g.participants.clone())
        .unwrap_or_default()
}

fn participating(st: &State, ctx: &Ctx<'_>) -> Node {
    let groups: Vec<Node> = st
        .groups
        .values()
        .filter(|g| g.is_member(ctx.me))
        .map(|g| g.info(st))
        .collect();
    result(ctx.iq, vec![Node::new("groups").children(groups)])
}

fn create(st: &mut State, ctx: &Ctx<'_>, child: &Node) -> Node {
    let subject = child.attr_str("subject").unwrap_or_default().to_owned();
    let mut members: Vec<String> = Vec::new();
    for p in child
        .child_nodes()
        .iter()
        .filter(|c| c.tag == "participant")
    {
        // Numbers without an account are left out.
        if let Some((_, Some(phone))) = phone_of(st, p) {
            if phone != ctx.me && !members.contains(&phone) {
                members.push(phone);
            }
        }
    }
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let jid = st.create_group(ctx.me, &subject, &refs);
    let id = jid.user_part().to_owned();
    if let Some(g) = st.groups.get_mut(&id) {
        g.locked = child.child("locked").is_some();
        g.announce = child.child("announcement").is_some();
        g.ephemeral = child
            .child("ephemeral")
            .and_then(|e| e.attr_str("expiration"))
            .and_then(|e| e.parse().ok())
            .filter(|t| *t > 0);
        g.approval = child
            .child("membership_approval_mode")
            .and_then(|m| m.child("group_join"))
            .and_then(|j| j.attr_str("state"))
            == Some("on");
    }
    // A community, or a group created inside one (the creator must administer it).
    if child.child("parent").is_some() {
        if let Some(g) = st.groups.get_mut(&id) {
            g.community = Community::Parent;
            g.approval = true;
        }
    } else if let Some(parent) = child
        .child("linked_parent")
        .and_then(|l| jid_attr(l, "jid"))
    {
        let may = st
            .groups
            .get(parent.user_part())
            .is_some_and(|p| p.community == Community::Parent && p.is_admin(ctx.me));
        if !may {
            st.groups.remove(&id);
            return error(ctx.iq, 403, "forbidden");
        }
        if let Some(g) = st.groups.get_mut(&id) {
            g.community = Community::Linked(parent.user_part().to_owned());
        }
    }
    let Some(info) = st.groups.get(&id).map(|g| g.info(st)) else {
        return error(ctx.iq, 500, "internal-server-error");
    };
    let everyone = members_with(&members, ctx.me);
    st.notify_group(
        &jid,
        Some(ctx.me),
        &everyone,
        Some(ctx.device),
        vec![Node::new("create").children([info.clone()])],
    );
    result(ctx.iq, vec![info])
}

fn members_with(members: &[String], me: &str) -> Vec<String> {
    let mut all = vec![me.to_owned()];
    all.extend(members.iter().cloned());
    all
}

fn participants(st: &mut State, ctx: &Ctx<'_>, id: &str, action: &str, child: &Node) -> Node {
    let mut answers = Vec::new();
    let mut changed = Vec::new();
    for p in child
        .child_nodes()
        .iter()
        .filter(|c| c.tag == "participant")
    {
        let Some((jid, phone)) = phone_of(st, p) else {
            continue;
        };
        let code = match phone.as_deref() {
            None => Some(("404", None)),
            Some(phone) => participant_rule(st, id, action, phone),
        };
        let mut node = Node::new("participant").attr("jid", jid);
        match code {
            Some((code, add_request)) => {
                node = node.attr("error", code);
                if let Some(code) = add_request {
                    let expires = super::unix_now() + 7 * 24 * 3600;
                    node = node.children([Node::new("add_request")
                        .attr("code", code)
                        .attr("expiration", expires.to_string())]);
                }
            }
            None => {
                if let Some(phone) = phone {
                    changed.push(phone);
                }
            }
        }
        answers.push(node);
    }
    apply_participants(st, ctx, id, action, &changed, None);
    result(ctx.iq, vec![Node::new(action).children(answers)])
}

/// The per-member refusal of a change, if any: (code, invite code for a 403 add).
fn participant_rule(
    st: &mut State,
    id: &str,
    action: &str,
    phone: &str,
) -> Option<(&'static str, Option<String>)> {
    let g = st.groups.get(id)?;
    let member = g.is_member(phone);
    match action {
        "add" if member => Some(("409", None)),
        "add" if g.removed.contains(phone) => Some(("408", None)),
        "add" if st.privacy_value(phone, "groupadd") == Some("none") => {
            let code = invite_code(st);
            if let Some(g) = st.groups.get_mut(id) {
                g.add_requests.insert(phone.to_owned(), code.clone());
            }
            Some(("403", Some(code)))
        }
        "add" => None,
        _ if !member => Some(("404", None)),
        "promote" if g.is_admin(phone) => Some(("409", None)),
        _ => None,
    }
}

/// Applies a participant change that went through and notifies: everyone in the group before
/// and after hears of it (but the device that asked).
fn apply_participants(
    st: &mut State,
    ctx: &Ctx<'_>,
    id: &str,
    action: &str,
    changed: &[String],
    reason: Option<&str>,
) {
    if changed.is_empty() {
        return;
    }
    let before = members(st, id);
    let Some(g) = st.groups.get_mut(id) else {
        return;
    };
    for phone in changed {
        match action {
            "add" => {
                g.participants.push(phone.clone());
                g.removed.remove(phone);
                g.requests.remove(phone);
            }
            "remove" => {
                g.participants.retain(|p| p != phone);
                g.admins.remove(phone);
                g.removed.insert(phone.clone());
            }
            "promote" => {
                g.admins.insert(phone.clone());
            }
            _ => {
                g.admins.remove(phone);
            }
        }
    }
    let jid = g.jid();
    let mut to = before;
    for p in members(st, id) {
        if !to.contains(&p) {
            to.push(p);
        }
    }
    let nodes: Vec<Node> = changed
        .iter()
        .map(|p| GroupState::participant(st, p, None))
        .collect();
    let mut change = Node::new(action);
    if let Some(reason) = reason {
        change = change.attr("reason", reason);
    }
    st.notify_group(
        &jid,
        Some(ctx.me),
        &to,
        Some(ctx.device),
        vec![change.children(nodes)],
    );
}

fn subject(st: &mut State, ctx: &Ctx<'_>, id: &str, child: &Node) -> Node {
    let text = child
        .content_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let now = super::unix_now();
    let Some(g) = st.groups.get_mut(id) else {
        return error(ctx.iq, 404, "item-not-found");
    };
    g.subject.clone_from(&text);
    g.subject_by = ctx.me.to_owned();
    g.subject_at = now;
    let (jid, to) = (g.jid(), g.participants.clone());
    st.notify_group(
        &jid,
        Some(ctx.me),
        &to,
        Some(ctx.device),
        vec![
            Node::new("subject")
                .attr("subject", text)
                .attr("s_o", Jid::user(ctx.me))
                .attr("s_t", now.to_string()),
        ],
    );
    result(ctx.iq, Vec::new())
}

fn description(st: &mut State, ctx: &Ctx<'_>, id: &str, child: &Node) -> Node {
    let new_id = child.attr_str("id").unwrap_or_default().to_owned();
    let prev = child.attr_str("prev");
    let now = super::unix_now();
    let Some(g) = st.groups.get_mut(id) else {
        return error(ctx.iq, 404, "item-not-found");
    };
    let current = g.description.as_ref().map(|d| d.0.as_str());
    if new_id.is_empty() || prev != current {
        return error(ctx.iq, 409, "conflict");
    }
    let body = child
        .child("body")
        .and_then(Node::content_bytes)
        .map(|b| String::from_utf8_lossy(b).into_owned());
    let change = match body {
        Some(text) if child.attr_str("delete") != Some("true") => {
            g.description = Some((new_id.clone(), text.clone(), ctx.me.to_owned(), now));
            Node::new("description")
                .attr("id", new_id)
                .children([Node::new("body").bytes(text.into_bytes())])
        }
        _ => {
            g.description = None;
            Node::new("description")
                .attr("id", new_id)
                .children([Node::new("delete")])
        }
    };
    let (jid, to) = (g.jid(), g.participants.clone());
    st.notify_group(&jid, Some(ctx.me), &to, Some(ctx.device), vec![change]);
    result(ctx.iq, Vec::new())
}

fn setting(st: &mut State, ctx: &Ctx<'_>, id: &str, child: &Node) -> Node {
    let Some(g) = st.groups.get_mut(id) else {
        return error(ctx.iq, 404, "item-not-found");
    };
    match &*child.tag {
        "announcement" => g.announce = true,
        "not_announcement" => g.announce = false,
        "locked" => g.locked = true,
        "unlocked" => g.locked = false,
        "ephemeral" => {
            g.ephemeral = child
                .attr_str("expiration")
                .and_then(|e| e.parse().ok())
                .filter(|t| *t > 0);
        }
        "not_ephemeral" => g.ephemeral = None,
        "member_add_mode" => {
            g.all_member_add = child.content_bytes() == Some(b"all_member_add".as_slice());
        }
        _ => {
            g.approval = child.child("group_join").and_then(|j| j.attr_str("state")) == Some("on");
        }
    }
    let (jid, to) = (g.jid(), g.participants.clone());
    st.notify_group(
        &jid,
        Some(ctx.me),
        &to,
        Some(ctx.device),
        vec![child.clone()],
    );
    result(ctx.iq, Vec::new())
}

fn leave(st: &mut State, ctx: &Ctx<'_>, child: &Node) -> Node {
    let mut left = Vec::new();
    for g in child.child_nodes().iter().filter(|c| c.tag == "group") {
        let Some(group) = jid_attr(g, "id").filter(Jid::is_group) else {
            continue;
        };
        let id = group.user_part().to_owned();
        if !st.groups.get(&id).is_some_and(|g| g.is_member(ctx.me)) {
            return error(ctx.iq, 404, "item-not-found");
        }
        apply_participants(st, ctx, &id, "remove", &[ctx.me.to_owned()], None);
        left.push(Node::new("group").attr("id", group));
    }
    result(ctx.iq, vec![Node::new("leave").children(left)])
}

fn invite(st: &mut State, ctx: &Ctx<'_>, id: &str, reset: bool) -> Node {
    if reset {
        let code = invite_code(st);
        let Some(g) = st.groups.get_mut(id) else {
            return error(ctx.iq, 404, "item-not-found");
        };
        let old = std::mem::replace(&mut g.invite, code.clone());
        g.revoked.insert(old);
        let (jid, to) = (g.jid(), g.participants.clone());
        st.notify_group(
            &jid,
            Some(ctx.me),
            &to,
            Some(ctx.device),
            vec![Node::new("invite").attr("code", code.as_str())],
        );
        return result(ctx.iq, vec![Node::new("invite").attr("code", code)]);
    }
    match st.groups.get(id) {
        Some(g) => result(
            ctx.iq,
            vec![Node::new("invite").attr("code", g.invite.as_str())],
        ),
        None => error(ctx.iq, 404, "item-not-found"),
    }
}

/// The group an invite code opens: `Ok(id)`, or the error (406 unknown, 410 revoked).
fn by_code(st: &State, child: &Node) -> Result<String, (u16, &'static str)> {
    let code = child.attr_str("code").unwrap_or_default();
    if let Some(g) = st.groups.values().find(|g| g.invite == code) {
        return Ok(g.id.clone());
    }
    if st.groups.values().any(|g| g.revoked.contains(code)) {
        return Err((410, "gone"));
    }
    Err((406, "not-acceptable"))
}

fn invite_info(st: &State, ctx: &Ctx<'_>, child: &Node) -> Node {
    match by_code(st, child) {
        Ok(id) => match st.groups.get(&id) {
            Some(g) => result(ctx.iq, vec![g.info(st)]),
            None => error(ctx.iq, 404, "item-not-found"),
        },
        Err((code, text)) => error(ctx.iq, code, text),
    }
}

fn join(st: &mut State, ctx: &Ctx<'_>, child: &Node) -> Node {
    let id = match by_code(st, child) {
        Ok(id) => id,
        Err((code, text)) => return error(ctx.iq, code, text),
    };
    let Some(g) = st.groups.get_mut(&id) else {
        return error(ctx.iq, 404, "item-not-found");
    };
    let jid = g.jid();
    if g.is_member(ctx.me) {
        return error(ctx.iq, 409, "conflict");
    }
    if g.approval {
        g.requests.insert(ctx.me.to_owned(), super::unix_now());
        let admins: Vec<String> = g
            .participants
            .iter()
            .filter(|p| g.is_admin(p))
            .cloned()
            .collect();
        let me = GroupState::participant(st, ctx.me, None);
        st.notify_group(
            &jid,
            Some(ctx.me),
            &admins,
            None,
            vec![
                Node::new("created_membership_requests")
                    .attr("request_method", "invite_link")
                    .children([me]),
            ],
        );
        return result(
            ctx.iq,
            vec![Node::new("membership_approval_request").attr("jid", jid)],
        );
    }
    apply_participants(st, ctx, &id, "add", &[ctx.me.to_owned()], Some("invite"));
    result(ctx.iq, vec![Node::new("group").attr("jid", jid)])
}

fn requests(st: &State, ctx: &Ctx<'_>, id: &str) -> Node {
    let list: Vec<Node> = st
        .groups
        .get(id)
        .map(|g| {
            g.requests
                .iter()
                .map(|(phone, t)| {
                    Node::new("membership_approval_request")
                        .attr("jid", Jid::user(phone.as_str()))
                        .attr("request_time", t.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    result(
        ctx.iq,
        vec![Node::new("membership_approval_requests").children(list)],
    )
}

fn request_action(st: &mut State, ctx: &Ctx<'_>, id: &str, child: &Node) -> Node {
    let Some(action) = child.child_nodes().first() else {
        return error(ctx.iq, 400, "bad-request");
    };
    let approve = match &*action.tag {
        "approve" => true,
        "reject" => false,
        _ => return error(ctx.iq, 400, "bad-request"),
    };
    let mut answers = Vec::new();
    let mut done = Vec::new();
    for p in action
        .child_nodes()
        .iter()
        .filter(|c| c.tag == "participant")
    {
        let Some((jid, phone)) = phone_of(st, p) else {
            continue;
        };
        let pending = phone.as_ref().is_some_and(|ph| {
            st.groups
                .get(id)
                .is_some_and(|g| g.requests.contains_key(ph))
        });
        let mut node = Node::new("participant").attr("jid", jid);
        match phone {
            Some(phone) if pending => done.push(phone),
            _ => node = node.attr("error", "404"),
        }
        answers.push(node);
    }
    if approve {
        apply_participants(st, ctx, id, "add", &done, Some("approval"));
    } else if let Some(g) = st.groups.get_mut(id) {
        for p in &done {
            g.requests.remove(p);
        }
        let (jid, admins): (Jid, Vec<String>) = (
            g.jid(),
            g.participants
                .iter()
                .filter(|p| g.is_admin(p))
                .cloned()
                .collect(),
        );
        let nodes: Vec<Node> = done
            .iter()
            .map(|p| GroupState::participant(st, p, None))
            .collect();
        if !nodes.is_empty() {
            st.notify_group(
                &jid,
                Some(ctx.me),
                &admins,
                Some(ctx.device),
                vec![Node::new("revoked_membership_requests").children(nodes)],
            );
        }
    }
    let tag = if approve { "approve" } else { "reject" };
    result(
        ctx.iq,
        vec![Node::new("membership_requests_action").children([Node::new(tag).children(answers)])],
    )
}
