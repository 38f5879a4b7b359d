//! The underlay as this host's data plane needs it, followed: the underlay
//! NIC (this host's VTEP), the VPC's VNI and ports, the gateway host's VTEP
//! (where the holder's EIP traffic goes when the uplink is elsewhere), and
//! the next hop's MAC towards every other host's VTEP (the neighbour
//! table). The reconciler writes it into the `underlay` and `vteps` maps,
//! and takes from it the VTEP of each host that has vNICs in a
//! broadcast-domain subnet (`bcast_remotes`).

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use rtnetlink::Handle;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{datapath::plan::UnderlayTarget, host::underlay, store::cluster::HostRecord};

/// What the data plane needs of the underlay, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnderlayPlan {
    /// The `underlay` map's entry.
    pub target: UnderlayTarget,
    /// Every other host's VTEP whose next hop is resolved -> that MAC.
    pub vteps: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// Every other registered host's id ([`havip_model::Vnic::host`]) -> its
    /// VTEP, resolved or not: where a broadcast-domain subnet's frames go
    /// for the vNICs that host has in it.
    pub hosts: BTreeMap<String, Ipv4Addr>,
}

/// The underlay settings of this host (`[underlay]`).
#[derive(Clone, Debug)]
pub struct UnderlaySpec {
    /// This host's id: its own record is not a peer.
    pub me: String,
    /// The underlay NIC's name.
    pub ifname: String,
    /// The VPC's VNI (24 bits).
    pub vni: u32,
    /// UDP port of VXLAN.
    pub vxlan_port: u16,
    /// UDP port of underlay probes.
    pub probe_port: u16,
}

/// How often a peer's next hop is looked up again while unresolved.
const UNRESOLVED_RETRY: Duration = Duration::from_millis(100);
/// How often every next hop is looked up again regardless (a peer's MAC
/// may change when it is rebuilt).
const REFRESH: Duration = Duration::from_secs(5);

/// Follows the hosts (from the cluster loop) and the neighbour table into
/// `tx`, for the agent's life.
pub async fn follow(
    rtnl: Handle,
    spec: UnderlaySpec,
    mut hosts: watch::Receiver<BTreeMap<String, HostRecord>>,
    tx: watch::Sender<Option<UnderlayPlan>>,
) -> Result<()> {
    // The first hosts come with the cluster's first snapshot: a plan made
    // before would name no peer and remove every VTEP a restarting agent's
    // maps still have.
    hosts.changed().await.context("the hosts feed closed")?;
    loop {
        let peers = hosts.borrow_and_update().clone();
        let complete = match resolve(&rtnl, &spec, &peers).await {
            Ok(Some(plan)) => {
                let complete = plan.vteps.len() + 1 >= peers.len().max(1);
                tx.send_if_modified(|now| {
                    let changed = now.as_ref() != Some(&plan);
                    if changed {
                        info!(vtep = %plan.target.addr, peers = plan.vteps.len(), "underlay");
                    }
                    *now = Some(plan);
                    changed
                });
                complete
            }
            Ok(None) => false,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "reading the underlay");
                false
            }
        };
        let wait = if complete { REFRESH } else { UNRESOLVED_RETRY };
        tokio::select! {
            r = hosts.changed() => r.context("the hosts feed closed")?,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The plan now: `None` while the NIC is missing or has no address.
async fn resolve(
    rtnl: &Handle,
    spec: &UnderlaySpec,
    hosts: &BTreeMap<String, HostRecord>,
) -> Result<Option<UnderlayPlan>> {
    let Some(nic) = underlay::nic(rtnl, &spec.ifname).await? else { return Ok(None) };
    let mut vteps = BTreeMap::new();
    for h in hosts.values().filter(|h| h.id != spec.me) {
        if let Some(mac) = underlay::next_hop_mac(rtnl, nic.ifindex, h.underlay)
            .await
            .with_context(|| format!("the next hop to host {} ({})", h.id, h.underlay))?
        {
            vteps.insert(h.underlay, mac);
        }
    }
    let gateway_vtep = hosts.values().find(|h| h.gateway && h.id != spec.me).map(|h| h.underlay);
    let target = UnderlayTarget {
        ifindex: nic.ifindex,
        mac: nic.mac,
        mtu: nic.mtu.min(u32::from(u16::MAX)) as u16,
        addr: nic.addr,
        vni: spec.vni,
        vxlan_port: spec.vxlan_port,
        probe_port: spec.probe_port,
        gateway_vtep,
    };
    let others = hosts.values().filter(|h| h.id != spec.me).map(|h| (h.id.clone(), h.underlay)).collect();
    Ok(Some(UnderlayPlan { target, vteps, hosts: others }))
}
