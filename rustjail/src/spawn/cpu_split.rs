//! The parent and the child of a `vfork` spawn on different CPUs.
//!
//! The child's `execve` wakes the parent, and the kernel puts a woken
//! thread on the waker's CPU even with another idle (see `crate::overlap`;
//! `sched_wakeup` tracing: 22 of 23 creates). The parent then waited there
//! until the new process blocked, ~0.13 ms into every create, before it
//! could send the config that process was blocked on. So the parent pins
//! itself to its CPU for the clone ([`crate::overlap::pinned_here`]), the
//! child moves itself to the parent's other CPUs before it executes, and the
//! program takes the parent's CPUs back first thing ([`take_back`], from
//! `helper::dispatch`).

use std::ffi::CString;

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::overlap::{pinned_here, Away};

/// Names the CPUs a spawned program takes back (a list such as `0,2,3`).
pub const CPUS_ENV: &str = "_RUSTJAIL_CPUS";

/// This thread pinned to its CPU for a spawn; its CPUs are put back on drop.
pub(super) struct Split {
    pinned: Away,
    /// This thread's other CPUs: the child's until it executes.
    pub(super) child: CpuSet,
}

impl Split {
    /// Pins this thread to the CPU it runs on; None when it may use only
    /// one CPU, or the pin is refused (nothing changed then).
    pub(super) fn pin_here() -> Option<Split> {
        let (pinned, child) = pinned_here()?;
        Some(Split { pinned, child })
    }

    /// The environment entry that has the program take this thread's CPUs back.
    pub(super) fn env(&self) -> CString {
        let all = self.pinned.saved().map(cpu_list).unwrap_or_default();
        CString::new(format!("{CPUS_ENV}={all}")).expect("digits and commas")
    }
}

/// In the child, before it executes: off the parent's CPU. Async-signal-safe
/// (libc's sched_setaffinity is the bare system call); a failure leaves it
/// where it is.
pub(super) fn move_child(cpus: &CpuSet) {
    let _ = sched_setaffinity(Pid::from_raw(0), cpus);
}

/// `0,1,3`: the CPUs of `set`.
fn cpu_list(set: &CpuSet) -> String {
    let cpus: Vec<String> = (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    cpus.join(",")
}

/// The set of a list [`cpu_list`] wrote; None when it is not one (an empty
/// list included).
fn parse_cpu_list(list: &str) -> Option<CpuSet> {
    let mut set = CpuSet::new();
    for c in list.split(',') {
        set.set(c.parse().ok()?).ok()?;
    }
    Some(set)
}

/// In a program a spawn started: takes back the CPUs its parent had, when
/// the spawn moved it off one ([`CPUS_ENV`]). Call it while the process has
/// one thread (it sets the calling thread's).
pub fn take_back() {
    take_back_from(std::env::var_os(CPUS_ENV).as_deref());
}

/// [`take_back`] with the environment's value.
fn take_back_from(list: Option<&std::ffi::OsStr>) {
    if let Some(set) = list.and_then(|l| l.to_str()).and_then(parse_cpu_list) {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine() -> CpuSet {
        nix::sched::sched_getaffinity(Pid::from_raw(0)).unwrap()
    }

    fn count(s: &CpuSet) -> usize {
        (0..CpuSet::count()).filter(|&c| s.is_set(c).unwrap()).count()
    }

    #[test]
    fn cpu_lists_go_both_ways() {
        let set = parse_cpu_list("0,2,5").unwrap();
        assert_eq!(cpu_list(&set), "0,2,5");
        assert!(parse_cpu_list("").is_none());
        assert!(parse_cpu_list("1,x").is_none());
        assert!(parse_cpu_list("99999").is_none());
    }

    #[test]
    fn a_program_takes_back_the_cpus_named() {
        std::thread::spawn(|| {
            let all = mine();
            let Some(split) = Split::pin_here() else { return };
            let env = split.env();
            let value = env.to_str().unwrap().split_once('=').unwrap().1.to_string();
            // As the child would be: pinned (here, to this thread's CPU).
            std::mem::forget(split);
            assert_eq!(count(&mine()), 1);
            take_back_from(Some(std::ffi::OsStr::new(&value)));
            assert_eq!(cpu_list(&mine()), cpu_list(&all));
            take_back_from(Some(std::ffi::OsStr::new("not a list")));
            take_back_from(None);
            assert_eq!(cpu_list(&mine()), cpu_list(&all), "nothing changes without a list");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_pin_holds_one_cpu_and_the_child_gets_the_others() {
        std::thread::spawn(|| {
            let before = mine();
            match Split::pin_here() {
                None => assert_eq!(count(&before), 1, "not pinned with more than one CPU"),
                Some(split) => {
                    assert_eq!(count(&mine()), 1, "pinned");
                    assert_eq!(count(&split.child), count(&before) - 1);
                    assert_eq!(
                        split.env().to_str().unwrap(),
                        format!("{CPUS_ENV}={}", cpu_list(&before))
                    );
                    drop(split);
                    assert_eq!(cpu_list(&mine()), cpu_list(&before), "put back");
                }
            }
        })
        .join()
        .unwrap();
    }
}
