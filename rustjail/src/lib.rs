//! rustjail: turns an OCI runtime spec into a running container.
//!
//! Built piece by piece under the issue "rustjail: OCI containers with namespaces
//! and cgroups"; each module below is usable and tested on its own.

pub mod cgroups;
pub mod container;
pub mod devices;
pub mod error;
pub mod exec_fifo;
pub mod features;
pub mod hooks;
pub mod init;
pub mod labels;
pub mod paths;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod state;
pub mod sync;

pub use container::{CreateOptions, ExecOptions, Runtime};
pub use error::{Error, Result};
pub use state::{State, Status};
