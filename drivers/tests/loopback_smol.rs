//! The smol driver against the in-test server on 127.0.0.1: login, an IQ, stop.

#![cfg(feature = "smol")]

mod common;

use std::future::Future;

use amarula::core::binary::Node;
use amarula::core::jid::Jid;
use amarula::core::machine::{CloseReason, IqRequest, IqResult, Reconnect};
use amarula::{ClientEvent, Events, MemoryStore};
use common::{Pki, STEP, client_config, is_logged_in, paired_credentials, serve};
use smol::net::TcpListener;

/// `fut`, or a panic naming `what` after [`STEP`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    let timeout = async {
        smol::Timer::after(STEP).await;
        panic!("timed out waiting for {what}")
    };
    smol::future::or(fut, timeout).await
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

#[test]
fn login_iq_stop() {
    smol::block_on(async {
        let pki = Pki::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server_pki = pki.clone();
        smol::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let pki = server_pki.clone();
                smol::spawn(async move {
                    if let Ok(ws) = async_tungstenite::accept_async(tcp).await {
                        serve(ws, pki).await;
                    }
                })
                .detach();
            }
        })
        .detach();

        let store = MemoryStore::with_credentials(paired_credentials());
        let (client, mut events) = amarula::smol::connect(client_config(addr, &pki), store)
            .await
            .expect("connect");
        until(&mut events, "login", is_logged_in).await;
        let request = IqRequest::iq("test", "get", Jid::server(), vec![Node::new("echo")]);
        let result = within("the IQ", client.query_iq(request))
            .await
            .expect("iq");
        let IqResult::Ok(reply) = result else {
            panic!("unexpected IQ result {result:?}");
        };
        assert!(reply.child("served").is_some() && reply.child("echo").is_some());

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
    });
}
