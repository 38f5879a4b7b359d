//! An EIP in front of the HAVIP: a real TCP service in both members, fetched
//! from outside through the EIP before and after keepalived moves the VIP;
//! a steady probe from outside sees no more outage than keepalived makes;
//! and a standby's packets from the VIP never leave through the EIP.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use havip_common::VipCounter;
use havip_lab::{
    frames, garp,
    netns::LabId,
    scenario::{Lab, FAILOVER_TIMEOUT},
    state,
    topology::{GUEST_IF, INET_IP, VIP, VM_A, VM_B},
    wait,
};

const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// What the platform may add to keepalived's own outage, as the outside
/// probe sees it: two probe intervals, plus scheduling slack for a loaded
/// 2-core CI machine running tests in parallel.
const PLATFORM_SLACK: Duration = Duration::from_millis(60);

#[test]
fn eip_follows_keepalived_failover_for_an_outside_client() -> Result<()> {
    Lab::start(LabId::unique("test"), true)?.run(eip_failover)
}

fn eip_failover(lab: &mut Lab) -> Result<()> {
    ensure!(lab.fetch_via_eip()? == VM_A.name, "before failover the EIP must be served by vm-a");
    let outside = lab.prober_from_inet(PROBE_INTERVAL)?;
    outside.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("inet reaching the EIP on vm-a")?;

    let stopped_at = lab.timeline.now();
    lab.keepalived(VM_A)?.stop()?;
    lab.wait_holder(VM_B, FAILOVER_TIMEOUT)?;
    outside.wait_answered_by(VM_B.name, 20, FAILOVER_TIMEOUT).context("inet reaching the EIP on vm-b")?;
    ensure!(lab.fetch_via_eip()? == VM_B.name, "after failover the EIP must be served by vm-b");

    // keepalived's own outage ends when vm-b enters MASTER; the outside
    // probe's outage must end right after it.
    let master_at = lab
        .timeline
        .lines()
        .iter()
        .find(|l| {
            l.at >= stopped_at && l.source == "keepalived vm-b" && l.text.contains("Entering MASTER STATE")
        })
        .map(|l| l.at)
        .context("no 'Entering MASTER STATE' from vm-b's keepalived")?;
    let report = outside.finish().since(stopped_at);
    let gap = report.longest_gap().context("stopping the holder caused no outage at all?")?;
    eprintln!("outside outage {:?} .. {:?}; vm-b MASTER at {master_at:?}", gap.from, gap.to);
    ensure!(
        gap.to <= master_at + PLATFORM_SLACK,
        "the outside saw answers again only at {:?}, {:?} after keepalived's vm-b became MASTER",
        gap.to,
        gap.to.saturating_sub(master_at)
    );
    ensure!(report.gaps().len() == 1, "more than one outage: {:?}", report.gaps());
    Ok(())
}

/// A UDP datagram from the VIP to the outside host, as vm-b (standby) would
/// send it: Ethernet to the host's vNIC, IPv4 with a valid checksum.
fn from_vip_frame(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let datagram = frames::udp(5050, 5050, b"standby speaking from the VIP");
    frames::ipv4(src_mac, dst_mac, VIP.octets(), INET_IP.octets(), frames::IPPROTO_UDP, &datagram)
}

#[test]
fn a_standby_never_sends_through_the_eip() -> Result<()> {
    Lab::start(LabId::unique("test"), true)?.run(standby_blocked)
}

fn standby_blocked(lab: &mut Lab) -> Result<()> {
    let pins = lab.pin_dir();
    let before = state::vip_counters(&pins, VIP)?;
    let host_mac = lab.host_mac(VM_B)?;
    garp::send_frame(&lab.topo.ns(VM_B), GUEST_IF, from_vip_frame(host_mac, VM_B.mac()))?;
    wait::until("eip_out_not_holder to count vm-b's packet", FAILOVER_TIMEOUT, || {
        let now = state::vip_counters(&pins, VIP)?;
        Ok((now.get(VipCounter::EipOutNotHolder) > before.get(VipCounter::EipOutNotHolder)).then_some(now))
    })
    .and_then(|now| {
        ensure!(
            now.get(VipCounter::EipOutPackets) == before.get(VipCounter::EipOutPackets),
            "a standby's packet left through the EIP"
        );
        Ok(())
    })
}
