//! Why the persisted state could not be read or written. Every variant names
//! the file; a reader facing one of these leaves the file as it is.

use std::path::PathBuf;

/// A failure reading, writing or locking the state file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    /// A syscall on the file (or its directory, or its lock) failed.
    #[error("{syscall} {}: {source}", path.display())]
    Sys {
        /// The syscall.
        syscall: &'static str,
        /// The path it was about.
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// Another agent holds the lock on the state directory.
    #[error("another agent{} holds the lock {}; two agents must never share a state directory", holder.map(|p| format!(" (pid {p})")).unwrap_or_default(), path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid written in it, when readable.
        holder: Option<i32>,
    },
    /// The file is not a state file this agent can parse (damaged,
    /// truncated, a wrong type in a field).
    #[error("state file {} is damaged: {why}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong, as the parser said it.
        why: String,
    },
    /// The file was written by a newer agent whose format this one cannot read.
    #[error(
        "state file {} has persist_version {version} and needs an agent that reads at least version {min_reader}; this agent reads versions 1 to {supported}",
        path.display()
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its `persist_version`.
        version: u32,
        /// Its `min_reader_version`.
        min_reader: u32,
        /// The newest version this agent writes.
        supported: u32,
    },
    /// The file's content cannot be taken back into a sandbox (a field that
    /// parses but means nothing, such as a spec the OCI types refuse).
    #[error("state file {}: {why}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl PersistError {
    pub(crate) fn sys(syscall: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PersistError {
        let path = path.into();
        move |source| PersistError::Sys { syscall, path, source }
    }
}
