//! systemd's readiness protocol (sd_notify): one datagram to $NOTIFY_SOCKET.

use std::os::{
    linux::net::SocketAddrExt,
    unix::net::{SocketAddr, UnixDatagram},
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
