use amarula_proto::common::MessageKey;
use amarula_proto::e2e::Message;
use amarula_proto::generated::wa_web_protobufs_web::WebMessageInfo;
use amarula_proto::history_sync::{
    Conversation, HistorySync, HistorySyncMsg, PhoneNumberToLidMapping, Pushname,
};
use proptest::prelude::*;
use prost::Message as _;

use super::*;

fn j(s: &str) -> Jid {
    s.parse().unwrap()
}

fn text_msg(chat: &str, id: &str, from_me: bool, text: &str, t: u64) -> HistorySyncMsg {
    HistorySyncMsg {
        message: Some(WebMessageInfo {
            key: MessageKey {
                remote_jid: Some(chat.into()),
                from_me: Some(from_me),
                id: Some(id.into()),
                participant: None,
            },
            message: Some(Message {
                conversation: Some(text.into()),
                ..Default::default()
            }),
            message_timestamp: Some(t),
            push_name: Some("Bob".into()),
            ..Default::default()
        }),
        msg_order_id: Some(t),
    }
}

fn sample() -> HistorySync {
    HistorySync {
        sync_type: 0,
        chunk_order: Some(1),
        progress: Some(50),
        conversations: vec![
            Conversation {
                id: "111@s.whatsapp.net".into(),
                messages: vec![
                    text_msg("111@s.whatsapp.net", "A1", false, "hello", 10),
                    text_msg("111@s.whatsapp.net", "A2", true, "hi back", 11),
                    HistorySyncMsg {
                        message: None,
                        msg_order_id: None,
                    },
                ],
                unread_count: Some(2),
                archived: Some(true),
                pinned: Some(1234),
                mute_end_time: Some(99),
                lid_jid: Some("777@lid".into()),
                tc_token: Some(Bytes::from_static(b"token")),
                tc_token_timestamp: Some(5),
                name: Some("Bob".into()),
                ..Default::default()
            },
            Conversation {
                id: "123-456@g.us".into(),
                name: Some("Group".into()),
                ..Default::default()
            },
        ],
        pushnames: vec![Pushname {
            id: Some("111@s.whatsapp.net".into()),
            pushname: Some("Bobby".into()),
        }],
        phone_number_to_lid_mappings: vec![
            PhoneNumberToLidMapping {
                pn_jid: Some("222@s.whatsapp.net".into()),
                lid_jid: Some("888@lid".into()),
            },
            // The conversation's own pair again: kept once.
            PhoneNumberToLidMapping {
                pn_jid: Some("111@s.whatsapp.net".into()),
                lid_jid: Some("777@lid".into()),
            },
            // Swapped: refused.
            PhoneNumberToLidMapping {
                pn_jid: Some("999@lid".into()),
                lid_jid: Some("333@s.whatsapp.net".into()),
            },
        ],
        ..Default::default()
    }
}

#[test]
fn decodes_a_chunk() {
    let own = [j("555@s.whatsapp.net")];
    let blob = deflate(&sample().encode_to_vec());
    let chunk = decode(&blob, &own, DEFAULT_MAX_INFLATED).unwrap();
    assert_eq!(chunk.sync_type, SyncType::InitialBootstrap);
    assert_eq!(chunk.chunk_order, Some(1));
    assert_eq!(chunk.progress, Some(50));
    assert_eq!(chunk.conversations.len(), 2);
    let c = &chunk.conversations[0];
    assert_eq!(c.id, Some(j("111@s.whatsapp.net")));
    assert!(c.archived);
    assert_eq!(c.pinned, Some(1234));
    assert_eq!(c.mute_end_ms, Some(99));
    assert_eq!(c.unread_count, Some(2));
    assert_eq!(c.messages.len(), 2);
    assert_eq!(chunk.skipped_messages, 1);
    let m = &c.messages[0];
    assert_eq!(m.id, "A1");
    assert!(!m.from_me);
    assert_eq!(m.sender, j("111@s.whatsapp.net"));
    assert!(matches!(&m.content, Content::Text { text, .. } if text == "hello"));
    assert_eq!(m.timestamp, 10);
    let back = WebMessageInfo::decode(m.raw.clone()).unwrap();
    assert_eq!(back.key.id.as_deref(), Some("A1"));
    let me = &c.messages[1];
    assert!(me.from_me);
    assert_eq!(me.sender, own[0]);
    assert_eq!(chunk.push_names.len(), 1);
    assert_eq!(chunk.push_names[0].name, "Bobby");
    assert_eq!(
        chunk.lid_mappings,
        vec![
            LidPn {
                lid: j("888@lid"),
                phone: j("222@s.whatsapp.net")
            },
            LidPn {
                lid: j("777@lid"),
                phone: j("111@s.whatsapp.net")
            },
        ]
    );
    assert_eq!(chunk.tokens.len(), 1);
    assert_eq!(chunk.tokens[0].token, Bytes::from_static(b"token"));
    assert_eq!(chunk.tokens[0].timestamp, Some(5));
    assert_eq!(chunk.conversations[1].name.as_deref(), Some("Group"));
    assert_eq!(chunk.message_count(), 2);
}

#[test]
fn sync_types_round_trip() {
    for v in -1..9 {
        assert_eq!(SyncType::from_i32(v).to_i32(), v);
    }
    assert_eq!(SyncType::from_i32(6), SyncType::OnDemand);
    assert_eq!(SyncType::from_i32(4), SyncType::PushName);
}

#[test]
fn cap_is_enforced() {
    let plain = vec![0u8; 10_000];
    let blob = deflate(&plain);
    assert_eq!(inflate(&blob, 10_000).unwrap().len(), 10_000);
    assert_eq!(
        inflate(&blob, 9_999),
        Err(HistoryError::TooLarge { limit: 9_999 })
    );
    assert!(matches!(
        decode(&blob, &[], 100),
        Err(HistoryError::TooLarge { limit: 100 })
    ));
}

#[test]
fn broken_input_is_an_error() {
    assert!(matches!(
        inflate(b"not zlib", 1000),
        Err(HistoryError::Inflate(_))
    ));
    // Valid zlib, not a protobuf.
    let blob = deflate(&[0xff, 0xff, 0xff]);
    assert!(matches!(
        decode(&blob, &[], 1000),
        Err(HistoryError::Decode(_))
    ));
}

proptest! {
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, &[], 4096);
    }

    #[test]
    fn any_protobuf_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&deflate(&bytes), &[j("1@s.whatsapp.net")], 4096);
    }

    #[test]
    fn cap_respected(len in 0usize..20_000, max in 0usize..20_000) {
        let blob = deflate(&vec![7u8; len]);
        match inflate(&blob, max) {
            Ok(out) => { prop_assert!(len <= max); prop_assert_eq!(out.len(), len); }
            Err(e) => { prop_assert!(len > max); prop_assert_eq!(e, HistoryError::TooLarge { limit: max }); }
        }
    }
}

#[test]
fn a_decoded_message_is_small() {
    // What a chunk holds per message stays far below the generated WebMessageInfo (16 KiB).
    assert!(
        size_of::<HistoryMessage>() <= 1024,
        "{}",
        size_of::<HistoryMessage>()
    );
}
