//! Shared-state helpers used at every layer.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`. A panic while it was held poisons it; the data behind it is
/// still whole (every holder writes it in one step), so carry on with it
/// rather than take the agent down with the panicking task.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
