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
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{TestRun, TestRunOptions, Xdp},
    Pod,
};
use havip_common::{
    EipBinding, EipKey, GlobalCounter, HolderWrite, MemberInfo, MemberKey, UnderlayPort, UplinkPort,
    VipConfig, VipCounter, VipCounters, VipKey, VipNat, VipRef, VipState, VrrpSeen, VtepInfo, VtepKey,
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
}
