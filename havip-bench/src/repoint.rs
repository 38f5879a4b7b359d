//! Re-point latency: VIP traffic flows without pause from the client's vNIC
//! (one long live-frames run on the bench CPU) while real claims (GARPs,
//! test-run on the member's vNIC) alternate the holder from the other CPU.
//! Both ends are stamped by the kernel's own clock: `since_ns`, which
//! xdp_vnic writes into the VIP's state when it accepts the claim, and the
//! arrival of the first packet at the new holder's sink (xdp_sink_stamp).
//!
//! Why not a claim and then a burst, back to back: every live-frames run
//! starts by setting up a page pool, which took 4-40 ms here, so the burst
//! would time the harness. With traffic already flowing, what is measured
//! is what a guest would see: the holder change becoming visible to the
//! forwarding CPU, the rest of the batch that CPU is in (redirects are
//! flushed per batch, as in a NAPI poll), and the veth delivery.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use aya::programs::Xdp;
use havip_agent::datapath::maps::{KernelMaps, Maps};
use havip_common::VipKey;

use crate::{
    cpu,
    fill::Plane,
    frames,
    progs::{self, Sink},
    stop,
    topo::{Port, Topology, CLIENT_IP, VIP},
};

/// Tries at one batch size before giving up because a traffic run ended
/// mid-way (its page-pool set-up would be timed as latency).
const ATTEMPTS: usize = 3;

pub struct Member<'a> {
    pub port: &'a Port,
    pub sink: &'a mut Sink,
}

fn claim(prog: &Xdp, to: &Port) -> Result<()> {
    let (act, _) = progs::plain(prog, &frames::garp(to.guest_mac, VIP), to.host_ifindex, 1)?;
    ensure!(act == progs::XDP_DROP, "claim from {} returned {act}", to.host_name);
    Ok(())
}

/// Waits (bounded) until `sink` receives nothing for a while: frames the
/// forwarding CPU sent to a former holder just before the last claim may
/// still sit in its veth ring, and must not be stamped as the next arrival.
fn quiet(sink: &Sink) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(20);
    let mut last = sink.count()?;
    loop {
        thread::sleep(Duration::from_micros(50));
        let now = sink.count()?;
        if now == last {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "a member that does not hold the VIP keeps receiving its traffic");
        last = now;
    }
}

/// One failover to `to`: ns from the claim's acceptance to the first packet at `to`.
fn failover(prog: &Xdp, plane_maps: &KernelMaps, to: &mut Member) -> Result<u64> {
    quiet(to.sink)?;
    to.sink.arm()?;
    claim(prog, to.port)?;
    let s = plane_maps.vip(&VipKey::from(VIP)).context("the VIP is not in the maps")?;
    ensure!(
        s.holder_ifindex == to.port.host_ifindex,
        "the claim from {} did not take the VIP",
        to.port.host_name
    );
    ensure!(s.since_ns == s.last_claim_ns, "the claim from {} did not move the holder", to.port.host_name);
    let deadline = Instant::now() + Duration::from_millis(100);
    let first = loop {
        let f = to.sink.first_ns()?;
        if f != 0 {
            break f;
        }
        if Instant::now() > deadline {
            bail!("no VIP packet reached {} within 100 ms of its claim", to.port.host_name);
        }
    };
    ensure!(first >= s.since_ns, "a packet reached {} before its claim", to.port.host_name);
    Ok(first - s.since_ns)
}

pub struct Setup<'a> {
    pub topo: &'a Topology,
    /// Where the traffic runs (the bench CPU) and where claims are sent from.
    pub traffic_cpu: usize,
    pub claim_cpu: usize,
    /// Packets per traffic run: long enough to hold all failovers.
    pub packets: u32,
}

/// `n` failovers a -> b -> a ... under traffic sent in live batches of `batch`.
/// The calling thread must be in hv; it is left pinned to `claim_cpu`.
pub fn run<'a>(
    setup: &Setup,
    plane: &mut Plane,
    a: &mut Member<'a>,
    b: &mut Member<'a>,
    n: usize,
    batch: u32,
) -> Result<Vec<u64>> {
    let Plane { dp, maps, .. } = plane;
    let prog: &Xdp = dp.program()?;
    let topo = setup.topo;
    let traffic = frames::udp(topo.client.host_mac, topo.client.guest_mac, CLIENT_IP, VIP);
    cpu::pin_to(setup.claim_cpu)?;
    claim(prog, a.port)?;

    let done = AtomicBool::new(false);
    let runs = AtomicU64::new(0);
    thread::scope(|s| {
        let sender = s.spawn(|| -> Result<()> {
            havip_lab::netns::enter(topo.hv.name())?;
            cpu::pin_to(setup.traffic_cpu)?;
            while !done.load(Ordering::Relaxed) {
                progs::live(prog, &traffic, topo.client.host_ifindex, setup.packets, batch)?;
                runs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        let result = (|| {
            // Wait for traffic to reach a, the holder.
            let c0 = a.sink.count()?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while a.sink.count()? == c0 {
                ensure!(Instant::now() < deadline, "VIP traffic never reached member a");
                ensure!(!sender.is_finished(), "the traffic thread stopped");
                thread::sleep(Duration::from_micros(100));
            }
            for _ in 0..ATTEMPTS {
                let runs_before = runs.load(Ordering::Relaxed);
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    stop::check()?;
                    let to = if i % 2 == 0 { &mut *b } else { &mut *a };
                    out.push(failover(prog, maps, to)?);
                }
                // Back to a for the next attempt or batch size.
                if n % 2 == 1 {
                    failover(prog, maps, a)?;
                }
                if runs.load(Ordering::Relaxed) == runs_before {
                    return Ok(out);
                }
            }
            bail!("every attempt straddled two traffic runs: raise --packets")
        })();
        done.store(true, Ordering::Relaxed);
        let sent = sender.join().map_err(|_| anyhow::anyhow!("the traffic thread panicked"))?;
        sent.context("VIP traffic during failovers")?;
        result
    })
}
