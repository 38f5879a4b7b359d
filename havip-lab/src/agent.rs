//! The havip agent under test, run in the lab's host namespace: started with
//! a NOTIFY_SOCKET to learn when it is ready, stopped with SIGTERM (which
//! leaves the data plane running), and torn down with `havip-agent teardown`.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};

use crate::{log::Timeline, netns, process::ChildProc, wait};

/// Where the agent serves Prometheus metrics, inside the hv namespace.
pub const METRICS: &str = "127.0.0.1:9477";

/// How long a metrics scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One scrape of the agent's `/metrics` from inside namespace `ns` (the
/// lab's hv): the body, as served, once the answer is `200` in the
/// Prometheus text format.
pub fn scrape_metrics(ns: &str) -> Result<String> {
    let text = netns::run_in(ns, || {
        let addr = METRICS.parse().context("the metrics address")?;
        let mut conn =
            TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).context("connecting to the metrics address")?;
        conn.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: havip\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text).context("reading the metrics")?;
        Ok(text)
    })?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body in the metrics answer")?;
    ensure!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "metrics answered {head}");
    ensure!(
        head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("content-type:") && l.contains("text/plain") && l.contains("version=0.0.4")
        }),
        "metrics not served as the Prometheus text format 0.0.4: {head}"
    );
    Ok(body.to_owned())
}

/// Loading, attaching and filling maps: seconds at most, even on a busy box.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Finds `havip-agent` next to the running executable: `target/<profile>/`
/// for the lab binary, one level up for test executables in `deps/`.
pub fn locate_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    for candidate in [dir.join("havip-agent"), dir.join("../havip-agent")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "havip-agent not found next to {} (or one level up): run `cargo build --workspace --bins` first",
        exe.display()
    )
}

/// Where and how the agent runs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    pub bin: PathBuf,
    pub config: PathBuf,
    pub netns: String,
    pub pin_dir: PathBuf,
    /// Lab dir for its log and notify socket.
    pub dir: PathBuf,
}

impl Spec {
    /// The agent's API socket: in the lab dir, so parallel labs never share one.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// The `[agent]` config section that keeps the agent's store and API
    /// socket in the lab dir, and serves metrics inside the lab's hv
    /// namespace (its own loopback: no two labs share the port).
    pub fn agent_section(&self) -> String {
        self.agent_section_as(None)
    }

    /// [`Spec::agent_section`] with `host_id` set, when there is one (a lab
    /// with many hosts names them).
    pub fn agent_section_as(&self, host_id: Option<&str>) -> String {
        let id = host_id.map(|h| format!("host_id = \"{h}\"\n")).unwrap_or_default();
        format!(
            "[agent]\n{id}store = \"{}\"\napi_socket = \"{}\"\nmetrics = \"{METRICS}\"\n\n",
            self.dir.join("state.redb").display(),
            self.api_socket().display()
        )
    }

    fn common_args(&self, cmd: &mut Command) {
        cmd.arg("--netns").arg(&self.netns).arg("--pin-dir").arg(&self.pin_dir);
    }

    /// `havip-agent teardown`: detaches from every vNIC and removes the pins.
    pub fn teardown(&self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("teardown");
        self.common_args(&mut cmd);
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !out.status.success() {
            // The agent logs its errors to stdout: show both streams.
            bail!(
                "{cmd:?} failed ({}): {} {}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// [`Spec::teardown`]; if that fails, says so and removes the pins
    /// directly, so no lab leaves pins behind even when the agent misbehaves.
    pub fn teardown_or_unpin(&self) {
        if let Err(e) = self.teardown() {
            eprintln!("havip-lab: cleanup: {e:#}; removing {} directly", self.pin_dir.display());
            if let Err(e) = std::fs::remove_dir_all(&self.pin_dir) {
                eprintln!("havip-lab: cleanup: removing {}: {e}", self.pin_dir.display());
            }
        }
    }
}

pub struct Agent {
    /// Who it is in the timeline and errors: "agent", "agent hv2".
    name: String,
    spec: Spec,
    proc: Option<ChildProc>,
    notify: UnixDatagram,
    timeline: Option<Timeline>,
    armed: bool,
}

impl Agent {
    /// Starts the agent and waits for READY=1. Attached to `timeline` (its
    /// JSON log lines land there) or, without one, detached.
    pub fn start(spec: Spec, timeline: Option<&Timeline>) -> Result<Self> {
        Self::start_named(spec, "agent", timeline)
    }

    /// [`Agent::start`], its lines in the timeline under `name` (e.g. "agent
    /// hv2", where each host runs one).
    pub fn start_named(spec: Spec, name: &str, timeline: Option<&Timeline>) -> Result<Self> {
        let sock_path = spec.dir.join("agent-notify.sock");
        let _ = std::fs::remove_file(&sock_path);
        let notify =
            UnixDatagram::bind(&sock_path).with_context(|| format!("binding {}", sock_path.display()))?;
        notify.set_nonblocking(true)?;
        let mut agent = Self {
            name: name.to_owned(),
            spec,
            proc: None,
            notify,
            timeline: timeline.cloned(),
            armed: true,
        };
        agent.launch()?;
        Ok(agent)
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.spec.bin);
        cmd.arg("run").arg("--config").arg(&self.spec.config);
        self.spec.common_args(&mut cmd);
        cmd.args(["--log-format", "json"]).env("NOTIFY_SOCKET", self.spec.dir.join("agent-notify.sock"));
        let log = self.spec.dir.join("agent.log");
        let proc = self.proc.insert(ChildProc::spawn(&self.name, cmd, &log, self.timeline.as_ref())?);
        let (notify, name) = (&self.notify, &self.name);
        wait::until(&format!("{name} to send READY=1"), READY_TIMEOUT, || {
            if let Some(status) = proc.exited()? {
                bail!("{name} exited ({status}) before it was ready; its log ends:\n{}", proc.log_tail(20));
            }
            let mut buf = [0u8; 4096];
            match notify.recv(&mut buf) {
                Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1").then_some(())),
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e).context("reading the notify socket"),
            }
        })
    }

    /// SIGTERM; the agent must exit 0, leaving programs attached and pins in place.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            let status = p.stop(Duration::from_secs(10))?;
            if !status.success() {
                bail!("{} exited with {status} on SIGTERM; its log ends:\n{}", self.name, p.log_tail(20));
            }
        }
        Ok(())
    }

    /// SIGKILL, leaving whatever it was writing half done: a crash. Start it
    /// again with [`Agent::restart`].
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.kill()?;
        }
        Ok(())
    }

    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Leaves the agent running and attached when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.armed = false;
        self.proc.iter_mut().for_each(ChildProc::keep);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Stop first: a running agent would re-pin what teardown removes.
        if let Some(mut p) = self.proc.take() {
            if let Err(e) = p.stop(Duration::from_secs(10)) {
                eprintln!("havip-lab: cleanup: {e:#}");
            }
        }
        self.spec.teardown_or_unpin();
    }
}
