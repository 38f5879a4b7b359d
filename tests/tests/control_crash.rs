//! Crash safety: the agent is killed with SIGKILL in the middle of a burst of
//! API writes and started again. Every acknowledged write is there, nothing
//! is half-written, the maps match the store, the holder is kept, and traffic
//! through the VIP never stopped.

mod control_support;

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    thread,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use control_support::{Ctl, OBSERVE_TIMEOUT};
use havip_lab::{
    netns::LabId,
    scenario::{Lab, FAILOVER_TIMEOUT},
    state,
    topology::{VIP, VM_A},
    wait,
};

const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Writes in the burst; the kill comes after [`KILL_AFTER`] acknowledgements.
const BURST: u8 = 100;
const KILL_AFTER: usize = 20;

/// Write `i` of the burst: a HAVIP and its EIP, created in one request.
fn vip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 100 + i)
}

fn eip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 100 + i)
}

#[test]
fn sigkill_mid_burst_keeps_every_acknowledged_write_and_the_holder() -> Result<()> {
    Lab::start(LabId::unique("test"), true)?.run(crash_mid_burst)
}

fn crash_mid_burst(lab: &mut Lab) -> Result<()> {
    let ctl = Ctl::of(lab)?;
    ctl.wait_describe(&VIP.to_string(), "vm-a to hold the VIP, as observed", OBSERVE_TIMEOUT, |h| {
        h.holder.as_deref() == Some(VM_A.vnic)
    })?;
    let prober = lab.prober(PROBE_INTERVAL)?;
    prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;
    let window = lab.timeline.now();
    let (_, held) = lab.holder()?.context("no holder before the crash")?;

    let acked = Mutex::new(Vec::new());
    let killed = AtomicBool::new(false);
    thread::scope(|s| -> Result<()> {
        let writer = s.spawn(|| -> Result<()> {
            let mut refused_since_kill = 0;
            for i in 0..BURST {
                let (v, e) = (vip(i).to_string(), eip(i).to_string());
                let out = ctl.run(&["create", "--subnet", "vpc1", "--vip", &v, "--eip", &e])?;
                if out.status.success() {
                    acked.lock().unwrap().push(i);
                } else if killed.load(Ordering::SeqCst) {
                    // The agent is gone: a few refused connections prove it.
                    refused_since_kill += 1;
                    if refused_since_kill == 3 {
                        break;
                    }
                } else {
                    anyhow::bail!(
                        "write {i} failed before the kill: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            Ok(())
        });
        wait::until("the first writes to be acknowledged", OBSERVE_TIMEOUT, || {
            Ok((acked.lock().unwrap().len() >= KILL_AFTER).then_some(()))
        })?;
        // Raised first: the writer may see the agent gone before kill() returns.
        killed.store(true, Ordering::SeqCst);
        lab.agent()?.kill()?;
        writer.join().expect("the writer does not panic")
    })?;
    let acked = acked.into_inner().unwrap();
    ensure!(acked.len() < BURST as usize, "the burst ended before the kill: nothing was cut short");
    lab.agent()?.restart().context("starting the agent after the crash")?;

    let desired = ctl.desired()?.state;
    for &i in &acked {
        let h =
            desired.havips.get(&vip(i)).with_context(|| format!("acknowledged HAVIP {} is lost", vip(i)))?;
        ensure!(h.eip == Some(eip(i)), "HAVIP {} lost its EIP: {h:?}", vip(i));
    }
    let burst: Vec<_> = desired.havips.values().filter(|h| h.vip.octets()[3] >= 100).collect();
    for h in &burst {
        let i = h.vip.octets()[3] - 100;
        ensure!(h.eip == Some(eip(i)), "HAVIP {} is half-written: {h:?}", h.vip);
    }
    // At most the write in flight at the kill may have landed unacknowledged.
    ensure!(
        burst.len() <= acked.len() + 1,
        "{} burst HAVIPs stored, {} acknowledged",
        burst.len(),
        acked.len()
    );
    ensure!(desired.havips.contains_key(&VIP), "the lab's HAVIP is gone");

    let pins = lab.pin_dir();
    for i in 0..BURST {
        let in_maps = state::vip_state(&pins, vip(i))?.is_some();
        ensure!(
            in_maps == desired.havips.contains_key(&vip(i)),
            "{}: in the maps {in_maps}, the store disagrees",
            vip(i)
        );
    }

    let (holder, after) = lab.holder()?.context("no holder after the crash")?;
    ensure!(holder == VM_A, "the holder moved to {} across the crash", holder.name);
    ensure!(
        (after.holder_ifindex, after.epoch) == (held.holder_ifindex, held.epoch),
        "the holder changed across the crash: {held:?} -> {after:?}"
    );
    let seen = ctl.describe(&VIP.to_string())?;
    ensure!(
        seen.holder.as_deref() == Some(VM_A.vnic) && seen.epoch == held.epoch,
        "describe after the crash: holder {:?} epoch {} (kernel: epoch {})",
        seen.holder,
        seen.epoch,
        held.epoch
    );

    prober
        .wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT)
        .context("vm-c reaching the VIP after the crash")?;
    let report = prober.finish().since(window);
    ensure!(
        report.lost() == 0,
        "{} of {} probes lost across the crash: {:?}",
        report.lost(),
        report.sent(),
        report.gaps()
    );
    eprintln!(
        "crash mid-burst: {} writes acknowledged, {} stored, {} probes through the VIP, none lost",
        acked.len(),
        burst.len(),
        report.sent()
    );
    Ok(())
}
