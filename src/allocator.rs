//! The static (musl) build's global allocator: dlmalloc behind a futex lock.
//!
//! musl's own malloc hands every freed page group back to the kernel, so a
//! container's create to remove cost a few hundred mmap/munmap pairs in the
//! agent, each munmap a TLB flush on the other CPUs, and as many page faults
//! again. dlmalloc keeps them. Its `global` feature guards it with a pthread
//! mutex, two calls into the C library per allocation and two per free
//! (in a profile of the container cycle, 10% of the agent's user time); the
//! standard library's mutex takes and gives back an uncontended lock inline.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, PoisonError};

use dlmalloc::Dlmalloc;

/// dlmalloc's state, touched only with the lock held.
struct State(Dlmalloc);

// SAFETY: the raw pointers in dlmalloc's state point into memory it mapped for
// itself; any thread may use them while it holds the lock, which every entry
// point below takes.
unsafe impl Send for State {}

/// The global allocator: one dlmalloc for the process.
pub struct Global(Mutex<State>);

impl Global {
    /// An allocator that has mapped nothing yet.
    pub const fn new() -> Self {
        Global(Mutex::new(State(Dlmalloc::new())))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Dlmalloc) -> T) -> T {
        // A panic cannot leave dlmalloc half-way (it does not unwind through
        // its own code): a poisoned lock is as good as any.
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g.0)
    }
}

impl Default for Global {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call passes its arguments to dlmalloc as `GlobalDlmalloc`
// does, under the lock; dlmalloc meets `GlobalAlloc`'s contract.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a layout of non-zero size, as the caller promises.
        self.with(|d| unsafe { d.malloc(layout.size(), layout.align()) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`.
        self.with(|d| unsafe { d.free(ptr, layout.size(), layout.align()) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        self.with(|d| unsafe { d.calloc(layout.size(), layout.align()) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; `new_size`
        // is non-zero and fits as the caller promises.
        self.with(|d| unsafe { d.realloc(ptr, layout.size(), layout.align(), new_size) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_frees_grows_and_zeroes_from_many_threads() {
        static A: Global = Global::new();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 1..2000usize {
                        let size = (i * 37 + t) % 5000 + 1;
                        let l = Layout::from_size_align(size, 16).unwrap();
                        // SAFETY: non-zero sizes; each pointer is freed once
                        // with the layout it was made with.
                        unsafe {
                            let p = A.alloc_zeroed(l);
                            assert!(!p.is_null());
                            assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                            p.write_bytes(t as u8 + 1, size);
                            let q = A.realloc(p, l, size * 2);
                            assert!(!q.is_null());
                            assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == t as u8 + 1));
                            A.dealloc(q, Layout::from_size_align(size * 2, 16).unwrap());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
