//! Makes sure the pin directory is on a BPF filesystem, mounting the
//! conventional one at /sys/fs/bpf when a host has not; and proves that one
//! process owns a pin directory ([`PinLock`]) before anything may change it.

use std::{
    ffi::CString,
    fs::File,
    os::{
        fd::AsRawFd,
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::Path,
    sync::{Arc, Mutex, Weak},
};

use anyhow::{bail, Context, Result};
use tracing::info;

use crate::sync::lock;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes()).context("path has a NUL byte")?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statfs {}", path.display()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The nearest existing ancestor of `path` (itself included).
fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"))
}

/// Makes sure `pin_root` is on a BPF filesystem, mounting bpffs at /sys/fs/bpf
/// if the pin root lies under it and nothing is mounted there yet.
///
/// # Errors
/// `statfs` failing on the nearest existing ancestor, a pin root outside
/// /sys/fs/bpf that is not on bpffs, or mount(2) failing (needs CAP_SYS_ADMIN).
pub fn ensure_mounted(pin_root: &Path) -> Result<()> {
    if is_bpffs(existing_ancestor(pin_root))? {
        return Ok(());
    }
    if !pin_root.starts_with(DEFAULT_BPFFS) {
        bail!(
            "pin directory {} is not on a BPF filesystem (mount bpffs there, or pin under {DEFAULT_BPFFS})",
            pin_root.display()
        );
    }
    info!("mounting bpffs at {DEFAULT_BPFFS}");
    let target = CString::new(DEFAULT_BPFFS).expect("no NUL");
    let fstype = CString::new("bpf").expect("no NUL");
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("mounting bpffs at /sys/fs/bpf");
    }
    Ok(())
}

/// An exclusive `flock(2)` on the pin root directory itself, held while the
/// value (or a clone) lives: the proof that this process owns the data
/// plane pinned there. bpffs holds no regular files, but flock works on its
/// directories; the lock goes with the process, so a crash never leaves a
/// stale one. One lock covers every ABI version under the root (they would
/// attach to the same interfaces).
///
/// Within one process the lock is shared: acquiring it again (the agent,
/// then its data plane) returns the same lock.
#[derive(Clone, Debug)]
pub struct PinLock {
    _held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    /// The open directory: closing it releases the lock.
    _dir: File,
    key: DirKey,
}

/// A directory by (device, inode).
type DirKey = (u64, u64);

/// Locks this process holds, by directory.
static HELD: Mutex<Vec<(DirKey, Weak<Held>)>> = Mutex::new(Vec::new());

impl PinLock {
    /// Takes the lock on `pin_root` (mounting bpffs and creating the
    /// directory if needed), or says which process holds it.
    ///
    /// # Errors
    /// Another process holds it: "another havip-agent (pid N) owns DIR".
    pub fn acquire(pin_root: &Path) -> Result<Self> {
        ensure_mounted(pin_root)?;
        std::fs::create_dir_all(pin_root)
            .with_context(|| format!("creating pin directory {}", pin_root.display()))?;
        let dir = File::open(pin_root).with_context(|| format!("opening {}", pin_root.display()))?;
        let meta = dir.metadata()?;
        let key = (meta.dev(), meta.ino());
        let mut held = lock(&HELD);
        held.retain(|(_, w)| w.strong_count() > 0);
        if let Some(mine) = held.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
            return Ok(Self { _held: mine });
        }
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("locking {}", pin_root.display()));
            }
            let who = owner(key).map_or_else(|| "another process".to_owned(), |p| format!("pid {p}"));
            bail!(
                "another havip-agent ({who}) owns {}: it runs this host's data plane. Stop it first \
                 (two agents would undo each other's maps and links)",
                pin_root.display()
            );
        }
        let held_lock = Arc::new(Held { _dir: dir, key });
        held.push((key, Arc::downgrade(&held_lock)));
        Ok(Self { _held: held_lock })
    }

    /// The holder of the lock on `pin_root`, if another process holds it
    /// (without taking it).
    pub fn holder(pin_root: &Path) -> Option<u32> {
        let meta = std::fs::metadata(pin_root).ok()?;
        owner((meta.dev(), meta.ino()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        lock(&HELD).retain(|(k, w)| *k != self.key || w.strong_count() > 0);
    }
}

/// The pid holding a flock on (device, inode), from /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 1234 00:27:330101 0 EOF`).
fn owner((dev, ino): DirKey) -> Option<u32> {
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str())).then(|| f.get(4)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_directory_has_one_owner_process() {
        // Any filesystem will do for flock; bpffs is tested by the agent's integration test.
        let dir = std::env::temp_dir().join(format!("havip-pinlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = {
            let m = std::fs::metadata(&dir).unwrap();
            (m.dev(), m.ino())
        };
        // Another open file description: as another process would.
        let other = File::open(&dir).unwrap();
        assert_eq!(unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        // /proc/locks is read while other tests take and drop locks: look
        // again for a moment before calling the holder missing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut found = owner(key);
        while found.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = owner(key);
        }
        assert_eq!(found, Some(std::process::id()), "the holder is found in /proc/locks");
        drop(other);
        assert_eq!(owner(key), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
