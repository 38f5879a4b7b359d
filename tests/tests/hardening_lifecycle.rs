//! Hardening of the agent's life (issue 12): one agent per data plane, no
//! storage fault or guest stops it, every signal and partial start has a
//! defined outcome. Each test runs the real agent binary in a lab of its own.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use havip_agent::{
    datapath::bpffs::PinLock,
    store::{redb::RedbStore, Store},
};
use havip_lab::{
    agent::Spec,
    garp,
    netns::LabId,
    scenario::Lab,
    state,
    topology::{GUEST_IF, VIP, VM_A, VM_B, VM_C},
    wait,
};

/// No verification: the guests here answer no probes, and holders must
/// move only by the claims the tests send.
const QUIET: &str = "[verification]\nenabled = false";

fn lab() -> Result<Lab> {
    let mut lab = Lab::create(LabId::unique("test"), true)?;
    let started = lab.start_agent_with("", QUIET);
    lab.on_error(started)?;
    Ok(lab)
}

/// Runs `havip-agent ARGS` (in the lab's hv namespace, on its pins) to its
/// end, killed after `limit`.
fn agent_cmd(spec: &Spec, args: &[&str], limit: Duration) -> Result<Output> {
    let mut cmd = Command::new(&spec.bin);
    cmd.args(args).arg("--netns").arg(&spec.netns).arg("--pin-dir").arg(&spec.pin_dir);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "{cmd:?} still ran after {limit:?}: {}",
                String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The running agent's pid: the holder of its pin directory.
fn agent_pid(spec: &Spec) -> Result<i32> {
    let pid = PinLock::holder(&spec.pin_dir).context("no process holds the pin directory")?;
    Ok(pid as i32)
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn a_second_agent_and_teardown_are_refused_while_an_agent_owns_the_pins() -> Result<()> {
    lab()?.run(|lab| {
        garp::send(&lab.topo.ns(VM_A), GUEST_IF, VIP, VM_A.mac())?;
        let spec = lab.agent()?.spec().clone();
        let owner = agent_pid(&spec)?;
        let held = wait::until("vm-a to hold the VIP", Duration::from_secs(5), || {
            Ok(state::vip_state(&spec.pin_dir, VIP)?.filter(|s| s.holder_ifindex != 0))
        })?;

        // Another agent with an empty store, on the same pins.
        let other = spec.dir.join("second.toml");
        let other_store = spec.dir.join("second").join("state.redb");
        fs::write(
            &other,
            format!(
                "[agent]\nstore = \"{}\"\napi_socket = \"{}\"\n",
                other_store.display(),
                spec.dir.join("second.sock").display()
            ),
        )?;
        let out = agent_cmd(&spec, &["run", "--config", other.to_str().unwrap()], Duration::from_secs(10))?;
        let said = text(&out);
        ensure!(!out.status.success(), "a second agent started on the same pins: {said}");
        let want = format!("another havip-agent (pid {owner}) owns {}", spec.pin_dir.display());
        ensure!(said.contains(&want), "the refusal does not say {want:?}: {said}");
        ensure!(!other_store.exists(), "the refused agent made a store");

        let out = agent_cmd(&spec, &["teardown"], Duration::from_secs(10))?;
        let said = text(&out);
        ensure!(!out.status.success(), "teardown under a running agent succeeded: {said}");
        ensure!(said.contains(&want) && said.contains("--force"), "teardown's refusal: {said}");

        let now = state::vip_state(&spec.pin_dir, VIP)?.context("the VIP left the maps")?;
        ensure!(
            (now.holder_ifindex, now.epoch) == (held.holder_ifindex, held.epoch),
            "the data plane changed: {held:?} -> {now:?}"
        );
        ensure!(alive(owner), "the first agent died");
        Ok(())
    })
}

#[test]
fn sighup_is_logged_and_ignored_and_a_late_failing_config_makes_nothing() -> Result<()> {
    lab()?.run(|lab| {
        let spec = lab.agent()?.spec().clone();
        let pid = agent_pid(&spec)?;
        let sent = Command::new("kill").args(["-HUP", &pid.to_string()]).status()?;
        ensure!(sent.success(), "kill -HUP {pid}");
        let log = spec.dir.join("agent.log");
        wait::until("the agent to log SIGHUP", Duration::from_secs(5), || {
            Ok(fs::read_to_string(&log)?.contains("SIGHUP: ignored").then_some(()))
        })?;
        std::thread::sleep(Duration::from_millis(300));
        ensure!(alive(pid), "SIGHUP killed the agent");
        ensure!(spec.api_socket().exists(), "the API socket is gone");
        lab.agent()?.stop().context("SIGTERM after SIGHUP still stops cleanly")?;

        // A metrics address no interface has: found before anything is made.
        let late = spec.dir.join("late.toml");
        let store = spec.dir.join("late").join("state.redb");
        fs::write(
            &late,
            format!(
                "[agent]\nstore = \"{}\"\napi_socket = \"{}\"\nmetrics = \"192.0.2.1:9477\"\n",
                store.display(),
                spec.dir.join("late.sock").display()
            ),
        )?;
        let out = agent_cmd(&spec, &["run", "--config", late.to_str().unwrap()], Duration::from_secs(10))?;
        ensure!(!out.status.success(), "the agent started with an unbindable metrics address");
        ensure!(
            text(&out).contains("agent.metrics"),
            "the failure does not name the setting: {}",
            text(&out)
        );
        ensure!(!store.parent().unwrap().exists(), "a config that failed made the state directory");
        Ok(())
    })
}

/// errno of a full filesystem.
const ENOSPC: i32 = 28;

/// A tmpfs mounted on `dir` (in the lab's run dir), unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: PathBuf, size: &str) -> Result<Self> {
        fs::create_dir_all(&dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .output()?;
        ensure!(out.status.success(), "mounting a tmpfs on {}: {}", dir.display(), text(&out));
        Ok(Self(dir))
    }

    fn fill(&self) -> Result<PathBuf> {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = fs::File::create(&filler)?;
        let block = vec![0x5au8; 4096];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(ENOSPC) => return Ok(filler),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazily: the agent may still hold the file.
        match Command::new("umount").arg("-l").arg(&self.0).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("cleanup: unmounting {}: {}", self.0.display(), text(&out)),
            Err(e) => eprintln!("cleanup: unmounting {}: {e}", self.0.display()),
        }
        let _ = fs::remove_dir(&self.0);
    }
}

fn holder_vnic(store: &Path) -> Result<(Option<String>, u64)> {
    let o = RedbStore::open(store)?.observed();
    let o = o.get(&VIP).cloned().unwrap_or_default();
    Ok((o.holder.map(|h| h.vnic), o.epoch))
}

#[test]
fn a_full_disk_and_a_spoofer_never_stop_the_agent_and_observations_land_later() -> Result<()> {
    let mut lab = Lab::create(LabId::unique("test"), true)?;
    let dir = lab.topo.id.run_dir();
    // The store lives on a small filesystem of its own: a symlink from where the lab puts it.
    let fs_ = SmallFs::mount(dir.join("storefs"), "4m")?;
    std::os::unix::fs::symlink(fs_.0.join("state.redb"), dir.join("state.redb"))?;
    let started = lab.start_agent_with("", QUIET);
    lab.on_error(started)?;
    lab.run(move |lab| {
        // Unmounted when this ends, before the lab removes its run dir.
        let fs_ = fs_;
        let spec = lab.agent()?.spec().clone();
        let pid = agent_pid(&spec)?;
        let (a, b, c) = (lab.topo.ns(VM_A), lab.topo.ns(VM_B), lab.topo.ns(VM_C));
        garp::send(&a, GUEST_IF, VIP, VM_A.mac())?;
        let pins = spec.pin_dir.clone();
        wait::until("vm-a to hold the VIP", Duration::from_secs(5), || {
            Ok(state::vip_state(&pins, VIP)?.filter(|s| s.holder_ifindex != 0))
        })?;

        let filler = fs_.fill()?;
        // A spoofer (vm-c is no member) and real failovers, on a full disk.
        let mut epoch = 0;
        for round in 0..3 {
            garp::send(&c, GUEST_IF, VIP, VM_C.mac())?;
            let (ns, g) = if round % 2 == 0 { (&b, VM_B) } else { (&a, VM_A) };
            garp::send(ns, GUEST_IF, VIP, g.mac())?;
            epoch = wait::until("the claim to be honoured", Duration::from_secs(5), || {
                let st = state::vip_state(&pins, VIP)?.context("VIP gone")?;
                Ok((st.epoch > epoch).then_some(st.epoch))
            })?;
            std::thread::sleep(Duration::from_millis(1100));
            garp::send(&c, GUEST_IF, VIP, VM_C.mac())?;
        }
        std::thread::sleep(Duration::from_millis(500));
        ensure!(alive(pid), "the agent died on a full disk; its log ends:\n{}", tail(&spec));
        let log = fs::read_to_string(spec.dir.join("agent.log"))?;
        ensure!(log.contains("store: writes fail"), "the failing store was not reported");

        // vm-b holds it now (claims: b, a, b). Space comes back: it lands.
        fs::remove_file(filler)?;
        let log = spec.dir.join("agent.log");
        wait::until("the store to write again", Duration::from_secs(10), || {
            Ok(fs::read_to_string(&log)?.contains("writes work again").then_some(()))
        })?;
        lab.agent()?.stop()?;
        let store = spec.dir.join("state.redb");
        let (vnic, stored) = holder_vnic(&store)?;
        ensure!(
            vnic.as_deref() == Some(VM_B.vnic) && stored == epoch,
            "on disk after space came back: {vnic:?} epoch {stored}, the kernel says epoch {epoch}"
        );
        Ok(())
    })
}

fn tail(spec: &Spec) -> String {
    let log = fs::read_to_string(spec.dir.join("agent.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
