//! The end of a guest whose init is the agent: stop every other process, flush
//! the disks, and power the VM off (the VMM then exits).

use std::time::{Duration, Instant};

/// How long processes get between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// Signals every process but ourselves (`kill(-1, ...)`): SIGTERM, a grace
/// period while reaping, then SIGKILL. Returns how many children were reaped.
pub fn kill_all() -> usize {
    let mut reaped = 0;
    // SAFETY: kill(2) with constant arguments; -1 means every process we may signal.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        match reap_one() {
            Some(true) => reaped += 1,
            Some(false) => std::thread::sleep(Duration::from_millis(10)),
            None => return reaped, // no children left
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    while let Some(true) = reap_one() {
        reaped += 1;
    }
    reaped
}

/// `Some(true)`: reaped one; `Some(false)`: children left, none exited; `None`: no children.
fn reap_one() -> Option<bool> {
    let mut status = 0;
    // SAFETY: waitpid with a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        p if p > 0 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

/// Syncs filesystems and powers off. Returns only when `reboot(2)` fails.
pub fn power_off() -> std::io::Error {
    kill_all();
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    // SAFETY: reboot(2) with a constant command; on success it does not return.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("reboot(RB_POWER_OFF): {e}"))
}
