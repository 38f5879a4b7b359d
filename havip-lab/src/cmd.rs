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

/// The MAC of interface `ifname` in namespace `ns` (`ip -j link show`).
pub fn link_mac(ns: &str, ifname: &str) -> Result<[u8; 6]> {
    let out = ip(&["-n", ns, "-j", "link", "show", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    let text = v[0]["address"].as_str().with_context(|| format!("{ifname} in {ns} has no MAC"))?;
    let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>()?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("{ifname} in {ns} has a malformed MAC {text}"))
}
