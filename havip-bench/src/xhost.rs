//! Re-point across hosts (issue 9), in the three-host lab (havip_lab::
//! multihost: hv1 runs vm-a, hv2 vm-b, hv3 vm-c; agents on a three-member
//! etcd): vm-c sends a steady UDP stream to the VIP while the holder
//! alternates between vm-a and vm-b by claims (a gratuitous ARP sent from
//! the new holder's eth0). A sample is the time from the claim to the first
//! packet of the stream at the new holder, both on the kernel's
//! CLOCK_REALTIME, which every namespace shares: the claim stamped just
//! before it is sent, the packet by the kernel on receipt (SO_TIMESTAMPNS on
//! a packet socket on the guest's eth0). Resolution: the stream's gap.
//!
//! Measured twice, each in a lab of its own: agents with `[underlay]
//! hints = false` (the new holder's host commits the claim on etcd; vm-c's
//! host re-points when its watch delivers the record), and with hints
//! (the default: the claiming agent also tells the other hosts directly).
//! No keepalived (the claims are the bench's) and no holder verification
//! (it would probe guests that do not have the VIP configured).

use std::{
    ffi::CString,
    mem::size_of,
    net::UdpSocket,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use havip_lab::{
    arping::{self, PacketSocket},
    frames,
    multihost::{host_of, Lab, Options, HOSTS, HV3},
    netns::{self, LabId},
    scenario::{self, FAILOVER_TIMEOUT},
    state,
    topology::{Guest, VIP, VM_A, VM_B, VM_C},
};

use crate::{report::CrossHost, stop};

/// The stream's UDP port (nothing listens: the guests' packet sockets see it).
const PORT: u16 = 47_001;
/// The stream's nominal gap (sleeps on this 2-CPU box take longer).
const GAP: Duration = Duration::from_micros(50);
/// Pause after each failover before checking that every host agrees.
const SETTLE: Duration = Duration::from_millis(100);
/// How long a claim may take to bring the stream to its sender.
const ARRIVE_WITHIN: Duration = Duration::from_secs(3);

/// CLOCK_REALTIME now, ns.
fn realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A packet socket on a guest's eth0 that sees the stream's packets,
/// each with the kernel's receive time (SO_TIMESTAMPNS).
struct Stamps {
    fd: OwnedFd,
}

impl Stamps {
    /// Opens it in the calling thread's namespace.
    fn open(ifname: &str) -> Result<Self> {
        let name = CString::new(ifname)?;
        // SAFETY: plain syscalls on a socket this handle owns.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            ensure!(ifindex != 0, "no interface {ifname}");
            let raw = libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(frames::ETH_P_IP.to_be()));
            ensure!(raw >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(raw);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = frames::ETH_P_IP.to_be();
            addr.sll_ifindex = ifindex as i32;
            let len = size_of::<libc::sockaddr_ll>() as u32;
            ensure!(
                libc::bind(raw, (&addr as *const libc::sockaddr_ll).cast(), len) == 0,
                "binding to {ifname}: {}",
                std::io::Error::last_os_error()
            );
            let on: i32 = 1;
            ensure!(
                libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_TIMESTAMPNS,
                    (&on as *const i32).cast(),
                    size_of::<i32>() as u32
                ) == 0,
                "SO_TIMESTAMPNS: {}",
                std::io::Error::last_os_error()
            );
            let tv = libc::timeval { tv_sec: 0, tv_usec: 10_000 };
            ensure!(
                libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as u32
                ) == 0,
                "SO_RCVTIMEO: {}",
                std::io::Error::last_os_error()
            );
            Ok(Self { fd })
        }
    }

    /// The next packet's receive time if it is one of the stream's (Some(0)
    /// for another packet), or None after the socket's timeout (or with
    /// `MSG_DONTWAIT` when nothing is queued).
    fn recv(&self, flags: i32) -> Result<Option<u64>> {
        let mut buf = [0u8; 64];
        let mut cbuf = [0u64; 16];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: recvmsg into buffers that outlive the call; the control
        // messages are read within what the kernel says it wrote.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 16]>();
            let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, flags);
            if n < 0 {
                return arping::no_frame(std::io::Error::last_os_error());
            }
            let n = n as usize;
            // IPv4 (no options), UDP, to the VIP at PORT.
            let ours = n >= 28
                && buf[0] == 0x45
                && buf[9] == frames::IPPROTO_UDP
                && buf[16..20] == VIP.octets()
                && buf[22..24] == PORT.to_be_bytes();
            if !ours {
                return Ok(Some(0));
            }
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Ok(Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            bail!("a packet without its receive time")
        }
    }

    /// Throws away what is queued.
    fn drain(&self) -> Result<()> {
        for _ in 0..100_000 {
            if self.recv(libc::MSG_DONTWAIT)?.is_none() {
                return Ok(());
            }
        }
        bail!("the stream floods a guest that does not hold the VIP")
    }

    /// The receive time of the first stream packet at or after `after`
    /// (realtime ns), within `limit`.
    fn first_after(&self, after: u64, limit: Duration) -> Result<Option<u64>> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(t) = self.recv(0)? {
                if t >= after {
                    return Ok(Some(t));
                }
            }
        }
        Ok(None)
    }
}

/// A member: its namespace's packet sockets for claims and stamps.
struct Member {
    guest: Guest,
    garp: PacketSocket,
    stamps: Stamps,
}

impl Member {
    fn open(lab: &Lab, guest: Guest) -> Result<Self> {
        let ns = lab.topo.ns(guest);
        let (garp, stamps) = netns::run_in(&ns, || {
            Ok((PacketSocket::open(&CString::new("eth0")?, frames::ETH_P_ARP)?, Stamps::open("eth0")?))
        })?;
        Ok(Self { guest, garp, stamps })
    }

    /// Sends the claim; returns when (realtime ns) it was sent.
    fn claim(&self) -> Result<u64> {
        let f = frames::garp(self.guest.mac(), VIP.octets());
        let at = realtime_ns();
        self.garp.send(&f)?;
        Ok(at)
    }
}

/// vm-c's stream to the VIP, from a thread of its own in vm-c.
struct Stream {
    stop: AtomicBool,
    sent: AtomicU64,
}

impl Stream {
    fn run(&self, sock: &UdpSocket) {
        // SAFETY: prctl on the calling thread; sleeps of GAP, not GAP + 50 µs.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64) };
        let payload = [0x5au8; 18];
        let bound = Instant::now() + Duration::from_secs(600);
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < bound {
            // Errors (no ARP answer yet) are the stream's gaps, not the bench's.
            if sock.send(&payload).is_ok() {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            thread::sleep(GAP);
        }
    }
}

/// Waits until the claim is committed and applied on every host, so the
/// next one is not a race with it: with hints, hosts say `g` holds the VIP
/// before etcd has the claim, and claims closer together than a commit are
/// ordered by etcd, not by when they were made (seen here: the earlier of
/// two claims 10 ms apart ended up holding). A commit takes 2-15 ms here;
/// SETTLE is well above, then every host must agree on holder and revision.
fn settle(lab: &Lab, g: Guest) -> Result<()> {
    thread::sleep(SETTLE);
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    loop {
        let views = HOSTS.iter().map(|&h| lab.describe(h)).collect::<Result<Vec<_>>>()?;
        let held = views.iter().all(|v| v["holder"].as_str() == Some(g.vnic));
        let revision = views[0]["revision"].as_u64();
        if held && revision.is_some_and(|r| r > 0) && views.iter().all(|v| v["revision"].as_u64() == revision)
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the hosts did not agree that {} holds the VIP: {views:?}",
            g.name
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `n` failovers vm-a -> vm-b -> vm-a ... in a fresh lab, hints on or off.
pub fn run(hints: bool, n: usize) -> Result<CrossHost> {
    let opts = Options {
        no_hints: !hints,
        base: scenario::Options {
            agent_sections: "[verification]\nenabled = false\n".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut lab = Lab::create(LabId::unique("bench"), true, opts)?;
    let result = (|| {
        lab.start_agents()?;
        lab.apply_desired()?;
        measure(&lab, n)
    })();
    lab.on_error(result)
}

fn measure(lab: &Lab, n: usize) -> Result<CrossHost> {
    let a = Member::open(lab, VM_A)?;
    let b = Member::open(lab, VM_B)?;
    // Claims from vm-a until every host says it holds the VIP: the agents
    // attach and fill their maps some time after the desired state lands.
    let mut held = false;
    for _ in 0..40 {
        a.claim()?;
        if lab.wait_holder_everywhere(VM_A, Duration::from_millis(500)).is_ok() {
            held = true;
            break;
        }
    }
    ensure!(held, "vm-a's claims never made it the holder on every host");
    let sock = netns::run_in(&lab.topo.ns(VM_C), || {
        let s = UdpSocket::bind((VM_C.ip, 0)).context("binding vm-c's stream socket")?;
        s.connect((VIP, PORT)).context("connecting to the VIP")?;
        Ok(s)
    })?;
    let stream = Stream { stop: AtomicBool::new(false), sent: AtomicU64::new(0) };
    let started = Instant::now();
    let (samples, sent) = thread::scope(|s| {
        s.spawn(|| stream.run(&sock));
        let out = failovers(lab, &a, &b, n);
        stream.stop.store(true, Ordering::Relaxed);
        (out, stream.sent.load(Ordering::Relaxed))
    });
    let elapsed = started.elapsed();
    let samples = samples?;
    let ns: Vec<u64> = samples.iter().map(|s| s.0).collect();
    let split: Vec<u64> = samples.iter().filter_map(|s| s.1).collect();
    Ok(CrossHost {
        failovers: ns.len(),
        repointed_samples: split.len(),
        repointed: (!split.is_empty()).then(|| crate::latency(split)),
        stream_gap_us: elapsed.as_secs_f64() * 1e6 / sent.max(1) as f64,
        under_1ms: ns.iter().filter(|&&t| t < 1_000_000).count(),
        samples_us: ns.iter().map(|t| t / 1000).collect(),
        latency: crate::latency(ns),
    })
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC now, ns: turns the kernel's
/// bpf_ktime_get_ns stamps into the samples' clock (to well under a µs).
fn realtime_offset() -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
    realtime_ns() as i128 - mono
}

/// Claim -> vm-c's host (hv3) pointed the VIP at the new holder's host:
/// `since_ns` of its VIP state, which the holder write stamps. None if hv3's
/// state says another host, or was written again after the first packet.
fn repointed(lab: &Lab, to: Guest, claim: u64, first: u64) -> Result<Option<u64>> {
    let Some(s) = state::vip_state(&lab.topo.id.pin_dir_of(HV3.id), VIP)? else { return Ok(None) };
    if s.holder_vtep != host_of(to).underlay().octets() {
        return Ok(None);
    }
    let at = i128::from(s.since_ns) + realtime_offset();
    Ok((i128::from(claim)..=i128::from(first)).contains(&at).then(|| (at - i128::from(claim)) as u64))
}

/// Per failover: claim -> first packet at the new holder, and claim -> hv3 re-pointed.
fn failovers(lab: &Lab, a: &Member, b: &Member, n: usize) -> Result<Vec<(u64, Option<u64>)>> {
    // The stream reaches vm-a, the holder.
    a.stamps.drain()?;
    a.stamps.first_after(0, ARRIVE_WITHIN)?.context("vm-c's stream never reached vm-a, the holder")?;
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        stop::check()?;
        let (from, to) = if k % 2 == 0 { (a, b) } else { (b, a) };
        // Flowing to the holder right now; nothing stale queued at `to`.
        from.stamps.drain()?;
        from.stamps
            .first_after(0, ARRIVE_WITHIN)?
            .with_context(|| format!("the stream stopped reaching {}, the holder", from.guest.name))?;
        to.stamps.drain()?;
        let claim = to.claim()?;
        let first = to.stamps.first_after(claim, ARRIVE_WITHIN)?.with_context(|| {
            format!("no packet of the stream reached {} within {ARRIVE_WITHIN:?} of its claim", to.guest.name)
        })?;
        out.push((first - claim, repointed(lab, to.guest, claim, first)?));
        settle(lab, to.guest)?;
    }
    Ok(out)
}
