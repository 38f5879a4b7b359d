//! The readable timeline the lab prints: who held the VIP when (from the
//! agent's JSON log), every claim, keepalived's state changes, the lab's own
//! steps, and what vm-c's probe saw.

use std::{fmt::Write, time::Duration};

use havip_common::{VipCounter, VipCounters};
use serde_json::Value;

use crate::{log::Line, probe::Report};

/// keepalived lines worth a place in the timeline.
const KEEPALIVED_MARKS: [&str; 4] = ["Entering", "Stopped", "Starting VRRP", "priority 0"];

fn secs(d: Duration) -> String {
    format!("{:>8.3}s", d.as_secs_f64())
}

/// keepalived's console lines start with their own wall-clock date
/// ("Sat Nov 21 16:00:07 2026: "): the timeline has a better clock.
fn strip_date(text: &str) -> &str {
    match text.find(": ") {
        Some(i) if i >= 4 && text[i - 4..i].bytes().all(|b| b.is_ascii_digit()) => &text[i + 2..],
        _ => text,
    }
}

/// One agent JSON log line, as a timeline entry (`None`: not worth showing).
fn agent_line(text: &str) -> Option<String> {
    let Ok(v) = serde_json::from_str::<Value>(text) else { return Some(text.to_owned()) };
    let f = &v["fields"];
    let s = |k: &str| match &f[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let msg = s("message");
    let level = v["level"].as_str().unwrap_or("");
    if msg == "event" {
        // The agent's event feed: holder changes, refused claims, vNICs, changes.
        let label = match s("kind").as_str() {
            "holder_changed" => "HOLDER",
            "holder_cleared" => "NO HOLDER",
            "holder_corrected" => "CORRECTED",
            "holder_unresponsive" => "holder unresponsive",
            "contested" => "CONTESTED",
            "claim_rejected" => "claim rejected",
            "peer_without_xdp" => "peer without XDP",
            _ => return None,
        };
        Some(format!("{label}: {}", s("detail")))
    } else if matches!(level, "WARN" | "ERROR") {
        Some(format!("{level} {msg}"))
    } else {
        None
    }
}

/// One probe as the report shows it: who probed what.
pub struct ProbeView<'a> {
    pub who: &'a str,
    pub target: &'a str,
    pub report: &'a Report,
}

/// Renders the lab's timeline, each probe's view of it and the VIP's counters.
pub fn render(lines: &[Line], probes: &[ProbeView], interval: Duration, counters: &VipCounters) -> String {
    let mut out = String::from("\n=== timeline (seconds since the lab started) ===\n");
    for l in lines {
        let entry = match l.source.as_str() {
            // "agent", or "agent hv2" where each host runs one.
            src if src == "agent" || src.starts_with("agent ") => agent_line(&l.text),
            "lab" => Some(l.text.clone()),
            src if src.starts_with("keepalived") => {
                KEEPALIVED_MARKS.iter().any(|m| l.text.contains(m)).then(|| strip_date(&l.text).to_owned())
            }
            _ => None,
        };
        if let Some(e) = entry {
            let _ = writeln!(out, "{} {:<16} {e}", secs(l.at), l.source);
        }
    }
    for p in probes {
        probe_section(&mut out, p, interval);
    }
    let _ = writeln!(out, "\n=== VIP counters (vip_stats, summed over CPUs) ===");
    for c in VipCounter::ALL {
        let _ = writeln!(out, "{:<18} {}", c.name(), counters.get(c));
    }
    out
}

fn probe_section(out: &mut String, view: &ProbeView, interval: Duration) {
    let (who, probe) = (view.who, view.report);
    let _ = writeln!(out, "\n=== {who} probe: UDP to {} every {interval:?} ===", view.target);
    let mut windows: Vec<(Duration, String)> = probe
        .spans()
        .into_iter()
        .map(|s| {
            let text = format!(
                "{} .. {}  answered by {} ({} probes)",
                secs(s.from),
                secs(s.to),
                s.responder,
                s.count
            );
            (s.from, text)
        })
        .collect();
    windows.extend(probe.gaps().into_iter().map(|g| {
        (g.from, format!("{} .. {}  no answer ({} probes lost)", secs(g.from), secs(g.to), g.lost))
    }));
    windows.sort_by_key(|(from, _)| *from);
    for (_, text) in windows {
        let _ = writeln!(out, "{text}");
    }
    let _ = writeln!(out, "sent {}, lost {}", probe.sent(), probe.lost());
    match probe.longest_gap() {
        Some(g) => {
            let _ = writeln!(
                out,
                "longest outage seen by {who}: {:.3}s ({} probes lost)",
                (g.to - g.from).as_secs_f64(),
                g.lost
            );
        }
        None => {
            let _ = writeln!(out, "longest outage seen by {who}: none, every probe was answered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_dates_are_stripped() {
        assert_eq!(
            strip_date("Sat Nov 21 16:00:07 2026: (VI_50) Entering MASTER STATE"),
            "(VI_50) Entering MASTER STATE"
        );
        assert_eq!(strip_date("no date: here"), "no date: here");
    }

    #[test]
    fn agent_holder_changes_and_rejections_are_shown() {
        let holder = r#"{"level":"INFO","fields":{"message":"event","kind":"holder_changed","vip":"198.18.1.50","vnic":"vnic-b","detail":"vnic-b holds 198.18.1.50 (was vnic-a), epoch 3, failovers 2"}}"#;
        assert_eq!(
            agent_line(holder).unwrap(),
            "HOLDER: vnic-b holds 198.18.1.50 (was vnic-a), epoch 3, failovers 2"
        );
        let rejected = r#"{"level":"WARN","fields":{"message":"event","kind":"claim_rejected","vip":"198.18.1.50","vnic":"vnic-c","detail":"from vnic-c, MAC 02:00:c6:12:01:0d: vNIC is not a member of the HAVIP"}}"#;
        assert!(agent_line(rejected).unwrap().starts_with("claim rejected: from vnic-c, MAC"));
        assert_eq!(
            agent_line(r#"{"level":"INFO","fields":{"message":"event","kind":"changed","detail":"x"}}"#),
            None
        );
        assert_eq!(agent_line(r#"{"level":"INFO","fields":{"message":"attached"}}"#), None);
    }
}
