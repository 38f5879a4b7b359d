//! `havip-agent run`: check the whole config, take the pin directory
//! (one agent per data plane), open the store, apply the config's desired
//! state, bring the data plane to it, then serve the API and follow links,
//! claims and changes until told to stop. Stopping leaves everything
//! attached.
//!
//! Every signal has a defined, logged outcome: SIGTERM, SIGINT and SIGQUIT
//! stop the agent (exit 0); SIGHUP, SIGUSR1 and SIGUSR2 are logged and
//! ignored (a restart reloads the config).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use havip_model::{ops, rules, state::now_ms};
use rtnetlink::Handle;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch, Notify},
};
use tracing::{error, info, warn};

use super::{
    config::{Config, StoreSettings},
    notify,
};
use crate::{
    control::{
        cluster::{self as many, ClusterInputs, ClusterStatus, LocalClaim, PeerSettings},
        feed::Feed,
        observer::{Observer, SyncMode},
        reconciler::{report_veth_peer, Inputs, Reconciler},
        underlay::{self, UnderlaySpec},
        verifier::{self, Verifier, VerifierInputs},
    },
    datapath::{
        bpffs::PinLock,
        loader::{Attach, Dataplane},
        maps::Maps,
        plan::Uplink,
        ringbuf,
    },
    host::{
        links::{self, Links},
        underlay as underlay_nic, uplink,
    },
    northbound::{
        api::{self, ApiContext},
        metrics,
    },
    store::{
        cluster::{EtcdCluster, EtcdSettings, HostRecord},
        etcd::EtcdStore,
        redb::RedbStore,
        Store, StoreError,
    },
};
use havip_api::EventKind;

/// Attaches `xdp_uplink` and starts following the uplink's next hop; the
/// receiver sees the uplink once it is usable.
async fn start_uplink(
    dp: &mut Dataplane,
    cfg: &Config,
    links: &watch::Receiver<Links>,
    rtnl: &Handle,
    feed: &Arc<Feed>,
) -> Result<watch::Receiver<Option<Uplink>>> {
    let (tx, rx) = watch::channel(None);
    let Some(spec) = cfg.uplink.clone() else { return Ok(rx) };
    if !links.borrow().contains_key(&spec.name) {
        warn!(uplink = %spec.name, "uplink not present: EIPs wait until it appears and the agent restarts");
        return Ok(rx);
    }
    let how = dp.attach_uplink(&spec.name)?;
    info!(uplink = %spec.name, hitless = how == Attach::Swapped, "attached");
    report_veth_peer(rtnl, feed, &spec.name, &spec.name);
    tx.send_replace(uplink::resolve(rtnl, &spec).await?);
    tokio::spawn(uplink::follow(rtnl.clone(), spec, tx));
    Ok(rx)
}

/// Opens the store `[store]` names: the redb file, or etcd (its client on a
/// thread of its own; the first read must answer within the request
/// timeout, else the start fails naming the endpoints).
async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>> {
    let settings = cfg.store.clone();
    tokio::task::spawn_blocking(move || -> Result<Arc<dyn Store>> {
        Ok(match &settings {
            StoreSettings::Redb(path) => Arc::new(RedbStore::open(path)?),
            StoreSettings::Etcd(etcd) => Arc::new(EtcdStore::open(etcd).context("opening the etcd store")?),
        })
    })
    .await
    .context("the task opening the store")?
}

/// Many hosts: the etcd cluster client (`[store] backend = "etcd"`),
/// connected lazily and not yet registered; `None` with redb (one host).
/// The caller registers with [`host_record`] and the lease TTL of
/// `[store] lease_ttl_s`: `cluster.register(host_record(&cfg, vtep)?,
/// cluster.settings().lease_ttl)`, then follows (`cluster.follow(every)`).
pub async fn connect_cluster(cfg: &Config) -> Result<Option<EtcdCluster>> {
    let StoreSettings::Etcd(settings) = &cfg.store else { return Ok(None) };
    Ok(Some(EtcdCluster::connect(settings).await.context("connecting to the etcd cluster")?))
}

/// This host's record for the cluster: `underlay` is the IPv4 address of
/// the `[underlay] interface` (its VTEP); the ports are `[underlay]`'s; the
/// host is the gateway when it has an `[uplink]`. `None` without `[underlay]`.
pub fn host_record(cfg: &Config, underlay: Ipv4Addr) -> Option<HostRecord> {
    let u = cfg.underlay.as_ref()?;
    Some(HostRecord {
        id: cfg.host.id.clone(),
        underlay,
        vxlan_port: u.vxlan_port,
        probe_port: u.probe_port,
        hint_port: u.hint_port,
        gateway: cfg.uplink.is_some(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// Many hosts, before the maps are handed out: `xdp_underlay` attached to
/// the underlay NIC, this host's VTEP read from it, and this host
/// registered in etcd on its lease. `None` on one host (redb).
async fn join_cluster(
    dp: &mut Dataplane,
    cfg: &Config,
    rtnl: &Handle,
) -> Result<Option<(EtcdCluster, HostRecord)>> {
    let Some(cluster) = connect_cluster(cfg).await? else { return Ok(None) };
    let (StoreSettings::Etcd(etcd), Some(u)) = (&cfg.store, &cfg.underlay) else { return Ok(None) };
    let nic = underlay_nic::nic(rtnl, &u.interface).await?.with_context(|| {
        format!("underlay.interface {}: missing, or without an IPv4 address (this host's VTEP)", u.interface)
    })?;
    if let Some(said) = cfg.host.underlay.filter(|a| *a != nic.addr) {
        anyhow::bail!(
            "agent.underlay is {said} but underlay.interface {} has {}: the VTEP is the interface's address \
             (leave agent.underlay out)",
            u.interface,
            nic.addr
        );
    }
    let how = dp.attach_underlay(&u.interface)?;
    info!(underlay = %u.interface, vtep = %nic.addr, hitless = how == Attach::Swapped, "attached");
    let me = host_record(cfg, nic.addr).context("the host record")?;
    cluster.register(me.clone(), etcd.lease_ttl);
    info!(host = %me.id, vtep = %me.underlay, ttl_s = etcd.lease_ttl.as_secs(), "registering in etcd");
    Ok(Some((cluster, me)))
}

/// Applies the config's desired-state sections, like `havipctl apply -f`.
/// An accepted change never makes a start fail: if the file's state, applied
/// to the store's, breaks a rule (two API calls may have made it so), or
/// cannot be written, the agent starts on the store's state and says why
/// (returned, logged, and kept in the store's health for status).
fn apply_config(store: &dyn Store, cfg: &Config) -> Option<String> {
    let applied = store.update(&mut |s| {
        ops::apply(s, cfg.desired.clone());
        rules::check(s, &cfg.limits)
    });
    let why = match applied {
        Ok(snap) => {
            info!(revision = snap.revision, havips = snap.state.havips.len(), "desired state loaded");
            store.health().set_config_not_applied(None);
            return None;
        }
        Err(StoreError::Refused(r)) => format!("with the store's state it is {r}"),
        Err(StoreError::Backend(e)) => format!("the store could not write it: {e:#}"),
    };
    let snap = store.desired();
    let why = format!(
        "the config file's desired state was not applied ({why}); running on the store's state, revision {}",
        snap.revision
    );
    warn!(revision = snap.revision, "{why}");
    store.health().set_config_not_applied(Some(why.clone()));
    Some(why)
}

/// What the config asks for that can be checked without making anything:
/// the metrics address can be bound.
fn preflight(cfg: &Config) -> Result<()> {
    if let Some(addr) = cfg.agent.metrics {
        drop(std::net::TcpListener::bind(addr).with_context(|| format!("agent.metrics: binding {addr}"))?);
    }
    // A missing certificate is the operator's to fix, not an outage to wait out.
    if let StoreSettings::Etcd(EtcdSettings { tls: Some(tls), .. }) = &cfg.store {
        let identity = tls.identity.iter().flat_map(|(cert, key)| [("store.cert", cert), ("store.key", key)]);
        for (name, path) in [("store.ca", &tls.ca)].into_iter().chain(identity) {
            std::fs::File::open(path).with_context(|| format!("{name}: opening {}", path.display()))?;
        }
    }
    Ok(())
}

/// Many hosts: a full resync from etcd at least this often, under the watch.
const CLUSTER_RESYNC: Duration = Duration::from_secs(30);

/// How long the store may fail before it is tried again, at most.
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);
const STORE_RETRY_MIN: Duration = Duration::from_millis(250);

/// Keeps the store written: while its writes fail, reports it once (log and
/// feed), retries with backoff (observations wait in memory, the data plane
/// never waits), and says when it is back. Never ends.
async fn keep_store_written(store: Arc<dyn Store>, feed: Arc<Feed>) {
    let health = store.health();
    let mut backoff = STORE_RETRY_MIN;
    let mut reported = false;
    loop {
        tokio::time::sleep(backoff).await;
        if !health.failing() {
            if reported {
                feed.publish(
                    EventKind::StoreRecovered,
                    None,
                    None,
                    "store: writes work again; every observation is on disk",
                );
                reported = false;
            }
            backoff = STORE_RETRY_MIN;
            continue;
        }
        if !reported {
            let h = health.snapshot();
            feed.publish(
                EventKind::StoreFailed,
                None,
                None,
                format!(
                    "store: writes fail ({}); observations of {} HAVIPs kept in memory, retried with \
                     backoff; the data plane is not affected",
                    h.last_error.unwrap_or_default(),
                    h.pending
                ),
            );
            reported = true;
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.flush()).await {
            Ok(Ok(())) => backoff = STORE_RETRY_MIN,
            Ok(Err(_)) => backoff = (backoff * 2).min(STORE_RETRY_MAX),
            Err(e) => {
                error!(error = %e, "store flush task");
                backoff = STORE_RETRY_MAX;
            }
        }
    }
}

/// Feeds systemd's watchdog (`WatchdogSec=`) at half its interval, each
/// time only after the agent answered its own API: `GET /v1/status` on the
/// socket, within a quarter of the interval. That answer takes the async
/// runtime, the API's accept loop and router, the store and the maps: an
/// agent stuck in any of them stops feeding, and systemd restarts it (the data
/// plane keeps forwarding meanwhile). Never ends.
async fn feed_watchdog(every: Duration, socket: PathBuf) {
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let answered = match tokio::time::timeout(every / 4, api_answers(&socket)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no answer within {} ms", (every / 4).as_millis())),
        };
        match answered {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    info!("systemd watchdog: the API answers again; fed");
                }
                if let Err(e) = notify::notify("WATCHDOG=1") {
                    warn!(error = %format!("{e:#}"), "systemd watchdog: not fed");
                }
            }
            Err(e) => {
                failing = true;
                warn!(error = %format!("{e:#}"), "systemd watchdog: not fed, the agent's own API does not answer");
            }
        }
    }
}

/// One `GET /v1/status` on the API socket: Ok once a status line says 200
/// (or 503: the API is shedding load, which is an answer too).
async fn api_answers(socket: &Path) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    conn.write_all(b"GET /v1/status HTTP/1.0\r\nHost: havip\r\n\r\n").await?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.context("reading the status line")?;
    let line = String::from_utf8_lossy(&head);
    anyhow::ensure!(
        line.starts_with("HTTP/1.") && (line.ends_with(" 200") || line.ends_with(" 503")),
        "GET /v1/status answered {line:?}"
    );
    Ok(())
}

/// Logs the signals that do not stop the agent, for its life.
fn log_ignored_signals() -> Result<()> {
    for (kind, name) in [
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ] {
        let mut sig = signal(kind).with_context(|| format!("installing {name} handler"))?;
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                warn!("{name}: ignored; restart the agent to reload its config");
            }
        });
    }
    Ok(())
}

/// Runs the agent with the configuration file `config` and pins under
/// `pin_root`, until SIGTERM or SIGINT (or a part fails).
pub async fn run(config: &Path, pin_root: &Path) -> Result<()> {
    // First, so that no signal finds the default action (exit, no log).
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut quit = signal(SignalKind::quit()).context("installing SIGQUIT handler")?;
    log_ignored_signals()?;
    // The whole config is checked before anything is made.
    let cfg = Config::load(config)?;
    preflight(&cfg)?;
    info!(host = %cfg.host.id, underlay = ?cfg.host.underlay, "this host");
    // Nothing that may change a data plane runs before this process owns it.
    let _owner = PinLock::acquire(pin_root)?;
    let mut dp = Dataplane::open(pin_root, cfg.capacity)?;
    info!(dir = %dp.dir().display(), "data plane loaded");
    // etcd may be unreachable as the agent starts: the data plane keeps
    // forwarding on what it has (nothing is touched before the store
    // answers), and the agent keeps trying, saying so.
    let mut backoff = STORE_RETRY_MIN;
    let store = loop {
        match open_store(&cfg).await {
            Ok(store) => break store,
            Err(e) if matches!(cfg.store, StoreSettings::Etcd(_)) => {
                warn!(error = %format!("{e:#}"), retry_in = ?backoff,
                    "the shared store does not answer: the data plane keeps forwarding on what it has; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                }
                backoff = (backoff * 2).min(STORE_RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    };
    let config_not_applied = apply_config(&*store, &cfg);

    let (links, follow_links) = links::watch_links().await?;
    let rtnl = links::connect()?;
    let feed = Arc::new(Feed::default());
    if let Some(why) = config_not_applied {
        feed.publish(EventKind::ConfigNotApplied, None, None, why);
    }
    tokio::spawn(keep_store_written(store.clone(), feed.clone()));
    let last_flush = store.clone();
    let uplink = start_uplink(&mut dp, &cfg, &links, &rtnl, &feed).await?;
    let joined = join_cluster(&mut dp, &cfg, &rtnl).await?;
    let events = dp.take_events()?;
    let maps: Arc<Mutex<dyn Maps>> = Arc::new(Mutex::new(dp.take_maps()?));

    let reconciled = Arc::new(AtomicU64::new(0));
    let verdicts = Arc::new(Mutex::new(BTreeMap::new()));
    let nudge = Arc::new(Notify::new());
    let observer = Arc::new(Observer::new(&cfg.host.id, store.clone(), feed.clone(), links.clone()));
    let (underlay_tx, underlay_rx) = watch::channel(None);
    let (claims_tx, claims_rx) = mpsc::unbounded_channel();
    let mut cluster_status = None;
    let many_hosts = match (joined, &cfg.underlay) {
        (Some((cluster, me)), Some(u)) => {
            let (hosts_tx, hosts_rx) = watch::channel(BTreeMap::new());
            let spec = UnderlaySpec {
                me: me.id.clone(),
                ifname: u.interface.clone(),
                vni: u.vni,
                vxlan_port: u.vxlan_port,
                probe_port: u.probe_port,
            };
            tokio::spawn(underlay::follow(rtnl.clone(), spec, hosts_rx, underlay_tx));
            let status = Arc::new(ClusterStatus::default());
            cluster_status = Some(status.clone());
            Some(many::run(
                ClusterInputs {
                    me,
                    cluster,
                    settings: PeerSettings {
                        probe_interval: Duration::from_millis(u.probe_interval_ms),
                        probe_misses: u.probe_misses,
                        hints: u.hints,
                        resync_every: CLUSTER_RESYNC,
                    },
                    maps: maps.clone(),
                    store: store.clone(),
                    links: links.clone(),
                    feed: feed.clone(),
                    observer: observer.clone(),
                    hosts: hosts_tx,
                    status,
                },
                claims_rx,
            ))
        }
        _ => None,
    };
    // A task of its own: a hint or a record is applied on whichever worker
    // is free, never behind a reconcile pass or a verifier round that the
    // branches of the select below would run first on this one.
    let many_hosts = many_hosts.map(tokio::spawn);
    let many_hosts = async move {
        match many_hosts {
            Some(task) => task.await.context("the cluster loop's task")?,
            None => std::future::pending().await,
        }
    };
    let claims = cluster_status.is_some().then_some(claims_tx);
    let mut reconciler = Reconciler::new(Inputs {
        host: cfg.host.id.clone(),
        dp,
        maps: maps.clone(),
        store: store.clone(),
        links: links.clone(),
        uplink,
        underlay: underlay_rx,
        many_hosts: claims.is_some(),
        observer: observer.clone(),
        feed: feed.clone(),
        reconciled: reconciled.clone(),
        rtnl,
    });
    // Many hosts: the replicator pair made and attached before the first
    // pass, so a restart keeps it in the broadcast domains' devmaps.
    reconciler.ensure_replicator().await;
    // At start the maps are the truth about holders: nothing is reset. A
    // first pass that fails is reported and retried, never fatal: the data
    // plane keeps forwarding on what it has.
    if let Err(e) = reconciler.pass(SyncMode::Start) {
        warn!(error = %format!("{e:#}"), "first reconcile pass failed; retried with backoff");
    }
    let sync = reconciler.health();

    let ctl = Arc::new(ApiContext {
        host: cfg.host.id.clone(),
        store,
        limits: cfg.limits.clone(),
        maps,
        feed,
        links,
        reconciled,
        verdicts: verdicts.clone(),
        latencies: observer.latencies().clone(),
        sync,
        started_ms: now_ms(),
        cluster: cluster_status,
    });
    let verify = verifier::run(
        Verifier::new(&cfg.host.id, cfg.verification),
        VerifierInputs {
            store: ctl.store.clone(),
            maps: ctl.maps.clone(),
            links: ctl.links.clone(),
            feed: ctl.feed.clone(),
            observer: observer.clone(),
            verdicts,
            nudge: nudge.clone(),
        },
    );
    let serve_api = api::bind(ctl.clone(), &cfg.agent.api_socket, cfg.api_gid)?;
    let serve_metrics = metrics::bind(ctl, cfg.agent.metrics).await?;

    notify::notify("READY=1")?;
    info!(api = %cfg.agent.api_socket.display(), "ready");
    if let Some(every) = notify::watchdog_interval()? {
        info!(interval_ms = every.as_millis() as u64, "systemd watchdog: fed while the API answers");
        tokio::spawn(feed_watchdog(every, cfg.agent.api_socket.clone()));
    }

    let outcome = tokio::select! {
        r = reconciler.run() => r.map(|()| "reconciler"),
        r = ringbuf::follow(events, |batch| record_claims(&observer, &nudge, claims.as_ref(), batch)) => r.map(|()| "events"),
        r = many_hosts => r.map(|()| "cluster"),
        r = verify => r.map(|()| "verifier"),
        r = follow_links => r.map(|()| "links"),
        r = serve_api => r.map(|()| "API"),
        r = serve_metrics => r.map(|()| "metrics"),
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
        _ = quit.recv() => Ok("SIGQUIT"),
    };
    match &outcome {
        Ok(signal) => info!("{signal}: stopping; programs stay attached and holders stay in the kernel"),
        Err(e) => error!("{e:#}: stopping; programs stay attached and holders stay in the kernel"),
    }
    if let Err(e) = tokio::task::spawn_blocking(move || last_flush.flush())
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| Ok(r?))
    {
        warn!(error = %format!("{e:#}"), "store: observations still in memory are lost with this run (the next start reads them from the maps)");
    }
    // The next agent would remove it as stale; removing it now says "stopped".
    let _ = std::fs::remove_file(&cfg.agent.api_socket);
    notify::notify("STOPPING=1")?;
    outcome.map(drop)
}

/// Hands a batch of the kernel's claim events to the observer: one store
/// commit per batch (it waits for fsync), off the async threads; and has a
/// new holder verified at once. Never fails: whatever a guest sends, and
/// whatever the store does, the events keep being followed (a failed write
/// is the store's to keep and retry, see [`keep_store_written`]).
async fn record_claims(
    observer: &Arc<Observer>,
    nudge: &Notify,
    cluster: Option<&mpsc::UnboundedSender<LocalClaim>>,
    batch: Vec<havip_common::HavipEvent>,
) -> Result<()> {
    if batch.iter().any(|e| e.changed != 0) {
        nudge.notify_one();
    }
    let names = observer.names();
    // Many hosts: the claims go to the cluster loop first (hints and the
    // commit), before this host writes them down.
    if let Some(cluster) = cluster {
        for ev in batch.iter().filter(|e| e.kind == havip_common::EV_CLAIM && e.changed != 0) {
            let Some(vnic) = names.get(&ev.ifindex) else { continue };
            let holder = observer.holder(vnic, ev.mac, ev.epoch);
            let _ = cluster.send(LocalClaim { vip: ev.vip.into(), holder });
        }
    }
    let observer = observer.clone();
    match tokio::task::spawn_blocking(move || observer.record_events(&batch, &names)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %format!("{e:#}"), "recording claims"),
        Err(e) => error!(error = %e, "the observer task failed on a batch of claims"),
    }
    Ok(())
}
