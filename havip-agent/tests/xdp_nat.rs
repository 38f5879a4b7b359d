//! EIP 1:1 NAT in XDP, both directions, through BPF_PROG_TEST_RUN: every
//! checksum of the frame out is checked against one computed from scratch.

mod common;

use common::*;
use havip_agent::datapath::plan::{reconcile, EipNat, Uplink};
use havip_common::{GlobalCounter, VipCounter, VipKey};
use havip_model::Subnet;

const TCP: u8 = IPPROTO_TCP;
const UDP: u8 = IPPROTO_UDP;
const ICMP: u8 = IPPROTO_ICMP;

/// VIP held by vnic-a, EIP bound, uplink known (or not).
fn bind_eip(f: &mut Fixture, uplink: bool) {
    let mut d = with_binding(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.a, f.b, f.c]);
    d.uplink = uplink.then_some(Uplink { ifindex: f.up, mac: MAC_UPLINK, next_hop_mac: MAC_NEXT_HOP });
    reconcile(&mut f.maps, &d).unwrap();
    if f.vip().holder_ifindex == 0 {
        f.run(f.a, &garp(MAC_A, VIP));
    }
}

/// An L4 segment with its checksum computed over the pseudo-header.
fn l4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let seg = match proto {
        TCP => tcp(40000, 80, payload),
        UDP => udp(40000, 53, payload),
        ICMP => icmp_echo(0x1234, 1, payload),
        _ => unreachable!(),
    };
    with_l4_checksum(src, dst, proto, seg)
}

fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8) -> Vec<u8> {
    ipv4(src_mac, dst_mac, src, dst, proto, &l4(proto, src, dst, b"GET / HTTP/1.1\r\n"))
}

fn addrs(frame: &[u8]) -> ([u8; 4], [u8; 4]) {
    (frame[26..30].try_into().unwrap(), frame[30..34].try_into().unwrap())
}

/// The frame's IP header checksum and (for an unfragmented packet) its L4
/// checksum both verify from scratch.
fn assert_checksums_valid(frame: &[u8]) {
    let ip = &frame[14..34];
    assert_eq!(fold(ones_sum(ip)), 0, "IPv4 header checksum");
    let (src, dst) = addrs(frame);
    let (proto, seg) = (ip[9], &frame[34..]);
    if proto == UDP && seg[6..8] == [0, 0] {
        return;
    }
    assert_eq!(fold(l4_sum(src, dst, proto, seg)), 0, "L4 checksum of protocol {proto}");
}

#[test]
fn traffic_to_the_eip_is_dnated_to_the_holder_for_tcp_udp_and_icmp() {
    with_fixture(|f| {
        bind_eip(f, true);
        let mut bytes = 0;
        for proto in [TCP, UDP, ICMP] {
            let inbound = frame(MAC_NEXT_HOP, MAC_UPLINK, OUTSIDE, EIP, proto);
            let (verdict, out) = f.run_uplink(&inbound);
            assert_eq!(verdict, XDP_REDIRECT, "protocol {proto}");
            assert_eq!((&out[0..6], &out[6..12]), (&MAC_A[..], &f.vip().vmac[..]));
            assert_eq!(addrs(&out), (OUTSIDE, VIP), "destination rewritten to the VIP");
            assert_eq!(out[22], 63, "a routed hop: TTL decremented");
            assert_checksums_valid(&out);
            assert_eq!(out[34 + 20..], inbound[34 + 20..], "payload untouched");
            bytes += inbound.len() as u64;
        }
        assert_eq!(f.counter(VipCounter::EipInPackets), 3);
        assert_eq!(f.counter(VipCounter::EipInBytes), bytes);
    });
}

#[test]
fn holder_traffic_leaving_the_vpc_is_snated_to_the_eip() {
    with_fixture(|f| {
        bind_eip(f, true);
        for proto in [TCP, UDP, ICMP] {
            let outbound = frame(MAC_A, MAC_GATEWAY, VIP, OUTSIDE, proto);
            let (verdict, out) = f.run(f.a, &outbound);
            assert_eq!(verdict, XDP_REDIRECT, "protocol {proto}");
            assert_eq!((&out[0..6], &out[6..12]), (&MAC_NEXT_HOP[..], &MAC_UPLINK[..]));
            assert_eq!(addrs(&out), (EIP, OUTSIDE), "source rewritten to the EIP");
            assert_eq!(out[22], 63);
            assert_checksums_valid(&out);
        }
        assert_eq!(f.counter(VipCounter::EipOutPackets), 3);
    });
}

#[test]
fn a_non_holder_never_sends_from_the_eip() {
    with_fixture(|f| {
        bind_eip(f, true);
        for vnic in [f.b, f.c] {
            let (verdict, _) = f.run(vnic, &frame(MAC_B, MAC_GATEWAY, VIP, OUTSIDE, TCP));
            assert_eq!(verdict, XDP_DROP);
        }
        assert_eq!(f.counter(VipCounter::EipOutNotHolder), 2);
        assert_eq!(f.counter(VipCounter::EipOutPackets), 0);
    });
}

#[test]
fn traffic_from_the_vip_inside_the_vpc_is_not_natted() {
    with_fixture(|f| {
        bind_eip(f, true);
        let inside = frame(MAC_A, MAC_GATEWAY, VIP, IP_C, UDP);
        assert_eq!(f.run(f.a, &inside), (XDP_PASS, inside.clone()));
    });
}

#[test]
fn udp_without_checksum_keeps_none() {
    with_fixture(|f| {
        bind_eip(f, true);
        let mut seg = l4(UDP, VIP, OUTSIDE, b"no checksum");
        seg[6..8].copy_from_slice(&[0, 0]);
        let (verdict, out) = f.run(f.a, &ipv4(MAC_A, MAC_GATEWAY, VIP, OUTSIDE, UDP, &seg));
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(out[34 + 6..34 + 8], [0, 0]);
        assert_checksums_valid(&out);
    });
}

#[test]
fn fragments_are_rewritten_and_the_first_carries_the_whole_datagram_checksum() {
    with_fixture(|f| {
        bind_eip(f, true);
        let datagram = l4(UDP, OUTSIDE, EIP, &[0x5a; 56]); // 64 bytes: two fragments of 32
        let (first, second) = datagram.split_at(32);
        let frag = |part: &[u8], word: u16| {
            [
                eth(MAC_UPLINK, MAC_NEXT_HOP, ETH_P_IP),
                ipv4_header(Ipv4Fields { frag: word, ..Ipv4Fields::DF }, OUTSIDE, EIP, UDP, part.len()),
                part.to_vec(),
            ]
            .concat()
        };
        let (v1, out1) = f.run_uplink(&frag(first, 0x2000)); // MF, offset 0
        let (v2, out2) = f.run_uplink(&frag(second, 4)); // offset 4 * 8 = 32
        assert_eq!((v1, v2), (XDP_REDIRECT, XDP_REDIRECT));
        for out in [&out1, &out2] {
            assert_eq!(fold(ones_sum(&out[14..34])), 0, "IPv4 header checksum");
            assert_eq!(addrs(out), (OUTSIDE, VIP));
        }
        // Reassembled, the datagram's checksum verifies with the new address.
        let whole = [&out1[34..], &out2[34..]].concat();
        assert_eq!(fold(l4_sum(OUTSIDE, VIP, UDP, &whole)), 0);
        assert_eq!(out2[34..], *second, "a later fragment's payload is untouched");
    });
}

#[test]
fn expiring_ttl_is_left_to_the_kernel() {
    with_fixture(|f| {
        bind_eip(f, true);
        let mut inbound = frame(MAC_NEXT_HOP, MAC_UPLINK, OUTSIDE, EIP, UDP);
        inbound[22] = 1;
        assert_eq!(f.run_uplink(&inbound), (XDP_PASS, inbound.clone()));
        assert_eq!(f.counter(VipCounter::EipTtlExceeded), 1);
    });
}

#[test]
fn without_a_resolved_uplink_outbound_eip_traffic_is_dropped_and_counted() {
    with_fixture(|f| {
        bind_eip(f, false);
        assert_eq!(f.run(f.a, &frame(MAC_A, MAC_GATEWAY, VIP, OUTSIDE, TCP)).0, XDP_DROP);
        assert_eq!(f.counter(VipCounter::EipOutNoUplink), 1);
    });
}

#[test]
fn truncated_tcp_is_never_natted() {
    with_fixture(|f| {
        bind_eip(f, true);
        let inbound = frame(MAC_NEXT_HOP, MAC_UPLINK, OUTSIDE, EIP, TCP)[..34 + 10].to_vec();
        assert_eq!(
            f.run_uplink(&inbound),
            (XDP_PASS, inbound.clone()),
            "inbound: left to the kernel, untouched"
        );
        let outbound = frame(MAC_A, MAC_GATEWAY, VIP, OUTSIDE, TCP)[..34 + 10].to_vec();
        assert_eq!(f.run(f.a, &outbound).0, XDP_DROP, "outbound: never leaks the VIP un-NATed");
        assert_eq!(f.global(GlobalCounter::ParseErrors), 2);
    });
}

fn with_binding(members: &[(u32, [u8; 6])], ports: &[u32]) -> havip_agent::datapath::plan::MapTarget {
    let mut d = desired(members, ports);
    let subnet = Subnet { network: [198, 18, 1, 0].into(), prefix: 24 };
    d.eips.insert(VipKey { addr: VIP }, EipNat { eip: EIP.into(), subnet });
    d
}

#[test]
fn unbinding_the_eip_stops_all_nat() {
    with_fixture(|f| {
        bind_eip(f, true);
        reconcile(&mut f.maps, &desired(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.a, f.b, f.c])).unwrap();
        let inbound = frame(MAC_NEXT_HOP, MAC_UPLINK, OUTSIDE, EIP, TCP);
        assert_eq!(f.run_uplink(&inbound), (XDP_PASS, inbound.clone()), "the EIP is not ours any more");
        let outbound = frame(MAC_A, MAC_GATEWAY, VIP, OUTSIDE, TCP);
        assert_eq!(f.run(f.a, &outbound), (XDP_PASS, outbound.clone()), "routed as is");
    });
}

#[test]
fn eip_traffic_without_a_holder_is_dropped_and_counted() {
    with_fixture(|f| {
        bind_eip(f, true);
        // The holder leaves the members: cleared; the binding stays.
        reconcile(&mut f.maps, &with_binding(&[(f.b, MAC_B)], &[f.a, f.b, f.c])).unwrap();
        assert_eq!(f.vip().holder_ifindex, 0);
        assert_eq!(f.run_uplink(&frame(MAC_NEXT_HOP, MAC_UPLINK, OUTSIDE, EIP, TCP)).0, XDP_DROP);
        assert_eq!(f.counter(VipCounter::NoHolderDrops), 1);
        assert_eq!(f.counter(VipCounter::EipInPackets), 0);
    });
}
