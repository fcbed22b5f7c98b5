//! One process of a container (its init or an exec): pid, exit status, and the
//! agent's ends of its stdio (three pipes, or a pty master). Output waits in the
//! pipe or terminal until the host reads it, so nothing is lost when the process
//! exits first, and a slow host blocks the process only once the pipe is full.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use std::sync::Arc;
use tokio::io::Interest;

use tokio::sync::{watch, Mutex, OwnedMutexGuard};

use super::out_journal::Slot;
use super::stream::FdStream;
use super::Error;
use crate::reaper::Exit;

/// Largest chunk one ReadStdout/ReadStderr returns.
pub(crate) const MAX_READ: usize = 1 << 20;

/// The agent's ends of a process's stdio.
pub(crate) enum Stdio {
    /// Three pipes: stdin writer, stdout reader, stderr reader.
    Pipes([OwnedFd; 3]),
    /// The master side of the process's terminal; stdout and stderr both arrive on it.
    Pty(OwnedFd),
}

/// What a keeper held of a process's stdio, for [`Process::restore`].
#[derive(Default)]
pub(crate) struct RestoredStdio {
    /// The stdin writer (a pipe, or a copy of the terminal's master).
    pub stdin: Option<OwnedFd>,
    /// The stdout reader (or the terminal's master).
    pub stdout: Option<OwnedFd>,
    /// The stderr reader.
    pub stderr: Option<OwnedFd>,
    /// stdout's output slot (F's read end, the journal).
    pub stdout_slot: Option<(OwnedFd, OwnedFd)>,
    /// stderr's output slot.
    pub stderr_slot: Option<(OwnedFd, OwnedFd)>,
    /// The terminal's master kept for resizing; Some means a terminal.
    pub terminal: Option<OwnedFd>,
}

/// One output stream.
pub(crate) struct Output {
    rx: Arc<Mutex<Option<Reader>>>,
    /// The descriptor, for the view; -1 once the end was reported (or never open).
    fd: AtomicI32,
    /// The output slot's descriptors (F's read end, the journal) for the keeper.
    slot_fds: Option<[i32; 2]>,
}

/// The reading side of an output stream: the pipe or terminal, and for a pipe
/// the slot that makes its reads exactly-once ([`out_journal`]).
struct Reader {
    src: FdStream,
    slot: Option<Slot>,
}

/// A read staged in an output slot: the frame's data waits in the slot's pipe
/// and the stream stays locked until this is dropped, which settles the slot
/// (consumes from the process's pipe what the socket took whole).
pub(crate) struct StagedOut {
    guard: OwnedMutexGuard<Option<Reader>>,
    n: usize,
}

impl StagedOut {
    fn slot(&self) -> &Slot {
        self.guard
            .as_ref()
            .and_then(|r| r.slot.as_ref())
            .expect("staged in a slot")
    }
}

impl crate::server::stream_read::Staged for StagedOut {
    fn len(&self) -> usize {
        self.n
    }

    fn splice_to(&self, sock: i32, max: usize) -> std::io::Result<usize> {
        self.slot().splice_to(sock, max)
    }
}

impl Drop for StagedOut {
    fn drop(&mut self) {
        if let Some(r) = self.guard.as_ref() {
            if let Some(slot) = &r.slot {
                // Nothing to report to: the read is over. A failure leaves the
                // slot as it is, and the next read settles it again.
                let _ = slot.settle(r.src.raw());
            }
        }
    }
}

impl Output {
    /// A stream over `fd`; a pipe (`pipe`) gets an output slot, adopted from
    /// the keeper's descriptors `slot` when a previous agent left one.
    fn new(
        fd: Option<OwnedFd>,
        pipe: bool,
        slot: Option<(OwnedFd, OwnedFd)>,
        what: &'static str,
    ) -> Result<Output, Error> {
        let Some(fd) = fd else {
            return Ok(Output {
                rx: Arc::new(Mutex::new(None)),
                fd: AtomicI32::new(-1),
                slot_fds: None,
            });
        };
        let src =
            FdStream::new(fd, Interest::READABLE).map_err(|e| Error::Internal(format!("register {what}: {e}")))?;
        let slot = if pipe {
            let slot = match slot {
                Some((f, j)) => {
                    let s = Slot::adopt(f, j).map_err(|e| Error::Internal(format!("{what}: output slot: {e}")))?;
                    s.settle(src.raw())
                        .map_err(|e| Error::Internal(format!("{what}: settle the output slot: {e}")))?;
                    s
                }
                None => Slot::new(src.raw()).map_err(|e| Error::Internal(format!("{what}: output slot: {e}")))?,
            };
            Some(slot)
        } else {
            None
        };
        Ok(Output {
            fd: AtomicI32::new(src.raw()),
            slot_fds: slot.as_ref().map(|s| s.held()),
            rx: Arc::new(Mutex::new(Some(Reader { src, slot }))),
        })
    }

    /// Its descriptor while open (for the view).
    pub(crate) fn fd(&self) -> Option<i32> {
        Some(self.fd.load(Ordering::Acquire)).filter(|&f| f >= 0)
    }

    /// Up to `len` bytes, waiting for data; at the end an empty read once, then an error.
    pub(crate) async fn read(&self, len: usize, what: &str) -> Result<Vec<u8>, Error> {
        let mut buf = Vec::new();
        self.read_into(&mut buf, len, what).await?;
        Ok(buf)
    }

    /// Like [`Output::read`], appending to `out` (nothing appended: the end).
    pub(crate) async fn read_into(&self, out: &mut Vec<u8>, len: usize, what: &str) -> Result<(), Error> {
        let staged = self.read_staged(out, len, what, false).await?;
        debug_assert!(staged.is_none());
        Ok(())
    }

    /// Reads up to `len` bytes. With `splice` (the caller can splice into its
    /// socket) a pipe's bytes are staged in its slot and returned as a
    /// [`StagedOut`]; otherwise they are appended to `out` (nothing appended
    /// and None: the end).
    pub(crate) async fn read_staged(
        &self,
        out: &mut Vec<u8>,
        len: usize,
        what: &str,
        splice: bool,
    ) -> Result<Option<StagedOut>, Error> {
        let mut guard = crate::upgrade::pause::park(self.rx.clone().lock_owned()).await;
        let Some(r) = guard.as_mut() else {
            return Err(Error::FailedPrecondition(format!(
                "{what}: end of stream already reported"
            )));
        };
        let max = len.clamp(1, MAX_READ);
        let n = match &r.slot {
            Some(slot) => {
                let n = r
                    .src
                    .wait_for(|src| slot.stage(src, max))
                    .await
                    .map_err(|e| Error::Internal(format!("read {what}: {e}")))?;
                if n > 0 && splice {
                    return Ok(Some(StagedOut { guard, n }));
                }
                if n > 0 {
                    let copied = slot.copy_into(out, n);
                    let settled = slot.settle(r.src.raw());
                    copied
                        .and(settled)
                        .map_err(|e| Error::Internal(format!("read {what}: {e}")))?;
                }
                n
            }
            None => r
                .src
                .read_available(out, max)
                .await
                .map_err(|e| Error::Internal(format!("read {what}: {e}")))?,
        };
        if n == 0 {
            *guard = None;
            self.fd.store(-1, Ordering::Release);
        }
        Ok(None)
    }

    /// The slot's descriptors a keeper must hold, while the stream is open.
    fn held_slot(&self) -> Option<[i32; 2]> {
        self.fd().and(self.slot_fds)
    }
}

/// A process the agent started.
pub(crate) struct Process {
    /// Kata's exec id (the container id for its init, by convention).
    pub exec_id: String,
    /// Host pid.
    pub pid: i32,
    /// Its start time (clock ticks since boot; 0 if unknown), to tell a reused pid.
    pub start_time: u64,
    /// Whether its stdio is a terminal.
    pub tty: bool,
    /// The pty master, kept for window-size changes after stdin is closed.
    term: Option<OwnedFd>,
    exit: watch::Receiver<Option<Exit>>,
    waited: AtomicBool,
    stdin: Mutex<Option<FdStream>>,
    /// stdin's descriptor, for the view; -1 once closed.
    stdin_fd: AtomicI32,
    /// stdout (the terminal's output when `tty`).
    pub(crate) stdout: Output,
    /// stderr (ends at once when `tty`: the terminal carries it).
    pub(crate) stderr: Output,
}

/// `pid`'s start time, 0 when it cannot be read (it has already gone).
fn start_time_of(pid: i32) -> u64 {
    rustjail::state::proc_start_time(pid).map_or(0, |(t, _)| t)
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, Error> {
    fd.try_clone()
        .map_err(|e| Error::Internal(format!("fcntl(F_DUPFD_CLOEXEC, {}): {e}", fd.as_raw_fd())))
}

impl Process {
    /// Wraps the agent's ends of the process's stdio.
    pub(crate) fn new(
        exec_id: String,
        pid: i32,
        exit: watch::Receiver<Option<Exit>>,
        stdio: Stdio,
    ) -> Result<Process, Error> {
        let (term, stdin, stdout, stderr) = match stdio {
            Stdio::Pipes([i, o, e]) => (None, i, Some(o), Some(e)),
            Stdio::Pty(master) => (Some(dup(&master)?), dup(&master)?, Some(master), None),
        };
        let stdin =
            FdStream::new(stdin, Interest::WRITABLE).map_err(|e| Error::Internal(format!("register stdin: {e}")))?;
        let stdin_fd = AtomicI32::new(stdin.raw());
        let pipes = term.is_none();
        Ok(Process {
            exec_id,
            pid,
            start_time: start_time_of(pid),
            tty: term.is_some(),
            term,
            exit,
            waited: AtomicBool::new(false),
            stdin: Mutex::new(Some(stdin)),
            stdin_fd,
            stdout: Output::new(stdout, pipes, None, "stdout")?,
            stderr: Output::new(stderr, true, None, "stderr")?,
        })
    }

    /// A process a previous agent started, with the descriptors the keeper
    /// held for it (a stream without one is closed: its end was reported,
    /// or nothing held it).
    pub(crate) fn restore(
        exec_id: String,
        pid: i32,
        start_time: u64,
        exit: watch::Receiver<Option<Exit>>,
        waited: bool,
        fds: RestoredStdio,
    ) -> Result<Process, Error> {
        let stdin = fds
            .stdin
            .map(|fd| FdStream::new(fd, Interest::WRITABLE))
            .transpose()
            .map_err(|e| Error::Internal(format!("register stdin: {e}")))?;
        let stdin_fd = AtomicI32::new(stdin.as_ref().map_or(-1, |s| s.raw()));
        let pipes = fds.terminal.is_none();
        Ok(Process {
            exec_id,
            pid,
            start_time,
            tty: fds.terminal.is_some(),
            term: fds.terminal,
            exit,
            waited: AtomicBool::new(waited),
            stdin: Mutex::new(stdin),
            stdin_fd,
            stdout: Output::new(fds.stdout, pipes, fds.stdout_slot, "stdout")?,
            stderr: Output::new(fds.stderr, true, fds.stderr_slot, "stderr")?,
        })
    }

    /// The descriptors a keeper must hold for this process, by stream name
    /// (`in`, `out`, `err`, `pty`, and each output slot's `.f` pipe and `.j`
    /// journal), while they are open.
    pub(crate) fn held_fds(&self) -> Vec<(&'static str, i32)> {
        let out = self.stdout.held_slot();
        let err = self.stderr.held_slot();
        [
            ("in", self.stdin_fd()),
            ("out", self.stdout.fd()),
            ("err", self.stderr.fd()),
            ("pty", self.terminal_fd()),
            ("out.f", out.map(|s| s[0])),
            ("out.j", out.map(|s| s[1])),
            ("err.f", err.map(|s| s[0])),
            ("err.j", err.map(|s| s[1])),
        ]
        .into_iter()
        .filter_map(|(n, fd)| Some((n, fd?)))
        .collect()
    }

    /// The exit, once there is one.
    pub(crate) fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Waits for the exit. Every waiter gets it, concurrent or later: a wait
    /// cancelled half-way (its connection closed, its deadline ran out) takes
    /// nothing away. The sandbox forgets an exec'd process after the first
    /// wait that completes, as kata-agent does.
    pub(crate) async fn wait(&self) -> Result<Exit, Error> {
        let mut rx = self.exit.clone();
        // A place where a live upgrade may pause the call (nothing taken yet).
        let exit = crate::upgrade::pause::park(rx.wait_for(|e| e.is_some()))
            .await
            .map_err(|_| Error::Internal("the reaper went away".into()))?
            .expect("waited for Some");
        self.waited.store(true, Ordering::Release);
        Ok(exit)
    }

    /// A receiver of the exit, for watchers that outlive a request.
    pub(crate) fn exit_watch(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.clone()
    }

    /// Waits up to `timeout` for the exit without counting as the one wait.
    pub(crate) async fn exit_within(&self, timeout: std::time::Duration) -> Option<Exit> {
        let mut rx = self.exit.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|e| e.is_some())).await;
        self.exited()
    }

    /// Writes to stdin; returns the bytes written.
    pub(crate) async fn write_stdin(&self, data: &[u8]) -> Result<usize, Error> {
        let guard = self.stdin.lock().await;
        let tx = guard
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition(format!("stdin of {} is closed", self.exec_id)))?;
        tx.write_all(data)
            .await
            .map_err(|e| Error::FailedPrecondition(format!("write stdin of {}: {e}", self.exec_id)))?;
        Ok(data.len())
    }

    /// Closes stdin so the process sees end of file. On a terminal, whose master
    /// stays open for output, that is the EOF character (^D) the line discipline
    /// turns into an empty read.
    pub(crate) async fn close_stdin(&self) {
        let mut guard = self.stdin.lock().await;
        if let (true, Some(tx)) = (self.tty, guard.as_ref()) {
            let _ = tx.write_all(b"\x04").await;
        }
        guard.take();
        self.stdin_fd.store(-1, Ordering::Release);
    }

    /// Whether a WaitProcess returned its exit.
    pub(crate) fn waited(&self) -> bool {
        self.waited.load(Ordering::Acquire)
    }

    /// stdin's descriptor while open (for the view).
    pub(crate) fn stdin_fd(&self) -> Option<i32> {
        Some(self.stdin_fd.load(Ordering::Acquire)).filter(|&f| f >= 0)
    }

    /// The terminal master's descriptor kept for resizing (for the view).
    pub(crate) fn terminal_fd(&self) -> Option<i32> {
        self.term.as_ref().map(|t| t.as_raw_fd())
    }

    /// Sets the terminal's window size.
    pub(crate) fn resize(&self, rows: u32, cols: u32) -> Result<(), Error> {
        let Some(fd) = self.term.as_ref().map(|t| t.as_raw_fd()) else {
            return Err(Error::FailedPrecondition(format!(
                "process {} has no terminal",
                self.exec_id
            )));
        };
        let ws = libc::winsize {
            ws_row: rows.min(u16::MAX as u32) as u16,
            ws_col: cols.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on a pty master we own, with a valid winsize.
        if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(Error::Internal(format!(
                "ioctl(TIOCSWINSZ) on the terminal of {}: {}",
                self.exec_id,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}
