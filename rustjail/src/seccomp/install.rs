//! Loading a compiled program into the kernel for the calling thread (or process, with TSYNC).

use std::io;

use super::error::SeccompError;
use super::Program;

const NO_NEW_PRIVS_HINT: &str =
    " (set no_new_privs with prctl(PR_SET_NO_NEW_PRIVS) first, or hold CAP_SYS_ADMIN in the current user namespace)";

fn hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EACCES) => NO_NEW_PRIVS_HINT,
        Some(libc::EINVAL) => " (the kernel rejected the program or a flag; see the warnings of compile())",
        _ => "",
    }
}

/// Installs `program` with seccomp(2) `SECCOMP_SET_MODE_FILTER` and its flags, or with
/// `prctl(PR_SET_SECCOMP)` when it has no flags and seccomp(2) is missing (Linux < 3.17).
///
/// Setting no_new_privs (or holding CAP_SYS_ADMIN) is the caller's business, as is doing
/// this as late as possible: every syscall made afterwards, `execve` included, is filtered.
/// Filters stack; one installed cannot be removed.
pub fn install(program: &Program) -> Result<(), SeccompError> {
    let insns = program.instructions();
    if insns.is_empty() {
        return Err(SeccompError::EmptyProgram);
    }
    let len = u16::try_from(insns.len()).map_err(|_| SeccompError::ProgramTooLarge {
        len: insns.len(),
        max: super::bpf::MAX_INSNS,
    })?;
    let mut filter: Vec<libc::sock_filter> = insns
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len,
        filter: filter.as_mut_ptr(),
    };
    let flags = libc::c_ulong::from(program.flags());

    // SAFETY: `fprog` points to `filter`, a live buffer of `len` sock_filter entries, for the
    // whole call; the kernel copies the program and keeps no pointer to it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    if ret > 0 {
        // With TSYNC, a positive return is the id of a thread that could not be synchronized.
        return Err(SeccompError::TsyncFailed { tid: ret });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) || flags != 0 {
        let hint = hint(&err);
        return Err(SeccompError::Install {
            call: "seccomp(SECCOMP_SET_MODE_FILTER)",
            source: err,
            hint,
        });
    }

    // SAFETY: as above; PR_SET_SECCOMP reads the sock_fprog during the call only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret != 0 {
        let err = io::Error::last_os_error();
        let hint = hint(&err);
        return Err(SeccompError::Install {
            call: "prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)",
            source: err,
            hint,
        });
    }
    Ok(())
}
