//! Issue 12, items 4, 8 and 9, against the real agent in a lab of its own,
//! through `havipctl` and by hand on the API socket:
//! - item 4: every value a client puts into a request is encoded, and the
//!   server re-validates every path parameter as the type it is: a crafted
//!   VIP or vNIC argument (`?`, `&`, `/`, `#`, `%2F`, `..`) is refused and
//!   changes nothing;
//! - item 8: an accepted change never makes the next start fail: changes
//!   that conflict with the config's desired state leave the restarted agent
//!   serving the store's state and saying why;
//! - item 9: `events --follow` follows the agent across a restart.

mod control_support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use control_support::Ctl;
use havip_api::{view::AgentStatus, Event, EventKind};
use havip_lab::{agent, netns::LabId, scenario::Lab, wait};
use serde_json::Value;

/// No verification: the guests here answer no probes; nothing here is about holders.
const QUIET: &str = "[verification]\nenabled = false";

/// How long one raw request may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A lab with the agent started on the lab's config (which holds desired
/// state: subnet vpc1, vnic-a/b/c, HAVIP 198.18.1.50 with vnic-a and vnic-b
/// and EIP 203.0.113.10), `body` run on it; the lab is torn down on every path.
fn with_agent(body: impl FnOnce(&mut Lab, &Ctl) -> Result<()>) -> Result<()> {
    let started = Instant::now();
    let mut lab = Lab::create(LabId::unique("test"), true)?;
    let up = lab.start_agent_with("", QUIET);
    lab.on_error(up)?;
    eprintln!("lab and agent up in {:?}", started.elapsed());
    let result = lab.run(|lab| {
        let ctl = Ctl::of(lab)?;
        body(lab, &ctl)
    });
    eprintln!("test body and teardown done in {:?}", started.elapsed());
    result
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).trim().to_owned()
}

// ---------------------------------------------------------------------------
// Item 4: CLI arguments and path parameters
// ---------------------------------------------------------------------------

/// The HAVIP of the item: in use (two members), so only `--force` may delete it.
const CRAFTED_VIP: &str = "198.18.1.60";

/// Runs `havipctl ARGS`, which must be refused with exit `status` by rule
/// `rule`, print nothing on stdout (no "deleted", no table), and leave the
/// store as it was (revision included).
fn refused_unchanged(ctl: &Ctl, args: &[&str], status: i32, rule: &str) -> Result<String> {
    let before = ctl.desired()?;
    let out = ctl.run(args)?;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    ensure!(
        out.status.code() == Some(status),
        "havipctl {args:?}: exit {:?}, expected {status}; stdout {stdout:?}, stderr {stderr:?}",
        out.status.code()
    );
    ensure!(stdout.is_empty(), "havipctl {args:?} was refused but printed {stdout:?}");
    let prefix = format!("havipctl: refused by rule {rule}: ");
    ensure!(stderr.starts_with(&prefix), "havipctl {args:?}: {stderr:?}, expected {prefix:?}…");
    ensure!(ctl.desired()? == before, "havipctl {args:?} was refused but the store changed");
    Ok(stderr)
}

/// The HAVIP is there with exactly vnic-a and vnic-b.
fn still_whole(ctl: &Ctl) -> Result<()> {
    let h = ctl.describe(CRAFTED_VIP)?;
    let members: Vec<&str> = h.members.iter().map(|m| m.vnic.as_str()).collect();
    ensure!(members == ["vnic-a", "vnic-b"], "{CRAFTED_VIP}'s members are now {members:?}");
    Ok(())
}

/// One HTTP/1.1 exchange, written by hand, on a fresh connection to the API
/// socket: `(status, content type, body)`. The path goes out byte for byte.
fn raw(sock: &Path, method: &str, path: &str) -> Result<(u16, String, Vec<u8>)> {
    let mut conn = UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: havip\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).with_context(|| format!("reading the answer to {method} {path}"))?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let status = head.split(' ').nth(1).context("no status")?.parse()?;
    let ty = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    ensure!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "{method} {path}: a chunked error answer: {head}"
    );
    Ok((status, ty, answer[split + 4..].to_vec()))
}

/// `method path` by hand must answer `status` with `{"error": text, "rule": rule}`
/// JSON (`rule` None: null) and leave the store as it was.
fn raw_refused(
    ctl: &Ctl,
    sock: &Path,
    method: &str,
    path: &str,
    status: u16,
    rule: Option<&str>,
) -> Result<String> {
    let before = ctl.desired()?;
    let (code, ty, body) = raw(sock, method, path)?;
    let shown = String::from_utf8_lossy(&body).to_string();
    ensure!(code == status, "{method} {path} answered {code}, expected {status}: {shown}");
    ensure!(ty.starts_with("application/json"), "{method} {path} answered {ty:?}, not JSON: {shown}");
    let v: Value = serde_json::from_slice(&body).with_context(|| format!("{method} {path}: {shown}"))?;
    let error = v.get("error").and_then(Value::as_str).with_context(|| format!("{method} {path}: {v}"))?;
    let want = rule.map_or(Value::Null, |r| Value::String(r.to_owned()));
    ensure!(v.get("rule") == Some(&want), "{method} {path}: rule {:?}, expected {want}: {v}", v.get("rule"));
    ensure!(ctl.desired()? == before, "{method} {path} answered {code} but the store changed");
    Ok(error.to_owned())
}

/// Issue 12 item 4: `havipctl delete '198.18.1.60?force=true&'` deleted an
/// in-use HAVIP without `--force`; a crafted VIP argument disassociated a
/// member while printing "deleted". Now every argument is one path segment
/// (percent-encoded), and the agent parses each path parameter as what it
/// is: a VIP as an IPv4 address, a name as a name (400, rule well-formed,
/// havipctl exit 1). Nothing is deleted, nothing is disassociated.
#[test]
fn crafted_arguments_and_encoded_path_parameters_are_refused_and_change_nothing() -> Result<()> {
    with_agent(|lab, ctl| {
        let sock = lab.agent()?.spec().api_socket();
        ctl.ok(&[
            "create",
            "--subnet",
            "vpc1",
            "--vip",
            CRAFTED_VIP,
            "--member",
            "vnic-a",
            "--member",
            "vnic-b",
        ])?;
        // Without --force the HAVIP cannot go: it has members.
        refused_unchanged(ctl, &["delete", CRAFTED_VIP], 1, "delete-only-unused")?;

        // The query smuggled into the VIP argument is part of the VIP: not an address.
        let err = refused_unchanged(ctl, &["delete", "198.18.1.60?force=true&"], 1, "well-formed")?;
        ensure!(err.contains("198.18.1.60?force=true&"), "the refusal does not quote the argument: {err}");
        eprintln!("delete '198.18.1.60?force=true&': exit 1, {err}");
        // With --json the refusal is the API's document, on stdout.
        let out = ctl.run(&["--json", "delete", "198.18.1.60?force=true&"])?;
        ensure!(out.status.code() == Some(1), "--json delete: exit {:?}", out.status.code());
        let v: Value = serde_json::from_slice(&out.stdout).context("--json delete's refusal")?;
        ensure!(v["rule"] == "well-formed" && v["status"] == 400, "--json delete's refusal: {v}");
        still_whole(ctl)?;

        // A VIP or vNIC argument crafted to reach another path: refused, nothing disassociated.
        for (vip, vnic) in [
            ("198.18.1.60/members/vnic-a?x=", "vnic-b"),
            ("198.18.1.60/members/vnic-a#", "vnic-b"),
            ("198.18.1.60%2Fmembers%2Fvnic-a", "vnic-b"),
            ("..", "vnic-a"),
            ("198.18.1.60/..", "vnic-a"),
            (CRAFTED_VIP, "vnic-a?x="),
            (CRAFTED_VIP, "vnic-a#"),
            (CRAFTED_VIP, "vnic-a/"),
            (CRAFTED_VIP, "vnic-a%2F"),
            (CRAFTED_VIP, "vnic-c/../vnic-a"),
            (CRAFTED_VIP, ".."),
        ] {
            refused_unchanged(ctl, &["disassociate", vip, vnic], 1, "well-formed")?;
            still_whole(ctl)?;
        }

        // vnic-c is in no HAVIP: a request that reached DELETE /v1/vnics/vnic-c would remove it.
        for name in
            ["vnic-c?x=", "vnic-c/", "vnic-c%2F", "x/../vnic-c", "../vnics/vnic-c", "vnic-c#", "vnic%"]
        {
            refused_unchanged(ctl, &["vnic", "delete", name], 1, "well-formed")?;
        }
        for name in ["vpc1/", "vpc1%2F..", "../subnets/vpc1"] {
            refused_unchanged(ctl, &["subnet", "delete", name], 1, "well-formed")?;
        }
        ensure!(ctl.desired()?.state.vnics.contains_key("vnic-c"), "vnic-c is gone");

        // By hand on the socket: an encoded slash or dot-dot is decoded into the
        // parameter, which is then not what it must be.
        for (method, path) in [
            ("DELETE", "/v1/havips/198.18.1.60%3Fforce%3Dtrue"),
            ("DELETE", "/v1/havips/198.18.1.60%2Fmembers%2Fvnic-a"),
            ("DELETE", "/v1/havips/198.18.1.60%2F..%2F..%2Fvnics%2Fvnic-c?force=true"),
            ("DELETE", "/v1/havips/%2E%2E/members/vnic-a"),
            ("DELETE", "/v1/havips/198.18.1.60/members/vnic-a%2F..%2Fvnic-b"),
            ("DELETE", "/v1/havips/198.18.1.60/members/%2E%2E"),
            ("DELETE", "/v1/havips/198.18.1.60/members/%2E%2E%2Fvnic-a"),
            ("PUT", "/v1/havips/198.18.1.60/members/vnic-c%2F"),
            ("DELETE", "/v1/havips/198.18.1.60%2F/eip"),
            ("DELETE", "/v1/vnics/vnic-c%2F"),
            ("DELETE", "/v1/vnics/%2E%2E%2Fvnics%2Fvnic-c"),
            ("DELETE", "/v1/vnics/vnic-c%3Fx"),
            ("DELETE", "/v1/vnics/vnic-c%25"),
            ("DELETE", "/v1/subnets/vpc1%2F%2E%2E"),
            ("GET", "/v1/havips/198.18.1.60%2F"),
        ] {
            let error = raw_refused(ctl, &sock, method, path, 400, Some("well-formed"))?;
            ensure!(!error.is_empty(), "{method} {path}: an empty error");
            still_whole(ctl)?;
        }
        // Literal dot-dot segments are not resolved: no route has that shape.
        for path in ["/v1/havips/198.18.1.60/../../vnics/vnic-c", "/v1/vnics/x/../vnic-c"] {
            raw_refused(ctl, &sock, "DELETE", path, 404, None)?;
        }
        ensure!(ctl.desired()?.state.vnics.contains_key("vnic-c"), "vnic-c is gone");
        still_whole(ctl)?;

        // What is well-formed still works: the encoding changes no valid argument.
        ctl.ok(&["disassociate", CRAFTED_VIP, "vnic-b"])?;
        let h = ctl.describe(CRAFTED_VIP)?;
        ensure!(h.members.len() == 1 && h.members[0].vnic == "vnic-a", "after disassociate: {:?}", h.members);
        ctl.ok(&["delete", "--force", CRAFTED_VIP])?;
        let out = ctl.run(&["describe", CRAFTED_VIP])?;
        ensure!(out.status.code() == Some(2), "describe of the deleted HAVIP: exit {:?}", out.status.code());
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Item 8: an accepted change never makes the next start fail
// ---------------------------------------------------------------------------

/// The HAVIP the API makes in place of the config's.
const OTHER_VIP: &str = "198.18.1.61";
/// The lab config's EIP (bound to 198.18.1.50 there).
const CONFIG_EIP: &str = "203.0.113.10";

/// Issue 12 item 8: accepted API changes make the config's desired state
/// break a rule when it is applied again at the next start: the config's
/// HAVIP 198.18.1.50 is deleted and its EIP bound to another HAVIP, so
/// re-creating 198.18.1.50 with that EIP breaks eip-bound-once. The agent
/// restarts anyway (READY), serves the store's state unchanged (the config
/// is applied all or nothing), and says why: `status` ("config: NOT
/// APPLIED: …"), `status --json` (`store.config_not_applied`), a
/// `config_not_applied` event, and the `havip_config_applied` metric at 0.
#[test]
fn changes_that_conflict_with_the_config_never_stop_the_next_start() -> Result<()> {
    with_agent(|lab, ctl| {
        let s: AgentStatus = ctl.json(&["status"])?;
        ensure!(s.store.config_not_applied.is_none(), "the lab's config was not applied: {:?}", s.store);

        ctl.ok(&["delete", "--force", "198.18.1.50"])?;
        ctl.ok(&[
            "create", "--subnet", "vpc1", "--vip", OTHER_VIP, "--member", "vnic-a", "--member", "vnic-b",
            "--eip", CONFIG_EIP,
        ])?;
        let before = ctl.desired()?;

        let old_pid = s.pid;
        lab.agent()?.restart().context("the agent must start on a conflicting config")?;
        let s: AgentStatus = ctl.json(&["status"])?;
        ensure!(s.pid != old_pid, "the same agent (pid {old_pid}) answers after the restart");

        // The store's state, as it was: the config changed nothing.
        let after = ctl.desired()?;
        ensure!(after == before, "the store changed at the start: {before:?} -> {after:?}");
        let h = ctl.describe(OTHER_VIP)?;
        ensure!(
            h.eip.map(|e| e.to_string()).as_deref() == Some(CONFIG_EIP),
            "{OTHER_VIP}'s EIP after the restart: {:?}",
            h.eip
        );
        let out = ctl.run(&["describe", "198.18.1.50"])?;
        ensure!(
            out.status.code() == Some(2),
            "the config's HAVIP after the restart: exit {:?}: {}",
            out.status.code(),
            text(&out.stdout)
        );

        // Said on every surface.
        let why = s.store.config_not_applied.context("status --json: store.config_not_applied is null")?;
        ensure!(why.contains("eip-bound-once"), "config_not_applied does not name the rule: {why}");
        ensure!(
            why.contains(&format!("revision {}", before.revision)),
            "config_not_applied does not name the store's revision {}: {why}",
            before.revision
        );
        eprintln!("after the restart: {why}");
        let status = ctl.ok(&["status"])?;
        let line = status
            .lines()
            .find(|l| l.starts_with("config:"))
            .with_context(|| format!("no config line in status:\n{status}"))?;
        ensure!(line.contains("NOT APPLIED: ") && line.contains(&why), "status's config line: {line}");

        let events = ctl.ok(&["--json", "events"])?;
        let found: Vec<Event> = events
            .lines()
            .map(serde_json::from_str::<Event>)
            .collect::<Result<_, _>>()
            .context("reading events --json")?;
        let ev = found
            .iter()
            .find(|e| e.kind == EventKind::ConfigNotApplied)
            .with_context(|| format!("no config_not_applied event in:\n{events}"))?;
        ensure!(ev.detail == why, "the event says {:?}, status says {why:?}", ev.detail);
        let table = ctl.ok(&["events"])?;
        ensure!(table.contains("config_not_applied"), "events does not show config_not_applied:\n{table}");

        let applied = control_support::metrics(lab)?
            .into_iter()
            .find(|(n, _)| n == "havip_config_applied")
            .context("no havip_config_applied metric")?;
        ensure!(applied.1 == 0.0, "havip_config_applied is {}", applied.1);

        // The agent works on: an accepted change is accepted.
        ctl.ok(&["disassociate", OTHER_VIP, "vnic-b"])?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Item 9: events --follow across an agent restart
// ---------------------------------------------------------------------------

/// `havipctl events --follow --json` as a child process whose stdout and
/// stderr lines are collected as they come; killed when dropped.
struct Follower {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(bin: &Path, sock: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .arg("--socket")
            .arg(sock)
            .args(["--json", "events", "--follow"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} events --follow", bin.display()))?;
        let (out, err) = (Arc::default(), Arc::default());
        Self::collect(child.stdout.take().context("no stdout")?, Arc::clone(&out));
        Self::collect(child.stderr.take().context("no stderr")?, Arc::clone(&err));
        Ok(Self { child, out, err })
    }

    fn collect(from: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
        thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                into.lock().unwrap().push(line);
            }
        });
    }

    fn stdout(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    /// Waits for an event line with `detail` in it.
    fn wait_event(&self, detail: &str, timeout: Duration) -> Result<Event> {
        wait::until(&format!("the follower to print an event {detail:?}"), timeout, || {
            if let Some(line) = self.stdout().iter().find(|l| l.contains(detail)) {
                return Ok(Some(serde_json::from_str(line).with_context(|| format!("event line {line}"))?));
            }
            Ok(None)
        })
        .with_context(|| format!("stdout:\n{}\nstderr:\n{}", self.stdout().join("\n"), self.stderr()))
    }

    fn running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn havipctl() -> Result<PathBuf> {
    let bin = agent::locate_binary()?.with_file_name("havipctl");
    ensure!(bin.is_file(), "{} not found: run `cargo build --workspace --bins` first", bin.display());
    Ok(bin)
}

/// Issue 12 item 9: `events --follow` died when the agent restarted. Now
/// the follower says on stderr that the stream ended and it reconnects,
/// follows the new agent, and prints the new agent's events: a change made
/// after the restart reaches it. The follower is killed on every path.
#[test]
fn events_follow_follows_the_agent_across_a_restart() -> Result<()> {
    with_agent(|lab, ctl| {
        let sock = lab.agent()?.spec().api_socket();
        let mut follower = Follower::start(&havipctl()?, &sock)?;
        let old: AgentStatus = ctl.json(&["status"])?;

        ctl.ok(&["subnet", "add", "before-restart", "198.19.1.0/24"])?;
        let ev = follower.wait_event("subnet before-restart registered", Duration::from_secs(3))?;
        ensure!(ev.kind == EventKind::Changed, "the change before the restart: {ev:?}");

        // Stopped for longer than the follower's 1 s between tries: it must retry, not die.
        let restarted = Instant::now();
        lab.agent()?.stop().context("stopping the agent")?;
        wait::until("the follower to retry while the agent is down", Duration::from_secs(5), || {
            Ok(follower.stderr().contains("retrying in 1s (2/").then_some(()))
        })
        .with_context(|| format!("the follower's stderr:\n{}", follower.stderr()))?;
        ensure!(follower.running()?, "the follower exited while the agent was down: {}", follower.stderr());
        lab.agent()?.restart().context("starting the agent again")?;
        let new: AgentStatus = ctl.json(&["status"])?;
        ensure!(new.pid != old.pid, "the same agent (pid {}) answers after the restart", old.pid);

        ctl.ok(&["subnet", "add", "after-restart", "198.19.2.0/24"])?;
        let ev = follower.wait_event("subnet after-restart registered", Duration::from_secs(5))?;
        eprintln!(
            "the new agent's change reached the follower {:?} after the restart began",
            restarted.elapsed()
        );
        ensure!(ev.kind == EventKind::Changed, "the change after the restart: {ev:?}");

        let err = follower.stderr();
        ensure!(
            err.contains("havipctl: the agent's event stream ended; reconnecting"),
            "the follower's stderr does not say it reconnects:\n{err}"
        );
        // It retried, and names the agent it follows now.
        let again = format!("havipctl: following the agent again (pid {})", new.pid);
        ensure!(err.contains(&again), "the follower's stderr does not say {again:?}:\n{err}");
        ensure!(!err.contains("gave up"), "the follower gave up:\n{err}");
        // The old agent's events are not printed twice.
        let lines = follower.stdout();
        let before = lines.iter().filter(|l| l.contains("subnet before-restart registered")).count();
        ensure!(before == 1, "the change before the restart printed {before} times");
        ensure!(follower.running()?, "the follower exited: {err}");
        let printed = lines.len();
        drop(follower);
        eprintln!("follower: {printed} event lines; stderr:\n{err}");
        Ok(())
    })
}
