//! The etcd backend against a real etcd (Debian's etcd-server 3.4, started
//! by the test on 127.0.0.1 with ports picked free at run time, its data in a
//! temporary directory; killed and removed on drop, panics included, and
//! killed with the test process through PR_SET_PDEATHSIG). A small TCP proxy
//! between a client and etcd cuts one client off while others go on.
//!
//! No sleeps to wait: every wait polls a condition against a deadline.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::collections::BTreeMap;

use havip_agent::store::{
    cluster::{ClusterEvent, CommitOutcome, EtcdCluster, EtcdSettings, EtcdTls, HolderRecord, HostRecord},
    etcd::EtcdStore,
    Store, StoreError,
};
use havip_model::{
    ops::{create_havip, delete_subnet, put_subnet, set_subnet_mode, HavipSpec, SubnetModeSpec, SubnetSpec},
    rules::{refuse, Rule},
    DesiredState, Holder, Observed, StormControl, SubnetMode, SubnetSettings,
};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------
// Test support: an etcd member, a cuttable proxy, polling. Kept here so the
// lead can swap in havip_lab::etcd when it lands.

/// A port free on 127.0.0.1 now (the kernel's pick; a rare race with another
/// process is caught by the start's health check and retried).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// TLS files for an etcd on 127.0.0.1, made by the lab's
/// [`havip_lab::etcd::make_certs`]: the CA, the server's and the client's
/// certificate and key.
struct Certs {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

impl Certs {
    fn make(dir: &Path) -> Self {
        let client = havip_lab::etcd::make_certs(dir, &[]).expect("making certificates with openssl");
        Self {
            ca: client.ca,
            server: (dir.join("server.pem"), dir.join("server-key.pem")),
            client: (client.cert, client.key),
        }
    }
}

/// One etcd member on 127.0.0.1; killed and its directory removed on drop.
struct Etcd {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
    url: String,
    certs: Option<Certs>,
}

impl Etcd {
    fn start(tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "havip-etcd-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let certs = tls.then(|| Certs::make(&dir));
        for attempt in 0.. {
            let (client, peer) = (free_port(), free_port());
            let scheme = if tls { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
            let mut cmd = Command::new("etcd");
            cmd.args(["--name", "t", "--data-dir"])
                .arg(dir.join("data"))
                .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("t={peer_url}"), "--initial-cluster-state", "new"])
                // Short elections: a lease may be as short as 1 s.
                .args(["--heartbeat-interval", "25", "--election-timeout", "250"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if let Some(c) = &certs {
                cmd.arg("--cert-file").arg(&c.server.0).arg("--key-file").arg(&c.server.1);
                cmd.arg("--trusted-ca-file").arg(&c.ca).arg("--client-cert-auth");
            }
            // SAFETY: prctl is async-signal-safe: etcd dies with the test.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("starting etcd (apt-get install etcd-server)");
            let mut etcd =
                Etcd { child, dir: dir.clone(), addr: ([127, 0, 0, 1], client).into(), url, certs: None };
            if etcd.wait_listening(Duration::from_secs(20)) {
                etcd.certs = certs;
                return etcd;
            }
            // A port taken meanwhile: try others.
            assert!(attempt < 3, "etcd did not start:\n{}", etcd.log());
            let _ = etcd.child.kill();
            let _ = etcd.child.wait();
            std::mem::forget(etcd);
        }
        unreachable!()
    }

    /// Whether etcd listens before `limit` (false: it exited).
    fn wait_listening(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("etcd did not listen within {limit:?}:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    fn settings(&self) -> EtcdSettings {
        let mut s = EtcdSettings::new(vec![self.url.clone()]);
        s.prefix = "/havip-test/v1".into();
        if let Some(c) = &self.certs {
            s.tls = Some(EtcdTls { ca: c.ca.clone(), identity: Some(c.client.clone()) });
        }
        s
    }

    /// A raw client, to act on etcd behind havip's back.
    async fn raw(&self) -> etcd_client::Client {
        let mut options = etcd_client::ConnectOptions::new();
        if let Some(c) = &self.certs {
            let read = |p: &PathBuf| std::fs::read(p).unwrap();
            options = options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read(&c.ca)))
                    .identity(etcd_client::Identity::from_pem(read(&c.client.0), read(&c.client.1))),
            );
        }
        let client = etcd_client::Client::connect([self.url.as_str()], Some(options)).await.unwrap();
        let mut probe = client.clone();
        until("etcd to answer", Duration::from_secs(20), || {
            let mut c = probe.clone();
            async move { c.get("/", None).await.ok().map(|_| ()) }
        })
        .await;
        probe.status().await.unwrap();
        client
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("etcd log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a [`Proxy`] does with its clients' traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forwards.
    Up,
    /// Closes every connection, open or new: the client sees errors at once.
    Cut,
    /// Keeps every connection open and forwards nothing: the client hears
    /// silence, as across a partition that drops packets.
    Frozen,
}

/// A TCP proxy to etcd that can cut its clients off or freeze them, and let
/// them back (connections held while frozen are closed when it heals).
struct Proxy {
    addr: SocketAddr,
    mode: tokio::sync::watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = tokio::sync::watch::Sender::new(Mode::Up);
        let m = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut mode = m.subscribe();
                tokio::spawn(async move {
                    let now = *mode.borrow_and_update();
                    if now == Mode::Frozen {
                        let _ = mode.wait_for(|m| *m != Mode::Frozen).await.is_ok();
                    }
                    if now != Mode::Up {
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = async { mode.wait_for(|m| *m != Mode::Up).await.is_ok() } => {
                            // Frozen: hold both ends open, silent, until it changes.
                            let _ = mode.wait_for(|m| *m != Mode::Frozen).await.is_ok();
                        }
                    }
                });
            }
        });
        Self { addr, mode, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    fn cut(&self) {
        self.set(Mode::Cut);
    }

    fn heal(&self) {
        // Through Cut: connections held while frozen are closed, not resumed.
        self.set(Mode::Cut);
        self.set(Mode::Up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Polls `f` until it yields `Some`, panicking after `limit` with `what`.
async fn until<T, F: Future<Output = Option<T>>>(what: &str, limit: Duration, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads events until one matches `want`, returning it and those before it.
async fn event_where(
    rx: &mut mpsc::Receiver<ClusterEvent>,
    what: &str,
    limit: Duration,
    want: impl Fn(&ClusterEvent) -> bool,
) -> (ClusterEvent, Vec<ClusterEvent>) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut before = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if want(&e) => return (e, before),
            Ok(Some(e)) => before.push(e),
            Ok(None) => panic!("the follower ended waiting for {what}; saw {before:?}"),
            Err(_) => panic!("timed out after {limit:?} waiting for {what}; saw {before:?}"),
        }
    }
}

const LIMIT: Duration = Duration::from_secs(20);

fn host(id: &str, n: u8) -> HostRecord {
    HostRecord {
        id: id.into(),
        underlay: Ipv4Addr::new(198, 18, 0, n),
        vxlan_port: 4789,
        probe_port: 4790,
        hint_port: 4791,
        gateway: n == 3,
        version: "test".into(),
    }
}

fn holder(host: &str, vnic: &str, epoch: u64) -> Holder {
    Holder { host: host.into(), vnic: vnic.into(), mac: [2, 0, 0xc6, 0x12, 1, 0x0b], epoch }
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 50);

/// A cluster client registered as `record` with `ttl`, once registered.
async fn registered(settings: &EtcdSettings, record: HostRecord, ttl: Duration) -> EtcdCluster {
    let c = EtcdCluster::connect(settings).await.unwrap();
    let mut reg = c.register(record, ttl);
    tokio::time::timeout(LIMIT, reg.wait_for(|r| r.lease.is_some())).await.expect("registered").unwrap();
    c
}

fn committed(o: CommitOutcome) -> HolderRecord {
    match o {
        CommitOutcome::Committed(r) => r,
        other => panic!("not committed: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The cluster: registration, holder commits, the follower.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wins_loses_to_the_winner_and_is_fenced_without_our_lease() {
    let etcd = Etcd::start(false);
    let mut raw = etcd.raw().await;
    let s = etcd.settings();
    // A long TTL: the lease goes only when the test revokes it.
    let hv1 = registered(&s, host("hv1", 1), Duration::from_secs(60)).await;
    let hv2 = registered(&s, host("hv2", 2), Duration::from_secs(60)).await;

    let a = committed(hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 1)), 0, "claim").await.unwrap());
    assert!(a.revision > 0 && a.committed_by == "hv1" && a.reason == "claim", "{a:?}");
    // hv2 claimed against the same base: it lost, and learns the winner.
    match hv2.commit_holder(VIP, Some(holder("hv2", "vnic-b", 1)), 0, "claim").await.unwrap() {
        CommitOutcome::Lost(current) => assert_eq!(current, a),
        other => panic!("{other:?}"),
    }
    let b = committed(
        hv2.commit_holder(VIP, Some(holder("hv2", "vnic-b", 1)), a.revision, "claim").await.unwrap(),
    );
    assert!(b.revision > a.revision);
    let view = hv1.view().await.unwrap();
    assert_eq!(view.holders[&VIP], b, "the record's revision is the key's mod_revision");
    assert_eq!(view.hosts.keys().collect::<Vec<_>>(), ["hv1", "hv2"]);
    assert_eq!(view.hosts["hv2"], host("hv2", 2));
    assert!(view.revision >= b.revision);

    // hv1's lease is revoked behind its back (as if it had expired): its
    // commit is fenced, whatever the base.
    let lease = hv1.registration().borrow().lease.unwrap();
    raw.lease_revoke(lease).await.unwrap();
    assert_eq!(hv1.commit_holder(VIP, None, b.revision, "host down").await.unwrap(), CommitOutcome::Fenced);
    // The fence nudged the registration: hv1 registers again, on a new lease.
    let mut reg = hv1.registration();
    let again = tokio::time::timeout(LIMIT, reg.wait_for(|r| r.registrations == 2 && r.lease.is_some()))
        .await
        .expect("registered again")
        .unwrap()
        .clone();
    assert_ne!(again.lease, Some(lease));
    let c = committed(hv1.clear_holder(VIP, b.revision, "host down").await.unwrap());
    assert_eq!((c.holder, c.reason.as_str(), c.committed_by.as_str()), (None, "host down", "hv1"));
    assert_eq!(
        hv2.view().await.unwrap().holders[&VIP].revision,
        c.revision,
        "a clear is a record, never a delete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_lease_expired_cannot_commit_a_claim() {
    let (_etcd, mut raw, proxy, s, cut) = cuttable().await;
    let hv1 = registered(&cut, host("hv1", 1), Duration::from_secs(1)).await;
    let hv2 = registered(&s, host("hv2", 2), Duration::from_secs(60)).await;
    let a = committed(hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 1)), 0, "claim").await.unwrap());

    // hv1 is cut off from etcd: its lease expires there, and it knows it may have.
    proxy.cut();
    let key = "/havip-test/v1/hosts/hv1";
    until("hv1's key to expire in etcd", LIMIT, || {
        let mut raw = raw.clone();
        async move { raw.get(key, None).await.unwrap().kvs().is_empty().then_some(()) }
    })
    .await;
    let mut reg = hv1.registration();
    tokio::time::timeout(LIMIT, reg.wait_for(|r| r.lease.is_none())).await.expect("lease given up").unwrap();
    assert_eq!(
        hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 2)), a.revision, "claim").await.unwrap(),
        CommitOutcome::Fenced,
        "no lease, no claim"
    );
    // Meanwhile hv2 commits; hv1 comes back, registers on a new lease and
    // loses against hv2's record.
    let b = committed(
        hv2.commit_holder(VIP, Some(holder("hv2", "vnic-b", 1)), a.revision, "claim").await.unwrap(),
    );
    proxy.heal();
    tokio::time::timeout(LIMIT, reg.wait_for(|r| r.registrations == 2 && r.lease.is_some()))
        .await
        .expect("registered again")
        .unwrap();
    match hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 2)), a.revision, "claim").await.unwrap() {
        CommitOutcome::Lost(current) => assert_eq!(current, b),
        other => panic!("{other:?}"),
    }
    let _ = raw.status().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_against_one_base_commit_exactly_once() {
    let etcd = Etcd::start(false);
    let s = etcd.settings();
    let hv1 = registered(&s, host("hv1", 1), Duration::from_secs(60)).await;
    let hv2 = registered(&s, host("hv2", 2), Duration::from_secs(60)).await;
    let mut base = 0;
    let mut wins = [0u32; 2];
    for round in 0..100u64 {
        let (x, y) = tokio::join!(
            hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", round)), base, "race"),
            hv2.commit_holder(VIP, Some(holder("hv2", "vnic-b", round)), base, "race"),
        );
        let winner = match (x.unwrap(), y.unwrap()) {
            (CommitOutcome::Committed(w), CommitOutcome::Lost(l)) => {
                wins[0] += 1;
                assert_eq!(l, w, "round {round}: the loser learns the winner");
                w
            }
            (CommitOutcome::Lost(l), CommitOutcome::Committed(w)) => {
                wins[1] += 1;
                assert_eq!(l, w, "round {round}: the loser learns the winner");
                w
            }
            other => panic!("round {round}: not exactly one commit: {other:?}"),
        };
        assert!(winner.revision > base);
        base = winner.revision;
    }
    eprintln!("wins hv1/hv2: {wins:?}");
    assert_eq!(hv1.view().await.unwrap().holders[&VIP].revision, base);
}

/// Everything a cut-off test needs: etcd, a raw client, a proxy, settings
/// straight to etcd and settings through the proxy.
async fn cuttable() -> (Etcd, etcd_client::Client, Proxy, EtcdSettings, EtcdSettings) {
    let etcd = Etcd::start(false);
    let raw = etcd.raw().await;
    let proxy = Proxy::start(etcd.addr).await;
    let s = etcd.settings();
    let mut cut = s.clone();
    cut.endpoints = vec![proxy.url()];
    (etcd, raw, proxy, s, cut)
}

/// Compacts etcd's history up to now; returns that revision.
async fn compact_to_latest(raw: &mut etcd_client::Client) -> i64 {
    let latest = raw.get("/", None).await.unwrap().header().unwrap().revision();
    raw.compact(latest, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_misses_nothing_across_a_compaction_while_it_was_cut_off() {
    let (_etcd, mut raw, proxy, s, cut_settings) = cuttable().await;
    let hv1 = registered(&s, host("hv1", 1), Duration::from_secs(60)).await;
    let follower = EtcdCluster::connect(&cut_settings).await.unwrap();
    let mut events = follower.follow(Duration::from_secs(3600));

    let (first, _) =
        event_where(&mut events, "the first snapshot", LIMIT, |e| matches!(e, ClusterEvent::Resynced(_)))
            .await;
    let ClusterEvent::Resynced(view) = first else { unreachable!() };
    assert!(view.hosts.contains_key("hv1") && view.holders.is_empty(), "{view:?}");

    // Changes arrive as events, in commit order.
    let a = committed(hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 1)), 0, "claim").await.unwrap());
    let (e, _) =
        event_where(&mut events, "hv1's claim", LIMIT, |e| matches!(e, ClusterEvent::Holder(_))).await;
    assert_eq!(e, ClusterEvent::Holder(a.clone()));
    let hv2 = registered(&s, host("hv2", 2), Duration::from_secs(60)).await;
    let (e, _) =
        event_where(&mut events, "hv2 joining", LIMIT, |e| matches!(e, ClusterEvent::HostJoined(_))).await;
    assert_eq!(e, ClusterEvent::HostJoined(host("hv2", 2)));

    // The follower is cut off; meanwhile hv2 claims twice, hv2 leaves, and
    // etcd compacts its history past all of it.
    proxy.cut();
    event_where(&mut events, "etcd unreachable", LIMIT, |e| *e == ClusterEvent::Reachable(false)).await;
    let b = committed(
        hv2.commit_holder(VIP, Some(holder("hv2", "vnic-b", 1)), a.revision, "claim").await.unwrap(),
    );
    let c = committed(
        hv2.commit_holder(VIP, Some(holder("hv2", "vnic-b", 2)), b.revision, "claim").await.unwrap(),
    );
    let lease = hv2.registration().borrow().lease.unwrap();
    drop(hv2);
    raw.lease_revoke(lease).await.unwrap();
    let latest = compact_to_latest(&mut raw).await;

    proxy.heal();
    let (_, before) =
        event_where(&mut events, "etcd reachable", LIMIT, |e| *e == ClusterEvent::Reachable(true)).await;
    assert!(before.iter().all(|e| matches!(e, ClusterEvent::Reachable(false))), "{before:?}");
    let (e, before) =
        event_where(&mut events, "a resync", LIMIT, |e| matches!(e, ClusterEvent::Resynced(_))).await;
    assert!(before.is_empty(), "{before:?}");
    let ClusterEvent::Resynced(view) = e else { unreachable!() };
    assert_eq!(view.holders[&VIP], c, "the last claim made while cut off");
    assert!(view.revision >= latest as u64);
    assert_eq!(view.hosts.keys().collect::<Vec<_>>(), ["hv1"], "hv2 left meanwhile");

    // And it keeps following after the resync.
    let d = committed(
        hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 3)), c.revision, "claim").await.unwrap(),
    );
    let (e, _) =
        event_where(&mut events, "hv1's claim after", LIMIT, |e| matches!(e, ClusterEvent::Holder(_))).await;
    assert_eq!(e, ClusterEvent::Holder(d));
}

/// Following from a view the caller read: the changes since come as
/// events; if etcd compacted past the view meanwhile, the watch cannot
/// start there and a fresh snapshot comes instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_from_a_view_compacted_meanwhile_resyncs() {
    let etcd = Etcd::start(false);
    let mut raw = etcd.raw().await;
    let hv1 = registered(&etcd.settings(), host("hv1", 1), Duration::from_secs(60)).await;
    let a = committed(hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 1)), 0, "claim").await.unwrap());

    // Not compacted: the change since the view is an event, no snapshot.
    let view = hv1.view().await.unwrap();
    let b = committed(
        hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 2)), a.revision, "claim").await.unwrap(),
    );
    let mut events = hv1.follow_from(view.clone(), Duration::from_secs(3600));
    let (e, before) = event_where(&mut events, "the change since the view", LIMIT, |_| true).await;
    assert_eq!((e, before), (ClusterEvent::Holder(b.clone()), vec![]));
    drop(events);

    // Compacted past the view: the watch is refused, a snapshot comes.
    let c = committed(
        hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 3)), b.revision, "claim").await.unwrap(),
    );
    compact_to_latest(&mut raw).await;
    let mut events = hv1.follow_from(view, Duration::from_secs(3600));
    let (e, before) = event_where(&mut events, "a snapshot", LIMIT, |_| true).await;
    assert!(before.is_empty());
    let ClusterEvent::Resynced(fresh) = e else { panic!("not a snapshot: {e:?}") };
    assert_eq!(fresh.holders[&VIP], c, "the last change, which no event could bring");
    let d = committed(hv1.commit_holder(VIP, None, c.revision, "host down").await.unwrap());
    let (e, _) = event_where(&mut events, "the clear", LIMIT, |_| true).await;
    assert_eq!(e, ClusterEvent::Holder(d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_leaving_is_an_event_and_a_periodic_resync_comes() {
    let etcd = Etcd::start(false);
    let mut raw = etcd.raw().await;
    let s = etcd.settings();
    let follower = EtcdCluster::connect(&s).await.unwrap();
    let mut events = follower.follow(Duration::from_millis(300));
    event_where(&mut events, "the first snapshot", LIMIT, |e| matches!(e, ClusterEvent::Resynced(_))).await;
    let hv2 = registered(&s, host("hv2", 2), Duration::from_secs(60)).await;
    let lease = hv2.registration().borrow().lease.unwrap();
    drop(hv2);
    raw.lease_revoke(lease).await.unwrap();
    let (e, _) =
        event_where(&mut events, "hv2 leaving", LIMIT, |e| matches!(e, ClusterEvent::HostLeft { .. })).await;
    let ClusterEvent::HostLeft { id, revision } = e else { unreachable!() };
    assert!(id == "hv2" && revision > 0);
    let (e, _) =
        event_where(&mut events, "a periodic resync", LIMIT, |e| matches!(e, ClusterEvent::Resynced(_)))
            .await;
    let ClusterEvent::Resynced(view) = e else { unreachable!() };
    assert!(view.hosts.is_empty() && view.revision >= revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_tls_and_client_certificates() {
    let etcd = Etcd::start(true);
    let s = etcd.settings();
    assert!(s.endpoints[0].starts_with("https://"));
    let hv1 = registered(&s, host("hv1", 1), Duration::from_secs(60)).await;
    let a = committed(hv1.commit_holder(VIP, Some(holder("hv1", "vnic-a", 1)), 0, "claim").await.unwrap());
    assert_eq!(hv1.view().await.unwrap().holders[&VIP], a);

    // Without the client certificate, etcd refuses (and says so, with where).
    let mut no_cert = s.clone();
    no_cert.tls.as_mut().unwrap().identity = None;
    let anon = EtcdCluster::connect(&no_cert).await.unwrap();
    let e = anon.view().await.unwrap_err().to_string();
    assert!(e.contains("reading hosts and holders at etcd https://127.0.0.1:"), "{e}");
}

// ---------------------------------------------------------------------------
// The desired state (the `Store` trait on etcd).

fn one_havip(s: &mut DesiredState, vip: &str) -> Result<(), havip_model::Refusal> {
    s.subnets.insert("vpc1".into(), "198.18.1.0/24".parse()?);
    create_havip(s, &HavipSpec { vip: Some(vip.into()), subnet: "vpc1".into(), ..Default::default() })?;
    Ok(())
}

/// Polls `f` (a blocking check) until it holds.
async fn until_sync(what: &str, mut f: impl FnMut() -> bool) {
    until(what, LIMIT, || std::future::ready(f().then_some(()))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_commits_refuses_retries_conflicts_and_is_watched() {
    let etcd = Etcd::start(false);
    let s = etcd.settings();
    let one = EtcdStore::open(&s).unwrap();
    let two = EtcdStore::open(&s).unwrap();
    assert_eq!(one.desired().revision, 0, "never written");
    let mut watch = two.watch();

    let snap = one.update(&mut |s| one_havip(s, "198.18.1.50")).unwrap();
    assert!(snap.revision > 0);
    assert_eq!(snap.state.havips.len(), 1);
    // The other store follows through its watch.
    until_sync("the second store to see the commit", || two.desired().revision == snap.revision).await;
    assert_eq!(two.desired().state, snap.state);
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), snap.revision);

    // A refusal commits nothing; an edit changing nothing neither.
    let refused = one.update(&mut |s| {
        s.havips.clear();
        refuse(Rule::DeleteInUse, "refused")
    });
    assert!(matches!(refused, Err(StoreError::Refused(r)) if r.rule == Rule::DeleteInUse));
    assert_eq!(one.update(&mut |_| Ok(())).unwrap().revision, snap.revision);

    // Another writer commits between our read and our commit: the guard
    // fails our transaction and the edit runs again on the new state.
    let mut runs = 0;
    let merged = one
        .update(&mut |s| {
            runs += 1;
            if runs == 1 {
                two.update(&mut |t| one_havip(t, "198.18.1.51")).unwrap();
            }
            s.subnets.insert("vpc2".into(), "198.18.2.0/24".parse()?);
            Ok(())
        })
        .unwrap();
    assert_eq!(runs, 2, "the edit ran again after the conflict");
    assert!(
        merged.state.havips.contains_key(&"198.18.1.51".parse().unwrap()),
        "the other writer's HAVIP kept"
    );
    assert!(merged.state.subnets.contains_key("vpc2"));
    until_sync("the second store to see the merge", || two.desired().revision == merged.revision).await;
    assert_eq!(two.desired().state, merged.state);

    // Deletes are committed as deletes; a third store reads the same.
    let gone = two
        .update(&mut |s| {
            s.havips.remove(&"198.18.1.51".parse().unwrap());
            s.subnets.remove("vpc2");
            Ok(())
        })
        .unwrap();
    let three = EtcdStore::open(&s).unwrap();
    assert_eq!((three.desired().revision, &three.desired().state), (gone.revision, &gone.state));

    // Observations stay in memory, only for desired HAVIPs.
    let vip: Ipv4Addr = "198.18.1.50".parse().unwrap();
    let o = Observed { epoch: 3, ..Default::default() };
    one.record(&BTreeMap::from([(vip, o.clone()), ("198.18.1.99".parse().unwrap(), o)])).unwrap();
    assert_eq!(one.observed().keys().collect::<Vec<_>>(), [&vip]);
    assert!(two.observed().is_empty(), "observations are per agent");
}

/// Issue 11: a subnet's settings are keys of their own, committed in the same guarded transaction
/// as the rest; state written before them (no such keys) reads as unicast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_settings_are_committed_followed_and_dropped_with_their_subnet() {
    let etcd = Etcd::start(false);
    let s = etcd.settings();
    let mut raw = etcd.raw().await;
    let key = "/havip-test/v1/desired/subnet_settings/vpc1";
    let one = EtcdStore::open(&s).unwrap();
    let two = EtcdStore::open(&s).unwrap();
    let before = one.update(&mut |s| one_havip(s, "198.18.1.50")).unwrap();
    assert_eq!(before.state.subnet_settings("vpc1").mode, SubnetMode::Unicast, "no key: unicast");
    assert!(raw.get(key, None).await.unwrap().kvs().is_empty(), "the default is not written");

    // The mode and a new subnet with its own settings, in one commit.
    let spec = SubnetModeSpec { mode: "broadcast-domain".into(), storm_pps: Some(400), storm_burst: None };
    let snap = one
        .update(&mut |s| {
            set_subnet_mode(s, "vpc1", &spec)?;
            let vpc2 = SubnetSpec {
                name: "vpc2".into(),
                cidr: "198.18.2.0/24".into(),
                storm_burst: Some(5),
                ..Default::default()
            };
            put_subnet(s, &vpc2)
        })
        .unwrap();
    let bd =
        SubnetSettings { mode: SubnetMode::BroadcastDomain, storm: StormControl { pps: 400, burst: 100 } };
    assert_eq!(snap.state.subnet_settings("vpc1"), bd);
    let stored = raw.get(key, None).await.unwrap();
    let kv = &stored.kvs()[0];
    assert_eq!(kv.mod_revision() as u64, snap.revision, "one transaction with the guard");
    assert_eq!(serde_json::from_slice::<SubnetSettings>(kv.value()).unwrap(), bd);
    until_sync("the second store to see the mode", || two.desired().revision == snap.revision).await;
    assert_eq!(two.desired().state, snap.state);
    assert_eq!(EtcdStore::open(&s).unwrap().desired().state, snap.state, "read again from etcd");

    // Deleting the subnet deletes its settings.
    let gone = two.update(&mut |s| delete_subnet(s, "vpc2")).unwrap();
    assert!(!gone.state.subnet_settings.contains_key("vpc2"));
    assert!(raw.get("/havip-test/v1/desired/subnet_settings/vpc2", None).await.unwrap().kvs().is_empty());

    // Settings an older agent left behind when it deleted their subnet (it knows no such keys):
    // not read as state, deleted by the next commit.
    let orphan = "/havip-test/v1/desired/subnet_settings/vpc9";
    raw.put(orphan, serde_json::to_vec(&bd).unwrap(), None).await.unwrap();
    let three = EtcdStore::open(&s).unwrap();
    assert!(!three.desired().state.subnet_settings.contains_key("vpc9"));
    havip_model::rules::check(&three.desired().state, &Default::default()).unwrap();
    three.update(&mut |s| one_havip(s, "198.18.1.51")).unwrap();
    assert!(raw.get(orphan, None).await.unwrap().kvs().is_empty(), "deleted with the next commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_over_the_transaction_limit_fails_naming_it() {
    let etcd = Etcd::start(false);
    let mut s = etcd.settings();
    s.max_txn_ops = 4;
    let store = EtcdStore::open(&s).unwrap();
    let err = store
        .update(&mut |st| {
            for i in 0..4 {
                st.subnets.insert(format!("s{i}"), format!("198.18.{i}.0/24").parse()?);
            }
            Ok(())
        })
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Backend(_)) && text.contains("--max-txn-ops") && text.contains("5 keys"),
        "{text}"
    );
    assert_eq!(store.desired().revision, 0, "nothing committed");
    assert!(store.health().failing());
    // Within the limit it commits (and health recovers).
    store.update(&mut |st| one_havip(st, "198.18.1.50")).unwrap();
    assert!(!store.health().failing());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cut_off_across_a_compaction_catches_up() {
    let (_etcd, mut raw, proxy, s, cut) = cuttable().await;
    let writer = EtcdStore::open(&s).unwrap();
    let follower = EtcdStore::open(&cut).unwrap();
    writer.update(&mut |st| one_havip(st, "198.18.1.50")).unwrap();
    let first = writer.desired().revision;
    until_sync("the follower to see the first commit", || follower.desired().revision == first).await;

    proxy.cut();
    let e = follower.update(&mut |st| one_havip(st, "198.18.1.52")).unwrap_err();
    assert!(e.to_string().contains(&format!("at etcd {}", proxy.url())), "{e}");
    assert!(follower.health().failing() && follower.flush().is_err());
    let last = writer.update(&mut |st| one_havip(st, "198.18.1.51")).unwrap();
    compact_to_latest(&mut raw).await;
    proxy.heal();
    until_sync("the follower to catch up", || follower.desired().revision == last.revision).await;
    assert_eq!(follower.desired().state, last.state);
    until_sync("the follower's store to answer again", || follower.flush().is_ok()).await;
    assert!(!follower.health().failing());
}

/// A watch with nothing to say answers progress requests: an idle follower
/// does not take its silence for a cut (which would resync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_follower_keeps_its_watch() {
    let etcd = Etcd::start(false);
    let follower = EtcdCluster::connect(&etcd.settings()).await.unwrap();
    let mut events = follower.follow(Duration::from_secs(3600));
    event_where(&mut events, "the first snapshot", LIMIT, |e| matches!(e, ClusterEvent::Resynced(_))).await;
    // Longer than the silence a watch tolerates (3 s with these settings).
    let quiet = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert!(quiet.is_err(), "nothing happened, nothing to report: {quiet:?}");
}

/// A partition that drops packets (no reset, no error: silence): the
/// follower tells it from an idle watch, says etcd is unreachable, and
/// resyncs when it heals; the registration gives up its lease locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_is_noticed_and_healed() {
    let (_etcd, _raw, proxy, s, mut cut) = cuttable().await;
    cut.dial_timeout = Duration::from_millis(300);
    let writer = registered(&s, host("hv2", 2), Duration::from_secs(60)).await;
    let hv1 = registered(&cut, host("hv1", 1), Duration::from_secs(1)).await;
    let mut events = hv1.follow(Duration::from_secs(3600));
    event_where(&mut events, "the first snapshot", LIMIT, |e| matches!(e, ClusterEvent::Resynced(_))).await;

    let frozen = Instant::now();
    proxy.set(Mode::Frozen);
    let a = committed(writer.commit_holder(VIP, Some(holder("hv2", "vnic-b", 1)), 0, "claim").await.unwrap());
    event_where(&mut events, "etcd unreachable", LIMIT, |e| *e == ClusterEvent::Reachable(false)).await;
    eprintln!("a silent partition noticed after {:?}", frozen.elapsed());
    let mut reg = hv1.registration();
    tokio::time::timeout(LIMIT, reg.wait_for(|r| r.lease.is_none())).await.expect("lease given up").unwrap();
    let e = hv1.view().await.unwrap_err().to_string();
    assert!(e.contains("no answer within"), "{e}");

    proxy.heal();
    event_where(&mut events, "etcd reachable", LIMIT, |e| *e == ClusterEvent::Reachable(true)).await;
    let (e, _) =
        event_where(&mut events, "a resync", LIMIT, |e| matches!(e, ClusterEvent::Resynced(_))).await;
    let ClusterEvent::Resynced(view) = e else { unreachable!() };
    assert_eq!(view.holders[&VIP], a, "the claim made during the partition");
    tokio::time::timeout(LIMIT, reg.wait_for(|r| r.lease.is_some())).await.expect("registered").unwrap();
}
