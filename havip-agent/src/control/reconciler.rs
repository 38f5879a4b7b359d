//! Runs [`reconcile`] whenever the desired state or the host's links change:
//! attaches to this host's registered vNICs as they appear, leaves out the
//! ones that are gone or down (so a holder on them is cleared at once), and
//! hands what the maps then say to the [`Observer`].

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use havip_api::EventKind;
use havip_common::{VipConfig, VipKey, VIP_F_VRRP_VMAC};
use havip_model::DesiredState;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    feed::Feed,
    observer::{Observer, SyncMode},
    underlay::UnderlayPlan,
};
use crate::{
    datapath::{
        loader::{Attach, Dataplane},
        maps::Maps,
        plan::{reconcile, EipNat, MapTarget, Uplink},
    },
    host::{
        links::{Link, Links},
        vethpeer,
    },
    store::Store,
    sync::lock,
};

/// Whether the maps follow the store, as the last pass left it (for
/// `status`, /metrics and events): divergence is never silent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncHealth {
    /// The last pass's error, if it failed (the maps keep their last state).
    pub last_error: Option<String>,
    /// Passes that failed since the agent started.
    pub failed_passes: u64,
    /// vNICs of this host present but not attached, and why.
    pub unattached: BTreeMap<String, String>,
}

/// Time between full passes even when nothing changed: a safety net for a
/// change that was missed or a map someone else edited.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Retries after a failed pass or attach: 1 s, doubling, at most [`RESYNC`].
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// Brings this host's data plane to the desired state, pass after pass.
pub struct Reconciler {
    inputs: Inputs,
    /// Interface name -> the ifindex this run attached to.
    attached: BTreeMap<String, u32>,
    /// This host's registered vNICs' links as of the last pass, by vNIC
    /// name, to report what changed.
    seen: Links,
    /// What the last pass left diverging.
    health: Arc<Mutex<SyncHealth>>,
    /// Whether a pass has read the holders at start ([`SyncMode::Start`]):
    /// until one succeeds, every pass does.
    started: bool,
}

/// What a reconciler works with.
pub struct Inputs {
    /// This host's id: only vNICs placed here are attached.
    pub host: String,
    /// The loaded data plane: attaches and detaches the XDP programs.
    pub dp: Dataplane,
    /// The maps, shared with the observer, the verifier and the API.
    pub maps: Arc<Mutex<dyn Maps>>,
    /// The desired and observed state.
    pub store: Arc<dyn Store>,
    /// The host's links by name (host::links), updated on every rtnetlink notification.
    pub links: watch::Receiver<Links>,
    /// The uplink, once its link exists and its next hop's MAC is known (host::uplink).
    pub uplink: watch::Receiver<Option<Uplink>>,
    /// Many hosts: the underlay and the other hosts' VTEPs, once resolved
    /// (control::underlay); always `None` on one host.
    pub underlay: watch::Receiver<Option<UnderlayPlan>>,
    /// Whether this host is one of many: until `underlay` is known, the
    /// maps' underlay and VTEPs are kept (one host: there are none).
    pub many_hosts: bool,
    /// Reads the holders from the maps after each pass.
    pub observer: Arc<Observer>,
    /// Where link changes and attach problems are reported.
    pub feed: Arc<Feed>,
    /// The store revision the maps were last brought to.
    pub reconciled: Arc<AtomicU64>,
    /// rtnetlink, to look at the peers of veth vNICs.
    pub rtnl: rtnetlink::Handle,
}

impl Reconciler {
    /// A reconciler that has attached nothing yet and has seen no links.
    pub fn new(inputs: Inputs) -> Self {
        Self { inputs, attached: BTreeMap::new(), seen: Links::new(), health: Arc::default(), started: false }
    }

    /// What the last pass left diverging (shared: read by the API).
    pub fn health(&self) -> Arc<Mutex<SyncHealth>> {
        self.health.clone()
    }

    /// One pass: attach, reconcile the maps, observe the holders.
    pub fn pass(&mut self, mode: SyncMode) -> Result<()> {
        let mode = if self.started { mode } else { SyncMode::Start };
        let result = self.try_pass(mode);
        self.started |= result.is_ok();
        let mut health = lock(&self.health);
        match &result {
            Ok(()) => {
                if let Some(was) = health.last_error.take() {
                    info!(was = %was, "reconcile passes again");
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                if health.last_error.as_ref() != Some(&error) {
                    self.inputs.feed.publish(
                        EventKind::ReconcileFailed,
                        None,
                        None,
                        format!("the maps no longer follow the store: {error}; retried with backoff"),
                    );
                }
                health.last_error = Some(error);
                health.failed_passes += 1;
            }
        }
        result
    }

    fn try_pass(&mut self, mode: SyncMode) -> Result<()> {
        let snap = self.inputs.store.desired();
        let links = self.inputs.links.borrow_and_update().clone();
        self.report_links(&snap.state, &links);
        self.attach(&snap.state, &links)?;
        let mut target = self.target(&snap.state, &links);
        target.uplink = *self.inputs.uplink.borrow_and_update();
        match &*self.inputs.underlay.borrow_and_update() {
            Some(u) => {
                target.underlay = Some(u.target);
                target.vteps = u.vteps.clone();
            }
            None => target.keep_underlay = self.inputs.many_hosts,
        }
        let mut maps = lock(&self.inputs.maps);
        let applied = reconcile(&mut *maps, &target).context("reconciling the maps")?;
        if applied.ops > 0 {
            info!(revision = snap.revision, ?applied, "maps reconciled");
        }
        self.inputs.reconciled.store(snap.revision, Ordering::Relaxed);
        self.inputs.observer.sync(&mut *maps, mode).context("recording holders")
    }

    /// Passes again on every change of the desired state, the links or the uplink.
    /// Passes again on every change of the desired state, the links or the
    /// uplink; after a failure (or a vNIC that could not be attached) again
    /// with backoff; and every [`RESYNC`] regardless.
    pub async fn run(mut self) -> Result<()> {
        let mut revision = self.inputs.store.watch();
        let mut retry = RETRY_FIRST;
        let mut next = tokio::time::Instant::now() + RESYNC;
        loop {
            tokio::select! {
                r = revision.changed() => r.context("the store's change feed closed")?,
                r = self.inputs.links.changed() => r.context("the link feed closed")?,
                // Without an uplink nobody sends: the branch is then disabled.
                Ok(()) = self.inputs.uplink.changed() => {}
                Ok(()) = self.inputs.underlay.changed() => {}
                () = tokio::time::sleep_until(next) => {}
            }
            let ok = match self.pass(SyncMode::Running) {
                Ok(()) => lock(&self.health).unattached.is_empty(),
                // The data plane keeps its last state; the retry comes with backoff.
                Err(e) => {
                    warn!(error = %format!("{e:#}"), retry_in = ?retry, "reconcile pass failed");
                    false
                }
            };
            if ok {
                retry = RETRY_FIRST;
                next = tokio::time::Instant::now() + RESYNC;
            } else {
                next = tokio::time::Instant::now() + retry;
                retry = (retry * 2).min(RESYNC);
            }
        }
    }

    fn report_links(&mut self, state: &DesiredState, links: &Links) {
        let now: Links = state
            .vnics_on(&self.inputs.host)
            .filter_map(|v| Some((v.name.clone(), *links.get(&v.ifname)?)))
            .collect();
        for name in state.vnics_on(&self.inputs.host).map(|v| &v.name) {
            let (kind, detail) = match (self.seen.get(name), now.get(name)) {
                (None, Some(l)) if l.up => {
                    (EventKind::VnicUp, format!("{name} is present and up (ifindex {})", l.ifindex))
                }
                (None, Some(l)) => {
                    (EventKind::VnicDown, format!("{name} is present but down (ifindex {})", l.ifindex))
                }
                (Some(o), Some(l)) if o.ifindex != l.ifindex => (
                    if l.up { EventKind::VnicUp } else { EventKind::VnicDown },
                    format!("{name} was made again (ifindex {})", l.ifindex),
                ),
                (Some(o), Some(l)) if o.up != l.up => {
                    if l.up {
                        (EventKind::VnicUp, format!("{name} is up"))
                    } else {
                        (EventKind::VnicDown, format!("{name} is down"))
                    }
                }
                (Some(_), None) => (EventKind::VnicGone, format!("{name} is gone")),
                _ => continue,
            };
            self.inputs.feed.publish(kind, None, Some(name), detail);
        }
        self.seen = now;
    }

    /// Attaches to every vNIC of this host that is present (again, if it was
    /// made anew); detaches from pinned interfaces no longer registered here.
    fn attach(&mut self, state: &DesiredState, links: &Links) -> Result<()> {
        for v in state.vnics_on(&self.inputs.host) {
            let (name, ifname) = (&v.name, &v.ifname);
            match links.get(ifname) {
                Some(l) if self.attached.get(ifname) != Some(&l.ifindex) => {
                    match self.inputs.dp.attach(ifname) {
                        Ok(how) => {
                            lock(&self.health).unattached.remove(name);
                            info!(vnic = %name, %ifname, ifindex = l.ifindex, hitless = how == Attach::Swapped, "attached");
                            self.attached.insert(ifname.clone(), l.ifindex);
                            report_veth_peer(&self.inputs.rtnl, &self.inputs.feed, name, ifname);
                        }
                        Err(e) => {
                            let error = format!("{e:#}");
                            let mut health = lock(&self.health);
                            if health.unattached.get(name) != Some(&error) {
                                self.inputs.feed.publish(
                                    EventKind::AttachFailed,
                                    None,
                                    Some(name),
                                    format!("{ifname} cannot be attached: {error}; retried with backoff"),
                                );
                            }
                            health.unattached.insert(name.clone(), error);
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if self.attached.remove(ifname).is_none() && !self.seen.contains_key(name) {
                        warn!(vnic = %name, %ifname, "vNIC not present: its memberships wait until it appears");
                    }
                }
            }
        }
        // Only vNICs still here and present can be "not attached".
        lock(&self.health).unattached.retain(|name, _| {
            state.vnics.get(name).is_some_and(|v| v.host == self.inputs.host && links.contains_key(&v.ifname))
        });
        for ifname in self.inputs.dp.attached()? {
            if !state.vnics_on(&self.inputs.host).any(|v| v.ifname == ifname) {
                self.inputs.dp.detach(&ifname)?;
                self.attached.remove(&ifname);
                info!(%ifname, "detached: no longer a registered vNIC of this host");
            }
        }
        Ok(())
    }

    /// What the maps should hold: only this host's vNICs that this run
    /// attached to and that are up count, as ports and as members.
    fn target(&self, state: &DesiredState, links: &Links) -> MapTarget {
        let usable = |vnic: &str| -> Option<&Link> {
            let v = state.vnics.get(vnic).filter(|v| v.host == self.inputs.host)?;
            links.get(&v.ifname).filter(|l| l.up && self.attached.get(&v.ifname) == Some(&l.ifindex))
        };
        let ports =
            state.vnics_on(&self.inputs.host).filter_map(|v| usable(&v.name)).map(|l| l.ifindex).collect();
        let vips = state
            .havips
            .values()
            .map(|h| {
                let members = h
                    .members
                    .iter()
                    .filter_map(|m| Some((usable(m)?.ifindex, state.vnics.get(m)?.mac)))
                    .collect();
                (VipKey::from(h.vip), members)
            })
            .collect();
        let eips = state
            .havips
            .values()
            .filter_map(|h| {
                let nat = EipNat { eip: h.eip?, subnet: *state.subnets.get(&h.subnet)? };
                Some((VipKey::from(h.vip), nat))
            })
            .collect();
        let configs = state
            .havips
            .values()
            .map(|h| {
                let flags = if h.settings.accept_vrrp_vmac { VIP_F_VRRP_VMAC } else { 0 };
                (VipKey::from(h.vip), VipConfig { flags })
            })
            .collect();
        MapTarget { ports, vips, configs, eips, ..MapTarget::default() }
    }
}

/// Looks at `ifname`'s veth peer in the background and, if what havip
/// forwards into `ifname` cannot be delivered there, says so: a
/// `peer_without_xdp` event for `what` (a vNIC, or the uplink), logged as a
/// warning.
pub fn report_veth_peer(rtnl: &rtnetlink::Handle, feed: &Arc<Feed>, what: &str, ifname: &str) {
    let (rtnl, feed, what, ifname) = (rtnl.clone(), feed.clone(), what.to_owned(), ifname.to_owned());
    tokio::spawn(async move {
        match vethpeer::inspect(&rtnl, &ifname).await {
            Ok(peer) => {
                if let Some(problem) = peer.problem(&ifname) {
                    feed.publish(EventKind::PeerWithoutXdp, None, Some(&what), problem);
                }
            }
            Err(e) => warn!(interface = %ifname, error = %format!("{e:#}"), "looking at the peer"),
        }
    });
}
