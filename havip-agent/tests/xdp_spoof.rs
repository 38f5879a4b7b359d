//! The spoof matrix, through the real data path (BPF_PROG_TEST_RUN on the
//! real object): every frame a guest (or the outside) could send to take a
//! VIP it has no right to, or to confuse the parser into a claim. Each case
//! is refused (or answered, never a claim), counted by reason with exact
//! counters — every per-VIP and global counter is compared before and
//! after, so a case also proves what it does *not* count — reported in the
//! ring buffer with its `RejectReason` where the program reports it, and
//! leaves every VIP's `vip_state` (holder, MAC, epoch, timestamps) exactly
//! as it was.

mod common;

use std::collections::BTreeMap;

use common::*;
use havip_agent::datapath::{
    maps::{HolderTarget, Maps},
    plan::{reconcile, EipNat, MapTarget, Uplink},
};
use havip_common::{
    GlobalCounter, HavipEvent, RejectReason, VipCounter, VipKey, VipState, EV_CLAIM_REJECTED,
};
use havip_model::Subnet;

/// A second HAVIP of the same subnet whose only member is vnic-b.
const VIP2: [u8; 4] = [198, 18, 1, 51];
/// A HAVIP of another subnet (198.18.2.0/24) whose only member is vnic-c.
const VIP_X: [u8; 4] = [198, 18, 2, 50];
/// A MAC nobody has.
const MAC_ROGUE: [u8; 6] = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
const VRRP_VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 51];
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_IPV6: u16 = 0x86dd;
const ALL_VIPS: [[u8; 4]; 3] = [VIP, VIP2, VIP_X];

/// Where a case's frame arrives.
#[derive(Clone, Copy, Debug)]
enum At {
    A,
    B,
    C,
    /// `xdp_uplink`, on the uplink NIC.
    Uplink,
}

/// One counter, of one VIP or global (keyed by name: the counters derive no `Ord`).
#[derive(Clone, Copy, Debug)]
enum Ctr {
    Vip([u8; 4], VipCounter),
    Glb(GlobalCounter),
}

fn key(c: Ctr) -> String {
    match c {
        Ctr::Vip(v, c) => format!("{}.{}.{}.{} {}", v[0], v[1], v[2], v[3], c.name()),
        Ctr::Glb(c) => format!("global {}", c.name()),
    }
}

/// What the kernel reports of a refused claim, timestamps aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rejection {
    vip: [u8; 4],
    ifindex: u32,
    prev_ifindex: u32,
    mac: [u8; 6],
    reason: Option<RejectReason>,
    epoch: u64,
}

/// What a case must do.
enum Want {
    /// Dropped, refused as a claim: counted in `claims_rejected` of `vip`,
    /// reported with `reason`, the Ethernet source `mac`.
    Rejected { vip: [u8; 4], reason: RejectReason, mac: [u8; 6] },
    /// Answered in XDP with exactly this frame.
    Answered(Vec<u8>),
    /// Passed, untouched.
    Passed,
    /// Dropped without a claim event.
    Dropped,
}

struct Case {
    name: &'static str,
    at: At,
    frame: Vec<u8>,
    want: Want,
    /// Every counter that must move, by how much; all others stay.
    counts: Vec<(Ctr, u64)>,
}

fn vip_ctr(vip: [u8; 4], c: VipCounter) -> Ctr {
    Ctr::Vip(vip, c)
}

/// `frame` (an Ethernet frame) with its Ethernet source replaced.
fn eth_src(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[6..12].copy_from_slice(&mac);
    frame
}

/// `frame` with its ARP sender hardware address replaced.
fn arp_sha(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[22..28].copy_from_slice(&mac);
    frame
}

/// `frame` with a tag of protocol `tpid` and TCI `tci` inserted after its MACs.
fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    [&frame[..12], &tpid.to_be_bytes(), &tci.to_be_bytes(), &frame[12..]].concat()
}

/// An ARP frame's fixed-header field at `off` (from the ARP header) set.
fn arp_field(mut frame: Vec<u8>, off: usize, bytes: &[u8]) -> Vec<u8> {
    frame[14 + off..14 + off + bytes.len()].copy_from_slice(bytes);
    frame
}

fn outbound(src_mac: [u8; 6], proto: u8) -> Vec<u8> {
    let seg = with_l4_checksum(VIP, OUTSIDE, proto, tcp(40000, 80, b"GET / HTTP/1.1\r\n"));
    ipv4(src_mac, MAC_GATEWAY, VIP, OUTSIDE, proto, &seg)
}

/// VIP (members a, b; EIP bound, uplink resolved), VIP2 (member b) and VIP_X
/// (member c); vnic-a holds VIP, nobody holds the others.
fn setup(f: &mut Fixture) {
    let mut d: MapTarget = desired(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.a, f.b, f.c]);
    d.vips.insert(VipKey { addr: VIP2 }, [(f.b, MAC_B)].into());
    d.vips.insert(VipKey { addr: VIP_X }, [(f.c, MAC_C)].into());
    let subnet = Subnet { network: [198, 18, 1, 0].into(), prefix: 24 };
    d.eips.insert(VipKey { addr: VIP }, EipNat { eip: EIP.into(), subnet });
    d.uplink = Some(Uplink { ifindex: f.up, mac: MAC_UPLINK, next_hop_mac: MAC_NEXT_HOP });
    reconcile(&mut f.maps, &d).expect("reconcile");
    assert_eq!(f.run(f.a, &garp(MAC_A, VIP)).0, XDP_DROP);
    assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (f.a, 1));
    f.events();
}

fn states(f: &Fixture) -> Vec<VipState> {
    ALL_VIPS.iter().map(|v| f.maps.vip(&VipKey { addr: *v }).expect("VIP in the maps")).collect()
}

/// Every counter of every VIP, and the global ones, by name.
fn counters(f: &Fixture) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for vip in ALL_VIPS {
        let slot = f.maps.vip(&VipKey { addr: vip }).expect("VIP in the maps").slot;
        let per_cpu = f.maps.vip_stats.get(&slot, 0).expect("vip_stats");
        for c in VipCounter::ALL {
            all.insert(key(Ctr::Vip(vip, c)), per_cpu.iter().map(|v| v.get(c)).sum());
        }
    }
    for c in GlobalCounter::ALL {
        all.insert(key(Ctr::Glb(c)), f.global(c));
    }
    all
}

fn rejection(e: &HavipEvent) -> Rejection {
    assert_eq!(e.kind, EV_CLAIM_REJECTED, "only rejections, never a claim: {e:?}");
    assert_eq!(e.changed, 0);
    Rejection {
        vip: e.vip,
        ifindex: e.ifindex,
        prev_ifindex: e.prev_ifindex,
        mac: e.mac,
        reason: RejectReason::from_raw(e.reason),
        epoch: e.epoch,
    }
}

fn run_case(f: &mut Fixture, case: &Case) {
    let name = case.name;
    let (before, held) = (counters(f), states(f));
    let (verdict, out) = match case.at {
        At::A => f.run(f.a, &case.frame),
        At::B => f.run(f.b, &case.frame),
        At::C => f.run(f.c, &case.frame),
        At::Uplink => f.run_uplink(&case.frame),
    };
    let ingress = match case.at {
        At::A => f.a,
        At::B => f.b,
        At::C => f.c,
        At::Uplink => f.up,
    };

    assert_eq!(states(f), held, "{name}: a VIP's state changed (holder, epoch or timestamps)");
    let events: Vec<_> = f.events().iter().map(rejection).collect();
    match &case.want {
        Want::Rejected { vip, reason, mac } => {
            assert_eq!(verdict, XDP_DROP, "{name}: a refused claim is dropped");
            let st = f.maps.vip(&VipKey { addr: *vip }).unwrap();
            let want = Rejection {
                vip: *vip,
                ifindex: ingress,
                prev_ifindex: st.holder_ifindex,
                mac: *mac,
                reason: Some(*reason),
                epoch: st.epoch,
            };
            assert_eq!(events, [want], "{name}: one rejection event");
        }
        Want::Answered(frame) => {
            assert_eq!((verdict, &out), (XDP_TX, frame), "{name}: answered");
            assert!(events.is_empty(), "{name}: no event: {events:?}");
        }
        Want::Passed => {
            assert_eq!((verdict, &out), (XDP_PASS, &case.frame), "{name}: passed untouched");
            assert!(events.is_empty(), "{name}: no event: {events:?}");
        }
        Want::Dropped => {
            assert_eq!(verdict, XDP_DROP, "{name}: dropped");
            assert!(events.is_empty(), "{name}: no event: {events:?}");
        }
    }

    let after = counters(f);
    let moved: BTreeMap<_, _> =
        after.iter().filter(|(k, v)| before[*k] != **v).map(|(k, v)| (k.clone(), v - before[k])).collect();
    let want: BTreeMap<_, _> = case.counts.iter().map(|(c, n)| (key(*c), *n)).collect();
    assert_eq!(moved, want, "{name}: counters moved");
}

fn cases(vmac: [u8; 6]) -> Vec<Case> {
    use At::*;
    use RejectReason::{MacMismatch, NotMember};
    use VipCounter::*;
    let rejected = |vip| vec![(vip_ctr(vip, ClaimsRejected), 1)];
    let passed = || vec![(Ctr::Glb(GlobalCounter::Passed), 1)];
    let g = |mac| garp(mac, VIP);
    vec![
        // --- Claims from a non-member.
        Case {
            name: "non-member gratuitous request",
            at: C,
            frame: g(MAC_C),
            want: Want::Rejected { vip: VIP, reason: NotMember, mac: MAC_C },
            counts: rejected(VIP),
        },
        Case {
            name: "non-member ARP reply from the VIP",
            at: C,
            frame: arp(2, MAC_C, VIP, MAC_A, IP_A),
            want: Want::Rejected { vip: VIP, reason: NotMember, mac: MAC_C },
            counts: rejected(VIP),
        },
        Case {
            name: "non-member forging a member's MAC",
            at: C,
            frame: g(MAC_B),
            want: Want::Rejected { vip: VIP, reason: NotMember, mac: MAC_B },
            counts: rejected(VIP),
        },
        Case {
            name: "non-member in a priority-tagged frame (VID 0)",
            at: C,
            frame: vlan_tagged(&g(MAC_C), 0),
            want: Want::Rejected { vip: VIP, reason: NotMember, mac: MAC_C },
            counts: rejected(VIP),
        },
        // --- Claims from a member with a forged source MAC.
        Case {
            name: "member, Ethernet source forged (ARP sender is the member's)",
            at: B,
            frame: eth_src(g(MAC_B), MAC_ROGUE),
            want: Want::Rejected { vip: VIP, reason: MacMismatch, mac: MAC_ROGUE },
            counts: rejected(VIP),
        },
        Case {
            name: "member, ARP sender forged (Ethernet source is the member's)",
            at: B,
            frame: arp_sha(g(MAC_B), MAC_ROGUE),
            want: Want::Rejected { vip: VIP, reason: MacMismatch, mac: MAC_B },
            counts: rejected(VIP),
        },
        Case {
            name: "member, Ethernet source != ARP sender, both != the member's",
            at: B,
            frame: arp_sha(eth_src(g(MAC_B), MAC_ROGUE), MAC_C),
            want: Want::Rejected { vip: VIP, reason: MacMismatch, mac: MAC_ROGUE },
            counts: rejected(VIP),
        },
        Case {
            name: "member, both MACs the same foreign one",
            at: B,
            frame: g(MAC_ROGUE),
            want: Want::Rejected { vip: VIP, reason: MacMismatch, mac: MAC_ROGUE },
            counts: rejected(VIP),
        },
        Case {
            name: "member, the other member's MAC on its own vNIC",
            at: B,
            frame: g(MAC_A),
            want: Want::Rejected { vip: VIP, reason: MacMismatch, mac: MAC_A },
            counts: rejected(VIP),
        },
        Case {
            name: "member, broadcast source MAC",
            at: B,
            frame: g(BROADCAST),
            want: Want::Rejected { vip: VIP, reason: MacMismatch, mac: BROADCAST },
            counts: rejected(VIP),
        },
        Case {
            name: "member, VRRP virtual MAC where the HAVIP does not accept them",
            at: B,
            frame: g(VRRP_VMAC),
            want: Want::Rejected { vip: VIP, reason: MacMismatch, mac: VRRP_VMAC },
            counts: rejected(VIP),
        },
        // --- ARP whose target (not sender) is the VIP: answered or passed, never a claim.
        Case {
            name: "request for the VIP from a non-member",
            at: C,
            frame: arp(1, MAC_C, IP_C, [0; 6], VIP),
            want: Want::Answered(arp(2, vmac, VIP, MAC_C, IP_C)),
            counts: vec![(vip_ctr(VIP, ArpReplies), 1)],
        },
        Case {
            name: "request for the VIP from a member (not the holder)",
            at: B,
            frame: arp(1, MAC_B, IP_B, [0; 6], VIP),
            want: Want::Answered(arp(2, vmac, VIP, MAC_B, IP_B)),
            counts: vec![(vip_ctr(VIP, ArpReplies), 1)],
        },
        Case {
            name: "request for the VIP from a forged sender MAC",
            at: B,
            frame: arp(1, MAC_ROGUE, IP_B, [0; 6], VIP),
            want: Want::Answered(arp(2, vmac, VIP, MAC_ROGUE, IP_B)),
            counts: vec![(vip_ctr(VIP, ArpReplies), 1)],
        },
        Case {
            name: "reply whose target is the VIP",
            at: C,
            frame: arp(2, MAC_C, IP_C, MAC_A, VIP),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "probe for the VIP held by another (RFC 5227)",
            at: B,
            frame: arp_probe(MAC_B, VIP),
            want: Want::Answered(
                [&eth(MAC_B, vmac, ETH_P_ARP)[..], &arp(2, vmac, VIP, MAC_B, [0; 4])[14..]].concat(),
            ),
            counts: vec![(vip_ctr(VIP, ProbesAnswered), 1), (vip_ctr(VIP, ArpReplies), 1)],
        },
        // --- Claims for a VIP of another HAVIP / another subnet.
        Case {
            name: "member of VIP claiming VIP2 (same subnet, not its member)",
            at: A,
            frame: garp(MAC_A, VIP2),
            want: Want::Rejected { vip: VIP2, reason: NotMember, mac: MAC_A },
            counts: rejected(VIP2),
        },
        Case {
            name: "member of VIP claiming VIP_X (another subnet)",
            at: A,
            frame: garp(MAC_A, VIP_X),
            want: Want::Rejected { vip: VIP_X, reason: NotMember, mac: MAC_A },
            counts: rejected(VIP_X),
        },
        Case {
            name: "VIP_X's own member, with another's MAC",
            at: C,
            frame: garp(MAC_A, VIP_X),
            want: Want::Rejected { vip: VIP_X, reason: MacMismatch, mac: MAC_A },
            counts: rejected(VIP_X),
        },
        Case {
            name: "a reply from VIP2 to VIP's holder, by a non-member of VIP2",
            at: A,
            frame: arp(2, MAC_A, VIP2, MAC_A, VIP),
            want: Want::Rejected { vip: VIP2, reason: NotMember, mac: MAC_A },
            counts: rejected(VIP2),
        },
        // --- On the uplink: ARP is not xdp_uplink's, whatever it says.
        Case {
            name: "uplink: gratuitous request for the VIP",
            at: Uplink,
            frame: g(MAC_NEXT_HOP),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "uplink: a member's own gratuitous request",
            at: Uplink,
            frame: g(MAC_B),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "uplink: reply from the VIP",
            at: Uplink,
            frame: arp(2, MAC_NEXT_HOP, VIP, MAC_UPLINK, [198, 51, 100, 1]),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "uplink: request for the VIP (not answered here)",
            at: Uplink,
            frame: arp(1, MAC_NEXT_HOP, OUTSIDE, [0; 6], VIP),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "uplink: request for the EIP",
            at: Uplink,
            frame: arp(1, MAC_NEXT_HOP, OUTSIDE, [0; 6], EIP),
            want: Want::Passed,
            counts: passed(),
        },
        // --- IPv4 from the VIP by a non-holder, leaving the VPC: no SNAT.
        Case {
            name: "EIP SNAT: a standby member sending from the VIP",
            at: B,
            frame: outbound(MAC_B, IPPROTO_TCP),
            want: Want::Dropped,
            counts: vec![(vip_ctr(VIP, EipOutNotHolder), 1)],
        },
        Case {
            name: "EIP SNAT: a non-member sending from the VIP",
            at: C,
            frame: outbound(MAC_C, IPPROTO_TCP),
            want: Want::Dropped,
            counts: vec![(vip_ctr(VIP, EipOutNotHolder), 1)],
        },
        Case {
            name: "EIP SNAT: a non-member forging the holder's MAC",
            at: C,
            frame: outbound(MAC_A, IPPROTO_TCP),
            want: Want::Dropped,
            counts: vec![(vip_ctr(VIP, EipOutNotHolder), 1)],
        },
        Case {
            name: "EIP SNAT: a standby in a priority-tagged frame",
            at: B,
            frame: vlan_tagged(&outbound(MAC_B, IPPROTO_TCP), 0),
            want: Want::Dropped,
            counts: vec![(vip_ctr(VIP, EipOutNotHolder), 1)],
        },
        // --- Double tags: not a vNIC's frame, never a claim.
        Case {
            name: "802.1ad S-tag (VID 100) over a C-tag (VID 200), member's claim",
            at: B,
            frame: tagged(&vlan_tagged(&g(MAC_B), 200), ETH_P_8021AD, 100),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "802.1ad S-tag VID 0, member's claim",
            at: B,
            frame: tagged(&g(MAC_B), ETH_P_8021AD, 0),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "802.1ad S-tag, non-member's claim",
            at: C,
            frame: tagged(&vlan_tagged(&g(MAC_C), 200), ETH_P_8021AD, 100),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "802.1Q VID 100 inside 802.1Q VID 200, member's claim",
            at: B,
            frame: vlan_tagged(&vlan_tagged(&g(MAC_B), 100), 200),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "802.1Q VID 0 inside 802.1Q VID 0, member's claim",
            at: B,
            frame: vlan_tagged(&vlan_tagged(&g(MAC_B), 0), 0),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "802.1Q VID 100 inside a priority tag, member's claim",
            at: B,
            frame: vlan_tagged(&vlan_tagged(&g(MAC_B), 100), 0),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "802.1Q VID 100 (single), member's claim: passed, a tagged claim",
            at: B,
            frame: vlan_tagged(&g(MAC_B), 100),
            want: Want::Passed,
            counts: vec![(Ctr::Glb(GlobalCounter::Passed), 1), (Ctr::Glb(GlobalCounter::TaggedClaims), 1)],
        },
        Case {
            name: "802.1ad, IPv4 to the VIP: not forwarded",
            at: C,
            frame: tagged(&vlan_tagged(&udp_to(vmac, MAC_C, IP_C, VIP), 200), ETH_P_8021AD, 100),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "802.1ad, IPv4 from the VIP to outside by a standby: not natted",
            at: B,
            frame: tagged(&outbound(MAC_B, IPPROTO_TCP), ETH_P_8021AD, 100),
            want: Want::Passed,
            counts: passed(),
        },
        // --- Bogus ARP headers, with a member's otherwise perfect claim inside.
        Case {
            name: "ARP hlen 5",
            at: B,
            frame: arp_field(g(MAC_B), 4, &[5]),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "ARP plen 16",
            at: B,
            frame: arp_field(g(MAC_B), 5, &[16]),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "ARP htype 6 (IEEE 802)",
            at: B,
            frame: arp_field(g(MAC_B), 0, &6u16.to_be_bytes()),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "ARP ptype IPv6",
            at: B,
            frame: arp_field(g(MAC_B), 2, &ETH_P_IPV6.to_be_bytes()),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "ARP op 3 (RARP request)",
            at: B,
            frame: arp_field(g(MAC_B), 6, &3u16.to_be_bytes()),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "ARP op 0",
            at: C,
            frame: arp_field(g(MAC_C), 6, &0u16.to_be_bytes()),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "ARP plen 16, non-member: no rejection either",
            at: C,
            frame: arp_field(g(MAC_C), 5, &[16]),
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "ARP hlen 5 with a body of that size (26 bytes): too short, malformed",
            at: B,
            frame: arp_field(g(MAC_B), 4, &[5])[..14 + 26].to_vec(),
            want: Want::Passed,
            counts: vec![(Ctr::Glb(GlobalCounter::ParseErrors), 1)],
        },
        Case {
            name: "ARP plen 16 with a body of that size (52 bytes)",
            at: B,
            frame: {
                let body =
                    [&[0, 1, 8, 0, 6, 16, 0, 1][..], &MAC_B, &[VIP; 4].concat(), &[0; 6], &[VIP; 4].concat()]
                        .concat();
                [eth(BROADCAST, MAC_B, ETH_P_ARP), body].concat()
            },
            want: Want::Passed,
            counts: passed(),
        },
        Case {
            name: "ARP header only, no addresses",
            at: B,
            frame: g(MAC_B)[..14 + 8].to_vec(),
            want: Want::Passed,
            counts: vec![(Ctr::Glb(GlobalCounter::ParseErrors), 1)],
        },
    ]
}

#[test]
fn every_spoofed_claim_is_refused_counted_and_leaves_the_holder() {
    with_fixture(|f| {
        setup(f);
        let vmac = f.vip().vmac;
        let cases = cases(vmac);
        for case in &cases {
            run_case(f, case);
        }
        // After all that, the holder still is vnic-a at epoch 1, and a real
        // member's claim still works.
        assert_eq!((f.vip().holder_ifindex, f.vip().holder_mac, f.vip().epoch), (f.a, MAC_A, 1));
        assert_eq!(f.run(f.b, &garp(MAC_B, VIP)).0, XDP_DROP);
        assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (f.b, 2));
        eprintln!("spoof matrix: {} cases, every one refused", cases.len());
    });
}

/// The refused claims again, on a VIP nobody holds (its holder cleared by
/// the agent's own CAS write): a refused claim must not make a first holder.
#[test]
fn spoofed_claims_never_make_a_first_holder() {
    with_fixture(|f| {
        setup(f);
        let st = f.vip();
        assert!(f.maps.write_holder(st.slot, st.epoch, HolderTarget::None).unwrap());
        assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (0, 2));
        let vmac = f.vip().vmac;
        let refused: Vec<_> =
            cases(vmac).into_iter().filter(|c| matches!(c.want, Want::Rejected { .. })).collect();
        for case in &refused {
            run_case(f, case);
        }
        for vip in ALL_VIPS {
            assert_eq!(f.maps.vip(&VipKey { addr: vip }).unwrap().holder_ifindex, 0, "{vip:?} got a holder");
        }
        eprintln!("{} refused claims on unheld VIPs: no holder made", refused.len());
    });
}
