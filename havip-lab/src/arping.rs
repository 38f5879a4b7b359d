//! RFC 5227 address conflict detection from inside a namespace, what
//! `arping -D` does: ARP probes "who has IP?" from sender IP 0.0.0.0, and
//! whoever answers for IP. Hand-made with [`crate::frames`] and an AF_PACKET
//! socket, so the lab needs no arping package and sees the answer's MAC.

use std::{
    ffi::CString,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{frames, netns, probe::ensure_test_range};

/// How long one receive blocks before the deadline is checked again.
const TICK: Duration = Duration::from_millis(20);

/// Sends `count` probes for `ip` from `mac` out of `ifname` in `ns`, spread
/// evenly over `wait`, and listens until `wait` is over: the MAC of the first
/// ARP reply that says it has `ip` (the address is in use), or `None` (free,
/// `arping -D` exits 0).
pub fn probe(
    ns: &str,
    ifname: &str,
    mac: [u8; 6],
    ip: Ipv4Addr,
    count: u32,
    wait: Duration,
) -> Result<Option<[u8; 6]>> {
    ensure_test_range(ip)?;
    let name = CString::new(ifname)?;
    let frame = frames::arp_probe(mac, ip.octets());
    let count = count.max(1);
    netns::run_in(ns, move || {
        let sock = PacketSocket::open(&name, frames::ETH_P_ARP)?;
        let start = Instant::now();
        let deadline = start + wait;
        let mut sent = 0;
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            if sent < count && Instant::now() >= start + wait * sent / count {
                sock.send(&frame)?;
                sent += 1;
            }
            let Some((n, outgoing)) = sock.recv(&mut buf)? else { continue };
            if outgoing {
                continue;
            }
            if let Some(sha) = reply_for(&buf[..n], ip) {
                return Ok(Some(sha));
            }
        }
        Ok(None)
    })
    .with_context(|| format!("probing for {ip} from {ifname} in {ns}"))
}

/// The sender MAC of `f` if it is an ARP reply from `ip`.
fn reply_for(f: &[u8], ip: Ipv4Addr) -> Option<[u8; 6]> {
    if f.len() < 42 || f[12..14] != frames::ETH_P_ARP.to_be_bytes() {
        return None;
    }
    let op = u16::from_be_bytes([f[20], f[21]]);
    (op == frames::ARPOP_REPLY && f[28..32] == ip.octets()).then(|| f[22..28].try_into().unwrap())
}

/// An AF_PACKET socket bound to one interface and protocol (EtherType, host
/// order), closed on drop; for use inside the namespace it was opened in.
pub struct PacketSocket {
    fd: i32,
    ifindex: i32,
    proto: u16,
}

impl PacketSocket {
    /// Opens the socket on `ifname` for frames of EtherType `proto`.
    pub fn open(ifname: &CString, proto: u16) -> Result<Self> {
        // SAFETY: plain syscalls on a socket this handle owns and closes.
        unsafe {
            let ifindex = libc::if_nametoindex(ifname.as_ptr());
            if ifindex == 0 {
                bail!("no interface {ifname:?}");
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto.to_be()));
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let sock = Self { fd, ifindex: ifindex as i32, proto };
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto.to_be();
            addr.sll_ifindex = sock.ifindex;
            let len = size_of::<libc::sockaddr_ll>() as u32;
            if libc::bind(fd, (&addr as *const libc::sockaddr_ll).cast(), len) != 0 {
                bail!("binding to {ifname:?}: {}", std::io::Error::last_os_error());
            }
            let tv = libc::timeval { tv_sec: 0, tv_usec: TICK.as_micros() as libc::suseconds_t };
            let tv_len = size_of::<libc::timeval>() as u32;
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                tv_len,
            ) != 0
            {
                bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
            }
            Ok(sock)
        }
    }

    /// Sends the whole Ethernet frame `f` out of the interface.
    pub fn send(&self, f: &[u8]) -> Result<()> {
        // SAFETY: sendto with a buffer and address that outlive the call.
        unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = self.proto.to_be();
            addr.sll_ifindex = self.ifindex;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&f[..6]);
            let len = size_of::<libc::sockaddr_ll>() as u32;
            let sent = libc::sendto(
                self.fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                len,
            );
            if sent != f.len() as isize {
                bail!("sending a frame of {} bytes: {}", f.len(), std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// One frame and whether this host sent it, or `None` after [`TICK`].
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<(usize, bool)>> {
        // SAFETY: recvfrom into buffers that outlive the call.
        unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            let n = libc::recvfrom(
                self.fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut addr as *mut libc::sockaddr_ll).cast(),
                &mut len,
            );
            if n < 0 {
                return no_frame(std::io::Error::last_os_error());
            }
            Ok(Some((n as usize, addr.sll_pkttype == libc::PACKET_OUTGOING)))
        }
    }
}

/// A failed receive on a socket with a receive timeout: the timeout (or a
/// signal, or nothing queued with `MSG_DONTWAIT`) is no frame, `None`;
/// anything else is an error.
pub fn no_frame<T>(err: std::io::Error) -> Result<Option<T>> {
    match err.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted => {
            Ok(None)
        }
        _ => Err(err).context("receiving a frame"),
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: the fd is this handle's own.
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
    const MAC: [u8; 6] = [0x02, 0x48, 0, 0, 0, 1];

    #[test]
    fn only_a_reply_from_the_address_counts() {
        let reply = frames::arp(frames::ARPOP_REPLY, MAC, VIP.octets(), [2; 6], [0; 4]);
        assert_eq!(reply_for(&reply, VIP), Some(MAC));
        assert_eq!(reply_for(&reply, Ipv4Addr::new(198, 18, 1, 51)), None);
        assert_eq!(reply_for(&frames::garp(MAC, VIP.octets()), VIP), None, "a request is no answer");
        assert_eq!(reply_for(&frames::arp_probe(MAC, VIP.octets()), VIP), None);
        assert_eq!(reply_for(&reply[..41], VIP), None);
    }
}
