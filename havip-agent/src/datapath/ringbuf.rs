//! Follows the kernel's claim events (the `events` ring buffer) and hands
//! them over in batches, as they arrive (in the agent: to the observer,
//! which records them in the store and reports them on the event feed).

use std::future::Future;

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use havip_common::HavipEvent;
use tokio::io::{unix::AsyncFd, Interest};
use tracing::warn;

/// Drains the ring buffer whenever it becomes readable and hands each
/// batch to `deliver` (awaited before the next read), until an error.
pub async fn follow<F, Fut>(events: RingBuf<MapData>, mut deliver: F) -> Result<()>
where
    F: FnMut(Vec<HavipEvent>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
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
        deliver(batch).await?;
    }
}
