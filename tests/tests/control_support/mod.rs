//! `havipctl` against a lab's agent, for the control-plane tests: run a verb,
//! expect it to pass or to be refused, read the agent's answers as the
//! agent's own types.

// Each control_* test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use havip_api::view::{DesiredView, HavipView};
use havip_lab::{agent, ctl::Ctl as LabCtl, netns, scenario::Lab, wait};

/// How long the agent may take to show what the data plane did.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `havipctl` against a lab's agent ([`havip_lab::ctl::Ctl`]: run, ok,
/// refused, json), with the agent's own view types.
pub struct Ctl(LabCtl);

impl std::ops::Deref for Ctl {
    type Target = LabCtl;

    fn deref(&self) -> &LabCtl {
        &self.0
    }
}

impl Ctl {
    /// `havipctl` (built next to `havip-agent`) aimed at the lab's agent.
    pub fn of(lab: &mut Lab) -> Result<Self> {
        Self::at(lab.agent()?.spec().api_socket())
    }

    /// `havipctl` aimed at the agent serving `socket`.
    pub fn at(socket: PathBuf) -> Result<Self> {
        LabCtl::at(socket).map(Self)
    }

    pub fn describe(&self, vip: &str) -> Result<HavipView> {
        self.json(&["describe", vip])
    }

    /// The store's whole desired state and its revision.
    pub fn desired(&self) -> Result<DesiredView> {
        self.json(&["export"])
    }

    /// Waits until `describe VIP` satisfies `ok`.
    pub fn wait_describe(
        &self,
        vip: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&HavipView) -> bool,
    ) -> Result<HavipView> {
        wait::until(what, timeout, || {
            let v = self.describe(vip)?;
            Ok(ok(&v).then_some(v))
        })
    }
}

/// The agent's Prometheus metrics: `(name{labels}, value)` samples.
pub fn metrics(lab: &Lab) -> Result<Vec<(String, f64)>> {
    metrics_in(lab.topo.hv())
}

/// The metrics of the agent running in namespace `ns` (a host of the lab
/// with many hosts): `(name{labels}, value)` samples.
pub fn metrics_in(ns: &str) -> Result<Vec<(String, f64)>> {
    let text = netns::run_in(ns, || {
        let mut conn = TcpStream::connect(agent::METRICS).context("connecting to the metrics address")?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: havip\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        Ok(text)
    })?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    ensure!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "metrics answered {head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, v) = l.rsplit_once(' ').with_context(|| format!("metric line {l:?}"))?;
            Ok((name.to_owned(), v.parse()?))
        })
        .collect()
}
