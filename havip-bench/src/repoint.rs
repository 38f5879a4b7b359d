//! Re-point latency: VIP traffic flows without pause from the client's vNIC
//! (back-to-back live-frames runs on the bench CPU) while real claims (GARPs,
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
//! flushed per batch, as in a NAPI poll), and the veth delivery. Traffic
//! runs are sized to last about a second; a failover that one ends in the
//! middle of is discarded and redone, and counted (`straddled`).

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use aya::programs::Xdp;
use havip_agent::datapath::maps::{KernelMaps, Maps};
use havip_common::{VipKey, VipState};

use crate::{
    cpu,
    fill::Plane,
    frames::{self, Frame},
    progs::{self, Sink},
    stop,
    topo::{Port, VIP},
};

/// About how long one traffic run lasts: each failover takes 0.1-1 ms, so
/// a run holds hundreds to thousands of them and its end (then the next
/// run's page-pool set-up) falls inside few.
const RUN: Duration = Duration::from_secs(1);

pub struct Member<'a> {
    pub port: &'a Port,
    pub sink: &'a mut Sink,
}

/// Sends a claim from `to` and checks that it made `to` the holder.
fn claim(prog: &Xdp, plane_maps: &KernelMaps, to: &Port) -> Result<VipState> {
    let (act, _) = progs::plain(prog, &frames::garp(to.guest_mac, VIP), to.host_ifindex, 1)?;
    ensure!(act == progs::XDP_DROP, "claim from {} returned {act}", to.host_name);
    let s = plane_maps.vip(&VipKey::from(VIP)).context("the VIP is not in the maps")?;
    ensure!(s.holder_ifindex == to.host_ifindex, "the claim from {} did not take the VIP", to.host_name);
    Ok(s)
}

/// Polls `done` until it holds, failing with `what` after `limit`. Between
/// polls it sleeps 20 µs: with real traffic the claim CPU is the
/// generator's, which must keep offering more than the forwarder takes (a
/// yield there still starved it: p99 235 µs of no traffic at all). Both
/// ends of a sample are stamped by the kernel, so polling late costs nothing.
fn wait_for(
    limit: Duration,
    what: impl FnOnce() -> String,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done()? {
        if Instant::now() > deadline {
            bail!("{}", what());
        }
        thread::sleep(Duration::from_micros(20));
    }
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

/// One failover from `from` (the holder) to `to`: ns from the claim's
/// acceptance to the first packet at `to`, or None if that may include a
/// pause between two traffic runs (the sample is then to be redone).
///
/// `runs` counts the traffic runs that have ended. It is read before the
/// claim and again once the first packet is stamped; and between the first
/// read and the claim `from` must receive a packet, which proves the run
/// current at that read was past its set-up (live frames reach the sink
/// within the run's own syscall). Same count: one run carried the traffic
/// from before the claim to the stamp.
fn failover(
    prog: &Xdp,
    plane_maps: &KernelMaps,
    from: &Member,
    to: &mut Member,
    runs: &AtomicU64,
) -> Result<Option<u64>> {
    let run = runs.load(Ordering::SeqCst);
    let flowing = from.sink.count()?;
    quiet(to.sink)?;
    wait_for(
        Duration::from_secs(1),
        || format!("VIP traffic stopped reaching {}, the holder", from.port.host_name),
        || Ok(from.sink.count()? > flowing),
    )?;
    to.sink.arm()?;
    let s = claim(prog, plane_maps, to.port)?;
    ensure!(s.since_ns == s.last_claim_ns, "the claim from {} did not move the holder", to.port.host_name);
    let mut first = 0;
    wait_for(
        Duration::from_millis(100),
        || format!("no VIP packet reached {} within 100 ms of its claim", to.port.host_name),
        || {
            first = to.sink.first_ns()?;
            Ok(first != 0)
        },
    )?;
    if runs.load(Ordering::SeqCst) != run {
        return Ok(None);
    }
    ensure!(first >= s.since_ns, "a packet reached {} before its claim", to.port.host_name);
    Ok(Some(first - s.since_ns))
}

pub struct Setup {
    /// Where claims are sent from, and where the calling thread is pinned
    /// again on return (the bench CPU).
    pub claim_cpu: usize,
    pub home_cpu: usize,
    /// Packets of the timed run that sizes the traffic runs.
    pub packets: u32,
}

/// Where the VIP traffic during the failovers comes from: `prog` run in
/// live-frames mode on `frame` arriving on `ingress`, from a thread in
/// namespace `ns` pinned to `cpu`. Either havip itself behind xdp_spray (the
/// one-core batches) or xdp_generate sending into the client's vNIC, whose
/// threaded NAPI poll then runs havip (real traffic).
pub struct Traffic<'a> {
    pub ns: &'a str,
    pub cpu: usize,
    pub prog: &'a Xdp,
    pub frame: Frame,
    pub ingress: u32,
}

impl Traffic<'_> {
    /// One run of `packets` frames in live batches of `batch`, from a
    /// thread of its own in `ns` on `cpu`. Returns its wall time.
    fn send(&self, packets: u32, batch: u32) -> Result<Duration> {
        havip_lab::netns::enter(self.ns)?;
        cpu::pin_to(self.cpu)?;
        progs::live(self.prog, &self.frame, self.ingress, packets, batch)
    }
}

/// What `n` failovers at one batch size gave.
pub struct Failovers {
    /// Claim -> first packet at the new holder, ns, one per failover, in order.
    pub ns: Vec<u64>,
    /// Packets per traffic run (about `RUN` each).
    pub packets_per_run: u32,
    /// Samples discarded and redone: a traffic run ended inside them.
    pub straddled: usize,
}

/// `n` failovers a -> b -> a ... under `traffic` sent in live batches of
/// `batch`. The calling thread must be in hv, and is pinned to `home_cpu`
/// on return. Member a holds the VIP on return, failed or not,
/// so what runs next finds it where the set-up put it.
pub fn run(
    setup: &Setup,
    traffic: &Traffic,
    plane: &mut Plane,
    a: &mut Member,
    b: &mut Member,
    n: usize,
    batch: u32,
) -> Result<Failovers> {
    let result = measure(setup, traffic, plane, a, b, n, batch);
    let prog = plane.dp.program()?;
    let restored = claim(prog, &plane.maps, a.port).context("giving the VIP back to member a");
    let after = restored.and(cpu::pin_to(setup.home_cpu));
    match (result, after) {
        (Ok(out), Ok(())) => Ok(out),
        (Ok(_), Err(e)) | (Err(e), Ok(())) => Err(e),
        (Err(e), Err(after)) => Err(anyhow!("{e:#}; and then {after:#}")),
    }
}

/// Packets for a run of about `RUN`, from one timed run of `setup.packets`
/// (which also checks that the traffic reaches member a, the holder).
fn size_runs(setup: &Setup, traffic: &Traffic, a: &Member, batch: u32) -> Result<u32> {
    let before = a.sink.count()?;
    let wall = thread::scope(|s| {
        s.spawn(|| traffic.send(setup.packets, batch))
            .join()
            .map_err(|_| anyhow!("the traffic thread panicked"))
    })??;
    ensure!(a.sink.settle(before + 1)? > before, "VIP traffic never reached member a, the holder");
    let per_run = f64::from(setup.packets) / wall.as_secs_f64() * RUN.as_secs_f64();
    Ok(per_run.clamp(1.0, f64::from(u32::MAX)) as u32)
}

fn measure(
    setup: &Setup,
    traffic: &Traffic,
    plane: &mut Plane,
    a: &mut Member,
    b: &mut Member,
    n: usize,
    batch: u32,
) -> Result<Failovers> {
    let Plane { dp, maps, .. } = plane;
    let prog: &Xdp = dp.program()?;
    claim(prog, maps, a.port)?;
    let per_run = size_runs(setup, traffic, a, batch).context("timing a traffic run")?;
    cpu::pin_to(setup.claim_cpu)?;

    let done = AtomicBool::new(false);
    let runs = AtomicU64::new(0);
    thread::scope(|s| {
        let sender = s.spawn(|| -> Result<()> {
            while !done.load(Ordering::Relaxed) {
                traffic.send(per_run, batch)?;
                runs.fetch_add(1, Ordering::SeqCst);
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
            let mut out = Failovers { ns: Vec::with_capacity(n), packets_per_run: per_run, straddled: 0 };
            let mut a_holds = true;
            while out.ns.len() < n {
                stop::check()?;
                let sample = if a_holds {
                    failover(prog, maps, a, b, &runs)?
                } else {
                    failover(prog, maps, b, a, &runs)?
                };
                a_holds = !a_holds;
                match sample {
                    Some(ns) => out.ns.push(ns),
                    None => out.straddled += 1,
                }
                ensure!(
                    out.straddled <= n,
                    "{} failovers straddled two traffic runs of {per_run} packets (about {RUN:?} each) \
                     while {} of {n} were measured",
                    out.straddled,
                    out.ns.len()
                );
            }
            Ok(out)
        })();
        done.store(true, Ordering::Relaxed);
        let sent = sender.join().map_err(|_| anyhow!("the traffic thread panicked"))?;
        sent.context("VIP traffic during failovers")?;
        result
    })
}
