//! The SQL of every table, synchronous, on one pooled connection. The async API in `mod.rs`
//! runs these on the blocking pool.
//!
//! Adding a [`Change`] variant: a table in a new migration step (`schema.rs`), the table in
//! [`ACCOUNT_TABLES`], one arm in [`apply`], and, when the core loads it by key, one block in
//! [`load_keys`] with one query for every key of the request (`= ANY($2)`).

use std::collections::HashMap;

use amarula_core::credentials::Credentials;
use amarula_core::jid::Jid;
use amarula_core::machine::SentMessage;
use bytes::Bytes;
use postgres::types::ToSql;
use postgres::{Client, Row, Statement, Transaction};
use serde_json::Value;
use zeroize::Zeroizing;

use amarula_core::appstate::{Collection, CollectionState, LtHash, SyncKey};
use amarula_core::persist::{AppStateDelta, SecretKey, StoredAppState, TcToken};

use crate::store::{
    Change, DeviceList, LoadRequest, Loaded, PendingMessage, StoreError, credentials_from_json,
    credentials_to_json,
};

/// An account's row id.
pub(crate) type AccountId = i64;

/// One connection of the pool with its prepared statements (a statement is prepared once per
/// connection, then only bound and executed: one round trip per statement).
pub(crate) struct Conn {
    pub(crate) client: Client,
    cache: HashMap<&'static str, Statement>,
}

impl Conn {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            cache: HashMap::new(),
        }
    }

    /// A transaction on this connection, with the statement cache.
    pub(crate) fn tx(&mut self) -> Result<Tx<'_>, StoreError> {
        Ok(Tx {
            tx: self.client.transaction()?,
            cache: &mut self.cache,
        })
    }
}

/// A transaction with the connection's statement cache.
pub(crate) struct Tx<'a> {
    pub(crate) tx: Transaction<'a>,
    cache: &'a mut HashMap<&'static str, Statement>,
}

impl Tx<'_> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.cache.insert(sql, s.clone());
        Ok(s)
    }

    pub(crate) fn exec(
        &mut self,
        sql: &'static str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let s = self.statement(sql)?;
        Ok(self.tx.execute(&s, p)?)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let s = self.statement(sql)?;
        Ok(self.tx.query(&s, p)?)
    }

    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_opt(&s, p)?)
    }

    pub(crate) fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

/// A stored timestamp: Postgres integers are signed, times past `i64::MAX` ms do not occur.
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

/// The row id of account `name`, created when new.
pub(crate) fn account(tx: &mut Tx<'_>, name: &str) -> Result<AccountId, StoreError> {
    if let Some(row) = tx.query_opt("SELECT id FROM amarula_accounts WHERE name = $1", &[&name])? {
        return Ok(row.try_get(0)?);
    }
    tx.exec(
        "INSERT INTO amarula_accounts(name) VALUES ($1) ON CONFLICT(name) DO NOTHING",
        &[&name],
    )?;
    let row = tx
        .query_opt("SELECT id FROM amarula_accounts WHERE name = $1", &[&name])?
        .ok_or_else(|| StoreError::Corrupt(format!("account {name} vanished")))?;
    Ok(row.try_get(0)?)
}

pub(crate) fn accounts(tx: &mut Tx<'_>) -> Result<Vec<String>, StoreError> {
    tx.query("SELECT name FROM amarula_accounts ORDER BY id", &[])?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}

pub(crate) fn load_credentials(
    tx: &mut Tx<'_>,
    account: AccountId,
) -> Result<Option<Credentials>, StoreError> {
    let Some(row) = tx.query_opt(
        "SELECT json FROM amarula_credentials WHERE account = $1",
        &[&account],
    )?
    else {
        return Ok(None);
    };
    let text = Zeroizing::new(row.try_get::<_, String>(0)?);
    let value: Value = serde_json::from_str(&text)?;
    Ok(Some(credentials_from_json(&value)?))
}

fn save_credentials(
    tx: &mut Tx<'_>,
    account: AccountId,
    credentials: &Credentials,
) -> Result<(), StoreError> {
    // The serialized secrets are wiped when the write is done.
    let text = Zeroizing::new(credentials_to_json(credentials).to_string());
    tx.exec(
        "INSERT INTO amarula_credentials(account, json) VALUES ($1, $2)
         ON CONFLICT(account) DO UPDATE SET json = excluded.json",
        &[&account, &text.as_str()],
    )?;
    Ok(())
}

/// Records `m` as the newest sent message and drops those past the newest `limit`.
fn save_sent(
    tx: &mut Tx<'_>,
    account: AccountId,
    m: &SentMessage,
    limit: usize,
) -> Result<(), StoreError> {
    tx.exec(
        "DELETE FROM amarula_sent_messages WHERE account = $1 AND id = $2",
        &[&account, &m.id],
    )?;
    let row = tx.query_opt(
        "INSERT INTO amarula_sent_messages
             (account, seq, id, recipient, kind, context, sent_unix_ms)
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM amarula_sent_messages
                      WHERE account = $1), $2, $3, $4, $5, $6)
         RETURNING seq",
        &[
            &account,
            &m.id,
            &m.to.to_string(),
            &m.kind,
            &m.context.as_ref(),
            &ms(m.sent_unix_ms)?,
        ],
    )?;
    let seq: i64 = match row {
        Some(r) => r.try_get(0)?,
        None => return Err(StoreError::Corrupt("sent message not inserted".into())),
    };
    // A message relayed again leaves a gap in `seq`, so this keeps at most `limit`.
    let keep = i64::try_from(limit).unwrap_or(i64::MAX);
    tx.exec(
        "DELETE FROM amarula_sent_messages WHERE account = $1 AND seq <= $2",
        &[&account, &seq.saturating_sub(keep)],
    )?;
    Ok(())
}

/// Drops the sent messages older than `before_unix_ms`; returns how many.
pub(crate) fn prune_sent(
    tx: &mut Tx<'_>,
    account: AccountId,
    before_unix_ms: u64,
) -> Result<u64, StoreError> {
    let before = i64::try_from(before_unix_ms).unwrap_or(i64::MAX);
    tx.exec(
        "DELETE FROM amarula_sent_messages WHERE account = $1 AND sent_unix_ms < $2",
        &[&account, &before],
    )
}

pub(crate) fn load_sent(
    tx: &mut Tx<'_>,
    account: AccountId,
    unacked_only: bool,
) -> Result<Vec<SentMessage>, StoreError> {
    let rows = tx.query(
        "SELECT id, recipient, kind, context, sent_unix_ms FROM amarula_sent_messages
         WHERE account = $1 AND (NOT acked OR NOT $2) ORDER BY seq",
        &[&account, &unacked_only],
    )?;
    rows.iter()
        .map(|r| {
            let to: String = r.try_get(1)?;
            let context: Vec<u8> = r.try_get(3)?;
            Ok(SentMessage {
                id: r.try_get(0)?,
                to: jid(&to)?,
                kind: r.try_get(2)?,
                context: Bytes::from(context),
                sent_unix_ms: unms(r.try_get(4)?)?,
            })
        })
        .collect()
}

/// Every table holding rows of an account that `delete` wipes (all but the accounts and the
/// leases: a lease's token must survive a logout, or an old token could come back).
pub(crate) const ACCOUNT_TABLES: [&str; 15] = [
    "amarula_credentials",
    "amarula_sent_messages",
    "amarula_prekeys",
    "amarula_signed_prekeys",
    "amarula_sessions",
    "amarula_sender_keys",
    "amarula_identities",
    "amarula_device_lists",
    "amarula_lid_mappings",
    "amarula_pending_messages",
    "amarula_message_secrets",
    "amarula_tc_tokens",
    "amarula_app_state_keys",
    "amarula_app_state_versions",
    "amarula_app_state_macs",
];

/// Everything of the account but its row and its lease.
pub(crate) fn delete_account_data(tx: &mut Tx<'_>, account: AccountId) -> Result<(), StoreError> {
    for table in ACCOUNT_TABLES {
        tx.tx.execute(
            &format!("DELETE FROM {table} WHERE account = $1"),
            &[&account],
        )?;
    }
    Ok(())
}

/// How many rows the account has in `table` (one of [`ACCOUNT_TABLES`]).
pub(crate) fn count(tx: &mut Tx<'_>, table: &str, account: AccountId) -> Result<u64, StoreError> {
    let n: i64 = tx
        .tx
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE account = $1"),
            &[&account],
        )?
        .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A prekey id as stored (ids are u32, the column is BIGINT).
fn key_id(id: u32) -> i64 {
    i64::from(id)
}

/// Applies one change (inside the caller's transaction). One arm per variant.
pub(crate) fn apply(
    tx: &mut Tx<'_>,
    account: AccountId,
    change: &Change,
    sent_limit: usize,
) -> Result<(), StoreError> {
    match change {
        Change::Credentials(c) => save_credentials(tx, account, c)?,
        Change::SentMessage(m) => save_sent(tx, account, m, sent_limit)?,
        Change::SentAcked(id) => {
            tx.exec(
                "UPDATE amarula_sent_messages SET acked = TRUE WHERE account = $1 AND id = $2",
                &[&account, id],
            )?;
        }
        Change::PreKey { id, record } => {
            tx.exec(
                "INSERT INTO amarula_prekeys(account, id, record) VALUES ($1, $2, $3)
                 ON CONFLICT(account, id) DO UPDATE SET record = excluded.record",
                &[&account, &key_id(*id), record],
            )?;
        }
        Change::RemovePreKey(id) => {
            tx.exec(
                "DELETE FROM amarula_prekeys WHERE account = $1 AND id = $2",
                &[&account, &key_id(*id)],
            )?;
        }
        Change::SignedPreKey { id, record } => {
            tx.exec(
                "INSERT INTO amarula_signed_prekeys(account, id, record) VALUES ($1, $2, $3)
                 ON CONFLICT(account, id) DO UPDATE SET record = excluded.record",
                &[&account, &key_id(*id), record],
            )?;
        }
        Change::RemoveSignedPreKey(id) => {
            tx.exec(
                "DELETE FROM amarula_signed_prekeys WHERE account = $1 AND id = $2",
                &[&account, &key_id(*id)],
            )?;
        }
        Change::Session { address, record } => {
            tx.exec(
                "INSERT INTO amarula_sessions(account, address, user_jid, record)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT(account, address) DO UPDATE
                     SET user_jid = excluded.user_jid, record = excluded.record",
                &[
                    &account,
                    &address.to_string(),
                    &address.to_non_device().to_string(),
                    record,
                ],
            )?;
        }
        Change::RemoveSession(address) => {
            tx.exec(
                "DELETE FROM amarula_sessions WHERE account = $1 AND address = $2",
                &[&account, &address.to_string()],
            )?;
        }
        Change::SenderKey {
            group,
            sender,
            record,
        } => {
            tx.exec(
                "INSERT INTO amarula_sender_keys(account, group_jid, sender, record)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT(account, group_jid, sender) DO UPDATE SET record = excluded.record",
                &[&account, &group.to_string(), &sender.to_string(), record],
            )?;
        }
        Change::Identity { address, key } => {
            tx.exec(
                "INSERT INTO amarula_identities(account, address, key) VALUES ($1, $2, $3)
                 ON CONFLICT(account, address) DO UPDATE SET key = excluded.key",
                &[&account, &address.to_string(), key],
            )?;
        }
        Change::DeviceList { user, list } => {
            let devices: Vec<u8> = list.devices.iter().flat_map(|d| d.to_le_bytes()).collect();
            tx.exec(
                "INSERT INTO amarula_device_lists(account, user_jid, devices, updated_unix_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT(account, user_jid) DO UPDATE
                     SET devices = excluded.devices, updated_unix_ms = excluded.updated_unix_ms",
                &[
                    &account,
                    &user.to_non_device().to_string(),
                    &devices,
                    &ms(list.updated_unix_ms)?,
                ],
            )?;
        }
        Change::LidMapping { lid, phone } => {
            let (lid, phone) = (
                lid.to_non_device().to_string(),
                phone.to_non_device().to_string(),
            );
            // A phone number moves to a new LID (or the reverse): the old pair goes.
            tx.exec(
                "DELETE FROM amarula_lid_mappings WHERE account = $1 AND (lid = $2 OR phone = $3)",
                &[&account, &lid, &phone],
            )?;
            tx.exec(
                "INSERT INTO amarula_lid_mappings(account, lid, phone) VALUES ($1, $2, $3)",
                &[&account, &lid, &phone],
            )?;
        }
        Change::Pending(p) => {
            let token = p.ack_token.map(|t| i64::from_ne_bytes(t.to_ne_bytes()));
            tx.exec(
                "INSERT INTO amarula_pending_messages(account, id, node, ack_token, received_unix_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT(account, id) DO UPDATE SET node = excluded.node,
                     ack_token = excluded.ack_token, received_unix_ms = excluded.received_unix_ms",
                &[&account, &p.id.as_str(), &&p.node[..], &token, &ms(p.received_unix_ms)?],
            )?;
        }
        Change::PendingDone(id) => {
            tx.exec(
                "DELETE FROM amarula_pending_messages WHERE account = $1 AND id = $2",
                &[&account, &id.as_str()],
            )?;
        }
        Change::MessageSecret { key, record } => {
            tx.exec(
                "INSERT INTO amarula_message_secrets(account, chat, author, id, record)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT(account, chat, author, id) DO UPDATE SET record = excluded.record",
                &[
                    &account,
                    &key.chat.to_non_device().to_string(),
                    &key.author.to_non_device().to_string(),
                    &key.id,
                    record,
                ],
            )?;
        }
        // ---- privacy tokens ----
        Change::TcToken { user, token } => {
            tx.exec(
                "INSERT INTO amarula_tc_tokens(account, user_jid, token, timestamp)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT(account, user_jid) DO UPDATE
                     SET token = excluded.token, timestamp = excluded.timestamp",
                &[
                    &account,
                    &user.to_non_device().to_string(),
                    &token.token,
                    &i64::try_from(token.timestamp).unwrap_or(i64::MAX),
                ],
            )?;
        }
        // ---- app state (syncd) ----
        Change::AppStateSyncKey(k) => {
            tx.exec(
                "INSERT INTO amarula_app_state_keys(account, id, data, timestamp)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT(account, id) DO UPDATE
                     SET data = excluded.data, timestamp = excluded.timestamp",
                &[&account, &k.id, &k.data, &k.timestamp],
            )?;
        }
        Change::AppStateCollection(d) => apply_app_state(tx, account, d)?,
        // `Change` is `non_exhaustive` (defined in amarula-core): a variant this store does not
        // know yet is refused, as the SQLite store does.
        other => return Err(StoreError::Unsupported(other.kind())),
    }
    Ok(())
}

// ---- app state (syncd) ----

/// Applies one collection's change: version and LTHash, then the value MACs (a replacing
/// change drops the collection's MACs first).
fn apply_app_state(
    tx: &mut Tx<'_>,
    account: AccountId,
    d: &AppStateDelta,
) -> Result<(), StoreError> {
    let name = d.collection.name();
    let version =
        i64::try_from(d.version).map_err(|_| StoreError::Corrupt("app-state version".into()))?;
    tx.exec(
        "INSERT INTO amarula_app_state_versions(account, collection, version, hash)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT(account, collection) DO UPDATE
             SET version = excluded.version, hash = excluded.hash",
        &[&account, &name, &version, &&d.hash.0[..]],
    )?;
    if d.replace {
        tx.exec(
            "DELETE FROM amarula_app_state_macs WHERE account = $1 AND collection = $2",
            &[&account, &name],
        )?;
    }
    if !d.removed.is_empty() {
        let removed: Vec<&[u8]> = d.removed.iter().map(|r| &r[..]).collect();
        tx.exec(
            "DELETE FROM amarula_app_state_macs
             WHERE account = $1 AND collection = $2 AND index_mac = ANY($3)",
            &[&account, &name, &removed],
        )?;
    }
    if !d.added.is_empty() {
        // One statement for all of them; an index added twice keeps its last value MAC, as
        // applying them one by one would.
        let mut last: HashMap<&[u8; 32], &[u8; 32]> = HashMap::with_capacity(d.added.len());
        for (i, v) in &d.added {
            last.insert(i, v);
        }
        let (indexes, values): (Vec<&[u8]>, Vec<&[u8]>) =
            last.into_iter().map(|(i, v)| (&i[..], &v[..])).unzip();
        tx.exec(
            "INSERT INTO amarula_app_state_macs(account, collection, index_mac, value_mac)
             SELECT $1, $2, i, v FROM unnest($3::bytea[], $4::bytea[]) AS k(i, v)
             ON CONFLICT(account, collection, index_mac) DO UPDATE
                 SET value_mac = excluded.value_mac",
            &[&account, &name, &indexes, &values],
        )?;
    }
    Ok(())
}

/// The app-state keys and collections of the account, read in the caller's transaction.
pub(crate) fn app_state(tx: &mut Tx<'_>, account: AccountId) -> Result<StoredAppState, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("app state: {what}"));
    let mut out = StoredAppState::default();
    for r in tx.query(
        "SELECT id, data, timestamp FROM amarula_app_state_keys WHERE account = $1",
        &[&account],
    )? {
        out.keys.push(SyncKey {
            id: r.try_get(0)?,
            data: r.try_get(1)?,
            timestamp: r.try_get(2)?,
        });
    }
    let mut by_name = HashMap::new();
    for r in tx.query(
        "SELECT collection, version, hash FROM amarula_app_state_versions WHERE account = $1",
        &[&account],
    )? {
        let name: String = r.try_get(0)?;
        let collection = Collection::from_name(&name).ok_or_else(|| corrupt("collection name"))?;
        let version: i64 = r.try_get(1)?;
        let hash: Vec<u8> = r.try_get(2)?;
        let state = CollectionState {
            version: u64::try_from(version).map_err(|_| corrupt("version"))?,
            hash: LtHash::from_slice(&hash).ok_or_else(|| corrupt("hash"))?,
            ..Default::default()
        };
        by_name.insert(name, out.collections.len());
        out.collections.push((collection, state));
    }
    // Every collection's MACs in one query.
    for r in tx.query(
        "SELECT collection, index_mac, value_mac FROM amarula_app_state_macs WHERE account = $1",
        &[&account],
    )? {
        let name: String = r.try_get(0)?;
        let i: Vec<u8> = r.try_get(1)?;
        let v: Vec<u8> = r.try_get(2)?;
        let (Ok(i), Ok(v)) = (<[u8; 32]>::try_from(i), <[u8; 32]>::try_from(v)) else {
            return Err(corrupt("MAC length"));
        };
        let slot = by_name
            .get(&name)
            .and_then(|&n| out.collections.get_mut(n))
            .ok_or_else(|| corrupt("MACs of a collection without a version"))?;
        slot.1.macs.insert(i, v);
    }
    Ok(out)
}

/// One blob by key.
pub(crate) fn blob(
    tx: &mut Tx<'_>,
    sql: &'static str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Option<Vec<u8>>, StoreError> {
    tx.query_opt(sql, p)?.map(|r| Ok(r.try_get(0)?)).transpose()
}

pub(crate) fn sessions_for(
    tx: &mut Tx<'_>,
    account: AccountId,
    user: &Jid,
) -> Result<Vec<(Jid, Vec<u8>)>, StoreError> {
    // `COLLATE "C"`: byte order, as SQLite's, whatever the database's locale.
    let rows = tx.query(
        "SELECT address, record FROM amarula_sessions WHERE account = $1 AND user_jid = $2
         ORDER BY address COLLATE \"C\"",
        &[&account, &user.to_non_device().to_string()],
    )?;
    rows.iter()
        .map(|r| {
            let address: String = r.try_get(0)?;
            Ok((jid(&address)?, r.try_get(1)?))
        })
        .collect()
}

pub(crate) fn device_list(
    tx: &mut Tx<'_>,
    account: AccountId,
    user: &Jid,
) -> Result<Option<DeviceList>, StoreError> {
    let row = tx.query_opt(
        "SELECT devices, updated_unix_ms FROM amarula_device_lists
         WHERE account = $1 AND user_jid = $2",
        &[&account, &user.to_non_device().to_string()],
    )?;
    row.map(|r| decode_device_list(&r.try_get::<_, Vec<u8>>(0)?, r.try_get(1)?))
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

/// The records of `request`, one entry per key in request order (`None` when absent), read in
/// the caller's transaction (one snapshot) with one query per kind of record.
pub(crate) fn load_keys(
    tx: &mut Tx<'_>,
    account: AccountId,
    request: &LoadRequest,
) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::nothing_for(request);
    // Keys are the JIDs' text exactly as given (`:0` stays apart from no device), as `apply`
    // wrote them.
    if !loaded.sessions.is_empty() {
        let keys: Vec<String> = loaded.sessions.iter().map(|(a, _)| a.to_string()).collect();
        let found = by_key(tx.query(
            "SELECT address, record FROM amarula_sessions WHERE account = $1 AND address = ANY($2)",
            &[&account, &keys],
        )?)?;
        for ((_, record), key) in loaded.sessions.iter_mut().zip(&keys) {
            *record = found.get(key).cloned();
        }
    }
    if !loaded.sender_keys.is_empty() {
        let groups: Vec<String> = loaded
            .sender_keys
            .iter()
            .map(|((g, _), _)| g.to_string())
            .collect();
        let senders: Vec<String> = loaded
            .sender_keys
            .iter()
            .map(|((_, s), _)| s.to_string())
            .collect();
        let rows = tx.query(
            "SELECT group_jid, sender, record FROM amarula_sender_keys
             WHERE account = $1 AND (group_jid, sender) IN
                 (SELECT * FROM unnest($2::text[], $3::text[]))",
            &[&account, &groups, &senders],
        )?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let key: (String, String) = (r.try_get(0)?, r.try_get(1)?);
            found.insert(key, r.try_get::<_, Vec<u8>>(2)?);
        }
        for (((_, record), g), s) in loaded.sender_keys.iter_mut().zip(groups).zip(senders) {
            *record = found.get(&(g, s)).cloned();
        }
    }
    if !loaded.prekeys.is_empty() {
        let keys: Vec<i64> = loaded.prekeys.iter().map(|(id, _)| key_id(*id)).collect();
        let rows = tx.query(
            "SELECT id, record FROM amarula_prekeys WHERE account = $1 AND id = ANY($2)",
            &[&account, &keys],
        )?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            found.insert(r.try_get::<_, i64>(0)?, r.try_get::<_, Vec<u8>>(1)?);
        }
        for ((_, record), key) in loaded.prekeys.iter_mut().zip(&keys) {
            *record = found.get(key).cloned();
        }
    }
    if !loaded.device_lists.is_empty() {
        let keys: Vec<String> = loaded
            .device_lists
            .iter()
            .map(|(u, _)| u.to_non_device().to_string())
            .collect();
        let rows = tx.query(
            "SELECT user_jid, devices, updated_unix_ms FROM amarula_device_lists
             WHERE account = $1 AND user_jid = ANY($2)",
            &[&account, &keys],
        )?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let list = decode_device_list(&r.try_get::<_, Vec<u8>>(1)?, r.try_get(2)?)?;
            found.insert(r.try_get::<_, String>(0)?, list);
        }
        // Two device JIDs of one user may be asked for: each gets the list.
        for ((_, list), key) in loaded.device_lists.iter_mut().zip(&keys) {
            *list = found.get(key).cloned();
        }
    }
    if !loaded.message_secrets.is_empty() {
        let column = |f: fn(&SecretKey) -> String| -> Vec<String> {
            loaded.message_secrets.iter().map(|(k, _)| f(k)).collect()
        };
        let chats = column(|k| k.chat.to_non_device().to_string());
        let authors = column(|k| k.author.to_non_device().to_string());
        let ids = column(|k| k.id.clone());
        let rows = tx.query(
            "SELECT chat, author, id, record FROM amarula_message_secrets
             WHERE account = $1 AND (chat, author, id) IN
                 (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))",
            &[&account, &chats, &authors, &ids],
        )?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let key: (String, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            found.insert(key, r.try_get::<_, Vec<u8>>(3)?);
        }
        // The same message may be asked for twice: each entry gets the record.
        for (i, (_, record)) in loaded.message_secrets.iter_mut().enumerate() {
            let key = (chats[i].clone(), authors[i].clone(), ids[i].clone());
            *record = found.get(&key).cloned();
        }
    }
    // ---- LID addressing ----
    if !loaded.lid_mappings.is_empty() {
        // Each user by its own kind: a LID names its phone number, a phone number its LID.
        let users: Vec<String> = loaded
            .lid_mappings
            .iter()
            .map(|(u, _)| u.to_non_device().to_string())
            .collect();
        let rows = tx.query(
            "SELECT lid, phone FROM amarula_lid_mappings
             WHERE account = $1 AND (lid = ANY($2) OR phone = ANY($2))",
            &[&account, &users],
        )?;
        let (mut by_lid, mut by_phone) = (HashMap::new(), HashMap::new());
        for r in &rows {
            let (lid, phone): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            by_lid.insert(lid.clone(), phone.clone());
            by_phone.insert(phone, lid);
        }
        for ((user, other), key) in loaded.lid_mappings.iter_mut().zip(&users) {
            let map = if user.is_lid() { &by_lid } else { &by_phone };
            *other = map.get(key).map(|t| jid(t)).transpose()?;
        }
    }
    if !loaded.tc_tokens.is_empty() {
        let users: Vec<String> = loaded
            .tc_tokens
            .iter()
            .map(|(u, _)| u.to_non_device().to_string())
            .collect();
        let rows = tx.query(
            "SELECT user_jid, token, timestamp FROM amarula_tc_tokens
             WHERE account = $1 AND user_jid = ANY($2)",
            &[&account, &users],
        )?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let timestamp: i64 = r.try_get(2)?;
            let token = TcToken {
                token: r.try_get(1)?,
                timestamp: u64::try_from(timestamp).unwrap_or(0),
            };
            found.insert(r.try_get::<_, String>(0)?, token);
        }
        for ((_, token), key) in loaded.tc_tokens.iter_mut().zip(&users) {
            *token = found.get(key).cloned();
        }
    }
    Ok(loaded)
}

/// Rows of (text key, record) by key.
fn by_key(rows: Vec<Row>) -> Result<HashMap<String, Vec<u8>>, StoreError> {
    let mut out = HashMap::with_capacity(rows.len());
    for r in &rows {
        out.insert(r.try_get(0)?, r.try_get(1)?);
    }
    Ok(out)
}

/// The other side of a LID mapping: `sql` selects one column by account and key.
pub(crate) fn lid_mapping(
    tx: &mut Tx<'_>,
    account: AccountId,
    sql: &'static str,
    key: &Jid,
) -> Result<Option<Jid>, StoreError> {
    let row = tx.query_opt(sql, &[&account, &key.to_non_device().to_string()])?;
    match row {
        Some(r) => Ok(Some(jid(&r.try_get::<_, String>(0)?)?)),
        None => Ok(None),
    }
}

pub(crate) fn pending(
    tx: &mut Tx<'_>,
    account: AccountId,
) -> Result<Vec<PendingMessage>, StoreError> {
    let rows = tx.query(
        "SELECT id, node, ack_token, received_unix_ms FROM amarula_pending_messages
         WHERE account = $1 ORDER BY seq",
        &[&account],
    )?;
    rows.iter()
        .map(|r| {
            let token: Option<i64> = r.try_get(2)?;
            Ok(PendingMessage {
                id: r.try_get::<_, String>(0)?.into(),
                node: r.try_get::<_, Vec<u8>>(1)?.into(),
                ack_token: token.map(|t| u64::from_ne_bytes(t.to_ne_bytes())),
                received_unix_ms: unms(r.try_get(3)?)?,
            })
        })
        .collect()
}
