//! Real traffic: what an operator's host does, on two cores. A generator
//! (xdp_generate, live frames in the client's namespace, on the generator
//! CPU) sends frames into the client's vNIC; on the host side that veth's
//! NAPI poll runs threaded, pinned to the forwarder CPU, and runs the program
//! under test there on every frame, as a NIC's receive path would: the
//! limit, havip (attached by the agent's own loader), or kernel forwarding
//! (xdp_pass, then the IPv4 stack). What it forwards reaches member a's
//! counting sink. The generator offers more than any forwarder takes, so the
//! sink's rate is the forwarder's.
//!
//! Unlike the test-run figures this includes everything around the program:
//! the veth ring, the xdp_frame conversion, the devmap flush and the next
//! veth's transmit, all on the forwarder CPU, with caches shared with them.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use aya::{maps::DevMap, programs::Xdp, Ebpf};
use havip_lab::cmd::in_ns;

use crate::{
    cpu,
    fill::Plane,
    frames::Frame,
    progs::{self, Lab, Sink, LIVE_BATCH},
    repoint,
    report::{Named, RealTraffic},
    stats::Spread,
    stop,
    topo::{self, Topology},
};

/// The program under test on the client's vNIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarder {
    /// xdp_limit: fixed MACs and a devmap redirect, nothing else.
    Limit,
    /// xdp_vnic, attached with the agent's loader to the production-like plane.
    Havip,
    /// xdp_pass: every frame goes up the kernel's IPv4 forwarding path.
    Kernel,
}

impl Forwarder {
    pub const ALL: [Forwarder; 3] = [Forwarder::Limit, Forwarder::Havip, Forwarder::Kernel];

    pub fn name(self) -> &'static str {
        match self {
            Forwarder::Limit => "limit",
            Forwarder::Havip => "havip",
            Forwarder::Kernel => "kernel",
        }
    }
}

/// xdp_generate, loaded in the client's namespace, sending into its guest end.
struct Generator {
    ebpf: Ebpf,
    ingress: u32,
}

impl Generator {
    const PROG: &str = "xdp_generate";

    /// Loaded on a thread inside the client's namespace: the devmap entry
    /// and the test run's ingress resolve ifindexes there.
    fn for_client(topo: &Topology) -> Result<Self> {
        let guest = topo.client.guest_name;
        let ifindex = topo::ifindex(topo.src.name(), guest)?;
        havip_lab::netns::run_in(topo.src.name(), move || Self::load(guest, ifindex))
    }

    fn load(ifname: &str, ifindex: u32) -> Result<Self> {
        let mut ebpf = Ebpf::load(havip_ebpf::LAB_OBJ).context("loading the lab object")?;
        progs::load(&mut ebpf, Self::PROG)?;
        let mut port: DevMap<_> = ebpf.map_mut("gen_port").context("gen_port missing")?.try_into()?;
        port.set(0, ifindex, None, 0).with_context(|| format!("sending into {ifname}"))?;
        Ok(Self { ebpf, ingress: ifindex })
    }

    fn set_frame(&mut self, frame: &Frame) -> Result<()> {
        let mut t: aya::maps::Array<_, Frame> =
            self.ebpf.map_mut("frame_template").context("frame_template missing")?.try_into()?;
        t.set(0, frame, 0).context("setting the generator's frame")
    }

    fn prog(&self) -> Result<&Xdp> {
        progs::xdp(&self.ebpf, Self::PROG)
    }
}

/// The client vNIC's host end with its NAPI poll in a kernel thread of its
/// own, pinned to one CPU; put back as it was on drop.
struct ThreadedNapi<'a> {
    ns: &'a str,
    ifname: &'a str,
}

/// Kernel threads named `napi/<ifname>-<napi id>` (see `napi_kthread_create`).
fn napi_threads(ifname: &str) -> Result<Vec<i32>> {
    let prefix = format!("napi/{ifname}-");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").context("reading /proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with(&prefix)) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

impl<'a> ThreadedNapi<'a> {
    /// GRO on first: a veth has a NAPI context only with GRO or an XDP
    /// program, and GRO keeps it (and its thread) while programs are swapped.
    /// `ip netns exec` because sysfs shows the namespace it was mounted in.
    fn enable(ns: &'a str, ifname: &'a str, cpu: usize) -> Result<Self> {
        let before = napi_threads(ifname)?;
        let this = Self { ns, ifname };
        in_ns(ns, "ethtool", &["-K", ifname, "gro", "on"])?;
        in_ns(ns, "sh", &["-c", &format!("echo 1 > /sys/class/net/{ifname}/threaded")])?;
        let ours: Vec<i32> = napi_threads(ifname)?.into_iter().filter(|p| !before.contains(p)).collect();
        ensure!(!ours.is_empty(), "no NAPI thread appeared for {ifname} after enabling threaded NAPI");
        for pid in ours {
            cpu::pin_pid_to(pid, cpu).with_context(|| format!("pinning {ifname}'s NAPI thread {pid}"))?;
        }
        Ok(this)
    }
}

impl Drop for ThreadedNapi<'_> {
    fn drop(&mut self) {
        let off = format!("echo 0 > /sys/class/net/{}/threaded", self.ifname);
        let restore = in_ns(self.ns, "sh", &["-c", &off])
            .and_then(|_| in_ns(self.ns, "ethtool", &["-K", self.ifname, "gro", "off"]));
        if let Err(e) = restore {
            eprintln!("havip-bench: cleanup: {e:#}");
        }
    }
}

/// Waits (bounded) until the sink stops counting: the frames still in the
/// veth rings when the generator returns arrive within microseconds.
fn drained(sink: &Sink) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut last = sink.count()?;
    loop {
        thread::sleep(Duration::from_millis(2));
        let now = sink.count()?;
        if now == last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Keeps `cpu` busy at the lowest priority (SCHED_IDLE) until `stop`: the
/// forwarder's NAPI thread then never waits for the CPU to leave an idle
/// state between bursts, and still preempts this at once.
fn spin_idle(cpu: usize, stop: &AtomicBool) -> Result<()> {
    cpu::pin_to(cpu)?;
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is this thread; param is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(std::io::Error::last_os_error()).context("SCHED_IDLE for the spinner");
    }
    while !stop.load(Ordering::Relaxed) {
        std::hint::spin_loop();
    }
    Ok(())
}

/// What the real-traffic part needs from the rest of the bench.
pub struct Setup<'a> {
    pub topo: &'a Topology,
    pub lab: &'a mut Lab,
    pub havip: &'a mut Plane,
    pub sink: &'a Sink,
    /// What the limit and havip are sent (the VIP's virtual MAC), and what
    /// the kernel is sent (the host's MAC).
    pub to_vmac: Frame,
    pub to_host: Frame,
    pub generator_cpu: usize,
    pub forwarder_cpu: usize,
    pub packets: u32,
    pub rounds: usize,
}

impl Setup<'_> {
    /// Puts `f` on the client's vNIC, runs the generator for `packets`
    /// frames, takes `f` off. Returns (delivered, offered) packets/s.
    fn measure(&mut self, generator: &mut Generator, f: Forwarder) -> Result<(f64, f64)> {
        let vnic = self.topo.client.host_name;
        let (frame, lab_prog) = match f {
            Forwarder::Limit => (self.to_vmac, Some(Lab::LIMIT)),
            Forwarder::Havip => (self.to_vmac, None),
            Forwarder::Kernel => (self.to_host, Some(Lab::EMPTY)),
        };
        generator.set_frame(&frame)?;
        let link = match lab_prog {
            Some(p) => Some((p, self.lab.attach(p, vnic)?)),
            None => {
                self.havip.dp.attach(vnic)?;
                None
            }
        };
        let sent = self.send(generator, &frame);
        let detached = match link {
            Some((p, id)) => self.lab.detach(p, id),
            None => self.havip.dp.detach(vnic),
        };
        let (before, wall, after) = sent?;
        detached?;
        let delivered = after - before;
        ensure!(delivered > 0, "{}: nothing reached member a", f.name());
        let secs = wall.as_secs_f64();
        Ok((delivered as f64 / secs, f64::from(self.packets) / secs))
    }

    /// One generator run with the spinner on the forwarder CPU. Returns the
    /// sink's count before, the generator's wall time and the drained count.
    fn send(&self, generator: &Generator, frame: &Frame) -> Result<(u64, Duration, u64)> {
        let before = drained(self.sink)?;
        let stop = AtomicBool::new(false);
        let topo = self.topo;
        let wall = thread::scope(|s| {
            let spinner = s.spawn(|| spin_idle(self.forwarder_cpu, &stop));
            let sender = s.spawn(|| -> Result<Duration> {
                havip_lab::netns::enter(topo.src.name())?;
                cpu::pin_to(self.generator_cpu)?;
                progs::live(generator.prog()?, frame, generator.ingress, self.packets, LIVE_BATCH)
            });
            let wall = sender.join().map_err(|_| anyhow::anyhow!("the generator panicked"));
            stop.store(true, Ordering::Relaxed);
            let spun = spinner.join().map_err(|_| anyhow::anyhow!("the spinner panicked"));
            let wall = wall??;
            spun??;
            Ok::<_, anyhow::Error>(wall)
        })?;
        Ok((before, wall, drained(self.sink)?))
    }
}

fn mpps(rounds: &[Vec<(f64, f64)>], i: usize, offered: bool) -> Spread {
    Spread::of(&rounds.iter().map(|r| if offered { r[i].1 } else { r[i].0 } / 1e6).collect::<Vec<_>>())
}

/// Measures every forwarder `setup.rounds` times, the order rotated each
/// round after one warm-up run each. The calling thread must be in hv.
pub fn run(mut setup: Setup) -> Result<RealTraffic> {
    let topo = setup.topo;
    let mut generator = Generator::for_client(topo)?;
    let _napi = ThreadedNapi::enable(topo.hv.name(), topo.client.host_name, setup.forwarder_cpu)?;

    let n = Forwarder::ALL.len();
    for f in Forwarder::ALL {
        setup.measure(&mut generator, f).with_context(|| format!("warm-up of {}", f.name()))?;
    }
    let mut rounds = Vec::with_capacity(setup.rounds);
    for r in 0..setup.rounds {
        let mut row = vec![(0.0, 0.0); n];
        for k in 0..n {
            stop::check()?;
            let i = (r + k) % n;
            row[i] = setup.measure(&mut generator, Forwarder::ALL[i]).context(Forwarder::ALL[i].name())?;
        }
        rounds.push(row);
    }
    let named = |offered| {
        Forwarder::ALL
            .iter()
            .enumerate()
            .map(|(i, f)| Named { name: f.name().into(), value: mpps(&rounds, i, offered) })
            .collect()
    };
    let ratio = |name: &str, a: usize, b: usize| Named {
        name: name.into(),
        value: Spread::of(&rounds.iter().map(|r| r[a].0 / r[b].0).collect::<Vec<_>>()),
    };
    Ok(RealTraffic {
        generator_cpu: setup.generator_cpu,
        forwarder_cpu: setup.forwarder_cpu,
        packets_per_run: setup.packets,
        throughput: named(false),
        offered: named(true),
        ratios: vec![
            ratio("havip / limit", 1, 0),
            ratio("havip / kernel", 1, 2),
            ratio("limit / kernel", 0, 2),
        ],
    })
}

/// Real VIP traffic left flowing for another part (the re-point latency):
/// havip attached to the client's vNIC by the agent's loader, that vNIC's
/// NAPI threaded on the forwarder CPU (kept out of idle by a spinner), and
/// the generator loaded, ready to send. Undone by [`Source::stop`]; the
/// spinner also stops on drop.
pub struct Source<'a> {
    topo: &'a Topology,
    generator: Generator,
    generator_cpu: usize,
    frame: Frame,
    napi: Option<ThreadedNapi<'a>>,
    spinning: Arc<AtomicBool>,
    spinner: Option<thread::JoinHandle<Result<()>>>,
}

impl<'a> Source<'a> {
    /// The calling thread must be in hv.
    pub fn start(
        topo: &'a Topology,
        havip: &mut Plane,
        frame: Frame,
        generator_cpu: usize,
        forwarder_cpu: usize,
    ) -> Result<Self> {
        let mut generator = Generator::for_client(topo)?;
        generator.set_frame(&frame)?;
        let napi = ThreadedNapi::enable(topo.hv.name(), topo.client.host_name, forwarder_cpu)?;
        havip.dp.attach(topo.client.host_name)?;
        let spinning = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&spinning);
        let spinner = thread::spawn(move || spin_idle(forwarder_cpu, &stop));
        Ok(Self { topo, generator, generator_cpu, frame, napi: Some(napi), spinning, spinner: Some(spinner) })
    }

    /// The traffic for [`repoint::run`]: the generator, in the client's namespace.
    pub fn traffic(&self) -> Result<repoint::Traffic<'_>> {
        Ok(repoint::Traffic {
            ns: self.topo.src.name(),
            cpu: self.generator_cpu,
            prog: self.generator.prog()?,
            frame: self.frame,
            ingress: self.generator.ingress,
        })
    }

    /// Detaches havip and puts the vNIC and the forwarder CPU back.
    pub fn stop(mut self, havip: &mut Plane) -> Result<()> {
        let detached = havip.dp.detach(self.topo.client.host_name);
        let spun = self.stop_spinner();
        self.napi.take();
        detached.and(spun)
    }

    fn stop_spinner(&mut self) -> Result<()> {
        self.spinning.store(true, Ordering::Relaxed);
        match self.spinner.take() {
            Some(h) => h.join().map_err(|_| anyhow::anyhow!("the spinner panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Source<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.stop_spinner() {
            eprintln!("havip-bench: cleanup: {e:#}");
        }
    }
}
