//! Runs [`reconcile`] whenever the desired state or the host's links change:
//! attaches to this host's registered vNICs as they appear, leaves out the
//! ones that are gone or down (so a holder on them is cleared at once), and
//! hands what the maps then say to the [`Observer`].
//!
//! Broadcast domains: every subnet in `broadcast-domain` mode with vNICs
//! registered on this host becomes a [`BcastTarget`] ([`bcast_domains`]):
//! its attached, up vNICs with the subnet's storm control, and (many hosts)
//! the VTEPs of the other hosts that have vNICs in it. With many hosts the
//! reconciler also makes the replicator veth pair (host::replicator) and
//! attaches the replicator programs to its peer before it lets the plan put
//! the port in a subnet's `bcast_flood` devmap.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use havip_api::EventKind;
use havip_common::{
    VipConfig, VipKey, DEFAULT_MAX_SUBNETS, MAX_REMOTE_HOSTS, REPLICATOR_PEER, REPLICATOR_PORT,
    VIP_F_VRRP_VMAC,
};
use havip_model::{state::SubnetMode, DesiredState, Vnic};
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
        plan::{reconcile, BcastTarget, EipNat, MapTarget, Storm, Uplink},
    },
    host::{
        links::{Link, Links},
        replicator::{self, Replicator},
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
    /// Many hosts: why the replicator port (`havip-rep0`, its peer's
    /// programs) is not ready, if it is not: broadcast-domain subnets then
    /// reach this host's vNICs only (retried with backoff).
    pub replicator: Option<String>,
    /// Broadcast-domain subnets programmed only in part, by subnet name, and
    /// why: more other hosts with vNICs in it than the kernel replicates to
    /// (the first [`MAX_REMOTE_HOSTS`] by VTEP address get its frames), or
    /// more such subnets on this host than it has slots for.
    pub broadcast_limited: BTreeMap<String, String>,
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
    /// Many hosts: the replicator pair this run made ready (programs
    /// attached to its peer); `None` until then.
    replicator: Option<Replicator>,
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
        Self {
            inputs,
            attached: BTreeMap::new(),
            seen: Links::new(),
            health: Arc::default(),
            started: false,
            replicator: None,
        }
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
        let underlay = self.inputs.underlay.borrow_and_update().clone();
        match &underlay {
            Some(u) => {
                target.underlay = Some(u.target);
                target.vteps = u.vteps.clone();
            }
            None => target.keep_underlay = self.inputs.many_hosts,
        }
        let hosts = underlay.as_ref().map(|u| &u.hosts);
        let (bcast, limited) = bcast_domains(
            &snap.state,
            &self.inputs.host,
            |v| self.usable(v, &links).map(|l| l.ifindex),
            hosts,
        );
        target.bcast = bcast;
        target.replicator = self.replicator_port(&links);
        self.report_limited(limited);
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
            self.ensure_replicator().await;
            let ok = match self.pass(SyncMode::Running) {
                Ok(()) => {
                    let health = lock(&self.health);
                    health.unattached.is_empty() && health.replicator.is_none()
                }
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

    /// The link of `v` if it is this host's, this run attached to it and it is up.
    fn usable<'a>(&self, v: &Vnic, links: &'a Links) -> Option<&'a Link> {
        if v.host != self.inputs.host {
            return None;
        }
        links.get(&v.ifname).filter(|l| l.up && self.attached.get(&v.ifname) == Some(&l.ifindex))
    }

    /// What the maps should hold: only this host's vNICs that this run
    /// attached to and that are up count, as ports and as members.
    fn target(&self, state: &DesiredState, links: &Links) -> MapTarget {
        let usable = |vnic: &str| -> Option<&Link> { self.usable(state.vnics.get(vnic)?, links) };
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

    /// The replicator port's ifindex for the plan: only once this run made
    /// the pair ready and the links show the same pair, the port up.
    fn replicator_port(&self, links: &Links) -> Option<u32> {
        let r = self.replicator?;
        let port = links.get(REPLICATOR_PORT).filter(|l| l.ifindex == r.port && l.up)?;
        links.get(REPLICATOR_PEER).filter(|l| l.ifindex == r.peer)?;
        Some(port.ifindex)
    }

    /// Many hosts: makes the replicator pair if it is missing and attaches
    /// `xdp_replicator`/`tc_replicate` to its peer (again when the pair was
    /// made anew). Nothing to do while the links show the pair this run made
    /// ready. A failure is reported once (`attach_failed`) and kept in
    /// [`SyncHealth::replicator`]; passes go on (this host's own vNICs still
    /// get their broadcast) and retry with backoff. One host: nothing.
    pub async fn ensure_replicator(&mut self) {
        if !self.inputs.many_hosts {
            return;
        }
        if self.replicator_port(&self.inputs.links.borrow()).is_some() {
            return;
        }
        let ready = match replicator::ensure(&self.inputs.rtnl).await {
            Ok(r) if !r.made && self.replicator.is_some_and(|o| (o.port, o.peer) == (r.port, r.peer)) => {
                Ok(r)
            }
            Ok(r) => match self.inputs.dp.attach_replicator(REPLICATOR_PEER) {
                Ok(how) => {
                    info!(
                        port = REPLICATOR_PORT,
                        ifindex = r.port,
                        peer = REPLICATOR_PEER,
                        made = r.made,
                        hitless = how == Attach::Swapped,
                        "replicator ready"
                    );
                    Ok(r)
                }
                Err(e) => Err(format!("attaching the replicator to {REPLICATOR_PEER}: {e:#}")),
            },
            Err(e) => Err(format!("{e:#}")),
        };
        let mut health = lock(&self.health);
        match ready {
            Ok(r) => {
                self.replicator = Some(r);
                if health.replicator.take().is_some() {
                    info!("the replicator port is ready again");
                }
            }
            Err(error) => {
                self.replicator = None;
                if health.replicator.as_ref() != Some(&error) {
                    self.inputs.feed.publish(
                        EventKind::AttachFailed,
                        None,
                        Some(REPLICATOR_PORT),
                        format!(
                            "the replicator port is not ready ({error}): broadcast-domain subnets reach this \
                             host's vNICs only; retried with backoff"
                        ),
                    );
                }
                health.replicator = Some(error);
            }
        }
    }

    /// Keeps [`SyncHealth::broadcast_limited`] and logs what is new in it.
    fn report_limited(&self, limited: BTreeMap<String, String>) {
        let mut health = lock(&self.health);
        for (subnet, why) in &limited {
            if health.broadcast_limited.get(subnet) != Some(why) {
                warn!(%subnet, "{why}");
            }
        }
        health.broadcast_limited = limited;
    }
}

/// The broadcast-domain subnets this host serves, by (network, prefix
/// length): every subnet in `broadcast-domain` mode with vNICs registered on
/// `host`, with its vNICs that `usable` gives an ifindex for (attached and
/// up here) at the subnet's storm control, and the VTEPs of the other hosts
/// (`Vnic::host`) that have vNICs in it, from `hosts` (host id -> VTEP, the
/// registered hosts; `None` on one host or while not known: no remotes; a
/// host with no record is left out until it registers). Also what is
/// programmed only in part, by subnet name (see
/// [`SyncHealth::broadcast_limited`]): more than [`MAX_REMOTE_HOSTS`] other
/// hosts are truncated to the lowest VTEP addresses, not refused, so the
/// frames reach those rather than none; beyond [`DEFAULT_MAX_SUBNETS`]
/// subnets the ones without a slot yet get none.
pub fn bcast_domains(
    state: &DesiredState,
    host: &str,
    usable: impl Fn(&Vnic) -> Option<u32>,
    hosts: Option<&BTreeMap<String, Ipv4Addr>>,
) -> (BTreeMap<(Ipv4Addr, u8), BcastTarget>, BTreeMap<String, String>) {
    let domains: BTreeSet<&str> = state
        .subnets
        .keys()
        .filter(|name| state.subnet_settings(name).mode == SubnetMode::BroadcastDomain)
        .map(String::as_str)
        .collect();
    // One walk over the vNICs: the local ones and the other hosts, per subnet.
    let mut by_subnet: BTreeMap<&str, (Vec<&Vnic>, BTreeSet<&str>)> = BTreeMap::new();
    for v in state.vnics.values().filter(|v| domains.contains(v.subnet.as_str())) {
        let (local, others) = by_subnet.entry(v.subnet.as_str()).or_default();
        if v.host == host {
            local.push(v);
        } else {
            others.insert(v.host.as_str());
        }
    }
    let (mut out, mut limited) = (BTreeMap::new(), BTreeMap::new());
    for (name, (local, others)) in by_subnet.into_iter().filter(|(_, (local, _))| !local.is_empty()) {
        let Some(subnet) = state.subnets.get(name) else { continue };
        let storm = state.subnet_settings(name).storm;
        let storm = Storm { rate_pps: storm.pps, burst: storm.burst };
        let vnics = local.iter().filter_map(|v| usable(v)).map(|ifindex| (ifindex, storm)).collect();
        let remotes: BTreeSet<Ipv4Addr> =
            others.iter().filter_map(|h| hosts.and_then(|hosts| hosts.get(*h)).copied()).collect();
        if remotes.len() > MAX_REMOTE_HOSTS {
            let last = remotes.iter().nth(MAX_REMOTE_HOSTS - 1).copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
            limited.insert(
                name.to_owned(),
                format!(
                    "broadcast-domain subnet {name}: {} other hosts have vNICs in it, frames are replicated \
                     to the first {MAX_REMOTE_HOSTS} by VTEP address (up to {last}) only",
                    remotes.len()
                ),
            );
        }
        out.insert((subnet.network, subnet.prefix), BcastTarget { vnics, remotes });
    }
    if out.len() > DEFAULT_MAX_SUBNETS as usize {
        for ((net, len), _) in out.iter().skip(DEFAULT_MAX_SUBNETS as usize) {
            let name =
                state.subnets.iter().find(|(_, s)| (s.network, s.prefix) == (*net, *len)).map(|(n, _)| n);
            if let Some(name) = name {
                limited.insert(
                    name.clone(),
                    format!(
                        "this host serves more than {DEFAULT_MAX_SUBNETS} broadcast-domain subnets: {name} may \
                         get no slot, its broadcast then passes as in a unicast subnet"
                    ),
                );
            }
        }
    }
    (out, limited)
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

/// [`bcast_domains`]: the desired state in, the broadcast domains out.
#[cfg(test)]
mod tests {
    use havip_model::state::{StormControl, SubnetSettings};

    use super::*;

    const VPC1: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 1, 0), 24);
    const VPC2: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 2, 0), 24);

    fn vnic(name: &str, host: &str, subnet: &str, last: u8) -> Vnic {
        Vnic {
            name: name.into(),
            host: host.into(),
            ifname: name.into(),
            instance: format!("vm-{name}"),
            subnet: subnet.into(),
            ip: Ipv4Addr::new(198, 18, if subnet == "vpc1" { 1 } else { 2 }, last),
            mac: [2, 0, 0, 0, 0, last],
        }
    }

    /// vpc1 (broadcast domain, 500 pps burst 50): a, b on hv1, c on hv2, d on hv3;
    /// vpc2 (unicast): e on hv1, f on hv2.
    fn state() -> DesiredState {
        let mut s = DesiredState::default();
        s.subnets.insert("vpc1".into(), "198.18.1.0/24".parse().unwrap());
        s.subnets.insert("vpc2".into(), "198.18.2.0/24".parse().unwrap());
        s.subnet_settings.insert(
            "vpc1".into(),
            SubnetSettings { mode: SubnetMode::BroadcastDomain, storm: StormControl { pps: 500, burst: 50 } },
        );
        for v in [
            vnic("a", "hv1", "vpc1", 11),
            vnic("b", "hv1", "vpc1", 12),
            vnic("c", "hv2", "vpc1", 13),
            vnic("d", "hv3", "vpc1", 14),
            vnic("e", "hv1", "vpc2", 15),
            vnic("f", "hv2", "vpc2", 16),
        ] {
            s.vnics.insert(v.name.clone(), v);
        }
        s
    }

    /// a and e are attached and up (ifindex 11 and 15), b is down.
    fn usable(v: &Vnic) -> Option<u32> {
        matches!(v.name.as_str(), "a" | "e").then(|| u32::from(v.mac[5]))
    }

    fn hosts() -> BTreeMap<String, Ipv4Addr> {
        BTreeMap::from([
            ("hv2".into(), Ipv4Addr::new(198, 18, 0, 2)),
            ("hv3".into(), Ipv4Addr::new(198, 18, 0, 3)),
        ])
    }

    #[test]
    fn only_broadcast_domain_subnets_with_vnics_here_with_their_storm_control_and_other_hosts() {
        let (domains, limited) = bcast_domains(&state(), "hv1", usable, Some(&hosts()));
        let storm = Storm { rate_pps: 500, burst: 50 };
        assert_eq!(
            domains,
            BTreeMap::from([(
                VPC1,
                BcastTarget {
                    vnics: BTreeMap::from([(11, storm)]),
                    remotes: BTreeSet::from([Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)]),
                },
            )]),
            "vpc2 is unicast; b is down, so not a port, but the subnet is served"
        );
        assert!(limited.is_empty());

        // One host, or the underlay not known yet: no remotes.
        let (domains, _) = bcast_domains(&state(), "hv1", usable, None);
        assert_eq!(domains[&VPC1].remotes, BTreeSet::new());
        // A host not registered (yet) is left out.
        let only_hv2 = BTreeMap::from([("hv2".into(), Ipv4Addr::new(198, 18, 0, 2))]);
        let (domains, _) = bcast_domains(&state(), "hv1", usable, Some(&only_hv2));
        assert_eq!(domains[&VPC1].remotes, BTreeSet::from([Ipv4Addr::new(198, 18, 0, 2)]));
    }

    #[test]
    fn a_host_without_vnics_in_the_subnet_serves_nothing_and_the_mode_flips_it() {
        let mut s = state();
        let (domains, _) = bcast_domains(&s, "hv4", usable, Some(&hosts()));
        assert!(domains.is_empty(), "no vNIC of vpc1 on hv4");

        s.subnet_settings.insert(
            "vpc2".into(),
            SubnetSettings { mode: SubnetMode::BroadcastDomain, ..Default::default() },
        );
        let (domains, _) = bcast_domains(&s, "hv1", usable, Some(&hosts()));
        assert_eq!(domains.keys().copied().collect::<Vec<_>>(), [VPC1, VPC2]);
        assert_eq!(
            domains[&VPC2].vnics,
            BTreeMap::from([(15, Storm { rate_pps: 1000, burst: 100 })]),
            "defaults"
        );
        assert_eq!(domains[&VPC2].remotes, BTreeSet::from([Ipv4Addr::new(198, 18, 0, 2)]), "f is on hv2");

        s.subnet_settings.clear();
        assert!(bcast_domains(&s, "hv1", usable, Some(&hosts())).0.is_empty(), "all unicast");
    }

    #[test]
    fn more_other_hosts_than_the_kernel_takes_are_named() {
        let mut s = state();
        let mut hosts = BTreeMap::new();
        for i in 0..70u8 {
            let host = format!("h{i:02}");
            let v = vnic(&format!("x{i}"), &host, "vpc1", 100 + i);
            s.vnics.insert(v.name.clone(), v);
            hosts.insert(host, Ipv4Addr::new(198, 18, 0, 100 + i));
        }
        let (domains, limited) = bcast_domains(&s, "hv1", usable, Some(&hosts));
        assert_eq!(domains[&VPC1].remotes.len(), 70, "the plan truncates; the reconciler says so");
        let why = &limited["vpc1"];
        assert!(
            why.contains("70 other hosts") && why.contains("first 64") && why.contains("198.18.0.163"),
            "{why}"
        );
    }
}
