use amarula_proto::common::MessageKey;
use amarula_proto::e2e::{self, Message};
use prost::Message as _;

use super::*;

fn jid(s: &str) -> Jid {
    s.parse().expect("test JID")
}

struct Fixture {
    chat: Jid,
    sender: Jid,
    own: Vec<Jid>,
}

impl Fixture {
    /// A chat of two: 222 writes to us (111).
    fn dm() -> Self {
        Self {
            chat: jid("222@s.whatsapp.net"),
            sender: jid("222:1@s.whatsapp.net"),
            own: vec![jid("111@s.whatsapp.net"), jid("9111@lid")],
        }
    }

    fn group() -> Self {
        Self {
            chat: jid("120363000000000001@g.us"),
            sender: jid("222:1@s.whatsapp.net"),
            own: vec![jid("111@s.whatsapp.net"), jid("9111@lid")],
        }
    }

    fn classify(&self, m: &Message) -> Classified {
        classify(
            m,
            &Origin {
                chat: &self.chat,
                sender: &self.sender,
                own: &self.own,
            },
        )
    }
}

fn key(remote: &str, from_me: bool, id: &str, participant: Option<&str>) -> MessageKey {
    MessageKey {
        remote_jid: Some(remote.to_owned()),
        from_me: Some(from_me),
        id: Some(id.to_owned()),
        participant: participant.map(str::to_owned),
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

#[test]
fn text_reply_and_mentions() {
    let m = Message {
        extended_text_message: Some(Box::new(e2e::ExtendedTextMessage {
            text: Some("hi @333".into()),
            context_info: Some(Box::new(e2e::ContextInfo {
                stanza_id: Some("Q1".into()),
                participant: Some("111@s.whatsapp.net".into()),
                quoted_message: Some(Box::new(text("first"))),
                mentioned_jid: vec!["333@s.whatsapp.net".into()],
                ..e2e::ContextInfo::default()
            })),
            ..e2e::ExtendedTextMessage::default()
        })),
        ..Message::default()
    };
    let c = Fixture::dm().classify(&m);
    assert!(matches!(&c.content, Content::Text { text, .. } if text == "hi @333"));
    let ctx = c.context.expect("context");
    let reply = ctx.reply.expect("reply");
    assert_eq!(reply.stanza_id, "Q1");
    assert_eq!(reply.participant, Some(jid("111@s.whatsapp.net")));
    assert_eq!(reply.quoted.as_deref(), Some(&text("first")));
    assert_eq!(ctx.mentions, vec![jid("333@s.whatsapp.net")]);
}

#[test]
fn wrappers_are_peeled_and_flagged() {
    let image = Message {
        image_message: Some(Box::new(e2e::ImageMessage {
            caption: Some("cap".into()),
            mimetype: Some("image/jpeg".into()),
            ..e2e::ImageMessage::default()
        })),
        ..Message::default()
    };
    let wrapped = Message {
        ephemeral_message: future(Message {
            view_once_message_v2: future(image),
            ..Message::default()
        }),
        ..Message::default()
    };
    let c = Fixture::dm().classify(&wrapped);
    assert!(c.wrappers.ephemeral && c.wrappers.view_once);
    let Content::Media(m) = c.content else {
        panic!("not media: {:?}", c.content)
    };
    assert_eq!(m.kind, Some(MediaKind::Image));
    assert_eq!(m.caption.as_deref(), Some("cap"));

    let doc = Message {
        document_with_caption_message: future(Message {
            document_message: Some(Box::new(e2e::DocumentMessage {
                file_name: Some("a.pdf".into()),
                caption: Some("read".into()),
                ..e2e::DocumentMessage::default()
            })),
            ..Message::default()
        }),
        ..Message::default()
    };
    let c = Fixture::dm().classify(&doc);
    assert!(c.wrappers.document_with_caption);
    assert!(matches!(c.content, Content::Media(m) if m.file_name.as_deref() == Some("a.pdf")));
}

#[test]
fn wrapper_nesting_is_bounded() {
    let mut m = text("deep");
    for _ in 0..40 {
        m = Message {
            ephemeral_message: future(m),
            ..Message::default()
        };
    }
    // Past the limit the rest is left as a wrapper: no recursion without end, no panic.
    let c = Fixture::dm().classify(&m);
    assert!(c.wrappers.ephemeral);
    assert!(matches!(c.content, Content::Other(_)));
}

#[test]
fn reaction_targets_resolve_to_the_receiver_view() {
    let f = Fixture::dm();
    // 222 reacts to our message: from its view the target is not its own.
    let m = Message {
        reaction_message: Some(e2e::ReactionMessage {
            key: Some(key("111@s.whatsapp.net", false, "M1", None)),
            text: Some("👍".into()),
            sender_timestamp_ms: Some(5),
            ..e2e::ReactionMessage::default()
        }),
        ..Message::default()
    };
    let Content::Reaction(r) = f.classify(&m).content else {
        panic!()
    };
    assert_eq!(r.target.id, "M1");
    assert!(r.target.from_me);
    assert_eq!(r.target.author, Some(jid("111@s.whatsapp.net")));
    assert!(!r.is_removal());

    // In a group, the removal of a reaction to a message of 333.
    let g = Fixture::group();
    let m = Message {
        reaction_message: Some(e2e::ReactionMessage {
            key: Some(key(
                "120363000000000001@g.us",
                false,
                "M2",
                Some("333@s.whatsapp.net"),
            )),
            text: Some(String::new()),
            ..e2e::ReactionMessage::default()
        }),
        ..Message::default()
    };
    let Content::Reaction(r) = g.classify(&m).content else {
        panic!()
    };
    assert!(r.is_removal());
    assert!(!r.target.from_me);
    assert_eq!(r.target.author, Some(jid("333@s.whatsapp.net")));

    // Our LID counts as us.
    let m = Message {
        reaction_message: Some(e2e::ReactionMessage {
            key: Some(key(
                "120363000000000001@g.us",
                false,
                "M3",
                Some("9111@lid"),
            )),
            text: Some("x".into()),
            ..e2e::ReactionMessage::default()
        }),
        ..Message::default()
    };
    let Content::Reaction(r) = g.classify(&m).content else {
        panic!()
    };
    assert!(r.target.from_me);
}

fn protocol(
    kind: e2e::protocol_message::Type,
    key: MessageKey,
    edited: Option<Message>,
) -> Message {
    Message {
        protocol_message: Some(Box::new(e2e::ProtocolMessage {
            key: Some(key),
            r#type: Some(kind as i32),
            edited_message: edited.map(Box::new),
            timestamp_ms: Some(77),
            ..e2e::ProtocolMessage::default()
        })),
        ..Message::default()
    }
}

#[test]
fn edits_in_both_shapes() {
    use e2e::protocol_message::Type;
    let f = Fixture::dm();
    let bare = protocol(
        Type::MessageEdit,
        key("111@s.whatsapp.net", true, "E1", None),
        Some(text("fixed")),
    );
    let wrapped = Message {
        edited_message: future(bare.clone()),
        ..Message::default()
    };
    for (m, flagged) in [(bare, false), (wrapped, true)] {
        let c = f.classify(&m);
        assert_eq!(c.wrappers.edited, flagged);
        let Content::Edit(e) = c.content else {
            panic!("{:?}", c.content)
        };
        assert_eq!(e.target.id, "E1");
        assert_eq!(e.target.author, Some(jid("222@s.whatsapp.net")));
        assert!(!e.target.from_me);
        assert!(e.by_author);
        assert_eq!(e.timestamp_ms, Some(77));
        assert!(matches!(&*e.content, Content::Text { text, .. } if text == "fixed"));
    }
    // An edit of someone else's message is flagged.
    let m = protocol(
        Type::MessageEdit,
        key(
            "120363000000000001@g.us",
            false,
            "E2",
            Some("333@s.whatsapp.net"),
        ),
        Some(text("forged")),
    );
    let Content::Edit(e) = Fixture::group().classify(&m).content else {
        panic!()
    };
    assert!(!e.by_author);
}

#[test]
fn revokes_by_sender_and_admin() {
    use e2e::protocol_message::Type;
    let own = protocol(
        Type::Revoke,
        key("111@s.whatsapp.net", true, "R1", None),
        None,
    );
    let Content::Revoke(r) = Fixture::dm().classify(&own).content else {
        panic!()
    };
    assert_eq!(r.target.id, "R1");
    assert!(!r.by_admin);
    let admin = protocol(
        Type::Revoke,
        key(
            "120363000000000001@g.us",
            false,
            "R2",
            Some("111@s.whatsapp.net"),
        ),
        None,
    );
    let Content::Revoke(r) = Fixture::group().classify(&admin).content else {
        panic!()
    };
    assert!(r.by_admin);
    assert!(r.target.from_me);
}

#[test]
fn poll_and_vote() {
    let f = Fixture::group();
    let secret = [9u8; 32];
    let poll = Message {
        poll_creation_message_v3: Some(Box::new(e2e::PollCreationMessage {
            name: Some("lunch?".into()),
            options: ["pizza", "sushi"]
                .iter()
                .map(|o| e2e::poll_creation_message::Option {
                    option_name: Some((*o).into()),
                    ..Default::default()
                })
                .collect(),
            selectable_options_count: Some(1),
            ..e2e::PollCreationMessage::default()
        })),
        message_context_info: Some(e2e::MessageContextInfo {
            message_secret: Some(secret.to_vec().into()),
            ..e2e::MessageContextInfo::default()
        }),
        ..Message::default()
    };
    let Content::Poll(p) = f.classify(&poll).content else {
        panic!()
    };
    assert_eq!(p.options, ["pizza", "sushi"]);
    assert_eq!((p.version, p.selectable_count), (3, 1));
    assert_eq!(p.secret.as_deref(), Some(&secret[..]));

    // 222 votes for sushi on our poll P1.
    let creator = jid("111@s.whatsapp.net");
    let voter = jid("222@s.whatsapp.net");
    let iv = [3u8; 12];
    let vote = e2e::PollVoteMessage {
        selected_options: vec![option_hash("sushi").to_vec().into()],
    };
    let enc = encrypt_addon(
        &secret,
        "P1",
        &creator,
        &voter,
        UseCase::PollVote,
        &iv,
        &vote.encode_to_vec(),
    );
    let m = Message {
        poll_update_message: Some(e2e::PollUpdateMessage {
            poll_creation_message_key: Some(key(
                "120363000000000001@g.us",
                false,
                "P1",
                Some("111@s.whatsapp.net"),
            )),
            vote: Some(e2e::PollEncValue {
                enc_payload: Some(enc.into()),
                enc_iv: Some(iv.to_vec().into()),
            }),
            ..e2e::PollUpdateMessage::default()
        }),
        ..Message::default()
    };
    let Content::PollVote(mut v) = f.classify(&m).content else {
        panic!()
    };
    assert!(v.poll.from_me);
    assert!(matches!(
        v.state,
        VoteState::Undecrypted(SecretError::UnknownSecret)
    ));
    let options = p.options;
    assert_eq!(
        v.decrypt(&[1u8; 32], &options, &creator, &voter),
        Err(SecretError::Decrypt)
    );
    v.decrypt(&secret, &options, &creator, &voter)
        .expect("decrypts");
    let VoteState::Decrypted { options, hashes } = &v.state else {
        panic!()
    };
    assert_eq!(options, &["sushi"]);
    assert_eq!(hashes.len(), 1);
}

#[test]
fn other_and_unknown() {
    let f = Fixture::dm();
    let event = Message {
        event_message: Some(Box::new(e2e::EventMessage {
            name: Some("party".into()),
            ..e2e::EventMessage::default()
        })),
        ..Message::default()
    };
    assert_eq!(f.classify(&event).content, Content::Other("eventMessage"));
    // A field number no schema has: the decoded message is empty.
    let raw = [0xf8, 0xe1, 0x04, 0x01];
    let m = Message::decode(&raw[..]).expect("unknown fields are skipped");
    assert_eq!(f.classify(&m).content, Content::Unknown);
    assert!(!is_key_distribution_only(&raw));
}

#[test]
fn protocol_kinds() {
    use e2e::protocol_message::Type;
    let f = Fixture::dm();
    let m = Message {
        protocol_message: Some(Box::new(e2e::ProtocolMessage {
            r#type: Some(Type::EphemeralSetting as i32),
            ephemeral_expiration: Some(86400),
            ..e2e::ProtocolMessage::default()
        })),
        ..Message::default()
    };
    assert_eq!(
        f.classify(&m).content,
        Content::EphemeralSetting { expiration: 86400 }
    );
    let m = Message {
        protocol_message: Some(Box::new(e2e::ProtocolMessage {
            r#type: Some(Type::HistorySyncNotification as i32),
            ..e2e::ProtocolMessage::default()
        })),
        ..Message::default()
    };
    let c = f.classify(&m);
    assert_eq!(c.content, Content::Protocol(Type::HistorySyncNotification));
    assert!(c.protocol.is_some());
    let m = Message {
        protocol_message: Some(Box::new(e2e::ProtocolMessage {
            r#type: Some(9999),
            ..e2e::ProtocolMessage::default()
        })),
        ..Message::default()
    };
    assert_eq!(f.classify(&m).content, Content::ProtocolUnknown(9999));
}

#[test]
fn contacts_and_locations() {
    let f = Fixture::dm();
    let card = e2e::ContactMessage {
        display_name: Some("Ann".into()),
        vcard: Some("BEGIN:VCARD\nEND:VCARD".into()),
        ..e2e::ContactMessage::default()
    };
    let m = Message {
        contacts_array_message: Some(Box::new(e2e::ContactsArrayMessage {
            display_name: Some("2 contacts".into()),
            contacts: vec![card.clone(), card],
            ..e2e::ContactsArrayMessage::default()
        })),
        ..Message::default()
    };
    assert!(
        matches!(f.classify(&m).content, Content::Contacts { contacts, .. } if contacts.len() == 2)
    );
    let m = Message {
        location_message: Some(Box::new(e2e::LocationMessage {
            degrees_latitude: Some(45.5),
            degrees_longitude: Some(-73.5),
            name: Some("here".into()),
            ..e2e::LocationMessage::default()
        })),
        ..Message::default()
    };
    assert!(
        matches!(f.classify(&m).content, Content::Location(l) if l.latitude == 45.5 && l.name.as_deref() == Some("here"))
    );
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    /// A message built from arbitrary bytes placed in the fields classification reads.
    fn nested(depth: u32) -> impl Strategy<Value = Message> {
        let leaf = proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
            Message::decode(&b[..]).unwrap_or_else(|_| Message {
                conversation: Some(String::from_utf8_lossy(&b).into_owned()),
                ..Message::default()
            })
        });
        leaf.prop_recursive(depth, 64, 4, |inner| {
            (inner, 0u8..6).prop_map(|(m, which)| {
                let w = future(m);
                let mut out = Message::default();
                match which {
                    0 => out.ephemeral_message = w,
                    1 => out.view_once_message_v2 = w,
                    2 => out.edited_message = w,
                    3 => out.document_with_caption_message = w,
                    4 => {
                        out.protocol_message = Some(Box::new(e2e::ProtocolMessage {
                            r#type: Some(14),
                            edited_message: w.and_then(|f| f.message),
                            ..e2e::ProtocolMessage::default()
                        }))
                    }
                    _ => out.bot_invoke_message = w,
                }
                out
            })
        })
    }

    proptest! {
        #[test]
        fn classify_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = top_level_fields(&bytes);
            let _ = is_key_distribution_only(&bytes);
            if let Ok(m) = Message::decode(&bytes[..]) {
                let _ = Fixture::group().classify(&m);
                let _ = Fixture::dm().classify(&m);
            }
        }

        #[test]
        fn classify_any_nesting(m in nested(12)) {
            let c = Fixture::dm().classify(&m);
            if let Content::PollVote(mut v) = c.content {
                let _ = v.decrypt(&[0; 32], &[], &jid("1@s.whatsapp.net"), &jid("2@s.whatsapp.net"));
            }
        }
    }
}
