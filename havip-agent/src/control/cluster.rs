//! One host among many: keeps this host's data plane on the holder records
//! of the shared store (etcd), commits this host's claims there, tells the
//! peers directly (hints), and clears the holders of a host that is gone.
//!
//! ```text
//! claim in XDP (holder moved on the packet) ─► ring buffer ─► LocalClaim
//!   ─► hint to every peer (UDP, base = applied revision)
//!   ─► commit_holder(vip, holder, base) in etcd, retried until it commits or
//!      loses (a failed write never drops a claim) ─► won: ours; lost: the
//!      winner's record is programmed
//! etcd watch (never misses: resync on compaction) ─► Holder records
//!   ─► HolderBook (only newer revisions) ─► kernel (local ifindex, or the
//!      holder's VTEP: xdp_vnic encapsulates to it)
//! peer hint ─► HolderBook (only on the applied base) ─► kernel, at once
//! host lease expired ─► probed on the underlay (answered by its XDP) ─►
//!   N misses: down ─► its holders cleared (one host's clear commits)
//! ```

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Result;
use havip_api::EventKind;
use havip_common::{VipKey, VtepKey};
use havip_model::Holder;
use serde::Serialize;
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    time::{interval, Instant, MissedTickBehavior},
};
use tracing::{debug, info, warn};

use super::{
    feed::Feed,
    holders::{Decision, Hint, HolderBook},
    observer::Observer,
    peers::{self, PeerStats, MAX_HINT},
};
use crate::{
    datapath::maps::{HolderTarget, Maps},
    host::links::Links,
    store::{
        cluster::{ClusterEvent, CommitOutcome, EtcdCluster, HolderRecord, HostRecord},
        Store,
    },
    sync::lock,
};

/// A hint that no record confirmed this long after it came (while the
/// store answered all along) is dropped: its sender never committed it.
/// Far above a commit's worst case seen here (about 3 s across an etcd
/// leader election).
const HINT_TTL: Duration = Duration::from_secs(10);

/// Every this many probe ticks, the kernel's local holders are compared
/// with the book ([`Loop::scan_local_holders`]).
const SCAN_EVERY_TICKS: u32 = 5;

/// How this host talks to its peers on the underlay.
#[derive(Clone, Debug)]
pub struct PeerSettings {
    /// Time between liveness probes of a host whose lease expired.
    pub probe_interval: Duration,
    /// Probes in a row unanswered before such a host is down.
    pub probe_misses: u32,
    /// Whether claims are hinted to peers before their commit.
    pub hints: bool,
    /// A full resync from the store at least this often (a safety net
    /// under the watch).
    pub resync_every: Duration,
}

/// A claim this host's data plane accepted (the holder moved on the packet).
#[derive(Clone, Debug)]
pub struct LocalClaim {
    /// The VIP claimed.
    pub vip: Ipv4Addr,
    /// The new holder: one of this host's vNICs.
    pub holder: Holder,
}

/// A peer as this host sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerView {
    /// What it registered.
    pub record: HostRecord,
    /// `up` (registered), `suspect` (lease expired, answering probes or
    /// not yet missed enough), `down`.
    pub state: &'static str,
    /// Probes in a row unanswered.
    pub misses: u32,
}

/// The cluster's state for the API and /metrics.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// Whether the shared store answers.
    pub reachable: AtomicBool,
    /// Every other host, by id.
    pub peers: Mutex<BTreeMap<String, PeerView>>,
    /// Commits of this host's claims and clears: won.
    pub commits_won: AtomicU64,
    /// Commits lost to another host's (the winner was applied).
    pub commits_lost: AtomicU64,
    /// Commit attempts refused because this host's registration was gone
    /// (retried once it registers again).
    pub commits_fenced: AtomicU64,
    /// Commit attempts that failed (store unreachable); retried.
    pub commit_retries: AtomicU64,
    /// Records from the store applied to the data plane.
    pub records_applied: AtomicU64,
    /// Hints and probes.
    pub peer: PeerStats,
    /// The last store revision this host has seen.
    pub revision: AtomicU64,
}

/// Adds one to a counter of [`ClusterStatus`].
fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the cluster loop needs.
pub struct ClusterInputs {
    /// This host, as registered.
    pub me: HostRecord,
    /// The shared store's client (registered by the caller).
    pub cluster: EtcdCluster,
    /// How to talk to peers.
    pub settings: PeerSettings,
    /// The data plane's maps.
    pub maps: Arc<Mutex<dyn Maps>>,
    /// Desired state (vNIC names to interfaces).
    pub store: Arc<dyn Store>,
    /// This host's links (vNIC ifindexes).
    pub links: watch::Receiver<Links>,
    /// Operator events.
    pub feed: Arc<Feed>,
    /// Where observed holders are written (describe, metrics).
    pub observer: Arc<Observer>,
    /// Every host not down (this one too), for the reconciler's VTEPs.
    pub hosts: watch::Sender<BTreeMap<String, HostRecord>>,
    /// For the API and /metrics.
    pub status: Arc<ClusterStatus>,
}

struct Peer {
    record: HostRecord,
    registered: bool,
    down: bool,
    misses: u32,
    /// The nonce of the last probe, until answered.
    outstanding: Option<u64>,
    /// When its lease went (for the down event).
    left_at: Option<Instant>,
}

/// The next commit of a VIP, queued while one is in flight.
#[derive(Clone)]
struct Commit {
    holder: Option<Holder>,
    reason: &'static str,
}

struct Loop {
    io: ClusterInputs,
    book: HolderBook,
    peers: BTreeMap<String, Peer>,
    inflight: HashSet<Ipv4Addr>,
    queued: HashMap<Ipv4Addr, Commit>,
    /// Whether the first snapshot of the store has been applied.
    synced: bool,
    /// Local claims seen before it.
    unsynced: HashMap<Ipv4Addr, Commit>,
    /// Ticks since the last scan of the kernel's holders.
    since_scan: u32,
    /// Since when the store has answered without a break (None: it does not).
    reachable_since: Option<Instant>,
    /// Local holders the last scan found unknown to the book: (ifindex,
    /// epoch), by VIP.
    unknown_local: HashMap<Ipv4Addr, (u32, u64)>,
    resolved: mpsc::UnboundedSender<HolderRecord>,
    hint_socket: Arc<UdpSocket>,
    probe_socket: Arc<UdpSocket>,
    nonce: u64,
    /// Some VIP's kernel state could not be brought to its record (no slot
    /// yet, a VTEP or link unknown): converge again on the next tick.
    dirty: bool,
}

/// Runs the cluster loop for the agent's life, on `claims`: the claims this
/// host's data plane accepted (from the ring buffer).
pub async fn run(io: ClusterInputs, mut claims: mpsc::UnboundedReceiver<LocalClaim>) -> Result<()> {
    let hint_socket = Arc::new(peers::bind_hints(io.me.hint_port).await?);
    let probe_socket = Arc::new(peers::bind_probes().await?);
    let (resolved, mut resolved_rx) = mpsc::unbounded_channel();
    let mut events = io.cluster.follow(io.settings.resync_every);
    let mut tick = interval(io.settings.probe_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut l = Loop {
        io,
        book: HolderBook::default(),
        peers: BTreeMap::new(),
        inflight: HashSet::new(),
        queued: HashMap::new(),
        synced: false,
        unsynced: HashMap::new(),
        since_scan: 0,
        reachable_since: None,
        unknown_local: HashMap::new(),
        resolved,
        hint_socket: hint_socket.clone(),
        probe_socket: probe_socket.clone(),
        nonce: 0,
        dirty: false,
    };
    let mut hint_buf = vec![0u8; MAX_HINT + 1];
    let mut probe_buf = [0u8; 64];
    loop {
        tokio::select! {
            Some(claim) = claims.recv() => l.on_claim(claim),
            Some(rec) = resolved_rx.recv() => l.on_resolved(rec),
            r = hint_socket.recv_from(&mut hint_buf) => match r {
                Ok((n, from)) => l.on_hint(&hint_buf[..n], from),
                Err(e) => warn!(error = %e, "hint socket"),
            },
            r = probe_socket.recv_from(&mut probe_buf) => match r {
                Ok((n, _)) => l.on_probe_answer(&probe_buf[..n]),
                Err(e) => warn!(error = %e, "probe socket"),
            },
            Some(ev) = events.recv() => l.on_event(ev),
            _ = tick.tick() => l.on_tick().await,
        }
    }
}

impl Loop {
    fn on_claim(&mut self, claim: LocalClaim) {
        let commit = Commit { holder: Some(claim.holder), reason: "claim" };
        if !self.synced {
            // No base to commit against before the first snapshot: kept,
            // and committed on it (a claim made while the agent was away
            // is newer than any record it would otherwise be reset to).
            self.unsynced.insert(claim.vip, commit);
            return;
        }
        if self.inflight.contains(&claim.vip) {
            // Committed once the one in flight answers, on its result.
            self.hint(claim.vip, commit.holder.clone(), self.book.revision(claim.vip));
            self.queued.insert(claim.vip, commit);
            return;
        }
        self.start_commit(claim.vip, commit);
    }

    fn start_commit(&mut self, vip: Ipv4Addr, commit: Commit) {
        let base = self.book.commit_started(vip, commit.holder.clone());
        self.hint(vip, commit.holder.clone(), base);
        self.inflight.insert(vip);
        let cluster = self.io.cluster.clone();
        let resolved = self.resolved.clone();
        let status = self.io.status.clone();
        tokio::spawn(async move {
            let rec = commit_until_decided(&cluster, &status, vip, commit, base).await;
            let _ = resolved.send(rec);
        });
    }

    fn on_resolved(&mut self, rec: HolderRecord) {
        let vip = rec.vip;
        self.inflight.remove(&vip);
        let ours = rec.committed_by == self.io.me.id
            && self.book.pending(vip).is_some_and(|p| p.holder == rec.holder);
        count(if ours { &self.io.status.commits_won } else { &self.io.status.commits_lost });
        let decision = self.book.commit_resolved(rec.clone());
        if let Some(next) = self.queued.remove(&vip) {
            if next.holder != rec.holder {
                self.start_commit(vip, next);
                return;
            }
        }
        if !ours {
            info!(%vip, revision = rec.revision, winner = ?rec.holder.as_ref().map(|h| (&h.host, &h.vnic)),
                "claim lost in the shared store: the winner is applied");
        }
        // The book may hold a newer record than this answer (the watch
        // brought it while the commit was in flight): the kernel follows the
        // book's, and what this host shows (describe, events) must name it
        // too, never the older revision of the answer.
        let (revision, reason) =
            self.book.record(vip).map_or((rec.revision, rec.reason), |r| (r.revision, r.reason.clone()));
        self.apply(vip, decision, revision, &format!("record revision {revision} ({reason})"));
    }

    fn on_hint(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(hint) = peers::decode_hint(datagram) else {
            count(&self.io.status.peer.hints_ignored);
            debug!(%from, "not a hint: ignored");
            return;
        };
        if hint.from == self.io.me.id {
            return;
        }
        let (vip, base) = (hint.vip, hint.base);
        let why = format!("a hint from {} on record revision {base}, not yet committed", hint.from);
        let decision = self.book.on_hint(hint, Instant::now().into_std());
        match &decision {
            Decision::Program(_) => count(&self.io.status.peer.hints_applied),
            Decision::Keep => {}
            Decision::Ignore(why) => {
                count(&self.io.status.peer.hints_ignored);
                debug!(%vip, base, why, "hint ignored");
            }
        }
        self.apply(vip, decision, base, &why);
    }

    fn on_event(&mut self, ev: ClusterEvent) {
        match ev {
            ClusterEvent::Resynced(view) => {
                self.io.status.revision.store(view.revision, Ordering::Relaxed);
                let known: Vec<String> = self.peers.keys().cloned().collect();
                for id in known.iter().filter(|id| !view.hosts.contains_key(*id)) {
                    self.host_left(id);
                }
                for host in view.hosts.into_values() {
                    self.host_joined(host);
                }
                let decisions = self.book.resync(view.holders.into_values());
                for (vip, d) in decisions {
                    if self.unsynced.contains_key(&vip) {
                        continue;
                    }
                    let revision = self.book.revision(vip);
                    self.apply(vip, d, revision, &format!("record revision {revision} (resync)"));
                }
                self.synced = true;
                for (vip, commit) in std::mem::take(&mut self.unsynced) {
                    self.on_claim(LocalClaim { vip, holder: commit.holder.expect("a claim has a holder") });
                }
                self.reachable(true);
            }
            ClusterEvent::Holder(rec) => {
                self.io.status.revision.fetch_max(rec.revision, Ordering::Relaxed);
                let (vip, revision) = (rec.vip, rec.revision);
                let reason = rec.reason.clone();
                let d = self.book.on_record(rec);
                self.apply(vip, d, revision, &format!("record revision {revision} ({reason})"));
            }
            ClusterEvent::HostJoined(host) => self.host_joined(host),
            ClusterEvent::HostLeft { id, revision } => {
                self.io.status.revision.fetch_max(revision, Ordering::Relaxed);
                self.host_left(&id);
            }
            ClusterEvent::Reachable(up) => self.reachable(up),
        }
        self.publish_hosts();
    }

    fn reachable(&mut self, up: bool) {
        if up {
            self.reachable_since.get_or_insert_with(Instant::now);
        } else {
            self.reachable_since = None;
        }
        if self.io.status.reachable.swap(up, Ordering::Relaxed) == up {
            return;
        }
        let (kind, detail) = if up {
            (EventKind::ClusterReachable, "shared store reachable: caught up with it".to_owned())
        } else {
            (
                EventKind::ClusterUnreachable,
                "shared store unreachable: the data plane keeps forwarding on what it has; claims are \
                 committed when it returns"
                    .to_owned(),
            )
        };
        self.io.feed.publish(kind, None, None, detail);
    }

    fn host_joined(&mut self, record: HostRecord) {
        if record.id == self.io.me.id {
            return;
        }
        let id = record.id.clone();
        let was = self.peers.insert(
            id.clone(),
            Peer {
                record: record.clone(),
                registered: true,
                down: false,
                misses: 0,
                outstanding: None,
                left_at: None,
            },
        );
        match was {
            Some(p) if p.registered && p.record == record => {}
            Some(p) if p.down => {
                self.io.feed.publish(
                    EventKind::HostUp,
                    None,
                    None,
                    format!("host {id} is back ({})", record.underlay),
                );
                self.dirty = true;
            }
            Some(p) if p.registered => self.dirty = true,
            Some(p) => self.io.feed.publish(
                EventKind::HostUp,
                None,
                None,
                format!(
                    "host {id} registered again after {} ms suspect; its VIPs were kept (it answered the underlay probes)",
                    p.left_at.map_or(0, |t| t.elapsed().as_millis())
                ),
            ),
            None => {
                self.io.feed.publish(
                    EventKind::HostUp,
                    None,
                    None,
                    format!("host {id} registered, underlay {}", record.underlay),
                );
                self.dirty = true;
            }
        }
    }

    fn host_left(&mut self, id: &str) {
        let Some(p) = self.peers.get_mut(id) else { return };
        if !p.registered {
            return;
        }
        p.registered = false;
        p.misses = 0;
        p.outstanding = None;
        p.left_at = Some(Instant::now());
        self.io.feed.publish(
            EventKind::HostSuspect,
            None,
            None,
            format!(
                "host {id}: its lease expired; probing {} on the underlay (down after {} misses, {} ms apart)",
                p.record.underlay,
                self.io.settings.probe_misses,
                self.io.settings.probe_interval.as_millis()
            ),
        );
    }

    async fn on_tick(&mut self) {
        let mut gone = Vec::new();
        for (id, p) in self.peers.iter_mut().filter(|(_, p)| !p.registered && !p.down) {
            if p.outstanding.is_some() {
                p.misses += 1;
                if p.misses >= self.io.settings.probe_misses {
                    p.down = true;
                    gone.push(id.clone());
                    continue;
                }
            }
            self.nonce += 1;
            p.outstanding = Some(self.nonce);
            let to = SocketAddrV4::new(p.record.underlay, p.record.probe_port);
            count(&self.io.status.peer.probes_sent);
            if let Err(e) = self.probe_socket.try_send_to(&peers::probe_request(self.nonce), to.into()) {
                debug!(host = %id, error = %e, "probe not sent");
            }
        }
        for id in gone {
            self.host_down(&id);
        }
        if self.dirty {
            self.dirty = false;
            self.converge();
        }
        if let Some(since) = self.reachable_since.filter(|t| t.elapsed() >= HINT_TTL) {
            let cut = (Instant::now() - HINT_TTL).max(since);
            for (vip, d) in self.book.expire_hints(cut.into_std()) {
                warn!(%vip, "a hint no record confirmed within {} s: back to the record", HINT_TTL.as_secs());
                let revision = self.book.revision(vip);
                self.apply(
                    vip,
                    d,
                    revision,
                    &format!("back to record revision {revision}: a hint no record confirmed"),
                );
            }
        }
        self.since_scan += 1;
        if self.synced && self.since_scan >= SCAN_EVERY_TICKS {
            self.since_scan = 0;
            self.scan_local_holders();
            self.converge();
        }
        self.publish_hosts();
    }

    /// A local holder the book does not know came without a claim event
    /// (the verifier corrected a holder on this host, or an event was lost
    /// to a full ring buffer): committed like a claim, so the other hosts
    /// follow and the store stays the truth.
    fn scan_local_holders(&mut self) {
        let desired = self.io.store.desired().state;
        let names: HashMap<u32, String> = {
            let links = self.io.links.borrow();
            desired
                .vnics_on(&self.io.me.id)
                .filter_map(|v| Some((links.get(&v.ifname)?.ifindex, v.name.clone())))
                .collect()
        };
        let unknown = std::mem::take(&mut self.unknown_local);
        let mut still = HashMap::new();
        let mut found = Vec::new();
        {
            let maps = lock(&self.io.maps);
            for vip in desired.havips.keys() {
                if self.inflight.contains(vip) || self.book.pending(*vip).is_some() {
                    continue;
                }
                let Some(st) = maps.vip_slot(&VipKey::from(*vip)).and_then(|s| maps.vip_state(s).ok()) else {
                    continue;
                };
                let Some(vnic) = (st.holder_ifindex != 0).then(|| names.get(&st.holder_ifindex)).flatten()
                else {
                    continue;
                };
                let known = self
                    .book
                    .holder(*vip)
                    .flatten()
                    .is_some_and(|h| h.host == self.io.me.id && h.vnic == *vnic);
                if known {
                    continue;
                }
                // Only if it was there, unknown, one scan ago too: a claim
                // whose event is on its way is not one no event told of.
                let now = (st.holder_ifindex, st.epoch);
                if unknown.get(vip) == Some(&now) {
                    found.push(LocalClaim {
                        vip: *vip,
                        holder: self.io.observer.holder(vnic, st.holder_mac, st.epoch),
                    });
                } else {
                    still.insert(*vip, now);
                }
            }
        }
        self.unknown_local = still;
        for claim in found {
            info!(vip = %claim.vip, vnic = %claim.holder.vnic, "a local holder no claim told of: committed");
            self.on_claim(claim);
        }
    }

    fn on_probe_answer(&mut self, datagram: &[u8]) {
        let Some(nonce) = peers::probe_answer(datagram) else { return };
        if let Some(p) = self.peers.values_mut().find(|p| p.outstanding == Some(nonce)) {
            count(&self.io.status.peer.probes_answered);
            p.outstanding = None;
            p.misses = 0;
        }
    }

    /// A host whose lease expired stopped answering: every VIP it held is
    /// cleared here at once, and the clear committed (one host's wins).
    fn host_down(&mut self, id: &str) {
        let (underlay, after) = self
            .peers
            .get(id)
            .map(|p| (p.record.underlay, p.left_at.map_or(0, |t| t.elapsed().as_millis())))
            .unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
        self.io.feed.publish(
            EventKind::HostDown,
            None,
            None,
            format!(
                "host {id} ({underlay}) is down: its lease expired and {} probes went unanswered \
                 ({after} ms after the lease)",
                self.io.settings.probe_misses
            ),
        );
        let held: Vec<Ipv4Addr> = self.book.held_on(id).collect();
        for vip in held {
            let revision = self.book.revision(vip);
            let (epoch, _) = self.program(vip, None, false);
            self.io.observer.follow_record(
                vip,
                None,
                revision,
                epoch,
                &format!("host {id} is down (record revision {revision})"),
            );
            if !self.inflight.contains(&vip) {
                self.start_commit(vip, Commit { holder: None, reason: "host down" });
            }
        }
    }

    /// Sends a hint to every peer not down.
    fn hint(&self, vip: Ipv4Addr, holder: Option<Holder>, base: u64) {
        if !self.io.settings.hints {
            return;
        }
        let datagram = peers::encode_hint(&Hint { vip, holder, base, from: self.io.me.id.clone() });
        for p in self.peers.values().filter(|p| !p.down) {
            let to = SocketAddrV4::new(p.record.underlay, p.record.hint_port);
            match self.hint_socket.try_send_to(&datagram, to.into()) {
                Ok(_) => count(&self.io.status.peer.hints_sent),
                Err(e) => debug!(host = %p.record.id, error = %e, "hint not sent"),
            }
        }
    }

    fn apply(&mut self, vip: Ipv4Addr, decision: Decision, revision: u64, why: &str) {
        let Decision::Program(holder) = decision else { return };
        count(&self.io.status.records_applied);
        let (epoch, _) = self.program(vip, holder.as_ref(), false);
        self.io.observer.follow_record(vip, holder.as_ref(), revision, epoch, why);
    }

    /// Brings the kernel's holder of `vip` to `holder` (a CAS on the epoch:
    /// a claim arriving meanwhile wins, and comes back as a LocalClaim).
    /// Returns the kernel's holder epoch after it (0: not in the maps yet)
    /// and whether it wrote.
    /// `keep_local`: leave a local holder the kernel has (a claim whose
    /// event may be on its way; the scan commits it if none comes).
    fn program(&mut self, vip: Ipv4Addr, holder: Option<&Holder>, keep_local: bool) -> (u64, bool) {
        let target = match holder {
            None => Some(HolderTarget::None),
            Some(h) if h.host == self.io.me.id => {
                self.local_ifindex(&h.vnic).map(|ifindex| HolderTarget::Local { ifindex, mac: h.mac })
            }
            // The next hop is filled in by `write`, under the same lock.
            Some(h) => self.peers.get(&h.host).filter(|p| !p.down).map(|p| HolderTarget::Remote {
                vtep: p.record.underlay,
                mac: h.mac,
                next_hop: [0; 6],
            }),
        };
        let Some(target) = target else {
            // A vNIC not here yet, a host not registered yet: no holder
            // until it is (never a stale one), converged again later.
            self.dirty = true;
            return self.write(vip, HolderTarget::None, keep_local);
        };
        self.write(vip, target, keep_local)
    }

    fn write(&mut self, vip: Ipv4Addr, mut target: HolderTarget, keep_local: bool) -> (u64, bool) {
        let mut maps = lock(&self.io.maps);
        if let HolderTarget::Remote { vtep, next_hop, .. } = &mut target {
            // The next hop as the reconciler last wrote it (zero if not yet:
            // the kernel then looks it up per packet); a change is caught by
            // the periodic converge.
            *next_hop = maps.vteps().get(&VtepKey::from(*vtep)).map_or([0; 6], |v| v.next_hop_mac);
        }
        let Some(slot) = maps.vip_slot(&VipKey::from(vip)) else {
            self.dirty = true;
            return (0, false);
        };
        let result = maps.vip_state(slot).and_then(|st| {
            let now = HolderTarget::of(&st);
            if now == target || (keep_local && matches!(now, HolderTarget::Local { .. })) {
                return Ok((st.epoch, false));
            }
            Ok(if maps.write_holder(slot, st.epoch, target)? {
                (st.epoch + 1, true)
            } else {
                (st.epoch, false)
            })
        });
        result.unwrap_or_else(|e| {
            warn!(%vip, error = %format!("{e:#}"), "writing the holder");
            self.dirty = true;
            (0, false)
        })
    }

    /// Every VIP's kernel holder brought to the book's, where they differ
    /// (a VIP or link that came late, a next hop that changed).
    fn converge(&mut self) {
        let vips: Vec<(Ipv4Addr, Option<Holder>)> = {
            let book = &self.book;
            self.io
                .store
                .desired()
                .state
                .havips
                .keys()
                .filter(|vip| book.pending(**vip).is_none())
                .filter_map(|vip| Some((*vip, book.holder(*vip)?.cloned())))
                .collect()
        };
        for (vip, holder) in vips {
            let revision = self.book.revision(vip);
            let (epoch, wrote) = self.program(vip, holder.as_ref(), true);
            if !wrote {
                continue;
            }
            self.io.observer.follow_record(
                vip,
                holder.as_ref(),
                revision,
                epoch,
                &format!("record revision {revision}"),
            );
        }
    }

    fn local_ifindex(&self, vnic: &str) -> Option<u32> {
        let desired = self.io.store.desired().state;
        let ifname = &desired.vnics.get(vnic)?.ifname;
        self.io.links.borrow().get(ifname).filter(|l| l.up).map(|l| l.ifindex)
    }

    fn publish_hosts(&self) {
        // Before the first snapshot, the peers are not known: publishing
        // none would take every VTEP out of the maps.
        if !self.synced {
            return;
        }
        let mut hosts: BTreeMap<String, HostRecord> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.down)
            .map(|(id, p)| (id.clone(), p.record.clone()))
            .collect();
        hosts.insert(self.io.me.id.clone(), self.io.me.clone());
        self.io.hosts.send_if_modified(|h| {
            let changed = *h != hosts;
            *h = hosts;
            changed
        });
        let views = self
            .peers
            .iter()
            .map(|(id, p)| {
                let state = if p.down {
                    "down"
                } else if p.registered {
                    "up"
                } else {
                    "suspect"
                };
                (id.clone(), PeerView { record: p.record.clone(), state, misses: p.misses })
            })
            .collect();
        *lock(&self.io.status.peers) = views;
    }
}

/// Commits `commit` against `base` until the store decides: the record
/// written (won) or the one that beat it (lost). A store that fails or a
/// registration that is gone never drops the claim: retried with backoff.
async fn commit_until_decided(
    cluster: &EtcdCluster,
    status: &ClusterStatus,
    vip: Ipv4Addr,
    commit: Commit,
    base: u64,
) -> HolderRecord {
    const FIRST: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_secs(1);
    let mut backoff = FIRST;
    let mut registered = cluster.registration();
    loop {
        match cluster.commit_holder(vip, commit.holder.clone(), base, commit.reason).await {
            Ok(CommitOutcome::Committed(rec) | CommitOutcome::Lost(rec)) => return rec,
            // Unreachable, our lease cannot be known alive: a retry, not a fence.
            Ok(CommitOutcome::Fenced) if !status.reachable.load(Ordering::Relaxed) => {
                count(&status.commit_retries);
                let _ = tokio::time::timeout(MAX, registered.changed()).await;
            }
            Ok(CommitOutcome::Fenced) => {
                count(&status.commits_fenced);
                warn!(%vip, "claim not committed: this host's registration is gone; retried once it registers again");
                let _ = tokio::time::timeout(MAX, registered.changed()).await;
            }
            Err(e) => {
                count(&status.commit_retries);
                if backoff == FIRST {
                    warn!(%vip, error = %format!("{e:#}"), "committing a claim failed; retried with backoff");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX);
            }
        }
    }
}
