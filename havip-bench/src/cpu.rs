//! CPU pinning of the calling thread.

use anyhow::{Context, Result};

/// Pins the calling thread to `cpu`: the test runs on it, and so do the
/// redirect flushes and the veth NAPI polls they trigger.
pub fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; pid 0 is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("pinning to CPU {cpu}"));
        }
    }
    Ok(())
}
