//! The lab network of docs/architecture.md: a host namespace `hv` that routes like
//! an SDN host (per-VM /32 routes, proxy ARP, no bridge) and guest namespaces
//! `vm-a`, `vm-b`, `vm-c`, each on its own veth "vNIC". Nothing routes the VIP:
//! without havip, vm-c cannot reach it, which is the problem havip solves.
//! An `inet` namespace behind the host's uplink plays the Internet user of
//! the EIP bound to the HAVIP.

use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::{
    cmd,
    netns::{self, LabId, Netns},
};

/// The VPC subnet, its gateway on the host, and the HAVIP: test ranges only.
pub const SUBNET: &str = "198.18.1.0/24";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
/// The EIP bound 1:1 to the HAVIP.
pub const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const EIP_NET: &str = "203.0.113.0/24";
/// The host's uplink NIC, its address, and the outside host at its far end
/// (the uplink's next hop and the EIP's user in one).
pub const UPLINK: &str = "uplink0";
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const INET_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Namespace role of the outside host.
pub const INET: &str = "inet";

/// How the lab's subnet `vpc1` carries a guest's broadcast and multicast
/// (issue 11): `unicast` (the agent's default, ENS) or `broadcast-domain`
/// (ZEC: delivered to the subnet's other vNICs, on every host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SubnetMode {
    #[default]
    Unicast,
    BroadcastDomain,
}

impl SubnetMode {
    /// The name the agent's file, API and `havipctl` take.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unicast => "unicast",
            Self::BroadcastDomain => "broadcast-domain",
        }
    }
}

/// The subnet's settings in the lab's desired state; each `None` is left
/// out of the file (the agent's default: unicast, its storm control).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubnetOptions {
    /// `mode = "..."` in `[[subnets]]`.
    pub mode: Option<SubnetMode>,
    /// `storm_pps`: broadcast frames per second replicated from one vNIC.
    pub storm_pps: Option<u32>,
    /// `storm_burst`: frames above the rate a vNIC may send at once.
    pub storm_burst: Option<u32>,
}

impl SubnetOptions {
    /// A broadcast-domain subnet with the agent's default storm control.
    pub fn broadcast_domain() -> Self {
        Self { mode: Some(SubnetMode::BroadcastDomain), ..Self::default() }
    }

    /// The `[[subnets]]` table's lines beyond name and CIDR.
    fn lines(&self) -> String {
        let mut s = String::new();
        if let Some(m) = self.mode {
            s += &format!("mode = \"{}\"\n", m.as_str());
        }
        if let Some(pps) = self.storm_pps {
            s += &format!("storm_pps = {pps}\n");
        }
        if let Some(burst) = self.storm_burst {
            s += &format!("storm_burst = {burst}\n");
        }
        s
    }
}

/// One guest VM: its namespace role, its vNIC on the host, its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guest {
    /// Instance id, as the agent config and the timeline name it.
    pub name: &'static str,
    /// Namespace suffix.
    pub role: &'static str,
    /// Host-side veth in `hv`; the guest side is always `eth0`.
    pub vnic: &'static str,
    pub ip: Ipv4Addr,
}

pub const VM_A: Guest =
    Guest { name: "vm-a", role: "vma", vnic: "vnic-a", ip: Ipv4Addr::new(198, 18, 1, 11) };
pub const VM_B: Guest =
    Guest { name: "vm-b", role: "vmb", vnic: "vnic-b", ip: Ipv4Addr::new(198, 18, 1, 12) };
pub const VM_C: Guest =
    Guest { name: "vm-c", role: "vmc", vnic: "vnic-c", ip: Ipv4Addr::new(198, 18, 1, 13) };
pub const GUESTS: [Guest; 3] = [VM_A, VM_B, VM_C];
/// The HAVIP's members; vm-c is the client (and the would-be spoofer).
pub const MEMBERS: [Guest; 2] = [VM_A, VM_B];
/// The guest interface inside every VM namespace.
pub const GUEST_IF: &str = "eth0";

impl Guest {
    /// Deterministic guest MAC: `02:00:` + the IP's octets.
    pub fn mac(&self) -> [u8; 6] {
        let o = self.ip.octets();
        [0x02, 0x00, o[0], o[1], o[2], o[3]]
    }

    pub fn mac_str(&self) -> String {
        havip_common::Mac(&self.mac()).to_string()
    }

    pub fn by_vnic(vnic: &str) -> Option<Guest> {
        GUESTS.into_iter().find(|g| g.vnic == vnic)
    }
}

/// The namespaces and wiring of one lab. Dropping it deletes the namespaces
/// (and with them the veths); stop processes inside them first.
pub struct Topology {
    pub id: LabId,
    hv: Netns,
    guests: Vec<Netns>,
    inet: Netns,
}

impl Topology {
    /// Builds the lab; `dir` is the lab's directory for files it needs.
    pub fn create(id: LabId, dir: &Path) -> Result<Self> {
        let hv = Netns::create(&id.netns("hv"))?;
        let inet = Netns::create(&id.netns(INET))?;
        let mut topo = Self { guests: Vec::new(), hv, inet, id };
        for g in GUESTS {
            topo.guests.push(Netns::create(&topo.id.netns(g.role))?);
        }
        topo.wire(dir).context("wiring the lab topology")?;
        Ok(topo)
    }

    pub fn hv(&self) -> &str {
        self.hv.name()
    }

    /// The outside host's namespace.
    pub fn inet(&self) -> &str {
        self.inet.name()
    }

    /// The namespace of guest `g`.
    pub fn ns(&self, g: Guest) -> String {
        self.id.netns(g.role)
    }

    fn wire(&self, dir: &Path) -> Result<()> {
        let hv = self.hv();
        let obj = write_lab_obj(dir)?;
        cmd::ip(&["-n", hv, "link", "set", "lo", "up"])?;
        let mut sysctls = host_sysctls();
        for g in GUESTS {
            sysctls.extend(wire_guest(hv, &self.ns(g), g, &obj)?);
        }
        sysctls.extend(wire_uplink(hv, self.inet(), &obj)?);
        write_sysctls(hv, sysctls)
    }

    /// Leaves the namespaces in place when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.hv.keep();
        self.inet.keep();
        self.guests.iter_mut().for_each(Netns::keep);
    }
}

/// Writes the guests' XDP_PASS program into `dir` for iproute2 to load; its path.
pub(crate) fn write_lab_obj(dir: &Path) -> Result<std::path::PathBuf> {
    let obj = dir.join("lab.bpf.o");
    fs::write(&obj, havip_ebpf::LAB_OBJ).with_context(|| format!("writing {}", obj.display()))?;
    Ok(obj)
}

/// The sysctls (`key=value` under /proc/sys/net) every host namespace needs:
/// forwarding on, reverse path checks off (the VIP's traffic comes back from
/// whichever member holds it, on a vNIC the check would not expect).
pub(crate) fn host_sysctls() -> Vec<String> {
    ["ipv4/ip_forward=1", "ipv4/conf/all/rp_filter=0", "ipv4/conf/default/rp_filter=0"]
        .map(str::to_owned)
        .to_vec()
}

/// Writes `sysctls` (`key=value` under /proc/sys/net) in namespace `ns`.
pub(crate) fn write_sysctls(ns: &str, sysctls: Vec<String>) -> Result<()> {
    netns::run_in(ns, move || {
        for s in sysctls {
            let (key, value) = s.split_once('=').context("sysctl key=value")?;
            let path = Path::new("/proc/sys/net").join(key);
            fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })
}

/// Wires guest `g` (namespace `ns`) to host namespace `hv` as an SDN host
/// does: its vNIC, the gateway address on it, a /32 route, proxy ARP.
/// Returns the host sysctls it needs (for [`write_sysctls`]).
pub(crate) fn wire_guest(hv: &str, ns: &str, g: Guest, obj: &Path) -> Result<Vec<String>> {
    lan_veth(hv, g.vnic, ns)?;
    let (ip, mac) = (format!("{}/24", g.ip), g.mac_str());
    cmd::ip(&["-n", ns, "link", "set", GUEST_IF, "address", &mac])?;
    cmd::ip(&["-n", ns, "addr", "add", &ip, "dev", GUEST_IF])?;
    cmd::ip(&["-n", ns, "link", "set", GUEST_IF, "up"])?;
    cmd::ip(&["-n", ns, "link", "set", "lo", "up"])?;
    // Replies to the outside go through the host (and its EIP NAT).
    cmd::ip(&["-n", ns, "route", "add", "default", "via", &GATEWAY.to_string()])?;
    prepare_far_end(ns, GUEST_IF, obj)?;

    cmd::ip(&["-n", hv, "addr", "add", &format!("{GATEWAY}/32"), "dev", g.vnic])?;
    cmd::ip(&["-n", hv, "link", "set", g.vnic, "up"])?;
    cmd::ip(&["-n", hv, "route", "add", &format!("{}/32", g.ip), "dev", g.vnic])?;
    Ok(vec![
        format!("ipv4/conf/{}/rp_filter=0", g.vnic),
        // Guests ARP for each other on their /24; the host answers for
        // every address it has a route for (never the VIP: it has none).
        format!("ipv4/conf/{}/proxy_arp=1", g.vnic),
        // Proxy ARP answers are delayed up to 0.8 s by default; an SDN
        // host answers at once, and VRRP adverts must not wait for it.
        format!("ipv4/neigh/{}/proxy_delay=0", g.vnic),
    ])
}

/// A veth from host namespace `hv` (end `dev`) to `eth0` in namespace `far`.
fn lan_veth(hv: &str, dev: &str, far: &str) -> Result<()> {
    cmd::ip(&["-n", hv, "link", "add", dev, "type", "veth", "peer", "name", GUEST_IF, "netns", far]).map(drop)
}

/// Host `hv`'s `uplink0` <-> `inet`'s `eth0`; inet reaches the EIPs through
/// `hv`. Returns the host sysctls it needs (for [`write_sysctls`]).
pub(crate) fn wire_uplink(hv: &str, inet: &str, obj: &Path) -> Result<Vec<String>> {
    lan_veth(hv, UPLINK, inet)?;
    cmd::ip(&["-n", inet, "addr", "add", &format!("{INET_IP}/24"), "dev", GUEST_IF])?;
    cmd::ip(&["-n", inet, "link", "set", GUEST_IF, "up"])?;
    cmd::ip(&["-n", inet, "link", "set", "lo", "up"])?;
    cmd::ip(&["-n", inet, "route", "add", EIP_NET, "via", &UPLINK_IP.to_string()])?;
    prepare_far_end(inet, GUEST_IF, obj)?;
    cmd::ip(&["-n", hv, "addr", "add", &format!("{UPLINK_IP}/24"), "dev", UPLINK])?;
    cmd::ip(&["-n", hv, "link", "set", UPLINK, "up"])?;
    Ok(vec![format!("ipv4/conf/{UPLINK}/rp_filter=0")])
}

/// Readies the far (non-host) end of a veth, `ifname` in `ns` (a guest's
/// `eth0`, the fabric's port of a host's underlay NIC), to receive what the
/// host's XDP forwards to it; `obj` is the lab object
/// ([`havip_ebpf::LAB_OBJ`]) as a file.
pub fn prepare_far_end(ns: &str, ifname: &str, obj: &Path) -> Result<()> {
    // A frame that XDP redirects (or XDP_TXes) into a veth is dropped
    // silently unless the peer can take XDP frames. GRO on suffices for
    // redirects, but on kernel 6.18 the ARP replies the host XDP_TXes back
    // to the sender were still lost (vnic-c counted rx_queue_0_xdp_tx, vm-c's
    // eth0 saw nothing): an XDP_PASS program on the peer makes both work. A
    // real guest's virtio NIC needs neither.
    let obj = obj.to_str().context("lab object path")?;
    cmd::ip(&["-n", ns, "link", "set", ifname, "xdpdrv", "obj", obj, "program", "xdp_pass"])
        .with_context(|| format!("attaching xdp_pass to {ifname} in {ns}"))?;
    // Locally sent UDP/TCP leaves a veth with its checksum left to
    // "hardware"; XDP forwards the frame as is and the receiver drops it as
    // corrupt. Compute checksums in software, as a VM's virtio NIC without
    // offload would.
    cmd::in_ns(ns, "ethtool", &["-K", ifname, "tx", "off"])?;
    Ok(())
}

/// The agent's config for this lab: every guest's vNIC, one HAVIP whose
/// members are vm-a and vm-b with the EIP bound, and the uplink.
pub fn agent_config() -> String {
    agent_config_with("")
}

/// [`agent_config`] with `havip_settings` (TOML `key = value` lines, e.g.
/// `split_brain = "keep-holder"`) added to the HAVIP's `[[havips]]` table.
pub fn agent_config_with(havip_settings: &str) -> String {
    agent_config_for(havip_settings, SubnetOptions::default())
}

/// [`agent_config_with`] with the subnet's settings.
pub fn agent_config_for(havip_settings: &str, subnet: SubnetOptions) -> String {
    desired_file_with(|_| None, havip_settings, subnet) + &uplink_section()
}

/// The lab's desired state as a file for `havipctl apply -f` (or an agent
/// config's desired sections): the subnet, every guest's vNIC, one HAVIP
/// whose members are vm-a and vm-b with the EIP bound, `havip_settings`
/// (see [`agent_config_with`]) in its table. `host_of(g)`: the host `g`'s
/// vNIC lives on, None for the applying agent's own.
pub fn desired_file(host_of: impl Fn(Guest) -> Option<&'static str>, havip_settings: &str) -> String {
    desired_file_with(host_of, havip_settings, SubnetOptions::default())
}

/// [`desired_file`] with the subnet's settings (`mode`, `storm_pps`,
/// `storm_burst` in its `[[subnets]]` table).
pub fn desired_file_with(
    host_of: impl Fn(Guest) -> Option<&'static str>,
    havip_settings: &str,
    subnet: SubnetOptions,
) -> String {
    let mut cfg = format!("[[subnets]]\nname = \"vpc1\"\ncidr = \"{SUBNET}\"\n{}", subnet.lines());
    for g in GUESTS {
        let host = host_of(g).map(|h| format!("host = \"{h}\"\n")).unwrap_or_default();
        cfg += &format!(
            "\n[[vnics]]\nname = \"{}\"\n{host}instance = \"{}\"\nsubnet = \"vpc1\"\nip = \"{}\"\nmac = \"{}\"\n",
            g.vnic,
            g.name,
            g.ip,
            g.mac_str()
        );
    }
    let members: Vec<String> = MEMBERS.iter().map(|g| format!("\"{}\"", g.vnic)).collect();
    cfg += &format!(
        "\n[[havips]]\nvip = \"{VIP}\"\nsubnet = \"vpc1\"\nmembers = [{}]\neip = \"{EIP}\"\n",
        members.join(", ")
    );
    for line in havip_settings.lines().map(str::trim).filter(|l| !l.is_empty()) {
        cfg += line;
        cfg += "\n";
    }
    cfg
}

/// Whether `ip` is an address of `GUEST_IF` in namespace `ns`: for a guest
/// and the VIP, whether its keepalived or ucarp is master.
pub fn has_addr(ns: &str, ip: Ipv4Addr) -> Result<bool> {
    let out = cmd::ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", GUEST_IF])?;
    Ok(out.split_whitespace().any(|w| w.split('/').next() == Some(&ip.to_string())))
}

/// A lab whose guests run failover software (keepalived, ucarp): who is master, told by who has
/// the VIP on eth0 (their up scripts put it there).
pub trait Masters {
    /// Whether guest `g` has the VIP on eth0 (its keepalived or ucarp is master).
    fn vip_on(&self, g: Guest) -> Result<bool>;

    /// The guests of `members` that are master, in `members`' order.
    fn masters(&self, members: &[Guest]) -> Result<Vec<Guest>> {
        let mut m = Vec::new();
        for &g in members {
            if self.vip_on(g)? {
                m.push(g);
            }
        }
        Ok(m)
    }

    /// Waits until exactly `expect` of `members` are master.
    fn wait_masters(&self, members: &[Guest], expect: &[Guest], timeout: Duration) -> Result<()> {
        crate::wait::until(&format!("exactly {:?} to be master", names(expect)), timeout, || {
            Ok((self.masters(members)? == expect).then_some(()))
        })
    }

    /// Exactly `expect` of `members` stay master for `window` (a negative needs an observation
    /// window: polled every 50 ms), `check` holding all along.
    fn stay_masters(
        &self,
        members: &[Guest],
        expect: &[Guest],
        window: Duration,
        mut check: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let end = Instant::now() + window;
        while Instant::now() < end {
            let now = self.masters(members)?;
            ensure!(
                now == expect,
                "masters changed to {:?}, expected {:?} to stay",
                names(&now),
                names(expect)
            );
            check()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn names(gs: &[Guest]) -> Vec<&'static str> {
    gs.iter().map(|g| g.name).collect()
}

/// The agent config's `[uplink]` section for the host with the uplink.
pub fn uplink_section() -> String {
    format!("\n[uplink]\nname = \"{UPLINK}\"\nnext_hop = \"{INET_IP}\"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_config_names_every_vnic_and_the_members() {
        let cfg = agent_config();
        assert!(cfg.contains("name = \"vnic-a\"\ninstance = \"vm-a\"\nsubnet = \"vpc1\"\nip = \"198.18.1.11\"\nmac = \"02:00:c6:12:01:0b\""));
        assert!(cfg.contains("vip = \"198.18.1.50\"\nsubnet = \"vpc1\"\nmembers = [\"vnic-a\", \"vnic-b\"]"));
        assert_eq!(cfg.matches("[[vnics]]").count(), 3);
    }

    #[test]
    fn havip_settings_land_in_the_havip_table() {
        let cfg = agent_config_with("split_brain = \"keep-holder\"\n  accept_vrrp_vmac = false\n");
        assert!(cfg.contains(
            "eip = \"203.0.113.10\"\nsplit_brain = \"keep-holder\"\naccept_vrrp_vmac = false\n\n[uplink]"
        ));
        assert_eq!(agent_config_with(""), agent_config());
    }

    #[test]
    fn the_subnet_mode_and_storm_control_are_written_only_when_set() {
        assert!(agent_config().contains("cidr = \"198.18.1.0/24\"\n\n[[vnics]]"));
        let bd = SubnetOptions {
            storm_pps: Some(200),
            storm_burst: Some(20),
            ..SubnetOptions::broadcast_domain()
        };
        let file = desired_file_with(|_| None, "", bd);
        assert!(file.starts_with(
            "[[subnets]]\nname = \"vpc1\"\ncidr = \"198.18.1.0/24\"\nmode = \"broadcast-domain\"\nstorm_pps = 200\nstorm_burst = 20\n\n[[vnics]]"
        ));
        assert!(agent_config_for("", bd).ends_with(&uplink_section()));
        assert_eq!(SubnetMode::Unicast.as_str(), "unicast");
    }

    #[test]
    fn the_desired_file_places_vnics_on_their_hosts() {
        let file = desired_file(|g| Some(if g == VM_B { "hv2" } else { "hv1" }), "");
        assert!(file.contains("name = \"vnic-b\"\nhost = \"hv2\"\ninstance = \"vm-b\"\n"));
        assert_eq!(file.matches("host = ").count(), 3);
        assert!(!file.contains("[uplink]"));
        assert!(!agent_config().contains("host = "));
    }
}
