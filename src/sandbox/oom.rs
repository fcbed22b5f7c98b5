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
/// Within a call (a create) the task arms it once the call's answer is
/// written ([`after_answer`]): woken before, it took the CPU from the
/// answer on a one-CPU guest (~60 µs of each pinned CreateContainer,
/// traced), whatever it yielded to within tokio.
pub(crate) fn watch(id: String, cg: Manager, tx: UnboundedSender<String>) -> JoinHandle<()> {
    let (answered, wait) = tokio::sync::oneshot::channel::<()>();
    after_answer(move || {
        let _ = answered.send(());
    });
    tokio::spawn(async move {
        // Sent, or dropped unsent: either way the answer is out. Outside a
        // call (a restart taking its containers back) it was sent at once:
        // what else is ready runs first, as before.
        let _ = wait.await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_arms_the_watch_once_its_answer_is_out() {
        // No such cgroup: arming fails at once and the task ends, which shows when it armed.
        let cg = Manager::new(Some(Path::new("/pith-no-such-cgroup-for-oom")), "c").unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut task = None;
        crate::server::after_answer::scope(async {
            let h = watch("c".into(), cg.clone(), tx.clone());
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!h.is_finished(), "armed before the answer");
            task = Some(h);
        })
        .await;
        let h = task.unwrap();
        tokio::time::timeout(Duration::from_secs(5), h).await.unwrap().unwrap();
        // Outside a call it arms at once.
        let h = watch("c".into(), cg, tx);
        tokio::time::timeout(Duration::from_secs(5), h).await.unwrap().unwrap();
    }
}
