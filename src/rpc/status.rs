//! The one place where a failure becomes a wire status: every handler's error
//! (a sandbox [`Error`], or a request the adapter could not convert) passes
//! through [`status`], with the call it answers.
//!
//! Level-1 (Kata-compatible) answers belong here too: a Kata host runtime
//! branches on some codes and message texts of kata-agent (for example
//! `ESRCH` in a SignalProcess error). [`Call`] carries the API level in force
//! and the method, so an exception for `(level 1, method, kind)` is one match
//! arm below, and every other answer keeps pith's clearer code and text.
//!
//! kata-agent's answers for the features it can be built without
//! ([`Feature`]) are here at every level, word for word: mem-agent's
//! INTERNAL "mem-agent is disabled", and the policy's NOT_FOUND
//! "/<method> is not supported" (ttrpc's answer for a method the service does
//! not serve). The dispatcher turns that NOT_FOUND into UNIMPLEMENTED for
//! methods nobody implemented, except those in [`KATA_NOT_SUPPORTED`].

use ttrpc::Code;

use crate::error::ErrorKind;
use crate::sandbox::error::Feature;
use crate::sandbox::Error;

/// Methods whose NOT_FOUND "/<method> is not supported" is kata-agent's own
/// answer (a build without the feature: [`Feature::Policy`]), not the
/// generated default that `server::dispatch` turns into UNIMPLEMENTED.
pub(crate) const KATA_NOT_SUPPORTED: &[&str] = &["grpc.AgentService/SetPolicy"];

/// The call an error answers.
#[derive(Debug, Clone, Copy)]
#[allow(
    dead_code,
    reason = "`level` is read by the level-1 (Kata-compatible) answers, which come with Kata parity"
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
    let code = code(err.kind());
    match err {
        Error::Unavailable(Feature::MemAgent) => ttrpc::get_status(code, "mem-agent is disabled"),
        Error::Unavailable(Feature::Policy) => ttrpc::get_status(code, format!("/{} is not supported", call.method)),
        // Other level-1 exceptions (Kata's codes and texts) go here, matched
        // on (call.level, call.method, err.kind()).
        _ => ttrpc::get_status(code, err.to_string()),
    }
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

    #[test]
    fn features_kata_agent_lacks_get_its_answers() {
        let call = |method| Call { method, level: 1 };
        let s = status(
            &Error::Unavailable(Feature::MemAgent),
            call("grpc.AgentService/MemAgentMemcgSet"),
        );
        assert_eq!(
            (s.code(), s.message.as_str()),
            (Code::INTERNAL, "mem-agent is disabled")
        );
        // Every method answering NOT_FOUND "... is not supported" on purpose is
        // exempt from the dispatcher's UNIMPLEMENTED, and the other way round.
        for m in KATA_NOT_SUPPORTED {
            let s = status(&Error::Unavailable(Feature::Policy), call(m));
            assert_eq!(s.code(), Code::NOT_FOUND);
            assert_eq!(s.message, format!("/{m} is not supported"));
        }
        assert_eq!(KATA_NOT_SUPPORTED, ["grpc.AgentService/SetPolicy"]);
    }
}
