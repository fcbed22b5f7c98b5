//! Why a sandbox operation failed. Each variant is one kind of failure with
//! the facts a person needs (the id, the path, the state); [`Error::kind`]
//! says how a host can act on it, and `rpc::status` alone turns that into a
//! wire status.

use crate::device::node::NodeError;
use crate::device::DeviceError;
use crate::error::ErrorKind;
use crate::guest::GuestError;
use crate::storage::block::SourceError;
use crate::storage::StorageError;

/// A failed sandbox operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A field of the request cannot be used (the message names it).
    #[error("{0}")]
    InvalidArgument(String),
    /// No container has this id.
    #[error("container {0:?} does not exist")]
    ContainerNotFound(String),
    /// A container with this id exists (or is being created).
    #[error("container {0:?} already exists")]
    ContainerExists(String),
    /// The container has no process with this exec id.
    #[error("process {exec_id:?} of container {id:?} does not exist")]
    ProcessNotFound {
        /// Container id.
        id: String,
        /// Exec id.
        exec_id: String,
    },
    /// The container has (or is starting) a process with this exec id.
    #[error("process {exec_id:?} of container {id:?} already exists")]
    ProcessExists {
        /// Container id.
        id: String,
        /// Exec id.
        exec_id: String,
    },
    /// CreateSandbox ran already (or runs now).
    #[error("sandbox {0:?} was already created")]
    SandboxExists(String),
    /// The container must be running for this.
    #[error("container {id:?} is not running (it is {status})")]
    NotRunning {
        /// Container id.
        id: String,
        /// What it is.
        status: rustjail::Status,
    },
    /// The state does not allow it (the message says why).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The container engine failed or refused.
    #[error(transparent)]
    Runtime(#[from] rustjail::Error),
    /// A storage could not be set up or released.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A guest basics call failed.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// A device the host named is bad or did not come.
    #[error("{context}: {source}")]
    Device {
        /// What it was for (the container, the spec entry).
        context: String,
        /// What went wrong.
        source: DeviceError,
    },
    /// A device node inside a container could not be made or removed.
    #[error("{0}")]
    Node(#[from] NodeError),
    /// A networking request failed (`op` is kata-agent's wording of it).
    #[cfg(feature = "net")]
    #[error("{op}: {source}")]
    Net {
        /// The request, e.g. `update routes`.
        op: super::network::NetOp,
        /// What went wrong, naming the field or the kernel's refusal.
        source: crate::net::NetError,
    },
    /// A feature kata-agent can be built without, and this agent does not
    /// have (`rpc::status` answers as kata-agent built without it).
    #[error("{0} is not available in this agent")]
    Unavailable(Feature),
    /// A live upgrade did not happen.
    #[error(transparent)]
    Upgrade(#[from] crate::upgrade::UpgradeError),
    /// The agent failed (the message names the syscall and path or id).
    #[error("{0}")]
    Internal(String),
}

/// Optional features of kata-agent that this agent does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    /// The memory agent (MemAgentMemcgSet, MemAgentCompactSet).
    MemAgent,
    /// The agent policy (SetPolicy).
    Policy,
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Feature::MemAgent => "mem-agent",
            Feature::Policy => "agent policy",
        })
    }
}

impl From<SourceError> for Error {
    fn from(e: SourceError) -> Error {
        Error::Device {
            context: format!("storage {} ({} at {:?})", e.index, e.driver, e.mount_point),
            source: e.source,
        }
    }
}

impl Error {
    /// How a host can act on it.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::ContainerNotFound(_) | Error::ProcessNotFound { .. } => ErrorKind::NotFound,
            Error::ContainerExists(_) | Error::ProcessExists { .. } | Error::SandboxExists(_) => {
                ErrorKind::AlreadyExists
            }
            Error::NotRunning { .. } | Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::Runtime(e) => runtime_kind(e),
            Error::Storage(e) => e.kind(),
            Error::Guest(e) => e.kind(),
            Error::Device { source, .. } => match source {
                DeviceError::Timeout { .. } => ErrorKind::DeadlineExceeded,
                DeviceError::BadAddress { .. } | DeviceError::BadType(_) => ErrorKind::InvalidArgument,
                DeviceError::Io { .. } => ErrorKind::Internal,
            },
            Error::Node(NodeError::Conflict(_)) => ErrorKind::AlreadyExists,
            Error::Node(NodeError::Failed(_)) => ErrorKind::Internal,
            #[cfg(feature = "net")]
            Error::Net { source, .. } => source.kind(),
            // What kata-agent answers without the feature (rpc::status).
            Error::Unavailable(Feature::MemAgent) => ErrorKind::Internal,
            Error::Unavailable(Feature::Policy) => ErrorKind::NotFound,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Upgrade(e) => e.kind(),
        }
    }

    /// A failed syscall or file operation, named.
    pub(crate) fn sys(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("{what}: {e}"))
    }
}

fn runtime_kind(e: &rustjail::Error) -> ErrorKind {
    match e {
        rustjail::Error::BadId(_) | rustjail::Error::Spec(_) => ErrorKind::InvalidArgument,
        rustjail::Error::NotFound(_) => ErrorKind::NotFound,
        rustjail::Error::Exists(_) => ErrorKind::AlreadyExists,
        rustjail::Error::WrongState { .. } => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    }
}

/// Result of a sandbox operation.
pub(crate) type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages() {
        let cases: Vec<(Error, ErrorKind, &str)> = vec![
            (
                Error::ContainerNotFound("c".into()),
                ErrorKind::NotFound,
                "container \"c\" does not exist",
            ),
            (
                Error::ProcessExists {
                    id: "c".into(),
                    exec_id: "e".into(),
                },
                ErrorKind::AlreadyExists,
                "process \"e\" of container \"c\" already exists",
            ),
            (
                Error::NotRunning {
                    id: "c".into(),
                    status: rustjail::Status::Paused,
                },
                ErrorKind::FailedPrecondition,
                "container \"c\" is not running (it is paused)",
            ),
            (
                Error::Runtime(rustjail::Error::BadId("a/b".into())),
                ErrorKind::InvalidArgument,
                "invalid container id \"a/b\"",
            ),
            (
                Error::Device {
                    context: "hot-plug into container \"c\"".into(),
                    source: DeviceError::Timeout {
                        what: "scsi device 0:1".into(),
                        timeout: std::time::Duration::from_secs(3),
                    },
                },
                ErrorKind::DeadlineExceeded,
                "hot-plug into container \"c\": scsi device 0:1 did not appear within 3s",
            ),
            (
                Error::Node(NodeError::Conflict("x".into())),
                ErrorKind::AlreadyExists,
                "x",
            ),
        ];
        for (e, kind, msg) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.to_string().starts_with(msg), "{e}");
        }
    }
}
