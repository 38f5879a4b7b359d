//! havip-agent: loads the XDP data plane, reconciles the configured HAVIPs
//! into its maps, and reports who holds each VIP.

pub mod bpffs;
pub mod config;
pub mod dataplane;
pub mod events;
pub mod netns;
pub mod notify;
pub mod reconcile;
pub mod run;
pub mod uplink;
