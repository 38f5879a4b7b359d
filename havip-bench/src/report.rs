//! The run's results: one serialisable record, printed as a table and
//! written as JSON, and the goals judged from it.

use std::{fs, path::Path};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::Serialize;

use crate::{control, failover, stats::Spread};

/// The parts of a run, in the order they run (`--only` takes these names).
/// Each is measured on its own: one that fails is recorded in
/// `Results::failed` with why, and the parts after it still run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// limit / havip / kernel, live frames on one core.
    Throughput,
    /// limit / havip / kernel on real traffic: generator and forwarder on two cores.
    RealTraffic,
    /// The VIP hit against HAVIPs in the map, one hot VIP and spread.
    Scale,
    /// Per-branch cost of xdp_vnic (plain test runs).
    Branches,
    /// Re-point latency under traffic: batches of 64 and of 1, and real traffic (one part each).
    Repoint,
    /// The agent started on one file of `--havips` HAVIPs.
    Control,
    /// keepalived failovers in the lab.
    Keepalived,
    /// VXLAN in XDP: encapsulated VIP hits against the encap limit and the
    /// kernel's vxlan device; decapsulation against the decap limit.
    Encap,
    /// Claim -> first packet at the new holder across hosts (three-host lab
    /// on etcd), through etcd alone and with hints (one part each).
    CrossHost,
    /// Simulated hosts on etcd: a claim's commit -> every follower has it.
    ControlScale,
    /// Broadcast domains (issue 11): replication cost per copy against the
    /// broadcast limit, and the VIP hit with the mode on and off.
    Flood,
}

impl Part {
    /// How the table, the goals and `Results::failed` name it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::RealTraffic => "real traffic",
            Self::Scale => "scale curve",
            Self::Branches => "per-branch cost",
            Self::Repoint => "re-point latency",
            Self::Control => "control plane",
            Self::Keepalived => "keepalived failover",
            Self::Encap => "encap",
            Self::CrossHost => "cross-host re-point",
            Self::ControlScale => "control-plane scale",
            Self::Flood => "flood",
        }
    }
}

/// The title of the re-point part at one live batch size.
pub fn repoint_title(batch: u32, real_traffic: bool) -> String {
    if real_traffic {
        format!("{}, real traffic (NAPI budget {batch})", Part::Repoint.title())
    } else {
        format!("{}, batches of {batch}", Part::Repoint.title())
    }
}

/// The title of the cross-host re-point part with or without hints.
pub fn cross_host_title(hints: bool) -> String {
    format!("{}, {}", Part::CrossHost.title(), if hints { "with hints" } else { "etcd alone" })
}

/// A part that ran and failed; its figures are null.
#[derive(Serialize)]
pub struct FailedPart {
    /// Its title (`Part::title`, `repoint_title`).
    pub part: String,
    /// The error with its context chain, as one line.
    pub error: String,
}

/// Every figure of one run. A part's figures are `None` (JSON null) when it
/// failed (see `failed`) or was not asked for (see `skipped`).
#[derive(Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    /// Parts that ran and failed, in the order they ran.
    pub failed: Vec<FailedPart>,
    /// Titles of the parts not asked for (`--only`, `--keepalived-cycles 0`).
    pub skipped: Vec<String>,
    pub throughput: Option<Throughput>,
    pub real_traffic: Option<RealTraffic>,
    pub scale: Option<Vec<ScalePoint>>,
    pub branches: Option<Branches>,
    /// One run per live batch size, each a part of its own.
    pub repoint: Vec<RepointRun>,
    /// The reconcile that filled the production-like maps (part of the
    /// set-up the lab's parts share: null if that failed or none ran).
    pub control: Option<Control>,
    /// The agent started on `havips` HAVIPs from one file.
    pub agent: Option<control::ControlPlane>,
    /// Failovers with real keepalived in the lab.
    pub keepalived: Option<Vec<failover::Sample>>,
    /// VXLAN in XDP, both directions.
    pub encap: Option<Encap>,
    /// Re-point across hosts: etcd alone, then with hints.
    pub cross_host: Vec<CrossHostRun>,
    /// Commit -> every simulated host has it, per host count.
    pub control_scale: Option<ControlScale>,
    /// Broadcast domains: replication and the VIP hit with the mode on.
    pub flood: Option<Flood>,
    /// The programs measured (empty if the lab's set-up failed or none ran).
    pub programs: Vec<ProgInfo>,
    pub goals: Vec<Goal>,
}

impl Results {
    /// Why the part titled `part` has no figures, for the goals: it failed, or was skipped.
    pub fn unmeasured(&self, part: &str) -> String {
        if self.failed.iter().any(|f| f.part == part) {
            format!("not measured: {part} failed")
        } else {
            "skipped".to_owned()
        }
    }

    /// The same for a table row: `FAILED: <error>`, or `skipped`.
    fn absent(&self, part: &str) -> String {
        self.failed
            .iter()
            .find(|f| f.part == part)
            .map_or_else(|| "skipped".to_owned(), |f| format!("FAILED: {}", f.error))
    }
}

#[derive(Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub bench_cpu: usize,
    /// When the run started: seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// The code measured: `git describe --always --dirty` of the working
    /// tree it was built from, if that is a git checkout.
    pub commit: Option<String>,
}

#[derive(Serialize)]
pub struct Settings {
    pub rounds: usize,
    pub xdp_packets_per_run: u32,
    pub kernel_packets_per_run: u32,
    pub frame_bytes: usize,
    pub live_batch: u32,
    pub havips: u32,
    pub members_per_havip: u32,
    pub failovers: usize,
}

#[derive(Serialize)]
pub struct Named {
    pub name: String,
    #[serde(flatten)]
    pub value: Spread,
}

/// Real traffic on two cores (realtraffic.rs): what an operator's host does,
/// so these ratios are the headline; the one-core figures explain them.
#[derive(Serialize)]
pub struct RealTraffic {
    pub generator_cpu: usize,
    /// Where the client vNIC's threaded NAPI poll (and so the program) runs.
    pub forwarder_cpu: usize,
    pub packets_per_run: u32,
    /// Mpps delivered to the sink, per forwarder.
    pub throughput: Vec<Named>,
    /// Mpps the generator sent meanwhile (accepted or not by the veth ring):
    /// well above `throughput`, or the forwarder was not the bottleneck.
    pub offered: Vec<Named>,
    pub ratios: Vec<Named>,
}

/// Live throughput of each path, and the ratios paired within a round.
#[derive(Serialize)]
pub struct Throughput {
    /// limit, havip, kernel (each restoring what clients send on every
    /// frame), then havip on recycled frames addressed to the holder
    /// (its by-address fallback): Mpps.
    pub mpps: Vec<Named>,
    /// havip / limit, havip / kernel, limit / kernel, havip by address /
    /// limit, in that order.
    pub ratios: Vec<Named>,
}

/// What each branch of xdp_vnic costs (plain test runs, see branches.rs).
#[derive(Serialize)]
pub struct Branches {
    /// ns per packet of the empty program through the harness (subtracted below).
    pub harness_empty_ns: Spread,
    /// ns per packet above the empty program; the limit first, the VIP hit second.
    pub cost_ns: Vec<Named>,
    /// VIP-hit cost ÷ the limit's, paired within a round.
    pub hit_vs_limit: Spread,
}

#[derive(Serialize)]
pub struct ScalePoint {
    pub havips: u32,
    /// All traffic to one VIP.
    pub hot_mpps: Spread,
    /// Paired ratio to the 1-HAVIP point of the same round.
    pub hot_vs_one: Spread,
    /// Traffic spread round-robin over every held VIP (through xdp_spray,
    /// whose tail call every point pays, the 1-HAVIP point included).
    pub spread_mpps: Spread,
    pub spread_vs_one: Spread,
}

#[derive(Serialize)]
pub struct Latency {
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// The re-point part at one batch size.
#[derive(Serialize)]
pub struct RepointRun {
    /// Live-frames batch of the traffic: redirects are flushed once per batch.
    pub batch: u32,
    /// Real traffic: the batch is the veth's NAPI poll (its budget), in a
    /// thread of its own on the bench CPU, fed by a generator on the other.
    pub real_traffic: bool,
    /// None (null) if this part failed or was skipped.
    pub measured: Option<Repoint>,
}

/// Claim accepted -> first packet at the new holder, under continuous traffic.
#[derive(Serialize)]
pub struct Repoint {
    /// Packets per traffic run, sized from a timed run so one lasts about a second.
    pub packets_per_run: u32,
    /// Samples discarded and redone because a traffic run ended between
    /// the claim and the first packet (the next run's page-pool set-up
    /// would have been timed as latency).
    pub straddled: usize,
    pub latency: Latency,
}

/// VXLAN in XDP (encap.rs), live frames on one core, Mpps delivered.
#[derive(Serialize)]
pub struct Encap {
    /// encap limit, havip encap, kernel vxlan device, in that order.
    pub encap_mpps: Vec<Named>,
    /// havip / encap limit, havip / kernel, paired within a round.
    pub encap_ratios: Vec<Named>,
    /// decap limit, havip decap.
    pub decap_mpps: Vec<Named>,
    /// havip / decap limit.
    pub decap_ratios: Vec<Named>,
    /// Inner frame length (outer: 50 more).
    pub frame_bytes: usize,
}

/// Broadcast domains (flood.rs), live frames on one core.
#[derive(Serialize)]
pub struct Flood {
    /// Every frame's length (VRRPv3 advert / UDP multicast, padded).
    pub frame_bytes: usize,
    /// The senders' storm bucket: high enough never to limit.
    pub storm_rate_pps: u32,
    pub storm_burst: u32,
    /// Copies delivered per live run (input frames = this ÷ copies).
    pub copies_per_run: u32,
    /// limit as havip's devmap, small limit, havip VRRP, havip UDP.
    pub replication: Vec<Replicator>,
    /// Paired within a round: input-rate ratios per copy count, then
    /// differences of the fitted fixed cost and cost per copy (ns).
    pub replication_ratios: Vec<Named>,
    /// The programs alone on a frame they flood (plain test runs, the
    /// verdict not acted on): ns above the empty program.
    pub program_ns: Vec<Named>,
    /// limit, havip unicast subnet, havip broadcast-domain subnet, havip
    /// unicast subnet again (an A/A control): Mpps.
    pub vip_hit_mpps: Vec<Named>,
    /// broadcast-domain / unicast, unicast again / unicast, unicast /
    /// limit, broadcast-domain / limit.
    pub vip_hit_ratios: Vec<Named>,
    pub programs: Vec<ProgInfo>,
}

/// One replicating program at 1, 2, 4, 8 copies per frame.
#[derive(Serialize)]
pub struct Replicator {
    pub name: String,
    pub points: Vec<ReplicationPoint>,
    /// ns per extra copy between successive points (1→2, 2→4, 4→8).
    pub marginal_ns: Vec<Spread>,
    /// Slope of ns per input frame against copies (least squares per round).
    pub ns_per_copy: Spread,
    /// Its intercept: what a flooded frame costs before its copies.
    pub fixed_ns: Spread,
}

#[derive(Serialize)]
pub struct ReplicationPoint {
    pub copies: u32,
    /// Input frames per second (millions).
    pub input_mpps: Spread,
    /// Copies delivered per second (millions): input × copies.
    pub copies_mpps: Spread,
    /// 1e9 / input rate.
    pub ns_per_frame: Spread,
}

/// The cross-host re-point part with or without hints.
#[derive(Serialize)]
pub struct CrossHostRun {
    pub hints: bool,
    /// None (null) if this part failed or was skipped.
    pub measured: Option<CrossHost>,
}

/// Claim (GARP from the new holder, CLOCK_REALTIME before sending) -> first
/// packet of vm-c's stream at the new holder (SO_TIMESTAMPNS), across hosts.
#[derive(Serialize)]
pub struct CrossHost {
    pub failovers: usize,
    pub latency: Latency,
    /// Mean gap between the client's packets: the resolution of each sample.
    pub stream_gap_us: f64,
    /// Claim -> vm-c's host (hv3) had the VIP pointed at the new holder's
    /// host (its VIP state's `since_ns`, the kernel's stamp of the holder
    /// write): the control path; the rest of `latency` is the next packet
    /// of the stream crossing. Over the samples where hv3's state could be
    /// read before it was written again (`repointed_samples`).
    pub repointed: Option<Latency>,
    pub repointed_samples: usize,
    /// Samples under 1 ms (the goal's bound), of `failovers`.
    pub under_1ms: usize,
    /// Every sample, µs, in the order taken (vm-b, vm-a, vm-b, ...).
    pub samples_us: Vec<u64>,
}

/// A claim committed on etcd -> every simulated host's follower received it.
#[derive(Serialize)]
pub struct ControlScale {
    pub etcd_members: usize,
    pub runs: Vec<ScaleRun>,
}

#[derive(Serialize)]
pub struct ScaleRun {
    pub hosts: usize,
    pub commits: usize,
    /// The commit transaction's round trip (what the claiming host waits).
    pub commit: Latency,
    /// Commit sent -> the last host's follower received the record.
    pub all_applied: Latency,
    /// Commit sent -> the first other host's follower received it.
    pub first_applied: Latency,
}

#[derive(Serialize)]
pub struct Control {
    pub reconcile_havips: u32,
    pub reconcile_members: u32,
    pub reconcile_ms: f64,
}

#[derive(Serialize)]
pub struct ProgInfo {
    pub name: String,
    pub xlated_insns: u32,
    pub jited_bytes: u32,
    pub verified_insns: u32,
}

#[derive(Serialize)]
pub struct Goal {
    pub goal: String,
    /// The figure judged, or why there is none (`Results::unmeasured`).
    pub measured: String,
    /// None: not judged (the part it depends on failed or was skipped).
    pub met: Option<bool>,
}

/// Judges one goal on a figure of part `part`, or says why it has none.
fn judge<T>(
    r: &Results,
    goal: &str,
    part: &str,
    figure: Option<T>,
    f: impl FnOnce(T) -> (String, bool),
) -> Goal {
    let (measured, met) = match figure {
        Some(x) => {
            let (measured, met) = f(x);
            (measured, Some(met))
        }
        None => (r.unmeasured(part), None),
    };
    Goal { goal: goal.to_owned(), measured, met }
}

/// The goals of issue 5, judged on whatever parts were measured.
pub fn goals(r: &Results) -> Vec<Goal> {
    let tp = Part::Throughput.title();
    let ratios = r.throughput.as_ref().map(|t| (t.ratios[0].value.median, t.ratios[1].value.median));
    let rt = Part::RealTraffic.title();
    let real = r.real_traffic.as_ref().map(|t| (t.ratios[0].value.median, t.ratios[1].value.median));
    let full = r.settings.live_batch;
    let repoint = r
        .repoint
        .iter()
        .find(|run| run.batch == full && !run.real_traffic)
        .and_then(|run| run.measured.as_ref());
    let loss = r.scale.as_ref().and_then(|s| s.last()).map(|p| p.spread_vs_one.median);
    vec![
        judge(r, "real traffic: havip ≥ 0.95 × limit", rt, real, |(hl, _)| {
            (format!("{hl:.3}"), hl >= 0.95)
        }),
        judge(r, "real traffic: havip ≥ 2.5 × kernel", rt, real, |(_, hk)| {
            (format!("{hk:.2}"), hk >= 2.5)
        }),
        judge(r, "one core: havip ≥ 0.95 × limit", tp, ratios, |(hl, _)| (format!("{hl:.3}"), hl >= 0.95)),
        judge(r, "one core: havip ≥ 4 × kernel", tp, ratios, |(_, hk)| (format!("{hk:.2}"), hk >= 4.0)),
        judge(
            r,
            "VIP-hit cost ≤ 1.3 × limit cost",
            Part::Branches.title(),
            r.branches.as_ref().map(|b| b.hit_vs_limit.median),
            |x| (format!("{x:.2}"), x <= 1.3),
        ),
        judge(r, "≤ 10% lost, 1 → 100,000 HAVIPs (spread)", Part::Scale.title(), loss, |x| {
            // A spread faster than one VIP (noise) loses nothing, not "-0.0%".
            (format!("{:.1}% lost", ((1.0 - x) * 100.0).max(0.0)), x >= 0.90)
        }),
        judge(
            r,
            &format!("re-point p99 < 10 µs, batches of {full}"),
            &repoint_title(full, false),
            repoint.map(|rp| rp.latency.p99_ns),
            |p99| (format!("{:.2} µs", p99 as f64 / 1e3), p99 < 10_000),
        ),
        judge(
            r,
            "encap: havip ≥ 0.9 × encap limit",
            Part::Encap.title(),
            r.encap.as_ref().map(|e| e.encap_ratios[0].value.median),
            |x| (format!("{x:.3}"), x >= 0.9),
        ),
        judge(
            r,
            "cross-host re-point p99 < 1 ms, with hints",
            &cross_host_title(true),
            r.cross_host.iter().find(|c| c.hints).and_then(|c| c.measured.as_ref()).map(|c| c.latency.p99_ns),
            |p99| (format!("{:.3} ms", p99 as f64 / 1e6), p99 < 1_000_000),
        ),
        // The VIP hit never reads the bcast maps (the group-bit test comes
        // after its return), so the two run the same instructions: the bound
        // is the noise of paired live runs here, and catches the regression
        // that matters (flood work, e.g. a bcast_vnics lookup, on every frame).
        judge(
            r,
            "VIP hit, broadcast-domain subnet ≥ 0.95 × unicast",
            Part::Flood.title(),
            r.flood.as_ref().map(|f| f.vip_hit_ratios[0].value.median),
            |x| (format!("{x:.3}"), x >= 0.95),
        ),
        judge(
            r,
            "platform-added keepalived failover < 1 ms",
            Part::Keepalived.title(),
            r.keepalived.as_deref(),
            keepalived,
        ),
    ]
}

/// The platform adds nothing visible to a keepalived failover when the
/// first probe sent after each claim is answered by the new holder; claim
/// -> that probe is the resolution (prober scheduling included).
fn keepalived(samples: &[failover::Sample]) -> (String, bool) {
    let answered = samples.iter().filter(|s| s.next_probe_answered).count();
    let mut waits: Vec<f64> = samples.iter().map(|s| s.next_probe_ms).collect();
    waits.sort_by(f64::total_cmp);
    let measured = match (waits.get(waits.len() / 2), waits.last()) {
        (Some(median), Some(max)) => format!(
            "next probe answered {answered}/{}; resolution median {median:.2} ms, max {max:.2} ms",
            samples.len()
        ),
        _ => "no failover observed".to_owned(),
    };
    (measured, !samples.is_empty() && answered == samples.len())
}

/// One table row per figure: name, median (min – max).
fn rows(figures: &[Named], digits: usize) {
    for f in figures {
        println!("  {:<40} {}", f.name, spread(&f.value, digits));
    }
}

fn spread(s: &Spread, digits: usize) -> String {
    format!("{:.d$}  ({:.d$} – {:.d$})", s.median, s.min, s.max, d = digits)
}

fn latency(l: &Latency) -> String {
    latency_in(l, "µs", 1e3, 2)
}

/// p50, p99 and max in `unit` (`per` ns each) with `digits` decimals.
fn latency_in(l: &Latency, unit: &str, per: f64, digits: usize) -> String {
    let v = |ns: u64| format!("{:.d$} {unit}", ns as f64 / per, d = digits);
    format!("p50 {}  p99 {}  max {}", v(l.p50_ns), v(l.p99_ns), v(l.max_ns))
}

/// The table, on stdout; a part without figures shows `FAILED: <why>` or `skipped`.
pub fn print(r: &Results) {
    let m = &r.machine;
    let s = &r.settings;
    println!(
        "\nhavip bench — {}, kernel {}, {} × {}, pinned to CPU {}",
        m.commit.as_deref().unwrap_or("commit unknown"),
        m.kernel,
        m.cpus,
        m.cpu_model,
        m.bench_cpu
    );
    println!(
        "{} rounds, order rotated; {}-byte frames, live batch {}; havip maps: {} HAVIPs × {} members",
        s.rounds, s.frame_bytes, s.live_batch, s.havips, s.members_per_havip
    );
    println!("medians (min – max)\n");
    match &r.real_traffic {
        Some(t) => println!(
            "Real traffic, two cores (Mpps delivered to the sink; generator on CPU {}, the vNIC's NAPI poll and \
             the program on CPU {}; offered: Mpps the generator sent, taken by the veth ring or not)",
            t.generator_cpu, t.forwarder_cpu
        ),
        None => println!("Real traffic, two cores (Mpps delivered)"),
    }
    match &r.real_traffic {
        Some(t) => {
            for (p, o) in t.throughput.iter().zip(&t.offered) {
                println!("  {:<40} {}   offered {:.2} Mpps", p.name, spread(&p.value, 2), o.value.median);
            }
            println!("Paired ratios");
            rows(&t.ratios, 3);
        }
        None => println!("  {}", r.absent(Part::RealTraffic.title())),
    }
    println!("Throughput, one core, BPF_PROG_TEST_RUN live frames (Mpps)");
    match &r.throughput {
        Some(t) => {
            rows(&t.mpps, 2);
            println!("Paired ratios");
            rows(&t.ratios, 3);
        }
        None => println!("  {}", r.absent(Part::Throughput.title())),
    }
    match &r.branches {
        Some(b) => {
            println!(
                "Per-branch cost (ns/packet above the empty program; harness+empty {:.1} ns)",
                b.harness_empty_ns.median
            );
            rows(&b.cost_ns, 1);
        }
        None => println!("Per-branch cost\n  {}", r.absent(Part::Branches.title())),
    }
    println!("VIP hit vs HAVIPs in the map (Mpps; ratio to 1 HAVIP)");
    match &r.scale {
        Some(scale) => {
            for p in scale {
                let row = |kind, mpps, vs_one| {
                    println!(
                        "  {:<40} {}   ×{}",
                        format!("{} HAVIPs, {kind}", p.havips),
                        spread(mpps, 2),
                        spread(vs_one, 3)
                    )
                };
                row("one hot VIP", &p.hot_mpps, &p.hot_vs_one);
                row("spread over all", &p.spread_mpps, &p.spread_vs_one);
            }
        }
        None => println!("  {}", r.absent(Part::Scale.title())),
    }
    println!(
        "Re-point latency ({} failovers each; claim → first packet at the new holder, traffic flowing; \
         straddled: samples a traffic run ended inside, redone)",
        s.failovers
    );
    for run in &r.repoint {
        let row = match &run.measured {
            Some(rp) => format!(
                "{}; {} straddled and redone, {} packets per traffic run",
                latency(&rp.latency),
                rp.straddled,
                rp.packets_per_run
            ),
            None => r.absent(&repoint_title(run.batch, run.real_traffic)),
        };
        let what = if run.real_traffic {
            format!("real traffic, NAPI polls of ≤ {}", run.batch)
        } else {
            format!("traffic in batches of {}", run.batch)
        };
        println!("  {what:<40} {row}");
    }
    print_issue9(r);
    print_flood(r);
    println!(
        "Failover with keepalived (advert 0.1 s; vm-c probes every {} µs; ms; platform = claim -> first answer)",
        failover::PROBE_EVERY.as_micros()
    );
    match &r.keepalived {
        Some(samples) => {
            println!(
                "  {:<34} {:>7} {:>10} {:>8} {:>10} {:>5} {:>12}",
                "", "outage", "keepalived", "platform", "next probe", "lost", "MASTER->claim"
            );
            for k in samples {
                let log = k.master_log_to_claim_ms.map_or("-".to_owned(), |m| format!("{m:.2}"));
                let next =
                    format!("{:.2}{}", k.next_probe_ms, if k.next_probe_answered { "" } else { " (lost)" });
                println!(
                    "  {:<34} {:>7.2} {:>10.2} {:>8.2} {:>10} {:>5} {:>12}",
                    format!("{} -> {}", k.how, k.to),
                    k.outage_ms,
                    k.keepalived_ms,
                    k.platform_ms,
                    next,
                    k.lost_after_claim,
                    log
                );
            }
        }
        None => println!("  {}", r.absent(Part::Keepalived.title())),
    }
    println!("Control plane");
    if let Some(c) = &r.control {
        println!(
            "  {:<40} {:.0} ms",
            format!("reconcile {} HAVIPs/{} members", c.reconcile_havips, c.reconcile_members),
            c.reconcile_ms
        );
    }
    match &r.agent {
        Some(a) => println!(
            "  {:<40} {:.0} ms to READY ({} HAVIPs in the vips map), RSS {:.1} MiB (peak {:.1} MiB)",
            format!("agent, {} HAVIPs/{} vNICs in one file", a.havips, a.vnics),
            a.ready_ms,
            a.vips_in_map,
            a.rss_kib as f64 / 1024.0,
            a.peak_rss_kib as f64 / 1024.0
        ),
        None => println!("  {:<40} {}", "agent", r.absent(Part::Control.title())),
    }
    if !r.programs.is_empty() {
        println!("Programs (xlated insns / JIT bytes / verifier-processed insns)");
        for p in &r.programs {
            println!("  {:<40} {} / {} / {}", p.name, p.xlated_insns, p.jited_bytes, p.verified_insns);
        }
    }
    println!(
        "Goals (judged, not enforced: a missed goal leaves the exit status 0; only a failed part sets it)"
    );
    for g in &r.goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        };
        println!("  {verdict:<7} {:<46} {}", g.goal, g.measured);
    }
}

/// The parts of issue 9: VXLAN, re-point across hosts, etcd at scale.
fn print_issue9(r: &Results) {
    println!(
        "VXLAN in XDP, one core, live frames (Mpps delivered; inner frames of {} bytes)",
        crate::frames::LEN
    );
    match &r.encap {
        Some(e) => {
            rows(&e.encap_mpps, 2);
            rows(&e.decap_mpps, 2);
            println!("Paired ratios");
            rows(&e.encap_ratios, 3);
            rows(&e.decap_ratios, 3);
        }
        None => println!("  {}", r.absent(Part::Encap.title())),
    }
    println!(
        "Re-point across hosts (three-host lab on etcd; claim = GARP from the new holder -> first packet of \
         vm-c's stream there)"
    );
    for run in &r.cross_host {
        let what = if run.hints { "with hints" } else { "etcd alone (hints = false)" };
        let row = match &run.measured {
            Some(c) => format!(
                "{}; {}/{} under 1 ms, stream every {:.0} µs",
                latency_ms(&c.latency),
                c.under_1ms,
                c.failovers,
                c.stream_gap_us
            ),
            None => r.absent(&cross_host_title(run.hints)),
        };
        println!("  {what:<40} {row}");
        if let Some((c, split)) = run.measured.as_ref().and_then(|c| Some((c, c.repointed.as_ref()?))) {
            println!(
                "  {:<40} {}; of {} samples",
                "  of which: claim -> hv3 re-pointed",
                latency_ms(split),
                c.repointed_samples
            );
        }
    }
    match &r.control_scale {
        Some(cs) => {
            println!(
                "Control plane at scale (etcd of {} member(s); simulated hosts registered and following; \
                 commit sent -> the last / first host's follower has it)",
                cs.etcd_members
            );
            for run in &cs.runs {
                println!(
                    "  {:<40} all: {}; first: {}; commit: {}",
                    format!("{} hosts, {} commits", run.hosts, run.commits),
                    latency_ms(&run.all_applied),
                    latency_ms(&run.first_applied),
                    latency_ms(&run.commit)
                );
            }
        }
        None => println!("Control plane at scale\n  {}", r.absent(Part::ControlScale.title())),
    }
}

/// Issue 11: broadcast domains.
fn print_flood(r: &Results) {
    let Some(f) = &r.flood else {
        println!(
            "Broadcast domain (replication, VIP hit with the mode on)\n  {}",
            r.absent(Part::Flood.title())
        );
        return;
    };
    println!(
        "Broadcast domain: replication, one core, live frames ({}-byte multicast from a vNIC of a \
         broadcast-domain subnet; storm bucket {} Mpps, burst {}: never limits; ~{} copies per run; \
         input Mpps, copies delivered M/s, ns per input frame)",
        f.frame_bytes,
        f.storm_rate_pps / 1_000_000,
        f.storm_burst,
        f.copies_per_run
    );
    for p in &f.replication {
        println!("  {}", p.name);
        for pt in &p.points {
            println!(
                "    {:<38} in {}   copies {:.2} M/s   {:.1} ns/frame",
                copies_str(pt.copies),
                spread(&pt.input_mpps, 2),
                pt.copies_mpps.median,
                pt.ns_per_frame.median
            );
        }
        println!(
            "    {:<38} {} ns per copy; fixed {} ns",
            "fit (ns per frame = fixed + N × copy)",
            spread(&p.ns_per_copy, 1),
            spread(&p.fixed_ns, 1)
        );
        let steps: Vec<String> = p
            .points
            .windows(2)
            .zip(&p.marginal_ns)
            .map(|(w, m)| format!("{}→{} {:.1}", w[0].copies, w[1].copies, m.median))
            .collect();
        println!("    {:<38} {} ns", "per extra copy, step by step", steps.join(", "));
    }
    println!(
        "Paired ratios (input rates) and differences (ns; a broadcast into a DEVMAP_HASH walks all its buckets: \
         the devmap's size is paid per flooded frame)"
    );
    rows(&f.replication_ratios, 3);
    println!(
        "The programs alone (plain test runs: no bucket walk, clone or transmission; ns per frame above the \
         empty program, 1-copy subnet)"
    );
    rows(&f.program_ns, 1);
    println!("VIP hit with the mode on, one core, live frames (Mpps; the throughput part's measurement)");
    rows(&f.vip_hit_mpps, 2);
    println!("Paired ratios");
    rows(&f.vip_hit_ratios, 3);
    println!("Programs (xlated insns / JIT bytes / verifier-processed insns)");
    for p in &f.programs {
        println!("  {:<40} {} / {} / {}", p.name, p.xlated_insns, p.jited_bytes, p.verified_insns);
    }
}

fn latency_ms(l: &Latency) -> String {
    latency_in(l, "ms", 1e6, 3)
}

/// Writes `bench-<unix time>.json` and `latest.json` under `dir`.
pub fn write_json(dir: &Path, r: &Results, stamp: u64) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_json::to_string_pretty(r)?;
    for name in [format!("bench-{stamp}.json"), "latest.json".to_owned()] {
        let path = dir.join(name);
        fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// "1 copy", "2 copies".
pub fn copies_str(n: u32) -> String {
    format!("{n} cop{}", if n == 1 { "y" } else { "ies" })
}
