//! The embedded backend: redb, a pure-Rust ACID key-value file (copy-on-write
//! B-trees, fsync'd commits, no server). A commit is all or nothing, so a
//! crash mid-write leaves the previous state; a returned commit is on disk.

use std::{
    collections::BTreeMap,
    fmt::Display,
    net::Ipv4Addr,
    path::Path,
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard},
};

use anyhow::{bail, Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;

use havip_model::{DesiredState, Observed};

use super::{Edit, Snapshot, Store, StoreError};
use crate::sync::lock;

/// Every table maps a name (or a VIP, as text) to a JSON document.
type Docs = TableDefinition<'static, &'static str, &'static [u8]>;
const SUBNETS: Docs = TableDefinition::new("subnets");
const VNICS: Docs = TableDefinition::new("vnics");
const HAVIPS: Docs = TableDefinition::new("havips");
const OBSERVED: Docs = TableDefinition::new("observed");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const SCHEMA: &str = "schema";
/// Bump when a document changes incompatibly. 2: vNICs carry their host
/// and interface name, holder records their host and MAC.
const SCHEMA_VERSION: u64 = 2;

/// The embedded store: one redb file, with the committed state cached in
/// memory.
pub struct RedbStore {
    db: Database,
    /// Held across each write so memory and file change together.
    cache: Mutex<Cache>,
    revision: watch::Sender<u64>,
}

struct Cache {
    desired: Snapshot,
    observed: BTreeMap<Ipv4Addr, Observed>,
}

impl RedbStore {
    /// Opens the store at `path`, creating it (and its directory) if needed.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
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
            for t in [SUBNETS, VNICS, HAVIPS, OBSERVED] {
                txn.open_table(t)?;
            }
        }
        txn.commit().context("initialising the store")?;

        let read = db.begin_read()?;
        let revision = read.open_table(META)?.get(REVISION)?.map_or(0, |v| v.value());
        let state = DesiredState {
            subnets: read_docs(&read.open_table(SUBNETS)?)?,
            vnics: read_docs(&read.open_table(VNICS)?)?,
            havips: read_docs(&read.open_table(HAVIPS)?)?,
        };
        let observed = read_docs(&read.open_table(OBSERVED)?)?;
        drop(read);
        let desired = Snapshot { revision, state: Arc::new(state) };
        Ok(Self {
            db,
            cache: Mutex::new(Cache { desired, observed }),
            revision: watch::Sender::new(revision),
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding it cannot leave it half-updated: the cache is
        // replaced only after a commit succeeded.
        lock(&self.cache)
    }

    fn commit(&self, write: impl FnOnce(&WriteTransaction) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_write().context("starting a store transaction")?;
        write(&txn)?;
        txn.commit().context("committing to the store")
    }
}

impl Store for RedbStore {
    fn desired(&self) -> Snapshot {
        self.cache().desired.clone()
    }

    fn update(&self, change: &mut Edit<'_>) -> Result<Snapshot, StoreError> {
        let mut cache = self.cache();
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
        self.commit(|txn| {
            write_diff(&mut txn.open_table(SUBNETS)?, &old.state.subnets, &new.subnets)?;
            write_diff(&mut txn.open_table(VNICS)?, &old.state.vnics, &new.vnics)?;
            write_diff(&mut txn.open_table(HAVIPS)?, &old.state.havips, &new.havips)?;
            let mut observed = txn.open_table(OBSERVED)?;
            for vip in &gone {
                observed.remove(vip.as_str())?;
            }
            txn.open_table(META)?.insert(REVISION, revision)?;
            Ok(())
        })
        .with_context(|| format!("committing revision {revision}"))?;
        cache.observed.retain(|vip, _| new.havips.contains_key(vip));
        cache.desired = Snapshot { revision, state: Arc::new(new) };
        self.revision.send_replace(revision);
        Ok(cache.desired.clone())
    }

    fn observed(&self) -> BTreeMap<Ipv4Addr, Observed> {
        self.cache().observed.clone()
    }

    fn record(&self, observed: &BTreeMap<Ipv4Addr, Observed>) -> Result<(), StoreError> {
        let mut cache = self.cache();
        let desired = cache.desired.state.clone();
        let fresh: BTreeMap<&Ipv4Addr, &Observed> = observed
            .iter()
            .filter(|(vip, o)| desired.havips.contains_key(vip) && cache.observed.get(vip) != Some(o))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        self.commit(|txn| {
            let mut table = txn.open_table(OBSERVED)?;
            for (vip, o) in &fresh {
                table.insert(vip.to_string().as_str(), serde_json::to_vec(o)?.as_slice())?;
            }
            Ok(())
        })
        .context("recording observations")?;
        for (vip, o) in fresh {
            cache.observed.insert(*vip, o.clone());
        }
        Ok(())
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
        ops::{create_havip, HavipSpec},
        rules::{refuse, Rule},
        state::Claim,
        Havip, Holder,
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
}
