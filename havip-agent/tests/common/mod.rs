//! Shared by the kernel-program tests: a namespace with real veths, the data
//! plane loaded with the agent's own loader, frame builders and from-scratch
//! checksum checks.
#![allow(dead_code)] // each test binary uses its own subset

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use aya::programs::{TestRun, TestRunOptions};
use havip_agent::datapath::{
    loader::{self, Dataplane},
    maps::{KernelMaps, Maps},
    plan::{reconcile, MapTarget},
};
use havip_common::{GlobalCounter, HavipEvent, VipCounter, VipKey, VipState};
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
pub const BROADCAST: [u8; 6] = [0xff; 6];

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
}

struct Cleanup {
    netns: String,
    pin_root: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = loader::teardown(&self.pin_root) {
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
pub fn with_fixture(body: impl FnOnce(&mut Fixture) + Send + 'static) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let id = format!("havip-xt-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let cleanup = Cleanup { netns: id.clone(), pin_root: PathBuf::from(format!("/sys/fs/bpf/{id}")) };
    ip(&["netns", "add", &id]);
    for dev in ["vnic-a", "vnic-b", "vnic-c", "uplink0"] {
        ip(&["-n", &id, "link", "add", dev, "type", "veth", "peer", "name", &format!("peer-{dev}")]);
        ip(&["-n", &id, "link", "set", dev, "up"]);
    }
    let pin_root = cleanup.pin_root.clone();
    let result = std::thread::spawn(move || {
        havip_agent::host::netns::enter(&id).expect("entering the test namespace");
        let (a, b, c, up) = (ifindex("vnic-a"), ifindex("vnic-b"), ifindex("vnic-c"), ifindex("uplink0"));
        let mut dp = Dataplane::open(&pin_root, Capacity::default()).expect("loading the data plane");
        let mut maps = dp.take_maps().expect("maps");
        let events = dp.take_events().expect("events");
        reconcile(&mut maps, &desired(&[(a, MAC_A), (b, MAC_B)], &[a, b, c])).expect("reconcile");
        body(&mut Fixture { dp, maps, events, a, b, c, up });
    })
    .join();
    drop(cleanup);
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

/// BPF_PROG_TEST_RUN: the verdict and the frame as the program left it.
fn run_xdp(prog: &mut aya::programs::Xdp, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut ctx = [0u8; 24]; // struct xdp_md
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes()); // data_end
    ctx[12..16].copy_from_slice(&ingress.to_ne_bytes()); // ingress_ifindex
    let mut out = vec![0u8; frame.len() + 256];
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

impl Fixture {
    /// Runs `xdp_vnic` once on `frame` as if it arrived on `ingress`.
    pub fn run(&mut self, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        run_xdp(self.dp.program().unwrap(), ingress, frame)
    }

    /// Runs `xdp_uplink` once on `frame` as if it arrived on the uplink.
    pub fn run_uplink(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let up = self.up;
        run_xdp(self.dp.uplink_program().unwrap(), up, frame)
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

pub fn eth(dst: [u8; 6], src: [u8; 6], proto: u16) -> Vec<u8> {
    [&dst[..], &src[..], &proto.to_be_bytes()].concat()
}

pub fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let dst = if op == 1 { BROADCAST } else { tha };
    let body = [&[0, 1, 8, 0, 6, 4][..], &op.to_be_bytes(), &sha, &spa, &tha, &tpa].concat();
    [eth(dst, sha, 0x0806), body].concat()
}

/// What keepalived sends on taking the VIP.
pub fn garp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    arp(1, mac, ip, [0; 6], ip)
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

/// An IPv4 header with a correct checksum. `frag` is the flags+offset word.
pub fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize, frag: u16, ttl: u8) -> Vec<u8> {
    let len = (20 + payload_len) as u16;
    let mut h =
        [&[0x45, 0][..], &len.to_be_bytes(), &[0, 1], &frag.to_be_bytes(), &[ttl, proto, 0, 0], &src, &dst]
            .concat();
    let csum = fold(ones_sum(&h));
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h
}

pub fn ipv4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let h = ipv4_header(src, dst, proto, payload.len(), 0x4000, 64);
    [eth(dst_mac, src_mac, 0x0800), h, payload.to_vec()].concat()
}

/// A UDP packet from `src` to `dst`, sent to `dst_mac`.
pub fn udp_to(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let udp =
        [&4000u16.to_be_bytes()[..], &7u16.to_be_bytes(), &20u16.to_be_bytes(), &[0, 0], b"hello probe!"]
            .concat();
    ipv4(src_mac, dst_mac, src, dst, 17, &udp)
}
