//! Follows the kernel's claim events (ring buffer) and reports them: every
//! holder change is logged with the vNIC and instance that took the VIP, and
//! handed to the [`Observer`] for the store and the event feed.

use std::{collections::HashMap, sync::Arc};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use havip_common::{HavipEvent, Mac, RejectReason, VipKey, EV_CLAIM, EV_CLAIM_REJECTED};
use tokio::io::{unix::AsyncFd, Interest};
use tracing::{debug, info, warn};

use crate::observe::Observer;

/// ifindex -> (vNIC name, instance), to report names rather than numbers.
pub type PortNames = HashMap<u32, (String, String)>;

fn name_of(names: &PortNames, ifindex: u32) -> String {
    match (ifindex, names.get(&ifindex)) {
        (0, _) => "none".into(),
        (_, Some((vnic, _))) => vnic.clone(),
        (i, None) => format!("ifindex {i}"),
    }
}

fn instance_of(names: &PortNames, ifindex: u32) -> &str {
    names.get(&ifindex).map_or("?", |(_, inst)| inst.as_str())
}

pub fn report(ev: &HavipEvent, names: &PortNames) {
    let vip = VipKey { addr: ev.vip }.ip();
    let vnic = name_of(names, ev.ifindex);
    let mac = Mac(&ev.mac).to_string();
    match ev.kind {
        EV_CLAIM if ev.changed != 0 => info!(
            vip = %vip,
            vnic,
            instance = instance_of(names, ev.ifindex),
            prev_vnic = name_of(names, ev.prev_ifindex),
            epoch = ev.epoch,
            mac,
            ts_ns = ev.ts_ns,
            "holder changed"
        ),
        EV_CLAIM => debug!(vip = %vip, vnic, epoch = ev.epoch, "claim refreshed"),
        EV_CLAIM_REJECTED => {
            let reason = RejectReason::from_raw(ev.reason)
                .map_or_else(|| format!("reason {}", ev.reason), |r| r.to_string());
            warn!(vip = %vip, vnic, mac, reason, "claim rejected")
        }
        kind => warn!(kind, "unknown event kind from the data plane"),
    }
}

/// Drains the ring buffer whenever it becomes readable, until an error.
pub async fn follow(events: RingBuf<MapData>, observer: Arc<Observer>) -> Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open until the
    // AsyncFd (which owns the RingBuf) is dropped.
    let mut fd = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("watching the events ring buffer")?;
    loop {
        let mut guard = fd.readable_mut().await.context("waiting for events")?;
        let rb = guard.get_inner_mut();
        let mut batch = Vec::new();
        while let Some(item) = rb.next() {
            match HavipEvent::from_bytes(&item) {
                Some(ev) => batch.push(ev),
                None => warn!(len = item.len(), "short record in the events ring buffer"),
            }
        }
        guard.clear_ready();
        let names = observer.names();
        batch.iter().for_each(|ev| report(ev, &names));
        let observer = observer.clone();
        // One store commit per batch (it waits for fsync): off the async threads.
        tokio::task::spawn_blocking(move || observer.events(&batch, &names))
            .await
            .context("observer task")?
            .context("recording claims")?;
    }
}
