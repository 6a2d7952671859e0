//! Every message kind through the machine, on virtual time against a scripted server and
//! remote Signal devices: the exact stanza attributes each kind is sent with (1:1, group, and
//! retry resends), what the receiver decrypts and classifies, the poll secret persisted before
//! the poll's frame, and votes that wait for a secret loaded from the store.

use amarula_core::binary::Node;
use amarula_core::content::build::{self, BuildError, MessageRef};
use amarula_core::content::{self, Contact, Content, Location, Origin, VoteState};
use amarula_core::jid::Jid;
use amarula_core::machine::{
    Config, Event, IncomingMessage, MessagingError, Output, SendError, Session,
};
use amarula_core::persist::{Change, SecretKey};
use amarula_core::signal::PreKeyBundle;
use amarula_proto::e2e::{self, Message};
use amarula_tests::expect::{self, result_for};
use amarula_tests::harness::Pair;
use amarula_tests::peer::{Peer, bundle_from_upload};
use prost::Message as _;

const OWN: &str = "15551234567:7@s.whatsapp.net";
const OWN_USER: &str = "15551234567@s.whatsapp.net";
const OWN_PHONE: &str = "15551234567:0@s.whatsapp.net";
const BOB: &str = "15550009999:0@s.whatsapp.net";
const BOB_USER: &str = "15550009999@s.whatsapp.net";
const GROUP: &str = "120363000000000001@g.us";

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn config() -> Config {
    Config {
        end_to_end: true,
        prekey_upload_count: 8,
        prekey_refill_count: 4,
        ..Pair::config()
    }
}

/// A logged-in machine that uploaded its prekeys; the bundle a peer would fetch for it.
fn logged_in(seed: u8) -> (Pair, PreKeyBundle) {
    let mut pair = expect::logged_in(config(), expect::seeds(seed));
    let count = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&count).children([Node::new("count").attr("value", "0")]));
    let upload = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&upload));
    (pair, bundle_from_upload(&upload))
}

fn device_list(user: &str, devices: &[&str]) -> Node {
    Node::new("user")
        .attr("jid", jid(user))
        .children([
            Node::new("devices").children([Node::new("device-list").children(
                devices
                    .iter()
                    .map(|d| Node::new("device").attr("id", *d).attr("key-index", "1"))
                    .collect::<Vec<_>>(),
            )]),
        ])
}

/// Answers the usync and bundle queries a first send to Bob raises (Bob: device 0; us: our
/// phone and this device). Returns the relayed stanza.
fn answer_first_send(pair: &mut Pair, bob: &mut Peer, phone: &mut Peer) -> Node {
    let usync = pair.server.last("iq").unwrap().clone();
    assert_eq!(usync.attr_str("xmlns"), Some("usync"));
    pair.server_send(&result_for(&usync).children([Node::new("usync").children([
        Node::new("list").children([
            device_list(BOB_USER, &["0"]),
            device_list(OWN_USER, &["0", "7"]),
        ]),
    ])]));
    let key = pair.server.last("iq").unwrap().clone();
    assert_eq!(key.attr_str("xmlns"), Some("encrypt"));
    pair.server_send(
        &result_for(&key)
            .children([Node::new("list").children([bob.bundle_node(), phone.bundle_node()])]),
    );
    pair.server.last("message").expect("relayed").clone()
}

/// The `<enc>` for `device` in a fan-out.
fn enc_for<'a>(msg: &'a Node, device: &str) -> &'a Node {
    msg.child("participants")
        .unwrap()
        .child_nodes()
        .iter()
        .find(|t| t.attr_jid("jid").unwrap().to_string() == device)
        .and_then(|t| t.child("enc"))
        .unwrap_or_else(|| panic!("no enc for {device} in {msg}"))
}

/// (type, edit, mediatype, decrypt-fail, polltype).
type Said<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

/// What a stanza says: (type, edit, mediatype, hide, polltype) of the message and one enc.
fn said<'a>(msg: &'a Node, enc: &'a Node) -> Said<'a> {
    (
        msg.attr_str("type"),
        msg.attr_str("edit"),
        enc.attr_str("mediatype"),
        enc.attr_str("decrypt-fail"),
        msg.child("meta").and_then(|m| m.attr_str("polltype")),
    )
}

/// What Bob makes of a message from us.
fn at_bob(m: &Message) -> content::Classified {
    content::classify(
        m,
        &Origin {
            chat: &jid(OWN_USER),
            sender: &jid(OWN),
            own: &[jid(BOB_USER)],
        },
    )
}

/// The last message handed out.
fn last_message(events: &[Event]) -> IncomingMessage {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Message(m) => Some((**m).clone()),
            _ => None,
        })
        .expect("a message")
}

/// A stanza from Bob carrying `message`.
fn from_bob(bob: &mut Peer, bundle: Option<&PreKeyBundle>, id: &str, message: &Message) -> Node {
    let enc = bob.encrypt(&jid(OWN), bundle, &message.encode_to_vec());
    Node::new("message")
        .attr("from", jid(BOB))
        .attr("id", id)
        .attr("type", "text")
        .attr("t", "1700000000")
        .children([enc])
}

/// A chat with Bob: a first text went out (queries answered) and Bob answered "lunch?" (id
/// `B1`) on that session.
struct Chat {
    pair: Pair,
    bob: Peer,
    phone: Peer,
    /// Bob's "lunch?".
    lunch: IncomingMessage,
}

impl Chat {
    fn new(seed: u8) -> Self {
        let (mut pair, _) = logged_in(seed);
        let (mut bob, mut phone) = (Peer::new(BOB, seed), Peer::new(OWN_PHONE, seed + 1));
        pair.client
            .send_text(pair.now, &jid(BOB_USER), "hi")
            .unwrap();
        pair.drive();
        let first = answer_first_send(&mut pair, &mut bob, &mut phone);
        bob.decrypt(&jid(OWN), enc_for(&first, BOB)).unwrap();
        phone
            .decrypt(&jid(OWN), enc_for(&first, OWN_PHONE))
            .unwrap();
        let lunch = peer_text("lunch?");
        let stanza = from_bob(&mut bob, None, "B1", &lunch);
        pair.server_send(&stanza);
        let lunch = last_message(&pair.events);
        assert_eq!(lunch.text(), Some("lunch?"));
        Self {
            pair,
            bob,
            phone,
            lunch,
        }
    }

    /// The stanza of the last send, and what Bob and our phone decrypt from it.
    fn sent(&mut self) -> (Node, Message, Message) {
        self.pair.drive();
        let msg = self.pair.server.last("message").unwrap().clone();
        let to_bob = self.bob.decrypt(&jid(OWN), enc_for(&msg, BOB)).unwrap();
        let to_phone = self
            .phone
            .decrypt(&jid(OWN), enc_for(&msg, OWN_PHONE))
            .unwrap();
        let dsm = to_phone
            .device_sent_message
            .expect("our own device gets it wrapped");
        assert_eq!(dsm.destination_jid.as_deref(), Some(BOB_USER));
        (msg, to_bob, *dsm.message.unwrap())
    }
}

fn peer_text(s: &str) -> Message {
    Message {
        conversation: Some(s.to_owned()),
        ..Message::default()
    }
}

#[test]
fn each_kind_is_sent_with_its_stanza_attributes() {
    let mut c = Chat::new(40);
    let bob = jid(BOB_USER);
    let lunch = c.lunch.reference();
    let now = c.pair.now;

    // A reply with a mention.
    let id = c
        .pair
        .client
        .send_text(
            now,
            &bob,
            build::Text::new("yes @15550009999")
                .reply_to(c.lunch.quote())
                .mention(bob.clone()),
        )
        .unwrap();
    let (msg, got, own_copy) = c.sent();
    assert_eq!(msg.attr_str("id"), Some(id.as_str()));
    let enc = enc_for(&msg, BOB);
    assert_eq!(said(&msg, enc), (Some("text"), None, None, None, None));
    assert_eq!(own_copy, got, "our phone gets the same content");
    let context = at_bob(&got).context.expect("a context");
    let reply = context.reply.expect("a reply");
    assert_eq!(reply.stanza_id, "B1");
    assert_eq!(reply.participant, Some(bob.clone()));
    assert_eq!(
        reply.quoted.unwrap().conversation.as_deref(),
        Some("lunch?")
    );
    assert_eq!(context.mentions, std::slice::from_ref(&bob));

    // A reaction, then its removal.
    c.pair.client.send_reaction(now, &lunch, "👍").unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("reaction"), None, None, Some("hide"), None)
    );
    assert_eq!(
        said(&msg, enc_for(&msg, OWN_PHONE)).3,
        Some("hide"),
        "every pairwise enc"
    );
    let Content::Reaction(r) = at_bob(&got).content else {
        panic!("{got:?}")
    };
    assert_eq!((r.target.id.as_str(), r.target.from_me), ("B1", true));
    assert_eq!(r.emoji, "👍");
    c.pair.client.send_reaction(now, &lunch, "").unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("reaction"), Some("7"), None, Some("hide"), None)
    );
    assert!(matches!(at_bob(&got).content, Content::Reaction(r) if r.is_removal()));

    // An edit of our first message, with a fresh id.
    let hi = MessageRef::ours(bob.clone(), id.clone());
    let edit_id = c
        .pair
        .client
        .send_edit(now, &hi, peer_text("yes, at noon"))
        .unwrap();
    assert_ne!(edit_id, id);
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("text"), Some("1"), None, Some("hide"), None)
    );
    let classified = at_bob(&got);
    assert!(
        classified.wrappers.edited,
        "whatsmeow's editedMessage shape"
    );
    let Content::Edit(e) = classified.content else {
        panic!("{got:?}")
    };
    assert_eq!(e.target.id, id);
    assert!(e.by_author && !e.target.from_me);
    assert!(matches!(&*e.content, Content::Text { text, .. } if text == "yes, at noon"));

    // A revoke of it: never hidden.
    c.pair.client.send_revoke(now, &hi).unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("text"), Some("7"), None, None, None)
    );
    let Content::Revoke(r) = at_bob(&got).content else {
        panic!("{got:?}")
    };
    assert_eq!(r.target.id, id);
    assert!(!r.by_admin);

    // Contacts and a location.
    let ann = Contact::new("Ann", build::vcard("Ann", "15550001111"));
    c.pair.client.send_contact(now, &bob, &ann).unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("media"), None, Some("vcard"), None, None)
    );
    assert_eq!(
        enc_for(&msg, OWN_PHONE).attr_str("mediatype"),
        Some("vcard")
    );
    assert_eq!(at_bob(&got).content, Content::Contact(ann.clone()));
    c.pair
        .client
        .send_contacts(now, &bob, "two", &[ann.clone(), ann.clone()])
        .unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("media"), None, Some("contact_array"), None, None)
    );
    assert!(
        matches!(at_bob(&got).content, Content::Contacts { contacts, .. } if contacts.len() == 2)
    );
    let mut dam = Location::new(52.3731, 4.8922);
    dam.name = Some("Dam".into());
    c.pair.client.send_location(now, &bob, &dam).unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("text"), None, None, None, None)
    );
    assert_eq!(at_bob(&got).content, Content::Location(Box::new(dam)));

    // Any message: an image (attributes from the content).
    let image = Message {
        image_message: Some(Box::new(e2e::ImageMessage {
            caption: Some("look".into()),
            ..e2e::ImageMessage::default()
        })),
        ..Message::default()
    };
    c.pair.client.send_message(now, &bob, image).unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("media"), None, Some("image"), None, None)
    );
    assert!(
        matches!(at_bob(&got).content, Content::Media(m) if m.caption.as_deref() == Some("look"))
    );

    // A poll: its secret is kept and persisted, and its votes decrypt.
    let poll = c
        .pair
        .client
        .send_poll(now, &bob, "where?", &["here", "there"], 1)
        .unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("poll"), None, None, None, Some("creation"))
    );
    let classified = at_bob(&got);
    let Content::Poll(p) = &classified.content else {
        panic!("{got:?}")
    };
    assert_eq!(p.options, ["here", "there"]);
    assert_eq!(p.selectable_count, 1);
    assert_eq!(p.secret.as_deref(), Some(&poll.secret[..]));
    // Bob votes for "there".
    let vote = build::poll_vote(
        &build::VoteKeys::new(
            MessageRef::theirs(jid(OWN_USER), poll.id.clone(), jid(OWN_USER))
                .key(std::slice::from_ref(&bob)),
            &poll.id,
            &jid(OWN_USER),
            &bob,
            &poll.secret,
        ),
        &[],
        &["there".into()],
        [9; 12],
        1,
    )
    .unwrap();
    let stanza = from_bob(&mut c.bob, None, "B2", &vote);
    c.pair.server_send(&stanza);
    let got = last_message(&c.pair.events);
    let Content::PollVote(v) = &got.content else {
        panic!("{got:?}")
    };
    assert_eq!(v.poll.id, poll.id);
    assert!(v.poll.from_me);
    assert!(
        matches!(&v.state, VoteState::Decrypted { options, .. } if options == &["there"]),
        "{:?}",
        v.state
    );
}

#[test]
fn a_vote_on_a_received_poll_is_encrypted_with_its_secret() {
    let mut c = Chat::new(50);
    let secret = [3u8; 32];
    let options = vec!["tea".to_owned(), "coffee".to_owned()];
    let poll = build::poll("drink?", &options, 0, secret).unwrap();
    let stanza = from_bob(&mut c.bob, None, "BP", &poll);
    c.pair.server_send(&stanza);
    let received = last_message(&c.pair.events);
    assert!(matches!(&received.content, Content::Poll(p) if p.options == options));
    let now = c.pair.now;
    c.pair
        .client
        .send_poll_vote(now, &received.reference(), &["coffee"])
        .unwrap();
    let (msg, got, _) = c.sent();
    assert_eq!(
        said(&msg, enc_for(&msg, BOB)),
        (Some("poll"), None, None, Some("hide"), Some("vote"))
    );
    // Bob decrypts our vote with his poll's secret.
    let Content::PollVote(mut v) = at_bob(&got).content else {
        panic!("{got:?}")
    };
    assert_eq!((v.poll.id.as_str(), v.poll.from_me), ("BP", true));
    v.decrypt(&secret, &options, &jid(BOB_USER), &jid(OWN_USER))
        .unwrap();
    assert!(matches!(v.state, VoteState::Decrypted { options, .. } if options == ["coffee"]));
    // A name the poll lacks fails the send.
    let id = c
        .pair
        .client
        .send_poll_vote(now, &received.reference(), &["water"])
        .unwrap();
    c.pair.drive();
    assert!(c.pair.events.iter().any(|e| matches!(
        e,
        Event::SendFailed { id: i, error: MessagingError::Build(BuildError::UnknownOption(o)) }
            if *i == id && o == "water"
    )));
}

#[test]
fn the_poll_secret_is_persisted_before_the_frame() {
    let mut c = Chat::new(60);
    let now = c.pair.now;
    let poll = c
        .pair
        .client
        .send_poll(now, &jid(BOB_USER), "q", &["a", "b"], 0)
        .unwrap();
    let mut outputs = Vec::new();
    while let Some(o) = c.pair.client.poll_output() {
        outputs.push(o);
    }
    let secret = outputs
        .iter()
        .position(|o| {
            matches!(o, Output::Event(Event::Persist(Change::MessageSecret { key, .. }))
                if key.id == poll.id && key.author == jid(OWN_USER) && key.chat == jid(BOB_USER))
        })
        .expect("the secret persisted");
    let frame = outputs
        .iter()
        .position(|o| matches!(o, Output::Transmit(_)))
        .expect("the poll's frame");
    let cached = outputs
        .iter()
        .position(|o| matches!(o, Output::Event(Event::MessageCached(_))))
        .expect("cached");
    assert!(secret < cached && cached < frame);
    let Output::Event(Event::Persist(Change::MessageSecret { record, .. })) = &outputs[secret]
    else {
        unreachable!()
    };
    let record = content::SecretRecord::from_bytes(record).unwrap();
    assert_eq!(record.secret, &poll.secret[..]);
    assert_eq!(record.options, ["a", "b"]);
}

#[test]
fn a_vote_waits_for_a_secret_loaded_from_the_store() {
    let mut c = Chat::new(70);
    let secret = [4u8; 32];
    let options = vec!["x".to_owned(), "y".to_owned()];
    let stanza = from_bob(
        &mut c.bob,
        None,
        "BP2",
        &build::poll("?", &options, 0, secret).unwrap(),
    );
    c.pair.server_send(&stanza);
    let poll = last_message(&c.pair.events).reference();
    let key = SecretKey {
        chat: jid(BOB_USER),
        author: jid(BOB_USER),
        id: "BP2".into(),
    };
    assert!(c.pair.store.secrets.contains_key(&key), "kept on receipt");
    // A new process: nothing in memory, everything in the store.
    let creds = c.pair.client.credentials().clone();
    let store = c.pair.store.clone();
    let session = Session::new(creds, &config());
    let mut next = Pair::at_with_store(config(), session, expect::seeds(71), c.pair.now, store);
    expect::log_in(&mut next);
    let id = next.client.send_poll_vote(next.now, &poll, &["y"]).unwrap();
    next.drive();
    assert!(
        next.events.iter().any(|e| matches!(
            e,
            Event::Load(r) if r.message_secrets == [key.clone()]
        )),
        "the secret is asked for"
    );
    let msg = next
        .server
        .last("message")
        .expect("the vote went out")
        .clone();
    assert_eq!(msg.attr_str("id"), Some(id.as_str()));
    let got = c.bob.decrypt(&jid(OWN), enc_for(&msg, BOB)).unwrap();
    let Content::PollVote(mut v) = at_bob(&got).content else {
        panic!("{got:?}")
    };
    v.decrypt(&secret, &options, &jid(BOB_USER), &jid(OWN_USER))
        .unwrap();
    assert!(matches!(v.state, VoteState::Decrypted { options, .. } if options == ["y"]));
    // A poll nobody knows: the vote fails, and later sends to the chat go on.
    let unknown = MessageRef::theirs(jid(BOB_USER), "NOPE", jid(BOB_USER));
    let failed = next
        .client
        .send_poll_vote(next.now, &unknown, &["y"])
        .unwrap();
    next.drive();
    assert!(next.events.iter().any(|e| matches!(
        e,
        Event::SendFailed { id, error: MessagingError::PollSecretUnknown } if *id == failed
    )));
    let after = next
        .client
        .send_text(next.now, &jid(BOB_USER), "after")
        .unwrap();
    next.drive();
    assert_eq!(
        next.server.last("message").unwrap().attr_str("id"),
        Some(after.as_str())
    );
}

#[test]
fn a_retry_resend_carries_the_same_attributes() {
    let mut c = Chat::new(80);
    let now = c.pair.now;
    let lunch = c.lunch.reference();
    let reaction = c.pair.client.send_reaction(now, &lunch, "🎉").unwrap();
    c.sent();
    let poll = c
        .pair
        .client
        .send_poll(now, &jid(BOB_USER), "q", &["a", "b"], 0)
        .unwrap();
    c.sent();
    for (id, want) in [
        (reaction, (Some("reaction"), None, None, Some("hide"), None)),
        (poll.id, (Some("poll"), None, None, None, Some("creation"))),
    ] {
        let receipt = Node::new("receipt")
            .attr("id", id.as_str())
            .attr("from", jid(BOB))
            .attr("type", "retry")
            .attr("t", "1700000002")
            .children([
                Node::new("retry")
                    .attr("count", "1")
                    .attr("id", id.as_str())
                    .attr("t", "1700000001")
                    .attr("v", "1"),
                Node::new("registration").bytes(vec![0, 0, 0, 1]),
            ]);
        c.pair.server_send(&receipt);
        let resent = c.pair.server.last("message").unwrap().clone();
        assert_eq!(resent.attr_str("id"), Some(id.as_str()));
        assert_eq!(resent.attr_str("device_fanout"), Some("false"));
        let enc = resent.child("enc").unwrap();
        assert_eq!(enc.attr_str("count"), Some("1"));
        assert_eq!(said(&resent, enc), want, "{resent}");
    }
}

#[test]
fn group_sends_put_the_media_type_on_the_skmsg_and_hide_everywhere() {
    let (mut pair, _) = logged_in(90);
    let (mut bob, mut phone) = (Peer::new(BOB, 91), Peer::new(OWN_PHONE, 92));
    let group = jid(GROUP);
    let ann = Contact::new("Ann", build::vcard("Ann", "15550001111"));
    pair.client.send_contact(pair.now, &group, &ann).unwrap();
    pair.drive();
    let meta = pair.server.last("iq").unwrap().clone();
    assert_eq!(meta.attr_str("xmlns"), Some("w:g2"));
    pair.server_send(&result_for(&meta).children([Node::new("group").children([
        Node::new("participant").attr("jid", jid(OWN_USER)),
        Node::new("participant").attr("jid", jid(BOB_USER)),
    ])]));
    let usync = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&usync).children([Node::new("usync").children([
        Node::new("list").children([
            device_list(BOB_USER, &["0"]),
            device_list(OWN_USER, &["0", "7"]),
        ]),
    ])]));
    let key = pair.server.last("iq").unwrap().clone();
    pair.server_send(
        &result_for(&key)
            .children([Node::new("list").children([bob.bundle_node(), phone.bundle_node()])]),
    );
    let msg = pair.server.last("message").unwrap().clone();
    let skmsg = msg.child("enc").unwrap();
    assert_eq!(skmsg.attr_str("type"), Some("skmsg"));
    assert_eq!(
        said(&msg, skmsg),
        (Some("media"), None, Some("vcard"), None, None)
    );
    // The key-distribution encs carry no content: no media type.
    assert_eq!(enc_for(&msg, BOB).attr_str("mediatype"), None);
    for peer in [&mut bob, &mut phone] {
        let skdm = peer
            .decrypt(&jid(OWN), enc_for(&msg, &peer.jid.to_string()))
            .unwrap();
        assert!(skdm.sender_key_distribution_message.is_some());
        let got = peer.decrypt_group(&group, &jid(OWN), skmsg).unwrap();
        assert!(got.contact_message.is_some());
    }
    // A reaction to Bob's group message names Bob; hidden on the skmsg too.
    let target = MessageRef::theirs(group.clone(), "G1", jid(BOB));
    pair.client.send_reaction(pair.now, &target, "❤").unwrap();
    pair.drive();
    let msg = pair.server.last("message").unwrap().clone();
    let skmsg = msg.child("enc").unwrap();
    assert_eq!(
        said(&msg, skmsg),
        (Some("reaction"), None, None, Some("hide"), None)
    );
    let got = bob.decrypt_group(&group, &jid(OWN), skmsg).unwrap();
    let key = got.reaction_message.unwrap().key.unwrap();
    assert_eq!(key.participant.as_deref(), Some(BOB_USER));
    assert_eq!(key.from_me, Some(false));
    // An admin revoke of Bob's message.
    pair.client.send_revoke(pair.now, &target).unwrap();
    pair.drive();
    let msg = pair.server.last("message").unwrap().clone();
    let skmsg = msg.child("enc").unwrap();
    assert_eq!(
        said(&msg, skmsg),
        (Some("text"), Some("8"), None, None, None)
    );
    let got = bob.decrypt_group(&group, &jid(OWN), skmsg).unwrap();
    let classified = content::classify(
        &got,
        &Origin {
            chat: &group,
            sender: &jid(OWN),
            own: &[jid(BOB_USER)],
        },
    );
    assert!(matches!(classified.content, Content::Revoke(r) if r.by_admin && r.target.from_me));
}

#[test]
fn misuse_is_refused_at_once() {
    let mut c = Chat::new(100);
    let now = c.pair.now;
    let lunch = c.lunch.reference();
    assert_eq!(
        c.pair.client.send_edit(now, &lunch, peer_text("mine now")),
        Err(SendError::InvalidContent(BuildError::NotOurs))
    );
    assert_eq!(
        c.pair.client.send_revoke(now, &lunch),
        Err(SendError::InvalidContent(
            BuildError::AdminRevokeOutsideGroup
        ))
    );
    assert_eq!(
        c.pair
            .client
            .send_poll(now, &jid(BOB_USER), "q", &["a", "a"], 0),
        Err(SendError::InvalidContent(BuildError::DuplicateOption(
            "a".into()
        )))
    );
    let empty: [&str; 0] = [];
    assert_eq!(
        c.pair.client.send_poll(now, &jid(BOB_USER), "q", &empty, 0),
        Err(SendError::InvalidContent(BuildError::NoOptions))
    );
}

#[test]
fn an_unacknowledged_vote_goes_again_with_the_same_attributes_after_a_crash() {
    let mut c = Chat::new(110);
    let secret = [6u8; 32];
    let options = vec!["up".to_owned(), "down".to_owned()];
    let stanza = from_bob(
        &mut c.bob,
        None,
        "BP3",
        &build::poll("?", &options, 0, secret).unwrap(),
    );
    c.pair.server_send(&stanza);
    let poll = last_message(&c.pair.events).reference();
    let now = c.pair.now;
    let id = c.pair.client.send_poll_vote(now, &poll, &["up"]).unwrap();
    let (first, _, _) = c.sent();
    assert_eq!(first.attr_str("id"), Some(id.as_str()));
    // A crash before the server's ack: the next process sends the cached vote again, the same
    // bytes under the same id, with the same attributes.
    let store = c.pair.store.clone();
    let mut session = Session::new(c.pair.client.credentials().clone(), &config());
    session.restore_outbox(store.unacked());
    let mut next = Pair::at_with_store(config(), session, expect::seeds(111), c.pair.now, store);
    expect::log_in(&mut next);
    let again = next.server.last("message").expect("sent again").clone();
    assert_eq!(again.attr_str("id"), Some(id.as_str()));
    assert_eq!(
        said(&again, enc_for(&again, BOB)),
        (Some("poll"), None, None, Some("hide"), Some("vote"))
    );
    let got = c.bob.decrypt(&jid(OWN), enc_for(&again, BOB)).unwrap();
    let Content::PollVote(mut v) = at_bob(&got).content else {
        panic!("{got:?}")
    };
    v.decrypt(&secret, &options, &jid(BOB_USER), &jid(OWN_USER))
        .unwrap();
    assert!(matches!(v.state, VoteState::Decrypted { options, .. } if options == ["up"]));
}
