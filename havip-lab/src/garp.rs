//! Hand-made frames ([`crate::frames`]) sent from inside a namespace through
//! an AF_PACKET socket: a gratuitous ARP (sender IP = target IP = the VIP),
//! what a spoofer would send, or any frame a test needs on the wire as is.

use std::{ffi::CString, net::Ipv4Addr};

use anyhow::{bail, Context, Result};

use crate::{frames, netns};

/// Sends one gratuitous ARP for `vip` from `mac` out of `ifname` in `ns`.
pub fn send(ns: &str, ifname: &str, vip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
    send_frame(ns, ifname, frames::garp(mac, vip.octets())).context("sending the gratuitous ARP")
}

/// Sends `f`, a whole Ethernet frame, out of `ifname` in `ns`.
pub fn send_frame(ns: &str, ifname: &str, f: Vec<u8>) -> Result<()> {
    if f.len() < 14 {
        bail!("a frame of {} bytes has no Ethernet header", f.len());
    }
    let ifname = CString::new(ifname)?;
    let proto = u16::from_be_bytes([f[12], f[13]]);
    netns::run_in(ns, move || {
        // SAFETY: plain syscalls on a socket this closure owns and closes.
        unsafe {
            let ifindex = libc::if_nametoindex(ifname.as_ptr());
            if ifindex == 0 {
                bail!("no interface {ifname:?}");
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto.to_be()));
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto.to_be();
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&f[..6]);
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
                return Err(err).with_context(|| format!("sending a frame out of {ifname:?}"));
            }
        }
        Ok(())
    })
}
