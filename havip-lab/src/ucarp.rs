//! Real ucarp (the Debian package, CARP over multicast to 224.0.0.18; it
//! has no unicast mode) in a guest namespace. ucarp elects; its up script
//! puts the VIP on eth0, its down script takes it off, and ucarp itself
//! sends the gratuitous ARP on becoming master (and again when a less
//! preferred master shows up), which is the claim havip follows.
//!
//! Unlike keepalived it says no goodbye when stopped: the backup takes over
//! after `3 × advbase + advskew/256` seconds of silence (ucarp's dead ratio 3).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{
    log::Timeline,
    process::ChildProc,
    topology::{Guest, GUEST_IF, VIP, VM_A, VM_B},
};

/// The lab's CARP virtual host id (its own, not keepalived's VRID).
pub const VHID: u8 = 51;
/// The CARP password both members share (ucarp requires one).
const PASS: &str = "havip-lab";
/// The VIP's prefix on eth0, as keepalived puts it.
const VIP_PREFIX: u8 = 24;

/// How ucarp runs in one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `--vhid`.
    pub vhid: u8,
    /// `--advbase`: seconds between adverts (ucarp's minimum is 1).
    pub advbase_s: u32,
    /// `--advskew`: the lower, the more preferred (0-255).
    pub advskew: u8,
    /// `--preempt`: take the VIP back from a less preferred master.
    pub preempt: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { vhid: VHID, advbase_s: 1, advskew: 0, preempt: true }
    }
}

impl Options {
    /// How long the backup waits after the master's last advert: ucarp's
    /// dead ratio (3) times the master's advert interval, its skew included.
    pub fn master_down(&self) -> Duration {
        Duration::from_secs_f64(3.0 * (f64::from(self.advbase_s) + f64::from(self.advskew) / 256.0))
    }
}

/// The lab's pair: vm-a preferred (skew 0), vm-b less (skew 100), both
/// preempting, one second between adverts.
pub const MEMBERS: [(Guest, Options); 2] = [
    (VM_A, Options { vhid: VHID, advbase_s: 1, advskew: 0, preempt: true }),
    (VM_B, Options { vhid: VHID, advbase_s: 1, advskew: 100, preempt: true }),
];

/// ucarp in one guest; stopped (SIGTERM: its down script runs, the VIP
/// goes) when the handle drops.
pub struct Ucarp {
    guest: Guest,
    ns: String,
    opts: Options,
    dir: PathBuf,
    timeline: Option<Timeline>,
    proc: Option<ChildProc>,
}

impl Ucarp {
    /// Writes the up and down scripts into `dir` and starts ucarp for
    /// `guest` in namespace `ns`; its output goes to
    /// `dir/ucarp-<guest>.log` (and into `timeline` when attached).
    pub fn start(
        dir: &Path,
        ns: &str,
        guest: Guest,
        opts: Options,
        timeline: Option<&Timeline>,
    ) -> Result<Self> {
        write_scripts(dir)?;
        let mut u = Self {
            guest,
            ns: ns.to_owned(),
            opts,
            dir: dir.to_owned(),
            timeline: timeline.cloned(),
            proc: None,
        };
        u.launch()?;
        Ok(u)
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "ucarp"]).args(args(self.guest, self.opts, &self.dir));
        let name = format!("ucarp {}", self.guest.name);
        let log = self.dir.join(format!("ucarp-{}.log", self.guest.name));
        self.proc = Some(ChildProc::spawn(&name, cmd, &log, self.timeline.as_ref())?);
        Ok(())
    }

    /// SIGTERM: ucarp runs its down script (the VIP leaves eth0) and exits,
    /// with no goodbye advert.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }

    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    pub fn options(&self) -> Options {
        self.opts
    }

    /// Leaves ucarp running when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.proc.iter_mut().for_each(ChildProc::keep);
    }
}

/// ucarp in both members ([`MEMBERS`]), `ns_of(g)` being `g`'s namespace,
/// scripts and logs in `dir`; each start is a step on `timeline`, which an
/// `attached` lab's ucarp also logs into.
pub fn start_members(
    dir: &Path,
    ns_of: impl Fn(Guest) -> String,
    timeline: &Timeline,
    attached: bool,
) -> Result<Vec<Ucarp>> {
    let mut started = Vec::new();
    for (g, opts) in MEMBERS {
        timeline
            .step(&format!("starting ucarp in {} (vhid {}, advskew {})", g.name, opts.vhid, opts.advskew));
        started.push(Ucarp::start(dir, &ns_of(g), g, opts, attached.then_some(timeline))?);
    }
    Ok(started)
}

/// ucarp's command line for `guest`.
fn args(guest: Guest, opts: Options, dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "--interface",
        GUEST_IF,
        "--srcip",
        &guest.ip.to_string(),
        "--vhid",
        &opts.vhid.to_string(),
        "--pass",
        PASS,
        "--addr",
        &VIP.to_string(),
        "--advbase",
        &opts.advbase_s.to_string(),
        "--advskew",
        &opts.advskew.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    if opts.preempt {
        a.push("--preempt".into());
    }
    // Run the down script at exit, so a stopped ucarp leaves no VIP behind.
    a.push("--shutdown".into());
    for (flag, script) in [("--upscript", UP), ("--downscript", DOWN)] {
        a.push(flag.into());
        a.push(dir.join(script).display().to_string());
    }
    a
}

const UP: &str = "ucarp-up.sh";
const DOWN: &str = "ucarp-down.sh";

/// The scripts ucarp runs as `<script> <interface> <VIP>`.
fn write_scripts(dir: &Path) -> Result<()> {
    let up = format!("#!/bin/sh\n# ucarp: master. $1 the interface, $2 the VIP.\nexec ip addr replace \"$2/{VIP_PREFIX}\" dev \"$1\"\n");
    let down = format!(
        "#!/bin/sh\n# ucarp: backup (or exiting). $1 the interface, $2 the VIP.\nip addr del \"$2/{VIP_PREFIX}\" dev \"$1\" 2>/dev/null\nexit 0\n"
    );
    for (name, text) in [(UP, up), (DOWN, down)] {
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_the_lab_s() {
        let a = args(VM_A, MEMBERS[0].1, Path::new("/l"));
        let line = a.join(" ");
        assert!(line.starts_with(
            "--interface eth0 --srcip 198.18.1.11 --vhid 51 --pass havip-lab --addr 198.18.1.50"
        ));
        assert!(line.contains("--advbase 1 --advskew 0 --preempt --shutdown"));
        assert!(line.ends_with("--upscript /l/ucarp-up.sh --downscript /l/ucarp-down.sh"));
        let b = args(VM_B, Options { preempt: false, ..MEMBERS[1].1 }, Path::new("/l")).join(" ");
        assert!(b.contains("--advskew 100 --shutdown") && !b.contains("--preempt"));
    }

    #[test]
    fn the_backup_waits_three_adverts_of_the_master() {
        assert_eq!(MEMBERS[0].1.master_down(), Duration::from_secs(3));
        assert!(MEMBERS[1].1.master_down() > MEMBERS[0].1.master_down());
        assert!(MEMBERS[0].1.advskew < MEMBERS[1].1.advskew, "vm-a must be the preferred master");
    }
}
