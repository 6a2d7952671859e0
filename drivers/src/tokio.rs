//! The tokio driver.

use std::future::Future;
use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::handshake::client::Request;

use crate::client::{ClientConfig, Command, Events};
use crate::driver::{Runtime, Wake};
use crate::store::CredentialStore;
use crate::{Client, Error};

/// Starts a client on the current tokio runtime: loads the credentials from `store` (or
/// generates and saves new ones), spawns the drive task with `tokio::spawn` and returns at
/// once; the connection's progress arrives on [`Events`].
///
/// # Errors
/// When the store fails, the URL is not a WebSocket URL, or the OS has no randomness.
///
/// # Panics
/// Outside a tokio runtime (as `tokio::spawn`).
pub async fn connect(
    config: ClientConfig,
    store: impl CredentialStore,
) -> Result<(Client, Events), Error> {
    crate::driver::start::<Tokio, _>(config, store).await
}

/// The tokio [`Runtime`].
pub(crate) struct Tokio;

impl Runtime for Tokio {
    type Socket = WebSocketStream<async_tungstenite::tokio::ConnectStream>;

    async fn connect(
        request: Request,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self::Socket, WsError> {
        let connector = tokio_rustls::TlsConnector::from(tls);
        let (socket, _response) =
            async_tungstenite::tokio::connect_async_with_tls_connector_and_config(
                request,
                Some(connector),
                Some(crate::driver::ws_config()),
            )
            .await?;
        Ok(socket)
    }

    async fn sleep_until(deadline: std::time::Instant) {
        tokio::time::sleep_until(deadline.into()).await;
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    async fn wait<F: Future + Send>(
        io: F,
        commands: &async_channel::Receiver<Command>,
        deadline: Option<std::time::Instant>,
    ) -> Wake<F::Output> {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        // Each branch is cancel-safe: `io` is a socket read (`StreamExt::next`) or a connect
        // future borrowed by pin, `recv` loses nothing when dropped, and a sleep is a sleep.
        tokio::select! {
            biased;
            out = io => Wake::Io(out),
            () = timer => Wake::Timer,
            command = commands.recv() => Wake::Command(command.ok()),
        }
    }
}
