//! Asking a guest whether it has an address: an ARP request sent into its
//! vNIC from the host side (AF_PACKET on the host end), so it reaches the
//! guest and nobody else. A probe (sender IP 0.0.0.0, RFC 5227) is answered
//! by a Linux guest that has the address (`arp_process`: a duplicate-address
//! probe for a local address is answered with a reply from that address), and
//! leaves no neighbour entry behind in the guest.
//!
//! A raw socket rather than a library: this is one frame on one interface,
//! and the libraries that build frames would bring a capture stack with them.

use std::{io, mem, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

use anyhow::{Context, Result};

/// ETH_P_ARP, network order for sockaddr_ll.
const ETH_P_ARP: u16 = 0x0806;

/// A raw AF_PACKET socket that sends frames out of any interface by index.
pub struct ArpSender {
    fd: OwnedFd,
}

impl ArpSender {
    /// Opens the socket (needs CAP_NET_RAW, which the agent has as root or
    /// through CAP_NET_ADMIN's unit; see deploy/).
    pub fn open() -> Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("opening an AF_PACKET socket for ARP probes");
        }
        // SAFETY: a fresh fd we own.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Sends "who has `ip`?" from 0.0.0.0 out of the host end `ifindex`
    /// (MAC `host_mac`) to the guest MAC `guest_mac`.
    pub fn probe(&self, ifindex: u32, host_mac: [u8; 6], guest_mac: [u8; 6], ip: [u8; 4]) -> Result<()> {
        let frame = probe_frame(host_mac, guest_mac, ip);
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&guest_mac);
        // SAFETY: valid buffer and address of the stated sizes.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("sending an ARP probe out of ifindex {ifindex}"));
        }
        Ok(())
    }
}

/// The probe: Ethernet to the guest, ARP request (RFC 826) with sender
/// hardware address the host end's, sender IP 0.0.0.0, target `ip`.
pub fn probe_frame(host_mac: [u8; 6], guest_mac: [u8; 6], ip: [u8; 4]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&guest_mac);
    f[6..12].copy_from_slice(&host_mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f[22..28].copy_from_slice(&host_mac);
    // spa 0.0.0.0 (28..32), tha 0 (32..38): a probe.
    f[38..42].copy_from_slice(&ip);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_an_rfc5227_request_to_the_guest() {
        let f = probe_frame([2, 0, 0, 0, 0, 0xaa], [2, 0, 0, 0, 0, 0x0b], [198, 18, 1, 50]);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 0x0b], "unicast to the guest");
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[28..32], &[0; 4], "sender IP 0.0.0.0: a probe");
        assert_eq!(&f[38..42], &[198, 18, 1, 50]);
    }
}
