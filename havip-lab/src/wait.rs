//! Every wait in the lab is "poll a condition until a deadline", and a timeout
//! names what was awaited: no bare sleeps that happen to make things pass.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// How often a condition is polled: short next to keepalived's 100 ms adverts.
const POLL: Duration = Duration::from_millis(20);

/// Polls `poll` until it yields `Some`, an error, Ctrl-C, or `timeout`.
pub fn until<T>(what: &str, timeout: Duration, poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    poll_until(what, timeout, true, poll)
}

/// Like [`until`], but Ctrl-C does not cut it short: for cleanup, which must
/// still finish after an interrupt.
pub fn cleanup_until<T>(what: &str, timeout: Duration, poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    poll_until(what, timeout, false, poll)
}

fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interruptible: bool,
    mut poll: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if interruptible {
            crate::interrupt::check()?;
        }
        if let Some(v) = poll().with_context(|| format!("while waiting for {what}"))? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}
