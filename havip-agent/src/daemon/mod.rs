//! The agent as a process: its configuration file ([`config`]), the run that
//! wires every layer together ([`run`]), and systemd's readiness protocol
//! ([`notify`]).

pub mod config;
pub mod notify;
pub mod run;
