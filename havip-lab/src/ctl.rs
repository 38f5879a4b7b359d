//! `havipctl` against a lab's agent: run a verb, expect it to pass or to be
//! refused, read its `--json` answers as any serde type (the agent's own
//! view types in the integration tests, `serde_json::Value` in the lab).

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{bail, ensure, Context, Result};
use serde::de::DeserializeOwned;

use crate::agent;

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
