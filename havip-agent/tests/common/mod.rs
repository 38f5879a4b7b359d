//! Shared by the kernel-program tests: a namespace with real veths (named
//! and swept by havip-lab's scheme), the data plane loaded with the agent's
//! own loader; frames and checksums come from `havip_lab::frames`.
#![allow(dead_code)] // each test binary uses its own subset

pub mod capture;

use std::collections::{BTreeMap, BTreeSet};

use havip_agent::datapath::{
    loader::{self, Dataplane},
    maps::{KernelMaps, Maps},
    plan::{reconcile, MapTarget},
};
use havip_common::{GlobalCounter, HavipEvent, VipCounter, VipKey, VipState};
pub use havip_lab::frames::*;
use havip_lab::{cmd, netns};
use havip_model::Capacity;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const VIP: [u8; 4] = [198, 18, 1, 50];
pub const IP_A: [u8; 4] = [198, 18, 1, 11];
pub const IP_B: [u8; 4] = [198, 18, 1, 12];
pub const IP_C: [u8; 4] = [198, 18, 1, 13];
pub const MAC_A: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0b];
pub const MAC_B: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0c];
pub const MAC_C: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0d];
/// The EIP bound to the VIP, and an address outside the VPC that talks to it.
pub const EIP: [u8; 4] = [203, 0, 113, 10];
pub const OUTSIDE: [u8; 4] = [198, 51, 100, 2];
/// The uplink NIC's MAC and its next hop's.
pub const MAC_UPLINK: [u8; 6] = [0x02, 0, 0xc6, 0x33, 0x64, 0x01];
pub const MAC_NEXT_HOP: [u8; 6] = [0x02, 0, 0xc6, 0x33, 0x64, 0x02];
/// The VPC gateway's MAC, where guests send traffic for outside.
pub const MAC_GATEWAY: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0x01, 0x01];

/// A namespace with three vNIC veths (a, b: members of VIP; c: not), the
/// data plane loaded and reconciled. Removed on drop, panics included.
pub struct Fixture {
    pub dp: Dataplane,
    pub maps: KernelMaps,
    pub events: aya::maps::RingBuf<aya::maps::MapData>,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    /// The host's uplink NIC.
    pub up: u32,
    /// The host's underlay NIC.
    pub ul: u32,
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// Runs `body` on a thread inside a fresh namespace with the fixture. The
/// namespace and the pins go on every exit path, panics included.
pub fn with_fixture(body: impl FnOnce(&mut Fixture) + Send + 'static) {
    let mut scratch = netns::Scratch::new("test").expect("sweeping stale labs");
    let ns = scratch.netns("xt").expect("creating the test namespace");
    for dev in ["vnic-a", "vnic-b", "vnic-c", "uplink0", "ul0"] {
        let peer = format!("peer-{dev}");
        cmd::ip(&["-n", &ns, "link", "add", dev, "type", "veth", "peer", "name", &peer]).unwrap();
        cmd::ip(&["-n", &ns, "link", "set", dev, "up"]).unwrap();
    }
    let pin_root = scratch.pin_dir();
    let result = std::thread::spawn(move || {
        netns::enter(&ns).expect("entering the test namespace");
        let (a, b, c) = (ifindex("vnic-a"), ifindex("vnic-b"), ifindex("vnic-c"));
        let (up, ul) = (ifindex("uplink0"), ifindex("ul0"));
        let mut dp = Dataplane::open(&pin_root, Capacity::default()).expect("loading the data plane");
        let mut maps = dp.take_maps().expect("maps");
        let events = dp.take_events().expect("events");
        reconcile(&mut maps, &desired(&[(a, MAC_A), (b, MAC_B)], &[a, b, c])).expect("reconcile");
        body(&mut Fixture { dp, maps, events, a, b, c, up, ul });
    })
    .join();
    if let Err(e) = loader::teardown(&scratch.pin_dir()) {
        eprintln!("cleanup: {e:#}");
    }
    drop(scratch);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

pub fn desired(members: &[(u32, [u8; 6])], ports: &[u32]) -> MapTarget {
    MapTarget {
        ports: ports.iter().copied().collect::<BTreeSet<_>>(),
        vips: BTreeMap::from([(VipKey { addr: VIP }, members.iter().copied().collect())]),
        ..MapTarget::default()
    }
}

impl Fixture {
    /// Runs `xdp_vnic` once on `frame` as if it arrived on `ingress`.
    pub fn run(&mut self, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        test_run(self.dp.program().unwrap(), ingress, frame).unwrap()
    }

    /// Runs `xdp_uplink` once on `frame` as if it arrived on the uplink.
    pub fn run_uplink(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let up = self.up;
        test_run(self.dp.uplink_program().unwrap(), up, frame).unwrap()
    }

    /// Runs `xdp_underlay` once on `frame` as if it arrived on the underlay NIC.
    pub fn run_underlay(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let ul = self.ul;
        test_run(self.dp.underlay_program().unwrap(), ul, frame).unwrap()
    }

    pub fn vip(&self) -> VipState {
        self.maps.vip(&VipKey { addr: VIP }).expect("VIP in maps")
    }

    pub fn counter(&self, c: VipCounter) -> u64 {
        let per_cpu = self.maps.vip_stats.get(&self.vip().slot, 0).unwrap();
        per_cpu.iter().map(|v| v.get(c)).sum()
    }

    pub fn global(&self, c: GlobalCounter) -> u64 {
        self.maps.global_stats.get(&(c as u32), 0).unwrap().iter().sum()
    }

    /// A UDP packet to the VIP from `src`, sent to the VIP's virtual MAC as
    /// a client that asked ARP would.
    pub fn udp_to_vip(&self, src_mac: [u8; 6], src: [u8; 4]) -> Vec<u8> {
        udp_to(self.vip().vmac, src_mac, src, VIP)
    }

    pub fn events(&mut self) -> Vec<HavipEvent> {
        let mut evs = Vec::new();
        while let Some(item) = self.events.next() {
            evs.push(HavipEvent::from_bytes(&item).expect("a havip_event"));
        }
        evs
    }
}

/// A UDP packet from `src` to `dst`, sent to `dst_mac`.
pub fn udp_to(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    ipv4(src_mac, dst_mac, src, dst, IPPROTO_UDP, &udp(4000, 7, b"hello probe!"))
}
