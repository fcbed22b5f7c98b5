//! `execve` of the new binary in place: same pid (the containers stay its
//! children, the keeper sees no exit), the same arguments, and the keeper
//! channel as the one descriptor that crosses (everything else the new
//! binary needs, the keeper holds).

use std::ffi::{CString, OsString};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::keeper::parent::UPGRADE_FAILED_ENV;
use crate::keeper::FD_ENV;

/// The running binary, opened (close-on-exec): the keeper runs it again if
/// the new one fails.
pub(crate) fn current_binary() -> Result<OwnedFd, String> {
    // SAFETY: open with a static NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/self/exe".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open /proc/self/exe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: open just returned it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstring(s: &[u8]) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{:?} holds a NUL byte", String::from_utf8_lossy(s)))
}

/// The new binary's argv: its path, then this process's arguments.
fn argv(binary: &Path, args: impl Iterator<Item = OsString>) -> Result<Vec<CString>, String> {
    std::iter::once(binary.as_os_str().to_owned())
        .chain(args)
        .map(|a| cstring(a.as_bytes()))
        .collect()
}

/// The new binary's environment: this one's, with the keeper channel named.
fn envp(vars: impl Iterator<Item = (OsString, OsString)>, keeper_fd: RawFd) -> Result<Vec<CString>, String> {
    let mut out = Vec::new();
    for (k, v) in vars {
        if k == FD_ENV || k == UPGRADE_FAILED_ENV {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        out.push(cstring(&kv)?);
    }
    out.push(cstring(format!("{FD_ENV}={keeper_fd}").as_bytes())?);
    Ok(out)
}

/// Replaces this process with `binary`; returns only why it could not.
pub(crate) fn exec(binary: &Path, keeper_fd: RawFd) -> Result<std::convert::Infallible, String> {
    let argv = argv(binary, std::env::args_os().skip(1))?;
    let envp = envp(std::env::vars_os(), keeper_fd)?;
    let path = cstring(binary.as_os_str().as_bytes())?;
    // SAFETY: fcntl on the keeper channel, which this process owns.
    if unsafe { libc::fcntl(keeper_fd, libc::F_SETFD, 0) } != 0 {
        return Err(format!(
            "fcntl(F_SETFD) on the keeper channel {keeper_fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // The new image inherits this thread's mask: it must see every signal.
    // SAFETY: sigprocmask on this thread with an empty set we own.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: NUL-terminated strings in arrays ending with NULL, all alive across the call.
    unsafe { libc::execve(path.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let e = std::io::Error::last_os_error();
    // SAFETY: as above; the channel must not leak into a later child.
    unsafe { libc::fcntl(keeper_fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Err(format!("execve({}): {e}", binary.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_binary_gets_our_arguments_and_the_keeper_channel() {
        let a = argv(
            Path::new("/new/pith-agent"),
            ["--keeper".into(), "--state-dir".into(), "/run/p".into()].into_iter(),
        )
        .unwrap();
        assert_eq!(a[0].to_str().unwrap(), "/new/pith-agent");
        assert_eq!(
            a[1..].iter().map(|c| c.to_str().unwrap()).collect::<Vec<_>>(),
            ["--keeper", "--state-dir", "/run/p"]
        );
        let vars = [
            ("PATH".into(), "/bin".into()),
            (FD_ENV.into(), "9".into()),
            (UPGRADE_FAILED_ENV.into(), "old news".into()),
        ];
        let e = envp(vars.into_iter(), 5).unwrap();
        let e: Vec<&str> = e.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(e, ["PATH=/bin", &format!("{FD_ENV}=5")]);
    }
}
