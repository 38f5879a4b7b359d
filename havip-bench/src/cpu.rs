//! CPU pinning of the calling thread.

use anyhow::{Context, Result};

/// Pins the calling thread to `cpu`: the test runs on it, and so do the
/// redirect flushes and the veth NAPI polls they trigger.
pub fn pin_to(cpu: usize) -> Result<()> {
    pin_pid_to(0, cpu)
}

/// Pins thread `pid` (0: the calling thread) to `cpu`, e.g. a NAPI kernel thread.
pub fn pin_pid_to(pid: libc::pid_t, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pinning {pid} to CPU {cpu}"));
        }
    }
    Ok(())
}
