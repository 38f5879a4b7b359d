//! havip data planes for the bench, loaded with the agent's own loader under
//! this run's pin directory, with maps as full as production's.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{MapData, RingBuf};
use havip_agent::datapath::{
    loader::{self, Dataplane},
    maps::{KernelMaps, Maps},
    plan::{reconcile, MapTarget},
};
use havip_common::{vmac, MemberInfo, MemberKey, VipKey, VipRef, VipState};

use crate::{
    frames, progs,
    topo::{self, Topology, VIP, VIP_NO_HOLDER},
};

const BPF_F_LOCK: u64 = 4;

/// `/sys/fs/bpf/havip-bench-<run id>/`: one pin root per data plane below it,
/// all torn down on drop.
pub struct Pins {
    top: PathBuf,
}

impl Pins {
    pub fn new() -> Self {
        Self { top: crate::topo::run_id().pin_dir() }
    }

    pub fn root(&self, name: &str) -> PathBuf {
        self.top.join(name)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(&self.top) else { return };
        for e in entries.flatten() {
            if let Err(e) = loader::teardown(&e.path()) {
                eprintln!("havip-bench: cleanup: {e:#}");
            }
        }
        if let Err(e) = fs::remove_dir(&self.top) {
            eprintln!("havip-bench: cleanup: removing {}: {e}", self.top.display());
        }
    }
}

/// HAVIP number `i`: 0 is the measured VIP, 1 the one never claimed, the
/// rest count up from 198.18.2.0 (at most 198.19.136.x for 100,000).
pub fn vip_addr(i: u32) -> Ipv4Addr {
    match i {
        0 => VIP,
        1 => VIP_NO_HOLDER,
        _ => Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 2, 0)) + i - 2),
    }
}

/// A stand-in for a member vNIC on another port of the host: only the
/// members map ever sees it.
fn fake_member(vip: u32, k: u32) -> (u32, [u8; 6]) {
    let x = vip.wrapping_mul(16).wrapping_add(k).to_be_bytes();
    (100_000 + k, [0x02, 0x4d, x[0], x[1], x[2], x[3]])
}

pub struct Plane {
    pub dp: Dataplane,
    pub maps: KernelMaps,
    pub events: RingBuf<MapData>,
}

impl Plane {
    /// Makes `port` the holder of `vip` the way the agent would see it
    /// after a claim, without sending one (bulk set-up only).
    fn set_holder(&mut self, vip: VipKey, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let mut s = self.maps.vip(&vip).with_context(|| format!("{} is not in the maps", vip.ip()))?;
        s.holder_ifindex = ifindex;
        s.holder_mac = mac;
        s.epoch += 1;
        self.maps
            .vip_state
            .set(s.slot, s, BPF_F_LOCK)
            .with_context(|| format!("setting holder of {}", vip.ip()))
    }

    /// Sends a real claim (gratuitous ARP) for `vip` from member `port`.
    pub fn claim(&mut self, vip: Ipv4Addr, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let (act, _) = progs::plain(self.dp.program()?, &frames::garp(mac, vip), ifindex, 1)?;
        ensure!(act == progs::XDP_DROP, "claim for {vip} returned {act}, not XDP_DROP");
        Ok(())
    }

    pub fn state(&self, vip: Ipv4Addr) -> Result<VipState> {
        self.maps.vip(&VipKey::from(vip)).with_context(|| format!("{vip} is not in the maps"))
    }
}

pub fn open(pins: &Pins, name: &str) -> Result<Plane> {
    let mut dp =
        Dataplane::open(&pins.root(name), topo::CAPACITY).with_context(|| format!("data plane {name}"))?;
    let maps = dp.take_maps()?;
    let events = dp.take_events()?;
    Ok(Plane { dp, maps, events })
}

/// The production-like plane: `n` HAVIPs × 10 members written by the
/// agent's own reconciler; VIP 0 claimed by member a with a real GARP,
/// VIP 1 left without holder, all others held by a. Also returns how long
/// the reconcile took (a control-plane figure).
pub fn production(pins: &Pins, topo: &Topology, n: u32) -> Result<(Plane, Duration)> {
    let mut plane = open(pins, "prod")?;
    let ports = [&topo.client, &topo.a, &topo.b].map(|p| p.host_ifindex);
    let vips = (0..n)
        .map(|i| {
            let mut members: BTreeMap<u32, [u8; 6]> = (0..8).map(|k| fake_member(i, k)).collect();
            members.insert(topo.a.host_ifindex, topo.a.guest_mac);
            members.insert(topo.b.host_ifindex, topo.b.guest_mac);
            (VipKey::from(vip_addr(i)), members)
        })
        .collect();
    let desired = MapTarget { ports: BTreeSet::from(ports), vips, ..Default::default() };
    let start = Instant::now();
    reconcile(&mut plane.maps, &desired).context("reconciling the production-like set")?;
    let took = start.elapsed();

    plane.claim(VIP, topo.a.host_ifindex, topo.a.guest_mac)?;
    if plane.state(VIP)?.holder_ifindex != topo.a.host_ifindex {
        bail!("the claim from member a did not make it the holder of {VIP}");
    }
    for i in 2..n {
        plane.set_holder(VipKey::from(vip_addr(i)), topo.a.host_ifindex, topo.a.guest_mac)?;
    }
    Ok((plane, took))
}

/// A plane with `n` HAVIPs, all held by member a, members a and b each.
/// Written directly: reconcile's slot search is quadratic (see the report),
/// which at 100,000 HAVIPs would take minutes.
pub fn scaled(pins: &Pins, topo: &Topology, n: u32) -> Result<Plane> {
    let mut plane = open(pins, &format!("scale-{n}"))?;
    for p in [&topo.a, &topo.b] {
        plane.maps.tx_ports.insert(p.host_ifindex, p.host_ifindex, None, 0).context("tx_ports")?;
    }
    for i in 0..n {
        let key = VipKey::from(vip_addr(i));
        let state = VipState {
            holder_ifindex: topo.a.host_ifindex,
            holder_mac: topo.a.guest_mac,
            vmac: vmac(i),
            slot: i,
            epoch: 1,
            vip: key.addr,
            ..Default::default()
        };
        // As the agent does: the state first, then the address that finds it.
        plane.maps.vip_state.set(i, state, 0).with_context(|| format!("adding {}", key.ip()))?;
        plane.maps.vips.insert(key, VipRef { slot: i }, 0).with_context(|| format!("adding {}", key.ip()))?;
        for p in [&topo.a, &topo.b] {
            let mk = MemberKey { vip: key.addr, ifindex: p.host_ifindex };
            plane.maps.members.insert(mk, MemberInfo { mac: p.guest_mac, _pad: [0; 2] }, 0)?;
        }
    }
    Ok(plane)
}
