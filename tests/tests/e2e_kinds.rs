//! Every message kind end to end through the real drivers (tokio and smol) over loopback
//! sockets against the simulator: from one amarula client to another and from a simulated
//! phone to a client, in chats of two and in a group; reactions, edits, revokes and votes
//! resolve their targets; poll votes are tallied across a restart from SQLite; a message with
//! a field no schema declares reaches the application with its bytes. Each scenario runs once
//! per runtime; every wait is bounded.

use amarula::core::binary::Node;
use amarula::core::content::build::{self, MessageRef};
use amarula::core::content::{Content, VoteState, option_hash};
use amarula::core::machine::IncomingMessage;
use amarula::proto::e2e;
use amarula::store::CredentialStore;
use amarula::store::SqliteStore;
use amarula::{Contact, Location, Text};
use amarula_tests::e2e::{Device, Env, fresh_db, sim_wait, user};
use amarula_tests::runtimes::Runtime as Rt;
use amarula_tests::sim::{SimEvent, Subscription};

/// What the simulator saw of a stanza a client or phone sent: `type`, `edit`, and the first
/// `<enc>`'s `mediatype` and `decrypt-fail`, and the `<meta polltype>`.
type Attrs = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn attrs(node: &Node) -> Attrs {
    let enc = node
        .child("participants")
        .and_then(|p| p.child_nodes().first())
        .and_then(|t| t.child("enc"))
        .or_else(|| node.child("enc"));
    let s = |v: Option<&str>| v.map(str::to_owned);
    (
        s(node.attr_str("type")),
        s(node.attr_str("edit")),
        s(enc.and_then(|e| e.attr_str("mediatype"))),
        s(enc.and_then(|e| e.attr_str("decrypt-fail"))),
        s(node.child("meta").and_then(|m| m.attr_str("polltype"))),
    )
}

fn want(
    ty: &str,
    edit: Option<&str>,
    media: Option<&str>,
    hide: bool,
    poll: Option<&str>,
) -> Attrs {
    (
        Some(ty.to_owned()),
        edit.map(str::to_owned),
        media.map(str::to_owned),
        hide.then(|| "hide".to_owned()),
        poll.map(str::to_owned),
    )
}

/// The stanza with `id` as a client sent it to the simulator.
async fn sent_stanza(rx: &mut Subscription, id: &str) -> Node {
    sim_wait(rx, &format!("stanza {id}"), |e| match e {
        SimEvent::StanzaReceived { node, .. }
            if node.tag == "message" && node.attr_str("id") == Some(id) =>
        {
            Some(node.clone())
        }
        _ => None,
    })
    .await
}

/// The message `id` as the phone of `account` decrypted it.
async fn phone_got(rx: &mut Subscription, account: &str, id: &str) -> e2e::Message {
    sim_wait(
        rx,
        &format!("the phone of {account} decrypting {id}"),
        |e| match e {
            SimEvent::PhoneMessage {
                account: a,
                id: i,
                message,
                ..
            } if a == account && i == id => Some((**message).clone()),
            SimEvent::PhoneUndecryptable {
                account: a,
                id: i,
                error,
                ..
            } if a == account && i == id => panic!("the phone of {account} failed {id}: {error}"),
            _ => None,
        },
    )
    .await
}

/// Checks what one send looked like on the wire and to the recipient's phone.
async fn check_sent(rx: &mut Subscription, id: &str, phone: &str, expected: Attrs) -> e2e::Message {
    let node = sent_stanza(rx, id).await;
    assert_eq!(attrs(&node), expected, "{node}");
    phone_got(rx, phone, id).await
}

fn vote_options(m: &IncomingMessage) -> Vec<String> {
    match &m.content {
        Content::PollVote(v) => match &v.state {
            VoteState::Decrypted { options, .. } => options.clone(),
            other => panic!("vote not decrypted: {other:?}"),
        },
        other => panic!("not a vote: {other:?}"),
    }
}

async fn client_to_client<R: Rt>(env: &Env) {
    let (a, b) = ("15550011001", "15550011002");
    let mut rx = env.sim.subscribe();
    let mut a1 = Device::start::<R>(env, "a1", a, 1).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 2).await;
    let (to_a, to_b) = (user(a), user(b));

    let lunch_id = b1.client.send_text(&to_a, "lunch?").await.unwrap();
    let lunch = a1.receive_id(&lunch_id).await;

    // Reply with a mention.
    let text = Text::new("yes @15550011002")
        .reply_to(lunch.quote())
        .mention(to_b.clone());
    let id = a1.client.send_text(&to_b, text).await.unwrap();
    let got = check_sent(&mut rx, &id, b, want("text", None, None, false, None)).await;
    assert!(got.extended_text_message.is_some());
    let m = b1.receive_id(&id).await;
    let context = m.context.clone().expect("a context");
    let reply = context.reply.expect("a reply");
    assert_eq!(reply.stanza_id, lunch_id);
    assert_eq!(reply.participant, Some(to_b.clone()));
    assert_eq!(context.mentions, std::slice::from_ref(&to_b));

    // A reaction to B's message, and its removal: B sees its own message as the target.
    let id = a1
        .client
        .send_reaction(&lunch.reference(), "👍")
        .await
        .unwrap();
    check_sent(&mut rx, &id, b, want("reaction", None, None, true, None)).await;
    let m = b1.receive_id(&id).await;
    let Content::Reaction(r) = &m.content else {
        panic!("{m:?}")
    };
    assert_eq!(
        (r.target.id.as_str(), r.target.from_me),
        (lunch_id.as_str(), true)
    );
    assert_eq!(r.emoji, "👍");
    let id = a1
        .client
        .send_reaction(&lunch.reference(), "")
        .await
        .unwrap();
    check_sent(
        &mut rx,
        &id,
        b,
        want("reaction", Some("7"), None, true, None),
    )
    .await;
    assert!(matches!(&b1.receive_id(&id).await.content, Content::Reaction(r) if r.is_removal()));

    // An edit of A's message.
    let helo = a1.client.send_text(&to_b, "helo").await.unwrap();
    b1.receive_id(&helo).await;
    let fixed = Text::new("hello").to_message(&to_b, &to_a);
    let id = a1
        .client
        .send_edit(&MessageRef::ours(to_b.clone(), helo.clone()), fixed)
        .await
        .unwrap();
    check_sent(&mut rx, &id, b, want("text", Some("1"), None, true, None)).await;
    let m = b1.receive_id(&id).await;
    let Content::Edit(e) = &m.content else {
        panic!("{m:?}")
    };
    assert_eq!(e.target.id, helo);
    assert_eq!(e.target.author, Some(to_a.clone()));
    assert!(e.by_author);
    assert!(matches!(&*e.content, Content::Text { text, .. } if text == "hello"));

    // A revoke of A's message.
    let oops = a1.client.send_text(&to_b, "oops").await.unwrap();
    b1.receive_id(&oops).await;
    let id = a1
        .client
        .send_revoke(&MessageRef::ours(to_b.clone(), oops.clone()))
        .await
        .unwrap();
    check_sent(&mut rx, &id, b, want("text", Some("7"), None, false, None)).await;
    let m = b1.receive_id(&id).await;
    assert!(matches!(&m.content, Content::Revoke(r) if r.target.id == oops && !r.by_admin));

    // Contacts, a location, and any message (a live location).
    let ann = Contact::new("Ann", build::vcard("Ann", "15550001111"));
    let id = a1.client.send_contact(&to_b, &ann).await.unwrap();
    let got = check_sent(
        &mut rx,
        &id,
        b,
        want("media", None, Some("vcard"), false, None),
    )
    .await;
    assert!(got.contact_message.is_some());
    assert_eq!(
        b1.receive_id(&id).await.content,
        Content::Contact(ann.clone())
    );
    let id = a1
        .client
        .send_contacts(&to_b, "friends", &[ann.clone(), ann.clone()])
        .await
        .unwrap();
    check_sent(
        &mut rx,
        &id,
        b,
        want("media", None, Some("contact_array"), false, None),
    )
    .await;
    assert!(matches!(
        &b1.receive_id(&id).await.content,
        Content::Contacts { contacts, .. } if contacts.len() == 2
    ));
    let mut dam = Location::new(52.3731, 4.8922);
    dam.name = Some("Dam".into());
    let id = a1.client.send_location(&to_b, &dam).await.unwrap();
    check_sent(&mut rx, &id, b, want("text", None, None, false, None)).await;
    assert_eq!(
        b1.receive_id(&id).await.content,
        Content::Location(Box::new(dam))
    );
    let live = e2e::Message {
        live_location_message: Some(Box::new(e2e::LiveLocationMessage {
            degrees_latitude: Some(1.5),
            degrees_longitude: Some(2.5),
            sequence_number: Some(7),
            ..Default::default()
        })),
        ..Default::default()
    };
    let id = a1.client.send_message(&to_b, live).await.unwrap();
    check_sent(&mut rx, &id, b, want("text", None, None, false, None)).await;
    assert!(matches!(
        &b1.receive_id(&id).await.content,
        Content::LiveLocation(l) if l.sequence_number == Some(7)
    ));

    // A poll, B's vote, tallied by A.
    let poll = a1
        .client
        .send_poll(&to_b, "where?", &["here", "there"], 1)
        .await
        .unwrap();
    let got = check_sent(
        &mut rx,
        &poll.id,
        b,
        want("poll", None, None, false, Some("creation")),
    )
    .await;
    assert!(got.poll_creation_message.is_some());
    let m = b1.receive_id(&poll.id).await;
    assert!(matches!(&m.content, Content::Poll(p) if p.options == ["here", "there"]));
    let vote = b1
        .client
        .send_poll_vote(&m.reference(), &["there"])
        .await
        .unwrap();
    check_sent(
        &mut rx,
        &vote,
        a,
        want("poll", None, None, true, Some("vote")),
    )
    .await;
    let tally = a1.receive_id(&vote).await;
    assert_eq!(vote_options(&tally), ["there"]);
    let Content::PollVote(v) = &tally.content else {
        unreachable!()
    };
    assert_eq!(
        (v.poll.id.as_str(), v.poll.from_me),
        (poll.id.as_str(), true)
    );

    for d in [&a1, &b1] {
        d.assert_all_decrypted();
    }
    for d in [a1, b1] {
        d.stop().await;
    }
}

async fn phone_to_client<R: Rt>(env: &Env) {
    let (a, p) = ("15550012001", "15550012002");
    let phone = env.sim.add_account(p);
    let mut rx = env.sim.subscribe();
    let mut a1 = Device::start::<R>(env, "a1", a, 11).await;
    let (to_a, to_p) = (user(a), user(p));

    // A writes to P; P's phone decrypts it.
    let ping = a1.client.send_text(&to_p, "ping").await.unwrap();
    phone_got(&mut rx, p, &ping).await;
    let a_ping = MessageRef::theirs(to_a.clone(), ping.clone(), to_a.clone());
    let own = [to_p.clone()];

    // Text and a reply to A's message.
    let id = phone
        .phone_send(&to_a, &Text::new("pong").to_message(&to_a, &to_p))
        .unwrap();
    assert_eq!(a1.receive_id(&id).await.text(), Some("pong"));
    let reply = Text::new("re")
        .reply_to(build::Quote::new(
            a_ping.clone(),
            Text::new("ping").to_message(&to_p, &to_a),
        ))
        .to_message(&to_a, &to_p);
    let id = phone.phone_send(&to_a, &reply).unwrap();
    let m = a1.receive_id(&id).await;
    let r = m.context.clone().and_then(|c| c.reply).expect("a reply");
    assert_eq!(
        (r.stanza_id.as_str(), r.participant),
        (ping.as_str(), Some(to_a.clone()))
    );

    // A reaction to A's message resolves to A's own message; then its removal.
    let id = phone
        .phone_send(&to_a, &build::reaction(a_ping.key(&own), "😂", 1))
        .unwrap();
    let m = a1.receive_id(&id).await;
    assert!(
        matches!(&m.content, Content::Reaction(r) if r.target.id == ping && r.target.from_me && r.emoji == "😂"),
        "{m:?}"
    );
    let id = phone
        .phone_send(&to_a, &build::reaction(a_ping.key(&own), "", 2))
        .unwrap();
    assert!(matches!(&a1.receive_id(&id).await.content, Content::Reaction(r) if r.is_removal()));

    // The phone edits and revokes its own messages.
    let typo = phone
        .phone_send(&to_a, &Text::new("tpyo").to_message(&to_a, &to_p))
        .unwrap();
    a1.receive_id(&typo).await;
    let own_typo = MessageRef::ours(to_a.clone(), typo.clone());
    let id = phone
        .phone_send(
            &to_a,
            &build::edit(
                own_typo.key(&own),
                Text::new("typo").to_message(&to_a, &to_p),
                3,
            ),
        )
        .unwrap();
    let m = a1.receive_id(&id).await;
    let Content::Edit(e) = &m.content else {
        panic!("{m:?}")
    };
    assert_eq!(
        (e.target.id.as_str(), e.target.author.clone()),
        (typo.as_str(), Some(to_p.clone()))
    );
    assert!(e.by_author);
    let id = phone
        .phone_send(&to_a, &build::revoke(own_typo.key(&own)))
        .unwrap();
    assert!(matches!(
        &a1.receive_id(&id).await.content,
        Content::Revoke(r) if r.target.id == typo && !r.by_admin
    ));

    // Contacts and a location.
    let ann = Contact::new("Ann", build::vcard("Ann", "15550001111"));
    let id = phone.phone_send(&to_a, &build::contact(&ann)).unwrap();
    assert_eq!(
        a1.receive_id(&id).await.content,
        Content::Contact(ann.clone())
    );
    let id = phone
        .phone_send(&to_a, &build::contacts("two", &[ann.clone(), ann]))
        .unwrap();
    assert!(
        matches!(&a1.receive_id(&id).await.content, Content::Contacts { contacts, .. } if contacts.len() == 2)
    );
    let id = phone
        .phone_send(&to_a, &build::location(&Location::new(-33.86, 151.21)))
        .unwrap();
    assert!(
        matches!(&a1.receive_id(&id).await.content, Content::Location(l) if l.latitude == -33.86)
    );

    // The phone's poll: A votes, and the phone reads the vote with the poll's secret.
    let secret = [42u8; 32];
    let options = vec!["tea".to_owned(), "coffee".to_owned()];
    let poll = phone
        .phone_send(&to_a, &build::poll("drink?", &options, 1, secret).unwrap())
        .unwrap();
    let m = a1.receive_id(&poll).await;
    assert!(matches!(&m.content, Content::Poll(p) if p.secret.as_deref() == Some(&secret[..])));
    let vote = a1
        .client
        .send_poll_vote(&m.reference(), &["coffee"])
        .await
        .unwrap();
    let got = check_sent(
        &mut rx,
        &vote,
        p,
        want("poll", None, None, true, Some("vote")),
    )
    .await;
    let update = got.poll_update_message.expect("a vote");
    let enc = update.vote.expect("encrypted");
    let plain = amarula::core::content::decrypt_addon(
        &secret,
        &poll,
        &to_p,
        &to_a,
        amarula::core::content::UseCase::PollVote,
        enc.enc_iv.as_deref().unwrap_or_default(),
        enc.enc_payload.as_deref().unwrap_or_default(),
    )
    .expect("the vote decrypts with the poll's secret");
    let selected =
        <e2e::PollVoteMessage as amarula::proto::Message>::decode(plain.as_slice()).unwrap();
    let hashes: Vec<Vec<u8>> = selected
        .selected_options
        .iter()
        .map(|h| h.to_vec())
        .collect();
    assert_eq!(hashes, [option_hash("coffee").to_vec()]);

    // A field no schema declares (number 9999, a varint) still reaches the application.
    let unknown = [0xf8, 0xe1, 0x04, 0x2a];
    let id = phone.phone_send_raw(&to_a, &unknown).unwrap();
    let m = a1.receive_id(&id).await;
    assert_eq!(m.content, Content::Unknown);
    assert_eq!(&m.raw[..], &unknown[..]);

    // A's delivery receipts reach the phone.
    sim_wait(
        &mut rx,
        "a receipt for the unknown-field message",
        |e| match e {
            SimEvent::PhoneReceipt {
                account,
                id: i,
                kind: None,
                ..
            } if account == p && *i == id => Some(()),
            _ => None,
        },
    )
    .await;
    assert!(a1.undecryptable.is_empty(), "{:?}", a1.undecryptable);
    a1.stop().await;
}

async fn group_kinds<R: Rt>(env: &Env) {
    let (a, b, p) = ("15550013001", "15550013002", "15550013003");
    let mut rx = env.sim.subscribe();
    let mut a1 = Device::start::<R>(env, "a1", a, 21).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 22).await;
    let phone = env.sim.add_account(p);
    let group = env.sim.account(a).unwrap().create_group("kinds", &[b, p]);
    let to_b = user(b);

    // B writes; A (the creator, an admin) reacts, then deletes it for everyone.
    let hello = b1.client.send_text(&group, "hello all").await.unwrap();
    let m = a1.receive_id(&hello).await;
    let id = a1.client.send_reaction(&m.reference(), "👋").await.unwrap();
    let node = sent_stanza(&mut rx, &id).await;
    let skmsg = node.child("enc").expect("the skmsg");
    assert_eq!(skmsg.attr_str("decrypt-fail"), Some("hide"));
    let r = b1.receive_id(&id).await;
    assert!(
        matches!(&r.content, Content::Reaction(x) if x.target.id == hello && x.target.from_me && x.target.author == Some(to_b.clone())),
        "{r:?}"
    );
    let id = a1.client.send_revoke(&m.reference()).await.unwrap();
    let node = sent_stanza(&mut rx, &id).await;
    assert_eq!(node.attr_str("edit"), Some("8"));
    assert_eq!(
        node.child("enc").and_then(|e| e.attr_str("decrypt-fail")),
        None
    );
    let r = b1.receive_id(&id).await;
    assert!(
        matches!(&r.content, Content::Revoke(x) if x.target.id == hello && x.by_admin && x.target.from_me),
        "{r:?}"
    );

    // A contact card in the group: the media type is on the skmsg.
    let ann = Contact::new("Ann", build::vcard("Ann", "15550001111"));
    let id = a1.client.send_contact(&group, &ann).await.unwrap();
    let node = sent_stanza(&mut rx, &id).await;
    assert_eq!(
        node.child("enc").and_then(|e| e.attr_str("mediatype")),
        Some("vcard")
    );
    assert_eq!(b1.receive_id(&id).await.content, Content::Contact(ann));

    // A group poll: B votes from its client, the phone of P from the phone; A tallies both.
    let poll = a1
        .client
        .send_poll(&group, "when?", &["now", "later"], 0)
        .await
        .unwrap();
    let pm = b1.receive_id(&poll.id).await;
    let vote = b1
        .client
        .send_poll_vote(&pm.reference(), &["later"])
        .await
        .unwrap();
    assert_eq!(vote_options(&a1.receive_id(&vote).await), ["later"]);
    let by_phone = build::poll_vote(
        &build::VoteKeys::new(
            pm.reference().key(&[user(p)]),
            &poll.id,
            &user(a),
            &user(p),
            &poll.secret,
        ),
        &[],
        &["now".into(), "later".into()],
        [5; 12],
        1,
    )
    .unwrap();
    let vote = phone.phone_send(&group, &by_phone).unwrap();
    assert_eq!(vote_options(&a1.receive_id(&vote).await), ["now", "later"]);

    for d in [&a1, &b1] {
        d.assert_all_decrypted();
    }
    for d in [a1, b1] {
        d.stop().await;
    }
}

async fn poll_votes_are_tallied_across_a_restart<R: Rt>(env: &Env) {
    let (a, b) = ("15550014001", "15550014002");
    let runtime = std::any::type_name::<R>()
        .rsplit("::")
        .next()
        .unwrap_or("rt");
    let db = fresh_db(&format!("kinds-poll-{runtime}"));
    let store = SqliteStore::open(&db).unwrap();
    store.save(&env.linked_credentials(a, 31)).await.unwrap();
    let mut a1 = Device::start_with::<R, _>(env, "a1", store).await;
    let mut b1 = Device::start::<R>(env, "b1", b, 32).await;
    let (to_a, to_b) = (user(a), user(b));

    // A's poll; B's poll.
    let a_poll = a1
        .client
        .send_poll(&to_b, "A asks", &["yes", "no"], 1)
        .await
        .unwrap();
    let at_b = b1.receive_id(&a_poll.id).await;
    let b_poll = b1
        .client
        .send_poll(&to_a, "B asks", &["red", "blue"], 0)
        .await
        .unwrap();
    let at_a = a1.receive_id(&b_poll.id).await;

    // A stops; B votes while A is away.
    a1.stop().await;
    let vote = b1
        .client
        .send_poll_vote(&at_b.reference(), &["no"])
        .await
        .unwrap();

    // A comes back from the database: the vote decrypts with the stored secret, and A's own
    // vote on B's poll is encrypted with the secret it stored when the poll came.
    let store = SqliteStore::open(&db).unwrap();
    let mut a1 = Device::restart::<R, _>(env, "a1 again", store).await;
    assert_eq!(vote_options(&a1.receive_id(&vote).await), ["no"]);
    let mine = a1
        .client
        .send_poll_vote(&at_a.reference(), &["red", "blue"])
        .await
        .unwrap();
    assert_eq!(vote_options(&b1.receive_id(&mine).await), ["red", "blue"]);

    for d in [&a1, &b1] {
        d.assert_all_decrypted();
    }
    for d in [a1, b1] {
        d.stop().await;
    }
    let _ = std::fs::remove_file(&db);
}

amarula_tests::on_both_drivers!(
    Env::pn_legacy();
    client_to_client,
    phone_to_client,
    group_kinds,
    poll_votes_are_tallied_across_a_restart,
);
