//! `havip-agent run`: open the store, apply the config's desired state, bring
//! the data plane to it, then serve the API and follow links, claims and
//! changes until told to stop. Stopping leaves everything attached.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{atomic::AtomicU64, Arc, Mutex},
};

use anyhow::{Context, Result};
use havip_model::{ops, rules, state::now_ms};
use rtnetlink::Handle;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{watch, Notify},
};
use tracing::{info, warn};

use super::{config::Config, notify};
use crate::{
    control::{
        feed::Feed,
        observer::{Observer, SyncMode},
        reconciler::{report_veth_peer, Inputs, Reconciler},
        verifier::{self, Verifier, VerifierInputs},
    },
    datapath::{
        loader::{Attach, Dataplane},
        maps::Maps,
        plan::Uplink,
        ringbuf,
    },
    host::{
        links::{self, Links},
        uplink,
    },
    northbound::{
        api::{self, ApiContext},
        metrics,
    },
    store::{redb::RedbStore, Store},
};

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

/// Applies the config's desired-state sections, like `havipctl apply -f`.
fn apply_config(store: &dyn Store, cfg: &Config) -> Result<()> {
    let snap = store
        .update(&mut |s| {
            ops::apply(s, cfg.desired.clone());
            rules::check(s, &cfg.limits)
        })
        .context("applying the config's desired state")?;
    info!(revision = snap.revision, havips = snap.state.havips.len(), "desired state loaded");
    Ok(())
}

/// Runs the agent with the configuration file `config` and pins under
/// `pin_root`, until SIGTERM or SIGINT (or a part fails).
pub async fn run(config: &Path, pin_root: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    info!(host = %cfg.host.id, underlay = ?cfg.host.underlay, "this host");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&cfg.agent.store)?);
    apply_config(&*store, &cfg)?;

    let mut dp = Dataplane::open(pin_root, cfg.capacity)?;
    info!(dir = %dp.dir().display(), "data plane loaded");
    let (links, follow_links) = links::watch_links().await?;
    let rtnl = links::connect()?;
    let feed = Arc::new(Feed::default());
    let uplink = start_uplink(&mut dp, &cfg, &links, &rtnl, &feed).await?;
    let events = dp.take_events()?;
    let maps: Arc<Mutex<dyn Maps>> = Arc::new(Mutex::new(dp.take_maps()?));

    let reconciled = Arc::new(AtomicU64::new(0));
    let verdicts = Arc::new(Mutex::new(BTreeMap::new()));
    let nudge = Arc::new(Notify::new());
    let observer = Arc::new(Observer::new(&cfg.host.id, store.clone(), feed.clone(), links.clone()));
    let mut reconciler = Reconciler::new(Inputs {
        host: cfg.host.id.clone(),
        dp,
        maps: maps.clone(),
        store: store.clone(),
        links: links.clone(),
        uplink,
        observer: observer.clone(),
        feed: feed.clone(),
        reconciled: reconciled.clone(),
        rtnl,
    });
    // At start the maps are the truth about holders: nothing is reset.
    reconciler.pass(SyncMode::Start)?;

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
        started_ms: now_ms(),
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
    let serve_api = api::bind(ctl.clone(), &cfg.agent.api_socket)?;
    let serve_metrics = metrics::bind(ctl, cfg.agent.metrics).await?;

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    notify::notify("READY=1")?;
    info!(api = %cfg.agent.api_socket.display(), "ready");

    let outcome = tokio::select! {
        r = reconciler.run() => r.map(|()| "reconciler"),
        r = ringbuf::follow(events, |batch| record_claims(&observer, &nudge, batch)) => r.map(|()| "events"),
        r = verify => r.map(|()| "verifier"),
        r = follow_links => r.map(|()| "links"),
        r = serve_api => r.map(|()| "API"),
        r = serve_metrics => r.map(|()| "metrics"),
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    };
    if let Ok(signal) = &outcome {
        info!("{signal}: stopping; programs stay attached and holders stay in the kernel");
    }
    // The next agent would remove it as stale; removing it now says "stopped".
    let _ = std::fs::remove_file(&cfg.agent.api_socket);
    notify::notify("STOPPING=1")?;
    outcome.map(drop)
}

/// Hands a batch of the kernel's claim events to the observer: one store
/// commit per batch (it waits for fsync), off the async threads; and has a
/// new holder verified at once.
async fn record_claims(
    observer: &Arc<Observer>,
    nudge: &Notify,
    batch: Vec<havip_common::HavipEvent>,
) -> Result<()> {
    if batch.iter().any(|e| e.changed != 0) {
        nudge.notify_one();
    }
    let names = observer.names();
    let observer = observer.clone();
    tokio::task::spawn_blocking(move || observer.record_events(&batch, &names))
        .await
        .context("observer task")?
        .context("recording claims")
}
