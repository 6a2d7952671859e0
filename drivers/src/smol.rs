//! The smol driver.

use std::future::Future;
use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::handshake::client::Request;
use smol::future;

use crate::client::{ClientConfig, Command, Events};
use crate::driver::{Runtime, Wake};
use crate::store::CredentialStore;
use crate::{Client, Error};

/// Starts a client on smol: loads the credentials from `store` (or generates and saves new
/// ones), spawns the drive task on smol's global executor and returns at once; the
/// connection's progress arrives on [`Events`].
///
/// # Errors
/// When the store fails, the URL is not a WebSocket URL, or the OS has no randomness.
pub async fn connect(
    config: ClientConfig,
    store: impl CredentialStore,
) -> Result<(Client, Events), Error> {
    crate::driver::start::<Smol, _>(config, store).await
}

/// The smol [`Runtime`].
pub(crate) struct Smol;

impl Runtime for Smol {
    type Socket = WebSocketStream<async_tungstenite::smol::ConnectStream>;

    async fn connect(
        request: Request,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self::Socket, WsError> {
        let connector = futures_rustls::TlsConnector::from(tls);
        let (socket, _response) =
            async_tungstenite::smol::connect_async_with_tls_connector_and_config(
                request,
                Some(connector),
                Some(crate::driver::ws_config()),
            )
            .await?;
        Ok(socket)
    }

    async fn sleep_until(deadline: std::time::Instant) {
        smol::Timer::at(deadline).await;
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(task).detach();
    }

    async fn wait<F: Future + Send>(
        io: F,
        commands: &async_channel::Receiver<Command>,
        deadline: Option<std::time::Instant>,
    ) -> Wake<F::Output> {
        let io = async { Wake::Io(io.await) };
        let timer = async {
            match deadline {
                Some(at) => smol::Timer::at(at).await,
                None => future::pending().await,
            };
            Wake::Timer
        };
        let command = async { Wake::Command(commands.recv().await.ok()) };
        // `or` polls left to right: input first, then the timer, then commands. Each branch is
        // cancel-safe (see the tokio driver).
        future::or(io, future::or(timer, command)).await
    }
}
