//! Runtime work done on another CPU while the init works on its own.
//!
//! A thread woken by the init (the end of the `vfork` wait at its `execve`)
//! is often put on the init's CPU even with the other CPUs idle (seen with
//! `sched_wakeup` tracing on a 2-vCPU guest: most wakeups of the runtime's
//! threads went to the waker's CPU). The cgroup made "while the init builds
//! its root" then waited for that CPU: the two took turns on one CPU and the
//! other stayed idle. When that is so, a thread kept off the init's CPU does
//! the work beside it instead; when this thread is elsewhere already, it
//! does the work itself.

use std::sync::Mutex;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Runs `there` beside the process `init` while `here` runs on this thread;
/// returns both results. Where this thread shares the init's CPU, `there`
/// runs on a thread kept off that CPU; otherwise (or with no other CPU to
/// use, or no thread to be had) `here` runs first, then `there`, here.
pub(crate) fn beside<T: Send, U>(init: Pid, there: impl FnOnce() -> T + Send, here: impl FnOnce() -> U) -> (T, U) {
    let Some(away) = shared_cpu(init).and_then(other_cpus) else {
        let u = here();
        return (there(), u);
    };
    // Shared, not moved: should the thread not start, `there` runs here.
    let slot = Mutex::new(Some(there));
    let take = || slot.lock().ok().and_then(|mut s| s.take());
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("rustjail-beside".into())
            .spawn_scoped(s, || {
                // A hint: where it fails, the thread runs where the kernel puts it.
                let _ = sched_setaffinity(Pid::from_raw(0), &away);
                take().map(|f| f())
            });
        let u = here();
        let t = match spawned {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => None,
        };
        let t = t
            .or_else(|| take().map(|f| f()))
            .expect("`there` runs once, on one side");
        (t, u)
    })
}

/// The CPU this thread is on, when `pid` was last on it too (the
/// `processor` field of /proc/<pid>/stat).
fn shared_cpu(pid: Pid) -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments and only reads the CPU number.
    let here = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis start at the 3rd; the
    // processor is the 39th.
    let theirs: usize = stat.rsplit_once(") ")?.1.split(' ').nth(39 - 3)?.parse().ok()?;
    (theirs == here).then_some(here)
}

/// The CPUs this thread may use, but for `cpu`; None when that leaves none.
fn other_cpus(cpu: usize) -> Option<CpuSet> {
    let mut set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    set.unset(cpu).ok()?;
    (0..CpuSet::count())
        .any(|c| set.is_set(c).unwrap_or(false))
        .then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> usize {
        let set = sched_getaffinity(Pid::from_raw(0)).unwrap();
        (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap()).count()
    }

    fn me() -> Pid {
        Pid::from_raw(nix::unistd::gettid().as_raw())
    }

    #[test]
    fn both_sides_run_once_and_return() {
        let (t, u) = beside(me(), || 2 + 2, || "here");
        assert_eq!((t, u), (4, "here"));
        let (t, u) = beside(Pid::from_raw(i32::MAX), || 2 + 2, || "here");
        assert_eq!((t, u), (4, "here"), "no such process: both here");
    }

    #[test]
    fn beside_a_process_on_this_cpu_the_work_runs_off_it() {
        // This thread is on its own CPU, so "the process" shares it.
        // (A move of this thread between its two reads of the CPU makes
        // one call run here: a few tries.)
        let ours = allowed();
        let runs: Vec<usize> = (0..5).map(|_| beside(me(), allowed, || ()).0).collect();
        if ours > 1 {
            assert!(runs.contains(&(ours - 1)), "every CPU but this one: {runs:?} of {ours}");
        } else {
            assert_eq!(runs, [ours; 5], "one CPU: run here");
        }
    }

    #[test]
    fn the_processor_field_is_read() {
        // SAFETY: as above.
        let here = unsafe { libc::sched_getcpu() } as usize;
        // The thread may move between the two reads; then None is right too.
        assert!(matches!(shared_cpu(me()), Some(c) if c == here) || shared_cpu(me()).is_none());
    }
}
