//! Divergence is always visible and always retried (issue 12.6): a reconcile
//! pass that fails — here, a stray directory among the pinned links, which
//! makes the agent try to detach "it" — is an event, and the pass is retried
//! with backoff, so the maps catch up by themselves once the cause is gone.

mod control_support;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use control_support::{Ctl, OBSERVE_TIMEOUT};
use havip_lab::{netns::LabId, scenario::Lab, wait};

/// The first retry comes after 1 s, the next after 2 s.
const CAUGHT_UP_WITHIN: Duration = Duration::from_secs(6);

#[test]
fn a_failing_reconcile_is_reported_and_retried_until_the_maps_catch_up() -> Result<()> {
    let lab = Lab::create(LabId::unique("test"), true)?;
    lab.run(|lab| {
        lab.start_agent()?;
        let ctl = Ctl::of(lab)?;
        let links = lab.agent()?.spec().pin_dir.join(format!("v{}", havip_common::ABI_VERSION)).join("links");
        let stray = links.join("stray");
        std::fs::create_dir(&stray).with_context(|| format!("creating {}", stray.display()))?;

        // A change the maps must follow, while every pass fails.
        ctl.ok(&["create", "--subnet", "vpc1", "--vip", "198.18.1.60"])?;
        let failed = wait::until("a reconcile_failed event", OBSERVE_TIMEOUT, || {
            let text = ctl.ok(&["events", "--json"])?;
            Ok(text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|e| e["kind"] == "reconcile_failed"))
        })?;
        let detail = failed["detail"].as_str().unwrap_or_default().to_owned();
        ensure!(detail.contains("stray"), "the event names the cause: {detail}");
        let h = ctl.describe("198.18.1.60")?;
        ensure!(h.counters.is_empty(), "the new VIP reached the maps despite the failing pass");

        // The cause goes; nobody touches the agent: the retry catches up.
        std::fs::remove_dir(&stray)?;
        ctl.wait_describe("198.18.1.60", "the VIP in the maps after the retry", CAUGHT_UP_WITHIN, |h| {
            !h.counters.is_empty()
        })?;
        Ok(())
    })
}
