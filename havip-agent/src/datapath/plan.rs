//! From what the maps should hold to what they hold, in three steps:
//! [`Current::read`] takes the maps' contents, [`plan`] (pure) compares them
//! with a [`MapTarget`] and lists the [`Op`]s that close the gap, [`apply`]
//! carries them out. [`reconcile`] is the three in a row: idempotent, safe at
//! start, after a crash and on every change. It never resets a holder the
//! kernel learned, unless that holder is no longer a member.
//!
//! Order matters for traffic that stays: additions go first and removals
//! last, a new VIP's state before its address, so the kernel never finds a
//! VIP half-made; a removed VIP is unreachable by address before its slot
//! is freed.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Context, Result};
use havip_common::{
    vmac, EipBinding as EipEntry, EipKey, MemberInfo, MemberKey, UplinkPort, VipKey, VipNat, VipRef, VipState,
};
use havip_model::Subnet;
use tracing::info;

use super::maps::Maps;

/// What the maps should hold, in this host's terms (ifindexes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapTarget {
    /// Every attached vNIC: a possible redirect target.
    pub ports: BTreeSet<u32>,
    /// VIP -> member ifindex -> member guest MAC.
    pub vips: BTreeMap<VipKey, BTreeMap<u32, [u8; 6]>>,
    /// VIP -> its EIP (1:1 NAT on the uplink).
    pub eips: BTreeMap<VipKey, EipNat>,
    /// The host's uplink, once attached and its next hop resolved.
    pub uplink: Option<Uplink>,
}

/// An EIP bound to a HAVIP, and the VPC subnet traffic must leave to be NATed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EipNat {
    pub eip: Ipv4Addr,
    pub subnet: Subnet,
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

/// What the maps hold now: the part the plan compares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Current {
    pub ports: BTreeSet<u32>,
    pub vips: BTreeMap<VipKey, VipRef>,
    /// Slot -> its holder (ifindex, MAC), for slots that have one.
    pub holders: BTreeMap<u32, (u32, [u8; 6])>,
    pub members: BTreeMap<MemberKey, MemberInfo>,
    pub eips: BTreeMap<EipKey, EipEntry>,
    pub vip_nat: BTreeMap<VipKey, VipNat>,
    pub uplink: UplinkPort,
}

impl Current {
    /// Reads every map the plan compares.
    pub fn read(maps: &mut dyn Maps) -> Result<Self> {
        let vips = maps.vips().entries().context("listing vips")?;
        let mut holders = BTreeMap::new();
        for (key, r) in &vips {
            let st = maps.vip_state(r.slot).with_context(|| format!("reading the state of {}", key.ip()))?;
            if st.holder_ifindex != 0 {
                holders.insert(r.slot, (st.holder_ifindex, st.holder_mac));
            }
        }
        Ok(Self {
            ports: maps.tx_ports()?,
            vips,
            holders,
            members: maps.members().entries().context("listing members")?,
            eips: maps.eips().entries().context("listing eips")?,
            vip_nat: maps.vip_nat().entries().context("listing vip_nat")?,
            uplink: maps.uplink()?,
        })
    }
}

/// One change to the maps, in the order [`plan`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    AddPort(u32),
    /// A new VIP at a free slot: counters zeroed, state written (virtual MAC
    /// of the slot, no holder), then the address added.
    AddVip {
        vip: VipKey,
        slot: u32,
    },
    SetMember(MemberKey, MemberInfo),
    SetVipNat(VipKey, VipNat),
    SetEip(EipKey, EipEntry),
    SetUplink(UplinkPort),
    /// The slot's holder is no longer a member: cleared (the epoch grows), if
    /// it is still this holder when applied.
    ClearHolder {
        vip: VipKey,
        slot: u32,
        ifindex: u32,
        mac: [u8; 6],
    },
    RemoveMember(MemberKey),
    RemoveEip(EipKey),
    RemoveVipNat(VipKey),
    /// Unreachable by address first, then the slot freed and the VRRP record dropped.
    RemoveVip {
        vip: VipKey,
        slot: u32,
    },
    RemovePort(u32),
}

/// The operations that bring `current` to `target`; none when they agree.
///
/// Slots: a VIP keeps its slot for as long as it exists; a new VIP takes the
/// lowest slot no VIP in `current` holds — including VIPs this same plan
/// removes, whose slots are freed only once this plan is applied, so no slot
/// ever holds two VIPs at once.
pub fn plan(target: &MapTarget, current: &Current) -> Vec<Op> {
    let mut ops = Vec::new();

    let mut want_ports = target.ports.clone();
    want_ports.extend(target.uplink.map(|u| u.ifindex));
    ops.extend(want_ports.difference(&current.ports).map(|&p| Op::AddPort(p)));

    let used_slots: BTreeSet<u32> = current.vips.values().map(|r| r.slot).collect();
    // One increasing pass for all new VIPs (a search from 0 for each made
    // 10,000 new VIPs take seconds).
    let mut free_slots = (0..).filter(|s| !used_slots.contains(s));
    let mut slots: BTreeMap<VipKey, u32> = current.vips.iter().map(|(k, r)| (*k, r.slot)).collect();
    for key in target.vips.keys().filter(|k| !current.vips.contains_key(k)) {
        let slot = free_slots.next().expect("u32 slots outnumber max_vips");
        slots.insert(*key, slot);
        ops.push(Op::AddVip { vip: *key, slot });
    }

    let want_members: BTreeMap<MemberKey, MemberInfo> = target
        .vips
        .iter()
        .flat_map(|(vip, ms)| {
            ms.iter().map(|(&ifindex, &mac)| {
                (MemberKey { vip: vip.addr, ifindex }, MemberInfo { mac, _pad: [0; 2] })
            })
        })
        .collect();
    let (want_eips, want_nat) = nat_entries(target);
    ops.extend(changed(&want_members, &current.members).map(|(k, v)| Op::SetMember(k, v)));
    ops.extend(changed(&want_nat, &current.vip_nat).map(|(k, v)| Op::SetVipNat(k, v)));
    ops.extend(changed(&want_eips, &current.eips).map(|(k, v)| Op::SetEip(k, v)));
    let want_uplink = target.uplink.map_or_else(UplinkPort::default, |u| UplinkPort {
        ifindex: u.ifindex,
        mac: u.mac,
        next_hop_mac: u.next_hop_mac,
    });
    if want_uplink != current.uplink {
        ops.push(Op::SetUplink(want_uplink));
    }

    for (key, members) in &target.vips {
        let slot = slots[key];
        if let Some(&(ifindex, mac)) = current.holders.get(&slot) {
            if members.get(&ifindex) != Some(&mac) {
                ops.push(Op::ClearHolder { vip: *key, slot, ifindex, mac });
            }
        }
    }

    ops.extend(extra(&current.members, &want_members).map(Op::RemoveMember));
    ops.extend(extra(&current.eips, &want_eips).map(Op::RemoveEip));
    ops.extend(extra(&current.vip_nat, &want_nat).map(Op::RemoveVipNat));
    ops.extend(
        current
            .vips
            .iter()
            .filter(|(k, _)| !target.vips.contains_key(k))
            .map(|(k, r)| Op::RemoveVip { vip: *k, slot: r.slot }),
    );
    ops.extend(current.ports.difference(&want_ports).map(|&p| Op::RemovePort(p)));
    ops
}

/// Entries of `want` that `have` lacks or holds differently.
fn changed<'a, K: Ord + Copy, V: PartialEq + Copy>(
    want: &'a BTreeMap<K, V>,
    have: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = (K, V)> + 'a {
    want.iter().filter(|(k, v)| have.get(k) != Some(v)).map(|(k, v)| (*k, *v))
}

/// Keys of `have` that `want` lacks.
fn extra<'a, K: Ord + Copy, V, W>(
    have: &'a BTreeMap<K, V>,
    want: &'a BTreeMap<K, W>,
) -> impl Iterator<Item = K> + 'a {
    have.keys().filter(|k| !want.contains_key(k)).copied()
}

/// The `eips` (EIP -> VIP) and `vip_nat` (VIP -> EIP, subnet) entries for
/// every binding whose VIP is in the target.
fn nat_entries(target: &MapTarget) -> (BTreeMap<EipKey, EipEntry>, BTreeMap<VipKey, VipNat>) {
    let bound = target.eips.iter().filter(|(vip, _)| target.vips.contains_key(vip));
    let eips =
        bound.clone().map(|(vip, b)| (EipKey { addr: b.eip.octets() }, EipEntry { vip: vip.addr })).collect();
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

/// What [`apply`] did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Operations carried out.
    pub ops: usize,
    /// Holders cleared because they were no longer members.
    pub holders_cleared: usize,
}

/// Carries out `ops` in order; stops at the first that fails (the next
/// reconcile plans again from what the maps then hold).
pub fn apply(maps: &mut dyn Maps, ops: &[Op]) -> Result<Applied> {
    let mut done = Applied::default();
    for op in ops {
        match *op {
            Op::AddPort(p) => maps.add_tx_port(p)?,
            Op::AddVip { vip, slot } => {
                maps.reset_vip_counters(slot)?;
                let state = VipState { vmac: vmac(slot), slot, vip: vip.addr, ..Default::default() };
                maps.set_vip_state(slot, state).with_context(|| format!("adding VIP {}", vip.ip()))?;
                maps.vips().insert_new(vip, VipRef { slot }).with_context(|| {
                    format!("adding VIP {} (is dataplane.max_vips large enough?)", vip.ip())
                })?;
            }
            Op::SetMember(k, v) => maps.members().set(k, v).context("members")?,
            Op::SetVipNat(k, v) => maps.vip_nat().set(k, v).context("vip_nat")?,
            Op::SetEip(k, v) => maps.eips().set(k, v).context("eips")?,
            Op::SetUplink(port) => maps.set_uplink(port)?,
            Op::ClearHolder { vip, slot, ifindex, mac } => {
                done.holders_cleared += clear_holder(maps, vip, slot, ifindex, mac)? as usize;
            }
            Op::RemoveMember(k) => maps.members().remove(&k).context("members")?,
            Op::RemoveEip(k) => maps.eips().remove(&k).context("eips")?,
            Op::RemoveVipNat(k) => maps.vip_nat().remove(&k).context("vip_nat")?,
            Op::RemoveVip { vip, slot } => {
                maps.vips().remove(&vip).with_context(|| format!("removing VIP {}", vip.ip()))?;
                maps.set_vip_state(slot, VipState::default())
                    .with_context(|| format!("freeing slot {slot} of VIP {}", vip.ip()))?;
                // The VRRP record may never have existed.
                let _ = maps.vrrp().remove(&vip);
            }
            Op::RemovePort(p) => maps.remove_tx_port(p)?,
        }
        done.ops += 1;
    }
    Ok(done)
}

/// Clears the holder of `slot` if it is still (`ifindex`, `mac`): a member
/// that claimed in between keeps the VIP. A holder change, so the epoch grows.
fn clear_holder(maps: &mut dyn Maps, vip: VipKey, slot: u32, ifindex: u32, mac: [u8; 6]) -> Result<bool> {
    let mut state = maps.vip_state(slot)?;
    if (state.holder_ifindex, state.holder_mac) != (ifindex, mac) {
        return Ok(false);
    }
    state.holder_ifindex = 0;
    state.holder_mac = [0; 6];
    state.epoch += 1;
    maps.set_vip_state(slot, state).with_context(|| format!("clearing the holder of {}", vip.ip()))?;
    info!(vip = %vip.ip(), epoch = state.epoch, "holder cleared: no longer a member");
    Ok(true)
}

/// Reads the maps, plans, applies: brings the maps to `target`.
pub fn reconcile(maps: &mut dyn Maps, target: &MapTarget) -> Result<Applied> {
    let current = Current::read(maps)?;
    apply(maps, &plan(target, &current))
}
