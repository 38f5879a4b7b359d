//! Ctrl-C turns into an error at the next wait, so the lab unwinds through its
//! RAII handles and removes everything, instead of dying with things standing.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing that is async-signal-safe here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`check`]. Children get default handlers back
/// at exec, so they still stop on the terminal's Ctrl-C themselves.
pub fn install() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let prev = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            bail!("installing the handler for signal {sig}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Fails once Ctrl-C (or SIGTERM) was received.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}
