//! Where desired and observed state live. One trait with a change feed, so a
//! distributed backend (etcd: a read-modify-write is a transaction guarded
//! by the revision it read, the feed is a watch) can replace the embedded
//! one without touching the reconciler or the API.
//!
//! Backends live in submodules ([`redb`] for one host, [`etcd`] for many,
//! with [`cluster`]: hosts and holder records on etcd); this module defines
//! what they provide and never imports them.

pub mod cluster;
pub mod etcd;
pub mod redb;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use havip_model::{DesiredState, Observed, Refusal};
use serde::Serialize;
use tokio::sync::watch;

use crate::sync::lock;

/// The desired state as committed, and the revision that committed it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Grows with every committed edit (by one in redb; in etcd it is the
    /// guard key's `mod_revision`, which other writes also move); 0 for a
    /// store never written.
    pub revision: u64,
    /// The desired state that revision committed, shared read-only.
    pub state: Arc<DesiredState>,
}

/// Why a store call failed: callers must tell a refused edit (nothing
/// changed, the operator's request breaks a rule) from a store that could
/// not do its job.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The edit was refused by a rule; nothing was committed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The backend failed (I/O, a corrupt document, an unreachable
    /// server); the error says what was being done. Nothing was committed.
    #[error("{0:#}")]
    Backend(#[from] anyhow::Error),
}

/// An edit of the desired state: may refuse by a rule.
pub type Edit<'a> = dyn FnMut(&mut DesiredState) -> Result<(), Refusal> + 'a;

/// A backend of desired and observed state.
pub trait Store: Send + Sync {
    /// The last committed desired state.
    fn desired(&self) -> Snapshot;

    /// Lets `change` edit a copy of the desired state and commits the copy,
    /// durably and atomically, if it differs. A refusal from `change` aborts
    /// and commits nothing. Updates are serialised.
    fn update(&self, change: &mut Edit<'_>) -> Result<Snapshot, StoreError>;

    /// What was observed of every HAVIP, by VIP.
    fn observed(&self) -> BTreeMap<Ipv4Addr, Observed>;

    /// Stores these observations; ones of HAVIPs no longer desired are dropped.
    fn record(&self, observed: &BTreeMap<Ipv4Addr, Observed>) -> Result<(), StoreError>;

    /// The revision of the desired state: changes on every commit.
    fn watch(&self) -> watch::Receiver<u64>;

    /// Writes what [`Store::record`] kept in memory because the backend
    /// failed (reopening the backend first if it must). Called again, with
    /// backoff, while it fails; a backend that never defers writes has
    /// nothing to do.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How the backend is doing, for logs, status and metrics: shared, so
    /// a reader keeps it for the agent's life.
    fn health(&self) -> Arc<StoreHealth> {
        Arc::default()
    }
}

/// How the store is doing, updated by the backend as it writes (lock-free
/// reads): whether its writes fail, how many observations wait in memory to
/// be written, and whether the config file's desired state was left out at
/// start. Northbound shows it in status and metrics.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failing: AtomicBool,
    write_failures: AtomicU64,
    reopens: AtomicU64,
    pending: AtomicU64,
    last_error: Mutex<Option<String>>,
    config_not_applied: Mutex<Option<String>>,
}

/// [`StoreHealth`] read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreHealthSnapshot {
    /// The last write failed: observations are kept in memory and retried.
    pub failing: bool,
    /// Writes that failed since the agent started.
    pub write_failures: u64,
    /// Times the backend was reopened after a failed write.
    pub reopens: u64,
    /// HAVIPs whose observations are in memory, not yet on disk.
    pub pending: u64,
    /// The last write error, kept after recovery (None if there never was one).
    pub last_error: Option<String>,
    /// Why the config file's desired state was not applied at start (the
    /// agent runs on the store's state), if it was not.
    pub config_not_applied: Option<String>,
}

impl StoreHealth {
    /// Whether the last write failed.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Every field at once.
    pub fn snapshot(&self) -> StoreHealthSnapshot {
        StoreHealthSnapshot {
            failing: self.failing(),
            write_failures: self.write_failures.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
            config_not_applied: lock(&self.config_not_applied).clone(),
        }
    }

    /// A write failed with `error`.
    pub fn write_failed(&self, error: &str) {
        self.failing.store(true, Ordering::Relaxed);
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(error.to_owned());
    }

    /// A write succeeded.
    pub fn write_succeeded(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }

    /// The backend was reopened.
    pub fn reopened(&self) {
        self.reopens.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` HAVIPs' observations wait in memory.
    pub fn set_pending(&self, n: usize) {
        self.pending.store(n as u64, Ordering::Relaxed);
    }

    /// The config file's desired state was not applied at start, and why.
    pub fn set_config_not_applied(&self, why: Option<String>) {
        *lock(&self.config_not_applied) = why;
    }
}

/// [`Store::update`] with a result from the edit.
pub fn update_with<T>(
    store: &dyn Store,
    mut change: impl FnMut(&mut DesiredState) -> Result<T, Refusal>,
) -> Result<(T, Snapshot), StoreError> {
    // A backend may run the edit again (e.g. after a conflict): keep the last.
    let mut out = None;
    let snap = store.update(&mut |s| {
        out = Some(change(s)?);
        Ok(())
    })?;
    Ok((out.expect("the edit ran"), snap))
}
