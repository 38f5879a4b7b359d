//! keepalived decides, havip follows: failover and failback under real VRRP,
//! seen from a client that changes nothing, and a spoofed claim that changes
//! nothing either.

use std::{thread, time::Duration};

mod control_support;

use anyhow::{ensure, Context, Result};
use control_support::Ctl;
use havip_common::{VipCounter, VipState};
use havip_lab::{
    cmd, garp,
    netns::LabId,
    probe::Prober,
    scenario::{Lab, FAILOVER_TIMEOUT},
    state,
    topology::{Guest, GUEST_IF, VIP, VM_A, VM_B, VM_C},
    wait,
};
use havip_model::state::{now_ms, rfc3339};

const PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// The lab shows the problem: keepalived moves the VIP between the guests,
/// but without havip the host has no route for it and vm-c gets no answer,
/// while the guests' own addresses work.
#[test]
fn without_havip_the_vip_is_unreachable() -> Result<()> {
    Lab::create(LabId::unique("test"), true)?.run(vip_unreachable)
}

fn vip_unreachable(lab: &mut Lab) -> Result<()> {
    lab.start_responders()?;
    lab.start_keepalived()?;
    let vma = lab.topo.ns(VM_A);
    wait::until("keepalived to put the VIP on vm-a", FAILOVER_TIMEOUT, || {
        let addrs = cmd::ip(&["-n", &vma, "-o", "addr", "show", "dev", GUEST_IF])?;
        Ok(addrs.contains(&format!("{VIP}/24")).then_some(()))
    })?;

    let direct = Prober::start(&lab.topo.ns(VM_C), VM_A.ip, PROBE_INTERVAL, &lab.timeline)?;
    direct.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching vm-a's own address")?;
    let to_vip = lab.prober(PROBE_INTERVAL)?;
    // A negative check needs an observation window: 200 probes' worth.
    thread::sleep(Duration::from_secs(1));
    let report = to_vip.finish();
    ensure!(report.sent() >= 100, "only {} probes sent", report.sent());
    ensure!(report.lost() == report.sent(), "the VIP answered without havip: {:?}", report.spans());
    ensure!(lab.neigh_mac(VM_C, VIP)?.is_none(), "vm-c resolved the VIP without havip");
    Ok(())
}

#[test]
fn keepalived_failover_and_spoofed_claim() -> Result<()> {
    Lab::start(LabId::unique("test"), true)?.run(failover_and_spoof)
}

/// `havipctl describe` shows the holder keepalived elected (the one in the
/// maps), since the failover began, and the failovers so far (when
/// `failovers` says how many); returns how many it shows.
fn described(
    ctl: &Ctl,
    g: Guest,
    kernel: &VipState,
    failovers: Option<u64>,
    not_before: &str,
) -> Result<u64> {
    let what = format!("havipctl describe to show {} holding at epoch {}", g.vnic, kernel.epoch);
    let h = ctl.wait_describe(&VIP.to_string(), &what, FAILOVER_TIMEOUT, |h| {
        h.holder.as_deref() == Some(g.vnic) && h.epoch == kernel.epoch
    })?;
    if let Some(n) = failovers {
        ensure!(h.failovers == n, "describe counts {} failovers, expected {n}", h.failovers);
    }
    ensure!(h.holder_instance.as_deref() == Some(g.name), "holder instance {:?}", h.holder_instance);
    // RFC 3339 in UTC with milliseconds: text order is time order.
    let since = h.since.context("describe shows no since-when")?;
    ensure!(since.as_str() >= not_before, "holder since {since}, but the failover began at {not_before}");
    Ok(h.failovers)
}

fn failover_and_spoof(lab: &mut Lab) -> Result<()> {
    let ctl = Ctl::of(lab)?;
    let prober = lab.prober(PROBE_INTERVAL)?;
    prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;
    let mac_before = lab.neigh_mac(VM_C, VIP)?.context("vm-c has no neighbour entry for the VIP")?;
    let (_, first) = lab.holder()?.context("no holder at the start")?;
    // keepalived may have moved the VIP before vm-a won the first election.
    let failovers = described(&ctl, VM_A, &first, None, &rfc3339(0))?;

    let failover_at = rfc3339(now_ms());
    lab.keepalived(VM_A)?.stop()?;
    let on_b = lab.wait_holder(VM_B, FAILOVER_TIMEOUT)?;
    described(&ctl, VM_B, &on_b, Some(failovers + 1), &failover_at)?;
    prober.wait_answered_by(VM_B.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-b")?;
    let mac_after = lab.neigh_mac(VM_C, VIP)?.context("vm-c lost its neighbour entry for the VIP")?;
    ensure!(
        mac_before == mac_after,
        "vm-c's neighbour entry for the VIP changed: {mac_before} -> {mac_after}"
    );

    let failback_at = rfc3339(now_ms());
    lab.keepalived(VM_A)?.restart()?;
    let back = lab.wait_holder(VM_A, FAILOVER_TIMEOUT)?;
    described(&ctl, VM_A, &back, Some(failovers + 2), &failback_at)?;
    ensure!(back.epoch > on_b.epoch, "epoch did not grow on failback: {} -> {}", on_b.epoch, back.epoch);
    prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a again")?;

    // vm-c, not a member, claims the VIP with a gratuitous ARP from its own MAC.
    let pins = lab.pin_dir();
    let rejected_before = state::vip_counters(&pins, VIP)?.get(VipCounter::ClaimsRejected);
    let (_, held) = lab.holder()?.context("no holder before the spoof")?;
    garp::send(&lab.topo.ns(VM_C), GUEST_IF, VIP, VM_C.mac())?;
    wait::until("claims_rejected to grow after vm-c's gratuitous ARP", FAILOVER_TIMEOUT, || {
        let now = state::vip_counters(&pins, VIP)?.get(VipCounter::ClaimsRejected);
        Ok((now > rejected_before).then_some(()))
    })?;
    let (holder, after) = lab.holder()?.context("no holder after the spoof")?;
    ensure!(holder == VM_A, "the spoof moved the VIP to {}", holder.name);
    ensure!(
        (after.holder_ifindex, after.holder_mac, after.epoch)
            == (held.holder_ifindex, held.holder_mac, held.epoch),
        "the spoof changed the holder: {held:?} -> {after:?}"
    );
    prober
        .wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT)
        .context("vm-c reaching the VIP on vm-a after the spoof")?;
    ensure!(
        lab.neigh_mac(VM_C, VIP)?.as_deref() == Some(mac_before.as_str()),
        "vm-c's neighbour entry changed"
    );
    let report = prober.finish();
    eprintln!("probe: sent {}, lost {}, spans {:?}", report.sent(), report.lost(), report.spans());
    Ok(())
}
