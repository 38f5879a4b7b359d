//! The embedded backend: redb, a pure-Rust ACID key-value file (copy-on-write
//! B-trees, fsync'd commits, no server). A commit is all or nothing, so a
//! crash mid-write leaves the previous state; a returned commit is on disk.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Display,
    fs::{DirBuilder, OpenOptions, Permissions},
    net::Ipv4Addr,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard},
};

use anyhow::{bail, Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use havip_model::{DesiredState, Observed};

use super::{Edit, Snapshot, Store, StoreError, StoreHealth};
use crate::sync::lock;

/// Every table maps a name (or a VIP, as text) to a JSON document.
type Docs = TableDefinition<'static, &'static str, &'static [u8]>;
const SUBNETS: Docs = TableDefinition::new("subnets");
const VNICS: Docs = TableDefinition::new("vnics");
const HAVIPS: Docs = TableDefinition::new("havips");
const OBSERVED: Docs = TableDefinition::new("observed");
/// Subnet name → [`SubnetSettings`](havip_model::SubnetSettings) JSON, only for the subnets whose
/// settings are not the default (unicast). A table of its own, added without a schema bump: a
/// store written before it has none and reads as all unicast (the table is made empty at
/// open), and the subnet documents stay what older agents read.
const SUBNET_SETTINGS: Docs = TableDefinition::new("subnet_settings");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const SCHEMA: &str = "schema";
/// Bump when a document changes incompatibly. 2: vNICs carry their host
/// and interface name, holder records their host and MAC. (A new table
/// older agents ignore, such as `subnet_settings`, is no bump.)
const SCHEMA_VERSION: u64 = 2;

/// The embedded store: one redb file, with the committed state cached in
/// memory.
///
/// A failed write never stops it: redb refuses every write after an I/O
/// error ("Previous I/O error occurred") until the file is opened again, so
/// the database is dropped on a failed commit and reopened before the next
/// one. Observations ([`Store::record`]) are kept in memory until they can
/// be written ([`Store::flush`]); [`StoreHealth`] says how it goes.
pub struct RedbStore {
    path: PathBuf,
    /// None after a failed commit: reopened before the next write.
    db: Mutex<Option<Database>>,
    /// Held across each write so memory and file change together (taken
    /// before `db`).
    cache: Mutex<Cache>,
    revision: watch::Sender<u64>,
    health: Arc<StoreHealth>,
}

struct Cache {
    desired: Snapshot,
    /// What was observed, written or not.
    observed: BTreeMap<Ipv4Addr, Observed>,
    /// HAVIPs whose observations are not on disk yet.
    pending: BTreeSet<Ipv4Addr>,
}

/// Creates the store's directory (owner only) if it is missing, and the
/// file owner-read-write, tightening an existing file's mode: the store is
/// the agent's private state.
fn create_private(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the store {}", path.display()))?;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
        info!(store = %path.display(), "was mode {mode:o}: made 0600");
    }
    Ok(())
}

/// Opens (or initialises) the database file and checks its schema.
fn open_db(path: &Path) -> Result<Database> {
    let db = Database::create(path).with_context(|| format!("opening the store {}", path.display()))?;
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let schema = meta.get(SCHEMA)?.map(|v| v.value());
        match schema {
            None => {
                meta.insert(SCHEMA, SCHEMA_VERSION)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                bail!("store {} has schema {v}; this agent reads {SCHEMA_VERSION}", path.display())
            }
        }
        for t in [SUBNETS, VNICS, HAVIPS, OBSERVED, SUBNET_SETTINGS] {
            txn.open_table(t)?;
        }
        drop_orphan_settings(&txn)?;
    }
    txn.commit().context("initialising the store")?;
    Ok(db)
}

/// Removes the settings of subnets that no longer exist: an older agent (rolled back to, then
/// forward again) deletes a subnet without knowing its settings, which would otherwise come back
/// with a subnet of the same name, and break the rule that settings name a subnet.
fn drop_orphan_settings(txn: &WriteTransaction) -> Result<()> {
    let subnets = txn.open_table(SUBNETS)?;
    let mut settings = txn.open_table(SUBNET_SETTINGS)?;
    let mut orphans = Vec::new();
    for entry in settings.iter()? {
        let name = entry?.0.value().to_owned();
        if subnets.get(name.as_str())?.is_none() {
            orphans.push(name);
        }
    }
    for name in orphans {
        warn!(subnet = %name, "the store has settings of a subnet that does not exist: removed");
        settings.remove(name.as_str())?;
    }
    Ok(())
}

/// The committed desired state.
fn read_desired(db: &Database) -> Result<Snapshot> {
    let read = db.begin_read()?;
    let revision = read.open_table(META)?.get(REVISION)?.map_or(0, |v| v.value());
    let state = DesiredState {
        subnets: read_docs(&read.open_table(SUBNETS)?)?,
        vnics: read_docs(&read.open_table(VNICS)?)?,
        havips: read_docs(&read.open_table(HAVIPS)?)?,
        subnet_settings: read_docs(&read.open_table(SUBNET_SETTINGS)?)?,
    };
    Ok(Snapshot { revision, state: Arc::new(state) })
}

impl RedbStore {
    /// Opens the store at `path`, creating it (and its directory, 0700) if
    /// needed; the file is made 0600.
    pub fn open(path: &Path) -> Result<Self> {
        create_private(path)?;
        let db = open_db(path)?;
        let desired = read_desired(&db)?;
        let observed = read_docs(&db.begin_read()?.open_table(OBSERVED)?)?;
        let revision = desired.revision;
        Ok(Self {
            path: path.to_owned(),
            db: Mutex::new(Some(db)),
            cache: Mutex::new(Cache { desired, observed, pending: BTreeSet::new() }),
            revision: watch::Sender::new(revision),
            health: Arc::default(),
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding it cannot leave it half-updated: the cache is
        // replaced only after a commit succeeded.
        lock(&self.cache)
    }

    /// The open database, reopened first after a failed commit. A failed
    /// commit may have landed after all (fsync failing after the write):
    /// then the file is ahead of memory, and memory takes its desired state.
    fn ready<'a>(&self, slot: &'a mut Option<Database>, cache: &mut Cache) -> Result<&'a Database> {
        if slot.is_none() {
            let db = open_db(&self.path).context("reopening the store after a failed write")?;
            self.health.reopened();
            let on_disk = read_desired(&db)?;
            if on_disk.revision != cache.desired.revision {
                warn!(
                    memory = cache.desired.revision,
                    disk = on_disk.revision,
                    "the store file is at another revision than memory after a failed write: taking the file's"
                );
                cache.observed.retain(|vip, _| on_disk.state.havips.contains_key(vip));
                cache.pending.retain(|vip| on_disk.state.havips.contains_key(vip));
                self.revision.send_replace(on_disk.revision);
                cache.desired = on_disk;
            }
            info!(store = %self.path.display(), "reopened");
            *slot = Some(db);
        }
        Ok(slot.as_ref().expect("opened above"))
    }

    /// One commit of `write`, on a database reopened first if it must be;
    /// a failure drops the database (redb would refuse every later write)
    /// and marks the store's health.
    fn commit(
        &self,
        cache: &mut Cache,
        write: impl FnOnce(&Cache, &WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        let mut slot = lock(&self.db);
        let result = (|| {
            let db = self.ready(&mut slot, cache)?;
            let txn = db.begin_write().context("starting a store transaction")?;
            write(cache, &txn)?;
            txn.commit().context("committing to the store")
        })();
        match &result {
            Ok(()) => self.health.write_succeeded(),
            Err(e) => {
                *slot = None;
                self.health.write_failed(&format!("{e:#}"));
            }
        }
        result
    }

    /// Writes the observations waiting in memory.
    fn write_pending(&self, cache: &mut Cache) -> Result<()> {
        self.commit(cache, |cache, txn| {
            let mut table = txn.open_table(OBSERVED)?;
            for vip in &cache.pending {
                if let Some(o) = cache.observed.get(vip) {
                    table.insert(vip.to_string().as_str(), serde_json::to_vec(o)?.as_slice())?;
                }
            }
            Ok(())
        })
        .context("recording observations")?;
        cache.pending.clear();
        self.health.set_pending(0);
        Ok(())
    }
}

impl Store for RedbStore {
    fn desired(&self) -> Snapshot {
        self.cache().desired.clone()
    }

    fn update(&self, change: &mut Edit<'_>) -> Result<Snapshot, StoreError> {
        let mut cache = self.cache();
        {
            // Before the edit: a reopen may change what it edits.
            let mut slot = lock(&self.db);
            if let Err(e) = self.ready(&mut slot, &mut cache) {
                self.health.write_failed(&format!("{e:#}"));
                return Err(e.into());
            }
        }
        let old = cache.desired.clone();
        let mut new = (*old.state).clone();
        change(&mut new)?;
        if new == *old.state {
            return Ok(old);
        }
        let revision = old.revision + 1;
        let gone: Vec<String> = cache
            .observed
            .keys()
            .filter(|vip| !new.havips.contains_key(vip))
            .map(|v| v.to_string())
            .collect();
        self.commit(&mut cache, |cache, txn| {
            write_diff(&mut txn.open_table(SUBNETS)?, &old.state.subnets, &new.subnets)?;
            write_diff(
                &mut txn.open_table(SUBNET_SETTINGS)?,
                &old.state.subnet_settings,
                &new.subnet_settings,
            )?;
            write_diff(&mut txn.open_table(VNICS)?, &old.state.vnics, &new.vnics)?;
            write_diff(&mut txn.open_table(HAVIPS)?, &old.state.havips, &new.havips)?;
            let mut observed = txn.open_table(OBSERVED)?;
            for vip in &gone {
                observed.remove(vip.as_str())?;
            }
            // Observations waiting in memory go with it.
            for vip in cache.pending.iter().filter(|v| new.havips.contains_key(v)) {
                if let Some(o) = cache.observed.get(vip) {
                    observed.insert(vip.to_string().as_str(), serde_json::to_vec(o)?.as_slice())?;
                }
            }
            txn.open_table(META)?.insert(REVISION, revision)?;
            Ok(())
        })
        .with_context(|| format!("committing revision {revision}"))?;
        cache.pending.clear();
        self.health.set_pending(0);
        cache.observed.retain(|vip, _| new.havips.contains_key(vip));
        cache.desired = Snapshot { revision, state: Arc::new(new) };
        self.revision.send_replace(revision);
        Ok(cache.desired.clone())
    }

    fn observed(&self) -> BTreeMap<Ipv4Addr, Observed> {
        self.cache().observed.clone()
    }

    /// Keeps the observations in memory at once (what `observed` returns),
    /// then writes them; if the store is failing, or the write fails, they
    /// wait for [`Store::flush`] and this still succeeds: no storage fault
    /// may stop what reports the data plane.
    fn record(&self, observed: &BTreeMap<Ipv4Addr, Observed>) -> Result<(), StoreError> {
        let mut cache = self.cache();
        let desired = cache.desired.state.clone();
        let fresh: Vec<(Ipv4Addr, Observed)> = observed
            .iter()
            .filter(|(vip, o)| desired.havips.contains_key(vip) && cache.observed.get(vip) != Some(o))
            .map(|(vip, o)| (*vip, o.clone()))
            .collect();
        for (vip, o) in fresh {
            cache.observed.insert(vip, o);
            cache.pending.insert(vip);
        }
        self.health.set_pending(cache.pending.len());
        // While failing, retries come from `flush`, with the caller's backoff.
        if cache.pending.is_empty() || self.health.failing() {
            return Ok(());
        }
        if let Err(e) = self.write_pending(&mut cache) {
            warn!(
                error = %format!("{e:#}"),
                pending = cache.pending.len(),
                "store write failed: observations kept in memory, retried"
            );
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut cache = self.cache();
        if cache.pending.is_empty() {
            // Nothing to write: being able to open the store again is health.
            let mut slot = lock(&self.db);
            match self.ready(&mut slot, &mut cache) {
                Ok(_) => self.health.write_succeeded(),
                Err(e) => {
                    self.health.write_failed(&format!("{e:#}"));
                    return Err(e.into());
                }
            }
            return Ok(());
        }
        Ok(self.write_pending(&mut cache)?)
    }

    fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

fn read_docs<K, V>(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<BTreeMap<K, V>>
where
    K: FromStr + Ord,
    V: DeserializeOwned,
{
    let mut out = BTreeMap::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let key = k.value().parse().ok().with_context(|| format!("bad key {:?} in the store", k.value()))?;
        let doc = serde_json::from_slice(v.value())
            .with_context(|| format!("reading {:?} from the store", k.value()))?;
        out.insert(key, doc);
    }
    Ok(out)
}

/// Writes what differs between `old` and `new` into `table`.
fn write_diff<K: Display + Ord, V: Serialize + PartialEq>(
    table: &mut redb::Table<&'static str, &'static [u8]>,
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Result<()> {
    for (k, v) in new {
        if old.get(k) != Some(v) {
            table.insert(k.to_string().as_str(), serde_json::to_vec(v)?.as_slice())?;
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        table.remove(k.to_string().as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use havip_model::{
        ops::{create_havip, delete_subnet, set_subnet_mode, HavipSpec, SubnetModeSpec},
        rules::{refuse, Rule},
        state::Claim,
        Havip, Holder, StormControl, SubnetMode, SubnetSettings,
    };

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("havip-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state.redb")
    }

    #[test]
    fn commits_survive_reopening_and_failed_edits_change_nothing() {
        let path = temp_path("reopen");
        let vip: Ipv4Addr = "198.18.1.50".parse().unwrap();
        let holder = Holder { host: "hv1".into(), vnic: "vnic-a".into(), mac: [2, 0, 0, 0, 0, 1], epoch: 3 };
        {
            let store = RedbStore::open(&path).unwrap();
            let mut rx = store.watch();
            let snap = store
                .update(&mut |s| {
                    s.subnets.insert("vpc1".into(), "198.18.1.0/24".parse()?);
                    create_havip(
                        s,
                        &HavipSpec {
                            vip: Some(vip.to_string()),
                            subnet: "vpc1".into(),
                            ..Default::default()
                        },
                    )?;
                    Ok(())
                })
                .unwrap();
            assert_eq!(snap.revision, 1);
            assert!(rx.has_changed().unwrap());
            assert_eq!(*rx.borrow_and_update(), 1);
            let err = store.update(&mut |s| {
                s.havips.clear();
                refuse(Rule::DeleteInUse, "refused")
            });
            assert!(
                matches!(err, Err(StoreError::Refused(r)) if r.rule == Rule::DeleteInUse),
                "a refusal stays one"
            );
            assert_eq!(store.desired().revision, 1);
            // An edit that changes nothing commits nothing.
            assert_eq!(store.update(&mut |_| Ok(())).unwrap().revision, 1);
            let mut o = Observed { holder: Some(holder.clone()), epoch: 3, ..Default::default() };
            o.remember(Claim { at_ms: 1, vnic: "vnic-a".into(), accepted: true, detail: String::new() });
            store
                .record(&BTreeMap::from([(vip, o), ("198.18.1.99".parse().unwrap(), Observed::default())]))
                .unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let snap = store.desired();
        assert_eq!(snap.revision, 1);
        assert_eq!(
            snap.state.havips[&vip],
            Havip { vip, subnet: "vpc1".into(), members: vec![], eip: None, settings: Default::default() }
        );
        let observed = store.observed();
        assert_eq!(observed.len(), 1, "observations of unknown HAVIPs are dropped");
        assert_eq!((observed[&vip].epoch, observed[&vip].holder.as_ref()), (3, Some(&holder)));
        // Deleting a HAVIP deletes what was observed of it.
        store
            .update(&mut |s| {
                s.havips.clear();
                Ok(())
            })
            .unwrap();
        drop(store);
        assert!(RedbStore::open(&path).unwrap().observed().is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    fn one_havip(store: &RedbStore, vip: Ipv4Addr) {
        store
            .update(&mut |s| {
                s.subnets.insert("vpc1".into(), "198.18.1.0/24".parse()?);
                create_havip(
                    s,
                    &HavipSpec { vip: Some(vip.to_string()), subnet: "vpc1".into(), ..Default::default() },
                )?;
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn the_state_directory_and_file_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("private");
        let dir = path.parent().unwrap().to_owned();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        drop(RedbStore::open(&path).unwrap());
        assert_eq!((mode(&dir), mode(&path)), (0o700, 0o600), "state dir and store are owner-only");
        // A store made before (by hand, or an older agent) is made private.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(RedbStore::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A tmpfs of `size` mounted on a fresh directory, unmounted (lazily:
    /// files may still be open) and removed on drop.
    struct SmallFs(std::path::PathBuf);

    impl SmallFs {
        fn mount(name: &str, size: &str) -> Option<Self> {
            use std::ffi::CString;
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: needs root to mount a tmpfs");
                return None;
            }
            let dir = std::env::temp_dir().join(format!("havip-store-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let (src, target, fstype) = (
                CString::new("tmpfs").unwrap(),
                CString::new(dir.to_str().unwrap()).unwrap(),
                CString::new("tmpfs").unwrap(),
            );
            let data = CString::new(format!("size={size},mode=0700")).unwrap();
            // SAFETY: valid C strings.
            let rc = unsafe {
                libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast())
            };
            assert_eq!(rc, 0, "mounting a tmpfs: {}", std::io::Error::last_os_error());
            Some(Self(dir))
        }

        /// Fills the filesystem: a file grown until ENOSPC.
        fn fill(&self) -> std::path::PathBuf {
            use std::io::Write;
            let filler = self.0.join("filler");
            let mut f = std::fs::File::create(&filler).unwrap();
            let block = vec![0xa5u8; 4096];
            loop {
                match f.write_all(&block) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling: {e}"),
                }
            }
            filler
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let target = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
            // SAFETY: a valid C string.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_full_disk_keeps_observations_in_memory_and_never_poisons_the_store() {
        let Some(fs) = SmallFs::mount("full", "4m") else { return };
        let path = fs.0.join("state.redb");
        let vip: Ipv4Addr = "198.18.1.50".parse().unwrap();
        let store = RedbStore::open(&path).unwrap();
        one_havip(&store, vip);
        let filler = fs.fill();
        let health = store.health();

        // Observations keep coming while nothing can be written.
        for epoch in 1..=20u64 {
            let holder = Holder { host: "hv1".into(), vnic: "vnic-a".into(), mac: [2, 0, 0, 0, 0, 1], epoch };
            let mut o = Observed { holder: Some(holder), epoch, ..Default::default() };
            o.remember(Claim {
                at_ms: epoch,
                vnic: "vnic-a".into(),
                accepted: true,
                detail: "x".repeat(4000),
            });
            store.record(&BTreeMap::from([(vip, o)])).expect("a failed write is not the observer's failure");
            assert_eq!(store.observed()[&vip].epoch, epoch, "kept in memory, shown at once");
        }
        let h = health.snapshot();
        assert!(h.failing && h.write_failures >= 1 && h.pending == 1, "{h:?}");
        assert!(h.last_error.as_deref().unwrap_or("").contains("No space left"), "{h:?}");
        assert!(store.flush().is_err(), "still full");
        let refused = store.update(&mut |s| {
            s.subnets.insert("vpc2".into(), "198.18.2.0/24".parse()?);
            Ok(())
        });
        assert!(
            matches!(refused, Err(StoreError::Backend(_))),
            "an edit that cannot be written is not acknowledged"
        );
        assert_eq!(store.desired().revision, 1);

        // Space is freed: the store comes back without a restart.
        std::fs::remove_file(filler).unwrap();
        store.flush().expect("written once there is space");
        let h = health.snapshot();
        assert!(!h.failing && h.pending == 0 && h.reopens >= 1, "{h:?}");
        let snap = store
            .update(&mut |s| {
                s.subnets.insert("vpc2".into(), "198.18.2.0/24".parse()?);
                Ok(())
            })
            .expect("writes work again: the store is not poisoned");
        assert_eq!(snap.revision, 2);
        drop(store);
        let again = RedbStore::open(&path).unwrap();
        assert_eq!(again.observed()[&vip].epoch, 20, "the last observation landed on disk");
        assert_eq!(again.desired().revision, 2);
    }

    // --- issue 11: subnet settings ------------------------------------------

    fn set_mode(store: &RedbStore, name: &str, mode: &str, pps: Option<u32>) -> Snapshot {
        let spec = SubnetModeSpec { mode: mode.into(), storm_pps: pps, storm_burst: None };
        store.update(&mut |s| set_subnet_mode(s, name, &spec).map(drop)).unwrap()
    }

    #[test]
    fn subnet_settings_survive_reopening_and_go_with_their_subnet() {
        let path = temp_path("settings");
        let bd = SubnetSettings {
            mode: SubnetMode::BroadcastDomain,
            storm: StormControl { pps: 300, burst: 100 },
        };
        {
            let store = RedbStore::open(&path).unwrap();
            one_havip(&store, "198.18.1.50".parse().unwrap());
            store
                .update(&mut |s| {
                    s.subnets.insert("vpc2".into(), "198.18.2.0/24".parse()?);
                    Ok(())
                })
                .unwrap();
            assert_eq!(set_mode(&store, "vpc1", "broadcast-domain", Some(300)).revision, 3);
            set_mode(&store, "vpc2", "broadcast-domain", None);
            // Back to the default: the row goes.
            set_mode(&store, "vpc2", "unicast", None);
            assert_eq!(store.desired().state.subnet_settings.len(), 1);
        }
        let store = RedbStore::open(&path).unwrap();
        let snap = store.desired();
        assert_eq!(snap.revision, 5);
        assert_eq!(snap.state.subnet_settings("vpc1"), bd);
        assert_eq!(snap.state.subnet_settings("vpc2"), SubnetSettings::default());
        assert_eq!(snap.state.subnet_settings.keys().collect::<Vec<_>>(), ["vpc1"]);
        // Deleting the subnet deletes its settings, on disk too.
        store
            .update(&mut |s| {
                s.havips.clear();
                delete_subnet(s, "vpc1")
            })
            .unwrap();
        drop(store);
        let db = Database::open(&path).unwrap();
        use redb::ReadableTableMetadata;
        assert_eq!(db.begin_read().unwrap().open_table(SUBNET_SETTINGS).unwrap().len().unwrap(), 0);
        drop(db);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_store_from_before_subnet_settings_reads_as_unicast() {
        let path = temp_path("before-settings");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // What an agent before issue 11 wrote: schema 2, no subnet_settings table.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(SCHEMA, 2).unwrap();
                meta.insert(REVISION, 7).unwrap();
                let mut subnets = txn.open_table(SUBNETS).unwrap();
                subnets.insert("vpc1", br#""198.18.1.0/24""#.as_slice()).unwrap();
                for t in [VNICS, HAVIPS, OBSERVED] {
                    txn.open_table(t).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let snap = store.desired();
        assert_eq!(snap.revision, 7);
        assert!(snap.state.subnet_settings.is_empty());
        assert_eq!(snap.state.subnet_settings("vpc1").mode, SubnetMode::Unicast);
        // And it takes settings from then on.
        assert_eq!(set_mode(&store, "vpc1", "broadcast-domain", None).revision, 8);
        drop(store);
        // Settings left behind by an older agent that deleted their subnet are removed at open.
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(SUBNETS).unwrap().remove("vpc1").unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert!(store.desired().state.subnet_settings.is_empty());
        havip_model::rules::check(&store.desired().state, &Default::default()).unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
