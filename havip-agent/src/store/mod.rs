//! Where desired and observed state live. One trait with a change feed, so a
//! distributed backend (etcd: a read-modify-write is a transaction guarded
//! by the revision it read, the feed is a watch) can replace the embedded
//! one without touching the reconciler or the API.

mod redb;

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

use anyhow::Result;
use tokio::sync::watch;

pub use self::redb::RedbStore;
use crate::model::{DesiredState, Observed};

/// The desired state as committed, and the revision that committed it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub revision: u64,
    pub state: Arc<DesiredState>,
}

pub trait Store: Send + Sync {
    /// The last committed desired state.
    fn desired(&self) -> Snapshot;

    /// Lets `change` edit a copy of the desired state and commits the copy,
    /// durably and atomically, if it differs. An error from `change` aborts
    /// and commits nothing. Updates are serialised.
    fn update(&self, change: &mut dyn FnMut(&mut DesiredState) -> Result<()>) -> Result<Snapshot>;

    /// What was observed of every HAVIP, by VIP.
    fn observed(&self) -> BTreeMap<Ipv4Addr, Observed>;

    /// Stores these observations; ones of HAVIPs no longer desired are dropped.
    fn record(&self, observed: &BTreeMap<Ipv4Addr, Observed>) -> Result<()>;

    /// The revision of the desired state: changes on every commit.
    fn watch(&self) -> watch::Receiver<u64>;
}

/// [`Store::update`] with a result from the edit.
pub fn update_with<T>(
    store: &dyn Store,
    mut change: impl FnMut(&mut DesiredState) -> Result<T>,
) -> Result<(T, Snapshot)> {
    // A backend may run the edit again (e.g. after a conflict): keep the last.
    let mut out = None;
    let snap = store.update(&mut |s| {
        out = Some(change(s)?);
        Ok(())
    })?;
    Ok((out.expect("the edit ran"), snap))
}
