//! Low descriptor numbers kept for spawns, so that a child copies a few
//! entries of its parent's descriptor table rather than all of them.
//!
//! A child made by `clone` copies the whole table (one reference taken per
//! open file), and its `execve` closes every close-on-exec entry again (one
//! flush per file): an agent with 200 containers holds ~2,000 descriptors,
//! and that pair cost a container's start ~1 ms (perf: `do_close_on_exec`).
//! Instead the child shares the table (`CLONE_FILES`) and takes a private
//! copy of its first entries only (`close_range(n, ~0, CLOSE_RANGE_UNSHARE)`
//! copies those below `n`). What the child needs must then sit below `n`:
//! a spawn places it in a group of numbers reserved at start-up, while they
//! are still low, each holding a placeholder between spawns.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use crate::error::{sys, Result};

/// Numbers in a group: a spawn's sources (an agent's: the sync socket and
/// three stdio descriptors), the binary and the error pipe. Each is an open
/// descriptor for the process's life, counted against its RLIMIT_NOFILE.
pub(crate) const GROUP_FDS: usize = 6;

/// The lowest number a group takes: above the agent's destinations (stdio
/// and the sync socket on 3), which the child's `dup2` calls write over.
const LOWEST: RawFd = 4;

/// Groups not leased now.
static FREE: Mutex<Vec<[RawFd; GROUP_FDS]>> = Mutex::new(Vec::new());

/// What every free slot holds: `/` opened `O_PATH` (-1 before a reservation).
static PLACEHOLDER: AtomicI32 = AtomicI32::new(-1);

/// Reserves `groups` groups of low descriptor numbers for spawns (a process
/// that starts containers from several threads at once wants one per
/// thread; a spawn finding none free copies the table up to its own highest
/// descriptor, which in a full table is most of it). Call early, while the
/// low numbers are free: a reservation made later takes whatever numbers are
/// free then, and helps less.
pub fn reserve(groups: usize) -> Result<()> {
    let mut placeholder = PLACEHOLDER.load(Ordering::Acquire);
    if placeholder < 0 {
        // SAFETY: open with a NUL-terminated path; the descriptor is kept for the process's life.
        let fd = unsafe { libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY) };
        if fd < 0 {
            return Err(sys("open", "/ (spawn placeholder)")(nix::Error::last()));
        }
        // The placeholder itself may sit high: it is never placed in a child.
        let high = dup_at_least(fd, 64).unwrap_or(fd);
        if high != fd {
            // SAFETY: closes the low copy this function just opened.
            unsafe { libc::close(fd) };
        }
        match PLACEHOLDER.compare_exchange(-1, high, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => placeholder = high,
            Err(other) => {
                // SAFETY: closes our own copy; another caller's won.
                unsafe { libc::close(high) };
                placeholder = other;
            }
        }
    }
    for _ in 0..groups {
        let mut group = [-1; GROUP_FDS];
        for slot in group.iter_mut() {
            *slot = dup_at_least(placeholder, LOWEST)?;
        }
        group.sort_unstable();
        free().push(group);
    }
    Ok(())
}

fn free() -> std::sync::MutexGuard<'static, Vec<[RawFd; GROUP_FDS]>> {
    // A panic while holding it cannot leave the list half-changed.
    FREE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A close-on-exec copy of `fd` numbered `min` or above.
fn dup_at_least(fd: RawFd, min: RawFd) -> Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor this module keeps open.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(sys("fcntl(F_DUPFD_CLOEXEC)", format!("spawn slot from fd {fd}"))(
            nix::Error::last(),
        ));
    }
    Ok(new)
}

/// One group, leased to one spawn; given back (its slots holding the
/// placeholder again) when dropped.
pub(crate) struct Lease {
    group: [RawFd; GROUP_FDS],
    used: usize,
}

impl Lease {
    /// A free group whose numbers are all `above` or higher, for `count`
    /// descriptors; None when there is none (none reserved, all leased, or
    /// too many descriptors).
    pub(crate) fn take(count: usize, above: RawFd) -> Option<Lease> {
        if count > GROUP_FDS {
            return None;
        }
        let mut free = free();
        let i = free.iter().position(|g| g[0] >= above)?;
        Some(Lease {
            group: free.swap_remove(i),
            used: 0,
        })
    }

    /// Puts a close-on-exec copy of `fd` in the next slot; returns its number.
    pub(crate) fn place(&mut self, fd: RawFd, what: &str) -> Result<RawFd> {
        let slot = self.group[self.used];
        // SAFETY: dup3 onto a slot this lease owns; it replaces the placeholder or an earlier copy.
        if unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) } < 0 {
            return Err(sys("dup3", format_args!("{what} (fd {fd}) to spawn slot {slot}"))(
                nix::Error::last(),
            ));
        }
        self.used += 1;
        Ok(slot)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let placeholder = PLACEHOLDER.load(Ordering::Acquire);
        let mut whole = true;
        for &slot in &self.group[..self.used] {
            // SAFETY: dup3 onto a slot this lease owns, from the placeholder kept open.
            if unsafe { libc::dup3(placeholder, slot, libc::O_CLOEXEC) } < 0 {
                // The copy must go (the error pipe's reader waits for its
                // end); the number is then free, so the group is never lent again.
                // SAFETY: closes the copy this lease placed there.
                unsafe { libc::close(slot) };
                whole = false;
            }
        }
        if whole {
            free().push(self.group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn ino(fd: RawFd) -> (u64, u64) {
        // SAFETY: a plain C struct, all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into that local struct.
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0, "fstat {fd}");
        (st.st_dev, st.st_ino)
    }

    /// A leased slot holds the copy placed in it, and the placeholder again
    /// once the lease is given back; a group is lent to one spawn at a time.
    #[test]
    fn a_lease_places_copies_and_gives_its_slots_back() {
        reserve(1).unwrap();
        let root = ino(std::fs::File::open("/").unwrap().as_raw_fd());
        let file = tempfile::tempfile().unwrap();
        // Other tests of this process lease groups too: take until one comes.
        let mut lease = loop {
            if let Some(l) = Lease::take(2, LOWEST) {
                break l;
            }
            std::thread::yield_now();
        };
        let slot = lease.place(file.as_raw_fd(), "test file").unwrap();
        assert!(slot >= LOWEST);
        assert_eq!(ino(slot), ino(file.as_raw_fd()));
        // SAFETY: F_GETFD on the slot.
        assert_ne!(unsafe { libc::fcntl(slot, libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
        drop(lease);
        assert_eq!(ino(slot), root, "slot {slot} holds the placeholder again");
        assert!(Lease::take(GROUP_FDS + 1, LOWEST).is_none(), "more than a group holds");
    }
}
