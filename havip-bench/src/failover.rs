//! Failover with real keepalived (the lab: vm-a, vm-b, advert interval
//! 0.1 s, the agent in hv) as vm-c sees it: a prober in vm-c sends to the
//! VIP every PROBE_EVERY, and each outage is split at the claim that moved
//! the holder in the kernel (`since_ns`, CLOCK_MONOTONIC, the same clock as
//! the lab's timeline):
//!   keepalived's share: last answer from the old holder -> the claim;
//!   the platform's share: the claim -> the first answer from the new holder.
//! The platform's share is only resolved to the probe interval (and to
//! the prober's scheduling on a busy 2-CPU box): the figure that matters is
//! whether the first probe sent after the claim was answered by the new
//! holder. The kernel side alone is the re-point latency (µs) of repoint.rs.

use std::time::Duration;

use anyhow::{Context, Result};
use havip_lab::{
    log::Timeline,
    netns::LabId,
    probe::Report,
    scenario::{Lab, FAILOVER_TIMEOUT},
    topology::{Guest, VM_A, VM_B},
};
use serde::Serialize;

use crate::stop;

pub const PROBE_EVERY: Duration = Duration::from_micros(200);
/// Answers from the new holder that end one failover's observation.
const SETTLED: usize = 200;

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// "master stops (SIGTERM)" or "vm-a preempts back".
    pub how: &'static str,
    pub to: &'static str,
    /// Last answer from the old holder -> first from the new one (what vm-c sees).
    pub outage_ms: f64,
    /// Last answer from the old holder -> the claim.
    pub keepalived_ms: f64,
    /// The claim -> first answer from the new holder (sent time), floored at 0.
    pub platform_ms: f64,
    /// The claim -> the first probe sent after it: below this the platform's
    /// share cannot be seen.
    pub next_probe_ms: f64,
    /// That first probe after the claim was answered by the new holder.
    pub next_probe_answered: bool,
    /// Probes sent after the claim that were never answered.
    pub lost_after_claim: usize,
    /// keepalived's own "Entering MASTER STATE" log line -> the claim.
    pub master_log_to_claim_ms: Option<f64>,
}

/// CLOCK_MONOTONIC now, in ns: the clock bpf_ktime_get_ns and Instant use.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A kernel CLOCK_MONOTONIC stamp on the timeline's clock.
fn on_timeline(tl: &Timeline, ns: u64) -> Duration {
    let offset = monotonic_ns().saturating_sub(tl.now().as_nanos() as u64);
    Duration::from_nanos(ns.saturating_sub(offset))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn split(
    how: &'static str,
    from: Guest,
    to: Guest,
    report: &Report,
    claim: Duration,
    tl: &Timeline,
) -> Result<Sample> {
    let answered_by = |g: Guest| {
        move |p: &&havip_lab::probe::Probe| p.answer.as_ref().is_some_and(|(who, _)| who == g.name)
    };
    let first_new = report
        .probes
        .iter()
        .find(answered_by(to))
        .with_context(|| format!("no probe was answered by {}", to.name))?
        .sent;
    let last_old = report
        .probes
        .iter()
        .filter(|p| p.sent < first_new)
        .rfind(answered_by(from))
        .with_context(|| format!("no probe was answered by {} before the failover", from.name))?
        .sent;
    let lost_after_claim =
        report.probes.iter().filter(|p| p.sent > claim && p.sent < first_new && p.answer.is_none()).count();
    let next = report.probes.iter().find(|p| p.sent >= claim).context("no probe was sent after the claim")?;
    let master_log = tl
        .lines()
        .into_iter()
        .find(|l| l.at > last_old && l.source.ends_with(to.name) && l.text.contains("Entering MASTER STATE"))
        .map(|l| l.at);
    Ok(Sample {
        how,
        to: to.name,
        outage_ms: ms(first_new - last_old),
        keepalived_ms: ms(claim.saturating_sub(last_old)),
        platform_ms: ms(first_new.saturating_sub(claim)),
        next_probe_ms: ms(next.sent - claim),
        next_probe_answered: answered_by(to)(&next),
        lost_after_claim,
        master_log_to_claim_ms: master_log.map(|m| (claim.as_secs_f64() - m.as_secs_f64()) * 1e3),
    })
}

/// One failover: `trigger` makes `to` the master; returns its split.
fn observe(
    lab: &mut Lab,
    how: &'static str,
    from: Guest,
    to: Guest,
    trigger: impl FnOnce(&mut Lab) -> Result<()>,
) -> Result<Sample> {
    let prober = lab.prober(PROBE_EVERY)?;
    prober.wait_answered_by(from.name, 100, FAILOVER_TIMEOUT)?;
    trigger(lab)?;
    let state = lab.wait_holder(to, FAILOVER_TIMEOUT)?;
    prober.wait_answered_by(to.name, SETTLED, FAILOVER_TIMEOUT)?;
    let report = prober.finish();
    let claim = on_timeline(&lab.timeline, state.since_ns);
    split(how, from, to, &report, claim, &lab.timeline)
}

/// `cycles` times: vm-a's keepalived stops (vm-b takes over), then starts
/// again and preempts (vm-a takes back).
pub fn run(cycles: usize) -> Result<Vec<Sample>> {
    let lab = Lab::start(LabId::unique("lab"), true)?;
    let mut out = Vec::with_capacity(cycles * 2);
    lab.run(|lab| {
        for _ in 0..cycles {
            stop::check()?;
            out.push(observe(lab, "master stops (SIGTERM)", VM_A, VM_B, |l| l.keepalived(VM_A)?.stop())?);
            out.push(observe(lab, "vm-a preempts back", VM_B, VM_A, |l| l.keepalived(VM_A)?.restart())?);
        }
        Ok(())
    })?;
    Ok(out)
}
