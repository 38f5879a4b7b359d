//! `havip-lab run|up|down`: the lab demo, and a lab left standing for hands-on use.

use std::{fs, path::Path, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use havip_common::VipCounter;
use havip_lab::{
    agent, garp, interrupt,
    netns::{self, LabId, RUN_DIR},
    probe::Responder,
    report::{self, ProbeView},
    scenario::{Lab, FAILOVER_TIMEOUT},
    state,
    topology::{Guest, EIP, GUEST_IF, INET, VIP, VM_A, VM_B, VM_C},
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
    Run,
    /// Create the lab, start keepalived and the agent, and leave it standing.
    Up,
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
        Cmd::Run => run(),
        Cmd::Up => up(),
        Cmd::Down => down(),
        Cmd::Serve { netns, name } => serve(&netns, &name),
    }
}

fn run() -> Result<()> {
    let mut lab = Lab::start(LabId::unique("lab"), true)?;
    let t = lab.timeline.clone();
    t.step(&format!("probing the VIP from vm-c, and the EIP {EIP} from inet"));
    let prober = lab.prober(PROBE_INTERVAL)?;
    let outside = lab.prober_from_inet(PROBE_INTERVAL)?;
    let answered = |g: Guest| -> Result<()> {
        prober.wait_answered_by(g.name, 1, FAILOVER_TIMEOUT)?;
        outside.wait_answered_by(g.name, 1, FAILOVER_TIMEOUT)
    };
    answered(VM_A)?;
    fetch(&lab, VM_A)?;

    t.step("stopping keepalived on vm-a (the holder)");
    lab.keepalived(VM_A)?.stop()?;
    lab.wait_holder(VM_B, FAILOVER_TIMEOUT)?;
    answered(VM_B)?;
    t.step("vm-b holds the VIP and answers");
    fetch(&lab, VM_B)?;

    t.step("restarting keepalived on vm-a (it preempts)");
    lab.keepalived(VM_A)?.restart()?;
    lab.wait_holder(VM_A, FAILOVER_TIMEOUT)?;
    answered(VM_A)?;
    t.step("vm-a holds the VIP again and answers");
    fetch(&lab, VM_A)?;

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

    let (inside, outside) = (prober.finish(), outside.finish());
    let counters = state::vip_counters(&pins, VIP)?;
    let probes = [
        ProbeView { who: "vm-c", target: "the VIP", report: &inside },
        ProbeView { who: "inet", target: "the EIP", report: &outside },
    ];
    print!("{}", report::render(&lab.timeline.lines(), &probes, PROBE_INTERVAL, &counters));
    t.step("removing the lab");
    Ok(())
}

/// An HTTP GET from outside through the EIP, which `g` must serve.
fn fetch(lab: &Lab, g: Guest) -> Result<()> {
    let who = lab.fetch_via_eip()?;
    lab.timeline.step(&format!("inet: GET http://{EIP}/ -> served by {who}"));
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

fn up() -> Result<()> {
    let state = state_file();
    if state.exists() {
        anyhow::bail!("a lab is up already ({}): `cargo xtask lab down` first", state.display());
    }
    let mut lab = Lab::start(LabId::fixed("lab", UP_STEM), false)?;
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
         kill $(cat {}/keepalived-vm-a.pid)    # stop keepalived on vm-a: vm-b takes over\n  \
         tail -f {}/*.log\n\
         Remove it with `cargo xtask lab down`.",
        id.netns(VM_A.role),
        id.netns(VM_B.role),
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
        match read_agent_spec(&state) {
            Ok(spec) if Path::new("/run/netns").join(&spec.netns).exists() => spec.teardown_or_unpin(),
            Ok(_) => {}
            // Whatever the record says, the lab's names are known: remove it anyway.
            Err(e) => eprintln!("havip-lab: {e:#}"),
        }
    }
    netns::remove_lab(UP_STEM)?;
    if state.exists() {
        fs::remove_file(&state).with_context(|| format!("removing {}", state.display()))?;
    }
    println!("the lab is down");
    Ok(())
}

fn read_agent_spec(state: &Path) -> Result<agent::Spec> {
    let text = fs::read_to_string(state).with_context(|| format!("reading {}", state.display()))?;
    let record: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", state.display()))?;
    serde_json::from_value(record["agent"].clone())
        .with_context(|| format!("reading the agent's settings from {}", state.display()))
}
