//! havip-agent: loads the XDP data plane, keeps the operator's desired state
//! in a durable store, reconciles it into the maps, serves the API, and
//! reports who holds each VIP.
//!
//! Layers, each importing only the ones listed before it (checked by
//! `cargo xtask test`; see `docs/architecture.md`):
//!
//! - [`sync`], [`clock`]: a shared lock helper, the kernel's clock.
//! - [`store`]: desired and observed state (redb; the `Store` trait).
//! - [`datapath`]: the XDP object, its pins and links, its maps behind a
//!   trait, the plan from desired maps to operations, the claim events.
//! - [`host`]: this host's links, uplink, veth peers and namespace.
//! - [`control`]: the reconciler, the observer, the operator's event feed.
//! - [`northbound`]: the HTTP API and Prometheus metrics.
//! - [`daemon`]: configuration and the run that wires it all.
//!
//! Below the agent: `havip-model` (objects, rules, operations), `havip-api`
//! (views, events, client), `havip-common` (the kernel ABI) and `havip-ebpf`
//! (the programs).

#![warn(missing_docs)]

pub mod sync;

pub mod clock;

pub mod store;

pub mod datapath;

pub mod host;

pub mod control;

pub mod northbound;

pub mod daemon;
