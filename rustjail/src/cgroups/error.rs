//! Errors of the cgroups module: every one names the operation and the path or value it was about.

use std::io;
use std::path::PathBuf;

/// Result type of the cgroups module.
pub type Result<T> = std::result::Result<T, Error>;

/// Describes an OS error without the "(os error N)" suffix, e.g. "Device or resource busy".
pub(crate) fn os_msg(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// Everything that can go wrong while managing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation (`open`, `read`, `write`, `mkdir`, `rmdir`, ...) failed on a path.
    #[error("{op} {}: {}", path.display(), os_msg(source))]
    Io {
        /// The operation, e.g. "write".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A syscall that is not about a single path failed (`bpf`, `eventfd`, ...).
    #[error("{syscall}({what}): {}", os_msg(source))]
    Sys {
        /// The syscall and command, e.g. "bpf(BPF_PROG_ATTACH)".
        syscall: &'static str,
        /// What it was about (a path, an id).
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A cgroup file had content we could not understand.
    #[error("parse {}: {msg}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        msg: String,
    },
    /// The container's cgroups path is unusable.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// A resource value is out of range or malformed.
    #[error("invalid {resource} value {value:?}: {reason}")]
    InvalidValue {
        /// The OCI resource, e.g. "memory.limit".
        resource: String,
        /// The offending value.
        value: String,
        /// The accepted range or format.
        reason: String,
    },
    /// A resource needs a controller that is not mounted (v1) or not enabled (v2).
    #[error("cannot set {resource}: the {controller} controller is not available ({detail})")]
    MissingController {
        /// The OCI resource.
        resource: String,
        /// The cgroup controller, e.g. "hugetlb".
        controller: String,
        /// Where it was looked for.
        detail: String,
    },
    /// The request cannot be honoured on this cgroup version.
    #[error("{what} is not supported on cgroup {version}")]
    Unsupported {
        /// The feature or resource.
        what: String,
        /// "v1" or "v2".
        version: &'static str,
    },
    /// No usable cgroup filesystem was found.
    #[error("no cgroup filesystem is mounted (read {})", path.display())]
    NoCgroupMounts {
        /// The mountinfo file read.
        path: PathBuf,
    },
    /// A device cgroup rule list cannot be represented safely.
    #[error("device cgroup rule {rule}: {reason}")]
    DeviceRule {
        /// The rule, in devices.allow syntax.
        rule: String,
        /// Why it is refused.
        reason: String,
    },
    /// The kernel verifier refused the device BPF program.
    #[error(
        "bpf(BPF_PROG_LOAD) of device filter for {what}: {}; verifier log: {log}",
        os_msg(source)
    )]
    BpfLoad {
        /// The cgroup.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
        /// The verifier log (may be empty).
        log: String,
    },
    /// Waiting for a cgroup file to reach a state timed out.
    #[error("timed out after {ms} ms waiting for {} to become {want} (last seen {last:?})", path.display())]
    Timeout {
        /// The state file polled.
        path: PathBuf,
        /// The awaited state.
        want: String,
        /// The last state read.
        last: String,
        /// How long we waited.
        ms: u64,
    },
    /// A cgroup directory could not be removed because it stays busy.
    #[error("rmdir {}: Device or resource busy after {attempts} attempts (processes still inside: {pids:?})", path.display())]
    Busy {
        /// The directory.
        path: PathBuf,
        /// How many times removal was tried.
        attempts: u32,
        /// The processes found in it at the end.
        pids: Vec<i32>,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::InvalidValue`].
    pub(crate) fn invalid(resource: &str, value: impl ToString, reason: &str) -> Self {
        Error::InvalidValue {
            resource: resource.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The raw OS error code, when this error came from a syscall.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Sys { source, .. } | Error::BpfLoad { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}
