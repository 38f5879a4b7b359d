//! The host's underlay NIC as the VXLAN data path needs it: its ifindex,
//! MAC, MTU and IPv4 address (this host's VTEP), and the MAC of the underlay
//! next hop towards another host's VTEP, read from the kernel's neighbour
//! table over rtnetlink (the kernel is asked to resolve a missing one, as
//! for the uplink's next hop, [`super::uplink`]).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use rtnetlink::Handle;

use super::uplink::{link_facts, neighbour, nudge};

/// The underlay NIC as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnderlayNic {
    /// Its ifindex.
    pub ifindex: u32,
    /// Its own MAC: the outer Ethernet source of encapsulated frames.
    pub mac: [u8; 6],
    /// Its MTU, bytes: an encapsulated frame's outer IPv4 packet must fit it.
    pub mtu: u32,
    /// Its (first) IPv4 address: this host's VTEP.
    pub addr: Ipv4Addr,
}

/// The first IPv4 address on `ifindex`, if any.
async fn first_ipv4(handle: &Handle, ifindex: u32) -> Result<Option<Ipv4Addr>> {
    let mut dump = handle.address().get().set_link_index_filter(ifindex).execute();
    while let Some(msg) = dump.try_next().await.context("dumping addresses")? {
        // The filter is applied here too: older kernels ignore it in dumps.
        if msg.header.index != ifindex {
            continue;
        }
        let found = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The underlay NIC `name` now: `None` while it is missing or has no IPv4 address.
pub async fn nic(handle: &Handle, name: &str) -> Result<Option<UnderlayNic>> {
    let Some((ifindex, mac, mtu)) = link_facts(handle, name).await? else { return Ok(None) };
    let addr = first_ipv4(handle, ifindex).await.with_context(|| format!("the IPv4 address of {name}"))?;
    Ok(addr.map(|addr| UnderlayNic { ifindex, mac, mtu, addr }))
}

/// The MAC of the next hop towards `peer` (another host's VTEP, on the
/// underlay NIC's segment): the kernel is asked to (re)resolve it first, so
/// a missing entry appears on a later call. `None` while unresolved.
pub async fn next_hop_mac(handle: &Handle, ifindex: u32, peer: Ipv4Addr) -> Result<Option<[u8; 6]>> {
    nudge(handle, ifindex, peer).await?;
    neighbour(handle, ifindex, peer).await
}
