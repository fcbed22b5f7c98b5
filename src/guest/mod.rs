//! Guest basics: the small RPCs that look after the VM itself rather than a
//! container — guest details, clock, file copies from the host, entropy,
//! onlining hot-added CPUs and memory, memory probing, metrics, volume
//! statistics and resizing, swap. One file per concern; the RPC layer
//! (`rpc::guest`) only converts messages and maps errors to statuses.

pub mod confine;
pub mod copy_file;
pub mod details;
pub mod memory;
pub mod metrics;
pub mod online;
pub mod random;
pub mod swap;
pub mod time;
pub mod volume;

use std::path::{Path, PathBuf};

use crate::error::ErrorKind;

/// Where CopyFile may write when nothing else is configured: Kata's directory and ours.
pub const DEFAULT_COPY_ROOTS: &[&str] = &["/run/kata-containers", "/run/pith"];
/// Environment variable with the CopyFile roots, colon-separated.
pub const COPY_ROOTS_ENV: &str = "PITH_COPYFILE_ROOTS";
/// Environment variable that moves the sysfs root (for tests).
pub const SYSFS_ROOT_ENV: &str = "PITH_SYSFS_ROOT";

/// Anything that can go wrong in a guest basics call.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The request cannot be honoured as it is (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// Something did not happen in time (DEADLINE_EXCEEDED).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The guest lacks what the request needs (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Something failed that is no syscall of ours (INTERNAL).
    #[error("{0}")]
    Internal(String),
    /// A syscall failed (INTERNAL).
    #[error("{syscall}({what}): {source}")]
    Sys {
        /// The syscall, as strace names it.
        syscall: &'static str,
        /// The path or id it was about.
        what: String,
        /// The errno.
        source: nix::Error,
    },
}

impl GuestError {
    /// The kind of failure (the RPC layer picks the status from it).
    pub(crate) fn kind(&self) -> crate::error::ErrorKind {
        match self {
            GuestError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            GuestError::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            GuestError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            GuestError::Internal(_) | GuestError::Sys { .. } => ErrorKind::Internal,
        }
    }
}

/// `map_err` helper: a syscall error naming the syscall and what it was about
/// (formatted only on an error).
pub(crate) fn sys(syscall: &'static str, what: impl std::fmt::Display) -> impl FnOnce(nix::Error) -> GuestError {
    move |source| GuestError::Sys {
        syscall,
        what: what.to_string(),
        source,
    }
}

/// `map_err` helper for `std::io` errors of a syscall.
pub(crate) fn io(syscall: &'static str, what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> GuestError {
    move |e| GuestError::Sys {
        syscall,
        what: what.to_string(),
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Process-wide guest state and settings.
pub struct Guest {
    /// Root of sysfs (`/sys`; a fake tree in tests).
    pub sysfs: PathBuf,
    /// Directories CopyFile may write under.
    pub copy_roots: Vec<PathBuf>,
    /// The device ReseedRandomDev writes to.
    pub random_dev: PathBuf,
    /// How OnlineCPUMem waits for hot-added CPUs.
    pub online_retry: online::Retry,
}

impl Default for Guest {
    fn default() -> Self {
        Guest {
            sysfs: PathBuf::from("/sys"),
            copy_roots: DEFAULT_COPY_ROOTS.iter().map(PathBuf::from).collect(),
            random_dev: PathBuf::from(random::RANDOM_DEV),
            online_retry: online::Retry::default(),
        }
    }
}

impl Guest {
    /// Defaults, with [`COPY_ROOTS_ENV`] and [`SYSFS_ROOT_ENV`] from `env` applied.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Guest {
        let mut g = Guest::default();
        if let Some(roots) = env(COPY_ROOTS_ENV) {
            g.copy_roots = parse_roots(&roots);
        }
        if let Some(sysfs) = env(SYSFS_ROOT_ENV).filter(|s| !s.is_empty()) {
            g.sysfs = PathBuf::from(sysfs);
        }
        g
    }

    /// The sysfs path `rel` (e.g. `devices/system/memory`).
    pub fn sysfs_path(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }
}

/// Colon-separated absolute directories; empty and relative entries are dropped.
pub fn parse_roots(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .filter(|p| !p.is_empty() && Path::new(p).is_absolute())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_from_env() {
        let g = Guest::from_env(&|k| match k {
            COPY_ROOTS_ENV => Some("/a:relative::/b/c".into()),
            SYSFS_ROOT_ENV => Some("/tmp/sys".into()),
            _ => None,
        });
        assert_eq!(g.copy_roots, vec![PathBuf::from("/a"), PathBuf::from("/b/c")]);
        assert_eq!(g.sysfs, PathBuf::from("/tmp/sys"));
        let d = Guest::from_env(&|_| None);
        assert_eq!(
            d.copy_roots,
            vec![PathBuf::from("/run/kata-containers"), PathBuf::from("/run/pith")]
        );
        assert_eq!(
            d.sysfs_path("devices/system/cpu"),
            PathBuf::from("/sys/devices/system/cpu")
        );
    }

    #[test]
    fn error_codes_and_messages() {
        let e = sys("mount", "\"/a\" -> \"/b\", tmpfs")(nix::Error::EPERM);
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(
            e.to_string().starts_with("mount(\"/a\" -> \"/b\", tmpfs): EPERM"),
            "{e}"
        );
        assert_eq!(
            GuestError::InvalidArgument("x".into()).kind(),
            ErrorKind::InvalidArgument
        );
    }
}
