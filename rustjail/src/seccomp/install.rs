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

/// A program converted to the kernel's layout, ready to load: [`Armed::load`]
/// makes no allocation, so that the only syscalls after it are its own and
/// whatever the caller does next (an `execve`).
pub struct Armed {
    filter: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

/// Prepares `program` for [`Armed::load`] (allocates; no syscall).
pub fn arm(program: &Program) -> Result<Armed, SeccompError> {
    let insns = program.instructions();
    if insns.is_empty() {
        return Err(SeccompError::EmptyProgram);
    }
    if u16::try_from(insns.len()).is_err() {
        return Err(SeccompError::ProgramTooLarge {
            len: insns.len(),
            max: super::bpf::MAX_INSNS,
        });
    }
    let filter = insns
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    Ok(Armed {
        filter,
        flags: libc::c_ulong::from(program.flags()),
    })
}

/// Installs `program` with seccomp(2) `SECCOMP_SET_MODE_FILTER` and its flags, or with
/// `prctl(PR_SET_SECCOMP)` when it has no flags and seccomp(2) is missing (Linux < 3.17).
///
/// Setting no_new_privs (or holding CAP_SYS_ADMIN) is the caller's business, as is doing
/// this as late as possible: every syscall made afterwards, `execve` included, is filtered.
/// Filters stack; one installed cannot be removed.
pub fn install(program: &Program) -> Result<(), SeccompError> {
    arm(program)?.load()
}

impl Armed {
    /// Loads the filter into the kernel for the calling thread (see [`install`]).
    pub fn load(&self) -> Result<(), SeccompError> {
        let fprog = libc::sock_fprog {
            // arm() checked that the length fits.
            len: self.filter.len() as u16,
            filter: self.filter.as_ptr() as *mut libc::sock_filter,
        };
        let flags = self.flags;

        // SAFETY: `fprog` points to `filter`, a live buffer of `len` sock_filter entries, for
        // the whole call; the kernel copies the program and keeps no pointer to it.
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
}
