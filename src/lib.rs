//! pith-agent: the agent that runs containers inside a VM for a host runtime,
//! over the Kata Containers agent protocol (ttrpc on vsock).
//!
//! The library holds everything the `pith-agent` and `pithctl` binaries share.

pub mod addr;
pub mod client;
pub mod config;
pub mod device;
pub mod guest;
pub mod init;
pub mod logging;
#[cfg(feature = "net")]
pub mod net;
pub mod oci_convert;
pub mod reaper;
pub mod rpc;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod storage;

/// Version of this agent build.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
