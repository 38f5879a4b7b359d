//! The operator API: HTTP/JSON on a Unix socket, versioned paths (`/v1/`).
//! Every change is one store transaction checked against every rule; a
//! refusal answers 404 (no such object), 400 (malformed) or 409 (a rule),
//! with the rule's name, and changes nothing.
//!
//! Every error is one shape, `{"error": …, "rule": …}` (`rule` null when no
//! product rule was involved), axum's own rejections included: malformed
//! JSON 400/422, wrong media type 415, too large 413, method 405, unknown
//! path 404, overloaded or too slow 503. The server's limits are
//! [`limits`], [`MAX_IN_FLIGHT`], [`REQUEST_TIMEOUT`] and [`MAX_BODY`].

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::Ipv4Addr,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};
use axum::{
    body::{Body, Bytes},
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State},
    http::{header, Method, StatusCode, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    BoxError, Json, Router,
};
use futures::{stream, Future, StreamExt};
use havip_api::{
    view::{
        AgentStatus, Applied, BroadcastView, ClusterStatusView, Contested, ContestedMember, DesiredView,
        EipRequest, ErrorBody, HavipView, LinkState, MemberView, PeerHostView, Status, StoreStatus,
        SubnetView, SyncStatus, VerificationView, VnicView, VrrpView,
    },
    Event, EventKind,
};
use havip_common::{MemberKey, SubnetCounter, SubnetCounters, VipCounter, VipKey};
use havip_model::{
    ops::{self, DesiredFile, HavipSpec, SubnetModeSpec, SubnetSpec, VnicSpec},
    rules::{self, check_name, parse_ipv4},
    state::rfc3339,
    DesiredState, Havip, Limits, MacAddr, Observed, Refusal, Rule, Subnet, SubnetMode, Vnic,
};
use serde::Deserialize;
use tokio::{
    net::UnixListener,
    sync::{watch, Semaphore},
};
use tower::{limit::GlobalConcurrencyLimitLayer, timeout::TimeoutLayer, ServiceBuilder};

use crate::{
    clock::monotonic_ns,
    control::{
        cluster::ClusterStatus,
        feed::{Feed, MAX_FOLLOWERS},
        latency::Latencies,
        reconciler::SyncHealth,
        verifier::{Phase, Verdict},
    },
    datapath::maps::Maps,
    host::links::Links,
    northbound::serve::{serve, ServerLimits},
    store::{update_with, Store, StoreError, StoreHealthSnapshot},
    sync::lock,
};

/// What the API reads and changes.
pub struct ApiContext {
    /// This host's id: where vNICs registered without a host are placed.
    pub host: String,
    /// The desired and observed state.
    pub store: Arc<dyn Store>,
    /// Quotas and map capacities every edit is checked against.
    pub limits: Limits,
    /// The maps: counters and VRRP records for `describe`, shared with the reconciler.
    pub maps: Arc<Mutex<dyn Maps>>,
    /// The event feed: edits are published, `/v1/events` follows it.
    pub feed: Arc<Feed>,
    /// The host's links by name, for link states and ifindexes.
    pub links: watch::Receiver<Links>,
    /// The store revision the maps were last brought to.
    pub reconciled: Arc<AtomicU64>,
    /// The holder verification's verdicts, by VIP.
    pub verdicts: Arc<Mutex<BTreeMap<Ipv4Addr, Verdict>>>,
    /// How far the control loop lags the data plane.
    pub latencies: Arc<Latencies>,
    /// Whether the maps follow the store (the reconciler's last pass).
    pub sync: Arc<Mutex<SyncHealth>>,
    /// When the agent started, Unix ms.
    pub started_ms: u64,
    /// Many hosts: the shared store and the peers (None on one host).
    pub cluster: Option<Arc<ClusterStatus>>,
}

impl ApiContext {
    /// Waits until the maps were brought to `revision` (or a later one), at most `within`;
    /// whether they were.
    async fn maps_follow(&self, revision: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.reconciled.load(Ordering::Relaxed) < revision {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Runs `edit` on the desired state and commits it if every rule holds;
    /// tells the feed what changed.
    /// Returns the edit's result and the revision after it.
    async fn change<T: Send + 'static>(
        self: &Arc<Self>,
        (vip, vnic): (Option<Ipv4Addr>, Option<&str>),
        what: String,
        edit: impl FnMut(&mut DesiredState) -> Result<T, Refusal> + Send + 'static,
    ) -> Result<(T, u64), ApiError> {
        let before = self.store.desired().revision;
        let (out, revision) = self.commit(edit).await?;
        // An edit that changed nothing committed nothing: nothing to say.
        if revision != before {
            self.feed.publish(EventKind::Changed, vip, vnic, format!("{what} (revision {revision})"));
        }
        Ok((out, revision))
    }

    /// [`ApiContext::change`] without the event; returns the revision too.
    async fn commit<T: Send + 'static>(
        self: &Arc<Self>,
        mut edit: impl FnMut(&mut DesiredState) -> Result<T, Refusal> + Send + 'static,
    ) -> Result<(T, u64), ApiError> {
        let ctl = self.clone();
        // A commit waits for fsync: off the async threads.
        let (out, snap) = tokio::task::spawn_blocking(move || {
            update_with(&*ctl.store, |s| {
                let out = edit(s)?;
                rules::check(s, &ctl.limits)?;
                Ok(out)
            })
        })
        .await
        .context("store task")??;
        Ok((out, snap.revision))
    }

    /// The maps, locked.
    pub(crate) fn maps(&self) -> std::sync::MutexGuard<'_, dyn Maps + 'static> {
        lock(&self.maps)
    }

    fn describe(&self, vips: impl Fn(&Ipv4Addr) -> bool) -> Vec<HavipView> {
        let state = self.store.desired().state;
        let observed = self.store.observed();
        let links = self.links.borrow().clone();
        let verdicts = lock(&self.verdicts).clone();
        let mut maps = self.maps();
        state
            .havips
            .values()
            .filter(|h| vips(&h.vip))
            .map(|h| {
                let o = observed.get(&h.vip).cloned().unwrap_or_default();
                self.view_havip(&state, h, o, verdicts.get(&h.vip), &links, &mut *maps)
            })
            .collect()
    }

    /// A vNIC's link as this host sees it: remote when it lives elsewhere.
    fn link_state(&self, links: &Links, vnic: Option<&Vnic>) -> LinkState {
        match vnic {
            Some(v) if v.host != self.host => LinkState::Remote,
            Some(v) => match links.get(&v.ifname) {
                Some(l) if l.up => LinkState::Up,
                Some(_) => LinkState::Down,
                None => LinkState::Absent,
            },
            None => LinkState::Absent,
        }
    }

    fn view_havip(
        &self,
        state: &DesiredState,
        h: &Havip,
        o: Observed,
        verdict: Option<&Verdict>,
        links: &Links,
        maps: &mut dyn Maps,
    ) -> HavipView {
        let instance = |vnic: &str| state.vnics.get(vnic).map(|v| v.instance.clone());
        // This host's members: (name, ifindex).
        let local: Vec<(&String, u32)> = h
            .members
            .iter()
            .filter_map(|m| {
                let v = state.vnics.get(m).filter(|v| v.host == self.host)?;
                Some((m, links.get(&v.ifname)?.ifindex))
            })
            .collect();
        let now = monotonic_ns();
        let mut vrrp: Vec<VrrpView> = local
            .iter()
            .filter_map(|(m, ifindex)| {
                let seen = maps.vrrp().get(&MemberKey { vip: h.vip.octets(), ifindex: *ifindex })?;
                Some(VrrpView {
                    vnic: (*m).clone(),
                    advertiser: Ipv4Addr::from(seen.advertiser),
                    vrid: seen.vrid,
                    priority: seen.priority,
                    version: seen.version,
                    age_ms: now.saturating_sub(seen.last_ns) / 1_000_000,
                })
            })
            .collect();
        vrrp.sort_by_key(|v| v.age_ms);
        let no_holder_reason = o.holder.is_none().then(|| {
            if h.members.is_empty() {
                "it has no members".to_owned()
            } else if local.is_empty() {
                "no member's vNIC is present and up on this host".to_owned()
            } else if verdict.is_some_and(|v| v.phase == Phase::Searching) {
                "no member has claimed it or answered the platform's probes".to_owned()
            } else {
                "no member has claimed it (a gratuitous ARP)".to_owned()
            }
        });
        HavipView {
            vip: h.vip,
            subnet: h.subnet.clone(),
            subnet_mode: state.subnet_settings(&h.subnet).mode,
            status: if h.members.is_empty() { Status::Available } else { Status::InUse },
            members: h
                .members
                .iter()
                .map(|m| MemberView {
                    vnic: m.clone(),
                    instance: instance(m).unwrap_or_default(),
                    link: self.link_state(links, state.vnics.get(m)),
                })
                .collect(),
            eip: h.eip,
            holder_instance: o.holder_vnic().and_then(instance),
            holder_host: o.holder.as_ref().map(|h| h.host.clone()),
            holder: o.holder.map(|h| h.vnic),
            since: o.since_ms.map(rfc3339),
            epoch: o.epoch,
            revision: o.revision,
            failovers: o.failovers,
            last_claims: o.last_claims.into(),
            counters: counters(maps, h.vip),
            settings: h.settings,
            no_holder_reason,
            contested: verdict.and_then(|v| v.contested.as_ref()).map(|c| Contested {
                members: c
                    .members
                    .iter()
                    .map(|(vnic, priority)| ContestedMember { vnic: vnic.clone(), priority: *priority })
                    .collect(),
                since: rfc3339(c.since_ms),
                policy: h.settings.split_brain.to_string(),
            }),
            verification: verdict.map(|v| VerificationView {
                state: v.phase.name().to_owned(),
                misses: v.misses,
                probes_sent: v.probes_sent,
                rounds_answered: v.rounds_answered,
                corrections: v.corrections.clone(),
            }),
            vrrp,
        }
    }

    /// Subnet `name` (which exists in `state`); with its [`BroadcastView`] from this host's maps
    /// when `counters` and it is a broadcast domain.
    fn view_subnet(&self, state: &DesiredState, name: &str, sn: &Subnet, counters: bool) -> SubnetView {
        let settings = state.subnet_settings(name);
        let broadcast = (counters && settings.mode == SubnetMode::BroadcastDomain).then(|| {
            let mut hosts: Vec<String> =
                state.vnics.values().filter(|v| v.subnet == name).map(|v| v.host.clone()).collect();
            hosts.sort();
            hosts.dedup();
            let mut view = broadcast_view(subnet_counters(&mut *self.maps(), sn), hosts);
            view.storm_drops_by_vnic = self.storm_drops_by_vnic(state, name);
            view
        });
        SubnetView {
            name: name.to_owned(),
            cidr: sn.to_string(),
            vnics: state.vnics.values().filter(|v| v.subnet == name).count(),
            havips: state.havips.values().filter(|h| h.subnet == name).count(),
            mode: settings.mode,
            storm_pps: settings.storm.pps,
            storm_burst: settings.storm.burst,
            broadcast,
        }
    }

    /// This host's vNICs of subnet `name` that went over their storm limit, by vNIC name: the
    /// frames each had dropped since its `bcast_vnics` entry was written.
    fn storm_drops_by_vnic(&self, state: &DesiredState, name: &str) -> BTreeMap<String, u64> {
        let links = self.links.borrow().clone();
        let mut maps = self.maps();
        state
            .vnics_on(&self.host)
            .filter(|v| v.subnet == name)
            .filter_map(|v| {
                let entry = maps.bcast_vnics().get(&links.get(&v.ifname)?.ifindex)?;
                (entry.storm_drops > 0).then(|| (v.name.clone(), entry.storm_drops))
            })
            .collect()
    }

    /// Subnet `name` in detail: 404 if there is none.
    fn describe_subnet(&self, name: &str) -> Result<SubnetView, ApiError> {
        let state = self.store.desired().state;
        match state.subnets.get(name) {
            Some(sn) => Ok(self.view_subnet(&state, name, sn, true)),
            None => {
                Err(Refusal { rule: Rule::UnknownSubnet, message: format!("subnet {name} does not exist") }
                    .into())
            }
        }
    }

    fn describe_one(&self, vip: Ipv4Addr) -> Result<HavipView, ApiError> {
        match self.describe(|v| *v == vip).pop() {
            Some(v) => Ok(v),
            None => {
                Err(Refusal { rule: Rule::UnknownHavip, message: format!("HAVIP {vip} does not exist") }
                    .into())
            }
        }
    }
}

/// The VIP's per-CPU counters, summed; empty until the VIP is in the maps.
pub fn counters(maps: &mut dyn Maps, vip: Ipv4Addr) -> BTreeMap<String, u64> {
    let Some(state) = maps.vip(&VipKey::from(vip)) else { return BTreeMap::new() };
    let Ok(sum) = maps.vip_counters(state.slot) else { return BTreeMap::new() };
    VipCounter::ALL.iter().map(|&c| (c.name().to_owned(), sum.get(c))).collect()
}

/// A broadcast-domain subnet's counters on this host, summed over CPUs: `None` while this host's
/// data plane has no slot for it (none of its vNICs lives here, or the maps do not follow yet).
pub fn subnet_counters(maps: &mut dyn Maps, subnet: &Subnet) -> Option<SubnetCounters> {
    let slot = maps.subnet_slot(subnet.network, subnet.prefix)?;
    // A slot whose counters cannot be read shows as not programmed rather than as zeros.
    maps.subnet_counters(slot).ok()
}

/// The [`BroadcastView`] of `counters` (none: not programmed, all 0) and `hosts`.
fn broadcast_view(counters: Option<SubnetCounters>, hosts: Vec<String>) -> BroadcastView {
    let c = counters.unwrap_or_default();
    BroadcastView {
        programmed: counters.is_some(),
        flooded: c.get(SubnetCounter::Flooded),
        local_copies: c.get(SubnetCounter::LocalCopies),
        remote_copies: c.get(SubnetCounter::RemoteCopies),
        storm_drops: c.get(SubnetCounter::StormDrops),
        received: c.get(SubnetCounter::Received),
        local_only: c.get(SubnetCounter::LocalOnly),
        too_big: c.get(SubnetCounter::TooBig),
        no_vtep: c.get(SubnetCounter::NoVtep),
        storm_drops_by_vnic: BTreeMap::new(),
        hosts,
    }
}

/// A refusal or failure as an HTTP answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let status = match r.rule {
            rule if rule.is_not_found() => StatusCode::NOT_FOUND,
            // Text or a number no request may carry, whatever the state.
            Rule::WellFormed | Rule::Ipv4Only | Rule::StormControl => StatusCode::BAD_REQUEST,
            _ => StatusCode::CONFLICT,
        };
        Self { status, body: ErrorBody { error: r.to_string(), rule: Some(r.rule.name().to_owned()) } }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(r) => r.into(),
            StoreError::Backend(e) => e.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: ErrorBody { error: format!("{e:#}"), rule: None },
        }
    }
}

impl ApiError {
    /// An error no product rule made: `rule` is null.
    fn plain(status: StatusCode, error: String) -> Self {
        Self { status, body: ErrorBody { error, rule: None } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type Ctl = State<Arc<ApiContext>>;
type Answer<T> = Result<Json<T>, ApiError>;

fn vip_of(text: &str) -> Result<Ipv4Addr, ApiError> {
    Ok(parse_ipv4(text)?)
}

async fn list_havips(State(c): Ctl) -> Answer<Vec<HavipView>> {
    Ok(Json(c.describe(|_| true)))
}

async fn get_havip(State(c): Ctl, UrlPath(vip): UrlPath<String>) -> Answer<HavipView> {
    Ok(Json(c.describe_one(vip_of(&vip)?)?))
}

async fn create_havip(
    State(c): Ctl,
    Json(spec): Json<HavipSpec>,
) -> Result<(StatusCode, Json<HavipView>), ApiError> {
    // The event names the VIP, which may only be known once allocated.
    let (vip, revision) = c.commit(move |s| ops::create_havip(s, &spec)).await?;
    c.feed.publish(EventKind::Changed, Some(vip), None, format!("HAVIP created (revision {revision})"));
    Ok((StatusCode::CREATED, Json(c.describe_one(vip)?)))
}

#[derive(Deserialize)]
struct Force {
    #[serde(default)]
    force: bool,
}

async fn delete_havip(State(c): Ctl, UrlPath(vip): UrlPath<String>, Query(q): Query<Force>) -> Answer<Havip> {
    let vip = vip_of(&vip)?;
    let what = if q.force { "HAVIP deleted (forced)" } else { "HAVIP deleted" };
    Ok(Json(c.change((Some(vip), None), what.into(), move |s| ops::delete_havip(s, vip, q.force)).await?.0))
}

async fn associate(State(c): Ctl, UrlPath((vip, vnic)): UrlPath<(String, String)>) -> Answer<HavipView> {
    let vip = vip_of(&vip)?;
    check_name("vNIC", &vnic)?;
    let what = format!("{vnic} associated");
    c.change((Some(vip), None), what, move |s| ops::associate(s, vip, &vnic)).await?;
    Ok(Json(c.describe_one(vip)?))
}

async fn disassociate(State(c): Ctl, UrlPath((vip, vnic)): UrlPath<(String, String)>) -> Answer<HavipView> {
    let vip = vip_of(&vip)?;
    check_name("vNIC", &vnic)?;
    let what = format!("{vnic} disassociated");
    c.change((Some(vip), None), what, move |s| ops::disassociate(s, vip, &vnic)).await?;
    Ok(Json(c.describe_one(vip)?))
}

async fn bind_eip(
    State(c): Ctl,
    UrlPath(vip): UrlPath<String>,
    Json(req): Json<EipRequest>,
) -> Answer<HavipView> {
    let vip = vip_of(&vip)?;
    let max = c.limits.max_eips_per_havip;
    let what = format!("EIP {} bound", req.eip);
    c.change((Some(vip), None), what, move |s| ops::bind_eip(s, vip, &req.eip, max)).await?;
    Ok(Json(c.describe_one(vip)?))
}

async fn unbind_eip(State(c): Ctl, UrlPath(vip): UrlPath<String>) -> Answer<HavipView> {
    let vip = vip_of(&vip)?;
    c.change((Some(vip), None), "EIP unbound".into(), move |s| ops::unbind_eip(s, vip)).await?;
    Ok(Json(c.describe_one(vip)?))
}

async fn list_vnics(State(c): Ctl) -> Answer<Vec<VnicView>> {
    let state = c.store.desired().state;
    let links = c.links.borrow().clone();
    let views = state
        .vnics
        .values()
        .map(|v| VnicView {
            name: v.name.clone(),
            host: v.host.clone(),
            ifname: v.ifname.clone(),
            instance: v.instance.clone(),
            subnet: v.subnet.clone(),
            ip: v.ip,
            mac: MacAddr(v.mac).to_string(),
            link: c.link_state(&links, Some(v)),
            ifindex: links.get(&v.ifname).filter(|_| v.host == c.host).map(|l| l.ifindex),
            havips: state.havips.values().filter(|h| h.members.contains(&v.name)).map(|h| h.vip).collect(),
        })
        .collect();
    Ok(Json(views))
}

async fn put_vnic(State(c): Ctl, Json(spec): Json<VnicSpec>) -> Answer<()> {
    let what = format!("vNIC {} registered", spec.name);
    let host = c.host.clone();
    let name = spec.name.clone();
    c.change((None, Some(&name)), what, move |s| ops::put_vnic(s, &spec, &host)).await?;
    Ok(Json(()))
}

async fn delete_vnic(State(c): Ctl, UrlPath(name): UrlPath<String>) -> Answer<()> {
    check_name("vNIC", &name)?;
    let what = format!("vNIC {name} removed");
    let vnic = name.clone();
    c.change((None, Some(&vnic)), what, move |s| ops::delete_vnic(s, &name)).await?;
    Ok(Json(()))
}

async fn list_subnets(State(c): Ctl) -> Answer<Vec<SubnetView>> {
    let state = c.store.desired().state;
    Ok(Json(state.subnets.iter().map(|(name, sn)| c.view_subnet(&state, name, sn, false)).collect()))
}

async fn get_subnet(State(c): Ctl, UrlPath(name): UrlPath<String>) -> Answer<SubnetView> {
    check_name("subnet", &name)?;
    Ok(Json(c.describe_subnet(&name)?))
}

async fn put_subnet(State(c): Ctl, Json(spec): Json<SubnetSpec>) -> Answer<()> {
    let what = format!("subnet {} registered", spec.name);
    c.change((None, None), what, move |s| ops::put_subnet(s, &spec)).await?;
    Ok(Json(()))
}

/// `PUT /v1/subnets/{name}/mode`: the subnet's mode, and its storm control where the body
/// writes it; answers the subnet as `GET` does.
async fn set_subnet_mode(
    State(c): Ctl,
    UrlPath(name): UrlPath<String>,
    Json(spec): Json<SubnetModeSpec>,
) -> Answer<SubnetView> {
    check_name("subnet", &name)?;
    let subnet = name.clone();
    let before = c.store.desired().revision;
    // The event says what the subnet is now, which only the edit knows (storm fields it kept).
    let (set, revision) = c.commit(move |s| ops::set_subnet_mode(s, &subnet, &spec)).await?;
    if revision != before {
        let what = format!(
            "subnet {name} is {} (storm control {} frames/s per vNIC, burst {}) (revision {revision})",
            set.mode, set.storm.pps, set.storm.burst
        );
        c.feed.publish(EventKind::Changed, None, None, what);
    }
    // The answer shows the mode in force, not the maps of a moment before: the reconciler's
    // pass follows the commit within milliseconds (bounded: a view that says the maps have not
    // followed yet is still an answer).
    c.maps_follow(revision, MAPS_FOLLOW).await;
    Ok(Json(c.describe_subnet(&name)?))
}

/// How long `PUT /v1/subnets/{name}/mode` waits for the maps to follow its commit.
const MAPS_FOLLOW: Duration = Duration::from_secs(2);

async fn delete_subnet(State(c): Ctl, UrlPath(name): UrlPath<String>) -> Answer<()> {
    check_name("subnet", &name)?;
    let what = format!("subnet {name} removed");
    c.change((None, None), what, move |s| ops::delete_subnet(s, &name)).await?;
    Ok(Json(()))
}

async fn get_desired(State(c): Ctl) -> Answer<DesiredView> {
    let snap = c.store.desired();
    Ok(Json(DesiredView { revision: snap.revision, state: (*snap.state).clone() }))
}

/// The body is the declarative TOML file itself.
async fn apply(State(c): Ctl, text: String) -> Answer<Applied> {
    let file: DesiredFile = toml::from_str(&text)
        .map_err(|e| Refusal { rule: Rule::WellFormed, message: format!("reading the file: {e}") })?;
    let objects = file.parse(&c.host)?;
    let counts = (objects.subnets.len(), objects.vnics.len(), objects.havips.len());
    let what = format!("applied {} subnets, {} vNICs, {} HAVIPs", counts.0, counts.1, counts.2);
    let ((), revision) = c
        .change((None, None), what, move |s| {
            ops::apply(s, objects.clone());
            Ok(())
        })
        .await?;
    Ok(Json(Applied { revision, subnets: counts.0, vnics: counts.1, havips: counts.2 }))
}

/// `VmRSS` and `VmHWM` of this process, KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn status(State(c): Ctl) -> Answer<AgentStatus> {
    let snap = c.store.desired();
    let links = c.links.borrow().clone();
    let (rss_kib, peak_rss_kib) = memory_kib();
    Ok(Json(AgentStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        host: c.host.clone(),
        pid: std::process::id(),
        started: rfc3339(c.started_ms),
        revision: snap.revision,
        reconciled_revision: c.reconciled.load(Ordering::Relaxed),
        subnets: snap.state.subnets.len(),
        vnics: snap.state.vnics.len(),
        vnics_local: snap.state.vnics_on(&c.host).count(),
        vnics_present: snap.state.vnics_on(&c.host).filter(|v| links.contains_key(&v.ifname)).count(),
        havips: snap.state.havips.len(),
        rss_kib,
        peak_rss_kib,
        store: store_status(&c.store.health().snapshot()),
        sync: {
            let h = lock(&c.sync).clone();
            SyncStatus {
                last_error: h.last_error,
                failed_passes: h.failed_passes,
                unattached: h.unattached,
                replicator: h.replicator,
                broadcast_limited: h.broadcast_limited,
            }
        },
        cluster: c.cluster.as_deref().map(cluster_status),
    }))
}

/// The cluster's state as the API shows it.
pub fn cluster_status(c: &ClusterStatus) -> ClusterStatusView {
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    ClusterStatusView {
        reachable: c.reachable.load(Ordering::Relaxed),
        revision: n(&c.revision),
        hosts: lock(&c.peers)
            .values()
            .map(|p| PeerHostView {
                id: p.record.id.clone(),
                underlay: p.record.underlay,
                gateway: p.record.gateway,
                state: p.state.to_owned(),
                misses: p.misses,
                version: p.record.version.clone(),
            })
            .collect(),
        commits_won: n(&c.commits_won),
        commits_lost: n(&c.commits_lost),
        commits_fenced: n(&c.commits_fenced),
        commit_retries: n(&c.commit_retries),
        records_applied: n(&c.records_applied),
        hints_sent: n(&c.peer.hints_sent),
        hints_applied: n(&c.peer.hints_applied),
        hints_ignored: n(&c.peer.hints_ignored),
        probes_sent: n(&c.peer.probes_sent),
        probes_answered: n(&c.peer.probes_answered),
    }
}

/// The store's health as the API shows it.
fn store_status(h: &StoreHealthSnapshot) -> StoreStatus {
    StoreStatus {
        failing: h.failing,
        write_failures: h.write_failures,
        reopens: h.reopens,
        pending: h.pending,
        last_error: h.last_error.clone(),
        config_not_applied: h.config_not_applied.clone(),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    follow: bool,
    /// Only the events of this HAVIP.
    vip: Option<String>,
}

/// NDJSON: the kept events, then (with `follow`) every new one as it happens.
async fn events(State(c): Ctl, Query(q): Query<EventsQuery>) -> Result<Response, ApiError> {
    let only = q.vip.as_deref().map(vip_of).transpose()?;
    let line = move |ev: Event| -> Option<Result<Bytes, Infallible>> {
        // A gap marker concerns every HAVIP.
        if only.is_some() && ev.vip != only && ev.kind != EventKind::Missed {
            return None;
        }
        let mut v = serde_json::to_vec(&ev).expect("events serialise");
        v.push(b'\n');
        Some(Ok(v.into()))
    };
    let body = if q.follow {
        let Some((past, follower)) = c.feed.subscribe() else {
            return Err(ApiError::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_FOLLOWERS} event followers already: try again later"),
            ));
        };
        let head = stream::iter(past.into_iter().filter_map(line));
        // A slow reader is told what it missed (a `missed` marker), and goes on.
        let live = stream::unfold(follower, |mut f| async move { Some((f.next().await?, f)) });
        Body::from_stream(head.chain(live.filter_map(move |ev| std::future::ready(line(ev)))))
    } else {
        Body::from_stream(stream::iter(c.feed.follow().0.into_iter().filter_map(line)))
    };
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// The API socket's connections: far below the descriptors the agent has
/// (65,536 in the unit; 1,024 still leaves room), far above what operators
/// and their tools open. An idle or half-open one is closed after
/// `header_timeout`.
pub fn limits() -> ServerLimits {
    ServerLimits {
        name: "API",
        max_connections: 512,
        header_timeout: Duration::from_secs(5),
        lifetime: None,
        busy: (
            "application/json",
            r#"{"error":"too many connections to the API (512): try again","rule":null}"#.to_owned(),
        ),
    }
}
/// Requests being handled at once; more are answered 503 at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// From a request's head to its answer's head (a commit waits for fsync; an
/// event stream's body is not bounded by it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body: a declarative file of well over 10,000 HAVIPs.
pub const MAX_BODY: usize = 8 << 20;

/// Every error the API returns as `{"error", "rule"}` JSON, whatever made
/// it: axum's extractor rejections (text), a 405 or a 404 (empty).
async fn json_errors(method: Method, uri: Uri, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let path = uri.path();
    let error = match status {
        StatusCode::NOT_FOUND if text.is_empty() => format!("no such endpoint: {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not allowed on {path}"),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        _ => text,
    };
    let mut out = ApiError::plain(status, error).into_response();
    for h in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&h) {
            out.headers_mut().insert(h, v.clone());
        }
    }
    out
}

/// A request the server would not take on: too many in flight, or too slow.
async fn overloaded(method: Method, uri: Uri, err: BoxError) -> ApiError {
    let path = uri.path();
    if err.is::<tower::timeout::error::Elapsed>() {
        let why = format!("{method} {path} took longer than {}s", REQUEST_TIMEOUT.as_secs());
        ApiError::plain(StatusCode::SERVICE_UNAVAILABLE, why)
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        let why = format!("{MAX_IN_FLIGHT} requests in flight already: try again");
        ApiError::plain(StatusCode::SERVICE_UNAVAILABLE, why)
    } else {
        ApiError::plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{method} {path}: {err}"))
    }
}

async fn unknown(method: Method, uri: Uri) -> ApiError {
    ApiError::plain(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {}", uri.path()))
}

/// The API's routes (`/v1/...`, listed in the README "The API") over `ctl`,
/// with the API's limits and its one error shape.
pub fn router(ctl: Arc<ApiContext>) -> Router {
    // One budget for every route (a layer is applied to each route apart).
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    Router::new()
        .route("/v1/havips", get(list_havips).post(create_havip))
        .route("/v1/havips/{vip}", get(get_havip).delete(delete_havip))
        .route("/v1/havips/{vip}/members/{vnic}", put(associate).delete(disassociate))
        .route("/v1/havips/{vip}/eip", put(bind_eip).delete(unbind_eip))
        .route("/v1/vnics", get(list_vnics).post(put_vnic))
        .route("/v1/vnics/{name}", axum::routing::delete(delete_vnic))
        .route("/v1/subnets", get(list_subnets).post(put_subnet))
        .route("/v1/subnets/{name}", get(get_subnet).delete(delete_subnet))
        .route("/v1/subnets/{name}/mode", put(set_subnet_mode))
        .route("/v1/desired", get(get_desired))
        .route("/v1/apply", post(apply))
        .route("/v1/events", get(events))
        .route("/v1/status", get(status))
        .fallback(unknown)
        .with_state(ctl)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(in_flight))
                .layer(TimeoutLayer::new(REQUEST_TIMEOUT)),
        )
        .layer(middleware::from_fn(json_errors))
}

/// Binds the API socket (owner-only: the API changes the data plane; with
/// `group`, `[agent] api_group`, root:<group> 0660) and returns the server
/// to run.
pub fn bind(
    ctl: Arc<ApiContext>,
    path: &Path,
    group: Option<u32>,
) -> Result<impl Future<Output = Result<()>>> {
    use std::os::unix::fs::MetadataExt;

    /// `[agent] api_group`: the socket is root:<group> 0660, and the group can
    /// reach it: its directory, when the group cannot pass through it yet (the
    /// unit's RuntimeDirectory is 0700), becomes <owner>:<group> 0710 (pass,
    /// not list). A directory that is not the agent's own is never changed.
    fn open_to_group(path: &Path, gid: u32) -> Result<()> {
        let chgrp = |p: &Path| {
            std::os::unix::fs::chown(p, None, Some(gid)).with_context(|| {
                format!(
                    "giving {} to group {gid} ([agent] api_group): the agent needs CAP_CHOWN or to be a \
                     member of the group (SupplementaryGroups= in the unit)",
                    p.display()
                )
            })
        };
        chgrp(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("opening {} to group {gid}", path.display()))?;
        let passes =
            |m: &std::fs::Metadata| m.mode() & 0o001 != 0 || (m.gid() == gid && m.mode() & 0o010 != 0);
        let mut dirs = path.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dirs.next() {
            let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
            if !passes(&meta) {
                // SAFETY: geteuid has no preconditions and cannot fail.
                let me = unsafe { libc::geteuid() };
                if meta.uid() != me {
                    bail!(
                        "group {gid} ([agent] api_group) cannot reach {}: its directory {} (mode {:04o}, \
                         owner {}) is not the agent's to open",
                        path.display(),
                        dir.display(),
                        meta.mode() & 0o7777,
                        meta.uid()
                    );
                }
                chgrp(dir)?;
                let mode = (meta.mode() & 0o7700) | 0o010;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("opening {} to group {gid}", dir.display()))?;
            }
        }
        for dir in dirs {
            match std::fs::metadata(dir) {
                Ok(meta) if passes(&meta) => {}
                Ok(meta) => tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:04o}", meta.mode() & 0o7777),
                    "group {gid} ([agent] api_group) may not reach the API socket: this directory lets neither \
                     others nor the group through"
                ),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot check the API socket's path")
                }
            }
        }
        tracing::info!(socket = %path.display(), gid, "API socket open to group (0660)");
        Ok(())
    }

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another agent serves the API at {}", path.display());
        }
        // Left behind by an agent that did not stop cleanly.
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding the API socket {}", path.display()))?;
    match group {
        None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?,
        Some(gid) => open_to_group(path, gid)?,
    }
    let app = router(ctl);
    Ok(async move { serve(listener, app, limits()).await.context("serving the API") })
}

/// An [`ApiContext`] over a fresh redb store and [`FakeMaps`](crate::datapath::fake::FakeMaps),
/// for the northbound tests (no kernel, no root).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::{
        control::latency::Latencies,
        datapath::fake::FakeMaps,
        host::links::{Link, Links},
        store::redb::RedbStore,
    };

    /// The context of host `hv1`, its store in a directory named after `name`, its maps `maps`,
    /// and `links` present on it.
    pub fn context(name: &str, maps: FakeMaps, links: &[(&str, u32)]) -> Arc<ApiContext> {
        let dir = std::env::temp_dir().join(format!("havip-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = RedbStore::open(&dir.join("state.redb")).expect("a store in the temp dir");
        let links: Links = links
            .iter()
            .map(|(n, ifindex)| {
                ((*n).to_owned(), Link { ifindex: *ifindex, mac: [2, 0, 0, 0, 0, 1], up: true })
            })
            .collect();
        Arc::new(ApiContext {
            host: "hv1".into(),
            store: Arc::new(store),
            limits: Limits::default(),
            maps: Arc::new(Mutex::new(maps)),
            feed: Arc::new(Feed::default()),
            links: watch::channel(links).1,
            // No reconciler here: the FakeMaps hold what each test wrote, as if every revision
            // had been followed.
            reconciled: Arc::new(AtomicU64::new(u64::MAX)),
            verdicts: Arc::default(),
            latencies: Arc::new(Latencies::default()),
            sync: Arc::default(),
            started_ms: 0,
            cluster: None,
        })
    }

    /// One request through the router: (status, JSON body; null when there is none).
    pub async fn call(
        ctl: &Arc<ApiContext>,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        use tower::ServiceExt;
        let mut req = Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let resp = router(ctl.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::{call, context};
    use super::*;
    use crate::datapath::fake::FakeMaps;

    /// vpc1 with vnic-a here (hv1) and vnic-b on hv2, vpc2 alone, and a HAVIP in vpc1.
    async fn lab(name: &str) -> Arc<ApiContext> {
        let c = context(name, FakeMaps::new(16), &[("vnic-a", 7)]);
        for (sn, cidr) in [("vpc1", "198.18.1.0/24"), ("vpc2", "198.18.2.0/24")] {
            assert_eq!(call(&c, "POST", "/v1/subnets", Some(json!({"name": sn, "cidr": cidr}))).await.0, 200);
        }
        for (v, host, ip) in [("vnic-a", "hv1", "198.18.1.11"), ("vnic-b", "hv2", "198.18.1.12")] {
            let spec = json!({"name": v, "host": host, "instance": v, "subnet": "vpc1", "ip": ip,
                              "mac": format!("02:00:00:00:00:{}", &ip[ip.len() - 2..])});
            assert_eq!(call(&c, "POST", "/v1/vnics", Some(spec)).await.0, 200);
        }
        let h = json!({"vip": "198.18.1.50", "subnet": "vpc1", "members": ["vnic-a", "vnic-b"]});
        assert_eq!(call(&c, "POST", "/v1/havips", Some(h)).await.0, 201);
        c
    }

    #[tokio::test]
    async fn a_subnet_mode_is_set_shown_and_refused_by_name() {
        let c = lab("mode").await;
        // Unicast by default, everywhere it shows.
        let (status, one) = call(&c, "GET", "/v1/subnets/vpc1", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            (&one["mode"], &one["storm_pps"], &one["storm_burst"]),
            (&json!("unicast"), &json!(1000), &json!(100))
        );
        assert!(one.get("broadcast").is_none(), "no broadcast section for a unicast subnet: {one}");
        assert_eq!(call(&c, "GET", "/v1/havips/198.18.1.50", None).await.1["subnet_mode"], "unicast");

        // Refused, by name, changing nothing.
        let revision = c.store.desired().revision;
        for (path, body, status, rule, text) in [
            (
                "/v1/subnets/vpc1/mode",
                json!({"mode": "multicast"}),
                400,
                "well-formed",
                "refused by rule well-formed: subnet vpc1: subnet mode \"multicast\": must be unicast or broadcast-domain",
            ),
            (
                "/v1/subnets/vpc1/mode",
                json!({"mode": "broadcast-domain", "storm_pps": 0}),
                400,
                "storm-control",
                "refused by rule storm-control: subnet vpc1: storm_pps 0 is outside 1-1000000 (frames per second per vNIC)",
            ),
            (
                "/v1/subnets/vpc1/mode",
                json!({"mode": "broadcast-domain", "storm_burst": 100001}),
                400,
                "storm-control",
                "refused by rule storm-control: subnet vpc1: storm_burst 100001 is outside 1-100000 (frames per vNIC)",
            ),
            (
                "/v1/subnets/vpc9/mode",
                json!({"mode": "broadcast-domain"}),
                404,
                "subnet-exists",
                "refused by rule subnet-exists: subnet vpc9 does not exist",
            ),
        ] {
            let (got, body) = call(&c, "PUT", path, Some(body)).await;
            assert_eq!((got, body["rule"].as_str(), body["error"].as_str()), (status, Some(rule), Some(text)));
        }
        let (got, body) =
            call(&c, "PUT", "/v1/subnets/vpc1/mode", Some(json!({"mode": "unicast", "pps": 1}))).await;
        assert_eq!((got, &body["rule"]), (422, &json!(null)), "unknown fields: {body}");
        let (got, body) = call(
            &c,
            "POST",
            "/v1/subnets",
            Some(json!({"name": "vpc3", "cidr": "198.18.3.0/24", "mode": "l2"})),
        )
        .await;
        assert_eq!((got, body["rule"].as_str()), (400, Some("well-formed")), "{body}");
        assert_eq!(c.store.desired().revision, revision, "nothing changed");
        assert_eq!(call(&c, "GET", "/v1/subnets/vpc9", None).await.0, 404);
        assert_eq!(call(&c, "GET", "/v1/subnets/a%20b", None).await.0, 400);

        // Set: only that subnet changes; the answer is the subnet, with its broadcast section.
        let (got, view) = call(
            &c,
            "PUT",
            "/v1/subnets/vpc1/mode",
            Some(json!({"mode": "broadcast-domain", "storm_pps": 500, "storm_burst": 50})),
        )
        .await;
        assert_eq!(got, 200, "{view}");
        let view: SubnetView = serde_json::from_value(view).unwrap();
        assert_eq!((view.mode, view.storm_pps, view.storm_burst), (SubnetMode::BroadcastDomain, 500, 50));
        let b = view.broadcast.expect("a broadcast domain has its section");
        assert_eq!(b.hosts, ["hv1", "hv2"], "the hosts with vNICs in it");
        assert!(!b.programmed && b.flooded == 0, "no slot in the maps yet: {b:?}");
        assert_eq!(c.store.desired().revision, revision + 1);
        let state = c.store.desired().state;
        assert_eq!(state.subnet_settings.keys().collect::<Vec<_>>(), ["vpc1"]);
        let event = c.feed.follow().0.pop().unwrap();
        assert_eq!(event.kind, EventKind::Changed);
        assert!(
            event.detail.starts_with(
                "subnet vpc1 is broadcast-domain (storm control 500 frames/s per vNIC, burst 50)"
            ),
            "{}",
            event.detail
        );
        // Storm fields left out are kept; the same call again commits nothing.
        let (_, again) =
            call(&c, "PUT", "/v1/subnets/vpc1/mode", Some(json!({"mode": "broadcast-domain"}))).await;
        assert_eq!((&again["storm_pps"], &again["storm_burst"]), (&json!(500), &json!(50)));
        assert_eq!(c.store.desired().revision, revision + 1);

        // Shown in the list and in a HAVIP of the subnet.
        let (_, list) = call(&c, "GET", "/v1/subnets", None).await;
        let modes: Vec<(&str, &str)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap(), s["mode"].as_str().unwrap()))
            .collect();
        assert_eq!(modes, [("vpc1", "broadcast-domain"), ("vpc2", "unicast")]);
        assert_eq!(
            call(&c, "GET", "/v1/havips/198.18.1.50", None).await.1["subnet_mode"],
            "broadcast-domain"
        );

        // POST /v1/subnets keeps what it does not write; writes what it does.
        let (got, _) =
            call(&c, "POST", "/v1/subnets", Some(json!({"name": "vpc1", "cidr": "198.18.1.0/24"}))).await;
        assert_eq!(got, 200);
        assert_eq!(c.store.desired().state.subnet_settings("vpc1").storm.pps, 500);
        let new =
            json!({"name": "vpc3", "cidr": "198.18.3.0/24", "mode": "broadcast-domain", "storm_burst": 9});
        assert_eq!(call(&c, "POST", "/v1/subnets", Some(new)).await.0, 200);
        let (_, vpc3) = call(&c, "GET", "/v1/subnets/vpc3", None).await;
        assert_eq!(
            (&vpc3["mode"], &vpc3["storm_pps"], &vpc3["storm_burst"]),
            (&json!("broadcast-domain"), &json!(1000), &json!(9))
        );
        assert_eq!(vpc3["broadcast"]["hosts"], json!([]), "no vNICs in it yet: {vpc3}");

        // Back to unicast, and a deleted subnet takes its settings along.
        let (_, back) = call(&c, "PUT", "/v1/subnets/vpc1/mode", Some(json!({"mode": "unicast"}))).await;
        assert!(back.get("broadcast").is_none());
        assert_eq!(call(&c, "DELETE", "/v1/subnets/vpc3", None).await.0, 200);
        assert!(!c.store.desired().state.subnet_settings.contains_key("vpc3"));
        // Export and apply carry the settings.
        let (_, desired) = call(&c, "GET", "/v1/desired", None).await;
        assert_eq!(desired["state"]["subnet_settings"]["vpc1"]["storm"]["pps"], 500);
    }

    #[tokio::test]
    async fn a_broadcast_domain_shows_this_hosts_counters() {
        // What the reconciler writes for vpc1 at slot 3, and what the programs counted.
        let mut maps = FakeMaps::new(16).with_counted_subnet("198.18.1.0".parse().unwrap(), 24, 3);
        // vnic-a (ifindex 7) went over its storm limit 5 times.
        let flooder = havip_common::BcastVnic { subnet: 3, storm_drops: 5, ..Default::default() };
        maps.bcast_vnics.insert(7, flooder);
        let c = context("counters", maps, &[("vnic-a", 7)]);
        assert_eq!(
            call(&c, "POST", "/v1/subnets", Some(json!({"name": "vpc1", "cidr": "198.18.1.0/24"}))).await.0,
            200
        );
        let spec = json!({"name": "vnic-a", "host": "hv1", "instance": "vm-a", "subnet": "vpc1",
                          "ip": "198.18.1.11", "mac": "02:00:00:00:00:11"});
        assert_eq!(call(&c, "POST", "/v1/vnics", Some(spec)).await.0, 200);
        // A unicast subnet has no broadcast section, whatever the maps hold.
        assert!(call(&c, "GET", "/v1/subnets/vpc1", None).await.1.get("broadcast").is_none());
        let (_, view) =
            call(&c, "PUT", "/v1/subnets/vpc1/mode", Some(json!({"mode": "broadcast-domain"}))).await;
        let view: SubnetView = serde_json::from_value(view).unwrap();
        let b = view.broadcast.unwrap();
        assert_eq!(
            (
                b.programmed,
                b.flooded,
                b.local_copies,
                b.remote_copies,
                b.storm_drops,
                b.received,
                b.local_only,
                b.too_big,
                b.no_vtep
            ),
            (true, 10, 20, 30, 40, 50, 60, 70, 80)
        );
        assert_eq!(b.storm_drops_by_vnic, BTreeMap::from([("vnic-a".to_owned(), 5)]), "who floods");
        // Another subnet of the same network but another length is not vpc1's slot.
        let mut other = FakeMaps::new(16);
        other
            .bcast_prefixes
            .insert(crate::datapath::maps::bcast_prefix("198.18.1.0".parse().unwrap(), 25), 3);
        assert!(subnet_counters(&mut other, &"198.18.1.0/24".parse().unwrap()).is_none());
    }
}
