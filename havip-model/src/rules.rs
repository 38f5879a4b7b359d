//! The product's rules, in one place for the config file, `havipctl apply`
//! and every API verb: a change is applied to a copy of the desired state,
//! the whole copy is checked here, and only a copy that passes is stored.
//! Every refusal names the rule it breaks.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
};

use serde::Deserialize;

use crate::state::{DesiredState, Subnet};
pub use crate::{
    refusal::{refuse, shown, Refusal, Rule},
    state::{parse_cidr, parse_ipv4, parse_mac},
};

/// Map capacities (`[dataplane]`): how many VIPs, memberships and vNICs the
/// data plane's maps hold. Changing them for an existing pin directory is
/// refused by the agent (the pinned maps would not match): tear down first.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    /// Capacity of the `vips` map, in HAVIPs (`[dataplane] max_vips`).
    pub max_vips: u32,
    /// Capacity of the `members` map, in memberships summed over HAVIPs (`[dataplane] max_members`).
    pub max_members: u32,
    /// Capacity of the `tx_ports` map, in vNICs (`[dataplane] max_vnics`).
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

/// Product quotas: the cloud's defaults, configurable under `[limits]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Members a HAVIP may have; 10 by default (product quota).
    pub max_members_per_havip: usize,
    /// HAVIPs one instance may be a member of; 5 by default (product quota).
    pub max_havips_per_instance: usize,
    /// 0 or 1: the data plane NATs at most one EIP per VIP.
    pub max_eips_per_havip: usize,
    /// What the data plane's maps hold (`[dataplane]`): a desired state
    /// that would not fit is refused rather than half-applied.
    #[serde(skip)]
    pub capacity: Capacity,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_members_per_havip: 10,
            max_havips_per_instance: 5,
            max_eips_per_havip: 1,
            capacity: Capacity::default(),
        }
    }
}

/// Checks the whole desired state against every rule that is about state
/// (rather than about a verb, such as deleting something in use).
///
/// Every name in the state (subnet, vNIC, host, interface, instance, and
/// every reference to a subnet or a vNIC) and every address (subnets, vNIC
/// addresses, VIPs, EIPs) is checked here, so whatever path a change takes
/// in — an API verb, `apply`, the config file — nothing stored can hold a
/// name or an address a verb would refuse.
pub fn check(s: &DesiredState, limits: &Limits) -> Result<(), Refusal> {
    check_subnets(s)?;
    check_subnet_settings(s)?;
    let mut vnic_by_ip: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut vnic_by_interface: HashMap<(&str, &str), &str> = HashMap::new();
    for (key, v) in &s.vnics {
        check_name("vNIC", &v.name)?;
        if *key != v.name {
            refuse(Rule::WellFormed, format!("vNIC {} is stored as {}", v.name, shown(key)))?;
        }
        check_name("host", &v.host).map_err(|e| in_vnic(&v.name, e))?;
        check_ifname(&v.ifname).map_err(|e| in_vnic(&v.name, e))?;
        check_name("instance", &v.instance).map_err(|e| in_vnic(&v.name, e))?;
        check_name("subnet", &v.subnet).map_err(|e| in_vnic(&v.name, e))?;
        check_address(v.ip, "a vNIC's address").map_err(|e| in_vnic(&v.name, e))?;
        if let Some(other) = vnic_by_interface.insert((&v.host, &v.ifname), &v.name) {
            refuse(
                Rule::VnicInterfaceUnique,
                format!(
                    "vNIC {}: interface {} on host {} is vNIC {other}'s already",
                    v.name, v.ifname, v.host
                ),
            )?;
        }
        let subnet = subnet(s, &v.subnet, || format!("vNIC {}", v.name))?;
        if !subnet.contains(v.ip) {
            refuse(
                Rule::VnicInSubnet,
                format!("vNIC {}: address {} is outside its subnet {subnet}", v.name, v.ip),
            )?;
        }
        if let Some(other) = vnic_by_ip.insert(v.ip, &v.name) {
            refuse(
                Rule::VnicAddressUnique,
                format!("vNIC {}: address {} is vNIC {other}'s already", v.name, v.ip),
            )?;
        }
    }

    let cap = &limits.capacity;
    let memberships: usize = s.havips.values().map(|h| h.members.len()).sum();
    for (what, n, max, key) in [
        ("HAVIPs", s.havips.len(), cap.max_vips, "max_vips"),
        ("memberships", memberships, cap.max_members, "max_members"),
        ("vNICs", s.vnics.len(), cap.max_vnics, "max_vnics"),
    ] {
        if n > max as usize {
            refuse(
                Rule::DataplaneCapacity,
                format!("{n} {what}, more than the data plane holds (dataplane.{key} = {max})"),
            )?;
        }
    }
    let mut per_instance: HashMap<&str, BTreeSet<Ipv4Addr>> = HashMap::new();
    let mut havip_by_eip: HashMap<Ipv4Addr, Ipv4Addr> = HashMap::new();
    for (key, h) in &s.havips {
        let vip = h.vip;
        if *key != vip {
            refuse(Rule::WellFormed, format!("HAVIP {vip} is stored as {key}"))?;
        }
        if let Some(class) = address_class(vip) {
            refuse(Rule::AddressClass, format!("HAVIP {vip} is {class}: a VIP must be a unicast address"))?;
        }
        let in_havip = |e: Refusal| Refusal { message: format!("HAVIP {vip}: {}", e.message), ..e };
        check_name("subnet", &h.subnet).map_err(in_havip)?;
        for m in &h.members {
            check_name("member vNIC", m).map_err(in_havip)?;
        }
        let subnet = subnet(s, &h.subnet, || format!("HAVIP {vip}"))?;
        check_vip_address(vip, subnet, &vnic_by_ip)?;
        if h.members.len() > limits.max_members_per_havip {
            refuse(
                Rule::MaxMembersPerHavip,
                format!(
                    "HAVIP {vip} would have {} members; a HAVIP may have at most {}",
                    h.members.len(),
                    limits.max_members_per_havip
                ),
            )?;
        }
        let mut seen = BTreeSet::new();
        for m in &h.members {
            let vnic = s.vnics.get(m).map_or_else(
                || refuse(Rule::UnknownVnic, format!("HAVIP {vip}: member {m} is not a registered vNIC")),
                Ok,
            )?;
            if vnic.subnet != h.subnet {
                refuse(
                    Rule::MemberInSubnet,
                    format!(
                        "HAVIP {vip}: member {m} is in subnet {}, but a HAVIP and its members share one subnet ({})",
                        vnic.subnet, h.subnet
                    ),
                )?;
            }
            if !seen.insert(m) {
                refuse(Rule::MemberOnce, format!("HAVIP {vip}: {m} is a member already"))?;
            }
            per_instance.entry(&vnic.instance).or_default().insert(vip);
        }
        if let Some(eip) = h.eip {
            if let Some(class) = address_class(eip) {
                refuse(
                    Rule::AddressClass,
                    format!("HAVIP {vip}: EIP {eip} is {class}: an EIP must be a unicast address"),
                )?;
            }
            if limits.max_eips_per_havip == 0 {
                refuse(
                    Rule::MaxEipsPerHavip,
                    format!("HAVIP {vip}: EIPs are disabled (limits.max_eips_per_havip = 0)"),
                )?;
            }
            if let Some((name, sn)) = s.subnets.iter().find(|(_, sn)| sn.contains(eip)) {
                refuse(
                    Rule::EipOutsideVpc,
                    format!("EIP {eip} is inside VPC subnet {name} ({sn}): an EIP is a public address outside the VPC"),
                )?;
            }
            if let Some(other) = havip_by_eip.insert(eip, vip) {
                // Both named: whichever came first in the state, the other
                // may be the one being changed.
                refuse(
                    Rule::EipBoundOnce,
                    format!("EIP {eip} would be bound to HAVIP {other} and HAVIP {vip}: an EIP is bound to one HAVIP"),
                )?;
            }
        }
    }
    let mut crowded: Vec<_> =
        per_instance.iter().filter(|(_, v)| v.len() > limits.max_havips_per_instance).collect();
    crowded.sort();
    if let Some((instance, vips)) = crowded.first() {
        refuse(
            Rule::MaxHavipsPerInstance,
            format!(
                "instance {instance} would be a member of {} HAVIPs; an instance may be a member of at most {}",
                vips.len(),
                limits.max_havips_per_instance
            ),
        )?;
    }
    Ok(())
}

/// The shortest prefix a VPC subnet may have: a /8 (16 M addresses, the
/// largest private block); shorter ones would take in most of the Internet.
pub const MIN_SUBNET_PREFIX: u8 = 8;

/// Blocks of addresses no host, VIP, EIP or subnet may use: (network,
/// prefix, class). The most specific first.
const NOT_UNICAST: [([u8; 4], u8, &str); 7] = [
    ([0, 0, 0, 0], 32, "unspecified"),
    ([255, 255, 255, 255], 32, "limited broadcast"),
    ([0, 0, 0, 0], 8, "\"this network\""),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

/// What `ip` is when it is not an address a host may use, e.g. `a
/// multicast address (224.0.0.0/4)`, `the unspecified address`; `None`
/// for a unicast address (private ones included: an EIP may be one).
pub fn address_class(ip: Ipv4Addr) -> Option<String> {
    NOT_UNICAST.iter().find_map(|&(net, prefix, class)| {
        let block = Subnet { network: net.into(), prefix };
        block.contains(ip).then(|| match prefix {
            32 => format!("the {class} address"),
            _ => format!("a {class} address ({block})"),
        })
    })
}

/// [`Rule::AddressClass`] for `ip`, which is `role` (e.g. "a vNIC's address").
fn check_address(ip: Ipv4Addr, role: &str) -> Result<(), Refusal> {
    match address_class(ip) {
        Some(class) => {
            refuse(Rule::AddressClass, format!("address {ip} is {class}: {role} must be a unicast address"))
        }
        None => Ok(()),
    }
}

/// Subnet names, sizes, classes, and that no two overlap.
fn check_subnets(s: &DesiredState) -> Result<(), Refusal> {
    for (name, sn) in &s.subnets {
        check_name("subnet", name)?;
        if sn.prefix < MIN_SUBNET_PREFIX {
            refuse(
                Rule::SubnetPrefix,
                format!("subnet {name} ({sn}): a VPC subnet is /{MIN_SUBNET_PREFIX} to /32"),
            )?;
        }
        let odd = NOT_UNICAST.iter().filter(|(_, prefix, _)| *prefix < 32).find(|&&(net, prefix, _)| {
            let block = Subnet { network: net.into(), prefix };
            block.contains(sn.network) || sn.contains(block.network)
        });
        if let Some(&(net, prefix, class)) = odd {
            let block = Subnet { network: net.into(), prefix };
            refuse(
                Rule::AddressClass,
                format!("subnet {name} ({sn}) holds {class} addresses ({block}): a VPC subnet's addresses must be unicast"),
            )?;
        }
    }
    // Sorted by first address, a subnet overlaps an earlier one exactly when
    // it starts at or before the furthest end seen so far.
    let mut by_start: Vec<(&String, &Subnet)> = s.subnets.iter().collect();
    by_start.sort_by_key(|(name, sn)| (u32::from(sn.network), std::cmp::Reverse(sn.prefix), *name));
    let mut furthest: Option<(&String, &Subnet)> = None;
    for (name, sn) in by_start {
        if let Some((other, osn)) = furthest {
            if u32::from(sn.network) <= u32::from(osn.broadcast()) {
                let ((a, asn), (b, bsn)) =
                    if other < name { ((other, osn), (name, sn)) } else { ((name, sn), (other, osn)) };
                refuse(Rule::SubnetsDisjoint, format!("subnet {a} ({asn}) overlaps subnet {b} ({bsn})"))?;
            }
        }
        if furthest.is_none_or(|(_, osn)| sn.broadcast() > osn.broadcast()) {
            furthest = Some((name, sn));
        }
    }
    Ok(())
}

/// Settings are recorded only for subnets that exist; storm control is within its bounds (the
/// operations keep default settings out of the map, [`DesiredState::set_subnet_settings`]).
fn check_subnet_settings(s: &DesiredState) -> Result<(), Refusal> {
    for (name, settings) in &s.subnet_settings {
        if !s.subnets.contains_key(name) {
            check_name("subnet", name)?;
            refuse(Rule::UnknownSubnet, format!("settings of subnet {name}: subnet {name} does not exist"))?;
        }
        settings.storm.check(name)?;
    }
    Ok(())
}

fn subnet<'a>(s: &'a DesiredState, name: &str, what: impl Fn() -> String) -> Result<&'a Subnet, Refusal> {
    s.subnets
        .get(name)
        .map_or_else(|| refuse(Rule::UnknownSubnet, format!("{}: subnet {name} does not exist", what())), Ok)
}

fn check_vip_address(
    vip: Ipv4Addr,
    subnet: &Subnet,
    vnic_by_ip: &HashMap<Ipv4Addr, &str>,
) -> Result<(), Refusal> {
    if !subnet.contains(vip) {
        refuse(Rule::VipInSubnet, format!("HAVIP {vip} is outside its subnet {subnet}"))?;
    }
    if subnet.prefix < 31 && (vip == subnet.network || vip == subnet.broadcast()) {
        refuse(
            Rule::VipNotNetworkOrBroadcast,
            format!("HAVIP {vip} is the network or broadcast address of {subnet}"),
        )?;
    }
    if let Some(vnic) = vnic_by_ip.get(&vip) {
        refuse(Rule::VipNotVnicAddress, format!("HAVIP {vip} is vNIC {vnic}'s own address"))?;
    }
    Ok(())
}

fn in_vnic(name: &str, e: Refusal) -> Refusal {
    Refusal { message: format!("vNIC {name}: {}", e.message), ..e }
}

/// The longest name of any object, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// The one validation of every name (subnet, vNIC, host, instance, and
/// every reference to one): 1-63 bytes of ASCII letters, digits, '.', '_'
/// and '-', starting with a letter or a digit — nothing a URL, a store key,
/// a table or a log line would need to escape, never a path segment such as
/// `..` that a client would resolve away, never read as an option.
pub fn check_name(what: &str, name: &str) -> Result<(), Refusal> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let starts_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > MAX_NAME_LEN || !starts_ok || !name.chars().all(ok) {
        refuse(
            Rule::WellFormed,
            format!(
                "{what} name {} is not 1-{MAX_NAME_LEN} letters, digits, '.', '_' and '-' starting with a letter or digit",
                shown(name)
            ),
        )?;
    }
    Ok(())
}

/// A host-side interface name: 1-15 bytes (the kernel's IFNAMSIZ) of
/// printable ASCII but '/' and ':', not `.` or `..` (dev_valid_name), no
/// spaces or control characters.
pub fn check_ifname(name: &str) -> Result<(), Refusal> {
    let ok = |c: char| c.is_ascii_graphic() && !matches!(c, '/' | ':');
    if name.is_empty() || name.len() > 15 || matches!(name, "." | "..") || !name.chars().all(ok) {
        refuse(
            Rule::WellFormed,
            format!(
                "{} is not an interface name (1-15 bytes of printable ASCII, no '/', ':' or spaces, not . or ..)",
                shown(name)
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Havip, Vnic};

    fn base() -> DesiredState {
        let mut s = DesiredState::default();
        s.subnets.insert("vpc1".into(), parse_cidr("198.18.1.0/24").unwrap());
        s.subnets.insert("vpc2".into(), parse_cidr("198.18.2.0/24").unwrap());
        for (name, inst, subnet, ip) in [
            ("vnic-a", "vm-a", "vpc1", "198.18.1.11"),
            ("vnic-b", "vm-b", "vpc1", "198.18.1.12"),
            ("vnic-x", "vm-x", "vpc2", "198.18.2.11"),
        ] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            let o = ip.octets();
            let v = Vnic {
                name: name.into(),
                host: "hv1".into(),
                ifname: name.into(),
                instance: inst.into(),
                subnet: subnet.into(),
                ip,
                mac: [2, 0, o[0], o[1], o[2], o[3]],
            };
            s.vnics.insert(name.into(), v);
        }
        s
    }

    fn with_havip(mut s: DesiredState, vip: &str, members: &[&str]) -> DesiredState {
        let vip: Ipv4Addr = vip.parse().unwrap();
        let members = members.iter().map(|m| m.to_string()).collect();
        s.havips.insert(
            vip,
            Havip { vip, subnet: "vpc1".into(), members, eip: None, settings: Default::default() },
        );
        s
    }

    fn rule_of(s: &DesiredState) -> Rule {
        check(s, &Limits::default()).expect_err("must be refused").rule
    }

    #[test]
    fn accepts_a_valid_havip() {
        check(&with_havip(base(), "198.18.1.50", &["vnic-a", "vnic-b"]), &Limits::default()).unwrap();
    }

    #[test]
    fn refuses_bad_vip_addresses() {
        assert_eq!(rule_of(&with_havip(base(), "198.18.9.50", &[])), Rule::VipInSubnet);
        assert_eq!(rule_of(&with_havip(base(), "198.18.1.0", &[])), Rule::VipNotNetworkOrBroadcast);
        assert_eq!(rule_of(&with_havip(base(), "198.18.1.255", &[])), Rule::VipNotNetworkOrBroadcast);
        assert_eq!(rule_of(&with_havip(base(), "198.18.1.11", &[])), Rule::VipNotVnicAddress);
        assert_eq!(parse_ipv4("2001:db8::1").unwrap_err().rule, Rule::Ipv4Only);
    }

    #[test]
    fn vnics_are_unique_per_host_interface_not_per_name_only() {
        let mut s = base();
        let mut b = s.vnics["vnic-b"].clone();
        b.ifname = "vnic-a".into();
        s.vnics.insert("vnic-b".into(), b.clone());
        assert_eq!(rule_of(&s), Rule::VnicInterfaceUnique);
        // The same interface name on another host is another vNIC.
        b.host = "hv2".into();
        s.vnics.insert("vnic-b".into(), b);
        check(&s, &Limits::default()).unwrap();
        s.vnics.get_mut("vnic-b").unwrap().host = "hv 2".into();
        assert_eq!(rule_of(&s), Rule::WellFormed);
    }

    #[test]
    fn refuses_bad_members() {
        assert_eq!(rule_of(&with_havip(base(), "198.18.1.50", &["vnic-x"])), Rule::MemberInSubnet);
        assert_eq!(rule_of(&with_havip(base(), "198.18.1.50", &["nope"])), Rule::UnknownVnic);
        assert_eq!(rule_of(&with_havip(base(), "198.18.1.50", &["vnic-a", "vnic-a"])), Rule::MemberOnce);
    }

    #[test]
    fn refuses_more_than_ten_members() {
        let mut s = base();
        let mut names = Vec::new();
        for i in 0..11u8 {
            let name = format!("m{i}");
            let ip = Ipv4Addr::new(198, 18, 1, 100 + i);
            s.vnics.insert(
                name.clone(),
                Vnic {
                    name: name.clone(),
                    host: "hv1".into(),
                    ifname: name.clone(),
                    instance: name.clone(),
                    subnet: "vpc1".into(),
                    ip,
                    mac: [2, 0, 0, 0, 0, i],
                },
            );
            names.push(name);
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let e = check(&with_havip(s, "198.18.1.50", &refs), &Limits::default()).unwrap_err();
        assert_eq!(e.to_string(), "refused by rule max-members-per-havip: HAVIP 198.18.1.50 would have 11 members; a HAVIP may have at most 10");
    }

    #[test]
    fn refuses_more_than_five_havips_per_instance() {
        let mut s = base();
        for i in 0..6 {
            s = with_havip(s, &format!("198.18.1.{}", 50 + i), &["vnic-a"]);
        }
        let e = check(&s, &Limits::default()).unwrap_err();
        assert_eq!(e.rule, Rule::MaxHavipsPerInstance);
        assert!(e.message.contains("instance vm-a would be a member of 6 HAVIPs"), "{e}");
    }

    #[test]
    fn refuses_eip_inside_vpc_and_bound_twice() {
        let mut s = with_havip(with_havip(base(), "198.18.1.50", &[]), "198.18.1.51", &[]);
        s.havips.get_mut(&"198.18.1.50".parse().unwrap()).unwrap().eip = Some("198.18.2.7".parse().unwrap());
        assert_eq!(rule_of(&s), Rule::EipOutsideVpc);
        for h in s.havips.values_mut() {
            h.eip = Some("203.0.113.7".parse().unwrap());
        }
        assert_eq!(rule_of(&s), Rule::EipBoundOnce);
    }

    #[test]
    fn refuses_bad_vnics() {
        let mut s = base();
        s.vnics.get_mut("vnic-b").unwrap().ip = "198.18.1.11".parse().unwrap();
        assert_eq!(rule_of(&s), Rule::VnicAddressUnique);
        s.vnics.get_mut("vnic-b").unwrap().ip = "198.18.2.12".parse().unwrap();
        assert_eq!(rule_of(&s), Rule::VnicInSubnet);
        s.vnics.get_mut("vnic-b").unwrap().subnet = "vpc9".into();
        assert_eq!(rule_of(&s), Rule::UnknownSubnet);
    }

    #[test]
    fn refuses_what_the_maps_cannot_hold() {
        let s = with_havip(base(), "198.18.1.50", &["vnic-a", "vnic-b"]);
        let small = |max_vips, max_members, max_vnics| Limits {
            capacity: Capacity { max_vips, max_members, max_vnics },
            ..Limits::default()
        };
        check(&s, &small(1, 2, 3)).unwrap();
        for limits in [small(0, 2, 3), small(1, 1, 3), small(1, 2, 2)] {
            assert_eq!(check(&s, &limits).unwrap_err().rule, Rule::DataplaneCapacity, "{limits:?}");
        }
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!(parse_cidr("198.18.1.5/24").unwrap_err().rule, Rule::WellFormed);
        assert!(parse_mac("01:00:5e:00:00:01").unwrap_err().message.contains("multicast"));
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(check_ifname("a-very-long-interface").is_err());
    }

    // --- issue 12: every address is checked for what it may be -------------

    fn name_of(s: &DesiredState) -> &'static str {
        rule_of(s).name()
    }

    #[test]
    fn every_address_is_checked_for_its_class() {
        // VIPs: a VRRP multicast group, loopback, link-local, unspecified,
        // broadcast, class E — refused by name before any subnet rule.
        for vip in ["224.0.0.18", "127.0.0.1", "169.254.1.1", "0.0.0.0", "255.255.255.255", "240.0.0.1"] {
            let e = check(&with_havip(base(), vip, &[]), &Limits::default()).expect_err(vip);
            assert_eq!(e.rule.name(), "address-class", "{vip}: {e}");
            assert!(e.message.starts_with(&format!("HAVIP {vip} is ")), "{e}");
        }
        let e = check(&with_havip(base(), "224.0.0.18", &[]), &Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused by rule address-class: HAVIP 224.0.0.18 is a multicast address (224.0.0.0/4): \
             a VIP must be a unicast address"
        );
        // vNIC addresses.
        let mut s = base();
        s.vnics.get_mut("vnic-x").unwrap().ip = "127.0.0.1".parse().unwrap();
        let e = check(&s, &Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused by rule address-class: vNIC vnic-x: address 127.0.0.1 is a loopback address (127.0.0.0/8): \
             a vNIC's address must be a unicast address"
        );
        // EIPs: private addresses are fine (another VPC's NAT), classes that
        // can never be an EIP are not.
        let mut s = with_havip(base(), "198.18.1.50", &[]);
        for (eip, ok) in [
            ("10.1.2.3", true),
            ("203.0.113.7", true),
            ("224.0.0.5", false),
            ("127.0.0.1", false),
            ("0.0.0.0", false),
            ("169.254.169.254", false),
            ("255.255.255.255", false),
        ] {
            s.havips.values_mut().for_each(|h| h.eip = Some(eip.parse().unwrap()));
            match check(&s, &Limits::default()) {
                Ok(()) => assert!(ok, "EIP {eip} accepted"),
                Err(e) => {
                    assert!(!ok, "EIP {eip}: {e}");
                    assert_eq!(e.rule.name(), "address-class", "{e}");
                    assert!(e.message.starts_with(&format!("HAVIP 198.18.1.50: EIP {eip} is ")), "{e}");
                }
            }
        }
    }

    #[test]
    fn subnets_are_unicast_sane_and_disjoint() {
        let with_subnet = |name: &str, cidr: &str| {
            let mut s = base();
            s.subnets.insert(name.into(), parse_cidr(cidr).unwrap());
            s
        };
        for cidr in ["0.0.0.0/0", "0.0.0.0/7", "128.0.0.0/1"] {
            let e = check(&with_subnet("big", cidr), &Limits::default()).expect_err(cidr);
            assert_eq!(e.rule.name(), "subnet-prefix", "{cidr}: {e}");
        }
        for cidr in
            ["127.0.0.0/8", "224.0.0.0/24", "169.254.0.0/16", "0.0.0.0/8", "240.0.0.0/8", "169.0.0.0/8"]
        {
            let e = check(&with_subnet("odd", cidr), &Limits::default()).expect_err(cidr);
            assert_eq!(e.rule.name(), "address-class", "{cidr}: {e}");
            assert!(e.message.starts_with(&format!("subnet odd ({cidr}) ")), "{e}");
        }
        check(&with_subnet("p2p", "10.0.0.0/31"), &Limits::default()).unwrap();
        check(&with_subnet("wide", "10.0.0.0/8"), &Limits::default()).unwrap();
        let e = check(&with_subnet("vpc0", "198.18.0.0/16"), &Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused by rule subnets-disjoint: subnet vpc0 (198.18.0.0/16) overlaps subnet vpc1 (198.18.1.0/24)"
        );
        assert_eq!(name_of(&with_subnet("again", "198.18.2.0/24")), "subnets-disjoint");
    }

    // --- issue 12: one validation for every name, in the model --------------

    #[test]
    fn every_name_in_the_state_is_well_formed() {
        let long = "x".repeat(1 << 20);
        let bad = ["", "a\nb", "tab\there", "sp ace", "a/b", "\u{1b}[2J", "é", long.as_str()];
        for name in bad {
            let mut s = base();
            s.vnics.get_mut("vnic-a").unwrap().instance = name.into();
            let e = check(&s, &Limits::default()).expect_err("instance name");
            assert_eq!(e.rule, Rule::WellFormed, "instance {name:.20?}: {e}");
            assert!(e.message.len() < 200, "the message quotes a bounded name: {} bytes", e.message.len());
            assert!(!e.message.contains(['\n', '\t', '\u{1b}']), "{e}");

            let mut s = base();
            s.subnets.insert(name.into(), parse_cidr("10.9.0.0/24").unwrap());
            assert_eq!(rule_of(&s), Rule::WellFormed, "subnet {name:.20?}");

            let mut s = base();
            s.vnics.get_mut("vnic-a").unwrap().subnet = name.into();
            assert_eq!(rule_of(&s), Rule::WellFormed, "subnet reference {name:.20?}");

            let s = with_havip(base(), "198.18.1.50", &["vnic-a", name]);
            assert_eq!(rule_of(&s), Rule::WellFormed, "member reference {name:.20?}");

            let mut s = with_havip(base(), "198.18.1.50", &[]);
            s.havips.values_mut().for_each(|h| h.subnet = name.into());
            assert_eq!(rule_of(&s), Rule::WellFormed, "HAVIP subnet {name:.20?}");
        }
        // A vNIC stored under another key than its name.
        let mut s = base();
        let v = s.vnics.remove("vnic-a").unwrap();
        s.vnics.insert("other".into(), v);
        assert_eq!(rule_of(&s), Rule::WellFormed);
        // The longest names are fine.
        let mut s = base();
        s.vnics.get_mut("vnic-a").unwrap().instance = "i".repeat(63);
        check(&s, &Limits::default()).unwrap();
    }

    #[test]
    fn refusals_quote_bounded_escaped_text() {
        let long = "9".repeat(1 << 20);
        for e in [
            parse_ipv4(&long).unwrap_err(),
            parse_cidr(&long).unwrap_err(),
            parse_cidr(&format!("10.0.0.0/{long}")).unwrap_err(),
            parse_mac(&long).unwrap_err(),
            check_name("vNIC", &long).unwrap_err(),
            check_ifname(&long).unwrap_err(),
            check_ifname("a\nb").unwrap_err(),
        ] {
            assert!(e.message.len() < 200, "{} bytes: {:.100}", e.message.len(), e.message);
            assert!(!e.message.contains('\n'), "{e}");
        }
    }
}
