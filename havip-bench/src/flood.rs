//! Broadcast domains (issue 11): what replication costs per copy, and what
//! the mode costs a VIP hit (nothing, by design: xdp_vnic looks at the
//! destination MAC's group bit only after the VIP lookup has missed).
//!
//! Replication: a guest of a broadcast-domain subnet sends multicast (a
//! 64-byte VRRPv3 advert to 224.0.0.18, and a UDP datagram of the same size
//! to 224.0.0.251), and xdp_vnic broadcasts it into the subnet's devmap with
//! BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS: one copy per other vNIC. Against
//! the **broadcast limit** (lab.bpf.c's xdp_bcast_limit: that one
//! bpf_redirect_map and nothing else) into the same ports. The kernel walks
//! every bucket of a DEVMAP_HASH on a broadcast, so the limit is measured
//! twice: with its devmap as large as havip's per-subnet ones
//! (HAVIP_DEFAULT_MAX_VNICS entries: the like-for-like limit) and small (16).
//!
//! Its own namespaces (the other parts' topology stays as it was):
//!
//! ```text
//!  [fl-hv] fin1 fin2 fin4 fin8 ── pin1 pin2 pin4 pin8 [fl-sink]   ingress vNICs, N = 1, 2, 4, 8
//!  [fl-hv] fo0 … fo7           ── po0 … po7           [fl-sink]   the other vNICs
//! ```
//!
//! Ingress vNIC finN is alone in subnet slot k (its devmap: finN and fo0 …
//! fo(N-1)), so a frame from it makes exactly N copies. One counting sink on
//! every peer (the senders' too) proves that each run delivered exactly N
//! copies per frame, none back to the sender. Live frames on one core
//! (BPF_PROG_TEST_RUN): the time per input frame includes its copies'
//! clones, their transmission into the veths and the sinks' NAPI runs on the
//! same core, which is what "per copy" means here. ns per frame against N is
//! fitted per round (least squares over N = 1, 2, 4, 8): the slope is the
//! cost of one more copy, the intercept the fixed cost of a flooded frame.
//!
//! The VIP hit (the throughput part's measurement, 10,000 HAVIPs): limit,
//! havip with the client's vNIC in a unicast subnet, and the same with it in
//! a broadcast-domain subnet (a bcast_vnics entry, its subnet's devmap and
//! facts written), in one rotation.

use std::path::Path as FsPath;

use anyhow::{ensure, Context, Result};
use aya::{
    maps::{Array, DevMapHash, HashMap, HashOfMaps, Map, MapData, PerCpuArray},
    programs::{ProgramFd, Xdp},
    Ebpf, EbpfLoader,
};
use havip_agent::datapath::{
    maps::new_bcast_devmap,
    plan::{reconcile, MapTarget},
};
use havip_common::{
    maps as names, BcastSubnet, BcastVnic, SubnetCounter, SubnetCounters, VipKey, DEFAULT_MAX_VNICS,
};
use havip_lab::frames as lab;

use crate::{
    cpu,
    fill::{self, Pins, Plane},
    frames::{self, Frame},
    livefire,
    progs::{self, Lab, Sink, Spray, LIVE_BATCH},
    report::{copies_str, Flood, Named, ProgInfo, ReplicationPoint, Replicator},
    stats::Spread,
    topo::{self, Port, VIP},
};

/// Copies per flooded frame measured (other vNICs in the subnet).
pub const COPIES: [u32; 4] = [1, 2, 4, 8];
/// The storm bucket of every sending vNIC: 100 M frames/s, burst 100,000 —
/// far above any rate one core reaches here (~10 Mpps), so it never limits
/// (the runs check that no frame was dropped by it). The agent allows at
/// most 1 M pps per vNIC; its check is the same per frame at any rate.
pub const STORM_PPS: u32 = 100_000_000;
pub const STORM_BURST: u32 = 100_000;
/// The small devmap of the second broadcast limit.
const SMALL_DEVMAP: u32 = 16;

const NETWORK: [u8; 4] = [198, 18, 1, 0];
const MASK24: [u8; 4] = [255, 255, 255, 0];
const VRRP_GROUP: [u8; 4] = [224, 0, 0, 18];
const VRRP_MAC: [u8; 6] = [0x01, 0, 0x5e, 0, 0, 0x12];
const MDNS_GROUP: [u8; 4] = [224, 0, 0, 251];
const MDNS_MAC: [u8; 6] = [0x01, 0, 0x5e, 0, 0, 0xfb];

const INGRESS: [(&str, &str); 4] = [("fin1", "pin1"), ("fin2", "pin2"), ("fin4", "pin4"), ("fin8", "pin8")];
const OUT: [(&str, &str); 8] = [
    ("fo0", "po0"),
    ("fo1", "po1"),
    ("fo2", "po2"),
    ("fo3", "po3"),
    ("fo4", "po4"),
    ("fo5", "po5"),
    ("fo6", "po6"),
    ("fo7", "po7"),
];

/// The bcast maps of a data plane, opened from its pins; written here as
/// the agent would (its reconciler for them is not in this branch).
pub struct BcastMaps {
    vnics: HashMap<MapData, u32, BcastVnic>,
    subnets: Array<MapData, BcastSubnet>,
    ports: HashOfMaps<MapData, u32, DevMapHash<MapData>>,
    stats: PerCpuArray<MapData, SubnetCounters>,
}

fn pinned<T>(dir: &FsPath, name: &str) -> Result<T>
where
    T: TryFrom<Map>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let data = MapData::from_pin(dir.join(name)).with_context(|| format!("pinned map {name}"))?;
    Map::from_map_data(data)?.try_into().with_context(|| format!("pinned map {name}"))
}

/// A devmap as the agent makes a subnet's, holding `ports`.
fn inner_devmap(ports: &[u32]) -> Result<DevMapHash<MapData>> {
    let mut m = new_bcast_devmap("bcast_inner").context("creating a subnet devmap")?;
    for &p in ports {
        m.insert(p, p, None::<&ProgramFd>, 0).context("filling a subnet devmap")?;
    }
    Ok(m)
}

impl BcastMaps {
    pub fn open(dir: &FsPath) -> Result<Self> {
        Ok(Self {
            vnics: pinned(dir, names::BCAST_VNICS)?,
            subnets: pinned(dir, names::BCAST_SUBNETS)?,
            ports: pinned(dir, names::BCAST_PORTS)?,
            stats: pinned(dir, names::SUBNET_STATS)?,
        })
    }

    /// Makes `slot` a broadcast-domain subnet (198.18.1.0/24) with `ports`
    /// here and no other host: its devmap and facts, not its vNICs' entries.
    pub fn subnet(&mut self, slot: u32, ports: &[u32]) -> Result<()> {
        self.ports.insert(slot, &inner_devmap(ports)?, 0).context("bcast_ports")?;
        let s =
            BcastSubnet { network: NETWORK, mask: MASK24, local_ports: ports.len() as u32, remote_hosts: 0 };
        self.subnets.set(slot, s, 0).context("bcast_subnets")
    }

    /// Puts vNIC `ifindex` in subnet `slot`: from now on its multicast is flooded.
    pub fn join(&mut self, ifindex: u32, slot: u32) -> Result<()> {
        self.join_limited(ifindex, slot, STORM_PPS, STORM_BURST)
    }

    /// The same with a storm bucket of `rate_pps`, `burst`.
    pub fn join_limited(&mut self, ifindex: u32, slot: u32, rate_pps: u32, burst: u32) -> Result<()> {
        let v = BcastVnic { subnet: slot, rate_pps, burst, ..Default::default() };
        self.vnics.insert(ifindex, v, 0).context("bcast_vnics")
    }

    /// Takes vNIC `ifindex` out (a unicast subnet's vNIC again).
    pub fn leave(&mut self, ifindex: u32) -> Result<()> {
        self.vnics.remove(&ifindex).context("bcast_vnics")
    }

    /// Removes subnet `slot`'s devmap and facts.
    pub fn remove_subnet(&mut self, slot: u32) -> Result<()> {
        self.ports.remove(&slot).context("bcast_ports")?;
        self.subnets.set(slot, BcastSubnet::default(), 0).context("bcast_subnets")
    }

    pub fn counter(&self, slot: u32, c: SubnetCounter) -> Result<u64> {
        Ok(self.stats.get(&slot, 0)?.iter().map(|v| v.get(c)).sum())
    }
}

/// `bytes` padded with zeros to the bench's frame length.
fn padded(bytes: Vec<u8>) -> Vec<u8> {
    let mut f = bytes;
    f.resize(frames::LEN.max(f.len()), 0);
    f
}

/// A VRRPv3 advert for VIP (VRID 51, priority 100) as keepalived sends it
/// by default: to 224.0.0.18, TTL 255.
fn vrrp_advert(mac: [u8; 6], src: [u8; 4]) -> Vec<u8> {
    let f = lab::Ipv4Fields { ttl: 255, ..lab::Ipv4Fields::DF };
    let h = lab::ipv4_header(f, src, VRRP_GROUP, lab::IPPROTO_VRRP, 12);
    padded([lab::eth(VRRP_MAC, mac, lab::ETH_P_IP), h, lab::vrrp_v3(51, 100, &[VIP.octets()])].concat())
}

/// A UDP datagram of the same size to 224.0.0.251 (no VRRP observation).
fn udp_multicast(mac: [u8; 6], src: [u8; 4]) -> Vec<u8> {
    padded(lab::ipv4(mac, MDNS_MAC, src, MDNS_GROUP, lab::IPPROTO_UDP, &lab::udp(5353, 5353, &[0; 4])))
}

/// One live run of `packets` frames, each making `copies` copies that all
/// reach `sink`: input frames per second.
fn live_rate(
    name: &str,
    prog: &Xdp,
    frame: &[u8],
    ingress: u32,
    packets: u32,
    copies: u32,
    sink: &Sink,
) -> Result<f64> {
    let before = sink.count()?;
    let wall = progs::live(prog, frame, ingress, packets, LIVE_BATCH).with_context(|| name.to_owned())?;
    progs::check_delivered(name, sink, before, u64::from(packets) * u64::from(copies))?;
    Ok(f64::from(packets) / wall.as_secs_f64())
}

/// One replicating program: one per copy count, and the frames sent to it.
struct Flooder<'a> {
    name: String,
    progs: Vec<&'a Xdp>,
    frames: &'a [Vec<u8>],
}

/// xdp_bcast_limit of each of `objs`.
fn limit_progs(objs: &[Ebpf]) -> Result<Vec<&Xdp>> {
    objs.iter().map(|e| progs::xdp(e, "xdp_bcast_limit")).collect()
}

/// Least squares of ns per frame against copies: (slope, intercept).
fn fit(ns: &[f64]) -> (f64, f64) {
    let xs: Vec<f64> = COPIES.iter().map(|&c| f64::from(c)).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ns.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ns).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let slope = sxy / sxx;
    (slope, my - slope * mx)
}

/// The namespaces of the replication measurement; deleted on drop.
struct Net {
    ingress: Vec<Port>,
    out: Vec<Port>,
    sink: havip_lab::netns::Netns,
    hv: havip_lab::netns::Netns,
}

fn build() -> Result<Net> {
    let hv = topo::netns("fl-hv")?;
    let sink = topo::netns("fl-sink")?;
    for ns in [&hv, &sink] {
        topo::sysctl(
            ns.name(),
            &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
        )?;
    }
    let ingress = INGRESS
        .iter()
        .zip(20u8..)
        .map(|(&(h, g), last)| topo::veth(&hv, &sink, h, g, last))
        .collect::<Result<Vec<_>>>()?;
    let out = OUT
        .iter()
        .zip(30u8..)
        .map(|(&(h, g), last)| topo::veth(&hv, &sink, h, g, last))
        .collect::<Result<Vec<_>>>()?;
    Ok(Net { ingress, out, sink, hv })
}

pub struct Setup<'a> {
    pub pins: &'a Pins,
    pub cpu: usize,
    pub rounds: usize,
    /// Copies delivered per live run: input frames = this ÷ copies per frame.
    pub copies_per_run: u32,
}

/// What the replication measurement gives.
pub struct Replication {
    pub programs: Vec<Replicator>,
    pub ratios: Vec<Named>,
    pub program_ns: Vec<Named>,
    pub info: Vec<ProgInfo>,
}

/// Runs per plain test-run call.
const PLAIN_REPEAT: u32 = 20_000;

/// The programs alone (plain test runs: the verdict is not acted on, so a
/// broadcast's bucket walk, clones and transmissions are not in it), ns per
/// frame above the empty program timed right before, per round.
fn program_ns_of(
    progs_: &[(&str, &Xdp, &[u8])],
    empty: &Xdp,
    ingress: u32,
    rounds: usize,
) -> Result<Vec<Named>> {
    let time = |prog: &Xdp, frame: &[u8]| -> Result<f64> {
        let mut f: Frame = [0; frames::LEN];
        f.copy_from_slice(frame);
        let (verdict, ns) = progs::plain(prog, &f, ingress, PLAIN_REPEAT)?;
        ensure!(
            [progs::XDP_REDIRECT, progs::XDP_PASS, progs::XDP_DROP].contains(&verdict),
            "plain test run: verdict {verdict}"
        );
        Ok(f64::from(ns))
    };
    let mut out = vec![Vec::with_capacity(rounds); progs_.len()];
    for r in 0..rounds {
        crate::stop::check()?;
        for k in 0..progs_.len() {
            let i = (r + k) % progs_.len();
            let (_, prog, frame) = progs_[i];
            let e = time(empty, frame)?;
            out[i].push(time(prog, frame)? - e);
        }
    }
    Ok(progs_.iter().zip(out).map(|(p, v)| Named { name: p.0.to_owned(), value: Spread::of(&v) }).collect())
}

/// Measures replication; the calling thread ends up in `back_to` (its
/// namespace before), pinned to `setup.cpu`.
pub fn replication(setup: &Setup, back_to: Option<&str>) -> Result<Replication> {
    let result = (|| {
        let net = build()?;
        havip_lab::netns::enter(net.sink.name())?;
        let peers: Vec<&str> = net.ingress.iter().chain(&net.out).map(|p| p.guest_name).collect();
        let sink = Sink::attach_all(&peers)?;
        havip_lab::netns::enter(net.hv.name())?;
        cpu::pin_to(setup.cpu)?;
        replicate(setup, &net, &sink)
    })();
    if let Some(ns) = back_to {
        havip_lab::netns::enter(ns)?;
    }
    result
}

/// xdp_bcast_limit with its devmap of `size` entries holding `ports`.
fn bcast_limit(size: u32, ports: &[u32]) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("bcast_limit_ports", size)
        .load(havip_ebpf::LAB_OBJ)
        .context("loading the lab object")?;
    progs::load(&mut ebpf, "xdp_bcast_limit")?;
    let mut m: DevMapHash<_> = ebpf.map_mut("bcast_limit_ports").context("bcast_limit_ports")?.try_into()?;
    for &p in ports {
        m.insert(p, p, None, 0).context("bcast_limit_ports")?;
    }
    Ok(ebpf)
}

fn replicate(setup: &Setup, net: &Net, sink: &Sink) -> Result<Replication> {
    // The plane: every port a vNIC; VIP with the senders as members, so a
    // VRRP advert is observed as in production (vrrp map written).
    let mut plane: Plane = fill::open(setup.pins, "flood")?;
    let members = net.ingress.iter().map(|p| (p.host_ifindex, p.guest_mac)).collect();
    let desired = MapTarget {
        ports: net.ingress.iter().chain(&net.out).map(|p| p.host_ifindex).collect(),
        vips: [(VipKey::from(VIP), members)].into_iter().collect(),
        ..Default::default()
    };
    reconcile(&mut plane.maps, &desired).context("reconciling the flood plane")?;
    let mut bc = BcastMaps::open(plane.dp.dir())?;
    let ports_of = |k: usize| -> Vec<u32> {
        let n = COPIES[k] as usize;
        std::iter::once(net.ingress[k].host_ifindex)
            .chain(net.out[..n].iter().map(|p| p.host_ifindex))
            .collect()
    };
    for k in 0..COPIES.len() {
        let slot = k as u32;
        bc.subnet(slot, &ports_of(k))?;
        bc.join(net.ingress[k].host_ifindex, slot)?;
    }
    let limits = [DEFAULT_MAX_VNICS, SMALL_DEVMAP]
        .iter()
        .map(|&size| (0..COPIES.len()).map(|k| bcast_limit(size, &ports_of(k))).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    let src = |k: usize| [198, 18, 1, 20 + k as u8];
    let vrrp: Vec<Vec<u8>> =
        (0..COPIES.len()).map(|k| vrrp_advert(net.ingress[k].guest_mac, src(k))).collect();
    let udp: Vec<Vec<u8>> =
        (0..COPIES.len()).map(|k| udp_multicast(net.ingress[k].guest_mac, src(k))).collect();

    let havip: &Xdp = plane.dp.program()?;
    let programs = [
        Flooder {
            name: format!("limit, devmap of {DEFAULT_MAX_VNICS} (as havip's)"),
            progs: limit_progs(&limits[0])?,
            frames: &vrrp,
        },
        Flooder {
            name: format!("limit, devmap of {SMALL_DEVMAP}"),
            progs: limit_progs(&limits[1])?,
            frames: &vrrp,
        },
        Flooder { name: "havip, VRRP advert".to_owned(), progs: vec![havip; COPIES.len()], frames: &vrrp },
        Flooder { name: "havip, UDP multicast".to_owned(), progs: vec![havip; COPIES.len()], frames: &udp },
    ];
    let k = COPIES.len();
    let storm_before: u64 =
        (0..k as u32).map(|s| bc.counter(s, SubnetCounter::StormDrops)).sum::<Result<_>>()?;
    let pps = livefire::rounds_of(programs.len() * k, setup.rounds, |i, _| {
        let (p, j) = (i / k, i % k);
        let (name, prog, frame) = (&programs[p].name, programs[p].progs[j], &programs[p].frames[j]);
        let copies = COPIES[j];
        let packets = (setup.copies_per_run / copies).max(1000);
        live_rate(
            &format!("{name}, {}", copies_str(copies)),
            prog,
            frame,
            net.ingress[j].host_ifindex,
            packets,
            copies,
            sink,
        )
    })?;
    let storm_after: u64 =
        (0..k as u32).map(|s| bc.counter(s, SubnetCounter::StormDrops)).sum::<Result<_>>()?;
    ensure!(storm_after == storm_before, "the storm bucket dropped {} frames", storm_after - storm_before);

    let ns = |r: &Vec<f64>, p: usize, j: usize| 1e9 / r[p * k + j];
    let fits: Vec<Vec<(f64, f64)>> = pps
        .iter()
        .map(|r| (0..programs.len()).map(|p| fit(&(0..k).map(|j| ns(r, p, j)).collect::<Vec<_>>())).collect())
        .collect();
    let of = |f: &dyn Fn(&Vec<f64>) -> f64| Spread::of(&pps.iter().map(f).collect::<Vec<_>>());
    let result = programs
        .iter()
        .enumerate()
        .map(|(p, f)| Replicator {
            name: f.name.clone(),
            points: COPIES
                .iter()
                .enumerate()
                .map(|(j, &copies)| ReplicationPoint {
                    copies,
                    input_mpps: of(&|r| r[p * k + j] / 1e6),
                    copies_mpps: of(&|r| r[p * k + j] * f64::from(copies) / 1e6),
                    ns_per_frame: of(&|r| ns(r, p, j)),
                })
                .collect(),
            marginal_ns: (1..k)
                .map(|j| {
                    let dn = f64::from(COPIES[j] - COPIES[j - 1]);
                    of(&|r| (ns(r, p, j) - ns(r, p, j - 1)) / dn)
                })
                .collect(),
            ns_per_copy: Spread::of(&fits.iter().map(|f| f[p].0).collect::<Vec<_>>()),
            fixed_ns: Spread::of(&fits.iter().map(|f| f[p].1).collect::<Vec<_>>()),
        })
        .collect();
    let mut ratios = Vec::new();
    for (p, q, what) in [
        (2, 0, "havip VRRP / limit as havip's"),
        (2, 1, "havip VRRP / small limit"),
        (1, 0, "small limit / limit as havip's"),
    ] {
        for (j, copies) in COPIES.iter().enumerate() {
            ratios.push(Named {
                name: format!("{what}, {}", copies_str(*copies)),
                value: of(&|r| r[p * k + j] / r[q * k + j]),
            });
        }
    }
    for (p, q, what) in [(2, 0, "havip VRRP − limit as havip's"), (3, 0, "havip UDP − limit as havip's")]
    {
        ratios.push(Named {
            name: format!("{what}: fixed ns"),
            value: Spread::of(&fits.iter().map(|f| f[p].1 - f[q].1).collect::<Vec<_>>()),
        });
        ratios.push(Named {
            name: format!("{what}: ns per copy"),
            value: Spread::of(&fits.iter().map(|f| f[p].0 - f[q].0).collect::<Vec<_>>()),
        });
    }
    let mut lab = Ebpf::load(havip_ebpf::LAB_OBJ).context("loading the lab object")?;
    progs::load(&mut lab, Lab::EMPTY)?;
    let limit1 = progs::xdp(&limits[0][0], "xdp_bcast_limit")?;
    let (empty, fin1) = (progs::xdp(&lab, Lab::EMPTY)?, net.ingress[0].host_ifindex);
    let mut program_ns = program_ns_of(
        &[
            ("limit (the redirect call)", limit1, &vrrp[0]),
            ("havip, VRRP advert flooded", havip, &vrrp[0]),
            ("havip, UDP multicast flooded", havip, &udp[0]),
        ],
        empty,
        fin1,
        setup.rounds,
    )?;
    // What a guest flooding above its storm limit costs per frame: the
    // decision up to the drop (1 frame/s, burst 1: all but the first dropped).
    bc.join_limited(fin1, 0, 1, 1)?;
    let drops = bc.counter(0, SubnetCounter::StormDrops)?;
    let over = [("havip, UDP multicast over the storm limit (dropped)", havip, udp[0].as_slice())];
    program_ns.extend(program_ns_of(&over, empty, fin1, setup.rounds)?);
    ensure!(bc.counter(0, SubnetCounter::StormDrops)? > drops, "the storm bucket of 1 pps dropped nothing");
    bc.join(fin1, 0)?;
    let info = vec![
        crate::prog_info("xdp_vnic (havip, with flood.h)", havip)?,
        crate::prog_info("xdp_bcast_limit", progs::xdp(&limits[0][0], "xdp_bcast_limit")?)?,
    ];
    Ok(Replication { programs: result, ratios, program_ns, info })
}

/// The throughput part's VIP hit with the client's vNIC in a unicast and
/// in a broadcast-domain subnet.
pub struct VipHit<'a> {
    pub lab: &'a Lab,
    pub plane: &'a mut Plane,
    pub sink: &'a Sink,
    pub client: &'a Port,
    /// The subnet's other vNICs (members a and b).
    pub others: [u32; 2],
    pub to_vmac: Frame,
    pub vip_slot: u32,
    pub rounds: usize,
    pub packets: u32,
}

/// The bcast slot the client's subnet gets in the production-like plane.
const CLIENT_SLOT: u32 = 0;

/// limit, havip unicast, havip broadcast-domain, havip unicast again:
/// Mpps and paired ratios.
pub fn vip_hit(s: &mut VipHit) -> Result<(Vec<Named>, Vec<Named>)> {
    let mut bc = BcastMaps::open(s.plane.dp.dir())?;
    let c = s.client.host_ifindex;
    bc.subnet(CLIENT_SLOT, &[c, s.others[0], s.others[1]])?;
    let result = (|| {
        // The mode really is on: the client's VRRP advert is flooded (and
        // passed untouched without the entry).
        let advert = vrrp_advert(s.client.guest_mac, topo::CLIENT_IP.octets());
        let mut f: Frame = [0; frames::LEN];
        f.copy_from_slice(&advert);
        let prog: &Xdp = s.plane.dp.program()?;
        bc.join(c, CLIENT_SLOT)?;
        let (on, _) = progs::plain(prog, &f, c, 1)?;
        bc.leave(c)?;
        let (off, _) = progs::plain(prog, &f, c, 1)?;
        ensure!(
            on == progs::XDP_REDIRECT && off == progs::XDP_PASS,
            "a VRRP advert from the client: verdict {on} in broadcast-domain mode (want redirect), {off} in unicast (want pass)"
        );
        let flooded = bc.counter(CLIENT_SLOT, SubnetCounter::Flooded)?;

        let limit = Spray::load(s.lab.prog(Lab::LIMIT)?.fd()?, VIP, s.vip_slot, 1)?;
        let havip = Spray::load(prog.fd()?, VIP, s.vip_slot, 1)?;
        // The last is the second again: how far two runs of the same thing
        // differ here (the noise floor of the ratio that matters).
        let names = [
            "limit",
            "havip, unicast subnet",
            "havip, broadcast-domain subnet",
            "havip, unicast subnet again (A/A control)",
        ];
        let tp = livefire::rounds_of(names.len(), s.rounds, |i, _| {
            if i == 2 {
                bc.join(c, CLIENT_SLOT)?;
            } else {
                bc.leave(c).ok();
            }
            let p = if i == 0 { limit.prog()? } else { havip.prog()? };
            live_rate(names[i], p, &s.to_vmac, c, s.packets, 1, s.sink)
        })?;
        ensure!(
            bc.counter(CLIENT_SLOT, SubnetCounter::Flooded)? == flooded,
            "a VIP hit was flooded in the broadcast-domain subnet"
        );
        let mpps = names
            .iter()
            .enumerate()
            .map(|(i, n)| Named { name: (*n).to_owned(), value: crate::mpps(&tp, i) })
            .collect();
        let ratios = vec![
            Named { name: "broadcast-domain / unicast".into(), value: crate::ratio(&tp, 2, 1) },
            Named { name: "unicast again / unicast (A/A: the noise)".into(), value: crate::ratio(&tp, 3, 1) },
            Named { name: "unicast / limit".into(), value: crate::ratio(&tp, 1, 0) },
            Named { name: "broadcast-domain / limit".into(), value: crate::ratio(&tp, 2, 0) },
        ];
        Ok((mpps, ratios))
    })();
    // Leave the shared plane as the other parts know it.
    bc.leave(c).ok();
    bc.remove_subnet(CLIENT_SLOT)?;
    result
}

/// Both measurements, as the report shows them.
pub fn assemble(replication: Replication, vip_hit: (Vec<Named>, Vec<Named>), copies_per_run: u32) -> Flood {
    Flood {
        frame_bytes: frames::LEN,
        storm_rate_pps: STORM_PPS,
        storm_burst: STORM_BURST,
        copies_per_run,
        replication: replication.programs,
        replication_ratios: replication.ratios,
        program_ns: replication.program_ns,
        vip_hit_mpps: vip_hit.0,
        vip_hit_ratios: vip_hit.1,
        programs: replication.info,
    }
}
