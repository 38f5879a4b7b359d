//! What each branch of xdp_vnic costs: plain test runs (the verdict is not
//! acted on, so only the program is timed), through xdp_harness so a frame
//! the program rewrites (the ARP answer) is restored before every run. The
//! harness's own cost (template copy + tail call) is measured by pointing it
//! at the empty program, and subtracted.

use anyhow::{ensure, Context, Result};
use aya::programs::ProgramFd;

use crate::{
    fill::Plane,
    frames::Frame,
    progs::{self, Lab},
    stop,
};

/// Runs per test-run call: below the ~5,400 claim events the 256 KiB ring
/// buffer holds, so the claim branch always finds room (drained between calls).
const REPEAT: u32 = 4000;
const CALLS: usize = 20;

pub struct Branch {
    pub name: &'static str,
    pub target: ProgramFd,
    pub frame: Frame,
    pub ingress: u32,
    pub verdict: u32,
}

/// Mean ns per run of one branch, harness included.
fn time(lab: &mut Lab, plane: &mut Plane, b: &Branch) -> Result<f64> {
    lab.set_template(&b.frame)?;
    lab.set_target(&b.target)?;
    let mut total = 0.0;
    for _ in 0..CALLS {
        let (verdict, ns) = progs::plain(lab.prog(Lab::HARNESS)?, &b.frame, b.ingress, REPEAT)
            .with_context(|| format!("branch {}", b.name))?;
        ensure!(verdict == b.verdict, "branch {}: verdict {verdict}, expected {}", b.name, b.verdict);
        total += f64::from(ns);
        // Claim events: keep the ring buffer from filling, which would
        // switch the claim branch to its cheaper "event lost" path.
        while plane.events.next().is_some() {}
    }
    Ok(total / CALLS as f64)
}

/// `[round][branch]` ns per run with the harness-on-empty time subtracted,
/// empty timed right before each branch (pairs close in time); and those
/// empty times.
pub fn measure(
    lab: &mut Lab,
    plane: &mut Plane,
    empty: &Branch,
    branches: &[Branch],
    rounds: usize,
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let mut base = Vec::with_capacity(rounds * branches.len());
    let mut out = Vec::with_capacity(rounds);
    time(lab, plane, empty)?;
    for r in 0..rounds {
        stop::check()?;
        let mut row = vec![0.0; branches.len()];
        for k in 0..branches.len() {
            let i = (r + k) % branches.len();
            let e = time(lab, plane, empty)?;
            row[i] = time(lab, plane, &branches[i])? - e;
            base.push(e);
        }
        out.push(row);
    }
    Ok((base, out))
}
