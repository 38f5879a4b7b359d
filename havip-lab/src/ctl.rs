//! `havipctl` against a lab's agent: run a verb, expect it to pass or to be
//! refused, read its `--json` answers as any serde type (the agent's own
//! view types in the integration tests, `serde_json::Value` in the lab).

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{bail, ensure, Context, Result};
use serde::de::DeserializeOwned;

use crate::{agent, topology::SubnetMode};

/// `havipctl` (built next to `havip-agent`) aimed at one agent's API socket.
#[derive(Clone, Debug)]
pub struct Ctl {
    bin: PathBuf,
    socket: PathBuf,
}

impl Ctl {
    /// `havipctl` aimed at the agent serving `socket`.
    pub fn at(socket: PathBuf) -> Result<Self> {
        let bin = agent::locate_binary()?.with_file_name("havipctl");
        ensure!(bin.is_file(), "{} not found: run `cargo build --workspace --bins` first", bin.display());
        Ok(Self { bin, socket })
    }

    /// Runs `havipctl ARGS`, whatever its outcome.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.output().with_context(|| format!("running {cmd:?}"))
    }

    /// Runs a verb that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            // With --json the error is a JSON line on stdout.
            let (stderr, stdout) =
                (String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
            let said = if stderr.trim().is_empty() { stdout.trim() } else { stderr.trim() };
            bail!("havipctl {args:?} failed ({}): {said}", out.status);
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Runs a verb that must be refused; returns the error line.
    pub fn refused(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ensure!(
            !out.status.success(),
            "havipctl {args:?} was accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8(out.stderr)?.trim().to_owned())
    }

    /// Runs a verb with `--json` that must succeed; its answer as a `T`.
    pub fn json<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let text = self.ok(&[&["--json"], args].concat())?;
        serde_json::from_str(&text).with_context(|| format!("reading the JSON of havipctl {args:?}"))
    }
}

/// Counter `name` (`flooded`, `local_copies`, `remote_copies`,
/// `storm_drops`, `received`, `local_only`, `too_big`) of the `broadcast`
/// section of `havipctl --json subnet describe` (issue 11); 0 while the
/// subnet shows none (unicast, or nothing counted on this host yet).
pub fn broadcast_counter(view: &serde_json::Value, name: &str) -> Result<u64> {
    match &view["broadcast"] {
        serde_json::Value::Null => Ok(0),
        b => b[name]
            .as_u64()
            .with_context(|| format!("no counter {name} in the subnet's broadcast section: {b}")),
    }
}

/// Whether `subnet describe` (on one host) shows `mode` in force: the mode
/// recorded, and this host's data plane replicating (`broadcast.programmed`)
/// exactly when the mode is broadcast-domain.
pub fn subnet_in_force(view: &serde_json::Value, mode: SubnetMode) -> Result<bool> {
    let programmed = view["broadcast"]["programmed"].as_bool() == Some(true);
    Ok(subnet_mode(view)? == mode.as_str() && programmed == (mode == SubnetMode::BroadcastDomain))
}

/// The subnet's mode as `subnet describe` shows it.
pub fn subnet_mode(view: &serde_json::Value) -> Result<&str> {
    view["mode"].as_str().with_context(|| format!("subnet describe shows no mode: {view}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_counters_are_read_from_the_subnet_view() {
        let v =
            serde_json::json!({"mode": "broadcast-domain", "broadcast": {"flooded": 7, "storm_drops": 2}});
        assert_eq!(broadcast_counter(&v, "flooded").unwrap(), 7);
        assert!(broadcast_counter(&v, "received").is_err());
        assert_eq!(subnet_mode(&v).unwrap(), "broadcast-domain");
        assert_eq!(broadcast_counter(&serde_json::json!({"mode": "unicast"}), "flooded").unwrap(), 0);
        assert!(!subnet_in_force(&v, SubnetMode::BroadcastDomain).unwrap(), "not programmed yet");
        let on = serde_json::json!({"mode": "broadcast-domain", "broadcast": {"programmed": true}});
        assert!(subnet_in_force(&on, SubnetMode::BroadcastDomain).unwrap());
        assert!(subnet_in_force(&serde_json::json!({"mode": "unicast"}), SubnetMode::Unicast).unwrap());
    }
}
