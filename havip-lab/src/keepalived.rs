//! Real keepalived (the Debian package) in a guest namespace: VRRPv3 over
//! unicast between the two members, a short advert interval, the VIP on eth0.
//! It decides who holds the VIP; havip only follows its gratuitous ARPs.

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
const VRID: u8 = 50;

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
        let conf = dir.join(format!("keepalived-{}.conf", guest.name));
        fs::write(&conf, config(guest, peer, priority))
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

fn config(guest: Guest, peer: Guest, priority: u8) -> String {
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
    advert_int {ADVERT_INT}
    # A VPC carries no multicast: adverts go unicast to the peer.
    unicast_src_ip {ip}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {VIP}/24 dev {GUEST_IF}
    }}
}}
"#,
        name = guest.name,
        ip = guest.ip,
        peer = peer.ip,
    )
}
