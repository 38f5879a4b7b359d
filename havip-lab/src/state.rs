//! What the data plane believes, read straight from the agent's pinned maps:
//! the holder of a VIP and its counters.

use std::{ffi::CStr, net::Ipv4Addr, path::Path};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use havip_common::{maps, VipCounter, VipCounters, VipKey, VipRef, VipState, ABI_VERSION};

use crate::netns;

fn open(pin_dir: &Path, name: &str) -> Result<Map> {
    let path = pin_dir.join(format!("v{ABI_VERSION}")).join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("reading the type of {}", path.display()))
}

/// The VIP's state: its slot from `vips`, then `vip_state[slot]` (`None`
/// until the agent has written it).
pub fn vip_state(pin_dir: &Path, vip: Ipv4Addr) -> Result<Option<VipState>> {
    let vips: HashMap<_, VipKey, VipRef> = HashMap::try_from(open(pin_dir, maps::VIPS)?)?;
    let slot = match vips.get(&VipKey::from(vip), 0) {
        Ok(r) => r.slot,
        Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
        Err(e) => return Err(e).context("looking up the VIP in the vips map"),
    };
    let states: Array<_, VipState> = Array::try_from(open(pin_dir, maps::VIP_STATE)?)?;
    Ok(Some(states.get(&slot, 0).with_context(|| format!("reading vip_state[{slot}]"))?))
}

/// The VIP's counters, summed over CPUs.
pub fn vip_counters(pin_dir: &Path, vip: Ipv4Addr) -> Result<VipCounters> {
    let state = vip_state(pin_dir, vip)?.with_context(|| format!("{vip} is not in the maps"))?;
    let stats: PerCpuArray<_, VipCounters> = PerCpuArray::try_from(open(pin_dir, maps::VIP_STATS)?)?;
    let per_cpu = stats.get(&state.slot, 0).context("reading vip_stats")?;
    let mut sum = VipCounters::default();
    for cpu in per_cpu.iter() {
        for c in VipCounter::ALL {
            sum.c[c as usize] += cpu.get(c);
        }
    }
    Ok(sum)
}

/// The name of interface `ifindex` in namespace `ns`.
pub fn ifname(ns: &str, ifindex: u32) -> Result<String> {
    netns::run_in(ns, move || {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
        if p.is_null() {
            anyhow::bail!("no interface with ifindex {ifindex}");
        }
        // SAFETY: on success buf holds a NUL-terminated name.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
    })
}
