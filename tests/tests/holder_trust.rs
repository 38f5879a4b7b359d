//! Issue 10: when may havip trust who holds the VIP? A claim is not always
//! the truth (a standby's own ARP from the VIP, a backup that stepped back
//! without a word, an address added with no announcement, two masters), so
//! the agent verifies the holder with ARP probes from the host side and
//! settles contests by policy. Each test drives real keepalived (or a guest
//! by hand) into one of those cases and checks what a client in vm-c sees.
//!
//! The views and events of the feature are read as JSON by field name
//! (`serde_json::Value`), so this file builds before havip-api has them.

use std::{
    net::Ipv4Addr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

mod control_support;

use anyhow::{ensure, Context, Result};
use control_support::{metrics, Ctl};
use havip_common::VipCounter;
use havip_lab::{
    arping, cmd,
    fault::VrrpBlackhole,
    frames, garp, keepalived,
    netns::{self, LabId},
    scenario::{Lab, Options, FAILOVER_TIMEOUT, PRIORITY_A, PRIORITY_B},
    state,
    topology::{Guest, GUEST_IF, VIP, VM_A, VM_B, VM_C},
    wait,
};
use serde_json::Value;

const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// How long the agent may take to show what it saw.
const OBSERVE: Duration = Duration::from_secs(5);
/// The agent config that turns holder verification off.
const VERIFICATION_OFF: &str = "[verification]\nenabled = false\n";
/// keepalived without its second burst of gratuitous ARPs 5 s after taking
/// over: a master that has held for a while says nothing more, and these
/// tests begin right after vm-a took the VIP.
const QUIET_MASTER: keepalived::Options = keepalived::Options { use_vmac: false, garp_master_delay: Some(0) };

// ---------------------------------------------------------------- helpers

/// A lab whose agent runs with `opts`, keepalived in both members, vm-a
/// holding. [`VERIFICATION_OFF`] also works with an agent that predates the
/// `[verification]` section: such an agent verifies nothing, which is what
/// the section asks for.
fn start(opts: &Options) -> Result<Lab> {
    let mut lab = Lab::create(LabId::unique("test"), true)?;
    let started = (|| {
        start_agent(&mut lab, opts)?;
        lab.start_responders()?;
        lab.start_keepalived_with(opts.keepalived)?;
        lab.wait_holder(VM_A, FAILOVER_TIMEOUT).map(drop)
    })();
    lab.on_error(started)?;
    Ok(lab)
}

fn start_agent(lab: &mut Lab, opts: &Options) -> Result<()> {
    match lab.start_agent_with(&opts.havip_settings, &opts.agent_sections) {
        Err(e)
            if opts.agent_sections == VERIFICATION_OFF
                && format!("{e:#}").contains("unknown field `verification`") =>
        {
            eprintln!(
                "this agent has no [verification] section, so it verifies nothing: starting it without"
            );
            lab.start_agent_with(&opts.havip_settings, "")
        }
        r => r,
    }
}

fn verification_off() -> Options {
    Options { agent_sections: VERIFICATION_OFF.to_owned(), keepalived: QUIET_MASTER, ..Options::default() }
}

fn quiet_masters() -> Options {
    Options { keepalived: QUIET_MASTER, ..Options::default() }
}

/// `havipctl describe VIP --json` as plain JSON.
fn describe(ctl: &Ctl, vip: Ipv4Addr) -> Result<Value> {
    let text = ctl.ok(&["--json", "describe", &vip.to_string()])?;
    serde_json::from_str(&text).context("reading the JSON of havipctl describe")
}

/// A per-VIP counter of `describe`, by name; a counter it does not show is 0.
fn counter(view: &Value, name: &str) -> u64 {
    view["counters"][name].as_u64().unwrap_or(0)
}

/// Every event so far (`havipctl events --json`), one JSON object each.
fn events(ctl: &Ctl) -> Result<Vec<Value>> {
    let text = ctl.ok(&["--json", "events"])?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("event line {l:?}"))).collect()
}

/// Waits for an event of `kind` about the lab's VIP; returns it.
fn wait_event(ctl: &Ctl, kind: &str, timeout: Duration) -> Result<Value> {
    wait::until(&format!("a {kind} event for {VIP}"), timeout, || {
        let all = events(ctl)?;
        Ok(all.into_iter().find(|e| e["kind"] == kind && e["vip"] == VIP.to_string()))
    })
}

/// The data plane's holder, by guest name ("none" without one).
fn holder_name(lab: &Lab) -> Result<&'static str> {
    Ok(lab.holder()?.map_or("none", |(g, _)| g.name))
}

/// Checks for `window` that `g` holds the VIP all along: a negative check
/// needs an observation window.
fn holds_throughout(lab: &Lab, g: Guest, window: Duration) -> Result<()> {
    let end = Instant::now() + window;
    while Instant::now() < end {
        let h = holder_name(lab)?;
        ensure!(h == g.name, "the VIP moved to {h} while {} should hold it", g.name);
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Sleeps until `at`: only for a fault schedule (when to lift a rule),
/// never to let a condition come true.
fn sleep_until(at: Instant) {
    thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// `ip addr ...` in guest `g`.
fn guest_ip(lab: &Lab, g: Guest, args: &[&str]) -> Result<()> {
    let ns = lab.topo.ns(g);
    cmd::ip(&[&["-n", ns.as_str()], args].concat()).map(drop)
}

// ------------------------------------------- 1. one-way VRRP loss

/// Drops VRRP toward both members, lifts it toward the backup after 1.5 s
/// and toward vm-a 1 s later: the backup promoted, claimed, stepped back and
/// went quiet; vm-a was master all along and never re-announces. Returns
/// when the last rule is lifted, on the lab's clock and as an instant.
fn one_way_vrrp_loss(lab: &Lab) -> Result<(Duration, Instant)> {
    let hv = lab.topo.hv().to_owned();
    let t0 = Instant::now();
    let to_b = VrrpBlackhole::add(&hv, VM_B.ip)?;
    let to_a = VrrpBlackhole::add(&hv, VM_A.ip)?;
    lab.wait_holder(VM_B, Duration::from_millis(1500)).context("the backup promoting and claiming")?;
    sleep_until(t0 + Duration::from_millis(1500));
    to_b.lift()?;
    sleep_until(t0 + Duration::from_millis(2500));
    let lifted = (lab.timeline.now(), Instant::now());
    to_a.lift()?;
    Ok(lifted)
}

#[test]
fn verification_returns_the_vip_after_one_way_vrrp_loss() -> Result<()> {
    start(&quiet_masters())?.run(|lab| {
        let ctl = Ctl::of(lab)?;
        let prober = lab.prober(PROBE_INTERVAL)?;
        prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;
        one_way_vrrp_loss(lab)?;
        prober.wait_answered_by(VM_A.name, 1, Duration::from_secs(2)).with_context(|| {
            format!("vm-c reaching vm-a again (holder now {})", holder_name(lab).unwrap_or("?"))
        })?;
        let ev = wait_event(&ctl, "holder_corrected", OBSERVE)?;
        let detail = ev["detail"].as_str().unwrap_or_default();
        ensure!(!detail.trim().is_empty(), "holder_corrected does not say why: {ev}");
        eprintln!("holder_corrected: {detail}");
        Ok(())
    })
}

/// The other half, and the proof of the problem: without verification the
/// data plane keeps the backup that stepped back, and the VIP stays dark.
#[test]
fn without_verification_one_way_vrrp_loss_leaves_the_vip_dark() -> Result<()> {
    start(&verification_off())?.run(|lab| {
        let prober = lab.prober(PROBE_INTERVAL)?;
        prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;
        let (lifted, lifted_at) = one_way_vrrp_loss(lab)?;
        // The observation window: the last second of the three after the lift.
        sleep_until(lifted_at + Duration::from_secs(3));
        let holder = holder_name(lab)?;
        let report = prober.finish().since(lifted + Duration::from_secs(2));
        ensure!(report.sent() >= 50, "only {} probes sent in the last second", report.sent());
        ensure!(
            report.lost() == report.sent(),
            "3 s after the rules were lifted the VIP answered again: {:?}",
            report.spans()
        );
        ensure!(holder == VM_B.name, "the data plane's holder is {holder}, not the backup that stepped back");
        Ok(())
    })
}

// ------------------------------------------- 2. standby with the VIP on lo

#[test]
fn a_standby_with_the_vip_on_lo_does_not_take_it() -> Result<()> {
    // A quiet master: its delayed gratuitous ARPs would hide a wrong move.
    start(&quiet_masters())?.run(|lab| {
        let ctl = Ctl::of(lab)?;
        let prober = lab.prober(PROBE_INTERVAL)?;
        prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;
        let pins = lab.pin_dir();
        let lookups_before = counter(&describe(&ctl, VIP)?, "neighbour_lookups");
        let rejected_before = state::vip_counters(&pins, VIP)?.get(VipCounter::ClaimsRejected);

        // A standby that serves the VIP locally (a DSR real server, say),
        // with Linux's default ARP behaviour.
        let vmb = lab.topo.ns(VM_B);
        guest_ip(lab, VM_B, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        for key in ["all", GUEST_IF] {
            netns::sysctl(&vmb, &format!("ipv4/conf/{key}/arp_announce"), "0")?;
            netns::sysctl(&vmb, &format!("ipv4/conf/{key}/arp_ignore"), "0")?;
        }
        // Its ARP request for vm-c has sender IP = the VIP. Nobody answers
        // the ping (vm-c's reply goes to the VIP's holder): only the ARP counts.
        let out = Command::new("ip")
            .args(["netns", "exec", &vmb, "ping", "-I", &VIP.to_string(), "-c", "1", "-W", "1"])
            .arg(VM_C.ip.to_string())
            .output()
            .context("running ping in vm-b")?;
        eprintln!("ping from the VIP in vm-b: {}", out.status);

        holds_throughout(lab, VM_A, Duration::from_millis(500))?;
        prober.wait_answered_by(VM_A.name, 5, OBSERVE).context("vm-c reaching the VIP on vm-a")?;
        let rejected = state::vip_counters(&pins, VIP)?.get(VipCounter::ClaimsRejected);
        ensure!(rejected == rejected_before, "claims_rejected grew {rejected_before} -> {rejected}");
        let rejections: Vec<Value> =
            events(&ctl)?.into_iter().filter(|e| e["kind"] == "claim_rejected").collect();
        ensure!(rejections.is_empty(), "claim_rejected events: {rejections:?}");
        wait::until("neighbour_lookups to grow", OBSERVE, || {
            Ok((counter(&describe(&ctl, VIP)?, "neighbour_lookups") > lookups_before).then_some(()))
        })?;
        Ok(())
    })
}

// ------------------------------------------- 3. RFC 5227 probes

/// `arping -D -c 2 -w 2 -I eth0 VIP` in `g`: the MAC that answered, if any.
fn dad(lab: &Lab, g: Guest) -> Result<Option<[u8; 6]>> {
    arping::probe(&lab.topo.ns(g), GUEST_IF, g.mac(), VIP, 2, Duration::from_secs(2))
}

#[test]
fn rfc5227_probes_see_the_vip_in_use_only_elsewhere() -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        // No holder yet: the address is free for whoever asks.
        ensure!(lab.holder()?.is_none(), "a holder before keepalived ran");
        let free = dad(lab, VM_A)?;
        ensure!(free.is_none(), "a probe for a VIP with no holder was answered by {free:02x?}");

        lab.start_keepalived()?;
        lab.wait_holder(VM_A, FAILOVER_TIMEOUT)?;
        let answered = dad(lab, VM_B)?;
        ensure!(answered.is_some(), "vm-b's probe was not answered while vm-a holds the VIP");
        eprintln!("vm-b's probe answered by {:02x?}", answered.unwrap_or_default());
        let own = dad(lab, VM_A)?;
        ensure!(own.is_none(), "the holder's own probe was answered by {own:02x?}: it would see a conflict");
        Ok(())
    })
}

// ------------------------------------------- 4. an address with no GARP

#[test]
fn an_address_added_without_garp_is_found_in_the_first_round() -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        lab.start_responders()?;
        ensure!(lab.holder()?.is_none(), "a holder with no keepalived");
        let prober = lab.prober(PROBE_INTERVAL)?;
        let vma = lab.topo.ns(VM_A);
        netns::sysctl(&vma, &format!("ipv4/conf/{GUEST_IF}/arp_notify"), "0")?;
        guest_ip(lab, VM_A, &["addr", "add", &format!("{VIP}/24"), "dev", GUEST_IF])?;
        prober.wait_answered_by(VM_A.name, 1, Duration::from_secs(1)).with_context(|| {
            format!("vm-c reaching the VIP on vm-a (holder {})", holder_name(lab).unwrap_or("?"))
        })?;
        Ok(())
    })
}

// ------------------------------------------- 5. keepalived use_vmac

#[test]
fn keepalived_with_use_vmac_fails_over_and_back() -> Result<()> {
    let opts = Options {
        keepalived: keepalived::Options { use_vmac: true, ..keepalived::Options::default() },
        ..Options::default()
    };
    start(&opts)?.run(|lab| {
        let prober = lab.prober(PROBE_INTERVAL)?;
        prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;
        lab.keepalived(VM_A)?.stop()?;
        lab.wait_holder(VM_B, FAILOVER_TIMEOUT)?;
        prober.wait_answered_by(VM_B.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-b")?;
        lab.keepalived(VM_A)?.restart()?;
        lab.wait_holder(VM_A, FAILOVER_TIMEOUT)?;
        prober
            .wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT)
            .context("vm-c reaching vm-a after preempt")?;
        Ok(())
    })
}

// ------------------------------------------- 6. two masters

/// The `contested` of a view as (vNIC, priority) pairs, sorted.
fn contested(view: &Value) -> Vec<(String, Option<u64>)> {
    let mut m: Vec<(String, Option<u64>)> = view["contested"]["members"]
        .as_array()
        .map(|a| {
            a.iter().map(|m| (m["vnic"].as_str().unwrap_or("").to_owned(), m["priority"].as_u64())).collect()
        })
        .unwrap_or_default();
    m.sort();
    m
}

#[test]
fn two_masters_are_contested_and_vrrp_priority_settles_on_vm_a() -> Result<()> {
    let opts = Options { havip_settings: "split_brain = \"vrrp-priority\"".to_owned(), ..Options::default() };
    start(&opts)?.run(|lab| {
        let ctl = Ctl::of(lab)?;
        let prober = lab.prober(PROBE_INTERVAL)?;
        prober.wait_answered_by(VM_A.name, 1, FAILOVER_TIMEOUT).context("vm-c reaching the VIP on vm-a")?;
        let hv = lab.topo.hv().to_owned();
        let _to_a = VrrpBlackhole::add(&hv, VM_A.ip)?;
        let _to_b = VrrpBlackhole::add(&hv, VM_B.ip)?;
        let want = vec![
            (VM_A.vnic.to_owned(), Some(u64::from(PRIORITY_A))),
            (VM_B.vnic.to_owned(), Some(u64::from(PRIORITY_B))),
        ];
        let view = wait::until("describe to show the HAVIP contested by both masters", OBSERVE, || {
            let v = describe(&ctl, VIP)?;
            Ok((contested(&v) == want).then_some(v))
        })
        .with_context(|| {
            format!("last describe: {}", describe(&ctl, VIP).map(|v| v.to_string()).unwrap_or_default())
        })?;
        ensure!(view["contested"]["since"].is_string(), "contested has no since: {}", view["contested"]);
        eprintln!("contested: {}; vrrp: {}", view["contested"], view["vrrp"]);
        lab.wait_holder(VM_A, OBSERVE).context("vrrp-priority putting the VIP on vm-a")?;
        holds_throughout(lab, VM_A, Duration::from_secs(2))?;
        prober.wait_answered_by(VM_A.name, 5, OBSERVE).context("vm-c reaching the VIP on vm-a")?;
        wait_event(&ctl, "contested", OBSERVE)?;
        Ok(())
    })
}

// ------------------------------------------- 7. 802.1Q tags

/// `havip_tagged_claims_total` from the agent's metrics (0 until it shows).
fn tagged_claims(lab: &Lab) -> Result<f64> {
    let all = metrics(lab)?;
    Ok(all.iter().find(|(n, _)| n.starts_with("havip_tagged_claims_total")).map_or(0.0, |(_, v)| *v))
}

/// A gratuitous ARP for the VIP from `g`, in an 802.1Q tag with `tci`.
fn send_tagged_garp(lab: &Lab, g: Guest, tci: u16) -> Result<()> {
    let frame = frames::vlan_tagged(&frames::garp(g.mac(), VIP.octets()), tci);
    garp::send_frame(&lab.topo.ns(g), GUEST_IF, frame)
}

#[test]
fn a_vid_0_priority_tagged_garp_moves_the_holder() -> Result<()> {
    // Without verification nothing moves the VIP back from vm-b, which does
    // not really hold it: the claim alone is what is under test.
    start(&verification_off())?.run(|lab| {
        send_tagged_garp(lab, VM_B, 0)?;
        lab.wait_holder(VM_B, OBSERVE).context("the priority-tagged claim moving the holder to vm-b")?;
        Ok(())
    })
}

/// A vNIC carries untagged frames: a claim in a real VLAN is not one for
/// this subnet; it is counted, and the holder stays.
#[test]
fn a_garp_in_another_vlan_is_counted_not_followed() -> Result<()> {
    start(&verification_off())?.run(|lab| {
        let before = tagged_claims(lab)?;
        send_tagged_garp(lab, VM_B, 5)?;
        wait::until("havip_tagged_claims_total to grow", OBSERVE, || {
            Ok((tagged_claims(lab)? > before).then_some(()))
        })?;
        holds_throughout(lab, VM_A, Duration::from_millis(300))
    })
}
