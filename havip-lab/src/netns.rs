//! Network namespaces: unique lab ids, an RAII namespace, running code inside
//! one, and sweeping what dead labs left behind.
//!
//! Naming: a lab's id ("stem") is `<owner pid>-<tag>` (or a fixed word such as
//! `up` for a lab meant to outlive its creator). Its namespaces are
//! `havip-<stem>-<role>`, its pins `/sys/fs/bpf/havip-<purpose>-<stem>`, its
//! files `/run/havip-lab/<purpose>-<stem>`. The pid in the stem lets the
//! sweeper tell a dead lab from a live one without touching live ones.

use std::{
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Where bpffs is mounted; lab pin dirs live directly below it.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Where labs keep their configs, pid files and logs.
pub const RUN_DIR: &str = "/run/havip-lab";
/// What a lab is for; shows in its pin and run dir names, which the sweeper knows by it.
const PURPOSES: [&str; 4] = ["lab", "test", "bench", "fuzz"];

/// The identity of one lab: what its namespaces, pins and files are named after.
#[derive(Clone, Debug)]
pub struct LabId {
    /// "lab" (the demo), "test" (an integration test) or "bench": shows in pin dir names.
    pub purpose: &'static str,
    pub stem: String,
}

impl LabId {
    /// A fresh id owned by this process: pid + per-process counter + random.
    pub fn unique(purpose: &'static str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Random enough to keep a recycled pid from meeting its predecessor's names.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let stem = format!("{}-{:x}{:03x}", std::process::id(), n, nanos & 0xfff);
        Self { purpose, stem }
    }

    /// An id with no owner pid (never swept): for a lab left standing by `up`.
    pub fn fixed(purpose: &'static str, stem: &str) -> Self {
        Self { purpose, stem: stem.to_owned() }
    }

    pub fn netns(&self, role: &str) -> String {
        format!("havip-{}-{role}", self.stem)
    }

    pub fn pin_dir(&self) -> PathBuf {
        Path::new(BPFFS).join(format!("havip-{}-{}", self.purpose, self.stem))
    }

    /// The pin dir of `role` (e.g. one host `hv2` of a lab with many hosts,
    /// each with an agent of its own): [`LabId::pin_dir`] + `-<role>`, so
    /// [`remove_lab`] and the sweeper find it with the lab's.
    pub fn pin_dir_of(&self, role: &str) -> PathBuf {
        Path::new(BPFFS).join(format!("havip-{}-{}-{role}", self.purpose, self.stem))
    }

    pub fn run_dir(&self) -> PathBuf {
        Path::new(RUN_DIR).join(format!("{}-{}", self.purpose, self.stem))
    }
}

/// What one test (or other short run) creates, named after a fresh
/// [`LabId::unique`]: namespaces made with [`Scratch::netns`], and the pin
/// and run dirs of the id. Creating one first sweeps what killed earlier
/// runs left behind; dropping it removes the dirs, then the namespaces.
#[derive(Debug)]
pub struct Scratch {
    pub id: LabId,
    netns: Vec<Netns>,
}

impl Scratch {
    pub fn new(purpose: &'static str) -> Result<Self> {
        sweep_stale().context("sweeping stale labs")?;
        Ok(Self { id: LabId::unique(purpose), netns: Vec::new() })
    }

    /// Creates namespace `role` of this id; returns its name.
    pub fn netns(&mut self, role: &str) -> Result<String> {
        let ns = Netns::create(&self.id.netns(role))?;
        let name = ns.name().to_owned();
        self.netns.push(ns);
        Ok(name)
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.id.pin_dir()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_dirs(&self.id) {
            eprintln!("havip-lab: cleanup: {e:#}");
        }
        // The namespaces go next, with `self.netns`.
    }
}

/// A network namespace, deleted on drop (processes in it must be gone by then).
#[derive(Debug)]
pub struct Netns {
    name: String,
    armed: bool,
}

impl Netns {
    pub fn create(name: &str) -> Result<Self> {
        cmd::ip(&["netns", "add", name]).with_context(|| format!("creating netns {name}"))?;
        Ok(Self { name: name.to_owned(), armed: true })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the namespace in place when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = cmd::ip(&["netns", "del", &self.name]) {
                eprintln!("havip-lab: cleanup: {e:#}");
            }
        }
    }
}

/// Moves the calling thread into namespace `ns` (for good: use a thread of its own).
pub fn enter(ns: &str) -> Result<()> {
    let path = netns_path(ns);
    let f = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid fd; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside namespace `ns`. Sockets created there stay
/// bound to `ns` and can be returned and used from any thread.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let ns = ns.to_owned();
    thread::spawn(move || {
        enter(&ns)?;
        f().with_context(|| format!("inside netns {ns}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread inside a netns panicked"))?
}

/// Removes everything named after lab `stem`: processes in its namespaces,
/// its pins, its namespaces and its files. Idempotent.
pub fn remove_lab(stem: &str) -> Result<()> {
    stop_processes(stem)?;
    for purpose in PURPOSES {
        remove_dirs(&LabId { purpose, stem: stem.to_owned() })?;
    }
    for ns in lab_netns(stem)? {
        unless_gone(cmd::ip(&["netns", "del", &ns]), &netns_path(&ns))?;
    }
    Ok(())
}

/// Removes lab `id`'s pin dirs ([`LabId::pin_dir`] and every
/// [`LabId::pin_dir_of`]) and run dir, if there.
fn remove_dirs(id: &LabId) -> Result<()> {
    let role_prefix = format!("havip-{}-{}-", id.purpose, id.stem);
    let role_pins = fs::read_dir(BPFFS)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&role_prefix))
        .map(|e| e.path());
    let dirs: Vec<PathBuf> = [id.pin_dir(), id.run_dir()].into_iter().chain(role_pins).collect();
    for dir in dirs {
        // Unlinking a link pin detaches its XDP program once nothing else holds it.
        let removed = fs::remove_dir_all(&dir);
        unless_gone(removed, &dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Two labs may sweep the same stale lab at once: a removal that failed
/// because the other got there first is a success.
fn unless_gone<T, E: Into<anyhow::Error>>(result: Result<T, E>, path: &Path) -> Result<()> {
    match result {
        Err(e) if path.exists() => Err(e.into()),
        _ => Ok(()),
    }
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Stops every process inside lab `stem`'s namespaces (SIGTERM, then SIGKILL).
pub fn stop_processes(stem: &str) -> Result<()> {
    for ns in lab_netns(stem)? {
        kill_pids_in(&ns)?;
    }
    Ok(())
}

fn lab_netns(stem: &str) -> Result<Vec<String>> {
    let prefix = format!("havip-{stem}-");
    Ok(list_netns()?.into_iter().filter(|n| n.starts_with(&prefix)).collect())
}

/// Removes the labs whose owning process is dead. Live labs, and labs with no
/// owner pid in their name, are left alone.
pub fn sweep_stale() -> Result<()> {
    let mut stems: Vec<String> = list_netns()?.iter().filter_map(|n| netns_stem(n)).collect();
    for (dir, prefix) in [(BPFFS, "havip-"), (RUN_DIR, "")] {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = PURPOSES.iter().find_map(|p| name.strip_prefix(&format!("{prefix}{p}-")));
            // A role's pin dir (`<stem>-hv2`) belongs to its lab's stem.
            stems.extend(stem.map(|s| owned_stem(s).unwrap_or_else(|| s.to_owned())));
        }
    }
    stems.sort();
    stems.dedup();
    for stem in stems {
        let owner = stem.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = owner {
            if !alive(pid) {
                eprintln!("havip-lab: removing stale lab {stem} (pid {pid} is gone)");
                remove_lab(&stem).with_context(|| format!("removing stale lab {stem}"))?;
            }
        }
    }
    Ok(())
}

/// The owned stem (`<pid>-<tag>`) of namespace `havip-<pid>-<tag>-<role>`;
/// the role may hold dashes (`vm-a`). None for a name with no owner pid.
fn netns_stem(name: &str) -> Option<String> {
    let rest = name.strip_prefix("havip-")?;
    // A namespace always has a role after its stem.
    rest.splitn(3, '-').nth(2)?;
    owned_stem(rest)
}

/// `<pid>-<tag>` from `<pid>-<tag>[-<role>]`; None without an owner pid.
fn owned_stem(name: &str) -> Option<String> {
    let mut parts = name.splitn(3, '-');
    let (pid, tag) = (parts.next()?, parts.next()?);
    pid.parse::<u32>().ok()?;
    Some(format!("{pid}-{tag}"))
}

/// Whether `pid` runs: a zombie (killed, not yet reaped) does not.
fn alive(pid: u32) -> bool {
    // The state follows the parenthesised command name, which may hold spaces.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn list_netns() -> Result<Vec<String>> {
    let Ok(entries) = fs::read_dir("/run/netns") else { return Ok(Vec::new()) };
    Ok(entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
}

/// SIGTERM, then SIGKILL, every process in `ns`.
fn kill_pids_in(ns: &str) -> Result<()> {
    let pids = || -> Result<Vec<i32>> {
        let listed = match cmd::ip(&["netns", "pids", ns]) {
            Ok(out) => out,
            // Deleted meanwhile (a concurrent sweep): nothing left to stop.
            Err(_) if !netns_path(ns).exists() => String::new(),
            Err(e) => return Err(e),
        };
        Ok(listed.split_whitespace().filter_map(|p| p.parse().ok()).collect())
    };
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let found = pids()?;
        if found.is_empty() {
            return Ok(());
        }
        for pid in &found {
            // SAFETY: plain kill(2); a pid that just exited gives ESRCH, which is fine.
            unsafe { libc::kill(*pid, sig) };
        }
        let gone =
            crate::wait::cleanup_until(&format!("processes in {ns} to exit"), Duration::from_secs(3), || {
                Ok(pids()?.is_empty().then_some(()))
            });
        if gone.is_ok() {
            return Ok(());
        }
    }
    bail!("processes in {ns} survived SIGKILL: {:?}", pids()?)
}

/// Writes `value` to `/proc/sys/net/<key>` (e.g. `ipv4/conf/eth0/arp_notify`)
/// in namespace `ns`.
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let (path, value) = (Path::new("/proc/sys/net").join(key), value.to_owned());
    run_in(ns, move || fs::write(&path, value).with_context(|| format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_carry_the_owner() {
        let id = LabId::unique("test");
        let pid = std::process::id();
        assert!(id.stem.starts_with(&format!("{pid}-")));
        assert_eq!(id.netns("hv"), format!("havip-{}-hv", id.stem));
        assert_eq!(id.pin_dir(), Path::new(BPFFS).join(format!("havip-test-{}", id.stem)));
        assert_ne!(LabId::unique("test").stem, id.stem);
        assert!(alive(pid));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn the_sweeper_reads_the_stem_of_every_role() {
        let id = LabId::unique("test");
        for role in ["hv", "inet", "vm-a", "xt"] {
            assert_eq!(netns_stem(&id.netns(role)).as_deref(), Some(id.stem.as_str()), "{role}");
        }
        let fixed = LabId::fixed("lab", "up");
        assert_eq!(netns_stem(&fixed.netns("vm-a")), None, "no owner, never swept");
        assert_eq!(netns_stem("other-1-2-3"), None);
        assert_eq!(netns_stem(&format!("havip-{}", id.stem)), None, "a namespace has a role");
        let pins = id.pin_dir_of("hv2");
        let name = pins.file_name().unwrap().to_string_lossy().into_owned();
        let stem = name.strip_prefix("havip-test-").unwrap();
        assert_eq!(owned_stem(stem).as_deref(), Some(id.stem.as_str()), "a role's pin dir is its lab's");
    }
}
