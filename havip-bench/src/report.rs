//! The run's results: one serialisable record, printed as a table and
//! written as JSON.

use std::{fs, path::Path};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{control, failover, stats::Spread};

#[derive(Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    /// limit, havip, kernel: Mpps.
    pub throughput: Vec<Named>,
    pub ratios: Vec<Named>,
    /// ns per packet of the empty program through the harness (subtracted below).
    pub harness_empty_ns: Spread,
    /// ns per packet above the empty program.
    pub branch_cost_ns: Vec<Named>,
    pub scale: Vec<ScalePoint>,
    pub repoint: Repoint,
    pub control: Control,
    pub programs: Vec<ProgInfo>,
    pub goals: Vec<Goal>,
    /// Failovers with real keepalived in the lab (empty if skipped).
    pub keepalived: Vec<failover::Sample>,
    /// The agent started on `havips` HAVIPs from one file.
    pub agent: Option<control::ControlPlane>,
}

#[derive(Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub bench_cpu: usize,
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

/// Claim accepted -> first packet at the new holder, under continuous traffic.
#[derive(Serialize)]
pub struct Repoint {
    pub failovers: usize,
    pub runs: Vec<RepointRun>,
}

#[derive(Serialize)]
pub struct RepointRun {
    /// Live-frames batch of the traffic: redirects are flushed once per batch.
    pub batch: u32,
    pub latency: Latency,
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
    pub measured: String,
    pub met: Option<bool>,
}

fn spread(s: &Spread, digits: usize) -> String {
    format!("{:.d$}  ({:.d$} – {:.d$})", s.median, s.min, s.max, d = digits)
}

fn latency(l: &Latency) -> String {
    format!(
        "p50 {:.2} µs  p99 {:.2} µs  max {:.2} µs",
        l.p50_ns as f64 / 1e3,
        l.p99_ns as f64 / 1e3,
        l.max_ns as f64 / 1e3
    )
}

pub fn print(r: &Results) {
    let m = &r.machine;
    let s = &r.settings;
    println!(
        "\nhavip bench — kernel {}, {} × {}, pinned to CPU {}",
        m.kernel, m.cpus, m.cpu_model, m.bench_cpu
    );
    println!(
        "{} rounds, order rotated; {}-byte frames, live batch {}; havip maps: {} HAVIPs × {} members",
        s.rounds, s.frame_bytes, s.live_batch, s.havips, s.members_per_havip
    );
    println!("medians (min – max)\n");
    println!("Throughput, one core (Mpps)");
    for t in &r.throughput {
        println!("  {:<40} {}", t.name, spread(&t.value, 2));
    }
    println!("Paired ratios");
    for t in &r.ratios {
        println!("  {:<40} {}", t.name, spread(&t.value, 3));
    }
    println!(
        "Per-branch cost (ns/packet above the empty program; harness+empty {:.1} ns)",
        r.harness_empty_ns.median
    );
    for t in &r.branch_cost_ns {
        println!("  {:<40} {}", t.name, spread(&t.value, 1));
    }
    println!("VIP hit vs HAVIPs in the map (Mpps; ratio to 1 HAVIP)");
    for p in &r.scale {
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
    let rp = &r.repoint;
    println!(
        "Re-point latency ({} failovers each; claim -> first packet at the new holder, traffic flowing)",
        rp.failovers
    );
    for run in &rp.runs {
        println!("  {:<40} {}", format!("traffic in batches of {}", run.batch), latency(&run.latency));
    }
    if !r.keepalived.is_empty() {
        println!(
            "Failover with keepalived (advert 0.1 s; vm-c probes every {} µs; ms; platform = claim -> first answer)",
            failover::PROBE_EVERY.as_micros()
        );
        println!(
            "  {:<34} {:>7} {:>10} {:>8} {:>10} {:>5} {:>12}",
            "", "outage", "keepalived", "platform", "next probe", "lost", "MASTER->claim"
        );
        for k in &r.keepalived {
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
    println!("Control plane");
    println!(
        "  {:<40} {:.0} ms",
        format!("reconcile {} HAVIPs/{} members", r.control.reconcile_havips, r.control.reconcile_members),
        r.control.reconcile_ms
    );
    if let Some(a) = &r.agent {
        println!(
            "  {:<40} {:.0} ms to READY ({} HAVIPs in the vips map), RSS {:.1} MiB (peak {:.1} MiB)",
            format!("agent, {} HAVIPs/{} vNICs in one file", a.havips, a.vnics),
            a.ready_ms,
            a.vips_in_map,
            a.rss_kib as f64 / 1024.0,
            a.peak_rss_kib as f64 / 1024.0
        );
    }
    println!("Programs (xlated insns / JIT bytes / verifier-processed insns)");
    for p in &r.programs {
        println!("  {:<40} {} / {} / {}", p.name, p.xlated_insns, p.jited_bytes, p.verified_insns);
    }
    println!("Goals");
    for g in &r.goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        };
        println!("  {verdict:<7} {:<46} {}", g.goal, g.measured);
    }
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
