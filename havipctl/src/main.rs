//! havipctl: the operator's CLI for a running havip-agent. Human tables by
//! default, `--json` for scripts; every refusal is printed with the rule
//! that made it, and the exit status is 1.

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use futures::StreamExt;
use havip_api::{
    view::{AgentStatus, Applied, DesiredView, EipRequest, HavipView, SubnetView, VnicView},
    Body, Client, ClientError, Event, DEFAULT_SOCKET,
};
use havip_model::{
    ops::{DesiredFile, HavipSpec, SubnetModeSpec, SubnetSpec, VnicSpec},
    state::rfc3339,
    SplitBrainPolicy, SubnetMode,
};
use hyper::Method;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{de::DeserializeOwned, Serialize};

#[derive(Parser)]
#[command(
    name = "havipctl",
    version,
    about = "Operate havip: HAVIPs, their members and EIPs, and who holds them"
)]
struct Cli {
    /// The agent's API socket (`[agent] api_socket`).
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON (one document, or one event per line) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for the agent: connecting, and its whole answer
    /// (`events --follow`: until the stream begins). E.g. 5s, 500ms, 1m.
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a HAVIP at --vip, or at the next free address of the subnet.
    Create {
        /// The subnet the VIP and its members live in.
        #[arg(long)]
        subnet: String,
        /// The VIP; without it, the next free address of the subnet.
        #[arg(long)]
        vip: Option<String>,
        /// A member vNIC (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
        /// An EIP to bind at once.
        #[arg(long)]
        eip: Option<String>,
        /// When two members hold it at once: last-claim-wins (default),
        /// keep-holder or vrrp-priority.
        #[arg(long)]
        split_brain: Option<SplitBrainPolicy>,
        /// Refuse claims from VRRP virtual MACs (00:00:5e:00:01:xx,
        /// keepalived use_vmac); accepted from a member's own vNIC by default.
        #[arg(long)]
        no_vrrp_vmac: bool,
    },
    /// Delete a HAVIP; one with members or an EIP only with --force.
    Delete {
        vip: String,
        #[arg(long)]
        force: bool,
    },
    /// Make a vNIC a member: it may then claim the VIP.
    Associate { vip: String, vnic: String },
    /// Remove a member; if it held the VIP, the VIP has no holder.
    Disassociate { vip: String, vnic: String },
    /// Bind an EIP to a HAVIP (1:1 NAT to its holder).
    BindEip { vip: String, eip: String },
    /// Unbind a HAVIP's EIP: traffic to it is no longer NATed.
    UnbindEip { vip: String },
    /// One HAVIP in detail, or a table of all.
    Describe { vip: Option<String> },
    /// Why is the VIP where it is? Holder, verification, VRRP view, and the
    /// HAVIP's claims and events as one timeline, with reasons.
    Trace { vip: String },
    /// Holder changes, refused claims, vNICs and changes; --follow waits for more.
    Events {
        #[arg(short, long)]
        follow: bool,
        /// Only the events of this HAVIP.
        #[arg(long)]
        vip: Option<String>,
    },
    /// Create or update every object of a declarative TOML file.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the whole desired state as a file for `apply -f`.
    Export,
    /// The agent: version, store revision and how far the maps follow it, memory.
    Status,
    /// Register, remove or list vNICs.
    #[command(subcommand)]
    Vnic(VnicCmd),
    /// Register, remove or list subnets.
    #[command(subcommand)]
    Subnet(SubnetCmd),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum VnicCmd {
    /// Register a vNIC (or update it): an id unique in the VPC, on this
    /// agent's host unless --host says otherwise.
    Add {
        name: String,
        /// The host it lives on (a host id); the agent's own host by default.
        #[arg(long)]
        host: Option<String>,
        /// Its host-side interface (tap, veth); NAME by default.
        #[arg(long)]
        ifname: Option<String>,
        #[arg(long)]
        instance: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        ip: String,
        /// The guest's MAC.
        #[arg(long)]
        mac: String,
    },
    Delete {
        name: String,
    },
    List,
}

#[derive(Subcommand)]
enum SubnetCmd {
    /// Register a subnet, or change its CIDR. Mode and storm control as given; what is not
    /// given is kept (the default for a new subnet: unicast, 1000 frames/s, burst 100).
    Add {
        name: String,
        cidr: String,
        /// unicast (ENS: no broadcast or multicast between guests) or broadcast-domain (ZEC: a
        /// guest's broadcast and multicast reach the subnet's other vNICs, on every host).
        #[arg(long, value_name = "unicast|broadcast-domain")]
        mode: Option<String>,
        /// Storm control: broadcast and multicast frames per second each vNIC may have
        /// replicated (1-1000000).
        #[arg(long, value_name = "N")]
        storm_pps: Option<u32>,
        /// Storm control: frames a vNIC may send back to back above the rate (1-100000).
        #[arg(long, value_name = "N")]
        storm_burst: Option<u32>,
    },
    /// Set a subnet's mode, at runtime: unicast (ENS: VRRP needs unicast_peer) or
    /// broadcast-domain (ZEC: keepalived's default multicast VRRP and ucarp work). Storm
    /// control as given, kept otherwise.
    Mode {
        name: String,
        #[arg(value_name = "unicast|broadcast-domain")]
        mode: String,
        /// Broadcast and multicast frames per second each vNIC may have replicated (1-1000000).
        #[arg(long, value_name = "N")]
        storm_pps: Option<u32>,
        /// Frames a vNIC may send back to back above the rate (1-100000).
        #[arg(long, value_name = "N")]
        storm_burst: Option<u32>,
    },
    /// One subnet: its mode, storm control, hosts and (broadcast-domain) this host's counters.
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
    List,
}

/// Prints `v` as JSON with `--json`, else through `human`.
fn show<T: Serialize>(json: bool, v: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
    let text = if json { serde_json::to_string_pretty(v)? } else { human(v) };
    out(&text)
}

/// Writes a line to stdout; a reader that went away (`| head`) is no error.
fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", text.trim_end()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    rows.into_iter().for_each(|r| out += &line(r));
    out
}

fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn havip_table(hs: &[HavipView]) -> String {
    let rows = hs
        .iter()
        .map(|h| {
            vec![
                h.vip.to_string(),
                h.subnet.clone(),
                h.status.to_string(),
                or_dash(h.holder.as_ref()),
                or_dash(h.since.as_ref()),
                h.epoch.to_string(),
                h.failovers.to_string(),
                h.members.iter().map(|m| m.vnic.as_str()).collect::<Vec<_>>().join(","),
                or_dash(h.eip),
            ]
        })
        .collect();
    table(&["VIP", "SUBNET", "STATUS", "HOLDER", "SINCE", "EPOCH", "FAILOVERS", "MEMBERS", "EIP"], rows)
}

fn havip_detail(h: &HavipView) -> String {
    let mut holder = match (&h.holder, &h.holder_instance) {
        (Some(v), Some(i)) => format!("{v} ({i})"),
        (Some(v), None) => v.clone(),
        _ => "none".to_owned(),
    };
    if let Some(host) = &h.holder_host {
        holder = format!("{holder} on host {host}");
    }
    let mut out = format!(
        "VIP:        {}\nSubnet:     {} ({})\nStatus:     {}\nHolder:     {holder}\nSince:      {}\nEpoch:      {}\nFailovers:  {}\nEIP:        {}\nMembers:\n",
        h.vip,
        h.subnet,
        h.subnet_mode,
        h.status,
        h.since.as_deref().map_or_else(|| "-".to_owned(), with_age),
        if h.revision > 0 { format!("{} (holder record revision {})", h.epoch, h.revision) } else { h.epoch.to_string() },
        h.failovers,
        or_dash(h.eip)
    );
    for m in &h.members {
        out += &format!("  {:<16} {:<16} {}\n", m.vnic, m.instance, m.link);
    }
    out += &format!(
        "Settings:   split brain {}, VRRP virtual MACs {}\n",
        h.settings.split_brain,
        if h.settings.accept_vrrp_vmac { "accepted" } else { "refused" }
    );
    if let Some(why) = &h.no_holder_reason {
        out += &format!("No holder:  {why}\n");
    }
    if let Some(c) = &h.contested {
        let who: Vec<String> =
            c.members.iter().map(|m| format!("{} (priority {})", m.vnic, or_dash(m.priority))).collect();
        out += &format!("Contested:  {} since {}; policy {}\n", who.join(" and "), c.since, c.policy);
    }
    if let Some(v) = &h.verification {
        let corrections: Vec<String> = v.corrections.iter().map(|(r, n)| format!("{r} {n}")).collect();
        out += &format!(
            "Verified:   {} ({} missed in a row; {} probes, {} rounds answered; corrections: {})\n",
            v.state,
            v.misses,
            v.probes_sent,
            v.rounds_answered,
            if corrections.is_empty() { "none".to_owned() } else { corrections.join(", ") }
        );
    }
    if !h.vrrp.is_empty() {
        out += "VRRP (last advert per member):\n";
        for a in &h.vrrp {
            out += &format!(
                "  {:<16} from {:<15} VRID {:<3} priority {:<3} v{}  {} ms ago\n",
                a.vnic, a.advertiser, a.vrid, a.priority, a.version, a.age_ms
            );
        }
    }
    out += "Last claims:\n";
    for c in &h.last_claims {
        let verdict = if c.accepted { "accepted" } else { "rejected" };
        out += &format!("  {}  {:<16} {verdict}: {}\n", rfc3339(c.at_ms), c.vnic, c.detail);
    }
    out += "Counters:\n";
    for (name, v) in h.counters.iter().filter(|(_, v)| **v > 0) {
        out += &format!("  {name:<20} {v}\n");
    }
    out
}

/// `subnet describe` (and `subnet mode`): the subnet, its settings and, in a broadcast domain,
/// what this host's data plane replicated.
fn subnet_detail(s: &SubnetView) -> String {
    let storm = format!(
        "{} frames/s per vNIC, burst {}{}",
        s.storm_pps,
        s.storm_burst,
        if s.mode == SubnetMode::Unicast { " (applies in broadcast-domain mode)" } else { "" }
    );
    let mut out = format!(
        "Subnet:     {}\nCIDR:       {}\nMode:       {}\nStorm:      {storm}\nvNICs:      {}\nHAVIPs:     {}\n",
        s.name, s.cidr, s.mode, s.vnics, s.havips
    );
    if let Some(b) = &s.broadcast {
        let hosts = if b.hosts.is_empty() { "none (no vNICs in it)".to_owned() } else { b.hosts.join(", ") };
        out += &format!("Hosts:      {hosts}\n");
        if !b.programmed {
            out +=
                "Broadcast:  not replicated on this host (none of its vNICs lives here, or the maps do not \
                    follow the change yet)\n";
        }
        out += "Broadcast (this host, frames):\n";
        for (name, v) in [
            ("flooded", b.flooded),
            ("local_copies", b.local_copies),
            ("remote_copies", b.remote_copies),
            ("storm_drops", b.storm_drops),
            ("received", b.received),
            ("local_only", b.local_only),
            ("too_big", b.too_big),
            ("no_vtep", b.no_vtep),
        ] {
            out += &format!("  {name:<20} {v}\n");
        }
        for (vnic, drops) in &b.storm_drops_by_vnic {
            out += &format!("  storm drops of {vnic}: {drops}\n");
        }
    }
    out
}

/// A name or address as one URL path segment (or query value): everything
/// but letters, digits and `-._~` percent-encoded (RFC 3986 §2.3), so no
/// argument can add a path, a query or a flag of its own.
fn seg(v: &str) -> String {
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    utf8_percent_encode(v, UNRESERVED).to_string()
}

/// `status`'s store and sync lines: "ok", or what is wrong.
fn health_lines(s: &AgentStatus) -> String {
    let store = if s.store.failing {
        format!(
            "FAILING ({}); observations of {} HAVIPs kept in memory, retried",
            s.store.last_error.as_deref().unwrap_or("?"),
            s.store.pending
        )
    } else {
        format!("ok ({} failed writes, {} reopens since start)", s.store.write_failures, s.store.reopens)
    };
    let mut out = format!("\nstore:      {store}");
    if let Some(why) = &s.store.config_not_applied {
        out += &format!("\nconfig:     NOT APPLIED: {why}");
    }
    let sync = match &s.sync.last_error {
        Some(e) => format!("FAILING ({e}); retried with backoff"),
        None => format!("ok ({} failed passes since start)", s.sync.failed_passes),
    };
    out += &format!("\nmaps:       {sync}");
    if let Some(c) = &s.cluster {
        out += &format!(
            "\ncluster:    {} at revision {}; commits {} won, {} lost, {} fenced, {} retried; hints {} sent, {} applied, {} ignored",
            if c.reachable { "etcd reachable" } else { "ETCD UNREACHABLE (forwarding on what it has)" },
            c.revision,
            c.commits_won,
            c.commits_lost,
            c.commits_fenced,
            c.commit_retries,
            c.hints_sent,
            c.hints_applied,
            c.hints_ignored
        );
        for h in &c.hosts {
            out += &format!(
                "\n  host {:<12} {:<15} {:<8}{}{}",
                h.id,
                h.underlay.to_string(),
                h.state,
                if h.gateway { " gateway" } else { "" },
                if h.misses > 0 { format!(" ({} probes missed)", h.misses) } else { String::new() }
            );
        }
    }
    for (vnic, why) in &s.sync.unattached {
        out += &format!("\n  not attached: {vnic}: {why}");
    }
    if let Some(why) = &s.sync.replicator {
        out += &format!("\n  replicator: NOT READY ({why}): broadcast domains reach this host's vNICs only");
    }
    for (subnet, why) in &s.sync.broadcast_limited {
        out += &format!("\n  broadcast domain {subnet} in part: {why}");
    }
    out
}

/// `havipctl trace`: the detail, then the claims and the HAVIP's events as
/// one timeline, oldest first.
fn trace(h: &HavipView, events: &[Event]) -> String {
    let mut out = havip_detail(h);
    let mut timeline: Vec<(String, String)> = h
        .last_claims
        .iter()
        .map(|c| {
            let verdict = if c.accepted { "claim accepted" } else { "claim rejected" };
            (rfc3339(c.at_ms), format!("{verdict:<18} {:<15} {:<15} {}", h.vip, c.vnic, c.detail))
        })
        .collect();
    timeline.extend(events.iter().map(|e| {
        let line = event_line(e);
        (rfc3339(e.at_ms), line.split_once("  ").map_or(line.clone(), |(_, rest)| rest.to_owned()))
    }));
    timeline.sort();
    out += "Timeline (claims and events, oldest first):\n";
    for (at, what) in timeline {
        out += &format!("  {at}  {what}\n");
    }
    out
}

/// `2026-…Z (3m 12s ago)`: an RFC 3339 time and how long ago it was.
fn with_age(at: &str) -> String {
    let ago = humantime::parse_rfc3339(at).ok().and_then(|t| t.elapsed().ok());
    match ago {
        Some(d) => format!("{at} ({} ago)", humantime::format_duration(Duration::from_secs(d.as_secs()))),
        None => at.to_owned(),
    }
}

fn event_line(e: &Event) -> String {
    let kind =
        serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    format!(
        "{}  {kind:<18} {:<15} {:<15} {}",
        rfc3339(e.at_ms),
        or_dash(e.vip),
        or_dash(e.vnic.as_ref()),
        e.detail
    )
}

struct Ctl {
    client: Client,
    json: bool,
}

impl Ctl {
    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Body) -> Result<T> {
        Ok(self.client.call(method, path, body).await?)
    }

    async fn havip(&self, method: Method, path: &str, body: Body) -> Result<()> {
        let h: HavipView = self.call(method, path, body).await?;
        show(self.json, &h, havip_detail)
    }

    async fn done(&self, method: Method, path: &str, body: Body, what: String) -> Result<()> {
        self.call::<serde_json::Value>(method, path, body).await?;
        show(self.json, &serde_json::json!({ "ok": what }), |_| what.clone())
    }
}

impl Ctl {
    /// Prints one NDJSON event line, as JSON or as a table row; flushed per
    /// line, so `events --follow | grep` sees each at once.
    fn event(&self, line: &str) -> Result<()> {
        let text = if self.json { line.to_owned() } else { event_line(&serde_json::from_str(line)?) };
        out(&text)
    }
}

/// Attempts to reach the agent again after its stream ended, 1 s apart:
/// a restart (`RestartSec=1s`, then the maps loaded) fits well within.
const FOLLOW_RETRIES: u32 = 30;

/// `events --follow`: when the agent goes away (a restart, an upgrade), says
/// so on stderr and follows the next one, at most [`FOLLOW_RETRIES`] tries
/// in a row; the same agent's events already printed are not printed again.
async fn follow_events(ctl: &Ctl, path: &str) -> Result<()> {
    // (the agent's pid and start, the last seq printed from it)
    let mut last: Option<((u32, String), u64)> = None;
    let mut tries = 0;
    loop {
        let attempt = async {
            let s: AgentStatus = ctl.client.call(Method::GET, "/v1/status", Body::None).await?;
            let lines = ctl.client.lines(path).await?;
            Ok::<_, ClientError>(((s.pid, s.started), lines))
        };
        match attempt.await {
            Ok((agent, lines)) => {
                if tries > 0 {
                    eprintln!("havipctl: following the agent again (pid {})", agent.0);
                }
                tries = 0;
                let after = last.as_ref().filter(|(a, _)| *a == agent).map_or(0, |(_, seq)| *seq);
                let mut lines = Box::pin(lines);
                while let Some(line) = lines.next().await {
                    let Ok(line) = line else { break };
                    let seq = serde_json::from_str::<Event>(&line).map(|e| e.seq).unwrap_or(0);
                    if seq != 0 && seq <= after {
                        continue;
                    }
                    ctl.event(&line)?;
                    last = Some((agent.clone(), seq));
                }
                eprintln!("havipctl: the agent's event stream ended; reconnecting");
            }
            // The agent answered, and said no: retrying will not help.
            Err(e @ ClientError::Refused { .. }) => return Err(e.into()),
            Err(e) => {
                tries += 1;
                if tries > FOLLOW_RETRIES {
                    return Err(
                        anyhow::Error::from(e).context(format!("gave up after {FOLLOW_RETRIES} tries"))
                    );
                }
                eprintln!("havipctl: {e:#}; retrying in 1s ({tries}/{FOLLOW_RETRIES})");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run(cli: Cli) -> Result<()> {
    let ctl = Ctl { client: Client::new(&cli.socket).with_timeout(cli.timeout), json: cli.json };
    match cli.cmd {
        Cmd::Create { subnet, vip, members, eip, split_brain, no_vrrp_vmac } => {
            let accept_vrrp_vmac = no_vrrp_vmac.then_some(false);
            let spec = HavipSpec { vip, subnet, members, eip, accept_vrrp_vmac, split_brain };
            ctl.havip(Method::POST, "/v1/havips", Body::json(&spec)?).await
        }
        Cmd::Delete { vip, force } => {
            let path = format!("/v1/havips/{}?force={force}", seg(&vip));
            ctl.done(Method::DELETE, &path, Body::None, format!("HAVIP {vip} deleted")).await
        }
        Cmd::Associate { vip, vnic } => {
            ctl.havip(Method::PUT, &format!("/v1/havips/{}/members/{}", seg(&vip), seg(&vnic)), Body::None)
                .await
        }
        Cmd::Disassociate { vip, vnic } => {
            ctl.havip(Method::DELETE, &format!("/v1/havips/{}/members/{}", seg(&vip), seg(&vnic)), Body::None)
                .await
        }
        Cmd::BindEip { vip, eip } => {
            ctl.havip(Method::PUT, &format!("/v1/havips/{}/eip", seg(&vip)), Body::json(&EipRequest { eip })?)
                .await
        }
        Cmd::UnbindEip { vip } => {
            ctl.havip(Method::DELETE, &format!("/v1/havips/{}/eip", seg(&vip)), Body::None).await
        }
        Cmd::Describe { vip: Some(vip) } => {
            ctl.havip(Method::GET, &format!("/v1/havips/{}", seg(&vip)), Body::None).await
        }
        Cmd::Describe { vip: None } => {
            let all: Vec<HavipView> = ctl.call(Method::GET, "/v1/havips", Body::None).await?;
            show(ctl.json, &all, |all| havip_table(all))
        }
        Cmd::Trace { vip } => {
            let h: HavipView =
                ctl.call(Method::GET, &format!("/v1/havips/{}", seg(&vip)), Body::None).await?;
            let mut lines = Box::pin(ctl.client.lines(&format!("/v1/events?vip={}", seg(&vip))).await?);
            let mut events = Vec::new();
            while let Some(line) = lines.next().await {
                events.push(serde_json::from_str::<Event>(&line?).context("reading an event")?);
            }
            let doc = serde_json::json!({ "havip": h, "events": events });
            show(ctl.json, &doc, |_| trace(&h, &events))
        }
        Cmd::Events { follow: false, vip } => {
            let only = vip.map(|v| format!("&vip={}", seg(&v))).unwrap_or_default();
            let mut lines = Box::pin(ctl.client.lines(&format!("/v1/events?follow=false{only}")).await?);
            while let Some(line) = lines.next().await {
                ctl.event(&line?)?;
            }
            Ok(())
        }
        Cmd::Events { follow: true, vip } => {
            let only = vip.map(|v| format!("&vip={}", seg(&v))).unwrap_or_default();
            follow_events(&ctl, &format!("/v1/events?follow=true{only}")).await
        }
        Cmd::Apply { file } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let a: Applied = ctl.call(Method::POST, "/v1/apply", Body::Toml(text)).await?;
            show(ctl.json, &a, |a| {
                format!(
                    "applied {} subnets, {} vNICs, {} HAVIPs (revision {})",
                    a.subnets, a.vnics, a.havips, a.revision
                )
            })
        }
        Cmd::Export => {
            let d: DesiredView = ctl.call(Method::GET, "/v1/desired", Body::None).await?;
            let text = toml::to_string(&DesiredFile::from(&d.state)).context("writing TOML")?;
            show(ctl.json, &d, |_| text)
        }
        Cmd::Status => {
            let s: AgentStatus = ctl.call(Method::GET, "/v1/status", Body::None).await?;
            show(ctl.json, &s, |s| {
                format!(
                    "havip-agent {} on host {} (pid {}) since {}\nrevision:   {} (maps at {})\nobjects:    {} subnets, {} vNICs ({} on this host, {} present), {} HAVIPs\nmemory:     {} KiB resident, {} KiB peak",
                    s.version,
                    s.host,
                    s.pid,
                    s.started,
                    s.revision,
                    s.reconciled_revision,
                    s.subnets,
                    s.vnics,
                    s.vnics_local,
                    s.vnics_present,
                    s.havips,
                    s.rss_kib,
                    s.peak_rss_kib
                ) + &health_lines(s)
            })
        }
        Cmd::Vnic(VnicCmd::Add { name, host, ifname, instance, subnet, ip, mac }) => {
            let what = format!("vNIC {name} registered");
            let spec = VnicSpec { name, host, ifname, instance, subnet, ip, mac };
            ctl.done(Method::POST, "/v1/vnics", Body::json(&spec)?, what).await
        }
        Cmd::Vnic(VnicCmd::Delete { name }) => {
            ctl.done(
                Method::DELETE,
                &format!("/v1/vnics/{}", seg(&name)),
                Body::None,
                format!("vNIC {name} removed"),
            )
            .await
        }
        Cmd::Vnic(VnicCmd::List) => {
            let vs: Vec<VnicView> = ctl.call(Method::GET, "/v1/vnics", Body::None).await?;
            show(ctl.json, &vs, |vs| {
                let rows = vs
                    .iter()
                    .map(|v| {
                        let havips: Vec<String> = v.havips.iter().map(|h| h.to_string()).collect();
                        vec![
                            v.name.clone(),
                            v.host.clone(),
                            v.ifname.clone(),
                            v.instance.clone(),
                            v.subnet.clone(),
                            v.ip.to_string(),
                            v.mac.clone(),
                            v.link.to_string(),
                            or_dash(v.ifindex),
                            havips.join(","),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME", "HOST", "IFNAME", "INSTANCE", "SUBNET", "IP", "MAC", "LINK", "IFINDEX",
                        "HAVIPS",
                    ],
                    rows,
                )
            })
        }
        Cmd::Subnet(SubnetCmd::Add { name, cidr, mode, storm_pps, storm_burst }) => {
            let what = format!("subnet {name} registered");
            let spec = SubnetSpec { name, cidr, mode, storm_pps, storm_burst };
            ctl.done(Method::POST, "/v1/subnets", Body::json(&spec)?, what).await
        }
        Cmd::Subnet(SubnetCmd::Mode { name, mode, storm_pps, storm_burst }) => {
            let spec = SubnetModeSpec { mode, storm_pps, storm_burst };
            let path = format!("/v1/subnets/{}/mode", seg(&name));
            let s: SubnetView = ctl.call(Method::PUT, &path, Body::json(&spec)?).await?;
            show(ctl.json, &s, subnet_detail)
        }
        Cmd::Subnet(SubnetCmd::Describe { name }) => {
            let s: SubnetView =
                ctl.call(Method::GET, &format!("/v1/subnets/{}", seg(&name)), Body::None).await?;
            show(ctl.json, &s, subnet_detail)
        }
        Cmd::Subnet(SubnetCmd::Delete { name }) => {
            let what = format!("subnet {name} removed");
            ctl.done(Method::DELETE, &format!("/v1/subnets/{}", seg(&name)), Body::None, what).await
        }
        Cmd::Subnet(SubnetCmd::List) => {
            let ss: Vec<SubnetView> = ctl.call(Method::GET, "/v1/subnets", Body::None).await?;
            show(ctl.json, &ss, |ss| {
                let rows = ss
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.cidr.clone(),
                            s.mode.to_string(),
                            s.vnics.to_string(),
                            s.havips.to_string(),
                        ]
                    })
                    .collect();
                table(&["NAME", "CIDR", "MODE", "VNICS", "HAVIPS"], rows)
            })
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "havipctl", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Exit status: 0 done; 1 refused by a rule (409) or malformed (400);
/// 2 no such object (404); 3 the agent failed (5xx); 4 the agent could not
/// be reached, or anything else went wrong.
fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Refused { status: 404, .. }) => 2,
        Some(ClientError::Refused { status, .. }) if *status >= 500 => 3,
        Some(ClientError::Refused { .. }) => 1,
        _ => 4,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let result = rt.context("starting the tokio runtime").and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                // For scripts: the refusal as the API sent it, on stdout.
                Some(ClientError::Refused { status, rule, error }) if json => {
                    println!("{}", serde_json::json!({ "error": error, "rule": rule, "status": status }));
                }
                _ => eprintln!("havipctl: {e:#}"),
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use havip_api::view::{BroadcastView, HavipView, Status};

    use super::*;

    fn parse(args: &[&str]) -> Cmd {
        Cli::try_parse_from(std::iter::once("havipctl").chain(args.iter().copied())).unwrap().cmd
    }

    #[test]
    fn subnet_verbs_parse() {
        let Cmd::Subnet(SubnetCmd::Mode { name, mode, storm_pps, storm_burst }) = parse(&[
            "subnet",
            "mode",
            "vpc1",
            "broadcast-domain",
            "--storm-pps",
            "500",
            "--storm-burst",
            "50",
        ]) else {
            panic!("subnet mode")
        };
        assert_eq!(
            (name.as_str(), mode.as_str(), storm_pps, storm_burst),
            ("vpc1", "broadcast-domain", Some(500), Some(50))
        );
        let Cmd::Subnet(SubnetCmd::Add { mode, storm_pps, storm_burst, .. }) =
            parse(&["subnet", "add", "vpc2", "198.18.2.0/24", "--mode", "unicast"])
        else {
            panic!("subnet add")
        };
        assert_eq!((mode.as_deref(), storm_pps, storm_burst), (Some("unicast"), None, None));
        assert!(matches!(parse(&["subnet", "describe", "vpc1"]), Cmd::Subnet(SubnetCmd::Describe { .. })));
        // The mode is the agent's to judge (a refusal, exit 1); a rate must be a number.
        assert!(Cli::try_parse_from(["havipctl", "subnet", "mode", "vpc1"]).is_err());
        assert!(Cli::try_parse_from(["havipctl", "subnet", "mode", "vpc1", "unicast", "--storm-pps", "-1"])
            .is_err());
    }

    fn view(mode: SubnetMode, broadcast: Option<BroadcastView>) -> SubnetView {
        SubnetView {
            name: "vpc1".into(),
            cidr: "198.18.1.0/24".into(),
            vnics: 2,
            havips: 1,
            mode,
            storm_pps: 500,
            storm_burst: 50,
            broadcast,
        }
    }

    #[test]
    fn subnets_show_their_mode_and_counters() {
        let b = BroadcastView {
            programmed: true,
            flooded: 12,
            local_copies: 12,
            remote_copies: 24,
            storm_drops: 3,
            storm_drops_by_vnic: std::collections::BTreeMap::from([("vnic-b".to_owned(), 3)]),
            hosts: vec!["hv1".into(), "hv2".into(), "hv3".into()],
            ..Default::default()
        };
        let text = subnet_detail(&view(SubnetMode::BroadcastDomain, Some(b)));
        for line in [
            "Mode:       broadcast-domain\n",
            "Storm:      500 frames/s per vNIC, burst 50\n",
            "Hosts:      hv1, hv2, hv3\n",
            "  flooded              12\n",
            "  remote_copies        24\n",
            "  storm_drops          3\n",
            "  too_big              0\n",
            "  no_vtep              0\n",
            "  storm drops of vnic-b: 3\n",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
        assert!(!text.contains("not replicated"), "{text}");
        let idle = subnet_detail(&view(SubnetMode::BroadcastDomain, Some(BroadcastView::default())));
        assert!(idle.contains("not replicated on this host") && idle.contains("Hosts:      none"), "{idle}");
        let unicast = subnet_detail(&view(SubnetMode::Unicast, None));
        assert!(unicast.contains("Mode:       unicast\n") && !unicast.contains("Broadcast"), "{unicast}");
        assert!(unicast.contains("(applies in broadcast-domain mode)"), "{unicast}");
    }

    #[test]
    fn describe_vip_names_the_subnet_mode() {
        let h: HavipView = serde_json::from_value(serde_json::json!({
            "vip": "198.18.1.50", "subnet": "vpc1", "subnet_mode": "broadcast-domain", "status": Status::Available,
            "members": [], "eip": null, "holder": null, "holder_host": null, "holder_instance": null,
            "since": null, "epoch": 0, "failovers": 0, "last_claims": [], "counters": {},
            "settings": {"accept_vrrp_vmac": true, "split_brain": "last-claim-wins"},
            "no_holder_reason": null, "contested": null, "verification": null, "vrrp": []
        }))
        .unwrap();
        assert!(havip_detail(&h).contains("Subnet:     vpc1 (broadcast-domain)\n"), "{}", havip_detail(&h));
    }
}
