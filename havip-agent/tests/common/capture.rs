//! What arrives at an interface, read with an AF_PACKET socket: frames the
//! programs really sent (BPF_F_TEST_XDP_LIVE_FRAMES), counted and compared
//! byte for byte. No sleeps: a receive waits for a count under a deadline,
//! and "nothing else arrived" is proved with a fence, a frame sent into the
//! same receive queue after everything under test (veth keeps its order).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u8 = 4;
/// IEEE 802 local experimental EtherType: the fences.
const ETH_P_FENCE: u16 = 0x88b5;

/// An AF_PACKET socket bound to one interface.
pub struct Capture {
    fd: OwnedFd,
    ifindex: u32,
    fences: u64,
}

impl Capture {
    /// Opens a socket on the interface `ifindex` (in the calling thread's namespace).
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let proto = ETH_P_ALL.to_be();
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto as i32,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut c = Self { fd, ifindex, fences: 0 };
        // Anything that came in between socket() and bind(), from anywhere.
        while c.recv().is_some() {}
        Ok(c)
    }

    /// Sends `frame` out of the interface.
    pub fn send(&self, frame: &[u8]) {
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(n, frame.len() as isize, "sendto: {}", io::Error::last_os_error());
    }

    /// One frame that came in (not one this host sent out), if any is queued.
    fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            let mut buf = vec![0u8; 4096];
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut sll as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "recvfrom: {e}");
                return None;
            }
            if sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n as usize);
            return Some(buf);
        }
    }

    fn wait_readable(&self, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        r > 0
    }

    /// Waits (at most `within`) until `n` frames came in; returns what came.
    pub fn wait(&mut self, n: usize, within: Duration) -> Vec<Vec<u8>> {
        let until = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            match self.recv() {
                Some(f) => got.push(f),
                None if Instant::now() >= until => break,
                None => {
                    self.wait_readable(until);
                }
            }
        }
        got
    }

    /// Everything that came in before a fence `tx` (the other end of this
    /// interface's veth) sends now: the frames under test were all queued
    /// ahead of it, so none can come after.
    pub fn until_fence(&mut self, tx: &Capture) -> Vec<Vec<u8>> {
        self.fences += 1;
        let mut fence = vec![0x02, 0xfe, 0, 0, 0, 1, 0x02, 0xfe, 0, 0, 0, 2];
        fence.extend_from_slice(&ETH_P_FENCE.to_be_bytes());
        fence.extend_from_slice(&self.fences.to_be_bytes());
        fence.extend_from_slice(&self.ifindex.to_be_bytes());
        fence.resize(60, 0);
        tx.send(&fence);
        let until = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        loop {
            match self.recv() {
                Some(f) if f == fence => return got,
                Some(f) => got.push(f),
                None => {
                    assert!(Instant::now() < until, "the fence never came back");
                    self.wait_readable(until);
                }
            }
        }
    }
}
