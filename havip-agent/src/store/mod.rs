//! Where desired and observed state live. One trait with a change feed, so a
//! distributed backend (etcd: a read-modify-write is a transaction guarded
//! by the revision it read, the feed is a watch) can replace the embedded
//! one without touching the reconciler or the API.
//!
//! Backends live in submodules ([`redb`]); this module defines what they
//! provide and never imports them.

pub mod redb;

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

use havip_model::{DesiredState, Observed, Refusal};
use tokio::sync::watch;

/// The desired state as committed, and the revision that committed it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Grows by one per committed edit; 0 for a store never written.
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
