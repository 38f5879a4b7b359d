//! Issue 9, "what it must show", the etcd half: many hosts on one etcd
//! cluster must agree on who holds the VIP whatever etcd does meanwhile. A
//! leader SIGKILLed during a failover, quorum lost and healed, claims racing
//! from two hosts, a compaction while one host's watch is down, a forged
//! stale hint: every host ends on etcd's last holder record, at its
//! revision, and none ever goes back to an older one.
//!
//! Each test runs the three-host lab ([`havip_lab::multihost`]) with real
//! etcd and real agents; keepalived only where a test needs a real failover
//! (the others claim with gratuitous ARPs from the guests, and holder
//! verification is off there, since no guest really has the VIP).
//!
//! Every host's view is polled all along ([`Poller`]: `GET /v1/havips/VIP` on
//! each agent's API socket every few ms, the same answer `havipctl --json
//! describe` prints) and the revision each host shows must never go down.
//!
//! Not here: "a host whose lease expired cannot commit a claim" is
//! havip-agent/tests/etcd_store.rs (`a_host_whose_lease_expired_cannot_commit_a_claim`:
//! the store refuses the commit as `Fenced`, then loses to the newer record).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, UdpSocket},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

mod control_support;

use anyhow::{ensure, Context, Result};
use control_support::metrics_in;
use havip_agent::control::{holders::Hint, peers};
use havip_lab::{
    garp,
    multihost::{Hv, Lab, Options, HOSTS, HV1, HV2, HV3, PREFIX},
    netns::{self, LabId},
    scenario::{self, FAILOVER_TIMEOUT},
    topology::{Guest, GUEST_IF, VIP, VM_A, VM_B},
    wait,
};
use havip_model::Holder;
use serde_json::Value;

/// How long every host may take to agree after etcd is healthy again.
const CONVERGE: Duration = Duration::from_secs(15);
/// The agents' config for tests that claim with gratuitous ARPs: no guest
/// has the VIP, so the holder's verification would undo every claim.
const VERIFICATION_OFF: &str = "[verification]\nenabled = false\n";
/// How often the poller reads every host's view.
const POLL_EVERY: Duration = Duration::from_millis(3);

/// The tests of this file one at a time: each runs a whole three-host lab
/// and measures milliseconds, which two labs on two cores would blur.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- views

/// One host's view of the VIP: holder vNIC, its host, the record's revision.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    holder: Option<String>,
    holder_host: Option<String>,
    revision: u64,
}

impl View {
    fn of(v: &Value) -> Self {
        Self {
            holder: v["holder"].as_str().map(str::to_owned),
            holder_host: v["holder_host"].as_str().map(str::to_owned),
            revision: v["revision"].as_u64().unwrap_or(0),
        }
    }
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.holder.as_deref().unwrap_or("none");
        write!(f, "{h}@{} r{}", self.holder_host.as_deref().unwrap_or("-"), self.revision)
    }
}

/// `GET PATH` on an agent's API socket (HTTP/1.0: the answer ends with the
/// connection); the body as JSON. What `havipctl --json` prints, without a
/// process per read, so a poll takes well under a millisecond.
fn api_get(socket: &PathBuf, path: &str) -> Result<Value> {
    let mut s = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: havip\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    ensure!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{path} answered {head}");
    serde_json::from_str(body).with_context(|| format!("the JSON of {path}"))
}

fn sockets(lab: &mut Lab) -> Result<Vec<PathBuf>> {
    HOSTS.iter().map(|h| Ok(lab.agent(*h)?.spec().api_socket())).collect()
}

/// Every host's view once, in host order.
fn views(socks: &[PathBuf]) -> Result<Vec<View>> {
    socks.iter().map(|s| Ok(View::of(&api_get(s, &format!("/v1/havips/{VIP}"))?))).collect()
}

/// A host's cluster status (`havipctl --json status`, `cluster`).
fn cluster_status(socks: &[PathBuf], h: Hv) -> Result<Value> {
    let s = api_get(&socks[usize::from(h.n - 1)], "/v1/status")?;
    Ok(s["cluster"].clone())
}

/// Waits until every host shows one holder and one revision, `ok` of it;
/// returns that view. A host that cannot answer yet (the HAVIP not known
/// there yet) is not there yet.
fn wait_agree(socks: &[PathBuf], what: &str, timeout: Duration, ok: impl Fn(&View) -> bool) -> Result<View> {
    let mut last = Ok(Vec::new());
    let r = wait::until(what, timeout, || {
        last = views(socks);
        let Ok(vs) = &last else { return Ok(None) };
        Ok((vs.iter().all(|v| *v == vs[0]) && ok(&vs[0])).then(|| vs[0].clone()))
    });
    r.with_context(|| match &last {
        Ok(vs) => format!("the hosts show {}", shown(vs)),
        Err(e) => format!("the last read failed: {e:#}"),
    })
}

/// Waits until every host shows guest `g` holding, at one revision newer
/// than `after` (0: any committed record).
fn wait_on(socks: &[PathBuf], g: Guest, after: u64) -> Result<View> {
    let what = format!("every host on {}'s record after revision {after}", g.name);
    wait_agree(socks, &what, CONVERGE, |v| v.holder.as_deref() == Some(g.vnic) && v.revision > after)
}

/// The start of every test: the agents' sockets, a poller, and the record
/// every host is on once they agree that vm-a holds (committed).
fn begin(lab: &mut Lab) -> Result<(Vec<PathBuf>, Poller, View)> {
    let socks = sockets(lab)?;
    let poller = Poller::start(socks.clone());
    let first = wait_on(&socks, VM_A, 0)?;
    Ok((socks, poller, first))
}

fn shown(vs: &[View]) -> String {
    HOSTS.iter().zip(vs).map(|(h, v)| format!("{}: {v}", h.id)).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------- poller

/// A change of one host's view, as the poller saw it.
#[derive(Clone, Debug)]
struct Change {
    at: Instant,
    view: View,
}

#[derive(Default)]
struct Seen {
    /// Per host, every change of its view (the first read included).
    changes: Vec<Vec<Change>>,
    /// Revisions that went down: (host, from, to).
    regressions: Vec<(&'static str, View, View)>,
    reads: u64,
    failed_reads: u64,
}

/// Reads every host's view every [`POLL_EVERY`] from a thread, for the
/// whole test: keeps each change and every revision that went down.
struct Poller {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    fn start(socks: Vec<PathBuf>) -> Self {
        let seen = Arc::new(Mutex::new(Seen { changes: vec![Vec::new(); socks.len()], ..Seen::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for (i, sock) in socks.iter().enumerate() {
                    let read = api_get(sock, &format!("/v1/havips/{VIP}")).map(|v| View::of(&v));
                    let at = Instant::now();
                    let mut seen = s.lock().unwrap();
                    let Ok(view) = read else {
                        seen.failed_reads += 1;
                        continue;
                    };
                    seen.reads += 1;
                    let last = seen.changes[i].last().map(|c| c.view.clone());
                    if last.as_ref() != Some(&view) {
                        if let Some(last) = last.filter(|l| view.revision < l.revision) {
                            seen.regressions.push((HOSTS[i].id, last, view.clone()));
                        }
                        seen.changes[i].push(Change { at, view });
                    }
                }
                thread::sleep(POLL_EVERY);
            }
        });
        Self { seen, stop, thread: Some(thread) }
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    /// Fails if a host's revision ever went down; returns (reads, failed reads).
    fn check_monotonic(&self) -> Result<(u64, u64)> {
        let seen = self.seen();
        ensure!(
            seen.regressions.is_empty(),
            "a host went back to an older revision: {}",
            seen.regressions
                .iter()
                .map(|(h, a, b)| format!("{h}: {a} -> {b}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        Ok((seen.reads, seen.failed_reads))
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- events

/// Host `h`'s holder events about the VIP (`havipctl --json events`:
/// `holder_changed` and `holder_cleared`): the revisions they name, in
/// order, and the vNIC of the last one. Fails if a revision ever goes down.
/// (A claim this host's own data plane took names no revision: its commit
/// comes after the event, and its record changes no holder here.)
fn holder_events(lab: &Lab, h: Hv) -> Result<(Vec<u64>, Option<String>)> {
    let text = lab.ctl(h)?.ok(&["--json", "events"])?;
    let (mut revs, mut last) = (Vec::<u64>::new(), None);
    for line in text.lines() {
        let ev: Value = serde_json::from_str(line).with_context(|| format!("event line {line:?}"))?;
        let holder_event = ev["kind"] == "holder_changed" || ev["kind"] == "holder_cleared";
        if !holder_event || ev["vip"] != VIP.to_string() {
            continue;
        }
        last = ev["vnic"].as_str().map(str::to_owned);
        if let Some(rev) = revision_in(ev["detail"].as_str().unwrap_or_default()) {
            if let Some(&prev) = revs.last() {
                ensure!(rev >= prev, "{}: a holder event at revision {rev} after {prev}: {ev}", h.id);
            }
            revs.push(rev);
        }
    }
    Ok((revs, last))
}

/// Counts the claims host `h`'s own data plane took from its member `g`
/// (`describe`'s `last_claims`, at most eight, each once: by their time).
struct ClaimCount {
    h: Hv,
    g: Guest,
    after_ms: u64,
    n: u64,
}

impl ClaimCount {
    fn new(socks: &[PathBuf], h: Hv, g: Guest) -> Result<Self> {
        let mut c = Self { h, g, after_ms: 0, n: 0 };
        c.update(socks)?;
        c.n = 0;
        Ok(c)
    }

    fn update(&mut self, socks: &[PathBuf]) -> Result<()> {
        let v = api_get(&socks[usize::from(self.h.n - 1)], &format!("/v1/havips/{VIP}"))?;
        let mut newest = self.after_ms;
        for c in v["last_claims"].as_array().into_iter().flatten() {
            let at = c["at_ms"].as_u64().unwrap_or(0);
            if c["accepted"] == true && c["vnic"] == self.g.vnic && at > self.after_ms {
                self.n += 1;
                newest = newest.max(at);
            }
        }
        self.after_ms = newest;
        Ok(())
    }
}

/// The number after "revision " in an event's words.
fn revision_in(detail: &str) -> Option<u64> {
    let (_, rest) = detail.rsplit_once("revision ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

// ---------------------------------------------------------------- etcd

/// The holder key of the VIP in etcd.
fn holder_key() -> String {
    format!("{PREFIX}/holders/{VIP}")
}

/// `etcdctl ARGS` against every endpoint, run in a running member's
/// namespace (the lab's etcd is reachable only on the fabric); stdout.
/// `limit`: the command is stopped then (a watch never ends by itself).
fn etcdctl(lab: &Lab, args: &[&str], limit: Option<Duration>) -> Result<String> {
    let i = (0..lab.etcd.len()).find(|&i| lab.etcd.is_running(i)).context("no etcd member runs")?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab.etcd.member_netns(i)]);
    if let Some(l) = limit {
        cmd.args(["timeout", &format!("{}", l.as_secs_f64())]);
    }
    cmd.arg("etcdctl").arg(format!("--endpoints={}", lab.etcd.endpoints().join(","))).args(args);
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    // `timeout` ends a watch with 124: that is how it is meant to end.
    ensure!(
        out.status.success() || (limit.is_some() && out.status.code() == Some(124)),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// One committed put of the holder key: its revision and the revision of
/// the record it replaced (its base), and the holder's vNIC.
#[derive(Debug)]
struct Put {
    revision: u64,
    base: u64,
    holder: Option<String>,
}

/// Every put of the holder key from revision `from` on, from etcd's own
/// history (`etcdctl watch --rev FROM --prev-kv -w json`, stopped after a
/// second: by then it has printed the history).
fn holder_history(lab: &Lab, from: u64) -> Result<Vec<Put>> {
    let key = holder_key();
    let rev = from.to_string();
    let args = ["watch", "--rev", &rev, "--prev-kv", "-w", "json", &key];
    let text = etcdctl(lab, &args, Some(Duration::from_millis(1500)))?;
    let mut puts = Vec::new();
    let de = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    for resp in de {
        let resp = resp.context("etcdctl watch's JSON")?;
        for ev in resp["Events"].as_array().into_iter().flatten() {
            let kv = &ev["kv"];
            let body = kv["value"].as_str().map(base64).transpose()?.unwrap_or_default();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            puts.push(Put {
                revision: kv["mod_revision"].as_u64().context("a watch event without mod_revision")?,
                base: ev["prev_kv"]["mod_revision"].as_u64().unwrap_or(0),
                holder: body["holder"]["vnic"].as_str().map(str::to_owned),
            });
        }
    }
    Ok(puts)
}

/// Standard base64 (etcdctl's JSON carries keys and values so).
fn base64(s: &str) -> Result<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == c).with_context(|| format!("not base64: {s:?}"))? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// The holder record in etcd now: (revision, holder vNIC).
fn holder_in_etcd(lab: &Lab) -> Result<(u64, Option<String>)> {
    let text = etcdctl(lab, &["get", &holder_key(), "-w", "json"], None)?;
    let v: Value = serde_json::from_str(&text)?;
    let kv = &v["kvs"][0];
    let body = kv["value"].as_str().map(base64).transpose()?.unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((kv["mod_revision"].as_u64().unwrap_or(0), body["holder"]["vnic"].as_str().map(str::to_owned)))
}

// ---------------------------------------------------------------- metrics

/// Host `h`'s `havip_cluster_commits_total{outcome=...}` samples: (won, lost).
fn commits(lab: &Lab, h: Hv) -> Result<(u64, u64)> {
    let samples = metrics_in(lab.topo.host_ns(h))?;
    let sample = |outcome: &str| -> Result<u64> {
        let name = format!("havip_cluster_commits_total{{outcome=\"{outcome}\"}}");
        let (_, v) =
            samples.iter().find(|(n, _)| *n == name).with_context(|| format!("no {name} in /metrics"))?;
        Ok(*v as u64)
    };
    Ok((sample("won")?, sample("lost")?))
}

// ---------------------------------------------------------------- labs

/// The three-host lab without keepalived: agents on etcd, the desired
/// state, holder verification off; vm-a claims and every host follows.
fn lab_without_keepalived() -> Result<Lab> {
    let opts = Options {
        base: scenario::Options { agent_sections: VERIFICATION_OFF.into(), ..Default::default() },
        ..Default::default()
    };
    let mut lab = Lab::create(LabId::unique("test"), true, opts)?;
    let started = (|| {
        lab.start_agents()?;
        lab.apply_desired()?;
        wait::until("vm-a's claim to be accepted", FAILOVER_TIMEOUT, || {
            claim(&lab, VM_A)?;
            // hv1 may not know the HAVIP yet: not yet, not an error.
            Ok((lab.holder_on(HV1).ok().flatten().as_deref() == Some(VM_A.vnic)).then_some(()))
        })?;
        lab.wait_holder_everywhere(VM_A, FAILOVER_TIMEOUT).map(drop)
    })();
    lab.on_error(started)?;
    Ok(lab)
}

/// A gratuitous ARP for the VIP from guest `g`: its claim.
fn claim(lab: &Lab, g: Guest) -> Result<()> {
    garp::send(&lab.topo.ns(g), GUEST_IF, VIP, g.mac())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ------------------------------- 1. leader killed, quorum lost and healed

#[test]
fn etcd_leader_killed_during_a_failover_and_quorum_lost_then_healed_every_host_converges() -> Result<()> {
    let _one = one_at_a_time();
    Lab::start(LabId::unique("test"), true, Options::default())?.run(|lab| {
        let (socks, poller, first) = begin(lab)?;

        // The failover and the leader's death at once: vm-a's keepalived
        // told to go (SIGTERM, not waited for: it sends a priority-0 advert
        // and vm-b takes over some 60 ms later), etcd's leader SIGKILLed
        // right after, so vm-b's claim is committed while etcd elects.
        let leader = lab.etcd.leader()?;
        let retries_before = cluster_status(&socks, HV2)?["commit_retries"].as_u64().unwrap_or(0);
        let pid_file = lab.dir().join(format!("keepalived-{}.pid", VM_A.name));
        let pid = std::fs::read_to_string(&pid_file).with_context(|| format!("reading {}", pid_file.display()))?;
        lab.timeline.step(&format!("SIGTERM vm-a's keepalived, SIGKILL etcd leader e{}", leader + 1));
        let term = Command::new("kill").args(["-TERM", pid.trim()]).status()?;
        ensure!(term.success(), "kill -TERM {}: {term}", pid.trim());
        let killed_at = Instant::now();
        lab.etcd.kill(leader)?;
        lab.keepalived(VM_A)?.stop()?;
        let to_b = wait_on(&socks, VM_B, first.revision)?;
        let after_leader = killed_at.elapsed();
        let (rev, holder) = holder_in_etcd(lab)?;
        ensure!(rev == to_b.revision && holder == to_b.holder, "etcd says {holder:?} at {rev}, the hosts {to_b}");
        let retries = cluster_status(&socks, HV2)?["commit_retries"].as_u64().unwrap_or(0) - retries_before;
        // The claim really met the dead leader: a first attempt failed.
        ensure!(retries >= 1, "vm-b's claim committed at once: the leader died too late ({to_b})");
        eprintln!(
            "leader e{} killed during the failover: every host on {to_b} after {:.0} ms ({retries} failed commit attempts on hv2)",
            leader + 1,
            ms(after_leader)
        );

        // Quorum lost during the next claim: vm-a's keepalived back (it
        // preempts some 300 ms after it starts), a second member SIGKILLed
        // at once. The claim cannot commit; hints re-point every host's
        // data plane meanwhile, on the base every host applied.
        let second = (0..lab.etcd.len()).find(|&i| i != leader).context("a second member")?;
        lab.keepalived(VM_A)?.restart()?;
        lab.timeline.step(&format!("SIGKILL etcd member e{}: quorum lost", second + 1));
        lab.etcd.kill(second)?;
        let lost_at = Instant::now();
        wait::until("vm-a to claim on hv1", FAILOVER_TIMEOUT, || {
            Ok((lab.holder_on(HV1)?.as_deref() == Some(VM_A.vnic)).then_some(()))
        })?;
        // Every agent notices and says so; quorum stays lost for longer
        // than the agents' lease TTL.
        wait::until("every host to say etcd is unreachable", CONVERGE, || {
            let all = HOSTS.iter().all(|h| cluster_status(&socks, *h).is_ok_and(|c| c["reachable"] == false));
            Ok(all.then_some(()))
        })?;
        let noticed = lost_at.elapsed();
        thread::sleep(Duration::from_secs(3).saturating_sub(lost_at.elapsed()));
        let during = views(&socks)?;
        eprintln!(
            "quorum lost: every host said etcd is unreachable after {:.0} ms; after {:.0} ms: {}",
            ms(noticed),
            ms(lost_at.elapsed()),
            shown(&during)
        );
        ensure!(
            during.iter().all(|v| v.holder.as_deref() == Some(VM_A.vnic)),
            "without quorum, vm-a's hint did not re-point every host: {}",
            shown(&during)
        );
        let healed_at = Instant::now();
        lab.timeline.step("restarting both etcd members");
        lab.etcd.start_member(leader)?;
        lab.etcd.start_member(second)?;
        lab.etcd.wait_healthy(CONVERGE)?;
        let healthy = healed_at.elapsed();
        let last = wait_on(&socks, VM_A, to_b.revision)?;
        let converged = healed_at.elapsed();
        ensure!(last.holder_host.as_deref() == Some(HV1.id), "vm-a's holder host is {last}");
        let (rev, holder) = holder_in_etcd(lab)?;
        ensure!(rev == last.revision && holder == last.holder, "etcd says {holder:?} at {rev}, the hosts {last}");
        eprintln!(
            "quorum healed: etcd healthy after {:.0} ms, every host on {last} after {:.0} ms",
            ms(healthy),
            ms(converged)
        );

        // Still agreed a moment later, and nobody ever went back.
        thread::sleep(Duration::from_millis(500));
        let end = views(&socks)?;
        ensure!(end.iter().all(|v| *v == last), "after converging: {}", shown(&end));
        let (reads, failed) = poller.check_monotonic()?;
        for h in HOSTS {
            let (revs, vnic) = holder_events(lab, h)?;
            ensure!(vnic.as_deref() == Some(VM_A.vnic), "{}'s last holder event is about {vnic:?}", h.id);
            ensure!(revs.iter().all(|r| *r <= last.revision), "{}'s holder events name {revs:?}", h.id);
        }
        eprintln!("{reads} views read ({failed} failed), no revision ever went down on any host");
        Ok(())
    })
}

// ------------------------------- 2. racing claims

#[test]
fn racing_claims_commit_once_per_base_revision_and_every_host_agrees() -> Result<()> {
    const ROUNDS: usize = 100;
    const BUDGET: Duration = Duration::from_secs(45);
    const AGREE_WITHIN: Duration = Duration::from_millis(100);
    let _one = one_at_a_time();
    lab_without_keepalived()?.run(|lab| {
        let (socks, poller, start) = begin(lab)?;
        let before: Vec<(u64, u64)> = [HV1, HV2].iter().map(|h| commits(lab, *h)).collect::<Result<_>>()?;
        let mut claimed = [ClaimCount::new(&socks, HV1, VM_A)?, ClaimCount::new(&socks, HV2, VM_B)?];
        let (ns_a, ns_b) = (lab.topo.ns(VM_A), lab.topo.ns(VM_B));
        let t0 = Instant::now();
        let mut prev = start.clone();
        let mut spreads = Vec::new();
        for round in 0..ROUNDS {
            ensure!(t0.elapsed() < BUDGET, "only {round} rounds in {BUDGET:?}");
            // The guest that does not hold claims first, the holder a moment
            // later (0 to 2 ms): that one's claim races the other's hint,
            // and both hosts commit against the same base when it wins.
            let (first, then) = if prev.holder.as_deref() == Some(VM_A.vnic) { (VM_B, VM_A) } else { (VM_A, VM_B) };
            let (ns1, ns2) = if first == VM_A { (&ns_a, &ns_b) } else { (&ns_b, &ns_a) };
            let gap = Duration::from_micros([0, 300, 700, 1200, 2000][round % 5]);
            let (n1, n2) = (ns1.clone(), ns2.clone());
            let other = thread::spawn(move || {
                thread::sleep(gap);
                garp::send(&n2, GUEST_IF, VIP, then.mac())
            });
            garp::send(&n1, GUEST_IF, VIP, first.mac())?;
            other.join().expect("the second claim's thread")?;
            let now = wait_agree(&socks, &format!("round {round}: every host on one newer record"), CONVERGE, |v| {
                v.revision > prev.revision && v.holder.is_some()
            })?;
            // How long the hosts disagreed: from the first host showing the
            // round's record to the last.
            let seen = poller.seen();
            let entered: Vec<Instant> = seen
                .changes
                .iter()
                .map(|cs| cs.iter().rev().find(|c| c.view == now).map_or(Instant::now(), |c| c.at))
                .collect();
            drop(seen);
            let spread = *entered.iter().max().unwrap() - *entered.iter().min().unwrap();
            spreads.push(spread);
            prev = now;
            for c in &mut claimed {
                c.update(&socks)?;
            }
        }
        let elapsed = t0.elapsed();
        // Let the poller see the last round settle before counting.
        thread::sleep(Duration::from_millis(50));

        let puts = holder_history(lab, start.revision + 1)?;
        let after: Vec<(u64, u64)> = [HV1, HV2].iter().map(|h| commits(lab, *h)).collect::<Result<_>>()?;
        let won: u64 = before.iter().zip(&after).map(|(b, a)| a.0 - b.0).sum();
        let lost: u64 = before.iter().zip(&after).map(|(b, a)| a.1 - b.1).sum();
        for c in &mut claimed {
            c.update(&socks)?;
        }
        let claims: u64 = claimed.iter().map(|c| c.n).sum();
        let max = *spreads.iter().max().unwrap();
        let mut sorted = spreads.clone();
        sorted.sort();
        eprintln!(
            "{ROUNDS} rounds in {:.1} s: {claims} claims, {} commits in etcd, won {won}, lost {lost} (races with a loser); \
             hosts disagreed p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            elapsed.as_secs_f64(),
            puts.len(),
            ms(sorted[ROUNDS / 2]),
            ms(sorted[ROUNDS * 99 / 100]),
            ms(max),
        );

        // One commit per base revision: every put replaced the one before it.
        let mut base = start.revision;
        for p in &puts {
            ensure!(p.base == base, "the put at revision {} replaced revision {}, not {base}: {puts:?}", p.revision, p.base);
            base = p.revision;
        }
        ensure!(base == prev.revision, "etcd's last holder revision {base}, the hosts agree on {prev}");
        let last_holder = puts.last().and_then(|p| p.holder.clone());
        ensure!(last_holder == prev.holder, "etcd's last holder {last_holder:?}, the hosts agree on {prev}");
        ensure!(puts.len() as u64 == won, "{} puts of the holder key, {won} commits won", puts.len());
        ensure!(puts.len() >= ROUNDS, "{} puts for {ROUNDS} rounds", puts.len());
        ensure!(won + lost == claims, "{claims} claims, {won} commits won and {lost} lost");
        ensure!(max <= AGREE_WITHIN, "the hosts disagreed for up to {:.1} ms (limit {AGREE_WITHIN:?})", ms(max));
        poller.check_monotonic()?;
        Ok(())
    })
}

// ------------------------------- 3. compaction while a watch is down

/// hv3 cut off from etcd until it says so (its watch broken), four commits
/// meanwhile, the history compacted away, hv3 healed: it shows etcd's last
/// record at once, whichever way it catches up (a fresh snapshot after a
/// broken watch, or a compacted watch's resync; the log says which).
#[test]
fn compaction_while_a_hosts_watch_is_down_misses_no_holder_change() -> Result<()> {
    let _one = one_at_a_time();
    lab_without_keepalived()?.run(|lab| {
        let (socks, poller, start) = begin(lab)?;

        lab.cut_from_etcd(HV3)?;
        wait::until("hv3 to say etcd is unreachable", CONVERGE, || {
            Ok((cluster_status(&socks, HV3)?["reachable"] == false).then_some(()))
        })?;
        // Four failovers while hv3 hears nothing from etcd (its hints go on:
        // the first is applied on hv3, the rest are stale there).
        let mut last = start.clone();
        for (i, g) in [VM_B, VM_A, VM_B, VM_A].into_iter().enumerate() {
            claim(lab, g)?;
            let two = &socks[..2];
            last = wait_on(two, g, last.revision).with_context(|| format!("failover {i}"))?;
        }
        let compacted = lab.etcd.compact_to_latest()?;
        lab.timeline.step(&format!("etcd compacted to revision {compacted}"));
        let cut_view = views(&socks)?[2].clone();
        ensure!(cut_view.revision < last.revision, "hv3 saw {cut_view} while cut off");

        let healed = Instant::now();
        lab.heal(HV3)?;
        let now = wait_agree(&socks, "hv3 to resync with the others", CONVERGE, |v| *v == last)?;
        let took = healed.elapsed();
        ensure!(now.holder.as_deref() == Some(VM_A.vnic), "the hosts agree on {now}");
        let (rev, _) = holder_in_etcd(lab)?;
        ensure!(rev == last.revision, "etcd's record is at {rev}, the hosts at {}", last.revision);
        let log = std::fs::read_to_string(lab.dir().join(HV3.id).join("agent.log")).unwrap_or_default();
        let how = if log.contains("fell behind a compaction") {
            "its watch was compacted: resynced"
        } else if log.contains("reachable again: resynced") {
            "etcd reachable again: resynced"
        } else {
            "resynced"
        };
        eprintln!(
            "hv3 cut at {} (showed {cut_view} meanwhile), 4 commits, compacted to {compacted}; \
             after the heal it shows {now} after {:.0} ms ({how})",
            start,
            ms(took)
        );
        poller.check_monotonic()?;
        Ok(())
    })
}

// ------------------------------- 4. a stale hint

/// Sends a hint datagram from inside host `from`'s namespace to host `to`'s
/// hint port, as a peer's agent would.
fn send_hint(lab: &Lab, from: Hv, to: Hv, hint: &Hint) -> Result<()> {
    let datagram = peers::encode_hint(hint);
    let dest = (to.underlay(), 4791);
    netns::run_in(lab.topo.host_ns(from), move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.send_to(&datagram, dest)?;
        Ok(())
    })
}

/// A hint whose base is older than the record hv3 applied changes nothing
/// there and is counted as ignored. What is honest to say of a hint on the
/// right base: hv3 follows it (that is what hints are for) and nothing but
/// a newer record undoes it: etcd's record is not newer, so a hint with no
/// commit behind it (forged here, or from a host that died before its
/// commit) holds on that host until the VIP's next commit. The test shows
/// that the next commits overwrite it and that it is stale afterwards.
#[test]
fn a_stale_hint_is_ignored() -> Result<()> {
    let _one = one_at_a_time();
    lab_without_keepalived()?.run(|lab| {
        // A record newer than the first: vm-b, then vm-a again.
        let (socks, poller, first) = begin(lab)?;
        claim(lab, VM_B)?;
        let on_b = wait_on(&socks, VM_B, first.revision)?;
        claim(lab, VM_A)?;
        let applied = wait_on(&socks, VM_A, on_b.revision)?;

        let forged = |base: u64| Hint {
            vip: VIP,
            holder: Some(Holder { host: HV2.id.into(), vnic: VM_B.vnic.into(), mac: VM_B.mac(), epoch: 1 }),
            base,
            from: HV2.id.into(),
        };
        let status = |key: &str| -> Result<u64> {
            cluster_status(&socks, HV3)?[key].as_u64().with_context(|| format!("no cluster.{key} in hv3's status"))
        };
        // Stale: based on vm-b's record, which hv3 has moved past.
        let ignored = status("hints_ignored")?;
        send_hint(lab, HV2, HV3, &forged(on_b.revision))?;
        wait::until("hv3 to count the stale hint as ignored", CONVERGE, || {
            Ok((status("hints_ignored")? > ignored).then_some(()))
        })?;
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let v = &views(&socks)?[2];
            ensure!(*v == applied, "hv3 followed a stale hint: {v}, its record {applied}");
            thread::sleep(Duration::from_millis(10));
        }

        // On the applied base it is applied: a hint is believed until the
        // record that follows it. A forged one has no commit behind it, so
        // hv3 follows it until the next record (etcd's, unchanged, is not
        // newer than what hv3 applied).
        let applied_hints = status("hints_applied")?;
        send_hint(lab, HV2, HV3, &forged(applied.revision))?;
        let hinted = wait::until("hv3 to follow the hint on its base", CONVERGE, || {
            let v = views(&socks)?[2].clone();
            Ok((v.holder.as_deref() == Some(VM_B.vnic)).then_some(v))
        })?;
        ensure!(hinted.revision == applied.revision, "a hint on base {} shown as {hinted}", applied.revision);
        ensure!(status("hints_applied")? > applied_hints, "hints_applied did not grow");
        ensure!(
            holder_in_etcd(lab)? == (applied.revision, Some(VM_A.vnic.to_owned())),
            "a hint changed etcd's record"
        );

        // The next record overwrites it on hv3: a real claim and its commit.
        claim(lab, VM_B)?;
        let next = wait_on(&socks, VM_B, applied.revision)?;
        claim(lab, VM_A)?;
        let last = wait_on(&socks, VM_A, next.revision)?;
        // The hint that was current is stale now.
        let ignored = status("hints_ignored")?;
        send_hint(lab, HV2, HV3, &forged(applied.revision))?;
        wait::until("hv3 to ignore the old hint", CONVERGE, || Ok((status("hints_ignored")? > ignored).then_some(())))?;
        ensure!(views(&socks)?[2] == last, "hv3 followed a hint on an old base");
        eprintln!("stale hint ignored at {applied}; hint on the base applied ({hinted}); records since: {next}, {last}");
        poller.check_monotonic()?;
        Ok(())
    })
}

#[test]
fn revisions_are_read_from_event_words() {
    assert_eq!(revision_in("vnic-b on hv2 holds 198.18.1.50 (was none), revision 42 (claim)"), Some(42));
    assert_eq!(
        revision_in("198.18.1.50 has no holder (was vnic-a on hv1): host hv1 is down, revision 7"),
        Some(7)
    );
    assert_eq!(revision_in("vnic-a holds 198.18.1.50 (was none), epoch 3, failovers 0"), None);
    assert_eq!(base64("eyJhIjoxfQ==").unwrap(), b"{\"a\":1}");
}
