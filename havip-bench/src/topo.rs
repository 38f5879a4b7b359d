//! The bench network: a source namespace (the client guest), the host (hv)
//! and a sink namespace holding both members' guest ends. Every vNIC is a
//! veth whose host end is in hv. Addresses are from 198.18.0.0/15 only.

use std::{net::Ipv4Addr, sync::OnceLock};

use anyhow::{Context, Result};
use havip_lab::{
    cmd::{in_ns, ip},
    netns::{LabId, Netns},
};
use havip_model::Capacity;

/// Room for the largest scale point (100,000 HAVIPs, 2 members each) and
/// the production-like set (10,000 × 10); every data plane gets the same
/// sizes so they differ only in what the maps hold.
pub const CAPACITY: Capacity = Capacity { max_vips: 131_072, max_members: 262_144, max_vnics: 1024 };

/// This run's id: its namespaces, pins and files are named after it, so what a
/// killed run left behind is swept by the next (havip-lab's sweeper).
pub fn run_id() -> &'static LabId {
    static ID: OnceLock<LabId> = OnceLock::new();
    ID.get_or_init(|| LabId::unique("bench"))
}

/// A namespace of this run, `role` naming its part; deleted on drop.
pub fn netns(role: &str) -> Result<Netns> {
    Netns::create(&run_id().netns(role))
}

/// Sets sysctls inside `ns`. `ip netns exec` is fine here: sysctl needs no bpffs.
pub fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["-qw"];
    args.extend_from_slice(settings);
    in_ns(ns, "sysctl", &args).map(drop)
}

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 13);
/// The VIP every measured packet goes to; members a and b.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
/// A VIP with the same members but never claimed.
pub const VIP_NO_HOLDER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 51);
/// Not a VIP: the pass-through branch.
pub const NOT_A_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 99);

/// One vNIC: a veth with its host end in hv and its guest end in a guest namespace.
#[derive(Clone, Debug)]
pub struct Port {
    pub host_name: &'static str,
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    pub guest_name: &'static str,
    pub guest_mac: [u8; 6],
}

/// Fields drop in order: namespaces go last, taking their veths with them.
pub struct Topology {
    pub client: Port,
    pub a: Port,
    pub b: Port,
    /// Holds the client's guest end; the real-traffic generator runs in it.
    pub src: Netns,
    pub hv: Netns,
    pub sink: Netns,
}

pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The ifindex of `name` in namespace `ns`.
pub fn ifindex(ns: &str, name: &str) -> Result<u32> {
    let out = ip(&["-n", ns, "-j", "link", "show", name])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    let idx = v[0]["ifindex"].as_u64().with_context(|| format!("no ifindex for {name} in {ns}"))?;
    Ok(u32::try_from(idx)?)
}

pub fn veth(
    hv: &Netns,
    guest: &Netns,
    host_name: &'static str,
    guest_name: &'static str,
    last: u8,
) -> Result<Port> {
    let host_mac = [0x02, 0, 0xc6, 0x12, 0, last];
    let guest_mac = [0x02, 0, 0xc6, 0x12, 1, last];
    ip(&[
        "-n",
        hv.name(),
        "link",
        "add",
        host_name,
        "address",
        &mac_str(&host_mac),
        "type",
        "veth",
        "peer",
        "name",
        guest_name,
        "address",
        &mac_str(&guest_mac),
        "netns",
        guest.name(),
    ])
    .with_context(|| format!("creating veth {host_name}"))?;
    ip(&["-n", hv.name(), "link", "set", host_name, "up"])?;
    ip(&["-n", guest.name(), "link", "set", guest_name, "up"])?;
    Ok(Port { host_name, host_ifindex: ifindex(hv.name(), host_name)?, host_mac, guest_name, guest_mac })
}

impl Topology {
    pub fn build() -> Result<Self> {
        let src = netns("src")?;
        let hv = netns("hv")?;
        let sink = netns("sink")?;
        // No IPv6: router solicitations and the like would reach the counting
        // sinks and spoil the delivered == sent check.
        for ns in [&src, &hv, &sink] {
            sysctl(ns.name(), &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])?;
        }
        sysctl(
            hv.name(),
            &["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"],
        )?;
        // Last octets follow the guests' addresses (.13 client, .11 a, .12 b).
        let client = veth(&hv, &src, "vclient", "eth0", 13)?;
        let a = veth(&hv, &sink, "vmema", "etha", 11)?;
        let b = veth(&hv, &sink, "vmemb", "ethb", 12)?;

        // The kernel path: plain host routing of the VIP to member a, with a
        // permanent neighbour so no ARP is ever needed.
        let h = hv.name();
        ip(&["-n", h, "route", "add", &format!("{CLIENT_IP}/32"), "dev", client.host_name])?;
        ip(&["-n", h, "route", "add", &format!("{VIP}/32"), "dev", a.host_name])?;
        ip(&[
            "-n",
            h,
            "neigh",
            "add",
            &VIP.to_string(),
            "lladdr",
            &mac_str(&a.guest_mac),
            "dev",
            a.host_name,
            "nud",
            "permanent",
        ])?;
        Ok(Self { client, a, b, src, hv, sink })
    }
}
