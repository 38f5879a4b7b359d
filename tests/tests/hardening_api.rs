//! The operator API under abuse (issue 12, items 3, 9 and 10), against the
//! real agent in a lab: idle and half-open connections on both ports, a
//! scrape flood at thousands of HAVIPs, every kind of malformed request, and
//! an event follower that reads too slowly. Traffic goes only to the agent's
//! Unix socket and to its metrics address inside the lab's hv namespace.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use havip_api::{view::AgentStatus, Event};
use havip_lab::{agent, netns, netns::LabId, scenario::Lab, wait};
use serde_json::Value;

/// How long one request of the test may take before it counts as stalled.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 exchange on a fresh connection to the agent's API socket:
/// `(status, content type, body)`.
fn call(
    sock: &Path,
    method: &str,
    path: &str,
    ty: Option<&str>,
    body: &[u8],
) -> Result<(u16, String, Vec<u8>)> {
    let mut conn = UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: havip\r\nConnection: close\r\n");
    if let Some(ty) = ty {
        head += &format!("Content-Type: {ty}\r\n");
    }
    head += &format!("Content-Length: {}\r\n\r\n", body.len());
    conn.write_all(head.as_bytes())?;
    // A server may answer (413) and stop reading before the whole body is in.
    if let Err(e) = conn.write_all(body) {
        ensure!(matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset), "sending: {e}");
    }
    let mut raw = Vec::new();
    if let Err(e) = conn.read_to_end(&mut raw) {
        // The server answered and closed with our body unread: the kernel
        // then resets the connection, after the answer it queued for us.
        ensure!(
            e.kind() == ErrorKind::ConnectionReset && !raw.is_empty(),
            "reading the answer to {method} {path}: {e}"
        );
    }
    parse(&raw).with_context(|| format!("the answer to {method} {path}"))
}

fn parse(raw: &[u8]) -> Result<(u16, String, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).context("no status")?.parse()?;
    let ty = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Ok((status, ty, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").context("chunk size line")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol])?.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

fn status(sock: &Path) -> Result<AgentStatus> {
    let (code, _, body) = call(sock, "GET", "/v1/status", None, b"")?;
    ensure!(code == 200, "status answered {code}: {}", String::from_utf8_lossy(&body));
    Ok(serde_json::from_slice(&body)?)
}

fn havipctl() -> Result<PathBuf> {
    let bin = agent::locate_binary()?.with_file_name("havipctl");
    ensure!(bin.is_file(), "{} not found: run `cargo build --workspace --bins` first", bin.display());
    Ok(bin)
}

/// Runs `havipctl --socket SOCK args…`, killing it after `deadline`:
/// `(finished in time and succeeded, elapsed, stderr)`.
fn havipctl_within(sock: &Path, args: &[&str], deadline: Duration) -> Result<(bool, Duration, String)> {
    let started = Instant::now();
    let mut child = Command::new(havipctl()?)
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    loop {
        if let Some(st) = child.try_wait()? {
            let mut err = String::new();
            child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return Ok((st.success(), started.elapsed(), err));
        }
        if started.elapsed() > deadline {
            child.kill()?;
            child.wait()?;
            return Ok((false, started.elapsed(), format!("still waiting after {deadline:?}: killed")));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn with_agent(body: impl FnOnce(&mut Lab, &Path) -> Result<()>) -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        let sock = lab.agent()?.spec().api_socket();
        body(lab, &sock)
    })
}

/// Issue 12 item 3: ~1,000 half-open connections stalled `havipctl status`
/// at the unit's default of 1,024 descriptors. Here: the agent held to
/// 1,024 descriptors, 300 half-open connections on the API socket and 900
/// idle ones on the metrics port; `havipctl status` must still answer, and
/// the server must drop an idle connection itself.
#[test]
fn half_open_connections_do_not_stall_the_api() -> Result<()> {
    const API_CONNS: usize = 300;
    const METRICS_CONNS: usize = 900;
    with_agent(|lab, sock| {
        let pid = status(sock)?.pid;
        // The descriptors the old unit left the agent (systemd's default).
        let out = Command::new("prlimit").args([&format!("--pid={pid}"), "--nofile=1024:1024"]).output()?;
        ensure!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));

        let opened = Instant::now();
        let mut api = Vec::new();
        for _ in 0..API_CONNS {
            let mut c = UnixStream::connect(sock)?;
            // Headers begun, never finished.
            c.write_all(b"GET /v1/status HTTP/1.1\r\nHost: havip\r\n")?;
            api.push(c);
        }
        let metrics = netns::run_in(lab.topo.hv(), || {
            let addr = agent::METRICS.parse()?;
            let mut conns = Vec::new();
            for _ in 0..METRICS_CONNS {
                // A backlog that is full no longer completes handshakes.
                if let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    let _ = c.write_all(b"GET /metrics HTTP/1.1\r\n");
                    conns.push(c);
                }
            }
            Ok(conns)
        })?;
        eprintln!(
            "{} half-open API connections, {} idle metrics connections in {:?}",
            api.len(),
            metrics.len(),
            opened.elapsed()
        );

        let (ok, took, err) = havipctl_within(sock, &["status"], Duration::from_secs(8))?;
        eprintln!("havipctl status under them: ok={ok} in {took:?} {err}");
        ensure!(ok, "havipctl status did not answer under idle connections ({took:?}): {err}");

        // The server, not the client, ends a connection whose headers never come.
        let c = &mut api[0];
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 512];
        let closed = match c.read(&mut buf) {
            Ok(_) => true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true,
        };
        eprintln!("a half-open API connection ended by the agent after {:?}: {closed}", opened.elapsed());
        ensure!(closed, "a half-open API connection was still open {:?} after it was made", opened.elapsed());
        drop(metrics);
        Ok(())
    })
}

/// HAVIPs for the scrape flood: /metrics is ~0.9 MB per 1,000.
const FLOOD_HAVIPS: usize = 10_000;
/// Concurrent scrapers.
const SCRAPERS: usize = 16;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(5);
/// The slowest API answer allowed during the flood.
const API_BOUND: Duration = Duration::from_millis(500);

/// Issue 12 item 3: at 10,000 HAVIPs a scrape flood pushed API latency to
/// 1-2 s. Here: 16 scrapers in a loop for 5 s; every `GET /v1/status` and
/// `GET /v1/havips/{vip}` meanwhile answers within 500 ms, and every scrape
/// is answered (200, or 503 when no slot is free) rather than queued.
#[test]
fn api_answers_quickly_under_a_scrape_flood() -> Result<()> {
    with_agent(|lab, sock| {
        let mut file = String::from("[[subnets]]\nname = \"flood\"\ncidr = \"198.19.0.0/16\"\n");
        for i in 0..FLOOD_HAVIPS {
            file += &format!(
                "[[havips]]\nvip = \"198.19.{}.{}\"\nsubnet = \"flood\"\n",
                1 + i / 200,
                1 + i % 200
            );
        }
        let started = Instant::now();
        let (code, _, body) = call(sock, "POST", "/v1/apply", Some("application/toml"), file.as_bytes())?;
        ensure!(code == 200, "apply answered {code}: {}", String::from_utf8_lossy(&body));
        let revision = status(sock)?.revision;
        wait::until("the maps to follow the store", Duration::from_secs(20), || {
            Ok((status(sock)?.reconciled_revision >= revision).then_some(()))
        })?;
        eprintln!("{FLOOD_HAVIPS} HAVIPs applied and in the maps in {:?}", started.elapsed());

        let stop = Arc::new(AtomicBool::new(false));
        let (ok, shed, failed, bytes) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let scrapers: Vec<_> = (0..SCRAPERS)
            .map(|_| {
                let (hv, stop, ok, shed, failed, bytes) = (
                    lab.topo.hv().to_owned(),
                    stop.clone(),
                    ok.clone(),
                    shed.clone(),
                    failed.clone(),
                    bytes.clone(),
                );
                thread::spawn(move || {
                    netns::run_in(&hv, move || {
                        let addr = agent::METRICS.parse()?;
                        while !stop.load(Ordering::Relaxed) {
                            let scrape = || -> Result<(u16, usize)> {
                                let mut c = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                                c.set_read_timeout(Some(IO_TIMEOUT))?;
                                c.write_all(b"GET /metrics HTTP/1.0\r\nHost: havip\r\n\r\n")?;
                                let mut raw = Vec::new();
                                c.read_to_end(&mut raw)?;
                                let (code, _, _) = parse(&raw)?;
                                Ok((code, raw.len()))
                            };
                            match scrape() {
                                Ok((200, n)) => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                                }
                                Ok((503, _)) => {
                                    shed.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Ok(())
                    })
                })
            })
            .collect();

        let vip = "198.19.1.1";
        let flood = Instant::now();
        let mut slowest = Duration::ZERO;
        let mut calls = 0;
        while flood.elapsed() < FLOOD {
            for path in ["/v1/status".to_owned(), format!("/v1/havips/{vip}")] {
                let t = Instant::now();
                let (code, _, _) = call(sock, "GET", &path, None, b"")?;
                ensure!(code == 200, "{path} answered {code} during the flood");
                slowest = slowest.max(t.elapsed());
                calls += 1;
            }
            thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        for s in scrapers {
            s.join().map_err(|_| anyhow::anyhow!("a scraper panicked"))??;
        }
        let rss = status(sock)?;
        let (ok, shed, failed) =
            (ok.load(Ordering::Relaxed), shed.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        eprintln!(
            "flood: {ok} scrapes served ({} MB), {shed} shed with 503, {failed} failed; {calls} API calls, slowest {slowest:?}; agent RSS {} KiB (peak {} KiB)",
            bytes.load(Ordering::Relaxed) / 1_000_000,
            rss.rss_kib,
            rss.peak_rss_kib
        );
        ensure!(ok > 0, "no scrape was served during the flood");
        ensure!(failed == 0, "{failed} scrapes got no answer (neither 200 nor 503)");
        ensure!(
            slowest < API_BOUND,
            "the slowest API call took {slowest:?} during the flood (bound {API_BOUND:?})"
        );
        Ok(())
    })
}

/// Checks one error answer: `status`, JSON, `{"error": text, "rule": …}`.
fn json_error(sock: &Path, req: (&str, &str, Option<&str>, &[u8]), want: u16) -> Result<Value> {
    let (method, path, ty, body) = req;
    let (code, ct, raw) = call(sock, method, path, ty, body)?;
    let text = String::from_utf8_lossy(&raw[..raw.len().min(300)]).to_string();
    ensure!(code == want, "{method} {path} answered {code}, expected {want}: {text}");
    ensure!(
        ct.starts_with("application/json"),
        "{method} {path} answered {code} as {ct:?}, not JSON: {text}"
    );
    let v: Value = serde_json::from_slice(&raw).with_context(|| format!("{method} {path}: {text}"))?;
    ensure!(
        v.get("error").is_some_and(Value::is_string) && v.get("rule").is_some(),
        "{method} {path}: not {{\"error\", \"rule\"}}: {v}"
    );
    Ok(v)
}

/// Issue 12 item 10: every error the API returns is `{"error", "rule"}`
/// JSON with its status, axum's own rejections included; and every path
/// parameter is validated as what it is.
#[test]
fn every_api_error_is_one_json_shape() -> Result<()> {
    with_agent(|_, sock| {
        let json = Some("application/json");
        // Just over the 8 MiB limit: the answer comes before the body is all in.
        let big = vec![b' '; (8 << 20) + 1];
        for (req, want) in [
            (("POST", "/v1/havips", json, &b"{not json"[..]), 400),
            (("POST", "/v1/havips", Some("text/plain"), &b"{}"[..]), 415),
            (("POST", "/v1/havips", None, &b"{}"[..]), 415),
            (("POST", "/v1/havips", json, &br#"{"subnet": 5}"#[..]), 422),
            (("POST", "/v1/apply", Some("application/toml"), &big[..]), 413),
            (("GET", "/v1/nothing-here", None, &b""[..]), 404),
            (("GET", "/", None, &b""[..]), 404),
            (("PATCH", "/v1/havips", None, &b""[..]), 405),
            (("POST", "/v1/status", None, &b""[..]), 405),
            (("GET", "/v1/events?follow=maybe", None, &b""[..]), 400),
            (("DELETE", "/v1/havips/198.18.1.50?force=maybe", None, &b""[..]), 400),
            (("GET", "/v1/havips/not-an-address", None, &b""[..]), 400),
        ] {
            json_error(sock, req, want)?;
        }
        // Names in paths are checked as names, before any lookup.
        for path in ["/v1/vnics/bad%20name", "/v1/subnets/a%2Fb", "/v1/vnics/%2E%2E%2Fx"] {
            let v = json_error(sock, ("DELETE", path, None, b""), 400)?;
            ensure!(v["rule"] == "well-formed", "DELETE {path}: {v}");
        }
        let v = json_error(sock, ("PUT", "/v1/havips/198.18.1.50/members/no%20such", None, b""), 400)?;
        ensure!(v["rule"] == "well-formed", "PUT member 'no such': {v}");
        Ok(())
    })
}

/// Issue 12 item 9: a slow follower silently skipped events. Here: a
/// follower that reads nothing while thousands of events happen, then
/// reads: it is told how many it missed, and the numbers add up.
#[test]
fn a_slow_follower_is_told_what_it_missed() -> Result<()> {
    const EVENTS: u64 = 3000;
    with_agent(|_, sock| {
        let mut follower = UnixStream::connect(sock)?;
        follower.write_all(b"GET /v1/events?follow=true HTTP/1.1\r\nHost: havip\r\n\r\n")?;
        // One keep-alive connection for the churn: a commit and an event each.
        let mut churn = UnixStream::connect(sock)?;
        churn.set_read_timeout(Some(IO_TIMEOUT))?;
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        for i in 0..EVENTS {
            let body = format!(r#"{{"name":"churn","cidr":"198.19.{}.0/24"}}"#, i % 2);
            let req = format!(
                "POST /v1/subnets HTTP/1.1\r\nHost: havip\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            churn.write_all(req.as_bytes())?;
            let n = churn.read(&mut buf)?;
            ensure!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "churn {i}: {}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
        eprintln!("{EVENTS} events in {:?}", started.elapsed());

        // Now read: every line is an event; a gap must be announced.
        follower.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut raw = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut last, mut seen, mut missed, mut markers) = (0u64, 0u64, 0u64, 0u64);
        let mut head_done = false;
        while Instant::now() < deadline {
            let n = match follower.read(&mut chunk) {
                Ok(0) => bail!("the follower's stream ended"),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.into()),
            };
            raw.extend_from_slice(&chunk[..n]);
            if !head_done {
                let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                raw.drain(..at + 4);
                head_done = true;
            }
            // Chunked framing: keep only lines that are JSON objects.
            while let Some(eol) = raw.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = raw.drain(..=eol).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                let Some(start) = line.find('{') else { continue };
                let ev: Event =
                    serde_json::from_str(&line[start..]).with_context(|| format!("event line {line}"))?;
                let kind = serde_json::to_value(ev.kind)?;
                if kind == "missed" {
                    markers += 1;
                    let n: u64 = ev.detail.split_whitespace().next().unwrap_or("").parse().unwrap_or(0);
                    ensure!(
                        n > 0 && ev.seq == last + 1,
                        "a marker that does not add up after seq {last}: {ev:?}"
                    );
                    missed += n;
                    last += n;
                    continue;
                }
                ensure!(
                    ev.seq == last + 1 || last == 0,
                    "seq {} after {last} with no marker between",
                    ev.seq
                );
                last = ev.seq;
                seen += 1;
            }
            if last >= EVENTS {
                break;
            }
        }
        eprintln!("the follower read {seen} events, {markers} markers for {missed} missed; last seq {last}");
        ensure!(markers > 0, "no marker: the follower read {seen} events up to seq {last} of {EVENTS}");
        ensure!(last >= EVENTS, "the follower ended at seq {last} of at least {EVENTS}");
        Ok(())
    })
}
