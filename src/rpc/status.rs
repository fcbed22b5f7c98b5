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
//! not serve). [`not_served`] answers for a declared method no handler
//! serves: kata-agent's (ttrpc-rust's) NOT_FOUND at level 1, UNIMPLEMENTED
//! naming the method above.
//!
//! Where Kata's host runtimes branch on kata-agent's answers (the README's
//! "Kata's answers at level 1" lists each place), level 1 answers so:
//! * SignalProcess to a process that is gone: the Go runtime swallows only
//!   an error whose text holds "ESRCH: No such process" ([`ESRCH_TEXT`]);
//! * a method pith does not serve: NOT_FOUND "/<method> is not supported"
//!   (the shim stops polling GetMetrics for good on NOT_FOUND), except the
//!   two methods the Go runtime tolerates only as UNIMPLEMENTED
//!   ([`UNIMPLEMENTED_TOLERATED`]).

use ttrpc::Code;

use crate::error::ErrorKind;
use crate::sandbox::error::Feature;
use crate::sandbox::Error;

/// Methods whose NOT_FOUND "/<method> is not supported" is kata-agent's own
/// answer (a build without the feature: [`Feature::Policy`]), not the
/// generated default that `server::dispatch` turns into UNIMPLEMENTED.
pub(crate) const KATA_NOT_SUPPORTED: &[&str] = &["grpc.AgentService/SetPolicy"];

/// The text the Go runtime looks for in a SignalProcess error to treat the
/// process as gone (`virtcontainers/container.go` signalProcess).
pub(crate) const ESRCH_TEXT: &str = "ESRCH: No such process";

/// Methods whose UNIMPLEMENTED the Go runtime tolerates (an older agent) and
/// whose NOT_FOUND it does not: `kata_agent.go` addARPNeighbors, and
/// `sandbox.go` updateResources' UpdateEphemeralMounts.
pub(crate) const UNIMPLEMENTED_TOLERATED: &[&str] = &[
    "grpc.AgentService/AddARPNeighbors",
    "grpc.AgentService/UpdateEphemeralMounts",
];

/// The call an error answers.
#[derive(Debug, Clone, Copy)]
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
        ErrorKind::Unavailable => Code::UNAVAILABLE,
        ErrorKind::Aborted => Code::ABORTED,
    }
}

/// The wire status answering `call` with `err`.
pub(crate) fn status(err: &Error, call: Call<'_>) -> ttrpc::proto::Status {
    let code = code(err.kind());
    match err {
        Error::Unavailable(Feature::MemAgent) => ttrpc::get_status(code, "mem-agent is disabled"),
        Error::Unavailable(Feature::Policy) => ttrpc::get_status(code, format!("/{} is not supported", call.method)),
        Error::ProcessNotFound { .. } if is_kata(call) && call.method == "grpc.AgentService/SignalProcess" => {
            ttrpc::get_status(code, format!("{ESRCH_TEXT}: {err}"))
        }
        _ => ttrpc::get_status(code, err.to_string()),
    }
}

/// Whether the call is served with Kata's answers (level 1).
fn is_kata(call: Call<'_>) -> bool {
    call.level <= protocols::levels::LEVEL_KATA
}

/// The answer for `path` (`service/method`), declared in the protocol but
/// served by no handler of this agent.
pub(crate) fn not_served(path: &str, level: u32) -> ttrpc::proto::Status {
    let call = Call { method: path, level };
    if is_kata(call) && !UNIMPLEMENTED_TOLERATED.contains(&path) {
        // ttrpc-rust's generated default, which kata-agent answers.
        return ttrpc::get_status(Code::NOT_FOUND, format!("/{path} is not supported"));
    }
    ttrpc::get_status(
        Code::UNIMPLEMENTED,
        format!("{path} is not implemented by pith-agent {}", crate::AGENT_VERSION),
    )
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

    #[test]
    fn a_gone_process_answers_esrch_at_level_1_only() {
        let gone = Error::ProcessNotFound {
            id: "c1".into(),
            exec_id: "e1".into(),
        };
        let signal = |level| Call {
            method: "grpc.AgentService/SignalProcess",
            level,
        };
        let s = status(&gone, signal(1));
        assert_eq!(s.code(), Code::NOT_FOUND);
        assert!(s.message.contains(ESRCH_TEXT), "{}", s.message);
        assert!(s.message.contains("\"e1\""), "names the exec id: {}", s.message);
        assert!(!status(&gone, signal(2)).message.contains("ESRCH"));
        let wait = Call {
            method: "grpc.AgentService/WaitProcess",
            level: 1,
        };
        assert!(!status(&gone, wait).message.contains("ESRCH"));
    }

    #[test]
    fn methods_not_served_answer_as_kata_agent_at_level_1() {
        let s = not_served("grpc.AgentService/ListRoutes", 1);
        assert_eq!(
            (s.code(), s.message.as_str()),
            (Code::NOT_FOUND, "/grpc.AgentService/ListRoutes is not supported")
        );
        let s = not_served("grpc.AgentService/ListRoutes", 2);
        assert_eq!(s.code(), Code::UNIMPLEMENTED);
        assert!(s
            .message
            .starts_with("grpc.AgentService/ListRoutes is not implemented by pith-agent"));
        for m in UNIMPLEMENTED_TOLERATED {
            assert_eq!(not_served(m, 1).code(), Code::UNIMPLEMENTED, "{m}");
        }
    }
}
