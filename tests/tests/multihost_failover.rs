//! Issue 9, across hosts: the three-host lab (hv1: vm-a, hv2: vm-b, hv3:
//! vm-c and the uplink) on a real three-member etcd, real keepalived in vm-a
//! and vm-b, the real agent on every host. vm-c is the client on another
//! host than either member; inet reaches the HAVIP through the EIP on hv3.
//!
//! Each test asserts what it names and prints what it measured (re-point
//! per host, probe outage, time to clear after a host died) for the note.
//! A host's re-point is read from its own data plane: `since_ns` of the
//! VIP's state is CLOCK_MONOTONIC of the write that pointed it at the new
//! holder, on every host the same clock (namespaces of one kernel), so it is
//! exact where polling `describe` is not.
//!
//! The tests of this file take turns (one lab at a time): each lab is three
//! agents, three etcd members, two keepalived and probers on two cores, and
//! a time measured beside another lab would be that lab's too.
//! Needs root.

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use havip_agent::clock::monotonic_ns;
use havip_api::view::{AgentStatus, ClusterStatusView, HavipView};
use havip_api::{Event, EventKind};
use havip_common::{VipCounter, VipState};
use havip_lab::{
    cmd,
    multihost::{host_of, Hv, Lab, Options, HOSTS, HV1, HV2, HV3, LEASE_TTL_S, UNDERLAY_IF},
    netns::LabId,
    probe::{Prober, Report},
    scenario::FAILOVER_TIMEOUT,
    state,
    topology::{Guest, VIP, VM_A, VM_B, VM_C},
    wait,
};

const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// The agents' defaults: a host whose lease expired is probed this often...
const PROBE_INTERVAL_MS: u64 = 200;
/// ...and is down after this many misses in a row.
const PROBE_MISSES: u64 = 3;
/// The lease TTL and the probe budget: how long a host that died may keep
/// its VIPs on the others, by design.
const DOWN_BUDGET: Duration =
    Duration::from_millis(LEASE_TTL_S as u64 * 1000 + PROBE_INTERVAL_MS * PROBE_MISSES);
/// On top of [`DOWN_BUDGET`]: etcd revokes expired leases in rounds of
/// 500 ms, the watch delivers, the first probe waits for the next tick.
const DOWN_MARGIN: Duration = Duration::from_millis(1500);
/// A host cut from etcd, an etcd client reconnecting: seconds, not more.
const CONVERGE: Duration = Duration::from_secs(10);

static ONE_LAB: Mutex<()> = Mutex::new(());

/// This test's turn (see the module doc); a test that failed before does
/// not stop the others.
fn turn() -> MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `body` in its turn on a lab of its own (etcd with `tls` or not),
/// removed whatever the outcome.
fn in_lab(tls: bool, body: impl FnOnce(&mut Lab) -> Result<()>) -> Result<()> {
    let _turn = turn();
    Lab::start(LabId::unique("test"), true, Options { tls, ..Options::default() })?.run(body)
}

/// vm-a holds the VIP in every host's data plane, and vm-c's probes to it
/// are answered: the data planes' states then, and the prober.
fn vm_c_reaches_vm_a(lab: &Lab) -> Result<(Vec<VipState>, Prober)> {
    let states = wait_kernels(lab, &HOSTS, Some(VM_A), FAILOVER_TIMEOUT)?;
    let prober = lab.prober(PROBE_INTERVAL)?;
    prober.wait_answered_by(VM_A.name, 5, FAILOVER_TIMEOUT).context("vm-c (hv3) reaching the VIP on hv1")?;
    Ok((states, prober))
}

// ---------------------------------------------------------------- helpers

/// Where host `h`'s data plane sends the VIP's traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Nobody,
    /// To a vNIC of `h`.
    Local(String),
    /// Encapsulated to another host's VTEP.
    Remote(Ipv4Addr),
}

/// Host `h`'s data plane: where the VIP goes, and its state.
fn kernel(lab: &Lab, h: Hv) -> Result<(Target, VipState)> {
    let st = state::vip_state(&lab.topo.id.pin_dir_of(h.id), VIP)?
        .with_context(|| format!("{VIP} is not in {}'s maps", h.id))?;
    let target = if st.holder_ifindex != 0 {
        Target::Local(state::ifname(lab.topo.host_ns(h), st.holder_ifindex)?)
    } else if st.holder_vtep != [0; 4] {
        Target::Remote(Ipv4Addr::from(st.holder_vtep))
    } else {
        Target::Nobody
    };
    Ok((target, st))
}

/// Where `h`'s data plane must send the VIP when `g` holds it.
fn target_of(h: Hv, g: Option<Guest>) -> Target {
    match g {
        None => Target::Nobody,
        Some(g) if host_of(g) == h => Target::Local(g.vnic.to_owned()),
        Some(g) => Target::Remote(host_of(g).underlay()),
    }
}

/// Waits until the data plane of every host in `hosts` sends the VIP to
/// `g` (none: nowhere); returns each host's state then, in `hosts`' order.
fn wait_kernels(lab: &Lab, hosts: &[Hv], g: Option<Guest>, timeout: Duration) -> Result<Vec<VipState>> {
    let who = g.map_or("no holder", |g| g.name);
    wait::until(&format!("the data plane of every host to follow {who}"), timeout, || {
        let mut states = Vec::new();
        for &h in hosts {
            let (t, st) = kernel(lab, h)?;
            if t != target_of(h, g) {
                return Ok(None);
            }
            states.push(st);
        }
        Ok(Some(states))
    })
}

/// ns between two CLOCK_MONOTONIC stamps, as ms with µs.
fn ms(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

fn status(lab: &Lab, h: Hv) -> Result<AgentStatus> {
    lab.ctl(h)?.json(&["status"])
}

fn cluster(lab: &Lab, h: Hv) -> Result<ClusterStatusView> {
    status(lab, h)?.cluster.with_context(|| format!("{} shows no cluster in its status", h.id))
}

/// How host `h` sees host `of`: `up`, `suspect` or `down`.
fn peer_state(lab: &Lab, h: Hv, of: Hv) -> Result<String> {
    let peer = cluster(lab, h)?.hosts.into_iter().find(|p| p.id == of.id);
    Ok(peer.with_context(|| format!("{} does not know {}", h.id, of.id))?.state)
}

/// Waits until every host of `hosts` sees host `of` in `state`.
fn wait_peer(lab: &Lab, hosts: &[Hv], of: Hv, state: &str, timeout: Duration) -> Result<()> {
    for &h in hosts {
        wait::until(&format!("{} to see {} {state}", h.id, of.id), timeout, || {
            Ok((peer_state(lab, h, of)? == state).then_some(()))
        })?;
    }
    Ok(())
}

/// hv1's lease expired but its XDP answers the underlay probes: for longer
/// than the lease and the probe budget, hv2 and hv3 keep it `suspect`
/// (never down) and every data plane keeps vm-a as the holder.
fn hv1_stays_suspect_and_vm_a_holds(lab: &Lab) -> Result<()> {
    wait_peer(lab, &[HV2, HV3], HV1, "suspect", DOWN_BUDGET + FAILOVER_TIMEOUT)?;
    throughout("hv1 stays suspect, never down, and vm-a keeps the VIP", DOWN_BUDGET + DOWN_MARGIN, || {
        for h in [HV2, HV3] {
            let state = peer_state(lab, h, HV1)?;
            ensure!(state == "suspect", "{} sees hv1 {state}", h.id);
        }
        wait_kernels(lab, &HOSTS, Some(VM_A), Duration::ZERO).map(drop)
    })
}

fn describe(lab: &Lab, h: Hv) -> Result<HavipView> {
    lab.ctl(h)?.json(&["describe", &VIP.to_string()])
}

/// Every event of host `h`'s agent run so far.
fn events(lab: &Lab, h: Hv) -> Result<Vec<Event>> {
    let text = lab.ctl(h)?.ok(&["--json", "events"])?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("event line {l:?}"))).collect()
}

fn count_events(lab: &Lab, h: Hv, kind: EventKind) -> Result<usize> {
    Ok(events(lab, h)?.iter().filter(|e| e.kind == kind).count())
}

/// The MAC in `g`'s neighbour table for the VIP, if any.
fn neigh_mac(lab: &Lab, g: Guest) -> Result<Option<String>> {
    let out = cmd::ip(&["-n", &lab.topo.ns(g), "-j", "neigh", "show", &VIP.to_string()])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j neigh`")?;
    Ok(v.as_array().and_then(|a| a.first()).and_then(|n| n["lladdr"].as_str()).map(str::to_owned))
}

/// `g`'s addresses and routes: what "nothing changed on the client" compares.
fn guest_config(lab: &Lab, g: Guest) -> Result<String> {
    let ns = lab.topo.ns(g);
    Ok(cmd::ip(&["-n", &ns, "-4", "-o", "addr", "show"])? + &cmd::ip(&["-n", &ns, "-4", "route", "show"])?)
}

/// One ping from `g` to the VIP, DF set, `payload` bytes of ICMP data.
fn ping_df(lab: &Lab, g: Guest, payload: usize) -> Result<bool> {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.topo.ns(g), "ping", "-q", "-n", "-c", "1", "-W", "2", "-M", "do", "-s"])
        .arg(payload.to_string())
        .arg(VIP.to_string())
        .output()
        .context("running ping")?;
    Ok(out.status.success())
}

fn counter(lab: &Lab, h: Hv, c: VipCounter) -> Result<u64> {
    Ok(state::vip_counters(&lab.topo.id.pin_dir_of(h.id), VIP)?.get(c))
}

/// Who answered, in order, and the longest outage (ms, probes lost).
fn summary(report: &Report) -> (Vec<String>, f64, usize) {
    let who = report.spans().into_iter().map(|s| s.responder).collect();
    let gap = report.longest_gap().map_or((0.0, 0), |g| ((g.to - g.from).as_secs_f64() * 1e3, g.lost));
    (who, gap.0, gap.1)
}

/// Polls `check` for `window` (a negative needs an observation window);
/// fails at its first error.
fn throughout(what: &str, window: Duration, mut check: impl FnMut() -> Result<()>) -> Result<()> {
    let end = Instant::now() + window;
    while Instant::now() < end {
        check().with_context(|| format!("while checking that {what}"))?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

// ------------------------------------------------------------------ tests

#[test]
fn vm_c_follows_the_vip_across_hosts_and_the_eip_follows_too() -> Result<()> {
    in_lab(true, follows_across_hosts)
}

fn follows_across_hosts(lab: &mut Lab) -> Result<()> {
    ensure!(
        lab.etcd.tls_files().is_some() && lab.etcd.endpoints().iter().all(|e| e.starts_with("https://")),
        "the lab's etcd does not speak TLS: {:?}",
        lab.etcd.endpoints()
    );
    // vm-a holds on hv1: hv1 delivers locally, hv2 and hv3 encapsulate to hv1.
    let (_, prober) = vm_c_reaches_vm_a(lab)?;
    ensure!(lab.fetch_via_eip()? == VM_A.name, "the EIP is not served by vm-a");
    let mac_before = neigh_mac(lab, VM_C)?.context("vm-c has no neighbour entry for the VIP")?;
    let config_before = guest_config(lab, VM_C)?;
    let revision_before = describe(lab, HV3)?.revision;
    ensure!(revision_before > 0, "hv3 follows no holder record");

    let stop_ns = monotonic_ns();
    lab.keepalived(VM_A)?.stop()?;
    // keepalived says goodbye (priority 0) before it exits: describe is
    // polled from its exit on.
    let stopped = (lab.timeline.now(), Duration::from_nanos(monotonic_ns() - stop_ns));
    let seen = lab.wait_holder_everywhere(VM_B, FAILOVER_TIMEOUT)?;
    let states = wait_kernels(lab, &HOSTS, Some(VM_B), FAILOVER_TIMEOUT)?;
    prober.wait_answered_by(VM_B.name, 5, FAILOVER_TIMEOUT).context("vm-c (hv3) reaching the VIP on hv2")?;

    // Nothing changed on vm-c: same neighbour entry for the VIP, same addresses and routes.
    let mac_after = neigh_mac(lab, VM_C)?.context("vm-c lost its neighbour entry for the VIP")?;
    ensure!(
        mac_before == mac_after,
        "vm-c's neighbour entry for the VIP changed: {mac_before} -> {mac_after}"
    );
    ensure!(guest_config(lab, VM_C)? == config_before, "vm-c's addresses or routes changed");
    // Every host follows the same, newer record.
    let views: Vec<HavipView> = HOSTS.iter().map(|&h| describe(lab, h)).collect::<Result<_>>()?;
    ensure!(
        views.iter().all(|v| v.revision == views[1].revision && v.holder_host.as_deref() == Some(HV2.id)),
        "the hosts disagree on the holder record: {:?}",
        views.iter().map(|v| (&v.holder, &v.holder_host, v.revision)).collect::<Vec<_>>()
    );
    ensure!(views[1].revision > revision_before, "the failover committed no newer record");

    // The EIP on hv3 follows: a real HTTP fetch from inet is served by vm-b.
    let served = wait::until("the EIP to be served by vm-b", FAILOVER_TIMEOUT, || {
        Ok(lab.fetch_via_eip().ok().filter(|who| who == VM_B.name))
    })?;
    ensure!(served == VM_B.name);
    ensure!(counter(lab, HV3, VipCounter::EncapPackets)? > 0, "hv3 encapsulated nothing");
    // The agent keeps the next hop with the remote holder (ABI v5), so the
    // kernel encapsulates without a vteps lookup: on hv3, hv2's ul0 MAC.
    let hv2_ul0 = cmd::link_mac(lab.topo.host_ns(HV2), UNDERLAY_IF)?;
    ensure!(
        wait::until("hv3 to keep hv2's next hop with the holder", FAILOVER_TIMEOUT, || {
            Ok((kernel(lab, HV3)?.1.holder_next_hop == hv2_ul0).then_some(()))
        })
        .is_ok(),
        "hv3's vip_state does not carry hv2's ul0 MAC {hv2_ul0:02x?} as the next hop"
    );
    ensure!(counter(lab, HV2, VipCounter::DecapPackets)? > 0, "hv2 decapsulated nothing");

    let report = prober.finish();
    let (who, outage_ms, lost) = summary(&report);
    ensure!(who == [VM_A.name, VM_B.name], "vm-c was answered by {who:?}, expected vm-a then vm-b");
    ensure!(outage_ms < 1000.0, "vm-c lost the VIP for {outage_ms:.1} ms");
    // With hints or through etcd's watch, a host follows in milliseconds;
    // far more means neither worked and a periodic resync caught it up.
    for (h, st) in HOSTS.iter().zip(&states) {
        let after = ms(states[1].since_ns, st.since_ns);
        ensure!(after < 500.0, "{} re-pointed {after:.1} ms after hv2's claim", h.id);
    }

    let claim_ns = states[1].since_ns;
    eprintln!("FIGURES failover vm-a (hv1) -> vm-b (hv2), etcd with TLS, keepalived in vm-a stopped at t=0:");
    eprintln!("  claim accepted in hv2's XDP: +{:.3} ms", ms(stop_ns, claim_ns));
    for (h, st) in HOSTS.iter().zip(&states) {
        eprintln!("  {} data plane re-pointed: {:+.3} ms after the claim", h.id, ms(claim_ns, st.since_ns));
    }
    eprintln!(
        "  keepalived in vm-a exited at +{:.0} ms; describe (polled from then) showed vm-b:",
        stopped.1.as_secs_f64() * 1e3
    );
    for (h, at) in &seen {
        eprintln!("    {}: {:.0} ms after that", h.id, (*at - stopped.0).as_secs_f64() * 1e3);
    }
    eprintln!(
        "  vm-c probes every {PROBE_INTERVAL:?}: sent {}, lost {}, longest outage {outage_ms:.1} ms ({lost} probes)",
        report.sent(),
        report.lost()
    );
    Ok(())
}

/// A full-size frame crosses hosts: vm-c's MTU is 1500, the underlay's 1550,
/// so a 1500-byte IP packet with DF set fits exactly once encapsulated.
#[test]
fn a_client_on_another_host_reaches_the_vip_with_a_full_size_frame() -> Result<()> {
    in_lab(false, |lab| {
        wait_kernels(lab, &HOSTS, Some(VM_A), FAILOVER_TIMEOUT)?;
        let too_big = |lab: &Lab| -> Result<u64> {
            Ok(counter(lab, HV3, VipCounter::TooBigIcmp)? + counter(lab, HV3, VipCounter::TooBigDrops)?)
        };
        let (encap, big) = (counter(lab, HV3, VipCounter::EncapBytes)?, too_big(lab)?);
        // 1472 bytes of ICMP data + 8 + 20 = 1500: the guest's MTU, and
        // 1550 on the underlay with VXLAN's 50.
        ensure!(ping_df(lab, VM_C, 1472)?, "vm-c's 1500-byte ping with DF to the VIP on hv1 got no answer");
        ensure!(too_big(lab)? == big, "hv3 counted the 1500-byte frame as too big");
        ensure!(
            counter(lab, HV3, VipCounter::EncapBytes)? >= encap + 1514,
            "hv3 did not encapsulate the full-size frame"
        );
        Ok(())
    })
}

#[test]
fn a_host_that_dies_loses_its_vips_on_every_other_host() -> Result<()> {
    in_lab(false, host_dies)
}

fn host_dies(lab: &mut Lab) -> Result<()> {
    let survivors = [HV2, HV3];
    // (a) keepalived in vm-b: hv1 gone, vm-b takes over, vm-c's traffic follows.
    let (_, prober) = vm_c_reaches_vm_a(lab)?;
    let down_at = lab.timeline.now();
    lab.host_down(HV1)?;
    prober.wait_answered_by(VM_B.name, 5, FAILOVER_TIMEOUT).context("vm-c reaching vm-b after hv1 died")?;
    lab.wait_holder_everywhere(VM_B, FAILOVER_TIMEOUT)?;
    wait_kernels(lab, &survivors, Some(VM_B), FAILOVER_TIMEOUT)?;
    // hv1 is declared down in time, and that clears nothing of vm-b's.
    wait_peer(lab, &survivors, HV1, "down", DOWN_BUDGET + DOWN_MARGIN + FAILOVER_TIMEOUT)?;
    wait_kernels(lab, &survivors, Some(VM_B), Duration::ZERO)
        .context("vm-b's hold after hv1 was declared down")?;
    ensure!(lab.holder_on(HV3)?.as_deref() == Some(VM_B.vnic), "hv3 lost vm-b as the holder");
    let report = prober.finish();
    let (who, outage_ms, lost) = summary(&report);
    ensure!(who == [VM_A.name, VM_B.name], "vm-c was answered by {who:?}, expected vm-a then vm-b");
    eprintln!(
        "FIGURES hv1 gone at {:.3}s with keepalived in vm-b: vm-c's longest outage {outage_ms:.1} ms ({lost} probes)",
        down_at.as_secs_f64()
    );

    // Back: vm-a (priority 150) takes the VIP again.
    lab.host_up(HV1)?;
    lab.start_agent(HV1)?;
    lab.keepalived(VM_A)?.restart()?;
    lab.wait_holder_everywhere(VM_A, FAILOVER_TIMEOUT)?;
    wait_kernels(lab, &HOSTS, Some(VM_A), FAILOVER_TIMEOUT)?;
    wait_peer(lab, &survivors, HV1, "up", CONVERGE)?;

    // (b) No other member: keepalived in vm-b stopped, hv1 gone. Every
    // other host clears the holder within the lease TTL and the probe budget.
    lab.keepalived(VM_B)?.stop()?;
    let cleared_before: Vec<usize> =
        survivors.iter().map(|&h| count_events(lab, h, EventKind::HolderCleared)).collect::<Result<_>>()?;
    let down_ns = monotonic_ns();
    lab.host_down(HV1)?;
    let states = wait_kernels(lab, &survivors, None, DOWN_BUDGET + DOWN_MARGIN + FAILOVER_TIMEOUT)?;
    for (h, st) in survivors.iter().zip(&states) {
        let after = Duration::from_nanos(st.since_ns.saturating_sub(down_ns));
        eprintln!(
            "FIGURES hv1 gone, no other member: {} cleared the holder {:.0} ms after (budget: lease {} s + probes {} x {} ms)",
            h.id,
            after.as_secs_f64() * 1e3,
            LEASE_TTL_S,
            PROBE_MISSES,
            PROBE_INTERVAL_MS
        );
        ensure!(
            after <= DOWN_BUDGET + DOWN_MARGIN,
            "{} cleared hv1's VIP {after:?} after it died: more than {DOWN_BUDGET:?} + {DOWN_MARGIN:?}",
            h.id
        );
    }
    for (i, h) in survivors.into_iter().enumerate() {
        let view = wait::until(&format!("{}'s describe to show no holder", h.id), CONVERGE, || {
            Ok(Some(describe(lab, h)?).filter(|v| v.holder.is_none()))
        })?;
        ensure!(view.holder_host.is_none(), "{} still names a holder host: {:?}", h.id, view.holder_host);
        let all = events(lab, h)?;
        let cleared: Vec<&Event> = all.iter().filter(|e| e.kind == EventKind::HolderCleared).collect();
        ensure!(
            cleared.len() > cleared_before[i] && cleared.last().is_some_and(|e| e.detail.contains("hv1")),
            "{} has no holder_cleared event naming hv1: {cleared:?}",
            h.id
        );
        ensure!(
            all.iter().any(|e| e.kind == EventKind::HostDown && e.detail.contains("hv1")),
            "{} has no host_down event for hv1",
            h.id
        );
    }
    Ok(())
}

#[test]
fn an_agent_restart_longer_than_the_lease_changes_nothing() -> Result<()> {
    in_lab(false, agent_restart)
}

fn agent_restart(lab: &mut Lab) -> Result<()> {
    let others = [HV2, HV3];
    let (before, prober) = vm_c_reaches_vm_a(lab)?;
    let records: Vec<(u64, u64)> =
        others.iter().map(|&h| describe(lab, h).map(|v| (v.revision, v.epoch))).collect::<Result<_>>()?;

    // First a short restart of the client's host (SIGTERM and start): its
    // data plane encapsulates vm-c's traffic to hv1 all along, on the
    // underlay and VTEPs it had, before its agent knows the hosts again.
    // Its new run then sees all of hv1's outage (events are per run).
    lab.restart_agent(HV3)?;
    wait_peer(lab, &[HV3], HV1, "up", CONVERGE)?;
    wait_peer(lab, &[HV3], HV2, "up", CONVERGE)?;
    prober.wait_answered_by(VM_A.name, 5, FAILOVER_TIMEOUT)?;

    let killed = Instant::now();
    lab.kill_agent(HV1)?;
    // Its lease expires: the others suspect it, probe it, and its XDP
    // answers; down longer than the lease and the probe budget from then on.
    hv1_stays_suspect_and_vm_a_holds(lab)?;
    let down_for = killed.elapsed();
    lab.restart_agent(HV1)?;
    wait_peer(lab, &others, HV1, "up", CONVERGE)?;
    lab.wait_holder_everywhere(VM_A, FAILOVER_TIMEOUT)?;
    prober.wait_answered_by(VM_A.name, 5, FAILOVER_TIMEOUT)?;

    let report = prober.finish();
    eprintln!(
        "FIGURES hv1's agent down {:.2}s: vm-c sent {} probes, lost {}",
        down_for.as_secs_f64(),
        report.sent(),
        report.lost()
    );
    ensure!(report.lost() == 0, "vm-c lost {} probes: {:?}", report.lost(), report.gaps());
    ensure!(summary(&report).0 == [VM_A.name], "vm-c was answered by {:?}", summary(&report).0);
    // No holder change anywhere: not in the kernels, not in the records.
    let after = wait_kernels(lab, &HOSTS, Some(VM_A), Duration::ZERO)?;
    for ((h, b), a) in HOSTS.iter().zip(&before).zip(&after) {
        ensure!(
            (a.epoch, a.since_ns) == (b.epoch, b.since_ns),
            "{}'s data plane was rewritten: epoch {} -> {}",
            h.id,
            b.epoch,
            a.epoch
        );
    }
    for (&h, &(revision, epoch)) in others.iter().zip(&records) {
        let v = describe(lab, h)?;
        ensure!(
            (v.revision, v.epoch) == (revision, epoch),
            "{} moved: revision {revision} -> {}, epoch {epoch} -> {}",
            h.id,
            v.revision,
            v.epoch
        );
        ensure!(count_events(lab, h, EventKind::HostDown)? == 0, "{} declared a host down", h.id);
        ensure!(count_events(lab, h, EventKind::HolderCleared)? == 0, "{} cleared a holder", h.id);
    }
    ensure!(describe(lab, HV1)?.revision == records[0].0, "hv1 came back on another record");
    Ok(())
}

#[test]
fn a_host_cut_off_from_etcd_keeps_its_vip_and_converges_after_the_heal() -> Result<()> {
    in_lab(false, cut_from_etcd)
}

fn cut_from_etcd(lab: &mut Lab) -> Result<()> {
    let (_, prober) = vm_c_reaches_vm_a(lab)?;
    let base = describe(lab, HV2)?.revision;

    let cut = Instant::now();
    lab.cut_from_etcd(HV1)?;
    wait::until("hv1 to say etcd is unreachable", DOWN_BUDGET + FAILOVER_TIMEOUT, || {
        Ok((!cluster(lab, HV1)?.reachable).then_some(()))
    })?;
    // hv1 answers the underlay probes: never down, and vm-a keeps the VIP.
    hv1_stays_suspect_and_vm_a_holds(lab)?;
    let during_cut = prober.finish();
    ensure!(summary(&during_cut).0 == [VM_A.name], "vm-c was answered by {:?}", summary(&during_cut).0);
    ensure!(during_cut.lost() <= 2, "vm-c lost {} probes while hv1 was cut from etcd", during_cut.lost());

    // A failover during the cut: hv2 commits, hv1 follows on hv2's hint.
    let prober = lab.prober(PROBE_INTERVAL)?;
    prober.wait_answered_by(VM_A.name, 5, FAILOVER_TIMEOUT)?;
    let (won, hinted) = (cluster(lab, HV2)?.commits_won, cluster(lab, HV1)?.hints_applied);
    let failover = lab.timeline.now();
    lab.keepalived(VM_A)?.stop()?;
    let states = wait_kernels(lab, &HOSTS, Some(VM_B), FAILOVER_TIMEOUT)?;
    prober.wait_answered_by(VM_B.name, 5, FAILOVER_TIMEOUT).context("vm-c reaching vm-b during the cut")?;
    let committed = wait::until("hv2 and hv3 to follow a record newer than vm-a's", CONVERGE, || {
        let (v2, v3) = (describe(lab, HV2)?, describe(lab, HV3)?);
        let done =
            v2.revision > base && v2.revision == v3.revision && v2.holder.as_deref() == Some(VM_B.vnic);
        Ok(done.then_some(v2.revision))
    })?;
    ensure!(cluster(lab, HV2)?.commits_won > won, "hv2 shows no commit won for vm-b's claim");
    let hv1 = cluster(lab, HV1)?;
    ensure!(hv1.hints_applied > hinted, "hv1 followed vm-b without applying a hint");
    ensure!(!hv1.reachable, "hv1 reached etcd during the cut");
    ensure!(describe(lab, HV1)?.revision == base, "hv1 read a record from etcd during the cut");

    let healed = Instant::now();
    lab.heal(HV1)?;
    let views = wait::until("every host to show vm-b at the same revision", CONVERGE, || {
        let views: Vec<HavipView> = HOSTS.iter().map(|&h| describe(lab, h)).collect::<Result<_>>()?;
        let same = views.iter().all(|v| v.holder.as_deref() == Some(VM_B.vnic) && v.revision == committed);
        let reachable = cluster(lab, HV1)?.reachable;
        Ok((same && reachable).then_some(views))
    })?;
    let converged = healed.elapsed();
    wait_peer(lab, &[HV2, HV3], HV1, "up", CONVERGE)?;
    for h in [HV2, HV3] {
        ensure!(count_events(lab, h, EventKind::HostDown)? == 0, "{} declared a host down", h.id);
    }
    ensure!(
        views.iter().all(|v| v.holder_host.as_deref() == Some(HV2.id)),
        "a host names another holder host"
    );

    let report = prober.finish();
    let (who, outage_ms, lost) = summary(&report);
    ensure!(who == [VM_A.name, VM_B.name], "vm-c was answered by {who:?}, expected vm-a then vm-b");
    let claim_ns = states[1].since_ns;
    eprintln!(
        "FIGURES hv1 cut from etcd {:.2}s: vm-c lost {} of {} probes before the failover; failover at {:.3}s: \
         hv1 re-pointed {:+.3} ms, hv3 {:+.3} ms after hv2's claim; vm-c's longest outage {outage_ms:.1} ms ({lost} probes); \
         all hosts on revision {committed} {:.0} ms after the heal",
        (healed - cut).as_secs_f64(),
        during_cut.lost(),
        during_cut.sent(),
        failover.as_secs_f64(),
        ms(claim_ns, states[0].since_ns),
        ms(claim_ns, states[2].since_ns),
        converged.as_secs_f64() * 1e3
    );
    Ok(())
}
