//! The lab with many hosts, up to the agents (which need the etcd store and
//! the underlay of issue 9): three hosts on the fabric, a guest on each,
//! three etcd members. Guests reach each other across the underlay, VRRP
//! works between hosts, the VIP does not move without havip, etcd elects a
//! new leader when its leader dies, a host cut from etcd reaches no member
//! (and nothing else is cut), a host taken down is gone from the underlay,
//! and nothing is left after the lab goes.
//! Needs root.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use havip_lab::{
    multihost::{ping, Lab, Options, HV1, HV2},
    netns::{sweep_stale, LabId},
    topology::{GUEST_IF, VIP, VM_A, VM_B, VM_C},
    wait,
};

/// A killed leader is replaced in 1–1.5 s here (FIELD-NOTES.md); a busy box gets slack.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(6);
/// keepalived's first master election: 3 × 0.1 s adverts plus skew.
const VRRP_TIMEOUT: Duration = Duration::from_secs(5);

fn pids_in(ns: &str) -> Result<Vec<u32>> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

fn has_vip(ns: &str) -> Result<bool> {
    let out = Command::new("ip").args(["-n", ns, "-4", "-o", "addr", "show", "dev", GUEST_IF]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP}/")))
}

#[test]
fn three_hosts_route_guests_over_the_underlay_and_etcd_survives_its_leader() -> Result<()> {
    let started = Instant::now();
    let id = LabId::unique("test");
    let stem = id.stem.clone();
    let mut lab = Lab::create(id, true, Options::default())?;
    let (vma, vmb, vmc) = (lab.topo.ns(VM_A), lab.topo.ns(VM_B), lab.topo.ns(VM_C));
    let mut pids = Vec::new();
    for i in 0..lab.etcd.len() {
        pids.extend(pids_in(lab.etcd.member_netns(i))?);
    }
    ensure!(pids.len() == 3, "one etcd process per member namespace: {pids:?}");

    let body = |lab: &mut Lab| -> Result<()> {
        // Routing: vm-a (hv1) reaches vm-b (hv2) and vm-c (hv3) across the underlay.
        for (ns, to) in [(&vma, VM_B.ip), (&vma, VM_C.ip), (&vmc, VM_B.ip)] {
            ensure!(ping(ns, to)?, "{ns} cannot ping {to} across the underlay");
        }

        // VRRP unicast between hosts: exactly one master, vm-a, with the VIP.
        lab.start_keepalived()?;
        wait::until("vm-a to hold the VIP (keepalived master)", VRRP_TIMEOUT, || {
            Ok(has_vip(&vma)?.then_some(()))
        })?;
        // Without havip nothing routes the VIP: vm-c cannot reach it.
        ensure!(!ping(&vmc, VIP)?, "vm-c reached the VIP without havip");
        // A second later (the failed ping), well past vm-b's master-down
        // interval: had VRRP not crossed the underlay, vm-b would hold it too.
        ensure!(!has_vip(&vmb)?, "vm-b holds the VIP too: VRRP does not cross the underlay");
        ensure!(has_vip(&vma)?, "vm-a lost the VIP");

        // etcd: a leader; killed, another is elected in time; the old one rejoins.
        let leader = lab.etcd.leader()?;
        let killed = Instant::now();
        lab.etcd.kill(leader)?;
        let next = lab.etcd.wait_new_leader(leader, ELECTION_TIMEOUT)?;
        eprintln!("etcd: e{} killed, e{} leads after {:?}", leader + 1, next + 1, killed.elapsed());
        lab.etcd.start_member(leader)?;
        lab.etcd.wait_healthy(ELECTION_TIMEOUT).context("the killed member rejoining")?;

        // Cut from etcd: hv1 no longer reaches any member; its guest still
        // reaches the others, and hv2 still reaches etcd. Healed: back.
        let (hv1, hv2) = (lab.topo.host_ns(HV1).to_owned(), lab.topo.host_ns(HV2).to_owned());
        let e1 = lab.etcd.addr(0);
        lab.cut_from_etcd(HV1)?;
        ensure!(!ping(&hv1, e1)?, "hv1 reaches etcd while cut off");
        ensure!(ping(&hv2, e1)? && ping(&vma, VM_B.ip)?, "cutting hv1 from etcd cut more");
        lab.heal(HV1)?;
        ensure!(ping(&hv1, e1)?, "hv1 does not reach etcd after the heal");

        // Host down: hv2 gone from the underlay, vm-b with it; back up, reachable again.
        lab.host_down(HV2)?;
        ensure!(!ping(&vma, VM_B.ip)? && !ping(&hv1, HV2.underlay())?, "hv2 answers while down");
        lab.host_up(HV2)?;
        wait::until("vm-b to be reachable again", ELECTION_TIMEOUT, || {
            Ok(ping(&vma, VM_B.ip)?.then_some(()))
        })?;
        Ok(())
    };
    lab = {
        let result = body(&mut lab);
        lab.on_error(result)?;
        lab
    };
    let mut namespaces = lab.topo.namespaces();
    namespaces.extend((0..lab.etcd.len()).map(|i| lab.etcd.member_netns(i).to_owned()));
    let dir = lab.dir().to_owned();
    drop(lab);

    let listed = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    for ns in &namespaces {
        ensure!(!listed.lines().any(|l| l.split_whitespace().next() == Some(ns)), "{ns} left after drop");
    }
    ensure!(!listed.contains(&stem), "a namespace of the lab is left: {listed}");
    ensure!(!dir.exists(), "{} left after drop", dir.display());
    for pid in pids {
        ensure!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "etcd (pid {pid}) outlived the lab");
    }
    sweep_stale()?;
    let listed = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    ensure!(!listed.contains(&stem), "the sweeper found leftovers of the lab: {listed}");
    eprintln!("the lab came and went in {:?}", started.elapsed());
    Ok(())
}
