//! Work a call leaves running after its answer: the directories of a removed
//! container's cgroup (eight rmdirs on cgroup v1, ~0.1 ms). DestroySandbox
//! waits for it, and so does an upgrade, which would lose it in its execve;
//! a create with the same cgroup waits in the engine
//! (`rustjail::removing`), and no other call waits at all.

use std::sync::{Arc, Mutex};

use slog::{warn, Logger};
use tokio::sync::Notify;

/// What is left of an operation, to run on a blocking thread after the answer.
pub(crate) type Later = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// The count of [`Later`] work still running.
#[derive(Default)]
pub(crate) struct Settling {
    running: Arc<Count>,
}

#[derive(Default)]
struct Count {
    n: Mutex<usize>,
    zero: Notify,
}

/// Counts one [`Later`] until dropped (also when it panics).
struct Running(Arc<Count>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut n = crate::sandbox::lock(&self.0.n);
        *n -= 1;
        if *n == 0 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Settling {
    /// Runs `later` on a blocking thread; its failure is logged with `what`.
    pub(crate) fn run(&self, log: &Logger, what: String, later: Later) {
        *crate::sandbox::lock(&self.running.n) += 1;
        let running = Running(self.running.clone());
        let log = log.clone();
        tokio::task::spawn_blocking(move || {
            let _running = running;
            if let Err(e) = later() {
                warn!(log, "cleanup after the answer failed"; "what" => what, "error" => e);
            }
        });
    }

    /// Returns once no [`Later`] work runs.
    pub(crate) async fn settled(&self) {
        loop {
            let zero = self.running.zero.notified();
            if *crate::sandbox::lock(&self.running.n) == 0 {
                return;
            }
            zero.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settled_waits_for_the_work_and_a_failure_still_counts_down() {
        let s = Settling::default();
        let log = Logger::root(slog::Discard, slog::o!());
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        s.run(
            &log,
            "slow".into(),
            Box::new(move || {
                std::thread::sleep(Duration::from_millis(50));
                d.store(true, SeqCst);
                Ok(())
            }),
        );
        s.run(&log, "failing".into(), Box::new(|| Err("no".into())));
        s.settled().await;
        assert!(done.load(SeqCst), "settled returned before the work ended");
        assert_eq!(*crate::sandbox::lock(&s.running.n), 0);
    }
}
