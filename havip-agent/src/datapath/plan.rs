//! From what the maps should hold to what they hold, in three steps:
//! [`Current::read`] takes the maps' contents, [`plan`] (pure) compares them
//! with a [`MapTarget`] and lists the [`Op`]s that close the gap, [`apply`]
//! carries them out. [`reconcile`] is the three in a row: idempotent, safe at
//! start, after a crash and on every change. It never resets a holder the
//! kernel learned, unless that holder is no longer a member; a holder on
//! another host (written by the control plane, `holder_ifindex` 0) is never
//! touched here at all.
//!
//! Order matters for traffic that stays: additions go first and removals
//! last, a new VIP's state before its address, so the kernel never finds a
//! VIP half-made; a removed VIP is unreachable by address before its slot
//! is freed.
//!
//! Broadcast domains (the `bcast_*` maps) are planned apart from the VIPs
//! ([`MapTarget::bcast`]): they never add, change or remove an entry of
//! `vips`, `members`, `vip_state`, `vip_config` or `tx_ports`, so turning a
//! subnet's mode on or off never disturbs its unicast (VIP) traffic. A subnet
//! is made ready before a guest's frame can reach it (slot, devmaps and their
//! ports, then the prefix, then the vNICs' entries) and taken down the other
//! way round (the vNICs' entries first).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Context, Result};
use havip_common::{
    vmac, BcastPrefix, BcastRemotes, BcastSubnet, BcastVnic, EipBinding, EipKey, MemberInfo, MemberKey,
    UnderlayPort, UplinkPort, VipConfig, VipKey, VipNat, VipRef, VipState, VtepInfo, VtepKey,
    DEFAULT_MAX_SUBNETS, MAX_REMOTE_HOSTS, VIP_F_VRRP_VMAC,
};
use havip_model::Subnet;
use tracing::info;

use super::maps::{bcast_prefix, prefix_of, BcastDevmap, HolderTarget, Maps};

/// What the maps should hold, in this host's terms (ifindexes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapTarget {
    /// Every attached vNIC: a possible redirect target.
    pub ports: BTreeSet<u32>,
    /// VIP -> member ifindex -> member guest MAC.
    pub vips: BTreeMap<VipKey, BTreeMap<u32, [u8; 6]>>,
    /// VIP -> its settings the kernel applies; a VIP not here has none.
    pub configs: BTreeMap<VipKey, VipConfig>,
    /// VIP -> its EIP (1:1 NAT on the uplink).
    pub eips: BTreeMap<VipKey, EipNat>,
    /// The host's uplink, once attached and its next hop resolved.
    pub uplink: Option<Uplink>,
    /// The host's underlay NIC (VXLAN to other hosts), once known; `None`: one host.
    pub underlay: Option<UnderlayTarget>,
    /// Every other host's VTEP -> the MAC of the underlay next hop towards it (resolved).
    pub vteps: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// The underlay and the VTEPs are not known yet (an agent starting on
    /// many hosts): `underlay` and `vteps` are ignored and what the maps
    /// have stays, so traffic between hosts never stops for a restart. The
    /// same holds for the remote VTEPs of every broadcast-domain subnet that
    /// already has a slot ([`BcastTarget::remotes`] is then ignored for it).
    pub keep_underlay: bool,
    /// The broadcast-domain subnets this host serves (the subnet is in
    /// `broadcast-domain` mode and has vNICs registered on this host), by
    /// (network address, prefix length in bits). A subnet not here has no
    /// `bcast_*` entry: its vNICs' broadcast and multicast pass as today.
    /// At most [`DEFAULT_MAX_SUBNETS`] get a slot (the lowest keys first when
    /// new); the reconciler says when there are more.
    pub bcast: BTreeMap<(Ipv4Addr, u8), BcastTarget>,
    /// The replicator port's ifindex (`havip-rep0`: the veth whose peer runs
    /// `xdp_replicator` and `tc_replicate`), once it exists, is up and its
    /// peer is attached; `None` (one host, or not ready): nothing is
    /// replicated to other hosts (`remote_hosts` 0, the port in no devmap).
    pub replicator: Option<u32>,
}

/// A vNIC's storm control: how many broadcast and multicast frames it may
/// have replicated (GCRA in `bcast_vnics`, per vNIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storm {
    /// Frames per second (the subnet's `storm.pps`); 0 replicates nothing.
    pub rate_pps: u32,
    /// Frames it may send at once above the rate (the subnet's `storm.burst`).
    pub burst: u32,
}

/// One broadcast-domain subnet as this host serves it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BcastTarget {
    /// Its vNICs on this host that are attached and up: ifindex -> storm
    /// control. They are the subnet's `bcast_ports` devmap, its
    /// `bcast_flood` devmap (with the replicator port) and its
    /// `bcast_vnics` entries. Empty (every vNIC down): the subnet keeps its
    /// slot and counters.
    pub vnics: BTreeMap<u32, Storm>,
    /// The VTEPs of the other hosts that have vNICs in the subnet: one copy
    /// of each frame a guest here sends goes to each. The kernel takes at
    /// most [`MAX_REMOTE_HOSTS`]: more are **truncated, not refused** — the
    /// plan programs the first [`MAX_REMOTE_HOSTS`] by address (the set's
    /// order), so frames still reach those hosts rather than none; the
    /// reconciler logs a warning and reports it in `SyncHealth`.
    pub remotes: BTreeSet<Ipv4Addr>,
}

/// The underlay NIC and the VXLAN settings of the VPC, in host terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnderlayTarget {
    /// The underlay NIC's ifindex.
    pub ifindex: u32,
    /// The underlay NIC's own MAC (outer Ethernet source).
    pub mac: [u8; 6],
    /// The underlay NIC's MTU, bytes.
    pub mtu: u16,
    /// This host's VTEP: the underlay NIC's IPv4 address.
    pub addr: Ipv4Addr,
    /// The VPC's VNI (24 bits).
    pub vni: u32,
    /// UDP port of VXLAN (host order; 4789 by default).
    pub vxlan_port: u16,
    /// UDP port of underlay probes (host order; 4790 by default).
    pub probe_port: u16,
    /// The gateway host's VTEP when the uplink is on another host; `None` when it is here (or
    /// there is no EIP path).
    pub gateway_vtep: Option<Ipv4Addr>,
}

impl UnderlayTarget {
    /// The `underlay[0]` entry (ports in network order).
    pub fn port(&self) -> UnderlayPort {
        UnderlayPort {
            ifindex: self.ifindex,
            mac: self.mac,
            mtu: self.mtu,
            addr: self.addr.octets(),
            vni: self.vni & 0x00ff_ffff,
            vxlan_port: self.vxlan_port.to_be(),
            probe_port: self.probe_port.to_be(),
            gateway_vtep: self.gateway_vtep.map_or([0; 4], |g| g.octets()),
        }
    }
}

/// An EIP bound to a HAVIP, and the VPC subnet traffic must leave to be NATed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EipNat {
    /// The public address, DNATed to the VIP on the way in.
    pub eip: Ipv4Addr,
    /// The HAVIP's subnet: traffic from the VIP to outside it is SNATed to `eip`.
    pub subnet: Subnet,
}

/// The uplink NIC: where traffic to EIPs arrives and from EIPs leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// The uplink NIC's ifindex.
    pub ifindex: u32,
    /// The uplink's own MAC (source of frames we send out).
    pub mac: [u8; 6],
    /// The next hop's MAC (destination of frames we send out).
    pub next_hop_mac: [u8; 6],
}

/// What the maps hold now: the part the plan compares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Current {
    /// `tx_ports`: the ifindexes redirects may go to.
    pub ports: BTreeSet<u32>,
    /// `vips`: VIP -> its slot.
    pub vips: BTreeMap<VipKey, VipRef>,
    /// Slot -> its holder (ifindex, MAC), for slots whose holder is on this host.
    pub holders: BTreeMap<u32, (u32, [u8; 6])>,
    /// Slot -> its settings, for slots that have any.
    pub configs: BTreeMap<u32, VipConfig>,
    /// `members`: (VIP, ifindex) -> the member's guest MAC.
    pub members: BTreeMap<MemberKey, MemberInfo>,
    /// The memberships that have a VRRP record.
    pub vrrp: BTreeSet<MemberKey>,
    /// `eips`: EIP -> the VIP it is bound to.
    pub eips: BTreeMap<EipKey, EipBinding>,
    /// `vip_nat`: VIP -> its EIP and VPC subnet.
    pub vip_nat: BTreeMap<VipKey, VipNat>,
    /// `uplink[0]`: all zero when there is none.
    pub uplink: UplinkPort,
    /// `underlay[0]`: all zero when there is none.
    pub underlay: UnderlayPort,
    /// `vteps`: another host's VTEP -> the underlay next hop's MAC.
    pub vteps: BTreeMap<VtepKey, VtepInfo>,
    /// `bcast_prefixes`: a broadcast-domain subnet's prefix -> its slot.
    pub bcast_prefixes: BTreeMap<BcastPrefix, u32>,
    /// Every subnet slot something names (a prefix, a devmap, a vNIC's
    /// entry) -> what its maps hold. A slot not here is free.
    pub bcast_slots: BTreeMap<u32, BcastSlot>,
    /// `bcast_vnics`: a vNIC's ifindex -> its slot and storm settings.
    pub bcast_vnics: BTreeMap<u32, BcastVnic>,
}

/// What the maps hold for one subnet slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BcastSlot {
    /// `bcast_subnets[slot]` (all zero: freed, or never written).
    pub subnet: BcastSubnet,
    /// `bcast_remotes[slot]`.
    pub remotes: BcastRemotes,
    /// The ifindexes of `bcast_ports[slot]`; `None`: no devmap.
    pub ports: Option<BTreeSet<u32>>,
    /// The ifindexes of `bcast_flood[slot]`; `None`: no devmap.
    pub flood: Option<BTreeSet<u32>>,
}

impl BcastSlot {
    fn devmap(&self, kind: BcastDevmap) -> Option<&BTreeSet<u32>> {
        match kind {
            BcastDevmap::Ports => self.ports.as_ref(),
            BcastDevmap::Flood => self.flood.as_ref(),
        }
    }

    /// The VTEPs of `remotes`, in order.
    fn remote_vteps(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let count = (self.remotes.count as usize).min(MAX_REMOTE_HOSTS);
        self.remotes.vteps[..count].iter().map(|v| Ipv4Addr::from(*v))
    }
}

impl Current {
    /// Reads every map the plan compares.
    pub fn read(maps: &mut dyn Maps) -> Result<Self> {
        let vips = maps.vips().entries().context("listing vips")?;
        let (mut holders, mut configs) = (BTreeMap::new(), BTreeMap::new());
        for (key, r) in &vips {
            let st = maps.vip_state(r.slot).with_context(|| format!("reading the state of {}", key.ip()))?;
            if st.holder_ifindex != 0 {
                holders.insert(r.slot, (st.holder_ifindex, st.holder_mac));
            }
            let config = maps.vip_config(r.slot)?;
            if config != VipConfig::default() {
                configs.insert(r.slot, config);
            }
        }
        Ok(Self {
            ports: maps.tx_ports()?,
            vips,
            holders,
            configs,
            members: maps.members().entries().context("listing members")?,
            vrrp: maps.vrrp().entries().context("listing vrrp")?.into_keys().collect(),
            eips: maps.eips().entries().context("listing eips")?,
            vip_nat: maps.vip_nat().entries().context("listing vip_nat")?,
            uplink: maps.uplink()?,
            underlay: maps.underlay()?,
            vteps: maps.vteps().entries().context("listing vteps")?,
            ..Self::read_bcast(maps)?
        })
    }

    /// The broadcast-domain part: the slots are recovered from what names
    /// them, so a restarted agent keeps every subnet's slot.
    fn read_bcast(maps: &mut dyn Maps) -> Result<Self> {
        let bcast_prefixes = maps.bcast_prefixes()?;
        let bcast_vnics = maps.bcast_vnics().entries().context("listing bcast_vnics")?;
        let mut devmaps = BTreeMap::new();
        for kind in BcastDevmap::ALL {
            devmaps.insert(kind, maps.bcast_devmaps(kind)?);
        }
        let named: BTreeSet<u32> = bcast_prefixes
            .values()
            .copied()
            .chain(devmaps.values().flat_map(|d| d.keys().copied()))
            .chain(bcast_vnics.values().map(|v| v.subnet))
            .collect();
        let mut bcast_slots = BTreeMap::new();
        for slot in named {
            let mut s = BcastSlot {
                ports: devmaps[&BcastDevmap::Ports].get(&slot).cloned(),
                flood: devmaps[&BcastDevmap::Flood].get(&slot).cloned(),
                ..BcastSlot::default()
            };
            // Beyond the arrays (only a corrupt entry names one): nothing to read there.
            if slot < DEFAULT_MAX_SUBNETS {
                s.subnet = maps.bcast_subnet(slot)?;
                s.remotes = maps.bcast_remotes(slot)?;
            }
            bcast_slots.insert(slot, s);
        }
        Ok(Self { bcast_prefixes, bcast_slots, bcast_vnics, ..Self::default() })
    }
}

/// One change to the maps, in the order [`plan`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Adds an ifindex (a vNIC's, the uplink's or the underlay's) to `tx_ports`.
    AddPort(u32),
    /// A new VIP at a free slot: counters zeroed, state written (virtual MAC
    /// of the slot, no holder), then the address added.
    AddVip {
        /// The VIP.
        vip: VipKey,
        /// The free slot it takes.
        slot: u32,
    },
    /// The VIP's settings (a freed slot's are all zero).
    SetVipConfig {
        /// The VIP.
        vip: VipKey,
        /// Its slot.
        slot: u32,
        /// The `VIP_F_*` flags to write.
        config: VipConfig,
    },
    /// Adds or updates a membership: (VIP, ifindex) -> the guest MAC claims must carry.
    SetMember(MemberKey, MemberInfo),
    /// Adds or updates a VIP's EIP and VPC subnet (SNAT on the way out).
    SetVipNat(VipKey, VipNat),
    /// Adds or updates an EIP's binding to a VIP (DNAT on the way in).
    SetEip(EipKey, EipBinding),
    /// Adds or updates another host's VTEP and its next hop's MAC.
    SetVtep(VtepKey, VtepInfo),
    /// Writes `uplink[0]` (all zero: no uplink).
    SetUplink(UplinkPort),
    /// Writes `underlay[0]` (all zero: no underlay).
    SetUnderlay(UnderlayPort),
    /// Removes a membership: that vNIC may no longer claim the VIP.
    RemoveMember(MemberKey),
    /// Removes an EIP's binding (no more DNAT).
    RemoveEip(EipKey),
    /// Removes a VIP's EIP and subnet (no more SNAT).
    RemoveVipNat(VipKey),
    /// The VRRP record of a membership that is no more.
    RemoveVrrp(MemberKey),
    /// A host that is no more (or whose next hop is unknown): its VTEP goes.
    RemoveVtep(VtepKey),
    /// The slot's holder is no longer a member: cleared (the epoch grows), if
    /// it is still this holder when applied.
    ClearHolder {
        /// The VIP.
        vip: VipKey,
        /// Its slot.
        slot: u32,
        /// The holder's ifindex as read; the clear is skipped if it changed.
        ifindex: u32,
        /// The holder's MAC as read.
        mac: [u8; 6],
    },
    /// Unreachable by address first, then the slot freed (state and settings).
    RemoveVip {
        /// The VIP.
        vip: VipKey,
        /// The slot it frees.
        slot: u32,
    },
    /// Removes an ifindex (a vNIC's, the uplink's or the underlay's) from `tx_ports`.
    RemovePort(u32),

    /// A subnet slot given to a subnet (free until now): `subnet_stats[slot]` zeroed on every CPU.
    ResetSubnetCounters(u32),
    /// Writes `bcast_subnets[slot]` (network, mask, local ports, remote hosts).
    SetBcastSubnet(u32, BcastSubnet),
    /// Writes `bcast_remotes[slot]` (boxed: 260 bytes).
    SetBcastRemotes(u32, Box<BcastRemotes>),
    /// Creates the slot's empty devmap of a kind and puts it in the outer map.
    AddBcastDevmap(BcastDevmap, u32),
    /// Adds an ifindex (a vNIC, or the replicator port) to the slot's devmap of a kind.
    AddBcastPort(BcastDevmap, u32, u32),
    /// Points the subnet's prefix at its slot (frames from other hosts find it).
    SetBcastPrefix(BcastPrefix, u32),
    /// Writes a vNIC's `bcast_vnics` entry (its slot and storm control; the
    /// bucket restarts, so the vNIC may send a burst again at once).
    SetBcastVnic(u32, BcastVnic),
    /// Removes a vNIC's `bcast_vnics` entry: its broadcast passes as in a unicast subnet.
    RemoveBcastVnic(u32),
    /// Removes a subnet's prefix: frames from other hosts for it are dropped.
    RemoveBcastPrefix(BcastPrefix),
    /// Takes an ifindex out of the slot's devmap of a kind.
    RemoveBcastPort(BcastDevmap, u32, u32),
    /// Takes the slot's devmap of a kind out of the outer map.
    RemoveBcastDevmap(BcastDevmap, u32),
    /// The slot is freed: `bcast_subnets[slot]` and `bcast_remotes[slot]` zeroed.
    FreeBcastSlot(u32),
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
    let (want_underlay, want_vteps) = if target.keep_underlay {
        (current.underlay, current.vteps.clone())
    } else {
        let vteps = target
            .vteps
            .iter()
            .map(|(ip, mac)| (VtepKey::from(*ip), VtepInfo { next_hop_mac: *mac, _pad: [0; 2] }))
            .collect();
        (target.underlay.map_or_else(UnderlayPort::default, |u| u.port()), vteps)
    };
    want_ports.extend(Some(want_underlay.ifindex).filter(|i| *i != 0));
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
    for key in target.vips.keys() {
        let (slot, want) = (slots[key], target.configs.get(key).copied().unwrap_or_default());
        if current.configs.get(&slot).copied().unwrap_or_default() != want {
            ops.push(Op::SetVipConfig { vip: *key, slot, config: want });
        }
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
    ops.extend(changed(&want_vteps, &current.vteps).map(|(k, v)| Op::SetVtep(k, v)));
    if want_uplink != current.uplink {
        ops.push(Op::SetUplink(want_uplink));
    }
    if want_underlay != current.underlay {
        ops.push(Op::SetUnderlay(want_underlay));
    }

    ops.extend(extra(&current.members, &want_members).map(Op::RemoveMember));
    ops.extend(extra(&current.eips, &want_eips).map(Op::RemoveEip));
    ops.extend(extra(&current.vip_nat, &want_nat).map(Op::RemoveVipNat));
    ops.extend(current.vrrp.iter().filter(|k| !want_members.contains_key(k)).map(|&k| Op::RemoveVrrp(k)));
    ops.extend(extra(&current.vteps, &want_vteps).map(Op::RemoveVtep));
    // After the memberships went: a cleared holder cannot claim again.
    for (key, members) in &target.vips {
        let slot = slots[key];
        let config = target.configs.get(key).copied().unwrap_or_default();
        if let Some(&(ifindex, mac)) = current.holders.get(&slot) {
            if !may_hold(members, config, ifindex, mac) {
                ops.push(Op::ClearHolder { vip: *key, slot, ifindex, mac });
            }
        }
    }

    ops.extend(
        current
            .vips
            .iter()
            .filter(|(k, _)| !target.vips.contains_key(k))
            .map(|(k, r)| Op::RemoveVip { vip: *k, slot: r.slot }),
    );
    ops.extend(current.ports.difference(&want_ports).map(|&p| Op::RemovePort(p)));
    let (add, remove) = plan_bcast(target, current);
    // Independent of everything above: after the additions, the removals last.
    let at = ops.iter().position(is_removal).unwrap_or(ops.len());
    ops.splice(at..at, add);
    ops.extend(remove);
    ops
}

/// Whether `op` is one of [`plan`]'s removals (they come after every addition).
fn is_removal(op: &Op) -> bool {
    matches!(
        op,
        Op::RemoveMember(_)
            | Op::RemoveEip(_)
            | Op::RemoveVipNat(_)
            | Op::RemoveVrrp(_)
            | Op::RemoveVtep(_)
            | Op::ClearHolder { .. }
            | Op::RemoveVip { .. }
            | Op::RemovePort(_)
    )
}

/// The slot of every target subnet that gets one: the one its prefix
/// names; else (a pass that stopped half-way) a slot whose `bcast_subnets`
/// entry is that subnet and that no prefix names; else the lowest slot
/// nothing names — not even what this plan removes, so a freed slot is
/// reused only by a later pass, once its entries are gone. Subnets beyond
/// [`DEFAULT_MAX_SUBNETS`] get none. The bool says the slot is new.
fn bcast_slots(target: &MapTarget, current: &Current) -> BTreeMap<(Ipv4Addr, u8), (u32, bool)> {
    let mut slots = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for &(net, len) in target.bcast.keys() {
        if let Some(&slot) = current.bcast_prefixes.get(&bcast_prefix(net, len)) {
            if slot < DEFAULT_MAX_SUBNETS && taken.insert(slot) {
                slots.insert((net, len), (slot, false));
            }
        }
    }
    let named: BTreeSet<u32> = current.bcast_prefixes.values().copied().collect();
    let unplaced: Vec<_> = target.bcast.keys().filter(|k| !slots.contains_key(*k)).copied().collect();
    for (net, len) in unplaced {
        let want = Some(bcast_prefix(net, len));
        let found = current.bcast_slots.iter().find(|(slot, s)| {
            **slot < DEFAULT_MAX_SUBNETS
                && !named.contains(slot)
                && !taken.contains(*slot)
                && prefix_of(&s.subnet) == want
        });
        if let Some((&slot, _)) = found {
            taken.insert(slot);
            slots.insert((net, len), (slot, false));
        }
    }
    let mut free =
        (0..DEFAULT_MAX_SUBNETS).filter(|s| !current.bcast_slots.contains_key(s) && !taken.contains(s));
    let unplaced: Vec<_> = target.bcast.keys().filter(|k| !slots.contains_key(*k)).copied().collect();
    for key in unplaced {
        let Some(slot) = free.next() else { break };
        slots.insert(key, (slot, true));
    }
    slots
}

/// The broadcast-domain operations: (additions, removals).
fn plan_bcast(target: &MapTarget, current: &Current) -> (Vec<Op>, Vec<Op>) {
    let slots = bcast_slots(target, current);
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    let (mut ports_ops, mut prefix_ops) = (Vec::new(), Vec::new());
    let mut want_vnics = BTreeMap::new();
    let empty = BcastSlot::default();
    for (&(net, len), &(slot, new)) in &slots {
        let t = &target.bcast[&(net, len)];
        let have = if new { &empty } else { current.bcast_slots.get(&slot).unwrap_or(&empty) };
        let remotes: Vec<Ipv4Addr> = if target.keep_underlay && !new {
            have.remote_vteps().collect()
        } else {
            t.remotes.iter().copied().take(MAX_REMOTE_HOSTS).collect()
        };
        let remote_hosts = if target.replicator.is_some() { remotes.len() as u32 } else { 0 };
        let subnet = Subnet { network: net, prefix: len };
        let want_subnet = BcastSubnet {
            network: net.octets(),
            mask: subnet.mask().to_be_bytes(),
            local_ports: t.vnics.len() as u32,
            remote_hosts,
        };
        let mut want_remotes = BcastRemotes { count: remotes.len() as u32, ..BcastRemotes::default() };
        for (i, vtep) in remotes.iter().enumerate() {
            want_remotes.vteps[i] = vtep.octets();
        }
        if new {
            add.push(Op::ResetSubnetCounters(slot));
        }
        if have.subnet != want_subnet {
            add.push(Op::SetBcastSubnet(slot, want_subnet));
        }
        if have.remotes != want_remotes {
            add.push(Op::SetBcastRemotes(slot, Box::new(want_remotes)));
        }
        let local: BTreeSet<u32> = t.vnics.keys().copied().collect();
        let mut flood = local.clone();
        flood.extend(target.replicator.filter(|_| remote_hosts > 0));
        for (kind, want) in [(BcastDevmap::Ports, &local), (BcastDevmap::Flood, &flood)] {
            let have = have.devmap(kind);
            if have.is_none() {
                ports_ops.push(Op::AddBcastDevmap(kind, slot));
            }
            let have = have.cloned().unwrap_or_default();
            ports_ops.extend(want.difference(&have).map(|&p| Op::AddBcastPort(kind, slot, p)));
            remove.extend(have.difference(want).map(|&p| Op::RemoveBcastPort(kind, slot, p)));
        }
        let prefix = bcast_prefix(net, len);
        if current.bcast_prefixes.get(&prefix) != Some(&slot) {
            prefix_ops.push(Op::SetBcastPrefix(prefix, slot));
        }
        for (&ifindex, storm) in &t.vnics {
            let entry = BcastVnic {
                subnet: slot,
                rate_pps: storm.rate_pps,
                burst: storm.burst,
                ..BcastVnic::default()
            };
            want_vnics.insert(ifindex, entry);
        }
    }
    add.extend(ports_ops);
    add.extend(prefix_ops);
    let same =
        |a: &BcastVnic, b: &BcastVnic| (a.subnet, a.rate_pps, a.burst) == (b.subnet, b.rate_pps, b.burst);
    for (&ifindex, want) in &want_vnics {
        if !current.bcast_vnics.get(&ifindex).is_some_and(|have| same(have, want)) {
            add.push(Op::SetBcastVnic(ifindex, *want));
        }
    }

    // Down the other way round: no guest frame reaches a subnet half-taken.
    let mut down = Vec::new();
    down.extend(
        current.bcast_vnics.keys().filter(|i| !want_vnics.contains_key(i)).map(|&i| Op::RemoveBcastVnic(i)),
    );
    let want_prefixes: BTreeSet<BcastPrefix> =
        slots.keys().map(|&(net, len)| bcast_prefix(net, len)).collect();
    down.extend(
        current
            .bcast_prefixes
            .keys()
            .filter(|p| !want_prefixes.contains(p))
            .map(|&p| Op::RemoveBcastPrefix(p)),
    );
    down.append(&mut remove);
    let kept: BTreeSet<u32> = slots.values().map(|&(slot, _)| slot).collect();
    for (&slot, have) in current.bcast_slots.iter().filter(|(s, _)| !kept.contains(s)) {
        down.extend(
            BcastDevmap::ALL
                .into_iter()
                .filter(|&k| have.devmap(k).is_some())
                .map(|k| Op::RemoveBcastDevmap(k, slot)),
        );
        if slot < DEFAULT_MAX_SUBNETS
            && (have.subnet != BcastSubnet::default() || have.remotes != BcastRemotes::default())
        {
            down.push(Op::FreeBcastSlot(slot));
        }
    }
    (add, down)
}

/// Whether (`ifindex`, `mac`) may hold a VIP with these members and
/// settings: the kernel's claim rule (claim.h), applied again when either
/// changes.
fn may_hold(members: &BTreeMap<u32, [u8; 6]>, config: VipConfig, ifindex: u32, mac: [u8; 6]) -> bool {
    let is_vrrp_vmac = mac[..5] == [0x00, 0x00, 0x5e, 0x00, 0x01];
    match members.get(&ifindex) {
        Some(m) => *m == mac || (config.flags & VIP_F_VRRP_VMAC != 0 && is_vrrp_vmac),
        None => false,
    }
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
fn nat_entries(target: &MapTarget) -> (BTreeMap<EipKey, EipBinding>, BTreeMap<VipKey, VipNat>) {
    let bound = target.eips.iter().filter(|(vip, _)| target.vips.contains_key(vip));
    let eips = bound
        .clone()
        .map(|(vip, b)| (EipKey { addr: b.eip.octets() }, EipBinding { vip: vip.addr }))
        .collect();
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
pub struct ApplyReport {
    /// Operations carried out.
    pub ops: usize,
    /// Holders cleared because they were no longer members.
    pub holders_cleared: usize,
}

/// Carries out `ops` in order; stops at the first that fails (the next
/// reconcile plans again from what the maps then hold).
pub fn apply(maps: &mut dyn Maps, ops: &[Op]) -> Result<ApplyReport> {
    let mut done = ApplyReport::default();
    for op in ops {
        match op.clone() {
            Op::AddPort(p) => maps.add_tx_port(p)?,
            Op::AddVip { vip, slot } => {
                maps.reset_vip_counters(slot)?;
                let state = VipState { vmac: vmac(slot), slot, vip: vip.addr, ..Default::default() };
                maps.set_vip_state(slot, state).with_context(|| format!("adding VIP {}", vip.ip()))?;
                maps.vips().insert_new(vip, VipRef { slot }).with_context(|| {
                    format!("adding VIP {} (is dataplane.max_vips large enough?)", vip.ip())
                })?;
            }
            Op::SetVipConfig { vip, slot, config } => {
                maps.set_vip_config(slot, config).with_context(|| format!("settings of VIP {}", vip.ip()))?
            }
            Op::SetMember(k, v) => maps.members().set(k, v).context("members")?,
            Op::SetVipNat(k, v) => maps.vip_nat().set(k, v).context("vip_nat")?,
            Op::SetEip(k, v) => maps.eips().set(k, v).context("eips")?,
            Op::SetVtep(k, v) => maps.vteps().set(k, v).context("vteps")?,
            Op::SetUplink(port) => maps.set_uplink(port)?,
            Op::SetUnderlay(port) => maps.set_underlay(port)?,
            Op::ClearHolder { vip, slot, ifindex, mac } => {
                done.holders_cleared += clear_holder(maps, vip, slot, ifindex, mac)? as usize;
            }
            Op::RemoveMember(k) => maps.members().remove(&k).context("members")?,
            Op::RemoveEip(k) => maps.eips().remove(&k).context("eips")?,
            Op::RemoveVipNat(k) => maps.vip_nat().remove(&k).context("vip_nat")?,
            // The kernel may have dropped it meanwhile (never: it only adds).
            Op::RemoveVrrp(k) => maps.vrrp().remove(&k).context("vrrp")?,
            Op::RemoveVtep(k) => maps.vteps().remove(&k).context("vteps")?,
            Op::RemoveVip { vip, slot } => {
                maps.vips().remove(&vip).with_context(|| format!("removing VIP {}", vip.ip()))?;
                maps.set_vip_state(slot, VipState::default())
                    .with_context(|| format!("freeing slot {slot} of VIP {}", vip.ip()))?;
                maps.set_vip_config(slot, VipConfig::default())
                    .with_context(|| format!("freeing the settings of slot {slot}"))?;
            }
            Op::RemovePort(p) => maps.remove_tx_port(p)?,
            Op::ResetSubnetCounters(slot) => maps.reset_subnet_counters(slot)?,
            Op::SetBcastSubnet(slot, subnet) => maps.set_bcast_subnet(slot, subnet)?,
            Op::SetBcastRemotes(slot, remotes) => maps.set_bcast_remotes(slot, *remotes)?,
            Op::AddBcastDevmap(kind, slot) => maps.add_bcast_devmap(kind, slot)?,
            Op::AddBcastPort(kind, slot, ifindex) => maps.add_bcast_port(kind, slot, ifindex)?,
            Op::SetBcastPrefix(prefix, slot) => maps.set_bcast_prefix(prefix, slot)?,
            Op::SetBcastVnic(ifindex, entry) => {
                maps.bcast_vnics().set(ifindex, entry).context("bcast_vnics")?
            }
            Op::RemoveBcastVnic(ifindex) => maps.bcast_vnics().remove(&ifindex).context("bcast_vnics")?,
            Op::RemoveBcastPrefix(prefix) => maps.remove_bcast_prefix(prefix)?,
            Op::RemoveBcastPort(kind, slot, ifindex) => maps.remove_bcast_port(kind, slot, ifindex)?,
            Op::RemoveBcastDevmap(kind, slot) => maps.remove_bcast_devmap(kind, slot)?,
            Op::FreeBcastSlot(slot) => {
                maps.set_bcast_subnet(slot, BcastSubnet::default())?;
                maps.set_bcast_remotes(slot, BcastRemotes::default())?;
            }
        }
        done.ops += 1;
    }
    Ok(done)
}

/// Clears the holder of `slot` if it is still (`ifindex`, `mac`): a member
/// that claimed in between keeps the VIP (the write is a compare-and-swap on
/// the epoch, `Maps::write_holder`). A holder change, so the epoch grows.
fn clear_holder(maps: &mut dyn Maps, vip: VipKey, slot: u32, ifindex: u32, mac: [u8; 6]) -> Result<bool> {
    // Each lost race is a claim, and only members claim: the membership
    // the old holder had is gone (removed first), so this ends fast.
    for _ in 0..CAS_ATTEMPTS {
        let state = maps.vip_state(slot)?;
        if (state.holder_ifindex, state.holder_mac) != (ifindex, mac) {
            return Ok(false);
        }
        if maps
            .write_holder(slot, state.epoch, HolderTarget::None)
            .with_context(|| format!("clearing the holder of {}", vip.ip()))?
        {
            info!(vip = %vip.ip(), epoch = state.epoch + 1, "holder cleared: no longer a member");
            return Ok(true);
        }
    }
    anyhow::bail!("clearing the holder of {}: {CAS_ATTEMPTS} claims came first", vip.ip())
}

/// How often a holder write is tried against racing claims.
const CAS_ATTEMPTS: usize = 8;

/// Reads the maps, plans, applies: brings the maps to `target`.
pub fn reconcile(maps: &mut dyn Maps, target: &MapTarget) -> Result<ApplyReport> {
    let current = Current::read(maps)?;
    apply(maps, &plan(target, &current))
}

/// Replays of "these maps, this target": the exact operations, and what
/// applying them leaves, with the maps in memory.
#[cfg(test)]
mod tests {
    use havip_common::VipState;

    use super::*;
    use crate::datapath::fake::FakeMaps;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn vip(last: u8) -> VipKey {
        VipKey { addr: [198, 18, 1, last] }
    }

    fn member(v: VipKey, ifindex: u32) -> MemberKey {
        MemberKey { vip: v.addr, ifindex }
    }

    fn info(mac: [u8; 6]) -> MemberInfo {
        MemberInfo { mac, _pad: [0; 2] }
    }

    /// Maps already holding `vips` (address, slot), ports 7 and 8.
    fn current(vips: &[(VipKey, u32)]) -> Current {
        Current {
            ports: BTreeSet::from([7, 8]),
            vips: vips.iter().map(|&(k, slot)| (k, VipRef { slot })).collect(),
            ..Default::default()
        }
    }

    fn target(vips: &[VipKey]) -> MapTarget {
        MapTarget {
            ports: BTreeSet::from([7, 8]),
            vips: vips.iter().map(|&k| (k, BTreeMap::new())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn new_vips_take_the_lowest_slots_no_vip_holds_not_even_one_being_removed() {
        // .50 at 0, .52 at 2, .55 at 5; .55 goes, .51 .53 .54 come.
        let cur = current(&[(vip(50), 0), (vip(52), 2), (vip(55), 5)]);
        let ops = plan(&target(&[vip(50), vip(51), vip(52), vip(53), vip(54)]), &cur);
        assert_eq!(
            ops,
            [
                Op::AddVip { vip: vip(51), slot: 1 },
                Op::AddVip { vip: vip(53), slot: 3 },
                Op::AddVip { vip: vip(54), slot: 4 },
                Op::RemoveVip { vip: vip(55), slot: 5 },
            ]
        );
    }

    #[test]
    fn a_slot_freed_by_one_pass_is_reused_by_the_next() {
        let mut maps = FakeMaps::new(16);
        reconcile(&mut maps, &target(&[vip(50), vip(51)])).unwrap();
        reconcile(&mut maps, &target(&[vip(51)])).unwrap();
        assert_eq!(maps.vip_state(0).unwrap(), VipState::default(), "slot 0 freed");
        let ops = plan(&target(&[vip(51), vip(60)]), &Current::read(&mut maps).unwrap());
        assert_eq!(ops, [Op::AddVip { vip: vip(60), slot: 0 }]);
        apply(&mut maps, &ops).unwrap();
        let st = maps.vip(&vip(60)).unwrap();
        assert_eq!((st.slot, st.vip, st.vmac, st.holder_ifindex), (0, vip(60).addr, vmac(0), 0));
        assert_eq!(maps.vip_slot(&vip(51)), Some(1), "a VIP keeps its slot");
    }

    #[test]
    fn a_holder_that_left_is_cleared_one_that_stays_is_kept() {
        let v = vip(50);
        let mut cur = current(&[(v, 0)]);
        cur.members = BTreeMap::from([(member(v, 7), info(MAC_A)), (member(v, 8), info(MAC_B))]);
        cur.holders = BTreeMap::from([(0, (7, MAC_A))]);

        let mut both = target(&[v]);
        both.vips.insert(v, BTreeMap::from([(7, MAC_A), (8, MAC_B)]));
        assert_eq!(plan(&both, &cur), [], "nothing to do: the holder stays a member");

        let mut only_b = target(&[v]);
        only_b.vips.insert(v, BTreeMap::from([(8, MAC_B)]));
        // The membership first: the old holder cannot claim again before
        // it is cleared.
        assert_eq!(
            plan(&only_b, &cur),
            [Op::RemoveMember(member(v, 7)), Op::ClearHolder { vip: v, slot: 0, ifindex: 7, mac: MAC_A }]
        );

        // Still a member, but registered with another MAC: the holder's
        // claims came from a MAC that is no longer the member's.
        let mut a_moved = target(&[v]);
        a_moved.vips.insert(v, BTreeMap::from([(7, MAC_B), (8, MAC_B)]));
        assert_eq!(
            plan(&a_moved, &cur),
            [
                Op::SetMember(member(v, 7), info(MAC_B)),
                Op::ClearHolder { vip: v, slot: 0, ifindex: 7, mac: MAC_A },
            ]
        );
    }

    #[test]
    fn a_holder_on_a_vrrp_virtual_mac_is_kept_only_where_the_havip_accepts_it() {
        let v = vip(50);
        let vrrp_vmac = [0, 0, 0x5e, 0, 1, 51];
        let mut cur = current(&[(v, 0)]);
        cur.members = BTreeMap::from([(member(v, 7), info(MAC_A))]);
        cur.holders = BTreeMap::from([(0, (7, vrrp_vmac))]);
        cur.configs = BTreeMap::from([(0, VipConfig { flags: VIP_F_VRRP_VMAC })]);
        let mut t = target(&[v]);
        t.vips.insert(v, BTreeMap::from([(7, MAC_A)]));
        t.configs.insert(v, VipConfig { flags: VIP_F_VRRP_VMAC });
        assert_eq!(plan(&t, &cur), [], "keepalived use_vmac: the member's claim from 00:00:5e:00:01:51");

        t.configs.remove(&v);
        assert_eq!(
            plan(&t, &cur),
            [
                Op::SetVipConfig { vip: v, slot: 0, config: VipConfig::default() },
                Op::ClearHolder { vip: v, slot: 0, ifindex: 7, mac: vrrp_vmac },
            ],
            "the setting turned off: such a holder is cleared"
        );
    }

    #[test]
    fn settings_and_vrrp_records_follow_the_vips_and_memberships() {
        let (a, b) = (vip(50), vip(51));
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[a, b]);
        t.vips.insert(a, BTreeMap::from([(7, MAC_A), (8, MAC_B)]));
        t.configs.insert(b, VipConfig { flags: VIP_F_VRRP_VMAC });
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [
                Op::AddPort(7),
                Op::AddPort(8),
                Op::AddVip { vip: a, slot: 0 },
                Op::AddVip { vip: b, slot: 1 },
                Op::SetVipConfig { vip: b, slot: 1, config: VipConfig { flags: VIP_F_VRRP_VMAC } },
                Op::SetMember(member(a, 7), info(MAC_A)),
                Op::SetMember(member(a, 8), info(MAC_B)),
            ]
        );
        reconcile(&mut maps, &t).unwrap();
        // The kernel records both members' adverts.
        maps.vrrp.insert(member(a, 7), Default::default());
        maps.vrrp.insert(member(a, 8), Default::default());

        t.vips.insert(a, BTreeMap::from([(8, MAC_B)]));
        t.vips.remove(&b);
        t.configs.clear();
        let ops = plan(&t, &Current::read(&mut maps).unwrap());
        assert_eq!(
            ops,
            [Op::RemoveMember(member(a, 7)), Op::RemoveVrrp(member(a, 7)), Op::RemoveVip { vip: b, slot: 1 },]
        );
        apply(&mut maps, &ops).unwrap();
        assert_eq!(maps.vip_config(1).unwrap(), VipConfig::default(), "a freed slot has no settings");
        assert_eq!(maps.vrrp.keys().copied().collect::<Vec<_>>(), [member(a, 8)]);
    }

    #[test]
    fn clearing_spares_a_member_that_claimed_in_between() {
        let v = vip(50);
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[v]);
        t.vips.insert(v, BTreeMap::from([(7, MAC_A), (8, MAC_B)]));
        reconcile(&mut maps, &t).unwrap();
        let claim = |maps: &mut FakeMaps, ifindex, mac, epoch| {
            let mut st = maps.vip(&v).unwrap();
            (st.holder_ifindex, st.holder_mac, st.epoch) = (ifindex, mac, epoch);
            maps.set_vip_state(st.slot, st).unwrap();
        };
        claim(&mut maps, 7, MAC_A, 1);
        t.vips.insert(v, BTreeMap::from([(8, MAC_B)]));
        let ops = plan(&t, &Current::read(&mut maps).unwrap());
        // The kernel moves the VIP to 8 between the plan and its application.
        claim(&mut maps, 8, MAC_B, 2);
        assert_eq!(apply(&mut maps, &ops).unwrap(), ApplyReport { ops: 2, holders_cleared: 0 });
        let st = maps.vip(&v).unwrap();
        assert_eq!((st.holder_ifindex, st.epoch), (8, 2), "the new holder is kept");

        // Without the race, the clear is a holder change: the epoch grows.
        claim(&mut maps, 7, MAC_A, 3);
        maps.members.insert(member(v, 7), info(MAC_A));
        assert_eq!(reconcile(&mut maps, &t).unwrap(), ApplyReport { ops: 2, holders_cleared: 1 });
        let st = maps.vip(&v).unwrap();
        assert_eq!((st.holder_ifindex, st.holder_mac, st.epoch), (0, [0; 6], 4));
    }

    #[test]
    fn additions_come_before_removals_and_a_second_pass_does_nothing() {
        let (keep, gone, new) = (vip(50), vip(51), vip(52));
        let eip: Ipv4Addr = "203.0.113.10".parse().unwrap();
        let subnet: Subnet = "198.18.1.0/24".parse().unwrap();
        let uplink = Uplink { ifindex: 9, mac: [2, 0, 0, 0, 0, 9], next_hop_mac: [2, 0, 0, 0, 0, 0x99] };
        let mut maps = FakeMaps::new(8);
        let mut before = target(&[keep, gone]);
        before.vips.insert(gone, BTreeMap::from([(7, MAC_A)]));
        before.eips.insert(gone, EipNat { eip, subnet });
        reconcile(&mut maps, &before).unwrap();

        let mut after = target(&[keep, new]);
        after.ports = BTreeSet::from([8, 10]);
        after.vips.insert(new, BTreeMap::from([(8, MAC_B)]));
        after.eips.insert(new, EipNat { eip, subnet });
        after.uplink = Some(uplink);
        let ops = plan(&after, &Current::read(&mut maps).unwrap());
        let nat = VipNat { eip: eip.octets(), subnet: [198, 18, 1, 0], mask: [255, 255, 255, 0] };
        assert_eq!(
            ops,
            [
                Op::AddPort(9),
                Op::AddPort(10),
                Op::AddVip { vip: new, slot: 2 },
                Op::SetMember(member(new, 8), info(MAC_B)),
                Op::SetVipNat(new, nat),
                Op::SetEip(EipKey { addr: eip.octets() }, EipBinding { vip: new.addr }),
                Op::SetUplink(UplinkPort { ifindex: 9, mac: uplink.mac, next_hop_mac: uplink.next_hop_mac }),
                Op::RemoveMember(member(gone, 7)),
                Op::RemoveVipNat(gone),
                Op::RemoveVip { vip: gone, slot: 1 },
                Op::RemovePort(7),
            ]
        );
        apply(&mut maps, &ops).unwrap();
        assert_eq!(plan(&after, &Current::read(&mut maps).unwrap()), [], "idempotent");
        assert_eq!(maps.vip_slot(&gone), None);
        assert_eq!(maps.eips.get(&EipKey { addr: eip.octets() }), Some(&EipBinding { vip: new.addr }));
    }

    #[test]
    fn an_eip_of_a_vip_not_in_the_target_is_not_written() {
        let mut t = target(&[vip(50)]);
        let subnet: Subnet = "198.18.1.0/24".parse().unwrap();
        t.eips.insert(vip(99), EipNat { eip: "203.0.113.10".parse().unwrap(), subnet });
        assert_eq!(plan(&t, &current(&[(vip(50), 0)])), []);
    }

    fn underlay(ifindex: u32, gateway: Option<Ipv4Addr>) -> UnderlayTarget {
        UnderlayTarget {
            ifindex,
            mac: [2, 0, 0, 0, 0, 0x11],
            mtu: 1550,
            addr: Ipv4Addr::new(198, 18, 0, 1),
            vni: 1001,
            vxlan_port: 4789,
            probe_port: 4790,
            gateway_vtep: gateway,
        }
    }

    #[test]
    fn the_underlay_and_the_vteps_are_written_and_follow_the_target() {
        let (hv2, hv3) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3));
        let (mac2, mac3) = ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        let vtep = |ip: Ipv4Addr, mac| (VtepKey::from(ip), VtepInfo { next_hop_mac: mac, _pad: [0; 2] });
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[]);
        t.underlay = Some(underlay(11, Some(hv3)));
        t.vteps = BTreeMap::from([(hv2, mac2), (hv3, mac3)]);
        let port = UnderlayPort {
            ifindex: 11,
            mac: [2, 0, 0, 0, 0, 0x11],
            mtu: 1550,
            addr: [198, 18, 0, 1],
            vni: 1001,
            vxlan_port: 4789u16.to_be(),
            probe_port: 4790u16.to_be(),
            gateway_vtep: [198, 18, 0, 3],
        };
        let (k2, v2) = vtep(hv2, mac2);
        let (k3, v3) = vtep(hv3, mac3);
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [
                Op::AddPort(7),
                Op::AddPort(8),
                Op::AddPort(11),
                Op::SetVtep(k2, v2),
                Op::SetVtep(k3, v3),
                Op::SetUnderlay(port),
            ],
            "the underlay NIC is a redirect target; ports in network order"
        );
        reconcile(&mut maps, &t).unwrap();
        assert_eq!(maps.underlay().unwrap(), port);
        assert_eq!(plan(&t, &Current::read(&mut maps).unwrap()), [], "idempotent");

        // An agent restarting, its peers not known yet: what the maps have
        // stays (the underlay port in tx_ports too), whatever the target says.
        let starting = MapTarget { keep_underlay: true, ..target(&[]) };
        assert_eq!(plan(&starting, &Current::read(&mut maps).unwrap()), [], "kept while not known");

        // hv2 re-resolved to another MAC, hv3 gone, the underlay gone (one host again).
        let mac2b = [2, 0, 0, 0, 0, 0x22];
        t.vteps = BTreeMap::from([(hv2, mac2b)]);
        t.underlay = None;
        let (_, v2b) = vtep(hv2, mac2b);
        let ops = plan(&t, &Current::read(&mut maps).unwrap());
        assert_eq!(
            ops,
            [
                Op::SetVtep(k2, v2b),
                Op::SetUnderlay(UnderlayPort::default()),
                Op::RemoveVtep(k3),
                Op::RemovePort(11)
            ]
        );
        apply(&mut maps, &ops).unwrap();
        assert_eq!(maps.vteps.keys().copied().collect::<Vec<_>>(), [k2]);
        assert_eq!(maps.tx_ports, BTreeSet::from([7, 8]));
    }

    #[test]
    fn a_remote_holder_is_never_cleared_by_the_plan() {
        let v = vip(50);
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[v]);
        t.vips.insert(v, BTreeMap::from([(7, MAC_A)]));
        t.underlay = Some(underlay(11, None));
        reconcile(&mut maps, &t).unwrap();
        let slot = maps.vip_slot(&v).unwrap();
        let remote =
            HolderTarget::Remote { vtep: Ipv4Addr::new(198, 18, 0, 2), mac: MAC_B, next_hop: [0; 6] };
        assert!(maps.write_holder(slot, 0, remote).unwrap());
        let held = maps.vip_state(slot).unwrap();

        // MAC_B is no member here at all (it is a member on hv2); then the
        // membership here goes too: still the control plane's holder.
        assert_eq!(plan(&t, &Current::read(&mut maps).unwrap()), []);
        t.vips.insert(v, BTreeMap::new());
        reconcile(&mut maps, &t).unwrap();
        assert_eq!(maps.vip_state(slot).unwrap(), held);
        assert_eq!(HolderTarget::of(&held), remote);
    }

    // Broadcast domains.

    const NET1: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 1, 0), 24);
    const NET2: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 2, 0), 24);
    const NET3: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 3, 0), 24);
    const STORM: Storm = Storm { rate_pps: 1000, burst: 100 };
    const REP: u32 = 50;

    fn hv(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, n)
    }

    fn domain(vnics: &[u32], remotes: &[Ipv4Addr]) -> BcastTarget {
        BcastTarget {
            vnics: vnics.iter().map(|&i| (i, STORM)).collect(),
            remotes: remotes.iter().copied().collect(),
        }
    }

    fn prefix((net, len): (Ipv4Addr, u8)) -> BcastPrefix {
        bcast_prefix(net, len)
    }

    fn bsubnet((net, len): (Ipv4Addr, u8), local_ports: u32, remote_hosts: u32) -> BcastSubnet {
        let mask = Subnet { network: net, prefix: len }.mask().to_be_bytes();
        BcastSubnet { network: net.octets(), mask, local_ports, remote_hosts }
    }

    fn bvnic(slot: u32, storm: Storm) -> BcastVnic {
        BcastVnic { subnet: slot, rate_pps: storm.rate_pps, burst: storm.burst, ..BcastVnic::default() }
    }

    fn bremotes(vteps: &[Ipv4Addr]) -> Box<BcastRemotes> {
        let mut r = BcastRemotes { count: vteps.len() as u32, ..BcastRemotes::default() };
        for (i, v) in vteps.iter().enumerate() {
            r.vteps[i] = v.octets();
        }
        Box::new(r)
    }

    /// The VIP side of the maps: what a broadcast-domain change must never touch.
    fn vip_side(maps: &FakeMaps) -> impl PartialEq + std::fmt::Debug {
        (
            maps.vips.clone(),
            maps.members.clone(),
            maps.vip_state.clone(),
            maps.vip_config.clone(),
            maps.tx_ports.clone(),
            maps.vip_nat.clone(),
            maps.eips.clone(),
            maps.vrrp.clone(),
        )
    }

    /// A VIP with members 7 and 8 held by 7, programmed into fresh maps.
    fn maps_with_a_held_vip() -> (FakeMaps, MapTarget) {
        let v = vip(50);
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[v]);
        t.vips.insert(v, BTreeMap::from([(7, MAC_A), (8, MAC_B)]));
        reconcile(&mut maps, &t).unwrap();
        let mut st = maps.vip(&v).unwrap();
        (st.holder_ifindex, st.holder_mac, st.epoch) = (7, MAC_A, 1);
        maps.set_vip_state(st.slot, st).unwrap();
        (maps, t)
    }

    #[test]
    fn a_mode_flip_only_adds_and_removes_broadcast_entries_and_leaves_the_vips_alone() {
        let (mut maps, mut t) = maps_with_a_held_vip();
        let before = vip_side(&maps);

        t.bcast.insert(NET1, domain(&[7, 8], &[]));
        let ops = plan(&t, &Current::read(&mut maps).unwrap());
        assert_eq!(
            ops,
            [
                Op::ResetSubnetCounters(0),
                Op::SetBcastSubnet(0, bsubnet(NET1, 2, 0)),
                Op::AddBcastDevmap(BcastDevmap::Ports, 0),
                Op::AddBcastPort(BcastDevmap::Ports, 0, 7),
                Op::AddBcastPort(BcastDevmap::Ports, 0, 8),
                Op::AddBcastDevmap(BcastDevmap::Flood, 0),
                Op::AddBcastPort(BcastDevmap::Flood, 0, 7),
                Op::AddBcastPort(BcastDevmap::Flood, 0, 8),
                Op::SetBcastPrefix(prefix(NET1), 0),
                Op::SetBcastVnic(7, bvnic(0, STORM)),
                Op::SetBcastVnic(8, bvnic(0, STORM)),
            ],
            "the slot and its devmaps first, the prefix, the vNICs' entries last"
        );
        apply(&mut maps, &ops).unwrap();
        assert_eq!(vip_side(&maps), before, "the VIP maps are untouched: unicast traffic is not dropped");
        assert_eq!(maps.bcast_ports, BTreeMap::from([(0, BTreeSet::from([7, 8]))]));
        assert_eq!(maps.bcast_flood, BTreeMap::from([(0, BTreeSet::from([7, 8]))]));
        assert_eq!(maps.subnet_slot(NET1.0, NET1.1), Some(0));
        assert_eq!(maps.subnet_slot(NET1.0, 16), None, "exact: a wider subnet is another subnet");
        assert_eq!(plan(&t, &Current::read(&mut maps).unwrap()), [], "idempotent");

        // Back to unicast: the vNICs' entries go first, then the prefix, the devmaps, the slot.
        t.bcast.clear();
        let ops = plan(&t, &Current::read(&mut maps).unwrap());
        assert_eq!(
            ops,
            [
                Op::RemoveBcastVnic(7),
                Op::RemoveBcastVnic(8),
                Op::RemoveBcastPrefix(prefix(NET1)),
                Op::RemoveBcastDevmap(BcastDevmap::Ports, 0),
                Op::RemoveBcastDevmap(BcastDevmap::Flood, 0),
                Op::FreeBcastSlot(0),
            ]
        );
        apply(&mut maps, &ops).unwrap();
        assert_eq!(vip_side(&maps), before, "nor by turning it off");
        assert!(maps.bcast_vnics.is_empty() && maps.bcast_prefixes.is_empty() && maps.bcast_ports.is_empty());
        assert_eq!(maps.bcast_subnet(0).unwrap(), BcastSubnet::default());
        assert_eq!(Current::read(&mut maps).unwrap().bcast_slots, BTreeMap::new(), "slot 0 is free");
    }

    #[test]
    fn a_vnic_joins_and_leaves_its_subnets_devmaps() {
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[]);
        t.bcast.insert(NET1, domain(&[7, 8], &[]));
        reconcile(&mut maps, &t).unwrap();

        t.bcast.insert(NET1, domain(&[7, 8, 9], &[]));
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [
                Op::SetBcastSubnet(0, bsubnet(NET1, 3, 0)),
                Op::AddBcastPort(BcastDevmap::Ports, 0, 9),
                Op::AddBcastPort(BcastDevmap::Flood, 0, 9),
                Op::SetBcastVnic(9, bvnic(0, STORM)),
            ],
            "in both devmaps before its own entry"
        );
        reconcile(&mut maps, &t).unwrap();

        t.bcast.insert(NET1, domain(&[8, 9], &[]));
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [
                Op::SetBcastSubnet(0, bsubnet(NET1, 2, 0)),
                Op::RemoveBcastVnic(7),
                Op::RemoveBcastPort(BcastDevmap::Ports, 0, 7),
                Op::RemoveBcastPort(BcastDevmap::Flood, 0, 7),
            ],
            "its own entry before the devmaps"
        );
        reconcile(&mut maps, &t).unwrap();

        // Every vNIC down: the subnet keeps its slot (and counters), its devmaps are empty.
        t.bcast.insert(NET1, domain(&[], &[]));
        reconcile(&mut maps, &t).unwrap();
        assert_eq!(maps.subnet_slot(NET1.0, NET1.1), Some(0));
        assert_eq!(maps.bcast_ports[&0], BTreeSet::new());
        assert!(maps.bcast_vnics.is_empty());
    }

    #[test]
    fn remote_hosts_bring_the_replicator_into_the_flood_devmap_only() {
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[]);
        t.replicator = Some(REP);
        t.bcast.insert(NET1, domain(&[7], &[]));
        reconcile(&mut maps, &t).unwrap();
        assert_eq!(maps.bcast_flood[&0], BTreeSet::from([7]), "no other host: no replicator");

        t.bcast.insert(NET1, domain(&[7], &[hv(3), hv(2)]));
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [
                Op::SetBcastSubnet(0, bsubnet(NET1, 1, 2)),
                Op::SetBcastRemotes(0, bremotes(&[hv(2), hv(3)])),
                Op::AddBcastPort(BcastDevmap::Flood, 0, REP),
            ]
        );
        reconcile(&mut maps, &t).unwrap();
        assert_eq!(maps.bcast_ports[&0], BTreeSet::from([7]), "what comes from other hosts never goes back");

        // The replicator not ready (made again, not yet attached): nothing to other hosts.
        t.replicator = None;
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [Op::SetBcastSubnet(0, bsubnet(NET1, 1, 0)), Op::RemoveBcastPort(BcastDevmap::Flood, 0, REP)]
        );
        t.replicator = Some(REP);

        // hv2 leaves the subnet, then hv3.
        t.bcast.insert(NET1, domain(&[7], &[hv(3)]));
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [Op::SetBcastSubnet(0, bsubnet(NET1, 1, 1)), Op::SetBcastRemotes(0, bremotes(&[hv(3)]))]
        );
        reconcile(&mut maps, &t).unwrap();
        t.bcast.insert(NET1, domain(&[7], &[]));
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [
                Op::SetBcastSubnet(0, bsubnet(NET1, 1, 0)),
                Op::SetBcastRemotes(0, bremotes(&[])),
                Op::RemoveBcastPort(BcastDevmap::Flood, 0, REP),
            ]
        );
    }

    #[test]
    fn more_remote_hosts_than_the_kernel_takes_are_truncated_to_the_lowest_addresses() {
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[]);
        t.replicator = Some(REP);
        let many: Vec<Ipv4Addr> = (0..70u32).map(|i| Ipv4Addr::from(u32::from(hv(10)) + 69 - i)).collect();
        t.bcast.insert(NET1, domain(&[7], &many));
        reconcile(&mut maps, &t).unwrap();
        let r = maps.bcast_remotes(0).unwrap();
        assert_eq!(r.count as usize, MAX_REMOTE_HOSTS);
        assert_eq!((r.vteps[0], r.vteps[63]), (hv(10).octets(), hv(73).octets()));
        assert_eq!(maps.bcast_subnet(0).unwrap().remote_hosts, MAX_REMOTE_HOSTS as u32);
        assert_eq!(plan(&t, &Current::read(&mut maps).unwrap()), [], "stable");
    }

    #[test]
    fn a_storm_change_rewrites_the_vnic_entry_and_the_kernels_bucket_is_not_a_change() {
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[]);
        t.bcast.insert(NET1, domain(&[7], &[]));
        reconcile(&mut maps, &t).unwrap();
        // The kernel moves the bucket with every frame it replicates.
        maps.bcast_vnics.get_mut(&7).unwrap().tat_ns = 123_456_789;
        assert_eq!(plan(&t, &Current::read(&mut maps).unwrap()), []);

        let slow = Storm { rate_pps: 10, burst: 5 };
        t.bcast.get_mut(&NET1).unwrap().vnics.insert(7, slow);
        assert_eq!(plan(&t, &Current::read(&mut maps).unwrap()), [Op::SetBcastVnic(7, bvnic(0, slow))]);
        reconcile(&mut maps, &t).unwrap();
        assert_eq!(maps.bcast_vnics[&7].tat_ns, 0, "the bucket restarts");
    }

    #[test]
    fn slots_are_stable_across_a_restart_and_a_freed_slot_is_reused_only_by_a_later_pass() {
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[]);
        t.bcast.insert(NET1, domain(&[7], &[]));
        t.bcast.insert(NET2, domain(&[8], &[]));
        reconcile(&mut maps, &t).unwrap();
        assert_eq!((maps.subnet_slot(NET1.0, 24), maps.subnet_slot(NET2.0, 24)), (Some(0), Some(1)));
        maps.subnet_stats
            .insert(0, havip_common::SubnetCounters { c: [5; havip_common::SubnetCounter::MAX] });

        // A restarted agent reads the same maps: nothing to do, nothing churned.
        let mut restarted = maps.clone();
        assert_eq!(plan(&t, &Current::read(&mut restarted).unwrap()), []);

        // NET1 leaves and NET3 comes in one pass: NET3 does not take slot 0 yet.
        t.bcast.remove(&NET1);
        t.bcast.insert(NET3, domain(&[9], &[]));
        let ops = plan(&t, &Current::read(&mut maps).unwrap());
        assert!(ops.contains(&Op::ResetSubnetCounters(2)), "{ops:?}");
        assert!(ops.contains(&Op::FreeBcastSlot(0)), "{ops:?}");
        apply(&mut maps, &ops).unwrap();
        assert_eq!(maps.subnet_slot(NET2.0, 24), Some(1), "NET2 keeps its slot");
        assert_eq!(maps.subnet_slot(NET3.0, 24), Some(2));

        // Slot 0's entries are gone: the next new subnet takes it, its counters zeroed.
        t.bcast.insert(NET1, domain(&[7], &[]));
        let ops = plan(&t, &Current::read(&mut maps).unwrap());
        assert_eq!(ops[..2], [Op::ResetSubnetCounters(0), Op::SetBcastSubnet(0, bsubnet(NET1, 1, 0))]);
        apply(&mut maps, &ops).unwrap();
        assert_eq!(maps.subnet_counters(0).unwrap(), havip_common::SubnetCounters::default());
    }

    #[test]
    fn a_slot_left_half_made_is_recovered_not_leaked() {
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[]);
        t.bcast.insert(NET1, domain(&[7], &[]));
        maps.tx_ports = BTreeSet::from([7, 8]);
        // A pass stopped after the devmaps, before the prefix, at slot 3.
        maps.set_bcast_subnet(3, bsubnet(NET1, 1, 0)).unwrap();
        maps.add_bcast_devmap(BcastDevmap::Ports, 3).unwrap();
        maps.add_bcast_port(BcastDevmap::Ports, 3, 7).unwrap();
        assert_eq!(
            plan(&t, &Current::read(&mut maps).unwrap()),
            [
                Op::AddBcastDevmap(BcastDevmap::Flood, 3),
                Op::AddBcastPort(BcastDevmap::Flood, 3, 7),
                Op::SetBcastPrefix(prefix(NET1), 3),
                Op::SetBcastVnic(7, bvnic(3, STORM)),
            ]
        );

        // A stale devmap of a slot no subnet has any more: taken down.
        maps.add_bcast_devmap(BcastDevmap::Flood, 5).unwrap();
        reconcile(&mut maps, &t).unwrap();
        assert_eq!(maps.bcast_flood.keys().copied().collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn an_agent_starting_without_the_underlay_keeps_the_remote_hosts() {
        let mut maps = FakeMaps::new(4);
        let mut t = target(&[]);
        t.replicator = Some(REP);
        t.bcast.insert(NET1, domain(&[7], &[hv(2)]));
        reconcile(&mut maps, &t).unwrap();

        let mut starting = target(&[]);
        starting.keep_underlay = true;
        starting.replicator = Some(REP);
        starting.bcast.insert(NET1, domain(&[7], &[]));
        assert_eq!(plan(&starting, &Current::read(&mut maps).unwrap()), [], "kept while not known");
    }
}
