//! The control plane at scale (issue 9): many simulated hosts on one etcd,
//! each an `EtcdCluster` client of its own (a connection, a registration on
//! a lease, a follower) without a data plane, all in this process. One of
//! them commits claims; for each, the time from sending the commit until
//! every host's follower has received the record (and until the first
//! has), at 5, 10, 25 and 50 hosts.
//!
//! etcd: three members started by havip-lab's launcher on a fabric of their
//! own (as in the three-host lab: heartbeat 100 ms, election 1 s); the
//! clients run in the fabric's namespace on a tokio runtime of their own.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use havip_agent::store::cluster::{ClusterEvent, CommitOutcome, EtcdCluster, EtcdSettings, HostRecord};
use havip_lab::netns::LabId;
use havip_model::Holder;
use tokio::sync::mpsc;

use crate::{
    report::{ControlScale, ScaleRun},
    stop,
};

pub const HOSTS: [usize; 4] = [5, 10, 25, 50];
const MEMBERS: usize = 3;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);
/// Commits before the measured ones.
const WARM_UP: usize = 5;
/// How long every host may take to have one record (or to start following).
const WAIT: Duration = Duration::from_secs(10);

/// `commits` claims at each host count of [`HOSTS`].
pub fn run(commits: usize) -> Result<ControlScale> {
    let id = LabId::unique("bench");
    let dir = id.run_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = (|| {
        let etcd = havip_lab::etcd::EtcdCluster::start(&id, &dir, MEMBERS, false)?;
        let ns = etcd.client_netns().context("the cluster's client namespace")?.to_owned();
        let endpoints = etcd.endpoints();
        let runs = havip_lab::netns::run_in(&ns, move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("a tokio runtime")?;
            rt.block_on(async {
                let mut runs = Vec::new();
                for n in HOSTS {
                    runs.push(measure(&endpoints, n, commits).await.with_context(|| format!("{n} hosts"))?);
                }
                Ok(runs)
            })
        })?;
        drop(etcd);
        Ok(ControlScale { etcd_members: MEMBERS, runs })
    })();
    let _ = fs::remove_dir_all(&dir);
    result
}

/// What a host's follower task reports.
enum Seen {
    /// The first snapshot: the host follows.
    Ready,
    /// The host has the VIP's record at `revision` (an event or a resync).
    Record(usize, u64, Instant),
}

/// Claim `i`: vnic-a and vnic-b in turn.
fn holder(i: u64) -> Holder {
    let (vnic, last) = if i.is_multiple_of(2) { ("vnic-a", 11) } else { ("vnic-b", 12) };
    Holder { host: "sim-0".into(), vnic: vnic.into(), mac: [0x02, 0, 0xc6, 0x12, 1, last], epoch: i + 1 }
}

async fn measure(endpoints: &[String], n: usize, commits: usize) -> Result<ScaleRun> {
    let mut settings = EtcdSettings::new(endpoints.to_vec());
    settings.lease_ttl = Duration::from_secs(5);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut hosts = Vec::with_capacity(n);
    for i in 0..n {
        let c = EtcdCluster::connect(&settings).await.context("connecting to etcd")?;
        let record = HostRecord {
            id: format!("sim-{n}-{i}"),
            underlay: Ipv4Addr::new(198, 18, 2, i as u8 + 1),
            vxlan_port: 4789,
            probe_port: 4790,
            hint_port: 4791,
            gateway: false,
            version: "bench".into(),
        };
        c.register(record, settings.lease_ttl);
        let mut events = c.follow(Duration::from_secs(60));
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut ready = false;
            while let Some(e) = events.recv().await {
                let now = Instant::now();
                let rev = match e {
                    ClusterEvent::Holder(r) if r.vip == VIP => Some(r.revision),
                    ClusterEvent::Resynced(v) => {
                        if !ready {
                            ready = true;
                            if tx.send(Seen::Ready).is_err() {
                                return;
                            }
                        }
                        v.holders.get(&VIP).map(|r| r.revision)
                    }
                    _ => None,
                };
                if let Some(rev) = rev {
                    if tx.send(Seen::Record(i, rev, now)).is_err() {
                        return;
                    }
                }
            }
        });
        hosts.push(c);
    }
    drop(tx);
    // Every host following, the committer registered.
    let deadline = Instant::now() + WAIT;
    let mut ready = 0;
    let mut base = 0;
    while ready < n {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(Seen::Ready)) => ready += 1,
            Ok(Some(Seen::Record(_, rev, _))) => base = base.max(rev),
            Ok(None) => bail!("the followers stopped"),
            Err(_) => bail!("{ready} of {n} hosts following after {WAIT:?}"),
        }
    }
    let mut reg = hosts[0].registration();
    tokio::time::timeout(WAIT, reg.wait_for(|r| r.lease.is_some()))
        .await
        .context("the committing host never registered")?
        .context("registration")?;

    let (mut commit, mut all, mut first) = (Vec::new(), Vec::new(), Vec::new());
    // The first commits warm the connections up (HTTP/2 windows, etcd's
    // watch streams): not counted.
    for k in 0..(WARM_UP + commits) as u64 {
        stop::check()?;
        let sent = Instant::now();
        let outcome = hosts[0].commit_holder(VIP, Some(holder(k)), base, "bench").await?;
        let done = Instant::now();
        let rev = match outcome {
            CommitOutcome::Committed(r) => r.revision,
            other => bail!("commit {k} against revision {base}: {other:?}"),
        };
        base = rev;
        let mut at: BTreeMap<usize, Instant> = BTreeMap::new();
        let deadline = Instant::now() + WAIT;
        while at.len() < n {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some(Seen::Record(i, r, t))) if r >= rev => {
                    at.entry(i).or_insert(t);
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the followers stopped"),
                Err(_) => bail!("commit {k}: {} of {n} hosts had it after {WAIT:?}", at.len()),
            }
        }
        if k < WARM_UP as u64 {
            continue;
        }
        let since = |t: &Instant| t.saturating_duration_since(sent).as_nanos() as u64;
        commit.push(done.duration_since(sent).as_nanos() as u64);
        all.push(at.values().map(since).max().unwrap_or(0));
        first.push(at.values().map(since).min().unwrap_or(0));
    }
    ensure!(!all.is_empty(), "no commits measured");
    Ok(ScaleRun {
        hosts: n,
        commits,
        commit: crate::latency(commit),
        all_applied: crate::latency(all),
        first_applied: crate::latency(first),
    })
}
