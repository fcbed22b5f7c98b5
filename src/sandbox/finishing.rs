//! An operation that runs in its caller's task yet finishes even when the
//! caller stops waiting for it.
//!
//! Why not a task of its own: the caller then waits on a join handle, and the
//! op's end wakes it on another worker thread. After a create that other
//! worker was asleep on the CPU the new init runs on and, with the guest's
//! scheduler keeping a woken thread on its last CPU, waited there behind the
//! init's last steps before it could answer (~0.1 ms, `sched_switch`
//! tracing) while the thread that finished the create sat on the other CPU.
//! Run in the caller's task, that thread answers itself.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{Error, Result};

type Op<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// Runs `op` in the awaiting task. Dropped before `op` is done (a client's
/// deadline, a closed connection), it hands `op` to a task of its own, which
/// takes it to its end: nothing is stopped half-way. A panic in `op` is an
/// [`Error::Internal`], as a panicked task's join is. The first poll only
/// yields: the caller's first poll (the connection's reader runs every call
/// once) goes on at once, as with a spawned task, and `op`'s blocking steps
/// run in the call's own task.
pub(crate) fn finishing<T, F>(op: F) -> Finishing<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    Finishing {
        op: Some(Box::pin(op)),
        yielded: false,
    }
}

/// The future of [`finishing`].
pub(crate) struct Finishing<T: Send + 'static> {
    op: Option<Op<T>>,
    yielded: bool,
}

impl<T: Send + 'static> Future for Finishing<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(op) = self.op.as_mut() else {
            return Poll::Ready(Err(Error::Internal("sandbox operation polled after its end".into())));
        };
        let polled = catch_unwind(AssertUnwindSafe(|| op.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => {
                self.op = None;
                Poll::Ready(r)
            }
            Err(panic) => {
                // Not polled again, nor handed on.
                self.op = None;
                Poll::Ready(Err(Error::Internal(format!(
                    "sandbox task panicked: {}",
                    panic_text(&panic)
                ))))
            }
        }
    }
}

impl<T: Send + 'static> Drop for Finishing<T> {
    fn drop(&mut self) {
        let Some(op) = self.op.take() else { return };
        // Without a runtime (the agent is going down) there is nothing to run it on.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(op);
        }
    }
}

fn panic_text(panic: &Box<dyn Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn the_result_comes_back() {
        assert_eq!(finishing(async { Ok(7) }).await.unwrap(), 7);
        let e = finishing::<(), _>(async { Err(Error::ContainerNotFound("c".into())) }).await;
        assert!(matches!(e, Err(Error::ContainerNotFound(id)) if id == "c"));
    }

    #[tokio::test]
    async fn an_op_whose_caller_gives_up_still_runs_to_its_end() {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let started = Arc::new(AtomicBool::new(false));
        let s = started.clone();
        let op = finishing(async move {
            s.store(true, Ordering::SeqCst);
            let _ = wait.await;
            let _ = done_tx.send("finished");
            Ok(())
        });
        // The caller's deadline passes while the op waits half-way.
        assert!(tokio::time::timeout(Duration::from_millis(50), op).await.is_err());
        assert!(
            started.load(Ordering::SeqCst),
            "the op had started in the caller's task"
        );
        go.send(()).unwrap();
        assert_eq!(done.await.unwrap(), "finished");
    }

    #[tokio::test]
    async fn an_op_dropped_before_its_first_poll_still_runs() {
        let (done_tx, done) = tokio::sync::oneshot::channel();
        drop(finishing(async move {
            let _ = done_tx.send(());
            Ok(())
        }));
        done.await.expect("the op ran on a task of its own");
    }

    #[tokio::test]
    async fn a_panic_is_an_internal_error_and_not_run_again() {
        let e = finishing::<(), _>(async { panic!("boom") }).await;
        match e {
            Err(Error::Internal(m)) => assert!(m.contains("boom"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
