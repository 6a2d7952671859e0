//! The tokio driver with the SQLite store in a file: a first client logs in (the server's
//! `<success lid>` changes the credentials) and relays a message; a second client started
//! from the same file logs in with the stored credentials (no pairing) and has the sent
//! message back in its cache.

#![cfg(all(feature = "tokio", feature = "sqlite"))]

mod common;

use std::future::Future;

use amarula::core::binary::Node;
use amarula::core::jid::Jid;
use amarula::core::machine::{Event, MessageAckResult};
use amarula::store::{CredentialStore, SqliteDatabase, SqliteStore};
use amarula::{ClientEvent, Events};
use bytes::Bytes;
use common::{Pki, STEP, client_config, is_logged_in, paired_credentials, serve};
use tokio::net::TcpListener;

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Events until login; panics on a pairing QR (the stored credentials must be used).
async fn until_logged_in(events: &mut Events) {
    within("login", async {
        loop {
            match events.recv().await {
                Some(e) if is_logged_in(&e) => return,
                Some(ClientEvent::Event(Event::PairingQr { .. })) => panic!("asked to pair"),
                Some(_) => {}
                None => panic!("events ended before login"),
            }
        }
    })
    .await;
}

async fn server(pki: &Pki) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pki = pki.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let pki = pki.clone();
            tokio::spawn(async move {
                if let Ok(ws) = async_tungstenite::tokio::accept_async(tcp).await {
                    serve(ws, pki).await;
                }
            });
        }
    });
    addr
}

async fn stop(client: amarula::Client, mut events: Events) {
    within("stop", client.stop()).await;
    within("stopped", async {
        while let Some(e) = events.recv().await {
            if matches!(e, ClientEvent::Stopped) {
                return;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_second_run_logs_in_from_the_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("amarula.db");
    let pki = Pki::new();
    let addr = server(&pki).await;

    // The device was paired in an earlier run: its credentials are in the file.
    let store = SqliteStore::open(&path).expect("open");
    store.save(&paired_credentials()).await.expect("seed");
    let (client, mut events) = amarula::tokio::connect(client_config(addr, &pki), store)
        .await
        .expect("connect");
    until_logged_in(&mut events).await;
    let message = Node::new("message")
        .attr("id", "3EB0SQLITE")
        .attr(
            "to",
            "15550001111@s.whatsapp.net".parse::<Jid>().expect("valid"),
        )
        .attr("type", "text");
    let ack = within(
        "the ack",
        client.relay_stanza(message, Bytes::from_static(b"plaintext")),
    )
    .await
    .expect("relay");
    assert!(matches!(ack, MessageAckResult::Delivered { .. }));
    stop(client, events).await;

    // A new process: the same file, opened again.
    let db = SqliteDatabase::open(&path).expect("reopen");
    let store = db
        .account(amarula::store::DEFAULT_ACCOUNT)
        .expect("account");
    let stored = store.load().await.expect("load").expect("credentials");
    assert!(stored.is_paired());
    assert_eq!(
        stored.own_lid.as_ref().map(ToString::to_string).as_deref(),
        Some("123456789012345@lid"),
        "the login's LID was stored"
    );
    let sent = store.load_sent().await.expect("load_sent");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].id, "3EB0SQLITE");
    assert_eq!(&sent[0].context[..], b"plaintext");

    let (client, mut events) = amarula::tokio::connect(client_config(addr, &pki), store.clone())
        .await
        .expect("connect again");
    until_logged_in(&mut events).await;
    stop(client, events).await;
    assert!(
        store
            .load()
            .await
            .expect("load")
            .is_some_and(|c| c.is_paired())
    );
}
