//! One process of a container (its init or an exec): pid, exit status, and the
//! agent's ends of its stdio (three pipes, or a pty master). Output waits in the
//! pipe or terminal until the host reads it, so nothing is lost when the process
//! exits first, and a slow host blocks the process only once the pipe is full.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::sync::{watch, Mutex};

use super::stream::FdStream;
use super::SandboxError;
use crate::reaper::Exit;

/// Largest chunk one ReadStdout/ReadStderr returns.
pub const MAX_READ: usize = 1 << 20;

/// The agent's ends of a process's stdio.
pub enum Stdio {
    /// Three pipes: stdin writer, stdout reader, stderr reader.
    Pipes([OwnedFd; 3]),
    /// The master side of the process's terminal; stdout and stderr both arrive on it.
    Pty(OwnedFd),
}

/// One output stream.
pub struct Output {
    rx: Mutex<Option<FdStream>>,
}

impl Output {
    fn new(fd: Option<OwnedFd>, what: &'static str) -> Result<Output, SandboxError> {
        let rx = fd
            .map(|fd| FdStream::new(fd, Interest::READABLE, what))
            .transpose()
            .map_err(|e| SandboxError::Internal(format!("register {what}: {e}")))?;
        Ok(Output { rx: Mutex::new(rx) })
    }

    /// Up to `len` bytes, waiting for data; at the end an empty read once, then an error.
    pub async fn read(&self, len: usize, what: &str) -> Result<Vec<u8>, SandboxError> {
        let mut buf = Vec::new();
        self.read_into(&mut buf, len, what).await?;
        Ok(buf)
    }

    /// Like [`Output::read`], appending to `out` (nothing appended: the end).
    pub async fn read_into(&self, out: &mut Vec<u8>, len: usize, what: &str) -> Result<(), SandboxError> {
        let mut guard = self.rx.lock().await;
        let Some(rx) = guard.as_mut() else {
            return Err(SandboxError::FailedPrecondition(format!(
                "{what}: end of stream already reported"
            )));
        };
        let n = rx
            .read_available(out, len.clamp(1, MAX_READ))
            .await
            .map_err(|e| SandboxError::Internal(format!("read {what}: {e}")))?;
        if n == 0 {
            *guard = None;
        }
        Ok(())
    }
}

/// A process the agent started.
pub struct Process {
    /// Kata's exec id (the container id for its init, by convention).
    pub exec_id: String,
    /// Host pid.
    pub pid: i32,
    /// Whether its stdio is a terminal.
    pub tty: bool,
    /// The pty master, kept for window-size changes after stdin is closed.
    term: Option<OwnedFd>,
    exit: watch::Receiver<Option<Exit>>,
    waited: AtomicBool,
    stdin: Mutex<Option<FdStream>>,
    /// stdout (the terminal's output when `tty`).
    pub stdout: Output,
    /// stderr (ends at once when `tty`: the terminal carries it).
    pub stderr: Output,
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, SandboxError> {
    fd.try_clone()
        .map_err(|e| SandboxError::Internal(format!("fcntl(F_DUPFD_CLOEXEC, {}): {e}", fd.as_raw_fd())))
}

impl Process {
    /// Wraps the agent's ends of the process's stdio.
    pub fn new(
        exec_id: String,
        pid: i32,
        exit: watch::Receiver<Option<Exit>>,
        stdio: Stdio,
    ) -> Result<Process, SandboxError> {
        let (term, stdin, stdout, stderr) = match stdio {
            Stdio::Pipes([i, o, e]) => (None, i, Some(o), Some(e)),
            Stdio::Pty(master) => (Some(dup(&master)?), dup(&master)?, Some(master), None),
        };
        let stdin = FdStream::new(stdin, Interest::WRITABLE, "stdin")
            .map_err(|e| SandboxError::Internal(format!("register stdin: {e}")))?;
        Ok(Process {
            exec_id,
            pid,
            tty: term.is_some(),
            term,
            exit,
            waited: AtomicBool::new(false),
            stdin: Mutex::new(Some(stdin)),
            stdout: Output::new(stdout, "stdout")?,
            stderr: Output::new(stderr, "stderr")?,
        })
    }

    /// The exit, once there is one.
    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Waits for the exit; a second wait is refused.
    pub async fn wait(&self) -> Result<Exit, SandboxError> {
        if self.waited.swap(true, Ordering::AcqRel) {
            return Err(SandboxError::FailedPrecondition(format!(
                "process {} was already waited for",
                self.exec_id
            )));
        }
        let mut rx = self.exit.clone();
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| SandboxError::Internal("the reaper went away".into()))?
            .expect("waited for Some");
        Ok(exit)
    }

    /// Waits up to `timeout` for the exit without counting as the one wait.
    pub async fn exit_within(&self, timeout: std::time::Duration) -> Option<Exit> {
        let mut rx = self.exit.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|e| e.is_some())).await;
        self.exited()
    }

    /// Writes to stdin; returns the bytes written.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<usize, SandboxError> {
        let guard = self.stdin.lock().await;
        let tx = guard
            .as_ref()
            .ok_or_else(|| SandboxError::FailedPrecondition(format!("stdin of {} is closed", self.exec_id)))?;
        tx.write_all(data)
            .await
            .map_err(|e| SandboxError::FailedPrecondition(format!("write stdin of {}: {e}", self.exec_id)))?;
        Ok(data.len())
    }

    /// Closes stdin so the process sees end of file. On a terminal, whose master
    /// stays open for output, that is the EOF character (^D) the line discipline
    /// turns into an empty read.
    pub async fn close_stdin(&self) {
        let mut guard = self.stdin.lock().await;
        if let (true, Some(tx)) = (self.tty, guard.as_ref()) {
            let _ = tx.write_all(b"\x04").await;
        }
        guard.take();
    }

    /// Sets the terminal's window size.
    pub fn resize(&self, rows: u32, cols: u32) -> Result<(), SandboxError> {
        let Some(fd) = self.term.as_ref().map(|t| t.as_raw_fd()) else {
            return Err(SandboxError::FailedPrecondition(format!(
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
            return Err(SandboxError::Internal(format!(
                "ioctl(TIOCSWINSZ) on the terminal of {}: {}",
                self.exec_id,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}
