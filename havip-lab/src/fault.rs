//! Faults a test injects into the lab's host namespace, each undone when its
//! handle goes (and with the namespace at the latest).

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::{cmd, probe::ensure_test_range};

/// `ip rule add to IP ipproto 112 blackhole` in the host namespace: VRRP
/// adverts routed toward `IP` are dropped, nothing else is. The host routes
/// the guests' unicast adverts (the vNICs are L3), so this cuts VRRP one way.
pub struct VrrpBlackhole {
    ns: String,
    to: Ipv4Addr,
    armed: bool,
}

impl VrrpBlackhole {
    pub fn add(ns: &str, to: Ipv4Addr) -> Result<Self> {
        ensure_test_range(to)?;
        cmd::ip(&["-n", ns, "rule", "add", "to", &to.to_string(), "ipproto", "112", "blackhole"])?;
        Ok(Self { ns: ns.to_owned(), to, armed: true })
    }

    /// Removes the rule: VRRP toward the guest flows again.
    pub fn lift(mut self) -> Result<()> {
        self.armed = false;
        self.del()
    }

    fn del(&self) -> Result<()> {
        cmd::ip(&["-n", &self.ns, "rule", "del", "to", &self.to.to_string(), "ipproto", "112", "blackhole"])
            .map(drop)
    }
}

impl Drop for VrrpBlackhole {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.del() {
                eprintln!("havip-lab: cleanup: {e:#}");
            }
        }
    }
}
