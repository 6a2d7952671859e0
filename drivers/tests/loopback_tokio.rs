//! The tokio driver against the in-test server on 127.0.0.1: login, an IQ, a relayed message,
//! disconnect and reconnect, stop.

#![cfg(feature = "tokio")]

mod common;

use std::future::Future;

use amarula::core::binary::Node;
use amarula::core::credentials::Credentials;
use amarula::core::jid::Jid;
use amarula::core::machine::SentMessage;
use amarula::core::machine::{
    CloseReason, IqRequest, IqResult, MessageAckResult, Reconnect, SendError,
};
use amarula::store::{CredentialStore, StoreError};
use amarula::{ClientError, ClientEvent, Events, MemoryStore};
use bytes::Bytes;
use common::{Pki, STEP, client_config, is_logged_in, paired_credentials, serve_with, success};
use tokio::net::TcpListener;

/// `fut`, or a panic naming `what` after [`STEP`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The next event that `pred` accepts (others are skipped).
async fn until(
    events: &mut Events,
    what: &str,
    pred: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    within(what, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("events ended before {what}"),
            }
        }
    })
    .await
}

/// Starts the server: every accepted connection is served; returns its address.
async fn server(pki: &Pki) -> std::net::SocketAddr {
    server_with(pki, success()).await
}

/// As [`server`], answering the handshake with `login`.
async fn server_with(pki: &Pki, login: Node) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pki = pki.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (pki, login) = (pki.clone(), login.clone());
            tokio::spawn(async move {
                if let Ok(ws) = async_tungstenite::tokio::accept_async(tcp).await {
                    serve_with(ws, pki, login).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn login_iq_relay_disconnect_stop() {
    let pki = Pki::new();
    let addr = server(&pki).await;
    let store = MemoryStore::with_credentials(paired_credentials());
    let (client, mut events) = amarula::tokio::connect(client_config(addr, &pki), store.clone())
        .await
        .expect("connect");
    until(&mut events, "login", is_logged_in).await;
    // `<success lid>` changed the credentials: they were stored before the event arrived.
    assert!(store.credentials().is_some_and(|c| c.own_lid.is_some()));

    let request = IqRequest::iq("test", "get", Jid::server(), vec![Node::new("echo")]);
    let result = within("the IQ", client.query_iq(request))
        .await
        .expect("iq");
    let IqResult::Ok(reply) = result else {
        panic!("unexpected IQ result {result:?}");
    };
    assert!(reply.child("served").is_some() && reply.child("echo").is_some());

    let message = Node::new("message")
        .attr("id", "3EB0TEST")
        .attr(
            "to",
            "15550001111@s.whatsapp.net".parse::<Jid>().expect("valid"),
        )
        .attr("type", "text");
    let ack = within(
        "the ack",
        client.relay_stanza(message, Bytes::from_static(b"ctx")),
    )
    .await
    .expect("relay");
    assert!(matches!(
        ack,
        MessageAckResult::Delivered {
            t: Some(1_750_000_001),
            ..
        }
    ));
    assert_eq!(store.sent().len(), 1, "the relayed message was stored");

    // Disconnect closes the socket only: the client reconnects and logs in again.
    within("disconnect", client.disconnect())
        .await
        .expect("disconnect");
    let e = until(&mut events, "the disconnect", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        e,
        ClientEvent::Disconnected {
            reason: CloseReason::Local,
            reconnect: Reconnect::Now
        }
    ));
    until(&mut events, "the second connection", |e| {
        matches!(e, ClientEvent::Connecting { attempt: 2 })
    })
    .await;
    until(&mut events, "the second login", is_logged_in).await;
    let request = IqRequest::iq("test", "get", Jid::server(), vec![]);
    assert!(matches!(
        within("the IQ", client.query_iq(request)).await,
        Ok(IqResult::Ok(_))
    ));

    within("stop", client.stop()).await;
    let e = until(&mut events, "the close", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        e,
        ClientEvent::Disconnected {
            reason: CloseReason::Local,
            reconnect: Reconnect::Never
        }
    ));
    assert!(matches!(
        within("stopped", events.recv()).await,
        Some(ClientEvent::Stopped)
    ));
    assert!(within("the end", events.recv()).await.is_none());
    assert!(client.is_stopped());
    let request = IqRequest::iq("test", "get", Jid::server(), vec![]);
    assert_eq!(client.query_iq(request).await, Err(ClientError::Stopped));
}

#[tokio::test]
async fn fresh_store_refused_connect_backoff_then_stop() {
    // A port nobody listens on: bind, note the port, close.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let pki = Pki::new();
    let store = MemoryStore::new();
    let (client, mut events) = amarula::tokio::connect(client_config(addr, &pki), store.clone())
        .await
        .expect("connect");
    // Fresh credentials were generated and stored before connecting.
    assert!(store.credentials().is_some_and(|c| !c.is_paired()));
    let e = until(&mut events, "the failed connect", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        e,
        ClientEvent::Disconnected {
            reason: CloseReason::SocketClosed,
            reconnect: Reconnect::After(_)
        }
    ));
    // Between connections commands are refused as not connected.
    let request = IqRequest::iq("test", "get", Jid::server(), vec![]);
    assert_eq!(
        within("the refusal", client.query_iq(request)).await,
        Err(ClientError::Send(SendError::NotConnected))
    );
    within("stop", client.stop()).await;
    assert!(matches!(
        within("stopped", events.recv()).await,
        Some(ClientEvent::Stopped)
    ));
    assert!(within("the end", events.recv()).await.is_none());
}

#[tokio::test]
async fn logged_out_deletes_the_credentials_and_stops() {
    let pki = Pki::new();
    let addr = server_with(&pki, Node::new("failure").attr("reason", "401")).await;
    let store = MemoryStore::with_credentials(paired_credentials());
    let (client, mut events) = amarula::tokio::connect(client_config(addr, &pki), store.clone())
        .await
        .expect("connect");
    let e = until(&mut events, "the close", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        e,
        ClientEvent::Disconnected {
            reason: CloseReason::LoggedOut { code: 401 },
            reconnect: Reconnect::Never
        }
    ));
    assert!(
        store.credentials().is_none(),
        "logged out: credentials deleted"
    );
    assert!(matches!(
        within("stopped", events.recv()).await,
        Some(ClientEvent::Stopped)
    ));
    assert!(within("the end", events.recv()).await.is_none());
    assert!(client.is_stopped());
}

/// Loads paired credentials, then fails every save.
struct FailingStore;

impl CredentialStore for FailingStore {
    fn keeps_signal_state(&self) -> bool {
        true
    }
    async fn load(&self) -> Result<Option<Credentials>, StoreError> {
        Ok(Some(paired_credentials()))
    }
    async fn save(&self, _: &Credentials) -> Result<(), StoreError> {
        Err(StoreError::Io(std::io::Error::other("disk full")))
    }
    async fn save_sent(&self, _: &SentMessage) -> Result<(), StoreError> {
        Ok(())
    }
    // Every write fails, batches of Signal state (the LID pair `<success>` tells) included.
    async fn apply(&self, _: &[amarula::store::Change]) -> Result<(), StoreError> {
        Err(StoreError::Io(std::io::Error::other("disk full")))
    }
    async fn delete(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_store_write_stops_the_client() {
    let pki = Pki::new();
    let addr = server_with(&pki, success()).await;
    let (_client, mut events) = amarula::tokio::connect(client_config(addr, &pki), FailingStore)
        .await
        .expect("connect");
    // `<success lid>` changes the credentials; their save fails, so the login is not reported
    // and nothing more is sent.
    let mut seen = Vec::new();
    within("the stop", async {
        while let Some(e) = events.recv().await {
            seen.push(e);
        }
    })
    .await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, ClientEvent::StoreFailed(StoreError::Io(_))))
    );
    assert!(!seen.iter().any(is_logged_in));
    assert!(seen.iter().any(|e| matches!(
        e,
        ClientEvent::Disconnected {
            reason: CloseReason::Local,
            reconnect: Reconnect::Never
        }
    )));
    assert!(matches!(seen.last(), Some(ClientEvent::Stopped)));
}
