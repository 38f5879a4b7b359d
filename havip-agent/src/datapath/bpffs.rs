//! Makes sure the pin directory is on a BPF filesystem, mounting the
//! conventional one at /sys/fs/bpf when a host has not.

use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use anyhow::{bail, Context, Result};
use tracing::info;

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
