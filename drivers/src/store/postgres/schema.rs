//! The Postgres schema and its migrations.
//!
//! The version is the one row of `amarula_schema`: the number of migration steps applied. Every
//! step runs in its own transaction together with the version bump, under a transaction-level
//! advisory lock, so workers that start together migrate once and a crash leaves the database at
//! one version or the next. A database whose version is newer than [`MIGRATIONS`] knows is
//! refused.
//!
//! Every table is prefixed `amarula_` so the store can share a database with the application.
//! Rules for a new step, as for SQLite: append, never edit a released step; keep each step's SQL
//! self-contained; add the table to [`ACCOUNT_TABLES`](super::tables::ACCOUNT_TABLES) when it
//! holds rows of an account.

use postgres::Client;

use crate::store::StoreError;

/// The advisory lock key taken by migrations ("amar" in ASCII).
const MIGRATION_LOCK: i64 = 0x616d_6172;

/// Version 1: accounts, credentials, sent messages, the Signal state, device lists, LID
/// mappings, pending incoming messages and message secrets (the SQLite store's versions 1 to 4
/// in one step).
const V1: &str = "
CREATE TABLE amarula_accounts (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
-- The credentials as JSON (credentials_to_json), one row per account.
CREATE TABLE amarula_credentials (
    account BIGINT PRIMARY KEY REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    json TEXT NOT NULL
);
-- Relayed messages for retry receipts; `seq` orders them per account, the oldest are pruned
-- past the count limit; `acked` once the server acknowledged them.
CREATE TABLE amarula_sent_messages (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    context BYTEA NOT NULL,
    sent_unix_ms BIGINT NOT NULL,
    acked BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (account, seq),
    UNIQUE (account, id)
);
CREATE TABLE amarula_prekeys (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    id BIGINT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (account, id)
);
CREATE TABLE amarula_signed_prekeys (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    id BIGINT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (account, id)
);
-- `address` is a device JID, `user_jid` the same JID without device.
CREATE TABLE amarula_sessions (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    user_jid TEXT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (account, address)
);
CREATE INDEX amarula_sessions_by_user ON amarula_sessions(account, user_jid);
CREATE TABLE amarula_sender_keys (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    group_jid TEXT NOT NULL,
    sender TEXT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (account, group_jid, sender)
);
CREATE TABLE amarula_identities (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    key BYTEA NOT NULL,
    PRIMARY KEY (account, address)
);
-- `devices`: the device ids as little-endian u16s.
CREATE TABLE amarula_device_lists (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    user_jid TEXT NOT NULL,
    devices BYTEA NOT NULL,
    updated_unix_ms BIGINT NOT NULL,
    PRIMARY KEY (account, user_jid)
);
CREATE TABLE amarula_lid_mappings (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    lid TEXT NOT NULL,
    phone TEXT NOT NULL,
    PRIMARY KEY (account, lid),
    UNIQUE (account, phone)
);
-- Incoming stanzas not yet confirmed by the application, in arrival order (`seq`).
CREATE TABLE amarula_pending_messages (
    seq BIGSERIAL PRIMARY KEY,
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    node BYTEA NOT NULL,
    ack_token BIGINT,
    received_unix_ms BIGINT NOT NULL,
    UNIQUE (account, id)
);
CREATE TABLE amarula_message_secrets (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    chat TEXT NOT NULL,
    author TEXT NOT NULL,
    id TEXT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (account, chat, author, id)
);
";

/// Version 2: account leases. One row per account ever leased, never deleted: `token` grows by
/// one at every acquisition, so a token is never handed out twice for an account and a write
/// fenced by an old token fails forever after. Expiry is by the database's clock (`now()`),
/// so the workers' clocks do not matter.
const V2: &str = "
CREATE TABLE amarula_leases (
    account BIGINT PRIMARY KEY REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX amarula_leases_by_owner ON amarula_leases(owner);
";

// ---- privacy tokens and app state (syncd) ----
/// Version 3: privacy tokens by contact user (the SQLite store's version 5), and app-state
/// sync keys, each collection's version and LTHash, and the value MAC of every live index
/// (its version 6).
const V3: &str = "
CREATE TABLE amarula_tc_tokens (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    user_jid TEXT NOT NULL,
    token BYTEA NOT NULL,
    timestamp BIGINT NOT NULL,
    PRIMARY KEY (account, user_jid)
);
CREATE TABLE amarula_app_state_keys (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    id BYTEA NOT NULL,
    data BYTEA NOT NULL,
    timestamp BIGINT NOT NULL,
    PRIMARY KEY (account, id)
);
CREATE TABLE amarula_app_state_versions (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    version BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (account, collection)
);
CREATE TABLE amarula_app_state_macs (
    account BIGINT NOT NULL REFERENCES amarula_accounts(id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    index_mac BYTEA NOT NULL,
    value_mac BYTEA NOT NULL,
    PRIMARY KEY (account, collection, index_mac)
);
";

/// The migration steps; step `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this build writes.
pub const POSTGRES_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

fn version(tx: &mut postgres::Transaction<'_>) -> Result<u32, StoreError> {
    let v: i32 = tx
        .query_one("SELECT version FROM amarula_schema", &[])?
        .try_get(0)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v}")))
}

/// Creates the version table when missing and applies the steps up to version `target`.
pub(crate) fn migrate(client: &mut Client, target: u32) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS amarula_schema (version INTEGER NOT NULL);
         INSERT INTO amarula_schema (version)
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM amarula_schema);",
    )?;
    let current = version(&mut tx)?;
    tx.commit()?;
    if current > POSTGRES_SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: current,
            supported: POSTGRES_SCHEMA_VERSION,
        });
    }
    for step in current..target {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        // Another worker may have migrated since the read above.
        if version(&mut tx)? > step {
            tx.commit()?;
            continue;
        }
        let Some(sql) = MIGRATIONS.get(step as usize) else {
            break;
        };
        tx.batch_execute(sql)?;
        let next = i32::try_from(step + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE amarula_schema SET version = $1", &[&next])?;
        tx.commit()?;
        tracing::info!(version = step + 1, "postgres store schema migrated");
    }
    Ok(())
}
