//! The havip lab: network namespaces wired like an SDN host (docs/architecture.md),
//! real keepalived in the guests, the agent in the host namespace, and the
//! probes that show where traffic to the VIP goes.
//!
//! Everything a lab creates is owned by an RAII handle, so it disappears on
//! every exit path, panics included; what a killed process left behind is
//! swept by [`netns::sweep_stale`] when the next lab starts.

pub mod agent;
pub mod arping;
pub mod cmd;
pub mod ctl;
pub mod etcd;
pub mod fabric;
pub mod fault;
pub mod flood;
pub mod frames;
pub mod garp;
pub mod interrupt;
pub mod keepalived;
pub mod log;
pub mod multihost;
pub mod netns;
pub mod probe;
pub mod process;
pub mod report;
pub mod scenario;
pub mod state;
pub mod topology;
pub mod ucarp;
pub mod wait;
pub mod web;
