//! A broadcast storm from a guest, bounded in count and time, and a
//! listener in another guest that counts what reaches it: what storm
//! control (issue 11) is measured with.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::{netns, probe};

/// The UDP port the storm goes to (nothing else in the lab uses it).
pub const PORT: u16 = 5099;
/// Datagrams are sent in batches this often: a steady rate without a
/// sleep per datagram.
const BATCH_EVERY: Duration = Duration::from_millis(5);

/// What a storm sent.
#[derive(Clone, Copy, Debug)]
pub struct Storm {
    pub sent: u64,
    /// From the first datagram to the last.
    pub elapsed: Duration,
}

/// Sends `count` UDP datagrams to `to:PORT` (a broadcast address in the
/// test ranges, e.g. the subnet's 198.18.1.255) from namespace `ns` at
/// `pps`, and returns when done: at most `count` datagrams, and never
/// longer than the schedule plus a second.
pub fn storm(ns: &str, to: Ipv4Addr, pps: u32, count: u64) -> Result<Storm> {
    probe::ensure_test_range(to)?;
    ensure!(pps > 0 && count > 0, "a storm needs a rate and a count");
    let sock = netns::run_in(ns, || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding the storm's socket")?;
        s.set_broadcast(true).context("SO_BROADCAST")?;
        Ok(s)
    })?;
    let dest = SocketAddr::from((to, PORT));
    let per_batch = (u64::from(pps) * BATCH_EVERY.as_micros() as u64).div_ceil(1_000_000).max(1);
    let schedule = Duration::from_secs_f64(count as f64 / f64::from(pps));
    let deadline = schedule + Duration::from_secs(1);
    let payload = [0x5au8; 64];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut batch = 0u32;
    while sent < count && start.elapsed() < deadline {
        // A fixed schedule: batch n goes at n × BATCH_EVERY.
        let due = start + BATCH_EVERY * batch;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        for _ in 0..per_batch.min(count - sent) {
            match sock.send_to(&payload, dest) {
                Ok(_) => sent += 1,
                // A full queue drops the datagram, as a guest's NIC would.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("sending the storm"),
            }
        }
        batch += 1;
    }
    Ok(Storm { sent, elapsed: start.elapsed() })
}

/// Counts the datagrams to `PORT` that reach a guest (broadcast
/// included) until dropped.
pub struct Listener {
    count: Arc<AtomicU64>,
    _worker: probe::Worker,
}

impl Listener {
    pub fn start(ns: &str) -> Result<Self> {
        let sock = netns::run_in(ns, || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).context("binding the storm listener")?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, n) = (stop.clone(), count.clone());
        let worker = probe::Worker::spawn(stop, move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::SeqCst) {
                if sock.recv(&mut buf).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Self { count, _worker: worker })
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
