//! The data plane's maps behind one interface, [`Maps`], so that the plan,
//! the reconciler and the observer run the same against the kernel
//! ([`KernelMaps`], aya over the pinned maps) and in memory
//! ([`FakeMaps`](super::fake::FakeMaps), for replay tests without a kernel).
//!
//! Keys and values are the ABI types of `havip_common` (mirrored from
//! `havip-ebpf/bpf/havip_abi.h`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{
        lpm_trie::Key, Array, DevMapHash, HashMap, HashOfMaps, LpmTrie, Map, MapData, PerCpuArray,
        PerCpuValues,
    },
    programs::{TestRun, TestRunOptions, Xdp},
    Pod,
};
use aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_DEVMAP_HASH;
use havip_common::{
    BcastPrefix, BcastRemotes, BcastSubnet, BcastVnic, EipBinding, EipKey, GlobalCounter, HolderWrite,
    MemberInfo, MemberKey, SubnetCounter, SubnetCounters, UnderlayPort, UplinkPort, VipConfig, VipCounter,
    VipCounters, VipKey, VipNat, VipRef, VipState, VrrpSeen, VtepInfo, VtepKey, DEFAULT_MAX_VNICS,
    PROG_HOLDER_WRITE,
};

/// `xdp_action` verdicts `xdp_holder_write` answers with.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Who holds a VIP, as [`Maps::write_holder`] writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderTarget {
    /// No holder: traffic to the VIP is dropped (and counted).
    None,
    /// A holder on this host: its vNIC's ifindex and its guest MAC.
    Local {
        /// The holder's vNIC ifindex (host side), non-zero.
        ifindex: u32,
        /// The holder's guest MAC (or the VRRP virtual MAC it claimed from).
        mac: [u8; 6],
    },
    /// A holder on another host: that host's VTEP (underlay address), the
    /// holder's MAC, and the underlay next hop's MAC towards the VTEP.
    Remote {
        /// The VTEP of the holder's host, non-zero.
        vtep: Ipv4Addr,
        /// The holder's guest MAC: the inner destination of encapsulated frames.
        mac: [u8; 6],
        /// The next hop's MAC (the `vteps` entry of `vtep`), kept with the
        /// holder so encapsulation needs no lookup; all zero: not known yet,
        /// the kernel looks it up per packet.
        next_hop: [u8; 6],
    },
}

impl HolderTarget {
    /// The holder a `vip_state` entry names.
    pub fn of(state: &VipState) -> Self {
        match (state.holder_ifindex, state.remote_holder()) {
            (0, Some(vtep)) => Self::Remote { vtep, mac: state.holder_mac, next_hop: state.holder_next_hop },
            (0, None) => Self::None,
            (ifindex, _) => Self::Local { ifindex, mac: state.holder_mac },
        }
    }

    /// `(ifindex, vtep, mac, next_hop)` as `vip_state` and `holder_write` hold them.
    pub fn fields(self) -> (u32, [u8; 4], [u8; 6], [u8; 6]) {
        match self {
            Self::None => (0, [0; 4], [0; 6], [0; 6]),
            Self::Local { ifindex, mac } => (ifindex, [0; 4], mac, [0; 6]),
            Self::Remote { vtep, mac, next_hop } => (0, vtep.octets(), mac, next_hop),
        }
    }
}

/// Which of a broadcast-domain subnet's two devmaps (`HASH_OF_MAPS` slot -> `DEVMAP_HASH` of
/// ifindexes): what a redirect with `BPF_F_BROADCAST` sends a copy to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BcastDevmap {
    /// `bcast_ports[slot]`: the subnet's vNICs on this host; what comes from other hosts (and
    /// what a guest sends when no other host has vNICs in the subnet) is replicated into it.
    Ports,
    /// `bcast_flood[slot]`: the same vNICs plus the replicator port when other hosts have vNICs
    /// in the subnet; what a guest sends is replicated into it.
    Flood,
}

impl BcastDevmap {
    /// Both, in the order the plan lists them.
    pub const ALL: [BcastDevmap; 2] = [Self::Ports, Self::Flood];

    /// The outer map's name (`havip_common::maps`).
    pub fn map_name(self) -> &'static str {
        match self {
            Self::Ports => havip_common::maps::BCAST_PORTS,
            Self::Flood => havip_common::maps::BCAST_FLOOD,
        }
    }
}

/// The `bcast_prefixes` key of a subnet (`network` with its host bits clear, `prefix` bits).
pub fn bcast_prefix(network: Ipv4Addr, prefix: u8) -> BcastPrefix {
    BcastPrefix { prefixlen: u32::from(prefix), addr: network.octets() }
}

/// The `bcast_subnets` entry's network and netmask as a `bcast_prefixes` key (the prefix
/// length counted from the mask); `None` for an all-zero (free) entry.
pub fn prefix_of(subnet: &BcastSubnet) -> Option<BcastPrefix> {
    (*subnet != BcastSubnet::default()).then(|| BcastPrefix {
        prefixlen: u32::from_be_bytes(subnet.mask).leading_ones(),
        addr: subnet.network,
    })
}

/// One hash map of the data plane: key -> value.
pub trait Table<K, V>: Send {
    /// Every entry, ordered by key.
    fn entries(&self) -> Result<BTreeMap<K, V>>;
    /// The value at `key`, if any.
    fn get(&self, key: &K) -> Option<V>;
    /// Creates or replaces the entry.
    fn set(&mut self, key: K, value: V) -> Result<()>;
    /// Creates the entry; fails if the key exists (`BPF_NOEXIST`).
    fn insert_new(&mut self, key: K, value: V) -> Result<()>;
    /// Removes the entry; an absent key is an error.
    fn remove(&mut self, key: &K) -> Result<()>;
}

/// The maps of `havip_abi.h` as the control plane reads and writes them.
///
/// `vip_state` is read and written under the value's spin lock
/// (`BPF_F_LOCK`), so a claim the kernel makes concurrently is never torn.
/// Counters are per CPU; they are handed out summed.
pub trait Maps: Send {
    /// `vips`: VIP -> its slot in `vip_state` and `vip_stats`.
    fn vips(&mut self) -> &mut dyn Table<VipKey, VipRef>;
    /// `members`: (VIP, vNIC ifindex) -> the member's guest MAC.
    fn members(&mut self) -> &mut dyn Table<MemberKey, MemberInfo>;
    /// `eips`: EIP -> the VIP it is bound to.
    fn eips(&mut self) -> &mut dyn Table<EipKey, EipBinding>;
    /// `vip_nat`: VIP -> its EIP and the subnet its traffic must leave.
    fn vip_nat(&mut self) -> &mut dyn Table<VipKey, VipNat>;
    /// `vrrp`: (VIP, member vNIC) -> the last VRRP advert it sent for the VIP.
    fn vrrp(&mut self) -> &mut dyn Table<MemberKey, VrrpSeen>;
    /// `vteps`: another host's VTEP -> the underlay next hop's MAC towards it.
    fn vteps(&mut self) -> &mut dyn Table<VtepKey, VtepInfo>;
    /// `bcast_vnics`: a vNIC's ifindex -> its broadcast-domain subnet's slot and storm bucket.
    /// Written whole with `lock` and `tat_ns` zero (a write restarts the bucket); the kernel
    /// changes `tat_ns` on every replicated frame, so compare only `subnet`, `rate_pps`, `burst`.
    fn bcast_vnics(&mut self) -> &mut dyn Table<u32, BcastVnic>;

    /// `tx_ports`: the ifindexes redirects may go to.
    fn tx_ports(&self) -> Result<BTreeSet<u32>>;
    /// Lets redirects go to `ifindex`.
    fn add_tx_port(&mut self, ifindex: u32) -> Result<()>;
    /// Takes `ifindex` out of `tx_ports`; an absent one is an error.
    fn remove_tx_port(&mut self, ifindex: u32) -> Result<()>;

    /// `vip_state[slot]`, read under its lock.
    fn vip_state(&self, slot: u32) -> Result<VipState>;
    /// Writes `vip_state[slot]` under its lock.
    fn set_vip_state(&mut self, slot: u32, state: VipState) -> Result<()>;

    /// Sets the holder of `slot` to `target` (local, on another host, or
    /// none) if its epoch is still `expect_epoch`, atomically with the
    /// kernel's claims; the epoch then grows by one. `Ok(false)`: the epoch
    /// had moved (a claim came first) and nothing was written.
    fn write_holder(&mut self, slot: u32, expect_epoch: u64, target: HolderTarget) -> Result<bool>;

    /// `vip_config[slot]`: the HAVIP's settings the kernel applies.
    fn vip_config(&self, slot: u32) -> Result<VipConfig>;
    /// Writes `vip_config[slot]` (no lock: the kernel only reads it, on the claim path).
    fn set_vip_config(&mut self, slot: u32, config: VipConfig) -> Result<()>;

    /// `uplink[0]`: the uplink port, all zero when there is none.
    fn uplink(&self) -> Result<UplinkPort>;
    /// Writes `uplink[0]` (all zero: no uplink).
    fn set_uplink(&mut self, port: UplinkPort) -> Result<()>;

    /// `underlay[0]`: the underlay port, all zero when there is none (one host).
    fn underlay(&self) -> Result<UnderlayPort>;
    /// Writes `underlay[0]` (all zero: no underlay).
    fn set_underlay(&mut self, port: UnderlayPort) -> Result<()>;

    /// Zeroes `vip_stats[slot]` on every CPU (a slot given to a new VIP).
    fn reset_vip_counters(&mut self, slot: u32) -> Result<()>;
    /// `vip_stats[slot]`, summed over CPUs.
    fn vip_counters(&self, slot: u32) -> Result<VipCounters>;
    /// `global_stats[counter]`, summed over CPUs.
    fn global_counter(&self, counter: GlobalCounter) -> Result<u64>;

    /// `bcast_subnets[slot]`: the subnet at `slot` (all zero: a free slot).
    fn bcast_subnet(&self, slot: u32) -> Result<BcastSubnet>;
    /// Writes `bcast_subnets[slot]` (all zero frees it: an array's entries cannot be deleted).
    fn set_bcast_subnet(&mut self, slot: u32, subnet: BcastSubnet) -> Result<()>;
    /// `bcast_remotes[slot]`: the other hosts' VTEPs the subnet's frames are replicated to.
    fn bcast_remotes(&self, slot: u32) -> Result<BcastRemotes>;
    /// Writes `bcast_remotes[slot]` (all zero frees it).
    fn set_bcast_remotes(&mut self, slot: u32, remotes: BcastRemotes) -> Result<()>;

    /// Every `bcast_prefixes` entry: a subnet's prefix -> its slot.
    fn bcast_prefixes(&self) -> Result<BTreeMap<BcastPrefix, u32>>;
    /// Creates or replaces the exact entry `prefix` -> `slot`.
    fn set_bcast_prefix(&mut self, prefix: BcastPrefix, slot: u32) -> Result<()>;
    /// Removes the exact entry `prefix` (never a longest-prefix match); an absent one is an error.
    fn remove_bcast_prefix(&mut self, prefix: BcastPrefix) -> Result<()>;

    /// The slots that have a devmap of kind `kind`, each with the ifindexes in it.
    fn bcast_devmaps(&self, kind: BcastDevmap) -> Result<BTreeMap<u32, BTreeSet<u32>>>;
    /// Creates an empty devmap for `slot` and puts it in the outer map of `kind`; fails if the
    /// slot has one (`BPF_NOEXIST`).
    fn add_bcast_devmap(&mut self, kind: BcastDevmap, slot: u32) -> Result<()>;
    /// Takes the slot's devmap out of the outer map of `kind` (the kernel frees it once no
    /// program runs on it); an absent one is an error.
    fn remove_bcast_devmap(&mut self, kind: BcastDevmap, slot: u32) -> Result<()>;
    /// Adds `ifindex` (a vNIC, or the replicator port) to the slot's devmap of `kind`.
    fn add_bcast_port(&mut self, kind: BcastDevmap, slot: u32, ifindex: u32) -> Result<()>;
    /// Takes `ifindex` out of the slot's devmap of `kind`; an absent one is an error.
    fn remove_bcast_port(&mut self, kind: BcastDevmap, slot: u32, ifindex: u32) -> Result<()>;

    /// The slot of the broadcast-domain subnet `network`/`prefix` on this host: the exact
    /// `bcast_prefixes` entry (a wider or narrower subnet's does not count); `None` when the
    /// subnet is not a broadcast domain here (unicast, or no vNIC of it on this host).
    fn subnet_slot(&self, network: Ipv4Addr, prefix: u8) -> Option<u32>;
    /// `subnet_stats[slot]`, summed over CPUs (frames; see [`SubnetCounter`]).
    fn subnet_counters(&self, slot: u32) -> Result<SubnetCounters>;
    /// Zeroes `subnet_stats[slot]` on every CPU (a slot given to another subnet).
    fn reset_subnet_counters(&mut self, slot: u32) -> Result<()>;

    /// `vips[vip]`: the VIP's slot, if the VIP is in the maps (a read that
    /// needs no `&mut`, unlike [`Maps::vips`]).
    fn vip_slot(&self, vip: &VipKey) -> Option<u32>;

    /// The state of `vip`: its slot from `vips`, then `vip_state[slot]`;
    /// `None` if the VIP is not in the maps.
    fn vip(&self, vip: &VipKey) -> Option<VipState> {
        self.vip_state(self.vip_slot(vip)?).ok()
    }
}

/// The hash-map accessors of [`Maps`] for an implementation whose fields
/// are named after the maps (the kernel's and the fake).
macro_rules! table_accessors {
    () => {
        fn vips(&mut self) -> &mut dyn Table<VipKey, VipRef> {
            &mut self.vips
        }

        fn members(&mut self) -> &mut dyn Table<MemberKey, MemberInfo> {
            &mut self.members
        }

        fn eips(&mut self) -> &mut dyn Table<EipKey, EipBinding> {
            &mut self.eips
        }

        fn vip_nat(&mut self) -> &mut dyn Table<VipKey, VipNat> {
            &mut self.vip_nat
        }

        fn vrrp(&mut self) -> &mut dyn Table<MemberKey, VrrpSeen> {
            &mut self.vrrp
        }

        fn vteps(&mut self) -> &mut dyn Table<VtepKey, VtepInfo> {
            &mut self.vteps
        }

        fn bcast_vnics(&mut self) -> &mut dyn Table<u32, BcastVnic> {
            &mut self.bcast_vnics
        }
    };
}
pub(crate) use table_accessors;

/// Adds up per-CPU counter records.
fn sum_counters<'a>(per_cpu: impl IntoIterator<Item = &'a VipCounters>) -> VipCounters {
    let mut sum = VipCounters::default();
    for c in per_cpu {
        for i in VipCounter::ALL {
            sum.c[i as usize] += c.get(i);
        }
    }
    sum
}

/// Adds up per-CPU subnet counter records.
pub(crate) fn sum_subnet_counters<'a>(
    per_cpu: impl IntoIterator<Item = &'a SubnetCounters>,
) -> SubnetCounters {
    let mut sum = SubnetCounters::default();
    for c in per_cpu {
        for i in SubnetCounter::ALL {
            sum.c[i as usize] += c.get(i);
        }
    }
    sum
}

/// Fails if the key exists (`BPF_NOEXIST`).
const BPF_NOEXIST: u64 = 1;
/// Reads or writes a value under its `bpf_spin_lock` (`BPF_F_LOCK`).
const BPF_F_LOCK: u64 = 4;

/// The pinned maps in the kernel, typed (aya). Fields are public for the
/// bench, which fills maps faster than through [`Maps`].
pub struct KernelMaps {
    /// `vips`: VIP -> its slot.
    pub vips: HashMap<MapData, VipKey, VipRef>,
    /// `vip_state`: slot -> holder, epoch and times; written with `BPF_F_LOCK`.
    pub vip_state: Array<MapData, VipState>,
    /// `members`: (VIP, ifindex) -> the member's guest MAC.
    pub members: HashMap<MapData, MemberKey, MemberInfo>,
    /// `vip_config`: slot -> the HAVIP's `VIP_F_*` flags.
    pub vip_config: Array<MapData, VipConfig>,
    /// `vrrp`: (VIP, ifindex) -> the member's last VRRP advert.
    pub vrrp: HashMap<MapData, MemberKey, VrrpSeen>,
    /// `tx_ports`: the ifindexes redirects may go to (vNICs, the uplink).
    pub tx_ports: DevMapHash<MapData>,
    /// `vip_stats`: slot -> counters, one copy per CPU.
    pub vip_stats: PerCpuArray<MapData, VipCounters>,
    /// `global_stats`: [`GlobalCounter`] index -> count, one copy per CPU.
    pub global_stats: PerCpuArray<MapData, u64>,
    /// `eips`: EIP -> the VIP it is bound to.
    pub eips: HashMap<MapData, EipKey, EipBinding>,
    /// `vip_nat`: VIP -> its EIP and VPC subnet.
    pub vip_nat: HashMap<MapData, VipKey, VipNat>,
    /// `uplink`: one-entry array, the uplink port (ifindex 0: none).
    pub uplink: Array<MapData, UplinkPort>,
    /// `underlay`: one-entry array, the underlay port (ifindex 0: none).
    pub underlay: Array<MapData, UnderlayPort>,
    /// `vteps`: another host's VTEP -> the underlay next hop's MAC.
    pub vteps: HashMap<MapData, VtepKey, VtepInfo>,
    /// `xdp_holder_write`, run through BPF_PROG_TEST_RUN (`holder.h`).
    pub holder_write: Xdp,
    /// `bcast_vnics`: a vNIC's ifindex -> its subnet's slot and storm bucket.
    pub bcast_vnics: HashMap<MapData, u32, BcastVnic>,
    /// `bcast_subnets`: slot -> the subnet (network, mask, local ports, remote hosts).
    pub bcast_subnets: Array<MapData, BcastSubnet>,
    /// `bcast_prefixes`: LPM trie, (prefix length, network) -> slot.
    pub bcast_prefixes: LpmTrie<MapData, [u8; 4], u32>,
    /// `bcast_remotes`: slot -> the other hosts' VTEPs.
    pub bcast_remotes: Array<MapData, BcastRemotes>,
    /// `bcast_ports`: slot -> devmap of the subnet's vNICs here.
    pub bcast_ports: HashOfMaps<MapData, u32, DevMapHash<MapData>>,
    /// `bcast_flood`: slot -> devmap of the subnet's vNICs here and the replicator port.
    pub bcast_flood: HashOfMaps<MapData, u32, DevMapHash<MapData>>,
    /// `subnet_stats`: slot -> counters, one copy per CPU.
    pub subnet_stats: PerCpuArray<MapData, SubnetCounters>,
}

/// Capacity of every inner devmap of `bcast_ports`/`bcast_flood`, in ports: it must equal the
/// template's in the object (`HAVIP_DEFAULT_MAX_VNICS`), or the kernel refuses the insert (an
/// inner map must match the template's type, key and value size, flags and max_entries:
/// `bpf_map_meta_equal`). A subnet's ports are its vNICs on this host plus the replicator.
pub const BCAST_DEVMAP_ENTRIES: u32 = DEFAULT_MAX_VNICS;
/// The inner devmaps' flags: none, as the template's.
const BCAST_DEVMAP_FLAGS: u32 = 0;

impl KernelMaps {
    fn outer(&self, kind: BcastDevmap) -> &HashOfMaps<MapData, u32, DevMapHash<MapData>> {
        match kind {
            BcastDevmap::Ports => &self.bcast_ports,
            BcastDevmap::Flood => &self.bcast_flood,
        }
    }

    fn outer_mut(&mut self, kind: BcastDevmap) -> &mut HashOfMaps<MapData, u32, DevMapHash<MapData>> {
        match kind {
            BcastDevmap::Ports => &mut self.bcast_ports,
            BcastDevmap::Flood => &mut self.bcast_flood,
        }
    }

    /// The slot's inner devmap of `kind`, opened from its id (a new file descriptor each time,
    /// closed when it is dropped).
    fn inner(&self, kind: BcastDevmap, slot: u32) -> Result<DevMapHash<MapData>> {
        self.outer(kind).get(&slot, 0).with_context(|| format!("opening {}[{slot}]", kind.map_name()))
    }
}

/// A new, empty `DEVMAP_HASH` shaped as the `bcast_ports`/`bcast_flood` template: key ifindex
/// (4 bytes), value `struct bpf_devmap_val` (8 bytes), [`BCAST_DEVMAP_ENTRIES`] entries, no
/// flags. `name` is the kernel's name for it (at most 15 bytes). The one definition of that
/// shape: the kernel tests, the fuzz target and the bench make theirs here too.
pub fn new_bcast_devmap(name: &str) -> Result<DevMapHash<MapData>> {
    let obj = aya_obj::Map::new_from_params(
        BPF_MAP_TYPE_DEVMAP_HASH as u32,
        size_of::<u32>() as u32,
        8,
        BCAST_DEVMAP_ENTRIES,
        BCAST_DEVMAP_FLAGS,
    );
    let data = MapData::create(obj, name, None).with_context(|| format!("creating devmap {name}"))?;
    DevMapHash::try_from(Map::DevMapHash(data)).with_context(|| format!("devmap {name}"))
}

impl<K: Pod + Ord + Send + std::fmt::Debug, V: Pod + Send> Table<K, V> for HashMap<MapData, K, V> {
    fn entries(&self) -> Result<BTreeMap<K, V>> {
        self.iter().collect::<Result<_, _>>().context("listing a hash map")
    }

    fn get(&self, key: &K) -> Option<V> {
        HashMap::get(self, key, 0).ok()
    }

    fn set(&mut self, key: K, value: V) -> Result<()> {
        self.insert(key, value, 0).with_context(|| format!("setting entry {key:?}"))
    }

    fn insert_new(&mut self, key: K, value: V) -> Result<()> {
        self.insert(key, value, BPF_NOEXIST).with_context(|| format!("adding entry {key:?}"))
    }

    fn remove(&mut self, key: &K) -> Result<()> {
        HashMap::remove(self, key).with_context(|| format!("removing entry {key:?}"))
    }
}

impl Maps for KernelMaps {
    table_accessors!();

    fn vip_slot(&self, vip: &VipKey) -> Option<u32> {
        self.vips.get(vip, 0).ok().map(|r| r.slot)
    }

    fn tx_ports(&self) -> Result<BTreeSet<u32>> {
        self.tx_ports.keys().collect::<Result<_, _>>().context("listing tx_ports")
    }

    fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        // The devmap's value is the egress ifindex: the key itself.
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to tx_ports"))
    }

    fn remove_tx_port(&mut self, ifindex: u32) -> Result<()> {
        self.tx_ports.remove(ifindex).with_context(|| format!("removing ifindex {ifindex} from tx_ports"))
    }

    fn vip_state(&self, slot: u32) -> Result<VipState> {
        self.vip_state.get(&slot, BPF_F_LOCK).with_context(|| format!("reading vip_state[{slot}]"))
    }

    fn set_vip_state(&mut self, slot: u32, state: VipState) -> Result<()> {
        self.vip_state
            .set(slot, state, BPF_F_LOCK)
            .with_context(|| format!("writing vip_state[{slot}] (is dataplane.max_vips large enough?)"))
    }

    fn write_holder(&mut self, slot: u32, expect_epoch: u64, target: HolderTarget) -> Result<bool> {
        let (ifindex, vtep, mac, next_hop) = target.fields();
        let request =
            HolderWrite { slot, ifindex, expect_epoch, mac, _pad: [0; 2], vtep, next_hop, _pad2: [0; 6] }
                .to_bytes();
        let run = self
            .holder_write
            .test_run(TestRunOptions { data_in: Some(&request), ..TestRunOptions::default() })
            .with_context(|| format!("running {PROG_HOLDER_WRITE} for slot {slot}"))?;
        match run.return_value {
            XDP_PASS => Ok(true),
            XDP_DROP => Ok(false),
            v => bail!("{PROG_HOLDER_WRITE} refused slot {slot} (verdict {v})"),
        }
    }

    fn vip_config(&self, slot: u32) -> Result<VipConfig> {
        self.vip_config.get(&slot, 0).with_context(|| format!("reading vip_config[{slot}]"))
    }

    fn set_vip_config(&mut self, slot: u32, config: VipConfig) -> Result<()> {
        self.vip_config.set(slot, config, 0).with_context(|| format!("writing vip_config[{slot}]"))
    }

    fn uplink(&self) -> Result<UplinkPort> {
        self.uplink.get(&0, 0).context("reading uplink")
    }

    fn set_uplink(&mut self, port: UplinkPort) -> Result<()> {
        self.uplink.set(0, port, 0).context("setting uplink")
    }

    fn underlay(&self) -> Result<UnderlayPort> {
        self.underlay.get(&0, 0).context("reading underlay")
    }

    fn set_underlay(&mut self, port: UnderlayPort) -> Result<()> {
        self.underlay.set(0, port, 0).context("setting underlay")
    }

    fn reset_vip_counters(&mut self, slot: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let zeros = PerCpuValues::try_from(vec![VipCounters::default(); cpus]).context("per-CPU values")?;
        self.vip_stats.set(slot, zeros, 0).with_context(|| format!("zeroing vip_stats[{slot}]"))
    }

    fn vip_counters(&self, slot: u32) -> Result<VipCounters> {
        let per_cpu = self.vip_stats.get(&slot, 0).with_context(|| format!("reading vip_stats[{slot}]"))?;
        Ok(sum_counters(per_cpu.iter()))
    }

    fn global_counter(&self, counter: GlobalCounter) -> Result<u64> {
        let per_cpu = self
            .global_stats
            .get(&(counter as u32), 0)
            .with_context(|| format!("reading global_stats[{counter:?}]"))?;
        Ok(per_cpu.iter().sum())
    }

    fn bcast_subnet(&self, slot: u32) -> Result<BcastSubnet> {
        self.bcast_subnets.get(&slot, 0).with_context(|| format!("reading bcast_subnets[{slot}]"))
    }

    fn set_bcast_subnet(&mut self, slot: u32, subnet: BcastSubnet) -> Result<()> {
        self.bcast_subnets.set(slot, subnet, 0).with_context(|| format!("writing bcast_subnets[{slot}]"))
    }

    fn bcast_remotes(&self, slot: u32) -> Result<BcastRemotes> {
        self.bcast_remotes.get(&slot, 0).with_context(|| format!("reading bcast_remotes[{slot}]"))
    }

    fn set_bcast_remotes(&mut self, slot: u32, remotes: BcastRemotes) -> Result<()> {
        self.bcast_remotes.set(slot, remotes, 0).with_context(|| format!("writing bcast_remotes[{slot}]"))
    }

    fn bcast_prefixes(&self) -> Result<BTreeMap<BcastPrefix, u32>> {
        let mut all = BTreeMap::new();
        for entry in self.bcast_prefixes.iter() {
            let (key, slot) = entry.context("listing bcast_prefixes")?;
            all.insert(BcastPrefix { prefixlen: key.prefix_len(), addr: key.data() }, slot);
        }
        Ok(all)
    }

    fn set_bcast_prefix(&mut self, prefix: BcastPrefix, slot: u32) -> Result<()> {
        self.bcast_prefixes
            .insert(&Key::new(prefix.prefixlen, prefix.addr), slot, 0)
            .with_context(|| format!("setting bcast_prefixes {prefix:?} -> {slot}"))
    }

    fn remove_bcast_prefix(&mut self, prefix: BcastPrefix) -> Result<()> {
        // Exact: an LPM trie's delete matches prefix length and address.
        self.bcast_prefixes
            .remove(&Key::new(prefix.prefixlen, prefix.addr))
            .with_context(|| format!("removing bcast_prefixes {prefix:?}"))
    }

    fn bcast_devmaps(&self, kind: BcastDevmap) -> Result<BTreeMap<u32, BTreeSet<u32>>> {
        let slots: Vec<u32> = self
            .outer(kind)
            .keys()
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", kind.map_name()))?;
        let mut all = BTreeMap::new();
        for slot in slots {
            let inner = match self.outer(kind).get(&slot, 0) {
                Ok(inner) => inner,
                // Removed between the listing and the lookup (never: only the agent writes).
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(e).with_context(|| format!("opening {}[{slot}]", kind.map_name())),
            };
            let ports = inner
                .keys()
                .collect::<Result<_, _>>()
                .with_context(|| format!("listing {}[{slot}]", kind.map_name()))?;
            all.insert(slot, ports);
        }
        Ok(all)
    }

    fn add_bcast_devmap(&mut self, kind: BcastDevmap, slot: u32) -> Result<()> {
        let short = match kind {
            BcastDevmap::Ports => "bc_ports",
            BcastDevmap::Flood => "bc_flood",
        };
        let inner = new_bcast_devmap(&format!("{short}_{slot}"))?;
        // The outer map holds its own reference: the inner map lives on once `inner` (our file
        // descriptor) is dropped, and a restarted agent finds it through the pinned outer map.
        self.outer_mut(kind).insert(slot, &inner, BPF_NOEXIST).with_context(|| {
            format!(
                "adding {}[{slot}] (an inner map must match the object's template: {BCAST_DEVMAP_ENTRIES} \
                 entries, no flags)",
                kind.map_name()
            )
        })
    }

    fn remove_bcast_devmap(&mut self, kind: BcastDevmap, slot: u32) -> Result<()> {
        self.outer_mut(kind).remove(&slot).with_context(|| format!("removing {}[{slot}]", kind.map_name()))
    }

    fn add_bcast_port(&mut self, kind: BcastDevmap, slot: u32, ifindex: u32) -> Result<()> {
        // The devmap's value is the egress ifindex: the key itself.
        self.inner(kind, slot)?
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to {}[{slot}]", kind.map_name()))
    }

    fn remove_bcast_port(&mut self, kind: BcastDevmap, slot: u32, ifindex: u32) -> Result<()> {
        self.inner(kind, slot)?
            .remove(ifindex)
            .with_context(|| format!("removing ifindex {ifindex} from {}[{slot}]", kind.map_name()))
    }

    fn subnet_slot(&self, network: Ipv4Addr, prefix: u8) -> Option<u32> {
        // The trie answers with the longest entry no longer than `prefix` that covers
        // `network`: exact only if that slot's subnet is this one (`bcast_subnets` is written
        // before the prefix and cleared after it).
        let want = bcast_prefix(network, prefix);
        let slot = self.bcast_prefixes.get(&Key::new(want.prefixlen, want.addr), 0).ok()?;
        let subnet = self.bcast_subnet(slot).ok()?;
        (prefix_of(&subnet) == Some(want)).then_some(slot)
    }

    fn subnet_counters(&self, slot: u32) -> Result<SubnetCounters> {
        let per_cpu =
            self.subnet_stats.get(&slot, 0).with_context(|| format!("reading subnet_stats[{slot}]"))?;
        Ok(sum_subnet_counters(per_cpu.iter()))
    }

    fn reset_subnet_counters(&mut self, slot: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        let zeros =
            PerCpuValues::try_from(vec![SubnetCounters::default(); cpus]).context("per-CPU values")?;
        self.subnet_stats.set(slot, zeros, 0).with_context(|| format!("zeroing subnet_stats[{slot}]"))
    }
}
