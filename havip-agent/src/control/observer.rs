//! What the data plane decided, written back to the store: the holder of
//! every VIP, since when, its epoch, how many failovers, the last claims.
//! Two sources feed it: claim events from the ring buffer as they happen,
//! and the VIPs' state in the maps, read after every reconcile and at start, which
//! catches what no event told (a holder cleared because its vNIC went away,
//! claims made while the agent was stopped).

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use havip_api::EventKind;
use havip_common::{HavipEvent, Mac, RejectReason, VipKey, EV_CLAIM, EV_CLAIM_REJECTED};
use havip_model::{
    state::{now_ms, Claim},
    Holder, Observed,
};
use tokio::sync::watch;

use super::feed::Feed;
use crate::{
    datapath::maps::Maps,
    host::links::Links,
    store::{Store, StoreError},
    sync::lock,
};

/// ifindex -> (vNIC name, guest MAC) of this host's vNICs, to report names
/// rather than numbers.
pub type PortNames = HashMap<u32, String>;

/// Writes what the data plane decided into the store's observed state and
/// tells the feed.
pub struct Observer {
    /// This host's id: the host of every holder record it writes.
    host: String,
    store: Arc<dyn Store>,
    feed: Arc<Feed>,
    links: watch::Receiver<Links>,
    /// Serialises read-modify-write of the observed state between the
    /// ring-buffer task and the reconciler.
    lock: Mutex<()>,
}

/// Whether the VIPs' state is read at start (anything may have happened while
/// the agent was away) or while running (only newer epochs count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Start,
    Running,
}

impl Observer {
    /// An observer for host `host`'s data plane.
    pub fn new(host: &str, store: Arc<dyn Store>, feed: Arc<Feed>, links: watch::Receiver<Links>) -> Self {
        Self { host: host.to_owned(), store, feed, links, lock: Mutex::new(()) }
    }

    /// ifindex -> name of every vNIC of this host whose link is present now.
    pub fn names(&self) -> PortNames {
        let desired = self.store.desired().state;
        let links = self.links.borrow();
        desired
            .vnics_on(&self.host)
            .filter_map(|v| Some((links.get(&v.ifname)?.ifindex, v.name.clone())))
            .collect()
    }

    /// Records a batch of claim events from the ring buffer.
    pub fn events(&self, events: &[HavipEvent], names: &PortNames) -> Result<(), StoreError> {
        let _serial = lock(&self.lock);
        let desired = self.store.desired().state;
        let mut observed = self.store.observed();
        let mut touched = BTreeMap::new();
        for ev in events {
            let vip = Ipv4Addr::from(ev.vip);
            if !desired.havips.contains_key(&vip) || (ev.kind == EV_CLAIM && ev.changed == 0) {
                // A refresh by the holder changes nothing worth a write.
                continue;
            }
            let o: &mut Observed =
                touched.entry(vip).or_insert_with(|| observed.remove(&vip).unwrap_or_default());
            let vnic =
                names.get(&ev.ifindex).map_or_else(|| format!("ifindex {}", ev.ifindex), String::clone);
            let at_ms = wall_ms(ev.ts_ns);
            match ev.kind {
                EV_CLAIM => {
                    let previous = o.holder_vnic().unwrap_or("none").to_owned();
                    if ev.epoch > o.epoch {
                        note_holder(o, Some(self.holder(&vnic, ev.mac, ev.epoch)), at_ms, ev.epoch);
                        self.feed.publish(
                            EventKind::HolderChanged,
                            Some(vip),
                            Some(&vnic),
                            format!(
                                "{vnic} holds {vip} (was {previous}), epoch {}, failovers {}",
                                o.epoch, o.failovers
                            ),
                        );
                    }
                    o.remember(Claim {
                        at_ms,
                        vnic,
                        accepted: true,
                        detail: format!("took over from {previous}"),
                    });
                }
                // A vNIC that keeps claiming (a spoofer, a misconfigured
                // guest) is counted by the data plane on every claim, but
                // written down at most once a second.
                EV_CLAIM_REJECTED if rejected_recently(o, &vnic, at_ms) => {}
                EV_CLAIM_REJECTED => {
                    let reason = RejectReason::from_raw(ev.reason)
                        .map_or_else(|| format!("reason {}", ev.reason), |r| r.to_string());
                    let detail = format!("from {vnic}, MAC {}: {reason}", Mac(&ev.mac));
                    self.feed.publish(EventKind::ClaimRejected, Some(vip), Some(&vnic), detail);
                    o.remember(Claim { at_ms, vnic, accepted: false, detail: reason });
                }
                _ => {}
            }
        }
        self.store.record(&touched)
    }

    fn holder(&self, vnic: &str, mac: [u8; 6], epoch: u64) -> Holder {
        Holder { host: self.host.clone(), vnic: vnic.to_owned(), mac, epoch }
    }

    /// Brings the observed holders up to date with the VIPs' state in the maps.
    pub fn sync(&self, maps: &mut dyn Maps, mode: SyncMode) -> Result<(), StoreError> {
        let _serial = lock(&self.lock);
        let desired = self.store.desired().state;
        let mut observed = self.store.observed();
        let names = self.names();
        let links = self.links.borrow().clone();
        let mut touched = BTreeMap::new();
        for (vip, havip) in &desired.havips {
            let Some(st) = maps.vip(&VipKey::from(*vip)) else { continue };
            let mut o = observed.remove(vip).unwrap_or_default();
            let holder_name = (st.holder_ifindex != 0).then(|| {
                names
                    .get(&st.holder_ifindex)
                    .map_or_else(|| format!("ifindex {}", st.holder_ifindex), String::clone)
            });
            let news = match mode {
                SyncMode::Running => st.epoch > o.epoch,
                SyncMode::Start => st.epoch != o.epoch || holder_name.as_deref() != o.holder_vnic(),
            };
            if !news {
                continue;
            }
            let previous = o.holder_vnic().map(str::to_owned);
            match holder_name {
                None => {
                    note_holder(&mut o, None, now_ms(), st.epoch);
                    if let Some(p) = previous {
                        let ifname = desired.vnics.get(&p).map(|v| v.ifname.as_str());
                        let why = match ifname.and_then(|i| links.get(i)) {
                            None => format!("vNIC {p} is gone"),
                            Some(l) if !l.up => format!("vNIC {p} is down"),
                            Some(_) if !havip.members.contains(&p) => format!("{p} is no longer a member"),
                            Some(_) => "cleared in the data plane".to_owned(),
                        };
                        self.feed.publish(
                            EventKind::HolderCleared,
                            Some(*vip),
                            Some(&p),
                            format!("{vip} has no holder: {why}"),
                        );
                    }
                }
                Some(vnic) => {
                    note_holder(
                        &mut o,
                        Some(self.holder(&vnic, st.holder_mac, st.epoch)),
                        wall_ms(st.since_ns),
                        st.epoch,
                    );
                    self.feed.publish(
                        EventKind::HolderChanged,
                        Some(*vip),
                        Some(&vnic),
                        format!(
                            "{vnic} holds {vip} (seen in the maps), epoch {}, failovers {}",
                            o.epoch, o.failovers
                        ),
                    );
                }
            }
            touched.insert(*vip, o);
        }
        self.store.record(&touched)
    }
}

/// How long a refused claimant stays quiet in the store and the feed.
const REJECTION_QUIET_MS: u64 = 1000;

fn rejected_recently(o: &Observed, vnic: &str, at_ms: u64) -> bool {
    o.last_claims
        .iter()
        .any(|c| !c.accepted && c.vnic == vnic && at_ms.saturating_sub(c.at_ms) < REJECTION_QUIET_MS)
}

/// A holder change: a failover when the VIP goes to another vNIC than the
/// last one that held it (not when it first gets a holder, nor when the
/// same vNIC takes it back after it had none).
fn note_holder(o: &mut Observed, holder: Option<Holder>, since_ms: u64, epoch: u64) {
    if let Some(h) = &holder {
        if o.last_holder.as_ref().is_some_and(|last| *last != h.vnic) {
            o.failovers += 1;
        }
        o.last_holder = Some(h.vnic.clone());
    }
    o.holder = holder;
    o.since_ms = Some(since_ms);
    o.epoch = epoch;
}

/// Wall-clock Unix ms of a CLOCK_MONOTONIC timestamp (the kernel's
/// bpf_ktime_get_ns), as of now.
fn wall_ms(mono_ns: u64) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    now_ms().saturating_sub(now_ns.saturating_sub(mono_ns) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failovers_count_moves_to_another_vnic() {
        let mut o = Observed::default();
        let h =
            |vnic: &str, epoch| Some(Holder { host: "hv1".into(), vnic: vnic.into(), mac: [2; 6], epoch });
        note_holder(&mut o, h("a", 1), 0, 1);
        note_holder(&mut o, h("b", 2), 0, 2);
        note_holder(&mut o, None, 0, 3);
        note_holder(&mut o, h("b", 4), 0, 4);
        note_holder(&mut o, h("a", 5), 0, 5);
        assert_eq!((o.failovers, o.epoch, o.holder_vnic()), (2, 5, Some("a")));
    }

    #[test]
    fn a_persistent_spoofer_is_written_down_once_a_second() {
        let mut o = Observed::default();
        let refused = |at_ms| Claim { at_ms, vnic: "vnic-c".into(), accepted: false, detail: String::new() };
        o.remember(refused(10_000));
        assert!(rejected_recently(&o, "vnic-c", 10_500));
        assert!(!rejected_recently(&o, "vnic-x", 10_500));
        assert!(!rejected_recently(&o, "vnic-c", 11_000));
    }

    #[test]
    fn monotonic_to_wall_clock() {
        let now = now_ms();
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let ten_s_ago = (ts.tv_sec as u64 - 10) * 1_000_000_000 + ts.tv_nsec as u64;
        let got = wall_ms(ten_s_ago);
        assert!((now - 10_000).abs_diff(got) < 100, "{got} vs {now}");
    }
}
