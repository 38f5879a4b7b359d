//! The host's uplink as the EIP data path needs it: its ifindex and MAC,
//! and the MAC of its next hop, read from the kernel's neighbour table over
//! rtnetlink and kept up to date (the next hop may change its MAC, or its
//! entry may age out).

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::{
    link::LinkAttribute,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    AddressFamily,
};
use rtnetlink::Handle;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::datapath::plan::Uplink;

/// How often the neighbour table is read again.
const REFRESH: Duration = Duration::from_secs(1);

/// What the operator configures: the uplink NIC and its next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkSpec {
    /// The uplink NIC's interface name (`[uplink] name`).
    pub name: String,
    /// The next hop's IPv4 address (`[uplink] next_hop`); its MAC comes from the neighbour table.
    pub next_hop: Ipv4Addr,
}

/// The link named `name`: its ifindex, MAC and MTU (bytes); `None` if there
/// is no such link (or it has no Ethernet address).
pub(crate) async fn link_facts(handle: &Handle, name: &str) -> Result<Option<(u32, [u8; 6], u32)>> {
    let found = handle.link().get().match_name(name.to_string()).execute().try_next().await;
    let msg = match found {
        Ok(Some(msg)) => msg,
        // The kernel answers ENODEV for a name it does not know.
        Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("looking up link {name}")),
    };
    let (mut mac, mut mtu) = (None, 0);
    for a in &msg.attributes {
        match a {
            LinkAttribute::Address(m) => mac = <[u8; 6]>::try_from(m.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    Ok(mac.map(|mac| (msg.header.index, mac, mtu)))
}

/// The next hop's MAC if the kernel holds a usable entry for it.
fn usable_mac(msg: &NeighbourMessage, ifindex: u32, ip: Ipv4Addr) -> Option<[u8; 6]> {
    let usable = matches!(
        msg.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    if msg.header.ifindex != ifindex || !usable {
        return None;
    }
    let mut dst = None;
    let mut mac = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(*d),
            NeighbourAttribute::LinkLayerAddress(m) => mac = <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => {}
        }
    }
    (dst == Some(ip)).then_some(mac).flatten()
}

/// The MAC of `ip` on `ifindex` if the neighbour table holds a usable entry.
pub(crate) async fn neighbour(handle: &Handle, ifindex: u32, ip: Ipv4Addr) -> Result<Option<[u8; 6]>> {
    let mut dump = handle.neighbours().get().set_address_family(AddressFamily::Inet).execute();
    while let Some(msg) = dump.try_next().await.context("dumping the neighbour table")? {
        if let Some(mac) = usable_mac(&msg, ifindex, ip) {
            return Ok(Some(mac));
        }
    }
    Ok(None)
}

/// Asks the kernel to (re)resolve `ip` on `ifindex` (NTF_USE): it sends the
/// ARP request itself, as it would for routed traffic, and keeps the entry
/// fresh while we keep using it.
pub(crate) async fn nudge(handle: &Handle, ifindex: u32, ip: Ipv4Addr) -> Result<()> {
    handle
        .neighbours()
        .add(ifindex, ip.into())
        .flags(NeighbourFlags::Use)
        .replace()
        .execute()
        .await
        .with_context(|| format!("asking the kernel to resolve {ip}"))
}

/// The uplink now: `None` while the NIC is missing or its next hop unresolved.
pub async fn resolve(handle: &Handle, spec: &UplinkSpec) -> Result<Option<Uplink>> {
    let Some((ifindex, mac, _)) = link_facts(handle, &spec.name).await? else { return Ok(None) };
    nudge(handle, ifindex, spec.next_hop).await?;
    let next_hop_mac = neighbour(handle, ifindex, spec.next_hop).await?;
    Ok(next_hop_mac.map(|next_hop_mac| Uplink { ifindex, mac, next_hop_mac }))
}

/// Follows the uplink for as long as the receiver lives, publishing every change.
pub async fn follow(handle: Handle, spec: UplinkSpec, tx: watch::Sender<Option<Uplink>>) {
    let mut ticker = tokio::time::interval(REFRESH);
    loop {
        ticker.tick().await;
        let now = match resolve(&handle, &spec).await {
            Ok(now) => now,
            Err(e) => {
                warn!(uplink = %spec.name, error = %format!("{e:#}"), "reading the uplink");
                continue;
            }
        };
        let changed = tx.send_if_modified(|cur| {
            let changed = *cur != now;
            *cur = now;
            changed
        });
        if changed {
            match now {
                Some(u) => info!(
                    uplink = %spec.name, ifindex = u.ifindex, next_hop = %spec.next_hop,
                    next_hop_mac = %havip_common::Mac(&u.next_hop_mac), "uplink ready"
                ),
                None => {
                    warn!(uplink = %spec.name, next_hop = %spec.next_hop, "uplink or its next hop not resolved")
                }
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}
