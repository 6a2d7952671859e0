//! Receiving every kind of message (MESSAGES.md §3, §4): each decrypted message that carries
//! anything besides key distribution reaches the application, typed, with its raw plaintext,
//! and neither the delivery receipt nor the ack leaves before the application confirms it;
//! wrappers are peeled and flagged; poll votes decrypt with the poll's stored secret, after a
//! restart too.

use amarula_core::binary::Node;
use amarula_core::content::{self, Content, MediaKind, UseCase, VoteState};
use amarula_core::jid::Jid;
use amarula_core::machine::{Config, Confirm, Event, IncomingMessage, Session};
use amarula_core::persist::SecretKey;
use amarula_core::signal::PreKeyBundle;
use amarula_proto::common::MessageKey;
use amarula_proto::e2e::{self, Message};
use amarula_tests::expect::{self, result_for};
use amarula_tests::harness::Pair;
use amarula_tests::peer::{Peer, bundle_from_upload};
use prost::Message as _;

const OWN: &str = "15551234567:7@s.whatsapp.net";
const OWN_USER: &str = "15551234567@s.whatsapp.net";
const BOB: &str = "15550009999:0@s.whatsapp.net";
const BOB_USER: &str = "15550009999@s.whatsapp.net";

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

fn logged_in(seed: u8) -> (Pair, PreKeyBundle) {
    let mut pair = expect::logged_in(config(), expect::seeds(seed));
    let count = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&count).children([Node::new("count").attr("value", "0")]));
    let upload = pair.server.last("iq").unwrap().clone();
    pair.server_send(&result_for(&upload));
    let bundle = bundle_from_upload(&upload);
    (pair, bundle)
}

fn messages(events: &[Event]) -> Vec<&IncomingMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(&**m),
            _ => None,
        })
        .collect()
}

fn stanza(from: &Jid, id: &str, enc: Node) -> Node {
    Node::new("message")
        .attr("from", from.clone())
        .attr("id", id)
        .attr("type", "text")
        .attr("t", "1700000000")
        .children([enc])
}

/// Bob and a logged-in client with a session between them (one message exchanged).
struct Chat {
    pair: Pair,
    bob: Peer,
    n: usize,
}

impl Chat {
    fn new(seed: u8) -> Self {
        let (mut pair, bundle) = logged_in(seed);
        let mut bob = Peer::new(BOB, seed);
        let enc = bob.encrypt_text(&jid(OWN), Some(&bundle), "hello");
        pair.server_send(&stanza(&bob.jid, "M0", enc));
        let token = messages(&pair.events)[0].ack.expect("held");
        pair.confirm(token, Confirm::Ack).unwrap();
        Self { pair, bob, n: 0 }
    }

    /// Bob sends `plaintext`; returns the message the application got. Checks that nothing
    /// left for the server before the confirmation and that the receipt and the ack leave
    /// with it.
    fn receive(&mut self, plaintext: &[u8]) -> IncomingMessage {
        self.n += 1;
        let id = format!("K{}", self.n);
        let before_events = messages(&self.pair.events).len();
        let before = self.pair.server.received.len();
        let enc = self.bob.encrypt(&jid(OWN), None, plaintext);
        self.pair.server_send(&stanza(&self.bob.jid, &id, enc));
        let msgs = messages(&self.pair.events);
        assert_eq!(msgs.len(), before_events + 1, "{id}: one message event");
        let m = msgs[before_events].clone();
        assert_eq!(m.id, id);
        assert_eq!(&m.raw[..], plaintext, "{id}: the raw plaintext is kept");
        assert!(
            self.pair.server.received_since(before).is_empty(),
            "{id}: nothing acknowledged before the application confirmed"
        );
        assert!(
            self.pair
                .store
                .pending
                .iter()
                .any(|p| p.id == m.pending_key),
            "{id}: stored as pending before the event"
        );
        self.pair
            .confirm(m.ack.expect("held"), Confirm::Ack)
            .unwrap();
        let sent = self.pair.server.received_since(before);
        let tags: Vec<&str> = sent.iter().map(|n| &*n.tag).collect();
        // The delivery receipt is the acknowledgement (SESSION.md §5.1).
        assert_eq!(tags, ["receipt"], "{id}");
        assert_eq!(sent[0].attr_str("id"), Some(id.as_str()));
        m
    }
}

fn future(m: Message) -> Option<Box<e2e::FutureProofMessage>> {
    Some(Box::new(e2e::FutureProofMessage {
        message: Some(Box::new(m)),
    }))
}

fn text(s: &str) -> Message {
    Message {
        conversation: Some(s.to_owned()),
        ..Message::default()
    }
}

fn skdm() -> Option<e2e::SenderKeyDistributionMessage> {
    Some(e2e::SenderKeyDistributionMessage {
        group_id: Some("120363000000000001@g.us".into()),
        axolotl_sender_key_distribution_message: Some(vec![0x33, 1, 2].into()),
    })
}

#[test]
fn a_message_of_unknown_fields_reaches_the_application_raw() {
    let mut chat = Chat::new(30);
    // Field 9999 (a varint) and field 4242 (bytes): no schema knows them.
    let raw = [0xf8, 0xe1, 0x04, 0x01, 0x92, 0x89, 0x02, 0x02, b'h', b'i'];
    let m = chat.receive(&raw);
    assert_eq!(m.content, Content::Unknown);
    assert_eq!(m.message, Message::default());
    // Unknown fields next to a sender key distribution are content too.
    let mut with_skdm = Message {
        sender_key_distribution_message: skdm(),
        ..Message::default()
    }
    .encode_to_vec();
    with_skdm.extend_from_slice(&raw);
    let m = chat.receive(&with_skdm);
    assert_eq!(m.content, Content::Unknown);
}

#[test]
fn every_wrapper_and_kind_waits_for_the_application() {
    use e2e::protocol_message::Type;
    let mut chat = Chat::new(31);
    let image = Message {
        image_message: Some(Box::new(e2e::ImageMessage {
            caption: Some("look".into()),
            ..Default::default()
        })),
        ..Message::default()
    };
    let video = Message {
        video_message: Some(Box::new(e2e::VideoMessage::default())),
        ..Message::default()
    };
    let audio = Message {
        audio_message: Some(Box::new(e2e::AudioMessage {
            ptt: Some(true),
            ..Default::default()
        })),
        ..Message::default()
    };
    let document = Message {
        document_message: Some(Box::new(e2e::DocumentMessage {
            file_name: Some("a.pdf".into()),
            ..Default::default()
        })),
        ..Message::default()
    };
    let sticker = Message {
        sticker_message: Some(Box::new(e2e::StickerMessage::default())),
        ..Message::default()
    };
    let edit = Message {
        protocol_message: Some(Box::new(e2e::ProtocolMessage {
            key: Some(MessageKey {
                remote_jid: Some(OWN_USER.into()),
                from_me: Some(true),
                id: Some("M0".into()),
                participant: None,
            }),
            r#type: Some(Type::MessageEdit as i32),
            edited_message: Some(Box::new(text("edited"))),
            ..Default::default()
        })),
        ..Message::default()
    };
    let wrap = |f: fn(&mut Message, Option<Box<e2e::FutureProofMessage>>), inner: Message| {
        let mut m = Message::default();
        f(&mut m, future(inner));
        m
    };
    let cases: Vec<(&str, Message)> = vec![
        (
            "ephemeral",
            wrap(|m, w| m.ephemeral_message = w, text("secret")),
        ),
        (
            "view once",
            wrap(|m, w| m.view_once_message = w, image.clone()),
        ),
        (
            "view once v2",
            wrap(|m, w| m.view_once_message_v2 = w, video),
        ),
        (
            "view once v2 extension",
            wrap(|m, w| m.view_once_message_v2_extension = w, audio),
        ),
        (
            "document with caption",
            wrap(|m, w| m.document_with_caption_message = w, document),
        ),
        ("edited", wrap(|m, w| m.edited_message = w, edit.clone())),
        (
            "bot invoke",
            wrap(|m, w| m.bot_invoke_message = w, text("bot")),
        ),
        ("lottie", wrap(|m, w| m.lottie_sticker_message = w, sticker)),
        (
            "group mentioned",
            wrap(|m, w| m.group_mentioned_message = w, text("@all")),
        ),
        ("bare edit", edit),
        ("image with a key distribution", {
            let mut m = image;
            m.sender_key_distribution_message = skdm();
            m
        }),
        (
            "history sync notification",
            Message {
                protocol_message: Some(Box::new(e2e::ProtocolMessage {
                    r#type: Some(Type::HistorySyncNotification as i32),
                    ..Default::default()
                })),
                ..Message::default()
            },
        ),
        (
            "app state key share",
            Message {
                protocol_message: Some(Box::new(e2e::ProtocolMessage {
                    r#type: Some(Type::AppStateSyncKeyShare as i32),
                    ..Default::default()
                })),
                ..Message::default()
            },
        ),
        (
            "reaction",
            Message {
                reaction_message: Some(e2e::ReactionMessage {
                    key: Some(MessageKey {
                        remote_jid: Some(OWN_USER.into()),
                        from_me: Some(false),
                        id: Some("X1".into()),
                        participant: None,
                    }),
                    text: Some("❤".into()),
                    ..Default::default()
                }),
                ..Message::default()
            },
        ),
        (
            "event",
            Message {
                event_message: Some(Box::new(e2e::EventMessage {
                    name: Some("party".into()),
                    ..Default::default()
                })),
                ..Message::default()
            },
        ),
    ];
    for (name, message) in cases {
        let m = chat.receive(&message.encode_to_vec());
        let w = m.wrappers;
        match name {
            "ephemeral" => {
                assert!(w.ephemeral);
                assert_eq!(m.text(), Some("secret"));
            }
            "view once" => {
                assert!(w.view_once);
                assert_eq!(m.text(), Some("look"));
            }
            "view once v2" | "view once v2 extension" => {
                assert!(w.view_once, "{name}");
                assert!(matches!(m.content, Content::Media(_)), "{name}");
            }
            "document with caption" => {
                assert!(w.document_with_caption);
                assert!(
                    matches!(&m.content, Content::Media(d) if d.kind == Some(MediaKind::Document))
                );
            }
            "edited" | "bare edit" => {
                assert_eq!(w.edited, name == "edited");
                let Content::Edit(e) = &m.content else {
                    panic!("{name}: {:?}", m.content)
                };
                assert_eq!(e.target.id, "M0");
                assert_eq!(e.target.author, Some(jid(BOB_USER)));
                assert!(e.by_author);
            }
            "bot invoke" => assert!(w.bot_invoke && m.text() == Some("bot")),
            "lottie" => assert!(w.lottie_sticker),
            "group mentioned" => assert!(w.group_mentioned),
            "image with a key distribution" => {
                assert!(matches!(m.content, Content::Media(_)));
            }
            "history sync notification" => {
                assert_eq!(m.content, Content::Protocol(Type::HistorySyncNotification));
            }
            "app state key share" => {
                assert_eq!(m.content, Content::Protocol(Type::AppStateSyncKeyShare));
            }
            "reaction" => {
                let Content::Reaction(r) = &m.content else {
                    panic!()
                };
                assert!(r.target.from_me);
                assert_eq!(r.emoji, "❤");
            }
            "event" => assert_eq!(m.content, Content::Other("eventMessage")),
            other => unreachable!("{other}"),
        }
    }
}

#[test]
fn key_distribution_alone_is_consumed_by_the_machine() {
    let mut chat = Chat::new(32);
    let before_events = messages(&chat.pair.events).len();
    let before = chat.pair.server.received.len();
    let message = Message {
        sender_key_distribution_message: skdm(),
        message_context_info: Some(e2e::MessageContextInfo::default()),
        ..Message::default()
    };
    let enc = chat.bob.encrypt(&jid(OWN), None, &message.encode_to_vec());
    chat.pair.server_send(&stanza(&chat.bob.jid, "S1", enc));
    assert_eq!(messages(&chat.pair.events).len(), before_events);
    let sent = chat.pair.server.received_since(before);
    let tags: Vec<&str> = sent.iter().map(|n| &*n.tag).collect();
    assert_eq!(tags, ["receipt"]);
}

/// Bob's poll P1 in our chat, with its secret.
fn poll(secret: [u8; 32]) -> Message {
    Message {
        poll_creation_message: Some(Box::new(e2e::PollCreationMessage {
            name: Some("lunch?".into()),
            options: ["pizza", "sushi", "salad"]
                .iter()
                .map(|o| e2e::poll_creation_message::Option {
                    option_name: Some((*o).into()),
                    ..Default::default()
                })
                .collect(),
            selectable_options_count: Some(0),
            ..Default::default()
        })),
        message_context_info: Some(e2e::MessageContextInfo {
            message_secret: Some(secret.to_vec().into()),
            ..Default::default()
        }),
        ..Message::default()
    }
}

/// Bob's vote on his own poll `poll_id`.
fn vote(secret: &[u8; 32], poll_id: &str, options: &[&str]) -> Message {
    let plain = e2e::PollVoteMessage {
        selected_options: options
            .iter()
            .map(|o| content::option_hash(o).to_vec().into())
            .collect(),
    };
    let iv = [4u8; 12];
    let enc = content::encrypt_addon(
        secret,
        poll_id,
        &jid(BOB_USER),
        &jid(BOB_USER),
        UseCase::PollVote,
        &iv,
        &plain.encode_to_vec(),
    );
    Message {
        poll_update_message: Some(e2e::PollUpdateMessage {
            poll_creation_message_key: Some(MessageKey {
                remote_jid: Some(OWN_USER.into()),
                from_me: Some(true),
                id: Some(poll_id.into()),
                participant: None,
            }),
            vote: Some(e2e::PollEncValue {
                enc_payload: Some(enc.into()),
                enc_iv: Some(iv.to_vec().into()),
            }),
            ..Default::default()
        }),
        ..Message::default()
    }
}

fn voted(m: &IncomingMessage) -> &VoteState {
    match &m.content {
        Content::PollVote(v) => &v.state,
        other => panic!("not a vote: {other:?}"),
    }
}

#[test]
fn poll_votes_decrypt_with_the_stored_secret_after_a_restart() {
    let mut chat = Chat::new(33);
    let secret = [0x5a; 32];
    let m = chat.receive(&poll(secret).encode_to_vec());
    let Content::Poll(p) = &m.content else {
        panic!("{:?}", m.content)
    };
    assert_eq!(p.options, ["pizza", "sushi", "salad"]);
    let poll_id = m.id.to_string();
    let key = SecretKey {
        chat: jid(BOB_USER),
        author: jid(BOB_USER),
        id: poll_id.clone(),
    };
    assert!(chat.pair.store.secrets.contains_key(&key), "secret stored");

    // Before a restart the secret is held.
    let m = chat.receive(&vote(&secret, &poll_id, &["sushi"]).encode_to_vec());
    assert!(
        matches!(voted(&m), VoteState::Decrypted { options, .. } if options == &["sushi"]),
        "{:?}",
        voted(&m)
    );

    // A new process: the secret is loaded from the store when a vote needs it.
    let creds = chat.pair.client.credentials().clone();
    let store = chat.pair.store.clone();
    let session = Session::new(creds, &config());
    let mut next = Pair::at_with_store(config(), session, expect::seeds(34), chat.pair.now, store);
    expect::log_in(&mut next);
    chat.pair = next;
    let m = chat.receive(&vote(&secret, &poll_id, &["pizza", "salad"]).encode_to_vec());
    assert!(
        chat.pair
            .events
            .iter()
            .any(|e| matches!(e, Event::Load(r) if r.message_secrets == [key.clone()])),
        "the secret was asked for"
    );
    assert!(
        matches!(voted(&m), VoteState::Decrypted { options, .. } if options == &["pizza", "salad"]),
        "{:?}",
        voted(&m)
    );
    // A withdrawn vote is an empty selection.
    let m = chat.receive(&vote(&secret, &poll_id, &[]).encode_to_vec());
    assert!(matches!(voted(&m), VoteState::Decrypted { options, .. } if options.is_empty()));
}

#[test]
fn a_vote_that_cannot_be_decrypted_still_reaches_the_application() {
    let mut chat = Chat::new(35);
    // A poll we never saw.
    let m = chat.receive(&vote(&[1; 32], "NOPOLL", &["x"]).encode_to_vec());
    assert_eq!(
        voted(&m),
        &VoteState::Undecrypted(content::SecretError::UnknownSecret)
    );
    // A vote under the wrong secret.
    let secret = [2; 32];
    let p = chat.receive(&poll(secret).encode_to_vec());
    let m = chat.receive(&vote(&[3; 32], &p.id, &["pizza"]).encode_to_vec());
    assert_eq!(
        voted(&m),
        &VoteState::Undecrypted(content::SecretError::Decrypt)
    );
}
