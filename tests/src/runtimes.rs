//! The two async runtimes the drivers run on, behind one trait, so an end-to-end scenario is
//! written once and run on both.

use std::future::Future;

use amarula::store::CredentialStore;
use amarula::{Client, ClientConfig, Events};

/// A runtime the `amarula` drivers support.
pub trait Runtime {
    /// `amarula::<runtime>::connect`.
    fn connect<S: CredentialStore>(
        config: ClientConfig,
        store: S,
    ) -> impl Future<Output = Result<(Client, Events), amarula::Error>>;

    /// Runs `f` to completion on this runtime; `tokio` is the runtime the simulator runs on
    /// (used by the tokio driver too, so its tasks share it).
    fn block_on<F: Future>(tokio: &tokio::runtime::Runtime, f: F) -> F::Output;
}

/// The tokio driver.
#[derive(Debug)]
pub struct Tokio;

/// The smol driver.
#[derive(Debug)]
pub struct Smol;

impl Runtime for Tokio {
    fn connect<S: CredentialStore>(
        config: ClientConfig,
        store: S,
    ) -> impl Future<Output = Result<(Client, Events), amarula::Error>> {
        amarula::tokio::connect(config, store)
    }
    fn block_on<F: Future>(tokio: &tokio::runtime::Runtime, f: F) -> F::Output {
        tokio.block_on(f)
    }
}

impl Runtime for Smol {
    fn connect<S: CredentialStore>(
        config: ClientConfig,
        store: S,
    ) -> impl Future<Output = Result<(Client, Events), amarula::Error>> {
        amarula::smol::connect(config, store)
    }
    fn block_on<F: Future>(_tokio: &tokio::runtime::Runtime, f: F) -> F::Output {
        smol::block_on(f)
    }
}
