//! The schema and its migrations.
//!
//! The schema version is SQLite's `user_version`: the number of migration steps applied. Each
//! step runs in its own `IMMEDIATE` transaction together with the version bump, so a crash
//! leaves the file at one version or the next, never between. A file whose version is newer
//! than [`MIGRATIONS`] knows is refused, and a file marked with another application id (or
//! an unmarked one that already has tables) is not ours and is refused too.
//!
//! Rules for a new step: append, never edit a released step (files in the field went through
//! it); keep each step's SQL self-contained; add a case to the migration tests that builds the
//! previous version with the old steps, inserts data, and opens it with the new code.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// `PRAGMA application_id` of an amarula database ("amar" in ASCII).
pub(crate) const APPLICATION_ID: i32 = 0x616d_6172;

/// Version 1: accounts, their credentials and the sent-message cache.
const V1: &str = "
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
-- The credentials as JSON (credentials_to_json), one row per account.
CREATE TABLE credentials (
    account INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    json TEXT NOT NULL
);
-- Relayed messages for retry receipts. `seq` orders them per account (a message relayed
-- again gets a new one); the oldest are pruned past the count limit.
CREATE TABLE sent_messages (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    context BLOB NOT NULL,
    sent_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (account, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX sent_messages_by_id ON sent_messages(account, id);
";

/// Version 2: the Signal state (opaque records), device lists, LID mappings and the pending
/// incoming messages.
const V2: &str = "
CREATE TABLE prekeys (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account, id)
) WITHOUT ROWID;
CREATE TABLE signed_prekeys (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account, id)
) WITHOUT ROWID;
-- `address` is a device JID, `user` the same JID without device: sessions_for(user) reads
-- one user's devices through the index, so nothing is loaded in bulk at start.
CREATE TABLE sessions (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    user TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account, address)
) WITHOUT ROWID;
CREATE INDEX sessions_by_user ON sessions(account, user);
CREATE TABLE sender_keys (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    group_jid TEXT NOT NULL,
    sender TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account, group_jid, sender)
) WITHOUT ROWID;
CREATE TABLE identities (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    key BLOB NOT NULL,
    PRIMARY KEY (account, address)
) WITHOUT ROWID;
-- `devices`: the device ids as little-endian u16s.
CREATE TABLE device_lists (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user TEXT NOT NULL,
    devices BLOB NOT NULL,
    updated_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (account, user)
) WITHOUT ROWID;
CREATE TABLE lid_mappings (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    lid TEXT NOT NULL,
    phone TEXT NOT NULL,
    PRIMARY KEY (account, lid)
) WITHOUT ROWID;
CREATE UNIQUE INDEX lid_mappings_by_phone ON lid_mappings(account, phone);
-- Incoming stanzas not yet confirmed by the application, in arrival order (rowid).
CREATE TABLE pending_messages (
    seq INTEGER PRIMARY KEY,
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    node BLOB NOT NULL,
    ack_token INTEGER,
    received_unix_ms INTEGER NOT NULL,
    UNIQUE (account, id)
);
";

/// Version 3: whether the server acknowledged each sent message (unacknowledged ones are sent
/// again after a restart).
const V3: &str = "
ALTER TABLE sent_messages ADD COLUMN acked INTEGER NOT NULL DEFAULT 0;
";

/// Version 4: message secrets (polls, events) with a poll's option names, so that votes
/// decrypt after a restart.
const V4: &str = "
CREATE TABLE message_secrets (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    chat TEXT NOT NULL,
    author TEXT NOT NULL,
    id TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (account, chat, author, id)
) WITHOUT ROWID;
";

/// Version 5 (LID addressing and privacy tokens): the `trusted_contact` token each contact
/// gave us, by the contact's user (its LID when known), with the issuer's timestamp.
const V5_TC_TOKENS: &str = "
CREATE TABLE tc_tokens (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user TEXT NOT NULL,
    token BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (account, user)
) WITHOUT ROWID;
";

// ---- app state (syncd) ----
/// Version 6: app-state sync keys, and per collection the version, the LTHash and the value
/// MAC of every live index.
const V6_APP_STATE: &str = "
CREATE TABLE app_state_keys (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    id BLOB NOT NULL,
    data BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (account, id)
) WITHOUT ROWID;
CREATE TABLE app_state_versions (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (account, collection)
) WITHOUT ROWID;
CREATE TABLE app_state_macs (
    account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    index_mac BLOB NOT NULL,
    value_mac BLOB NOT NULL,
    PRIMARY KEY (account, collection, index_mac)
) WITHOUT ROWID;
";

/// The migration steps; step `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5_TC_TOKENS, V6_APP_STATE];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

fn version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v}")))
}

/// Checks the file is ours (or empty) and applies the steps up to version `target`.
pub(crate) fn migrate(conn: &mut Connection, target: u32) -> Result<(), StoreError> {
    let current = version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if current == 0 && app == 0 {
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )?;
        if tables != 0 {
            return Err(StoreError::Corrupt(
                "an SQLite database of another application".into(),
            ));
        }
    } else if app != APPLICATION_ID {
        return Err(StoreError::Corrupt(format!(
            "an SQLite database of another application (application id {app:#x})"
        )));
    }
    for step in current..target {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated between the read above and this lock.
        let now = version(&tx)?;
        if now > step {
            tx.commit()?;
            continue;
        }
        let sql = MIGRATIONS
            .get(step as usize)
            .expect("step < target <= SCHEMA_VERSION = MIGRATIONS.len()");
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", step + 1)?;
        tx.commit()?;
        tracing::info!(version = step + 1, "store schema migrated");
    }
    Ok(())
}
