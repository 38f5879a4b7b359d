//! A whole lab, assembled: topology, agent, echo responders, keepalived in
//! both members. Fields drop in order, so processes stop (and the agent tears
//! down) before the namespaces go, and the lab's files go last.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use havip_common::VipState;

use crate::{
    agent::{self, Agent},
    cmd,
    ctl::Ctl,
    keepalived::{self, Keepalived, Vrrp},
    log::Timeline,
    netns::{self, LabId},
    probe::{Prober, Responder},
    process::ChildProc,
    state,
    topology::{self, Guest, SubnetMode, Topology, EIP, MEMBERS, VIP, VM_A, VM_B, VM_C},
    ucarp::{self, Ucarp},
    wait,
    web::{self, WebServer},
};

/// keepalived priorities: vm-a is the preferred master and preempts.
pub const PRIORITY_A: u8 = 150;
pub const PRIORITY_B: u8 = 100;
/// How long a failover may take to show: VRRP master-down is ~0.4 s here.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a lab runs with beyond its defaults; `Options::default()` is the
/// plain lab of [`Lab::start`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Whole TOML sections appended to the agent's config (e.g.
    /// `[verification]\nenabled = false`).
    pub agent_sections: String,
    /// `key = value` lines added to the HAVIP's `[[havips]]` table.
    pub havip_settings: String,
    pub keepalived: keepalived::Options,
    /// keepalived's default configuration, adverts to 224.0.0.18
    /// ([`keepalived::Vrrp::Multicast`]), instead of unicast to the peer.
    pub keepalived_multicast: bool,
    /// The subnet's mode and storm control in the desired state.
    pub subnet: topology::SubnetOptions,
}

pub struct Lab {
    pub timeline: Timeline,
    attached: bool,
    services: Services,
    keepalived: Vec<Keepalived>,
    ucarp: Vec<Ucarp>,
    agent: Option<Agent>,
    pub topo: Topology,
    dir: RunDir,
}

impl Lab {
    /// Sweeps dead labs, then builds the namespaces. `attached`: processes
    /// log into the timeline and die with this lab; otherwise they are
    /// detached (for `lab up`).
    pub fn create(id: LabId, attached: bool) -> Result<Self> {
        netns::sweep_stale().context("sweeping stale labs")?;
        let timeline = Timeline::new();
        let dir = RunDir::create(id.run_dir())?;
        timeline.step(&format!("creating lab {} (namespaces {}*)", id.stem, id.netns("")));
        let topo = Topology::create(id, &dir.path)?;
        Ok(Self {
            timeline,
            attached,
            services: Services::default(),
            keepalived: Vec::new(),
            ucarp: Vec::new(),
            agent: None,
            topo,
            dir,
        })
    }

    /// The full lab: agent first (so it sees keepalived's first claims), then
    /// echo responders (attached labs only) and keepalived; returns once vm-a holds.
    pub fn start(id: LabId, attached: bool) -> Result<Self> {
        Self::start_with(id, attached, &Options::default())
    }

    /// [`Lab::start`] with `opts` for the agent and keepalived.
    pub fn start_with(id: LabId, attached: bool, opts: &Options) -> Result<Self> {
        let mut lab = Self::create(id, attached)?;
        let started = (|| {
            lab.start_agent_for(opts)?;
            lab.start_responders()?;
            lab.start_keepalived_as(opts.keepalived, opts.keepalived_multicast)?;
            lab.wait_holder(VM_A, FAILOVER_TIMEOUT)
        })();
        lab.on_error(started)?;
        Ok(lab)
    }

    /// Runs `body` on the lab, printing the lab's logs first if it fails.
    pub fn run<T>(mut self, body: impl FnOnce(&mut Lab) -> Result<T>) -> Result<T> {
        let result = body(&mut self);
        self.on_error(result)
    }

    /// Passes `result` through; on an error, first prints the end of every
    /// log of the lab: the best clue to a failure, and gone with the lab.
    pub fn on_error<T>(&self, result: Result<T>) -> Result<T> {
        self.dir.on_error(result)
    }

    fn attach(&self) -> Option<&Timeline> {
        self.attached.then_some(&self.timeline)
    }

    pub fn start_agent(&mut self) -> Result<()> {
        self.start_agent_with("", "")
    }

    /// Starts the agent with `havip_settings` in the HAVIP's table and
    /// `sections` appended to its config (see [`Options`]).
    pub fn start_agent_with(&mut self, havip_settings: &str, sections: &str) -> Result<()> {
        let opts = Options {
            havip_settings: havip_settings.to_owned(),
            agent_sections: sections.to_owned(),
            ..Options::default()
        };
        self.start_agent_for(&opts)
    }

    /// Starts the agent with `opts`' HAVIP settings, subnet settings and
    /// config sections (keepalived's options are not the agent's).
    pub fn start_agent_for(&mut self, opts: &Options) -> Result<()> {
        let (havip_settings, sections) = (&opts.havip_settings, &opts.agent_sections);
        let spec = agent::Spec {
            bin: agent::locate_binary()?,
            config: self.dir.path.join("havip.toml"),
            netns: self.topo.hv().to_owned(),
            pin_dir: self.topo.id.pin_dir(),
            dir: self.dir.path.clone(),
        };
        let mut config = spec.agent_section() + &topology::agent_config_for(havip_settings, opts.subnet);
        if !sections.is_empty() {
            config = config + "\n" + sections.trim_end() + "\n";
        }
        fs::write(&spec.config, config).context("writing the agent config")?;
        self.timeline.step("starting havip-agent in hv");
        self.agent = Some(Agent::start(spec, self.attach())?);
        Ok(())
    }

    /// The members' services: a UDP echo responder and an HTTP server each,
    /// in this process for an attached lab; for a detached one (`lab up`),
    /// as `havip-lab serve` processes that stay up with it.
    pub fn start_responders(&mut self) -> Result<()> {
        let topo = &self.topo;
        self.services = Services::start(|g| topo.ns(g), self.attached, &self.dir.path)?;
        Ok(())
    }

    pub fn start_keepalived(&mut self) -> Result<()> {
        self.start_keepalived_with(keepalived::Options::default())
    }

    /// keepalived in both members with `opts`.
    pub fn start_keepalived_with(&mut self, opts: keepalived::Options) -> Result<()> {
        self.start_keepalived_as(opts, false)
    }

    /// keepalived in both members with its default configuration: adverts
    /// to 224.0.0.18, no unicast peers.
    pub fn start_keepalived_multicast(&mut self) -> Result<()> {
        self.start_keepalived_as(keepalived::Options::default(), true)
    }

    /// keepalived in both members with `opts`, adverts to 224.0.0.18 if
    /// `multicast`, else unicast to the other member.
    pub fn start_keepalived_as(&mut self, opts: keepalived::Options, multicast: bool) -> Result<()> {
        let topo = &self.topo;
        let (dir, tl) = (&self.dir.path, &self.timeline);
        let started = start_keepalived(dir, |g| topo.ns(g), opts, multicast, tl, self.attached)?;
        self.keepalived.extend(started);
        Ok(())
    }

    /// keepalived of member `g`.
    pub fn keepalived(&mut self, g: Guest) -> Result<&mut Keepalived> {
        let i =
            MEMBERS.iter().position(|m| *m == g).with_context(|| format!("{} runs no keepalived", g.name))?;
        self.keepalived.get_mut(i).context("keepalived is not started")
    }

    /// ucarp in both members ([`ucarp::MEMBERS`]: vm-a preferred).
    pub fn start_ucarp(&mut self) -> Result<()> {
        let topo = &self.topo;
        let started = ucarp::start_members(&self.dir.path, |g| topo.ns(g), &self.timeline, self.attached)?;
        self.ucarp.extend(started);
        Ok(())
    }

    /// ucarp of member `g`.
    pub fn ucarp(&mut self, g: Guest) -> Result<&mut Ucarp> {
        let i = MEMBERS.iter().position(|m| *m == g).with_context(|| format!("{} runs no ucarp", g.name))?;
        self.ucarp.get_mut(i).context("ucarp is not started")
    }

    pub fn agent(&mut self) -> Result<&mut Agent> {
        self.agent.as_mut().context("the agent is not started")
    }

    /// `havipctl` aimed at the lab's agent.
    pub fn ctl(&self) -> Result<Ctl> {
        Ctl::at(self.agent.as_ref().context("the agent is not started")?.spec().api_socket())
    }

    /// `havipctl subnet mode vpc1 MODE [--storm-pps N --storm-burst N]`:
    /// the subnet's mode at runtime (issue 11).
    pub fn set_subnet_mode(&self, mode: SubnetMode, storm: Option<(u32, u32)>) -> Result<()> {
        self.timeline.step(&format!("subnet vpc1 -> {}{}", mode.as_str(), storm_text(storm)));
        self.ctl()?
            .ok(&subnet_mode_args(mode, storm).iter().map(String::as_str).collect::<Vec<_>>())
            .map(drop)
    }

    /// `havipctl --json subnet describe vpc1`: the subnet's mode, storm
    /// control and, under `broadcast`, this host's counters.
    pub fn subnet_view(&self) -> Result<serde_json::Value> {
        self.ctl()?.json(&["subnet", "describe", SUBNET_NAME])
    }

    /// The VIP's state in the data plane and the guest behind its holder vNIC.
    pub fn holder(&self) -> Result<Option<(Guest, VipState)>> {
        let Some(st) = state::vip_state(&self.topo.id.pin_dir(), VIP)? else { return Ok(None) };
        if st.holder_ifindex == 0 {
            return Ok(None);
        }
        let vnic = state::ifname(self.topo.hv(), st.holder_ifindex)?;
        let guest = Guest::by_vnic(&vnic).with_context(|| format!("holder vNIC {vnic} is no lab guest"))?;
        Ok(Some((guest, st)))
    }

    /// Waits until the data plane says `g` holds the VIP.
    pub fn wait_holder(&self, g: Guest, timeout: Duration) -> Result<VipState> {
        wait::until(&format!("{} to hold {VIP} in the maps", g.name), timeout, || {
            Ok(self.holder()?.and_then(|(h, st)| (h == g).then_some(st)))
        })
    }

    /// A prober in vm-c aimed at the VIP.
    pub fn prober(&self, interval: Duration) -> Result<Prober> {
        Prober::start(&self.topo.ns(VM_C), VIP, interval, &self.timeline)
    }

    /// A prober on the outside host aimed at the EIP.
    pub fn prober_from_inet(&self, interval: Duration) -> Result<Prober> {
        Prober::start(self.topo.inet(), EIP, interval, &self.timeline)
    }

    /// One HTTP GET from the outside host through the EIP: who served it.
    pub fn fetch_via_eip(&self) -> Result<String> {
        web::fetch(self.topo.inet(), EIP)
    }

    /// The MAC of `g`'s vNIC on the host: where `g`'s frames are addressed.
    pub fn host_mac(&self, g: Guest) -> Result<[u8; 6]> {
        cmd::link_mac(self.topo.hv(), g.vnic)
    }

    /// The MAC in `g`'s neighbour table for `ip`, if any.
    pub fn neigh_mac(&self, g: Guest, ip: Ipv4Addr) -> Result<Option<String>> {
        let out = cmd::ip(&["-n", &self.topo.ns(g), "-j", "neigh", "show", &ip.to_string()])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j neigh`")?;
        Ok(v.as_array().and_then(|a| a.first()).and_then(|n| n["lladdr"].as_str()).map(str::to_owned))
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.topo.id.pin_dir()
    }

    /// Leaves everything standing when this handle goes (`lab up`).
    pub fn keep(mut self) -> Result<()> {
        if self.attached {
            // Attached processes die with their creator by design.
            bail!("only a detached lab can be left standing");
        }
        self.keepalived.iter_mut().for_each(Keepalived::keep);
        self.ucarp.iter_mut().for_each(Ucarp::keep);
        self.services.keep();
        self.agent.iter_mut().for_each(Agent::keep);
        self.topo.keep();
        self.dir.armed = false;
        Ok(())
    }
}

/// The lab's subnet, as the desired state names it.
pub const SUBNET_NAME: &str = "vpc1";

/// `havipctl` arguments that set the subnet's mode (and storm control).
pub fn subnet_mode_args(mode: SubnetMode, storm: Option<(u32, u32)>) -> Vec<String> {
    let mut a = ["subnet", "mode", SUBNET_NAME, mode.as_str()].map(str::to_owned).to_vec();
    if let Some((pps, burst)) = storm {
        a.extend(["--storm-pps".to_owned(), pps.to_string(), "--storm-burst".to_owned(), burst.to_string()]);
    }
    a
}

fn storm_text(storm: Option<(u32, u32)>) -> String {
    storm.map_or_else(String::new, |(pps, burst)| format!(" (storm control {pps} pps, burst {burst})"))
}

/// The members' services: a UDP echo responder and an HTTP server each,
/// in this process for an attached lab; for a detached one (`lab up`), as
/// `havip-lab serve` processes that stay up with it.
#[derive(Default)]
pub(crate) struct Services {
    responders: Vec<Responder>,
    web: Vec<WebServer>,
    /// A detached lab's services: `havip-lab serve` processes.
    procs: Vec<ChildProc>,
}

impl Services {
    /// Starts them in every member, `ns_of(g)` being member `g`'s namespace;
    /// a detached lab's logs go into `dir`.
    pub(crate) fn start(ns_of: impl Fn(Guest) -> String, attached: bool, dir: &Path) -> Result<Self> {
        let mut services = Self::default();
        for g in MEMBERS {
            let ns = ns_of(g);
            if attached {
                services.responders.push(Responder::start(&ns, g.name)?);
                services.web.push(WebServer::start(&ns, g.name)?);
                continue;
            }
            let exe = std::env::current_exe().context("locating the havip-lab binary")?;
            let mut cmd = Command::new(exe);
            cmd.args(["serve", "--netns", &ns, "--name", g.name]);
            let log = dir.join(format!("services-{}.log", g.name));
            services.procs.push(ChildProc::spawn(&format!("services {}", g.name), cmd, &log, None)?);
        }
        Ok(services)
    }

    /// Leaves a detached lab's services running when this handle goes.
    pub(crate) fn keep(&mut self) {
        self.procs.iter_mut().for_each(ChildProc::keep);
    }
}

/// keepalived in both members (vm-a preferred, each the other's unicast
/// peer, or both to 224.0.0.18 if `multicast`) with `opts`, `ns_of(g)`
/// being member `g`'s namespace, configs in `dir`; each start is a step on
/// `timeline`, which an `attached` lab's keepalived also logs into.
pub(crate) fn start_keepalived(
    dir: &Path,
    ns_of: impl Fn(Guest) -> String,
    opts: keepalived::Options,
    multicast: bool,
    timeline: &Timeline,
    attached: bool,
) -> Result<Vec<Keepalived>> {
    let mut started = Vec::new();
    for (g, peer, prio) in [(VM_A, VM_B, PRIORITY_A), (VM_B, VM_A, PRIORITY_B)] {
        let vrrp = if multicast { Vrrp::Multicast } else { Vrrp::UnicastTo(peer) };
        let how = if multicast { ", adverts to 224.0.0.18" } else { "" };
        timeline.step(&format!("starting keepalived in {} (priority {prio}{how})", g.name));
        let attach = attached.then_some(timeline);
        started.push(Keepalived::start_vrrp(dir, &ns_of(g), g, vrrp, prio, opts, attach)?);
    }
    Ok(started)
}

/// The lab's directory of configs, pid files and logs, removed on drop.
pub(crate) struct RunDir {
    pub(crate) path: PathBuf,
    pub(crate) armed: bool,
}

impl RunDir {
    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        if path.exists() {
            bail!("{} exists already: is another lab with this id running?", path.display());
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, armed: true })
    }
}

impl RunDir {
    /// Passes `result` through; on an error, first prints the end of every log.
    pub(crate) fn on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.print_logs();
        }
        result
    }

    /// The end of every log (in the dir and one level below: a host's, etcd's):
    /// a failing test's best clue, gone with the dir.
    pub(crate) fn print_logs(&self) {
        let Ok(entries) = fs::read_dir(&self.path) else { return };
        let mut paths: Vec<PathBuf> = Vec::new();
        for e in entries.flatten() {
            match fs::read_dir(e.path()) {
                Ok(sub) => paths.extend(sub.flatten().map(|e| e.path())),
                Err(_) => paths.push(e.path()),
            }
        }
        paths.sort();
        for path in paths.iter().filter(|p| p.extension().is_some_and(|x| x == "log")) {
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("----- {} (last 40 lines)", path.display());
            eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if self.armed {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                eprintln!("havip-lab: cleanup: removing {}: {e}", self.path.display());
            }
        }
    }
}

impl topology::Masters for Lab {
    fn vip_on(&self, g: Guest) -> Result<bool> {
        topology::has_addr(&self.topo.ns(g), VIP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subnet_mode_verb_is_the_contract_s() {
        assert_eq!(
            subnet_mode_args(SubnetMode::BroadcastDomain, None),
            ["subnet", "mode", "vpc1", "broadcast-domain"]
        );
        assert_eq!(
            subnet_mode_args(SubnetMode::Unicast, Some((200, 20))).join(" "),
            "subnet mode vpc1 unicast --storm-pps 200 --storm-burst 20"
        );
    }
}
