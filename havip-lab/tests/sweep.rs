//! The sweeper removes what a killed run left behind (its namespaces, pin
//! dir and run dir, named after a pid that is gone) and leaves a live run's
//! alone. Needs root.

use std::{fs, path::Path, process::Command};

use anyhow::Result;
use havip_lab::netns::{sweep_stale, LabId, Netns, Scratch};

/// A pid that no longer runs: a child that has exited and been reaped.
fn dead_pid() -> Result<u32> {
    let mut child = Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

fn exists_netns(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// What a run creates: namespaces with and without dashes in their role, a
/// pin dir and a run dir. The namespace handles are kept (not deleted on drop).
fn leave_behind(id: &LabId) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for role in ["hv", "vm-a", "xt"] {
        let mut ns = Netns::create(&id.netns(role))?;
        ns.keep();
        names.push(ns.name().to_owned());
    }
    fs::create_dir_all(id.pin_dir())?;
    // A host's own pin dir, as in the lab with many hosts.
    fs::create_dir_all(id.pin_dir_of("hv2"))?;
    fs::create_dir_all(id.run_dir())?;
    Ok(names)
}

#[test]
fn a_dead_runs_leftovers_are_swept_and_a_live_runs_are_not() -> Result<()> {
    let dead = LabId { purpose: "test", stem: format!("{}-dead", dead_pid()?) };
    let dead_names = leave_behind(&dead)?;
    // The live run: this process's, removed by `live` when the test ends.
    let mut live = Scratch::new("test")?;
    let live_ns = live.netns("hv")?;
    fs::create_dir_all(live.pin_dir())?;
    fs::create_dir_all(live.id.run_dir())?;

    sweep_stale()?;

    for ns in &dead_names {
        assert!(!exists_netns(ns), "stale namespace {ns} left");
    }
    assert!(!dead.pin_dir().exists(), "stale pin dir {} left", dead.pin_dir().display());
    assert!(!dead.pin_dir_of("hv2").exists(), "stale host pin dir {} left", dead.pin_dir_of("hv2").display());
    assert!(!dead.run_dir().exists(), "stale run dir {} left", dead.run_dir().display());
    assert!(exists_netns(&live_ns), "the live namespace {live_ns} was swept");
    assert!(live.pin_dir().exists() && live.id.run_dir().exists(), "the live dirs were swept");

    let (pin, run) = (live.pin_dir(), live.id.run_dir());
    drop(live);
    assert!(!exists_netns(&live_ns) && !pin.exists() && !run.exists(), "Scratch leaves nothing");
    Ok(())
}
