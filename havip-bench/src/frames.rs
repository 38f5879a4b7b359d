//! The frames the bench injects, all 64 bytes (the Ethernet minimum with
//! FCS, so the same size as `BENCH_FRAME_LEN` in lab.bpf.c), and the
//! `struct xdp_md` context that says which vNIC they arrive on.

use std::net::Ipv4Addr;

pub const LEN: usize = 64;
pub type Frame = [u8; LEN];

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ARPOP_REQUEST: u16 = 1;
const BROADCAST: [u8; 6] = [0xff; 6];

fn eth(f: &mut Frame, dst: [u8; 6], src: [u8; 6], proto: u16) {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&proto.to_be_bytes());
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A UDP datagram, valid enough for the kernel to forward it (IPv4 checksum
/// right, TTL 64, UDP checksum 0 = none).
pub fn udp(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Frame {
    let mut f = [0; LEN];
    eth(&mut f, dst_mac, src_mac, ETH_P_IP);
    let ip_len = (LEN - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// An ARP request for IPv4 over Ethernet, padded with zeros.
fn arp_request(eth_src: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Frame {
    let mut f = [0; LEN];
    eth(&mut f, BROADCAST, eth_src, ETH_P_ARP);
    let a = &mut f[14..42];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    a[8..14].copy_from_slice(&eth_src);
    a[14..18].copy_from_slice(&spa.octets());
    a[24..28].copy_from_slice(&tpa.octets());
    f
}

/// A gratuitous ARP (sender = target = VIP), as keepalived sends to claim.
pub fn garp(mac: [u8; 6], vip: Ipv4Addr) -> Frame {
    arp_request(mac, vip, vip)
}

/// "Who has `target`?" from a client.
pub fn who_has(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Frame {
    arp_request(mac, ip, target)
}

/// `struct xdp_md` for a frame of `LEN` bytes arriving on `ingress_ifindex`:
/// data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
pub fn xdp_md(ingress_ifindex: u32) -> [u8; 24] {
    let fields = [0, LEN as u32, 0, ingress_ifindex, 0, 0];
    let mut ctx = [0; 24];
    for (chunk, v) in ctx.chunks_mut(4).zip(fields) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    ctx
}
