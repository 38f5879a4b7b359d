//! havip-agent: loads the XDP data plane, keeps the operator's desired state
//! in a durable store, reconciles it into the maps, serves the API, and
//! reports who holds each VIP.

pub mod api;
pub mod bpffs;
pub mod config;
pub mod dataplane;
pub mod events;
pub mod feed;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod notify;
pub mod observe;
pub mod reconcile;
pub mod reconciler;
pub mod rules;
pub mod run;
pub mod store;
pub mod uplink;
pub mod verbs;
pub mod vethpeer;
