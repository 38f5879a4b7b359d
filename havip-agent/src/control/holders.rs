//! The holder book of one host among many: for every VIP, the holder record
//! (from the shared store) this host's data plane follows, a peer's hint
//! applied on top of it, and a local claim or clear being committed. Pure:
//! records, hints and commit results in, decisions out; the cluster loop
//! (`control::cluster`) turns decisions into kernel writes.
//!
//! Rules (issue 9, "claims ordered by etcd's commit order"):
//! - A record is applied only if its revision (the holder key's etcd
//!   mod_revision, the fencing token) is newer than the one applied: no host
//!   ever goes back to an older record, whatever order watches, resyncs and
//!   commit answers arrive in.
//! - A hint (a peer's "my member just claimed, against base revision B") is
//!   applied only if B is the revision applied here: a hint about an older
//!   state is stale and ignored. The next record always overwrites it.
//! - While this host commits a claim of its own, its kernel is ahead of the
//!   store: records are booked but not programmed until the commit answers
//!   (won: ours; lost: the winner it returns).
//! - A hint no record confirms (its sender died before committing, or it
//!   was forged) is dropped once the store has answered for a while without
//!   it ([`HolderBook::expire_hints`]); while the store is unreachable hints
//!   stay, since they are then the only news.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Instant};

use havip_model::Holder;
use serde::{Deserialize, Serialize};

use crate::store::cluster::HolderRecord;

/// A peer's notice, sent over the underlay when one of its members claims a
/// VIP, before its commit: lets the other hosts re-point at once; the
/// shared store's record stays the truth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// The VIP claimed.
    pub vip: Ipv4Addr,
    /// The new holder (on the sending host), or none (a clear).
    pub holder: Option<Holder>,
    /// The holder record revision the sender's commit compares against.
    pub base: u64,
    /// The sending host's id.
    pub from: String,
}

/// What the data plane of this host should do about one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Follow this holder (none: no holder); the caller writes the kernel
    /// only if it does not already.
    Program(Option<Holder>),
    /// Booked; the kernel is left as it is (a local commit is in flight).
    Keep,
    /// Not applied, and why (for counters and debug logs).
    Ignore(&'static str),
}

/// A local claim or clear being committed to the shared store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The holder being committed (none: a clear).
    pub holder: Option<Holder>,
    /// The revision the commit compares against.
    pub base: u64,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    record: Option<HolderRecord>,
    /// A hint applied over the record, and when.
    hinted: Option<(Hint, Instant)>,
    pending: Option<Pending>,
}

impl Entry {
    fn revision(&self) -> u64 {
        self.record.as_ref().map_or(0, |r| r.revision)
    }
}

/// Per VIP: the applied record, a hint over it, a commit in flight.
#[derive(Debug, Default)]
pub struct HolderBook {
    vips: BTreeMap<Ipv4Addr, Entry>,
}

impl HolderBook {
    /// The revision of the record applied for `vip`: 0 if none yet.
    pub fn revision(&self, vip: Ipv4Addr) -> u64 {
        self.vips.get(&vip).map_or(0, Entry::revision)
    }

    /// The applied record of `vip`, if any.
    pub fn record(&self, vip: Ipv4Addr) -> Option<&HolderRecord> {
        self.vips.get(&vip)?.record.as_ref()
    }

    /// Who the data plane follows for `vip`: a commit in flight, else a
    /// hint, else the record. `None` inside: no holder; outer `None`: the
    /// book knows nothing of `vip`.
    pub fn holder(&self, vip: Ipv4Addr) -> Option<Option<&Holder>> {
        let e = self.vips.get(&vip)?;
        if let Some(p) = &e.pending {
            return Some(p.holder.as_ref());
        }
        if let Some((h, _)) = &e.hinted {
            return Some(h.holder.as_ref());
        }
        e.record.as_ref().map(|r| r.holder.as_ref())
    }

    /// Whether a commit of this host's is in flight for `vip`.
    pub fn pending(&self, vip: Ipv4Addr) -> Option<&Pending> {
        self.vips.get(&vip)?.pending.as_ref()
    }

    /// A record from the shared store (watch, resync, or a commit's answer
    /// about another VIP).
    pub fn on_record(&mut self, rec: HolderRecord) -> Decision {
        let e = self.vips.entry(rec.vip).or_default();
        if rec.revision <= e.revision() {
            return Decision::Ignore("not newer than the applied record");
        }
        let holder = rec.holder.clone();
        e.record = Some(rec);
        e.hinted = None;
        if e.pending.is_some() {
            return Decision::Keep;
        }
        Decision::Program(holder)
    }

    /// A peer's hint, received at `now`.
    pub fn on_hint(&mut self, hint: Hint, now: Instant) -> Decision {
        let e = self.vips.entry(hint.vip).or_default();
        if hint.base != e.revision() {
            return Decision::Ignore("stale: its base is not the applied revision");
        }
        if e.pending.is_some() {
            return Decision::Ignore("a claim of this host is being committed");
        }
        if e.hinted.as_ref().is_some_and(|(h, _)| h.holder == hint.holder) {
            return Decision::Keep;
        }
        let holder = hint.holder.clone();
        e.hinted = Some((hint, now));
        Decision::Program(holder)
    }

    /// Drops every hint applied before `before` that no record has
    /// confirmed or replaced since: the VIP goes back to its record.
    pub fn expire_hints(&mut self, before: Instant) -> Vec<(Ipv4Addr, Decision)> {
        let mut out = Vec::new();
        for (vip, e) in &mut self.vips {
            if e.pending.is_some() || e.hinted.as_ref().is_none_or(|(_, at)| *at >= before) {
                continue;
            }
            e.hinted = None;
            out.push((*vip, Decision::Program(e.record.as_ref().and_then(|r| r.holder.clone()))));
        }
        out
    }

    /// A local claim (or a clear) to commit: returns the base revision to
    /// compare against. The kernel already follows it (a claim moved it on
    /// the packet; a clear is written by the caller).
    pub fn commit_started(&mut self, vip: Ipv4Addr, holder: Option<Holder>) -> u64 {
        let e = self.vips.entry(vip).or_default();
        let base = e.revision();
        e.hinted = None;
        e.pending = Some(Pending { holder, base });
        base
    }

    /// The commit of `vip` answered with `rec`: the record it wrote (won)
    /// or the one that beat it (lost). Returns what the kernel must follow.
    pub fn commit_resolved(&mut self, rec: HolderRecord) -> Decision {
        let vip = rec.vip;
        let e = self.vips.entry(vip).or_default();
        e.pending = None;
        if rec.revision > e.revision() {
            e.record = Some(rec);
            e.hinted = None;
        }
        Decision::Program(e.record.as_ref().and_then(|r| r.holder.clone()))
    }

    /// A full snapshot of the shared store: every record newer than the
    /// applied one is applied; nothing older ever is.
    pub fn resync(&mut self, records: impl IntoIterator<Item = HolderRecord>) -> Vec<(Ipv4Addr, Decision)> {
        records.into_iter().map(|r| (r.vip, self.on_record(r))).collect()
    }

    /// The VIPs whose applied record names a holder on host `host`.
    pub fn held_on<'a>(&'a self, host: &'a str) -> impl Iterator<Item = Ipv4Addr> + 'a {
        self.vips.iter().filter_map(move |(vip, e)| {
            let h = e.record.as_ref()?.holder.as_ref()?;
            (h.host == host).then_some(*vip)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);

    fn holder(host: &str, vnic: &str) -> Holder {
        Holder { host: host.into(), vnic: vnic.into(), mac: [2, 0, 0, 0, 0, 1], epoch: 1 }
    }

    fn rec(revision: u64, h: Option<Holder>) -> HolderRecord {
        HolderRecord { vip: VIP, holder: h, revision, reason: "claim".into(), committed_by: "hv1".into() }
    }

    fn hint(base: u64, h: Holder) -> Hint {
        Hint { vip: VIP, holder: Some(h), base, from: "hv2".into() }
    }

    #[test]
    fn records_apply_only_when_newer_in_any_arrival_order() {
        let mut b = HolderBook::default();
        let a = holder("hv1", "vnic-a");
        let bb = holder("hv2", "vnic-b");
        assert_eq!(b.on_record(rec(7, Some(bb.clone()))), Decision::Program(Some(bb.clone())));
        // A resync or a slow watch handing an older record: never applied.
        assert!(matches!(b.on_record(rec(5, Some(a.clone()))), Decision::Ignore(_)));
        assert!(matches!(b.on_record(rec(7, Some(a.clone()))), Decision::Ignore(_)));
        assert_eq!(b.holder(VIP), Some(Some(&bb)));
        let out = b.resync([rec(6, Some(a.clone())), rec(9, None)]);
        assert!(matches!(out[0].1, Decision::Ignore(_)));
        assert_eq!(out[1].1, Decision::Program(None));
        assert_eq!(b.revision(VIP), 9);
    }

    #[test]
    fn a_hint_applies_only_on_its_base_and_the_record_overwrites_it() {
        let mut b = HolderBook::default();
        let a = holder("hv1", "vnic-a");
        let bb = holder("hv2", "vnic-b");
        b.on_record(rec(4, Some(a.clone())));
        // Stale: based on a revision this host has moved past (or not reached).
        assert!(matches!(b.on_hint_now(hint(3, bb.clone())), Decision::Ignore(_)));
        assert!(matches!(b.on_hint_now(hint(5, bb.clone())), Decision::Ignore(_)));
        assert_eq!(b.on_hint_now(hint(4, bb.clone())), Decision::Program(Some(bb.clone())));
        assert_eq!(b.on_hint_now(hint(4, bb.clone())), Decision::Keep);
        assert_eq!(b.holder(VIP), Some(Some(&bb)));
        // The hint lost its race in the store: the committed record wins.
        assert_eq!(b.on_record(rec(6, Some(a.clone()))), Decision::Program(Some(a.clone())));
        assert_eq!(b.holder(VIP), Some(Some(&a)));
        // And a hint on the old base is stale now.
        assert!(matches!(b.on_hint_now(hint(4, bb)), Decision::Ignore(_)));
    }

    #[test]
    fn a_commit_in_flight_holds_the_kernel_until_it_answers() {
        let mut b = HolderBook::default();
        let a = holder("hv1", "vnic-a");
        let bb = holder("hv2", "vnic-b");
        b.on_record(rec(4, Some(bb.clone())));
        assert_eq!(b.commit_started(VIP, Some(a.clone())), 4);
        assert_eq!(b.holder(VIP), Some(Some(&a)));
        // A peer's record committed meanwhile is booked, not programmed.
        assert_eq!(b.on_record(rec(5, Some(bb.clone()))), Decision::Keep);
        assert!(matches!(b.on_hint_now(hint(5, bb.clone())), Decision::Ignore(_)));
        // Lost against it: the winner is what the kernel follows.
        assert_eq!(b.commit_resolved(rec(5, Some(bb.clone()))), Decision::Program(Some(bb.clone())));
        assert!(b.pending(VIP).is_none());
        // Won next time: ours, at the new revision.
        assert_eq!(b.commit_started(VIP, Some(a.clone())), 5);
        assert_eq!(b.commit_resolved(rec(6, Some(a.clone()))), Decision::Program(Some(a.clone())));
        assert_eq!(b.revision(VIP), 6);
        // A late answer about an older revision changes nothing.
        b.commit_started(VIP, None);
        assert_eq!(b.commit_resolved(rec(5, Some(bb))), Decision::Program(Some(a.clone())));
        // The book keeps the newer record: what the host shows is its
        // revision, not the answer's (control::cluster reads it back).
        assert_eq!(b.revision(VIP), 6);
        assert_eq!(b.record(VIP).map(|r| (r.revision, r.holder.clone())), Some((6, Some(a))));
    }

    impl HolderBook {
        fn on_hint_now(&mut self, h: Hint) -> Decision {
            self.on_hint(h, Instant::now())
        }
    }

    #[test]
    fn a_hint_no_record_confirms_expires_back_to_the_record() {
        let mut b = HolderBook::default();
        let a = holder("hv1", "vnic-a");
        let bb = holder("hv2", "vnic-b");
        b.on_record(rec(4, Some(a.clone())));
        let t0 = Instant::now();
        assert_eq!(b.on_hint(hint(4, bb.clone()), t0), Decision::Program(Some(bb.clone())));
        assert!(b.expire_hints(t0).is_empty(), "not older than the cut-off");
        let later = t0 + std::time::Duration::from_secs(1);
        assert_eq!(b.expire_hints(later), vec![(VIP, Decision::Program(Some(a.clone())))]);
        assert_eq!(b.holder(VIP), Some(Some(&a)));
        // A confirmed hint leaves nothing to expire.
        b.on_hint(hint(4, bb.clone()), t0);
        b.on_record(rec(5, Some(bb)));
        assert!(b.expire_hints(later).is_empty());
    }

    #[test]
    fn held_on_names_the_vips_of_a_host() {
        let mut b = HolderBook::default();
        b.on_record(rec(4, Some(holder("hv1", "vnic-a"))));
        let other = Ipv4Addr::new(198, 18, 1, 51);
        b.on_record(HolderRecord { vip: other, ..rec(5, Some(holder("hv2", "vnic-b"))) });
        assert_eq!(b.held_on("hv1").collect::<Vec<_>>(), vec![VIP]);
        assert_eq!(b.held_on("hv2").collect::<Vec<_>>(), vec![other]);
        assert_eq!(b.held_on("hv3").count(), 0);
    }
}
