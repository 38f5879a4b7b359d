//! Broadcast-domain subnets in the kernel, with real deliveries: frames run
//! through the real programs with BPF_F_TEST_XDP_LIVE_FRAMES, so redirects
//! really happen, into real veths in a namespace whose peers (each with an
//! `xdp_pass` so the veth takes XDP frames) are read with AF_PACKET sockets:
//! what arrived where, how often, byte for byte.
//!
//! The bed (this host is hv1, VTEP 198.18.0.1): subnet S1 198.18.1.0/24
//! (slot 0, broadcast-domain) with vNICs a, b, c here and hosts hv2 and hv3
//! elsewhere; subnet S2 198.18.2.0/24 (slot 1, broadcast-domain) with vNIC d
//! only; vNIC u of a unicast subnet (no bcast_vnics entry); the uplink; the
//! underlay NIC ul0; the replicator pair havip-rep0/havip-rep1 with
//! xdp_replicator and tc_replicate attached by the agent's loader. The
//! bcast maps are written here from their pins, as the agent would.

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use aya::{
    maps::{lpm_trie::Key, Array, DevMapHash, HashMap, HashOfMaps, LpmTrie, Map, MapData, PerCpuArray},
    programs::{ProgramFd, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf, TestRun,
};
use common::{capture::Capture, *};
use havip_agent::datapath::{
    loader::{self, Attach, Dataplane},
    maps::{new_bcast_devmap, KernelMaps, Maps},
    plan::{reconcile, MapTarget, UnderlayTarget},
};
use havip_common::{
    maps as names, BcastRemotes, BcastSubnet, BcastVnic, GlobalCounter, SubnetCounter, SubnetCounters,
    UnderlayPort, VipKey, REPLICATOR_PEER, REPLICATOR_PORT,
};
use havip_lab::{cmd, netns};
use havip_model::Capacity;

const HV1: [u8; 4] = [198, 18, 0, 1];
const HV2: [u8; 4] = [198, 18, 0, 2];
const HV3: [u8; 4] = [198, 18, 0, 3];
const HV4: [u8; 4] = [198, 18, 0, 4];
const UL_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x01];
const HV2_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x02];
const HV3_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 0, 0x03];
const VNI: u32 = 1001;
const MTU: u16 = 1550;

const S1: [u8; 4] = [198, 18, 1, 0];
const S2: [u8; 4] = [198, 18, 2, 0];
const MASK24: [u8; 4] = [255, 255, 255, 0];
const SLOT1: u32 = 0;
const SLOT2: u32 = 1;
const IP_D: [u8; 4] = [198, 18, 2, 14];
const IP_U: [u8; 4] = [198, 18, 3, 15];
const MAC_D: [u8; 6] = [0x02, 0, 0xc6, 0x12, 2, 0x0e];
const MAC_U: [u8; 6] = [0x02, 0, 0xc6, 0x12, 3, 0x0f];
/// A vNIC of S1 on hv2.
const IP_REMOTE: [u8; 4] = [198, 18, 1, 20];
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x14];

const VRRP_GROUP: [u8; 4] = [224, 0, 0, 18];
const VRRP_MAC: [u8; 6] = [0x01, 0, 0x5e, 0, 0, 0x12];
const LIMITED: [u8; 4] = [255, 255, 255, 255];
const DIRECTED: [u8; 4] = [198, 18, 1, 255];

const WITHIN: Duration = Duration::from_secs(5);

/// The bcast maps, opened from their pins.
struct Bcast {
    vnics: HashMap<MapData, u32, BcastVnic>,
    subnets: Array<MapData, BcastSubnet>,
    prefixes: LpmTrie<MapData, [u8; 4], u32>,
    remotes: Array<MapData, BcastRemotes>,
    ports: HashOfMaps<MapData, u32, DevMapHash<MapData>>,
    flood: HashOfMaps<MapData, u32, DevMapHash<MapData>>,
    stats: PerCpuArray<MapData, SubnetCounters>,
}

fn pinned<T: TryFrom<Map>>(dir: &Path, name: &str) -> T
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
        m.insert(p, p, None::<&ProgramFd>, 0).unwrap();
    }
    m
}

struct Bed {
    /// An Option so a test can stop it and start another (an agent restart).
    dp: Option<Dataplane>,
    maps: KernelMaps,
    bcast: Bcast,
    a: u32,
    b: u32,
    c: u32,
    d: u32,
    u: u32,
    ul: u32,
    rep0: u32,
    /// Peers (what arrives) and host ends (where fences are sent from), by vNIC name.
    rx: BTreeMap<&'static str, Capture>,
    tx: BTreeMap<&'static str, Capture>,
    /// Keeps `xdp_pass` on the peers.
    _lab: Ebpf,
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

/// The devices with a peer we read: name -> (host end, peer).
const DEVS: [(&str, &str, &str); 7] = [
    ("a", "vnic-a", "p-vnic-a"),
    ("b", "vnic-b", "p-vnic-b"),
    ("c", "vnic-c", "p-vnic-c"),
    ("d", "vnic-d", "p-vnic-d"),
    ("u", "vnic-u", "p-vnic-u"),
    ("up", "uplink0", "p-uplink0"),
    ("ul", "ul0", "p-ul0"),
];

fn target(bed_ports: &[u32], ul: u32, mtu: u16, a: u32, b: u32) -> MapTarget {
    let mut t = desired(&[(a, MAC_A), (b, MAC_B)], bed_ports);
    t.underlay = Some(UnderlayTarget {
        ifindex: ul,
        mac: UL_MAC,
        mtu,
        addr: HV1.into(),
        vni: VNI,
        vxlan_port: VXLAN_PORT,
        probe_port: 4790,
        gateway_vtep: None,
    });
    t.vteps = BTreeMap::from([(HV2.into(), HV2_MAC), (HV3.into(), HV3_MAC)]);
    t
}

/// Runs `body` in a fresh namespace with the bed; the namespace and pins go
/// on every exit path.
fn with_bed(body: impl FnOnce(&mut Bed) + Send + 'static) {
    let mut scratch = netns::Scratch::new("test").expect("sweeping stale labs");
    let ns = scratch.netns("xfl").expect("creating the test namespace");
    // No IPv6: nothing but what the tests send crosses the veths.
    for key in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
        cmd::in_ns(&ns, "sysctl", &["-qw", key]).unwrap();
    }
    for (_, dev, peer) in DEVS {
        cmd::ip(&["-n", &ns, "link", "add", dev, "type", "veth", "peer", "name", peer]).unwrap();
        cmd::ip(&["-n", &ns, "link", "set", dev, "up"]).unwrap();
        cmd::ip(&["-n", &ns, "link", "set", peer, "up"]).unwrap();
    }
    cmd::ip(&["-n", &ns, "link", "add", REPLICATOR_PORT, "type", "veth", "peer", "name", REPLICATOR_PEER])
        .unwrap();
    cmd::ip(&["-n", &ns, "link", "set", REPLICATOR_PORT, "up"]).unwrap();
    cmd::ip(&["-n", &ns, "link", "set", REPLICATOR_PEER, "up"]).unwrap();
    let pin_root = scratch.pin_dir();
    let result = std::thread::spawn(move || {
        netns::enter(&ns).expect("entering the test namespace");
        let idx = |n: &str| ifindex(DEVS.iter().find(|d| d.0 == n).unwrap().1);
        let (a, b, c, d, u) = (idx("a"), idx("b"), idx("c"), idx("d"), idx("u"));
        let (up, ul, rep0) = (idx("up"), idx("ul"), ifindex(REPLICATOR_PORT));
        let mut dp = Dataplane::open(&pin_root, Capacity::default()).expect("loading the data plane");
        let mut maps = dp.take_maps().expect("maps");
        reconcile(&mut maps, &target(&[a, b, c, d, u, up, ul, rep0], ul, MTU, a, b)).expect("reconcile");
        assert_eq!(dp.attach_replicator(REPLICATOR_PEER).expect("attaching the replicator"), Attach::New);

        let mut lab = Ebpf::load(havip_ebpf::LAB_OBJ).expect("the lab object");
        let pass: &mut Xdp = lab.program_mut("xdp_pass").unwrap().try_into().unwrap();
        pass.load().unwrap();
        let mut rx = BTreeMap::new();
        let mut tx = BTreeMap::new();
        for (name, dev, peer) in DEVS {
            pass.attach(peer, XdpMode::default()).unwrap();
            rx.insert(name, Capture::open(ifindex(peer)).unwrap());
            tx.insert(name, Capture::open(ifindex(dev)).unwrap());
        }

        let dir = dp.dir().to_path_buf();
        let mut bcast = Bcast {
            vnics: pinned(&dir, names::BCAST_VNICS),
            subnets: pinned(&dir, names::BCAST_SUBNETS),
            prefixes: pinned(&dir, names::BCAST_PREFIXES),
            remotes: pinned(&dir, names::BCAST_REMOTES),
            ports: pinned(&dir, names::BCAST_PORTS),
            flood: pinned(&dir, names::BCAST_FLOOD),
            stats: pinned(&dir, names::SUBNET_STATS),
        };
        // What the agent writes for S1 and S2: devmaps and facts first, the
        // vNICs' entries last (a vNIC with an entry is flooded from).
        bcast.ports.insert(SLOT1, &devmap(&[a, b, c]), 0).unwrap();
        bcast.flood.insert(SLOT1, &devmap(&[a, b, c, rep0]), 0).unwrap();
        bcast.ports.insert(SLOT2, &devmap(&[d]), 0).unwrap();
        let s1 = BcastSubnet { network: S1, mask: MASK24, local_ports: 3, remote_hosts: 2 };
        bcast.subnets.set(SLOT1, s1, 0).unwrap();
        bcast
            .subnets
            .set(SLOT2, BcastSubnet { network: S2, mask: MASK24, local_ports: 1, remote_hosts: 0 }, 0)
            .unwrap();
        bcast.prefixes.insert(&Key::new(24, S1), SLOT1, 0).unwrap();
        bcast.prefixes.insert(&Key::new(24, S2), SLOT2, 0).unwrap();
        set_remotes(&mut bcast, &[HV2, HV3]);
        for v in [a, b, c] {
            bcast.vnics.insert(v, bucket(SLOT1, 1000, 100), 0).unwrap();
        }
        bcast.vnics.insert(d, bucket(SLOT2, 1000, 100), 0).unwrap();

        body(&mut Bed { dp: Some(dp), maps, bcast, a, b, c, d, u, ul, rep0, rx, tx, _lab: lab });
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

fn bucket(subnet: u32, rate_pps: u32, burst: u32) -> BcastVnic {
    BcastVnic { subnet, rate_pps, burst, ..Default::default() }
}

fn set_remotes(bcast: &mut Bcast, vteps: &[[u8; 4]]) {
    let mut r = BcastRemotes { count: vteps.len() as u32, ..Default::default() };
    r.vteps[..vteps.len()].copy_from_slice(vteps);
    bcast.remotes.set(SLOT1, r, 0).unwrap();
}

/// Runs `prog` on `frame` arriving on `ingress` `repeat` times with live
/// frames: its redirects are carried out. The verdicts are not returned.
fn live(prog: &Xdp, ingress: u32, frame: &[u8], repeat: u32) {
    let ctx = xdp_md(frame.len() as u32, ingress);
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat,
        attrs: TestRunAttrs::new().xdp_live_frames(64),
        ..TestRunOptions::default()
    })
    .expect("BPF_PROG_TEST_RUN with live frames");
}

impl Bed {
    fn send_from_vnic(&mut self, ingress: u32, frame: &[u8]) {
        live(self.dp.as_mut().unwrap().program().unwrap(), ingress, frame, 1);
    }

    fn send_from_underlay(&mut self, frame: &[u8]) {
        let ul = self.ul;
        live(self.dp.as_mut().unwrap().underlay_program().unwrap(), ul, frame, 1);
    }

    /// What came in at `name`'s peer since the last look, fenced.
    fn arrived(&mut self, name: &'static str) -> Vec<Vec<u8>> {
        let tx = &self.tx[name];
        self.rx.get_mut(name).unwrap().until_fence(tx)
    }

    /// Waits for `n` frames at `name`'s peer, then proves none follow.
    fn arrived_n(&mut self, name: &'static str, n: usize) -> Vec<Vec<u8>> {
        let mut got = self.rx.get_mut(name).unwrap().wait(n, WITHIN);
        got.extend(self.arrived(name));
        got
    }

    fn counter(&self, slot: u32, c: SubnetCounter) -> u64 {
        self.bcast.stats.get(&slot, 0).unwrap().iter().map(|v| v.get(c)).sum()
    }

    fn global(&self, c: GlobalCounter) -> u64 {
        self.maps.global_counter(c).unwrap()
    }
}

fn vrrp_advert(src_mac: [u8; 6], src: [u8; 4]) -> Vec<u8> {
    let h = ipv4_header(Ipv4Fields { ttl: 255, ..Ipv4Fields::DF }, src, VRRP_GROUP, IPPROTO_VRRP, 12);
    [eth(VRRP_MAC, src_mac, ETH_P_IP), h, vrrp_v3(51, 100, &[VIP])].concat()
}

fn udp_broadcast(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    ipv4(src_mac, BROADCAST, src, dst, IPPROTO_UDP, &udp(5000, 5000, b"who is there?"))
}

/// What arrives when `frame` arrives exactly once.
fn once(frame: &[u8]) -> Vec<Vec<u8>> {
    vec![frame.to_vec()]
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Checks every outer header of `out` (hv1 to `vtep` via `hop`, as encap.h
/// writes them) and that it carries `inner` byte for byte; the source port.
fn assert_vxlan(out: &[u8], hop: [u8; 6], vtep: [u8; 4], inner: &[u8]) -> u16 {
    assert_eq!(out.len(), inner.len() + 50, "50 bytes of outer headers");
    assert_eq!((&out[0..6], &out[6..12], be16(out, 12)), (&hop[..], &UL_MAC[..], ETH_P_IP));
    let ip = &out[14..34];
    assert_eq!((ip[0], ip[1]), (0x45, 0), "IPv4, 20-byte header, TOS 0");
    assert_eq!(be16(ip, 2) as usize, inner.len() + 36, "outer IPv4 length");
    assert_eq!((be16(ip, 4), be16(ip, 6)), (0, 0x4000), "id 0, DF, not a fragment");
    assert_eq!((ip[8], ip[9]), (64, IPPROTO_UDP), "TTL 64, UDP");
    assert_eq!(checksum(ip), 0, "outer IPv4 header checksum");
    assert_eq!((&ip[12..16], &ip[16..20]), (&HV1[..], &vtep[..]));
    let sport = be16(out, 34);
    assert!((49152..=65535).contains(&sport), "source port {sport}");
    assert_eq!(be16(out, 36), VXLAN_PORT);
    assert_eq!(be16(out, 38) as usize, inner.len() + 16, "UDP length");
    assert_eq!(be16(out, 40), 0, "UDP checksum 0");
    assert_eq!(out[42..50], [0x08, 0, 0, 0, 0, 0x03, 0xe9, 0], "VXLAN flag I, VNI 1001");
    assert_eq!(&out[50..], inner, "the inner frame, byte for byte");
    sport
}

#[test]
fn the_flood_metadata_survives_the_devmap_clone_the_veth_and_reaches_tc() {
    // The kernel assumption the remote half rests on: xdp_vnic's flood_meta
    // goes through the BROADCAST devmap clone, the veth into havip-rep1,
    // xdp_replicator's XDP_PASS, and is in skb->data_meta for tc_replicate,
    // which drops (flood_unknown) anything without it.
    with_bed(|f| {
        let advert = vrrp_advert(MAC_A, IP_A);
        f.send_from_vnic(f.a, &advert);
        let out = f.arrived_n("ul", 2);
        assert_eq!(out.len(), 2, "one copy per other host: {out:02x?}");
        let (to2, to3): (Vec<_>, Vec<_>) = out.iter().partition(|o| o[30..34] == HV2);
        assert_eq!((to2.len(), to3.len()), (1, 1), "one to hv2, one to hv3");
        let p2 = assert_vxlan(to2[0], HV2_MAC, HV2, &advert);
        let p3 = assert_vxlan(to3[0], HV3_MAC, HV3, &advert);
        assert_eq!(p2, p3, "one frame, one flow, one source port");
        assert_eq!(f.counter(SLOT1, SubnetCounter::RemoteCopies), 2);
        assert_eq!(f.global(GlobalCounter::FloodUnknown), 0, "the metadata was there");
        // And locally, through the same devmap.
        assert_eq!(f.arrived("b"), once(&advert));
        assert_eq!(f.arrived("c"), once(&advert));
    });
}

#[test]
fn multicast_and_broadcast_reach_each_other_vnic_of_the_subnet_exactly_once() {
    with_bed(|f| {
        let frames = [
            vrrp_advert(MAC_A, IP_A),
            udp_broadcast(MAC_A, IP_A, LIMITED),
            udp_broadcast(MAC_A, IP_A, DIRECTED),
        ];
        for (i, frame) in frames.iter().enumerate() {
            f.send_from_vnic(f.a, frame);
            assert_eq!(f.arrived("b"), once(frame), "frame {i} at b, once, as sent");
            assert_eq!(f.arrived("c"), once(frame), "frame {i} at c, once, as sent");
            for never in ["a", "d", "u", "up"] {
                assert_eq!(f.arrived(never), Vec::<Vec<u8>>::new(), "frame {i} never at {never}");
            }
            let out = f.arrived_n("ul", 2);
            assert_eq!(out.len(), 2, "frame {i}: one encapsulated copy per other host");
            for o in &out {
                assert_eq!(&o[50..], &frame[..], "frame {i}: only encapsulated on the underlay");
            }
        }
        assert_eq!(f.counter(SLOT1, SubnetCounter::Flooded), 3);
        assert_eq!(f.counter(SLOT1, SubnetCounter::LocalCopies), 6, "two a frame: b and c");
        assert_eq!(f.counter(SLOT1, SubnetCounter::RemoteCopies), 6);
        assert_eq!(f.counter(SLOT2, SubnetCounter::Flooded), 0, "nothing in another subnet");

        // From d, alone in S2: nobody else to get it, and never S1's vNICs.
        f.send_from_vnic(f.d, &udp_broadcast(MAC_D, IP_D, LIMITED));
        for never in ["a", "b", "c", "d", "u", "up", "ul"] {
            assert_eq!(f.arrived(never), Vec::<Vec<u8>>::new(), "S2's broadcast at {never}");
        }
        assert_eq!(f.counter(SLOT2, SubnetCounter::Flooded), 1);
        assert_eq!(f.counter(SLOT2, SubnetCounter::LocalCopies), 0);
    });
}

#[test]
fn a_unicast_subnets_multicast_and_other_group_frames_pass_untouched() {
    with_bed(|f| {
        // u has no bcast_vnics entry: exactly as before the feature.
        for frame in [vrrp_advert(MAC_U, IP_U), udp_broadcast(MAC_U, IP_U, LIMITED)] {
            let (verdict, out) = test_run(f.dp.as_mut().unwrap().program().unwrap(), f.u, &frame).unwrap();
            assert_eq!((verdict, out), (XDP_PASS, frame.clone()));
        }
        // a is in S1, but these are no flood destinations there.
        let other_subnet = udp_broadcast(MAC_A, IP_A, [198, 18, 2, 255]);
        let unicast_ip = ipv4(VRRP_MAC, MAC_A, IP_A, IP_B, IPPROTO_UDP, &udp(1, 2, b"x"));
        for frame in [other_subnet, unicast_ip] {
            let (verdict, out) = test_run(f.dp.as_mut().unwrap().program().unwrap(), f.a, &frame).unwrap();
            assert_eq!((verdict, out), (XDP_PASS, frame.clone()));
        }
        assert_eq!(f.counter(SLOT1, SubnetCounter::Flooded), 0);
        assert_eq!(f.global(GlobalCounter::Passed), 4);
    });
}

#[test]
fn a_garp_for_a_vip_in_a_broadcast_domain_is_still_a_claim_and_not_replicated() {
    with_bed(|f| {
        f.send_from_vnic(f.a, &garp(MAC_A, VIP));
        let st = f.maps.vip(&VipKey { addr: VIP }).unwrap();
        assert_eq!((st.holder_ifindex, st.holder_mac), (f.a, MAC_A), "the holder moved");
        f.send_from_vnic(f.b, &garp(MAC_B, VIP));
        let st = f.maps.vip(&VipKey { addr: VIP }).unwrap();
        assert_eq!((st.holder_ifindex, st.holder_mac), (f.b, MAC_B), "and moves again at once");
        for never in ["a", "b", "c", "ul"] {
            assert_eq!(f.arrived(never), Vec::<Vec<u8>>::new(), "a claim is never replicated ({never})");
        }
        assert_eq!(f.counter(SLOT1, SubnetCounter::Flooded), 0);
    });
}

#[test]
fn the_storm_limit_lets_the_burst_through_and_counts_the_rest() {
    with_bed(|f| {
        // Here only (no other hosts), at 1 frame/s with a burst of 5: of 50
        // frames sent at once, 5 pass, 6 if the run crossed a full second.
        let mut s1 = f.bcast.subnets.get(&SLOT1, 0).unwrap();
        s1.remote_hosts = 0;
        f.bcast.subnets.set(SLOT1, s1, 0).unwrap();
        f.bcast.vnics.insert(f.a, bucket(SLOT1, 1, 5), 0).unwrap();
        let frame = udp_broadcast(MAC_A, IP_A, LIMITED);
        let prog = f.dp.as_mut().unwrap().program().unwrap();
        live(prog, f.a, &frame, 50);
        let passed = f.counter(SLOT1, SubnetCounter::Flooded);
        assert!((5..=6).contains(&passed), "{passed} passed");
        assert_eq!(f.counter(SLOT1, SubnetCounter::StormDrops), 50 - passed);
        let at_b = f.arrived("b");
        assert_eq!(at_b.len() as u64, passed, "b got what passed");
        assert!(at_b.iter().all(|x| *x == frame));
        assert_eq!(f.arrived("c").len() as u64, passed);
        // b's bucket is its own: its burst is all there.
        f.bcast.vnics.insert(f.b, bucket(SLOT1, 1, 5), 0).unwrap();
        live(f.dp.as_mut().unwrap().program().unwrap(), f.b, &udp_broadcast(MAC_B, IP_B, LIMITED), 5);
        assert_eq!(f.counter(SLOT1, SubnetCounter::Flooded), passed + 5);
        // Rate 0: nothing is replicated from it.
        f.bcast.vnics.insert(f.c, bucket(SLOT1, 0, 5), 0).unwrap();
        live(f.dp.as_mut().unwrap().program().unwrap(), f.c, &udp_broadcast(MAC_C, IP_C, LIMITED), 3);
        assert_eq!(f.counter(SLOT1, SubnetCounter::StormDrops), 50 - passed + 3);
        // Each vNIC's entry names its own: who floods.
        let drops = |v: u32| f.bcast.vnics.get(&v, 0).unwrap().storm_drops;
        assert_eq!((drops(f.a), drops(f.b), drops(f.c)), (50 - passed, 0, 3));
        assert_eq!(f.arrived("a").len(), 5, "b's five, none of c's");
        assert!(f.arrived("ul").is_empty(), "no other hosts: nothing on the underlay");
    });
}

#[test]
fn a_source_outside_the_subnet_stays_on_this_host_without_metadata() {
    with_bed(|f| {
        let frame = vrrp_advert(MAC_A, [198, 51, 100, 7]);
        f.send_from_vnic(f.a, &frame);
        assert_eq!(f.arrived("b"), once(&frame));
        assert_eq!(f.arrived("c"), once(&frame));
        assert!(f.arrived("ul").is_empty(), "not sent to other hosts");
        assert_eq!(f.counter(SLOT1, SubnetCounter::LocalOnly), 1);
        assert_eq!(f.counter(SLOT1, SubnetCounter::Flooded), 1);
        assert_eq!(f.counter(SLOT1, SubnetCounter::RemoteCopies), 0);
        assert_eq!(f.global(GlobalCounter::FloodUnknown), 0, "never at the replicator");
    });
}

/// VXLAN from hv2 to us carrying `inner`.
fn from_hv2(inner: &[u8]) -> Vec<u8> {
    vxlan(HV2_MAC, UL_MAC, HV2, HV1, 51234, VNI, inner)
}

#[test]
fn vxlan_from_another_host_is_decapsulated_to_the_subnets_vnics_here_only() {
    with_bed(|f| {
        let advert = vrrp_advert(MAC_REMOTE, IP_REMOTE);
        f.send_from_underlay(&from_hv2(&advert));
        for to in ["a", "b", "c"] {
            assert_eq!(f.arrived(to), once(&advert), "at {to}: the inner frame, once, byte for byte");
        }
        for never in ["d", "u", "up", "ul"] {
            assert_eq!(f.arrived(never), Vec::<Vec<u8>>::new(), "never at {never}");
        }
        assert_eq!(f.counter(SLOT1, SubnetCounter::Received), 1);
        assert_eq!(f.counter(SLOT1, SubnetCounter::LocalCopies), 3);
        assert_eq!(f.counter(SLOT1, SubnetCounter::RemoteCopies), 0, "never replicated again");
        assert_eq!(f.counter(SLOT1, SubnetCounter::Flooded), 0);

        // A source in no broadcast-domain subnet here: dropped, counted.
        let stray = vrrp_advert(MAC_REMOTE, [198, 18, 9, 9]);
        let (verdict, _) =
            test_run(f.dp.as_mut().unwrap().underlay_program().unwrap(), f.ul, &from_hv2(&stray)).unwrap();
        assert_eq!(verdict, XDP_DROP);
        // In S1, but no flood destination of it (S2's broadcast).
        let cross = udp_broadcast(MAC_REMOTE, IP_REMOTE, [198, 18, 2, 255]);
        let (verdict, _) =
            test_run(f.dp.as_mut().unwrap().underlay_program().unwrap(), f.ul, &from_hv2(&cross)).unwrap();
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(f.global(GlobalCounter::FloodUnknown), 2);
        assert_eq!(f.counter(SLOT1, SubnetCounter::Received), 1);
    });
}

#[test]
fn tc_replicate_skips_an_unknown_vtep_counted_and_drops_what_is_too_big() {
    with_bed(|f| {
        // hv4 has no next hop in vteps: counted, the others still get theirs.
        set_remotes(&mut f.bcast, &[HV2, HV4, HV3]);
        let advert = vrrp_advert(MAC_A, IP_A);
        f.send_from_vnic(f.a, &advert);
        let out = f.arrived_n("ul", 2);
        let mut dsts: Vec<_> = out.iter().map(|o| [o[30], o[31], o[32], o[33]]).collect();
        dsts.sort();
        assert_eq!(dsts, [HV2, HV3]);
        assert_eq!(f.counter(SLOT1, SubnetCounter::NoVtep), 1);
        assert_eq!(f.counter(SLOT1, SubnetCounter::RemoteCopies), 2);
        assert_eq!(f.arrived("b"), once(&advert), "delivered here all the same");

        // An underlay MTU of 1400: a 1365-byte frame (outer IPv4 1401) does
        // not fit; one of 1364 does.
        // Written straight into `underlay`: a reconcile pass would take out
        // the broadcast maps this bed writes itself.
        let port = UnderlayPort { mtu: 1400, ..f.maps.underlay().unwrap() };
        f.maps.set_underlay(port).unwrap();
        set_remotes(&mut f.bcast, &[HV2]);
        let sized = |len: usize| {
            let payload = vec![0x5a; len - 14 - 20 - 8];
            ipv4(MAC_A, BROADCAST, IP_A, LIMITED, IPPROTO_UDP, &udp(5000, 5000, &payload))
        };
        let (big, fits) = (sized(1365), sized(1364));
        f.send_from_vnic(f.a, &big);
        assert_eq!(f.arrived("b"), once(&big), "too big for the underlay, still delivered here");
        assert!(f.arrived("ul").is_empty());
        assert_eq!(f.counter(SLOT1, SubnetCounter::TooBig), 1);
        f.send_from_vnic(f.a, &fits);
        let out = f.arrived_n("ul", 1);
        assert_eq!(out.len(), 1);
        assert_vxlan(&out[0], HV2_MAC, HV2, &fits);
        assert_eq!(f.counter(SLOT1, SubnetCounter::TooBig), 1);
    });
}

#[test]
fn the_replicator_drops_what_comes_without_metadata() {
    with_bed(|f| {
        let frame = udp_broadcast(MAC_A, IP_A, LIMITED);
        let rep1 = ifindex(REPLICATOR_PEER);
        let (verdict, _) =
            test_run(f.dp.as_mut().unwrap().replicator_program().unwrap(), rep1, &frame).unwrap();
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(f.global(GlobalCounter::FloodUnknown), 1);
        // The same from the host into havip-rep0, for real: never on the underlay.
        let rep0 = Capture::open(f.rep0).unwrap();
        rep0.send(&frame);
        let until = std::time::Instant::now() + WITHIN;
        while f.global(GlobalCounter::FloodUnknown) < 2 {
            assert!(std::time::Instant::now() < until, "the replicator never saw it");
            std::thread::yield_now();
        }
        assert!(f.arrived("ul").is_empty());
        assert_eq!(f.counter(SLOT1, SubnetCounter::RemoteCopies), 0);
    });
}

#[test]
fn the_replicator_reattaches_hitlessly_across_a_restart_and_detaches() {
    with_bed(|f| {
        assert_eq!(f.dp.as_mut().unwrap().replicator_attached().unwrap().as_deref(), Some(REPLICATOR_PEER));
        assert_eq!(
            f.dp.as_mut().unwrap().attach_replicator(REPLICATOR_PEER).unwrap(),
            Attach::Swapped,
            "pinned links re-used"
        );
        // Still working through the swapped links.
        let advert = vrrp_advert(MAC_A, IP_A);
        f.send_from_vnic(f.a, &advert);
        assert_eq!(f.arrived_n("ul", 2).len(), 2);
        assert_eq!(f.arrived("b"), once(&advert));
        // An agent restart: the next one finds the maps and links pinned,
        // checks the maps against its build and swaps its programs in.
        let root = f.dp.as_mut().unwrap().dir().parent().unwrap().to_path_buf();
        drop(f.dp.take());
        let mut dp = Dataplane::open(&root, Capacity::default()).expect("reopening over the pins");
        assert_eq!(dp.attach_replicator(REPLICATOR_PEER).unwrap(), Attach::Swapped);
        f.dp = Some(dp);
        f.send_from_vnic(f.a, &advert);
        assert_eq!(f.arrived_n("ul", 2).len(), 2, "replicated by the new programs");
        assert_eq!(f.arrived("b"), once(&advert));
        f.dp.as_mut().unwrap().detach_replicator().unwrap();
        assert_eq!(f.dp.as_mut().unwrap().replicator_attached().unwrap(), None);
        f.send_from_vnic(f.a, &advert);
        assert_eq!(f.arrived("b"), once(&advert), "local delivery goes on");
        assert!(f.arrived("ul").is_empty(), "no replicator: nothing to other hosts");
    });
}
