//! The agent's configuration file (TOML): which host it is, where it keeps its
//! state (`[store]`: the embedded redb file, or etcd for many hosts) and serves
//! its API, its quotas and map capacities, the host's uplink and underlay
//! (`[underlay]`: many hosts), and optionally
//! desired state (`[[subnets]]`, `[[vnics]]`, `[[havips]]`) that is applied to
//! the store at every start exactly like `havipctl apply -f` (a subnet's
//! optional `mode`, `storm_pps`, `storm_burst` included: as in a file, an
//! entry that writes none of them keeps the subnet's settings, so a mode set
//! through the API survives a restart; one that writes any sets all three).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use havip_model::{
    ops,
    rules::{self, check_name, parse_ipv4, Rule},
    Capacity, DesiredFile, DesiredState, Host, Limits,
};
use serde::{de::DeserializeOwned, Deserialize};

use crate::{
    control::verifier::VerifySettings,
    host::uplink::UplinkSpec,
    store::cluster::{EtcdSettings, EtcdTls, DEFAULT_PREFIX},
};

/// Who the agent is, and where it keeps and serves things: every path is
/// configurable so that several agents (e.g. parallel tests) never share one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// This host's id, unique in the VPC: vNICs registered without a host
    /// live here. The machine's hostname when unset.
    pub host_id: Option<String>,
    /// This host's underlay address (for many hosts); none when alone.
    pub underlay: Option<Ipv4Addr>,
    /// The embedded store (redb): desired and observed state.
    pub store: PathBuf,
    /// The API's Unix socket (`havipctl --socket`).
    pub api_socket: PathBuf,
    /// Prometheus `/metrics` on this TCP address; none when unset.
    pub metrics: Option<SocketAddr>,
    /// The group that may use the API socket (`root:<group>`, 0660): a
    /// group name or a numeric gid. Unset: the owner only (0600).
    pub api_group: Option<GroupSpec>,
}

/// `[agent] api_group`: a group name (looked up in the group database) or a
/// numeric gid (used as it is: no group entry is needed).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GroupSpec {
    /// A numeric gid (`api_group = 4242`).
    Gid(u32),
    /// A group name, or a gid written as a string of digits.
    Name(String),
}

impl GroupSpec {
    /// The gid: a number as it is (also written as a string of digits), a
    /// name from the group database; a name with no group is an error that
    /// names it.
    pub fn resolve(&self) -> Result<u32> {
        match self {
            GroupSpec::Gid(gid) => Ok(*gid),
            GroupSpec::Name(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                n.parse().with_context(|| format!("gid {n:?} is out of range"))
            }
            GroupSpec::Name(n) => group_gid(n)?.with_context(|| {
                format!("no group named {n:?} on this host (create it: groupadd --system {n})")
            }),
        }
    }
}

/// The gid of group `name` from the group database (getgrnam_r), if any.
fn group_gid(name: &str) -> Result<Option<u32>> {
    let cname = std::ffi::CString::new(name).with_context(|| format!("group name {name:?}"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: every pointer is valid for the call; `buf` outlives `grp`,
        // and only the gid is read, before `buf` changes.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut found)
        };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(grp.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => {
                return Err(std::io::Error::from_raw_os_error(e))
                    .with_context(|| format!("looking up group {name:?}"))
            }
        }
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            host_id: None,
            underlay: None,
            store: PathBuf::from("/var/lib/havip/state.redb"),
            api_socket: PathBuf::from(havip_api::DEFAULT_SOCKET),
            metrics: None,
            api_group: None,
        }
    }
}

/// `[uplink]`: the NIC that carries EIP traffic, and its next hop.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    name: String,
    next_hop: String,
}

/// `[store]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    backend: Backend,
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    lease_ttl_s: Option<u64>,
    dial_timeout_ms: Option<u64>,
    max_txn_ops: Option<usize>,
}

#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    #[default]
    Redb,
    Etcd,
}

/// Where desired and observed state live (`[store]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSettings {
    /// `backend = "redb"` (the default): the embedded file `[agent] store`,
    /// for one host.
    Redb(PathBuf),
    /// `backend = "etcd"`: etcd, shared by many hosts (needs `[underlay]`).
    Etcd(EtcdSettings),
}

impl RawStore {
    /// Checks the section; `redb` is `[agent] store`.
    fn check(self, redb: &Path) -> Result<StoreSettings> {
        if self.backend == Backend::Redb {
            let etcd_only = [
                ("endpoints", self.endpoints.is_some()),
                ("prefix", self.prefix.is_some()),
                ("ca", self.ca.is_some()),
                ("cert", self.cert.is_some()),
                ("key", self.key.is_some()),
                ("lease_ttl_s", self.lease_ttl_s.is_some()),
                ("dial_timeout_ms", self.dial_timeout_ms.is_some()),
                ("max_txn_ops", self.max_txn_ops.is_some()),
            ];
            if let Some((name, _)) = etcd_only.iter().find(|(_, set)| *set) {
                bail!("store.{name} is set but store.backend is \"redb\": it applies to backend = \"etcd\" only");
            }
            return Ok(StoreSettings::Redb(redb.to_owned()));
        }
        let endpoints = self.endpoints.unwrap_or_default();
        if endpoints.is_empty() {
            bail!("store.backend = \"etcd\" needs store.endpoints (e.g. [\"https://198.18.0.11:2379\"])");
        }
        let tls = match (self.ca, self.cert, self.key) {
            (None, None, None) => None,
            (_, Some(_), None) => bail!("store.cert needs store.key (the client certificate's private key)"),
            (_, None, Some(_)) => bail!("store.key needs store.cert (the client certificate it belongs to)"),
            (None, Some(_), Some(_)) => {
                bail!("store.cert and store.key need store.ca (the CA that signed etcd's certificates)")
            }
            (Some(ca), cert, key) => Some(EtcdTls { ca, identity: cert.zip(key) }),
        };
        for e in &endpoints {
            match (e.split_once("://").map(|(scheme, _)| scheme), tls.is_some()) {
                (Some("https"), true) | (Some("http"), false) => {}
                (Some("http"), true) => {
                    bail!("store.endpoints: {e} is plain http while store.ca is set: write https://")
                }
                (Some("https"), false) => bail!("store.endpoints: {e} is https: set store.ca (the etcd CA)"),
                _ => bail!("store.endpoints: {e:?} is not an http:// or https:// URL"),
            }
        }
        let prefix = self.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
            bail!(
                "store.prefix {prefix:?}: it must start with '/' and not end with '/' (e.g. \"/havip/v1\")"
            );
        }
        let defaults = EtcdSettings::new(Vec::new());
        let lease_ttl_s = self.lease_ttl_s.unwrap_or(defaults.lease_ttl.as_secs());
        if !(1..=MAX_LEASE_TTL_S).contains(&lease_ttl_s) {
            bail!(
                "store.lease_ttl_s is {lease_ttl_s}: it must be 1 to {MAX_LEASE_TTL_S} (whole seconds; a host is \
                 only thought gone after its lease expires)"
            );
        }
        let dial_timeout_ms = self.dial_timeout_ms.unwrap_or(defaults.dial_timeout.as_millis() as u64);
        if !(1..=MAX_DIAL_TIMEOUT_MS).contains(&dial_timeout_ms) {
            bail!("store.dial_timeout_ms is {dial_timeout_ms}: it must be 1 to {MAX_DIAL_TIMEOUT_MS}");
        }
        let max_txn_ops = self.max_txn_ops.unwrap_or(defaults.max_txn_ops);
        if max_txn_ops < 2 {
            bail!(
                "store.max_txn_ops must be at least 2 (one object and the guard key); etcd's default is 128"
            );
        }
        Ok(StoreSettings::Etcd(EtcdSettings {
            endpoints,
            prefix,
            tls,
            lease_ttl: Duration::from_secs(lease_ttl_s),
            dial_timeout: Duration::from_millis(dial_timeout_ms),
            max_txn_ops,
        }))
    }
}

/// The longest registration lease `[store] lease_ttl_s` may ask for, s.
pub const MAX_LEASE_TTL_S: u64 = 3600;
/// The longest `[store] dial_timeout_ms`.
pub const MAX_DIAL_TIMEOUT_MS: u64 = 60_000;

/// `[underlay]`: the network between hosts (many hosts): the NIC whose IPv4
/// address is this host's VTEP, the VPC's VNI, the UDP ports, and how peers
/// are probed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderlaySettings {
    /// The underlay NIC (e.g. `ul0`); its IPv4 address is this host's VTEP.
    pub interface: String,
    /// The VPC's VXLAN network identifier, 24 bits (0 to 16777215).
    pub vni: u32,
    /// VXLAN's UDP destination port (RFC 7348: 4789).
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    /// The underlay probe's UDP port, answered in XDP (4790).
    #[serde(default = "default_probe_port")]
    pub probe_port: u16,
    /// The peer hints' UDP port, agent to agent (4791).
    #[serde(default = "default_hint_port")]
    pub hint_port: u16,
    /// How often a host whose lease expired is probed, ms (200).
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// Probes missed in a row before such a host is down (3).
    #[serde(default = "default_probe_misses")]
    pub probe_misses: u32,
    /// Whether claims are also told to peers directly (hints; true).
    #[serde(default = "default_hints")]
    pub hints: bool,
}

fn default_vxlan_port() -> u16 {
    4789
}
fn default_probe_port() -> u16 {
    4790
}
fn default_hint_port() -> u16 {
    4791
}
fn default_probe_interval_ms() -> u64 {
    200
}
fn default_probe_misses() -> u32 {
    3
}
fn default_hints() -> bool {
    true
}

/// The largest VNI: 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;

impl UnderlaySettings {
    /// The probe interval.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }

    fn check(&self) -> Result<()> {
        let name = &self.interface;
        if name.is_empty()
            || name.len() > 15
            || name.contains(['/', ':'])
            || name.contains(char::is_whitespace)
        {
            bail!("underlay.interface {name:?} is not an interface name (1-15 bytes, no '/', ':' or spaces)");
        }
        if self.vni > MAX_VNI {
            bail!("underlay.vni {} does not fit VXLAN's 24 bits (at most {MAX_VNI})", self.vni);
        }
        let ports =
            [("vxlan_port", self.vxlan_port), ("probe_port", self.probe_port), ("hint_port", self.hint_port)];
        for (i, (name, port)) in ports.iter().enumerate() {
            if *port == 0 {
                bail!("underlay.{name} must not be 0");
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                bail!("underlay.{name} and underlay.{other} are both {port}: each needs its own port");
            }
        }
        if self.probe_interval_ms == 0 {
            bail!("underlay.probe_interval_ms must be at least 1");
        }
        if self.probe_misses == 0 {
            bail!("underlay.probe_misses must be at least 1");
        }
        Ok(())
    }
}

/// The whole configuration file, read and checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// This host: its id (from `[agent] host_id` or the hostname) and underlay.
    pub host: Host,
    /// `[agent]`: host id, store, API socket, metrics address.
    pub agent: AgentSettings,
    /// `[agent] api_group`, resolved: the gid given the API socket.
    pub api_gid: Option<u32>,
    /// `[limits]`: product quotas; its `capacity` is `[dataplane]`'s.
    pub limits: Limits,
    /// `[dataplane]`: map capacities.
    pub capacity: Capacity,
    /// The uplink NIC that carries EIP traffic.
    pub uplink: Option<UplinkSpec>,
    /// `[verification]`: how holders are verified.
    pub verification: VerifySettings,
    /// `[store]`: redb (`[agent] store`) or etcd.
    pub store: StoreSettings,
    /// `[underlay]`: the network between hosts; required with etcd.
    pub underlay: Option<UnderlaySettings>,
    /// The file's desired-state sections, parsed but not yet checked: the
    /// rules apply to the store's state with these applied.
    pub desired: DesiredState,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Reads and checks a configuration file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text).context("parsing TOML")?;
        let agent: AgentSettings = section(&mut table, "agent")?;
        let id = match &agent.host_id {
            Some(id) => id.clone(),
            None => hostname().context("agent.host_id is unset, so the hostname is the host id")?,
        };
        check_name("host", &id).context("agent.host_id")?;
        let api_gid =
            agent.api_group.as_ref().map(GroupSpec::resolve).transpose().context("agent.api_group")?;
        let host = Host { id, underlay: agent.underlay };
        let mut limits: Limits = section(&mut table, "limits")?;
        let capacity: Capacity = section(&mut table, "dataplane")?;
        let verification: VerifySettings = section(&mut table, "verification")?;
        let uplink = section::<Option<RawUplink>>(&mut table, "uplink")?
            .map(|u| {
                anyhow::Ok(UplinkSpec {
                    next_hop: parse_ipv4(&u.next_hop).context("uplink next_hop")?,
                    name: u.name,
                })
            })
            .transpose()?;
        let store =
            section::<RawStore>(&mut table, "store")?.check(&agent.store).context("section [store]")?;
        let underlay = section::<Option<UnderlaySettings>>(&mut table, "underlay")?;
        if let Some(u) = &underlay {
            u.check().context("section [underlay]")?;
        }
        match (&store, &underlay) {
            (StoreSettings::Etcd(_), None) => bail!(
                "[store] backend = \"etcd\" requires an [underlay] section (interface, vni): \
                 hosts sharing etcd reach each other over the underlay"
            ),
            (StoreSettings::Redb(_), Some(_)) => bail!(
                "[underlay] is set but store.backend is \"redb\": a host on its own has no underlay \
                 (set [store] backend = \"etcd\" for many hosts)"
            ),
            _ => {}
        }
        // What is left is desired state, in the format of `havipctl apply -f`.
        let file: DesiredFile = toml::Value::Table(table).try_into().context("desired-state sections")?;
        if limits.max_eips_per_havip > 1 {
            bail!(
                "limits.max_eips_per_havip is {}: the data plane NATs at most 1 EIP per HAVIP",
                limits.max_eips_per_havip
            );
        }
        limits.capacity = capacity;
        let desired = file.parse(&host.id)?;
        check_alone(&desired, &limits)?;
        Ok(Self { host, agent, api_gid, limits, capacity, uplink, verification, store, underlay, desired })
    }
}

/// The file's desired state must keep the rules on its own: such a file is
/// broken whatever the store holds, and is refused before anything is made.
/// A reference to an object the file does not define (made through the
/// API) is left to the start, which checks the file against the store.
fn check_alone(desired: &DesiredState, limits: &Limits) -> Result<()> {
    let mut alone = DesiredState::default();
    ops::apply(&mut alone, desired.clone());
    match rules::check(&alone, limits) {
        Err(r) if !matches!(r.rule, Rule::UnknownSubnet | Rule::UnknownVnic | Rule::UnknownHavip) => {
            Err(anyhow::Error::new(r).context("the desired-state sections break a rule"))
        }
        _ => Ok(()),
    }
}

/// The machine's hostname (`uname -n`), the default host id: from uname(2),
/// not /proc/sys/kernel/hostname, which the unit hides (`ProcSubset=pid`).
fn hostname() -> Result<String> {
    // SAFETY: uname fills the zeroed struct; its fields are NUL-terminated.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the hostname (uname)");
    }
    let name = unsafe { std::ffi::CStr::from_ptr(uts.nodename.as_ptr()) };
    Ok(name.to_string_lossy().trim().to_owned())
}

/// Removes `[name]` from the table and reads it; absent means defaults.
fn section<T: DeserializeOwned + Default>(table: &mut toml::Table, name: &str) -> Result<T> {
    match table.remove(name) {
        Some(v) => v.try_into().with_context(|| format!("section [{name}]")),
        None => Ok(T::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = r#"
        [agent]
        store = "/tmp/x/state.redb"
        api_socket = "/tmp/x/api.sock"
        metrics = "127.0.0.1:9477"
        [uplink]
        name = "uplink"
        next_hop = "198.51.100.1"
        [limits]
        max_members_per_havip = 3
        [[subnets]]
        name = "vpc1"
        cidr = "198.18.1.0/24"
        [[vnics]]
        name = "vnic-a"
        instance = "vm-a"
        subnet = "vpc1"
        ip = "198.18.1.11"
        mac = "02:00:c6:12:01:0b"
        [[havips]]
        vip = "198.18.1.50"
        subnet = "vpc1"
        members = ["vnic-a"]
    "#;

    #[test]
    fn reads_settings_and_desired_state() {
        let c = Config::parse(LAB).unwrap();
        assert_eq!(c.host.id, hostname().unwrap(), "the hostname by default");
        assert_eq!(c.desired.vnics["vnic-a"].host, c.host.id, "vNICs live here unless they say otherwise");
        assert_eq!(c.agent.api_socket, Path::new("/tmp/x/api.sock"));
        assert_eq!(c.agent.metrics, Some("127.0.0.1:9477".parse().unwrap()));
        assert_eq!(
            c.uplink.as_ref().unwrap().next_hop,
            "198.51.100.1".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert_eq!(c.limits.max_members_per_havip, 3);
        assert_eq!(c.limits.max_havips_per_instance, 5);
        assert_eq!(c.limits.capacity, Capacity::default());
        assert_eq!(c.verification, VerifySettings::default());
        assert_eq!(c.desired.havips[&"198.18.1.50".parse().unwrap()].members, ["vnic-a"]);
        assert_eq!(c.desired.vnics["vnic-a"].mac, [2, 0, 0xc6, 0x12, 1, 0x0b]);
    }

    #[test]
    fn the_shipped_config_is_the_defaults() {
        let c = Config::parse(include_str!("../../../deploy/havip.toml")).unwrap();
        let d = Config::parse("").unwrap();
        assert_eq!(
            (&c.agent.store, &c.agent.api_socket, c.agent.metrics),
            (&d.agent.store, &d.agent.api_socket, None)
        );
        assert_eq!((&c.limits, c.capacity), (&d.limits, d.capacity));
        assert!(c.desired.havips.is_empty() && c.uplink.is_none());
    }

    #[test]
    fn defaults_without_sections() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.agent.store, Path::new("/var/lib/havip/state.redb"));
        assert!(c.desired.havips.is_empty() && c.uplink.is_none());
    }

    #[test]
    fn verification_is_configurable() {
        let c = Config::parse("[verification]\nenabled = false\ninterval_ms = 100\nmisses = 3").unwrap();
        let want =
            VerifySettings { enabled: false, interval_ms: 100, misses: 3, ..VerifySettings::default() };
        assert_eq!(c.verification, want);
        assert!(Config::parse("[verification]\nretries = 3").is_err(), "unknown keys are refused");
    }

    #[test]
    fn a_configured_host_id_places_vnics() {
        let c = Config::parse(&format!(
            "[agent]\nhost_id = \"hv7\"\nunderlay = \"198.18.0.7\"\n{}",
            &LAB[LAB.find("[[subnets]]").unwrap()..]
        ))
        .unwrap();
        assert_eq!(c.host, Host { id: "hv7".into(), underlay: Some("198.18.0.7".parse().unwrap()) });
        assert_eq!(c.desired.vnics["vnic-a"].host, "hv7");
        assert!(Config::parse("[agent]\nhost_id = \"hv 7\"").is_err());
    }

    const ETCD: &str = r#"
        [agent]
        host_id = "hv1"
        [store]
        backend = "etcd"
        endpoints = ["https://198.18.0.11:2379", "https://198.18.0.12:2379"]
        ca = "/etc/havip/etcd-ca.pem"
        cert = "/etc/havip/etcd.pem"
        key = "/etc/havip/etcd-key.pem"
        lease_ttl_s = 2
        dial_timeout_ms = 500
        [underlay]
        interface = "ul0"
        vni = 1001
    "#;

    fn refused(text: &str) -> String {
        format!("{:#}", Config::parse(text).expect_err("refused"))
    }

    #[test]
    fn redb_is_the_default_store_and_etcd_is_read_with_its_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.store, StoreSettings::Redb(PathBuf::from("/var/lib/havip/state.redb")));
        assert_eq!(c.underlay, None);

        let c = Config::parse(ETCD).unwrap();
        let StoreSettings::Etcd(e) = &c.store else { panic!("{:?}", c.store) };
        assert_eq!(e.endpoints, ["https://198.18.0.11:2379", "https://198.18.0.12:2379"]);
        assert_eq!(e.prefix, "/havip/v1");
        assert_eq!(
            e.tls,
            Some(EtcdTls {
                ca: "/etc/havip/etcd-ca.pem".into(),
                identity: Some(("/etc/havip/etcd.pem".into(), "/etc/havip/etcd-key.pem".into()))
            })
        );
        assert_eq!(
            (e.lease_ttl, e.dial_timeout, e.max_txn_ops),
            (Duration::from_secs(2), Duration::from_millis(500), 128)
        );
        let u = c.underlay.unwrap();
        assert_eq!(
            u,
            UnderlaySettings {
                interface: "ul0".into(),
                vni: 1001,
                vxlan_port: 4789,
                probe_port: 4790,
                hint_port: 4791,
                probe_interval_ms: 200,
                probe_misses: 3,
                hints: true,
            }
        );
        assert_eq!(u.probe_interval(), Duration::from_millis(200));

        // Plain http, all defaults.
        let plain = "[store]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n\
                     [underlay]\ninterface = \"ul0\"\nvni = 0";
        let StoreSettings::Etcd(e) = Config::parse(plain).unwrap().store else { panic!() };
        assert_eq!(e, EtcdSettings::new(vec!["http://127.0.0.1:2379".into()]));
    }

    #[test]
    fn store_and_underlay_rules_are_named_when_broken() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "endpoints = [\"https://198.18.0.11:2379\", \"https://198.18.0.12:2379\"]",
                "endpoints = []",
                "needs store.endpoints",
            ),
            ("cert = \"/etc/havip/etcd.pem\"\n", "", "store.key needs store.cert"),
            ("key = \"/etc/havip/etcd-key.pem\"\n", "", "store.cert needs store.key"),
            ("ca = \"/etc/havip/etcd-ca.pem\"\n", "", "need store.ca"),
            ("https://198.18.0.12", "http://198.18.0.12", "is plain http while store.ca is set"),
            ("https://198.18.0.12:2379", "198.18.0.12:2379", "is not an http:// or https:// URL"),
            ("lease_ttl_s = 2", "lease_ttl_s = 0", "store.lease_ttl_s is 0: it must be 1 to 3600"),
            ("lease_ttl_s = 2", "lease_ttl_s = 3601", "store.lease_ttl_s is 3601: it must be 1 to 3600"),
            (
                "dial_timeout_ms = 500",
                "dial_timeout_ms = 0",
                "store.dial_timeout_ms is 0: it must be 1 to 60000",
            ),
            (
                "dial_timeout_ms = 500",
                "dial_timeout_ms = 9223372036854775807",
                "store.dial_timeout_ms is 9223372036854775807",
            ),
            ("dial_timeout_ms = 500", "max_txn_ops = 1", "store.max_txn_ops must be at least 2"),
            ("dial_timeout_ms = 500", "prefix = \"havip\"", "store.prefix \"havip\""),
            ("dial_timeout_ms = 500", "prefix = \"/havip/\"", "must start with '/' and not end with '/'"),
            ("backend = \"etcd\"", "backend = \"consul\"", "unknown variant `consul`"),
            ("dial_timeout_ms = 500", "timeout_ms = 500", "unknown field `timeout_ms`"),
            ("vni = 1001", "vni = 16777216", "underlay.vni 16777216 does not fit VXLAN's 24 bits"),
            ("vni = 1001", "vni = 1001\nprobe_port = 0", "underlay.probe_port must not be 0"),
            (
                "vni = 1001",
                "vni = 1001\nhint_port = 4789",
                "underlay.hint_port and underlay.vxlan_port are both 4789",
            ),
            (
                "vni = 1001",
                "vni = 1001\nprobe_interval_ms = 0",
                "underlay.probe_interval_ms must be at least 1",
            ),
            ("vni = 1001", "vni = 1001\nprobe_misses = 0", "underlay.probe_misses must be at least 1"),
            ("vni = 1001", "", "missing field `vni`"),
            (
                "interface = \"ul0\"",
                "interface = \"a/b\"",
                "underlay.interface \"a/b\" is not an interface name",
            ),
        ];
        for (from, to, want) in cases {
            assert!(ETCD.contains(from), "{from}");
            let e = refused(&ETCD.replacen(from, to, 1));
            assert!(e.contains(want), "{from} -> {to}: {e}");
        }
        let e = refused(&ETCD[..ETCD.find("[underlay]").unwrap()]);
        assert!(e.contains("[store] backend = \"etcd\" requires an [underlay] section"), "{e}");
        // etcd's keys with the redb backend are a mistake, said so.
        let e = refused("[store]\nendpoints = [\"http://127.0.0.1:2379\"]");
        assert!(e.contains("store.endpoints is set but store.backend is \"redb\""), "{e}");
        // An underlay with redb would be silently unused: refused, said so.
        assert!(refused("[underlay]\ninterface = \"ul0\"\nvni = 7")
            .contains("[underlay] is set but store.backend is \"redb\""));
    }

    #[test]
    fn the_shipped_many_hosts_example_parses_uncommented() {
        let shipped = include_str!("../../../deploy/havip.toml");
        let example: Vec<&str> = shipped[shipped.find("# [store]").expect("the example")..]
            .lines()
            .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
            .collect();
        let c = Config::parse(&example.join("\n")).unwrap();
        let StoreSettings::Etcd(e) = &c.store else { panic!("{:?}", c.store) };
        assert_eq!((e.endpoints.len(), e.tls.as_ref().map(|t| t.identity.is_some())), (3, Some(true)));
        assert_eq!(c.underlay.unwrap().vni, 1001);
    }

    #[test]
    fn the_hostname_is_unames() {
        let proc = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(hostname().unwrap(), proc.trim());
    }

    #[test]
    fn api_group_is_a_gid_or_a_group_name() {
        assert_eq!(Config::parse("").unwrap().api_gid, None, "owner only by default");
        assert_eq!(Config::parse("[agent]\napi_group = 4242").unwrap().api_gid, Some(4242));
        assert_eq!(Config::parse("[agent]\napi_group = \"4243\"").unwrap().api_gid, Some(4243));
        assert_eq!(Config::parse("[agent]\napi_group = \"root\"").unwrap().api_gid, Some(0));
        let e = Config::parse("[agent]\napi_group = \"havip-no-such-group\"").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("agent.api_group") && e.contains("no group named \"havip-no-such-group\""), "{e}");
        assert!(Config::parse("[agent]\napi_group = -1").is_err());
        assert!(Config::parse("[agent]\napi_group = \"99999999999\"").is_err());
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(Config::parse("[agent]\nsocket = \"x\"").is_err());
        assert!(Config::parse("[[routers]]\nname = \"x\"").is_err());
        assert!(Config::parse("[limits]\nmax_eips_per_havip = 2").is_err());
        let e = Config::parse("[[subnets]]\nname=\"s\"\ncidr=\"198.18.1.5/24\"").unwrap_err();
        assert!(format!("{e:#}").contains("well-formed"), "{e:#}");
    }

    #[test]
    fn subnets_take_a_mode_and_storm_control() {
        use havip_model::{StormControl, SubnetMode, SubnetSettings};
        let with = |extra: &str| {
            LAB.replace("cidr = \"198.18.1.0/24\"", &format!("cidr = \"198.18.1.0/24\"\n{extra}"))
        };
        let c =
            Config::parse(&with("mode = \"broadcast-domain\"\nstorm_pps = 200\nstorm_burst = 20")).unwrap();
        assert_eq!(
            c.desired.subnet_settings("vpc1"),
            SubnetSettings { mode: SubnetMode::BroadcastDomain, storm: StormControl { pps: 200, burst: 20 } }
        );
        assert_eq!(Config::parse(LAB).unwrap().desired.subnet_settings("vpc1").mode, SubnetMode::Unicast);
        let e = format!("{:#}", Config::parse(&with("mode = \"multicast\"")).unwrap_err());
        assert!(e.contains("well-formed: subnet vpc1: subnet mode \"multicast\""), "{e}");
        let e = format!("{:#}", Config::parse(&with("storm_pps = 0")).unwrap_err());
        assert!(e.contains("storm-control: subnet vpc1: storm_pps 0 is outside 1-1000000"), "{e}");
        assert!(Config::parse(&with("storm_pps = -1")).is_err());
        assert!(Config::parse(&with("storm = 5")).is_err(), "unknown keys are refused");
    }

    #[test]
    fn a_file_that_breaks_a_rule_on_its_own_is_refused_before_anything_is_made() {
        // Two members where the file's own limit allows one.
        let two = LAB.replace("max_members_per_havip = 3", "max_members_per_havip = 1").replace(
            "members = [\"vnic-a\"]",
            "members = [\"vnic-a\", \"vnic-b\"]\n[[vnics]]\nname = \"vnic-b\"\ninstance = \"vm-b\"\n\
             subnet = \"vpc1\"\nip = \"198.18.1.12\"\nmac = \"02:00:c6:12:01:0c\"",
        );
        let e = Config::parse(&two).unwrap_err();
        assert!(format!("{e:#}").contains("max-members-per-havip"), "{e:#}");
        // A HAVIP in a subnet made through the API is the store's business.
        let elsewhere = "[[havips]]\nvip = \"198.18.9.50\"\nsubnet = \"vpc9\"";
        assert!(Config::parse(elsewhere).is_ok());
    }
}
