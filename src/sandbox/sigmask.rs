//! Whether a process blocks, ignores or catches a signal, from the masks in
//! `/proc/<pid>/status`. kata-agent turns a SIGTERM to a container's init
//! that does none of these into SIGKILL: a PID namespace's init without a
//! handler never sees SIGTERM from outside, and a host's stop would hang.

use nix::sys::signal::Signal;

/// Whether `pid` blocks, ignores or catches `signal`; false when its status
/// cannot be read (kata-agent's rule: the signal then becomes SIGKILL, and a
/// process that is gone answers ESRCH either way).
pub(crate) fn handles(pid: i32, signal: Signal) -> bool {
    rustjail::pseudo_file::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| handled_in(&status, signal))
}

/// [`handles`] on the text of a status file.
fn handled_in(status: &str, signal: Signal) -> bool {
    let bit = 1u64 << ((signal as i32 - 1) as u32);
    status
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            matches!(key, "SigBlk" | "SigIgn" | "SigCgt").then(|| u64::from_str_radix(value.trim(), 16).ok())?
        })
        .any(|mask| mask & bit != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsleep\nSigQ:\t0/63704\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
                          SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n";

    #[test]
    fn no_mask_means_not_handled() {
        assert!(!handled_in(STATUS, Signal::SIGTERM));
    }

    #[test]
    fn each_mask_counts() {
        // SIGTERM is 15: bit 14 = 0x4000.
        for key in ["SigBlk", "SigIgn", "SigCgt"] {
            let s = STATUS.replace(
                &format!("{key}:\t0000000000000000"),
                &format!("{key}:\t0000000000004000"),
            );
            assert!(handled_in(&s, Signal::SIGTERM), "{key}");
            assert!(!handled_in(&s, Signal::SIGINT), "{key} holds only SIGTERM");
        }
    }

    #[test]
    fn real_processes() {
        let spawn = |script: &str| std::process::Command::new("sh").args(["-c", script]).spawn().unwrap();
        let mut plain = spawn("exec sleep 30");
        let mut trapping = spawn("trap 'exit 3' TERM; trap '' INT; while :; do sleep 1; done");
        // The shell has set its traps once it runs its loop (a child exists).
        let children =
            |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        while children(trapping.id()).trim().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!handles(plain.id() as i32, Signal::SIGTERM));
        assert!(handles(trapping.id() as i32, Signal::SIGTERM), "caught");
        assert!(handles(trapping.id() as i32, Signal::SIGINT), "ignored");
        assert!(!handles(i32::MAX, Signal::SIGTERM), "no such process");
        for c in [&mut plain, &mut trapping] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
