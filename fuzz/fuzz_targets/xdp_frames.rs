//! Issue 12, "random frames through BPF_PROG_TEST_RUN checked against the
//! same verdict rules": the real object, loaded by the agent's own loader
//! (`Dataplane::open`) into a throwaway pin dir (`/sys/fs/bpf/havip-fuzz-…`)
//! and a throwaway namespace with five veths (vNICs a, b, c, the uplink and
//! the underlay: the `tx_ports` devmap only takes interfaces that exist), both removed at
//! exit (and swept by the next run if a crash aborted this one). Its maps
//! hold one VIP (198.18.1.50) with members a and b, non-member c, the EIP
//! 203.0.113.10 bound to it, the uplink with its next hop, and the underlay
//! (this host's VTEP 198.18.0.1, VNI 1001, VXLAN port 4789, probe port 4790,
//! no other hosts). Needs root.
//!
//! An input is one control byte and a frame. The control byte picks the
//! program and ingress (bits 0-1: xdp_vnic on a, b, c, or xdp_uplink), the
//! holder before the frame (bits 2-3: none, a, b, or a under the VRRP virtual
//! MAC 00:00:5e:00:01:07), whether the HAVIP accepts VRRP virtual MACs
//! (bit 4), and (bit 5) xdp_underlay on the underlay NIC instead. Bit 6 makes
//! 198.18.1.0/24 a broadcast-domain subnet (slot 0: a, b, c its vNICs here,
//! one other host hv2; its `bcast_vnics` entries and its `bcast_prefixes`
//! entry present), so multicast and broadcast from a guest are flooded and
//! such frames from the underlay decapsulated to it; off, it is unicast.
//! Bit 7 runs xdp_replicator instead (no metadata: always dropped). The frame runs once; verdict, output bytes, holder and epoch, and
//! every counter are compared with [`oracle`], the README's "How it works"
//! written as code; any difference panics (a crash to libFuzzer).
//!
//! Not covered: a frame shorter than 14 bytes (BPF_PROG_TEST_RUN refuses
//! data shorter than an Ethernet header with EINVAL, so the "too short for
//! Ethernet" case cannot be run this way) and frames over 1,600 bytes
//! (skipped: test_run's page bounds them, and nothing reads that far).
#![no_main]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Mutex,
};

use aya::maps::{lpm_trie::Key, Array, DevMapHash, HashMap, HashOfMaps, LpmTrie, Map, MapData, PerCpuArray};
use havip_agent::datapath::{
    loader::{self, Dataplane},
    maps::{new_bcast_devmap, HolderTarget, KernelMaps, Maps},
    plan::{reconcile, EipNat, MapTarget, UnderlayTarget, Uplink},
};
use havip_common::{
    maps as names, vmac, BcastRemotes, BcastSubnet, BcastVnic, GlobalCounter, SubnetCounter, SubnetCounters,
    VipConfig, VipCounter, VipCounters, VipKey, DEFAULT_MAX_VNICS, VIP_F_VRRP_VMAC,
};
use havip_lab::{cmd, netns};
use havip_model::{rules::parse_cidr, Capacity};
use libfuzzer_sys::fuzz_target;

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const VIP: [u8; 4] = [198, 18, 1, 50];
const EIP: [u8; 4] = [203, 0, 113, 10];
const SUBNET: [u8; 3] = [198, 18, 1]; // 198.18.1.0/24
const MAC_A: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0b];
const MAC_B: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0c];
const VRRP_VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 7];
const UP_MAC: [u8; 6] = [0x02, 0, 0xcb, 0, 0x71, 1];
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0xcb, 0, 0x71, 0xfe];
/// `HAVIP_VRRP_MAX_ADDRS` (havip_abi.h): addresses of an advert looked at.
const VRRP_MAX_ADDRS: usize = 4;
const MAX_FRAME: usize = 1600;
const HV1: [u8; 4] = [198, 18, 0, 1];
const UL_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x01];
const VXLAN_PORT: u16 = 4789;
const PROBE_PORT: u16 = 4790;
/// VNI 1001 as the VXLAN header carries it (upper 24 bits, reserved 0).
const VNI_WIRE: [u8; 4] = [0, 0x03, 0xe9, 0];

/// The broadcast-domain maps, opened from their pins.
struct Bcast {
    vnics: HashMap<MapData, u32, BcastVnic>,
    prefixes: LpmTrie<MapData, [u8; 4], u32>,
    stats: PerCpuArray<MapData, SubnetCounters>,
    /// Kept: the outer maps hold them, this is just tidy.
    _inner: Vec<DevMapHash<MapData>>,
}

/// The subnet's slot, and a bucket that never runs dry at fuzzing rates.
const BCAST_SLOT: u32 = 0;
const BUCKET: BcastVnic =
    BcastVnic { lock: 0, subnet: BCAST_SLOT, rate_pps: 1_000_000, burst: 100_000, tat_ns: 0, storm_drops: 0 };
const HV2: [u8; 4] = [198, 18, 0, 2];

fn pinned<T: TryFrom<Map>>(dir: &std::path::Path, name: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    let data = MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("pinned map {name}: {e}"));
    Map::from_map_data(data).unwrap().try_into().unwrap()
}

/// An inner devmap as the agent makes one, holding `ports`.
fn devmap(ports: &[u32]) -> DevMapHash<MapData> {
    let mut m = new_bcast_devmap("bcast_inner").expect("creating an inner devmap");
    for &p in ports {
        m.insert(p, p, None::<&aya::programs::ProgramFd>, 0).unwrap();
    }
    m
}

/// 198.18.1.0/24 as a broadcast-domain subnet in slot 0, its vNICs' and
/// prefix entries left to `set_bcast`.
fn bcast_setup(dir: &std::path::Path, a: u32, b: u32, c: u32) -> Bcast {
    let mut ports: HashOfMaps<MapData, u32, DevMapHash<MapData>> = pinned(dir, names::BCAST_PORTS);
    let mut flood: HashOfMaps<MapData, u32, DevMapHash<MapData>> = pinned(dir, names::BCAST_FLOOD);
    let mut subnets: Array<MapData, BcastSubnet> = pinned(dir, names::BCAST_SUBNETS);
    let mut remotes: Array<MapData, BcastRemotes> = pinned(dir, names::BCAST_REMOTES);
    let (p, fl) = (devmap(&[a, b, c]), devmap(&[a, b, c]));
    ports.insert(BCAST_SLOT, &p, 0).unwrap();
    flood.insert(BCAST_SLOT, &fl, 0).unwrap();
    let network = [SUBNET[0], SUBNET[1], SUBNET[2], 0];
    subnets
        .set(
            BCAST_SLOT,
            BcastSubnet { network, mask: [255, 255, 255, 0], local_ports: 3, remote_hosts: 1 },
            0,
        )
        .unwrap();
    let mut r = BcastRemotes { count: 1, ..Default::default() };
    r.vteps[0] = HV2;
    remotes.set(BCAST_SLOT, r, 0).unwrap();
    Bcast {
        vnics: pinned(dir, names::BCAST_VNICS),
        prefixes: pinned(dir, names::BCAST_PREFIXES),
        stats: pinned(dir, names::SUBNET_STATS),
        _inner: vec![p, fl],
    }
}

struct World {
    dp: Dataplane,
    maps: KernelMaps,
    bcast: Bcast,
    /// Whether the subnet is in broadcast-domain mode now.
    bcast_on: bool,
    a: u32,
    b: u32,
    c: u32,
    up: u32,
    ul: u32,
    slot: u32,
}

/// What the exit handler removes: the namespace and pin dir (in `Scratch`).
static SCRATCH: Mutex<Option<(netns::Scratch, PathBuf)>> = Mutex::new(None);

extern "C" fn cleanup() {
    if let Some((scratch, pins)) = SCRATCH.lock().ok().and_then(|mut s| s.take()) {
        // Our own maps are still open here: force past our own pin lock.
        if let Err(e) = loader::teardown_with(&pins, true) {
            eprintln!("xdp_frames cleanup: {e:#}");
        }
        drop(scratch);
    }
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

fn setup() -> World {
    let mut scratch = netns::Scratch::new("fuzz").expect("sweeping stale labs");
    let ns = scratch.netns("xf").expect("creating the fuzz namespace (needs root)");
    for dev in ["vnic-a", "vnic-b", "vnic-c", "uplink0", "ul0"] {
        let peer = format!("peer-{dev}");
        cmd::ip(&["-n", &ns, "link", "add", dev, "type", "veth", "peer", "name", &peer]).unwrap();
        cmd::ip(&["-n", &ns, "link", "set", dev, "up"]).unwrap();
    }
    let pins = scratch.pin_dir();
    *SCRATCH.lock().unwrap() = Some((scratch, pins.clone()));
    unsafe { libc::atexit(cleanup) };
    // libFuzzer runs every input on this thread: it stays in the namespace.
    netns::enter(&ns).expect("entering the fuzz namespace");
    let (a, b, c) = (ifindex("vnic-a"), ifindex("vnic-b"), ifindex("vnic-c"));
    let (up, ul) = (ifindex("uplink0"), ifindex("ul0"));
    let mut dp = Dataplane::open(&pins, Capacity::default()).expect("loading the data plane");
    let mut maps = dp.take_maps().expect("maps");
    let vip = VipKey { addr: VIP };
    let target = MapTarget {
        ports: BTreeSet::from([a, b, c, up]),
        vips: BTreeMap::from([(vip, BTreeMap::from([(a, MAC_A), (b, MAC_B)]))]),
        configs: BTreeMap::from([(vip, VipConfig { flags: VIP_F_VRRP_VMAC })]),
        eips: BTreeMap::from([(
            vip,
            EipNat { eip: EIP.into(), subnet: parse_cidr("198.18.1.0/24").unwrap() },
        )]),
        uplink: Some(Uplink { ifindex: up, mac: UP_MAC, next_hop_mac: NEXT_HOP_MAC }),
        underlay: Some(UnderlayTarget {
            ifindex: ul,
            mac: UL_MAC,
            mtu: 1550,
            addr: HV1.into(),
            vni: 1001,
            vxlan_port: VXLAN_PORT,
            probe_port: PROBE_PORT,
            gateway_vtep: None,
        }),
        vteps: BTreeMap::new(),
        keep_underlay: false,
        // The broadcast domain is written by bcast_setup below, toggled per input.
        bcast: BTreeMap::new(),
        replicator: None,
    };
    reconcile(&mut maps, &target).expect("reconcile");
    let slot = maps.vip_slot(&vip).expect("the VIP has a slot");
    eprintln!(
        "xdp_frames: data plane in {}, vNICs a={a} b={b} c={c}, uplink {up}, VIP slot {slot}",
        pins.display()
    );
    let bcast = bcast_setup(dp.dir(), a, b, c);
    World { dp, maps, bcast, bcast_on: false, a, b, c, up, ul, slot }
}

/// The state a frame is judged against and may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder {
    ifindex: u32,
    mac: [u8; 6],
    epoch: u64,
}

/// What the program must do with a frame.
#[derive(Debug)]
struct Expect {
    verdict: u32,
    /// The frame as the program must leave it (None: not checked, e.g. a drop).
    out: Option<Vec<u8>>,
    /// The holder after; None: unchanged.
    holder: Option<(u32, [u8; 6])>,
    /// Exact increments of the VIP's counters (all others: 0).
    vip: Vec<(VipCounter, u64)>,
    passed: u64,
    parse_errors: Option<u64>,
    /// Underlay probes answered, VXLAN of ours for nothing here (global counters).
    probes: u64,
    decap_unknown: u64,
    flood_unknown: u64,
    /// Exact increments of the broadcast-domain subnet's counters (all others: 0).
    subnet: Vec<(SubnetCounter, u64)>,
    /// NAT: the header checksums to check incrementally (IP header offset).
    nat: Option<Nat>,
    /// The IPv4 header (offset) whose checksum is judged, not compared: valid
    /// after if it was before (a probe's answer).
    ip_csum: Option<usize>,
}

#[derive(Debug)]
struct Nat {
    ip: usize,
    from: [u8; 4],
    to: [u8; 4],
}

impl Expect {
    fn verdict(verdict: u32, out: Option<Vec<u8>>) -> Self {
        Self {
            verdict,
            out,
            holder: None,
            vip: vec![],
            passed: 0,
            parse_errors: Some(0),
            probes: 0,
            decap_unknown: 0,
            flood_unknown: 0,
            subnet: vec![],
            nat: None,
            ip_csum: None,
        }
    }
    /// "anything else — XDP_PASS, untouched" (README, How it works), counted `passed`.
    fn untouched(f: &[u8]) -> Self {
        Self { passed: 1, ..Self::verdict(XDP_PASS, Some(f.to_vec())) }
    }
    /// "a frame too short or inconsistent for the header we must read is
    /// passed untouched to the kernel ... and counted in parse_errors".
    fn malformed(f: &[u8]) -> Self {
        Self { parse_errors: Some(1), ..Self::verdict(XDP_PASS, Some(f.to_vec())) }
    }
    fn count(mut self, c: VipCounter, n: u64) -> Self {
        self.vip.push((c, n));
        self
    }
    fn count_subnet(mut self, c: SubnetCounter, n: u64) -> Self {
        self.subnet.push((c, n));
        self
    }
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}
fn ip4(f: &[u8], at: usize) -> [u8; 4] {
    f[at..at + 4].try_into().unwrap()
}
fn is_vrrp_vmac(m: &[u8]) -> bool {
    m[..5] == [0, 0, 0x5e, 0, 1]
}

struct Ctx<'a> {
    w: &'a World,
    bcast: bool,
    ingress: u32,
    holder: Holder,
    accept_vmac: bool,
}

/// The README's rules for `xdp_vnic`, each quoted where it is applied.
fn oracle_vnic(x: &Ctx, f: &[u8]) -> Expect {
    let n = f.len();
    let mut et = be16(f, 12);
    let mut off = 14;
    // "a frame with an 802.1Q priority tag (VID 0) is read as untagged; one
    // tagged with another VID is not ours: passed"
    if et == 0x8100 {
        if n < 18 {
            return Expect::malformed(f);
        }
        let vid = be16(f, 14) & 0x0fff;
        et = be16(f, 16);
        off = 18;
        if vid != 0 {
            return Expect::untouched(f);
        }
    }
    match et {
        0x0800 => ipv4_vnic(x, f, off),
        0x0806 => arp(x, f, off),
        _ => Expect::untouched(f), // "anything else — XDP_PASS, untouched"
    }
}

fn arp(x: &Ctx, f: &[u8], off: usize) -> Expect {
    if f.len() < off + 28 {
        return Expect::malformed(f);
    }
    // Only ARP for IPv4 over Ethernet, requests and replies, can be ours.
    if be16(f, off) != 1 || be16(f, off + 2) != 0x0800 || f[off + 4] != 6 || f[off + 5] != 4 {
        return Expect::untouched(f);
    }
    let op = be16(f, off + 6);
    if op != 1 && op != 2 {
        return Expect::untouched(f);
    }
    let (src, sha) = (&f[6..12], &f[off + 8..off + 14]);
    let (spa, tpa) = (ip4(f, off + 14), ip4(f, off + 24));
    if spa == VIP {
        // "claim — a gratuitous ARP for a VIP: a request whose sender and
        // target IP are the VIP, or a reply from the VIP"
        if op == 2 || tpa == spa {
            let member = if x.ingress == x.w.a {
                Some(MAC_A)
            } else if x.ingress == x.w.b {
                Some(MAC_B)
            } else {
                None
            };
            // "From a member (its ingress vNIC, with Ethernet source and ARP
            // sender MAC both the member's — or both the same VRRP virtual
            // MAC ..., where the HAVIP accepts them)"
            let ok = member.is_some_and(|m| {
                (src == m && sha == m) || (is_vrrp_vmac(src) && src == sha && x.accept_vmac)
            });
            if ok {
                // "the holder in the VIP's vip_state entry moves at once"
                let mac: [u8; 6] = src.try_into().unwrap();
                return Expect { holder: Some((x.ingress, mac)), ..Expect::verdict(XDP_DROP, None) }
                    .count(VipCounter::ClaimsAccepted, 1);
            }
            // "From anyone else: dropped, counted in claims_rejected"
            return Expect::verdict(XDP_DROP, None).count(VipCounter::ClaimsRejected, 1);
        }
        // "neighbour lookup from a VIP ... passed to the host's proxy ARP and
        // counted (neighbour_lookups)" (and, passed, counted `passed`)
        return Expect::untouched(f).count(VipCounter::NeighbourLookups, 1);
    }
    if op == 1 && tpa == VIP {
        // "ARP request for a VIP — answered in XDP (XDP_TX) with the VIP's
        // fixed virtual MAC 02:48:<slot>"
        let vm = vmac(x.w.slot);
        let mut out = f.to_vec();
        out[0..6].copy_from_slice(src);
        out[6..12].copy_from_slice(&vm);
        out[off + 6..off + 8].copy_from_slice(&2u16.to_be_bytes());
        out[off + 18..off + 24].copy_from_slice(sha);
        out[off + 24..off + 28].copy_from_slice(&spa);
        out[off + 8..off + 14].copy_from_slice(&vm);
        out[off + 14..off + 18].copy_from_slice(&VIP);
        let answer = Expect::verdict(XDP_TX, Some(out)).count(VipCounter::ArpReplies, 1);
        if spa == [0; 4] {
            // "An RFC 5227 probe (sender IP 0.0.0.0) is answered only when
            // another vNIC than the prober's holds the VIP (probes_answered)
            // ... (probes_unanswered)"
            if x.holder.ifindex == 0 || x.holder.ifindex == x.ingress {
                return Expect::verdict(XDP_DROP, None).count(VipCounter::ProbesUnanswered, 1);
            }
            return answer.count(VipCounter::ProbesAnswered, 1);
        }
        return answer;
    }
    Expect::untouched(f)
}

/// VRRP adverts are "counted per VIP (vrrp_adverts) ... then forwarded like
/// any packet": the counts and parse errors an advert adds, never a verdict.
fn vrrp(f: &[u8], l4: usize) -> (u64, u64) {
    if f.len() < l4 + 8 {
        return (0, 1);
    }
    let (vt, count) = (f[l4], f[l4 + 3] as usize);
    if !matches!(vt >> 4, 2 | 3) || vt & 0xf != 1 {
        return (0, 0);
    }
    let mut adverts = 0;
    for i in 0..count.min(VRRP_MAX_ADDRS) {
        let at = l4 + 8 + 4 * i;
        if at + 4 > f.len() {
            return (adverts, 1);
        }
        adverts += u64::from(ip4(f, at) == VIP);
    }
    (adverts, 0)
}

fn ipv4_vnic(x: &Ctx, f: &[u8], off: usize) -> Expect {
    let n = f.len();
    if n < off + 20 || f[off] >> 4 != 4 || f[off] & 0xf < 5 {
        return Expect::malformed(f);
    }
    let l4 = off + 4 * (f[off] & 0xf) as usize;
    let (saddr, daddr) = (ip4(f, off + 12), ip4(f, off + 16));
    let (adverts, vrrp_errors) = if f[off + 9] == 112 { vrrp(f, l4) } else { (0, 0) };
    let mut e = ipv4_verdict(x, f, off, l4, saddr, daddr);
    if adverts > 0 {
        e = e.count(VipCounter::VrrpAdverts, adverts);
    }
    e.parse_errors = e.parse_errors.map(|p| p + vrrp_errors);
    e
}

fn ipv4_verdict(x: &Ctx, f: &[u8], off: usize, l4: usize, saddr: [u8; 4], daddr: [u8; 4]) -> Expect {
    if daddr == VIP {
        return to_holder(x, f, x.ingress);
    }
    // "In a broadcast-domain subnet: an IPv4 frame whose Ethernet destination
    // has the group bit set and whose IPv4 destination is multicast,
    // 255.255.255.255 or the subnet's directed broadcast, arriving on a vNIC
    // that has an entry in bcast_vnics -> ... bpf_redirect_map(...,
    // BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) ... bcast_flood[slot] when the
    // subnet has other hosts AND the frame's IPv4 source is inside the subnet
    // (then an 8-byte flood_meta {slot, ingress ifindex} in front);
    // otherwise bcast_ports[slot] (LOCAL_ONLY)" (plan 11)
    let ours = [x.w.a, x.w.b, x.w.c].contains(&x.ingress);
    if x.bcast && ours && f[0] & 1 == 1 && flood_destination(daddr) {
        let e = Expect::verdict(XDP_REDIRECT, None)
            .count_subnet(SubnetCounter::Flooded, 1)
            .count_subnet(SubnetCounter::LocalCopies, 2);
        if saddr[..3] != SUBNET {
            return Expect { out: Some(f.to_vec()), ..e.count_subnet(SubnetCounter::LocalOnly, 1) };
        }
        // BPF_PROG_TEST_RUN hands back the metadata in front of the frame.
        let meta = [BCAST_SLOT.to_ne_bytes(), x.ingress.to_ne_bytes()].concat();
        return Expect { out: Some([meta, f.to_vec()].concat()), ..e };
    }
    if saddr == VIP {
        // "IPv4 from a VIP with a bound EIP, to outside the VPC subnet — from
        // the holder: SNAT to the EIP and redirected out of the uplink to its
        // next hop; from any other vNIC: dropped (eip_out_not_holder)."
        if daddr[..3] == SUBNET {
            return Expect::untouched(f);
        }
        if x.ingress != x.holder.ifindex {
            return Expect::verdict(XDP_DROP, None).count(VipCounter::EipOutNotHolder, 1);
        }
        // "a packet whose TTL would expire is left to the kernel"
        if f[off + 8] <= 1 {
            return Expect::verdict(XDP_PASS, Some(f.to_vec())).count(VipCounter::EipTtlExceeded, 1);
        }
        // "a packet we would SNAT whose L4 header is truncated is dropped
        // (and counted)"
        if l4_truncated(f, off, l4) {
            return Expect { parse_errors: Some(1), ..Expect::verdict(XDP_DROP, None) };
        }
        let mut out = f.to_vec();
        out[0..6].copy_from_slice(&NEXT_HOP_MAC);
        out[6..12].copy_from_slice(&UP_MAC);
        out[off + 12..off + 16].copy_from_slice(&EIP);
        out[off + 8] -= 1;
        return Expect {
            nat: Some(Nat { ip: off, from: VIP, to: EIP }),
            ..Expect::verdict(XDP_REDIRECT, Some(out))
        }
        .count(VipCounter::EipOutPackets, 1)
        .count(VipCounter::EipOutBytes, f.len() as u64);
    }
    Expect::untouched(f)
}

/// Multicast (224.0.0.0/4), the limited broadcast or 198.18.1.0/24's directed broadcast.
fn flood_destination(d: [u8; 4]) -> bool {
    d[0] & 0xf0 == 0xe0 || d == [255; 4] || d == [SUBNET[0], SUBNET[1], SUBNET[2], 255]
}

/// Whether the TCP/UDP header the NAT must fix is cut short (only in the
/// fragment that carries it: offset 0).
fn l4_truncated(f: &[u8], off: usize, l4: usize) -> bool {
    let first = be16(f, off + 6) & 0x1fff == 0;
    let need = match f[off + 9] {
        6 => 20,
        17 => 8,
        _ => 0,
    };
    first && need > 0 && f.len() < l4 + need
}

/// "IPv4 to a VIP — MACs rewritten (to the holder, from the virtual MAC) and
/// redirected to the holder's vNIC ... No holder: dropped and counted
/// (no_holder_drops); sent by the holder itself: never sent back into its
/// vNIC (hairpin_drops)."
fn to_holder(x: &Ctx, f: &[u8], ingress: u32) -> Expect {
    if x.holder.ifindex == 0 {
        return Expect::verdict(XDP_DROP, None).count(VipCounter::NoHolderDrops, 1);
    }
    if x.holder.ifindex == ingress {
        return Expect::verdict(XDP_DROP, None).count(VipCounter::HairpinDrops, 1);
    }
    let mut out = f.to_vec();
    out[0..6].copy_from_slice(&x.holder.mac);
    out[6..12].copy_from_slice(&vmac(x.w.slot));
    Expect::verdict(XDP_REDIRECT, Some(out))
        .count(VipCounter::RedirectPackets, 1)
        .count(VipCounter::RedirectBytes, f.len() as u64)
}

/// `xdp_uplink`: "IPv4 to a bound EIP is DNATed to the VIP and sent to the
/// holder exactly like VIP traffic from inside"; anything else passed.
fn oracle_uplink(x: &Ctx, f: &[u8]) -> Expect {
    if be16(f, 12) != 0x0800 {
        return Expect::untouched(f);
    }
    let off = 14;
    if f.len() < off + 20 || f[off] >> 4 != 4 || f[off] & 0xf < 5 {
        return Expect::malformed(f);
    }
    let l4 = off + 4 * (f[off] & 0xf) as usize;
    if ip4(f, off + 16) != EIP {
        return Expect::untouched(f);
    }
    if f[off + 8] <= 1 {
        return Expect::verdict(XDP_PASS, Some(f.to_vec())).count(VipCounter::EipTtlExceeded, 1);
    }
    // "a truncated one to an EIP is passed: still addressed to the EIP"
    if l4_truncated(f, off, l4) {
        return Expect::malformed(f);
    }
    let mut dnat = f.to_vec();
    dnat[off + 16..off + 20].copy_from_slice(&VIP);
    dnat[off + 8] -= 1;
    let mut e = to_holder(x, &dnat, 0);
    if e.verdict == XDP_REDIRECT {
        e = e.count(VipCounter::EipInPackets, 1).count(VipCounter::EipInBytes, f.len() as u64);
        e.nat = Some(Nat { ip: off, from: EIP, to: VIP });
    }
    e
}

/// `xdp_underlay` (docs/architecture.md, "A packet's way"): UDP to our VTEP
/// at the probe port with magic HVPR is answered; at the VXLAN port with the
/// I flag and our VNI, the inner IPv4 frame to a VIP held here is
/// decapsulated and delivered, held elsewhere (or by nobody) dropped; from a
/// VIP with an EIP to outside, only from the holder's VTEP (there is none
/// here: holders are local) or dropped; anything else of ours dropped;
/// everything else passed untouched; a cut header passed and counted.
fn oracle_underlay(x: &Ctx, f: &[u8]) -> Expect {
    let n = f.len();
    if be16(f, 12) != 0x0800 {
        return Expect::untouched(f);
    }
    let off = 14;
    if n < off + 20 || f[off] >> 4 != 4 || f[off] & 0xf < 5 {
        return Expect::malformed(f);
    }
    if f[off + 9] != 17 || ip4(f, off + 16) != HV1 || be16(f, off + 6) & 0x3fff != 0 {
        return Expect::untouched(f);
    }
    let udp = off + 4 * (f[off] & 0xf) as usize;
    if n < udp + 8 {
        return Expect::malformed(f);
    }
    let dport = be16(f, udp + 2);
    if dport == PROBE_PORT {
        if n < udp + 8 + 16 {
            return Expect::malformed(f);
        }
        if f[udp + 8..udp + 12] != *b"HVPR" {
            return Expect::untouched(f);
        }
        let mut out = f.to_vec();
        out[0..6].copy_from_slice(&f[6..12]);
        out[6..12].copy_from_slice(&f[0..6]);
        out[off + 8] = 64;
        out[off + 12..off + 16].copy_from_slice(&f[off + 16..off + 20]);
        out[off + 16..off + 20].copy_from_slice(&f[off + 12..off + 16]);
        out[udp..udp + 2].copy_from_slice(&f[udp + 2..udp + 4]);
        out[udp + 2..udp + 4].copy_from_slice(&f[udp..udp + 2]);
        out[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
        out[udp + 11] = b'A';
        return Expect { probes: 1, ip_csum: Some(off), ..Expect::verdict(XDP_TX, Some(out)) };
    }
    if dport != VXLAN_PORT {
        return Expect::untouched(f);
    }
    let vx = udp + 8;
    if n < vx + 8 {
        return Expect::malformed(f);
    }
    if f[vx] & 0x08 == 0 || f[vx + 4..vx + 8] != VNI_WIRE {
        return Expect::untouched(f);
    }
    let inner = vx + 8;
    if n < inner + 14 {
        return Expect::malformed(f);
    }
    let unknown = Expect { decap_unknown: 1, ..Expect::verdict(XDP_DROP, None) };
    if be16(f, inner + 12) != 0x0800 {
        return unknown;
    }
    let ip = inner + 14;
    if n < ip + 20 || f[ip] >> 4 != 4 || f[ip] & 0xf < 5 {
        return Expect::malformed(f);
    }
    // "VXLAN of our VNI to our VTEP whose inner frame is IPv4 with a group
    // destination MAC -> the subnet by the inner IPv4 source in the LPM trie
    // bcast_prefixes -> decapsulate -> bpf_redirect_map(bcast_ports[slot], 0,
    // BPF_F_BROADCAST) ... RECEIVED, LOCAL_COPIES += local_ports. No subnet
    // for the source -> dropped, GLB_CTR_FLOOD_UNKNOWN." (plan 11; also
    // dropped: not a flood destination of that subnet)
    if f[inner] & 1 == 1 {
        if x.bcast && ip4(f, ip + 12)[..3] == SUBNET && flood_destination(ip4(f, ip + 16)) {
            return Expect::verdict(XDP_REDIRECT, Some(f[inner..].to_vec()))
                .count_subnet(SubnetCounter::Received, 1)
                .count_subnet(SubnetCounter::LocalCopies, 3);
        }
        return Expect { flood_unknown: 1, ..Expect::verdict(XDP_DROP, None) };
    }
    if ip4(f, ip + 16) == VIP {
        if x.holder.ifindex == 0 {
            return Expect::verdict(XDP_DROP, None).count(VipCounter::DecapNotLocal, 1);
        }
        let mut out = f[inner..].to_vec();
        out[0..6].copy_from_slice(&x.holder.mac);
        out[6..12].copy_from_slice(&vmac(x.w.slot));
        return Expect::verdict(XDP_REDIRECT, Some(out))
            .count(VipCounter::RedirectPackets, 1)
            .count(VipCounter::RedirectBytes, (n - inner) as u64)
            .count(VipCounter::DecapPackets, 1);
    }
    if ip4(f, ip + 12) == VIP && ip4(f, ip + 16)[..3] != SUBNET {
        return Expect::verdict(XDP_DROP, None).count(VipCounter::EipOutNotHolder, 1);
    }
    unknown
}

/// Ones' complement sum of 16-bit words, folded.
fn sum16(data: &[u8]) -> u32 {
    let mut s: u32 = data.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// "every fragment's address is rewritten (IP checksum updated
/// incrementally); the L4 checksum (TCP/UDP) is updated in the fragment that
/// carries the L4 header ... A UDP checksum of 0 stays 0": everything but the
/// checksums is compared byte for byte; a header checksum that was right
/// before is right after; the L4 checksum moved by exactly the address change
/// (mod 0xffff).
fn check_nat(nat: &Nat, before: &[u8], got: &[u8], want: &mut [u8]) {
    let ip = nat.ip;
    let hl = 4 * (before[ip] & 0xf) as usize;
    want[ip + 10..ip + 12].copy_from_slice(&got[ip + 10..ip + 12]);
    if before.len() >= ip + hl && sum16(&before[ip..ip + hl]) == 0xffff {
        assert_eq!(sum16(&got[ip..ip + hl]), 0xffff, "IP header checksum broken by NAT");
    }
    let first = be16(before, ip + 6) & 0x1fff == 0;
    let l4 = ip + hl;
    let at = match before[ip + 9] {
        6 if first => l4 + 16,
        17 if first => l4 + 6,
        _ => return,
    };
    let (old, new) = (be16(before, at), be16(got, at));
    want[at..at + 2].copy_from_slice(&got[at..at + 2]);
    if before[ip + 9] == 17 && old == 0 {
        assert_eq!(new, 0, "a UDP checksum of 0 stays 0");
        return;
    }
    let w = |a: [u8; 4]| {
        u32::from(u16::from_be_bytes([a[0], a[1]])) + u32::from(u16::from_be_bytes([a[2], a[3]]))
    };
    let neg = |a: [u8; 4]| 0x1fffe - w(a);
    let lhs = u32::from(!new) % 0xffff;
    let rhs = (u32::from(!old) + neg(nat.from) + w(nat.to)) % 0xffff;
    assert_eq!(lhs, rhs, "L4 checksum not moved by the address change ({old:#06x} -> {new:#06x})");
}

struct Snapshot {
    holder: Holder,
    vip: VipCounters,
    passed: u64,
    parse_errors: u64,
    probes: u64,
    decap_unknown: u64,
    flood_unknown: u64,
    subnet: SubnetCounters,
}

fn snapshot(w: &World) -> Snapshot {
    let vs = w.maps.vip_state(w.slot).expect("vip_state");
    Snapshot {
        holder: Holder { ifindex: vs.holder_ifindex, mac: vs.holder_mac, epoch: vs.epoch },
        vip: w.maps.vip_counters(w.slot).expect("vip_stats"),
        passed: w.maps.global_counter(GlobalCounter::Passed).expect("global_stats"),
        parse_errors: w.maps.global_counter(GlobalCounter::ParseErrors).expect("global_stats"),
        probes: w.maps.global_counter(GlobalCounter::UnderlayProbes).expect("global_stats"),
        decap_unknown: w.maps.global_counter(GlobalCounter::DecapUnknown).expect("global_stats"),
        flood_unknown: w.maps.global_counter(GlobalCounter::FloodUnknown).expect("global_stats"),
        subnet: {
            let per_cpu = w.bcast.stats.get(&BCAST_SLOT, 0).expect("subnet_stats");
            let mut sum = SubnetCounters::default();
            for cpu in per_cpu.iter() {
                for (s, c) in sum.c.iter_mut().zip(cpu.c) {
                    *s += c;
                }
            }
            sum
        },
    }
}

fn world() -> &'static mut World {
    static mut WORLD: Option<World> = None;
    // libFuzzer calls the target from one thread only.
    #[allow(static_mut_refs)]
    unsafe {
        WORLD.get_or_insert_with(setup)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, frame)) = data.split_first() else { return };
    if frame.len() < 14 || frame.len() > MAX_FRAME {
        return;
    }
    let w = world();
    // The holder and the HAVIP's setting the frame meets (written only on change).
    let (want_if, want_mac) = match (control >> 2) & 3 {
        0 => (0, [0; 6]),
        1 => (w.a, MAC_A),
        2 => (w.b, MAC_B),
        _ => (w.a, VRRP_VMAC),
    };
    let vs = w.maps.vip_state(w.slot).expect("vip_state");
    if (vs.holder_ifindex, vs.holder_mac) != (want_if, want_mac) {
        let target = match want_if {
            0 => HolderTarget::None,
            ifindex => HolderTarget::Local { ifindex, mac: want_mac },
        };
        assert!(w.maps.write_holder(w.slot, vs.epoch, target).expect("holder write"));
    }
    let accept_vmac = control & 0x10 != 0;
    let flags = if accept_vmac { VIP_F_VRRP_VMAC } else { 0 };
    if w.maps.vip_config(w.slot).expect("vip_config").flags != flags {
        w.maps.set_vip_config(w.slot, VipConfig { flags }).expect("vip_config");
    }
    // The subnet's mode (written only on change): its vNICs' entries and its prefix.
    let bcast = control & 0x40 != 0;
    if bcast != w.bcast_on {
        let key = Key::new(24, [SUBNET[0], SUBNET[1], SUBNET[2], 0]);
        for v in [w.a, w.b, w.c] {
            if bcast {
                w.bcast.vnics.insert(v, BUCKET, 0).expect("bcast_vnics");
            } else {
                w.bcast.vnics.remove(&v).expect("bcast_vnics");
            }
        }
        if bcast {
            w.bcast.prefixes.insert(&key, BCAST_SLOT, 0).expect("bcast_prefixes");
        } else {
            w.bcast.prefixes.remove(&key).expect("bcast_prefixes");
        }
        w.bcast_on = bcast;
    }
    let replicator = control & 0x80 != 0;
    let underlay = control & 0x20 != 0;
    let ingress = if underlay { w.ul } else { [w.a, w.b, w.c, w.up][(control & 3) as usize] };
    let uplink = !underlay && control & 3 == 3;

    let before = snapshot(w);
    let x = Ctx { w, bcast, ingress, holder: before.holder, accept_vmac };
    let mut want = if replicator {
        // "xdp_replicator (XDP: a frame with a valid flood_meta -> XDP_PASS;
        // anything else -> dropped, GLB_CTR_FLOOD_UNKNOWN)": a test run has none.
        Expect { flood_unknown: 1, ..Expect::verdict(XDP_DROP, None) }
    } else if underlay {
        oracle_underlay(&x, frame)
    } else if uplink {
        oracle_uplink(&x, frame)
    } else {
        oracle_vnic(&x, frame)
    };

    let prog = if replicator {
        w.dp.replicator_program()
    } else if underlay {
        w.dp.underlay_program()
    } else if uplink {
        w.dp.uplink_program()
    } else {
        w.dp.program()
    }
    .expect("program");
    let (verdict, out) = havip_lab::frames::test_run(prog, ingress, frame).expect("BPF_PROG_TEST_RUN");
    let after = snapshot(w);

    assert_ne!(verdict, XDP_ABORTED, "the program never aborts");
    assert_eq!(verdict, want.verdict, "verdict (wanted {want:?})");
    if !underlay && !replicator {
        // The flood metadata comes back in front of the frame.
        let meta = want.out.as_ref().map_or(0, |o| o.len().saturating_sub(frame.len()));
        assert_eq!(out.len(), frame.len() + meta, "frames never change length (but by decapsulation)");
    }
    if let Some(expected) = want.out.as_mut() {
        if let Some(nat) = &want.nat {
            check_nat(nat, frame, &out, expected);
        }
        if let Some(ip) = want.ip_csum {
            let hl = 4 * (frame[ip] & 0xf) as usize;
            if frame.len() >= ip + hl && sum16(&frame[ip..ip + hl]) == 0xffff {
                assert_eq!(sum16(&out[ip..ip + hl]), 0xffff, "IP header checksum broken");
            }
            expected[ip + 10..ip + 12].copy_from_slice(&out[ip + 10..ip + 12]);
        }
        assert_eq!(&out, expected, "the frame as the program left it (verdict {verdict})");
    }
    // "Malformed frames never change state"; only a member's claim moves the holder.
    match want.holder {
        None => assert_eq!(after.holder, before.holder, "the holder changed without a member's claim"),
        Some((ifindex, mac)) => {
            let changed = (ifindex, mac) != (before.holder.ifindex, before.holder.mac);
            let epoch = before.holder.epoch + u64::from(changed);
            assert_eq!(after.holder, Holder { ifindex, mac, epoch }, "the holder after a member's claim");
        }
    }
    for c in VipCounter::ALL {
        let want_n: u64 = want.vip.iter().filter(|(k, _)| *k == c).map(|(_, n)| n).sum();
        let got = after.vip.get(c) - before.vip.get(c);
        assert_eq!(got, want_n, "counter {c:?}");
    }
    assert_eq!(after.passed - before.passed, want.passed, "global counter passed");
    assert_eq!(after.probes - before.probes, want.probes, "global counter underlay_probes");
    assert_eq!(
        after.decap_unknown - before.decap_unknown,
        want.decap_unknown,
        "global counter decap_unknown"
    );
    assert_eq!(
        after.flood_unknown - before.flood_unknown,
        want.flood_unknown,
        "global counter flood_unknown"
    );
    for c in SubnetCounter::ALL {
        let want_n: u64 = want.subnet.iter().filter(|(k, _)| *k == c).map(|(_, n)| n).sum();
        assert_eq!(after.subnet.get(c) - before.subnet.get(c), want_n, "subnet counter {c:?}");
    }
    if let Some(p) = want.parse_errors {
        assert_eq!(after.parse_errors - before.parse_errors, p, "global counter parse_errors");
    }
});
