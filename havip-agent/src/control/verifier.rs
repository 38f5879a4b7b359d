//! Holder verification: the platform does not take a holder on trust.
//!
//! Each round (`[verification] interval_ms`, and right after a claim) the
//! verifier asks the holder of every HAVIP on this host whether it still has
//! the VIP — an ARP probe sent into its vNIC from the host side
//! ([`crate::host::arp`]); the guest's reply is a claim, which the kernel
//! counts as the holder's refresh. A holder that misses `misses` probes in a
//! row is *unresponsive*: every member is then asked each round, and the
//! first that answers becomes holder (its reply is a claim). A HAVIP without
//! a holder is searched the same way, so a guest that only answers requests
//! (an address added with no gratuitous ARP) becomes holder within a round.
//!
//! It also reads the VRRP adverts the data plane records per member:
//! - a member advertising the VIP as master while the holder advertises
//!   nothing, for [`VRRP_LEAD_ROUNDS`] rounds, gets the VIP (the real master
//!   after a one-way VRRP loss that never re-announced);
//! - two members advertising at once are a split brain: the HAVIP is
//!   *contested*, and its policy decides (`last-claim-wins`: reported only;
//!   `vrrp-priority`: the higher priority gets the VIP; `keep-holder`: the
//!   holder from before the contest keeps it while it advertises).
//!
//! Holder writes go through [`Maps::write_holder`], a compare-and-swap on the
//! epoch in the kernel, so a claim arriving meanwhile always wins. Every
//! correction is an event that says why. The core ([`Verifier::round`]) is
//! pure over the maps and returns the probes to send, so replays test it.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use havip_api::EventKind;
use havip_common::{MemberKey, VipKey};
use havip_model::{state::now_ms, DesiredState, SplitBrainPolicy};
use serde::Deserialize;
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use super::{
    feed::Feed,
    observer::{Observer, SyncMode},
};
use crate::{
    clock::monotonic_ns,
    datapath::maps::{HolderTarget, Maps},
    host::{arp::ArpSender, links::Links},
    store::Store,
    sync::lock,
};

/// `[verification]` in the agent's configuration.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySettings {
    /// Whether holders are verified at all.
    pub enabled: bool,
    /// Time between rounds, ms.
    pub interval_ms: u64,
    /// Probes a holder may miss in a row before it is unresponsive.
    pub misses: u32,
    /// A VRRP advert older than this no longer counts, ms (a few advert
    /// intervals: keepalived's default is 1 s, the lab's 0.1 s).
    pub vrrp_window_ms: u64,
}

impl Default for VerifySettings {
    /// Ends a wrong holder within about a second: 2 missed probes 250 ms
    /// apart, then one round asking every member.
    fn default() -> Self {
        Self { enabled: true, interval_ms: 250, misses: 2, vrrp_window_ms: 1000 }
    }
}

impl VerifySettings {
    /// The time between rounds.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(10))
    }
}

/// Rounds a member must advertise the VIP alone (the holder silent) before
/// it gets the VIP.
pub const VRRP_LEAD_ROUNDS: u32 = 3;

/// Moves of a VIP between members within [`CONTEST_WINDOW_NS`] that make it
/// contested like two VRRP masters: two round trips (A→B→A→B→A). One
/// failover and its preempt-back are a single round trip, never a contest.
const CONTEST_CLAIMS: usize = 4;
const CONTEST_WINDOW_NS: u64 = 5_000_000_000;

/// Holder changes within [`FLAP_WINDOW_NS`] that make a flap.
const FLAP_CHANGES: usize = 4;
const FLAP_WINDOW_NS: u64 = 10_000_000_000;

/// An ARP probe to send: into the host end `ifindex` (MAC `host_mac`), to
/// the guest `guest_mac`, asking for `vip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The host end of the member's vNIC: where the probe is sent.
    pub ifindex: u32,
    /// The host end's own MAC: the probe's Ethernet source.
    pub host_mac: [u8; 6],
    /// The member's guest MAC: the probe's Ethernet destination.
    pub guest_mac: [u8; 6],
    /// The VIP asked for (ARP target).
    pub vip: Ipv4Addr,
}

/// Where the verification of one HAVIP stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// The holder answers.
    #[default]
    Ok,
    /// The holder missed too many probes: every member is asked.
    Unresponsive,
    /// No holder: every member is asked.
    Searching,
}

impl Phase {
    /// As the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unresponsive => "unresponsive",
            Self::Searching => "searching",
        }
    }
}

/// What the verifier knows of one HAVIP (shown by `describe` and /metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Where the verification stands.
    pub phase: Phase,
    /// Probes the holder missed in a row.
    pub misses: u32,
    /// Probes sent for this HAVIP since the agent started (one per member asked per round).
    pub probes_sent: u64,
    /// Rounds whose probes were answered (a claim came after they were sent), since the agent started.
    pub rounds_answered: u64,
    /// Corrections by reason (`probe`, `vrrp`, `split-brain`).
    pub corrections: BTreeMap<String, u64>,
    /// The split brain, if it is contested now.
    pub contested: Option<Contest>,
}

/// Two or more members holding a VIP at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contest {
    /// The members (vNIC, advertised VRRP priority).
    pub members: Vec<(String, Option<u8>)>,
    /// Since when, Unix ms.
    pub since_ms: u64,
}

/// Per-HAVIP memory between rounds.
#[derive(Default)]
struct Track {
    verdict: Verdict,
    /// When the last round's probes were sent (CLOCK_MONOTONIC ns).
    probed_at: Option<u64>,
    /// The holder (ifindex) and epoch seen last round.
    seen: Option<(u32, u64)>,
    /// A member advertising alone while the holder is silent, for how
    /// many rounds, and since when (monotonic ns).
    vrrp_lead: Option<(u32, u32, u64)>,
    /// When the holder first missed a probe in the current run of misses.
    first_miss_ns: Option<u64>,
    /// Corrections this round (ns since the first sign), for the caller.
    corrected_ns: Vec<u64>,
    /// The holder when the contest began (keep-holder).
    holder_before_contest: Option<u32>,
    /// Recent holder changes: (monotonic ns, previous holder ifindex, new
    /// holder ifindex; 0: none), to see flapping and claim contests.
    changes: VecDeque<(u64, u32, u32)>,
    flapping: bool,
}

/// A local member of a HAVIP: its name, the host end's ifindex and MAC, the
/// guest MAC.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    ifindex: u32,
    host_mac: [u8; 6],
    guest_mac: [u8; 6],
}

/// What a round asks of the caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// The probes to send now.
    pub probes: Vec<Probe>,
    /// Whether the verifier moved a holder itself (no claim event tells the
    /// observer: it must read the maps).
    pub repointed: bool,
    /// For each correction this round: ns from the first sign of a wrong
    /// holder (its first missed probe, or the first round a rival
    /// advertised alone) to the correction.
    pub corrections_ns: Vec<u64>,
}

/// The holder verification of this host's HAVIPs.
pub struct Verifier {
    host: String,
    settings: VerifySettings,
    tracks: BTreeMap<Ipv4Addr, Track>,
}

impl Verifier {
    /// A verifier for host `host`'s vNICs.
    pub fn new(host: &str, settings: VerifySettings) -> Self {
        Self { host: host.to_owned(), settings, tracks: BTreeMap::new() }
    }

    /// The verdicts, by VIP.
    pub fn verdicts(&self) -> BTreeMap<Ipv4Addr, Verdict> {
        self.tracks.iter().map(|(vip, t)| (*vip, t.verdict.clone())).collect()
    }

    /// One round at `now_ns` (CLOCK_MONOTONIC): judges last round's probes,
    /// reads the VRRP records, corrects what must be, and returns the probes
    /// to send now.
    pub fn round(
        &mut self,
        now_ns: u64,
        desired: &DesiredState,
        links: &Links,
        maps: &mut dyn Maps,
        feed: &Feed,
    ) -> Result<Round> {
        self.tracks.retain(|vip, _| desired.havips.contains_key(vip));
        let mut out = Round::default();
        if !self.settings.enabled {
            return Ok(out);
        }
        let vrrp = maps.vrrp().entries()?;
        for h in desired.havips.values() {
            let members: Vec<Member> = h
                .members
                .iter()
                .filter_map(|m| {
                    let v = desired.vnics.get(m).filter(|v| v.host == self.host)?;
                    let l = links.get(&v.ifname).filter(|l| l.up)?;
                    Some(Member { name: m.clone(), ifindex: l.ifindex, host_mac: l.mac, guest_mac: v.mac })
                })
                .collect();
            let key = VipKey::from(h.vip);
            let Some(slot) = maps.vip_slot(&key) else { continue };
            // Held on another host: verified there, by the holder's own
            // host (its probes reach the holder; a correction here would
            // only fight the shared store's record).
            if members.is_empty() || maps.vip_state(slot)?.remote_holder().is_some() {
                self.tracks.remove(&h.vip);
                continue;
            }
            let track = self.tracks.entry(h.vip).or_default();
            let ctx = Ctx { vip: h.vip, slot, now_ns, members: &members, settings: self.settings, feed };
            let adverts: BTreeMap<u32, (u8, u64)> = members
                .iter()
                .filter_map(|m| {
                    let seen = vrrp.get(&MemberKey { vip: key.addr, ifindex: m.ifindex })?;
                    let fresh =
                        now_ns.saturating_sub(seen.last_ns) < self.settings.vrrp_window_ms * 1_000_000;
                    fresh.then_some((m.ifindex, (seen.priority, seen.last_ns)))
                })
                .collect();
            judge_probes(&ctx, track, maps)?;
            out.repointed |= settle(&ctx, track, maps, &adverts, h.settings.split_brain)?;
            out.probes.extend(next_probes(&ctx, track, maps)?);
            out.corrections_ns.append(&mut track.corrected_ns);
        }
        Ok(out)
    }
}

/// What a round needs to judge one HAVIP.
struct Ctx<'a> {
    vip: Ipv4Addr,
    slot: u32,
    now_ns: u64,
    members: &'a [Member],
    settings: VerifySettings,
    feed: &'a Feed,
}

impl Ctx<'_> {
    fn name(&self, ifindex: u32) -> String {
        self.members
            .iter()
            .find(|m| m.ifindex == ifindex)
            .map_or_else(|| format!("ifindex {ifindex}"), |m| m.name.clone())
    }

    fn member(&self, ifindex: u32) -> Option<&Member> {
        self.members.iter().find(|m| m.ifindex == ifindex)
    }

    fn publish(&self, kind: EventKind, vnic: Option<&str>, detail: String) {
        self.feed.publish(kind, Some(self.vip), vnic, detail);
    }
}

/// Were last round's probes answered? A guest's answer is a claim: the
/// holder's refreshes `last_claim_ns`, another member's moves the holder.
fn judge_probes(ctx: &Ctx<'_>, t: &mut Track, maps: &mut dyn Maps) -> Result<()> {
    let st = maps.vip_state(ctx.slot)?;
    let holder = (st.holder_ifindex != 0).then_some(st.holder_ifindex);
    let moved = t.seen.is_some_and(|(h, e)| (h, e) != (st.holder_ifindex, st.epoch));
    if let Some((before, _)) = t.seen.filter(|_| moved) {
        t.changes.push_back((ctx.now_ns, before, st.holder_ifindex));
    }
    if let Some(at) = t.probed_at {
        let answered = st.last_claim_ns >= at;
        if answered {
            t.verdict.rounds_answered += 1;
        }
        match holder {
            // The holder had stopped answering and another member took the
            // VIP while every member was asked (by answering, or by a claim
            // of its own): a correction worth saying so.
            Some(h) if moved && t.verdict.phase == Phase::Unresponsive && st.since_ns >= at => {
                let why = format!(
                    "the holder missed {} probes in a row; {} answered",
                    t.verdict.misses,
                    ctx.name(h)
                );
                let first_sign = t.first_miss_ns.unwrap_or(at);
                correction(ctx, t, "probe", h, first_sign, why);
                t.verdict.misses = 0;
                t.verdict.phase = Phase::Ok;
            }
            Some(_) if answered => {
                t.verdict.misses = 0;
                t.first_miss_ns = None;
                t.verdict.phase = Phase::Ok;
            }
            Some(h) if !moved => {
                t.verdict.misses += 1;
                t.first_miss_ns.get_or_insert(at);
                if t.verdict.misses >= ctx.settings.misses && t.verdict.phase != Phase::Unresponsive {
                    t.verdict.phase = Phase::Unresponsive;
                    ctx.publish(
                        EventKind::HolderUnresponsive,
                        Some(&ctx.name(h)),
                        format!(
                            "{} holds {} but missed {} probes in a row: asking every member",
                            ctx.name(h),
                            ctx.vip,
                            t.verdict.misses
                        ),
                    );
                }
            }
            // A claim of its own moved it: a new holder, judged afresh.
            Some(_) => {
                t.verdict.misses = 0;
                t.first_miss_ns = None;
                t.verdict.phase = Phase::Ok;
            }
            None => t.verdict.phase = Phase::Searching,
        }
    } else if holder.is_none() {
        t.verdict.phase = Phase::Searching;
    }
    while t.changes.front().is_some_and(|c| ctx.now_ns.saturating_sub(c.0) > FLAP_WINDOW_NS) {
        t.changes.pop_front();
    }
    if t.changes.len() >= FLAP_CHANGES && !t.flapping {
        t.flapping = true;
        ctx.publish(
            EventKind::HolderFlapping,
            None,
            format!(
                "{} changed holder {} times in {} s",
                ctx.vip,
                t.changes.len(),
                FLAP_WINDOW_NS / 1_000_000_000
            ),
        );
    } else if t.changes.is_empty() {
        t.flapping = false;
    }
    let st = maps.vip_state(ctx.slot)?;
    t.seen = Some((st.holder_ifindex, st.epoch));
    Ok(())
}

/// Reads the members' VRRP adverts (`adverts`: ifindex -> priority, when;
/// fresh ones only): a split brain, or a silent holder while another member
/// advertises, is settled by policy. True if it moved the holder.
fn settle(
    ctx: &Ctx<'_>,
    t: &mut Track,
    maps: &mut dyn Maps,
    adverts: &BTreeMap<u32, (u8, u64)>,
    policy: SplitBrainPolicy,
) -> Result<bool> {
    let st = maps.vip_state(ctx.slot)?;
    let holder = (st.holder_ifindex != 0).then_some(st.holder_ifindex);
    if let Some((contenders, how, first_holder)) = contest(ctx, t, adverts) {
        if t.verdict.contested.is_none() {
            let who: Vec<(String, Option<u8>)> =
                contenders.iter().map(|i| (ctx.name(*i), adverts.get(i).map(|(p, _)| *p))).collect();
            let names: Vec<String> = who
                .iter()
                .map(|(n, p)| match p {
                    Some(p) => format!("{n} (priority {p})"),
                    None => n.clone(),
                })
                .collect();
            ctx.publish(
                EventKind::Contested,
                None,
                format!("{} is contested: {} {how}; policy {policy}", ctx.vip, names.join(" and ")),
            );
            t.verdict.contested = Some(Contest { members: who, since_ms: now_ms() });
            t.holder_before_contest = first_holder.or(holder);
        }
        let want = match policy {
            SplitBrainPolicy::LastClaimWins => None,
            SplitBrainPolicy::VrrpPriority => {
                // The highest advertised priority; ties to the lowest
                // ifindex, stably. Nobody advertising: nothing to go by.
                adverts.iter().max_by_key(|(i, (p, _))| (*p, std::cmp::Reverse(**i))).map(|(i, _)| *i)
            }
            SplitBrainPolicy::KeepHolder => t.holder_before_contest.filter(|h| contenders.contains(h)),
        };
        t.vrrp_lead = None;
        if let Some(w) = want.filter(|w| holder != Some(*w)) {
            let why = format!("split brain, policy {policy}: {} gets it", ctx.name(w));
            return repoint(ctx, t, maps, w, "split-brain", ctx.now_ns, why);
        }
        return Ok(false);
    }
    if t.verdict.contested.take().is_some() {
        tracing::info!(vip = %ctx.vip, "no longer contested");
        t.holder_before_contest = None;
    }
    // One member advertises, the holder does not: after a few rounds, the
    // advertiser is the master the guests agreed on.
    let lead = adverts.keys().next().copied().filter(|a| Some(*a) != holder);
    t.vrrp_lead = match (lead, t.vrrp_lead) {
        (Some(a), Some((b, n, since))) if a == b => Some((a, n + 1, since)),
        (Some(a), _) => Some((a, 1, ctx.now_ns)),
        (None, _) => None,
    };
    if let Some((a, n, since)) = t.vrrp_lead {
        if n >= VRRP_LEAD_ROUNDS {
            let holder_name =
                holder.map_or_else(|| "no holder".to_owned(), |h| format!("holder {}", ctx.name(h)));
            let why = format!(
                "{} advertises {} in VRRP as master for {n} rounds while {holder_name} advertises nothing",
                ctx.name(a),
                ctx.vip
            );
            t.vrrp_lead = None;
            return repoint(ctx, t, maps, a, "vrrp", since, why);
        }
    }
    Ok(false)
}

/// A split brain, if there is one: the contending members (ifindexes), how
/// it shows, and who held the VIP before it began (if not whoever holds it
/// now). Two members advertising
/// VRRP as master at once; or claims moving the VIP back and forth between
/// members ([`CONTEST_CLAIMS`] moves within [`CONTEST_WINDOW_NS`]).
fn contest(
    ctx: &Ctx<'_>,
    t: &Track,
    adverts: &BTreeMap<u32, (u8, u64)>,
) -> Option<(Vec<u32>, &'static str, Option<u32>)> {
    if adverts.len() >= 2 {
        // Who held it before: whoever holds it as the split is seen.
        return Some((adverts.keys().copied().collect(), "advertise VRRP as master at once", None));
    }
    // Moves from one member to another: gaining or losing a holder is not
    // a contest.
    let recent: Vec<&(u64, u32, u32)> = t
        .changes
        .iter()
        .filter(|c| c.1 != 0 && c.2 != 0 && ctx.now_ns.saturating_sub(c.0) <= CONTEST_WINDOW_NS)
        .collect();
    let members: BTreeSet<u32> = recent.iter().map(|c| c.2).filter(|i| *i != 0).collect();
    if recent.len() >= CONTEST_CLAIMS && members.len() >= 2 {
        // Who held it before: the holder the first of these claims replaced.
        let before = recent.first().map(|c| c.1).filter(|h| *h != 0);
        return Some((members.into_iter().collect(), "keep claiming it in turn", before));
    }
    None
}

/// Moves the VIP to member `to` (compare-and-swap on the epoch just read:
/// a claim meanwhile wins, and the next round judges again). True if moved.
fn repoint(
    ctx: &Ctx<'_>,
    t: &mut Track,
    maps: &mut dyn Maps,
    to: u32,
    reason: &str,
    first_sign_ns: u64,
    why: String,
) -> Result<bool> {
    let Some(m) = ctx.member(to) else { return Ok(false) };
    let st = maps.vip_state(ctx.slot)?;
    let target = HolderTarget::Local { ifindex: m.ifindex, mac: m.guest_mac };
    if !maps.write_holder(ctx.slot, st.epoch, target)? {
        return Ok(false);
    }
    t.seen = Some((m.ifindex, st.epoch + 1));
    t.changes.push_back((ctx.now_ns, st.holder_ifindex, m.ifindex));
    t.verdict.misses = 0;
    t.verdict.phase = Phase::Ok;
    correction(ctx, t, reason, to, first_sign_ns, why);
    Ok(true)
}

fn correction(ctx: &Ctx<'_>, t: &mut Track, reason: &str, to: u32, first_sign_ns: u64, why: String) {
    *t.verdict.corrections.entry(reason.to_owned()).or_default() += 1;
    t.corrected_ns.push(ctx.now_ns.saturating_sub(first_sign_ns));
    t.first_miss_ns = None;
    let name = ctx.name(to);
    ctx.publish(EventKind::HolderCorrected, Some(&name), format!("{} re-pointed to {name}: {why}", ctx.vip));
}

/// This round's probes: the holder, or every member when there is none or
/// it is unresponsive.
fn next_probes(ctx: &Ctx<'_>, t: &mut Track, maps: &mut dyn Maps) -> Result<Vec<Probe>> {
    let st = maps.vip_state(ctx.slot)?;
    let ask: Vec<&Member> = match ctx.member(st.holder_ifindex) {
        Some(h) if t.verdict.phase == Phase::Ok => vec![h],
        // A holder on no local member (another host's, or a vNIC gone):
        // not ours to ask.
        None if st.holder_ifindex != 0 => Vec::new(),
        _ => ctx.members.iter().collect(),
    };
    t.probed_at = (!ask.is_empty()).then_some(ctx.now_ns);
    t.verdict.probes_sent += ask.len() as u64;
    let vip = ctx.vip;
    Ok(ask
        .into_iter()
        .map(|m| Probe { ifindex: m.ifindex, host_mac: m.host_mac, guest_mac: m.guest_mac, vip })
        .collect())
}

/// What the verification task works with.
pub struct VerifierInputs {
    /// The desired state (members, settings) and the observed holders.
    pub store: Arc<dyn Store>,
    /// The maps: holders are read and corrected (`xdp_holder_write`), VRRP records read.
    pub maps: Arc<Mutex<dyn Maps>>,
    /// The host's links: the vNICs probes go into.
    pub links: watch::Receiver<Links>,
    /// Where corrections, contests and flaps are reported.
    pub feed: Arc<Feed>,
    /// Reads the maps after the verifier moved a holder itself.
    pub observer: Arc<Observer>,
    /// The verdicts of the last round, for the API and /metrics.
    pub verdicts: Arc<Mutex<BTreeMap<Ipv4Addr, Verdict>>>,
    /// Wakes a round at once (a claim came: verify the new holder now).
    pub nudge: Arc<Notify>,
}

/// Runs a round every interval, and whenever nudged, and sends its probes;
/// until an error. Does nothing (forever) when verification is off.
pub async fn run(mut verifier: Verifier, io: VerifierInputs) -> Result<()> {
    if !verifier.settings.enabled {
        return futures::future::pending().await;
    }
    let arp =
        ArpSender::open().context("holder verification ([verification] enabled = false turns it off)")?;
    let mut tick = tokio::time::interval(verifier.settings.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = io.nudge.notified() => {}
        }
        let desired = io.store.desired().state;
        let links = io.links.borrow().clone();
        let round = {
            let mut maps = lock(&io.maps);
            let round = verifier.round(monotonic_ns(), &desired, &links, &mut *maps, &io.feed);
            match round {
                Ok(r) if r.repointed => {
                    if let Err(e) = io.observer.sync(&mut *maps, SyncMode::Running) {
                        warn!(error = %e, "recording a corrected holder");
                    }
                    r
                }
                Ok(r) => r,
                // The next round tries again; the data plane keeps going.
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "holder verification round failed");
                    Round::default()
                }
            }
        };
        *lock(&io.verdicts) = verifier.verdicts();
        for ns in &round.corrections_ns {
            io.observer.latencies().correction(*ns);
        }
        for p in &round.probes {
            if let Err(e) = arp.probe(p.ifindex, p.host_mac, p.guest_mac, p.vip.octets()) {
                // The vNIC went away meanwhile: the reconciler will say so.
                debug!(vip = %p.vip, ifindex = p.ifindex, error = %format!("{e:#}"), "ARP probe not sent");
            }
        }
    }
}

/// Replays: the maps as the kernel leaves them after each round's probes
/// (answered or not), the verdicts, probes and events that follow.
#[cfg(test)]
mod tests {
    use havip_common::{VipRef, VipState, VrrpSeen};

    use super::*;
    use crate::{datapath::fake::FakeMaps, host::links::Link};

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
    const MAC_A: [u8; 6] = [2, 0, 0xc6, 0x12, 1, 0x0b];
    const MAC_B: [u8; 6] = [2, 0, 0xc6, 0x12, 1, 0x0c];
    const MS: u64 = 1_000_000;

    struct World {
        v: Verifier,
        desired: DesiredState,
        links: Links,
        maps: FakeMaps,
        feed: Feed,
        now: u64,
    }

    fn world(policy: &str) -> World {
        let desired = super::super::replay_state(&format!("split_brain = \"{policy}\""), "");
        let link = |ifindex| Link { ifindex, mac: [0xaa, 0, 0, 0, 0, ifindex as u8], up: true };
        let mut maps = FakeMaps::new(4);
        maps.vips.insert(VipKey::from(VIP), VipRef { slot: 0 });
        maps.vip_state.insert(0, VipState { vip: VIP.octets(), ..Default::default() });
        World {
            v: Verifier::new("hv1", VerifySettings::default()),
            desired,
            links: Links::from([("vnic-a".into(), link(7)), ("vnic-b".into(), link(8))]),
            maps,
            feed: Feed::default(),
            now: 1_000 * MS,
        }
    }

    impl World {
        /// A round 250 ms after the last; the probes' target ifindexes.
        fn round(&mut self) -> Vec<u32> {
            self.now += 250 * MS;
            let r = self.v.round(self.now, &self.desired, &self.links, &mut self.maps, &self.feed).unwrap();
            r.probes.iter().map(|p| p.ifindex).collect()
        }

        /// What the kernel does with a member's answer (a claim).
        fn answer(&mut self, ifindex: u32, mac: [u8; 6]) {
            let mut st = self.maps.vip_state(0).unwrap();
            let at = self.now + MS;
            if st.holder_ifindex != ifindex {
                (st.holder_ifindex, st.holder_mac, st.epoch, st.since_ns) = (ifindex, mac, st.epoch + 1, at);
            }
            st.last_claim_ns = at;
            self.maps.set_vip_state(0, st).unwrap();
        }

        fn advertise(&mut self, ifindex: u32, priority: u8) {
            let seen = VrrpSeen { priority, last_ns: self.now, ..Default::default() };
            self.maps.vrrp.insert(MemberKey { vip: VIP.octets(), ifindex }, seen);
        }

        fn holder(&self) -> u32 {
            self.maps.vip_state(0).unwrap().holder_ifindex
        }

        fn verdict(&self) -> Verdict {
            self.v.verdicts()[&VIP].clone()
        }

        fn events(&self) -> Vec<(EventKind, String)> {
            self.feed.follow().0.into_iter().map(|e| (e.kind, e.detail)).collect()
        }
    }

    #[test]
    fn no_holder_asks_every_member_and_the_first_answer_wins() {
        let mut w = world("last-claim-wins");
        assert_eq!(w.round(), [7, 8]);
        assert_eq!(w.verdict().phase, Phase::Searching);
        w.answer(7, MAC_A);
        assert_eq!(w.round(), [7], "then only the holder is asked");
        assert_eq!(w.verdict().phase, Phase::Ok);
        // The answer is a claim like any other: the observer reports the
        // new holder; nothing to correct (a GARP may as well have done it).
        assert!(w.verdict().corrections.is_empty());
        assert_eq!(w.events(), []);
    }

    #[test]
    fn a_holder_that_stops_answering_is_replaced_by_the_member_that_answers() {
        let mut w = world("last-claim-wins");
        w.answer(8, MAC_B); // vnic-b claimed (the backup, briefly)
        assert_eq!(w.round(), [8]);
        w.answer(8, MAC_B);
        assert_eq!(w.round(), [8]);
        // vnic-b gave the VIP up and says nothing more.
        assert_eq!(w.round(), [8]);
        assert_eq!((w.verdict().phase, w.verdict().misses), (Phase::Ok, 1));
        assert_eq!(w.round(), [7, 8], "2 misses: every member is asked");
        assert_eq!(w.verdict().phase, Phase::Unresponsive);
        w.answer(7, MAC_A); // the real master answers
        assert_eq!(w.round(), [7]);
        assert_eq!((w.holder(), w.verdict().phase), (7, Phase::Ok));
        let kinds: Vec<EventKind> = w.events().into_iter().map(|e| e.0).collect();
        assert_eq!(kinds, [EventKind::HolderUnresponsive, EventKind::HolderCorrected]);
        assert_eq!(
            w.events()[1].1,
            "198.18.1.50 re-pointed to vnic-a: the holder missed 2 probes in a row; vnic-a answered"
        );
        assert_eq!(w.verdict().rounds_answered, 2, "rounds 2 and 5");
    }

    #[test]
    fn a_silent_holder_loses_the_vip_to_the_member_advertising_it() {
        let mut w = world("last-claim-wins");
        w.answer(8, MAC_B);
        for _ in 0..VRRP_LEAD_ROUNDS - 1 {
            w.advertise(7, 150);
            w.answer(8, MAC_B); // still answering probes, but not the VRRP master
            w.round();
            assert_eq!(w.holder(), 8);
        }
        w.advertise(7, 150);
        w.answer(8, MAC_B);
        w.round();
        assert_eq!(w.holder(), 7, "vnic-a advertised alone for {VRRP_LEAD_ROUNDS} rounds");
        assert_eq!(w.maps.vip_state(0).unwrap().holder_mac, MAC_A);
        assert_eq!(w.verdict().corrections, BTreeMap::from([("vrrp".to_owned(), 1)]));
    }

    #[test]
    fn two_masters_are_contested_and_the_policy_settles_it() {
        let mut w = world("vrrp-priority");
        w.answer(8, MAC_B); // the lower priority claimed last
        w.advertise(7, 150);
        w.advertise(8, 100);
        w.round();
        let v = w.verdict();
        let members = v.contested.expect("contested").members;
        assert_eq!(members, [("vnic-a".to_owned(), Some(150)), ("vnic-b".to_owned(), Some(100))]);
        assert_eq!(w.holder(), 7, "vrrp-priority: the higher priority gets it");
        assert_eq!(w.events()[0].0, EventKind::Contested);
        assert!(
            w.events()[0].1.contains("vnic-a (priority 150) and vnic-b (priority 100)"),
            "{:?}",
            w.events()
        );

        // The same split under last-claim-wins is reported, not settled.
        let mut w = world("last-claim-wins");
        w.answer(8, MAC_B);
        w.advertise(7, 150);
        w.advertise(8, 100);
        w.round();
        assert!(w.verdict().contested.is_some());
        assert_eq!(w.holder(), 8);

        // keep-holder: the holder from before the split keeps it.
        let mut w = world("keep-holder");
        w.answer(7, MAC_A);
        w.round();
        w.answer(8, MAC_B); // vnic-b's claim during the split
        w.advertise(7, 150);
        w.advertise(8, 100);
        w.round();
        assert_eq!(w.holder(), 8, "the contest began with vnic-b holding");
        // Once split, a later claim by vnic-a is undone in favour of vnic-b.
        w.answer(7, MAC_A);
        w.advertise(7, 150);
        w.advertise(8, 100);
        w.round();
        assert_eq!(w.holder(), 8);
    }

    #[test]
    fn members_claiming_in_turn_are_contested_too() {
        let mut w = world("keep-holder");
        w.answer(7, MAC_A);
        w.round();
        w.round(); // vnic-a has held it for a while
                   // A failover and back is no contest.
        for (i, mac) in [(8, MAC_B), (7, MAC_A)] {
            w.answer(i, mac);
            w.round();
        }
        assert!(w.verdict().contested.is_none());
        // Two round trips within 5 s are: no VRRP here (kube-vip, arping,
        // two leaders), the claims alone show it.
        for (i, mac) in [(8, MAC_B), (7, MAC_A), (8, MAC_B)] {
            w.answer(i, mac);
            w.round();
        }
        let c = w.verdict().contested.expect("contested by claims");
        assert_eq!(c.members, [("vnic-a".to_owned(), None), ("vnic-b".to_owned(), None)]);
        assert_eq!(w.holder(), 7, "keep-holder: vnic-a held it before the claims began");
        let contested = w.events().into_iter().find(|e| e.0 == EventKind::Contested).unwrap();
        assert!(contested.1.contains("vnic-a and vnic-b keep claiming it in turn"), "{}", contested.1);
    }

    #[test]
    fn back_and_forth_between_live_members_is_reported_once() {
        let mut w = world("last-claim-wins");
        for i in 0..6 {
            if i % 2 == 0 {
                w.answer(7, MAC_A)
            } else {
                w.answer(8, MAC_B)
            }
            w.round();
        }
        let flaps = w.events().into_iter().filter(|e| e.0 == EventKind::HolderFlapping).count();
        assert_eq!(flaps, 1);
    }

    #[test]
    fn nothing_is_asked_when_verification_is_off() {
        let mut w = world("last-claim-wins");
        w.v = Verifier::new("hv1", VerifySettings { enabled: false, ..VerifySettings::default() });
        assert_eq!(w.round(), Vec::<u32>::new());
    }
}
