//! [`Fleet`] (feature `postgres`): one worker's share of the accounts of a
//! [`PostgresDatabase`], "every account I can lease, up to K".
//!
//! Several worker processes (on one machine or many) open the same database, each with a
//! [`Fleet`] under its own owner name. Each calls [`Fleet::step`] every
//! [`renew_every`](Fleet::renew_every) (a third of the lease time): it renews the leases of the
//! accounts it runs, reports those it lost, and leases free or expired accounts up to its
//! limit. For every account it gets, the worker starts a client on the fenced store it is handed
//! ([`PostgresDatabase::fenced`]); for every account it lost, it stops the client at once. A
//! worker that dies stops renewing: its leases expire after the lease time and the other
//! workers' next steps take its accounts over. A worker that only stalled (and whose leases
//! were taken meanwhile) cannot harm the new owner: its store's writes fail with
//! [`StoreError::LeaseLost`], so its clients end
//! ([`ClientEvent::StoreFailed`](crate::ClientEvent::StoreFailed)) before anything that depends
//! on the write leaves, and its next step reports the accounts lost.
//!
//! The fleet does no IO of its own between steps and needs no runtime: the worker's loop, with
//! its own timer, drives it (see `tests/src/bin/fleet_worker.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::store::{Lease, PostgresDatabase, PostgresStore, StoreError};

/// Settings of a [`Fleet`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FleetOptions {
    /// At most this many accounts at once (K). Default 1,000.
    pub max_accounts: usize,
    /// How long a lease lasts without renewal: after a worker dies, its accounts wait this
    /// long before another worker takes them. Default 15 s.
    pub lease_time: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            max_accounts: 1000,
            lease_time: Duration::from_secs(15),
        }
    }
}

/// What one [`Fleet::step`] changed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FleetStep {
    /// Accounts newly leased, with their fenced stores: start a client on each.
    pub started: Vec<(Lease, PostgresStore)>,
    /// Accounts whose lease was lost (expired, or taken by another worker): stop their clients
    /// now (their writes already fail).
    pub lost: Vec<String>,
}

/// One worker's leased accounts.
#[derive(Debug)]
pub struct Fleet {
    db: PostgresDatabase,
    owner: String,
    options: FleetOptions,
    held: BTreeMap<String, Lease>,
}

impl Fleet {
    /// A worker named `owner` (unique among the workers: a host name and process id, say).
    pub fn new(db: PostgresDatabase, owner: impl Into<String>, options: FleetOptions) -> Self {
        Self {
            db,
            owner: owner.into(),
            options,
            held: BTreeMap::new(),
        }
    }

    /// How often to call [`step`](Self::step): a third of the lease time, so a lease survives
    /// one slow or failed step.
    pub fn renew_every(&self) -> Duration {
        self.options.lease_time / 3
    }

    /// The worker's name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The accounts the worker holds, by name.
    pub fn held(&self) -> impl Iterator<Item = &Lease> {
        self.held.values()
    }

    /// Renews every held lease (reporting those lost), then leases free accounts up to the
    /// limit. A failure to reach the database ends the step early with the error; the held
    /// leases stay as they were (they expire on their own if the database stays away, and
    /// the stores' writes fail with them).
    pub async fn step(&mut self) -> Result<FleetStep, StoreError> {
        let mut step = FleetStep::default();
        let ttl = self.options.lease_time;
        let names: Vec<String> = self.held.keys().cloned().collect();
        for name in names {
            let Some(lease) = self.held.get(&name) else {
                continue;
            };
            match self.db.renew(lease, ttl).await {
                Ok(()) => {}
                Err(StoreError::LeaseLost { .. }) => {
                    tracing::warn!(account = %name, "lease lost");
                    self.held.remove(&name);
                    step.lost.push(name);
                }
                Err(e) => return Err(e),
            }
        }
        let room = self.options.max_accounts.saturating_sub(self.held.len());
        if room > 0 {
            // Other workers race for the same accounts: ask for more than the room.
            for name in self.db.leasable(room.saturating_mul(2)).await? {
                if self.held.len() >= self.options.max_accounts {
                    break;
                }
                if self.held.contains_key(&name) {
                    continue;
                }
                if let Some(lease) = self.db.acquire(&name, &self.owner, ttl).await? {
                    tracing::info!(account = %name, token = lease.token(), "account leased");
                    let store = self.db.fenced(&lease);
                    self.held.insert(name, lease.clone());
                    step.started.push((lease, store));
                }
            }
        }
        Ok(step)
    }

    /// The worker stopped running `account` (its client ended: logged out, a store failure):
    /// the lease is released, so another worker (or this one's next step) may take it.
    pub async fn finished(&mut self, account: &str) -> Result<(), StoreError> {
        if let Some(lease) = self.held.remove(account) {
            self.db.release(&lease).await?;
        }
        Ok(())
    }

    /// Releases every held lease (a clean shutdown: the other workers take the accounts at
    /// once instead of after the lease time). Stop the clients first.
    pub async fn release_all(&mut self) -> Result<(), StoreError> {
        for lease in std::mem::take(&mut self.held).into_values() {
            self.db.release(&lease).await?;
        }
        Ok(())
    }
}
