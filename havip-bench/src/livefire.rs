//! Throughput through live frames: each path's program runs on real,
//! recycled pages and its verdicts act (redirects are sent, XDP_PASS enters
//! the kernel stack); a counting sink proves every packet arrived.

use anyhow::{Context, Result};
use aya::programs::Xdp;

use crate::{
    progs::{self, Sink, LIVE_BATCH},
    stop,
};

/// One way a packet can get from the client's vNIC to member a.
pub struct Path<'a> {
    pub name: String,
    pub prog: &'a Xdp,
    /// Any length (the bench's frames, or VXLAN ones 50 bytes longer).
    pub frame: Vec<u8>,
    pub ingress: u32,
    pub packets: u32,
    pub sink: &'a Sink,
}

impl Path<'_> {
    /// Packets per second of one live run, after checking delivery.
    fn measure(&self) -> Result<f64> {
        let before = self.sink.count()?;
        let wall = progs::live(self.prog, &self.frame, self.ingress, self.packets, LIVE_BATCH)
            .with_context(|| format!("path {}", self.name))?;
        progs::check_delivered(&self.name, self.sink, before, u64::from(self.packets))?;
        Ok(f64::from(self.packets) / wall.as_secs_f64())
    }
}

/// `rounds` rounds over all paths, each round starting one path later, so
/// no path always runs first (cold) or right after the same neighbour.
/// Returns packets/s as `[round][path]`.
pub fn rounds(paths: &[Path], rounds: usize) -> Result<Vec<Vec<f64>>> {
    rounds_of(paths.len(), rounds, |i, warm_up| {
        let pps = paths[i].measure();
        if warm_up {
            pps.with_context(|| format!("warm-up of {}", paths[i].name))
        } else {
            pps
        }
    })
}

/// The same rotation over `n` measurements of any kind: `measure(i,
/// warm_up)` gives measurement i's rate (one unmeasured warm-up of each
/// first). Returns `[round][i]`.
pub fn rounds_of(
    n: usize,
    rounds: usize,
    mut measure: impl FnMut(usize, bool) -> Result<f64>,
) -> Result<Vec<Vec<f64>>> {
    for i in 0..n {
        measure(i, true)?;
    }
    let mut out = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut pps = vec![0.0; n];
        for k in 0..n {
            stop::check()?;
            let i = (r + k) % n;
            pps[i] = measure(i, false)?;
        }
        out.push(pps);
    }
    Ok(out)
}
