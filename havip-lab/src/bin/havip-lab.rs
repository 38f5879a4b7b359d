//! `havip-lab run|up|down`: the lab demo, and a lab left standing for hands-on use;
//! `--hosts 1` the single-host lab, `--hosts 3` the lab with many hosts.

use std::{fs, path::Path, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use havip_common::VipCounter;
use havip_lab::{
    agent, garp, interrupt,
    keepalived::Keepalived,
    log::Timeline,
    multihost,
    netns::{self, LabId, RUN_DIR},
    probe::{Prober, Report, Responder},
    report::{self, ProbeView},
    scenario::{self, Lab, FAILOVER_TIMEOUT},
    state,
    topology::{self, Guest, EIP, GUEST_IF, INET, VIP, VM_A, VM_B, VM_C},
    wait,
    web::WebServer,
};

/// The probe rate of the demo: 200 packets/s.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// The stem of the lab `up` leaves standing: no owner pid, so never swept.
const UP_STEM: &str = "up";

#[derive(Parser)]
#[command(about = "The havip network-namespace lab")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The demo: fail over with keepalived under a steady probe, print the timeline.
    Run {
        /// 3: failover across hypervisors on etcd; 1: the single-host lab.
        #[arg(long, default_value_t = 3, value_parser = hosts)]
        hosts: u8,
    },
    /// Create the lab, start keepalived and the agent(s), and leave it standing.
    Up {
        /// 1: the single-host lab; 3: three hosts on an underlay with etcd.
        #[arg(long, default_value_t = 1, value_parser = hosts)]
        hosts: u8,
        /// With --hosts 3: no agents (nor the desired state): the network,
        /// etcd, keepalived and the members' services only.
        #[arg(long)]
        no_agents: bool,
        /// vpc1 a broadcast domain, and keepalived in its default
        /// configuration: multicast adverts to 224.0.0.18, no unicast_peer.
        #[arg(long)]
        broadcast_domain: bool,
    },
    /// Remove what `up` created.
    Down,
    /// A member's services (UDP echo, HTTP) inside namespace NETNS, until
    /// SIGTERM: what `up` leaves running in vm-a and vm-b.
    Serve {
        #[arg(long)]
        netns: String,
        /// Who the answers say served them.
        #[arg(long)]
        name: String,
    },
}

fn main() -> Result<()> {
    interrupt::install()?;
    match Cli::parse().cmd {
        Cmd::Run { hosts: 1 } => run(),
        Cmd::Run { .. } => run_hosts(),
        Cmd::Up { hosts: 1, no_agents: false, broadcast_domain } => up(&broadcast(broadcast_domain)),
        Cmd::Up { hosts: 1, no_agents: true, .. } => anyhow::bail!("--no-agents goes with --hosts 3"),
        Cmd::Up { no_agents, broadcast_domain, .. } => up_hosts(no_agents, broadcast(broadcast_domain)),
        Cmd::Down => down(),
        Cmd::Serve { netns, name } => serve(&netns, &name),
    }
}

fn run() -> Result<()> {
    let mut lab = Lab::start(LabId::unique("lab"), true)?;
    let t = lab.timeline.clone();
    t.step(&format!("probing the VIP from vm-c, and the EIP {EIP} from inet"));
    let probes =
        Probes { inside: lab.prober(PROBE_INTERVAL)?, outside: lab.prober_from_inet(PROBE_INTERVAL)? };
    let answered = |g: Guest| probes.answered(g);
    answered(VM_A)?;
    fetch(&lab.timeline, lab.fetch_via_eip(), VM_A)?;

    t.step("stopping keepalived on vm-a (the holder)");
    lab.keepalived(VM_A)?.stop()?;
    lab.wait_holder(VM_B, FAILOVER_TIMEOUT)?;
    answered(VM_B)?;
    t.step("vm-b holds the VIP and answers");
    fetch(&lab.timeline, lab.fetch_via_eip(), VM_B)?;

    t.step("restarting keepalived on vm-a (it preempts)");
    lab.keepalived(VM_A)?.restart()?;
    lab.wait_holder(VM_A, FAILOVER_TIMEOUT)?;
    answered(VM_A)?;
    t.step("vm-a holds the VIP again and answers");
    fetch(&lab.timeline, lab.fetch_via_eip(), VM_A)?;

    t.step("vm-c (no member) claims the VIP with a gratuitous ARP");
    let pins = lab.pin_dir();
    let rejected =
        |pins: &Path| -> Result<u64> { Ok(state::vip_counters(pins, VIP)?.get(VipCounter::ClaimsRejected)) };
    let before = rejected(&pins)?;
    garp::send(&lab.topo.ns(VM_C), GUEST_IF, VIP, VM_C.mac())?;
    wait::until("the spoofed claim to be rejected", FAILOVER_TIMEOUT, || {
        Ok((rejected(&pins)? > before).then_some(()))
    })?;
    answered(VM_A)?;
    t.step("rejected: vm-a still holds the VIP and answers");

    let (inside, outside) = probes.finish();
    let counters = state::vip_counters(&pins, VIP)?;
    let probes = [
        ProbeView { who: "vm-c", target: "the VIP", report: &inside },
        ProbeView { who: "inet", target: "the EIP", report: &outside },
    ];
    print!("{}", report::render(&lab.timeline.lines(), &probes, PROBE_INTERVAL, &counters));
    t.step("removing the lab");
    Ok(())
}

/// The demo's probes: from vm-c to the VIP, from inet to the EIP.
struct Probes {
    inside: Prober,
    outside: Prober,
}

impl Probes {
    /// Waits until both see an answer from `g`.
    fn answered(&self, g: Guest) -> Result<()> {
        self.inside.wait_answered_by(g.name, 1, FAILOVER_TIMEOUT)?;
        self.outside.wait_answered_by(g.name, 1, FAILOVER_TIMEOUT)
    }

    /// Stops both; their reports as the timeline shows them.
    fn finish(self) -> (Report, Report) {
        (self.inside.finish(), self.outside.finish())
    }
}

/// An HTTP GET from outside through the EIP (`served_by`: what it
/// answered), which `g` must have served; a step on `t`.
fn fetch(t: &Timeline, served_by: Result<String>, g: Guest) -> Result<()> {
    let who = served_by?;
    t.step(&format!("inet: GET http://{EIP}/ -> served by {who}"));
    anyhow::ensure!(who == g.name, "the EIP was served by {who}, not by the holder {}", g.name);
    Ok(())
}

fn serve(ns: &str, name: &str) -> Result<()> {
    // On the main thread, so the process counts as inside the namespace
    // (`ip netns pids`) and `down` stops it with the rest.
    netns::enter(ns)?;
    let _echo = Responder::start(ns, name)?;
    let _web = WebServer::start(ns, name)?;
    while interrupt::check().is_ok() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn state_file() -> std::path::PathBuf {
    Path::new(RUN_DIR).join("up.json")
}

/// `--broadcast-domain`: vpc1 a broadcast domain and keepalived's default
/// (multicast) configuration; else the lab's unicast subnet and peers.
fn broadcast(on: bool) -> scenario::Options {
    if !on {
        return scenario::Options::default();
    }
    scenario::Options {
        keepalived_multicast: true,
        subnet: topology::SubnetOptions::broadcast_domain(),
        ..scenario::Options::default()
    }
}

fn up(opts: &scenario::Options) -> Result<()> {
    let state = state_file();
    if state.exists() {
        anyhow::bail!("a lab is up already ({}): `cargo xtask lab down` first", state.display());
    }
    let mut lab = Lab::start_with(LabId::fixed("lab", UP_STEM), false, opts)?;
    let spec = lab.agent()?.spec().clone();
    let id = &lab.topo.id;
    // `down` finds the processes through the namespaces; the rest is for people.
    let namespaces: Vec<String> =
        ["hv", VM_A.role, VM_B.role, VM_C.role, INET].iter().map(|r| id.netns(r)).collect();
    let record = serde_json::json!({ "agent": spec, "namespaces": namespaces });
    fs::write(&state, serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("writing {}", state.display()))?;
    let (hv, vmc, pins) = (id.netns("hv"), id.netns(VM_C.role), spec.pin_dir.display().to_string());
    let inet = id.netns(INET);
    let abi = havip_common::ABI_VERSION;
    // havipctl is built next to this binary.
    let havipctl = std::env::current_exe()?.with_file_name("havipctl");
    let havipctl = havipctl.display();
    println!(
        "The lab is up: keepalived in {} and {}, havip-agent in {hv} (pins in {pins}).\n\
         Try:\n  \
         ip netns exec {vmc} ping -c3 {VIP}\n  \
         ip netns exec {inet} curl -s http://{EIP}/    # through the EIP, from outside\n  \
         ip -n {vmc} neigh show {VIP}\n  \
         bpftool map dump pinned {pins}/v{abi}/vips\n  \
         bpftool map dump pinned {pins}/v{abi}/vip_state\n  \
         bpftool map dump pinned {pins}/v{abi}/vip_stats\n  \
         bpftool map dump pinned {pins}/v{abi}/eips\n  \
         {havipctl} --socket {}/api.sock describe\n  \
         {havipctl} --socket {}/api.sock trace {VIP}    # why the VIP is where it is\n  \
         {havipctl} --socket {}/api.sock subnet describe vpc1    # unicast or broadcast-domain, its counters\n  \
         kill $(cat {}/keepalived-vm-a.pid)    # stop keepalived on vm-a: vm-b takes over\n  \
         tail -f {}/*.log\n\
         Remove it with `cargo xtask lab down`.",
        id.netns(VM_A.role),
        id.netns(VM_B.role),
        spec.dir.display(),
        spec.dir.display(),
        spec.dir.display(),
        spec.dir.display(),
        spec.dir.display(),
    );
    lab.keep()
}

fn down() -> Result<()> {
    netns::stop_processes(UP_STEM)?;
    let state = state_file();
    if state.exists() {
        match read_agent_specs(&state) {
            Ok(specs) => specs
                .iter()
                .filter(|spec| Path::new("/run/netns").join(&spec.netns).exists())
                .for_each(agent::Spec::teardown_or_unpin),
            // Whatever the record says, the lab's names are known: remove it anyway.
            Err(e) => eprintln!("havip-lab: {e:#}"),
        }
    }
    // Namespaces (hosts, guests, fabric, etcd members), pin dirs, files.
    netns::remove_lab(UP_STEM)?;
    if state.exists() {
        fs::remove_file(&state).with_context(|| format!("removing {}", state.display()))?;
    }
    println!("the lab is down");
    Ok(())
}

/// The agents a lab left standing runs: `agent` (one host) or `agents` (many).
fn read_agent_specs(state: &Path) -> Result<Vec<agent::Spec>> {
    let text = fs::read_to_string(state).with_context(|| format!("reading {}", state.display()))?;
    let record: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", state.display()))?;
    let specs = match &record["agent"] {
        serde_json::Value::Null => record["agents"].clone(),
        one => serde_json::Value::Array(vec![one.clone()]),
    };
    serde_json::from_value(specs)
        .with_context(|| format!("reading the agents' settings from {}", state.display()))
}

/// `--hosts`: the labs there are.
fn hosts(text: &str) -> Result<u8, String> {
    match text {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err("the lab has 1 host or 3".to_owned()),
    }
}

/// The demo across hosts: vm-a (hv1) fails over to vm-b (hv2) and back,
/// probed from vm-c (hv3) and from inet through the EIP on hv3's uplink;
/// the timeline says which host saw what, and when each host re-pointed.
fn run_hosts() -> Result<()> {
    let lab = multihost::Lab::start(LabId::unique("lab"), true, multihost::Options::default())?;
    lab.run(|lab| {
        let t = lab.timeline.clone();
        t.step(&format!("probing the VIP from vm-c (hv3), and the EIP {EIP} from inet (hv3's uplink)"));
        let probes =
            Probes { inside: lab.prober(PROBE_INTERVAL)?, outside: lab.prober_from_inet(PROBE_INTERVAL)? };
        let answered = |g: Guest| probes.answered(g);
        answered(VM_A)?;
        fetch(&t, lab.fetch_via_eip(), VM_A)?;

        type Act = fn(&mut Keepalived) -> Result<()>;
        let failovers: [(&str, Act, Guest); 2] = [
            ("stopping keepalived on vm-a (hv1, the holder)", Keepalived::stop, VM_B),
            ("restarting keepalived on vm-a (hv1; it preempts)", Keepalived::restart, VM_A),
        ];
        let mut rounds = Vec::new();
        for (what, act, to) in failovers {
            t.step(what);
            act(lab.keepalived(VM_A)?)?;
            lab.wait_holder_everywhere(to, FAILOVER_TIMEOUT)?;
            // Each host's data plane stamps the holder write (since_ns,
            // CLOCK_MONOTONIC, one clock for every namespace): exact, where
            // polling describe would time the poll.
            let since = multihost::HOSTS
                .iter()
                .map(|h| {
                    let st = state::vip_state(&lab.topo.id.pin_dir_of(h.id), VIP)?;
                    Ok((h.id, st.context("the VIP is in every host's maps")?.since_ns))
                })
                .collect::<Result<Vec<_>>>()?;
            answered(to)?;
            let host = multihost::host_of(to).id;
            t.step(&format!("{} ({host}) holds the VIP on every host and answers", to.name));
            fetch(&t, lab.fetch_via_eip(), to)?;
            rounds.push((format!("to {} ({host})", to.name), host, since));
        }

        let (inside, outside) = probes.finish();
        // The gateway host's: the EIP's traffic and vm-c's pass there.
        let counters = state::vip_counters(&lab.topo.id.pin_dir_of(multihost::HV3.id), VIP)?;
        let probes = [
            ProbeView { who: "vm-c (hv3)", target: "the VIP", report: &inside },
            ProbeView { who: "inet", target: "the EIP", report: &outside },
        ];
        print!("{}", report::render(&lab.timeline.lines(), &probes, PROBE_INTERVAL, &counters));
        println!("\n=== when each host's data plane re-pointed, after the claim (vip_state.since_ns) ===");
        for (what, claimed_on, since) in rounds {
            let claim = since.iter().find(|(h, _)| *h == claimed_on).map_or(0, |(_, ns)| *ns);
            let hosts: Vec<String> = since
                .iter()
                .filter(|(h, _)| *h != claimed_on)
                .map(|(h, ns)| format!("{h} +{:.0} µs", ns.saturating_sub(claim) as f64 / 1e3))
                .collect();
            println!(
                "failover {what}: claimed on {claimed_on} (in XDP, on the packet); {}",
                hosts.join(", ")
            );
        }
        t.step("removing the lab");
        Ok(())
    })
}

/// `up --hosts 3`: the lab with many hosts left standing (see [`up`]).
fn up_hosts(no_agents: bool, base: scenario::Options) -> Result<()> {
    let state = state_file();
    if state.exists() {
        anyhow::bail!("a lab is up already ({}): `cargo xtask lab down` first", state.display());
    }
    let id = LabId::fixed("lab", UP_STEM);
    let opts = multihost::Options { base, ..multihost::Options::default() };
    let lab = if no_agents {
        let mut lab = multihost::Lab::create(id, false, opts)?;
        let started = (|| {
            lab.start_services()?;
            lab.start_keepalived()
        })();
        lab.on_error(started)?;
        lab
    } else {
        multihost::Lab::start(id, false, opts)?
    };
    fs::write(&state, serde_json::to_string_pretty(&lab.record())?)
        .with_context(|| format!("writing {}", state.display()))?;
    let ns = |role: &str| lab.topo.id.netns(role);
    let (vmc, inet, fabric) = (ns(VM_C.role), ns(INET), lab.topo.fabric().name().to_owned());
    let endpoints = lab.etcd.endpoints().join(",");
    let dir = lab.dir().display().to_string();
    let havipctl = std::env::current_exe()?.with_file_name("havipctl");
    let havipctl = havipctl.display();
    println!(
        "The lab is up: hv1 (vm-a), hv2 (vm-b), hv3 (vm-c, uplink to inet) on the fabric {fabric},\n\
         etcd at {endpoints}, keepalived in vm-a and vm-b{}.\n\
         Try:\n  \
         ip netns exec {vmc} ping -c3 {VIP}\n  \
         ip netns exec {inet} curl -s http://{EIP}/    # through the EIP on hv3, from outside\n  \
         ip netns exec {fabric} etcdctl --endpoints={endpoints} endpoint status -w table\n  \
         ip netns exec {fabric} etcdctl --endpoints={endpoints} get --prefix {}\n  \
         {havipctl} --socket {dir}/hv2/api.sock describe {VIP}    # hv2's view\n  \
         {havipctl} --socket {dir}/hv1/api.sock subnet describe vpc1    # unicast or broadcast-domain, its counters\n  \
         kill $(cat {dir}/keepalived-vm-a.pid)    # stop keepalived on vm-a: vm-b (hv2) takes over\n  \
         tail -f {dir}/*.log {dir}/*/*.log\n\
         Remove it with `cargo xtask lab down`.",
        if no_agents { " (no agents: the VIP does not move)" } else { ", an agent on each host" },
        multihost::PREFIX,
    );
    lab.keep()
}
