//! What kind of failure an error is, as a host can act on it. Every error type
//! of the agent's domain says its kind; the RPC layer turns a kind into a wire
//! status in one place (`rpc::status`), so no domain module picks status codes.

/// The kind of a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ErrorKind {
    /// The request cannot be honoured as it is: a bad field, id or path.
    InvalidArgument,
    /// A container, process or device it names does not exist.
    NotFound,
    /// What it would create exists already.
    AlreadyExists,
    /// The state does not allow it now (not running, already waited for, API level).
    FailedPrecondition,
    /// Something did not happen in time (a device that never came).
    DeadlineExceeded,
    /// The agent or the system failed (a syscall, a helper).
    Internal,
    /// Not now, but the same request may succeed later (the agent is busy).
    Unavailable,
    /// It was started and undone (an upgrade rolled back).
    Aborted,
}

impl ErrorKind {
    /// The name a log line shows.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Internal => "internal",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Aborted => "aborted",
        }
    }
}
