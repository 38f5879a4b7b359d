//! The kernel program itself, rule by rule, through BPF_PROG_TEST_RUN: a
//! frame in, the verdict and the frame out, and the maps after. Each test
//! loads the real object with the agent's own loader into a fresh network
//! namespace whose veths give real ifindexes.

mod common;

use common::*;
use havip_agent::datapath::{
    maps::{HolderTarget, Maps},
    plan::{reconcile, ApplyReport},
};
use havip_common::{
    GlobalCounter, MemberKey, RejectReason, VipConfig, VipCounter, VipKey, EV_CLAIM, EV_CLAIM_REJECTED,
    VIP_F_VRRP_VMAC,
};

#[test]
fn claim_from_member_moves_holder_and_reports_it() {
    with_fixture(|f| {
        let (verdict, _) = f.run(f.a, &garp(MAC_A, VIP));
        assert_eq!(verdict, XDP_DROP, "a gratuitous ARP is consumed");
        let st = f.vip();
        assert_eq!((st.holder_ifindex, st.holder_mac, st.epoch), (f.a, MAC_A, 1));
        assert!(st.since_ns > 0 && st.last_claim_ns == st.since_ns);

        let (verdict, _) = f.run(f.b, &arp(2, MAC_B, VIP, BROADCAST, VIP));
        assert_eq!(verdict, XDP_DROP, "an ARP reply claim is consumed too");
        let st = f.vip();
        assert_eq!((st.holder_ifindex, st.holder_mac, st.epoch), (f.b, MAC_B, 2));

        // keepalived repeats its GARPs: a refresh keeps the epoch.
        f.run(f.b, &garp(MAC_B, VIP));
        let refreshed = f.vip();
        assert_eq!(refreshed.epoch, 2);
        assert_eq!(refreshed.since_ns, st.since_ns);
        assert!(refreshed.last_claim_ns >= st.last_claim_ns);
        assert_eq!(f.counter(VipCounter::ClaimsAccepted), 3);

        let evs = f.events();
        let seen: Vec<_> =
            evs.iter().map(|e| (e.kind, e.ifindex, e.prev_ifindex, e.changed, e.epoch)).collect();
        assert_eq!(seen, [(EV_CLAIM, f.a, 0, 1, 1), (EV_CLAIM, f.b, f.a, 1, 2), (EV_CLAIM, f.b, f.b, 0, 2)]);
        assert_eq!(evs[1].vip, VIP);
        assert_eq!(evs[1].mac, MAC_B);
    });
}

#[test]
fn claim_from_non_member_is_dropped_counted_and_reported() {
    with_fixture(|f| {
        f.run(f.a, &garp(MAC_A, VIP));
        f.events();
        let (verdict, _) = f.run(f.c, &garp(MAC_C, VIP));
        assert_eq!(verdict, XDP_DROP);
        let st = f.vip();
        assert_eq!((st.holder_ifindex, st.epoch), (f.a, 1), "the holder did not move");
        assert_eq!(f.counter(VipCounter::ClaimsRejected), 1);
        let evs = f.events();
        assert_eq!(evs.len(), 1);
        assert_eq!((evs[0].kind, evs[0].ifindex, evs[0].prev_ifindex), (EV_CLAIM_REJECTED, f.c, f.a));
        assert_eq!(RejectReason::from_raw(evs[0].reason), Some(RejectReason::NotMember));
    });
}

#[test]
fn claim_on_member_vnic_with_wrong_mac_is_rejected() {
    with_fixture(|f| {
        // Right ifindex, a MAC that is not the member's.
        let (verdict, _) = f.run(f.a, &garp(MAC_C, VIP));
        assert_eq!(verdict, XDP_DROP);
        // Right Ethernet source, spoofed ARP sender hardware address.
        let mut spoof = garp(MAC_A, VIP);
        spoof[22..28].copy_from_slice(&MAC_C);
        assert_eq!(f.run(f.a, &spoof).0, XDP_DROP);

        assert_eq!(f.vip().holder_ifindex, 0, "no holder was made");
        assert_eq!(f.counter(VipCounter::ClaimsRejected), 2);
        assert_eq!(f.counter(VipCounter::ClaimsAccepted), 0);
        let reasons: Vec<_> = f.events().iter().map(|e| RejectReason::from_raw(e.reason)).collect();
        assert_eq!(reasons, [Some(RejectReason::MacMismatch); 2]);
    });
}

#[test]
fn arp_request_for_vip_is_answered_with_the_fixed_virtual_mac() {
    with_fixture(|f| {
        let vmac = f.vip().vmac;
        assert_eq!(vmac, havip_common::vmac(f.vip().slot), "02:48:<slot>");
        let (verdict, out) = f.run(f.c, &arp(1, MAC_C, IP_C, [0; 6], VIP));
        assert_eq!(verdict, XDP_TX);
        // Ethernet to the requester, from the virtual MAC; ARP reply "VIP is at vmac".
        assert_eq!(out, arp(2, vmac, VIP, MAC_C, IP_C));
        assert_eq!(f.counter(VipCounter::ArpReplies), 1);

        // The answer does not depend on who holds the VIP.
        f.run(f.b, &garp(MAC_B, VIP));
        let (_, again) = f.run(f.c, &arp(1, MAC_C, IP_C, [0; 6], VIP));
        assert_eq!(again, out);
    });
}

#[test]
fn ipv4_to_vip_is_redirected_to_the_holder_with_macs_rewritten() {
    with_fixture(|f| {
        f.run(f.b, &garp(MAC_B, VIP));
        let frame = f.udp_to_vip(MAC_C, IP_C);
        let (verdict, out) = f.run(f.c, &frame);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(&out[0..6], &MAC_B, "to the holder's MAC");
        assert_eq!(&out[6..12], &f.vip().vmac, "from the VIP's virtual MAC");
        assert_eq!(&out[12..], &frame[12..], "the IP packet is untouched");
        assert_eq!(f.counter(VipCounter::RedirectPackets), 1);
        assert_eq!(f.counter(VipCounter::RedirectBytes), frame.len() as u64);
    });
}

#[test]
fn vip_without_holder_is_dropped_and_counted() {
    with_fixture(|f| {
        let (verdict, _) = f.run(f.c, &f.udp_to_vip(MAC_C, IP_C));
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(f.counter(VipCounter::NoHolderDrops), 1);
        assert_eq!(f.counter(VipCounter::RedirectPackets), 0);
    });
}

#[test]
fn holder_whose_port_left_tx_ports_drops_instead_of_misdelivering() {
    with_fixture(|f| {
        f.run(f.a, &garp(MAC_A, VIP));
        reconcile(&mut f.maps, &desired(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.b, f.c])).unwrap();
        assert_eq!(f.run(f.c, &f.udp_to_vip(MAC_C, IP_C)).0, XDP_DROP);
        assert_eq!(f.counter(VipCounter::NoHolderDrops), 1);
    });
}

fn vrrp_advert(src: [u8; 4], dst: [u8; 4], vrid: u8, prio: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
    ipv4(MAC_A, [0x02, 0, 0, 0, 0, 1], src, dst, IPPROTO_VRRP, &vrrp_v3(vrid, prio, addrs))
}

#[test]
fn vrrp_adverts_are_observed_per_vip_and_forwarded_unicast() {
    with_fixture(|f| {
        let frame = vrrp_advert(IP_A, IP_B, 50, 150, &[VIP]);
        let (verdict, out) = f.run(f.a, &frame);
        assert_eq!(verdict, XDP_PASS, "unicast VRRP goes on through the host's routing");
        assert_eq!(out, frame);
        assert_eq!(f.counter(VipCounter::VrrpAdverts), 1);
        let seen = f.maps.vrrp.get(&MemberKey { vip: VIP, ifindex: f.a }, 0).expect("vnic-a's VRRP record");
        assert_eq!((seen.advertiser, seen.vrid, seen.priority, seen.version), (IP_A, 50, 150, 3));
        assert_eq!(seen.ifindex, f.a);

        // Each member has its own record: two masters at once are visible.
        f.run(f.b, &vrrp_advert(IP_B, IP_A, 50, 100, &[VIP]));
        let seen = f.maps.vrrp.get(&MemberKey { vip: VIP, ifindex: f.b }, 0).expect("vnic-b's VRRP record");
        assert_eq!((seen.advertiser, seen.priority), (IP_B, 100));

        // An advert for other addresses is not ours to count; a
        // non-member's is counted but leaves no record.
        f.run(f.a, &vrrp_advert(IP_A, IP_B, 51, 100, &[[198, 18, 1, 99]]));
        assert_eq!(f.counter(VipCounter::VrrpAdverts), 2);
        f.run(f.c, &vrrp_advert(IP_C, IP_A, 50, 200, &[VIP]));
        assert!(f.maps.vrrp.get(&MemberKey { vip: VIP, ifindex: f.c }, 0).is_err());
    });
}

#[test]
fn truncated_arp_is_passed_untouched_and_counted() {
    with_fixture(|f| {
        let frame = garp(MAC_A, VIP)[..14 + 20].to_vec();
        let (verdict, out) = f.run(f.a, &frame);
        assert_eq!((verdict, out), (XDP_PASS, frame));
        assert_eq!(f.global(GlobalCounter::ParseErrors), 1);
        assert_eq!(f.vip().holder_ifindex, 0, "no state change from a frame we cannot read");
        assert!(f.events().is_empty());
    });
}

#[test]
fn truncated_vrrp_and_short_ipv4_are_passed_and_counted() {
    with_fixture(|f| {
        let frame = vrrp_advert(IP_A, IP_B, 50, 150, &[VIP]);
        // Header says one address; the frame ends inside the VRRP header.
        let short = frame[..14 + 20 + 4].to_vec();
        assert_eq!(f.run(f.a, &short), (XDP_PASS, short.clone()));
        let short_ip = frame[..14 + 12].to_vec();
        assert_eq!(f.run(f.a, &short_ip), (XDP_PASS, short_ip.clone()));
        assert_eq!(f.global(GlobalCounter::ParseErrors), 2);
        assert_eq!(f.counter(VipCounter::VrrpAdverts), 0);
    });
}

#[test]
fn vlan_tagged_claim_is_not_ours_and_passes_untouched() {
    with_fixture(|f| {
        let g = garp(MAC_A, VIP);
        let tagged = [&g[..12], &[0x81, 0x00, 0x00, 0x64], &g[12..]].concat();
        let (verdict, out) = f.run(f.a, &tagged);
        assert_eq!((verdict, out), (XDP_PASS, tagged));
        assert_eq!(f.vip().holder_ifindex, 0);
        assert_eq!(f.global(GlobalCounter::Passed), 1);
    });
}

#[test]
fn other_traffic_passes_untouched() {
    with_fixture(|f| {
        let to_peer = ipv4(MAC_C, MAC_A, IP_C, IP_A, 17, b"not for a VIP");
        let ipv6 = [eth(MAC_A, MAC_C, 0x86dd), vec![0x60; 40]].concat();
        let arp_for_peer = arp(1, MAC_C, IP_C, [0; 6], IP_A);
        for frame in [to_peer, ipv6, arp_for_peer] {
            assert_eq!(f.run(f.c, &frame), (XDP_PASS, frame.clone()));
        }
        assert_eq!(f.global(GlobalCounter::Passed), 3);
        assert_eq!(f.global(GlobalCounter::ParseErrors), 0);
    });
}

#[test]
fn reconcile_keeps_a_learned_holder_and_clears_one_that_left() {
    with_fixture(|f| {
        f.run(f.a, &garp(MAC_A, VIP));
        let all = desired(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.a, f.b, f.c]);
        assert_eq!(
            reconcile(&mut f.maps, &all).unwrap(),
            ApplyReport::default(),
            "idempotent: nothing to do"
        );
        assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (f.a, 1), "holder kept");

        let without_a = desired(&[(f.b, MAC_B)], &[f.a, f.b, f.c]);
        let ch = reconcile(&mut f.maps, &without_a).unwrap();
        // The holder cleared, its membership removed.
        assert_eq!(ch, ApplyReport { ops: 2, holders_cleared: 1 });
        assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (0, 2));
        assert_eq!(f.run(f.a, &garp(MAC_A, VIP)).0, XDP_DROP);
        assert_eq!(f.vip().holder_ifindex, 0, "a former member can no longer claim");
        assert_eq!(f.counter(VipCounter::ClaimsRejected), 1);
    });
}

/// A second HAVIP beside the fixture's, members a and b.
const VIP2: [u8; 4] = [198, 18, 1, 51];

fn with_vip2(f: &mut Fixture) {
    let mut d = desired(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.a, f.b, f.c]);
    d.vips.insert(VipKey { addr: VIP2 }, [(f.a, MAC_A), (f.b, MAC_B)].into());
    reconcile(&mut f.maps, &d).unwrap();
}

#[test]
fn vip_traffic_to_the_virtual_mac_is_forwarded_by_slot_alone() {
    with_fixture(|f| {
        f.run(f.b, &garp(MAC_B, VIP));
        let frame = f.udp_to_vip(MAC_C, IP_C);
        // Only the fast path can find the VIP once its address is unknown:
        // the slot in the destination MAC leads straight to its state.
        f.maps.vips.remove(&VipKey { addr: VIP }).unwrap();
        let (verdict, out) = f.run(f.c, &frame);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(&out[0..6], &MAC_B, "to the holder's MAC");
        assert_eq!(&out[12..], &frame[12..]);
        // Sent to another MAC, the VIP is found by address: here, not at all.
        let other = udp_to(MAC_A, MAC_C, IP_C, VIP);
        assert_eq!(f.run(f.c, &other), (XDP_PASS, other.clone()));
    });
}

#[test]
fn vip_traffic_to_another_mac_still_reaches_the_holder() {
    with_fixture(|f| {
        f.run(f.a, &garp(MAC_A, VIP));
        // A client with a stale ARP entry, or one routed through the host.
        for dst_mac in [MAC_B, [0x02, 0x48, 0xc6, 0x12, 1, 50], BROADCAST] {
            let frame = udp_to(dst_mac, MAC_C, IP_C, VIP);
            let (verdict, out) = f.run(f.c, &frame);
            assert_eq!(verdict, XDP_REDIRECT, "sent to {dst_mac:02x?}");
            assert_eq!((&out[0..6], &out[6..12]), (&MAC_A[..], &f.vip().vmac[..]));
        }
        assert_eq!(f.counter(VipCounter::RedirectPackets), 3);
    });
}

#[test]
fn a_virtual_mac_naming_another_slot_does_not_misdeliver() {
    with_fixture(|f| {
        with_vip2(f);
        f.run(f.a, &garp(MAC_A, VIP));
        f.run(f.b, &garp(MAC_B, VIP2));
        let vip2 = f.maps.vip(&VipKey { addr: VIP2 }).expect("VIP2 in maps");
        assert_ne!(vip2.slot, f.vip().slot);

        // To VIP, at VIP2's virtual MAC or a free slot's: by address, to VIP's holder.
        for dst_mac in [vip2.vmac, havip_common::vmac(vip2.slot + 1), havip_common::vmac(u32::MAX)] {
            let (verdict, out) = f.run(f.c, &udp_to(dst_mac, MAC_C, IP_C, VIP));
            assert_eq!((verdict, &out[0..6]), (XDP_REDIRECT, &MAC_A[..]), "sent to {dst_mac:02x?}");
        }
        assert_eq!(f.counter(VipCounter::RedirectPackets), 3);

        // Not to a VIP at all, at a VIP's virtual MAC: not ours.
        let to_peer = udp_to(vip2.vmac, MAC_C, IP_C, IP_A);
        assert_eq!(f.run(f.c, &to_peer), (XDP_PASS, to_peer.clone()));

        // A removed VIP's slot is free: its old virtual MAC leads nowhere.
        reconcile(&mut f.maps, &desired(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.a, f.b, f.c])).unwrap();
        assert!(f.maps.vip(&VipKey { addr: VIP2 }).is_none());
        let stale = udp_to(vip2.vmac, MAC_C, IP_C, VIP2);
        assert_eq!(f.run(f.c, &stale), (XDP_PASS, stale.clone()));
    });
}

/// Only gratuitous frames claim (the rule of OVN's virtual ports): a request
/// from the VIP for another address is someone resolving a neighbour for
/// traffic it sends from the VIP (arp_announce=0), member or not.
#[test]
fn a_neighbour_lookup_from_the_vip_is_not_a_claim() {
    with_fixture(|f| {
        f.run(f.a, &garp(MAC_A, VIP));
        let lookup = arp(1, MAC_B, VIP, [0; 6], IP_C);
        assert_eq!(f.run(f.b, &lookup), (XDP_PASS, lookup.clone()), "to the host's proxy ARP, untouched");
        let lookup_c = arp(1, MAC_C, VIP, [0; 6], IP_A);
        assert_eq!(f.run(f.c, &lookup_c), (XDP_PASS, lookup_c.clone()), "a non-member's too");
        assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (f.a, 1), "the holder stays");
        assert_eq!(f.counter(VipCounter::NeighbourLookups), 2);
        assert_eq!(f.counter(VipCounter::ClaimsRejected), 0, "no false spoofing report");
        assert_eq!(f.events().len(), 1, "only vnic-a's claim");

        // A reply from the VIP is a claim, whatever it answers.
        assert_eq!(f.run(f.b, &arp(2, MAC_B, VIP, MAC_A, IP_A)).0, XDP_DROP);
        assert_eq!(f.vip().holder_ifindex, f.b);
    });
}

/// RFC 5227 probes (sender 0.0.0.0): the address is in use only if another
/// vNIC holds it; the holder's own duplicate-address detection, and anyone's
/// for a VIP nobody holds, hear nothing.
#[test]
fn probes_are_answered_only_for_a_vip_held_by_another() {
    with_fixture(|f| {
        let probe_a = arp_probe(MAC_A, VIP);
        assert_eq!(f.run(f.a, &probe_a).0, XDP_DROP, "nobody holds it: no answer");
        f.run(f.a, &garp(MAC_A, VIP));
        assert_eq!(f.run(f.a, &probe_a).0, XDP_DROP, "the holder probing its own VIP: no answer");
        assert_eq!(f.counter(VipCounter::ProbesUnanswered), 2);

        let (verdict, out) = f.run(f.b, &arp_probe(MAC_B, VIP));
        assert_eq!(verdict, XDP_TX, "held by vnic-a: in use");
        let vmac = f.vip().vmac;
        assert_eq!(out, [&eth(MAC_B, vmac, 0x0806)[..], &arp(2, vmac, VIP, MAC_B, [0; 4])[14..]].concat());
        assert_eq!(f.counter(VipCounter::ProbesAnswered), 1);
        assert_eq!(f.vip().holder_ifindex, f.a, "a probe claims nothing");
    });
}

/// keepalived `use_vmac`: claims and traffic from 00:00:5e:00:01:{VRID}
/// (RFC 5798 §7.3) on a member's own vNIC, where the HAVIP accepts them.
#[test]
fn a_member_may_claim_from_a_vrrp_virtual_mac_where_the_havip_allows_it() {
    with_fixture(|f| {
        let vrrp_vmac = [0, 0, 0x5e, 0, 1, 51];
        let claim = arp(1, vrrp_vmac, VIP, [0; 6], VIP);
        let claim = [&eth([0xff; 6], vrrp_vmac, 0x0806)[..], &claim[14..]].concat();
        assert_eq!(f.run(f.a, &claim).0, XDP_DROP);
        assert_eq!(f.vip().holder_ifindex, 0, "not accepted unless the HAVIP allows it");
        assert_eq!(f.counter(VipCounter::ClaimsRejected), 1);

        let mut target = desired(&[(f.a, MAC_A), (f.b, MAC_B)], &[f.a, f.b, f.c]);
        target.configs.insert(VipKey { addr: VIP }, VipConfig { flags: VIP_F_VRRP_VMAC });
        reconcile(&mut f.maps, &target).unwrap();
        assert_eq!(f.run(f.a, &claim).0, XDP_DROP);
        assert_eq!((f.vip().holder_ifindex, f.vip().holder_mac), (f.a, vrrp_vmac));
        let (verdict, out) = f.run(f.c, &f.udp_to_vip(MAC_C, IP_C));
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(&out[0..6], &vrrp_vmac, "traffic goes to the macvlan's MAC");

        // The ingress vNIC stays the credential: not from vnic-c, and the
        // ARP sender must be the same virtual MAC.
        assert_eq!(f.run(f.c, &[&eth([0xff; 6], vrrp_vmac, 0x0806)[..], &claim[14..]].concat()).0, XDP_DROP);
        let forged =
            [&eth([0xff; 6], vrrp_vmac, 0x0806)[..], &arp(1, MAC_B, VIP, [0; 6], VIP)[14..]].concat();
        assert_eq!(f.run(f.b, &forged).0, XDP_DROP);
        assert_eq!(f.vip().holder_ifindex, f.a);
        assert_eq!(f.counter(VipCounter::ClaimsRejected), 3);
    });
}

/// A priority tag (802.1Q, VID 0) means untagged; another VID is not ours,
/// but a claim in it is counted by name rather than lost unseen.
#[test]
fn priority_tagged_claims_count_other_vlans_are_counted_and_passed() {
    with_fixture(|f| {
        let tagged = vlan_tagged(&garp(MAC_B, VIP), 0x6000); // PCP 3, VID 0
        assert_eq!(f.run(f.b, &tagged).0, XDP_DROP);
        assert_eq!(f.vip().holder_ifindex, f.b, "VID 0 is untagged: a claim");

        let vlan100 = vlan_tagged(&garp(MAC_A, VIP), 100);
        assert_eq!(f.run(f.a, &vlan100), (XDP_PASS, vlan100.clone()));
        assert_eq!(f.vip().holder_ifindex, f.b);
        assert_eq!(f.global(GlobalCounter::TaggedClaims), 1);

        // VIP traffic in a priority-tagged frame is forwarded, tag kept.
        let to_vip = vlan_tagged(&f.udp_to_vip(MAC_C, IP_C), 0);
        let (verdict, out) = f.run(f.c, &to_vip);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!((&out[0..6], &out[12..14]), (&MAC_B[..], &[0x81, 0x00][..]));
    });
}

/// The holder sending to its own VIP would get back what it sent.
#[test]
fn vip_traffic_is_never_sent_back_into_the_vnic_it_came_from() {
    with_fixture(|f| {
        f.run(f.a, &garp(MAC_A, VIP));
        assert_eq!(f.run(f.a, &f.udp_to_vip(MAC_A, IP_A)).0, XDP_DROP);
        assert_eq!(f.counter(VipCounter::HairpinDrops), 1);
        assert_eq!(f.run(f.b, &f.udp_to_vip(MAC_B, IP_B)).0, XDP_REDIRECT, "from another member: forwarded");
    });
}

/// The agent's holder writes are a compare-and-swap on the epoch, in the
/// kernel under the value's lock: a claim that came first is never undone.
#[test]
fn holder_writes_lose_to_a_claim_that_came_first() {
    with_fixture(|f| {
        f.run(f.a, &garp(MAC_A, VIP));
        let st = f.vip();
        assert_eq!(st.epoch, 1);
        // vnic-b claims after the agent read epoch 1.
        f.run(f.b, &garp(MAC_B, VIP));
        assert!(
            !f.maps.write_holder(st.slot, st.epoch, HolderTarget::None).unwrap(),
            "the epoch moved: nothing written"
        );
        assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (f.b, 2));

        assert!(f.maps.write_holder(st.slot, 2, HolderTarget::Local { ifindex: f.a, mac: MAC_A }).unwrap());
        let now = f.vip();
        assert_eq!((now.holder_ifindex, now.holder_mac, now.epoch), (f.a, MAC_A, 3));
        assert!(now.since_ns > st.since_ns);
        assert!(f.maps.write_holder(1 << 30, 0, HolderTarget::None).is_err(), "a slot beyond the array");
    });
}
