//! The library's error type. Every syscall failure names the syscall and the
//! path or id it was about, so a log line matches the `strace` line.

/// Anything that can go wrong in rustjail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syscall failed.
    #[error("{syscall} {what}: {source}")]
    Sys {
        /// The syscall, as strace names it.
        syscall: &'static str,
        /// The path, fd or id it was about.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`open`, `read`, `write`, ...).
        op: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The runtime spec cannot be used as it is.
    #[error("invalid spec: {0}")]
    Spec(String),
    /// No container has this id.
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// A container with this id exists already.
    #[error("container {0:?} already exists")]
    Exists(String),
    /// The id cannot name a container.
    #[error("invalid container id {0:?}: use letters, digits, '_', '-', '.' (not '.' or '..'), at most 1024")]
    BadId(String),
    /// The operation does not fit the container's state.
    #[error("container {id:?} is {status}: {why}")]
    WrongState {
        /// Container id.
        id: String,
        /// Its status now.
        status: String,
        /// What was refused.
        why: &'static str,
    },
    /// The container's init reported a failure while setting up.
    #[error("container init: {0}")]
    Init(String),
    /// The container's cgroup could not be set up, changed or read.
    #[error("cgroup: {0}")]
    Cgroup(#[from] crate::cgroups::Error),
    /// A hook failed or timed out.
    #[error("{0}")]
    Hook(String),
    /// The seccomp profile cannot be compiled or installed.
    #[error("seccomp: {0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// A helper mode failed (inside the container, when it entered one).
    #[error("{mode} in container {container:?}: {message}")]
    Helper {
        /// The helper's mode.
        mode: String,
        /// The container it entered (empty: none).
        container: String,
        /// What went wrong, as the helper said.
        message: String,
    },
    /// State on disk could not be read or written.
    #[error("state {path}: {why}")]
    State {
        /// The state file.
        path: String,
        /// What was wrong.
        why: String,
    },
}

impl Error {
    /// What the container's init reports to the runtime, which wraps it as
    /// [`Error::Init`] again: an init error without its own prefix, so the
    /// message says "container init:" once.
    pub(crate) fn init_report(&self) -> String {
        match self {
            Error::Init(m) => m.clone(),
            e => e.to_string(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps a nix error with the syscall and what it was about. `what` is
/// formatted only on an error: most calls succeed, and a container's init
/// makes dozens of them.
pub fn sys(syscall: &'static str, what: impl std::fmt::Display) -> impl FnOnce(nix::Error) -> Error {
    move |source| Error::Sys {
        syscall,
        what: what.to_string(),
        source,
    }
}

/// Wraps an io error with the operation and path (formatted only on an error).
pub fn io(op: &'static str, path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io {
        op,
        path: path.to_string(),
        source,
    }
}
