//! [`Maps`] in memory: what the plan, the reconciler and the observer see in
//! replay tests, without a kernel. It keeps the maps' contracts that the
//! control plane relies on (`BPF_NOEXIST`, removing an absent key fails,
//! array slots exist up to `max_vips`), and the tests may play the kernel
//! by writing `vip_state` as a claim would.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use havip_common::{
    EipBinding, EipKey, GlobalCounter, MemberInfo, MemberKey, UnderlayPort, UplinkPort, VipConfig,
    VipCounters, VipKey, VipNat, VipRef, VipState, VrrpSeen, VtepInfo, VtepKey,
};

use super::maps::{table_accessors, HolderTarget, Maps, Table};

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
}

impl FakeMaps {
    /// Empty maps whose arrays hold `max_vips` slots.
    pub fn new(max_vips: u32) -> Self {
        Self { max_vips, ..Self::default() }
    }

    fn check_slot(&self, slot: u32) -> Result<()> {
        if slot >= self.max_vips {
            bail!("slot {slot} is beyond the array's {} entries", self.max_vips);
        }
        Ok(())
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
}
