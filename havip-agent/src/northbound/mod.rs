//! What the operator talks to: the HTTP/JSON API on a Unix socket ([`api`],
//! the views of `havip-api`) and Prometheus `/metrics` ([`metrics`]), each
//! served by [`serve`] with its own limits.

pub mod api;
pub mod metrics;
pub mod serve;
