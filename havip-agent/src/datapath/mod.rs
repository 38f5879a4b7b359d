//! The data path's user side: everything that touches the XDP programs and
//! their maps, and nothing above them (no store, no API).
//!
//! - [`loader`]: load the embedded object, reuse or create the pinned maps
//!   (checked against this build), attach through pinned links, teardown.
//! - [`maps`]: the maps behind one trait, [`maps::Maps`]; [`fake`]: the same
//!   in memory, for replay tests.
//! - [`plan`]: what the maps should hold -> the operations that get them there.
//! - [`ringbuf`]: the kernel's claim events, as they happen.
//! - [`bpffs`]: the bpffs mount the pins live on.

pub mod bpffs;
pub mod fake;
pub mod loader;
pub mod maps;
pub mod plan;
pub mod ringbuf;
