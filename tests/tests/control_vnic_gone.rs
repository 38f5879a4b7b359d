//! A vNIC deleted under the holder: the HAVIP shows no holder within a
//! second (with an event saying why), and a claim by another member brings
//! traffic through the VIP back.

mod control_support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use control_support::{Ctl, OBSERVE_TIMEOUT};
use havip_lab::{
    cmd, garp,
    netns::LabId,
    scenario::{Lab, FAILOVER_TIMEOUT},
    topology::{Guest, GUEST_IF, VIP, VM_A, VM_B},
    wait,
};

const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// The product's promise: a dead port stops being the holder at once.
const CLEARED_WITHIN: Duration = Duration::from_secs(1);

#[test]
fn deleted_holder_vnic_clears_the_holder_and_another_claim_restores_traffic() -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        lab.start_responders()?;
        vnic_gone(lab)
    })
}

fn vnic_gone(lab: &mut Lab) -> Result<()> {
    let ctl = Ctl::of(lab)?;
    let vip = VIP.to_string();
    // No keepalived: the test puts the VIP on a guest and claims it, so
    // nothing else moves the VIP.
    let take_vip = |g: Guest| -> Result<()> {
        cmd::ip(&["-n", &lab.topo.ns(g), "addr", "add", &format!("{VIP}/32"), "dev", GUEST_IF])?;
        garp::send(&lab.topo.ns(g), GUEST_IF, VIP, g.mac())
    };
    take_vip(VM_A)?;
    let held = ctl.wait_describe(&vip, "vnic-a to hold the VIP", OBSERVE_TIMEOUT, |h| {
        h.holder.as_deref() == Some(VM_A.vnic)
    })?;
    let prober = lab.prober(PROBE_INTERVAL)?;
    prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;

    cmd::ip(&["-n", lab.topo.hv(), "link", "del", VM_A.vnic])?;
    let deleted = Instant::now();
    let cleared = ctl
        .wait_describe(&vip, "the HAVIP to show no holder", CLEARED_WITHIN, |h| h.holder.is_none())
        .context("within a second of deleting the holder's vNIC")?;
    eprintln!("holder cleared {:?} after the vNIC was deleted", deleted.elapsed());
    ensure!(cleared.epoch > held.epoch, "epoch did not grow: {} -> {}", held.epoch, cleared.epoch);
    let member =
        cleared.members.iter().find(|m| m.vnic == VM_A.vnic).context("vnic-a is no member any more")?;
    ensure!(member.link.to_string() == "absent", "vnic-a shows as {}", member.link);
    // Deleting a link first takes it down: either is the reason given.
    wait::until("events: the holder cleared for vnic-a, and vnic-a gone", OBSERVE_TIMEOUT, || {
        let events = ctl.ok(&["--json", "events"])?;
        let said = |kind: &str, text: &str| events.lines().any(|l| l.contains(kind) && l.contains(text));
        let cleared = said("\"holder_cleared\"", "vNIC vnic-a is down")
            || said("\"holder_cleared\"", "vNIC vnic-a is gone");
        Ok((cleared && said("\"vnic_gone\"", "vnic-a is gone")).then_some(()))
    })?;

    take_vip(VM_B)?;
    prober.wait_answered_by(VM_B.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-b")?;
    let now = ctl.wait_describe(&vip, "vnic-b to hold the VIP", OBSERVE_TIMEOUT, |h| {
        h.holder.as_deref() == Some(VM_B.vnic)
    })?;
    ensure!(now.failovers == held.failovers + 1, "failovers {} -> {}", held.failovers, now.failovers);

    // Prometheus says the same, and counts the traffic that went through.
    let metrics = control_support::metrics(lab)?;
    let sample = |name: &str| {
        let key = format!("{name}{{vip=\"{VIP}\"}}");
        metrics.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).with_context(|| format!("no metric {key}"))
    };
    ensure!(sample("havip_vip_held")? == 1.0, "havip_vip_held is not 1");
    ensure!(sample("havip_vip_failovers_total")? == now.failovers as f64, "failovers differ from describe");
    ensure!(sample("havip_vip_epoch")? == now.epoch as f64, "epoch differs from describe");
    ensure!(sample("havip_vip_redirect_packets_total")? > 0.0, "no redirected packet counted");
    Ok(())
}

/// A vNIC registered before its link exists: the agent attaches as soon as
/// the link appears, and again when it is made anew.
#[test]
fn a_vnic_is_attached_when_it_appears_and_when_it_is_made_again() -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        vnic_appears(lab)
    })
}

fn vnic_appears(lab: &mut Lab) -> Result<()> {
    let ctl = Ctl::of(lab)?;
    let hv = lab.topo.hv().to_owned();
    let vip = VIP.to_string();
    ctl.ok(&[
        "vnic",
        "add",
        "vnic-d",
        "--instance",
        "vm-d",
        "--subnet",
        "vpc1",
        "--ip",
        "198.18.1.14",
        "--mac",
        "02:00:c6:12:01:0e",
    ])?;
    ctl.ok(&["associate", &vip, "vnic-d"])?;
    let link_of = |h: &havip_api::view::HavipView| {
        h.members.iter().find(|m| m.vnic == "vnic-d").map(|m| m.link.to_string())
    };
    ensure!(link_of(&ctl.describe(&vip)?).as_deref() == Some("absent"), "vnic-d shows before it exists");

    for round in ["appears", "is made again"] {
        if round != "appears" {
            cmd::ip(&["-n", &hv, "link", "del", "vnic-d"])?;
        }
        cmd::ip(&["-n", &hv, "link", "add", "vnic-d", "type", "veth", "peer", "name", "peer-d"])?;
        cmd::ip(&["-n", &hv, "link", "set", "peer-d", "up"])?;
        cmd::ip(&["-n", &hv, "link", "set", "vnic-d", "up"])?;
        wait::until(&format!("xdp_vnic on vnic-d once it {round}"), OBSERVE_TIMEOUT, || {
            let link = cmd::ip(&["-n", &hv, "-d", "link", "show", "vnic-d"])?;
            Ok(link.contains("xdp_vnic").then_some(()))
        })?;
        ctl.wait_describe(&vip, &format!("vnic-d up as a member once it {round}"), OBSERVE_TIMEOUT, |h| {
            link_of(h).as_deref() == Some("up")
        })?;
    }
    // peer-d runs no XDP program: the agent says so, by name; the lab's
    // vNICs (whose peers run xdp_pass) draw no such warning.
    wait::until("a peer_without_xdp event naming vnic-d and peer-d", OBSERVE_TIMEOUT, || {
        let events = ctl.ok(&["--json", "events"])?;
        let warned = |vnic: &str| {
            events
                .lines()
                .any(|l| l.contains("\"peer_without_xdp\"") && l.contains(&format!("\"vnic\":\"{vnic}\"")))
        };
        ensure!(!warned(VM_A.vnic) && !warned(VM_B.vnic), "a lab vNIC drew a warning:\n{events}");
        Ok((warned("vnic-d") && events.contains("peer peer-d runs no XDP program")).then_some(()))
    })?;
    Ok(())
}
