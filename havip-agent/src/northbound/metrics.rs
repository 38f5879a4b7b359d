//! Prometheus `/metrics` on a TCP address (`[agent] metrics`): per-VIP data
//! plane counters, holder epoch and failovers, and the global counters.

use std::{fmt::Write, net::SocketAddr, sync::Arc};

use anyhow::{Context, Result};
use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use futures::Future;
use havip_common::GlobalCounter;
use havip_model::Observed;
use tokio::net::TcpListener;

use super::api::{counters, ApiContext};
use crate::{control::verifier::Verdict, sync::lock};

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
                let app = Router::new().route("/metrics", get(metrics)).with_state(ctl);
                axum::serve(l, app).await.context("serving metrics")
            }
            None => futures::future::pending().await,
        }
    })
}

async fn metrics(State(ctl): State<Arc<ApiContext>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(&ctl))
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
    for g in GlobalCounter::ALL {
        let v = maps.global_counter(g).unwrap_or(0);
        family(
            &format!("{}_total", g.name()),
            "counter",
            "Data plane global counter.",
            &[(String::new(), v)],
        );
    }
    family("havips", "gauge", "HAVIPs in the desired state.", &[(String::new(), state.havips.len() as u64)]);
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
