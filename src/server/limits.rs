//! What clients may hold: how many connections at once, and how long a frame
//! may take. Connections over the limit are refused with an answer (see
//! [`super::refuse`]) and a log line, never left unanswered; the limit keeps
//! descriptors free for the host's own work (containers, pipes), and the host
//! (vsock CID 2) has [`HOST_RESERVE`] connections beyond it, so a flood from
//! inside the guest cannot lock the host out.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::reclaim::Reclaim;

/// Default time a frame may take from its first byte to its last.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the host may open beyond the limit.
pub const HOST_RESERVE: usize = 8;
/// The host's vsock CID (`VMADDR_CID_HOST`).
pub const VSOCK_HOST_CID: u32 = 2;
/// Fewest connections the default limit allows.
const MIN_CONNECTIONS: usize = 16;
/// Refused connections waiting for their answer at once; more are closed at once.
const MAX_REFUSING: usize = 16;

/// The server's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A frame not complete this long after its first byte ends its connection.
    pub frame_timeout: Duration,
    /// Connections served at once (the host has [`HOST_RESERVE`] more).
    pub max_connections: usize,
}

impl Limits {
    /// `max_connections` as configured, or [`default_max_connections`].
    pub fn new(max_connections: Option<usize>, frame_timeout: Duration) -> Limits {
        Limits {
            frame_timeout,
            max_connections: max_connections.unwrap_or_else(default_max_connections),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(None, DEFAULT_FRAME_TIMEOUT)
    }
}

/// Half the open-file limit (at least [`MIN_CONNECTIONS`]): the other half is
/// left for containers, their pipes and the agent's own files.
pub fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let half = usize::try_from(soft / 2).unwrap_or(usize::MAX);
    half.clamp(MIN_CONNECTIONS, 1 << 20)
}

/// Counts the connections being served and decides who else may connect.
pub struct Gate {
    limits: Limits,
    open: AtomicUsize,
    refusing: AtomicUsize,
    refusal_log: Mutex<LogGate>,
    reserve: Mutex<Option<OwnedFd>>,
    reclaim: Arc<Reclaim>,
}

/// A refused connection waiting for its answer; dropping it frees its place.
pub struct RefusalSlot(Arc<Gate>);

impl Drop for RefusalSlot {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection being served; dropping it frees its place.
pub struct Ticket(Arc<Gate>);

impl Drop for Ticket {
    fn drop(&mut self) {
        let open = self.0.open.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.reclaim.closed(open);
    }
}

impl Gate {
    /// A gate with nobody in; holds one spare descriptor (see [`Gate::release_spare`]).
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            refusal_log: Mutex::new(LogGate::default()),
            reserve: Mutex::new(spare_fd()),
            reclaim: Arc::new(Reclaim::default()),
        })
    }

    /// The bounds this gate applies.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections being served now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Lets a new connection in, or says why not.
    pub fn admit(self: &Arc<Self>, from_host: bool) -> Result<Ticket, String> {
        let max = self.limits.max_connections + if from_host { HOST_RESERVE } else { 0 };
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match admitted {
            Ok(n) => {
                self.reclaim.opened(n + 1);
                Ok(Ticket(self.clone()))
            }
            Err(n) => Err(format!(
                "pith-agent: too many connections ({n} open, limit {} set by agent.max_connections); \
                 close one and retry",
                self.limits.max_connections
            )),
        }
    }

    /// A place to answer a refused connection, or `None` when [`MAX_REFUSING`]
    /// are already being answered (the connection is then closed unanswered).
    pub fn refusal_slot(self: &Arc<Self>) -> Option<RefusalSlot> {
        self.refusing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_REFUSING).then_some(n + 1)
            })
            .ok()
            .map(|_| RefusalSlot(self.clone()))
    }

    /// Whether to log a refusal now; at most one line a second, with the count
    /// of refusals not logged since.
    pub fn log_refusal(&self) -> Option<u64> {
        self.refusal_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now())
    }

    /// Closes the spare descriptor so that one more `accept` can succeed when
    /// the process is out of descriptors; false if it is already released.
    pub fn release_spare(&self) -> bool {
        self.reserve.lock().unwrap_or_else(|e| e.into_inner()).take().is_some()
    }

    /// Takes the spare descriptor again (when one is free).
    pub fn restore_spare(&self) {
        let mut r = self.reserve.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = spare_fd();
        }
    }
}

/// A descriptor held only to be closed when `accept` fails with EMFILE.
fn spare_fd() -> Option<OwnedFd> {
    std::fs::File::open("/").ok().map(OwnedFd::from)
}

/// Rate limit for one kind of log line: one a second.
#[derive(Default)]
struct LogGate {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogGate {
    /// `Some(lines suppressed since the last one)` when a line may be written now.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize) -> Arc<Gate> {
        Gate::new(Limits::new(Some(max), DEFAULT_FRAME_TIMEOUT))
    }

    #[test]
    fn admits_up_to_the_limit_and_frees_places_on_drop() {
        let g = gate(2);
        let a = g.admit(false).unwrap();
        let _b = g.admit(false).unwrap();
        let e = g.admit(false).err().unwrap();
        assert!(
            e.contains("2 open, limit 2") && e.contains("agent.max_connections"),
            "{e}"
        );
        drop(a);
        assert_eq!(g.open(), 1);
        assert!(g.admit(false).is_ok());
    }

    #[test]
    fn the_host_has_room_beyond_the_limit() {
        let g = gate(1);
        let _guest = g.admit(false).unwrap();
        assert!(g.admit(false).is_err());
        let host: Vec<Ticket> = (0..HOST_RESERVE).map(|_| g.admit(true).unwrap()).collect();
        assert!(g.admit(true).is_err());
        assert_eq!(g.open(), 1 + host.len());
    }

    #[test]
    fn refusals_answered_at_once_are_bounded() {
        let g = gate(1);
        let slots: Vec<RefusalSlot> = (0..MAX_REFUSING).map(|_| g.refusal_slot().unwrap()).collect();
        assert!(g.refusal_slot().is_none());
        drop(slots);
        assert!(g.refusal_slot().is_some());
    }

    #[test]
    fn refusal_lines_are_rate_limited() {
        let mut l = LogGate::default();
        let t = Instant::now();
        assert_eq!(l.admit(t), Some(0));
        assert_eq!(l.admit(t + Duration::from_millis(10)), None);
        assert_eq!(l.admit(t + Duration::from_millis(20)), None);
        assert_eq!(l.admit(t + Duration::from_millis(1500)), Some(2));
    }

    #[test]
    fn the_spare_descriptor_is_released_once_and_restored() {
        let g = gate(4);
        assert!(g.release_spare());
        assert!(!g.release_spare());
        g.restore_spare();
        assert!(g.release_spare());
    }

    #[test]
    fn default_limit_is_half_the_open_file_limit() {
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let want = usize::try_from(soft / 2).unwrap().clamp(MIN_CONNECTIONS, 1 << 20);
        assert_eq!(default_max_connections(), want);
    }
}
