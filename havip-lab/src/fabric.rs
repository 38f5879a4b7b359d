//! The underlay fabric of a lab with many hosts: one namespace holding a
//! bridge that every host and every etcd member plugs into with a veth,
//! like the top-of-rack network between hypervisors.
//!
//! Addresses: 198.18.0.0/24 (host `hvN` = .N, etcd member `eN` = .1N); the
//! fabric itself has .254 on its bridge, from where tools (etcdctl, a store
//! test's client) reach every member without touching the root namespace.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use crate::{
    cmd,
    netns::{LabId, Netns},
};

/// The underlay's MTU: a guest's 1500 plus the 50 bytes of VXLAN.
pub const MTU: u16 = 1550;
/// The underlay network.
pub const UNDERLAY_NET: &str = "198.18.0.0/24";
/// The fabric's own address, on its bridge: where lab tools run from.
pub const FABRIC_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The bridge inside the fabric namespace.
pub const BRIDGE: &str = "br0";
/// Namespace role of the fabric.
pub const ROLE: &str = "fabric";

/// Host `hvN`'s underlay address, 198.18.0.N (its VTEP).
pub fn host_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

/// etcd member `eN`'s address (N from 1), 198.18.0.1N.
pub fn member_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + n)
}

/// The fabric namespace and its bridge; dropping it deletes the namespace,
/// and with it the bridge and the fabric ends of every attached veth.
#[derive(Debug)]
pub struct Fabric {
    ns: Netns,
}

impl Fabric {
    /// Creates namespace `fabric` of lab `id` with a bridge at the underlay
    /// MTU, addressed [`FABRIC_IP`].
    pub fn create(id: &LabId) -> Result<Self> {
        let fabric = Self { ns: Netns::create(&id.netns(ROLE))? };
        let ns = fabric.name();
        let mtu = MTU.to_string();
        cmd::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        cmd::ip(&["-n", ns, "link", "add", BRIDGE, "mtu", &mtu, "type", "bridge"])
            .context("creating the fabric bridge")?;
        cmd::ip(&["-n", ns, "addr", "add", &format!("{FABRIC_IP}/24"), "dev", BRIDGE])?;
        cmd::ip(&["-n", ns, "link", "set", BRIDGE, "up"])?;
        Ok(fabric)
    }

    /// The fabric namespace's name.
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// Plugs namespace `ns` into the bridge: a veth whose end `dev` in `ns`
    /// gets `addr`/24 (both ends at the underlay MTU, `ns`'s loopback up).
    /// `port` names the bridge end; unique per fabric, at most 15 bytes.
    pub fn attach(&self, ns: &str, dev: &str, port: &str, addr: Ipv4Addr) -> Result<()> {
        let (fabric, mtu) = (self.name(), MTU.to_string());
        (|| {
            cmd::ip(&["-n", fabric, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns])?;
            cmd::ip(&["-n", fabric, "link", "set", port, "mtu", &mtu, "master", BRIDGE, "up"])?;
            cmd::ip(&["-n", ns, "link", "set", dev, "mtu", &mtu, "up"])?;
            cmd::ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            cmd::ip(&["-n", ns, "link", "set", "lo", "up"]).map(drop)
        })()
        .with_context(|| format!("attaching {ns} ({dev}, {addr}) to the fabric"))
    }

    /// Leaves the namespace in place when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.ns.keep();
    }
}
