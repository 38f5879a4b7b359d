//! Network namespaces owned by this run: named `havip-bench-<pid>-<role>`,
//! deleted on drop, and swept by the next run if a killed run left them.

use std::{fs, os::fd::AsRawFd, path::Path, process::Command};

use anyhow::{bail, Context, Result};

/// Every namespace and pin directory of a run starts with this and the pid.
pub const PREFIX: &str = "havip-bench-";
pub const BPFFS: &str = "/sys/fs/bpf";

/// Runs `ip ARGS...`, returning stdout; the error names the command.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog).args(args).output().with_context(|| format!("starting `{prog}`"))?;
    if !out.status.success() {
        bail!("`{prog} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sets sysctls inside `ns`. `ip netns exec` is fine here: sysctl needs no bpffs.
pub fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["netns", "exec", ns, "sysctl", "-qw"];
    args.extend_from_slice(settings);
    ip(&args).map(drop)
}

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(role: &str) -> Result<Self> {
        let name = format!("{PREFIX}{}-{role}", std::process::id());
        ip(&["netns", "add", &name]).with_context(|| format!("creating netns {name}"))?;
        Ok(Self { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("havip-bench: cleanup: {e:#}");
        }
    }
}

/// Moves the calling thread (only it) into namespace `name`.
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let f = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a valid fd; CLONE_NEWNET checks its type and affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("entering netns {name}"));
    }
    Ok(())
}

/// The owner pid in a `havip-bench-<pid>-...` name, if that process is dead.
fn dead_owner(name: &str) -> Option<u32> {
    let pid: u32 = name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()?;
    (!Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

/// Removes namespaces and pins that killed runs left behind; live runs' are kept.
pub fn sweep_stale() -> Result<()> {
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for name in entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()) {
            if let Some(pid) = dead_owner(&name) {
                eprintln!("havip-bench: removing stale netns {name} (pid {pid} is gone)");
                ip(&["netns", "del", &name])?;
            }
        }
    }
    if let Ok(entries) = fs::read_dir(BPFFS) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = dead_owner(&name) {
                eprintln!("havip-bench: removing stale pins {name} (pid {pid} is gone)");
                // Pins are plain files on bpffs; nothing of ours was attached through them.
                fs::remove_dir_all(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    Ok(())
}
