//! havip-bench (`cargo xtask bench`): havip's XDP fast path against the
//! practical XDP limit and plain kernel forwarding, as paired ratios taken in
//! one run on one core, plus per-branch cost, the HAVIP-count scale curve and
//! re-point latency. See issue 5 for the method.

mod branches;
mod control;
mod cpu;
mod failover;
mod fill;
mod frames;
mod livefire;
mod plot;
mod progs;
mod repoint;
mod report;
mod stats;
mod stop;
mod topo;

use std::{
    fs,
    path::PathBuf,
    process::ExitCode,
    thread,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use aya::programs::Xdp;
use clap::Parser;

use crate::{
    branches::Branch,
    fill::{Pins, Plane},
    livefire::Path,
    progs::{Lab, Sink, Spray},
    report::{
        Control, Goal, Latency, Machine, Named, ProgInfo, Repoint, RepointRun, Results, ScalePoint, Settings,
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
    /// Failovers for the re-point latency.
    #[arg(long, default_value_t = 1000)]
    failovers: usize,
    /// keepalived failover cycles in the lab (each: vm-a stops, then preempts back); 0 skips.
    #[arg(long, default_value_t = 5)]
    keepalived_cycles: usize,
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("havip-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
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
    stop::install();
    havip_lab::netns::sweep_stale()?;

    // Owned here, so they are removed after the worker is done, whatever it returned.
    let topo = Topology::build()?;
    let pins = Pins::new();
    let mut results = thread::scope(|s| {
        s.spawn(|| bench(&args, &topo, &pins, cpus, bench_cpu))
            .join()
            .map_err(|_| anyhow::anyhow!("the bench thread panicked"))?
    })?;
    drop(pins);
    drop(topo);

    // The last two parts run the agent and the lab: if one fails, the
    // figures measured so far are still printed and written, and the run
    // then fails naming it.
    let mut failed = Vec::new();
    eprintln!("havip-bench: control plane, the agent on {} HAVIPs from one file", args.havips);
    let agent_pins = Pins::new();
    match control::run(args.havips, &agent_pins.root("agent")) {
        Ok(c) => results.agent = Some(c),
        Err(e) => failed.push(format!("control plane: {e:#}")),
    }
    drop(agent_pins);

    if args.keepalived_cycles > 0 {
        stop::check()?;
        eprintln!("havip-bench: failover with keepalived in the lab, {} cycles", args.keepalived_cycles);
        match failover::run(args.keepalived_cycles) {
            Ok(samples) => keepalived_goal(&mut results, samples),
            Err(e) => failed.push(format!("keepalived failover in the lab: {e:#}")),
        }
    }

    report::print(&results);
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    report::write_json(&args.out, &results, stamp)?;
    plot::write(&args.out.join("bench.svg"), &results)?;
    println!("\nwrote {0}/latest.json, {0}/bench-{stamp}.json, {0}/bench.svg", args.out.display());
    if !failed.is_empty() {
        bail!("not measured:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

/// Judges the keepalived goal from the lab's failovers: the platform adds
/// nothing visible when the first probe sent after each claim is answered
/// by the new holder; claim -> that probe is the resolution (prober
/// scheduling included). `samples` is never empty (at least one cycle).
fn keepalived_goal(results: &mut Results, samples: Vec<failover::Sample>) {
    let answered = samples.iter().filter(|s| s.next_probe_answered).count();
    let mut waits: Vec<f64> = samples.iter().map(|s| s.next_probe_ms).collect();
    waits.sort_by(f64::total_cmp);
    let g = results.goals.last_mut().expect("the keepalived goal is last");
    g.measured = format!(
        "next probe answered {answered}/{}; resolution median {:.2} ms, max {:.2} ms",
        samples.len(),
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    g.met = Some(answered == samples.len());
    results.keepalived = samples;
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

fn goal(goal: &str, measured: String, met: bool) -> Goal {
    Goal { goal: goal.to_owned(), measured, met: Some(met) }
}

/// Everything that runs inside the namespaces, on one pinned thread.
fn bench(args: &Args, topo: &Topology, pins: &Pins, cpus: usize, bench_cpu: usize) -> Result<Results> {
    havip_lab::netns::enter(topo.sink.name())?;
    let mut sink_a = Sink::attach(topo.a.guest_name)?;
    let mut sink_b = Sink::attach(topo.b.guest_name)?;
    havip_lab::netns::enter(topo.hv.name())?;
    cpu::pin_to(bench_cpu)?;

    eprintln!(
        "havip-bench: loading; {} HAVIPs × {MEMBERS} members through the agent's reconciler",
        args.havips
    );
    let mut lab = Lab::load(&topo.a, (0..args.havips).map(fill::vip_addr))?;
    let (mut prod, reconcile_time) = fill::production(pins, topo, args.havips)?;
    let mut scaled: Vec<Plane> = Vec::new();
    for n in SCALE {
        stop::check()?;
        scaled.push(fill::scaled(pins, topo, n)?);
    }

    let c = &topo.client;
    // The kernel routes what is sent to the host's MAC; havip is sent what
    // clients send after resolving the VIP by ARP: its virtual MAC (the VIP
    // has the same slot in every plane).
    let to_vip = frames::udp(c.host_mac, c.guest_mac, CLIENT_IP, VIP);
    let vip_state = prod.state(VIP)?;
    let to_vmac = frames::udp(vip_state.vmac, c.guest_mac, CLIENT_IP, VIP);
    // Live frames are recycled as the program left them: after one redirect
    // a frame is addressed to the holder, not to the virtual MAC, and havip
    // finds the VIP by address. Behind xdp_spray, which sets the virtual MAC
    // again on every frame, limit and havip both see what clients send.
    let fresh_limit = Spray::load(lab.prog(Lab::LIMIT)?.fd()?, VIP, vip_state.slot, 1)?;
    let fresh_havip = Spray::load(prod.dp.program()?.fd()?, VIP, vip_state.slot, 1)?;

    eprintln!("havip-bench: throughput, {} rounds", args.rounds);
    lab.set_template(&to_vip)?;
    let path = |name: &str, prog, frame, packets| Path {
        name: name.to_owned(),
        prog,
        frame,
        ingress: c.host_ifindex,
        packets,
        sink: &sink_a,
    };
    let paths = [
        path("limit", lab.prog(Lab::LIMIT)?, to_vmac, args.packets),
        path("havip", prod.dp.program()?, to_vmac, args.packets),
        path("kernel", lab.prog(Lab::KERNEL)?, to_vip, args.kernel_packets),
        path("limit, virtual MAC set per frame", fresh_limit.prog()?, to_vmac, args.packets),
        path("havip, virtual MAC set per frame", fresh_havip.prog()?, to_vmac, args.packets),
    ];
    let tp = livefire::rounds(&paths, args.rounds)?;
    let throughput: Vec<Named> =
        paths.iter().enumerate().map(|(i, p)| Named { name: p.name.clone(), value: mpps(&tp, i) }).collect();
    let ratios = vec![
        Named { name: "havip / limit".into(), value: ratio(&tp, 1, 0) },
        Named { name: "havip / kernel".into(), value: ratio(&tp, 1, 2) },
        Named { name: "limit / kernel".into(), value: ratio(&tp, 0, 2) },
        Named { name: "havip / limit, vMAC set per frame".into(), value: ratio(&tp, 4, 3) },
    ];

    eprintln!("havip-bench: scale curve");
    // The same HAVIP counts twice: all traffic to one (hot) VIP, and spread
    // over every held VIP in the map (what caches really see).
    let sprays: Vec<Spray> = scaled
        .iter_mut()
        .zip(SCALE)
        .map(|(p, n)| {
            // fill::scaled puts HAVIP i in slot i.
            let (base, first_slot, count) = if n > 2 { (fill::vip_addr(2), 2, n - 2) } else { (VIP, 0, 1) };
            Spray::load(p.dp.program()?.fd()?, base, first_slot, count)
        })
        .collect::<Result<_>>()?;
    let mut scale_paths: Vec<Path> = scaled
        .iter_mut()
        .zip(SCALE)
        .map(|(p, n)| Ok(path(&format!("{n} HAVIPs, hot"), p.dp.program()?, to_vmac, args.packets)))
        .collect::<Result<_>>()?;
    for (s, n) in sprays.iter().zip(SCALE) {
        scale_paths.push(path(&format!("{n} HAVIPs, spread"), s.prog()?, to_vmac, args.packets));
    }
    let sc = livefire::rounds(&scale_paths, args.rounds)?;
    let k = SCALE.len();
    let scale: Vec<ScalePoint> = SCALE
        .iter()
        .enumerate()
        .map(|(i, &havips)| ScalePoint {
            havips,
            hot_mpps: mpps(&sc, i),
            hot_vs_one: ratio(&sc, i, 0),
            spread_mpps: mpps(&sc, k + i),
            spread_vs_one: ratio(&sc, k + i, k),
        })
        .collect();
    drop(scale_paths);
    drop(sprays);

    eprintln!("havip-bench: per-branch cost");
    let fd = |prog: &Xdp| -> Result<_> { Ok(prog.fd()?.try_clone()?) };
    let havip_fd = fd(prod.dp.program()?)?;
    let udp_to = |dst| frames::udp(c.host_mac, c.guest_mac, CLIENT_IP, dst);
    let empty = Branch {
        name: "empty",
        target: fd(lab.prog(Lab::EMPTY)?)?,
        frame: to_vip,
        ingress: c.host_ifindex,
        verdict: progs::XDP_PASS,
    };
    let branch = |name, frame, ingress, verdict| -> Result<Branch> {
        Ok(Branch { name, target: havip_fd.try_clone()?, frame, ingress, verdict })
    };
    let all = [
        Branch {
            name: "limit (MACs + devmap redirect)",
            target: fd(lab.prog(Lab::LIMIT)?)?,
            frame: to_vmac,
            ingress: c.host_ifindex,
            verdict: progs::XDP_REDIRECT,
        },
        branch("VIP hit", to_vmac, c.host_ifindex, progs::XDP_REDIRECT)?,
        branch("VIP hit, sent to another MAC", to_vip, c.host_ifindex, progs::XDP_REDIRECT)?,
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
            target: fd(lab.prog(Lab::LOOKUP)?)?,
            frame: to_vip,
            ingress: c.host_ifindex,
            verdict: progs::XDP_PASS,
        },
    ];
    let (base, costs) = branches::measure(&mut lab, &mut prod, &empty, &all, args.rounds.max(15))?;
    let branch_cost_ns: Vec<Named> = all
        .iter()
        .enumerate()
        .map(|(i, b)| Named {
            name: b.name.to_owned(),
            value: Spread::of(&costs.iter().map(|r| r[i]).collect::<Vec<_>>()),
        })
        .collect();
    let hit_vs_limit = Spread::of(&costs.iter().map(|r| r[1] / r[0]).collect::<Vec<_>>());

    eprintln!("havip-bench: re-point latency, {} failovers per batch size", args.failovers);
    if cpus < 2 {
        bail!("the re-point latency needs 2 CPUs: traffic on one, claims from the other");
    }
    let setup = repoint::Setup {
        topo,
        traffic_cpu: bench_cpu,
        claim_cpu: (bench_cpu + 1) % cpus,
        packets: args.packets,
    };
    let mut a = repoint::Member { port: &topo.a, sink: &mut sink_a };
    let mut b = repoint::Member { port: &topo.b, sink: &mut sink_b };
    let mut runs = Vec::new();
    for batch in REPOINT_BATCHES {
        let ns = repoint::run(&setup, &mut prod, &mut a, &mut b, args.failovers, batch)?;
        runs.push(RepointRun { batch, latency: latency(ns) });
    }
    let repoint = Repoint { failovers: args.failovers, runs };

    let programs = vec![
        prog_info("xdp_vnic (havip)", prod.dp.program()?)?,
        prog_info("xdp_limit", lab.prog(Lab::LIMIT)?)?,
        prog_info("xdp_pass (empty)", lab.prog(Lab::EMPTY)?)?,
    ];

    let hl = &ratios[0].value;
    let hk = &ratios[1].value;
    let loss = &scale[SCALE.len() - 1].spread_vs_one;
    let saturated = &repoint.runs[0].latency;
    let goals = vec![
        goal("havip >= 0.90 x limit throughput", format!("{:.3}", hl.median), hl.median >= 0.90),
        goal("havip >= 4 x kernel throughput", format!("{:.2}", hk.median), hk.median >= 4.0),
        goal(
            "VIP-hit cost <= 1.3 x limit cost",
            format!("{:.2}", hit_vs_limit.median),
            hit_vs_limit.median <= 1.3,
        ),
        goal(
            "<= 10% lost, 1 -> 100,000 HAVIPs (spread)",
            format!("{:.1}% lost", (1.0 - loss.median) * 100.0),
            loss.median >= 0.90,
        ),
        goal(
            "re-point p99 < 10 us (traffic in batches of 64)",
            format!("{:.2} us", saturated.p99_ns as f64 / 1e3),
            saturated.p99_ns < 10_000,
        ),
        Goal { goal: "platform-added keepalived failover < 1 ms".into(), measured: "-".into(), met: None },
    ];

    Ok(Results {
        machine: Machine { kernel: kernel_release(), cpu_model: cpu_model(), cpus, bench_cpu },
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
        throughput,
        ratios,
        harness_empty_ns: Spread::of(&base),
        branch_cost_ns,
        scale,
        repoint,
        control: Control {
            reconcile_havips: args.havips,
            reconcile_members: args.havips * MEMBERS,
            reconcile_ms: reconcile_time.as_secs_f64() * 1e3,
        },
        programs,
        goals,
        keepalived: Vec::new(),
        agent: None,
    })
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
