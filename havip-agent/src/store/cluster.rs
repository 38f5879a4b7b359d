//! The shared truth of many hosts, on etcd: which hosts are alive (each
//! registered on a lease) and who holds each VIP (holder records, ordered by
//! etcd's commit order).
//!
//! Keys under the prefix `<p>` (default `/havip/v1`, [`EtcdSettings::prefix`]):
//!
//! - `<p>/hosts/<id>`: JSON [`HostRecord`], put with the host's lease: it
//!   disappears when the lease expires (etcd
//!   <https://etcd.io/docs/v3.4/learning/api/#lease-api>).
//! - `<p>/holders/<vip>`: JSON `{holder, reason, committed_by}`; the key's
//!   `mod_revision` is the record's [`HolderRecord::revision`], the fencing
//!   token. Never deleted (a clear writes `holder: null`), so it only grows.
//! - `<p>/desired/…`: the desired state (see `store::etcd`).
//!
//! A claim commits with one transaction comparing the holder key's
//! `mod_revision` with the revision the claim was made against and the host
//! key's lease with ours ([`EtcdCluster::commit_holder`]); a follower
//! ([`EtcdCluster::follow`]) reads a snapshot at one revision and watches
//! from the next one, so it never misses a change: a compacted or cancelled
//! watch, or a broken stream, reloads the snapshot (etcd
//! <https://etcd.io/docs/v3.4/learning/api_guarantees/>, "watch").

use std::{
    collections::BTreeMap,
    future::Future,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::anyhow;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};
use havip_model::Holder;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, watch, Notify},
    task::JoinHandle,
    time::{sleep, timeout, Instant},
};
use tracing::{debug, info, warn};

use super::StoreError;
use crate::sync::lock;

/// How to reach etcd and where havip's keys live there (`[store]` with
/// `backend = "etcd"` in the agent's config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs (`http://198.18.0.11:2379`, `https://…` with TLS); at
    /// least one. The client balances over them.
    pub endpoints: Vec<String>,
    /// The key prefix, `/`-led, no trailing `/` (default `/havip/v1`).
    pub prefix: String,
    /// TLS files; `None`: plain HTTP/2.
    pub tls: Option<EtcdTls>,
    /// The host registration's lease TTL (whole seconds; etcd may grant
    /// more: its minimum is 1.5 × its election timeout). Default 5 s.
    pub lease_ttl: Duration,
    /// How long connecting to an endpoint may take; every request is given
    /// [`EtcdSettings::request_timeout`]. Default 1 s.
    pub dial_timeout: Duration,
    /// The most operations etcd applies in one transaction (its
    /// `--max-txn-ops`, 128 by default): a desired-state commit needing more
    /// fails, naming this limit.
    pub max_txn_ops: usize,
}

/// TLS for etcd: the CA that signed the servers' certificates, and
/// optionally a client certificate and key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate (PEM) the servers' certificates are checked against.
    pub ca: PathBuf,
    /// Client certificate and its private key (PEM), for etcd's
    /// `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/havip/v1";

impl EtcdSettings {
    /// Settings for `endpoints` with every default: prefix `/havip/v1`, no
    /// TLS, lease TTL 5 s, dial timeout 1 s, 128 operations per transaction.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.to_owned(),
            tls: None,
            lease_ttl: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(1),
            max_txn_ops: 128,
        }
    }

    /// How long one request may take before it counts as failed: three dial
    /// timeouts, at least 1 s (a leader election takes about one).
    pub fn request_timeout(&self) -> Duration {
        self.dial_timeout.saturating_mul(3).max(Duration::from_secs(1))
    }

    /// The endpoints as one string, for error messages.
    fn shown_endpoints(&self) -> String {
        self.endpoints.join(",")
    }
}

/// One host as it registered itself (`<p>/hosts/<id>`, on its lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host id ([`havip_model::Host::id`]).
    pub id: String,
    /// Its underlay address: its VTEP.
    pub underlay: Ipv4Addr,
    /// Its VXLAN UDP port (4789).
    pub vxlan_port: u16,
    /// Its underlay probe UDP port (4790).
    pub probe_port: u16,
    /// Its peer-hint UDP port (4791).
    pub hint_port: u16,
    /// Whether it has the uplink (EIP traffic leaves and arrives there).
    pub gateway: bool,
    /// The agent's version.
    pub version: String,
}

/// Who holds one VIP, as committed to etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderRecord {
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The holder; `None`: cleared (or never held, with revision 0).
    pub holder: Option<Holder>,
    /// The holder key's `mod_revision`: the fencing token. 0: never written.
    pub revision: u64,
    /// Why it was committed ("claim", "host down", …).
    pub reason: String,
    /// The host id that committed it.
    pub committed_by: String,
}

/// A holder record's value in etcd (the VIP is in the key, the revision is
/// the key's `mod_revision`).
#[derive(Serialize, Deserialize)]
struct HolderBody {
    holder: Option<Holder>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    committed_by: String,
}

/// Everything under the hosts and holders prefixes at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The etcd revision the snapshot was read at.
    pub revision: u64,
    /// Registered hosts by id.
    pub hosts: BTreeMap<String, HostRecord>,
    /// Holder records by VIP.
    pub holders: BTreeMap<Ipv4Addr, HolderRecord>,
}

/// What [`EtcdCluster::follow`] reports, in etcd's commit order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A fresh snapshot: replaces everything known (a record in it may be
    /// older than one already applied: apply only newer revisions).
    Resynced(ClusterView),
    /// A holder record was committed.
    Holder(HolderRecord),
    /// A host registered (or put its record again, e.g. on a new lease).
    HostJoined(HostRecord),
    /// A host's key went away (its lease expired or was revoked) at `revision`.
    HostLeft {
        /// The host id.
        id: String,
        /// The revision of the deletion.
        revision: u64,
    },
    /// etcd became unreachable (`false`) or reachable again (`true`); only
    /// changes are reported. After `true` comes a `Resynced`.
    Reachable(bool),
}

/// How [`EtcdCluster::commit_holder`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed; the record carries its revision (the fencing token).
    Committed(HolderRecord),
    /// Another commit came first: the current record (revision 0 and no
    /// holder if the key does not exist).
    Lost(HolderRecord),
    /// Our registration (lease) is gone: we may not commit. The
    /// registration task is nudged to register again.
    Fenced,
}

/// This host's registration, as [`EtcdCluster::registration`] shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// The lease our host key is on, while we believe it alive (a keepalive
    /// answered within the TTL); `None` before the first registration, and
    /// from when the lease is lost or may have expired until we register again.
    pub lease: Option<i64>,
    /// How many times the host registered (a new lease each time): more than
    /// one means it re-registered after losing its lease.
    pub registrations: u64,
}

/// The keys under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.trim_end_matches('/').to_owned() }
    }

    fn hosts(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    fn host(&self, id: &str) -> String {
        format!("{}{id}", self.hosts())
    }

    fn holders(&self) -> String {
        format!("{}/holders/", self.prefix)
    }

    fn holder(&self, vip: Ipv4Addr) -> String {
        format!("{}{vip}", self.holders())
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// range end for a prefix).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A connected client with what every request needs: the keys, the
/// timeout, and the endpoints for error messages. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) keys: Keys,
    pub(crate) settings: EtcdSettings,
}

impl Conn {
    /// Connects (lazily: an unreachable etcd fails the first request, not
    /// this) with the settings' endpoints, TLS and timeouts.
    pub(crate) async fn connect(settings: &EtcdSettings) -> Result<Self, StoreError> {
        let at = settings.shown_endpoints();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(settings.dial_timeout)
            // A member without a leader fails the request (and cancels
            // watches) rather than serving stale reads.
            .with_require_leader(true);
        if let Some(tls) = &settings.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let client = Client::connect(&settings.endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Backend(anyhow!("connecting to etcd at {at}: {e}")))?;
        Ok(Self { client, keys: Keys::new(&settings.prefix), settings: settings.clone() })
    }

    /// Runs one request with the request timeout; a failure says what was
    /// being done and where.
    pub(crate) async fn call<T>(
        &self,
        what: impl FnOnce() -> String,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        let limit = self.settings.request_timeout();
        let failed = |why: String| {
            StoreError::Backend(anyhow!("{} at etcd {}: {why}", what(), self.settings.shown_endpoints()))
        };
        match timeout(limit, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!("no answer within {} ms", limit.as_millis()))),
        }
    }
}

/// The TLS configuration from the PEM files.
fn tls_options(tls: &EtcdTls) -> Result<etcd_client::TlsOptions, StoreError> {
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).map_err(|e| StoreError::Backend(anyhow!("reading etcd {what} {}: {e}", p.display())))
    };
    let mut options = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca, "CA certificate")?));
    if let Some((cert, key)) = &tls.identity {
        options = options.identity(etcd_client::Identity::from_pem(
            read(cert, "client certificate")?,
            read(key, "client key")?,
        ));
    }
    Ok(options)
}

/// Why a watch stopped: every case is answered by a reload of the snapshot.
#[derive(Debug)]
pub(crate) enum WatchEnd {
    /// The start revision was compacted away (etcd's `compact_revision`).
    Compacted(i64),
    /// etcd cancelled the watch (e.g. its member lost the leader).
    Cancelled(String),
    /// The stream broke or went silent, or could not be opened.
    Broken(String),
}

impl std::fmt::Display for WatchEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchEnd::Compacted(at) => write!(f, "its start revision was compacted (etcd compacted to {at})"),
            WatchEnd::Cancelled(why) => write!(f, "etcd cancelled it ({why})"),
            WatchEnd::Broken(why) => f.write_str(why),
        }
    }
}

/// How often a watch asks for a progress report, and how long it may go
/// without any message before it counts as broken (a silent stream is
/// what a cut network looks like).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One watch of a key range from a revision on, with a liveness check.
pub(crate) struct RangeWatch {
    stream: WatchStream,
    silent_limit: Duration,
}

impl RangeWatch {
    /// Watches `[key, end)` from revision `from` (inclusive).
    pub(crate) async fn start(conn: &Conn, key: &str, end: Vec<u8>, from: i64) -> Result<Self, WatchEnd> {
        let options = WatchOptions::new().with_range(end).with_start_revision(from);
        let mut client = conn.client.clone();
        let stream = match timeout(conn.settings.request_timeout(), client.watch(key, Some(options))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(WatchEnd::Broken(format!("opening a watch of {key}: {e}"))),
            Err(_) => return Err(WatchEnd::Broken(format!("opening a watch of {key}: no answer"))),
        };
        Ok(Self { stream, silent_limit: conn.settings.request_timeout().max(PROGRESS_EVERY * 2) })
    }

    /// The next batch of events (never empty), or why the watch ended.
    pub(crate) async fn next(&mut self) -> Result<Vec<etcd_client::Event>, WatchEnd> {
        let mut last_heard = Instant::now();
        loop {
            let ask = sleep(PROGRESS_EVERY);
            tokio::select! {
                m = self.stream.message() => {
                    last_heard = Instant::now();
                    let r = match m {
                        Ok(Some(r)) => r,
                        Ok(None) => return Err(WatchEnd::Broken("the watch stream ended".into())),
                        Err(e) => return Err(WatchEnd::Broken(format!("the watch stream failed: {e}"))),
                    };
                    if r.compact_revision() > 0 {
                        return Err(WatchEnd::Compacted(r.compact_revision()));
                    }
                    if r.canceled() {
                        return Err(WatchEnd::Cancelled(r.cancel_reason().to_owned()));
                    }
                    if !r.events().is_empty() {
                        return Ok(r.events().to_vec());
                    }
                }
                _ = ask => {
                    if last_heard.elapsed() > self.silent_limit {
                        return Err(WatchEnd::Broken(format!(
                            "the watch stream was silent for {} ms",
                            last_heard.elapsed().as_millis()
                        )));
                    }
                    if let Err(e) = self.stream.request_progress().await {
                        return Err(WatchEnd::Broken(format!("asking the watch for progress: {e}")));
                    }
                }
            }
        }
    }
}

/// The first wait between retries while etcd fails.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between retries.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The wait between retries while etcd fails: doubles from [`BACKOFF_MIN`]
/// up to 2 s, back to the start after a success.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(BACKOFF_MIN)
    }

    /// A try failed because of `e` (logged at debug with `what`): the wait
    /// before the next (longer next time).
    pub(crate) fn failed(&mut self, what: &str, e: &dyn std::fmt::Display) -> tokio::time::Sleep {
        debug!(error = %e, "etcd: {what} failed, retried in {} ms", self.0.as_millis());
        let wait = sleep(self.0);
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        wait
    }

    /// A try succeeded.
    pub(crate) fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// The cluster side of the etcd store: host registration, holder records,
/// the follower. Async, cheap to clone (clones share the client and the
/// registration); the registration task stops when the last clone is dropped.
#[derive(Clone)]
pub struct EtcdCluster {
    conn: Conn,
    shared: Arc<Shared>,
}

struct Shared {
    registration: watch::Sender<Registration>,
    /// The host id registered (what `committed_by` says).
    host: Mutex<Option<String>>,
    /// Wakes the registration task to check its lease now.
    nudge: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl EtcdCluster {
    /// A client of the etcd cluster in `settings`. Connecting is lazy: an
    /// unreachable etcd shows in the first request.
    ///
    /// # Errors
    /// Unreadable TLS files, malformed endpoints ([`StoreError::Backend`]).
    pub async fn connect(settings: &EtcdSettings) -> Result<Self, StoreError> {
        let conn = Conn::connect(settings).await?;
        Ok(Self {
            conn,
            shared: Arc::new(Shared {
                registration: watch::Sender::new(Registration::default()),
                host: Mutex::new(None),
                nudge: Arc::new(Notify::new()),
                task: Mutex::new(None),
            }),
        })
    }

    /// Registers `record` at `<p>/hosts/<id>` on a lease of `ttl` (whole
    /// seconds, at least 1) and keeps it alive from a task, for as long as a
    /// clone of this lives: keepalives every third of the TTL; a lease lost
    /// (expired or revoked) is replaced by a new one and the record put
    /// again, logged. Returns at once (an unreachable etcd is retried with
    /// backoff, forever); [`EtcdCluster::registration`] says how it goes.
    /// Calling it again replaces the previous registration task.
    ///
    /// # Panics
    /// Outside a tokio runtime (the task is spawned on the current one).
    pub fn register(&self, record: HostRecord, ttl: Duration) -> watch::Receiver<Registration> {
        *lock(&self.shared.host) = Some(record.id.clone());
        let task = tokio::spawn(keep_registered(
            self.conn.clone(),
            record,
            ttl.as_secs().max(1),
            self.shared.registration.clone(),
            self.shared.nudge.clone(),
        ));
        if let Some(old) = lock(&self.shared.task).replace(task) {
            old.abort();
        }
        self.registration()
    }

    /// The settings it was connected with (e.g. `lease_ttl` for
    /// [`EtcdCluster::register`]).
    pub fn settings(&self) -> &EtcdSettings {
        &self.conn.settings
    }

    /// This host's registration, as it changes.
    pub fn registration(&self) -> watch::Receiver<Registration> {
        self.shared.registration.subscribe()
    }

    /// Hosts and holder records at one revision (one read transaction).
    ///
    /// # Errors
    /// etcd unreachable or failing ([`StoreError::Backend`]). Records that do
    /// not parse are skipped and logged, never an error.
    pub async fn view(&self) -> Result<ClusterView, StoreError> {
        let (hosts, holders) = (self.conn.keys.hosts(), self.conn.keys.holders());
        let txn = Txn::new().and_then([
            TxnOp::get(hosts.as_str(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(holders.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let mut kv = self.conn.client.kv_client();
        let mut resp = self.conn.call(|| "reading hosts and holders".into(), kv.txn(txn)).await?;
        let revision = resp.take_header().map_or(0, |h| h.revision()) as u64;
        let mut view = ClusterView { revision, ..Default::default() };
        for op in resp.op_responses() {
            let TxnOpResponse::Get(get) = op else { continue };
            for kv in get.kvs() {
                match self.parse(kv) {
                    Some(Parsed::Host(h)) => {
                        view.hosts.insert(h.id.clone(), h);
                    }
                    Some(Parsed::Holder(r)) => {
                        view.holders.insert(r.vip, r);
                    }
                    None => {}
                }
            }
        }
        Ok(view)
    }

    /// A key-value of the hosts or holders prefix, parsed; `None` (logged)
    /// for anything else or a value that does not parse.
    fn parse(&self, kv: &KeyValue) -> Option<Parsed> {
        let key = String::from_utf8_lossy(kv.key());
        let parsed = if let Some(id) = key.strip_prefix(&self.conn.keys.hosts()) {
            serde_json::from_slice::<HostRecord>(kv.value()).map_err(|e| e.to_string()).and_then(|h| {
                if h.id == id {
                    Ok(Parsed::Host(h))
                } else {
                    Err(format!("its id is {:?}", h.id))
                }
            })
        } else if let Some(vip) = key.strip_prefix(&self.conn.keys.holders()) {
            match (vip.parse::<Ipv4Addr>(), serde_json::from_slice::<HolderBody>(kv.value())) {
                (Ok(vip), Ok(b)) => Ok(Parsed::Holder(HolderRecord {
                    vip,
                    holder: b.holder,
                    revision: kv.mod_revision() as u64,
                    reason: b.reason,
                    committed_by: b.committed_by,
                })),
                (Err(e), _) => Err(e.to_string()),
                (_, Err(e)) => Err(e.to_string()),
            }
        } else {
            Err("not a host or holder key".into())
        };
        match parsed {
            Ok(p) => Some(p),
            Err(why) => {
                warn!(key = %key, revision = kv.mod_revision(), "etcd: skipped an unreadable record: {why}");
                None
            }
        }
    }

    /// Follows hosts and holder records: first a [`ClusterEvent::Resynced`]
    /// snapshot, then every change in commit order, from one watch of both
    /// prefixes starting at the snapshot's revision + 1. A compacted or
    /// cancelled watch, a broken or silent stream, and every `resync_every`
    /// (a safety net) reload the snapshot and send it as `Resynced`, then
    /// watch again from its revision + 1: nothing is missed. etcd
    /// unreachable: `Reachable(false)`, retried with backoff (50 ms to 2 s)
    /// forever; back: `Reachable(true)`, then `Resynced`. Ends when the
    /// receiver is dropped; never panics once started.
    ///
    /// # Panics
    /// Outside a tokio runtime (the follower is spawned on the current one).
    pub fn follow(&self, resync_every: Duration) -> mpsc::Receiver<ClusterEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(self.clone().run_follower(resync_every, tx, None));
        rx
    }

    /// [`EtcdCluster::follow`] from a view the caller already has (from
    /// [`EtcdCluster::view`]): no first `Resynced`, the watch starts at
    /// `view.revision + 1`; if that revision was compacted meanwhile, the
    /// first event is a `Resynced` of a fresh snapshot.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn follow_from(&self, view: ClusterView, resync_every: Duration) -> mpsc::Receiver<ClusterEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(self.clone().run_follower(resync_every, tx, Some(view)));
        rx
    }

    async fn run_follower(
        self,
        resync_every: Duration,
        tx: mpsc::Sender<ClusterEvent>,
        mut have: Option<ClusterView>,
    ) {
        let mut reachable: Option<bool> = None;
        let mut backoff = Backoff::new();
        // The range [<p>/holders/, end of <p>/hosts/) holds both prefixes
        // and nothing else of ours ("holders/" < "hosts/").
        let (start, end) = (self.conn.keys.holders(), prefix_end(&self.conn.keys.hosts()));
        loop {
            if tx.is_closed() {
                return;
            }
            let from = if let Some(view) = have.take() {
                view.revision as i64 + 1
            } else {
                match self.snapshot(&tx, &mut reachable, &mut backoff).await {
                    Some(from) => from,
                    None if tx.is_closed() => return,
                    None => continue,
                }
            };
            let end_reason = match RangeWatch::start(&self.conn, &start, end.clone(), from).await {
                Ok(mut w) => {
                    let deadline = sleep(resync_every);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            batch = w.next() => match batch {
                                Ok(events) => {
                                    for e in events.iter().filter_map(|e| self.event(e)) {
                                        if tx.send(e).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                Err(end) => break Some(end),
                            },
                            _ = &mut deadline => break None,
                            _ = tx.closed() => return,
                        }
                    }
                }
                Err(end) => Some(end),
            };
            match end_reason {
                None => debug!("etcd: periodic resync of holders"),
                Some(WatchEnd::Compacted(at)) => {
                    info!(compacted = at, "etcd: the holders watch fell behind a compaction: resyncing")
                }
                Some(end) => {
                    info!(why = %end, "etcd: the holders watch ended: resyncing");
                    // Not a hot loop when the stream breaks at once.
                    sleep(BACKOFF_MIN).await;
                }
            }
        }
    }

    /// Reads a snapshot and sends it as `Resynced` (after `Reachable(true)`
    /// if etcd was unreachable); on failure says `Reachable(false)` once
    /// and waits the backoff. The revision to watch from, or `None` (failed,
    /// or the receiver is gone).
    async fn snapshot(
        &self,
        tx: &mpsc::Sender<ClusterEvent>,
        reachable: &mut Option<bool>,
        backoff: &mut Backoff,
    ) -> Option<i64> {
        let view = match self.view().await {
            Ok(v) => v,
            Err(e) => {
                if *reachable != Some(false) {
                    warn!(error = %format!("{e:#}"), "etcd unreachable: following holders paused, retried");
                    *reachable = Some(false);
                    tx.send(ClusterEvent::Reachable(false)).await.ok()?;
                }
                backoff.failed("reading hosts and holders", &e).await;
                return None;
            }
        };
        backoff.reset();
        if *reachable == Some(false) {
            info!(revision = view.revision, "etcd reachable again: resynced");
            tx.send(ClusterEvent::Reachable(true)).await.ok()?;
        }
        *reachable = Some(true);
        let from = view.revision as i64 + 1;
        tx.send(ClusterEvent::Resynced(view)).await.ok()?;
        Some(from)
    }

    /// A watch event as a cluster event.
    fn event(&self, e: &etcd_client::Event) -> Option<ClusterEvent> {
        let kv = e.kv()?;
        match e.event_type() {
            EventType::Put => match self.parse(kv)? {
                Parsed::Host(h) => Some(ClusterEvent::HostJoined(h)),
                Parsed::Holder(r) => Some(ClusterEvent::Holder(r)),
            },
            EventType::Delete => {
                let key = String::from_utf8_lossy(kv.key());
                let revision = kv.mod_revision() as u64;
                if let Some(id) = key.strip_prefix(&self.conn.keys.hosts()) {
                    Some(ClusterEvent::HostLeft { id: id.to_owned(), revision })
                } else {
                    // Holder keys are never deleted; someone did: no holder.
                    let vip = key.strip_prefix(&self.conn.keys.holders())?.parse().ok()?;
                    warn!(%vip, revision, "etcd: a holder key was deleted: treated as cleared");
                    Some(ClusterEvent::Holder(HolderRecord {
                        vip,
                        holder: None,
                        revision,
                        reason: "holder key deleted".into(),
                        committed_by: String::new(),
                    }))
                }
            }
        }
    }

    /// Commits `holder` (`None`: a clear) for `vip` against `base_revision`
    /// (the revision of the record the caller applied; 0: none exists) with
    /// one transaction: if the holder key's `mod_revision` is `base_revision`
    /// and our host key is on our lease, put the record; else read both.
    /// The committed record's revision is the transaction's revision.
    ///
    /// # Errors
    /// etcd unreachable or failing ([`StoreError::Backend`]): nothing is
    /// known to be committed; retry (a retry against the same base then
    /// either commits or returns `Lost` with our own earlier commit, which
    /// the caller recognises by `committed_by` and `holder`).
    pub async fn commit_holder(
        &self,
        vip: Ipv4Addr,
        holder: Option<Holder>,
        base_revision: u64,
        reason: &str,
    ) -> Result<CommitOutcome, StoreError> {
        let lease = self.shared.registration.borrow().lease;
        let host = lock(&self.shared.host).clone();
        let (Some(lease), Some(host)) = (lease, host) else {
            return Ok(CommitOutcome::Fenced);
        };
        let (key, host_key) = (self.conn.keys.holder(vip), self.conn.keys.host(&host));
        let body =
            HolderBody { holder: holder.clone(), reason: reason.to_owned(), committed_by: host.clone() };
        let value = serde_json::to_vec(&body).map_err(|e| StoreError::Backend(e.into()))?;
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key.as_str(), CompareOp::Equal, base_revision as i64),
                Compare::lease(host_key.as_str(), CompareOp::Equal, lease),
            ])
            .and_then([TxnOp::put(key.as_str(), value, None)])
            .or_else([TxnOp::get(key.as_str(), None), TxnOp::get(host_key.as_str(), None)]);
        let mut kv = self.conn.client.kv_client();
        let mut resp = self
            .conn
            .call(|| format!("committing the holder of {vip} against revision {base_revision}"), kv.txn(txn))
            .await?;
        if resp.succeeded() {
            let revision = resp.take_header().map_or(0, |h| h.revision()) as u64;
            let record =
                HolderRecord { vip, holder, revision, reason: reason.to_owned(), committed_by: host };
            return Ok(CommitOutcome::Committed(record));
        }
        let mut gets = resp.op_responses().into_iter().filter_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let (current, ours) = (gets.next(), gets.next());
        let registered = ours.as_ref().and_then(|g| g.kvs().first()).is_some_and(|kv| kv.lease() == lease);
        if !registered {
            warn!(%vip, lease, "etcd: our host key is not on our lease: fenced, registering again");
            self.shared.nudge.notify_one();
            return Ok(CommitOutcome::Fenced);
        }
        let current = current.as_ref().and_then(|g| g.kvs().first()).and_then(|kv| match self.parse(kv) {
            Some(Parsed::Holder(r)) => Some(r),
            _ => None,
        });
        Ok(CommitOutcome::Lost(current.unwrap_or(HolderRecord {
            vip,
            holder: None,
            revision: 0,
            reason: String::new(),
            committed_by: String::new(),
        })))
    }

    /// Commits a clear of `vip` (no holder): [`EtcdCluster::commit_holder`]
    /// with `None`.
    pub async fn clear_holder(
        &self,
        vip: Ipv4Addr,
        base_revision: u64,
        reason: &str,
    ) -> Result<CommitOutcome, StoreError> {
        self.commit_holder(vip, None, base_revision, reason).await
    }
}

enum Parsed {
    Host(HostRecord),
    Holder(HolderRecord),
}

/// Why a lease's keepalive loop ended.
enum LeaseEnd {
    /// etcd says the lease is gone.
    Lost,
}

/// Registers and keeps the registration alive, forever (see
/// [`EtcdCluster::register`]).
async fn keep_registered(
    conn: Conn,
    record: HostRecord,
    ttl_s: u64,
    state: watch::Sender<Registration>,
    nudge: Arc<Notify>,
) {
    let key = conn.keys.host(&record.id);
    let value = match serde_json::to_vec(&record) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "etcd: the host record does not serialise: not registered");
            return;
        }
    };
    let mut backoff = Backoff::new();
    loop {
        let registered = async {
            let mut lease_client = conn.client.lease_client();
            let grant = conn
                .call(|| format!("granting a {ttl_s} s lease"), lease_client.grant(ttl_s as i64, None))
                .await?;
            let lease = grant.id();
            let mut kv = conn.client.kv_client();
            let put = kv.put(key.as_str(), value.clone(), Some(PutOptions::new().with_lease(lease)));
            conn.call(|| format!("registering {key}"), put).await?;
            Ok::<_, StoreError>((lease, Duration::from_secs(grant.ttl().max(1) as u64)))
        }
        .await;
        let (lease, ttl) = match registered {
            Ok(r) => r,
            Err(e) => {
                backoff.failed("registering", &e).await;
                continue;
            }
        };
        backoff.reset();
        let mut count = 0;
        state.send_modify(|r| {
            r.lease = Some(lease);
            r.registrations += 1;
            count = r.registrations;
        });
        if count > 1 {
            warn!(host = %record.id, lease, ttl_s = ttl.as_secs(), "etcd: registered again on a new lease");
        } else {
            info!(host = %record.id, lease, ttl_s = ttl.as_secs(), "etcd: registered");
        }
        match keep_alive(&conn, lease, ttl, &state, &nudge).await {
            LeaseEnd::Lost => {
                state.send_modify(|r| r.lease = None);
                warn!(host = %record.id, lease, "etcd: our lease is gone: registering again");
            }
        }
    }
}

/// Keeps `lease` alive until etcd says it is gone. While keepalives go
/// unanswered for a whole TTL the lease may have expired: the registration
/// shows no lease (we may not commit) until an answer says it lives.
async fn keep_alive(
    conn: &Conn,
    lease: i64,
    ttl: Duration,
    state: &watch::Sender<Registration>,
    nudge: &Notify,
) -> LeaseEnd {
    let mut last_ack = Instant::now();
    let mut backoff = Backoff::new();
    let set_alive = |alive: bool| {
        state.send_if_modified(|r| {
            let want = alive.then_some(lease);
            let changed = r.lease != want;
            r.lease = want;
            changed
        });
    };
    loop {
        let mut lease_client = conn.client.lease_client();
        let opened =
            conn.call(|| format!("keeping lease {lease:x} alive"), lease_client.keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(k) => k,
            Err(e) => {
                let text = format!("{e:#}");
                if text.contains("lease not found") {
                    return LeaseEnd::Lost;
                }
                if last_ack.elapsed() >= ttl {
                    set_alive(false);
                }
                backoff.failed("keeping the lease alive", &text).await;
                continue;
            }
        };
        // Opening it renewed the lease once.
        last_ack = Instant::now();
        backoff.reset();
        set_alive(true);
        let every = ttl / 3;
        loop {
            tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(r)) if r.ttl() > 0 => {
                        last_ack = Instant::now();
                        set_alive(true);
                    }
                    Ok(Some(_)) => return LeaseEnd::Lost,
                    Ok(None) | Err(_) => break,
                },
                _ = sleep(every) => {
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                }
                _ = nudge.notified() => {
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(last_ack + ttl) => {
                    // No answer for a whole TTL: it may have expired.
                    set_alive(false);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end("/havip/v1/hosts/"), b"/havip/v1/hosts0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        let keys = Keys::new("/havip/v1/");
        assert_eq!(keys.host("hv1"), "/havip/v1/hosts/hv1");
        assert_eq!(keys.holder("198.18.1.50".parse().unwrap()), "/havip/v1/holders/198.18.1.50");
        // One range holds both watched prefixes and not the desired state.
        let (start, end) = (keys.holders(), prefix_end(&keys.hosts()));
        for k in [keys.host("hv1"), keys.holder("198.18.1.50".parse().unwrap())] {
            assert!(k.as_bytes() >= start.as_bytes() && k.as_bytes() < end.as_slice(), "{k}");
        }
        assert!(b"/havip/v1/desired/revision".as_slice() < start.as_bytes());
    }
}
