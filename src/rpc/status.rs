//! The one place where a failure becomes a wire status: every handler's error
//! (a sandbox [`Error`], or a request the adapter could not convert) passes
//! through [`status`], with the call it answers.
//!
//! Level-1 (Kata-compatible) answers belong here too: a Kata host runtime
//! branches on some codes and message texts of kata-agent (for example
//! `ESRCH` in a SignalProcess error). [`Call`] carries the API level in force
//! and the method, so an exception for `(level 1, method, kind)` is one match
//! arm below, and every other answer keeps pith's clearer code and text.

use ttrpc::Code;

use crate::error::ErrorKind;
use crate::sandbox::Error;

/// The call an error answers.
#[derive(Debug, Clone, Copy)]
#[allow(
    dead_code,
    reason = "read by the level-1 (Kata-compatible) answers, which come with Kata parity"
)]
pub(crate) struct Call<'a> {
    /// `service/method`, e.g. `grpc.AgentService/CreateContainer`.
    pub method: &'a str,
    /// The API level agreed with the host (1: a Kata host that never negotiated).
    pub level: u32,
}

/// The status code of a kind of failure.
fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::INVALID_ARGUMENT,
        ErrorKind::NotFound => Code::NOT_FOUND,
        ErrorKind::AlreadyExists => Code::ALREADY_EXISTS,
        ErrorKind::FailedPrecondition => Code::FAILED_PRECONDITION,
        ErrorKind::DeadlineExceeded => Code::DEADLINE_EXCEEDED,
        ErrorKind::Internal => Code::INTERNAL,
    }
}

/// The wire status answering `call` with `err`.
pub(crate) fn status(err: &Error, call: Call<'_>) -> ttrpc::proto::Status {
    // Level-1 exceptions (Kata's codes and texts) go here, matched on
    // (call.level, call.method, err.kind()); none are needed yet.
    let _ = call;
    ttrpc::get_status(code(err.kind()), err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_codes_with_the_message() {
        let call = Call {
            method: "grpc.AgentService/StartContainer",
            level: 1,
        };
        let s = status(&Error::ContainerNotFound("c1".into()), call);
        assert_eq!(s.code(), Code::NOT_FOUND);
        assert_eq!(s.message, "container \"c1\" does not exist");
        for (kind, want) in [
            (ErrorKind::InvalidArgument, Code::INVALID_ARGUMENT),
            (ErrorKind::AlreadyExists, Code::ALREADY_EXISTS),
            (ErrorKind::FailedPrecondition, Code::FAILED_PRECONDITION),
            (ErrorKind::DeadlineExceeded, Code::DEADLINE_EXCEEDED),
            (ErrorKind::Internal, Code::INTERNAL),
        ] {
            assert_eq!(code(kind), want);
        }
    }
}
