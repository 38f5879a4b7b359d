//! havip's model: what an operator declares and what havip observes, the
//! product's rules, and the operations that change the declared state.
//!
//! Pure on purpose — no I/O, no tokio, no aya — so the agent, the API and
//! `havipctl` share one definition, and every rule is testable in
//! microseconds. The layers above: `havip-api` (views and client),
//! `havipctl`, `havip-agent` (store, data path, host, control, northbound,
//! daemon); see `docs/architecture.md`.
//!
//! - [`state`]: subnets (each unicast or a broadcast domain, [`SubnetSettings`]),
//!   hosts, vNICs, HAVIPs ([`DesiredState`]) and what was observed of each
//!   HAVIP ([`Observed`], its [`Holder`]).
//! - [`rules`]: every rule a desired state must keep; a [`Refusal`] names the
//!   rule it breaks.
//! - [`ops`]: the operator's operations as edits of a desired state, and
//!   the declarative file ([`DesiredFile`]).

#![warn(missing_docs)]

pub mod ops;
pub mod refusal;
pub mod rules;
pub mod state;

pub use ops::DesiredFile;
pub use rules::{Capacity, Limits, Refusal, Rule};
pub use state::{
    Claim, DesiredState, Havip, HavipSettings, Holder, Host, MacAddr, Observed, SplitBrainPolicy,
    StormControl, Subnet, SubnetMode, SubnetSettings, Vnic,
};
