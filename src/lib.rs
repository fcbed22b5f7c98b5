//! pith-agent: the agent that runs containers inside a VM for a host runtime,
//! over the Kata Containers agent protocol (ttrpc on vsock).
//!
//! The library is the agent; `main.rs` only calls [`main`] (and, in the static
//! build, makes [`allocator::Global`] the allocator). Host tools live in
//! the `pithctl` crate and are never linked in. Modules are private to the
//! crate: what the whole-agent tests need is re-exported below, on purpose.
//!
//! Layout: `server/` (framing, dispatch, listeners) -> `rpc/` (adapters, the
//! one error-to-status map, call logging) -> `sandbox/` (the one owner of
//! state, over a container engine seam) -> rustjail; beside them `device/`
//! (uevents, waiting for block devices, device nodes), `storage/`, `guest/`,
//! `init/` (PID 1 duties), `config/`, `logging.rs`, `reaper.rs`.

pub mod allocator;
mod config;
mod context;
mod daemon;
mod device;
mod error;
mod guest;
mod init;
mod keeper;
mod logging;
#[cfg(feature = "net")]
mod net;
mod persist;
mod reaper;
mod rpc;
mod sandbox;
mod server;
mod storage;
mod tool;
mod upgrade;

pub use daemon::main;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

/// Version of this agent build. The `next-build` feature makes the build
/// the upgrade tests use as "the next release" (a version and a persist
/// version above this source's).
#[cfg(not(feature = "next-build"))]
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Version of this agent build (as the next release).
#[cfg(feature = "next-build")]
pub const AGENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+next");

/// The storage drivers this agent has, as GetGuestDetails lists them.
pub const STORAGE_DRIVERS: &[&str] = storage::DRIVERS;

/// The device kinds CreateContainer's `devices` may name, as GetGuestDetails lists them.
pub const DEVICE_HANDLERS: &[&str] = guest::details::DEVICE_HANDLERS;
