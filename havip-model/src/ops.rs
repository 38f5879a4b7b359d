//! The operator's operations as edits of the desired state, and the
//! declarative file (`havipctl apply -f`, the config's desired-state
//! sections). An operation checks what only it can (e.g. deleting something
//! in use); the caller then checks the whole result with
//! [`rules::check`](crate::rules::check).
//!
//! Operations that register a vNIC take the *local host*: the host a vNIC
//! written without `host` lives on (the one whose agent was asked).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{
    rules::{check_ifname, check_name, parse_cidr, parse_ipv4, parse_mac, refuse, Refusal, Rule},
    state::{
        DesiredState, Havip, HavipSettings, MacAddr, SplitBrainPolicy, SubnetMode, SubnetSettings, Vnic,
    },
};

/// A subnet as written by an operator.
///
/// The settings fields (`mode`, `storm_pps`, `storm_burst`): in a file (and the config's
/// `[[subnets]]`) an entry that writes none of them keeps the subnet's settings (the default for
/// a new subnet), so applying a file written before a subnet became a broadcast domain never
/// turns it off (that split keepalived pairs at once); an entry that writes any of them sets all
/// three, the default where left out. In `POST /v1/subnets` ([`put_subnet`]) each one left out
/// keeps the subnet's current value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    /// Unique in the VPC: 1-63 bytes of letters, digits, '.', '_' and '-'.
    pub name: String,
    /// `network/prefix` text, host bits clear (e.g. `198.18.1.0/24`).
    pub cidr: String,
    /// [`SubnetSettings::mode`] as text: `unicast` (ENS: no broadcast or multicast between
    /// guests) or `broadcast-domain` (ZEC: a guest's broadcast and multicast reach the subnet's
    /// other vNICs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// [`StormControl::pps`](crate::state::StormControl::pps): broadcast and multicast frames per second each vNIC may have
    /// replicated, 1-1,000,000 ([`StormControl::PPS`](crate::state::StormControl::PPS); 1,000 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_pps: Option<u32>,
    /// [`StormControl::burst`](crate::state::StormControl::burst): frames a vNIC may send back to back above the rate, 1-100,000
    /// ([`StormControl::BURST`](crate::state::StormControl::BURST); 100 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_burst: Option<u32>,
}

/// A subnet's new mode and storm control (`PUT /v1/subnets/{name}/mode`, [`set_subnet_mode`]):
/// a storm field left out keeps the subnet's current value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetModeSpec {
    /// `unicast` or `broadcast-domain` ([`SubnetMode`]).
    pub mode: String,
    /// [`StormControl::pps`](crate::state::StormControl::pps), frames per second per vNIC (1-1,000,000); kept when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_pps: Option<u32>,
    /// [`StormControl::burst`](crate::state::StormControl::burst), frames (1-100,000); kept when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_burst: Option<u32>,
}

/// `base` with what is written over it: the mode parsed, storm control within its bounds.
fn settings_over(
    subnet: &str,
    base: SubnetSettings,
    mode: Option<&str>,
    storm_pps: Option<u32>,
    storm_burst: Option<u32>,
) -> Result<SubnetSettings, Refusal> {
    let mut settings = base;
    if let Some(mode) = mode {
        settings.mode = mode.parse::<SubnetMode>().map_err(|e| in_subnet(subnet, e))?;
    }
    settings.storm.pps = storm_pps.unwrap_or(settings.storm.pps);
    settings.storm.burst = storm_burst.unwrap_or(settings.storm.burst);
    settings.storm.check(subnet)?;
    Ok(settings)
}

impl SubnetSpec {
    /// The settings the spec writes over `base`.
    fn settings(&self, base: SubnetSettings) -> Result<SubnetSettings, Refusal> {
        settings_over(&self.name, base, self.mode.as_deref(), self.storm_pps, self.storm_burst)
    }
}

/// A vNIC as written by an operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VnicSpec {
    /// Unique in the VPC: 1-63 bytes of letters, digits, '.', '_' and '-'.
    pub name: String,
    /// The host it lives on; the local host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its host-side interface; `name` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The guest (VM) it belongs to;
    /// [`Limits::max_havips_per_instance`](crate::rules::Limits::max_havips_per_instance) counts per
    /// instance.
    pub instance: String,
    /// Name of the subnet it is in; must exist.
    pub subnet: String,
    /// Its IPv4 address, dotted-quad text; must lie in `subnet`.
    pub ip: String,
    /// The guest's MAC, `aa:bb:cc:dd:ee:ff` text (two hex digits a byte; unicast).
    pub mac: String,
}

/// A HAVIP as written by an operator. Without `vip`, `create` takes the
/// next free address of the subnet.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HavipSpec {
    /// The VIP, dotted-quad text; required in a file, picked by `create` when absent.
    #[serde(default)]
    pub vip: Option<String>,
    /// Name of the subnet the VIP is in; must exist.
    pub subnet: String,
    /// Member vNIC names, all in `subnet`; none when absent.
    #[serde(default)]
    pub members: Vec<String>,
    /// The EIP to bind (1:1 NAT on the uplink), dotted-quad text; none when absent.
    #[serde(default)]
    pub eip: Option<String>,
    /// [`HavipSettings::accept_vrrp_vmac`]; true when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_vrrp_vmac: Option<bool>,
    /// [`HavipSettings::split_brain`]; last-claim-wins when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_brain: Option<SplitBrainPolicy>,
}

impl HavipSpec {
    /// The settings the spec writes, defaults for what it leaves out.
    fn settings(&self) -> HavipSettings {
        let d = HavipSettings::default();
        HavipSettings {
            accept_vrrp_vmac: self.accept_vrrp_vmac.unwrap_or(d.accept_vrrp_vmac),
            split_brain: self.split_brain.unwrap_or(d.split_brain),
        }
    }
}

/// The declarative file: every object in it is created, or updated to be
/// exactly as written; objects it does not mention are left alone.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredFile {
    /// Subnets to create or update.
    #[serde(default)]
    pub subnets: Vec<SubnetSpec>,
    /// vNICs to register or update.
    #[serde(default)]
    pub vnics: Vec<VnicSpec>,
    /// HAVIPs to create or update, keyed by their `vip`.
    #[serde(default)]
    pub havips: Vec<HavipSpec>,
}

impl VnicSpec {
    /// The vNIC, placed on `local_host` unless the spec names a host.
    fn parse(&self, local_host: &str) -> Result<Vnic, Refusal> {
        check_name("vNIC", &self.name)?;
        let ctx = |e: Refusal| Refusal { message: format!("vNIC {}: {}", self.name, e.message), ..e };
        let host = self.host.clone().unwrap_or_else(|| local_host.to_owned());
        check_name("host", &host).map_err(ctx)?;
        let ifname = self.ifname.clone().unwrap_or_else(|| self.name.clone());
        check_ifname(&ifname).map_err(ctx)?;
        Ok(Vnic {
            name: self.name.clone(),
            host,
            ifname,
            instance: self.instance.clone(),
            subnet: self.subnet.clone(),
            ip: parse_ipv4(&self.ip).map_err(ctx)?,
            mac: parse_mac(&self.mac).map_err(ctx)?,
        })
    }
}

fn in_subnet(name: &str, e: Refusal) -> Refusal {
    Refusal { message: format!("subnet {name}: {}", e.message), ..e }
}

fn parse_eip(eip: Option<&str>) -> Result<Option<Ipv4Addr>, Refusal> {
    eip.map(parse_ipv4).transpose()
}

impl DesiredFile {
    /// The objects of the file, typed, its vNICs placed on `local_host`
    /// unless they name a host; an object written twice is refused.
    pub fn parse(&self, local_host: &str) -> Result<DesiredState, Refusal> {
        let mut s = DesiredState::default();
        for sn in &self.subnets {
            check_name("subnet", &sn.name)?;
            let subnet = parse_cidr(&sn.cidr).map_err(|e| in_subnet(&sn.name, e))?;
            if s.subnets.insert(sn.name.clone(), subnet).is_some() {
                refuse(Rule::WellFormed, format!("subnet {} is written twice", sn.name))?;
            }
            // Settings written (any field): all three, the default where left out, recorded
            // even when they are the default, for `apply` to set; none written: none recorded,
            // and `apply` keeps the subnet's own.
            if sn.mode.is_some() || sn.storm_pps.is_some() || sn.storm_burst.is_some() {
                s.subnet_settings.insert(sn.name.clone(), sn.settings(SubnetSettings::default())?);
            }
        }
        for v in &self.vnics {
            if s.vnics.insert(v.name.clone(), v.parse(local_host)?).is_some() {
                refuse(Rule::WellFormed, format!("vNIC {} is written twice", v.name))?;
            }
        }
        for h in &self.havips {
            let Some(vip) = &h.vip else {
                return refuse(
                    Rule::WellFormed,
                    "a HAVIP in a file needs its vip (a file is applied again and again)",
                );
            };
            let vip = parse_ipv4(vip)?;
            let havip = Havip {
                vip,
                subnet: h.subnet.clone(),
                members: h.members.clone(),
                eip: parse_eip(h.eip.as_deref())?,
                settings: h.settings(),
            };
            if s.havips.insert(vip, havip).is_some() {
                refuse(Rule::VipUnique, format!("HAVIP {vip} is written twice"))?;
            }
        }
        Ok(s)
    }
}

impl From<&DesiredState> for DesiredFile {
    /// The file that would make a store hold exactly `s` (`havipctl export`).
    fn from(s: &DesiredState) -> Self {
        Self {
            subnets: s
                .subnets
                .iter()
                .map(|(name, sn)| {
                    let (d, set) = (SubnetSettings::default(), s.subnet_settings(name));
                    SubnetSpec {
                        name: name.clone(),
                        cidr: sn.to_string(),
                        mode: (set.mode != d.mode).then(|| set.mode.to_string()),
                        storm_pps: (set.storm.pps != d.storm.pps).then_some(set.storm.pps),
                        storm_burst: (set.storm.burst != d.storm.burst).then_some(set.storm.burst),
                    }
                })
                .collect(),
            vnics: s
                .vnics
                .values()
                .map(|v| VnicSpec {
                    name: v.name.clone(),
                    host: Some(v.host.clone()),
                    ifname: Some(v.ifname.clone()),
                    instance: v.instance.clone(),
                    subnet: v.subnet.clone(),
                    ip: v.ip.to_string(),
                    mac: MacAddr(v.mac).to_string(),
                })
                .collect(),
            havips: s
                .havips
                .values()
                .map(|h| {
                    let d = HavipSettings::default();
                    let s = h.settings;
                    HavipSpec {
                        vip: Some(h.vip.to_string()),
                        subnet: h.subnet.clone(),
                        members: h.members.clone(),
                        eip: h.eip.map(|e| e.to_string()),
                        accept_vrrp_vmac: (s.accept_vrrp_vmac != d.accept_vrrp_vmac)
                            .then_some(s.accept_vrrp_vmac),
                        split_brain: (s.split_brain != d.split_brain).then_some(s.split_brain),
                    }
                })
                .collect(),
        }
    }
}

/// Creates or updates every object of `file` (from [`DesiredFile::parse`]) in `s`: a subnet
/// whose entry wrote settings gets them; one whose entry wrote none keeps its own.
pub fn apply(s: &mut DesiredState, file: DesiredState) {
    for (name, settings) in &file.subnet_settings {
        s.set_subnet_settings(name, *settings);
    }
    s.subnets.extend(file.subnets);
    s.vnics.extend(file.vnics);
    s.havips.extend(file.havips);
}

/// Registers a subnet, or changes its CIDR; the settings the spec writes are set, the others
/// kept (an existing subnet's) or the default (a new one's).
pub fn put_subnet(s: &mut DesiredState, spec: &SubnetSpec) -> Result<(), Refusal> {
    check_name("subnet", &spec.name)?;
    let subnet = parse_cidr(&spec.cidr).map_err(|e| in_subnet(&spec.name, e))?;
    let settings = spec.settings(s.subnet_settings(&spec.name))?;
    s.subnets.insert(spec.name.clone(), subnet);
    s.set_subnet_settings(&spec.name, settings);
    Ok(())
}

/// Sets subnet `name`'s mode, and its storm control where `spec` writes it (kept where it does
/// not, also while the subnet is unicast: switching back to a broadcast domain finds it again).
/// Returns the subnet's settings now.
pub fn set_subnet_mode(
    s: &mut DesiredState,
    name: &str,
    spec: &SubnetModeSpec,
) -> Result<SubnetSettings, Refusal> {
    if !s.subnets.contains_key(name) {
        check_name("subnet", name)?;
        return refuse(Rule::UnknownSubnet, format!("subnet {name} does not exist"));
    }
    let settings =
        settings_over(name, s.subnet_settings(name), Some(&spec.mode), spec.storm_pps, spec.storm_burst)?;
    s.set_subnet_settings(name, settings);
    Ok(settings)
}

/// Removes an unused subnet.
///
/// A name no subnet may have is refused as such, but a subnet stored under
/// one (before names were checked) can still be deleted.
pub fn delete_subnet(s: &mut DesiredState, name: &str) -> Result<(), Refusal> {
    if !s.subnets.contains_key(name) {
        check_name("subnet", name)?;
        return refuse(Rule::UnknownSubnet, format!("subnet {name} does not exist"));
    }
    let users: Vec<String> = s
        .vnics
        .values()
        .filter(|v| v.subnet == name)
        .map(|v| format!("vNIC {}", v.name))
        .chain(s.havips.values().filter(|h| h.subnet == name).map(|h| format!("HAVIP {}", h.vip)))
        .collect();
    if !users.is_empty() {
        return refuse(Rule::SubnetInUse, format!("subnet {name} is used by {}", users.join(", ")));
    }
    s.subnets.remove(name);
    s.subnet_settings.remove(name);
    Ok(())
}

/// Registers a vNIC (on `local_host` unless the spec names a host), or
/// updates it.
pub fn put_vnic(s: &mut DesiredState, spec: &VnicSpec, local_host: &str) -> Result<(), Refusal> {
    s.vnics.insert(spec.name.clone(), spec.parse(local_host)?);
    Ok(())
}

/// Removes a vNIC that is no HAVIP's member.
///
/// A name no vNIC may have is refused as such, but a vNIC stored under one
/// (before names were checked) can still be deleted.
pub fn delete_vnic(s: &mut DesiredState, name: &str) -> Result<(), Refusal> {
    if !s.vnics.contains_key(name) {
        check_name("vNIC", name)?;
        return refuse(Rule::UnknownVnic, format!("vNIC {name} does not exist"));
    }
    let of: Vec<String> = s
        .havips
        .values()
        .filter(|h| h.members.iter().any(|m| m == name))
        .map(|h| h.vip.to_string())
        .collect();
    if !of.is_empty() {
        return refuse(
            Rule::VnicInUse,
            format!("vNIC {name} is a member of HAVIP {}: disassociate it first", of.join(", ")),
        );
    }
    s.vnics.remove(name);
    Ok(())
}

/// Creates a HAVIP; returns its address (allocated when the spec has none).
pub fn create_havip(s: &mut DesiredState, spec: &HavipSpec) -> Result<Ipv4Addr, Refusal> {
    check_name("subnet", &spec.subnet)?;
    let vip = match &spec.vip {
        Some(vip) => parse_ipv4(vip)?,
        None => next_free(s, &spec.subnet)?,
    };
    if s.havips.contains_key(&vip) {
        return refuse(Rule::VipUnique, format!("HAVIP {vip} exists already"));
    }
    let havip = Havip {
        vip,
        subnet: spec.subnet.clone(),
        members: spec.members.clone(),
        eip: parse_eip(spec.eip.as_deref())?,
        settings: spec.settings(),
    };
    s.havips.insert(vip, havip);
    Ok(vip)
}

/// The lowest host address of `subnet` that is neither a vNIC's nor a
/// HAVIP's, after the first (a VPC's gateway, by convention).
fn next_free(s: &DesiredState, subnet: &str) -> Result<Ipv4Addr, Refusal> {
    let Some(sn) = s.subnets.get(subnet) else {
        return refuse(Rule::UnknownSubnet, format!("subnet {subnet} does not exist"));
    };
    let mut used: std::collections::HashSet<Ipv4Addr> = s.vnics.values().map(|v| v.ip).collect();
    used.extend(s.havips.keys());
    match sn.hosts().skip(1).find(|ip| !used.contains(ip)) {
        Some(ip) => Ok(ip),
        None => {
            refuse(Rule::SubnetHasFreeAddress, format!("subnet {subnet} ({sn}) has no free address left"))
        }
    }
}

fn havip_mut(s: &mut DesiredState, vip: Ipv4Addr) -> Result<&mut Havip, Refusal> {
    s.havips
        .get_mut(&vip)
        .map_or_else(|| refuse(Rule::UnknownHavip, format!("HAVIP {vip} does not exist")), Ok)
}

/// Deletes a HAVIP. One with members or an EIP is refused unless `force`.
pub fn delete_havip(s: &mut DesiredState, vip: Ipv4Addr, force: bool) -> Result<Havip, Refusal> {
    let h = havip_mut(s, vip)?;
    if !force {
        let mut uses = Vec::new();
        if !h.members.is_empty() {
            uses.push(format!("members {}", h.members.join(", ")));
        }
        if let Some(eip) = h.eip {
            uses.push(format!("EIP {eip}"));
        }
        if !uses.is_empty() {
            return refuse(
                Rule::DeleteInUse,
                format!(
                    "HAVIP {vip} still has {}: disassociate and unbind first, or delete with force",
                    uses.join(" and ")
                ),
            );
        }
    }
    Ok(s.havips.remove(&vip).expect("looked up above"))
}

/// Makes `vnic` a member of the HAVIP.
pub fn associate(s: &mut DesiredState, vip: Ipv4Addr, vnic: &str) -> Result<(), Refusal> {
    check_name("vNIC", vnic)?;
    if !s.vnics.contains_key(vnic) {
        return refuse(Rule::UnknownVnic, format!("vNIC {vnic} does not exist"));
    }
    havip_mut(s, vip)?.members.push(vnic.to_owned());
    Ok(())
}

/// Takes `vnic` out of the HAVIP's members.
///
/// # Errors
/// [`Rule::UnknownVnic`] for a vNIC that does not exist,
/// [`Rule::MemberExists`] for one that is not a member (a member is always
/// a registered vNIC).
pub fn disassociate(s: &mut DesiredState, vip: Ipv4Addr, vnic: &str) -> Result<(), Refusal> {
    check_name("vNIC", vnic)?;
    let registered = s.vnics.contains_key(vnic);
    let h = havip_mut(s, vip)?;
    let Some(i) = h.members.iter().position(|m| m == vnic) else {
        if !registered {
            return refuse(Rule::UnknownVnic, format!("vNIC {vnic} does not exist"));
        }
        return refuse(Rule::MemberExists, format!("vNIC {vnic} is not a member of HAVIP {vip}"));
    };
    h.members.remove(i);
    Ok(())
}

/// Binds an EIP to the HAVIP (1:1 NAT on the uplink).
pub fn bind_eip(s: &mut DesiredState, vip: Ipv4Addr, eip: &str, max_eips: usize) -> Result<(), Refusal> {
    let eip = parse_ipv4(eip)?;
    let h = havip_mut(s, vip)?;
    match h.eip {
        Some(bound) if bound == eip => {}
        Some(bound) => refuse(
            Rule::MaxEipsPerHavip,
            format!("HAVIP {vip} has EIP {bound} bound already; a HAVIP may have at most {max_eips} EIP"),
        )?,
        None => h.eip = Some(eip),
    }
    Ok(())
}

/// Unbinds the HAVIP's EIP.
///
/// # Errors
/// [`Rule::UnknownHavip`] for no such HAVIP, [`Rule::EipBound`] for one
/// without an EIP.
pub fn unbind_eip(s: &mut DesiredState, vip: Ipv4Addr) -> Result<(), Refusal> {
    let h = havip_mut(s, vip)?;
    if h.eip.take().is_none() {
        return refuse(Rule::EipBound, format!("HAVIP {vip} has no EIP bound"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{check, Limits};
    use crate::state::StormControl;

    fn lab() -> DesiredState {
        let file: DesiredFile = toml::from_str(
            r#"
            [[subnets]]
            name = "vpc1"
            cidr = "198.18.1.0/29"
            [[vnics]]
            name = "vnic-a"
            instance = "vm-a"
            subnet = "vpc1"
            ip = "198.18.1.1"
            mac = "02:00:00:00:00:01"
            "#,
        )
        .unwrap();
        file.parse("hv1").unwrap()
    }

    #[test]
    fn export_round_trips_through_toml() {
        let mut s = lab();
        let spec = HavipSpec {
            subnet: "vpc1".into(),
            members: vec!["vnic-a".into()],
            split_brain: Some(SplitBrainPolicy::VrrpPriority),
            ..Default::default()
        };
        let vip = create_havip(&mut s, &spec).unwrap();
        bind_eip(&mut s, vip, "203.0.113.7", 1).unwrap();
        assert_eq!(s.havips[&vip].settings.split_brain, SplitBrainPolicy::VrrpPriority);
        assert!(s.havips[&vip].settings.accept_vrrp_vmac, "on by default");
        let text = toml::to_string(&DesiredFile::from(&s)).unwrap();
        let back: DesiredFile = toml::from_str(&text).unwrap();
        assert_eq!(back.parse("elsewhere").unwrap(), s, "{text}");
    }

    #[test]
    fn next_free_skips_vnics_and_havips() {
        let mut s = lab();
        let spec = HavipSpec { subnet: "vpc1".into(), ..Default::default() };
        assert_eq!(create_havip(&mut s, &spec).unwrap().to_string(), "198.18.1.2");
        assert_eq!(create_havip(&mut s, &spec).unwrap().to_string(), "198.18.1.3");
        for _ in 0..3 {
            create_havip(&mut s, &spec).unwrap();
        }
        assert_eq!(create_havip(&mut s, &spec).unwrap_err().rule, Rule::SubnetHasFreeAddress);
    }

    #[test]
    fn delete_in_use_needs_force() {
        let mut s = lab();
        let spec = HavipSpec { subnet: "vpc1".into(), members: vec!["vnic-a".into()], ..Default::default() };
        let vip = create_havip(&mut s, &spec).unwrap();
        let e = delete_havip(&mut s, vip, false).unwrap_err();
        assert_eq!(e.to_string(), "refused by rule delete-only-unused: HAVIP 198.18.1.2 still has members vnic-a: disassociate and unbind first, or delete with force");
        assert_eq!(delete_vnic(&mut s, "vnic-a").unwrap_err().rule, Rule::VnicInUse);
        delete_havip(&mut s, vip, true).unwrap();
        delete_vnic(&mut s, "vnic-a").unwrap();
        delete_subnet(&mut s, "vpc1").unwrap();
        assert_eq!(s, DesiredState::default());
    }

    #[test]
    fn second_eip_is_refused() {
        let mut s = lab();
        let vip = create_havip(&mut s, &HavipSpec { subnet: "vpc1".into(), ..Default::default() }).unwrap();
        bind_eip(&mut s, vip, "203.0.113.7", 1).unwrap();
        bind_eip(&mut s, vip, "203.0.113.7", 1).unwrap();
        assert_eq!(bind_eip(&mut s, vip, "203.0.113.8", 1).unwrap_err().rule, Rule::MaxEipsPerHavip);
    }

    #[test]
    fn file_havips_need_an_address_and_appear_once() {
        let f = DesiredFile {
            havips: vec![HavipSpec { subnet: "vpc1".into(), ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(f.parse("hv1").unwrap_err().rule, Rule::WellFormed);
        let h = HavipSpec { vip: Some("198.18.1.5".into()), subnet: "vpc1".into(), ..Default::default() };
        let f = DesiredFile { havips: vec![h.clone(), h], ..Default::default() };
        assert_eq!(f.parse("hv1").unwrap_err().rule, Rule::VipUnique);
    }

    // --- issue 12: every refusal names the rule actually broken -------------

    #[test]
    fn refusals_name_the_rule_actually_broken() {
        let mut s = lab();
        let vip = create_havip(&mut s, &HavipSpec { subnet: "vpc1".into(), ..Default::default() }).unwrap();
        let e = unbind_eip(&mut s, vip).unwrap_err();
        assert_eq!(e.to_string(), "refused by rule eip-bound: HAVIP 198.18.1.2 has no EIP bound");
        assert!(!e.rule.is_not_found(), "the HAVIP exists: a conflict, not a 404");
        let e = disassociate(&mut s, vip, "vnic-a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused by rule member-exists: vNIC vnic-a is not a member of HAVIP 198.18.1.2"
        );
        assert!(!e.rule.is_not_found());
        // What does not exist still says so.
        assert_eq!(disassociate(&mut s, vip, "nope").unwrap_err().rule, Rule::UnknownVnic);
        let gone: Ipv4Addr = "198.18.1.6".parse().unwrap();
        assert_eq!(unbind_eip(&mut s, gone).unwrap_err().rule, Rule::UnknownHavip);
        // A stored object with a name from before names were checked can
        // still be deleted.
        let mut legacy = lab();
        legacy.subnets.insert("old name".into(), crate::rules::parse_cidr("10.9.0.0/24").unwrap());
        delete_subnet(&mut legacy, "old name").unwrap();
        // A name no object can have is not a 404 either, and is not echoed raw.
        for e in [
            delete_vnic(&mut s, "a\nb").unwrap_err(),
            delete_subnet(&mut s, "a\nb").unwrap_err(),
            associate(&mut s, vip, "a\nb").unwrap_err(),
            disassociate(&mut s, vip, "a\nb").unwrap_err(),
        ] {
            assert_eq!(e.rule, Rule::WellFormed, "{e}");
            assert!(!e.message.contains('\n'), "{e}");
        }
    }

    // --- issue 12: one validation for every name, on every path in ----------

    /// A file with every kind of object, every name at its longest and made
    /// of every character a name may have.
    fn full_file() -> DesiredFile {
        let n = |c: char| format!("{c}.Z_9-{}", "a".repeat(57));
        toml::from_str(&format!(
            r#"
            [[subnets]]
            name = "{sn}"
            cidr = "198.18.1.0/24"
            [[vnics]]
            name = "{v}"
            host = "{h}"
            ifname = "tap.Z_9-0123456"
            instance = "{i}"
            subnet = "{sn}"
            ip = "198.18.1.11"
            mac = "02:00:00:00:00:01"
            [[havips]]
            vip = "198.18.1.50"
            subnet = "{sn}"
            members = ["{v}"]
            eip = "203.0.113.7"
            "#,
            sn = n('s'),
            v = n('v'),
            h = n('h'),
            i = n('i'),
        ))
        .unwrap()
    }

    #[test]
    fn what_apply_can_create_the_verbs_can_delete() {
        let file = full_file();
        let mut s = DesiredState::default();
        apply(&mut s, file.parse("hv1").unwrap());
        check(&s, &Limits::default()).unwrap();
        // Through the verbs, in the order an operator would.
        let vip: Ipv4Addr = "198.18.1.50".parse().unwrap();
        let vnic = file.vnics[0].name.clone();
        unbind_eip(&mut s, vip).unwrap();
        disassociate(&mut s, vip, &vnic).unwrap();
        delete_havip(&mut s, vip, false).unwrap();
        delete_vnic(&mut s, &vnic).unwrap();
        delete_subnet(&mut s, &file.subnets[0].name).unwrap();
        assert_eq!(s, DesiredState::default());

        // And what the verbs refuse, apply + check refuse too, by the same rule.
        let long = "y".repeat(1 << 20);
        let bad = ["a\nb", "sp ace", "a/b", "", long.as_str()];
        for name in bad {
            let verb = {
                let mut s = lab();
                put_subnet(
                    &mut s,
                    &SubnetSpec { name: name.into(), cidr: "10.9.0.0/24".into(), ..Default::default() },
                )
                .and_then(|()| check(&s, &Limits::default()))
                .unwrap_err()
                .rule
            };
            let mut f = full_file();
            f.subnets[0].name = name.into();
            let via_file = file_refusal(&f);
            assert_eq!((verb, via_file), (Rule::WellFormed, Rule::WellFormed), "subnet {name:.20?}");

            let mut f = full_file();
            f.vnics[0].instance = name.into();
            assert_eq!(file_refusal(&f), Rule::WellFormed, "instance {name:.20?}");
            let mut f = full_file();
            f.havips[0].members.push(name.into());
            assert_eq!(file_refusal(&f), Rule::WellFormed, "member {name:.20?}");
        }
    }

    /// The rule `apply` of `f` is refused by (parse or check).
    fn file_refusal(f: &DesiredFile) -> Rule {
        let mut s = DesiredState::default();
        f.parse("hv1")
            .and_then(|objects| {
                apply(&mut s, objects);
                check(&s, &Limits::default())
            })
            .expect_err("must be refused")
            .rule
    }

    // --- issue 12: what export writes, apply takes back, at any capacity ----

    #[test]
    fn export_at_capacity_is_applied_back_unchanged() {
        let limits = Limits::default();
        let cap = limits.capacity;
        let mut s = DesiredState::default();
        let spec = |name: &str, cidr: &str| SubnetSpec {
            name: name.into(),
            cidr: cidr.into(),
            ..Default::default()
        };
        put_subnet(&mut s, &spec("vpc1", "10.0.0.0/16")).unwrap();
        put_subnet(
            &mut s,
            &SubnetSpec { mode: Some("broadcast-domain".into()), ..spec("vpc2", "10.1.0.0/16") },
        )
        .unwrap();
        // Every vNIC the maps hold, each its own instance, longest names.
        let vnic = |i: u32| format!("vnic-{i:04}-{}", "v".repeat(53));
        for i in 0..cap.max_vnics {
            let spec = VnicSpec {
                name: vnic(i),
                host: Some(format!("hv{}-{}", i % 4, "h".repeat(59))),
                ifname: Some(format!("tap{i}")),
                instance: format!("vm-{i:04}-{}", "i".repeat(55)),
                subnet: "vpc1".into(),
                ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 10)) + i).to_string(),
                mac: MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]).to_string(),
            };
            put_vnic(&mut s, &spec, "hv0").unwrap();
        }
        // Every instance in as many HAVIPs as it may be, each HAVIP with as
        // many members as it may have, an EIP and settings on each.
        let per_havip = limits.max_members_per_havip as u32;
        let with_members = cap.max_vnics * limits.max_havips_per_instance as u32 / per_havip;
        for k in 0..with_members {
            let members = (0..per_havip).map(|j| vnic((k * per_havip + j) % cap.max_vnics)).collect();
            let spec = HavipSpec {
                subnet: "vpc1".into(),
                members,
                eip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + k).to_string()),
                accept_vrrp_vmac: Some(k % 2 == 0),
                split_brain: Some(SplitBrainPolicy::KeepHolder),
                ..Default::default()
            };
            create_havip(&mut s, &spec).unwrap();
        }
        // And memberless HAVIPs up to the maps' capacity.
        let first = u32::from(Ipv4Addr::new(10, 1, 0, 2));
        for i in 0..cap.max_vips - s.havips.len() as u32 {
            let vip = Some(Ipv4Addr::from(first + i).to_string());
            create_havip(&mut s, &HavipSpec { vip, subnet: "vpc2".into(), ..Default::default() }).unwrap();
        }
        assert_eq!((s.havips.len(), s.vnics.len()), (cap.max_vips as usize, cap.max_vnics as usize));
        check(&s, &limits).unwrap();

        let text = toml::to_string(&DesiredFile::from(&s)).unwrap();
        let file: DesiredFile = toml::from_str(&text).unwrap();
        let mut back = DesiredState::default();
        apply(&mut back, file.parse("elsewhere").unwrap());
        check(&back, &limits).unwrap();
        assert_eq!(back, s, "re-applied unchanged");
        // Applied onto the very state it came from, it changes nothing.
        let mut again = s.clone();
        apply(&mut again, file.parse("elsewhere").unwrap());
        check(&again, &limits).unwrap();
        assert_eq!(again, s);
        eprintln!("export at capacity: {} bytes of TOML", text.len());
    }

    // --- issue 11: a subnet's mode and storm control ------------------------

    fn mode(m: &str, pps: Option<u32>, burst: Option<u32>) -> SubnetModeSpec {
        SubnetModeSpec { mode: m.into(), storm_pps: pps, storm_burst: burst }
    }

    #[test]
    fn a_subnet_is_unicast_until_set_and_only_what_differs_is_kept() {
        let mut s = lab();
        assert_eq!(s.subnet_settings("vpc1"), SubnetSettings::default());
        assert_eq!(s.subnet_settings("vpc1").mode, SubnetMode::Unicast);
        assert!(s.subnet_settings.is_empty());
        let set = set_subnet_mode(&mut s, "vpc1", &mode("broadcast-domain", None, None)).unwrap();
        assert_eq!(
            (set.mode, set.storm),
            (SubnetMode::BroadcastDomain, StormControl { pps: 1000, burst: 100 })
        );
        check(&s, &Limits::default()).unwrap();
        // Storm fields each on their own; what is left out is kept.
        set_subnet_mode(&mut s, "vpc1", &mode("broadcast-domain", Some(500), None)).unwrap();
        let set = set_subnet_mode(&mut s, "vpc1", &mode("broadcast-domain", None, Some(50))).unwrap();
        assert_eq!(set.storm, StormControl { pps: 500, burst: 50 });
        // Unicast keeps the storm control for the next switch back.
        let set = set_subnet_mode(&mut s, "vpc1", &mode("unicast", None, None)).unwrap();
        assert_eq!((set.mode, set.storm.pps), (SubnetMode::Unicast, 500));
        assert_eq!(s.subnet_settings.len(), 1, "not the default: kept");
        // Back to the default: nothing recorded.
        set_subnet_mode(&mut s, "vpc1", &mode("unicast", Some(1000), Some(100))).unwrap();
        assert!(s.subnet_settings.is_empty());
        assert_eq!(s, lab());
    }

    #[test]
    fn bad_modes_and_storms_are_refused_by_name_and_change_nothing() {
        let mut s = lab();
        set_subnet_mode(&mut s, "vpc1", &mode("broadcast-domain", Some(700), Some(70))).unwrap();
        let before = s.clone();
        let cases = [
            (
                mode("multicast", None, None),
                "refused by rule well-formed: subnet vpc1: subnet mode \"multicast\": must be unicast or \
                 broadcast-domain",
            ),
            (
                mode("broadcast-domain", Some(0), None),
                "refused by rule storm-control: subnet vpc1: storm_pps 0 is outside 1-1000000 (frames per \
                 second per vNIC)",
            ),
            (
                mode("broadcast-domain", Some(1_000_001), None),
                "refused by rule storm-control: subnet vpc1: storm_pps 1000001 is outside 1-1000000 (frames \
                 per second per vNIC)",
            ),
            (
                mode("broadcast-domain", None, Some(0)),
                "refused by rule storm-control: subnet vpc1: storm_burst 0 is outside 1-100000 (frames per vNIC)",
            ),
            (
                mode("broadcast-domain", Some(5), Some(100_001)),
                "refused by rule storm-control: subnet vpc1: storm_burst 100001 is outside 1-100000 (frames \
                 per vNIC)",
            ),
        ];
        for (spec, text) in cases {
            assert_eq!(set_subnet_mode(&mut s, "vpc1", &spec).unwrap_err().to_string(), text);
            assert_eq!(s, before, "a refused call changes nothing");
        }
        // The bounds themselves are fine.
        let mut edge = s.clone();
        set_subnet_mode(&mut edge, "vpc1", &mode("broadcast-domain", Some(1), Some(100_000))).unwrap();
        set_subnet_mode(&mut edge, "vpc1", &mode("broadcast-domain", Some(1_000_000), Some(1))).unwrap();
        check(&edge, &Limits::default()).unwrap();
        // Settings only for a subnet that exists.
        let e = set_subnet_mode(&mut s, "vpc9", &mode("broadcast-domain", None, None)).unwrap_err();
        assert_eq!((e.rule, e.rule.is_not_found()), (Rule::UnknownSubnet, true));
        assert_eq!(
            set_subnet_mode(&mut s, "a\nb", &mode("unicast", None, None)).unwrap_err().rule,
            Rule::WellFormed
        );
        // The same bounds through put_subnet, and through the file.
        let bad = SubnetSpec { storm_pps: Some(0), ..spec("vpc1", "198.18.1.0/29") };
        assert_eq!(put_subnet(&mut s, &bad).unwrap_err().rule, Rule::StormControl);
        let bad = SubnetSpec { mode: Some("Broadcast".into()), ..spec("vpc2", "198.18.2.0/24") };
        assert_eq!(put_subnet(&mut s, &bad).unwrap_err().rule, Rule::WellFormed);
        assert_eq!(s, before);
        let f = DesiredFile {
            subnets: vec![SubnetSpec { storm_burst: Some(0), ..spec("x", "10.0.0.0/24") }],
            ..Default::default()
        };
        assert_eq!(f.parse("hv1").unwrap_err().rule, Rule::StormControl);
        // And rules::check catches what got in otherwise.
        let mut raw = before.clone();
        raw.subnet_settings.get_mut("vpc1").unwrap().storm.pps = 0;
        assert_eq!(check(&raw, &Limits::default()).unwrap_err().rule, Rule::StormControl);
        let mut raw = before.clone();
        raw.subnet_settings.insert(
            "vpc9".into(),
            SubnetSettings { mode: SubnetMode::BroadcastDomain, ..Default::default() },
        );
        let e = check(&raw, &Limits::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused by rule subnet-exists: settings of subnet vpc9: subnet vpc9 does not exist"
        );
    }

    fn spec(name: &str, cidr: &str) -> SubnetSpec {
        SubnetSpec { name: name.into(), cidr: cidr.into(), ..Default::default() }
    }

    #[test]
    fn put_subnet_keeps_what_it_does_not_write() {
        let mut s = DesiredState::default();
        let written = SubnetSpec {
            mode: Some("broadcast-domain".into()),
            storm_pps: Some(50),
            ..spec("vpc1", "198.18.1.0/24")
        };
        put_subnet(&mut s, &written).unwrap();
        let want =
            SubnetSettings { mode: SubnetMode::BroadcastDomain, storm: StormControl { pps: 50, burst: 100 } };
        assert_eq!(s.subnet_settings("vpc1"), want);
        // A CIDR change alone keeps the settings.
        put_subnet(&mut s, &spec("vpc1", "198.18.0.0/23")).unwrap();
        assert_eq!(s.subnet_settings("vpc1"), want);
        put_subnet(&mut s, &SubnetSpec { storm_burst: Some(9), ..spec("vpc1", "198.18.0.0/23") }).unwrap();
        assert_eq!(s.subnet_settings("vpc1").storm, StormControl { pps: 50, burst: 9 });
        // A new subnet starts from the default.
        put_subnet(&mut s, &spec("vpc2", "198.18.2.0/24")).unwrap();
        assert!(!s.subnet_settings.contains_key("vpc2"));
        check(&s, &Limits::default()).unwrap();
        // Deleting a subnet drops its settings: made again, it is unicast.
        delete_subnet(&mut s, "vpc1").unwrap();
        assert!(s.subnet_settings.is_empty());
        put_subnet(&mut s, &spec("vpc1", "198.18.1.0/24")).unwrap();
        assert_eq!(s.subnet_settings("vpc1"), SubnetSettings::default());
    }

    #[test]
    fn the_file_writes_modes_and_takes_them_back() {
        let mut s = lab();
        put_subnet(&mut s, &spec("vpc2", "198.18.2.0/24")).unwrap();
        put_subnet(&mut s, &spec("vpc3", "198.18.3.0/24")).unwrap();
        set_subnet_mode(&mut s, "vpc1", &mode("broadcast-domain", Some(250), None)).unwrap();
        set_subnet_mode(&mut s, "vpc3", &mode("unicast", None, Some(7))).unwrap();
        let text = toml::to_string(&DesiredFile::from(&s)).unwrap();
        assert!(text.contains("mode = \"broadcast-domain\"\nstorm_pps = 250\n"), "{text}");
        assert_eq!(text.matches("mode =").count(), 1, "only what is not the default is written: {text}");
        assert_eq!(text.matches("storm_burst = 7").count(), 1, "{text}");
        let back: DesiredFile = toml::from_str(&text).unwrap();
        assert_eq!(back.parse("elsewhere").unwrap(), s, "{text}");
        // Applied: a subnet the file writes without settings keeps its own (a file from before
        // it became a broadcast domain does not turn that off); one written with settings gets
        // all three (the default where left out), `mode = "unicast"` included.
        let mut other = s.clone();
        set_subnet_mode(&mut other, "vpc2", &mode("broadcast-domain", None, None)).unwrap();
        let file: DesiredFile = toml::from_str(
            "[[subnets]]\nname = \"vpc1\"\ncidr = \"198.18.1.0/29\"\n\
             [[subnets]]\nname = \"vpc2\"\ncidr = \"198.18.2.0/24\"\nmode = \"unicast\"\n\
             [[subnets]]\nname = \"vpc3\"\ncidr = \"198.18.3.0/24\"\nmode = \"broadcast-domain\"\n",
        )
        .unwrap();
        let kept = other.subnet_settings("vpc1");
        apply(&mut other, file.parse("hv1").unwrap());
        check(&other, &Limits::default()).unwrap();
        assert_eq!(other.subnet_settings("vpc1"), kept);
        assert_eq!(kept.mode, SubnetMode::BroadcastDomain);
        assert_eq!(other.subnet_settings("vpc2"), SubnetSettings::default());
        assert!(!other.subnet_settings.contains_key("vpc2"), "the default is not kept");
        assert_eq!(
            other.subnet_settings("vpc3"),
            SubnetSettings { mode: SubnetMode::BroadcastDomain, ..Default::default() }
        );
        // Unknown fields and modes in a file are refused.
        assert!(toml::from_str::<DesiredFile>(
            "[[subnets]]\nname = \"a\"\ncidr = \"10.0.0.0/24\"\nmodes = \"x\""
        )
        .is_err());
        let f: DesiredFile =
            toml::from_str("[[subnets]]\nname = \"a\"\ncidr = \"10.0.0.0/24\"\nmode = \"l2\"").unwrap();
        assert_eq!(
            f.parse("hv1").unwrap_err().to_string(),
            "refused by rule well-formed: subnet a: subnet mode \"l2\": must be unicast or broadcast-domain"
        );
    }

    #[test]
    fn state_stored_before_modes_reads_as_unicast() {
        let old = r#"{"subnets":{"vpc1":"198.18.1.0/24"},"vnics":{},"havips":{}}"#;
        let s: DesiredState = serde_json::from_str(old).unwrap();
        assert_eq!(s.subnet_settings("vpc1").mode, SubnetMode::Unicast);
        assert_eq!(serde_json::to_string(&s).unwrap(), old, "no settings: written as before");
        let mut s = s;
        set_subnet_mode(&mut s, "vpc1", &mode("broadcast-domain", None, None)).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.contains(
                r#""subnet_settings":{"vpc1":{"mode":"broadcast-domain","storm":{"pps":1000,"burst":100}}}"#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<DesiredState>(&json).unwrap(), s);
    }
}
