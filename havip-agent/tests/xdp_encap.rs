//! VXLAN between hosts in XDP, through BPF_PROG_TEST_RUN: VIP traffic to a
//! holder on another host encapsulated byte for byte, the MTU rule, the
//! underlay NIC's program (decapsulation to a local holder only, probes,
//! what is not ours), and the EIP across hosts. This fixture's host is hv1
//! (VTEP 198.18.0.1); hv2 and hv3 are other hosts.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use havip_agent::datapath::{
    maps::{HolderTarget, Maps},
    plan::{reconcile, EipNat, MapTarget, UnderlayTarget, Uplink},
};
use havip_common::{
    GlobalCounter, HolderWrite, UnderlayProbe, VipCounter, VipKey, PROBE_ANSWER, PROBE_REQUEST,
};
use havip_model::Subnet;

const HV1: [u8; 4] = [198, 18, 0, 1];
const HV2: [u8; 4] = [198, 18, 0, 2];
const HV3: [u8; 4] = [198, 18, 0, 3];
const UL_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x01];
const HV2_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x02];
const HV3_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x03];
const VNI: u32 = 1001;
const MTU: u16 = 1550;
const PROBE_PORT: u16 = 4790;
const XDP_ABORTED: u32 = 0;

/// The fixture's members and ports, with this host's underlay (hv1), the
/// other hosts' VTEPs, an EIP bound to the VIP, and (`uplink`) the uplink
/// here or (`gateway`) on that host.
fn target(f: &Fixture, uplink: bool, gateway: Option<[u8; 4]>) -> MapTarget {
    let mut d = desired(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.a, f.b, f.c]);
    d.underlay = Some(UnderlayTarget {
        ifindex: f.ul,
        mac: UL_MAC,
        mtu: MTU,
        addr: HV1.into(),
        vni: VNI,
        vxlan_port: VXLAN_PORT,
        probe_port: PROBE_PORT,
        gateway_vtep: gateway.map(Into::into),
    });
    d.vteps = BTreeMap::from([(HV2.into(), HV2_MAC), (HV3.into(), HV3_MAC)]);
    let subnet = Subnet { network: [198, 18, 1, 0].into(), prefix: 24 };
    d.eips.insert(VipKey { addr: VIP }, EipNat { eip: EIP.into(), subnet });
    d.uplink = uplink.then_some(Uplink { ifindex: f.up, mac: MAC_UPLINK, next_hop_mac: MAC_NEXT_HOP });
    d
}

fn setup(f: &mut Fixture, uplink: bool, gateway: Option<[u8; 4]>) {
    let t = target(f, uplink, gateway);
    reconcile(&mut f.maps, &t).unwrap();
}

/// Points the VIP at `holder` (compare-and-swap on the current epoch).
fn point(f: &mut Fixture, holder: HolderTarget) {
    let st = f.vip();
    assert!(f.maps.write_holder(st.slot, st.epoch, holder).unwrap());
}

/// [`setup`] with the VIP held by vm-b on hv2; the VIP's virtual MAC.
fn held_on_hv2(f: &mut Fixture, uplink: bool) -> [u8; 6] {
    setup(f, uplink, None);
    point(f, remote(HV2, MAC_B));
    f.vip().vmac
}

/// A holder on the host at `vtep`, its next hop left for the kernel to look
/// up in `vteps` (as when the agent wrote it before the next hop was known).
fn remote(vtep: [u8; 4], mac: [u8; 6]) -> HolderTarget {
    HolderTarget::Remote { vtep: vtep.into(), mac, next_hop: [0; 6] }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Checks every outer header of `out`, which carries `inner` (as it left
/// the program) from hv1 to `vtep` via `hop_mac`; returns the UDP source port.
fn assert_encapsulated(out: &[u8], hop_mac: [u8; 6], vtep: [u8; 4], inner_len: usize) -> u16 {
    assert_eq!(out.len(), inner_len + 50, "50 bytes of outer headers");
    assert_eq!((&out[0..6], &out[6..12], be16(out, 12)), (&hop_mac[..], &UL_MAC[..], ETH_P_IP));
    let ip = &out[14..34];
    assert_eq!((ip[0], ip[1]), (0x45, 0), "IPv4, 20-byte header, TOS 0");
    assert_eq!(be16(ip, 2) as usize, inner_len + 36, "outer IPv4 length");
    assert_eq!(be16(ip, 6), 0x4000, "DF set, not a fragment");
    assert_eq!((ip[8], ip[9]), (64, IPPROTO_UDP), "TTL 64, UDP");
    assert_eq!(checksum(ip), 0, "outer IPv4 header checksum");
    assert_eq!((&ip[12..16], &ip[16..20]), (&HV1[..], &vtep[..]));
    let udp = &out[34..42];
    let sport = be16(udp, 0);
    assert!((49152..=65535).contains(&sport), "source port {sport} in the dynamic range");
    assert_eq!(be16(udp, 2), VXLAN_PORT);
    assert_eq!(be16(udp, 4) as usize, inner_len + 16, "UDP length");
    assert_eq!(be16(udp, 6), 0, "UDP checksum 0 (RFC 7348, IPv4)");
    assert_eq!(out[42..50], [0x08, 0, 0, 0, 0, 0x03, 0xe9, 0], "VXLAN flag I, VNI 1001");
    sport
}

#[test]
fn vip_traffic_to_a_remote_holder_is_encapsulated_exactly() {
    with_fixture(|f| {
        let vmac = held_on_hv2(f, false);
        let frame = f.udp_to_vip(MAC_C, IP_C);
        let (verdict, out) = f.run(f.c, &frame);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_encapsulated(&out, HV2_MAC, HV2, frame.len());
        let inner = &out[50..];
        assert_eq!(
            (&inner[0..6], &inner[6..12]),
            (&MAC_B[..], &vmac[..]),
            "inner MACs as for a local holder"
        );
        assert_eq!(inner[12..], frame[12..], "the inner packet is untouched");
        assert_eq!(f.counter(VipCounter::EncapPackets), 1);
        assert_eq!(f.counter(VipCounter::EncapBytes), frame.len() as u64);
        assert_eq!(f.counter(VipCounter::RedirectPackets), 0);
    });
}

#[test]
fn the_next_hop_kept_with_the_holder_is_used_without_a_vteps_lookup() {
    with_fixture(|f| {
        held_on_hv2(f, false);
        // The agent keeps the next hop with the holder: the vteps entry is
        // not looked up (here it even says another MAC), so it is the kept
        // one the frame goes to.
        let kept = [0x02, 0x99, 0, 0, 0, 2];
        let st = f.vip();
        let holder = HolderTarget::Remote { vtep: HV2.into(), mac: MAC_B, next_hop: kept };
        assert!(f.maps.write_holder(st.slot, st.epoch, holder).unwrap());
        assert_eq!(f.vip().holder_next_hop, kept);
        assert_eq!(HolderTarget::of(&f.vip()), holder);
        let frame = f.udp_to_vip(MAC_C, IP_C);
        let (verdict, out) = f.run(f.c, &frame);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_encapsulated(&out, kept, HV2, frame.len());
        // Cleared: no holder, nothing remote is used.
        point(f, HolderTarget::None);
        assert_eq!(HolderTarget::of(&f.vip()), HolderTarget::None);
    });
}

#[test]
fn the_outer_source_port_follows_the_inner_flow() {
    with_fixture(|f| {
        let vmac = held_on_hv2(f, false);
        let flow = |sport: u16| ipv4(MAC_C, vmac, IP_C, VIP, IPPROTO_UDP, &udp(sport, 53, b"query"));
        let mut ports = BTreeSet::new();
        for sport in 40000..40064 {
            let (verdict, out) = f.run(f.c, &flow(sport));
            assert_eq!(verdict, XDP_REDIRECT);
            let port = assert_encapsulated(&out, HV2_MAC, HV2, flow(sport).len());
            let (_, again) = f.run(f.c, &flow(sport));
            assert_eq!(be16(&again, 34), port, "one flow, one port");
            ports.insert(port);
        }
        assert!(ports.len() >= 48, "64 flows spread over {} ports only", ports.len());
    });
}

/// A UDP packet from vm-c to the VIP whose IPv4 length is `ip_len`, with
/// the flags and fragment offset word `frag`.
fn sized(vmac: [u8; 6], ip_len: usize, frag: u16) -> Vec<u8> {
    let seg = udp(40000, 53, &vec![0x5a; ip_len - 28]);
    let h = ipv4_header(Ipv4Fields { frag, ..Ipv4Fields::DF }, IP_C, VIP, IPPROTO_UDP, seg.len());
    [eth(vmac, MAC_C, ETH_P_IP), h, seg].concat()
}

#[test]
fn one_byte_over_the_underlay_mtu_gets_frag_needed_with_df_and_is_dropped_without() {
    with_fixture(|f| {
        let vmac = held_on_hv2(f, false);
        let fits = usize::from(MTU) - 50;
        assert_eq!(f.run(f.c, &sized(vmac, fits, 0x4000)).0, XDP_REDIRECT, "exactly the MTU fits");

        let big = sized(vmac, fits + 1, 0x4000);
        let (verdict, out) = f.run(f.c, &big);
        assert_eq!(verdict, XDP_TX, "sent back to the sender");
        assert_eq!(out.len(), 14 + 20 + 8 + 28);
        assert_eq!((&out[0..6], &out[6..12], be16(&out, 12)), (&MAC_C[..], &vmac[..], ETH_P_IP));
        let ip = &out[14..34];
        assert_eq!(checksum(ip), 0, "IPv4 header checksum");
        assert_eq!((be16(ip, 2), ip[8], ip[9]), (56, 64, IPPROTO_ICMP));
        assert_eq!((&ip[12..16], &ip[16..20]), (&VIP[..], &IP_C[..]), "from the VIP to the sender");
        let icmp = &out[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 4), "destination unreachable, fragmentation needed");
        assert_eq!(be16(icmp, 6), MTU - 50, "next-hop MTU: the underlay's less the overhead");
        assert_eq!(checksum(icmp), 0, "ICMP checksum");
        assert_eq!(icmp[8..], big[14..14 + 28], "quotes the IPv4 header and 8 bytes");
        assert_eq!(f.counter(VipCounter::TooBigIcmp), 1);

        assert_eq!(f.run(f.c, &sized(vmac, fits + 1, 0)).0, XDP_DROP, "no DF: dropped");
        assert_eq!(f.counter(VipCounter::TooBigDrops), 1);
        assert_eq!(f.counter(VipCounter::EncapPackets), 1, "only the one that fit");
    });
}

#[test]
fn a_remote_holder_without_a_next_hop_or_underlay_is_dropped_and_counted() {
    with_fixture(|f| {
        setup(f, false, None);
        point(f, remote([198, 18, 0, 9], MAC_B));
        let frame = f.udp_to_vip(MAC_C, IP_C);
        assert_eq!(f.run(f.c, &frame).0, XDP_DROP, "no VTEP entry");
        let mut no_underlay = target(f, false, None);
        no_underlay.underlay = None;
        reconcile(&mut f.maps, &no_underlay).unwrap();
        assert_eq!(f.vip().remote_holder(), Some([198, 18, 0, 9].into()), "the plan keeps a remote holder");
        assert_eq!(f.run(f.c, &frame).0, XDP_DROP, "no underlay");
        assert_eq!(f.counter(VipCounter::NoVtepDrops), 2);
        assert_eq!(f.counter(VipCounter::NoHolderDrops), 0);
    });
}

/// VXLAN from hv2 to us carrying `inner`.
fn from_hv2(inner: &[u8]) -> Vec<u8> {
    vxlan(HV2_MAC, UL_MAC, HV2, HV1, 51234, VNI, inner)
}

#[test]
fn vxlan_for_a_vip_held_here_is_decapsulated_and_delivered() {
    with_fixture(|f| {
        setup(f, false, None);
        f.run(f.a, &garp(MAC_A, VIP));
        let vmac = f.vip().vmac;
        let inner = ipv4(vmac, MAC_A, IP_B, VIP, IPPROTO_UDP, &udp(4000, 7, b"across hosts"));
        let (verdict, out) = f.run_underlay(&from_hv2(&inner));
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!((&out[0..6], &out[6..12]), (&MAC_A[..], &vmac[..]));
        assert_eq!(out[12..], inner[12..], "the inner packet, as sent");
        assert_eq!(f.counter(VipCounter::DecapPackets), 1);
        assert_eq!(f.counter(VipCounter::RedirectPackets), 1);
    });
}

#[test]
fn vxlan_for_a_vip_not_held_here_is_dropped_never_sent_on() {
    with_fixture(|f| {
        setup(f, false, None);
        let vmac = f.vip().vmac;
        let inner = ipv4(vmac, MAC_B, IP_B, VIP, IPPROTO_UDP, &udp(4000, 7, b"stale"));
        assert_eq!(f.run_underlay(&from_hv2(&inner)).0, XDP_DROP, "no holder at all");
        point(f, remote(HV3, MAC_B));
        assert_eq!(f.run_underlay(&from_hv2(&inner)).0, XDP_DROP, "held on hv3: no loop through us");
        assert_eq!(f.counter(VipCounter::DecapNotLocal), 2);
        assert_eq!(f.counter(VipCounter::EncapPackets), 0, "never re-encapsulated");
    });
}

#[test]
fn what_is_not_our_vxlan_is_passed_untouched() {
    with_fixture(|f| {
        setup(f, false, None);
        f.run(f.a, &garp(MAC_A, VIP));
        let inner = f.udp_to_vip(MAC_C, IP_C);
        let other_vni = vxlan(HV2_MAC, UL_MAC, HV2, HV1, 51234, 1002, &inner);
        let other_host = vxlan(HV2_MAC, UL_MAC, HV2, HV3, 51234, VNI, &inner);
        let mut other_port = from_hv2(&inner);
        other_port[36..38].copy_from_slice(&4788u16.to_be_bytes());
        let plain = ipv4(HV2_MAC, UL_MAC, HV2, HV1, IPPROTO_UDP, &udp(4000, 7, b"vrrp or ssh"));
        for frame in [other_vni, other_host, other_port, plain, garp(HV2_MAC, HV2)] {
            assert_eq!(f.run_underlay(&frame), (XDP_PASS, frame.clone()));
        }
        assert_eq!(f.global(GlobalCounter::Passed), 5);

        // Our VNI to us, but for nothing here: dropped.
        let stray = ipv4(MAC_C, MAC_A, IP_C, IP_B, IPPROTO_UDP, &udp(4000, 7, b"not a VIP"));
        assert_eq!(f.run_underlay(&from_hv2(&stray)).0, XDP_DROP);
        assert_eq!(f.run_underlay(&from_hv2(&garp(MAC_C, IP_C))).0, XDP_DROP, "inner ARP");
        assert_eq!(f.global(GlobalCounter::DecapUnknown), 2);
    });
}

#[test]
fn without_an_underlay_nothing_on_the_underlay_nic_is_ours() {
    with_fixture(|f| {
        let frame = from_hv2(&f.udp_to_vip(MAC_C, IP_C));
        assert_eq!(f.run_underlay(&frame), (XDP_PASS, frame.clone()));
    });
}

/// A probe from hv2 to us, sent with TTL 7 (the answer's is 64).
fn probe(magic: [u8; 4], nonce: u64) -> Vec<u8> {
    let seg = udp(40123, PROBE_PORT, &UnderlayProbe { magic, zero: 0, nonce }.to_bytes());
    let ip = ipv4_header(Ipv4Fields { ttl: 7, ..Ipv4Fields::DF }, HV2, HV1, IPPROTO_UDP, seg.len());
    [eth(UL_MAC, HV2_MAC, ETH_P_IP), ip, seg].concat()
}

#[test]
fn an_underlay_probe_is_answered_in_xdp() {
    with_fixture(|f| {
        setup(f, false, None);
        let req = probe(PROBE_REQUEST, 0x0123_4567_89ab_cdef);
        let (verdict, out) = f.run_underlay(&req);
        assert_eq!(verdict, XDP_TX);
        assert_eq!((&out[0..6], &out[6..12]), (&HV2_MAC[..], &UL_MAC[..]), "MACs swapped");
        assert_eq!((&out[26..30], &out[30..34]), (&HV1[..], &HV2[..]), "addresses swapped");
        assert_eq!((out[22], checksum(&out[14..34])), (64, 0), "TTL 64, header checksum valid");
        assert_eq!((be16(&out, 34), be16(&out, 36), be16(&out, 40)), (PROBE_PORT, 40123, 0));
        let answer = UnderlayProbe::from_bytes(&out[42..]).unwrap();
        assert_eq!((answer.magic, answer.nonce), (PROBE_ANSWER, 0x0123_4567_89ab_cdef));
        assert_eq!(f.global(GlobalCounter::UnderlayProbes), 1);

        let other = probe(*b"HVPX", 1);
        assert_eq!(f.run_underlay(&other), (XDP_PASS, other.clone()), "not a probe");
        let short = probe(PROBE_REQUEST, 1)[..42 + 8].to_vec();
        assert_eq!(f.run_underlay(&short), (XDP_PASS, short.clone()), "truncated");
        assert_eq!(f.global(GlobalCounter::UnderlayProbes), 1);
    });
}

#[test]
fn eip_traffic_on_the_uplink_to_a_remote_holder_is_dnated_and_encapsulated() {
    with_fixture(|f| {
        let vmac = held_on_hv2(f, true);
        let seg = with_l4_checksum(OUTSIDE, EIP, IPPROTO_UDP, udp(40000, 80, b"GET /"));
        let inbound = ipv4(MAC_NEXT_HOP, MAC_UPLINK, OUTSIDE, EIP, IPPROTO_UDP, &seg);
        let (verdict, out) = f.run_uplink(&inbound);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_encapsulated(&out, HV2_MAC, HV2, inbound.len());
        let inner = &out[50..];
        assert_eq!((&inner[0..6], &inner[6..12]), (&MAC_B[..], &vmac[..]));
        assert_eq!(
            (&inner[26..30], &inner[30..34], inner[22]),
            (&OUTSIDE[..], &VIP[..], 63),
            "DNATed, TTL - 1"
        );
        assert_eq!(checksum(&inner[14..34]), 0);
        assert_eq!(fold(l4_sum(OUTSIDE, VIP, IPPROTO_UDP, &inner[34..])), 0, "UDP checksum follows the NAT");
        assert_eq!(f.counter(VipCounter::EipInPackets), 1);
        assert_eq!(f.counter(VipCounter::EncapPackets), 1);

        // Too big for the underlay: the frag-needed quotes the packet as it came, from the EIP.
        let big = [
            eth(MAC_UPLINK, MAC_NEXT_HOP, ETH_P_IP),
            ipv4_header(Ipv4Fields::DF, OUTSIDE, EIP, IPPROTO_UDP, 1501 - 20),
            udp(40000, 80, &[0; 1501 - 28]),
        ]
        .concat();
        let (verdict, out) = f.run_uplink(&big);
        assert_eq!(verdict, XDP_TX);
        assert_eq!((&out[0..6], &out[6..12]), (&MAC_NEXT_HOP[..], &MAC_UPLINK[..]));
        assert_eq!((&out[26..30], &out[30..34]), (&EIP[..], &OUTSIDE[..]));
        assert_eq!(out[42..], big[14..42], "the original, un-NATed header");
    });
}

#[test]
fn the_holders_eip_traffic_goes_to_the_gateway_host_as_it_is() {
    with_fixture(|f| {
        setup(f, false, Some(HV3));
        f.run(f.a, &garp(MAC_A, VIP));
        let seg = with_l4_checksum(VIP, OUTSIDE, IPPROTO_UDP, udp(80, 40000, b"200 OK"));
        let reply = ipv4(MAC_A, MAC_GATEWAY, VIP, OUTSIDE, IPPROTO_UDP, &seg);
        let (verdict, out) = f.run(f.a, &reply);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_encapsulated(&out, HV3_MAC, HV3, reply.len());
        assert_eq!(out[50..], reply, "un-NATed, MACs as sent: the gateway checks the holder's MAC");
        assert_eq!(f.counter(VipCounter::EipOutToGateway), 1);
        assert_eq!(f.counter(VipCounter::EipOutPackets), 0);
        // A non-holder still never gets out.
        assert_eq!(f.run(f.b, &ipv4(MAC_B, MAC_GATEWAY, VIP, OUTSIDE, IPPROTO_UDP, &seg)).0, XDP_DROP);
        assert_eq!(f.counter(VipCounter::EipOutNotHolder), 1);
    });
}

#[test]
fn the_gateway_snats_only_the_holders_packets_from_the_holders_host() {
    with_fixture(|f| {
        held_on_hv2(f, true);
        let seg = with_l4_checksum(VIP, OUTSIDE, IPPROTO_UDP, udp(80, 40000, b"200 OK"));
        let reply = |mac| ipv4(mac, MAC_GATEWAY, VIP, OUTSIDE, IPPROTO_UDP, &seg);
        let (verdict, out) = f.run_underlay(&from_hv2(&reply(MAC_B)));
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!((&out[0..6], &out[6..12]), (&MAC_NEXT_HOP[..], &MAC_UPLINK[..]));
        assert_eq!((&out[26..30], &out[30..34], out[22]), (&EIP[..], &OUTSIDE[..], 63), "SNATed, TTL - 1");
        assert_eq!(checksum(&out[14..34]), 0);
        assert_eq!(fold(l4_sum(EIP, OUTSIDE, IPPROTO_UDP, &out[34..])), 0);
        assert_eq!(f.counter(VipCounter::EipOutPackets), 1);
        assert_eq!(f.counter(VipCounter::DecapPackets), 1);

        let from_hv3 = vxlan(HV3_MAC, UL_MAC, HV3, HV1, 51234, VNI, &reply(MAC_B));
        assert_eq!(f.run_underlay(&from_hv3).0, XDP_DROP, "not the holder's host");
        assert_eq!(f.run_underlay(&from_hv2(&reply(MAC_A))).0, XDP_DROP, "not the holder's MAC");
        assert_eq!(f.counter(VipCounter::EipOutNotHolder), 2);
        assert_eq!(f.counter(VipCounter::EipOutPackets), 1);
    });
}

#[test]
fn a_local_claim_takes_the_vip_back_from_another_host() {
    with_fixture(|f| {
        setup(f, false, None);
        point(f, remote(HV2, MAC_B));
        let st = f.vip();
        assert_eq!((st.holder_ifindex, st.holder_vtep, st.holder_mac), (0, HV2, MAC_B));
        // Held elsewhere: a guest's duplicate-address probe here hears it is taken.
        assert_eq!(f.run(f.c, &arp_probe(MAC_C, VIP)).0, XDP_TX);
        f.run(f.a, &garp(MAC_A, VIP));
        let st = f.vip();
        assert_eq!((st.holder_ifindex, st.holder_vtep, st.holder_mac), (f.a, [0; 4], MAC_A));
        assert_eq!(f.run(f.c, &f.udp_to_vip(MAC_C, IP_C)).0, XDP_REDIRECT);
        assert_eq!(f.counter(VipCounter::RedirectPackets), 1, "delivered locally, not encapsulated");
        assert_eq!(f.counter(VipCounter::EncapPackets), 0);
    });
}

#[test]
fn holder_write_sets_a_remote_holder_and_refuses_one_in_two_places() {
    with_fixture(|f| {
        setup(f, false, None);
        let before = f.vip();
        point(f, remote(HV3, MAC_B));
        let st = f.vip();
        assert_eq!((st.holder_ifindex, st.holder_vtep, st.holder_mac), (0, HV3, MAC_B));
        assert_eq!(st.epoch, before.epoch + 1);
        assert_eq!(HolderTarget::of(&st), remote(HV3, MAC_B));
        assert!(!f.maps.write_holder(st.slot, before.epoch, HolderTarget::None).unwrap(), "stale epoch");

        let both = HolderWrite {
            slot: st.slot,
            ifindex: f.a,
            expect_epoch: st.epoch,
            mac: MAC_A,
            vtep: HV2,
            ..Default::default()
        };
        let (verdict, _) = test_run(&f.maps.holder_write, 0, &both.to_bytes()).unwrap();
        assert_eq!(verdict, XDP_ABORTED, "local and remote at once");
        assert_eq!(f.vip(), st, "nothing written");
        point(f, HolderTarget::None);
        assert_eq!((f.vip().holder_ifindex, f.vip().holder_vtep), (0, [0; 4]));
    });
}

#[test]
fn truncated_outer_or_inner_headers_are_passed_untouched_and_counted() {
    with_fixture(|f| {
        setup(f, false, None);
        f.run(f.a, &garp(MAC_A, VIP));
        let whole = from_hv2(&f.udp_to_vip(MAC_C, IP_C));
        // Cut anywhere in the outer IPv4, UDP, VXLAN or the inner Ethernet
        // and IPv4 headers: every header we read is checked.
        for len in 14..50 + 14 + 20 {
            let cut = &whole[..len];
            let before = f.global(GlobalCounter::ParseErrors);
            assert_eq!(f.run_underlay(cut), (XDP_PASS, cut.to_vec()), "{len} bytes: passed untouched");
            assert_eq!(f.global(GlobalCounter::ParseErrors), before + 1, "{len} bytes: counted");
        }
        assert_eq!(f.counter(VipCounter::DecapPackets), 0);
        assert_eq!(f.run_underlay(&whole).0, XDP_REDIRECT, "the whole frame is delivered");
    });
}
