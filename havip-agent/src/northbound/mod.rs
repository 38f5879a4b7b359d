//! What the operator talks to: the HTTP/JSON API on a Unix socket ([`api`],
//! the views of `havip-api`) and Prometheus `/metrics` ([`metrics`]).

pub mod api;
pub mod metrics;
