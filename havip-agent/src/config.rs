//! The agent's configuration file (TOML): subnets, vNICs and HAVIPs, checked
//! against the product's rules before anything touches the data plane. Every
//! refusal names the rule it breaks.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Product quotas (the cloud's defaults; configurable under `[limits]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_members_per_havip: usize,
    pub max_havips_per_instance: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_members_per_havip: 10, max_havips_per_instance: 5 }
    }
}

/// Map capacities. Changing them for an existing pin directory is refused
/// (the pinned maps would not match): tear down first.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    pub max_vips: u32,
    pub max_members: u32,
    pub max_vnics: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_vips: havip_common::DEFAULT_MAX_VIPS,
            max_members: havip_common::DEFAULT_MAX_MEMBERS,
            max_vnics: havip_common::DEFAULT_MAX_VNICS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    dataplane: Capacity,
    #[serde(default)]
    subnets: Vec<RawSubnet>,
    #[serde(default)]
    vnics: Vec<RawVnic>,
    #[serde(default)]
    havips: Vec<RawHavip>,
    uplink: Option<RawUplink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    name: String,
    next_hop: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    name: String,
    cidr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVnic {
    name: String,
    instance: String,
    subnet: String,
    ip: String,
    mac: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHavip {
    vip: String,
    subnet: String,
    #[serde(default)]
    members: Vec<String>,
    eip: Option<String>,
}

/// An IPv4 subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vnic {
    pub name: String,
    pub instance: String,
    pub subnet: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Havip {
    pub vip: Ipv4Addr,
    pub subnet: String,
    /// vNIC names.
    pub members: Vec<String>,
    /// The EIP bound 1:1 to this HAVIP, if any.
    pub eip: Option<Ipv4Addr>,
}

/// Validated desired state.
#[derive(Clone, Debug)]
pub struct Config {
    pub limits: Limits,
    pub capacity: Capacity,
    pub subnets: BTreeMap<String, Subnet>,
    pub vnics: BTreeMap<String, Vnic>,
    pub havips: BTreeMap<Ipv4Addr, Havip>,
    /// The uplink NIC that carries EIP traffic.
    pub uplink: Option<crate::uplink::UplinkSpec>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).context("parsing TOML")?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self> {
        let mut subnets = BTreeMap::new();
        for s in raw.subnets {
            let subnet = parse_cidr(&s.cidr).with_context(|| format!("subnet {:?}", s.name))?;
            if subnets.insert(s.name.clone(), subnet).is_some() {
                bail!("duplicate subnet name {:?}: subnet names must be unique", s.name);
            }
        }

        let mut vnics = BTreeMap::new();
        let mut vnic_ips = HashSet::new();
        for v in raw.vnics {
            let ctx = || format!("vNIC {:?}", v.name);
            let subnet = lookup_subnet(&subnets, &v.subnet).with_context(ctx)?;
            let ip = parse_ipv4(&v.ip).with_context(ctx)?;
            if !subnet.contains(ip) {
                bail!("vNIC {:?}: address {ip} is outside its subnet {subnet}", v.name);
            }
            if !vnic_ips.insert(ip) {
                bail!("vNIC {:?}: address {ip} is already used by another vNIC", v.name);
            }
            let mac = parse_mac(&v.mac).with_context(ctx)?;
            let vnic = Vnic { name: v.name.clone(), instance: v.instance, subnet: v.subnet, ip, mac };
            if vnics.insert(v.name.clone(), vnic).is_some() {
                bail!("duplicate vNIC {:?}: vNIC names must be unique", v.name);
            }
        }

        let mut havips = BTreeMap::new();
        let mut per_instance: HashMap<String, usize> = HashMap::new();
        for h in raw.havips {
            let vip = parse_ipv4(&h.vip).context("HAVIP")?;
            let ctx = || format!("HAVIP {vip}");
            let subnet = lookup_subnet(&subnets, &h.subnet).with_context(ctx)?;
            check_vip_address(vip, subnet, &vnic_ips).with_context(ctx)?;
            if h.members.len() > raw.limits.max_members_per_havip {
                bail!(
                    "HAVIP {vip}: {} members, more than the {} members a HAVIP may have",
                    h.members.len(),
                    raw.limits.max_members_per_havip
                );
            }
            let mut seen = HashSet::new();
            for m in &h.members {
                let vnic = vnics
                    .get(m)
                    .with_context(|| format!("HAVIP {vip}: member {m:?} is not a configured vNIC"))?;
                if vnic.subnet != h.subnet {
                    bail!(
                        "HAVIP {vip}: member {m:?} is in subnet {:?}, but a HAVIP and its members \
                         must share one subnet ({:?})",
                        vnic.subnet,
                        h.subnet
                    );
                }
                if !seen.insert(m) {
                    bail!("HAVIP {vip}: member {m:?} is listed twice");
                }
                let n = per_instance.entry(vnic.instance.clone()).or_default();
                *n += 1;
                if *n > raw.limits.max_havips_per_instance {
                    bail!(
                        "HAVIP {vip}: instance {:?} would be a member of more than {} HAVIPs",
                        vnic.instance,
                        raw.limits.max_havips_per_instance
                    );
                }
            }
            let eip =
                h.eip.as_deref().map(|e| check_eip(e, &subnets, &havips)).transpose().with_context(ctx)?;
            let havip = Havip { vip, subnet: h.subnet, members: h.members, eip };
            if havips.insert(vip, havip).is_some() {
                bail!("duplicate HAVIP {vip}: a VIP may be configured once");
            }
        }
        if havips.len() > raw.dataplane.max_vips as usize {
            bail!(
                "{} HAVIPs configured, more than dataplane.max_vips ({})",
                havips.len(),
                raw.dataplane.max_vips
            );
        }

        let uplink = raw
            .uplink
            .map(|u| {
                let next_hop = parse_ipv4(&u.next_hop).context("uplink next_hop")?;
                anyhow::Ok(crate::uplink::UplinkSpec { name: u.name, next_hop })
            })
            .transpose()?;
        Ok(Self { limits: raw.limits, capacity: raw.dataplane, subnets, vnics, havips, uplink })
    }
}

fn lookup_subnet<'a>(subnets: &'a BTreeMap<String, Subnet>, name: &str) -> Result<&'a Subnet> {
    subnets.get(name).with_context(|| format!("subnet {name:?} is not configured"))
}

/// An EIP is IPv4, outside every VPC subnet, and bound to one HAVIP only.
fn check_eip(
    eip: &str,
    subnets: &BTreeMap<String, Subnet>,
    havips: &BTreeMap<Ipv4Addr, Havip>,
) -> Result<Ipv4Addr> {
    let eip = parse_ipv4(eip).context("EIP")?;
    if let Some((name, s)) = subnets.iter().find(|(_, s)| s.contains(eip)) {
        bail!("EIP {eip} overlaps VPC subnet {name:?} ({s}): an EIP must be outside the VPC");
    }
    if let Some(other) = havips.values().find(|h| h.eip == Some(eip)) {
        bail!("EIP {eip} is already bound to HAVIP {}: an EIP binds to one HAVIP", other.vip);
    }
    Ok(eip)
}

fn check_vip_address(vip: Ipv4Addr, subnet: &Subnet, vnic_ips: &HashSet<Ipv4Addr>) -> Result<()> {
    if !subnet.contains(vip) {
        bail!("VIP is outside its subnet {subnet}");
    }
    if subnet.prefix < 31 && (vip == subnet.network || vip == subnet.broadcast()) {
        bail!("VIP is the network or broadcast address of {subnet}");
    }
    if vnic_ips.contains(&vip) {
        bail!("VIP is a vNIC's own address");
    }
    Ok(())
}

/// Parses an IPv4 address; IPv6 is refused by name.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => bail!("{s:?} is IPv6: only IPv4 is supported"),
        Err(_) => bail!("{s:?} is not an IPv4 address"),
    }
}

pub fn parse_cidr(s: &str) -> Result<Subnet> {
    let (addr, prefix) =
        s.split_once('/').with_context(|| format!("{s:?} is not a CIDR (address/prefix)"))?;
    let network = parse_ipv4(addr)?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .with_context(|| format!("{s:?}: prefix length must be 0 to 32"))?;
    let subnet = Subnet { network, prefix };
    if u32::from(network) & subnet.mask() != u32::from(network) {
        bail!(
            "{s:?} has host bits set: did you mean {}/{prefix}?",
            Ipv4Addr::from(u32::from(network) & subnet.mask())
        );
    }
    Ok(subnet)
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        bail!("{s:?} is not a MAC address (six hex bytes separated by ':')");
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| p.len() == 2)
            .with_context(|| format!("{s:?} is not a MAC address (six hex bytes separated by ':')"))?;
    }
    if mac[0] & 1 == 1 {
        bail!("{s:?} is a multicast MAC: a vNIC's MAC must be unicast");
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [[subnets]]
        name = "vpc1"
        cidr = "198.18.1.0/24"
        [[subnets]]
        name = "vpc2"
        cidr = "198.18.2.0/24"
        [[vnics]]
        name = "vnic-a"
        instance = "vm-a"
        subnet = "vpc1"
        ip = "198.18.1.11"
        mac = "02:00:c6:12:01:0b"
        [[vnics]]
        name = "vnic-b"
        instance = "vm-b"
        subnet = "vpc1"
        ip = "198.18.1.12"
        mac = "02:00:c6:12:01:0c"
        [[vnics]]
        name = "vnic-x"
        instance = "vm-x"
        subnet = "vpc2"
        ip = "198.18.2.11"
        mac = "02:00:c6:12:02:0b"
    "#;

    fn with_havip(vip: &str, members: &str) -> String {
        format!("{BASE}\n[[havips]]\nvip = \"{vip}\"\nsubnet = \"vpc1\"\nmembers = [{members}]\n")
    }

    fn refusal(text: &str) -> String {
        format!("{:#}", Config::parse(text).expect_err("config must be refused"))
    }

    #[test]
    fn accepts_a_valid_havip() {
        let c = Config::parse(&with_havip("198.18.1.50", r#""vnic-a", "vnic-b""#)).unwrap();
        let h = &c.havips[&"198.18.1.50".parse().unwrap()];
        assert_eq!(h.members, ["vnic-a", "vnic-b"]);
    }

    #[test]
    fn refuses_vip_outside_subnet() {
        assert!(refusal(&with_havip("198.18.9.50", "")).contains("outside its subnet 198.18.1.0/24"));
    }

    #[test]
    fn refuses_ipv6() {
        assert!(refusal(&with_havip("2001:db8::1", "")).contains("only IPv4 is supported"));
    }

    #[test]
    fn refuses_network_broadcast_and_vnic_addresses() {
        assert!(refusal(&with_havip("198.18.1.0", "")).contains("network or broadcast"));
        assert!(refusal(&with_havip("198.18.1.255", "")).contains("network or broadcast"));
        assert!(refusal(&with_havip("198.18.1.11", "")).contains("a vNIC's own address"));
    }

    #[test]
    fn refuses_member_in_another_subnet() {
        assert!(refusal(&with_havip("198.18.1.50", r#""vnic-x""#)).contains("must share one subnet"));
    }

    #[test]
    fn refuses_unknown_and_duplicate_members() {
        assert!(refusal(&with_havip("198.18.1.50", r#""nope""#)).contains("not a configured vNIC"));
        assert!(refusal(&with_havip("198.18.1.50", r#""vnic-a", "vnic-a""#)).contains("listed twice"));
    }

    #[test]
    fn refuses_more_than_ten_members() {
        let mut text = BASE.to_string();
        let mut names = Vec::new();
        for i in 0..11 {
            text += &format!(
                "[[vnics]]\nname = \"m{i}\"\ninstance = \"i{i}\"\nsubnet = \"vpc1\"\nip = \"198.18.1.{}\"\nmac = \"02:00:00:00:00:{:02x}\"\n",
                100 + i,
                i
            );
            names.push(format!("\"m{i}\""));
        }
        let text = format!(
            "{text}\n[[havips]]\nvip = \"198.18.1.50\"\nsubnet = \"vpc1\"\nmembers = [{}]\n",
            names.join(",")
        );
        assert!(refusal(&text).contains("more than the 10 members a HAVIP may have"));
    }

    #[test]
    fn refuses_more_than_five_havips_per_instance() {
        let mut text = BASE.to_string();
        for i in 0..6 {
            text += &format!(
                "[[havips]]\nvip = \"198.18.1.{}\"\nsubnet = \"vpc1\"\nmembers = [\"vnic-a\"]\n",
                50 + i
            );
        }
        assert!(refusal(&text).contains("instance \"vm-a\" would be a member of more than 5 HAVIPs"));
    }

    #[test]
    fn binds_an_eip_and_refuses_overlap_and_double_binding() {
        let one = format!("{}eip = \"203.0.113.10\"\n", with_havip("198.18.1.50", r#""vnic-a""#));
        let c = Config::parse(&one).unwrap();
        assert_eq!(c.havips[&"198.18.1.50".parse().unwrap()].eip, Some("203.0.113.10".parse().unwrap()));

        let inside = format!("{}eip = \"198.18.2.9\"\n", with_havip("198.18.1.50", ""));
        assert!(refusal(&inside).contains("EIP 198.18.2.9 overlaps VPC subnet \"vpc2\""));
        let twice =
            format!("{one}[[havips]]\nvip = \"198.18.1.51\"\nsubnet = \"vpc1\"\neip = \"203.0.113.10\"\n");
        assert!(refusal(&twice).contains("EIP 203.0.113.10 is already bound to HAVIP 198.18.1.50"));
        let v6 = format!("{}eip = \"2001:db8::1\"\n", with_havip("198.18.1.50", ""));
        assert!(refusal(&v6).contains("only IPv4 is supported"));
    }

    #[test]
    fn refuses_bad_cidr_and_mac() {
        assert!(Config::parse("[[subnets]]\nname=\"s\"\ncidr=\"198.18.1.5/24\"").is_err());
        assert!(parse_mac("01:00:5e:00:00:01").unwrap_err().to_string().contains("multicast"));
        assert!(parse_mac("02:00:00:00:00").is_err());
    }
}
