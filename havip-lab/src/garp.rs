//! A hand-made gratuitous ARP (sender IP = target IP = the VIP), sent from
//! inside a namespace through an AF_PACKET socket: what a spoofer would send.

use std::{ffi::CString, net::Ipv4Addr};

use anyhow::{bail, Context, Result};

use crate::netns;

const ETH_P_ARP: u16 = 0x0806;

/// The 42-byte frame: Ethernet broadcast + ARP request "who has VIP, tell VIP".
fn frame(vip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&vip.octets());
    f
}

/// Sends one gratuitous ARP for `vip` from `mac` out of `ifname` in `ns`.
pub fn send(ns: &str, ifname: &str, vip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
    let ifname = CString::new(ifname)?;
    netns::run_in(ns, move || {
        // SAFETY: plain syscalls on a socket this closure owns and closes.
        unsafe {
            let ifindex = libc::if_nametoindex(ifname.as_ptr());
            if ifindex == 0 {
                bail!("no interface {ifname:?}");
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ARP.to_be()));
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_ARP.to_be();
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].fill(0xff);
            let f = frame(vip, mac);
            let sent = libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if sent != f.len() as isize {
                return Err(err).context("sending the gratuitous ARP");
            }
        }
        Ok(())
    })
}
