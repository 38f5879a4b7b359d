//! havip-bench (`cargo xtask bench`): havip's XDP fast path against the
//! practical XDP limit and plain kernel forwarding, as paired ratios taken in
//! one run: on real traffic over two cores (the headline, realtraffic.rs) and
//! on one core with BPF_PROG_TEST_RUN live frames, plus per-branch cost, the
//! HAVIP-count scale curve and re-point latency. See issues 5 and 13.
//!
//! The run is a list of parts (`report::Part`), each measured on its own by
//! `Parts::measure`: a part that fails is recorded with why and the next one
//! still runs, so the table, the JSON and the plot are always written; the
//! exit status then says that something failed.

mod branches;
mod control;
mod cpu;
mod cscale;
mod encap;
mod failover;
mod fill;
mod flood;
mod frames;
mod livefire;
mod plot;
mod progs;
mod realtraffic;
mod repoint;
mod report;
mod stats;
mod stop;
mod topo;
mod xhost;

use std::{
    fs,
    path::PathBuf,
    process::ExitCode,
    thread,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use aya::programs::Xdp;
use clap::{Parser, ValueEnum};

use crate::{
    branches::Branch,
    fill::{Pins, Plane},
    frames::Frame,
    livefire::Path,
    progs::{Lab, Sink, Spray},
    report::{
        repoint_title, Branches, Control, FailedPart, Latency, Machine, Named, Part, ProgInfo, RealTraffic,
        Repoint, RepointRun, Results, ScalePoint, Settings, Throughput,
    },
    stats::{percentile, Spread},
    topo::{Topology, CLIENT_IP, NOT_A_VIP, VIP, VIP_NO_HOLDER},
};

#[derive(Parser)]
#[command(about = "havip's XDP fast path against the XDP limit and the kernel, as ratios in one run")]
struct Args {
    /// Rounds of every measurement (order rotated each round).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Packets per live run of an XDP path.
    #[arg(long, default_value_t = 2_000_000)]
    packets: u32,
    /// Packets per live run of kernel forwarding (about 4x slower).
    #[arg(long, default_value_t = 500_000)]
    kernel_packets: u32,
    /// HAVIPs in the production-like maps (10 members each).
    #[arg(long, default_value_t = 10_000)]
    havips: u32,
    /// Failovers for the re-point latency (per batch size).
    #[arg(long, default_value_t = 1000)]
    failovers: usize,
    /// keepalived failover cycles in the lab (each: vm-a stops, then preempts back); 0 skips.
    #[arg(long, default_value_t = 5)]
    keepalived_cycles: usize,
    /// Failovers (vm-a <-> vm-b) per cross-host re-point part.
    #[arg(long, default_value_t = 50)]
    cross_host_failovers: usize,
    /// Claims committed per host count in the control-plane scale part.
    #[arg(long, default_value_t = 100)]
    scale_commits: usize,
    /// Copies delivered per live run of the flood part (input frames: this ÷ copies per frame).
    #[arg(long, default_value_t = 250_000)]
    flood_copies: u32,
    /// Only these parts (comma-separated; default: all); the others are recorded as skipped.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// The CPU every measurement runs on (default: the last one).
    #[arg(long)]
    cpu: Option<usize>,
    /// Where the JSON and the SVG go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// HAVIPs in the map for the scale curve; 10,000 is the production-like size.
const SCALE: [u32; 4] = [1, 1_000, 10_000, 100_000];
const MEMBERS: u32 = 10;
/// Live batch sizes of the traffic during failovers: full NAPI-sized batches
/// (the throughput runs' setting), and one frame at a time (light load).
const REPOINT_BATCHES: [u32; 2] = [progs::LIVE_BATCH, 1];

fn main() -> ExitCode {
    match run() {
        Ok(failed) if failed.is_empty() => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("havip-bench: the other figures are written; failed: {}", failed.join("; "));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("havip-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which parts this run measures, and what became of them.
struct Parts {
    only: Vec<Part>,
    failed: Vec<FailedPart>,
    skipped: Vec<String>,
}

impl Parts {
    /// Measures the part titled `title` (one of kind `part`) with `f`, if
    /// that kind was asked for: its figures, or None with the part recorded
    /// as skipped, or as failed with `f`'s error (and the run goes on).
    /// Only an interruption (Ctrl-C, SIGTERM) is an error here: it ends the
    /// whole run.
    fn measure<T>(&mut self, part: Part, title: &str, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        if !self.only.contains(&part) {
            self.skipped.push(title.to_owned());
            return Ok(None);
        }
        stop::check()?;
        eprintln!("havip-bench: {title}");
        match f() {
            Ok(figures) => Ok(Some(figures)),
            Err(e) => {
                stop::check()?;
                eprintln!("havip-bench: {title} FAILED: {e:#}");
                self.failed.push(FailedPart { part: title.to_owned(), error: format!("{e:#}") });
                Ok(None)
            }
        }
    }
}

/// Runs every part asked for, then writes the table, the JSON and the plot
/// whatever failed. Returns the titles of the parts that failed.
fn run() -> Result<Vec<String>> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("havip-bench needs root (namespaces, XDP, bpffs)");
    }
    if args.rounds == 0 || args.failovers == 0 {
        bail!("--rounds and --failovers must be at least 1");
    }
    let cpus = thread::available_parallelism()?.get();
    let bench_cpu = args.cpu.unwrap_or(cpus - 1);
    if bench_cpu >= cpus {
        bail!("--cpu {bench_cpu}: this machine has {cpus} CPUs");
    }
    let mut parts = Parts {
        only: if args.only.is_empty() { Part::value_variants().to_vec() } else { args.only.clone() },
        failed: Vec::new(),
        skipped: Vec::new(),
    };
    if args.keepalived_cycles == 0 {
        parts.only.retain(|&p| p != Part::Keepalived);
    }
    stop::install();
    havip_lab::netns::sweep_stale()?;

    let mut results = Results {
        machine: Machine {
            kernel: kernel_release(),
            cpu_model: cpu_model(),
            cpus,
            bench_cpu,
            started_unix_s: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
            commit: commit(),
        },
        settings: Settings {
            rounds: args.rounds,
            xdp_packets_per_run: args.packets,
            kernel_packets_per_run: args.kernel_packets,
            frame_bytes: frames::LEN,
            live_batch: progs::LIVE_BATCH,
            havips: args.havips,
            members_per_havip: MEMBERS,
            failovers: args.failovers,
        },
        failed: Vec::new(),
        skipped: Vec::new(),
        throughput: None,
        real_traffic: None,
        scale: None,
        branches: None,
        repoint: Vec::new(),
        control: None,
        agent: None,
        keepalived: None,
        encap: None,
        cross_host: Vec::new(),
        control_scale: None,
        flood: None,
        programs: Vec::new(),
        goals: Vec::new(),
    };

    // Owned here, so they are removed after the worker is done, whatever it returned.
    let topo = Topology::build()?;
    let pins = Pins::new();
    thread::scope(|s| {
        // Made and dropped in the bench thread, which enters the namespaces.
        s.spawn(|| {
            let bench = Bench { args: &args, topo: &topo, pins: &pins, cpus, bench_cpu, bed: None };
            bench.run(&mut parts, &mut results)
        })
        .join()
        .map_err(|_| anyhow!("the bench thread panicked"))?
    })?;
    drop(pins);
    drop(topo);

    results.agent = parts.measure(Part::Control, Part::Control.title(), || {
        let agent_pins = Pins::new();
        control::run(args.havips, &agent_pins.root("agent"))
    })?;
    results.keepalived = parts
        .measure(Part::Keepalived, Part::Keepalived.title(), || failover::run(args.keepalived_cycles))?;
    for hints in [false, true] {
        let measured = parts.measure(Part::CrossHost, &report::cross_host_title(hints), || {
            xhost::run(hints, args.cross_host_failovers)
        })?;
        results.cross_host.push(report::CrossHostRun { hints, measured });
    }
    results.control_scale =
        parts.measure(Part::ControlScale, Part::ControlScale.title(), || cscale::run(args.scale_commits))?;
    results.failed = parts.failed;
    results.skipped = parts.skipped;
    results.goals = report::goals(&results);
    report::print(&results);
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    report::write_json(&args.out, &results, stamp)?;
    plot::write(&args.out.join("bench.svg"), &results)?;
    println!("\nwrote {0}/latest.json, {0}/bench-{stamp}.json, {0}/bench.svg", args.out.display());
    Ok(results.failed.into_iter().map(|f| f.part).collect())
}

fn mpps(rounds: &[Vec<f64>], i: usize) -> Spread {
    Spread::of(&rounds.iter().map(|r| r[i] / 1e6).collect::<Vec<_>>())
}

fn ratio(rounds: &[Vec<f64>], a: usize, b: usize) -> Spread {
    Spread::of(&rounds.iter().map(|r| r[a] / r[b]).collect::<Vec<_>>())
}

fn latency(mut ns: Vec<u64>) -> Latency {
    ns.sort_unstable();
    Latency { p50_ns: percentile(&ns, 50.0), p99_ns: percentile(&ns, 99.0), max_ns: percentile(&ns, 100.0) }
}

fn prog_info(name: &str, prog: &Xdp) -> Result<ProgInfo> {
    let info = prog.info().with_context(|| format!("info of {name}"))?;
    Ok(ProgInfo {
        name: name.to_owned(),
        xlated_insns: info.size_translated().unwrap_or(0) / 8,
        jited_bytes: info.size_jitted(),
        verified_insns: info.verified_instruction_count().unwrap_or(0),
    })
}

/// What the parts in the namespaces share, set up once by the first of
/// them: the bench thread in hv, pinned; the sinks; the lab object; the
/// production-like plane.
struct Bed {
    sink_a: Sink,
    sink_b: Sink,
    lab: Lab,
    prod: Plane,
    /// What clients send after resolving the VIP by ARP: to its virtual MAC
    /// (the VIP has the same slot in every plane).
    to_vmac: Frame,
    /// The same to the host's MAC: what the kernel routes.
    to_vip: Frame,
    vip_slot: u32,
    /// The reconcile that filled `prod`.
    control: Control,
    programs: Vec<ProgInfo>,
}

impl Bed {
    /// Enters the namespaces and loads everything; the calling thread is
    /// left in hv, pinned to `bench_cpu`.
    fn load(args: &Args, topo: &Topology, pins: &Pins, bench_cpu: usize) -> Result<Self> {
        havip_lab::netns::enter(topo.sink.name())?;
        let sink_a = Sink::attach(topo.a.guest_name)?;
        let sink_b = Sink::attach(topo.b.guest_name)?;
        havip_lab::netns::enter(topo.hv.name())?;
        cpu::pin_to(bench_cpu)?;
        eprintln!(
            "havip-bench: loading; {} HAVIPs × {MEMBERS} members through the agent's reconciler",
            args.havips
        );
        let lab = Lab::load(&topo.a, (0..args.havips).map(fill::vip_addr))?;
        let (mut prod, reconcile_time) = fill::production(pins, topo, args.havips)?;
        let c = &topo.client;
        let vip_state = prod.state(VIP)?;
        let programs = vec![
            prog_info("xdp_vnic (havip)", prod.dp.program()?)?,
            prog_info("xdp_limit", lab.prog(Lab::LIMIT)?)?,
            prog_info("xdp_pass (empty)", lab.prog(Lab::EMPTY)?)?,
        ];
        Ok(Self {
            sink_a,
            sink_b,
            lab,
            prod,
            to_vmac: frames::udp(vip_state.vmac, c.guest_mac, CLIENT_IP, VIP),
            to_vip: frames::udp(c.host_mac, c.guest_mac, CLIENT_IP, VIP),
            vip_slot: vip_state.slot,
            control: Control {
                reconcile_havips: args.havips,
                reconcile_members: args.havips * MEMBERS,
                reconcile_ms: reconcile_time.as_secs_f64() * 1e3,
            },
            programs,
        })
    }
}

/// The parts that run inside the namespaces, on one pinned thread.
struct Bench<'a> {
    args: &'a Args,
    topo: &'a Topology,
    pins: &'a Pins,
    cpus: usize,
    bench_cpu: usize,
    /// The shared set-up once made; its error as text if it failed (every
    /// part needing it then fails with it).
    bed: Option<Result<Bed, String>>,
}

impl Bench<'_> {
    /// Runs the parts in order, filling `results`.
    fn run(mut self, parts: &mut Parts, results: &mut Results) -> Result<()> {
        results.throughput =
            parts.measure(Part::Throughput, Part::Throughput.title(), || self.throughput())?;
        results.real_traffic =
            parts.measure(Part::RealTraffic, Part::RealTraffic.title(), || self.real_traffic())?;
        results.scale = parts.measure(Part::Scale, Part::Scale.title(), || self.scale())?;
        results.branches = parts.measure(Part::Branches, Part::Branches.title(), || self.branches())?;
        for batch in REPOINT_BATCHES {
            let measured =
                parts.measure(Part::Repoint, &repoint_title(batch, false), || self.repoint(batch))?;
            results.repoint.push(RepointRun { batch, real_traffic: false, measured });
        }
        let measured =
            parts.measure(Part::Repoint, &repoint_title(progs::LIVE_BATCH, true), || self.repoint_real())?;
        results.repoint.push(RepointRun { batch: progs::LIVE_BATCH, real_traffic: true, measured });
        results.encap = parts.measure(Part::Encap, Part::Encap.title(), || self.encap())?;
        results.flood = parts.measure(Part::Flood, Part::Flood.title(), || self.flood())?;
        if let Some(Ok(bed)) = self.bed.take() {
            results.control = Some(bed.control);
            results.programs = bed.programs;
        }
        Ok(())
    }

    /// The shared set-up, made on first use.
    fn bed(&mut self) -> Result<&mut Bed> {
        let (args, topo, pins, cpu) = (self.args, self.topo, self.pins, self.bench_cpu);
        self.bed
            .get_or_insert_with(|| Bed::load(args, topo, pins, cpu).map_err(|e| format!("{e:#}")))
            .as_mut()
            .map_err(|e| anyhow!("the set-up the lab's parts share failed: {e}"))
    }

    /// VXLAN in XDP against the encap limit and the kernel (encap.rs), in
    /// namespaces of its own; the thread goes back to hv after.
    fn encap(&mut self) -> Result<report::Encap> {
        let setup = encap::Setup {
            pins: self.pins,
            cpu: self.bench_cpu,
            rounds: self.args.rounds,
            packets: self.args.packets,
            kernel_packets: self.args.kernel_packets,
        };
        encap::run(&setup, Some(self.topo.hv.name()))
    }

    /// Broadcast domains (flood.rs): the VIP hit with the client's vNIC in a
    /// unicast and a broadcast-domain subnet (the shared plane), then
    /// replication in namespaces of its own; the thread goes back to hv.
    fn flood(&mut self) -> Result<report::Flood> {
        let (args, topo, pins, cpu) = (self.args, self.topo, self.pins, self.bench_cpu);
        let vip_hit = {
            let bed = self.bed()?;
            flood::vip_hit(&mut flood::VipHit {
                lab: &bed.lab,
                plane: &mut bed.prod,
                sink: &bed.sink_a,
                client: &topo.client,
                others: [topo.a.host_ifindex, topo.b.host_ifindex],
                to_vmac: bed.to_vmac,
                vip_slot: bed.vip_slot,
                rounds: args.rounds,
                packets: args.packets,
            })?
        };
        let setup = flood::Setup { pins, cpu, rounds: args.rounds, copies_per_run: args.flood_copies };
        let replication = flood::replication(&setup, Some(topo.hv.name()))?;
        Ok(flood::assemble(replication, vip_hit, args.flood_copies))
    }

    /// limit / havip / kernel as clients send to them, and havip on frames
    /// addressed to another MAC.
    fn throughput(&mut self) -> Result<Throughput> {
        let (args, c) = (self.args, &self.topo.client);
        let bed = self.bed()?;
        // Live frames are recycled as the program left them: after one
        // redirect a frame is addressed to the holder, not to the virtual
        // MAC. Behind xdp_spray, which writes the virtual MAC again on every
        // frame, limit and havip see what clients send (both pay for it);
        // the kernel path restores its frame too (xdp_restore_pass). The
        // recycled frames themselves measure havip's by-address fallback.
        let limit = Spray::load(bed.lab.prog(Lab::LIMIT)?.fd()?, VIP, bed.vip_slot, 1)?;
        let havip = Spray::load(bed.prod.dp.program()?.fd()?, VIP, bed.vip_slot, 1)?;
        bed.lab.set_template(&bed.to_vip)?;
        let path = |name: &str, prog, frame: Frame, packets| Path {
            name: name.to_owned(),
            prog,
            frame: frame.to_vec(),
            ingress: c.host_ifindex,
            packets,
            sink: &bed.sink_a,
        };
        let paths = [
            path("limit", limit.prog()?, bed.to_vmac, args.packets),
            path("havip", havip.prog()?, bed.to_vmac, args.packets),
            path("kernel", bed.lab.prog(Lab::KERNEL)?, bed.to_vip, args.kernel_packets),
            path(
                "havip, sent to another MAC (found by address)",
                bed.prod.dp.program()?,
                bed.to_vmac,
                args.packets,
            ),
        ];
        let tp = livefire::rounds(&paths, args.rounds)?;
        Ok(Throughput {
            mpps: paths
                .iter()
                .enumerate()
                .map(|(i, p)| Named { name: p.name.clone(), value: mpps(&tp, i) })
                .collect(),
            ratios: vec![
                Named { name: "havip / limit".into(), value: ratio(&tp, 1, 0) },
                Named { name: "havip / kernel".into(), value: ratio(&tp, 1, 2) },
                Named { name: "limit / kernel".into(), value: ratio(&tp, 0, 2) },
                Named { name: "havip by address / limit".into(), value: ratio(&tp, 3, 0) },
            ],
        })
    }

    /// Real traffic on two cores: the headline ratios (realtraffic.rs).
    fn real_traffic(&mut self) -> Result<RealTraffic> {
        let (args, topo, cpus, bench_cpu) = (self.args, self.topo, self.cpus, self.bench_cpu);
        ensure!(cpus >= 2, "real traffic needs 2 CPUs: the generator on one, the forwarder on the other");
        let bed = self.bed()?;
        realtraffic::run(realtraffic::Setup {
            topo,
            lab: &mut bed.lab,
            havip: &mut bed.prod,
            sink: &bed.sink_a,
            to_vmac: bed.to_vmac,
            to_host: bed.to_vip,
            generator_cpu: (bench_cpu + 1) % cpus,
            forwarder_cpu: bench_cpu,
            packets: args.packets,
            rounds: args.rounds,
        })
    }

    /// The VIP hit against HAVIP count: all traffic to one (hot) VIP, and
    /// spread over every held VIP in the map (what caches really see).
    fn scale(&mut self) -> Result<Vec<ScalePoint>> {
        let (args, topo, pins) = (self.args, self.topo, self.pins);
        let bed = self.bed()?;
        let mut planes: Vec<Plane> = Vec::new();
        for n in SCALE {
            stop::check()?;
            planes.push(fill::scaled(pins, topo, n)?);
        }
        let sprays: Vec<Spray> = planes
            .iter_mut()
            .zip(SCALE)
            .map(|(p, n)| {
                // fill::scaled puts HAVIP i in slot i.
                let (base, first_slot, count) =
                    if n > 2 { (fill::vip_addr(2), 2, n - 2) } else { (VIP, 0, 1) };
                Spray::load(p.dp.program()?.fd()?, base, first_slot, count)
            })
            .collect::<Result<_>>()?;
        let path = |name: String, prog| Path {
            name,
            prog,
            frame: bed.to_vmac.to_vec(),
            ingress: topo.client.host_ifindex,
            packets: args.packets,
            sink: &bed.sink_a,
        };
        // One VIP, its virtual MAC written on every frame like the spread's.
        let hot: Vec<Spray> = planes
            .iter_mut()
            .map(|p| Spray::load(p.dp.program()?.fd()?, VIP, 0, 1))
            .collect::<Result<_>>()?;
        let mut paths: Vec<Path> = hot
            .iter()
            .zip(SCALE)
            .map(|(h, n)| Ok(path(format!("{n} HAVIPs, hot"), h.prog()?)))
            .collect::<Result<_>>()?;
        for (s, n) in sprays.iter().zip(SCALE) {
            paths.push(path(format!("{n} HAVIPs, spread"), s.prog()?));
        }
        let sc = livefire::rounds(&paths, args.rounds)?;
        let k = SCALE.len();
        Ok(SCALE
            .iter()
            .enumerate()
            .map(|(i, &havips)| ScalePoint {
                havips,
                hot_mpps: mpps(&sc, i),
                hot_vs_one: ratio(&sc, i, 0),
                spread_mpps: mpps(&sc, k + i),
                spread_vs_one: ratio(&sc, k + i, k),
            })
            .collect())
    }

    /// What each branch of xdp_vnic costs above the empty program.
    fn branches(&mut self) -> Result<Branches> {
        let (args, topo) = (self.args, self.topo);
        let c = &topo.client;
        let bed = self.bed()?;
        let fd = |prog: &Xdp| -> Result<_> { Ok(prog.fd()?.try_clone()?) };
        let havip_fd = fd(bed.prod.dp.program()?)?;
        let udp_to = |dst| frames::udp(c.host_mac, c.guest_mac, CLIENT_IP, dst);
        let empty = Branch {
            name: "empty",
            target: fd(bed.lab.prog(Lab::EMPTY)?)?,
            frame: bed.to_vip,
            ingress: c.host_ifindex,
            verdict: progs::XDP_PASS,
        };
        let branch = |name, frame, ingress, verdict| -> Result<Branch> {
            Ok(Branch { name, target: havip_fd.try_clone()?, frame, ingress, verdict })
        };
        let all = [
            Branch {
                name: "limit (MACs + devmap redirect)",
                target: fd(bed.lab.prog(Lab::LIMIT)?)?,
                frame: bed.to_vmac,
                ingress: c.host_ifindex,
                verdict: progs::XDP_REDIRECT,
            },
            branch("VIP hit", bed.to_vmac, c.host_ifindex, progs::XDP_REDIRECT)?,
            branch("VIP hit, sent to another MAC", bed.to_vip, c.host_ifindex, progs::XDP_REDIRECT)?,
            branch("VIP without holder", udp_to(VIP_NO_HOLDER), c.host_ifindex, progs::XDP_DROP)?,
            branch(
                "claim (GARP from holder)",
                frames::garp(topo.a.guest_mac, VIP),
                topo.a.host_ifindex,
                progs::XDP_DROP,
            )?,
            branch(
                "ARP request answered",
                frames::who_has(c.guest_mac, CLIENT_IP, VIP),
                c.host_ifindex,
                progs::XDP_TX,
            )?,
            branch("pass-through (not a VIP)", udp_to(NOT_A_VIP), c.host_ifindex, progs::XDP_PASS)?,
            Branch {
                name: "for reference: 1 vips-like hash lookup",
                target: fd(bed.lab.prog(Lab::LOOKUP)?)?,
                frame: bed.to_vip,
                ingress: c.host_ifindex,
                verdict: progs::XDP_PASS,
            },
        ];
        let (base, costs) =
            branches::measure(&mut bed.lab, &mut bed.prod, &empty, &all, args.rounds.max(15))?;
        Ok(Branches {
            harness_empty_ns: Spread::of(&base),
            cost_ns: all
                .iter()
                .enumerate()
                .map(|(i, b)| Named {
                    name: b.name.to_owned(),
                    value: Spread::of(&costs.iter().map(|r| r[i]).collect::<Vec<_>>()),
                })
                .collect(),
            hit_vs_limit: Spread::of(&costs.iter().map(|r| r[1] / r[0]).collect::<Vec<_>>()),
        })
    }

    /// Claim -> first packet at the new holder, traffic in live batches of
    /// `batch` on the bench CPU (havip behind xdp_spray: what clients send).
    fn repoint(&mut self, batch: u32) -> Result<Repoint> {
        let (topo, bench_cpu) = (self.topo, self.bench_cpu);
        let bed = self.bed()?;
        let spray = Spray::load(bed.prod.dp.program()?.fd()?, VIP, bed.vip_slot, 1)?;
        let traffic = repoint::Traffic {
            ns: topo.hv.name(),
            cpu: bench_cpu,
            prog: spray.prog()?,
            frame: bed.to_vmac,
            ingress: topo.client.host_ifindex,
        };
        let claim_cpu = (bench_cpu + 1) % self.cpus;
        self.failovers(&traffic, batch, claim_cpu)
    }

    /// The same on real traffic: the generator on the other CPU, havip in
    /// the client vNIC's threaded NAPI poll (budget 64) on the bench CPU.
    fn repoint_real(&mut self) -> Result<Repoint> {
        let (topo, cpus, bench_cpu) = (self.topo, self.cpus, self.bench_cpu);
        let bed = self.bed()?;
        let (frame, generator_cpu) = (bed.to_vmac, (bench_cpu + 1) % cpus);
        let source = realtraffic::Source::start(topo, &mut bed.prod, frame, generator_cpu, bench_cpu)?;
        let traffic = source.traffic()?;
        // Claims from the generator's CPU: the forwarder's has the NAPI
        // thread to run (claims from there stalled the traffic for over a
        // second). The claim thread then takes turns with the generator, so
        // the tail includes gaps in the offered traffic, not only the batch.
        let measured = self.failovers(&traffic, progs::LIVE_BATCH, generator_cpu);
        source.stop(&mut self.bed()?.prod)?;
        measured
    }

    /// `--failovers` failovers a -> b -> a ... under `traffic`, claims sent
    /// from `claim_cpu`.
    fn failovers(&mut self, traffic: &repoint::Traffic, batch: u32, claim_cpu: usize) -> Result<Repoint> {
        let (args, topo, cpus, bench_cpu) = (self.args, self.topo, self.cpus, self.bench_cpu);
        ensure!(cpus >= 2, "the re-point latency needs 2 CPUs: traffic on one, claims from the other");
        let bed = self.bed()?;
        let setup = repoint::Setup { home_cpu: bench_cpu, claim_cpu, packets: args.packets };
        let mut a = repoint::Member { port: &topo.a, sink: &mut bed.sink_a };
        let mut b = repoint::Member { port: &topo.b, sink: &mut bed.sink_b };
        let f = repoint::run(&setup, traffic, &mut bed.prod, &mut a, &mut b, args.failovers, batch)?;
        Ok(Repoint { packets_per_run: f.packets_per_run, straddled: f.straddled, latency: latency(f.ns) })
    }
}

/// `git describe --always --dirty` in the source tree the bench was built
/// from (xtask builds it there), or None outside a checkout.
fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(|m| m.trim().to_owned()))
        })
        .unwrap_or_default()
}
