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

use super::{feed::Feed, latency::Latencies};
use crate::{
    clock::monotonic_ns,
    datapath::maps::Maps,
    host::links::Links,
    store::{Store, StoreError},
    sync::lock,
};

/// ifindex -> vNIC name of this host's vNICs, to report names
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
    /// Claim -> record latencies it measures.
    latencies: Arc<Latencies>,
    /// Serialises read-modify-write of the observed state between the
    /// ring-buffer task and the reconciler.
    lock: Mutex<()>,
}

/// Whether the VIPs' state is read at start (anything may have happened while
/// the agent was away) or while running (only newer epochs count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// At agent start: the maps are the truth; a holder or epoch that differs from the stored one is taken,
    /// an older epoch too.
    Start,
    /// While running: only an epoch newer than the stored one is taken.
    Running,
}

impl Observer {
    /// An observer for host `host`'s data plane.
    pub fn new(host: &str, store: Arc<dyn Store>, feed: Arc<Feed>, links: watch::Receiver<Links>) -> Self {
        let latencies = Arc::new(Latencies::default());
        Self { host: host.to_owned(), store, feed, links, latencies, lock: Mutex::new(()) }
    }

    /// This host's data plane now follows `holder` for `vip` (a holder
    /// record of the shared store at `revision`, or a peer's hint), at
    /// kernel epoch `epoch`: written as the observed holder, and told to the
    /// feed if it changed.
    pub fn follow_record(
        &self,
        vip: Ipv4Addr,
        holder: Option<&Holder>,
        revision: u64,
        epoch: u64,
        why: &str,
    ) {
        let _serial = lock(&self.lock);
        if !self.store.desired().state.havips.contains_key(&vip) {
            return;
        }
        let mut o = self.store.observed().remove(&vip).unwrap_or_default();
        o.revision = revision;
        if o.holder.as_ref() == holder {
            o.epoch = o.epoch.max(epoch);
        } else {
            let previous =
                o.holder.as_ref().map_or_else(|| "none".to_owned(), |h| format!("{} on {}", h.vnic, h.host));
            note_holder(&mut o, holder.cloned(), now_ms(), epoch);
            match holder {
                Some(h) => self.feed.publish(
                    EventKind::HolderChanged,
                    Some(vip),
                    Some(&h.vnic),
                    format!("{} on {} holds {vip} (was {previous}): {why}", h.vnic, h.host),
                ),
                None => self.feed.publish(
                    EventKind::HolderCleared,
                    Some(vip),
                    None,
                    format!("{vip} has no holder (was {previous}): {why}"),
                ),
            }
        }
        if let Err(e) = self.store.record(&BTreeMap::from([(vip, o)])) {
            tracing::warn!(%vip, error = %format!("{e:#}"), "recording the holder record");
        }
    }

    /// How far the control loop lags the data plane (for /metrics).
    pub fn latencies(&self) -> &Arc<Latencies> {
        &self.latencies
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
    pub fn record_events(&self, events: &[HavipEvent], names: &PortNames) -> Result<(), StoreError> {
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
        self.store.record(&touched)?;
        // The holder changes are on disk: that is what `describe` shows now.
        let now = monotonic_ns();
        for ev in events.iter().filter(|e| e.kind == EV_CLAIM && e.changed != 0) {
            self.latencies.claim_recorded(now.saturating_sub(ev.ts_ns));
        }
        Ok(())
    }

    /// The holder record of a claim on this host's vNIC `vnic`.
    pub fn holder(&self, vnic: &str, mac: [u8; 6], epoch: u64) -> Holder {
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
            if st.holder_vtep != [0; 4] {
                // Held on another host: the cluster loop wrote it, and
                // wrote it down (follow_record).
                continue;
            }
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
    now_ms().saturating_sub(monotonic_ns().saturating_sub(mono_ns) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::fake::FakeMaps;

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
        let ten_s_ago = monotonic_ns() - 10_000_000_000;
        let got = wall_ms(ten_s_ago);
        assert!((now - 10_000).abs_diff(got) < 100, "{got} vs {now}");
    }

    /// A world for replays: a real store in a temporary file holding one
    /// HAVIP (198.18.1.50, members vnic-a and vnic-b on host hv1, vnic-c on
    /// hv2), the links vnic-a (7) and vnic-b (8) up, and an observer of hv1.
    struct Replay {
        observer: Observer,
        store: Arc<dyn Store>,
        feed: Arc<Feed>,
        links: watch::Sender<Links>,
        dir: std::path::PathBuf,
    }

    impl Drop for Replay {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
    const MAC_A: [u8; 6] = [2, 0, 0xc6, 0x12, 1, 0x0b];
    const MAC_B: [u8; 6] = [2, 0, 0xc6, 0x12, 1, 0x0c];

    fn replay(name: &str) -> Replay {
        let dir = std::env::temp_dir().join(format!("havip-observer-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> =
            Arc::new(crate::store::redb::RedbStore::open(&dir.join("state.redb")).unwrap());
        let desired = super::super::replay_state(
            "",
            r#"
            [[vnics]]
            name = "vnic-c"
            host = "hv2"
            instance = "vm-c"
            subnet = "vpc1"
            ip = "198.18.1.13"
            mac = "02:00:c6:12:01:0d"
            "#,
        );
        store
            .update(&mut |s| {
                havip_model::ops::apply(s, desired.clone());
                Ok(())
            })
            .unwrap();
        let link = |ifindex| crate::host::links::Link { ifindex, mac: [0xaa; 6], up: true };
        let links = watch::Sender::new(Links::from([("vnic-a".into(), link(7)), ("vnic-b".into(), link(8))]));
        let feed = Arc::new(Feed::default());
        let observer = Observer::new("hv1", store.clone(), feed.clone(), links.subscribe());
        Replay { observer, store, feed, links, dir }
    }

    impl Replay {
        fn observed(&self) -> Observed {
            self.store.observed().remove(&VIP).unwrap_or_default()
        }

        /// (kind, vnic, detail) of every event so far.
        fn events(&self) -> Vec<(EventKind, Option<String>, String)> {
            self.feed.follow().0.into_iter().map(|e| (e.kind, e.vnic, e.detail)).collect()
        }
    }

    fn claim(ifindex: u32, prev_ifindex: u32, mac: [u8; 6], epoch: u64, changed: u8) -> HavipEvent {
        HavipEvent {
            ts_ns: monotonic_ns(),
            epoch,
            kind: EV_CLAIM,
            vip: VIP.octets(),
            ifindex,
            prev_ifindex,
            mac,
            reason: 0,
            changed,
        }
    }

    fn holder(vnic: &str, mac: [u8; 6], epoch: u64) -> Option<Holder> {
        Some(Holder { host: "hv1".into(), vnic: vnic.into(), mac, epoch })
    }

    #[test]
    fn ring_buffer_claims_become_holder_records_and_events() {
        let r = replay("claims");
        let names = r.observer.names();
        assert_eq!(names, PortNames::from([(7, "vnic-a".into()), (8, "vnic-b".into())]), "hv1's vNICs only");

        r.observer.record_events(&[claim(7, 0, MAC_A, 1, 1)], &names).unwrap();
        let o = r.observed();
        assert_eq!((o.holder.clone(), o.epoch, o.failovers), (holder("vnic-a", MAC_A, 1), 1, 0));

        // keepalived repeats its GARPs: a refresh writes nothing new.
        r.observer.record_events(&[claim(7, 7, MAC_A, 1, 0)], &names).unwrap();
        assert_eq!(r.observed(), o);

        r.observer.record_events(&[claim(8, 7, MAC_B, 2, 1)], &names).unwrap();
        let o = r.observed();
        assert_eq!((o.holder, o.epoch, o.failovers), (holder("vnic-b", MAC_B, 2), 2, 1));
        let claims: Vec<_> =
            o.last_claims.iter().map(|c| (c.vnic.as_str(), c.accepted, c.detail.as_str())).collect();
        assert_eq!(
            claims,
            [("vnic-b", true, "took over from vnic-a"), ("vnic-a", true, "took over from none")]
        );

        // An event older than what is recorded (epoch 1 < 2) changes no holder.
        r.observer.record_events(&[claim(7, 8, MAC_A, 1, 1)], &names).unwrap();
        assert_eq!(r.observed().holder, holder("vnic-b", MAC_B, 2));

        assert_eq!(
            r.events(),
            [
                (
                    EventKind::HolderChanged,
                    Some("vnic-a".into()),
                    "vnic-a holds 198.18.1.50 (was none), epoch 1, failovers 0".into()
                ),
                (
                    EventKind::HolderChanged,
                    Some("vnic-b".into()),
                    "vnic-b holds 198.18.1.50 (was vnic-a), epoch 2, failovers 1".into()
                ),
            ]
        );
    }

    #[test]
    fn a_refused_claimant_is_written_down_once_a_second_with_its_reason() {
        let r = replay("refused");
        let names = r.observer.names();
        let spoof = HavipEvent {
            kind: EV_CLAIM_REJECTED,
            reason: RejectReason::NotMember as u8,
            ..claim(9, 0, [2, 0, 0, 0, 0, 9], 0, 0)
        };
        r.observer.record_events(&[spoof, spoof, spoof], &names).unwrap();
        let o = r.observed();
        assert_eq!(o.holder, None);
        let claims: Vec<_> =
            o.last_claims.iter().map(|c| (c.vnic.as_str(), c.accepted, c.detail.as_str())).collect();
        assert_eq!(claims, [("ifindex 9", false, "vNIC is not a member of the HAVIP")]);
        assert_eq!(
            r.events(),
            [(
                EventKind::ClaimRejected,
                Some("ifindex 9".into()),
                "from ifindex 9, MAC 02:00:00:00:00:09: vNIC is not a member of the HAVIP".into()
            )]
        );
    }

    #[test]
    fn the_maps_catch_what_no_event_told() {
        let r = replay("sync");
        let mut maps = FakeMaps::new(4);
        let v = VipKey::from(VIP);
        maps.vips.insert(v, havip_common::VipRef { slot: 0 });
        let mut st = havip_common::VipState {
            slot: 0,
            vip: VIP.octets(),
            holder_ifindex: 8,
            holder_mac: MAC_B,
            epoch: 5,
            since_ns: monotonic_ns(),
            ..Default::default()
        };
        maps.vip_state.insert(0, st);

        // Claims made while the agent was away: the maps are the truth at start.
        r.observer.sync(&mut maps, SyncMode::Start).unwrap();
        let o = r.observed();
        assert_eq!((o.holder, o.epoch), (holder("vnic-b", MAC_B, 5), 5));
        // Nothing new while running: nothing written, nothing said.
        r.observer.sync(&mut maps, SyncMode::Running).unwrap();
        assert_eq!(r.events().len(), 1);

        // vnic-b vanishes; the reconciler cleared its holder (epoch 6).
        r.links.send_modify(|l| {
            l.remove("vnic-b");
        });
        (st.holder_ifindex, st.holder_mac, st.epoch) = (0, [0; 6], 6);
        maps.vip_state.insert(0, st);
        r.observer.sync(&mut maps, SyncMode::Running).unwrap();
        let o = r.observed();
        assert_eq!((o.holder, o.epoch, o.last_holder.as_deref()), (None, 6, Some("vnic-b")));
        let last = r.events().pop().unwrap();
        assert_eq!(
            last,
            (
                EventKind::HolderCleared,
                Some("vnic-b".into()),
                "198.18.1.50 has no holder: vNIC vnic-b is gone".into()
            )
        );

        // At start, an older epoch in the maps than in the store still wins
        // (the maps were made anew): what the kernel holds is what forwards.
        (st.holder_ifindex, st.holder_mac, st.epoch) = (7, MAC_A, 1);
        maps.vip_state.insert(0, st);
        r.observer.sync(&mut maps, SyncMode::Running).unwrap();
        assert_eq!(r.observed().holder, None, "running: an older epoch is no news");
        r.observer.sync(&mut maps, SyncMode::Start).unwrap();
        assert_eq!(r.observed().holder, holder("vnic-a", MAC_A, 1));
    }
}
