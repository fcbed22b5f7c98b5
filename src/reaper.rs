//! Collecting exit statuses of child processes (container inits, exec'd
//! processes, and orphans re-parented to the agent as subreaper or PID 1).
//!
//! One task reaps every child on SIGCHLD (`waitpid(-1, WNOHANG)` until none is
//! left) and hands each status to whoever registered that pid. A status that
//! arrives before its pid is registered is kept, so a process that exits at
//! once is not lost; statuses of unregistered orphans are dropped after a while.
//!
//! In a process that runs this, nothing else may wait for its children
//! (`std::process::Child::wait` would see ECHILD): take statuses from here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::watch;

/// How long an unclaimed status is kept for a late registration.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

/// How a process ended, as a shell reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The status a shell prints: the code, or 128 + signal.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, watch::Sender<Option<Exit>>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// Called with each pid whose status was just delivered.
pub type ExitHook = Arc<dyn Fn(i32) + Send + Sync>;

/// The registry of children whose exit someone waits for.
#[derive(Clone)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
    /// Counts the statuses delivered, so that someone can act on each (the
    /// sandbox writes its state down).
    delivered: Arc<watch::Sender<u64>>,
    /// True: children are not reaped (a live upgrade: their exits wait, as
    /// zombies, for the next binary). Held across a whole [`Reaper::reap_all`].
    held: Arc<Mutex<bool>>,
    /// Told of each status after its waiter got it, before `delivered` changes.
    hook: Arc<Mutex<Option<ExitHook>>>,
}

impl Default for Reaper {
    fn default() -> Self {
        Reaper {
            table: Arc::default(),
            delivered: Arc::new(watch::channel(0).0),
            held: Arc::default(),
            hook: Arc::default(),
        }
    }
}

impl Reaper {
    /// A reaper with nothing registered; call [`Reaper::reap_all`] on SIGCHLD.
    pub fn new() -> Reaper {
        Reaper::default()
    }

    /// Registers `pid`; the receiver gets `Some(exit)` once it has ended
    /// (at once when it had already been reaped).
    pub fn watch(&self, pid: i32) -> watch::Receiver<Option<Exit>> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((exit, _)) = t.unclaimed.remove(&pid) {
            return watch::channel(Some(exit)).1;
        }
        t.waiting
            .entry(pid)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Stops reaping; once this returns no exit is between `waitpid` and
    /// its delivery.
    pub fn hold(&self) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Reaps again (and at once).
    pub fn release(&self) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.reap_all();
    }

    /// Reaps every child that has ended and delivers the statuses.
    pub fn reap_all(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if *held {
            return 0;
        }
        let mut n = 0;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(pid.as_raw(), Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.deliver(pid.as_raw(), Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
            n += 1;
        }
        drop(held);
        n
    }

    /// Changes (to the count of statuses delivered) after each status.
    pub fn delivered(&self) -> watch::Receiver<u64> {
        self.delivered.subscribe()
    }

    /// Hands `pid`'s status to whoever registered it (or keeps it for a late
    /// registration): a child reaped here, or a status the keeper reaped.
    pub fn deliver(&self, pid: i32, exit: Exit) {
        self.deliver_one(pid, exit);
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(h) = hook {
            h(pid);
        }
        self.delivered.send_modify(|n| *n += 1);
    }

    /// Has `hook` told of each status delivered from now on (replacing any
    /// hook before), after its waiter got it and before [`Reaper::delivered`]
    /// changes.
    pub fn on_exit(&self, hook: ExitHook) {
        *self.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    fn deliver_one(&self, pid: i32, exit: Exit) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match t.waiting.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(Some(exit));
            }
            None => {
                let now = Instant::now();
                t.unclaimed.retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
                t.unclaimed.insert(pid, (exit, now));
            }
        }
    }

    /// Runs [`Reaper::reap_all`] on every SIGCHLD until the runtime stops.
    pub fn spawn_on_sigchld(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            // Children that ended before the handler existed.
            me.reap_all();
            while sig.recv().await.is_some() {
                me.reap_all();
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    async fn exit_of(mut rx: watch::Receiver<Option<Exit>>) -> Exit {
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|e| e.is_some()))
            .await
            .expect("no exit status within 10 s")
            .expect("reaper dropped")
            .expect("checked")
    }

    #[tokio::test]
    // The children are reaped by the reaper under test, not by Child::wait.
    #[allow(clippy::zombie_processes)]
    async fn statuses_reach_the_waiters_even_when_they_register_late() {
        let reaper = Reaper::new();
        let _task = reaper.spawn_on_sigchld().unwrap();
        let early = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let killed = Command::new("sleep").arg("30").spawn().unwrap();
        let rx_killed = reaper.watch(killed.id() as i32);
        // Let `early` exit and be reaped before anyone asks for it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(exit_of(reaper.watch(early.id() as i32)).await, Exit::Code(3));
        nix::sys::signal::kill(Pid::from_raw(killed.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        let e = exit_of(rx_killed).await;
        assert_eq!(e, Exit::Signal(9));
        assert_eq!(e.status(), 137);
    }
}
