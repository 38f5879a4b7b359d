//! Hand-made frames, byte for byte: Ethernet, ARP (gratuitous ARP too),
//! IPv4 with its header checksum, UDP/TCP/ICMP segments with their
//! checksums, VRRPv3 adverts, and the `struct xdp_md` a test run takes
//! (and the test run itself, [`test_run`]). One
//! definition each, for the lab, the bench and every test: tests assert
//! exact bytes and the bench measures them, so a builder's output only
//! changes with a parameter its caller passes.

use anyhow::Context;
use aya::programs::{TestRun, TestRunOptions, Xdp};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
/// IEEE 802.1Q tag protocol identifier.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const BROADCAST: [u8; 6] = [0xff; 6];
pub const ARPOP_REQUEST: u16 = 1;
pub const ARPOP_REPLY: u16 = 2;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_VRRP: u8 = 112;

/// An Ethernet header.
pub fn eth(dst: [u8; 6], src: [u8; 6], proto: u16) -> Vec<u8> {
    [&dst[..], &src[..], &proto.to_be_bytes()].concat()
}

/// An ARP frame for IPv4 over Ethernet (42 bytes): a request goes to
/// broadcast, a reply to `tha`.
pub fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let dst = if op == ARPOP_REQUEST { BROADCAST } else { tha };
    let body = [&[0, 1, 8, 0, 6, 4][..], &op.to_be_bytes(), &sha, &spa, &tha, &tpa].concat();
    [eth(dst, sha, ETH_P_ARP), body].concat()
}

/// A gratuitous ARP: a broadcast request "who has `ip`, tell `ip`", as
/// keepalived sends on taking a VIP (and a spoofer would).
pub fn garp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    arp(ARPOP_REQUEST, mac, ip, [0; 6], ip)
}

/// An RFC 5227 ARP probe: "who has `ip`?" from sender IP 0.0.0.0, as a
/// host checking that an address is free before using it (`arping -D`).
pub fn arp_probe(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    arp(ARPOP_REQUEST, mac, [0; 4], [0; 6], ip)
}

/// `frame` with an 802.1Q tag (TCI `tci`: PCP, DEI, VID) inserted after its
/// MACs; TCI 0 is a priority tag with VID 0, which means "untagged".
pub fn vlan_tagged(frame: &[u8], tci: u16) -> Vec<u8> {
    [&frame[..12], &ETH_P_8021Q.to_be_bytes(), &tci.to_be_bytes(), &frame[12..]].concat()
}

/// One's complement sum of big-endian 16-bit words (odd tail padded).
pub fn ones_sum(data: &[u8]) -> u32 {
    data.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum()
}

/// Folds a sum to the 16-bit checksum field value.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(ones_sum(data))
}

/// The IPv4 header words callers vary; version 4, IHL 5 and TOS 0 are fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Fields {
    pub id: u16,
    /// Flags and fragment offset.
    pub frag: u16,
    pub ttl: u8,
}

impl Ipv4Fields {
    /// Id 1, don't fragment, TTL 64: what the tests send.
    pub const DF: Self = Self { id: 1, frag: 0x4000, ttl: 64 };
}

/// An IPv4 header (20 bytes) with a correct checksum.
pub fn ipv4_header(f: Ipv4Fields, src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize) -> Vec<u8> {
    let len = (20 + payload_len) as u16;
    let mut h = [
        &[0x45, 0][..],
        &len.to_be_bytes(),
        &f.id.to_be_bytes(),
        &f.frag.to_be_bytes(),
        &[f.ttl, proto, 0, 0],
        &src,
        &dst,
    ]
    .concat();
    let csum = checksum(&h);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h
}

/// An Ethernet frame carrying an IPv4 packet ([`Ipv4Fields::DF`]) with `payload`.
pub fn ipv4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let h = ipv4_header(Ipv4Fields::DF, src, dst, proto, payload.len());
    [eth(dst_mac, src_mac, ETH_P_IP), h, payload.to_vec()].concat()
}

/// A UDP datagram with checksum 0 (none); see [`with_l4_checksum`].
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    [&sport.to_be_bytes()[..], &dport.to_be_bytes(), &len.to_be_bytes(), &[0, 0], payload].concat()
}

/// A TCP segment, checksum 0: seq 1, no ack number, PSH|ACK, window 65535.
pub fn tcp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let fixed = [0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0];
    [&sport.to_be_bytes()[..], &dport.to_be_bytes(), &fixed, payload].concat()
}

/// An ICMP echo request, checksum 0.
pub fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    [&[8, 0, 0, 0][..], &id.to_be_bytes(), &seq.to_be_bytes(), payload].concat()
}

/// A VRRPv3 advert (advert interval 10 cs, checksum 0) for `addrs`.
pub fn vrrp_v3(vrid: u8, prio: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
    let hdr = [0x31, vrid, prio, addrs.len() as u8, 0, 10, 0, 0];
    hdr.iter().copied().chain(addrs.iter().flatten().copied()).collect()
}

/// UDP port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// An inner Ethernet frame as VXLAN carries it over the underlay (RFC 7348):
/// outer Ethernet `src_mac` -> `dst_mac`, IPv4 `src` -> `dst`
/// ([`Ipv4Fields::DF`]), UDP `sport` -> [`VXLAN_PORT`] with checksum 0,
/// VXLAN flags I and `vni` (24 bits). 50 bytes more than `inner`.
pub fn vxlan(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    let vx = [&[0x08, 0, 0, 0][..], &(vni << 8).to_be_bytes(), inner].concat();
    ipv4(src_mac, dst_mac, src, dst, IPPROTO_UDP, &udp(sport, VXLAN_PORT, &vx))
}

/// The IPv4 pseudo-header the TCP and UDP checksums cover.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> Vec<u8> {
    [&src[..], &dst, &[0, proto], &(len as u16).to_be_bytes()].concat()
}

/// Where protocol `proto`'s checksum sits in its header.
pub fn l4_checksum_offset(proto: u8) -> usize {
    match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => 2,
    }
}

/// The one's complement sum an L4 checksum covers: the segment, plus the
/// pseudo-header for all but ICMP.
pub fn l4_sum(src: [u8; 4], dst: [u8; 4], proto: u8, seg: &[u8]) -> u32 {
    let pseudo = if proto == IPPROTO_ICMP { 0 } else { ones_sum(&pseudo_header(src, dst, proto, seg.len())) };
    pseudo + ones_sum(seg)
}

/// `seg` (a TCP, UDP or ICMP segment with checksum 0) with its checksum filled in.
pub fn with_l4_checksum(src: [u8; 4], dst: [u8; 4], proto: u8, mut seg: Vec<u8>) -> Vec<u8> {
    let at = l4_checksum_offset(proto);
    let sum = fold(l4_sum(src, dst, proto, &seg));
    seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    seg
}

/// `struct xdp_md` for BPF_PROG_TEST_RUN: a frame of `len` bytes arriving on
/// `ingress_ifindex` (data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex).
pub fn xdp_md(len: u32, ingress_ifindex: u32) -> [u8; 24] {
    let fields = [0, len, 0, ingress_ifindex, 0, 0];
    let mut ctx = [0; 24];
    for (chunk, v) in ctx.chunks_mut(4).zip(fields) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    ctx
}

/// Runs `prog` once on `frame` arriving on `ingress_ifindex`
/// (BPF_PROG_TEST_RUN, verdict not acted on): the verdict and the frame as
/// the program left it (room for 256 bytes more, e.g. an encapsulation).
pub fn test_run(prog: &Xdp, ingress_ifindex: u32, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let ctx = xdp_md(frame.len() as u32, ingress_ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0b];
    const VIP: [u8; 4] = [198, 18, 1, 50];

    #[test]
    fn garp_is_the_42_byte_broadcast_request() {
        let mut want = vec![0xff; 6];
        want.extend_from_slice(&MAC);
        want.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        want.extend_from_slice(&MAC);
        want.extend_from_slice(&VIP);
        want.extend_from_slice(&[0; 6]);
        want.extend_from_slice(&VIP);
        assert_eq!(garp(MAC, VIP), want);
    }

    #[test]
    fn arp_probe_asks_from_no_address() {
        let f = arp_probe(MAC, VIP);
        assert_eq!(f.len(), 42);
        assert_eq!(f[..6], BROADCAST);
        assert_eq!(
            (&f[22..28], &f[28..32], &f[32..38], &f[38..42]),
            (&MAC[..], &[0; 4][..], &[0; 6][..], &VIP[..])
        );
    }

    #[test]
    fn a_vid_0_tag_goes_after_the_macs() {
        let g = garp(MAC, VIP);
        let t = vlan_tagged(&g, 0);
        assert_eq!(t.len(), 46);
        assert_eq!(t[..12], g[..12]);
        assert_eq!(t[12..18], [0x81, 0x00, 0, 0, 0x08, 0x06]);
        assert_eq!(t[16..], g[12..]);
    }

    #[test]
    fn checksums_verify_to_zero() {
        let h = ipv4_header(Ipv4Fields::DF, VIP, [203, 0, 113, 10], IPPROTO_UDP, 37);
        assert_eq!((h.len(), checksum(&h)), (20, 0));
        for (proto, seg) in [
            (IPPROTO_TCP, tcp(40000, 80, b"odd")),
            (IPPROTO_UDP, udp(40000, 53, b"even")),
            (IPPROTO_ICMP, icmp_echo(0x1234, 1, b"ping")),
        ] {
            let seg = with_l4_checksum(VIP, [1, 2, 3, 4], proto, seg);
            assert_eq!(fold(l4_sum(VIP, [1, 2, 3, 4], proto, &seg)), 0, "protocol {proto}");
        }
    }

    #[test]
    fn vxlan_puts_flags_and_vni_after_udp_to_4789() {
        let inner = garp(MAC, VIP);
        let f = vxlan(MAC, BROADCAST, [198, 18, 0, 2], [198, 18, 0, 1], 50000, 1001, &inner);
        assert_eq!(f.len(), inner.len() + 50);
        assert_eq!((f[23], &f[36..38], &f[40..42]), (IPPROTO_UDP, &[0x12, 0xb5][..], &[0, 0][..]));
        assert_eq!(f[42..50], [0x08, 0, 0, 0, 0, 0x03, 0xe9, 0]);
        assert_eq!(f[50..], inner);
    }

    #[test]
    fn xdp_md_puts_length_and_ingress_in_place() {
        let ctx = xdp_md(64, 7);
        assert_eq!(ctx[4..8], 64u32.to_ne_bytes());
        assert_eq!(ctx[12..16], 7u32.to_ne_bytes());
        assert_eq!(ctx.iter().filter(|b| **b != 0).count(), 2);
    }
}
