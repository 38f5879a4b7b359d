//! The lab's shared timeline: every line any lab process prints, plus the
//! lab's own steps, stamped with the time since the lab started.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

#[derive(Clone, Debug)]
pub struct Line {
    pub at: Duration,
    /// Who said it: "lab", "agent", "keepalived vm-a", ...
    pub source: String,
    pub text: String,
}

/// Cheap to clone; all clones share one timeline and one clock.
#[derive(Clone)]
pub struct Timeline {
    start: Instant,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl Timeline {
    pub fn new() -> Self {
        Self { start: Instant::now(), lines: Arc::default() }
    }

    /// Time since the lab started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.start)
    }

    pub fn push(&self, source: &str, text: &str) {
        let line = Line { at: self.now(), source: source.to_owned(), text: text.to_owned() };
        lock(&self.lines).push(line);
    }

    /// A lab step, shown in the timeline and as progress on stderr.
    pub fn step(&self, text: &str) {
        eprintln!("[{:>8.3}s] {text}", self.now().as_secs_f64());
        self.push("lab", text);
    }

    pub fn lines(&self) -> Vec<Line> {
        lock(&self.lines).clone()
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks `m`, carrying on after a panic elsewhere poisoned it: a timeline or
/// log line is whole once pushed, and the lab must still clean up.
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
