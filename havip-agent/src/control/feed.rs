//! The operator's event feed: holder changes, refused claims, vNICs that
//! come and go, and changes to the desired state. Recent events are kept
//! for `havipctl events`; followers get every new one as it happens.

use std::{
    collections::VecDeque,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};

use havip_api::{Event, EventKind};
use havip_model::state::now_ms;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

use crate::sync::lock;

/// How many past events `havipctl events` shows.
const KEPT: usize = 1024;

/// Events a follower may fall behind by before it misses some (one ring
/// shared by every follower, so it costs the same for one or for many).
pub const BACKLOG: usize = 1024;
/// Followers at once (`havipctl events --follow`); more are refused.
pub const MAX_FOLLOWERS: usize = 64;

/// The feed: the last 1,024 events and a broadcast of every new one.
pub struct Feed {
    recent: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
    followers: Arc<Semaphore>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            recent: Mutex::new(VecDeque::new()),
            live: broadcast::Sender::new(BACKLOG),
            followers: Arc::new(Semaphore::new(MAX_FOLLOWERS)),
        }
    }
}

/// One follower of the feed, holding one of the [`MAX_FOLLOWERS`] slots
/// until dropped.
pub struct Follower {
    rx: broadcast::Receiver<Event>,
    /// The event read after a gap, given after the gap's marker.
    pending: Option<Event>,
    _slot: OwnedSemaphorePermit,
}

impl Follower {
    /// The next event; after a gap (this follower fell more than
    /// [`BACKLOG`] events behind), first a [`EventKind::Missed`] marker whose
    /// `seq` is the first missed event's and whose detail starts with how
    /// many were missed. `None` once the feed is gone.
    pub async fn next(&mut self) -> Option<Event> {
        if let Some(ev) = self.pending.take() {
            return Some(ev);
        }
        let mut missed = match self.rx.recv().await {
            Ok(ev) => return Some(ev),
            Err(broadcast::error::RecvError::Lagged(n)) => n,
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        let next = loop {
            match self.rx.recv().await {
                Ok(ev) => break ev,
                Err(broadcast::error::RecvError::Lagged(n)) => missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        };
        let first = next.seq.saturating_sub(missed);
        let marker = Event {
            seq: first,
            at_ms: now_ms(),
            kind: EventKind::Missed,
            vip: None,
            vnic: None,
            detail: format!(
                "{missed} events missed (seq {first}-{}): this follower read more slowly than they came \
                 (the agent holds {BACKLOG} for a follower)",
                next.seq - 1
            ),
        };
        self.pending = Some(next);
        Some(marker)
    }
}

impl Feed {
    fn recent(&self) -> MutexGuard<'_, VecDeque<Event>> {
        lock(&self.recent)
    }

    /// Records an event, logs it (a warning if an operator should look) and
    /// sends it to every follower.
    pub fn publish(
        &self,
        kind: EventKind,
        vip: Option<Ipv4Addr>,
        vnic: Option<&str>,
        detail: impl Into<String>,
    ) {
        let mut recent = self.recent();
        let seq = recent.back().map_or(1, |e| e.seq + 1);
        let ev =
            Event { seq, at_ms: now_ms(), kind, vip, vnic: vnic.map(str::to_owned), detail: detail.into() };
        let vip = ev.vip.map(|v| v.to_string());
        // The kind as `havipctl events` spells it, so one grep finds both.
        let kind = serde_json::to_value(ev.kind).ok().and_then(|v| v.as_str().map(str::to_owned));
        if ev.kind.is_warning() {
            tracing::warn!(kind, vip, vnic = ev.vnic, detail = %ev.detail, "event");
        } else {
            tracing::info!(kind, vip, vnic = ev.vnic, detail = %ev.detail, "event");
        }
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(ev.clone());
        // Nobody following is fine.
        let _ = self.live.send(ev);
    }

    /// The kept events, and a receiver for every later one: subscribed under
    /// the same lock, so none falls between the two.
    pub fn follow(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.recent();
        (recent.iter().cloned().collect(), self.live.subscribe())
    }

    /// [`Feed::follow`] as a [`Follower`], if one of the [`MAX_FOLLOWERS`]
    /// slots is free.
    pub fn subscribe(&self) -> Option<(Vec<Event>, Follower)> {
        let slot = self.followers.clone().try_acquire_owned().ok()?;
        let (past, rx) = self.follow();
        Some((past, Follower { rx, pending: None, _slot: slot }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_see_history_then_live_without_gaps() {
        let feed = Feed::default();
        feed.publish(EventKind::VnicUp, None, Some("vnic-a"), "up");
        let (past, mut rx) = feed.follow();
        feed.publish(EventKind::Changed, Some("198.18.1.50".parse().unwrap()), None, "HAVIP created");
        assert_eq!(past.len(), 1);
        let next = rx.try_recv().unwrap();
        assert_eq!((next.seq, next.kind), (2, EventKind::Changed));
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_gets_a_marker_then_goes_on() {
        let feed = Feed::default();
        let (_, mut f) = feed.subscribe().unwrap();
        let total = BACKLOG as u64 + 10;
        for i in 0..total {
            feed.publish(EventKind::Changed, None, None, format!("edit {i}"));
        }
        let marker = f.next().await.unwrap();
        assert_eq!((marker.kind, marker.seq), (EventKind::Missed, 1));
        assert!(marker.detail.starts_with("10 events missed (seq 1-10)"), "{}", marker.detail);
        assert_eq!(f.next().await.unwrap().seq, 11);
        assert_eq!(f.next().await.unwrap().seq, 12);
    }

    #[test]
    fn followers_are_bounded() {
        let feed = Feed::default();
        let held: Vec<_> = (0..MAX_FOLLOWERS).map(|_| feed.subscribe().unwrap()).collect();
        assert!(feed.subscribe().is_none());
        drop(held);
        assert!(feed.subscribe().is_some());
    }
}
