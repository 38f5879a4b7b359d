//! A child process of the lab (keepalived, the agent): its output goes to a
//! log file and, when attached, line by line into the lab's timeline; it is
//! stopped with SIGTERM (then SIGKILL) and never outlives its handle unless
//! told to (`lab up`).

use std::{
    fs::{self, OpenOptions},
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{log::Timeline, wait};

pub struct ChildProc {
    name: String,
    child: Child,
    log_path: PathBuf,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    armed: bool,
}

impl ChildProc {
    /// Starts `cmd`. With a timeline the child is attached: its output is
    /// stamped into the timeline and the log, and it gets SIGTERM if the lab
    /// dies. Without one it is detached: own session, output straight to the log.
    pub fn spawn(name: &str, mut cmd: Command, log_path: &Path, timeline: Option<&Timeline>) -> Result<Self> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        cmd.stdin(Stdio::null());
        if timeline.is_some() {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            // SAFETY: prctl is async-signal-safe. The signal fires when the
            // spawning thread dies, which lives as long as the lab does.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        } else {
            cmd.stdout(log.try_clone()?).stderr(log.try_clone()?);
            // SAFETY: setsid is async-signal-safe; it keeps Ctrl-C in the creator's
            // terminal from reaching a lab that is meant to stay up.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        let mut readers = Vec::new();
        if let Some(timeline) = timeline {
            let log = Arc::new(Mutex::new(log));
            let out: Box<dyn Read + Send> = Box::new(child.stdout.take().context("child stdout")?);
            let err: Box<dyn Read + Send> = Box::new(child.stderr.take().context("child stderr")?);
            for stream in [out, err] {
                let (name, timeline, log) = (name.to_owned(), timeline.clone(), log.clone());
                readers.push(thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        let at = timeline.now();
                        timeline.push(&name, &line);
                        let mut log = crate::log::lock(&log);
                        // The log is for people debugging; losing a line is not worth failing over.
                        let _ = writeln!(log, "[{:>8.3}s] {line}", at.as_secs_f64());
                    }
                }));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
            readers,
            status: None,
            armed: true,
        })
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().with_context(|| format!("checking on {}", self.name))?;
        }
        Ok(self.status)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns how it exited.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if self.exited()?.is_none() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let what = format!("{} to exit after SIGTERM", self.name);
            if wait::cleanup_until(&what, grace, || self.exited()).is_err() {
                eprintln!("havip-lab: {} ignored SIGTERM for {grace:?}: killing it", self.name);
                self.child.kill().with_context(|| format!("killing {}", self.name))?;
            }
        }
        self.reap()
    }

    /// SIGKILL: a crash, as far as the process can tell. Returns how it exited.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if self.exited()?.is_none() {
            self.child.kill().with_context(|| format!("killing {}", self.name))?;
        }
        self.reap()
    }

    fn reap(&mut self) -> Result<ExitStatus> {
        let status = self.child.wait().with_context(|| format!("waiting for {}", self.name))?;
        self.status = Some(status);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Ok(status)
    }

    /// The last `n` lines of its log: for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Leaves the process running when this handle goes (`lab up`).
    pub fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.stop(Duration::from_secs(3)) {
                eprintln!("havip-lab: cleanup: {e:#}");
            }
        }
    }
}
