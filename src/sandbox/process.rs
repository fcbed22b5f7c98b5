//! One process of a container (its init or an exec): pid, exit status, and the
//! agent's ends of its stdio (three pipes, or a pty master). Output waits in the
//! pipe or terminal until the host reads it, so nothing is lost when the process
//! exits first, and a slow host blocks the process only once the pipe is full.
//! Reads are exactly-once across an agent crash: a pipe's through its output
//! slot (`out_journal`), a terminal's through a pipe between the terminal and
//! the slot (`pty_stage`).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use std::sync::Arc;
use tokio::io::Interest;

use slog::info;
use tokio::sync::{watch, Mutex, OwnedMutexGuard};

use super::changed::Mark;
use super::out_journal::Slot;
use super::pty_stage::{PtyStage, Terminal};
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
    /// A terminal's stage pipe: its read end, and its write end if held
    /// (None from an agent older than the stage: a new one is made).
    pub stdout_stage: Option<(OwnedFd, Option<OwnedFd>)>,
    /// The terminal's master kept for resizing; Some means a terminal.
    pub terminal: Option<OwnedFd>,
}

impl RestoredStdio {
    /// Each descriptor by the stream name it was held under in the keeper
    /// (`in`, `out`, `err`, `pty`, the slots' `.f`/`.j`, the stage's `.pr`/`.pw`).
    pub(crate) fn take(mut held: impl FnMut(&str) -> Option<OwnedFd>) -> RestoredStdio {
        RestoredStdio {
            stdin: held("in"),
            stdout: held("out"),
            stderr: held("err"),
            terminal: held("pty"),
            stdout_slot: held("out.f").zip(held("out.j")),
            stderr_slot: held("err.f").zip(held("err.j")),
            stdout_stage: held("out.pr").map(|r| (r, held("out.pw"))),
        }
    }
}

/// What the state file held of a process, to take it back with.
pub(crate) struct Restored {
    /// Exec id.
    pub exec_id: String,
    /// Host pid.
    pub pid: i32,
    /// Its start time.
    pub start_time: u64,
    /// Its exit (already there, or to come from the reaper).
    pub exit: watch::Receiver<Option<Exit>>,
    /// Whether a WaitProcess returned its exit.
    pub waited: bool,
}

/// One output stream.
pub(crate) struct Output {
    rx: Arc<Mutex<Option<Reader>>>,
    /// The descriptor, for the view; -1 once the end was reported (or never open).
    fd: AtomicI32,
    /// The output slot's descriptors (F's read end, the journal) for the keeper.
    slot_fds: Option<[i32; 2]>,
    /// A terminal's stage pipe (its read end, its write end) for the keeper.
    stage_fds: Option<[i32; 2]>,
    /// Marks the container when the end is reported (the view changes).
    mark: Mark,
}

/// What an output stream reads.
enum Source {
    /// A process's pipe: its slot reads it in place.
    Pipe,
    /// A terminal: its bytes move to a stage pipe first, the one a previous
    /// agent left if any (see [`RestoredStdio::stdout_stage`]).
    Terminal(Option<(OwnedFd, Option<OwnedFd>)>, slog::Logger),
}

/// The reading side of an output stream: the pipe or terminal, the slot that
/// makes its reads exactly-once ([`out_journal`]), and for a terminal the
/// stage pipe the slot reads in its place ([`pty_stage`]).
struct Reader {
    src: FdStream,
    slot: Slot,
    stage: Option<PtyStage>,
}

/// What one read found.
enum Got {
    /// Bytes staged in the slot (0: the end).
    Staged(usize),
    /// Bytes appended to the caller's buffer (0: the end): a terminal the
    /// kernel cannot splice from, read directly.
    Read(usize),
}

impl Reader {
    /// What the slot reads: the pipe, or the terminal's stage.
    fn source(&self) -> RawFd {
        self.stage.as_ref().map_or(self.src.raw(), |s| s.source())
    }

    /// Waits for output and stages up to `max` bytes of it.
    async fn next(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<Got> {
        let Reader { src, slot, stage } = self;
        let Some(stage) = stage else {
            return Ok(Got::Staged(src.wait_for(|s| slot.stage(s, max)).await?));
        };
        // What the stage already holds is read first, and the terminal's end
        // counts once the stage is empty.
        let mut step = |master: RawFd| -> std::io::Result<Option<Option<usize>>> {
            let terminal = stage.fill(master, max)?;
            if let Some(n) = slot.stage(stage.source(), max)?.filter(|&n| n > 0) {
                return Ok(Some(Some(n)));
            }
            Ok(match terminal {
                Terminal::Open => None,
                Terminal::Ended => Some(Some(0)),
                Terminal::Refused => Some(None),
            })
        };
        // The stage may hold bytes while the terminal has none: look before waiting.
        let got = match step(src.raw())? {
            Some(got) => got,
            None => src.wait_for(&mut step).await?,
        };
        match got {
            Some(n) => Ok(Got::Staged(n)),
            None => Ok(Got::Read(src.read_available(out, max).await?)),
        }
    }
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
        &self.guard.as_ref().expect("staged in a slot").slot
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
            // Nothing to report to: the read is over. A failure leaves the
            // slot as it is, and the next read settles it again.
            let _ = r.slot.settle(r.source());
        }
    }
}

impl Output {
    /// A stream over `fd` with an output slot, adopted from the keeper's
    /// descriptors `slot` when a previous agent left one.
    fn new(
        fd: Option<OwnedFd>,
        source: Source,
        slot: Option<(OwnedFd, OwnedFd)>,
        what: &'static str,
        mark: &Mark,
    ) -> Result<Output, Error> {
        let Some(fd) = fd else {
            return Ok(Output {
                rx: Arc::new(Mutex::new(None)),
                fd: AtomicI32::new(-1),
                slot_fds: None,
                stage_fds: None,
                mark: mark.clone(),
            });
        };
        let src =
            FdStream::new(fd, Interest::READABLE).map_err(|e| Error::Internal(format!("register {what}: {e}")))?;
        let stage_err = |e| Error::Internal(format!("{what}: terminal stage: {e}"));
        let (stage, slot) = match source {
            Source::Pipe => (None, slot),
            Source::Terminal(Some((r, w)), log) => {
                let stage = PtyStage::adopt(r, w, &log).map_err(stage_err)?;
                // Bytes here were taken from the terminal by an agent that
                // died before their frame was sent whole (or consumed).
                let waiting = stage.waiting().map_err(stage_err)?;
                info!(log, "terminal stage taken back"; "stream" => what, "waiting" => waiting);
                (Some(stage), slot)
            }
            // A slot without its stage (not held) has nothing of this stage to settle.
            Source::Terminal(None, log) => (Some(PtyStage::new(&log).map_err(stage_err)?), None),
        };
        let from = stage.as_ref().map_or(src.raw(), |s| s.source());
        let slot = match slot {
            Some((f, j)) => {
                let s = Slot::adopt(f, j).map_err(|e| Error::Internal(format!("{what}: output slot: {e}")))?;
                s.settle(from)
                    .map_err(|e| Error::Internal(format!("{what}: settle the output slot: {e}")))?;
                s
            }
            None => Slot::new(from).map_err(|e| Error::Internal(format!("{what}: output slot: {e}")))?,
        };
        Ok(Output {
            fd: AtomicI32::new(src.raw()),
            slot_fds: Some(slot.held()),
            stage_fds: stage.as_ref().map(|s| s.held()),
            rx: Arc::new(Mutex::new(Some(Reader { src, slot, stage }))),
            mark: mark.clone(),
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
    /// socket) the bytes are staged in the slot and returned as a
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
        let n = match r
            .next(out, max)
            .await
            .map_err(|e| Error::Internal(format!("read {what}: {e}")))?
        {
            Got::Staged(n) if n > 0 && splice => return Ok(Some(StagedOut { guard, n })),
            Got::Staged(n) if n > 0 => {
                let copied = r.slot.copy_into(out, n);
                let settled = r.slot.settle(r.source());
                copied
                    .and(settled)
                    .map_err(|e| Error::Internal(format!("read {what}: {e}")))?;
                n
            }
            Got::Staged(n) | Got::Read(n) => n,
        };
        if n == 0 {
            *guard = None;
            self.fd.store(-1, Ordering::Release);
            self.mark.touch();
        }
        Ok(None)
    }

    /// The slot's descriptors a keeper must hold, while the stream is open.
    fn held_slot(&self) -> Option<[i32; 2]> {
        self.fd().and(self.slot_fds)
    }

    /// The stage pipe's ends a keeper must hold, while the stream is open.
    fn held_stage(&self) -> Option<[i32; 2]> {
        self.fd().and(self.stage_fds)
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
    /// Marks its container after a change the view shows (the exit aside:
    /// the engine's exit hook marks that).
    mark: Mark,
}

/// `pid`'s start time, 0 when it cannot be read (it has already gone).
pub(crate) fn start_time_of(pid: i32) -> u64 {
    rustjail::state::proc_start_time(pid).map_or(0, |(t, _)| t)
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, Error> {
    fd.try_clone()
        .map_err(|e| Error::Internal(format!("fcntl(F_DUPFD_CLOEXEC, {}): {e}", fd.as_raw_fd())))
}

impl Process {
    /// Wraps the agent's ends of the process's stdio (`log` for a terminal's
    /// warnings); `start_time` is `pid`'s ([`start_time_of`]).
    pub(crate) fn new(
        exec_id: String,
        pid: i32,
        start_time: u64,
        exit: watch::Receiver<Option<Exit>>,
        stdio: Stdio,
        mark: Mark,
        log: &slog::Logger,
    ) -> Result<Process, Error> {
        let (term, stdin, stdout, stderr) = match stdio {
            Stdio::Pipes([i, o, e]) => (None, i, Some(o), Some(e)),
            Stdio::Pty(master) => (Some(dup(&master)?), dup(&master)?, Some(master), None),
        };
        let stdin =
            FdStream::new(stdin, Interest::WRITABLE).map_err(|e| Error::Internal(format!("register stdin: {e}")))?;
        let stdin_fd = AtomicI32::new(stdin.raw());
        let source = match term {
            None => Source::Pipe,
            Some(_) => Source::Terminal(None, log.clone()),
        };
        Ok(Process {
            exec_id,
            pid,
            start_time,
            tty: term.is_some(),
            term,
            exit,
            waited: AtomicBool::new(false),
            stdin: Mutex::new(Some(stdin)),
            stdin_fd,
            stdout: Output::new(stdout, source, None, "stdout", &mark)?,
            stderr: Output::new(stderr, Source::Pipe, None, "stderr", &mark)?,
            mark,
        })
    }

    /// A process a previous agent started, with the descriptors the keeper
    /// held for it (a stream without one is closed: its end was reported,
    /// or nothing held it).
    pub(crate) fn restore(was: Restored, fds: RestoredStdio, mark: Mark, log: &slog::Logger) -> Result<Process, Error> {
        let Restored {
            exec_id,
            pid,
            start_time,
            exit,
            waited,
        } = was;
        let stdin = fds
            .stdin
            .map(|fd| FdStream::new(fd, Interest::WRITABLE))
            .transpose()
            .map_err(|e| Error::Internal(format!("register stdin: {e}")))?;
        let stdin_fd = AtomicI32::new(stdin.as_ref().map_or(-1, |s| s.raw()));
        let source = match fds.terminal {
            None => Source::Pipe,
            Some(_) => Source::Terminal(fds.stdout_stage, log.clone()),
        };
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
            stdout: Output::new(fds.stdout, source, fds.stdout_slot, "stdout", &mark)?,
            stderr: Output::new(fds.stderr, Source::Pipe, fds.stderr_slot, "stderr", &mark)?,
            mark,
        })
    }

    /// The descriptors a keeper must hold for this process, by stream name
    /// (`in`, `out`, `err`, `pty`, each output slot's `.f` pipe and `.j`
    /// journal, and a terminal's stage pipe, `out.pr` and `out.pw` for its
    /// ends), while they are open.
    pub(crate) fn held_fds(&self) -> Vec<(&'static str, i32)> {
        let out = self.stdout.held_slot();
        let err = self.stderr.held_slot();
        let stage = self.stdout.held_stage();
        [
            ("in", self.stdin_fd()),
            ("out", self.stdout.fd()),
            ("err", self.stderr.fd()),
            ("pty", self.terminal_fd()),
            ("out.f", out.map(|s| s[0])),
            ("out.j", out.map(|s| s[1])),
            ("err.f", err.map(|s| s[0])),
            ("err.j", err.map(|s| s[1])),
            ("out.pr", stage.map(|s| s[0])),
            ("out.pw", stage.map(|s| s[1])),
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
        self.mark.touch();
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
        self.mark.touch();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::server::stream_read::Staged;
    use std::collections::HashMap;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    fn log() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    /// A process of ours on a real terminal, and the terminal's slave side.
    fn tty_process() -> (Process, std::fs::File) {
        let pty = nix::pty::openpty(None, None).unwrap();
        let exit = watch::channel(None).1;
        let p = Process::new(
            "t".into(),
            std::process::id() as i32,
            start_time_of(std::process::id() as i32),
            exit,
            Stdio::Pty(pty.master),
            Mark::default(),
            &log(),
        )
        .unwrap();
        (p, std::fs::File::from(pty.slave))
    }

    /// Copies of what a keeper holds for `p`, by stream name.
    fn keeper_copies(p: &Process) -> HashMap<&'static str, OwnedFd> {
        p.held_fds()
            .into_iter()
            .map(|(name, fd)| {
                // SAFETY: `p` holds `fd` for the duration of the borrow.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                (name, fd.try_clone_to_owned().unwrap())
            })
            .collect()
    }

    /// The process again, as a new agent takes it back from the keeper
    /// (`names`: the streams it held; others are left out, as an older
    /// agent would have).
    fn restored(keeper: &HashMap<&'static str, OwnedFd>, names: &[&str]) -> Process {
        let c = |n: &str| {
            names
                .contains(&n)
                .then(|| keeper.get(n).map(|fd| fd.try_clone().unwrap()))
                .flatten()
        };
        let fds = RestoredStdio::take(c);
        let exit = watch::channel(None).1;
        let was = Restored {
            exec_id: "t".into(),
            pid: std::process::id() as i32,
            start_time: 0,
            exit,
            waited: false,
        };
        Process::restore(was, fds, Mark::default(), &log()).unwrap()
    }

    const ALL: &[&str] = &["in", "out", "pty", "out.f", "out.j", "out.pr", "out.pw"];

    /// Reads stdout until it holds `n` bytes (a terminal passes them on in pieces).
    async fn read_n(p: &Process, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let before = out.len();
            p.stdout.read_into(&mut out, 100, "stdout").await.unwrap();
            assert!(out.len() > before, "the terminal ended early: {out:?}");
        }
        out
    }

    #[tokio::test]
    async fn terminal_output_is_staged_and_ends_once() {
        let (p, mut slave) = tty_process();
        let names: Vec<&str> = p.held_fds().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ALL, "the keeper holds the stage and the slot");
        slave.write_all(b"hello\n").unwrap();
        assert_eq!(read_n(&p, 7).await, b"hello\r\n");
        drop(slave);
        assert_eq!(p.stdout.read(100, "stdout").await.unwrap(), b"", "EIO: the end");
        assert_eq!(
            p.stdout.read(100, "stdout").await.map_err(|e| e.kind()),
            Err(ErrorKind::FailedPrecondition),
            "the end is reported once"
        );
        assert!(
            !p.held_fds().iter().any(|(n, _)| n.starts_with("out")),
            "nothing to hold"
        );
    }

    #[tokio::test]
    async fn a_terminal_read_cut_by_a_crash_is_read_again_and_a_sent_one_is_not() {
        let (p, mut slave) = tty_process();
        let keeper = keeper_copies(&p);
        slave.write_all(b"abc\n").unwrap();
        // The agent dies with the read staged, before its frame was sent.
        let staged = p
            .stdout
            .read_staged(&mut Vec::new(), 100, "stdout", true)
            .await
            .unwrap();
        std::mem::forget(staged.expect("staged"));
        // The next one sends its whole frame, then dies.
        let p = restored(&keeper, ALL);
        let staged = p
            .stdout
            .read_staged(&mut Vec::new(), 100, "stdout", true)
            .await
            .unwrap();
        let staged = staged.expect("staged again: the first frame was not sent");
        let (mut sink_r, sink_w) = std::io::pipe().unwrap();
        assert_eq!(
            staged.splice_to(sink_w.as_raw_fd(), staged.len()).unwrap(),
            staged.len()
        );
        drop(sink_w);
        std::mem::forget(staged);
        // The third reads on: what the second sent is not read again.
        let p = restored(&keeper, ALL);
        slave.write_all(b"def\n").unwrap();
        let mut sent = Vec::new();
        std::io::Read::read_to_end(&mut sink_r, &mut sent).unwrap();
        assert!(!sent.is_empty());
        let rest = read_n(&p, 10 - sent.len()).await;
        assert_eq!([sent, rest].concat(), b"abc\r\ndef\r\n", "every byte once");
    }

    #[tokio::test]
    async fn a_terminal_left_by_an_older_agent_gets_a_stage() {
        let (p, mut slave) = tty_process();
        let keeper = keeper_copies(&p);
        drop(p);
        let p = restored(&keeper, &["in", "out", "pty"]);
        assert_eq!(
            p.held_fds().into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ALL,
            "a new stage and slot, for the keeper to hold"
        );
        slave.write_all(b"x\n").unwrap();
        assert_eq!(read_n(&p, 3).await, b"x\r\n");
        // The master still serves stdin and the window size.
        p.resize(30, 90).unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ on the slave we hold, into a winsize we own.
        assert_eq!(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) }, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (30, 90));
        p.write_stdin(b"y").await.unwrap();
        assert_eq!(read_n(&p, 1).await, b"y", "the terminal's echo");
    }

    #[tokio::test]
    async fn a_terminal_the_kernel_cannot_splice_from_is_read_directly() {
        // An eventfd stands in for a tty on a kernel without splice_read for
        // ttys: the stage is refused, and the read takes the bytes as before.
        // SAFETY: eventfd makes a new descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC)) };
        let five = 5u64.to_ne_bytes();
        // SAFETY: an 8-byte write from a buffer we own.
        let wrote = unsafe { libc::write(fd.as_raw_fd(), five.as_ptr().cast(), 8) };
        assert_eq!(wrote, 8);
        let exit = watch::channel(None).1;
        let p = Process::new(
            "t".into(),
            std::process::id() as i32,
            start_time_of(std::process::id() as i32),
            exit,
            Stdio::Pty(fd),
            Mark::default(),
            &log(),
        )
        .unwrap();
        assert_eq!(p.stdout.read(100, "stdout").await.unwrap(), five);
    }
}
