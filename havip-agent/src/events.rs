//! Follows the kernel's claim events (ring buffer) and hands them to the
//! [`Observer`], which records them in the store and reports them on the
//! event feed (the one place events are logged).

use std::sync::Arc;

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use havip_common::HavipEvent;
use tokio::io::{unix::AsyncFd, Interest};
use tracing::warn;

use crate::observe::Observer;

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
        let observer = observer.clone();
        // One store commit per batch (it waits for fsync): off the async threads.
        tokio::task::spawn_blocking(move || observer.events(&batch, &names))
            .await
            .context("observer task")?
            .context("recording claims")?;
    }
}
