//! rustjail: turns an OCI runtime spec into a running container.
//!
//! The library takes the spec in memory and owned descriptors, and hands back
//! a [`Container`] that the caller keeps: nothing is read back from disk (the
//! `rustjail` command line, a new process for every call, saves it in its
//! state directory). Every process it starts, including helpers that work
//! inside a running container, is the caller's binary in a mode listed once
//! ([`helper`]).

pub mod cgroups;
pub mod container;
pub mod devices;
pub mod error;
pub mod exec_fifo;
pub mod features;
pub mod helper;
pub mod hooks;
pub mod init;
pub mod labels;
pub mod open;
mod overlap;
pub use overlap::one_cpu;
pub mod paths;
pub mod pseudo_file;
pub mod removing;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod spec_wire;
pub mod state;
pub mod sync;

pub use container::{CreateOptions, Created, ExecOptions, Runtime, Spawned};
pub use error::{Error, Result};
pub use state::{Container, Status};
