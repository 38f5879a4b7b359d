//! The kernel program itself, rule by rule, through BPF_PROG_TEST_RUN: a
//! frame in, the verdict and the frame out, and the maps after. Each test
//! loads the real object with the agent's own loader into a fresh network
//! namespace whose veths give real ifindexes.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use aya::programs::{TestRun, TestRunOptions};
use havip_agent::{
    config::Capacity,
    dataplane::{self, Dataplane, Maps},
    reconcile::{reconcile, vmac, Desired},
};
use havip_common::{
    GlobalCounter, HavipEvent, RejectReason, VipCounter, VipKey, VipState, EV_CLAIM, EV_CLAIM_REJECTED,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const VIP: [u8; 4] = [198, 18, 1, 50];
const IP_A: [u8; 4] = [198, 18, 1, 11];
const IP_B: [u8; 4] = [198, 18, 1, 12];
const IP_C: [u8; 4] = [198, 18, 1, 13];
const MAC_A: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0b];
const MAC_B: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0c];
const MAC_C: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0d];
const BROADCAST: [u8; 6] = [0xff; 6];

/// A namespace with three vNIC veths (a, b: members of VIP; c: not), the
/// data plane loaded and reconciled. Removed on drop, panics included.
struct Fixture {
    dp: Dataplane,
    maps: Maps,
    a: u32,
    b: u32,
    c: u32,
}

struct Cleanup {
    netns: String,
    pin_root: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = dataplane::teardown(&self.pin_root) {
            eprintln!("cleanup: {e:#}");
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// Runs `body` on a thread inside a fresh namespace with the fixture.
fn with_fixture(body: impl FnOnce(&mut Fixture) + Send + 'static) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let id = format!("havip-xt-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let cleanup = Cleanup { netns: id.clone(), pin_root: PathBuf::from(format!("/sys/fs/bpf/{id}")) };
    ip(&["netns", "add", &id]);
    for v in ["a", "b", "c"] {
        ip(&[
            "-n",
            &id,
            "link",
            "add",
            &format!("vnic-{v}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("peer-{v}"),
        ]);
        ip(&["-n", &id, "link", "set", &format!("vnic-{v}"), "up"]);
    }
    let pin_root = cleanup.pin_root.clone();
    let result = std::thread::spawn(move || {
        havip_agent::netns::enter(&id).expect("entering the test namespace");
        let (a, b, c) = (ifindex("vnic-a"), ifindex("vnic-b"), ifindex("vnic-c"));
        let mut dp = Dataplane::open(&pin_root, Capacity::default()).expect("loading the data plane");
        let mut maps = dp.take_maps().expect("maps");
        reconcile(&mut maps, &desired(&[(a, MAC_A), (b, MAC_B)], &[a, b, c])).expect("reconcile");
        body(&mut Fixture { dp, maps, a, b, c });
    })
    .join();
    drop(cleanup);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn desired(members: &[(u32, [u8; 6])], ports: &[u32]) -> Desired {
    Desired {
        ports: ports.iter().copied().collect::<BTreeSet<_>>(),
        vips: BTreeMap::from([(VipKey { addr: VIP }, members.iter().copied().collect())]),
        ..Desired::default()
    }
}

impl Fixture {
    /// Runs the program once on `frame` as if it arrived on `ingress`.
    fn run(&mut self, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut ctx = [0u8; 24]; // struct xdp_md
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes()); // data_end
        ctx[12..16].copy_from_slice(&ingress.to_ne_bytes()); // ingress_ifindex
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.dp.program().unwrap();
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn vip(&self) -> VipState {
        self.maps.vips.get(&VipKey { addr: VIP }, 0).expect("VIP in map")
    }

    fn counter(&self, c: VipCounter) -> u64 {
        let per_cpu = self.maps.vip_stats.get(&self.vip().slot, 0).unwrap();
        per_cpu.iter().map(|v| v.get(c)).sum()
    }

    fn global(&self, c: GlobalCounter) -> u64 {
        self.maps.global_stats.get(&(c as u32), 0).unwrap().iter().sum()
    }

    fn events(&mut self) -> Vec<HavipEvent> {
        let mut evs = Vec::new();
        while let Some(item) = self.maps.events.next() {
            evs.push(HavipEvent::from_bytes(&item).expect("a havip_event"));
        }
        evs
    }
}

fn eth(dst: [u8; 6], src: [u8; 6], proto: u16) -> Vec<u8> {
    [&dst[..], &src[..], &proto.to_be_bytes()].concat()
}

fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let dst = if op == 1 { BROADCAST } else { tha };
    let body = [&[0, 1, 8, 0, 6, 4][..], &op.to_be_bytes(), &sha, &spa, &tha, &tpa].concat();
    [eth(dst, sha, 0x0806), body].concat()
}

/// What keepalived sends on taking the VIP.
fn garp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    arp(1, mac, ip, [0; 6], ip)
}

fn ipv4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut h = [&[0x45, 0][..], &len.to_be_bytes(), &[0, 1, 0x40, 0, 64, proto, 0, 0], &src, &dst].concat();
    let sum: u32 = h.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    let csum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    [eth(dst_mac, src_mac, 0x0800), h, payload.to_vec()].concat()
}

fn udp_to_vip(src_mac: [u8; 6], src: [u8; 4]) -> Vec<u8> {
    let udp =
        [&4000u16.to_be_bytes()[..], &7u16.to_be_bytes(), &20u16.to_be_bytes(), &[0, 0], b"hello probe!"]
            .concat();
    ipv4(src_mac, vmac(&VipKey { addr: VIP }), src, VIP, 17, &udp)
}

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
        let vmac = vmac(&VipKey { addr: VIP });
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
fn holder_resolving_a_peer_from_its_vip_is_a_claim_and_is_passed() {
    with_fixture(|f| {
        let frame = arp(1, MAC_A, VIP, [0; 6], IP_C);
        let (verdict, out) = f.run(f.a, &frame);
        assert_eq!(verdict, XDP_PASS, "the host's proxy ARP must answer it");
        assert_eq!(out, frame, "passed untouched");
        assert_eq!(f.vip().holder_ifindex, f.a);
    });
}

#[test]
fn ipv4_to_vip_is_redirected_to_the_holder_with_macs_rewritten() {
    with_fixture(|f| {
        f.run(f.b, &garp(MAC_B, VIP));
        let frame = udp_to_vip(MAC_C, IP_C);
        let (verdict, out) = f.run(f.c, &frame);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(&out[0..6], &MAC_B, "to the holder's MAC");
        assert_eq!(&out[6..12], &vmac(&VipKey { addr: VIP }), "from the VIP's virtual MAC");
        assert_eq!(&out[12..], &frame[12..], "the IP packet is untouched");
        assert_eq!(f.counter(VipCounter::RedirectPackets), 1);
        assert_eq!(f.counter(VipCounter::RedirectBytes), frame.len() as u64);
    });
}

#[test]
fn vip_without_holder_is_dropped_and_counted() {
    with_fixture(|f| {
        let (verdict, _) = f.run(f.c, &udp_to_vip(MAC_C, IP_C));
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
        assert_eq!(f.run(f.c, &udp_to_vip(MAC_C, IP_C)).0, XDP_DROP);
        assert_eq!(f.counter(VipCounter::NoHolderDrops), 1);
    });
}

fn vrrp_v3(src: [u8; 4], dst: [u8; 4], vrid: u8, prio: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
    let hdr = [0x31, vrid, prio, addrs.len() as u8, 0, 10, 0, 0];
    let body: Vec<u8> = hdr.iter().copied().chain(addrs.iter().flatten().copied()).collect();
    ipv4(MAC_A, [0x02, 0, 0, 0, 0, 1], src, dst, 112, &body)
}

#[test]
fn vrrp_adverts_are_observed_per_vip_and_forwarded_unicast() {
    with_fixture(|f| {
        let frame = vrrp_v3(IP_A, IP_B, 50, 150, &[VIP]);
        let (verdict, out) = f.run(f.a, &frame);
        assert_eq!(verdict, XDP_PASS, "unicast VRRP goes on through the host's routing");
        assert_eq!(out, frame);
        assert_eq!(f.counter(VipCounter::VrrpAdverts), 1);
        let seen = f.maps.vrrp.get(&VipKey { addr: VIP }, 0).expect("a VRRP record");
        assert_eq!((seen.advertiser, seen.vrid, seen.priority, seen.version), (IP_A, 50, 150, 3));
        assert_eq!(seen.ifindex, f.a);

        // An advert for other addresses is not ours to count.
        f.run(f.a, &vrrp_v3(IP_A, IP_B, 51, 100, &[[198, 18, 1, 99]]));
        assert_eq!(f.counter(VipCounter::VrrpAdverts), 1);
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
        let frame = vrrp_v3(IP_A, IP_B, 50, 150, &[VIP]);
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
        assert!(reconcile(&mut f.maps, &all).unwrap().is_empty(), "idempotent: nothing to do");
        assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (f.a, 1), "holder kept");

        let without_a = desired(&[(f.b, MAC_B)], &[f.a, f.b, f.c]);
        let ch = reconcile(&mut f.maps, &without_a).unwrap();
        assert_eq!((ch.holders_cleared, ch.members_removed), (1, 1));
        assert_eq!((f.vip().holder_ifindex, f.vip().epoch), (0, 2));
        assert_eq!(f.run(f.a, &garp(MAC_A, VIP)).0, XDP_DROP);
        assert_eq!(f.vip().holder_ifindex, 0, "a former member can no longer claim");
        assert_eq!(f.counter(VipCounter::ClaimsRejected), 1);
    });
}
