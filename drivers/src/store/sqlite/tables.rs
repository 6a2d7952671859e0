//! The SQL of every table, synchronous, on a connection (or transaction) and an account id.
//! The async API in `mod.rs` runs these on the blocking pool.

use amarula_core::credentials::Credentials;
use amarula_core::jid::Jid;
use amarula_core::machine::SentMessage;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::store::{
    Change, DeviceList, LoadRequest, Loaded, PendingMessage, StoreError, credentials_from_json,
    credentials_to_json,
};

/// An account's row id.
pub(crate) type AccountId = i64;

/// A stored timestamp: SQLite integers are signed, times past `i64::MAX` ms do not occur.
fn ms(t: u64) -> Result<i64, StoreError> {
    i64::try_from(t).map_err(|_| StoreError::Corrupt(format!("time {t} ms out of range")))
}

fn unms(t: i64) -> Result<u64, StoreError> {
    u64::try_from(t).map_err(|_| StoreError::Corrupt(format!("stored time {t} ms is negative")))
}

fn jid(s: &str) -> Result<Jid, StoreError> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("stored JID `{s}`: {e}")))
}

/// The row id of account `name`, created when new (read first: opening an existing account
/// writes nothing, so it costs no flush).
pub(crate) fn account(conn: &Connection, name: &str) -> Result<AccountId, StoreError> {
    let find = |conn: &Connection| {
        conn.query_row("SELECT id FROM accounts WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
    };
    if let Some(id) = find(conn)? {
        return Ok(id);
    }
    conn.execute(
        "INSERT INTO accounts(name) VALUES (?1) ON CONFLICT(name) DO NOTHING",
        [name],
    )?;
    Ok(
        conn.query_row("SELECT id FROM accounts WHERE name = ?1", [name], |r| {
            r.get(0)
        })?,
    )
}

pub(crate) fn accounts(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT name FROM accounts ORDER BY id")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names)
}

pub(crate) fn load_credentials(
    conn: &Connection,
    account: AccountId,
) -> Result<Option<Credentials>, StoreError> {
    let text: Option<Zeroizing<String>> = conn
        .prepare_cached("SELECT json FROM credentials WHERE account = ?1")?
        .query_row([account], |r| r.get(0).map(Zeroizing::new))
        .optional()?;
    let Some(text) = text else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(&text)?;
    Ok(Some(credentials_from_json(&value)?))
}

fn save_credentials(
    conn: &Connection,
    account: AccountId,
    credentials: &Credentials,
) -> Result<(), StoreError> {
    // The serialized secrets are wiped when the write is done.
    let text = Zeroizing::new(credentials_to_json(credentials).to_string());
    conn.prepare_cached(
        "INSERT INTO credentials(account, json) VALUES (?1, ?2)
         ON CONFLICT(account) DO UPDATE SET json = excluded.json",
    )?
    .execute(params![account, text.as_str()])?;
    Ok(())
}

/// Records `m` as the newest sent message and drops those past the newest `limit`.
fn save_sent(
    conn: &Connection,
    account: AccountId,
    m: &SentMessage,
    limit: usize,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM sent_messages WHERE account = ?1 AND id = ?2")?
        .execute(params![account, m.id])?;
    let seq: i64 = conn
        .prepare_cached(
            "INSERT INTO sent_messages(account, seq, id, recipient, kind, context, sent_unix_ms)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM sent_messages WHERE account = ?1),
                     ?2, ?3, ?4, ?5, ?6)
             RETURNING seq",
        )?
        .query_row(
            params![
                account,
                m.id,
                m.to.to_string(),
                m.kind,
                m.context.as_ref(),
                ms(m.sent_unix_ms)?
            ],
            |r| r.get(0),
        )?;
    // A message relayed again leaves a gap in `seq`, so this keeps at most `limit`.
    let keep = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.prepare_cached("DELETE FROM sent_messages WHERE account = ?1 AND seq <= ?2")?
        .execute(params![account, seq.saturating_sub(keep)])?;
    Ok(())
}

/// Drops the sent messages older than `before_unix_ms`; returns how many.
pub(crate) fn prune_sent(
    conn: &Connection,
    account: AccountId,
    before_unix_ms: u64,
) -> Result<usize, StoreError> {
    let before = i64::try_from(before_unix_ms).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached("DELETE FROM sent_messages WHERE account = ?1 AND sent_unix_ms < ?2")?
        .execute(params![account, before])?)
}

pub(crate) fn load_sent(
    conn: &Connection,
    account: AccountId,
    unacked_only: bool,
) -> Result<Vec<SentMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, recipient, kind, context, sent_unix_ms FROM sent_messages
         WHERE account = ?1 AND (acked = 0 OR ?2 = 0) ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![account, unacked_only])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let to: String = r.get(1)?;
        let context: Vec<u8> = r.get(3)?;
        out.push(SentMessage {
            id: r.get(0)?,
            to: jid(&to)?,
            kind: r.get(2)?,
            context: Bytes::from(context),
            sent_unix_ms: unms(r.get(4)?)?,
        });
    }
    Ok(out)
}

/// Every table holding rows of an account (all but `accounts`).
pub(crate) const ACCOUNT_TABLES: [&str; 15] = [
    "credentials",
    "sent_messages",
    "prekeys",
    "signed_prekeys",
    "sessions",
    "sender_keys",
    "identities",
    "device_lists",
    "lid_mappings",
    "pending_messages",
    "message_secrets",
    "tc_tokens",
    "app_state_keys",
    "app_state_versions",
    "app_state_macs",
];

/// How many rows the account has in the tables of [`ACCOUNT_TABLES`], each.
pub(crate) fn account_rows(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let mut out = Vec::new();
    for table in ACCOUNT_TABLES {
        let n: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE account = ?1"),
            [account],
            |r| r.get(0),
        )?;
        out.push((table, u64::try_from(n).unwrap_or(0)));
    }
    Ok(out)
}

/// Everything of the account but its row.
pub(crate) fn delete_account_data(conn: &Connection, account: AccountId) -> Result<(), StoreError> {
    for table in ACCOUNT_TABLES {
        conn.execute(
            &format!("DELETE FROM {table} WHERE account = ?1"),
            [account],
        )?;
    }
    Ok(())
}

/// Applies one change (inside the caller's transaction).
pub(crate) fn apply(
    conn: &Connection,
    account: AccountId,
    change: &Change,
    sent_limit: usize,
) -> Result<(), StoreError> {
    let exec = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?.execute(p)?;
        Ok(())
    };
    match change {
        Change::Credentials(c) => save_credentials(conn, account, c)?,
        Change::SentMessage(m) => save_sent(conn, account, m, sent_limit)?,
        Change::PreKey { id, record } => exec(
            "INSERT OR REPLACE INTO prekeys(account, id, record) VALUES (?1, ?2, ?3)",
            params![account, id, record],
        )?,
        Change::RemovePreKey(id) => exec(
            "DELETE FROM prekeys WHERE account = ?1 AND id = ?2",
            params![account, id],
        )?,
        Change::SignedPreKey { id, record } => exec(
            "INSERT OR REPLACE INTO signed_prekeys(account, id, record) VALUES (?1, ?2, ?3)",
            params![account, id, record],
        )?,
        Change::RemoveSignedPreKey(id) => exec(
            "DELETE FROM signed_prekeys WHERE account = ?1 AND id = ?2",
            params![account, id],
        )?,
        Change::Session { address, record } => exec(
            "INSERT OR REPLACE INTO sessions(account, address, user, record)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                account,
                address.to_string(),
                address.to_non_device().to_string(),
                record
            ],
        )?,
        Change::RemoveSession(address) => exec(
            "DELETE FROM sessions WHERE account = ?1 AND address = ?2",
            params![account, address.to_string()],
        )?,
        Change::SenderKey {
            group,
            sender,
            record,
        } => exec(
            "INSERT OR REPLACE INTO sender_keys(account, group_jid, sender, record)
             VALUES (?1, ?2, ?3, ?4)",
            params![account, group.to_string(), sender.to_string(), record],
        )?,
        Change::Identity { address, key } => exec(
            "INSERT OR REPLACE INTO identities(account, address, key) VALUES (?1, ?2, ?3)",
            params![account, address.to_string(), key],
        )?,
        Change::DeviceList { user, list } => {
            let devices: Vec<u8> = list.devices.iter().flat_map(|d| d.to_le_bytes()).collect();
            exec(
                "INSERT OR REPLACE INTO device_lists(account, user, devices, updated_unix_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    account,
                    user.to_non_device().to_string(),
                    devices,
                    ms(list.updated_unix_ms)?
                ],
            )?;
        }
        Change::LidMapping { lid, phone } => {
            let (lid, phone) = (
                lid.to_non_device().to_string(),
                phone.to_non_device().to_string(),
            );
            // A phone number moves to a new LID (or the reverse): the old pair goes.
            exec(
                "DELETE FROM lid_mappings WHERE account = ?1 AND (lid = ?2 OR phone = ?3)",
                params![account, lid, phone],
            )?;
            exec(
                "INSERT INTO lid_mappings(account, lid, phone) VALUES (?1, ?2, ?3)",
                params![account, lid, phone],
            )?;
        }
        Change::Pending(p) => {
            let token = p.ack_token.map(|t| i64::from_ne_bytes(t.to_ne_bytes()));
            exec(
                "INSERT INTO pending_messages(account, id, node, ack_token, received_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(account, id) DO UPDATE SET node = excluded.node,
                     ack_token = excluded.ack_token, received_unix_ms = excluded.received_unix_ms",
                params![
                    account,
                    p.id.as_str(),
                    &p.node[..],
                    token,
                    ms(p.received_unix_ms)?
                ],
            )?;
        }
        Change::SentAcked(id) => exec(
            "UPDATE sent_messages SET acked = 1 WHERE account = ?1 AND id = ?2",
            params![account, id],
        )?,
        Change::PendingDone(id) => exec(
            "DELETE FROM pending_messages WHERE account = ?1 AND id = ?2",
            params![account, id.as_str()],
        )?,
        Change::TcToken { user, token } => exec(
            "INSERT OR REPLACE INTO tc_tokens(account, user, token, timestamp)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                account,
                user.to_non_device().to_string(),
                token.token,
                i64::try_from(token.timestamp).unwrap_or(i64::MAX)
            ],
        )?,
        Change::MessageSecret { key, record } => exec(
            "INSERT OR REPLACE INTO message_secrets(account, chat, author, id, record)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                account,
                key.chat.to_non_device().to_string(),
                key.author.to_non_device().to_string(),
                key.id,
                record
            ],
        )?,
        Change::AppStateSyncKey(k) => exec(
            "INSERT OR REPLACE INTO app_state_keys(account, id, data, timestamp)
             VALUES (?1, ?2, ?3, ?4)",
            params![account, k.id, k.data, k.timestamp],
        )?,
        Change::AppStateCollection(d) => apply_app_state(conn, account, d)?,
        other => return Err(StoreError::Unsupported(other.kind())),
    }
    Ok(())
}

// ---- app state (syncd) ----

/// Applies one collection's change: version and LTHash, then the value MACs.
fn apply_app_state(
    conn: &Connection,
    account: AccountId,
    d: &amarula_core::persist::AppStateDelta,
) -> Result<(), StoreError> {
    let name = d.collection.name();
    let version =
        i64::try_from(d.version).map_err(|_| StoreError::Corrupt("app-state version".into()))?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO app_state_versions(account, collection, version, hash)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![account, name, version, &d.hash.0[..]])?;
    if d.replace {
        conn.prepare_cached("DELETE FROM app_state_macs WHERE account = ?1 AND collection = ?2")?
            .execute(params![account, name])?;
    }
    let mut del = conn.prepare_cached(
        "DELETE FROM app_state_macs WHERE account = ?1 AND collection = ?2 AND index_mac = ?3",
    )?;
    for r in &d.removed {
        del.execute(params![account, name, &r[..]])?;
    }
    let mut ins = conn.prepare_cached(
        "INSERT OR REPLACE INTO app_state_macs(account, collection, index_mac, value_mac)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (i, v) in &d.added {
        ins.execute(params![account, name, &i[..], &v[..]])?;
    }
    Ok(())
}

/// The app-state keys and collections of the account.
pub(crate) fn app_state(
    conn: &Connection,
    account: AccountId,
) -> Result<amarula_core::persist::StoredAppState, StoreError> {
    use amarula_core::appstate::{Collection, CollectionState, LtHash, SyncKey};
    let corrupt = |what: &str| StoreError::Corrupt(format!("app state: {what}"));
    let mut out = amarula_core::persist::StoredAppState::default();
    let mut stmt =
        conn.prepare_cached("SELECT id, data, timestamp FROM app_state_keys WHERE account = ?1")?;
    let mut rows = stmt.query([account])?;
    while let Some(r) = rows.next()? {
        out.keys.push(SyncKey {
            id: r.get(0)?,
            data: r.get(1)?,
            timestamp: r.get(2)?,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT collection, version, hash FROM app_state_versions WHERE account = ?1",
    )?;
    let mut rows = stmt.query([account])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let collection = Collection::from_name(&name).ok_or_else(|| corrupt("collection name"))?;
        let version: i64 = r.get(1)?;
        let hash: Vec<u8> = r.get(2)?;
        let mut state = CollectionState {
            version: u64::try_from(version).map_err(|_| corrupt("version"))?,
            hash: LtHash::from_slice(&hash).ok_or_else(|| corrupt("hash"))?,
            ..Default::default()
        };
        let mut macs = conn.prepare_cached(
            "SELECT index_mac, value_mac FROM app_state_macs WHERE account = ?1 AND collection = ?2",
        )?;
        let mut m = macs.query(params![account, name])?;
        while let Some(r) = m.next()? {
            let i: Vec<u8> = r.get(0)?;
            let v: Vec<u8> = r.get(1)?;
            let (Ok(i), Ok(v)) = (<[u8; 32]>::try_from(i), <[u8; 32]>::try_from(v)) else {
                return Err(corrupt("MAC length"));
            };
            state.macs.insert(i, v);
        }
        out.collections.push((collection, state));
    }
    Ok(out)
}

/// One blob by key, from `sql` with parameters `p`.
pub(crate) fn blob(
    conn: &Connection,
    sql: &str,
    p: &[&dyn rusqlite::ToSql],
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(p, |r| r.get(0))
        .optional()?)
}

pub(crate) fn sessions_for(
    conn: &Connection,
    account: AccountId,
    user: &Jid,
) -> Result<Vec<(Jid, Vec<u8>)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT address, record FROM sessions WHERE account = ?1 AND user = ?2 ORDER BY address",
    )?;
    let mut rows = stmt.query(params![account, user.to_non_device().to_string()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let address: String = r.get(0)?;
        out.push((jid(&address)?, r.get(1)?));
    }
    Ok(out)
}

pub(crate) fn count(conn: &Connection, table: &str, account: AccountId) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {table} WHERE account = ?1"),
        [account],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(crate) fn device_list(
    conn: &Connection,
    account: AccountId,
    user: &Jid,
) -> Result<Option<DeviceList>, StoreError> {
    let row: Option<(Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT devices, updated_unix_ms FROM device_lists WHERE account = ?1 AND user = ?2",
        )?
        .query_row(params![account, user.to_non_device().to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    row.map(|(bytes, updated)| decode_device_list(&bytes, updated))
        .transpose()
}

/// A stored device list: the ids as little-endian u16s, and the time of the fetch.
fn decode_device_list(bytes: &[u8], updated: i64) -> Result<DeviceList, StoreError> {
    let pairs = bytes.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(StoreError::Corrupt("device list of odd length".into()));
    }
    Ok(DeviceList {
        devices: pairs.map(|p| u16::from_le_bytes([p[0], p[1]])).collect(),
        updated_unix_ms: unms(updated)?,
    })
}

/// The records of `request`, one entry per key in request order (`None` when absent), read
/// on `conn` (the caller's read transaction, so the answer is one consistent snapshot).
pub(crate) fn load_keys(
    conn: &Connection,
    account: AccountId,
    request: &LoadRequest,
) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::nothing_for(request);
    // Keys are the JIDs' text exactly as given (`:0` stays apart from no device), as `apply`
    // wrote them.
    if !loaded.sessions.is_empty() {
        let mut stmt =
            conn.prepare_cached("SELECT record FROM sessions WHERE account = ?1 AND address = ?2")?;
        for (address, record) in &mut loaded.sessions {
            *record = stmt
                .query_row(params![account, address.to_string()], |r| r.get(0))
                .optional()?;
        }
    }
    if !loaded.sender_keys.is_empty() {
        let mut stmt = conn.prepare_cached(
            "SELECT record FROM sender_keys WHERE account = ?1 AND group_jid = ?2 AND sender = ?3",
        )?;
        for ((group, sender), record) in &mut loaded.sender_keys {
            *record = stmt
                .query_row(
                    params![account, group.to_string(), sender.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
        }
    }
    if !loaded.prekeys.is_empty() {
        let mut stmt =
            conn.prepare_cached("SELECT record FROM prekeys WHERE account = ?1 AND id = ?2")?;
        for (id, record) in &mut loaded.prekeys {
            *record = stmt
                .query_row(params![account, *id], |r| r.get(0))
                .optional()?;
        }
    }
    if !loaded.device_lists.is_empty() {
        let mut stmt = conn.prepare_cached(
            "SELECT devices, updated_unix_ms FROM device_lists WHERE account = ?1 AND user = ?2",
        )?;
        for (user, list) in &mut loaded.device_lists {
            let row: Option<(Vec<u8>, i64)> = stmt
                .query_row(params![account, user.to_non_device().to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            *list = row
                .map(|(bytes, updated)| decode_device_list(&bytes, updated))
                .transpose()?;
        }
    }
    if !loaded.message_secrets.is_empty() {
        let mut stmt = conn.prepare_cached(
            "SELECT record FROM message_secrets
             WHERE account = ?1 AND chat = ?2 AND author = ?3 AND id = ?4",
        )?;
        for (key, record) in &mut loaded.message_secrets {
            *record = stmt
                .query_row(
                    params![
                        account,
                        key.chat.to_non_device().to_string(),
                        key.author.to_non_device().to_string(),
                        key.id
                    ],
                    |r| r.get(0),
                )
                .optional()?;
        }
    }
    if !loaded.tc_tokens.is_empty() {
        let mut stmt = conn.prepare_cached(
            "SELECT token, timestamp FROM tc_tokens WHERE account = ?1 AND user = ?2",
        )?;
        for (user, token) in &mut loaded.tc_tokens {
            let row: Option<(Vec<u8>, i64)> = stmt
                .query_row(params![account, user.to_non_device().to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            *token = row.map(|(token, t)| amarula_core::persist::TcToken {
                token,
                timestamp: u64::try_from(t).unwrap_or(0),
            });
        }
    }
    if !loaded.lid_mappings.is_empty() {
        let mut by_lid =
            conn.prepare_cached("SELECT phone FROM lid_mappings WHERE account = ?1 AND lid = ?2")?;
        let mut by_phone =
            conn.prepare_cached("SELECT lid FROM lid_mappings WHERE account = ?1 AND phone = ?2")?;
        for (user, other) in &mut loaded.lid_mappings {
            let user = user.to_non_device();
            let stmt = if user.is_lid() {
                &mut by_lid
            } else {
                &mut by_phone
            };
            let text: Option<String> = stmt
                .query_row(params![account, user.to_string()], |r| r.get(0))
                .optional()?;
            *other = text.and_then(|t| t.parse().ok());
        }
    }
    Ok(loaded)
}

/// The other side of a LID mapping: `sql` selects one column by account and `key`.
pub(crate) fn lid_mapping(
    conn: &Connection,
    account: AccountId,
    sql: &str,
    key: &Jid,
) -> Result<Option<Jid>, StoreError> {
    let other: Option<String> = conn
        .prepare_cached(sql)?
        .query_row(params![account, key.to_non_device().to_string()], |r| {
            r.get(0)
        })
        .optional()?;
    other.as_deref().map(jid).transpose()
}

pub(crate) fn pending(
    conn: &Connection,
    account: AccountId,
) -> Result<Vec<PendingMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, node, ack_token, received_unix_ms FROM pending_messages
         WHERE account = ?1 ORDER BY seq",
    )?;
    let mut rows = stmt.query([account])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let token: Option<i64> = r.get(2)?;
        out.push(PendingMessage {
            id: r.get::<_, String>(0)?.into(),
            node: r.get::<_, Vec<u8>>(1)?.into(),
            ack_token: token.map(|t| u64::from_ne_bytes(t.to_ne_bytes())),
            received_unix_ms: unms(r.get(3)?)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod account_tables_tests {
    use super::*;

    /// A table added to the schema must be added to the wipe list too.
    #[test]
    fn every_account_table_is_wiped() {
        let db = crate::store::SqliteDatabase::open_in_memory().expect("in memory");
        let conn = db.shared.lock();
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .expect("query");
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("names");
        for name in names.iter().filter(|n| *n != "accounts" && *n != "meta") {
            assert!(
                ACCOUNT_TABLES.contains(&name.as_str()),
                "{name} is not wiped"
            );
        }
    }
}
