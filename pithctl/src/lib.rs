//! The host side of pith: connecting to an agent over `unix://`, `vsock://` and
//! hybrid vsock, for the `pithctl` command, the tests and the benchmarks. This
//! crate is never linked into the agent.

pub mod client;
pub mod upgrade;

/// Version of this build of the host tools (sent as the host's version in `Hello`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
