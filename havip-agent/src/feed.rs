//! The operator's event feed: holder changes, refused claims, vNICs that
//! come and go, and changes to the desired state. Recent events are kept
//! for `havipctl events`; followers get every new one as it happens.

use std::{
    collections::VecDeque,
    net::Ipv4Addr,
    sync::{Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::model::now_ms;

/// How many past events `havipctl events` shows.
const KEPT: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A member claimed the VIP and now holds it.
    HolderChanged,
    /// The VIP has no holder any more (its vNIC went away, went down, or left).
    HolderCleared,
    /// A claim the data plane dropped (not a member, wrong MAC).
    ClaimRejected,
    VnicUp,
    VnicDown,
    VnicGone,
    /// A veth vNIC whose peer cannot take XDP frames: what havip redirects
    /// into it would be dropped.
    PeerWithoutXdp,
    /// The desired state changed (a verb or an apply).
    Changed,
}

impl Kind {
    /// What an operator should look at: logged as a warning.
    pub fn is_warning(self) -> bool {
        matches!(self, Self::HolderCleared | Self::ClaimRejected | Self::PeerWithoutXdp)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Grows by one per event of this agent run.
    pub seq: u64,
    pub at_ms: u64,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnic: Option<String>,
    pub detail: String,
}

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
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn publish(&self, kind: Kind, vip: Option<Ipv4Addr>, vnic: Option<&str>, detail: impl Into<String>) {
        let mut recent = self.recent();
        let seq = recent.back().map_or(1, |e| e.seq + 1);
        let ev =
            Event { seq, at_ms: now_ms(), kind, vip, vnic: vnic.map(str::to_owned), detail: detail.into() };
        let vip = ev.vip.map(|v| v.to_string());
        if ev.kind.is_warning() {
            tracing::warn!(kind = ?ev.kind, vip, vnic = ev.vnic, detail = %ev.detail, "event");
        } else {
            tracing::info!(kind = ?ev.kind, vip, vnic = ev.vnic, detail = %ev.detail, "event");
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
        feed.publish(Kind::VnicUp, None, Some("vnic-a"), "up");
        let (past, mut rx) = feed.follow();
        feed.publish(Kind::Changed, Some("198.18.1.50".parse().unwrap()), None, "HAVIP created");
        assert_eq!(past.len(), 1);
        let next = rx.try_recv().unwrap();
        assert_eq!((next.seq, next.kind), (2, Kind::Changed));
    }
}
