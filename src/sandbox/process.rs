//! One process of a container (its init or an exec): pid, exit status, and the
//! agent's ends of its stdio pipes. Output waits in the pipe until the host
//! reads it, so nothing is lost when the process exits first, and a slow host
//! blocks the process only once the pipe is full.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{watch, Mutex};

use super::SandboxError;
use crate::reaper::Exit;

/// Largest chunk one ReadStdout/ReadStderr returns.
pub const MAX_READ: usize = 1 << 20;

/// One output stream.
pub struct Output {
    rx: Mutex<Option<pipe::Receiver>>,
    eof_reported: AtomicBool,
}

impl Output {
    fn new(fd: OwnedFd) -> Result<Output, SandboxError> {
        let rx = pipe::Receiver::from_owned_fd(fd).map_err(|e| SandboxError::Internal(format!("pipe: {e}")))?;
        Ok(Output {
            rx: Mutex::new(Some(rx)),
            eof_reported: AtomicBool::new(false),
        })
    }

    /// Up to `len` bytes, waiting for data; at the end an empty read once, then an error.
    pub async fn read(&self, len: usize, what: &str) -> Result<Vec<u8>, SandboxError> {
        let mut guard = self.rx.lock().await;
        let Some(rx) = guard.as_mut() else {
            return Err(SandboxError::FailedPrecondition(format!(
                "{what}: end of stream already reported"
            )));
        };
        let mut buf = vec![0u8; len.clamp(1, MAX_READ)];
        let n = rx
            .read(&mut buf)
            .await
            .map_err(|e| SandboxError::Internal(format!("read {what}: {e}")))?;
        if n == 0 {
            *guard = None;
            self.eof_reported.store(true, Ordering::Relaxed);
        }
        buf.truncate(n);
        Ok(buf)
    }
}

/// A process the agent started.
pub struct Process {
    /// Kata's exec id (the container id for its init, by convention).
    pub exec_id: String,
    /// Host pid.
    pub pid: i32,
    exit: watch::Receiver<Option<Exit>>,
    waited: AtomicBool,
    stdin: Mutex<Option<pipe::Sender>>,
    /// stdout.
    pub stdout: Output,
    /// stderr.
    pub stderr: Output,
}

impl Process {
    /// Wraps the agent's pipe ends (stdin writer, stdout and stderr readers).
    pub fn new(
        exec_id: String,
        pid: i32,
        exit: watch::Receiver<Option<Exit>>,
        stdio: [OwnedFd; 3],
    ) -> Result<Process, SandboxError> {
        let [stdin, stdout, stderr] = stdio;
        let stdin = pipe::Sender::from_owned_fd(stdin).map_err(|e| SandboxError::Internal(format!("pipe: {e}")))?;
        Ok(Process {
            exec_id,
            pid,
            exit,
            waited: AtomicBool::new(false),
            stdin: Mutex::new(Some(stdin)),
            stdout: Output::new(stdout)?,
            stderr: Output::new(stderr)?,
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
        let mut guard = self.stdin.lock().await;
        let tx = guard
            .as_mut()
            .ok_or_else(|| SandboxError::FailedPrecondition(format!("stdin of {} is closed", self.exec_id)))?;
        tx.write_all(data)
            .await
            .map_err(|e| SandboxError::FailedPrecondition(format!("write stdin: {e}")))?;
        Ok(data.len())
    }

    /// Closes stdin so the process sees EOF.
    pub async fn close_stdin(&self) {
        self.stdin.lock().await.take();
    }
}
