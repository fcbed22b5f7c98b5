//! Gives the memory of closed connections back to the kernel after a burst.
//!
//! glibc's malloc keeps freed memory in its arenas (one per thread that
//! allocated), so after a thousand connections come and go the agent's RSS
//! stays where the burst left it. When the number of open connections falls to
//! a quarter of the peak since the last reclaim, `malloc_trim(0)` returns the
//! free pages of every arena. musl's malloc unmaps free memory by itself and
//! has no `malloc_trim`: there this does nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bursts smaller than this are not worth a trim.
const BURST: usize = 32;
/// Wait after the fall before trimming, so a burst that is still closing is
/// trimmed once.
const SETTLE: Duration = Duration::from_millis(200);

/// Tracks the peak of open connections and trims after a burst ends.
#[derive(Default)]
pub struct Reclaim {
    peak: AtomicUsize,
    scheduled: AtomicBool,
    bursts: AtomicUsize,
    trims: AtomicUsize,
}

impl Reclaim {
    /// Records that `open` connections are open now.
    pub fn opened(&self, open: usize) {
        self.peak.fetch_max(open, Ordering::AcqRel);
    }

    /// Records a close; schedules a trim when a burst has ended.
    pub fn closed(self: &Arc<Self>, open: usize) {
        if !burst_ended(self.peak.load(Ordering::Acquire), open) || self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.scheduled.store(false, Ordering::Release);
            return;
        };
        // The next burst is measured from here.
        self.peak.store(open, Ordering::Release);
        self.bursts.fetch_add(1, Ordering::AcqRel);
        let me = self.clone();
        rt.spawn(async move {
            tokio::time::sleep(SETTLE).await;
            let _ = tokio::task::spawn_blocking(trim).await;
            me.scheduled.store(false, Ordering::Release);
            me.trims.fetch_add(1, Ordering::AcqRel);
        });
    }

    /// Bursts seen to end so far (each gets one trim).
    #[cfg(test)]
    pub fn bursts(&self) -> usize {
        self.bursts.load(Ordering::Acquire)
    }

    /// Trims done so far.
    #[cfg(test)]
    pub fn trims(&self) -> usize {
        self.trims.load(Ordering::Acquire)
    }
}

/// Whether `open` connections, after a peak of `peak`, mean a burst is over.
fn burst_ended(peak: usize, open: usize) -> bool {
    peak >= BURST && open * 4 <= peak
}

/// Returns free heap memory to the kernel.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes
    // the arena locks itself and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_ends_at_a_quarter_of_its_peak() {
        assert!(!burst_ended(10, 0), "small bursts are left alone");
        assert!(!burst_ended(1000, 251));
        assert!(burst_ended(1000, 250));
        assert!(burst_ended(BURST, 0));
    }

    #[tokio::test]
    async fn trims_once_per_burst() {
        let r = Arc::new(Reclaim::default());
        r.opened(100);
        r.closed(50);
        assert_eq!(r.bursts(), 0);
        for open in (0..26).rev() {
            r.closed(open);
        }
        // The peak starts again from what was open when the trim was scheduled.
        assert_eq!(r.bursts(), 1);
        while r.trims() == 0 {
            tokio::time::sleep(SETTLE).await;
        }
        r.opened(40);
        r.closed(10);
        assert_eq!(r.bursts(), 2);
    }
}
