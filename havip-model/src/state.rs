//! The control plane's objects: desired state (subnets, vNICs, HAVIPs) as the
//! operator declares it, the hosts vNICs live on, and observed state (who
//! holds each VIP) as the data plane reports it. Both are stored as JSON, so
//! every type here is serde.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::refusal::{refuse, shown, Refusal, Rule};

/// An IPv4 subnet, written `network/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits clear).
    pub network: Ipv4Addr,
    /// Prefix length, 0-32 bits.
    pub prefix: u8,
}

impl Subnet {
    /// The netmask, host order (`/24` -> `0xffffff00`).
    pub fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// The last address of the subnet.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// Addresses a host may use: all but network and broadcast, except in
    /// /31 and /32 where there are none of those.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let (first, last) = (u32::from(self.network), u32::from(self.broadcast()));
        let (first, last) = if self.prefix < 31 { (first + 1, last - 1) } else { (first, last) };
        (first..=last).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Refusal;
    fn from_str(s: &str) -> Result<Self, Refusal> {
        parse_cidr(s)
    }
}

/// A MAC address, written `02:00:c6:12:01:0b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        havip_common::Mac(&self.0).fmt(f)
    }
}

impl FromStr for MacAddr {
    type Err = Refusal;
    fn from_str(s: &str) -> Result<Self, Refusal> {
        parse_mac(s).map(Self)
    }
}

/// Serde as the text form, through Display and FromStr.
macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_as_text!(Subnet, MacAddr);

/// How a subnet carries a guest's broadcast and multicast. The two product pages disagree on
/// purpose: ENS "Only unicast is supported. Broadcast and multicast are not supported"; ZEC "A
/// HAVIP works because it sits inside a single layer-2 broadcast domain".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubnetMode {
    /// ENS: nothing a guest sends to a broadcast or multicast address reaches another guest;
    /// VRRP needs `unicast_peer`.
    #[default]
    Unicast,
    /// ZEC: IPv4 broadcast and multicast from a guest reach every other vNIC of the subnet, on
    /// every host (VRRP and CARP adverts to 224.0.0.18 among them).
    BroadcastDomain,
}

impl SubnetMode {
    /// The name operators write: `unicast`, `broadcast-domain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unicast => "unicast",
            Self::BroadcastDomain => "broadcast-domain",
        }
    }
}

impl fmt::Display for SubnetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubnetMode {
    type Err = Refusal;
    fn from_str(s: &str) -> Result<Self, Refusal> {
        match s {
            "unicast" => Ok(Self::Unicast),
            "broadcast-domain" => Ok(Self::BroadcastDomain),
            _ => Err(Refusal {
                rule: Rule::WellFormed,
                message: format!("subnet mode {}: must be unicast or broadcast-domain", shown(s)),
            }),
        }
    }
}

/// Storm control in a broadcast-domain subnet: how many broadcast and multicast frames each vNIC
/// may have replicated (a token bucket in XDP, per vNIC), so one guest flooding cannot starve the
/// others. Frames over the limit are dropped and counted (`storm_drops`); unicast traffic, VIP
/// traffic included, never passes through the bucket.
///
/// The defaults leave VRRP and CARP far below the limit: an advert a second per router (RFC 5798
/// §5.2.7, keepalived's `advert_int 1`) is 1 frame/s, and even hundreds of virtual routers in one
/// subnet stay under 1,000 frames/s per vNIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StormControl {
    /// Frames per second a vNIC may have replicated, sustained ([`StormControl::PPS`]; 1,000 by
    /// default).
    pub pps: u32,
    /// Frames a vNIC may send back to back above the rate before the limit bites
    /// ([`StormControl::BURST`]; 100 by default).
    pub burst: u32,
}

impl StormControl {
    /// The rates an operator may set, frames per second per vNIC.
    pub const PPS: std::ops::RangeInclusive<u32> = 1..=1_000_000;
    /// The bursts an operator may set, frames.
    pub const BURST: std::ops::RangeInclusive<u32> = 1..=100_000;

    /// [`Rule::StormControl`] unless the rate and burst are in [`StormControl::PPS`] and
    /// [`StormControl::BURST`]; the refusal names subnet `subnet`.
    pub fn check(&self, subnet: &str) -> Result<(), Refusal> {
        for (field, v, range, unit) in [
            ("storm_pps", self.pps, Self::PPS, "frames per second per vNIC"),
            ("storm_burst", self.burst, Self::BURST, "frames per vNIC"),
        ] {
            if !range.contains(&v) {
                refuse(
                    Rule::StormControl,
                    format!(
                        "subnet {subnet}: {field} {v} is outside {}-{} ({unit})",
                        range.start(),
                        range.end()
                    ),
                )?;
            }
        }
        Ok(())
    }
}

impl Default for StormControl {
    fn default() -> Self {
        Self { pps: 1000, burst: 100 }
    }
}

/// A subnet's settings beyond its CIDR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubnetSettings {
    /// Unicast (ENS) or a broadcast domain (ZEC).
    pub mode: SubnetMode,
    /// Storm control, applied in broadcast-domain mode.
    pub storm: StormControl,
}

/// A hypervisor that runs havip-agent: the vNICs it serves are the ones
/// whose [`Vnic::host`] is its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Unique in the VPC; by default the machine's hostname
    /// (`[agent] host_id`).
    pub id: String,
    /// Where other hosts reach this one (VXLAN, probes); `None` while a
    /// host runs alone.
    pub underlay: Option<Ipv4Addr>,
}

/// A guest's network interface: an id unique in the VPC, the host it lives
/// on, and the name of its host-side interface there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vnic {
    /// Unique in the VPC; HAVIP memberships name vNICs by it.
    pub name: String,
    /// The [`Host::id`] of the hypervisor it lives on.
    pub host: String,
    /// The host-side interface (tap, veth) on that host: what XDP attaches to.
    pub ifname: String,
    /// The guest (VM) the vNIC belongs to; quotas count HAVIPs per instance.
    pub instance: String,
    /// Name of the [`Subnet`] it is in (a key of [`DesiredState::subnets`]).
    pub subnet: String,
    /// Its own address; inside `subnet`, unique in the VPC.
    pub ip: Ipv4Addr,
    /// The guest's MAC: the source MAC its claims must carry (or a VRRP
    /// virtual MAC, where the HAVIP accepts those).
    #[serde(with = "mac_text")]
    pub mac: [u8; 6],
}

mod mac_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::MacAddr;

    pub fn serialize<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        MacAddr(*mac).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        MacAddr::deserialize(d).map(|m| m.0)
    }
}

/// A high-availability virtual IP: an address of one subnet that any of
/// its members may claim (ENS/ZEC HAVIP product pages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Havip {
    /// The virtual IP; unique, inside `subnet`, not a vNIC's address.
    pub vip: Ipv4Addr,
    /// Name of the [`Subnet`] the VIP and every member are in.
    pub subnet: String,
    /// vNIC names, in the order they were associated.
    #[serde(default)]
    pub members: Vec<String>,
    /// The EIP bound to it (1:1 NAT on the uplink), if any; outside every subnet.
    #[serde(default)]
    pub eip: Option<Ipv4Addr>,
    /// How the platform verifies and settles who holds it.
    #[serde(default)]
    pub settings: HavipSettings,
}

/// A HAVIP's settings: how the platform treats its members' claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HavipSettings {
    /// A member's claim may come from a VRRP virtual router MAC
    /// 00:00:5e:00:01:{VRID} (RFC 5798 §7.3; keepalived `use_vmac`) rather
    /// than its own; its vNIC stays the credential. On by default.
    pub accept_vrrp_vmac: bool,
    /// What happens when two members hold the VIP at once.
    pub split_brain: SplitBrainPolicy,
}

impl Default for HavipSettings {
    fn default() -> Self {
        Self { accept_vrrp_vmac: true, split_brain: SplitBrainPolicy::default() }
    }
}

/// What the platform does when two members hold one VIP at once (both
/// claim or both advertise VRRP as master: a split brain the guests cannot
/// resolve, e.g. VRRP lost between them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitBrainPolicy {
    /// The last claim wins, as on a plain L2 segment; reported.
    #[default]
    LastClaimWins,
    /// The holder keeps the VIP while it answers: a contender's claim is
    /// undone.
    KeepHolder,
    /// The member advertising the higher VRRP priority gets the VIP.
    VrrpPriority,
}

impl FromStr for SplitBrainPolicy {
    type Err = Refusal;
    fn from_str(s: &str) -> Result<Self, Refusal> {
        match s {
            "last-claim-wins" => Ok(Self::LastClaimWins),
            "keep-holder" => Ok(Self::KeepHolder),
            "vrrp-priority" => Ok(Self::VrrpPriority),
            _ => refuse(
                Rule::WellFormed,
                format!(
                    "{} is not a split-brain policy (last-claim-wins, keep-holder, vrrp-priority)",
                    shown(s)
                ),
            ),
        }
    }
}

impl fmt::Display for SplitBrainPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LastClaimWins => "last-claim-wins",
            Self::KeepHolder => "keep-holder",
            Self::VrrpPriority => "vrrp-priority",
        })
    }
}

/// Everything the operator declared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Subnets by name.
    pub subnets: BTreeMap<String, Subnet>,
    /// Settings of the subnets whose settings are not the default (unicast), by subnet name;
    /// every key names a subnet. State stored before these existed reads as all unicast.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subnet_settings: BTreeMap<String, SubnetSettings>,
    /// vNICs by [`Vnic::name`].
    pub vnics: BTreeMap<String, Vnic>,
    /// HAVIPs by VIP.
    pub havips: BTreeMap<Ipv4Addr, Havip>,
}

impl DesiredState {
    /// Subnet `name`'s settings: the recorded ones, else the default (unicast).
    pub fn subnet_settings(&self, name: &str) -> SubnetSettings {
        self.subnet_settings.get(name).copied().unwrap_or_default()
    }

    /// Records subnet `name`'s settings: the default ones are not kept, so
    /// [`DesiredState::subnet_settings`] (the map) holds only the subnets that differ.
    pub fn set_subnet_settings(&mut self, name: &str, settings: SubnetSettings) {
        if settings == SubnetSettings::default() {
            self.subnet_settings.remove(name);
        } else {
            self.subnet_settings.insert(name.to_owned(), settings);
        }
    }

    /// The vNICs that live on host `host`: the ones its agent attaches to.
    pub fn vnics_on<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Vnic> + 'a {
        self.vnics.values().filter(move |v| v.host == host)
    }
}

/// How many claims each HAVIP remembers.
pub const LAST_CLAIMS: usize = 8;

/// The holder record: which member holds a VIP, as a host's data plane
/// saw it take over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The [`Host::id`] whose data plane accepted the claim.
    pub host: String,
    /// The member vNIC ([`Vnic::name`]).
    pub vnic: String,
    /// The source MAC of the claim: the member's guest MAC, or a VRRP
    /// virtual MAC `00:00:5e:00:01:{VRID}` where the HAVIP accepts those.
    #[serde(with = "mac_text")]
    pub mac: [u8; 6],
    /// The holder epoch at which it took over (see [`Observed::epoch`]).
    pub epoch: u64,
}

/// What the data plane reported about one HAVIP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Who holds the VIP, if anyone.
    pub holder: Option<Holder>,
    /// When the current holder (or the absence of one) began, Unix ms.
    pub since_ms: Option<u64>,
    /// The kernel's holder epoch: grows on every holder change, a clear too.
    pub epoch: u64,
    /// Times the VIP moved to another vNIC than the one that last held it.
    pub failovers: u64,
    /// The revision of the holder record this host follows, in the shared
    /// store of many hosts (etcd's mod_revision of the holder key: the
    /// fencing token); 0 on a host that runs alone.
    #[serde(default)]
    pub revision: u64,
    /// The last vNIC that held the VIP, to tell a failover from a reclaim.
    pub last_holder: Option<String>,
    /// Most recent first, at most [`LAST_CLAIMS`].
    pub last_claims: VecDeque<Claim>,
}

/// One claim a data plane saw, accepted or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// When the claim arrived, Unix ms (the kernel's CLOCK_MONOTONIC stamp turned into wall time).
    pub at_ms: u64,
    /// The [`Vnic::name`] the claim arrived on (`ifindex N` when no vNIC has that ifindex).
    pub vnic: String,
    /// Whether the data plane accepted it.
    pub accepted: bool,
    /// Why a claim was refused, or what an accepted one changed.
    pub detail: String,
}

impl Observed {
    /// The holding vNIC's name, if any.
    pub fn holder_vnic(&self) -> Option<&str> {
        self.holder.as_ref().map(|h| h.vnic.as_str())
    }

    /// Keeps `claim` among the last [`LAST_CLAIMS`], newest first.
    pub fn remember(&mut self, claim: Claim) {
        self.last_claims.push_front(claim);
        self.last_claims.truncate(LAST_CLAIMS);
    }
}

/// Unix time in ms.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Now, Unix ms.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// RFC 3339 (UTC, milliseconds) of a Unix ms timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Parses an IPv4 address; IPv6 is refused by name.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, Refusal> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => refuse(Rule::Ipv4Only, format!("{s} is IPv6: only IPv4 is supported")),
        Err(_) => refuse(Rule::WellFormed, format!("{} is not an IPv4 address", shown(s))),
    }
}

/// Parses `network/prefix` text into a [`Subnet`].
///
/// # Errors
/// [`Rule::WellFormed`] for no '/', a prefix above 32 or host bits set;
/// [`Rule::Ipv4Only`] for an IPv6 network.
pub fn parse_cidr(s: &str) -> Result<Subnet, Refusal> {
    let Some((addr, prefix)) = s.split_once('/') else {
        return refuse(Rule::WellFormed, format!("{} is not a CIDR (address/prefix)", shown(s)));
    };
    let network = parse_ipv4(addr)?;
    let Some(prefix) = prefix.parse::<u8>().ok().filter(|p| *p <= 32) else {
        return refuse(Rule::WellFormed, format!("{}: prefix length must be 0 to 32", shown(s)));
    };
    let subnet = Subnet { network, prefix };
    let masked = Ipv4Addr::from(u32::from(network) & subnet.mask());
    if masked != network {
        refuse(Rule::WellFormed, format!("{s:?} has host bits set: did you mean {masked}/{prefix}?"))?;
    }
    Ok(subnet)
}

/// Parses `aa:bb:cc:dd:ee:ff` text (two hex digits per byte) into six bytes.
///
/// # Errors
/// [`Rule::WellFormed`] for any other form, or a multicast MAC (a vNIC's
/// MAC must be unicast).
pub fn parse_mac(s: &str) -> Result<[u8; 6], Refusal> {
    let malformed = || {
        refuse(
            Rule::WellFormed,
            format!("{} is not a MAC address (six hex bytes separated by ':')", shown(s)),
        )
    };
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return malformed();
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        match u8::from_str_radix(p, 16) {
            Ok(v) if p.len() == 2 => *b = v,
            _ => return malformed(),
        }
    }
    if mac[0] & 1 == 1 {
        refuse(Rule::WellFormed, format!("{s} is a multicast MAC: a vNIC's MAC must be unicast"))?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_through_json() {
        let v = Vnic {
            name: "vnic-a".into(),
            host: "hv1".into(),
            ifname: "vnic-a".into(),
            instance: "vm-a".into(),
            subnet: "vpc1".into(),
            ip: "198.18.1.11".parse().unwrap(),
            mac: [2, 0, 0xc6, 0x12, 1, 0x0b],
        };
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains(r#""mac":"02:00:c6:12:01:0b""#), "{json}");
        assert_eq!(serde_json::from_str::<Vnic>(&json).unwrap(), v);
        let s: Subnet = serde_json::from_str(r#""198.18.1.0/24""#).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""198.18.1.0/24""#);
    }

    #[test]
    fn hosts_skip_network_and_broadcast() {
        let s: Subnet = "198.18.1.0/30".parse().unwrap();
        let hosts: Vec<_> = s.hosts().map(|h| h.to_string()).collect();
        assert_eq!(hosts, ["198.18.1.1", "198.18.1.2"]);
        let p2p: Subnet = "198.18.1.0/31".parse().unwrap();
        assert_eq!(p2p.hosts().count(), 2);
    }

    #[test]
    fn last_claims_are_bounded_newest_first() {
        let mut o = Observed::default();
        for i in 0..20 {
            o.remember(Claim { at_ms: i, vnic: "v".into(), accepted: true, detail: String::new() });
        }
        assert_eq!(o.last_claims.len(), LAST_CLAIMS);
        assert_eq!(o.last_claims[0].at_ms, 19);
    }
}
