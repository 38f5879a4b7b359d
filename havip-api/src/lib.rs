//! havip's operator API as both ends see it: the agent serves it
//! (`havip-agent`'s `northbound::api`), `havipctl` calls it. One definition
//! of every JSON document, so the two cannot drift apart.
//!
//! - [`view`]: what each endpoint answers with, and what the agent's event
//!   feed says ([`Event`]).
//! - [`client`]: HTTP/1.1 over the agent's Unix socket, with typed errors
//!   ([`ClientError`]: a refusal keeps its rule).
//!
//! The endpoints are listed in the README ("The API").

#![warn(missing_docs)]

pub mod client;
pub mod view;

pub use client::{Body, Client, ClientError};
pub use view::{Event, EventKind};

/// Where the agent serves the API unless `[agent] api_socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/havip/api.sock";
