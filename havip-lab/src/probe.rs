//! Traffic through the VIP, as a client sees it: UDP echo responders in the
//! members that sign their answers, and a prober in vm-c that sends a
//! sequence-numbered datagram at a fixed rate and records who answered.

use std::{
    io::{ErrorKind, IoSlice, IoSliceMut},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn,
};

use crate::{log::Timeline, netns, wait};

pub const PORT: u16 = 5050;
/// How long a receive blocks before checking whether to stop.
const TICK: Duration = Duration::from_millis(50);
/// How long to wait for the last probes' answers when stopping.
const DRAIN: Duration = Duration::from_millis(300);

/// Probes go only to addresses reserved for testing.
pub fn ensure_test_range(ip: Ipv4Addr) -> Result<()> {
    let o = ip.octets();
    let ok = (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113);
    if !ok {
        bail!("refusing to probe {ip}: the lab only sends to 198.18.0.0/15, 198.51.100.0/24, 203.0.113.0/24");
    }
    Ok(())
}

fn bind_in(ns: &str, port: u16) -> Result<UdpSocket> {
    netns::run_in(ns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
            .with_context(|| format!("binding UDP port {port}"))?;
        sock.set_read_timeout(Some(TICK))?;
        Ok(sock)
    })
}

/// A background loop that stops (and is joined) when its handle drops.
pub(crate) struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub(crate) fn spawn(stop: Arc<AtomicBool>, body: impl FnOnce() + Send + 'static) -> Self {
        Self { stop, thread: Some(thread::spawn(body)) }
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Echoes every datagram on [`PORT`] back with `|<name>` appended, from the
/// address it was sent to (the VIP), as a real service answers.
pub struct Responder {
    _worker: Worker,
}

impl Responder {
    pub fn start(ns: &str, name: &str) -> Result<Self> {
        let sock = bind_in(ns, PORT).with_context(|| format!("starting the echo responder in {name}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, sign) = (stop.clone(), format!("|{name}"));
        setsockopt(&sock, sockopt::Ipv4PacketInfo, &true).context("asking for IP_PKTINFO")?;
        let worker = Worker::spawn(stop, move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::SeqCst) {
                let Ok((n, from, to)) = recv_with_dst(&sock, &mut buf[..400]) else { continue };
                buf[n..n + sign.len()].copy_from_slice(sign.as_bytes());
                let _ = send_from(&sock, &buf[..n + sign.len()], from, to);
            }
        });
        Ok(Self { _worker: worker })
    }
}

/// A datagram, its sender, and the local address it was sent to.
fn recv_with_dst(sock: &UdpSocket, buf: &mut [u8]) -> Result<(usize, SockaddrIn, libc::in_addr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let msg = recvmsg::<SockaddrIn>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    let to = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(info.ipi_addr),
        _ => None,
    });
    let from = msg.address.context("datagram without a sender")?;
    Ok((msg.bytes, from, to.context("datagram without IP_PKTINFO")?))
}

/// Sends `data` to `to` with `src` as its source address.
fn send_from(sock: &UdpSocket, data: &[u8], to: SockaddrIn, src: libc::in_addr) -> Result<usize> {
    let info = libc::in_pktinfo { ipi_ifindex: 0, ipi_spec_dst: src, ipi_addr: src };
    let sent = sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        &[ControlMessage::Ipv4PacketInfo(&info)],
        MsgFlags::empty(),
        Some(&to),
    )?;
    Ok(sent)
}

/// What became of one probe.
#[derive(Clone, Debug)]
pub struct Probe {
    pub seq: u64,
    /// When it was sent, on the lab's clock.
    pub sent: Duration,
    /// Who answered and the round trip, or `None` if lost.
    pub answer: Option<(String, Duration)>,
}

/// Sends to `target:PORT` every `interval` from namespace `ns` until stopped.
pub struct Prober {
    probes: Arc<Mutex<Vec<Probe>>>,
    timeline: Timeline,
    sender: Worker,
    receiver: Worker,
}

impl Prober {
    pub fn start(ns: &str, target: Ipv4Addr, interval: Duration, timeline: &Timeline) -> Result<Self> {
        ensure_test_range(target)?;
        let sock = bind_in(ns, 0).context("starting the prober")?;
        let to = SocketAddr::from((target, PORT));
        // Connected, the socket only takes answers that come from the address
        // probed: a reply from any other source (un-NATed, say) is not one.
        sock.connect(to).with_context(|| format!("connecting the prober to {to}"))?;
        let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
        let rx = sock.try_clone()?;

        let stop = Arc::new(AtomicBool::new(false));
        let (flag, list, clock) = (stop.clone(), probes.clone(), timeline.clone());
        let sender = Worker::spawn(stop, move || {
            let start = Instant::now();
            for seq in 0u64.. {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                // A fixed schedule, so a slow send does not lower the rate.
                let due = start + interval * seq as u32;
                thread::sleep(due.saturating_duration_since(Instant::now()));
                list.lock().unwrap().push(Probe { seq, sent: clock.now(), answer: None });
                let _ = sock.send(&seq.to_be_bytes());
            }
        });

        let stop = Arc::new(AtomicBool::new(false));
        let (flag, list, clock) = (stop.clone(), probes.clone(), timeline.clone());
        let receiver = Worker::spawn(stop, move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::SeqCst) {
                let n = match rx.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                    // e.g. ICMP unreachable reported on the socket: a loss, not a reason to stop.
                    Err(_) => continue,
                };
                let Some((seq, name)) = parse_answer(&buf[..n]) else { continue };
                let now = clock.now();
                let mut list = list.lock().unwrap();
                if let Some(p) = list.get_mut(seq as usize) {
                    if p.answer.is_none() {
                        p.answer = Some((name, now.saturating_sub(p.sent)));
                    }
                }
            }
        });
        Ok(Self { probes, timeline: timeline.clone(), sender, receiver })
    }

    /// Waits until `count` probes sent from now on are answered by `responder`.
    pub fn wait_answered_by(&self, responder: &str, count: usize, timeout: Duration) -> Result<()> {
        let from = self.timeline.now();
        wait::until(&format!("{count} probes to the VIP to be answered by {responder}"), timeout, || {
            let list = self.probes.lock().unwrap();
            let hits = list
                .iter()
                .rev()
                .take_while(|p| p.sent >= from)
                .filter(|p| p.answer.as_ref().is_some_and(|(who, _)| who == responder))
                .count();
            Ok((hits >= count).then_some(()))
        })
    }

    /// Stops sending, waits for the last answers, and reports.
    pub fn finish(mut self) -> Report {
        self.sender.finish();
        thread::sleep(DRAIN); // in-flight answers: a fixed grace, not a condition
        self.receiver.finish();
        Report { probes: self.probes.lock().unwrap().clone() }
    }
}

fn parse_answer(buf: &[u8]) -> Option<(u64, String)> {
    let seq = u64::from_be_bytes(buf.get(..8)?.try_into().ok()?);
    let name = std::str::from_utf8(buf.get(8..)?).ok()?.strip_prefix('|')?;
    Some((seq, name.to_owned()))
}

/// A run of consecutive probes answered by the same responder.
#[derive(Debug, Clone)]
pub struct Span {
    pub responder: String,
    pub from: Duration,
    pub to: Duration,
    pub count: usize,
}

/// A run of consecutive lost probes.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    /// Last answered probe before the gap was sent (or the first lost one, if none).
    pub from: Duration,
    /// First answered probe after the gap was sent (or the last lost one, if none).
    pub to: Duration,
    pub lost: usize,
}

pub struct Report {
    pub probes: Vec<Probe>,
}

impl Report {
    /// Only the probes sent at or after `from`.
    pub fn since(&self, from: Duration) -> Report {
        Report { probes: self.probes.iter().filter(|p| p.sent >= from).cloned().collect() }
    }

    pub fn sent(&self) -> usize {
        self.probes.len()
    }

    pub fn lost(&self) -> usize {
        self.probes.iter().filter(|p| p.answer.is_none()).count()
    }

    pub fn spans(&self) -> Vec<Span> {
        let mut spans: Vec<Span> = Vec::new();
        for p in &self.probes {
            let Some((who, _)) = &p.answer else { continue };
            match spans.last_mut() {
                Some(s) if &s.responder == who => {
                    s.to = p.sent;
                    s.count += 1;
                }
                _ => spans.push(Span { responder: who.clone(), from: p.sent, to: p.sent, count: 1 }),
            }
        }
        spans
    }

    /// Every run of lost probes, in order.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        let mut i = 0;
        while i < self.probes.len() {
            if self.probes[i].answer.is_some() {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.probes.len() && self.probes[i].answer.is_none() {
                i += 1;
            }
            let from = start.checked_sub(1).map_or(self.probes[start].sent, |j| self.probes[j].sent);
            let to = self.probes.get(i).map_or(self.probes[i - 1].sent, |p| p.sent);
            gaps.push(Gap { from, to, lost: i - start });
        }
        gaps
    }

    pub fn longest_gap(&self) -> Option<Gap> {
        self.gaps().into_iter().max_by_key(|g| g.to - g.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(answers: &[Option<&str>]) -> Report {
        let probes = answers
            .iter()
            .enumerate()
            .map(|(i, a)| Probe {
                seq: i as u64,
                sent: Duration::from_millis(10 * i as u64),
                answer: a.map(|who| (who.to_owned(), Duration::from_micros(100))),
            })
            .collect();
        Report { probes }
    }

    #[test]
    fn spans_and_gaps_follow_the_responders() {
        let r = report(&[Some("vm-a"), Some("vm-a"), None, None, Some("vm-b"), Some("vm-a")]);
        let spans: Vec<(String, usize)> = r.spans().into_iter().map(|s| (s.responder, s.count)).collect();
        assert_eq!(spans, [("vm-a".into(), 2), ("vm-b".into(), 1), ("vm-a".into(), 1)]);
        let gap = r.longest_gap().expect("one gap");
        // From the last answered probe before it to the first answered after it.
        assert_eq!((gap.from, gap.to, gap.lost), (Duration::from_millis(10), Duration::from_millis(40), 2));
        assert_eq!((r.sent(), r.lost()), (6, 2));
        assert_eq!(r.since(Duration::from_millis(40)).sent(), 2);
    }

    #[test]
    fn gaps_at_the_edges_are_bounded_by_the_lost_probes() {
        let r = report(&[None, Some("vm-a"), None]);
        let gaps: Vec<(Duration, Duration, usize)> =
            r.gaps().into_iter().map(|g| (g.from, g.to, g.lost)).collect();
        assert_eq!(
            gaps,
            [
                (Duration::ZERO, Duration::from_millis(10), 1),
                (Duration::from_millis(10), Duration::from_millis(20), 1)
            ]
        );
        assert!(report(&[Some("vm-a")]).longest_gap().is_none());
    }

    #[test]
    fn only_test_ranges_are_probed() {
        assert!(ensure_test_range(Ipv4Addr::new(198, 18, 1, 50)).is_ok());
        assert!(ensure_test_range(Ipv4Addr::new(203, 0, 113, 7)).is_ok());
        assert!(ensure_test_range(Ipv4Addr::new(8, 8, 8, 8)).is_err());
        assert!(ensure_test_range(Ipv4Addr::new(198, 20, 0, 1)).is_err());
    }

    #[test]
    fn answers_carry_sequence_and_responder() {
        let mut buf = 7u64.to_be_bytes().to_vec();
        buf.extend_from_slice(b"|vm-b");
        assert_eq!(parse_answer(&buf), Some((7, "vm-b".to_owned())));
        assert_eq!(parse_answer(b"short"), None);
    }
}
