//! The desired state on etcd, for many hosts: the [`Store`] trait over the
//! keys `<p>/desired/subnets/<name>`, `<p>/desired/subnet_settings/<name>`
//! (only for a subnet whose settings are not the default: none is unicast,
//! as state written before them reads), `<p>/desired/vnics/<name>` and
//! `<p>/desired/havips/<vip>` (JSON of the havip-model objects) and the guard
//! key `<p>/desired/revision`, which every commit rewrites: its
//! `mod_revision` is [`Snapshot::revision`].
//!
//! An update reads the desired keys at one revision, edits a copy, and
//! commits what changed with one transaction that compares the guard key's
//! `mod_revision` with the one it read; another writer's commit in between
//! fails the comparison and the update starts again from a fresh read (etcd
//! <https://etcd.io/docs/v3.4/learning/api/#transaction>). A transaction holds
//! at most `--max-txn-ops` operations (128 by default,
//! [`EtcdSettings::max_txn_ops`]): an edit that writes more keys fails,
//! naming that limit, rather than being split (a split commit would not be
//! atomic).
//!
//! The trait is synchronous and is called from plain threads and blocking
//! tasks, so the etcd client runs on a runtime of its own, on its own thread;
//! calls reach it through channels. Observations ([`Store::record`]) stay in
//! memory: with many hosts the holder truth is the holder records
//! (`store::cluster`).

use std::{
    collections::BTreeMap,
    future::Future,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{anyhow, Context};
use etcd_client::{Compare, CompareOp, GetOptions, TxnOp};
use havip_model::{DesiredState, Observed};
use serde::{de::DeserializeOwned, Serialize};
use tokio::{
    sync::{oneshot, watch},
    time::sleep,
};
use tracing::{debug, info, warn};

use super::{
    cluster::{prefix_end, Backoff, Conn, EtcdSettings, RangeWatch, WatchEnd, BACKOFF_MIN},
    Edit, Snapshot, Store, StoreError, StoreHealth,
};
use crate::sync::lock;

/// How often the desired state is read again whatever the watch says.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// How many times an update is tried against other writers' commits.
const UPDATE_ATTEMPTS: usize = 16;

/// The etcd backend of [`Store`]: desired state in etcd (cached, followed
/// by a watch), observations in memory.
pub struct EtcdStore {
    rt: tokio::runtime::Handle,
    conn: Conn,
    shared: Arc<Shared>,
    /// Serialises this process's updates (etcd serialises everyone's).
    writer: Mutex<()>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

struct Shared {
    cache: Mutex<Cache>,
    revision: watch::Sender<u64>,
    health: Arc<StoreHealth>,
}

struct Cache {
    desired: Snapshot,
    observed: BTreeMap<Ipv4Addr, Observed>,
}

impl Shared {
    /// Takes `snap` if it is newer than the cached desired state.
    fn offer(&self, snap: Snapshot) {
        let mut cache = lock(&self.cache);
        if snap.revision <= cache.desired.revision {
            return;
        }
        let havips = &snap.state.havips;
        cache.observed.retain(|vip, _| havips.contains_key(vip));
        let revision = snap.revision;
        cache.desired = snap;
        drop(cache);
        self.revision.send_replace(revision);
    }
}

/// The desired state read at one etcd revision.
struct Read {
    snap: Snapshot,
    /// The etcd revision of the read (the header's), to watch from.
    at: i64,
    /// Keys of settings whose subnet does not exist (an older agent deleted the subnet): left
    /// out of `snap`, deleted by the next commit.
    orphans: Vec<String>,
}

/// The desired keys.
fn desired_prefix(conn: &Conn) -> String {
    format!("{}/desired/", conn.settings.prefix.trim_end_matches('/'))
}

fn guard_key(conn: &Conn) -> String {
    format!("{}revision", desired_prefix(conn))
}

/// Reads every desired key at one revision.
async fn read_desired(conn: &Conn) -> Result<Read, StoreError> {
    let prefix = desired_prefix(conn);
    let mut kv = conn.client.kv_client();
    let mut resp = conn
        .call(
            || "reading the desired state".into(),
            kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
    let at = resp.take_header().map_or(0, |h| h.revision());
    let mut state = DesiredState::default();
    let mut revision = 0;
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let rest = &key[prefix.len()..];
        let parsed = match rest.split_once('/') {
            None if rest == "revision" => {
                revision = kv.mod_revision() as u64;
                Ok(())
            }
            Some(("subnets", name)) => doc(kv.value()).map(|v| {
                state.subnets.insert(name.to_owned(), v);
            }),
            Some(("subnet_settings", name)) => doc(kv.value()).map(|v| {
                state.subnet_settings.insert(name.to_owned(), v);
            }),
            Some(("vnics", name)) => doc(kv.value()).map(|v| {
                state.vnics.insert(name.to_owned(), v);
            }),
            Some(("havips", vip)) => vip.parse().context("the key is not a VIP").and_then(|vip| {
                doc(kv.value()).map(|v| {
                    state.havips.insert(vip, v);
                })
            }),
            _ => {
                warn!(key = %key, "etcd: an unknown key among the desired state: ignored");
                Ok(())
            }
        };
        parsed.map_err(|e| {
            StoreError::Backend(
                e.context(format!("reading {key} (revision {}) from etcd", kv.mod_revision())),
            )
        })?;
    }
    let mut orphans = Vec::new();
    state.subnet_settings.retain(|name, _| {
        let keep = state.subnets.contains_key(name);
        if !keep {
            warn!(subnet = %name, "etcd: settings of a subnet that does not exist: ignored, deleted by the next commit");
            orphans.push(format!("{prefix}subnet_settings/{name}"));
        }
        keep
    });
    Ok(Read { snap: Snapshot { revision, state: Arc::new(state) }, at, orphans })
}

fn doc<T: DeserializeOwned>(value: &[u8]) -> anyhow::Result<T> {
    Ok(serde_json::from_slice(value)?)
}

/// The operations that turn `old` into `new` under `dir` (`<p>/desired/subnets/`…).
fn diff_ops<K: std::fmt::Display + Ord, V: Serialize + PartialEq>(
    dir: &str,
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    ops: &mut Vec<TxnOp>,
) -> Result<(), StoreError> {
    for (k, v) in new {
        if old.get(k) != Some(v) {
            let value = serde_json::to_vec(v).map_err(|e| StoreError::Backend(e.into()))?;
            ops.push(TxnOp::put(format!("{dir}{k}"), value, None));
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        ops.push(TxnOp::delete(format!("{dir}{k}"), None));
    }
    Ok(())
}

/// Follows the desired keys: reads them, watches from the revision after
/// the read's, and reads again on every change, on a compacted, cancelled or broken
/// watch, and every [`RESYNC_EVERY`]; retried with backoff while etcd fails.
async fn follow_desired(conn: Conn, shared: Arc<Shared>) {
    let prefix = desired_prefix(&conn);
    let mut backoff = Backoff::new();
    loop {
        let read = match read_desired(&conn).await {
            Ok(r) => r,
            Err(e) => {
                backoff.failed("reading the desired state", &e).await;
                continue;
            }
        };
        shared.offer(read.snap);
        let mut watch = match RangeWatch::start(&conn, &prefix, prefix_end(&prefix), read.at + 1).await {
            Ok(w) => w,
            Err(end) => {
                backoff.failed("watching the desired state", &end).await;
                continue;
            }
        };
        backoff.reset();
        let resync = sleep(RESYNC_EVERY);
        tokio::pin!(resync);
        let end = loop {
            tokio::select! {
                batch = watch.next() => match batch {
                    Ok(_) => match read_desired(&conn).await {
                        Ok(r) => shared.offer(r.snap),
                        Err(e) => break WatchEnd::Broken(format!("{e:#}")),
                    },
                    Err(end) => break end,
                },
                _ = &mut resync => break WatchEnd::Broken("periodic resync".into()),
            }
        };
        debug!(why = %end, "etcd: the desired-state watch ended: reading again");
        sleep(BACKOFF_MIN).await;
    }
}

impl EtcdStore {
    /// Connects to etcd, reads the desired state, and starts following it,
    /// on a thread of its own (`havip-etcd`) running the etcd client.
    ///
    /// # Errors
    /// [`StoreError::Backend`]: the thread or runtime could not start, the
    /// TLS files cannot be read, or etcd did not answer the first read
    /// within [`EtcdSettings::request_timeout`] (the error names the
    /// endpoints).
    pub fn open(settings: &EtcdSettings) -> Result<Self, StoreError> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("havip-etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                // Runs the client's tasks until the store is dropped.
                let _ = rt.block_on(stopped);
            })
            .context("starting the etcd client's thread")?;
        let rt = handle_rx
            .recv()
            .context("the etcd client's thread")?
            .context("starting the etcd client's runtime")?;
        let settings = settings.clone();
        let conn = block_on(&rt, async move { Conn::connect(&settings).await })?;
        let c = conn.clone();
        let read = block_on(&rt, async move { read_desired(&c).await })?;
        info!(
            endpoints = %conn.settings.endpoints.join(","),
            prefix = %conn.settings.prefix,
            revision = read.snap.revision,
            "etcd store opened"
        );
        let shared = Arc::new(Shared {
            revision: watch::Sender::new(read.snap.revision),
            cache: Mutex::new(Cache { desired: read.snap, observed: BTreeMap::new() }),
            health: Arc::default(),
        });
        rt.spawn(follow_desired(conn.clone(), shared.clone()));
        Ok(Self { rt, conn, shared, writer: Mutex::new(()), stop: Some(stop), thread: Some(thread) })
    }

    /// Runs `f` on the client's runtime and waits for it (from any thread,
    /// inside another runtime too: the wait is a plain channel receive).
    fn block<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        block_on(&self.rt, f)
    }

    /// One try of an update: `Ok(None)` when another writer committed
    /// between the read and the commit.
    fn try_update(&self, change: &mut Edit<'_>) -> Result<Option<Snapshot>, StoreError> {
        let c = self.conn.clone();
        let read = self.block(async move { read_desired(&c).await })?;
        let old = read.snap.clone();
        self.shared.offer(old.clone());
        let mut new = (*old.state).clone();
        change(&mut new)?;
        if new == *old.state {
            return Ok(Some(old));
        }
        let prefix = desired_prefix(&self.conn);
        let mut ops = Vec::new();
        diff_ops(&format!("{prefix}subnets/"), &old.state.subnets, &new.subnets, &mut ops)?;
        diff_ops(
            &format!("{prefix}subnet_settings/"),
            &old.state.subnet_settings,
            &new.subnet_settings,
            &mut ops,
        )?;
        ops.extend(read.orphans.iter().map(|k| TxnOp::delete(k.as_str(), None)));
        diff_ops(&format!("{prefix}vnics/"), &old.state.vnics, &new.vnics, &mut ops)?;
        diff_ops(&format!("{prefix}havips/"), &old.state.havips, &new.havips, &mut ops)?;
        let guard = guard_key(&self.conn);
        ops.push(TxnOp::put(
            guard.as_str(),
            b"the desired state's revision is this key's mod_revision".to_vec(),
            None,
        ));
        let limit = self.conn.settings.max_txn_ops;
        if ops.len() > limit {
            return Err(StoreError::Backend(anyhow!(
                "this edit writes {} keys: etcd applies at most {limit} operations in one transaction \
                 (its --max-txn-ops; [store] max_txn_ops must match it); split the edit, or raise both",
                ops.len()
            )));
        }
        let txn = etcd_client::Txn::new()
            .when([Compare::mod_revision(guard.as_str(), CompareOp::Equal, old.revision as i64)])
            .and_then(ops);
        let c = self.conn.clone();
        let base = old.revision;
        let mut resp = self.block(async move {
            let mut kv = c.client.kv_client();
            c.call(|| format!("committing the desired state against revision {base}"), kv.txn(txn)).await
        })?;
        if !resp.succeeded() {
            return Ok(None);
        }
        let revision = resp.take_header().map_or(0, |h| h.revision()) as u64;
        let snap = Snapshot { revision, state: Arc::new(new) };
        self.shared.offer(snap.clone());
        Ok(Some(snap))
    }
}

/// Runs `f` on `rt` and waits for its result on a plain channel.
fn block_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    f: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().map_err(|_| StoreError::Backend(anyhow!("the etcd client's thread stopped")))?
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Store for EtcdStore {
    fn desired(&self) -> Snapshot {
        lock(&self.shared.cache).desired.clone()
    }

    /// Read, edit, commit guarded by the guard key's `mod_revision`; tried
    /// again from a fresh read when another writer came first (up to 16
    /// times). A refusal aborts at once; a failure says what and where.
    fn update(&self, change: &mut Edit<'_>) -> Result<Snapshot, StoreError> {
        let _one = lock(&self.writer);
        let health = &self.shared.health;
        for attempt in 1..=UPDATE_ATTEMPTS {
            match self.try_update(change) {
                Ok(Some(snap)) => {
                    health.write_succeeded();
                    return Ok(snap);
                }
                Ok(None) => debug!(attempt, "etcd: another writer committed first: updating again"),
                Err(StoreError::Refused(r)) => return Err(StoreError::Refused(r)),
                Err(StoreError::Backend(e)) => {
                    health.write_failed(&format!("{e:#}"));
                    return Err(StoreError::Backend(e));
                }
            }
        }
        let e = anyhow!(
            "updating the desired state in etcd: other writers committed first {UPDATE_ATTEMPTS} times in a row"
        );
        health.write_failed(&format!("{e:#}"));
        Err(e.into())
    }

    fn observed(&self) -> BTreeMap<Ipv4Addr, Observed> {
        lock(&self.shared.cache).observed.clone()
    }

    /// Kept in memory only (the holder truth of many hosts is the holder
    /// records); observations of HAVIPs not desired are dropped.
    fn record(&self, observed: &BTreeMap<Ipv4Addr, Observed>) -> Result<(), StoreError> {
        let mut cache = lock(&self.shared.cache);
        let desired = cache.desired.state.clone();
        for (vip, o) in observed.iter().filter(|(vip, _)| desired.havips.contains_key(vip)) {
            cache.observed.insert(*vip, o.clone());
        }
        Ok(())
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.shared.revision.subscribe()
    }

    /// Nothing waits to be written; a read of the desired state tells
    /// whether etcd answers again (and refreshes the cache).
    fn flush(&self) -> Result<(), StoreError> {
        let c = self.conn.clone();
        match self.block(async move { read_desired(&c).await }) {
            Ok(read) => {
                self.shared.offer(read.snap);
                self.shared.health.write_succeeded();
                Ok(())
            }
            Err(e) => {
                self.shared.health.write_failed(&format!("{e:#}"));
                Err(e)
            }
        }
    }

    fn health(&self) -> Arc<StoreHealth> {
        self.shared.health.clone()
    }
}
