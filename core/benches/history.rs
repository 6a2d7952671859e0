//! History sync benchmark (`cargo bench -p amarula-core --bench history`).
//!
//! - `history_decode`: an initial-bootstrap chunk of N text messages in 20 chats, deflated as
//!   the phone sends it, inflated (with the cap) and decoded into typed conversations and
//!   messages (each message classified like a live one, its `WebMessageInfo` kept raw).
//! - `history_inflate`: the inflation alone, to show what the decoding costs on top.

use std::hint::black_box;

use amarula_core::history::{DEFAULT_MAX_INFLATED, decode, deflate, inflate};
use amarula_core::jid::Jid;
use amarula_proto::common::MessageKey;
use amarula_proto::e2e::Message;
use amarula_proto::generated::wa_web_protobufs_web::WebMessageInfo;
use amarula_proto::history_sync::{Conversation, HistorySync, HistorySyncMsg};
use divan::Bencher;
use divan::counter::ItemsCount;
use prost::Message as _;

fn main() {
    divan::main();
}

const SIZES: [usize; 3] = [1_000, 10_000, 50_000];
const CHATS: usize = 20;

/// A deflated bootstrap chunk of `n` messages spread over [`CHATS`] chats.
fn chunk(n: usize) -> Vec<u8> {
    let conversations = (0..CHATS)
        .map(|c| {
            let chat = format!("1555000{c:04}@s.whatsapp.net");
            Conversation {
                id: chat.clone(),
                messages: (0..n / CHATS)
                    .map(|i| HistorySyncMsg {
                        message: Some(WebMessageInfo {
                            key: MessageKey {
                                remote_jid: Some(chat.clone()),
                                from_me: Some(i % 3 == 0),
                                id: Some(format!("3EB0{c:04}{i:08}")),
                                participant: None,
                            },
                            message: Some(Message {
                                conversation: Some(format!(
                                    "message {i} in chat {c}, a sentence of ordinary length"
                                )),
                                ..Message::default()
                            }),
                            message_timestamp: Some(1_700_000_000 + i as u64),
                            ..WebMessageInfo::default()
                        }),
                        msg_order_id: Some(i as u64),
                    })
                    .collect(),
                unread_count: Some(1),
                ..Conversation::default()
            }
        })
        .collect();
    let sync = HistorySync {
        sync_type: 0,
        conversations,
        ..HistorySync::default()
    };
    deflate(&sync.encode_to_vec())
}

#[divan::bench(args = SIZES, sample_count = 20)]
fn history_decode(bencher: Bencher<'_, '_>, n: usize) {
    let blob = chunk(n);
    let own = ["15559999999@s.whatsapp.net".parse::<Jid>().unwrap()];
    bencher.counter(ItemsCount::new(n)).bench_local(|| {
        let c = decode(black_box(&blob), &own, DEFAULT_MAX_INFLATED).unwrap();
        black_box(c.message_count())
    });
}

#[divan::bench(args = SIZES, sample_count = 20)]
fn history_inflate(bencher: Bencher<'_, '_>, n: usize) {
    let blob = chunk(n);
    bencher.counter(ItemsCount::new(n)).bench_local(|| {
        black_box(
            inflate(black_box(&blob), DEFAULT_MAX_INFLATED)
                .unwrap()
                .len(),
        )
    });
}
