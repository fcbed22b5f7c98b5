//! Bringing the agent to a point where another binary can take over: no
//! connection in the middle of a frame, no call in the middle of its work.
//!
//! Connections stop reading at a frame boundary and listeners stop accepting
//! (bytes a host sends meanwhile wait in the kernel). A call either finishes
//! or is *parked*: waiting inside [`park`], around a wait that has done
//! nothing yet (WaitProcess for an exit, GetOOMEvent for an event, ReadStdout
//! for output). Once everything is stopped the waits are frozen (a parked
//! call is never polled again, so it never goes on to take the exit or the
//! bytes it waited for) and the parked calls' requests are carried over to
//! be served again by the next binary. A call that neither finishes nor
//! parks within the bound makes the upgrade give up: everything resumes.
//!
//! Why counters and not a lock: a call runs on any worker thread; `busy`
//! (calls running outside a parked wait) and `polling` (parked waits being
//! polled right now) are read after `frozen` is set, and a waiting call reads
//! `frozen` after counting itself as polling, so one of the two always sees
//! the other (sequentially consistent atomics).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::watch;

tokio::task_local! {
    static CALL: Arc<CallState>;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agent-wide switch, and the registry of connections and calls.
pub(crate) struct Pause {
    /// True: connections stop at their next frame boundary, listeners stop accepting.
    stop: watch::Sender<bool>,
    /// Parked waits are not polled.
    frozen: AtomicBool,
    /// Calls running outside a parked wait (the upgrade call excluded).
    busy: AtomicUsize,
    /// Parked waits being polled at this moment.
    polling: AtomicUsize,
    /// Parked waits to wake when the pause is called off.
    wakers: Mutex<Vec<Waker>>,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_conn: AtomicU64,
}

/// A request waiting in a parked call, as it came: served again after the
/// hand-over (the hand-over document holds it as it is).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Carried {
    /// Its stream.
    pub stream_id: u32,
    /// The frame header's flags.
    pub flags: u8,
    /// The frame's body (an encoded ttrpc Request).
    pub body: Vec<u8>,
}

/// One connection.
pub(crate) struct ConnState {
    id: u64,
    fd: RawFd,
    /// Bytes read from the socket but not yet taken as a frame, once stopped.
    stopped: Mutex<Option<Vec<u8>>>,
    /// Calls that may park, by stream id.
    parkable: Mutex<BTreeMap<u32, Carried>>,
}

/// A connection's registration; dropping it (the connection ended) removes it.
pub(crate) struct ConnHandle {
    pause: Arc<Pause>,
    conn: Arc<ConnState>,
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        lock(&self.pause.conns).remove(&self.conn.id);
    }
}

/// The call a task is serving.
struct CallState {
    pause: Arc<Pause>,
    conn: Arc<ConnState>,
    stream_id: u32,
    /// Its request is kept to be carried: it may park. (A wait in another
    /// call is just a wait: that call must finish.)
    parkable: bool,
    /// The call is the upgrade itself: it neither counts as busy nor is carried.
    upgrade: AtomicBool,
}

/// Counts a call as busy while it lives.
struct CallGuard(Arc<CallState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.0.upgrade.load(SeqCst) {
            self.0.pause.busy.fetch_sub(1, SeqCst);
        }
        lock(&self.0.conn.parkable).remove(&self.0.stream_id);
    }
}

/// One connection as it is handed over.
#[derive(Debug)]
pub(crate) struct ConnSnapshot {
    /// Its id (for the keeper's name of its descriptor).
    pub id: u64,
    /// Its socket.
    pub fd: RawFd,
    /// Bytes read but not yet a frame.
    pub buffered: Vec<u8>,
    /// Parked calls to serve again.
    pub carried: Vec<Carried>,
    /// The stream of the upgrade call, when it came on this connection.
    pub upgrade_stream: Option<u32>,
}

/// The pause did not come about in time.
#[derive(Debug, thiserror::Error)]
#[error("{busy} calls still running and {reading} connections inside a frame after {waited:?}; nothing was changed, try again")]
pub(crate) struct Busy {
    busy: usize,
    reading: usize,
    waited: Duration,
}

impl Pause {
    /// Nothing paused.
    pub(crate) fn new() -> Arc<Pause> {
        Arc::new(Pause {
            stop: watch::channel(false).0,
            frozen: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
            wakers: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        })
    }

    /// Becomes true when connections and listeners must stop.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Registers a connection on socket `fd`.
    pub(crate) fn register(self: &Arc<Pause>, fd: RawFd) -> ConnHandle {
        let id = self.next_conn.fetch_add(1, SeqCst);
        let conn = Arc::new(ConnState {
            id,
            fd,
            stopped: Mutex::new(None),
            parkable: Mutex::new(BTreeMap::new()),
        });
        lock(&self.conns).insert(id, conn.clone());
        ConnHandle {
            pause: self.clone(),
            conn,
        }
    }

    /// Stops everything and waits up to `bound` for every call to finish or
    /// park; then what must be carried over. The caller must be a call
    /// marked with [`mark_upgrade_call`]. On [`Busy`] everything resumed.
    pub(crate) async fn quiesce(&self, bound: Duration) -> Result<Vec<ConnSnapshot>, Busy> {
        let started = Instant::now();
        self.stop.send_replace(true);
        self.frozen.store(true, SeqCst);
        loop {
            let reading = lock(&self.conns)
                .values()
                .filter(|c| lock(&c.stopped).is_none())
                .count();
            if reading == 0 && self.polling.load(SeqCst) == 0 && self.busy.load(SeqCst) == 0 {
                return Ok(self.snapshot());
            }
            if started.elapsed() >= bound {
                let busy = self.busy.load(SeqCst);
                self.resume();
                return Err(Busy {
                    busy,
                    reading,
                    waited: bound,
                });
            }
            // Connections stop and calls park within microseconds of the
            // switch: look again at once for a moment, then every millisecond
            // (the pause is what the host waits through).
            if started.elapsed() < Duration::from_millis(2) {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// Calls the pause off: parked calls go on, connections read again.
    pub(crate) fn resume(&self) {
        self.frozen.store(false, SeqCst);
        for w in std::mem::take(&mut *lock(&self.wakers)) {
            w.wake();
        }
        self.stop.send_replace(false);
    }

    fn snapshot(&self) -> Vec<ConnSnapshot> {
        let upgrade = CALL.try_with(|c| (c.conn.id, c.stream_id)).ok();
        let conns = lock(&self.conns);
        let mut out: Vec<ConnSnapshot> = conns
            .values()
            .map(|c| ConnSnapshot {
                id: c.id,
                fd: c.fd,
                buffered: lock(&c.stopped).clone().unwrap_or_default(),
                carried: lock(&c.parkable)
                    .values()
                    .filter(|p| upgrade != Some((c.id, p.stream_id)))
                    .cloned()
                    .collect(),
                upgrade_stream: upgrade.filter(|(id, _)| *id == c.id).map(|(_, s)| s),
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Wraps the call on `stream_id` of `conn`: it counts as busy until it
    /// ends or parks. `parkable` (a call that may park) is its request, kept
    /// to be carried over.
    pub(crate) fn call<F: Future>(
        self: &Arc<Pause>,
        conn: &ConnHandle,
        stream_id: u32,
        parkable: Option<Carried>,
        fut: F,
    ) -> impl Future<Output = F::Output> {
        let state = Arc::new(CallState {
            pause: self.clone(),
            conn: conn.conn.clone(),
            stream_id,
            parkable: parkable.is_some(),
            upgrade: AtomicBool::new(false),
        });
        self.busy.fetch_add(1, SeqCst);
        if let Some(p) = parkable {
            lock(&conn.conn.parkable).insert(stream_id, p);
        }
        let guard = CallGuard(state.clone());
        CALL.scope(state, async move {
            let out = fut.await;
            drop(guard);
            out
        })
    }
}

impl ConnHandle {
    /// The connection stopped at a frame boundary with `buffered` bytes read ahead.
    pub(crate) fn stopped(&self, buffered: Vec<u8>) {
        *lock(&self.conn.stopped) = Some(buffered);
    }

    /// The connection reads again.
    pub(crate) fn reading(&self) {
        *lock(&self.conn.stopped) = None;
    }

    /// Its id, for logs.
    pub(crate) fn id(&self) -> u64 {
        self.conn.id
    }
}

/// Marks the calling task's call as the upgrade: it is not waited for, and
/// its answer is written by the agent that serves next. False outside a call.
pub(crate) fn mark_upgrade_call() -> bool {
    CALL.try_with(|c| {
        if !c.upgrade.swap(true, SeqCst) {
            c.pause.busy.fetch_sub(1, SeqCst);
        }
    })
    .is_ok()
}

/// Runs `fut`, a wait that has not yet done anything when it is pending
/// (dropping it loses nothing), as a place where the call may be paused.
pub(crate) async fn park<F: Future>(fut: F) -> F::Output {
    match CALL.try_with(|c| c.clone()).ok().filter(|c| c.parkable) {
        Some(state) => {
            Parked {
                fut: Box::pin(fut),
                state,
                parked: false,
            }
            .await
        }
        None => fut.await,
    }
}

struct Parked<F: Future> {
    fut: Pin<Box<F>>,
    state: Arc<CallState>,
    /// Counted as parked (not busy).
    parked: bool,
}

impl<F: Future> Future for Parked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let p = self.state.pause.clone();
        let upgrade = self.state.upgrade.load(SeqCst);
        if !self.parked && !upgrade {
            p.busy.fetch_sub(1, SeqCst);
            self.parked = true;
        }
        p.polling.fetch_add(1, SeqCst);
        if p.frozen.load(SeqCst) {
            lock(&p.wakers).push(cx.waker().clone());
            p.polling.fetch_sub(1, SeqCst);
            if !p.frozen.load(SeqCst) {
                // Called off between the check and the push: poll again.
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        let r = self.fut.as_mut().poll(cx);
        if r.is_ready() && self.parked {
            p.busy.fetch_add(1, SeqCst);
            self.parked = false;
        }
        p.polling.fetch_sub(1, SeqCst);
        r
    }
}

impl<F: Future> Drop for Parked<F> {
    fn drop(&mut self) {
        if self.parked {
            // The call is going (its guard counts it out): count it back in first.
            self.state.pause.busy.fetch_add(1, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried(stream_id: u32) -> Carried {
        Carried {
            stream_id,
            flags: 0,
            body: vec![stream_id as u8],
        }
    }

    #[tokio::test]
    async fn parked_calls_are_carried_and_busy_ones_are_waited_for() {
        let pause = Pause::new();
        let conn = pause.register(7);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A waiting call: parked, frozen, carried.
        let waiting = tokio::spawn(pause.call(&conn, 1, Some(carried(1)), async move { park(rx).await.is_ok() }));
        // A busy call that ends on its own a little later.
        let ended = Arc::new(AtomicBool::new(false));
        let e2 = ended.clone();
        let _busy = tokio::spawn(pause.call(&conn, 3, None, async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            e2.store(true, SeqCst);
        }));
        // The upgrade call itself.
        let p2 = pause.clone();
        let upgrade = pause.call(&conn, 5, Some(carried(5)), async move {
            assert!(mark_upgrade_call());
            p2.quiesce(Duration::from_secs(5)).await
        });
        conn.stopped(b"next".to_vec());
        let snap = upgrade.await.unwrap();
        assert!(ended.load(SeqCst), "the busy call was waited for");
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].fd, 7);
        assert_eq!(snap[0].buffered, b"next");
        assert_eq!(snap[0].carried, vec![carried(1)], "only the parked call");
        assert_eq!(snap[0].upgrade_stream, Some(5));
        // Frozen: the exit it waited for does not reach it.
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a frozen wait is never polled");
        // Called off: it goes on and sees what it waited for.
        pause.resume();
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_call_that_neither_ends_nor_parks_makes_the_pause_give_up() {
        let pause = Pause::new();
        let conn = pause.register(3);
        let stuck = tokio::spawn(pause.call(&conn, 1, None, std::future::pending::<()>()));
        conn.stopped(Vec::new());
        let p2 = pause.clone();
        let err = pause
            .call(&conn, 3, None, async move {
                mark_upgrade_call();
                p2.quiesce(Duration::from_millis(30)).await
            })
            .await
            .unwrap_err();
        assert_eq!(err.busy, 1, "{err}");
        assert!(!*pause.stopping().borrow(), "everything resumed");
        stuck.abort();
    }

    #[tokio::test]
    async fn a_connection_inside_a_frame_is_waited_for() {
        let pause = Pause::new();
        let conn = pause.register(3);
        let p2 = pause.clone();
        let err = p2.quiesce(Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(err.reading, 1);
        conn.stopped(Vec::new());
        assert!(pause.quiesce(Duration::from_millis(200)).await.is_ok());
        drop(conn);
        assert!(pause.snapshot().is_empty(), "a closed connection is forgotten");
    }
}
