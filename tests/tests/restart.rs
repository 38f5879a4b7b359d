//! A hitless agent restart: the agent stops and starts again while a client
//! sends through the VIP, and the data plane neither drops a packet nor
//! forgets who holds the VIP.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use havip_lab::{
    netns::LabId,
    scenario::{Lab, FAILOVER_TIMEOUT},
    topology::VM_A,
};

/// 200 packets/s.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Answers to see while the agent is down: one second of traffic.
const WHILE_STOPPED: usize = 200;

#[test]
fn agent_restart_is_hitless() -> Result<()> {
    Lab::start(LabId::unique("test"), true)?.run(restart_under_load)
}

fn restart_under_load(lab: &mut Lab) -> Result<()> {
    let prober = lab.prober(PROBE_INTERVAL)?;
    prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;
    // The window starts once the path is up (vm-c's first ARP for the VIP is behind us).
    let window = lab.timeline.now();
    let (holder, before) = lab.holder()?.context("no holder before the restart")?;
    ensure!(holder == VM_A, "{} holds the VIP, expected vm-a", holder.name);

    lab.agent()?.stop().context("stopping the agent")?;
    prober
        .wait_answered_by(VM_A.name, WHILE_STOPPED, FAILOVER_TIMEOUT)
        .context("traffic through the VIP while the agent is stopped")?;
    lab.agent()?.restart().context("starting the agent again")?;
    prober
        .wait_answered_by(VM_A.name, WHILE_STOPPED, FAILOVER_TIMEOUT)
        .context("traffic through the VIP after the agent restarted")?;

    let report = prober.finish().since(window);
    ensure!(report.sent() >= 2 * WHILE_STOPPED, "only {} probes in the window", report.sent());
    ensure!(
        report.lost() == 0,
        "{} of {} probes lost across the restart: gaps {:?}",
        report.lost(),
        report.sent(),
        report.gaps()
    );
    let (holder, after) = lab.holder()?.context("no holder after the restart")?;
    ensure!(holder == VM_A, "the holder moved to {} across the restart", holder.name);
    ensure!(
        (after.holder_ifindex, after.epoch) == (before.holder_ifindex, before.epoch),
        "the holder changed across the restart: ifindex {} epoch {} -> ifindex {} epoch {}",
        before.holder_ifindex,
        before.epoch,
        after.holder_ifindex,
        after.epoch
    );
    eprintln!("hitless restart: {} probes, none lost", report.sent());
    Ok(())
}
