//! Running the lab's helper programs (`ip`, `ethtool`, ...) with errors that
//! say which command failed and what it printed.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `prog args...`, returns its stdout; fails with its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("starting `{prog}` (is it installed? `cargo xtask deps`)"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs a program inside network namespace `ns` (`ip netns exec`). Only for
/// tools that don't need bpffs: `ip netns exec` remounts /sys privately.
pub fn in_ns(ns: &str, prog: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, prog];
    all.extend_from_slice(args);
    ip(&all)
}
