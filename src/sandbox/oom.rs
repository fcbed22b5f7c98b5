//! OOM kills of containers, for `GetOOMEvent`. One task per container watches
//! its cgroup (v1: the `memory.oom_control` eventfd; v2: `memory.events` with
//! inotify) and queues the container id each time the kill count goes up.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use rustjail::cgroups::{Manager, OomWatch};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::server::after_answer::after_answer;

/// Starts watching `cg` for container `id`; events go to `tx`. The task ends
/// when the cgroup goes away or is aborted, or at once when the cgroup
/// cannot be watched. The watch is armed by the task, not before this
/// returns: a restart takes a hundred containers back before it serves, and
/// arming each (files of the cgroup opened, an eventfd registered) was a
/// third of that time; a container is not running yet when it is created.
/// With one CPU (a one-vCPU guest, Kata's default), within a call (a
/// create), the task arms it once the call's answer is written
/// ([`after_answer`]): woken before, it took that CPU from the answer (~60
/// µs of each pinned CreateContainer, traced), whatever it yielded to within
/// tokio. With more it starts at once and arms beside the answer: after it,
/// it met the StartContainer that follows (start ~0.07 ms slower, 7 of 8
/// runs).
pub(crate) fn watch(id: String, cg: Manager, tx: UnboundedSender<String>) -> JoinHandle<()> {
    let answered = rustjail::one_cpu().then(|| {
        let (answered, wait) = tokio::sync::oneshot::channel::<()>();
        after_answer(move || {
            let _ = answered.send(());
        });
        wait
    });
    tokio::spawn(async move {
        if let Some(wait) = answered {
            // Sent, or dropped unsent: either way the answer is out. Outside
            // a call it was sent at once.
            let _ = wait.await;
        }
        // What else is ready runs first (a restart's other containers).
        tokio::task::yield_now().await;
        if let Ok((afd, by_counter)) = arm(&id, &cg) {
            follow(id, cg, afd, by_counter, tx).await
        }
    })
}

/// The descriptor to wait on, and whether the kill counter decides.
fn arm(id: &str, cg: &Manager) -> Result<(AsyncFd<OwnedFd>, bool), String> {
    let how = cg.oom_watch().map_err(|e| format!("OOM watch for {id}: {e}"))?;
    // v1 signals the eventfd when the OOM starts, before the kill counter moves:
    // each signal is an event. v2 touches memory.events for other events too:
    // there the counter decides.
    let by_counter = matches!(how, OomWatch::MemoryEvents(_));
    let fd: OwnedFd = match how {
        OomWatch::EventFd(fd) => fd,
        OomWatch::MemoryEvents(path) => {
            let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .map_err(|e| format!("inotify_init1 for {id}: {e}"))?;
            ino.add_watch(&path, AddWatchFlags::IN_MODIFY)
                .map_err(|e| format!("inotify_add_watch({}): {e}", path.display()))?;
            use std::os::fd::AsFd;
            ino.as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("fcntl(F_DUPFD_CLOEXEC) on inotify fd for {id}: {e}"))?
        }
    };
    // SAFETY: the OwnedFd stays open, and is the same descriptor, for the AsyncFd's lifetime.
    let afd = unsafe { AsyncFd::register(fd) }.map_err(|e| format!("register OOM watch of {id}: {e}"))?;
    Ok((afd, by_counter))
}

/// Reads what `fd` has (the eventfd counter or the inotify events; what
/// matters is the kill count); true when it had nothing. Not in the task:
/// its buffer would be part of every watch's state, 4 KiB per container.
fn drain(fd: i32) -> bool {
    let mut buf = [0u8; 4096];
    // SAFETY: read into a buffer we own, of the length given.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// Queues `id` on each OOM kill until the cgroup goes away.
async fn follow(id: String, cg: Manager, afd: AsyncFd<OwnedFd>, by_counter: bool, tx: UnboundedSender<String>) {
    let mut seen = cg.oom_kill_count().unwrap_or(0);
    loop {
        let Ok(mut guard) = afd.readable().await else { return };
        if drain(afd.get_ref().as_raw_fd()) {
            guard.clear_ready();
            continue;
        }
        // The cgroup was removed (v1 signals that too): the count cannot be read any more.
        let Ok(now) = cg.oom_kill_count() else { return };
        if now > seen || !by_counter {
            seen = now;
            if tx.send(id.clone()).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    /// Whether `watch`, called within a call, had armed (or failed to: there
    /// is no such cgroup, and the task then ends) 50 ms later, before the
    /// call's answer; and that it does once the answer is out.
    async fn armed_before_the_answer() -> bool {
        let cg = Manager::new(Some(Path::new("/pith-no-such-cgroup-for-oom")), "c").unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut task = None;
        let mut before = false;
        crate::server::after_answer::scope(async {
            let h = watch("c".into(), cg, tx);
            tokio::time::sleep(Duration::from_millis(50)).await;
            before = h.is_finished();
            task = Some(h);
        })
        .await;
        tokio::time::timeout(Duration::from_secs(5), task.unwrap())
            .await
            .unwrap()
            .unwrap();
        before
    }

    // Current-thread runtime: the task runs on this thread, whose affinity the test sets.
    #[tokio::test]
    async fn with_one_cpu_a_call_arms_the_watch_once_its_answer_is_out() {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let me = Pid::from_raw(0);
        let saved = sched_getaffinity(me).unwrap();
        let many = (0..CpuSet::count())
            .filter(|&c| saved.is_set(c).unwrap_or(false))
            .count()
            > 1;
        if many {
            assert!(
                armed_before_the_answer().await,
                "with several CPUs it arms beside the answer"
            );
        }
        let mut one = CpuSet::new();
        one.set(nix::sched::sched_getcpu().unwrap()).unwrap();
        sched_setaffinity(me, &one).unwrap();
        let before = armed_before_the_answer().await;
        sched_setaffinity(me, &saved).unwrap();
        assert!(!before, "with one CPU it armed before the answer");
    }
}
