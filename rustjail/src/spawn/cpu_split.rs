//! The parent and the child of a `vfork` spawn on different CPUs.
//!
//! The child's `execve` wakes the parent, and the kernel puts a woken
//! thread on the waker's CPU even with another idle (see `crate::overlap`;
//! `sched_wakeup` tracing: 22 of 23 creates). The parent then waited there
//! until the new process blocked, ~0.13 ms into every create, before it
//! could send the config that process was blocked on. So the parent pins
//! itself to its CPU for the clone, the child moves itself to the parent's
//! other CPUs before it executes, and the program takes the parent's CPUs
//! back first thing ([`take_back`], from `helper::dispatch`).

use std::ffi::CString;

/// Names the CPUs a spawned program takes back (a list such as `0,2,3`).
pub const CPUS_ENV: &str = "_RUSTJAIL_CPUS";

/// This thread pinned to its CPU for a spawn; its CPUs are put back on drop.
pub(super) struct Split {
    /// This thread's CPUs before.
    all: libc::cpu_set_t,
    /// Those without this thread's CPU: the child's until it executes.
    pub(super) child: libc::cpu_set_t,
}

impl Split {
    /// Pins this thread to the CPU it runs on; None when it may use only
    /// one CPU, or the pin is refused (nothing changed then).
    pub(super) fn pin_here() -> Option<Split> {
        // SAFETY: an all-zero cpu_set_t is an empty set; the calls write at
        // most its size, for this thread.
        unsafe {
            let mut all: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut all) != 0 || libc::CPU_COUNT(&all) < 2 {
                return None;
            }
            let here = usize::try_from(libc::sched_getcpu()).ok()?;
            if !libc::CPU_ISSET(here, &all) {
                return None;
            }
            let mut child = all;
            libc::CPU_CLR(here, &mut child);
            let mut pin: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(here, &mut pin);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &pin) != 0 {
                return None;
            }
            Some(Split { all, child })
        }
    }

    /// The environment entry that has the program take this thread's CPUs back.
    pub(super) fn env(&self) -> CString {
        CString::new(format!("{CPUS_ENV}={}", cpu_list(&self.all))).expect("digits and commas")
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        // SAFETY: sched_setaffinity of this thread with the set it had.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.all) };
    }
}

/// In the child, before it executes: off the parent's CPU. Async-signal-safe
/// (one raw syscall); a failure leaves it where it is.
///
/// # Safety
/// Only for the child of a spawn (any thread may call it, it only moves the caller).
pub(super) unsafe fn move_child(cpus: &libc::cpu_set_t) {
    libc::syscall(
        libc::SYS_sched_setaffinity,
        0,
        size_of::<libc::cpu_set_t>(),
        cpus as *const libc::cpu_set_t,
    );
}

/// `0,1,3`: the CPUs of `set`.
fn cpu_list(set: &libc::cpu_set_t) -> String {
    let cpus: Vec<String> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set within its size.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
        .map(|c| c.to_string())
        .collect();
    cpus.join(",")
}

/// The set of a list [`cpu_list`] wrote; None when it names no CPU or is not one.
fn parse_cpu_list(list: &str) -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in list.split(',') {
        let c: usize = c.parse().ok()?;
        if c >= libc::CPU_SETSIZE as usize {
            return None;
        }
        // SAFETY: c is within the set's size.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: CPU_COUNT reads the set within its size.
    (unsafe { libc::CPU_COUNT(&set) } > 0).then_some(set)
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
        // SAFETY: sched_setaffinity of this thread with a valid set.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine() -> libc::cpu_set_t {
        // SAFETY: as in pin_here.
        unsafe {
            let mut s: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut s), 0);
            s
        }
    }

    fn count(s: &libc::cpu_set_t) -> i32 {
        // SAFETY: reads the set.
        unsafe { libc::CPU_COUNT(s) }
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
