//! Work a call leaves for after its answer is written.
//!
//! Some work a call makes possible must neither delay its answer nor compete
//! with it for a CPU. Started on a blocking thread before the answer (a
//! removed container's cgroup directories), it woke on the answering
//! thread's CPU and preempted it: in 3 of 25 traced removals the eight rmdirs
//! (~0.3 ms) ran before the answer. A handler registers such work with
//! [`after_answer`]; the connection runs it once the answer's bytes are
//! written.

use std::cell::RefCell;
use std::future::Future;

type Work = Box<dyn FnOnce() + Send>;

/// The work one call left. Dropped with work still in it (the call dropped
/// before its answer, with its connection), it runs that work then: the work
/// is delayed, never lost.
#[derive(Default)]
struct Left(Vec<Work>);

impl Drop for Left {
    fn drop(&mut self) {
        for f in self.0.drain(..) {
            f();
        }
    }
}

tokio::task_local! {
    static AFTER: RefCell<Left>;
}

/// Runs `f` once the current call's answer is written; at once outside a call
/// (a task of its own, a test).
pub(crate) fn after_answer(f: impl FnOnce() + Send + 'static) {
    let mut f = Some(f);
    let _ = AFTER.try_with(|left| {
        if let Some(f) = f.take() {
            left.borrow_mut().0.push(Box::new(f));
        }
    });
    if let Some(f) = f {
        f();
    }
}

/// Runs `call`, which writes an answer, then the work it left.
pub(crate) async fn scope<F: Future<Output = ()>>(call: F) {
    let left = AFTER
        .scope(RefCell::new(Left::default()), async {
            call.await;
            AFTER.with(|left| std::mem::take(&mut *left.borrow_mut()))
        })
        .await;
    drop(left);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn push(order: &Arc<Mutex<Vec<&'static str>>>, what: &'static str) -> impl FnOnce() + Send + 'static {
        let order = order.clone();
        move || order.lock().unwrap().push(what)
    }

    #[tokio::test]
    async fn work_runs_after_the_answer_or_at_once_outside_a_call() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        scope(async move {
            after_answer(push(&o, "after"));
            o.lock().unwrap().push("answer");
        })
        .await;
        assert_eq!(*order.lock().unwrap(), ["answer", "after"]);
        after_answer(push(&order, "outside"));
        assert_eq!(*order.lock().unwrap(), ["answer", "after", "outside"]);
    }

    #[tokio::test]
    async fn a_call_dropped_before_its_answer_still_runs_its_work() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        let call = scope(async move {
            after_answer(push(&o, "left"));
            std::future::pending::<()>().await;
        });
        // Polled once (the work registered), then dropped with its connection.
        let mut call = Box::pin(call);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        assert!(order.lock().unwrap().is_empty(), "ran before the call ended");
        drop(call);
        assert_eq!(*order.lock().unwrap(), ["left"]);
    }
}
