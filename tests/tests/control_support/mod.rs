//! `havipctl` against a lab's agent, for the control-plane tests: run a verb,
//! expect it to pass or to be refused, read the agent's answers as the
//! agent's own types.

// Each control_* test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use havip_api::view::{DesiredView, HavipView};
use havip_lab::{agent, netns, scenario::Lab, wait};
use serde::de::DeserializeOwned;

/// How long the agent may take to show what the data plane did.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Ctl {
    bin: PathBuf,
    socket: PathBuf,
}

impl Ctl {
    /// `havipctl` (built next to `havip-agent`) aimed at the lab's agent.
    pub fn of(lab: &mut Lab) -> Result<Self> {
        Self::at(lab.agent()?.spec().api_socket())
    }

    /// `havipctl` aimed at the agent serving `socket`.
    pub fn at(socket: PathBuf) -> Result<Self> {
        let bin = agent::locate_binary()?.with_file_name("havipctl");
        ensure!(bin.is_file(), "{} not found: run `cargo build --workspace --bins` first", bin.display());
        Ok(Self { bin, socket })
    }

    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.output().with_context(|| format!("running {cmd:?}"))
    }

    /// Runs a verb that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "havipctl {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Runs a verb that must be refused; returns the error line.
    pub fn refused(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ensure!(
            !out.status.success(),
            "havipctl {args:?} was accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8(out.stderr)?.trim().to_owned())
    }

    pub fn json<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let text = self.ok(&[&["--json"], args].concat())?;
        serde_json::from_str(&text).with_context(|| format!("reading the JSON of havipctl {args:?}"))
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
    let text = netns::run_in(lab.topo.hv(), || {
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
