//! OCI actions, flags and operators mapped to kernel values, and what pith supports.

use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompFilterFlag};

use super::error::SeccompError;

/// errno returned by SCMP_ACT_ERRNO / SCMP_ACT_TRACE without an `errnoRet` (runc's default).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// Action returned for a syscall from an architecture the filter does not cover
/// (libseccomp's default bad-architecture action, which runc keeps).
pub const BAD_ARCH_ACTION: u32 = libc::SECCOMP_RET_KILL_THREAD;

/// `SECCOMP_RET_ERRNO | ENOSYS`, for syscalls newer than the profile (runc's -ENOSYS stub).
pub const ENOSYS_ACTION: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// OCI actions pith implements, as spelled in a profile.
pub const SUPPORTED_ACTIONS: [&str; 8] = [
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
];

/// OCI argument operators pith implements.
pub const SUPPORTED_OPERATORS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// OCI filter flags pith implements.
pub const SUPPORTED_FLAGS: [&str; 3] = [
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
];

/// The 32-bit `SECCOMP_RET_*` value of an OCI action; `errno_ret` (found at `errno_field`)
/// is only used by ERRNO and TRACE (elsewhere it is ignored, as runc does, with a warning).
pub fn action_value(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    location: &str,
    errno_field: &str,
    warnings: &mut Vec<String>,
) -> Result<u32, SeccompError> {
    let data = |errno_ret: Option<u32>| -> Result<u32, SeccompError> {
        let value = errno_ret.unwrap_or(DEFAULT_ERRNO);
        if value > libc::SECCOMP_RET_DATA {
            return Err(SeccompError::ErrnoOutOfRange {
                field: errno_field.to_string(),
                value,
            });
        }
        Ok(value)
    };
    let uses_errno = matches!(
        action,
        LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace
    );
    if errno_ret.is_some() && !uses_errno {
        warnings.push(format!("{errno_field} is ignored with action {action}"));
    }
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => libc::SECCOMP_RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => libc::SECCOMP_RET_ERRNO | data(errno_ret)?,
        LinuxSeccompAction::ScmpActTrace => libc::SECCOMP_RET_TRACE | data(errno_ret)?,
        LinuxSeccompAction::ScmpActLog => libc::SECCOMP_RET_LOG,
        LinuxSeccompAction::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::NotifyUnsupported {
                location: location.to_string(),
            })
        }
    })
}

/// Whether an action lets the syscall run (runc skips the -ENOSYS stub for these defaults).
pub fn is_permissive(action: LinuxSeccompAction) -> bool {
    matches!(
        action,
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog | LinuxSeccompAction::ScmpActTrace
    )
}

/// The `SECCOMP_FILTER_FLAG_*` bits for the profile's flags.
pub fn flag_bits(flags: &[LinuxSeccompFilterFlag]) -> Result<u32, SeccompError> {
    let mut bits = 0u32;
    for flag in flags {
        bits |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::UnsupportedFlag {
                    flag: flag.to_string(),
                    reason: "it only applies to SCMP_ACT_NOTIFY listeners, which pith does not support",
                })
            }
        } as u32;
    }
    Ok(bits)
}
