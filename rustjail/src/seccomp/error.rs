//! Errors of the seccomp compiler and loader.

use std::io;

/// Everything that can go wrong compiling or installing an OCI seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// `SCMP_ACT_NOTIFY` needs a seccomp agent and a listener fd; pith does not implement it.
    #[error("seccomp {location}: action SCMP_ACT_NOTIFY is not supported (no seccomp notify agent support)")]
    NotifyUnsupported {
        /// Where the action was used: `defaultAction` or `syscalls[N] (names)`.
        location: String,
    },

    /// A filter flag pith cannot honour.
    #[error("seccomp flags: {flag} is not supported ({reason})")]
    UnsupportedFlag {
        /// The flag as spelled in the profile.
        flag: String,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// A syscall name that is the empty string.
    #[error("seccomp {rule}: names[{index}] is an empty string, not a syscall name")]
    EmptySyscallName {
        /// The rule, as `syscalls[N] (names)`.
        rule: String,
        /// Position of the empty name in `names`.
        index: usize,
    },

    /// An argument index outside 0..=5.
    #[error("seccomp {rule}: args[{arg}].index is {index}, but a syscall has at most 6 arguments (index 0..=5)")]
    ArgIndexOutOfRange {
        /// The rule, as `syscalls[N] (names)`.
        rule: String,
        /// Position of the argument in `args`.
        arg: usize,
        /// The offending index.
        index: usize,
    },

    /// An errno return value that does not fit in SECCOMP_RET_DATA.
    #[error("seccomp {field} is {value}, but a seccomp errno must fit in 16 bits (0..=65535)")]
    ErrnoOutOfRange {
        /// `defaultErrnoRet` or `syscalls[N] (names).errnoRet`.
        field: String,
        /// The offending value.
        value: u32,
    },

    /// The architecture this binary runs on has no syscall table here.
    #[error("seccomp: native architecture {0} is not supported (supported: x86_64, x86, aarch64, arm)")]
    UnsupportedNativeArch(&'static str),

    /// The generated program exceeds the kernel limit (BPF_MAXINSNS).
    #[error("seccomp: compiled filter has {len} instructions, more than the kernel limit of {max}")]
    ProgramTooLarge {
        /// Instructions generated.
        len: usize,
        /// Kernel limit.
        max: usize,
    },

    /// An empty program cannot be installed.
    #[error("seccomp: refusing to install an empty filter program")]
    EmptyProgram,

    /// A syscall that installs the filter failed.
    #[error("seccomp: {call} failed: {source}{hint}")]
    Install {
        /// The syscall, with its arguments spelled out.
        call: &'static str,
        /// The errno.
        source: io::Error,
        /// Extra advice for a person (may be empty).
        hint: &'static str,
    },

    /// SECCOMP_FILTER_FLAG_TSYNC could not bring another thread along.
    #[error("seccomp: SECCOMP_FILTER_FLAG_TSYNC failed: thread {tid} could not be synchronized")]
    TsyncFailed {
        /// The thread that could not synchronize.
        tid: libc::c_long,
    },
}
