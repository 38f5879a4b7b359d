//! Real keepalived (the Debian package) in a guest namespace: VRRPv3 over
//! unicast between the two members (or, with [`Vrrp::Multicast`],
//! keepalived's default: adverts to 224.0.0.18), a short advert interval,
//! the VIP on eth0. It decides who holds the VIP; havip only follows its
//! gratuitous ARPs.

use std::{fs, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result};

use crate::{
    log::Timeline,
    process::ChildProc,
    topology::{Guest, GUEST_IF, VIP},
};

/// VRRP adverts every 100 ms (VRRPv3 counts in centiseconds), so a backup
/// takes over within about 0.4 s if the master vanishes without a word.
const ADVERT_INT: &str = "0.1";
/// The lab's VRRP instance.
pub const VRID: u8 = 50;

/// How keepalived is configured beyond the lab's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `use_vmac`: the VIP goes on a macvlan `vrrp.<VRID>` with the RFC 5798
    /// §7.3 virtual MAC 00:00:5e:00:01:<VRID>, and its gratuitous ARPs come
    /// from that MAC.
    pub use_vmac: bool,
    /// `garp_master_delay`: seconds after becoming master until keepalived
    /// sends its second burst of gratuitous ARPs, 0 for none; `None` leaves
    /// keepalived's default (5 s).
    pub garp_master_delay: Option<u32>,
}

/// Where keepalived sends its adverts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vrrp {
    /// `unicast_src_ip` and `unicast_peer`: to the other member (the lab's
    /// default, what a VPC without multicast needs).
    UnicastTo(Guest),
    /// keepalived's default configuration: no `unicast_src_ip` and no
    /// `unicast_peer`, adverts to the VRRP group 224.0.0.18. In a `unicast`
    /// subnet they reach nobody (both members become master); in a
    /// `broadcast-domain` subnet havip delivers them (issue 11).
    Multicast,
}

/// The RFC 5798 §7.3 virtual router MAC of the lab's VRRP instance.
pub const VRRP_VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, VRID];

pub struct Keepalived {
    guest: Guest,
    ns: String,
    conf: PathBuf,
    dir: PathBuf,
    timeline: Option<Timeline>,
    proc: Option<ChildProc>,
}

impl Keepalived {
    /// Writes the config for `guest` (peer `peer`, VRRP `priority`) into
    /// `dir` and starts keepalived in namespace `ns`.
    pub fn start(
        dir: &std::path::Path,
        ns: &str,
        guest: Guest,
        peer: Guest,
        priority: u8,
        timeline: Option<&Timeline>,
    ) -> Result<Self> {
        Self::start_with(dir, ns, guest, peer, priority, Options::default(), timeline)
    }

    /// [`Keepalived::start`] with `opts`.
    pub fn start_with(
        dir: &std::path::Path,
        ns: &str,
        guest: Guest,
        peer: Guest,
        priority: u8,
        opts: Options,
        timeline: Option<&Timeline>,
    ) -> Result<Self> {
        Self::start_vrrp(dir, ns, guest, Vrrp::UnicastTo(peer), priority, opts, timeline)
    }

    /// [`Keepalived::start_with`] with its adverts sent as `vrrp` says.
    pub fn start_vrrp(
        dir: &std::path::Path,
        ns: &str,
        guest: Guest,
        vrrp: Vrrp,
        priority: u8,
        opts: Options,
        timeline: Option<&Timeline>,
    ) -> Result<Self> {
        let conf = dir.join(format!("keepalived-{}.conf", guest.name));
        fs::write(&conf, config(guest, vrrp, priority, opts))
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut ka = Self {
            guest,
            ns: ns.to_owned(),
            conf,
            dir: dir.to_owned(),
            timeline: timeline.cloned(),
            proc: None,
        };
        ka.launch()?;
        Ok(ka)
    }

    fn launch(&mut self) -> Result<()> {
        let file = |suffix: &str| self.dir.join(format!("keepalived-{}{suffix}", self.guest.name));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "keepalived", "--dont-fork", "--log-console", "--log-detail"])
            .args(["--no-syslog", "--vrrp", "--dont-respawn"])
            .arg("--use-file")
            .arg(&self.conf)
            // Pid files of our own, so instances of other labs never collide.
            .arg("--pid")
            .arg(file(".pid"))
            .arg("--vrrp_pid")
            .arg(file("-vrrp.pid"));
        let name = format!("keepalived {}", self.guest.name);
        self.proc = Some(ChildProc::spawn(&name, cmd, &file(".log"), self.timeline.as_ref())?);
        Ok(())
    }

    /// SIGTERM: as master it first sends a priority-0 advert, so the backup
    /// takes over at once.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }

    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// Leaves keepalived running when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.proc.iter_mut().for_each(ChildProc::keep);
    }
}

fn config(guest: Guest, vrrp: Vrrp, priority: u8, opts: Options) -> String {
    // With use_vmac the VIP goes where keepalived puts it: on the macvlan.
    let (mut extra, vip_dev) = if opts.use_vmac {
        // Unicast adverts need the base interface; keepalived would set
        // vmac_xmit_base itself, with a warning.
        let vmac =
            "\n    # RFC 5798 §7.3 virtual MAC on a macvlan vrrp.<VRID>.\n    use_vmac\n    vmac_xmit_base";
        (vmac.to_owned(), String::new())
    } else {
        (String::new(), format!(" dev {GUEST_IF}"))
    };
    if let Some(delay) = opts.garp_master_delay {
        extra += &format!("\n    garp_master_delay {delay}");
    }
    let peers = match vrrp {
        Vrrp::Multicast => "\n    # keepalived's default: adverts to the VRRP group 224.0.0.18.".to_owned(),
        Vrrp::UnicastTo(peer) => format!(
            "\n    # A VPC carries no multicast: adverts go unicast to the peer.\n    unicast_src_ip {}\n    unicast_peer {{\n        {}\n    }}",
            guest.ip, peer.ip
        ),
    };
    format!(
        r#"global_defs {{
    router_id {name}
    vrrp_version 3
}}

vrrp_instance VI_{VRID} {{
    # Both start as backup; the higher priority (vm-a) wins and preempts.
    state BACKUP
    interface {GUEST_IF}
    virtual_router_id {VRID}
    priority {priority}
    advert_int {ADVERT_INT}{extra}{peers}
    virtual_ipaddress {{
        {VIP}/24{vip_dev}
    }}
}}
"#,
        name = guest.name,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{VM_A, VM_B};

    #[test]
    fn the_default_config_puts_the_vip_on_eth0_without_vmac() {
        let c = config(VM_A, Vrrp::UnicastTo(VM_B), 150, Options::default());
        assert!(c.contains("198.18.1.50/24 dev eth0\n"));
        assert!(!c.contains("use_vmac") && !c.contains("garp_master_delay"));
    }

    #[test]
    fn unicast_peers_unless_multicast() {
        let c = config(VM_A, Vrrp::UnicastTo(VM_B), 150, Options::default());
        assert!(
            c.contains("\n    unicast_src_ip 198.18.1.11\n    unicast_peer {\n        198.18.1.12\n    }\n")
        );
        let m = config(VM_A, Vrrp::Multicast, 150, Options::default());
        assert!(!m.contains("unicast"), "{m}");
        assert!(m.contains("advert_int 0.1\n    # keepalived's default: adverts to the VRRP group 224.0.0.18.\n    virtual_ipaddress {"));
    }

    #[test]
    fn garp_master_delay_is_set_only_when_asked() {
        let c = config(
            VM_A,
            Vrrp::UnicastTo(VM_B),
            100,
            Options { garp_master_delay: Some(0), ..Options::default() },
        );
        assert!(c.contains("advert_int 0.1\n    garp_master_delay 0\n"));
    }

    #[test]
    fn use_vmac_leaves_the_vip_to_the_macvlan() {
        let c = config(VM_A, Vrrp::UnicastTo(VM_B), 150, Options { use_vmac: true, ..Options::default() });
        assert!(c.contains("\n    use_vmac\n    vmac_xmit_base\n"));
        assert!(c.contains("198.18.1.50/24\n"));
        assert!(!c.contains("dev eth0"));
        assert_eq!(VRRP_VMAC, [0, 0, 0x5e, 0, 1, 50]);
    }
}
