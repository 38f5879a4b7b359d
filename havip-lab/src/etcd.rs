//! A real etcd cluster for the lab and the store tests: N members of
//! Debian's etcd 3.4, each in a namespace of its own (`havip-<stem>-eN`, so the
//! sweeper stops and removes what a killed run left), plugged into the
//! lab's underlay fabric at 198.18.0.1N (or, standalone, into a fabric of its
//! own), data in the lab's directory, optionally TLS with client
//! certificates required. Everything goes when the handle drops.
//!
//! Timing as the many-hosts design asks: `--pre-vote` (off by default in 3.4),
//! heartbeat 100 ms, election timeout 1 s, so a killed leader is replaced in
//! about 1–1.5 s (FIELD-NOTES.md, "Many hosts").
//!
//! A store test's cluster (no lab around it): a client reaches the members
//! only from inside a lab namespace, never through the root namespace's
//! routes; enter the cluster's own fabric on the thread that builds the
//! client's runtime, before building it:
//!
//! ```ignore
//! let scratch = Scratch::new("test")?; // declared first: dropped last
//! let etcd = EtcdCluster::start(&scratch.id, &scratch.id.run_dir(), 1, true)?;
//! let (ns, endpoints, tls) = (etcd.client_netns().unwrap().to_owned(), etcd.endpoints(), etcd.tls_files().cloned());
//! std::thread::spawn(move || {
//!     havip_lab::netns::enter(&ns)?;
//!     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     rt.block_on(async { /* etcd_client::Client::connect(endpoints, tls options) ... */ })
//! }).join().unwrap()?;
//! ```

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{
    cmd,
    fabric::{self, Fabric},
    netns::{LabId, Netns},
    process::ChildProc,
    wait,
};

/// Client port on every member's address.
pub const CLIENT_PORT: u16 = 2379;
/// Peer (raft) port on every member's address.
pub const PEER_PORT: u16 = 2380;
/// The most members: their addresses are 198.18.0.11..19.
pub const MAX_MEMBERS: usize = 9;
/// How long a fresh cluster may take to elect a leader and answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// etcdctl's limits for one call: short, so a dead member fails fast.
const DIAL_TIMEOUT: &str = "--dial-timeout=1s";
const COMMAND_TIMEOUT: &str = "--command-timeout=2s";
/// A member's end of its veth into the fabric.
const MEMBER_IF: &str = "eth0";

/// The TLS files a client of the cluster uses (PEM), made by [`EtcdCluster::start`]
/// with `openssl` when asked for TLS: the CA, and a client certificate the
/// members require (client-cert auth is on).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFiles {
    /// The CA certificate that signed the members' and the client's certificates.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client certificate's private key.
    pub key: PathBuf,
}

/// One member: its namespace, address and process (none while killed).
struct Member {
    name: String,
    addr: Ipv4Addr,
    ns: Netns,
    data: PathBuf,
    proc: Option<ChildProc>,
}

/// A running etcd cluster; see the module doc. Dropping it kills every
/// member, deletes their namespaces (and an own fabric) and their data.
pub struct EtcdCluster {
    token: String,
    dir: PathBuf,
    tls: Option<TlsFiles>,
    attached: bool,
    // Fields drop in order: members (processes, then namespaces) before the fabric.
    members: Vec<Member>,
    own_fabric: Option<Fabric>,
    armed: bool,
}

impl EtcdCluster {
    /// Starts a standalone cluster of `members` (1..=9) for lab `id`, with a
    /// fabric of its own (namespace `havip-<stem>-fabric`; clients run in
    /// [`EtcdCluster::client_netns`]); data and certificates under `dir/etcd`.
    /// Returns once every member is healthy and there is a leader.
    pub fn start(id: &LabId, dir: &Path, members: usize, tls: bool) -> Result<Self> {
        Self::launch(id, dir, members, tls, Err(Fabric::create(id)?), true)
    }

    /// Like [`EtcdCluster::start`], with the members on the lab's `fabric`
    /// (which must outlive the cluster). `attached`: the members die with
    /// the thread that started them (a test, the demo); `false` for a lab
    /// left standing (`lab up`).
    pub fn start_on(
        id: &LabId,
        dir: &Path,
        members: usize,
        tls: bool,
        fabric: &Fabric,
        attached: bool,
    ) -> Result<Self> {
        Self::launch(id, dir, members, tls, Ok(fabric), attached)
    }

    /// `fabric`: the lab's (Ok) or one of the cluster's own (Err).
    fn launch(
        id: &LabId,
        dir: &Path,
        members: usize,
        tls: bool,
        fabric: Result<&Fabric, Fabric>,
        attached: bool,
    ) -> Result<Self> {
        ensure!((1..=MAX_MEMBERS).contains(&members), "an etcd cluster has 1 to {MAX_MEMBERS} members");
        let dir = dir.join("etcd");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (shared, own) = match fabric {
            Ok(shared) => (Some(shared), None),
            Err(own) => (None, Some(own)),
        };
        let mut cluster = Self {
            token: format!("havip-{}", id.stem),
            dir,
            tls: None,
            attached,
            members: Vec::new(),
            own_fabric: own,
            armed: true,
        };
        for n in 1..=members as u8 {
            let fabric = shared.or(cluster.own_fabric.as_ref()).context("no fabric")?;
            let name = format!("e{n}");
            let ns = Netns::create(&id.netns(&name))?;
            let addr = fabric::member_ip(n);
            fabric.attach(ns.name(), MEMBER_IF, &format!("p-{name}"), addr)?;
            let data = cluster.dir.join(&name);
            cluster.members.push(Member { name, addr, ns, data, proc: None });
        }
        if tls {
            cluster.tls = Some(make_certs(&cluster.dir, &cluster.addrs())?);
        }
        for i in 0..members {
            cluster.start_member(i)?;
        }
        cluster.wait_healthy(START_TIMEOUT)?;
        Ok(cluster)
    }

    fn addrs(&self) -> Vec<Ipv4Addr> {
        self.members.iter().map(|m| m.addr).collect()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn peer_url(&self, m: &Member) -> String {
        format!("{}://{}:{PEER_PORT}", self.scheme(), m.addr)
    }

    fn client_url(&self, i: usize) -> String {
        format!("{}://{}:{CLIENT_PORT}", self.scheme(), self.members[i].addr)
    }

    /// The members' client URLs (`http(s)://198.18.0.1N:2379`), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.client_url(i)).collect()
    }

    /// The CA and client certificate files, when the cluster runs TLS.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never, once started).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s address (0-based: member `e1` is 0).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.members[i].addr
    }

    /// Member `i`'s namespace.
    pub fn member_netns(&self, i: usize) -> &str {
        self.members[i].ns.name()
    }

    /// A standalone cluster's fabric namespace, on the members' network
    /// (198.18.0.254): where a client (a store test) reaches every member.
    /// None for a cluster on a lab's fabric: the lab's hosts are its clients.
    pub fn client_netns(&self) -> Option<&str> {
        self.own_fabric.as_ref().map(Fabric::name)
    }

    /// Whether member `i`'s process runs (it was not killed, or was restarted).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].proc.is_some()
    }

    /// Starts member `i` (again, after [`EtcdCluster::kill`]) with its data
    /// dir: a restarted member rejoins with what it had. Does not wait.
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        ensure!(i < self.members.len(), "no etcd member {i}");
        if self.members[i].proc.is_some() {
            bail!("etcd member {} is running", self.members[i].name);
        }
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}={}", m.name, self.peer_url(m))).collect();
        let m = &self.members[i];
        let (client, peer) = (self.client_url(i), self.peer_url(m));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", m.ns.name(), "etcd", "--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--pre-vote", "--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if self.tls.is_some() {
            let f = |name: &str| self.dir.join(name);
            cmd.arg("--cert-file").arg(f("server.pem")).arg("--key-file").arg(f("server-key.pem"));
            cmd.arg("--trusted-ca-file").arg(f("ca.pem")).arg("--client-cert-auth");
            cmd.arg("--peer-cert-file").arg(f("server.pem")).arg("--peer-key-file").arg(f("server-key.pem"));
            cmd.arg("--peer-trusted-ca-file").arg(f("ca.pem")).arg("--peer-client-cert-auth");
        }
        if self.attached {
            // SAFETY: prctl is async-signal-safe. The member dies with the
            // thread that started it (the test's, the demo's), even on SIGKILL.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let log = self.dir.join(format!("{}.log", m.name));
        let proc = ChildProc::spawn(&format!("etcd {}", m.name), cmd, &log, None)?;
        self.members[i].proc = Some(proc);
        Ok(())
    }

    /// SIGKILLs member `i` (a crash: no goodbye to its peers) and reaps it.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        ensure!(i < self.members.len(), "no etcd member {i}");
        match self.members[i].proc.take() {
            Some(mut p) => p.kill().map(drop),
            None => bail!("etcd member {} is not running", self.members[i].name),
        }
    }

    /// Runs `etcdctl ARGS` against `endpoints` (member indexes) from inside
    /// the first running member's namespace; its stdout. Fails if etcdctl does.
    fn etcdctl(&self, endpoints: &[usize], args: &[&str]) -> Result<String> {
        let (ns, all) = self.etcdctl_args(endpoints, args)?;
        cmd::in_ns(&ns, "etcdctl", &all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// [`EtcdCluster::etcdctl`], whatever its outcome.
    fn etcdctl_output(&self, endpoints: &[usize], args: &[&str]) -> Result<std::process::Output> {
        let (ns, all) = self.etcdctl_args(endpoints, args)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, "etcdctl"]).args(all);
        cmd.output().with_context(|| format!("running {cmd:?}"))
    }

    /// Where etcdctl runs (a running member's namespace) and its arguments.
    fn etcdctl_args(&self, endpoints: &[usize], args: &[&str]) -> Result<(String, Vec<String>)> {
        let from = self.running().next().context("no etcd member is running")?;
        let urls: Vec<String> = endpoints.iter().map(|&i| self.client_url(i)).collect();
        let mut all =
            vec![format!("--endpoints={}", urls.join(",")), DIAL_TIMEOUT.into(), COMMAND_TIMEOUT.into()];
        if let Some(t) = &self.tls {
            for (flag, path) in [("--cacert", &t.ca), ("--cert", &t.cert), ("--key", &t.key)] {
                all.push(format!("{flag}={}", path.display()));
            }
        }
        all.extend(args.iter().map(|a| a.to_string()));
        Ok((self.members[from].ns.name().to_owned(), all))
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.members[i].proc.is_some())
    }

    /// `etcdctl endpoint status` of every running member: (index, status JSON).
    /// A member that does not answer is left out.
    fn statuses(&self) -> Result<Vec<(usize, Value)>> {
        let live: Vec<usize> = self.running().collect();
        // A member that does not answer makes etcdctl fail after printing the others.
        let out = self.etcdctl_output(&live, &["endpoint", "status", "-w", "json"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let all: Vec<Value> = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(a)) => a,
            _ => bail!(
                "etcdctl endpoint status gave no JSON ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        let mut found = Vec::new();
        for s in all {
            let url = s["Endpoint"].as_str().unwrap_or_default();
            if let Some(i) = live.iter().copied().find(|&i| self.client_url(i) == url) {
                found.push((i, s["Status"].clone()));
            }
        }
        Ok(found)
    }

    /// The index of the member that is the leader, as it says itself
    /// (`etcdctl endpoint status` run inside a member's namespace). Fails when
    /// no running member says it leads.
    pub fn leader(&self) -> Result<usize> {
        let statuses = self.statuses()?;
        let leads =
            |s: &Value| s["leader"].as_u64().is_some_and(|l| Some(l) == s["header"]["member_id"].as_u64());
        statuses
            .iter()
            .find(|(_, s)| leads(s))
            .map(|(i, _)| *i)
            .with_context(|| format!("no running etcd member leads ({} answered)", statuses.len()))
    }

    /// Waits until a member other than `old` leads (after [`EtcdCluster::kill`]
    /// of the leader); the new leader's index.
    pub fn wait_new_leader(&self, old: usize, timeout: Duration) -> Result<usize> {
        wait::until("etcd to elect a new leader", timeout, || Ok(self.leader().ok().filter(|&l| l != old)))
    }

    /// Compacts the key space to the current revision (physically), so a
    /// watch from an older revision is cancelled as compacted. Returns the revision.
    pub fn compact_to_latest(&self) -> Result<u64> {
        let (_, status) = self.statuses()?.into_iter().next().context("no etcd member answers")?;
        let rev = status["header"]["revision"].as_u64().context("endpoint status without a revision")?;
        let leader = self.leader()?;
        self.etcdctl(&[leader], &["compact", &rev.to_string(), "--physical"])?;
        Ok(rev)
    }

    /// Waits until every running member answers `endpoint health` (a quorum
    /// read through each) and one of them leads.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let what = format!("etcd ({} running of {}) to be healthy", self.running().count(), self.len());
        wait::until(&what, timeout, || {
            let live: Vec<usize> = self.running().collect();
            let healthy = self.etcdctl(&live, &["endpoint", "health"]).is_ok();
            Ok((healthy && self.leader().is_ok()).then_some(()))
        })
        .map_err(|e| e.context(self.log_tails()))
    }

    /// The end of every member's log: the clue when etcd misbehaves.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let log = fs::read_to_string(self.dir.join(format!("{}.log", m.name))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out += &format!("----- etcd {} (last 10 lines)\n", m.name);
            out += &lines[lines.len().saturating_sub(10)..].join("\n");
            out += "\n";
        }
        out
    }

    /// Leaves the cluster running when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.armed = false;
        for m in &mut self.members {
            m.ns.keep();
            m.proc.iter_mut().for_each(ChildProc::keep);
        }
        self.own_fabric.iter_mut().for_each(Fabric::keep);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Killed, not stopped: nothing of theirs is worth a clean shutdown.
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                if let Err(e) = p.kill() {
                    eprintln!("havip-lab: cleanup: etcd {}: {e:#}", m.name);
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if self.dir.exists() {
                eprintln!("havip-lab: cleanup: removing {}: {e}", self.dir.display());
            }
        }
        // The namespaces go next, with `members`, then an own fabric.
    }
}

/// Makes a CA (`ca.pem`), a server certificate for every member address
/// and 127.0.0.1 (`server.pem`, `server-key.pem`; usable for both ends of
/// peer TLS) and a client certificate (`client.pem`, `client-key.pem`) in
/// `dir`, with the `openssl` CLI: P-256 keys, valid for a day. Returns the
/// client's files.
pub fn make_certs(dir: &Path, addrs: &[Ipv4Addr]) -> Result<TlsFiles> {
    let openssl = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("starting openssl (is it installed?)")?;
        ensure!(
            out.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &key,
            &["-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1", "-subj", "/CN=havip-lab etcd CA"],
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    )?;
    let sans: Vec<String> = addrs.iter().chain(&[Ipv4Addr::LOCALHOST]).map(|a| format!("IP:{a}")).collect();
    let leaf = |name: &str, cn: &str, usage: &str, sans: &str, serial: &str| -> Result<()> {
        let ext = format!("{name}.ext");
        let mut text = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
        );
        if !sans.is_empty() {
            text += &format!("subjectAltName={sans}\n");
        }
        fs::write(dir.join(&ext), text).with_context(|| format!("writing {ext}"))?;
        let (keyfile, csr, pem) = (format!("{name}-key.pem"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(
            &[&["req"][..], &key, &["-keyout", &keyfile, "-out", &csr, "-subj", &format!("/CN={cn}")]]
                .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-set_serial",
            serial,
            "-days",
            "1",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ])
    };
    leaf("server", "etcd", "serverAuth,clientAuth", &sans.join(","), "2")?;
    leaf("client", "havip-agent", "clientAuth", "", "3")?;
    Ok(TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("client.pem"), key: dir.join("client-key.pem") })
}
