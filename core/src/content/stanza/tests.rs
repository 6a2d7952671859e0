use amarula_proto::e2e::{self, Message};

use super::*;
use crate::content::build::{self, MessageRef, Quote, Text};
use crate::content::{Contact, Location};
use crate::jid::Jid;

fn jid(s: &str) -> Jid {
    s.parse().expect("test JID")
}

fn own() -> Vec<Jid> {
    vec![jid("111@s.whatsapp.net")]
}

/// (type, mediatype, edit, hide, meta) of a message, as strings.
fn attrs(
    m: &Message,
) -> (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    bool,
    Option<Meta>,
) {
    let a = StanzaAttrs::of(m);
    (
        a.message_type.as_str(),
        a.media_type,
        a.edit.map(EditAttr::as_str),
        a.hide,
        a.meta,
    )
}

/// One expected row per kind.
macro_rules! case {
    ($m:expr => $ty:literal, $media:expr, $edit:expr, $hide:literal, $meta:expr) => {
        assert_eq!(
            attrs(&$m),
            ($ty, $media, $edit, $hide, $meta),
            "{}",
            stringify!($m)
        );
    };
}

fn wrap(f: fn(&mut Message, Option<Box<e2e::FutureProofMessage>>), inner: Message) -> Message {
    let mut m = Message::default();
    f(
        &mut m,
        Some(Box::new(e2e::FutureProofMessage {
            message: Some(Box::new(inner)),
        })),
    );
    m
}

#[test]
fn every_kind_gets_whatsmeows_attributes() {
    let chat = jid("222@s.whatsapp.net");
    let group = jid("120363000000000001@g.us");
    let me = jid("111@s.whatsapp.net");
    let theirs = MessageRef::theirs(chat.clone(), "T1", chat.clone());
    let ours = MessageRef::ours(chat.clone(), "O1");
    let plain = Text::new("hi").to_message(&chat, &me);
    let reply = Text::new("re")
        .reply_to(Quote::new(theirs.clone(), plain.clone()))
        .mention(jid("333@s.whatsapp.net"))
        .to_message(&chat, &me);
    let options = vec!["a".to_owned(), "b".to_owned()];
    let poll = build::poll("q", &options, 0, [1; 32]).unwrap();
    let vote = build::poll_vote(
        &build::VoteKeys::new(theirs.key(&own()), "T1", &chat, &me, &[1; 32]),
        &options,
        &["a".into()],
        [0; 12],
        0,
    )
    .unwrap();
    let card = Contact::new("Ann", build::vcard("Ann", "15550001111"));
    let image = Message {
        image_message: Some(Box::default()),
        ..Message::default()
    };
    let voice = Message {
        audio_message: Some(Box::new(e2e::AudioMessage {
            ptt: Some(true),
            ..e2e::AudioMessage::default()
        })),
        ..Message::default()
    };
    let gif = Message {
        video_message: Some(Box::new(e2e::VideoMessage {
            gif_playback: Some(true),
            ..e2e::VideoMessage::default()
        })),
        ..Message::default()
    };
    let preview = Message {
        extended_text_message: Some(Box::new(e2e::ExtendedTextMessage {
            text: Some("see https://x.invalid".into()),
            title: Some("X".into()),
            ..e2e::ExtendedTextMessage::default()
        })),
        ..Message::default()
    };
    let live = Message {
        live_location_message: Some(Box::default()),
        ..Message::default()
    };
    let admin = MessageRef::theirs(group, "G1", jid("333@s.whatsapp.net"));

    case!(plain => "text", None, None, false, None);
    case!(reply => "text", None, None, false, None);
    case!(build::reaction(theirs.key(&own()), "👍", 1) => "reaction", None, None, true, None);
    case!(build::reaction(theirs.key(&own()), "", 1) => "reaction", None, Some("7"), true, None);
    case!(build::edit(ours.key(&own()), plain, 1) => "text", None, Some("1"), true, None);
    // Revokes are never hidden (the server drops hidden revokes).
    case!(build::revoke(ours.key(&own())) => "text", None, Some("7"), false, None);
    case!(build::revoke(admin.key(&own())) => "text", None, Some("8"), false, None);
    case!(poll => "poll", None, None, false, Some(Meta::PollCreation));
    case!(vote => "poll", None, None, true, Some(Meta::PollVote));
    case!(build::contact(&card) => "media", Some("vcard"), None, false, None);
    case!(build::contacts("two", &[card.clone(), card]) => "media", Some("contact_array"), None, false, None);
    // whatsmeow gives locations no media type.
    case!(build::location(&Location::new(52.37, 4.89)) => "text", None, None, false, None);
    case!(live => "text", None, None, false, None);
    case!(image => "media", Some("image"), None, false, None);
    case!(voice => "media", Some("ptt"), None, false, None);
    case!(gif => "media", Some("gif"), None, false, None);
    case!(preview => "media", Some("url"), None, false, None);
    // Wrappers are looked through.
    case!(wrap(|m, w| m.ephemeral_message = w, image) => "media", Some("image"), None, false, None);
    case!(wrap(|m, w| m.view_once_message_v2 = w, voice) => "media", Some("ptt"), None, false, None);
    case!(wrap(|m, w| m.ephemeral_message = w, vote) => "poll", None, None, true, Some(Meta::PollVote));
}

#[test]
fn pins_and_keep_in_chat() {
    let key = MessageRef::ours(jid("222@s.whatsapp.net"), "K").key(&own());
    let pin = Message {
        pin_in_chat_message: Some(e2e::PinInChatMessage {
            key: Some(key.clone()),
            r#type: Some(1),
            sender_timestamp_ms: Some(1),
        }),
        ..Message::default()
    };
    case!(pin => "text", None, Some("2"), true, None);
    let undo = Message {
        keep_in_chat_message: Some(e2e::KeepInChatMessage {
            key: Some(key),
            keep_type: Some(e2e::KeepType::UndoKeepForAll as i32),
            timestamp_ms: Some(1),
        }),
        ..Message::default()
    };
    case!(undo => "text", None, Some("7"), true, None);
}

#[test]
fn meta_nodes() {
    assert_eq!(
        Meta::PollCreation.node().attr_str("polltype"),
        Some("creation")
    );
    assert_eq!(Meta::PollVote.node().attr_str("polltype"), Some("vote"));
}
