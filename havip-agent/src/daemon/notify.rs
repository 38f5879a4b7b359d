//! systemd's readiness protocol (sd_notify): one datagram to $NOTIFY_SOCKET;
//! and its watchdog: how often `WATCHDOG=1` is wanted.

use std::{
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

use anyhow::{Context, Result};

/// Sends `state` (e.g. "READY=1") if a supervisor asked for it; a no-op otherwise.
pub fn notify(state: &str) -> Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    }
    .with_context(|| format!("NOTIFY_SOCKET {path:?} is not a socket address"))?;
    let sock = UnixDatagram::unbound().context("creating a notify socket")?;
    sock.send_to_addr(state.as_bytes(), &addr).with_context(|| format!("notifying {path}"))?;
    Ok(())
}

/// How often systemd wants `WATCHDOG=1` ($WATCHDOG_USEC), if it asked this
/// process ($WATCHDOG_PID unset or ours): see sd_watchdog_enabled(3).
pub fn watchdog_interval() -> Result<Option<Duration>> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] from the variables' values and this process's pid:
/// none when $WATCHDOG_USEC is unset or $WATCHDOG_PID names another process;
/// a value that is not a positive number of microseconds is an error.
pub fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Result<Option<Duration>> {
    let Some(usec) = usec else { return Ok(None) };
    if let Some(pid) = pid {
        let pid: u32 = pid.trim().parse().with_context(|| format!("WATCHDOG_PID {pid:?} is not a pid"))?;
        if pid != own_pid {
            return Ok(None);
        }
    }
    let n: u64 = usec.trim().parse().with_context(|| format!("WATCHDOG_USEC {usec:?} is not a number"))?;
    anyhow::ensure!(n > 0, "WATCHDOG_USEC is 0");
    Ok(Some(Duration::from_micros(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_read_as_sd_notify_documents() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(parse_watchdog(None, None, 7).unwrap(), None, "no watchdog asked");
        assert_eq!(parse_watchdog(Some("30000000"), None, 7).unwrap(), s(30), "no pid: ours");
        assert_eq!(parse_watchdog(Some("30000000"), Some("7"), 7).unwrap(), s(30));
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7).unwrap(), None, "another process's");
        assert_eq!(parse_watchdog(Some("1500"), None, 7).unwrap(), Some(Duration::from_micros(1500)));
        assert_eq!(parse_watchdog(None, Some("7"), 7).unwrap(), None);
        for bad in ["", "0", "-5", "30s", "1.5"] {
            assert!(parse_watchdog(Some(bad), None, 7).is_err(), "WATCHDOG_USEC={bad:?}");
        }
        assert!(parse_watchdog(Some("30000000"), Some("x"), 7).is_err());
    }
}
