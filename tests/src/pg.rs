//! A Postgres schema of its own for a test that needs a server.
//!
//! The server is named by `AMARULA_TEST_POSTGRES` (a libpq URL or `key=value` string; `.ci/run`
//! starts a throwaway cluster and sets it). The rule: under CI (`CI` set) a missing variable
//! fails the test; on a developer's machine without it the test prints how to set it and
//! passes without checking anything.

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the test server.
pub const URL_VAR: &str = "AMARULA_TEST_POSTGRES";

/// The test server's URL; `None` (with a message) on a developer's machine without one.
///
/// # Panics
/// Under CI when the variable is missing.
pub fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{URL_VAR} is not set: under CI the Postgres tests must run (.ci/run sets it)")
        }
        _ => {
            eprintln!(
                "{URL_VAR} is not set: this Postgres test checks nothing. Start a server and set \
                 it, e.g. {URL_VAR}='host=/tmp/pg port=5432 user=postgres dbname=postgres'"
            );
            None
        }
    }
}

/// A schema of its own, dropped when this is dropped.
pub struct TestSchema {
    base: String,
    name: String,
    /// The URL whose connections work in the schema (its `search_path`).
    pub url: String,
}

impl TestSchema {
    /// A fresh schema named after `tag` and this process; `None` as [`server_url`] says.
    pub fn new(tag: &str) -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = server_url()?;
        let name = format!(
            "amarula_t_{}_{}_{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin(
            &base,
            &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};"),
        );
        let url = if base.starts_with("postgres://") || base.starts_with("postgresql://") {
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-csearch_path%3D{name}")
        } else {
            format!("{base} options='-csearch_path={name}'")
        };
        Some(Self { base, name, url })
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        admin(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// Runs `sql` on a connection of its own, on a thread of its own (the synchronous client must
/// not run on an async executor's thread).
///
/// # Panics
/// When the server cannot be reached or the SQL fails.
pub fn admin(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        client.batch_execute(&sql).expect("admin sql");
    })
    .join()
    .expect("admin thread");
}
