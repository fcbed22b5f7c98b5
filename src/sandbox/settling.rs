//! Work a call leaves running after its answer: a removed container's mount
//! namespace closed ([`super::mount_ns`]) and the directories of its cgroup
//! removed (eight rmdirs on cgroup v1, ~0.1 ms). It starts once
//! the answer is written ([`after_answer`]), so it takes no CPU from it.
//! DestroySandbox waits for it (starting what has not started: its own
//! removals' work, whose answer is its own), and so does an upgrade, which
//! would lose it in its execve; a create with the same cgroup waits in the
//! engine (`rustjail::removing`), and no other call waits at all.

use std::sync::{Arc, Mutex};

use slog::{warn, Logger};
use tokio::sync::Notify;

use crate::server::after_answer::after_answer;

/// What is left of an operation, to run on a blocking thread after the answer.
pub(crate) type Later = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// The count of [`Later`] work not yet done, and the work not yet started.
#[derive(Default)]
pub(crate) struct Settling {
    running: Arc<Count>,
    waiting: Arc<Mutex<Vec<Job>>>,
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

/// One [`Later`], counted, with what its failure is logged as.
struct Job {
    later: Later,
    what: String,
    log: Logger,
    _running: Running,
}

impl Job {
    fn run(self) {
        if let Err(e) = (self.later)() {
            warn!(self.log, "cleanup after the answer failed"; "what" => self.what, "error" => e);
        }
    }
}

/// Starts every job in `waiting`, each on a blocking thread (here without a
/// runtime: the runtime going down).
fn start(waiting: &Mutex<Vec<Job>>) {
    let jobs = std::mem::take(&mut *crate::sandbox::lock(waiting));
    for job in jobs {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || job.run())),
            Err(_) => job.run(),
        }
    }
}

impl Settling {
    /// Runs `later` on a blocking thread once the current call's answer is
    /// written; its failure is logged with `what`.
    pub(crate) fn run(&self, log: &Logger, what: String, later: Later) {
        *crate::sandbox::lock(&self.running.n) += 1;
        let job = Job {
            later,
            what,
            log: log.clone(),
            _running: Running(self.running.clone()),
        };
        crate::sandbox::lock(&self.waiting).push(job);
        let waiting = self.waiting.clone();
        after_answer(move || start(&waiting));
    }

    /// Returns once no [`Later`] work is left.
    pub(crate) async fn settled(&self) {
        start(&self.waiting);
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

    /// Work that sets `done`.
    fn sets(done: Arc<AtomicBool>) -> Later {
        Box::new(move || {
            done.store(true, SeqCst);
            Ok(())
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_left_by_a_call_starts_after_its_answer() {
        let s = Arc::new(Settling::default());
        let log = Logger::root(slog::Discard, slog::o!());
        let done = Arc::new(AtomicBool::new(false));
        let (d, s2) = (done.clone(), s.clone());
        crate::server::after_answer::scope(async move {
            s2.run(&log, "rmdir".into(), sets(d));
            // The answer is being written: the work has not been started.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(s2.waiting.lock().unwrap().len(), 1, "started before the answer");
        })
        .await;
        s.settled().await;
        assert!(done.load(SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_waiting_for_its_own_work_starts_it() {
        // DestroySandbox: its removals' work, then settled() before its answer.
        let s = Arc::new(Settling::default());
        let log = Logger::root(slog::Discard, slog::o!());
        let done = Arc::new(AtomicBool::new(false));
        let (d, s2) = (done.clone(), s.clone());
        let call = crate::server::after_answer::scope(async move {
            s2.run(&log, "rmdir".into(), sets(d));
            s2.settled().await;
        });
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("settled() waited for work that starts only after its own answer");
        assert!(done.load(SeqCst));
    }
}
