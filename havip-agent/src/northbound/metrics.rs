//! Prometheus `/metrics` on a TCP address (`[agent] metrics`): per-VIP data
//! plane counters, holder epoch and failovers, the global counters, each
//! subnet's mode and each broadcast-domain subnet's frame counters.
//!
//! Its own server, task and limits, apart from the API's: any local user
//! can reach a loopback port, so a flood of it must never cost the API a
//! slot, a descriptor or a thread. A scrape is rendered off the async
//! threads, one at a time, and shared by every scrape within
//! [`FRESH_FOR`]; one that finds no free slot is answered 503 at once.

use std::{
    fmt::Write,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use axum::{
    body::Bytes,
    error_handling::HandleErrorLayer,
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    BoxError, Router,
};
use futures::Future;
use havip_common::{GlobalCounter, SubnetCounter, SubnetCounters};
use havip_model::{Observed, SubnetMode};
use tokio::{net::TcpListener, sync::Mutex as AsyncMutex};
use tower::{limit::GlobalConcurrencyLimitLayer, timeout::TimeoutLayer, ServiceBuilder};

use super::{
    api::{counters, subnet_counters, ApiContext},
    serve::{serve, ServerLimits},
};
use crate::{control::verifier::Verdict, sync::lock};

/// A rendered scrape is served again for this long: Prometheus scrapes every
/// few seconds, a flood gets one render a second (~9 MB at 10,000 HAVIPs).
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Scrapes handled at once (waiting for the render or served from it); more
/// are answered 503 at once.
pub const MAX_SCRAPES: usize = 4;
/// How long a scrape may wait for its render.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The metrics port's connections: few, short, and each one bounded in
/// time, so a flood holds neither descriptors nor memory for long.
pub fn limits() -> ServerLimits {
    ServerLimits {
        name: "metrics",
        max_connections: 32,
        header_timeout: Duration::from_secs(5),
        lifetime: Some(Duration::from_secs(30)),
        busy: ("text/plain; charset=utf-8", "too many connections to /metrics (32): try again\n".to_owned()),
    }
}

struct Scrapes {
    ctl: Arc<ApiContext>,
    /// The last render and when it was made; locked while rendering, so
    /// scrapes that arrive meanwhile wait for it rather than render again.
    last: AsyncMutex<Option<(Instant, Bytes)>>,
}

/// Binds the metrics address, if one is configured, and returns the server
/// to run (one that never ends when there is none).
pub async fn bind(
    ctl: Arc<ApiContext>,
    addr: Option<SocketAddr>,
) -> Result<impl Future<Output = Result<()>>> {
    let listener = match addr {
        Some(a) => Some(TcpListener::bind(a).await.with_context(|| format!("binding metrics on {a}"))?),
        None => None,
    };
    Ok(async move {
        match listener {
            Some(l) => {
                let scrapes = Arc::new(Scrapes { ctl, last: AsyncMutex::new(None) });
                let app = Router::new().route("/metrics", get(metrics)).with_state(scrapes).layer(
                    ServiceBuilder::new()
                        .layer(HandleErrorLayer::new(busy))
                        .load_shed()
                        .layer(GlobalConcurrencyLimitLayer::new(MAX_SCRAPES))
                        .layer(TimeoutLayer::new(SCRAPE_TIMEOUT)),
                );
                serve(l, app, limits()).await.context("serving metrics")
            }
            None => futures::future::pending().await,
        }
    })
}

async fn busy(err: BoxError) -> Response {
    let why = if err.is::<tower::load_shed::error::Overloaded>() {
        format!("{MAX_SCRAPES} scrapes in flight already: try again\n")
    } else {
        format!("scrape failed: {err}\n")
    };
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], why).into_response()
}

async fn metrics(State(s): State<Arc<Scrapes>>) -> Response {
    let mut last = s.last.lock().await;
    let body = match &*last {
        Some((at, body)) if at.elapsed() < FRESH_FOR => body.clone(),
        _ => {
            let ctl = s.ctl.clone();
            // Seconds of CPU at 10,000 HAVIPs: never on the async threads.
            match tokio::task::spawn_blocking(move || render(&ctl)).await {
                Ok(text) => last.insert((Instant::now(), Bytes::from(text))).1.clone(),
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering: {e}\n")).into_response()
                }
            }
        }
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn render(ctl: &ApiContext) -> String {
    let state = ctl.store.desired().state;
    let observed = ctl.store.observed();
    let mut maps = ctl.maps();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP havip_{name} {help}\n# TYPE havip_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "havip_{name}{labels} {v}");
        }
    };
    let vip_label = |vip: &std::net::Ipv4Addr| format!("{{vip=\"{vip}\"}}");

    let per_vip: Vec<(String, std::collections::BTreeMap<String, u64>)> =
        state.havips.keys().map(|vip| (vip_label(vip), counters(&mut *maps, *vip))).collect();
    let globals: Vec<(GlobalCounter, u64)> =
        GlobalCounter::ALL.iter().map(|&g| (g, maps.global_counter(g).unwrap_or(0))).collect();
    // The broadcast-domain subnets this host's data plane replicates for (those with a slot).
    let per_subnet: Vec<(&String, SubnetCounters)> = state
        .subnets
        .iter()
        .filter(|(name, _)| state.subnet_settings(name).mode == SubnetMode::BroadcastDomain)
        .filter_map(|(name, sn)| Some((name, subnet_counters(&mut *maps, sn)?)))
        .collect();
    // The API's `describe` waits on the maps: held for the reads only.
    drop(maps);
    for c in havip_common::VipCounter::ALL {
        let samples: Vec<(String, u64)> =
            per_vip.iter().filter_map(|(l, cs)| Some((l.clone(), *cs.get(c.name())?))).collect();
        family(&format!("vip_{}_total", c.name()), "counter", "Data plane per-VIP counter.", &samples);
    }
    let obs = |f: fn(&Observed) -> u64| -> Vec<(String, u64)> {
        state.havips.keys().map(|vip| (vip_label(vip), observed.get(vip).map_or(0, f))).collect()
    };
    family("vip_epoch", "gauge", "Holder epoch: grows on every holder change.", &obs(|o| o.epoch));
    family("vip_failovers_total", "counter", "Times the VIP moved to another vNIC.", &obs(|o| o.failovers));
    family("vip_held", "gauge", "1 if some vNIC holds the VIP.", &obs(|o| o.holder.is_some() as u64));
    let members: Vec<(String, u64)> =
        state.havips.values().map(|h| (vip_label(&h.vip), h.members.len() as u64)).collect();
    family("vip_members", "gauge", "Members of the HAVIP.", &members);
    let holders: Vec<(String, u64)> = state
        .havips
        .keys()
        .filter_map(|vip| {
            let h = observed.get(vip)?.holder.as_ref()?;
            Some((format!("{{vip=\"{vip}\",vnic=\"{}\",host=\"{}\"}}", escape(&h.vnic), escape(&h.host)), 1))
        })
        .collect();
    family("holder_info", "gauge", "The holder of each held VIP, as labels.", &holders);
    let verdicts = lock(&ctl.verdicts).clone();
    let per_verdict = |f: &dyn Fn(&Verdict) -> u64| -> Vec<(String, u64)> {
        verdicts.iter().map(|(vip, v)| (vip_label(vip), f(v))).collect()
    };
    family(
        "vip_contested",
        "gauge",
        "1 while two members hold the VIP at once (split brain).",
        &per_verdict(&|v| v.contested.is_some() as u64),
    );
    family(
        "verification_probes_total",
        "counter",
        "ARP probes the agent sent for the VIP.",
        &per_verdict(&|v| v.probes_sent),
    );
    family(
        "verification_rounds_answered_total",
        "counter",
        "Verification rounds for the VIP whose probes were answered.",
        &per_verdict(&|v| v.rounds_answered),
    );
    family(
        "verification_misses",
        "gauge",
        "Probes the holder missed in a row.",
        &per_verdict(&|v| v.misses as u64),
    );
    let corrections: Vec<(String, u64)> = verdicts
        .iter()
        .flat_map(|(vip, v)| {
            v.corrections
                .iter()
                .map(move |(reason, n)| (format!("{{vip=\"{vip}\",reason=\"{reason}\"}}"), *n))
        })
        .collect();
    family(
        "holder_corrections_total",
        "counter",
        "Times the platform re-pointed the VIP itself, by reason (probe, vrrp, split-brain).",
        &corrections,
    );
    for (g, v) in globals {
        family(
            &format!("{}_total", g.name()),
            "counter",
            "Data plane global counter.",
            &[(String::new(), v)],
        );
    }
    family("havips", "gauge", "HAVIPs in the desired state.", &[(String::new(), state.havips.len() as u64)]);
    let modes: Vec<(String, u64)> = state
        .subnets
        .keys()
        .map(|name| {
            let mode = state.subnet_settings(name).mode;
            (format!("{{subnet=\"{}\",mode=\"{mode}\"}}", escape(name)), 1)
        })
        .collect();
    family(
        "subnet_mode",
        "gauge",
        "1 for each subnet, its mode as a label: unicast (ENS) or broadcast-domain (ZEC).",
        &modes,
    );
    let frames: Vec<(String, u64)> = per_subnet
        .iter()
        .flat_map(|(name, c)| {
            SubnetCounter::ALL.iter().map(move |&k| {
                (format!("{{subnet=\"{}\",counter=\"{}\"}}", escape(name), k.name()), c.get(k))
            })
        })
        .collect();
    family(
        "subnet_broadcast_frames_total",
        "counter",
        "Broadcast and multicast frames of a broadcast-domain subnet on this host, by counter: flooded \
         (from guests, replicated), local_copies, remote_copies (one per other host), storm_drops (over \
         a vNIC's storm limit), received (from other hosts), local_only (source outside the subnet), \
         too_big (not sent: over the underlay MTU).",
        &frames,
    );
    if let Some(c) = ctl.cluster.as_deref().map(super::api::cluster_status) {
        family(
            "holder_revision",
            "gauge",
            "Revision of the holder record this host follows (etcd mod_revision: the fencing token).",
            &obs(|o| o.revision),
        );
        family(
            "cluster_reachable",
            "gauge",
            "1 while the shared store (etcd) answers.",
            &[(String::new(), c.reachable as u64)],
        );
        family(
            "cluster_revision",
            "gauge",
            "The last shared-store revision this host has seen.",
            &[(String::new(), c.revision)],
        );
        let hosts: Vec<(String, u64)> = ["up", "suspect", "down"]
            .iter()
            .map(|s| (format!("{{state=\"{s}\"}}"), c.hosts.iter().filter(|h| h.state == *s).count() as u64))
            .collect();
        family("cluster_hosts", "gauge", "Other hosts by state (suspect: lease expired, probed).", &hosts);
        let outcome = |o: &str, v: u64| (format!("{{outcome=\"{o}\"}}"), v);
        family(
            "cluster_commits_total",
            "counter",
            "This host's claim and clear commits, by outcome (fenced and retried are attempts).",
            &[
                outcome("won", c.commits_won),
                outcome("lost", c.commits_lost),
                outcome("fenced", c.commits_fenced),
                outcome("retried", c.commit_retries),
            ],
        );
        family(
            "cluster_records_applied_total",
            "counter",
            "Holder records applied to the data plane.",
            &[(String::new(), c.records_applied)],
        );
        family(
            "hints_total",
            "counter",
            "Peer hints, by what happened to them.",
            &[
                outcome("sent", c.hints_sent),
                outcome("applied", c.hints_applied),
                outcome("ignored", c.hints_ignored),
            ],
        );
        family(
            "peer_probes_total",
            "counter",
            "Liveness probes this agent sent to hosts whose lease expired, and their answers.",
            &[outcome("sent", c.probes_sent), outcome("answered", c.probes_answered)],
        );
    }
    let store = ctl.store.health().snapshot();
    let sync = lock(&ctl.sync).clone();
    let one = |v: u64| [(String::new(), v)];
    family(
        "store_failing",
        "gauge",
        "1 while store writes fail (observations wait in memory).",
        &one(store.failing as u64),
    );
    family("store_write_failures_total", "counter", "Store writes that failed.", &one(store.write_failures));
    family(
        "store_reopens_total",
        "counter",
        "Times the store was reopened after a failed write.",
        &one(store.reopens),
    );
    family(
        "store_pending_observations",
        "gauge",
        "HAVIPs whose observations are not yet on disk.",
        &one(store.pending),
    );
    family(
        "config_applied",
        "gauge",
        "0 if the config file's desired state conflicted with the store's and was left out at start.",
        &one(store.config_not_applied.is_none() as u64),
    );
    family(
        "reconcile_failures_total",
        "counter",
        "Reconcile passes that failed (retried with backoff).",
        &one(sync.failed_passes),
    );
    family(
        "maps_in_sync",
        "gauge",
        "1 if the last reconcile pass succeeded.",
        &one(sync.last_error.is_none() as u64),
    );
    family(
        "unattached_vnics",
        "gauge",
        "vNICs of this host present but not attached (retried with backoff).",
        &one(sync.unattached.len() as u64),
    );
    for (name, help, h) in [
        (
            "claim_recorded_seconds",
            "From a claim in the kernel (which re-points on that very packet) to its holder record in the store.",
            lock(&ctl.latencies.claim_recorded).clone(),
        ),
        (
            "correction_seconds",
            "From the first sign of a wrong holder (a missed probe, a rival advertising alone) to its correction.",
            lock(&ctl.latencies.correction).clone(),
        ),
    ] {
        let _ = writeln!(out, "# HELP havip_{name} {help}\n# TYPE havip_{name} histogram");
        for (le, n) in h.cumulative() {
            let _ = writeln!(out, "havip_{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "havip_{name}_sum {}\nhavip_{name}_count {}", h.sum, h.count);
    }
    out
}

/// A label value in the exposition format: backslash, quote and newline
/// escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        datapath::fake::FakeMaps,
        northbound::api::testing::{call, context},
    };

    #[tokio::test]
    async fn every_subnet_has_its_mode() {
        let c = context("metrics-mode", FakeMaps::new(16), &[]);
        for (sn, cidr) in [("vpc1", "198.18.1.0/24"), ("vpc2", "198.18.2.0/24")] {
            assert_eq!(call(&c, "POST", "/v1/subnets", Some(json!({"name": sn, "cidr": cidr}))).await.0, 200);
        }
        let put = json!({"mode": "broadcast-domain"});
        assert_eq!(call(&c, "PUT", "/v1/subnets/vpc2/mode", Some(put)).await.0, 200);
        let text = render(&c);
        assert!(text.contains("# TYPE havip_subnet_mode gauge\n"), "{text}");
        assert!(text.contains("havip_subnet_mode{subnet=\"vpc1\",mode=\"unicast\"} 1\n"), "{text}");
        assert!(text.contains("havip_subnet_mode{subnet=\"vpc2\",mode=\"broadcast-domain\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE havip_subnet_broadcast_frames_total counter\n"), "{text}");
        // No slot on this host for vpc2 (no vNIC of it here): no samples.
        assert!(!text.contains("havip_subnet_broadcast_frames_total{"), "{text}");
    }

    #[tokio::test]
    async fn a_broadcast_domain_served_here_has_its_frame_counters() {
        // What the reconciler writes for vpc1 at slot 3, and what the programs counted.
        let maps = FakeMaps::new(16).with_counted_subnet("198.18.1.0".parse().unwrap(), 24, 3);
        let c = context("metrics-frames", maps, &[]);
        assert_eq!(
            call(&c, "POST", "/v1/subnets", Some(json!({"name": "vpc1", "cidr": "198.18.1.0/24"}))).await.0,
            200
        );
        assert!(!render(&c).contains("havip_subnet_broadcast_frames_total{"), "unicast: none");
        let put = json!({"mode": "broadcast-domain"});
        assert_eq!(call(&c, "PUT", "/v1/subnets/vpc1/mode", Some(put)).await.0, 200);
        let text = render(&c);
        for (name, v) in [
            ("flooded", 10),
            ("local_copies", 20),
            ("remote_copies", 30),
            ("storm_drops", 40),
            ("received", 50),
            ("local_only", 60),
            ("too_big", 70),
        ] {
            let line =
                format!("havip_subnet_broadcast_frames_total{{subnet=\"vpc1\",counter=\"{name}\"}} {v}\n");
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
    }
}
