//! Runs [`reconcile`] whenever the desired state or the host's links change:
//! attaches to registered vNICs as they appear, leaves out the ones that are
//! gone or down (so a holder on them is cleared at once), and hands what the
//! maps then say to the [`Observer`].

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use anyhow::{Context, Result};
use havip_common::VipKey;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    dataplane::{Attach, Dataplane, Maps},
    feed::{Feed, Kind},
    model::DesiredState,
    netlink::{Link, Links},
    observe::{Observer, Sync},
    reconcile::{reconcile, Desired, EipBinding, Uplink},
    store::Store,
    vethpeer,
};

pub struct Reconciler {
    io: Inputs,
    /// vNIC name -> the ifindex this run attached to.
    attached: BTreeMap<String, u32>,
    /// Registered vNICs' links as of the last pass, to report what changed.
    seen: Links,
}

/// What a reconciler works with.
pub struct Inputs {
    pub dp: Dataplane,
    pub maps: Arc<Mutex<Maps>>,
    pub store: Arc<dyn Store>,
    pub links: watch::Receiver<Links>,
    pub uplink: watch::Receiver<Option<Uplink>>,
    pub observer: Arc<Observer>,
    pub feed: Arc<Feed>,
    /// The store revision the maps were last brought to.
    pub reconciled: Arc<AtomicU64>,
    /// rtnetlink, to look at the peers of veth vNICs.
    pub rtnl: rtnetlink::Handle,
}

impl Reconciler {
    pub fn new(io: Inputs) -> Self {
        Self { io, attached: BTreeMap::new(), seen: Links::new() }
    }

    /// One pass: attach, reconcile the maps, observe the holders.
    pub fn pass(&mut self, mode: Sync) -> Result<()> {
        let snap = self.io.store.desired();
        let links = self.io.links.borrow_and_update().clone();
        self.report_links(&snap.state, &links);
        self.attach(&snap.state, &links)?;
        let mut desired = self.desired(&snap.state, &links);
        desired.uplink = *self.io.uplink.borrow_and_update();
        let mut maps = self.io.maps.lock().unwrap_or_else(|p| p.into_inner());
        let changes = reconcile(&mut maps, &desired).context("reconciling the maps")?;
        if !changes.is_empty() {
            info!(revision = snap.revision, ?changes, "maps reconciled");
        }
        self.io.reconciled.store(snap.revision, Ordering::Relaxed);
        self.io.observer.sync(&maps, mode).context("recording holders")
    }

    /// Passes again on every change of the desired state, the links or the uplink.
    pub async fn run(mut self) -> Result<()> {
        let mut revision = self.io.store.watch();
        loop {
            tokio::select! {
                r = revision.changed() => r.context("the store's change feed closed")?,
                r = self.io.links.changed() => r.context("the link feed closed")?,
                // Without an uplink nobody sends: the branch is then disabled.
                Ok(()) = self.io.uplink.changed() => {}
            }
            if let Err(e) = self.pass(Sync::Running) {
                // The next change retries; the data plane keeps its last state.
                warn!(error = %format!("{e:#}"), "reconcile pass failed");
            }
        }
    }

    fn report_links(&mut self, state: &DesiredState, links: &Links) {
        let now: Links =
            state.vnics.keys().filter_map(|name| Some((name.clone(), *links.get(name)?))).collect();
        for name in state.vnics.keys() {
            let (kind, detail) = match (self.seen.get(name), now.get(name)) {
                (None, Some(l)) if l.up => {
                    (Kind::VnicUp, format!("{name} is present and up (ifindex {})", l.ifindex))
                }
                (None, Some(l)) => {
                    (Kind::VnicDown, format!("{name} is present but down (ifindex {})", l.ifindex))
                }
                (Some(o), Some(l)) if o.ifindex != l.ifindex => (
                    if l.up { Kind::VnicUp } else { Kind::VnicDown },
                    format!("{name} was made again (ifindex {})", l.ifindex),
                ),
                (Some(o), Some(l)) if o.up != l.up => {
                    if l.up {
                        (Kind::VnicUp, format!("{name} is up"))
                    } else {
                        (Kind::VnicDown, format!("{name} is down"))
                    }
                }
                (Some(_), None) => (Kind::VnicGone, format!("{name} is gone")),
                _ => continue,
            };
            self.io.feed.publish(kind, None, Some(name), detail);
        }
        self.seen = now;
    }

    /// Attaches to every registered vNIC present (again, if it was made
    /// anew); detaches from pinned vNICs no longer registered.
    fn attach(&mut self, state: &DesiredState, links: &Links) -> Result<()> {
        for name in state.vnics.keys() {
            match links.get(name) {
                Some(l) if self.attached.get(name) != Some(&l.ifindex) => match self.io.dp.attach(name) {
                    Ok(how) => {
                        info!(vnic = %name, ifindex = l.ifindex, hitless = how == Attach::Swapped, "attached");
                        self.attached.insert(name.clone(), l.ifindex);
                        vethpeer::report(&self.io.rtnl, &self.io.feed, name);
                    }
                    Err(e) => {
                        warn!(vnic = %name, error = %format!("{e:#}"), "attaching failed; retried on the next change")
                    }
                },
                Some(_) => {}
                None => {
                    if self.attached.remove(name).is_none() && !self.seen.contains_key(name) {
                        warn!(vnic = %name, "vNIC not present: its memberships wait until it appears");
                    }
                }
            }
        }
        for name in self.io.dp.attached()? {
            if !state.vnics.contains_key(&name) {
                self.io.dp.detach(&name)?;
                self.attached.remove(&name);
                info!(vnic = %name, "detached: no longer registered");
            }
        }
        Ok(())
    }

    /// The maps' desired contents: only vNICs attached by this run and up
    /// count, as ports and as members.
    fn desired(&self, state: &DesiredState, links: &Links) -> Desired {
        let usable = |name: &str| -> Option<&Link> {
            links.get(name).filter(|l| l.up && self.attached.get(name) == Some(&l.ifindex))
        };
        let ports = state.vnics.keys().filter_map(|n| usable(n)).map(|l| l.ifindex).collect();
        let vips = state
            .havips
            .values()
            .map(|h| {
                let members = h
                    .members
                    .iter()
                    .filter_map(|m| Some((usable(m)?.ifindex, state.vnics.get(m)?.mac)))
                    .collect();
                (VipKey::from(h.vip), members)
            })
            .collect();
        let eips = state
            .havips
            .values()
            .filter_map(|h| {
                let binding = EipBinding { eip: h.eip?, subnet: *state.subnets.get(&h.subnet)? };
                Some((VipKey::from(h.vip), binding))
            })
            .collect();
        Desired { ports, vips, eips, uplink: None }
    }
}
