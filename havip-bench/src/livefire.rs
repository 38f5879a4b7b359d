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
    for p in paths {
        p.measure().with_context(|| format!("warm-up of {}", p.name))?;
    }
    let mut out = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut pps = vec![0.0; paths.len()];
        for k in 0..paths.len() {
            stop::check()?;
            let i = (r + k) % paths.len();
            pps[i] = paths[i].measure()?;
        }
        out.push(pps);
    }
    Ok(out)
}
