//! The frames the bench injects, built by `havip_lab::frames` and padded to
//! 64 bytes (the Ethernet minimum with FCS, so the same size as
//! `BENCH_FRAME_LEN` in lab.bpf.c), and the `struct xdp_md` context that
//! says which vNIC they arrive on.

use std::net::Ipv4Addr;

use havip_lab::frames::{self as lab, Ipv4Fields};

pub const LEN: usize = 64;
pub type Frame = [u8; LEN];

/// `bytes` padded with zeros to `LEN`.
fn padded(bytes: Vec<u8>) -> Frame {
    let mut f = [0; LEN];
    f[..bytes.len()].copy_from_slice(&bytes);
    f
}

/// A UDP datagram, valid enough for the kernel to forward it (IPv4 id 0,
/// no flags, TTL 64, checksum right; UDP checksum 0 = none), filling `LEN`.
pub fn udp(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Frame {
    let datagram = lab::udp(40000, 9, &[0; LEN - 14 - 20 - 8]);
    let fields = Ipv4Fields { id: 0, frag: 0, ttl: 64 };
    let ip = lab::ipv4_header(fields, src.octets(), dst.octets(), lab::IPPROTO_UDP, datagram.len());
    padded([lab::eth(dst_mac, src_mac, lab::ETH_P_IP), ip, datagram].concat())
}

/// A gratuitous ARP (sender = target = VIP), as keepalived sends to claim.
pub fn garp(mac: [u8; 6], vip: Ipv4Addr) -> Frame {
    padded(lab::garp(mac, vip.octets()))
}

/// "Who has `target`?" from a client.
pub fn who_has(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Frame {
    padded(lab::arp(lab::ARPOP_REQUEST, mac, ip.octets(), [0; 6], target.octets()))
}

/// `struct xdp_md` for a frame of `LEN` bytes arriving on `ingress_ifindex`.
pub fn xdp_md(ingress_ifindex: u32) -> [u8; 24] {
    lab::xdp_md(LEN as u32, ingress_ifindex)
}
