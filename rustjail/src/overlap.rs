//! Keeping the runtime's threads off the init's CPU.
//!
//! A thread woken by another is put on the waker's CPU, even with the other
//! CPUs idle (seen with `sched_wakeup` tracing on a 2-vCPU guest: almost
//! every wakeup of the runtime's threads went to the waker's CPU). Two
//! places paid for it:
//! * create: the runtime's thread, woken onto the init's CPU at the end of
//!   the `vfork` wait, made the cgroup "while the init builds its root" by
//!   taking turns with the init on that CPU while the other stayed idle.
//!   The spawn now starts the init off the thread's CPU (`spawn::cpu_split`);
//!   [`away_if_sharing`] still moves the thread off the init's CPU when
//!   the config's send has woken the init onto it.
//! * start: the runtime's thread, woken by the init's write on the exec
//!   FIFO, waited on the init's CPU behind the init's `execve` and the user's
//!   program (a whole `/bin/true`, ~0.3 ms) before it could answer.
//!   [`away_from`] keeps it off that CPU while it waits.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Keeps this thread off `pid`'s CPU until the guard is dropped, when the
/// two share it; nothing changes otherwise. Call it after the wakeup of
/// `pid`, which is what places it: read before, the CPU is the one `pid`
/// slept on, and work sent away from that one could land on `pid`'s new
/// CPU and hold it there (seen with `sched_switch` tracing).
pub(crate) fn away_if_sharing(pid: Pid) -> Away {
    let (Ok(saved), Ok(here)) = (sched_getaffinity(Pid::from_raw(0)), nix::sched::sched_getcpu()) else {
        return Away(None);
    };
    // With no other CPU to go to (a one-CPU guest, Kata's default) there is
    // nothing to decide: no read of /proc (two per create).
    let Some(away) = other_cpus_of(&saved, here) else {
        return Away(None);
    };
    if cpu_of(pid) != Some(here) {
        return Away(None);
    }
    keep_to(saved, &away)
}

/// Whether this thread may run on one CPU only (a one-vCPU guest, Kata's
/// default, or an agent pinned): work it hands to another thread then
/// takes turns with it rather than running beside it.
pub fn one_cpu() -> bool {
    match (sched_getaffinity(Pid::from_raw(0)), nix::sched::sched_getcpu()) {
        (Ok(set), Ok(here)) => other_cpus_of(&set, here).is_none(),
        _ => false,
    }
}

/// The CPU `pid` runs on or last ran on (the `processor` field of
/// /proc/<pid>/stat).
fn cpu_of(pid: Pid) -> Option<usize> {
    crate::state::read_proc_stat(pid.as_raw(), |fields| fields.get(39 - 3)?.parse().ok())
}

/// This thread's CPU affinity as it was before [`away_from`] (or
/// [`pinned_here`]); put back on drop.
pub(crate) struct Away(Option<CpuSet>);

impl Away {
    /// The CPUs this thread had, and gets back on drop (None: nothing changed).
    pub(crate) fn saved(&self) -> Option<&CpuSet> {
        self.0.as_ref()
    }
}

/// Pins this thread to the CPU it runs on until the guard is dropped, and
/// gives this thread's other CPUs; None with no other CPU to use (nothing
/// changes then).
pub(crate) fn pinned_here() -> Option<(Away, CpuSet)> {
    let saved = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let here = nix::sched::sched_getcpu()
        .ok()
        .filter(|&c| saved.is_set(c).unwrap_or(false))?;
    let others = other_cpus_of(&saved, here)?;
    let mut pin = CpuSet::new();
    pin.set(here).ok()?;
    sched_setaffinity(Pid::from_raw(0), &pin).ok()?;
    Some((Away(Some(saved)), others))
}

impl Drop for Away {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = sched_setaffinity(Pid::from_raw(0), saved);
        }
    }
}

/// Keeps this thread off the CPU `pid` is on until the guard is dropped, so
/// that a wakeup by `pid` puts it on another. Nothing changes with no other
/// CPU to use.
pub(crate) fn away_from(pid: Pid) -> Away {
    let Some(saved) = sched_getaffinity(Pid::from_raw(0)).ok() else {
        return Away(None);
    };
    // With one CPU (a guest's default) there is nowhere to go: no read of /proc.
    let first = (0..CpuSet::count()).find(|&c| saved.is_set(c).unwrap_or(false));
    if first.and_then(|c| other_cpus_of(&saved, c)).is_none() {
        return Away(None);
    }
    cpu_of(pid).map_or(Away(None), |cpu| away_from_cpu_of(saved, cpu))
}

/// Keeps this thread, whose CPUs are `saved`, off `cpu` until the guard is
/// dropped; nothing changes with no other CPU to use.
fn away_from_cpu_of(saved: CpuSet, cpu: usize) -> Away {
    match other_cpus_of(&saved, cpu) {
        Some(away) => keep_to(saved, &away),
        None => Away(None),
    }
}

/// Keeps this thread, whose CPUs are `saved`, on `away` until the guard is
/// dropped; nothing changes when the kernel refuses.
fn keep_to(saved: CpuSet, away: &CpuSet) -> Away {
    match sched_setaffinity(Pid::from_raw(0), away) {
        Ok(()) => Away(Some(saved)),
        Err(_) => Away(None),
    }
}

/// `set` without `cpu`; None when that leaves none.
fn other_cpus_of(set: &CpuSet, cpu: usize) -> Option<CpuSet> {
    let mut set = *set;
    set.unset(cpu).ok()?;
    // One comparison, not a test of each of the set's 1024 bits (which a
    // one-CPU guest paid twice per create).
    (set != CpuSet::new()).then_some(set)
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
    fn sharing_a_cpu_with_a_process_this_thread_leaves_it() {
        std::thread::spawn(|| {
            // This thread is on its own CPU, so "the process" shares it.
            // (A move of this thread between its two reads of the CPU makes
            // one call run with every CPU: a few tries.)
            let ours = allowed();
            let runs: Vec<usize> = (0..5)
                .map(|_| {
                    let _away = away_if_sharing(me());
                    allowed()
                })
                .collect();
            if ours > 1 {
                assert!(runs.contains(&(ours - 1)), "every CPU but this one: {runs:?} of {ours}");
            } else {
                assert_eq!(runs, [ours; 5], "one CPU: nothing changes");
            }
            assert_eq!(allowed(), ours, "the affinity is put back");
            let _none = away_if_sharing(Pid::from_raw(i32::MAX));
            assert_eq!(allowed(), ours, "no such process: nothing changes");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn away_from_a_process_leaves_its_cpu_out_until_dropped() {
        std::thread::spawn(|| {
            let before = allowed();
            {
                let _away = away_from(me());
                let during = allowed();
                if before > 1 {
                    // (Unless this thread moved between reading its CPU and
                    // setting the mask: then the mask leaves its old CPU out.)
                    assert_eq!(during, before - 1);
                } else {
                    assert_eq!(during, before, "one CPU: nothing changes");
                }
            }
            assert_eq!(allowed(), before, "put back");
            let _none = away_from(Pid::from_raw(i32::MAX));
            assert_eq!(allowed(), before, "no such process: nothing changes");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_other_cpus_are_what_is_left_without_the_one() {
        let set = |cpus: &[usize]| {
            let mut s = CpuSet::new();
            cpus.iter().for_each(|&c| s.set(c).unwrap());
            s
        };
        assert_eq!(other_cpus_of(&set(&[0]), 0), None);
        assert_eq!(other_cpus_of(&set(&[0, 1000]), 0), Some(set(&[1000])));
        assert_eq!(other_cpus_of(&set(&[3]), 0), Some(set(&[3])));
        assert_eq!(other_cpus_of(&set(&[]), 7), None);
    }

    #[test]
    fn the_processor_field_is_read() {
        // SAFETY: sched_getcpu takes no arguments.
        let here = unsafe { libc::sched_getcpu() } as usize;
        let read = cpu_of(me()).expect("the processor field of this thread's stat");
        // SAFETY: as the first.
        let after = unsafe { libc::sched_getcpu() } as usize;
        // (A thread that moved between the reads may have been on either.)
        assert!(read == here || here != after, "read {read}, on {here}");
    }
}
