//! Entering a named network namespace in-process. `ip netns exec` would also
//! remount /sys privately and hide bpffs pins, so the agent calls setns(2)
//! itself, before any other thread (tokio's) exists: threads inherit it.

use std::{fs::File, os::fd::AsRawFd};

use anyhow::{Context, Result};

/// Moves the calling thread into the network namespace `/run/netns/{name}`
/// (setns(2), CLONE_NEWNET); call before any other thread exists.
///
/// # Errors
/// The namespace file cannot be opened, or setns(2) fails (needs CAP_SYS_ADMIN).
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).with_context(|| format!("opening network namespace {path}"))?;
    // SAFETY: a valid namespace fd; CLONE_NEWNET checks its type.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering network namespace {name}"));
    }
    Ok(())
}
