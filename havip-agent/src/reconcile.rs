//! One idempotent step from desired state to the maps: computes what differs
//! and applies only that. Safe at start, after a crash, on every change. It
//! never resets a holder the kernel learned, unless that holder is no longer
//! a member.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuValues},
    Pod,
};
use havip_common::{
    vmac, EipBinding as EipValue, EipKey, MemberInfo, MemberKey, UplinkPort, VipCounters, VipKey, VipNat,
    VipRef, VipState,
};

use crate::dataplane::Maps;

const BPF_NOEXIST: u64 = 1;
const BPF_F_LOCK: u64 = 4;

/// The desired contents of the maps, by ifindex.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every attached vNIC: a possible redirect target.
    pub ports: BTreeSet<u32>,
    /// VIP -> member ifindex -> member guest MAC.
    pub vips: BTreeMap<VipKey, BTreeMap<u32, [u8; 6]>>,
    /// VIP -> its bound EIP (1:1 NAT on the uplink).
    pub eips: BTreeMap<VipKey, EipBinding>,
    /// The host's uplink, once attached and its next hop resolved.
    pub uplink: Option<Uplink>,
}

/// An EIP bound to a HAVIP, and the VPC subnet traffic must leave to be NATed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EipBinding {
    pub eip: std::net::Ipv4Addr,
    pub subnet: crate::config::Subnet,
}

/// The uplink NIC: where traffic to EIPs arrives and from EIPs leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    pub ifindex: u32,
    /// The uplink's own MAC (source of frames we send out).
    pub mac: [u8; 6],
    /// The next hop's MAC (destination of frames we send out).
    pub next_hop_mac: [u8; 6],
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub ports_added: usize,
    pub ports_removed: usize,
    pub vips_added: usize,
    pub vips_removed: usize,
    pub members_set: usize,
    pub members_removed: usize,
    pub holders_cleared: usize,
    pub eips_set: usize,
    pub eips_removed: usize,
    pub uplink_set: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Applies `desired` to the maps. Additions go first and removals last, so
/// traffic to a VIP that stays never sees a half-applied state.
pub fn reconcile(maps: &mut Maps, desired: &Desired) -> Result<Changes> {
    let mut ch = Changes::default();

    let mut want_ports = desired.ports.clone();
    want_ports.extend(desired.uplink.map(|u| u.ifindex));
    let ports: BTreeSet<u32> = maps.tx_ports.keys().collect::<Result<_, _>>().context("listing tx_ports")?;
    for &p in want_ports.difference(&ports) {
        maps.tx_ports.insert(p, p, None, 0).with_context(|| format!("adding ifindex {p} to tx_ports"))?;
        ch.ports_added += 1;
    }

    let current: BTreeMap<VipKey, VipRef> =
        maps.vips.iter().collect::<Result<_, _>>().context("listing vips")?;
    // A VIP removed below keeps its slot until the next reconcile, so no
    // slot ever holds two VIPs at once. Free slots in increasing order, one
    // pass for all new VIPs (not a search from 0 for each, which made
    // 10,000 new VIPs take seconds).
    let used_slots: BTreeSet<u32> = current.values().map(|r| r.slot).collect();
    let mut free_slots = (0..).filter(|s| !used_slots.contains(s));
    // Every desired VIP's slot, old or new.
    let mut slots: BTreeMap<VipKey, u32> = current.iter().map(|(k, r)| (*k, r.slot)).collect();
    for key in desired.vips.keys().filter(|k| !current.contains_key(k)) {
        let slot = free_slots.next().expect("u32 slots outnumber max_vips");
        slots.insert(*key, slot);
        zero_stats(maps, slot)?;
        // The state first: the kernel must never find the VIP half-made.
        let state = VipState { vmac: vmac(slot), slot, vip: key.addr, ..Default::default() };
        maps.vip_state.set(slot, state, 0).with_context(|| {
            format!("writing slot {slot} for VIP {} (is dataplane.max_vips large enough?)", key.ip())
        })?;
        maps.vips
            .insert(key, VipRef { slot }, BPF_NOEXIST)
            .with_context(|| format!("adding VIP {} (is dataplane.max_vips large enough?)", key.ip()))?;
        ch.vips_added += 1;
    }

    let want_members: BTreeMap<MemberKey, MemberInfo> = desired
        .vips
        .iter()
        .flat_map(|(vip, ms)| {
            ms.iter().map(|(&ifindex, &mac)| {
                (MemberKey { vip: vip.addr, ifindex }, MemberInfo { mac, _pad: [0; 2] })
            })
        })
        .collect();
    let (want_eips, want_nat) = nat_entries(desired);
    ch.members_set = upsert(&mut maps.members, &want_members, "members")?;
    ch.eips_set = upsert(&mut maps.vip_nat, &want_nat, "vip_nat")?;
    upsert(&mut maps.eips, &want_eips, "eips")?;
    ch.uplink_set = set_uplink(maps, desired.uplink.as_ref())?;

    for (key, ms) in &desired.vips {
        ch.holders_cleared += clear_holder_unless_member(maps, key, slots[key], ms)? as usize;
    }

    ch.members_removed = prune(&mut maps.members, &want_members, "members")?;
    ch.eips_removed = prune(&mut maps.eips, &want_eips, "eips")?;
    prune(&mut maps.vip_nat, &want_nat, "vip_nat")?;
    for (key, r) in current.iter().filter(|(k, _)| !desired.vips.contains_key(k)) {
        // Unreachable by address first, then the slot is freed.
        maps.vips.remove(key).with_context(|| format!("removing VIP {}", key.ip()))?;
        maps.vip_state
            .set(r.slot, VipState::default(), 0)
            .with_context(|| format!("freeing slot {} of VIP {}", r.slot, key.ip()))?;
        // The VRRP record may never have existed.
        let _ = maps.vrrp.remove(key);
        ch.vips_removed += 1;
    }
    for &p in ports.difference(&want_ports) {
        maps.tx_ports.remove(p).with_context(|| format!("removing ifindex {p} from tx_ports"))?;
        ch.ports_removed += 1;
    }
    Ok(ch)
}

/// The `eips` (EIP -> VIP) and `vip_nat` (VIP -> EIP, subnet) entries for
/// every binding whose VIP is desired.
fn nat_entries(desired: &Desired) -> (BTreeMap<EipKey, EipValue>, BTreeMap<VipKey, VipNat>) {
    let bound = desired.eips.iter().filter(|(vip, _)| desired.vips.contains_key(vip));
    let eips =
        bound.clone().map(|(vip, b)| (EipKey { addr: b.eip.octets() }, EipValue { vip: vip.addr })).collect();
    let nat = bound
        .map(|(vip, b)| {
            let nat = VipNat {
                eip: b.eip.octets(),
                subnet: b.subnet.network.octets(),
                mask: b.subnet.mask().to_be_bytes(),
            };
            (*vip, nat)
        })
        .collect();
    (eips, nat)
}

fn set_uplink(maps: &mut Maps, uplink: Option<&Uplink>) -> Result<bool> {
    let want = uplink.map_or_else(UplinkPort::default, |u| UplinkPort {
        ifindex: u.ifindex,
        mac: u.mac,
        next_hop_mac: u.next_hop_mac,
    });
    if maps.uplink.get(&0, 0).context("reading uplink")? == want {
        return Ok(false);
    }
    maps.uplink.set(0, want, 0).context("setting uplink")?;
    Ok(true)
}

/// Writes every entry of `want` that the map lacks or holds differently.
fn upsert<K: Pod + Ord + std::fmt::Debug, V: Pod + PartialEq>(
    map: &mut BpfHashMap<MapData, K, V>,
    want: &BTreeMap<K, V>,
    what: &str,
) -> Result<usize> {
    let mut n = 0;
    for (k, v) in want {
        if map.get(k, 0).ok().as_ref() != Some(v) {
            map.insert(k, v, 0).with_context(|| format!("setting {what} entry {k:?}"))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Removes every entry the map holds that `want` does not.
fn prune<K: Pod + Ord + std::fmt::Debug, V: Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    want: &BTreeMap<K, V>,
    what: &str,
) -> Result<usize> {
    let extra: Vec<K> = map
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("listing {what}"))?
        .into_iter()
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in &extra {
        map.remove(k).with_context(|| format!("removing {what} entry {k:?}"))?;
    }
    Ok(extra.len())
}

/// A holder that is no longer a member must not keep receiving the VIP's
/// traffic: clear it (a holder change, so the epoch grows). Written under
/// the value's spin lock so a concurrent claim is not torn.
fn clear_holder_unless_member(
    maps: &mut Maps,
    key: &VipKey,
    slot: u32,
    members: &BTreeMap<u32, [u8; 6]>,
) -> Result<bool> {
    let mut state = maps
        .vip_state
        .get(&slot, BPF_F_LOCK)
        .with_context(|| format!("reading the state of {}", key.ip()))?;
    if state.holder_ifindex == 0 || members.get(&state.holder_ifindex) == Some(&state.holder_mac) {
        return Ok(false);
    }
    state.holder_ifindex = 0;
    state.holder_mac = [0; 6];
    state.epoch += 1;
    maps.vip_state
        .set(slot, state, BPF_F_LOCK)
        .with_context(|| format!("clearing holder of {}", key.ip()))?;
    tracing::info!(vip = %key.ip(), epoch = state.epoch, "holder cleared: no longer a member");
    Ok(true)
}

fn zero_stats(maps: &mut Maps, slot: u32) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let zeros = PerCpuValues::try_from(vec![VipCounters::default(); cpus]).context("per-CPU values")?;
    maps.vip_stats.set(slot, zeros, 0).with_context(|| format!("zeroing counters slot {slot}"))
}
