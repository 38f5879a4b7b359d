//! `/metrics`, read as Prometheus reads it: scraped from the lab's agent,
//! parsed by a real parser of the text exposition format (every line must
//! parse), and held against what `describe` says and against traffic the
//! test sent itself.

mod control_support;

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use control_support::{Ctl, OBSERVE_TIMEOUT};
use havip_lab::{
    agent, netns,
    netns::LabId,
    probe,
    scenario::{Lab, FAILOVER_TIMEOUT},
    topology::{VIP, VM_A, VM_C},
    wait,
};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};

/// Datagrams sent to the VIP between two scrapes.
const SENT: u64 = 200;
/// One datagram as it crosses vnic-c: Ethernet 14 + IPv4 20 + UDP 8 + an
/// 8-byte sequence number (no IP options, no padding on a veth).
const FRAME_BYTES: u64 = 14 + 20 + 8 + 8;
/// How long one echo may take before the datagram counts as lost.
const ECHO_TIMEOUT: Duration = Duration::from_secs(1);

/// Families per VIP: the 18 data plane counters, epoch, failovers, held,
/// members; the verdict's contested, probes, probes answered, misses.
const PER_VIP_FAMILIES: usize = havip_common::VipCounter::MAX + 4 + 4;
/// Families without labels: the global counters, the HAVIP count, the
/// store's health (failing, write failures, reopens, pending, config
/// applied) and the maps' (reconcile failures, in sync, unattached vNICs).
const GLOBAL_FAMILIES: usize = havip_common::GlobalCounter::MAX + 1 + 5 + 3;
/// Per subnet: its mode, and its broadcast frame counters (declared always;
/// samples only for a broadcast-domain subnet served here).
const SUBNET_FAMILIES: usize = 2;
/// Their samples in the lab: its one subnet is unicast, so its mode only.
const SUBNET_SAMPLES: usize = 1;

#[test]
fn metrics_parse_and_count_the_traffic_sent() -> Result<()> {
    // keepalived in both members; returns once vm-a holds the VIP.
    Lab::start(LabId::unique("test"), true)?.run(metrics)
}

fn metrics(lab: &mut Lab) -> Result<()> {
    let ctl = Ctl::of(lab)?;
    let vip = VIP.to_string();
    let hv = lab.topo.hv().to_owned();
    let held = ctl.wait_describe(&vip, "vnic-a to hold the VIP, verified", OBSERVE_TIMEOUT, |h| {
        h.holder.as_deref() == Some(VM_A.vnic)
            && h.verification.as_ref().is_some_and(|v| v.state == "ok" && v.rounds_answered > 0)
    })?;

    let echo = Echo::open(lab)?;
    // vm-c resolves the VIP and gets an answer before the count starts.
    wait::until("a first echo from vm-a through the VIP", FAILOVER_TIMEOUT, || {
        Ok(echo.ask(u64::MAX)?.filter(|who| who == VM_A.name))
    })?;

    let before = Metrics::scrape(&hv)?;
    let started = Instant::now();
    for seq in 0..SENT {
        let who = echo.ask(seq)?.with_context(|| format!("datagram {seq} of {SENT} got no echo"))?;
        ensure!(who == VM_A.name, "datagram {seq} was answered by {who}, not by the holder vm-a");
    }
    eprintln!("{SENT} echoes through the VIP in {:?}", started.elapsed());
    // /metrics is rendered at most once a second and shared meanwhile: wait
    // for a render made after the last echo.
    let redirected = before.vip("havip_vip_redirect_packets_total")?;
    let after = wait::until("a render of /metrics after the echoes", OBSERVE_TIMEOUT, || {
        let m = Metrics::scrape(&hv)?;
        Ok((m.vip("havip_vip_redirect_packets_total")? >= redirected + SENT as f64).then_some(m))
    })?;
    let now = ctl.describe(&vip)?;
    ensure!(
        now.epoch == held.epoch,
        "the holder changed during the test: epoch {} -> {}",
        held.epoch,
        now.epoch
    );

    // Every datagram was answered by vm-a, so each one crossed xdp_vnic on
    // vnic-c and was redirected to vnic-a: at least SENT. Nothing else sends
    // IPv4 to the VIP in this lab between the two scrapes: keepalived's
    // adverts go to 224.0.0.18, the agent's verification probes and all ARP
    // are counted apart (and go out of, not into, the vNICs), the echoes go
    // from the VIP to vm-c, and no one uses the EIP. So at most SENT as well.
    let grew = |name: &str| -> Result<f64> { Ok(after.vip(name)? - before.vip(name)?) };
    let packets = grew("havip_vip_redirect_packets_total")?;
    ensure!(
        packets >= SENT as f64,
        "redirect_packets grew by {packets}, fewer than the {SENT} datagrams sent"
    );
    ensure!(
        packets <= SENT as f64,
        "redirect_packets grew by {packets}, more than the {SENT} datagrams sent"
    );
    let bytes = grew("havip_vip_redirect_bytes_total")?;
    ensure!(
        bytes == (SENT * FRAME_BYTES) as f64,
        "redirect_bytes grew by {bytes}, not {SENT} x {FRAME_BYTES}"
    );
    ensure!(grew("havip_vip_no_holder_drops_total")? == 0.0, "no_holder_drops grew while vm-a held");

    for m in [&before, &after] {
        // Who holds, as describe says it.
        let host = now.holder_host.as_deref().context("describe names no holder host")?;
        let info = m.all("havip_holder_info");
        ensure!(info.len() == 1, "holder_info has {} samples, expected one: {info:?}", info.len());
        let labels: BTreeMap<&str, &str> =
            info[0].labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let want = BTreeMap::from([("vip", vip.as_str()), ("vnic", VM_A.vnic), ("host", host)]);
        ensure!(labels == want, "holder_info labels {labels:?}, describe says {want:?}");
        ensure!(value(info[0]) == 1.0, "holder_info is {}", value(info[0]));
        ensure!(m.vip("havip_vip_held")? == 1.0, "havip_vip_held is not 1");
        ensure!(m.vip("havip_vip_epoch")? == now.epoch as f64, "epoch differs from describe's {}", now.epoch);
        ensure!(
            m.vip("havip_vip_failovers_total")? == now.failovers as f64,
            "failovers differ from describe"
        );
        ensure!(m.vip("havip_vip_members")? == now.members.len() as f64, "members differ from describe");
        ensure!(m.vip("havip_vip_contested")? == 0.0, "the VIP shows as contested");
        ensure!(m.vip("havip_verification_misses")? == 0.0, "vm-a holds, yet misses are counted");
        ensure!(m.global("havip_havips")? == 1.0, "havip_havips is not 1");
        // keepalived's claim made vm-a holder: one claim recorded, fast.
        let claims = m.global("havip_claim_recorded_seconds_count")?;
        ensure!(claims >= 1.0, "no claim in havip_claim_recorded_seconds ({claims})");
        ensure!(m.global("havip_claim_recorded_seconds_sum")? < claims, "a claim took a second to record");
    }

    // The agent verifies the holder every 250 ms: the probe count grows,
    // and vm-a answers every round.
    let later = wait::until("verification_probes_total to grow", OBSERVE_TIMEOUT, || {
        let m = Metrics::scrape(&hv)?;
        Ok((m.vip("havip_verification_probes_total")? > after.vip("havip_verification_probes_total")?)
            .then_some(m))
    })?;
    ensure!(later.vip("havip_verification_misses")? == 0.0, "vm-a holds, yet misses are counted");
    ensure!(
        later.vip("havip_verification_rounds_answered_total")?
            > after.vip("havip_verification_rounds_answered_total")?,
        "the probes went unanswered"
    );
    Ok(())
}

/// The echo client in vm-c: one datagram out, its echo back, in lock-step,
/// so the test knows exactly how many datagrams it sent to the VIP.
struct Echo {
    sock: UdpSocket,
}

impl Echo {
    fn open(lab: &Lab) -> Result<Self> {
        probe::ensure_test_range(VIP)?;
        let sock = netns::run_in(&lab.topo.ns(VM_C), || {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding the echo client")?;
            // Connected: only answers from the VIP itself are taken.
            sock.connect((VIP, probe::PORT)).context("connecting to the VIP")?;
            Ok(sock)
        })?;
        Ok(Self { sock })
    }

    /// Sends datagram `seq`; returns who echoed it, or `None` if no echo
    /// came within [`ECHO_TIMEOUT`]. Echoes of earlier datagrams are skipped.
    fn ask(&self, seq: u64) -> Result<Option<String>> {
        self.sock.send(&seq.to_be_bytes()).context("sending to the VIP")?;
        let deadline = Instant::now() + ECHO_TIMEOUT;
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock.set_read_timeout(Some(left))?;
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
                // An ICMP error reported on the socket: no echo for this one.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e).context("receiving an echo"),
            };
            // The responder appends `|<name>` to what it got.
            let (Some(got), Some(who)) = (buf.get(..8), buf.get(8..n).and_then(|b| b.strip_prefix(b"|")))
            else {
                continue;
            };
            if got == seq.to_be_bytes() {
                return Ok(Some(String::from_utf8_lossy(who).into_owned()));
            }
        }
    }
}

/// One scrape, parsed.
struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Scrapes the agent in `hv` and parses what it serves; fails if any
    /// line is no HELP, TYPE or sample line, if the parser dropped a sample,
    /// or if a family is not the one its name promises.
    fn scrape(hv: &str) -> Result<Self> {
        let text = agent::scrape_metrics(hv)?;
        let mut sample_lines = 0;
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = Vec::new();
        for line in text.lines() {
            match LineInfo::parse(line) {
                LineInfo::Sample { metric_name, .. } => {
                    // A histogram's lines are its family's _bucket, _sum and _count.
                    let family = histogram_family(metric_name, &types).unwrap_or(metric_name);
                    ensure!(types.contains_key(family), "sample before its TYPE: {line:?}");
                    // The parser folds a histogram's buckets into one sample
                    // and keeps its _sum and _count as samples of their own.
                    if family == metric_name
                        || !metric_name.ends_with("_bucket")
                        || line.contains("le=\"+Inf\"")
                    {
                        sample_lines += 1;
                    }
                }
                // The name as the line writes it: the parser names a
                // histogram's TYPE after its `_bucket` series.
                LineInfo::Type { .. } => {
                    let mut words = line.split_whitespace().skip(2);
                    let name = words.next().unwrap_or_default().to_owned();
                    let kind = words.next().unwrap_or_default().to_owned();
                    ensure!(types.insert(name, kind).is_none(), "a second TYPE line: {line:?}");
                }
                LineInfo::Doc { metric_name, .. } => helped.push(metric_name.to_owned()),
                LineInfo::Empty => bail!("an empty line in the metrics"),
                LineInfo::Ignored => bail!("a line of the metrics does not parse: {line:?}"),
            }
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).context("parsing the metrics")?;
        ensure!(
            scrape.samples.len() == sample_lines,
            "{sample_lines} sample lines, but {} samples parsed:\n{text}",
            scrape.samples.len()
        );
        for (name, kind) in &types {
            ensure!(helped.contains(name), "{name} has no HELP");
            ensure!(name.starts_with("havip_"), "{name} lacks the havip_ prefix");
            let want = if name.ends_with("_total") {
                "counter"
            } else if name.ends_with("_seconds") {
                "histogram"
            } else {
                "gauge"
            };
            ensure!(kind == want, "{name} is a {kind}, its name says {want}");
        }
        for s in &scrape.samples {
            if histogram_family(&s.metric, &types).is_some() {
                // A histogram's _sum and _count: plain non-negative numbers.
                ensure!(value(s) >= 0.0, "{} is negative", s.metric);
                continue;
            }
            let ok = match &s.value {
                Value::Counter(v) => s.metric.ends_with("_total") && *v >= 0.0,
                Value::Gauge(v) => !s.metric.ends_with("_total") && *v >= 0.0,
                // Cumulative buckets, ending in +Inf.
                Value::Histogram(buckets) => {
                    s.metric.ends_with("_seconds")
                        && buckets.windows(2).all(|w| w[0].count <= w[1].count)
                        && buckets.last().is_some_and(|b| b.less_than == f64::INFINITY)
                }
                _ => false,
            };
            ensure!(ok, "{} is typed {:?}", s.metric, s.value);
        }

        // One HAVIP: every per-VIP family has a sample for it, the holder
        // one, and each correction reason one.
        let corrections = scrape.samples.iter().filter(|s| s.metric == "havip_holder_corrections_total");
        for c in corrections.clone() {
            ensure!(c.labels.get("vip") == Some(VIP.to_string().as_str()), "a correction of another VIP");
            ensure!(c.labels.get("reason").is_some(), "a correction without a reason");
        }
        let expected =
            PER_VIP_FAMILIES + GLOBAL_FAMILIES + SUBNET_SAMPLES + 3 * HISTOGRAMS + 1 + corrections.count();
        ensure!(
            scrape.samples.len() == expected,
            "{} samples, expected {expected}:\n{text}",
            scrape.samples.len()
        );
        ensure!(
            types.len() == PER_VIP_FAMILIES + GLOBAL_FAMILIES + SUBNET_FAMILIES + HISTOGRAMS + 2,
            "{} families:\n{text}",
            types.len()
        );
        Ok(Self { samples: scrape.samples })
    }

    fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.metric == name).collect()
    }

    /// The sample of family `name` for the lab's VIP (labels: vip only).
    fn vip(&self, name: &str) -> Result<f64> {
        let vip = VIP.to_string();
        let found: Vec<&Sample> = self
            .all(name)
            .into_iter()
            .filter(|s| s.labels.len() == 1 && s.labels.get("vip") == Some(vip.as_str()))
            .collect();
        match found[..] {
            [s] => Ok(value(s)),
            _ => bail!("{} samples of {name}{{vip=\"{vip}\"}}", found.len()),
        }
    }

    /// The one sample of family `name`, which has no labels.
    fn global(&self, name: &str) -> Result<f64> {
        match self.all(name)[..] {
            [s] if s.labels.is_empty() => Ok(value(s)),
            ref other => bail!("{name}: {other:?}"),
        }
    }
}

fn value(s: &Sample) -> f64 {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

/// The control loop's latency histograms (`havip_*_seconds`).
const HISTOGRAMS: usize = 2;

/// The histogram family a `_bucket`, `_sum` or `_count` line belongs to,
/// if its TYPE said histogram.
fn histogram_family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s))?;
    (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
}
