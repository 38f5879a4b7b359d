//! [`Maps`] in memory: what the plan, the reconciler and the observer see in
//! replay tests, without a kernel. It keeps the maps' contracts that the
//! control plane relies on (`BPF_NOEXIST`, removing an absent key fails,
//! array slots exist up to `max_vips` (the `bcast_*` arrays' up to
//! `max_subnets`), an inner devmap must exist before ports go in it), and the
//! tests may play the kernel by writing `vip_state` as a claim would.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{bail, Context, Result};
use havip_common::{
    BcastPrefix, BcastRemotes, BcastSubnet, BcastVnic, EipBinding, EipKey, GlobalCounter, MemberInfo,
    MemberKey, SubnetCounter, SubnetCounters, UnderlayPort, UplinkPort, VipConfig, VipCounters, VipKey,
    VipNat, VipRef, VipState, VrrpSeen, VtepInfo, VtepKey, DEFAULT_MAX_SUBNETS,
};

use super::maps::{bcast_prefix, table_accessors, BcastDevmap, HolderTarget, Maps, Table};

impl<K: Ord + Copy + Send + std::fmt::Debug, V: Copy + Send> Table<K, V> for BTreeMap<K, V> {
    fn entries(&self) -> Result<BTreeMap<K, V>> {
        Ok(self.clone())
    }

    fn get(&self, key: &K) -> Option<V> {
        BTreeMap::get(self, key).copied()
    }

    fn set(&mut self, key: K, value: V) -> Result<()> {
        self.insert(key, value);
        Ok(())
    }

    fn insert_new(&mut self, key: K, value: V) -> Result<()> {
        if self.contains_key(&key) {
            bail!("adding entry {key:?}: it exists (BPF_NOEXIST)");
        }
        self.insert(key, value);
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<()> {
        BTreeMap::remove(self, key).map(drop).with_context(|| format!("removing entry {key:?}: absent"))
    }
}

/// The maps as plain collections; public so a test can set up and inspect
/// any state.
#[derive(Clone, Debug, Default)]
pub struct FakeMaps {
    /// `vips`: VIP -> its slot.
    pub vips: BTreeMap<VipKey, VipRef>,
    /// Slot -> state; a slot never written reads as all zero, as in an array map.
    pub vip_state: BTreeMap<u32, VipState>,
    /// `members`: (VIP, ifindex) -> the member's guest MAC.
    pub members: BTreeMap<MemberKey, MemberInfo>,
    /// Slot -> settings; a slot never written reads as all zero.
    pub vip_config: BTreeMap<u32, VipConfig>,
    /// `vrrp`: (VIP, ifindex) -> the member's last VRRP advert.
    pub vrrp: BTreeMap<MemberKey, VrrpSeen>,
    /// `tx_ports`: the ifindexes redirects may go to.
    pub tx_ports: BTreeSet<u32>,
    /// Slot -> counters (already summed over CPUs).
    pub vip_stats: BTreeMap<u32, VipCounters>,
    /// `global_stats`: [`GlobalCounter`] index -> count, summed over CPUs.
    pub global_stats: BTreeMap<u32, u64>,
    /// `eips`: EIP -> the VIP it is bound to.
    pub eips: BTreeMap<EipKey, EipBinding>,
    /// `vip_nat`: VIP -> its EIP and VPC subnet.
    pub vip_nat: BTreeMap<VipKey, VipNat>,
    /// `uplink[0]`: the uplink port; all zero when there is none.
    pub uplink: UplinkPort,
    /// `underlay[0]`: the underlay port; all zero when there is none.
    pub underlay: UnderlayPort,
    /// `vteps`: another host's VTEP -> the underlay next hop's MAC.
    pub vteps: BTreeMap<VtepKey, VtepInfo>,
    /// The array maps' size (`dataplane.max_vips`).
    pub max_vips: u32,
    /// `bcast_vnics`: a vNIC's ifindex -> its subnet's slot and storm bucket.
    pub bcast_vnics: BTreeMap<u32, BcastVnic>,
    /// Slot -> subnet; a slot never written reads as all zero (free).
    pub bcast_subnets: BTreeMap<u32, BcastSubnet>,
    /// `bcast_prefixes`: exact prefix -> slot.
    pub bcast_prefixes: BTreeMap<BcastPrefix, u32>,
    /// Slot -> the other hosts' VTEPs; a slot never written reads as all zero.
    pub bcast_remotes: BTreeMap<u32, BcastRemotes>,
    /// `bcast_ports`: slot -> the ifindexes in its devmap.
    pub bcast_ports: BTreeMap<u32, BTreeSet<u32>>,
    /// `bcast_flood`: slot -> the ifindexes in its devmap.
    pub bcast_flood: BTreeMap<u32, BTreeSet<u32>>,
    /// Slot -> subnet counters (already summed over CPUs).
    pub subnet_stats: BTreeMap<u32, SubnetCounters>,
    /// The `bcast_*` arrays' size ([`DEFAULT_MAX_SUBNETS`] from [`FakeMaps::new`]).
    pub max_subnets: u32,
}

impl FakeMaps {
    /// Empty maps whose arrays hold `max_vips` slots (and [`DEFAULT_MAX_SUBNETS`] subnet slots).
    pub fn new(max_vips: u32) -> Self {
        Self { max_vips, max_subnets: DEFAULT_MAX_SUBNETS, ..Self::default() }
    }

    /// For tests of the read side: subnet `network/prefix` has slot `slot` here, and counter `i`
    /// of [`SubnetCounter::ALL`] reads `10 × (i + 1)` frames.
    pub fn with_counted_subnet(mut self, network: Ipv4Addr, prefix: u8, slot: u32) -> Self {
        self.bcast_prefixes.insert(bcast_prefix(network, prefix), slot);
        let mut counters = SubnetCounters::default();
        for (i, c) in SubnetCounter::ALL.iter().enumerate() {
            counters.c[*c as usize] = 10 * (i as u64 + 1);
        }
        self.subnet_stats.insert(slot, counters);
        self
    }

    fn check_slot(&self, slot: u32) -> Result<()> {
        if slot >= self.max_vips {
            bail!("slot {slot} is beyond the array's {} entries", self.max_vips);
        }
        Ok(())
    }

    fn check_subnet_slot(&self, slot: u32) -> Result<()> {
        if slot >= self.max_subnets {
            bail!("subnet slot {slot} is beyond the array's {} entries", self.max_subnets);
        }
        Ok(())
    }

    fn devmaps(&mut self, kind: BcastDevmap) -> &mut BTreeMap<u32, BTreeSet<u32>> {
        match kind {
            BcastDevmap::Ports => &mut self.bcast_ports,
            BcastDevmap::Flood => &mut self.bcast_flood,
        }
    }
}

impl Maps for FakeMaps {
    table_accessors!();

    fn vip_slot(&self, vip: &VipKey) -> Option<u32> {
        self.vips.get(vip).map(|r| r.slot)
    }

    fn tx_ports(&self) -> Result<BTreeSet<u32>> {
        Ok(self.tx_ports.clone())
    }

    fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        self.tx_ports.insert(ifindex);
        Ok(())
    }

    fn remove_tx_port(&mut self, ifindex: u32) -> Result<()> {
        if !self.tx_ports.remove(&ifindex) {
            bail!("removing ifindex {ifindex} from tx_ports: absent");
        }
        Ok(())
    }

    fn vip_state(&self, slot: u32) -> Result<VipState> {
        self.check_slot(slot)?;
        Ok(self.vip_state.get(&slot).copied().unwrap_or_default())
    }

    fn set_vip_state(&mut self, slot: u32, state: VipState) -> Result<()> {
        self.check_slot(slot)?;
        self.vip_state.insert(slot, state);
        Ok(())
    }

    fn write_holder(&mut self, slot: u32, expect_epoch: u64, target: HolderTarget) -> Result<bool> {
        let mut st = self.vip_state(slot)?;
        if st.epoch != expect_epoch {
            return Ok(false);
        }
        let (ifindex, vtep, mac, next_hop) = target.fields();
        (st.holder_ifindex, st.holder_vtep, st.holder_mac, st.holder_next_hop) =
            (ifindex, vtep, mac, next_hop);
        st.epoch = expect_epoch + 1;
        self.set_vip_state(slot, st)?;
        Ok(true)
    }

    fn vip_config(&self, slot: u32) -> Result<VipConfig> {
        self.check_slot(slot)?;
        Ok(self.vip_config.get(&slot).copied().unwrap_or_default())
    }

    fn set_vip_config(&mut self, slot: u32, config: VipConfig) -> Result<()> {
        self.check_slot(slot)?;
        self.vip_config.insert(slot, config);
        Ok(())
    }

    fn uplink(&self) -> Result<UplinkPort> {
        Ok(self.uplink)
    }

    fn set_uplink(&mut self, port: UplinkPort) -> Result<()> {
        self.uplink = port;
        Ok(())
    }

    fn underlay(&self) -> Result<UnderlayPort> {
        Ok(self.underlay)
    }

    fn set_underlay(&mut self, port: UnderlayPort) -> Result<()> {
        self.underlay = port;
        Ok(())
    }

    fn reset_vip_counters(&mut self, slot: u32) -> Result<()> {
        self.check_slot(slot)?;
        self.vip_stats.insert(slot, VipCounters::default());
        Ok(())
    }

    fn vip_counters(&self, slot: u32) -> Result<VipCounters> {
        self.check_slot(slot)?;
        Ok(self.vip_stats.get(&slot).copied().unwrap_or_default())
    }

    fn global_counter(&self, counter: GlobalCounter) -> Result<u64> {
        Ok(self.global_stats.get(&(counter as u32)).copied().unwrap_or(0))
    }

    fn bcast_subnet(&self, slot: u32) -> Result<BcastSubnet> {
        self.check_subnet_slot(slot)?;
        Ok(self.bcast_subnets.get(&slot).copied().unwrap_or_default())
    }

    fn set_bcast_subnet(&mut self, slot: u32, subnet: BcastSubnet) -> Result<()> {
        self.check_subnet_slot(slot)?;
        self.bcast_subnets.insert(slot, subnet);
        Ok(())
    }

    fn bcast_remotes(&self, slot: u32) -> Result<BcastRemotes> {
        self.check_subnet_slot(slot)?;
        Ok(self.bcast_remotes.get(&slot).copied().unwrap_or_default())
    }

    fn set_bcast_remotes(&mut self, slot: u32, remotes: BcastRemotes) -> Result<()> {
        self.check_subnet_slot(slot)?;
        self.bcast_remotes.insert(slot, remotes);
        Ok(())
    }

    fn bcast_prefixes(&self) -> Result<BTreeMap<BcastPrefix, u32>> {
        Ok(self.bcast_prefixes.clone())
    }

    fn set_bcast_prefix(&mut self, prefix: BcastPrefix, slot: u32) -> Result<()> {
        self.bcast_prefixes.insert(prefix, slot);
        Ok(())
    }

    fn remove_bcast_prefix(&mut self, prefix: BcastPrefix) -> Result<()> {
        self.bcast_prefixes
            .remove(&prefix)
            .map(drop)
            .with_context(|| format!("removing bcast_prefixes {prefix:?}: absent"))
    }

    fn bcast_devmaps(&self, kind: BcastDevmap) -> Result<BTreeMap<u32, BTreeSet<u32>>> {
        Ok(match kind {
            BcastDevmap::Ports => self.bcast_ports.clone(),
            BcastDevmap::Flood => self.bcast_flood.clone(),
        })
    }

    fn add_bcast_devmap(&mut self, kind: BcastDevmap, slot: u32) -> Result<()> {
        let maps = self.devmaps(kind);
        if maps.contains_key(&slot) {
            bail!("adding {}[{slot}]: it exists (BPF_NOEXIST)", kind.map_name());
        }
        maps.insert(slot, BTreeSet::new());
        Ok(())
    }

    fn remove_bcast_devmap(&mut self, kind: BcastDevmap, slot: u32) -> Result<()> {
        self.devmaps(kind)
            .remove(&slot)
            .map(drop)
            .with_context(|| format!("removing {}[{slot}]: absent", kind.map_name()))
    }

    fn add_bcast_port(&mut self, kind: BcastDevmap, slot: u32, ifindex: u32) -> Result<()> {
        let ports = self
            .devmaps(kind)
            .get_mut(&slot)
            .with_context(|| format!("{}[{slot}]: no devmap", kind.map_name()))?;
        ports.insert(ifindex);
        Ok(())
    }

    fn remove_bcast_port(&mut self, kind: BcastDevmap, slot: u32, ifindex: u32) -> Result<()> {
        let ports = self
            .devmaps(kind)
            .get_mut(&slot)
            .with_context(|| format!("{}[{slot}]: no devmap", kind.map_name()))?;
        if !ports.remove(&ifindex) {
            bail!("removing ifindex {ifindex} from {}[{slot}]: absent", kind.map_name());
        }
        Ok(())
    }

    fn subnet_slot(&self, network: Ipv4Addr, prefix: u8) -> Option<u32> {
        self.bcast_prefixes.get(&bcast_prefix(network, prefix)).copied()
    }

    fn subnet_counters(&self, slot: u32) -> Result<SubnetCounters> {
        self.check_subnet_slot(slot)?;
        Ok(self.subnet_stats.get(&slot).copied().unwrap_or_default())
    }

    fn reset_subnet_counters(&mut self, slot: u32) -> Result<()> {
        self.check_subnet_slot(slot)?;
        self.subnet_stats.insert(slot, SubnetCounters::default());
        Ok(())
    }
}
