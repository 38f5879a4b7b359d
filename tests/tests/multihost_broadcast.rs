//! Issue 11 across hosts: the three-host lab (hv1: vm-a, hv2: vm-b, hv3:
//! vm-c), keepalived with its default configuration (VRRP to 224.0.0.18, no
//! `unicast_peer`) in vm-a and vm-b, then ucarp (CARP, multicast only).
//!
//! The lab's hosts route guest unicast between them (per-guest /32 via the
//! other host's underlay address, multihost.rs), so unicast VRRP crosses
//! hosts without havip; nothing routes or bridges multicast: an advert to
//! 224.0.0.18 reaches vm-a's host's stack and ends there. So in a `unicast`
//! subnet both members become master; in a `broadcast-domain` subnet havip
//! replicates the adverts to the other hosts (head-end, over the VXLAN
//! underlay) and there is one master, which every host follows.
//!
//! The split runs on today's agent; the broadcast-domain test needs the
//! mode (`mode = "broadcast-domain"` in the desired file, the replication).
//! The tests take turns (one lab at a time), as multihost_failover.rs's do.
//! Needs root.

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use havip_agent::clock::monotonic_ns;
use havip_lab::{
    ctl::{broadcast_counter, subnet_in_force},
    multihost::{Hv, Lab, Options, HOSTS, HV1, HV2, HV3},
    netns::LabId,
    probe::Report,
    scenario::{self, FAILOVER_TIMEOUT},
    state,
    topology::{Guest, Masters, SubnetOptions, MEMBERS, VIP, VM_A, VM_B},
    ucarp, wait,
};

const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// How long a split, or a single master, must last to count (see
/// broadcast_domain.rs): several master-down times of keepalived, more
/// than two adverts of ucarp.
const SETTLE: Duration = Duration::from_millis(2500);

static ONE_LAB: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The three-host lab with agents, the desired state (the subnet in
/// `subnet` mode), the services and keepalived's default multicast
/// configuration; no wait for a holder (a split may end on either member).
fn lab_with(subnet: SubnetOptions) -> Result<Lab> {
    let base = scenario::Options { keepalived_multicast: true, subnet, ..scenario::Options::default() };
    let mut lab = Lab::create(LabId::unique("test"), true, Options { base, ..Options::default() })?;
    let started = (|| {
        lab.start_agents()?;
        lab.apply_desired()?;
        lab.start_services()?;
        // Every host's data plane in the mode set before VRRP starts.
        if let Some(mode) = subnet.mode {
            for h in HOSTS {
                let what = format!("{}'s data plane to follow {}", h.id, mode.as_str());
                wait::until(&what, FAILOVER_TIMEOUT, || {
                    // hv2 and hv3 learn the desired state through etcd: refused until then.
                    let Ok(v) = lab.subnet_view(h) else { return Ok(None) };
                    Ok(subnet_in_force(&v, mode)?.then_some(()))
                })?;
            }
        }
        lab.start_keepalived()
    })();
    lab.on_error(started)?;
    Ok(lab)
}

// ---------------------------------------------------------------- helpers

/// CLOCK_MONOTONIC of the write that pointed host `h`'s data plane at the
/// VIP's current holder.
fn since_ns(lab: &Lab, h: Hv) -> Result<u64> {
    let st = state::vip_state(&lab.topo.id.pin_dir_of(h.id), VIP)?
        .with_context(|| format!("{VIP} is not in {}'s maps", h.id))?;
    Ok(st.since_ns)
}

/// [`since_ns`] of every host, in host order.
fn repointed(lab: &Lab) -> Result<Vec<u64>> {
    HOSTS.iter().map(|&h| since_ns(lab, h)).collect()
}

fn ms(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

/// Who answered, in order, and the longest outage (ms, probes lost).
fn summary(report: &Report) -> (Vec<String>, f64, usize) {
    let who = report.spans().into_iter().map(|s| s.responder).collect();
    let gap = report.longest_gap().map_or((0.0, 0), |g| ((g.to - g.from).as_secs_f64() * 1e3, g.lost));
    (who, gap.0, gap.1)
}

/// Every host follows `g` (describe), and `g` alone stays master while
/// they keep following it.
fn one_master_everywhere(lab: &Lab, g: Guest, timeout: Duration) -> Result<()> {
    lab.wait_masters(&MEMBERS, &[g], timeout)?;
    lab.wait_holder_everywhere(g, FAILOVER_TIMEOUT)?;
    lab.stay_masters(&MEMBERS, &[g], SETTLE, || {
        for h in HOSTS {
            let holder = lab.holder_on(h)?;
            ensure!(holder.as_deref() == Some(g.vnic), "{} follows {holder:?}, not {}", h.id, g.vnic);
        }
        Ok(())
    })
}

// ------------------------------------------------------------------ tests

/// In a unicast subnet keepalived's multicast adverts cross no host: both
/// members become master.
#[test]
fn keepalived_multicast_splits_across_hosts_in_a_unicast_subnet() -> Result<()> {
    let _turn = turn();
    lab_with(SubnetOptions::default())?.run(|lab| {
        lab.wait_masters(&MEMBERS, &MEMBERS, FAILOVER_TIMEOUT).context("keepalived in a unicast subnet, across hosts")?;
        lab.stay_masters(&MEMBERS, &MEMBERS, SETTLE, || Ok(()))?;
        let holders: Vec<Option<String>> = HOSTS.iter().map(|&h| lab.holder_on(h)).collect::<Result<_>>()?;
        eprintln!(
            "FIGURES keepalived multicast across hosts, unicast subnet: both master for {SETTLE:?}; holder per host {holders:?}"
        );
        Ok(())
    })
}

/// The subnet a broadcast domain (from the desired file): keepalived's
/// adverts are replicated between hv1 and hv2, one master (vm-a), every
/// host follows it, vm-c on hv3 reaches the VIP there; failover to vm-b on
/// hv2 and back. Then ucarp in the same lab: the same.
#[test]
fn keepalived_and_ucarp_elect_one_master_across_hosts_in_a_broadcast_domain() -> Result<()> {
    let _turn = turn();
    lab_with(SubnetOptions::broadcast_domain())?.run(across_hosts)
}

fn across_hosts(lab: &mut Lab) -> Result<()> {
    one_master_everywhere(lab, VM_A, FAILOVER_TIMEOUT).context("keepalived in a broadcast domain")?;
    // vm-a's adverts left hv1 as one copy per other host and were received there.
    let (hv1, hv2, hv3) = (lab.subnet_view(HV1)?, lab.subnet_view(HV2)?, lab.subnet_view(HV3)?);
    ensure!(broadcast_counter(&hv1, "flooded")? > 0, "hv1 flooded nothing: {hv1}");
    ensure!(broadcast_counter(&hv1, "remote_copies")? > 0, "hv1 sent no copy to another host: {hv1}");
    ensure!(broadcast_counter(&hv2, "received")? > 0, "hv2 received no replicated frame: {hv2}");
    ensure!(broadcast_counter(&hv3, "received")? > 0, "hv3 received no replicated frame: {hv3}");

    let prober = lab.prober(PROBE_INTERVAL)?;
    prober.wait_answered_by(VM_A.name, 5, FAILOVER_TIMEOUT).context("vm-c (hv3) reaching the VIP on hv1")?;
    let stop_ns = monotonic_ns();
    lab.keepalived(VM_A)?.stop()?;
    one_master_everywhere(lab, VM_B, FAILOVER_TIMEOUT).context("keepalived's failover to vm-b on hv2")?;
    let failover = repointed(lab)?;
    prober.wait_answered_by(VM_B.name, 5, FAILOVER_TIMEOUT).context("vm-c (hv3) reaching the VIP on hv2")?;
    let restart_ns = monotonic_ns();
    lab.keepalived(VM_A)?.restart()?;
    one_master_everywhere(lab, VM_A, FAILOVER_TIMEOUT).context("keepalived's preempt-back to vm-a")?;
    let back = repointed(lab)?;
    prober
        .wait_answered_by(VM_A.name, 5, FAILOVER_TIMEOUT)
        .context("vm-c (hv3) reaching the VIP on hv1 again")?;
    let report = prober.finish();
    let (who, outage_ms, lost) = summary(&report);
    ensure!(
        who == [VM_A.name, VM_B.name, VM_A.name],
        "vm-c was answered by {who:?}, expected vm-a, vm-b, vm-a"
    );
    ensure!(outage_ms < 1000.0, "vm-c lost the VIP for {outage_ms:.1} ms");
    let (claim, reclaim) = (failover[1], back[0]);
    eprintln!(
        "FIGURES keepalived multicast across hosts, broadcast domain: failover: vm-b's claim in hv2's XDP {:.1} ms after \
         vm-a's keepalived was stopped; preempt-back: vm-a's claim in hv1's XDP {:.1} ms after its restart",
        ms(stop_ns, claim),
        ms(restart_ns, reclaim)
    );
    for (h, (f, b)) in HOSTS.iter().zip(failover.iter().zip(&back)) {
        eprintln!(
            "  {} re-pointed {:+.3} ms after vm-b's claim, {:+.3} ms after vm-a's",
            h.id,
            ms(claim, *f),
            ms(reclaim, *b)
        );
    }
    eprintln!(
        "  vm-c (hv3) probes every {PROBE_INTERVAL:?}: sent {}, lost {}, longest outage {outage_ms:.1} ms ({lost} probes)",
        report.sent(),
        report.lost()
    );

    // ucarp instead of keepalived, in the same lab.
    lab.keepalived(VM_B)?.stop()?;
    lab.keepalived(VM_A)?.stop()?;
    lab.wait_masters(&MEMBERS, &[], FAILOVER_TIMEOUT).context("keepalived gone")?;
    lab.start_ucarp()?;
    let (a, b) = (ucarp::MEMBERS[0].1, ucarp::MEMBERS[1].1);
    one_master_everywhere(lab, VM_A, b.master_down() + FAILOVER_TIMEOUT)
        .context("ucarp in a broadcast domain")?;
    let prober = lab.prober(PROBE_INTERVAL)?;
    prober.wait_answered_by(VM_A.name, 5, FAILOVER_TIMEOUT).context("vm-c reaching vm-a under ucarp")?;
    let stop_ns = monotonic_ns();
    lab.ucarp(VM_A)?.stop()?;
    one_master_everywhere(lab, VM_B, b.master_down() + FAILOVER_TIMEOUT)
        .context("ucarp's failover to vm-b")?;
    let claim = since_ns(lab, HV2)?;
    prober.wait_answered_by(VM_B.name, 5, FAILOVER_TIMEOUT).context("vm-c reaching vm-b under ucarp")?;
    lab.ucarp(VM_A)?.restart()?;
    one_master_everywhere(lab, VM_A, a.master_down() + FAILOVER_TIMEOUT)
        .context("ucarp's preempt-back to vm-a")?;
    prober
        .wait_answered_by(VM_A.name, 5, FAILOVER_TIMEOUT)
        .context("vm-c reaching vm-a again under ucarp")?;
    let report = prober.finish();
    let (who, outage_ms, lost) = summary(&report);
    ensure!(who == [VM_A.name, VM_B.name, VM_A.name], "vm-c was answered by {who:?} under ucarp");
    eprintln!(
        "FIGURES ucarp across hosts, broadcast domain: vm-b's claim in hv2's XDP {:.0} ms after vm-a's ucarp stopped \
         (master-down {:?}); vm-c: sent {}, lost {}, longest outage {outage_ms:.1} ms ({lost} probes)",
        ms(stop_ns, claim),
        b.master_down(),
        report.sent(),
        report.lost()
    );
    Ok(())
}
