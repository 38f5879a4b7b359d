//! VXLAN in XDP (issue 9): VIP traffic whose holder is on another host,
//! encapsulated by xdp_vnic and redirected into the underlay NIC, against
//! the practical ceiling of encapsulation (xdp_encap_limit: xdp_limit's MAC
//! rewrite plus a 50-byte outer header copied from a template) and against
//! the kernel's own path (the frame handed to the stack, routed into a
//! `vxlan` device, VNI 1001, dstport 4789). And the other way: VXLAN
//! arriving on the underlay NIC for a VIP held here, decapsulated by
//! xdp_underlay, against xdp_decap_limit.
//!
//! Its own namespaces, so the other parts' topology stays as it was:
//!
//! ```text
//!  [enc-guest] eth0 ── vclient [enc-hv] ul0 198.18.0.1 ── ulpeer [enc-ul]  (counting sink)
//!  [enc-guest] ethh ── vhold   (the local holder for decap; counting sink on ethh)
//! ```
//!
//! Live frames (BPF_PROG_TEST_RUN) on one core, as the throughput part;
//! havip and the encap limit behind xdp_spray (which writes the virtual MAC
//! again on every recycled frame), so both pay for it.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::{
    maps::{Array, DevMapHash},
    Ebpf,
};
use havip_agent::datapath::{
    maps::{HolderTarget, Maps},
    plan::{reconcile, MapTarget, UnderlayTarget},
};
use havip_common::VipKey;
use havip_lab::frames as lab;

use crate::{
    cpu,
    fill::{self, Pins, Plane},
    frames,
    livefire::{self, Path},
    progs::{self, LimitCfg, Sink, Spray},
    report::{Encap, Named},
    topo::{self, CLIENT_IP, VIP},
};

/// Held by a member on this host: the decap side's VIP.
const VIP_LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 52);
const VNI: u32 = 1001;
const VXLAN_PORT: u16 = 4789;
const OUR_VTEP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER_VTEP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The remote holder's guest MAC: the inner destination.
const REMOTE_HOLDER_MAC: [u8; 6] = [0x02, 0, 0xc6, 0x12, 1, 0x0c];
const UNDERLAY_MTU: u16 = 1500;

pub struct Setup<'a> {
    pub pins: &'a Pins,
    pub cpu: usize,
    pub rounds: usize,
    pub packets: u32,
    pub kernel_packets: u32,
}

/// `struct encap_limit_cfg` in lab.bpf.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct EncapLimitCfg {
    outer: [u8; 50],
    _pad: [u8; 2],
}

// SAFETY: plain old data, no padding the C side lacks.
unsafe impl aya::Pod for EncapLimitCfg {}

/// A lab object with one limit program set to send to `out` with `cfg`
/// (and `outer` headers), plus xdp_restore_pass for the kernel path.
fn limit_obj(
    prog: &str,
    cfg: LimitCfg,
    outer: Option<[u8; 50]>,
    template: Option<&frames::Frame>,
) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(havip_ebpf::LAB_OBJ).context("loading the lab object")?;
    progs::load(&mut ebpf, prog)?;
    progs::load(&mut ebpf, progs::Lab::KERNEL)?;
    let mut c: Array<_, LimitCfg> = ebpf.map_mut("limit_config").context("limit_config")?.try_into()?;
    c.set(0, cfg, 0)?;
    let mut ports: DevMapHash<_> = ebpf.map_mut("limit_ports").context("limit_ports")?.try_into()?;
    ports.insert(cfg.ifindex, cfg.ifindex, None, 0).context("limit_ports")?;
    if let Some(outer) = outer {
        let mut o: Array<_, EncapLimitCfg> =
            ebpf.map_mut("encap_limit_config").context("encap_limit_config")?.try_into()?;
        o.set(0, EncapLimitCfg { outer, _pad: [0; 2] }, 0)?;
    }
    if let Some(t) = template {
        let mut a: Array<_, frames::Frame> =
            ebpf.map_mut("frame_template").context("frame_template")?.try_into()?;
        a.set(0, t, 0)?;
    }
    Ok(ebpf)
}

/// The namespaces of this part; deleted on drop (fields drop in order).
struct Net {
    client: topo::Port,
    hold: topo::Port,
    ul: topo::Port,
    guest: havip_lab::netns::Netns,
    ul_ns: havip_lab::netns::Netns,
    hv: havip_lab::netns::Netns,
}

fn build() -> Result<Net> {
    let hv = topo::netns("enc-hv")?;
    let guest = topo::netns("enc-guest")?;
    let ul_ns = topo::netns("enc-ul")?;
    for ns in [&hv, &guest, &ul_ns] {
        topo::sysctl(
            ns.name(),
            &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
        )?;
    }
    topo::sysctl(
        hv.name(),
        &["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"],
    )?;
    let client = topo::veth(&hv, &guest, "vclient", "eth0", 13)?;
    let hold = topo::veth(&hv, &guest, "vhold", "ethh", 11)?;
    let ul = topo::veth(&hv, &ul_ns, "ul0", "ulpeer", 2)?;
    // The kernel path: the VIP routed into a vxlan device to the peer VTEP.
    let h = hv.name();
    let ip = havip_lab::cmd::ip;
    ip(&["-n", h, "addr", "add", &format!("{OUR_VTEP}/24"), "dev", "ul0"])?;
    ip(&[
        "-n",
        h,
        "neigh",
        "replace",
        &PEER_VTEP.to_string(),
        "lladdr",
        &topo::mac_str(&ul.guest_mac),
        "dev",
        "ul0",
        "nud",
        "permanent",
    ])?;
    let (vni, port) = (VNI.to_string(), VXLAN_PORT.to_string());
    let (local, remote) = (OUR_VTEP.to_string(), PEER_VTEP.to_string());
    ip(&[
        "-n",
        h,
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        &vni,
        "dstport",
        &port,
        "local",
        &local,
        "remote",
        &remote,
        "dev",
        "ul0",
        "nolearning",
        "noudpcsum",
    ])?;
    ip(&["-n", h, "link", "set", "vx0", "up"])?;
    ip(&["-n", h, "route", "add", &format!("{CLIENT_IP}/32"), "dev", "vclient"])?;
    ip(&["-n", h, "route", "add", &format!("{VIP}/32"), "dev", "vx0"])?;
    ip(&[
        "-n",
        h,
        "neigh",
        "replace",
        &VIP.to_string(),
        "lladdr",
        &topo::mac_str(&REMOTE_HOLDER_MAC),
        "dev",
        "vx0",
        "nud",
        "permanent",
    ])?;
    Ok(Net { client, hold, ul, guest, ul_ns, hv })
}

/// The havip plane: VIP held on the peer host, VIP_LOCAL by vhold.
fn plane(pins: &Pins, net: &Net) -> Result<Plane> {
    let mut plane = fill::open(pins, "encap")?;
    let desired = MapTarget {
        ports: [net.client.host_ifindex, net.hold.host_ifindex].into_iter().collect(),
        vips: [(VipKey::from(VIP), members_of(net)), (VipKey::from(VIP_LOCAL), members_of(net))]
            .into_iter()
            .collect(),
        underlay: Some(UnderlayTarget {
            ifindex: net.ul.host_ifindex,
            mac: net.ul.host_mac,
            mtu: UNDERLAY_MTU,
            addr: OUR_VTEP,
            vni: VNI,
            vxlan_port: VXLAN_PORT,
            probe_port: 4790,
            gateway_vtep: None,
        }),
        vteps: [(PEER_VTEP, net.ul.guest_mac)].into_iter().collect(),
        ..Default::default()
    };
    reconcile(&mut plane.maps, &desired).context("reconciling the encap plane")?;
    let s = plane.state(VIP)?;
    // As the agent writes it: the next hop kept with the holder.
    let remote = HolderTarget::Remote { vtep: PEER_VTEP, mac: REMOTE_HOLDER_MAC, next_hop: net.ul.guest_mac };
    anyhow::ensure!(plane.maps.write_holder(s.slot, s.epoch, remote)?, "pointing {VIP} at the peer host");
    plane.claim(VIP_LOCAL, net.hold.host_ifindex, net.hold.guest_mac)?;
    anyhow::ensure!(
        plane.state(VIP_LOCAL)?.holder_ifindex == net.hold.host_ifindex,
        "the claim from vhold did not take {VIP_LOCAL}"
    );
    Ok(plane)
}

/// VIP and VIP_LOCAL have one member here, vhold (VIP's holder is elsewhere).
fn members_of(net: &Net) -> std::collections::BTreeMap<u32, [u8; 6]> {
    [(net.hold.host_ifindex, net.hold.guest_mac)].into_iter().collect()
}

/// The outer headers havip writes for a frame of `frames::LEN` bytes to
/// the peer (its UDP source port aside, a hash there).
fn outer_template(net: &Net) -> [u8; 50] {
    let v = lab::vxlan(
        net.ul.host_mac,
        net.ul.guest_mac,
        OUR_VTEP.octets(),
        PEER_VTEP.octets(),
        49152,
        VNI,
        &[0; frames::LEN],
    );
    let mut o = [0; 50];
    o.copy_from_slice(&v[..50]);
    o
}

/// Measures both directions; the calling thread ends up in `back_to` (its
/// namespace before), pinned to `setup.cpu`.
pub fn run(setup: &Setup, back_to: Option<&str>) -> Result<Encap> {
    let result = (|| {
        let net = build()?;
        havip_lab::netns::enter(net.ul_ns.name())?;
        let ul_sink = Sink::attach("ulpeer")?;
        havip_lab::netns::enter(net.guest.name())?;
        let hold_sink = Sink::attach("ethh")?;
        havip_lab::netns::enter(net.hv.name())?;
        cpu::pin_to(setup.cpu)?;
        measure(setup, &net, &ul_sink, &hold_sink)
    })();
    if let Some(ns) = back_to {
        havip_lab::netns::enter(ns)?;
    }
    result
}

fn measure(setup: &Setup, net: &Net, ul_sink: &Sink, hold_sink: &Sink) -> Result<Encap> {
    let mut plane = plane(setup.pins, net)?;
    let vip_slot = plane.state(VIP)?.slot;
    let local = plane.state(VIP_LOCAL)?;
    let c = &net.client;
    let to_vmac = frames::udp(havip_common::vmac(vip_slot), c.guest_mac, CLIENT_IP, VIP);
    let to_host = frames::udp(c.host_mac, c.guest_mac, CLIENT_IP, VIP);
    let enc_cfg =
        LimitCfg { dst: REMOTE_HOLDER_MAC, src: havip_common::vmac(vip_slot), ifindex: net.ul.host_ifindex };
    let enc = limit_obj("xdp_encap_limit", enc_cfg, Some(outer_template(net)), Some(&to_host))?;
    let dec_cfg = LimitCfg { dst: net.hold.guest_mac, src: local.vmac, ifindex: net.hold.host_ifindex };
    let dec = limit_obj("xdp_decap_limit", dec_cfg, None, None)?;

    let limit = Spray::load(progs::xdp(&enc, "xdp_encap_limit")?.fd()?, VIP, vip_slot, 1)?;
    let havip = Spray::load(plane.dp.program()?.fd()?, VIP, vip_slot, 1)?;
    let path = |name: &str, prog, frame: Vec<u8>, ingress, packets, sink| Path {
        name: name.to_owned(),
        prog,
        frame,
        ingress,
        packets,
        sink,
    };
    let encap_paths = [
        path("encap limit", limit.prog()?, to_vmac.to_vec(), c.host_ifindex, setup.packets, ul_sink),
        path("havip encap", havip.prog()?, to_vmac.to_vec(), c.host_ifindex, setup.packets, ul_sink),
        path(
            "kernel vxlan device",
            progs::xdp(&enc, progs::Lab::KERNEL)?,
            to_host.to_vec(),
            c.host_ifindex,
            setup.kernel_packets,
            ul_sink,
        ),
    ];
    let e = livefire::rounds(&encap_paths, setup.rounds).context("encapsulation")?;

    // VXLAN from the peer to VIP_LOCAL, as a client on the peer host sends it.
    let inner = frames::udp(local.vmac, REMOTE_HOLDER_MAC, CLIENT_IP, VIP_LOCAL);
    let vx = lab::vxlan(
        net.ul.guest_mac,
        net.ul.host_mac,
        PEER_VTEP.octets(),
        OUR_VTEP.octets(),
        50000,
        VNI,
        &inner,
    );
    let underlay = plane.dp.underlay_program()?;
    let decap_paths = [
        path(
            "decap limit",
            progs::xdp(&dec, "xdp_decap_limit")?,
            vx.clone(),
            net.ul.host_ifindex,
            setup.packets,
            hold_sink,
        ),
        path("havip decap", underlay, vx, net.ul.host_ifindex, setup.packets, hold_sink),
    ];
    let d = livefire::rounds(&decap_paths, setup.rounds).context("decapsulation")?;
    let named = |paths: &[Path], r: &[Vec<f64>]| -> Vec<Named> {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| Named { name: p.name.clone(), value: crate::mpps(r, i) })
            .collect()
    };
    Ok(Encap {
        encap_mpps: named(&encap_paths, &e),
        encap_ratios: vec![
            Named { name: "havip encap / encap limit".into(), value: crate::ratio(&e, 1, 0) },
            Named { name: "havip encap / kernel vxlan".into(), value: crate::ratio(&e, 1, 2) },
        ],
        decap_mpps: named(&decap_paths, &d),
        decap_ratios: vec![Named { name: "havip decap / decap limit".into(), value: crate::ratio(&d, 1, 0) }],
        frame_bytes: frames::LEN,
    })
}
