//! The operator's event feed: holder changes, refused claims, vNICs that
//! come and go, and changes to the desired state. Recent events are kept
//! for `havipctl events`; followers get every new one as it happens.

use std::{
    collections::VecDeque,
    net::Ipv4Addr,
    sync::{Mutex, MutexGuard},
};

use havip_api::{Event, EventKind};
use havip_model::state::now_ms;
use tokio::sync::broadcast;

use crate::sync::lock;

/// How many past events `havipctl events` shows.
const KEPT: usize = 1024;

/// The feed: the last 1,024 events and a broadcast of every new one.
pub struct Feed {
    recent: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for Feed {
    fn default() -> Self {
        Self { recent: Mutex::new(VecDeque::new()), live: broadcast::Sender::new(KEPT) }
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
}
