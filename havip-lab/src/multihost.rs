//! The lab with many hosts (issue 9): three hypervisors on an underlay
//! fabric, a guest VM on each, a three-member etcd cluster on the same
//! fabric, and an agent per host sharing the cluster as its store.
//!
//! ```text
//!  [fabric] bridge br0, underlay 198.18.0.0/24, MTU 1550 (.254: the fabric's own)
//!    ├─ hv1 ul0 198.18.0.1 ── vnic-a ── vm-a 198.18.1.11    keepalived (priority 150)
//!    ├─ hv2 ul0 198.18.0.2 ── vnic-b ── vm-b 198.18.1.12    keepalived (priority 100)
//!    ├─ hv3 ul0 198.18.0.3 ── vnic-c ── vm-c 198.18.1.13    the client
//!    │      uplink0 198.51.100.1 ── [inet] 198.51.100.2     EIP 203.0.113.10 routed to hv3
//!    └─ e1 e2 e3 198.18.0.11-13                              etcd 3.4
//! ```
//!
//! Each host routes its own guests like the single-host lab (per-VM /32 on
//! the vNIC, proxy ARP) and the other hosts' guests by /32 via that host's
//! underlay address: guest traffic between hosts (VRRP unicast, pings) is
//! the SDN's business and works without havip; the VIP has no route, so
//! without havip it does not move. havip's VXLAN carries only VIP and EIP
//! traffic.
//!
//! Building it is two steps: [`Lab::create`] (namespaces, wiring, etcd: what
//! the topology test checks) and [`Lab::start_agents`] + [`Lab::apply_desired`]
//! (an agent per host on etcd, the desired state applied once through hv1's
//! API); [`Lab::start`] does both and starts keepalived and the services.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{
    agent::{self, Agent},
    cmd,
    ctl::Ctl,
    etcd::EtcdCluster,
    fabric::{self, Fabric},
    keepalived::Keepalived,
    log::Timeline,
    netns::{self, LabId, Netns},
    probe::{self, Prober},
    scenario::{self, RunDir, Services, FAILOVER_TIMEOUT},
    topology::{self, Guest, SubnetMode, EIP, GUESTS, INET, MEMBERS, VIP, VM_A, VM_B, VM_C},
    ucarp::{self, Ucarp},
    wait, web,
};

/// The VPC's VXLAN network identifier in the lab.
pub const VNI: u32 = 1001;
/// Every host's underlay NIC.
pub const UNDERLAY_IF: &str = "ul0";
/// etcd members of the lab.
pub const ETCD_MEMBERS: usize = 3;
/// The agents' etcd lease: short, so a host that is gone is noticed soon
/// (etcd grants at least 1.5 × its election timeout, 1.5 s here).
pub const LEASE_TTL_S: u32 = 2;
/// The holder records' key prefix in etcd.
pub const PREFIX: &str = "/havip/v1";

/// One hypervisor of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hv {
    /// Host id (`[agent] host_id`) and namespace role: `hv1`...
    pub id: &'static str,
    /// N of `hvN`: its underlay address is 198.18.0.N.
    pub n: u8,
    /// The guests it runs.
    pub guests: &'static [Guest],
    /// Whether it has the uplink to `inet` (the gateway host of the EIP).
    pub uplink: bool,
}

impl Hv {
    /// Its underlay address: its VTEP.
    pub fn underlay(&self) -> Ipv4Addr {
        fabric::host_ip(self.n)
    }
}

/// hv1 runs vm-a.
pub const HV1: Hv = Hv { id: "hv1", n: 1, guests: &[VM_A], uplink: false };
/// hv2 runs vm-b.
pub const HV2: Hv = Hv { id: "hv2", n: 2, guests: &[VM_B], uplink: false };
/// hv3 runs vm-c and has the uplink.
pub const HV3: Hv = Hv { id: "hv3", n: 3, guests: &[VM_C], uplink: true };
/// Every host of the lab, in order.
pub const HOSTS: [Hv; 3] = [HV1, HV2, HV3];

/// The host guest `g` runs on.
pub fn host_of(g: Guest) -> Hv {
    HOSTS.into_iter().find(|h| h.guests.contains(&g)).expect("every lab guest runs on a lab host")
}

fn index(h: Hv) -> usize {
    usize::from(h.n - 1)
}

/// The namespaces and wiring: the fabric, a namespace per host, guest and
/// the outside host. Dropping it deletes them all (stop processes first).
pub struct Topology {
    /// Names everything.
    pub id: LabId,
    fabric: Fabric,
    hosts: Vec<Netns>,
    guests: Vec<Netns>,
    inet: Netns,
}

impl Topology {
    /// Builds the namespaces and wires them; `dir` is the lab's directory.
    pub fn create(id: LabId, dir: &Path) -> Result<Self> {
        let fabric = Fabric::create(&id)?;
        let inet = Netns::create(&id.netns(INET))?;
        let mut topo = Self { fabric, hosts: Vec::new(), guests: Vec::new(), inet, id };
        for h in HOSTS {
            topo.hosts.push(Netns::create(&topo.id.netns(h.id))?);
        }
        for g in GUESTS {
            topo.guests.push(Netns::create(&topo.id.netns(g.role))?);
        }
        topo.wire(dir).context("wiring the lab with many hosts")?;
        Ok(topo)
    }

    fn wire(&self, dir: &Path) -> Result<()> {
        let obj = topology::write_lab_obj(dir)?;
        for h in HOSTS {
            let hv = self.host_ns(h);
            let port = format!("p-{}", h.id);
            self.fabric.attach(hv, UNDERLAY_IF, &port, h.underlay())?;
            // xdp_vnic redirects encapsulated frames into ul0: its bridge end
            // must take XDP frames, as a guest's eth0 must.
            topology::prepare_far_end(self.fabric.name(), &port, &obj)?;
            let mut sysctls = topology::host_sysctls();
            sysctls.push(format!("ipv4/conf/{UNDERLAY_IF}/rp_filter=0"));
            for &g in h.guests {
                sysctls.extend(topology::wire_guest(hv, &self.ns(g), g, &obj)?);
            }
            self.route_guests(h)?;
            if h.uplink {
                sysctls.extend(topology::wire_uplink(hv, self.inet(), &obj)?);
            }
            topology::write_sysctls(hv, sysctls)?;
        }
        Ok(())
    }

    /// Routes in host `h` to every guest: its own by /32 on the vNIC (as
    /// [`topology`] wires them), the other hosts' by /32 via their host's
    /// underlay address, as an SDN routes them. Idempotent: a link taken
    /// down loses its routes, and [`Lab::host_up`] puts them back with this.
    fn route_guests(&self, h: Hv) -> Result<()> {
        let hv = self.host_ns(h);
        for other in HOSTS {
            for g in other.guests {
                let to = format!("{}/32", g.ip);
                if other == h {
                    cmd::ip(&["-n", hv, "route", "replace", &to, "dev", g.vnic])?;
                } else {
                    let via = other.underlay().to_string();
                    cmd::ip(&["-n", hv, "route", "replace", &to, "via", &via, "dev", UNDERLAY_IF])?;
                }
            }
        }
        Ok(())
    }

    /// The fabric the hosts (and etcd) are plugged into.
    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    /// Host `h`'s namespace.
    pub fn host_ns(&self, h: Hv) -> &str {
        self.hosts[index(h)].name()
    }

    /// Guest `g`'s namespace.
    pub fn ns(&self, g: Guest) -> String {
        self.id.netns(g.role)
    }

    /// The outside host's namespace.
    pub fn inet(&self) -> &str {
        self.inet.name()
    }

    /// Every namespace of the topology.
    pub fn namespaces(&self) -> Vec<String> {
        let all = [self.fabric.name(), self.inet.name()].map(str::to_owned);
        let rest = self.hosts.iter().chain(&self.guests).map(|n| n.name().to_owned());
        all.into_iter().chain(rest).collect()
    }

    /// Leaves the namespaces in place when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.fabric.keep();
        self.inet.keep();
        self.hosts.iter_mut().chain(&mut self.guests).for_each(Netns::keep);
    }
}

/// One ICMP echo from namespace `ns` to `to` (test ranges only): whether
/// it was answered within a second.
pub fn ping(ns: &str, to: Ipv4Addr) -> Result<bool> {
    probe::ensure_test_range(to)?;
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-q", "-n", "-c", "1", "-W", "1", &to.to_string()])
        .output()
        .context("running ping (is iputils-ping installed? `cargo xtask deps`)")?;
    Ok(out.status.success())
}

/// What a lab runs with beyond its defaults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// etcd with TLS (certificates made by the lab, client certs required).
    pub tls: bool,
    /// Agents without peer hints (`[underlay] hints = false`): holders move
    /// between hosts through etcd alone (the bench's baseline).
    pub no_hints: bool,
    /// What the single-host lab takes too: sections appended to every
    /// agent's config, the HAVIP's settings, keepalived's options.
    pub base: scenario::Options,
}

/// A whole lab with many hosts. Fields drop in order: processes stop (and
/// agents tear down) before etcd and the namespaces go, the files last.
pub struct Lab {
    /// Every lab step and every attached process's line, stamped.
    pub timeline: Timeline,
    attached: bool,
    opts: Options,
    services: Services,
    keepalived: Vec<Keepalived>,
    ucarp: Vec<Ucarp>,
    /// An agent per host (by host index), once started.
    agents: Vec<Option<Agent>>,
    /// Agents SIGKILLed by [`Lab::kill_agent`] (by host index): their data
    /// planes stay, as a crashed agent's do, and are torn down with the lab
    /// (or left to the agent started next on that host).
    killed: Vec<Option<Agent>>,
    /// The lab's etcd cluster, on the fabric.
    pub etcd: EtcdCluster,
    /// The namespaces.
    pub topo: Topology,
    dir: RunDir,
}

impl Lab {
    /// Sweeps dead labs, builds the namespaces and starts etcd: no agents,
    /// no keepalived. `attached`: processes log into the timeline and die
    /// with this lab; otherwise they are detached (for `lab up`).
    pub fn create(id: LabId, attached: bool, opts: Options) -> Result<Self> {
        netns::sweep_stale().context("sweeping stale labs")?;
        let timeline = Timeline::new();
        let dir = RunDir::create(id.run_dir())?;
        timeline.step(&format!(
            "creating lab {} with {} hosts (namespaces {}*)",
            id.stem,
            HOSTS.len(),
            id.netns("")
        ));
        let topo = Topology::create(id, &dir.path)?;
        timeline
            .step(&format!("starting etcd: {ETCD_MEMBERS} members{}", if opts.tls { ", TLS" } else { "" }));
        let started =
            EtcdCluster::start_on(&topo.id, &dir.path, ETCD_MEMBERS, opts.tls, topo.fabric(), attached);
        let etcd = started.inspect_err(|_| dir.print_logs())?;
        Ok(Self {
            timeline,
            attached,
            opts,
            services: Services::default(),
            keepalived: Vec::new(),
            ucarp: Vec::new(),
            agents: HOSTS.iter().map(|_| None).collect(),
            killed: HOSTS.iter().map(|_| None).collect(),
            etcd,
            topo,
            dir,
        })
    }

    /// The full lab: [`Lab::create`], an agent per host, the desired state,
    /// the members' services and keepalived; returns once every host's agent
    /// says vm-a holds the VIP.
    pub fn start(id: LabId, attached: bool, opts: Options) -> Result<Self> {
        let mut lab = Self::create(id, attached, opts)?;
        let started = (|| {
            lab.start_agents()?;
            lab.apply_desired()?;
            lab.start_services()?;
            lab.start_keepalived()?;
            lab.wait_holder_everywhere(VM_A, FAILOVER_TIMEOUT).map(drop)
        })();
        lab.on_error(started)?;
        Ok(lab)
    }

    /// Passes `result` through; on an error, first prints the end of every
    /// log of the lab (agents', etcd's, keepalived's).
    pub fn on_error<T>(&self, result: Result<T>) -> Result<T> {
        self.dir.on_error(result)
    }

    /// Runs `body` on the lab, printing the lab's logs first if it fails.
    pub fn run(mut self, body: impl FnOnce(&mut Lab) -> Result<()>) -> Result<()> {
        let result = body(&mut self);
        self.on_error(result)
    }

    /// Where and how host `h`'s agent runs: in `h`'s namespace, pins in
    /// the lab's pin dir of `h`, files in `<lab dir>/<h>`.
    pub fn agent_spec(&self, h: Hv) -> Result<agent::Spec> {
        let dir = self.dir.path.join(h.id);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(agent::Spec {
            bin: agent::locate_binary()?,
            config: dir.join("havip.toml"),
            netns: self.topo.host_ns(h).to_owned(),
            pin_dir: self.topo.id.pin_dir_of(h.id),
            dir,
        })
    }

    /// Host `h`'s agent config: its id, etcd as the store (TLS files when
    /// the cluster has them), `ul0` as the underlay, the uplink on the host
    /// that has it, and the lab's extra sections. No desired state: that is
    /// applied once, through one agent ([`Lab::apply_desired`]).
    pub fn agent_config(&self, spec: &agent::Spec, h: Hv) -> String {
        let underlay = Underlay { hints: !self.opts.no_hints };
        host_config(
            spec,
            h,
            &self.etcd.endpoints(),
            self.etcd.tls_files(),
            underlay,
            &self.opts.base.agent_sections,
        )
    }

    /// Starts an agent on every host, each with its own config, pins and API socket.
    pub fn start_agents(&mut self) -> Result<()> {
        for h in HOSTS {
            self.start_agent(h)?;
        }
        Ok(())
    }

    /// Starts host `h`'s agent (again: after [`Lab::kill_agent`]).
    pub fn start_agent(&mut self, h: Hv) -> Result<()> {
        ensure!(self.agents[index(h)].is_none(), "the agent on {} runs already", h.id);
        if let Some(mut crashed) = self.killed[index(h)].take() {
            // The new agent takes its data plane over: no teardown.
            crashed.keep();
        }
        let spec = self.agent_spec(h)?;
        fs::write(&spec.config, self.agent_config(&spec, h))
            .with_context(|| format!("writing {}", spec.config.display()))?;
        self.timeline.step(&format!("starting havip-agent on {}", h.id));
        let name = format!("agent {}", h.id);
        let agent = Agent::start_named(spec, &name, self.attached.then_some(&self.timeline))?;
        self.agents[index(h)] = Some(agent);
        Ok(())
    }

    /// Host `h`'s agent.
    pub fn agent(&mut self, h: Hv) -> Result<&mut Agent> {
        self.agents[index(h)].as_mut().with_context(|| format!("no agent runs on {}", h.id))
    }

    /// `havipctl` aimed at host `h`'s agent.
    pub fn ctl(&self, h: Hv) -> Result<Ctl> {
        let agent = self.agents[index(h)].as_ref().with_context(|| format!("no agent runs on {}", h.id))?;
        Ctl::at(agent.spec().api_socket())
    }

    /// Applies the lab's desired state (subnet, vNICs on their hosts, the
    /// HAVIP with the EIP) once, through hv1's agent: `havipctl apply -f`.
    pub fn apply_desired(&self) -> Result<()> {
        let file = self.dir.path.join("desired.toml");
        let base = &self.opts.base;
        let text = topology::desired_file_with(|g| Some(host_of(g).id), &base.havip_settings, base.subnet);
        fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        self.timeline.step("applying the desired state through hv1's agent");
        let path = file.to_str().context("the desired file's path")?;
        self.ctl(HV1)?.ok(&["apply", "-f", path]).map(drop)
    }

    /// The members' services (UDP echo, HTTP), as in the single-host lab.
    pub fn start_services(&mut self) -> Result<()> {
        let topo = &self.topo;
        self.services = Services::start(|g| topo.ns(g), self.attached, &self.dir.path)?;
        Ok(())
    }

    /// keepalived in vm-a and vm-b, unicast peers across the underlay (or
    /// adverts to 224.0.0.18 with `keepalived_multicast`).
    pub fn start_keepalived(&mut self) -> Result<()> {
        let topo = &self.topo;
        let ka = scenario::start_keepalived(
            &self.dir.path,
            |g| topo.ns(g),
            self.opts.base.keepalived,
            self.opts.base.keepalived_multicast,
            &self.timeline,
            self.attached,
        )?;
        self.keepalived.extend(ka);
        Ok(())
    }

    /// keepalived of member `g`.
    pub fn keepalived(&mut self, g: Guest) -> Result<&mut Keepalived> {
        let i =
            MEMBERS.iter().position(|m| *m == g).with_context(|| format!("{} runs no keepalived", g.name))?;
        self.keepalived.get_mut(i).context("keepalived is not started")
    }

    /// ucarp in vm-a and vm-b ([`ucarp::MEMBERS`]: vm-a preferred), CARP
    /// to 224.0.0.18 across the hosts.
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

    /// `havipctl subnet mode vpc1 MODE [--storm-pps N --storm-burst N]`
    /// through hv1's agent: the shared desired state, every host follows.
    pub fn set_subnet_mode(&self, mode: SubnetMode, storm: Option<(u32, u32)>) -> Result<()> {
        self.timeline.step(&format!("subnet vpc1 -> {} (through hv1)", mode.as_str()));
        let args = scenario::subnet_mode_args(mode, storm);
        self.ctl(HV1)?.ok(&args.iter().map(String::as_str).collect::<Vec<_>>()).map(drop)
    }

    /// Host `h`'s `havipctl --json subnet describe vpc1`: the mode, storm
    /// control and `h`'s broadcast counters.
    pub fn subnet_view(&self, h: Hv) -> Result<Value> {
        self.ctl(h)?.json(&["subnet", "describe", scenario::SUBNET_NAME])
    }

    /// SIGKILLs host `h`'s agent (a crash; the data plane stays).
    pub fn kill_agent(&mut self, h: Hv) -> Result<()> {
        self.timeline.step(&format!("SIGKILL the agent on {}", h.id));
        let mut agent = self.agents[index(h)].take().with_context(|| format!("no agent runs on {}", h.id))?;
        let killed = agent.kill();
        // Dropping the handle would tear the data plane down: kept until the
        // next agent on `h` takes it over, or the lab goes.
        self.killed[index(h)] = Some(agent);
        killed
    }

    /// Restarts host `h`'s agent: SIGTERM and start when it runs, a plain
    /// start after [`Lab::kill_agent`].
    pub fn restart_agent(&mut self, h: Hv) -> Result<()> {
        self.timeline.step(&format!("restarting the agent on {}", h.id));
        match self.agents[index(h)].as_mut() {
            Some(agent) => agent.restart(),
            None => self.start_agent(h),
        }
    }

    /// The host is gone: its agent SIGKILLed, its underlay NIC and vNICs down.
    pub fn host_down(&mut self, h: Hv) -> Result<()> {
        if self.agents[index(h)].is_some() {
            self.kill_agent(h)?;
        }
        self.timeline.step(&format!("{} is gone: {UNDERLAY_IF} and its vNICs down", h.id));
        self.set_links(h, "down")
    }

    /// The host is back: its underlay NIC and vNICs up, its routes to the
    /// guests restored (start its agent with [`Lab::start_agent`]).
    pub fn host_up(&mut self, h: Hv) -> Result<()> {
        self.timeline.step(&format!("{} is back: {UNDERLAY_IF} and its vNICs up", h.id));
        self.set_links(h, "up")?;
        self.topo.route_guests(h)
    }

    fn set_links(&self, h: Hv, state: &str) -> Result<()> {
        let ns = self.topo.host_ns(h);
        for dev in h.guests.iter().map(|g| g.vnic).chain([UNDERLAY_IF]) {
            cmd::ip(&["-n", ns, "link", "set", dev, state])?;
        }
        Ok(())
    }

    /// Cuts host `h` off from etcd only: a blackhole route to every member's
    /// /32 inside `h`'s namespace. Its guests and the underlay keep working.
    pub fn cut_from_etcd(&self, h: Hv) -> Result<()> {
        self.timeline.step(&format!("cutting {} off from etcd", h.id));
        self.etcd_routes(h, "add")
    }

    /// Undoes [`Lab::cut_from_etcd`].
    pub fn heal(&self, h: Hv) -> Result<()> {
        self.timeline.step(&format!("{} reaches etcd again", h.id));
        self.etcd_routes(h, "del")
    }

    fn etcd_routes(&self, h: Hv, verb: &str) -> Result<()> {
        let ns = self.topo.host_ns(h);
        for i in 0..self.etcd.len() {
            cmd::ip(&["-n", ns, "route", verb, "blackhole", &format!("{}/32", self.etcd.addr(i))])?;
        }
        Ok(())
    }

    /// Host `h`'s agent's view of the VIP (`havipctl --json describe`).
    pub fn describe(&self, h: Hv) -> Result<Value> {
        self.ctl(h)?.json(&["describe", &VIP.to_string()])
    }

    /// The vNIC host `h`'s agent says holds the VIP.
    pub fn holder_on(&self, h: Hv) -> Result<Option<String>> {
        Ok(self.describe(h)?["holder"].as_str().map(str::to_owned))
    }

    /// Waits until every host with a running agent says `g` holds the VIP;
    /// returns when each host first said so (on the lab's clock), in host order.
    /// A host that cannot describe the VIP yet (the desired state applied on
    /// hv1 has not reached it through etcd) is asked again; the last such
    /// error is told if the wait times out.
    pub fn wait_holder_everywhere(&self, g: Guest, timeout: Duration) -> Result<Vec<(Hv, Duration)>> {
        let hosts: Vec<Hv> = HOSTS.into_iter().filter(|h| self.agents[index(*h)].is_some()).collect();
        let mut seen: Vec<Option<Duration>> = vec![None; hosts.len()];
        // A host may not know the HAVIP yet (the desired state reaches it
        // through etcd): `describe` is refused until then. Not yet, not an
        // error; the last refusal is said if the wait times out.
        let mut refused = None;
        wait::until(&format!("every host to say {} holds {VIP}", g.name), timeout, || {
            for (h, at) in hosts.iter().zip(seen.iter_mut()).filter(|(_, at)| at.is_none()) {
                match self.holder_on(*h) {
                    Ok(holder) if holder.as_deref() == Some(g.vnic) => *at = Some(self.timeline.now()),
                    Ok(_) => {}
                    Err(e) => refused = Some(format!("{}: {e:#}", h.id)),
                }
            }
            Ok(seen.iter().all(Option::is_some).then_some(()))
        })
        .with_context(|| refused.map_or_else(String::new, |r| format!("last refusal: {r}")))?;
        Ok(hosts.into_iter().zip(seen.into_iter().flatten()).collect())
    }

    /// A prober in vm-c (on hv3) aimed at the VIP.
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

    /// The lab's directory (configs, logs, etcd's data).
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// What `lab up` records for `lab down`: the agents' specs and every namespace.
    pub fn record(&self) -> Value {
        let specs: Vec<&agent::Spec> = self.agents.iter().flatten().map(Agent::spec).collect();
        let mut namespaces = self.topo.namespaces();
        namespaces.extend((0..self.etcd.len()).map(|i| self.etcd.member_netns(i).to_owned()));
        serde_json::json!({ "hosts": HOSTS.len(), "agents": specs, "namespaces": namespaces })
    }

    /// Leaves everything standing when this handle goes (`lab up`).
    pub fn keep(mut self) -> Result<()> {
        if self.attached {
            bail!("only a detached lab can be left standing");
        }
        self.keepalived.iter_mut().for_each(Keepalived::keep);
        self.ucarp.iter_mut().for_each(Ucarp::keep);
        self.services.keep();
        self.agents.iter_mut().flatten().for_each(Agent::keep);
        self.etcd.keep();
        self.topo.keep();
        self.dir.armed = false;
        Ok(())
    }
}

/// What a host's `[underlay]` section sets beyond the interface and VNI.
#[derive(Clone, Copy, Debug)]
pub struct Underlay {
    /// Peer hints (`hints`, the agent's default true).
    pub hints: bool,
}

impl Default for Underlay {
    fn default() -> Self {
        Self { hints: true }
    }
}

/// Host `h`'s agent config (see [`Lab::agent_config`]): `spec`'s `[agent]`
/// with `h`'s id, etcd at `endpoints` (with `tls`), the underlay, the uplink
/// if `h` has it, then `sections` (whole TOML sections).
pub fn host_config(
    spec: &agent::Spec,
    h: Hv,
    endpoints: &[String],
    tls: Option<&crate::etcd::TlsFiles>,
    underlay: Underlay,
    sections: &str,
) -> String {
    let mut cfg = spec.agent_section_as(Some(h.id));
    cfg += &store_section(endpoints, tls);
    cfg += &format!("\n[underlay]\ninterface = \"{UNDERLAY_IF}\"\nvni = {VNI}\n");
    if !underlay.hints {
        cfg += "hints = false\n";
    }
    if h.uplink {
        cfg += &topology::uplink_section();
    }
    if !sections.is_empty() {
        cfg = cfg + "\n" + sections.trim_end() + "\n";
    }
    cfg
}

/// The agent config's `[store]` section for etcd at `endpoints`.
pub fn store_section(endpoints: &[String], tls: Option<&crate::etcd::TlsFiles>) -> String {
    let quoted: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let mut s = format!(
        "\n[store]\nbackend = \"etcd\"\nendpoints = [{}]\nprefix = \"{PREFIX}\"\nlease_ttl_s = {LEASE_TTL_S}\ndial_timeout_ms = 1000\n",
        quoted.join(", ")
    );
    if let Some(t) = tls {
        let p = |p: &PathBuf| p.display().to_string();
        s += &format!("ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n", p(&t.ca), p(&t.cert), p(&t.key));
    }
    s
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
    fn every_guest_has_one_host() {
        assert_eq!(host_of(VM_A), HV1);
        assert_eq!(host_of(VM_B), HV2);
        assert_eq!(host_of(VM_C), HV3);
        assert_eq!(HV3.underlay(), Ipv4Addr::new(198, 18, 0, 3));
        assert_eq!(HOSTS.iter().filter(|h| h.uplink).count(), 1);
    }

    #[test]
    fn the_store_section_names_etcd_and_its_tls_files() {
        let eps = ["https://198.18.0.11:2379".to_owned(), "https://198.18.0.12:2379".to_owned()];
        let tls =
            crate::etcd::TlsFiles { ca: "/l/ca.pem".into(), cert: "/l/c.pem".into(), key: "/l/k.pem".into() };
        let s = store_section(&eps, Some(&tls));
        assert!(s.contains(
            "[store]\nbackend = \"etcd\"\nendpoints = [\"https://198.18.0.11:2379\", \"https://198.18.0.12:2379\"]\nprefix = \"/havip/v1\"\n"
        ));
        assert!(s.contains("ca = \"/l/ca.pem\"\ncert = \"/l/c.pem\"\nkey = \"/l/k.pem\"\n"));
        assert!(!store_section(&eps, None).contains("ca = "));
    }

    #[test]
    fn a_hosts_config_is_the_plans() {
        let spec = agent::Spec {
            bin: "/b/havip-agent".into(),
            config: "/l/hv3/havip.toml".into(),
            netns: "havip-x-hv3".into(),
            pin_dir: "/sys/fs/bpf/havip-test-x-hv3".into(),
            dir: "/l/hv3".into(),
        };
        let eps = ["http://198.18.0.11:2379".to_owned()];
        let cfg =
            host_config(&spec, HV3, &eps, None, Underlay::default(), "[verification]\nenabled = false\n");
        assert!(cfg.starts_with("[agent]\nhost_id = \"hv3\"\nstore = "), "{cfg}");
        assert!(cfg.contains("api_socket = \"/l/hv3/api.sock\""));
        assert!(cfg.contains("\n[underlay]\ninterface = \"ul0\"\nvni = 1001\n"));
        assert!(cfg.contains("\n[uplink]\nname = \"uplink0\"\nnext_hop = \"198.51.100.2\"\n"));
        assert!(cfg.ends_with("\n[verification]\nenabled = false\n"));
        assert!(!host_config(&spec, HV1, &eps, None, Underlay::default(), "").contains("[uplink]"));
        assert!(!cfg.contains("hints"));
        let etcd_only = host_config(&spec, HV1, &eps, None, Underlay { hints: false }, "");
        assert!(etcd_only.contains("\n[underlay]\ninterface = \"ul0\"\nvni = 1001\nhints = false\n"));
    }
}
