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
use std::time::{Duration, Instant};

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
    /// Accounts whose lease was lost (expired, or taken by another worker), or that this
    /// worker could not renew and whose lease runs out before the next step: stop their
    /// clients now, so that no account is ever connected from two workers at once.
    pub lost: Vec<String>,
    /// Why the renewal or the leasing failed (the database is unreachable, say), when it did.
    pub error: Option<StoreError>,
}

/// One worker's leased accounts.
#[derive(Debug)]
pub struct Fleet {
    db: PostgresDatabase,
    owner: String,
    options: FleetOptions,
    /// The held leases, with until when they surely hold by this process's clock (the
    /// renewal's start plus the lease time: the database's expiry is later).
    held: BTreeMap<String, (Lease, Instant)>,
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
        self.held.values().map(|(l, _)| l)
    }

    /// Renews every held lease (in one statement) and reports those lost, then leases free
    /// accounts up to the limit. When the database cannot be reached, the leases that run out
    /// before the next step are reported lost (stop them: another worker may take them once
    /// they expire) and the others are kept; the error is in [`FleetStep::error`].
    pub async fn step(&mut self) -> FleetStep {
        let mut step = FleetStep::default();
        let ttl = self.options.lease_time;
        let started = Instant::now();
        let leases: Vec<Lease> = self.held.values().map(|(l, _)| l.clone()).collect();
        match self.db.renew_all(&leases, ttl).await {
            Ok(renewed) => {
                for (lease, live) in leases.into_iter().zip(renewed) {
                    let name = lease.account().to_owned();
                    if live {
                        self.held.insert(name, (lease, started + ttl));
                    } else {
                        tracing::warn!(account = %name, "lease lost");
                        self.held.remove(&name);
                        step.lost.push(name);
                    }
                }
            }
            Err(e) => {
                let horizon = Instant::now() + self.renew_every();
                let expiring: Vec<String> = self
                    .held
                    .iter()
                    .filter(|(_, (_, until))| *until <= horizon)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in expiring {
                    tracing::warn!(account = %name, error = %e, "lease not renewed in time");
                    self.held.remove(&name);
                    step.lost.push(name);
                }
                step.error = Some(e);
                return step;
            }
        }
        let room = self.options.max_accounts.saturating_sub(self.held.len());
        if room > 0 {
            // Other workers race for the same accounts: ask for more than the room.
            let candidates = match self.db.leasable(room.saturating_mul(2)).await {
                Ok(c) => c,
                Err(e) => {
                    step.error = Some(e);
                    return step;
                }
            };
            for name in candidates {
                if self.held.len() >= self.options.max_accounts {
                    break;
                }
                if self.held.contains_key(&name) {
                    continue;
                }
                let asked = Instant::now();
                match self.db.acquire(&name, &self.owner, ttl).await {
                    Ok(Some(lease)) => {
                        tracing::info!(account = %name, token = lease.token(), "account leased");
                        let store = self.db.fenced(&lease);
                        self.held.insert(name, (lease.clone(), asked + ttl));
                        step.started.push((lease, store));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        step.error = Some(e);
                        break;
                    }
                }
            }
        }
        step
    }

    /// The worker stopped running `account` (its client ended: logged out, a store failure):
    /// the lease is released, so another worker (or this one's next step) may take it.
    pub async fn finished(&mut self, account: &str) -> Result<(), StoreError> {
        if let Some((lease, _)) = self.held.remove(account) {
            self.db.release(&lease).await?;
        }
        Ok(())
    }

    /// Releases every held lease (a clean shutdown: the other workers take the accounts at
    /// once instead of after the lease time). Stop the clients first.
    pub async fn release_all(&mut self) -> Result<(), StoreError> {
        for (lease, _) in std::mem::take(&mut self.held).into_values() {
            self.db.release(&lease).await?;
        }
        Ok(())
    }
}
