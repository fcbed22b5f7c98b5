//! The stdio of a process being started: three pipes made now, or a console
//! socket on which its terminal's master will arrive. Shared by container
//! creation and exec.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::process::Stdio;
use super::tty::ConsoleSocket;
use super::{stdio_pipes, SandboxError};

/// Stdio for a process rustjail is about to start.
pub struct NewStdio {
    console: Option<ConsoleSocket>,
    ours: Option<[OwnedFd; 3]>,
    theirs: Option<[OwnedFd; 3]>,
}

impl NewStdio {
    /// A terminal (console socket under `consoles`) or pipes of `pipe_size`.
    pub fn new(terminal: bool, consoles: &Path, pipe_size: u32) -> Result<NewStdio, SandboxError> {
        if terminal {
            return Ok(NewStdio {
                console: Some(ConsoleSocket::listen(consoles)?),
                ours: None,
                theirs: None,
            });
        }
        let (ours, theirs) = stdio_pipes(pipe_size)?;
        Ok(NewStdio {
            console: None,
            ours: Some(ours),
            theirs: Some(theirs),
        })
    }

    /// The console socket to give rustjail, for a terminal.
    pub fn console_path(&self) -> Option<PathBuf> {
        self.console.as_ref().map(|c| c.path().to_path_buf())
    }

    /// The process's pipe ends as rustjail takes them, for pipes.
    pub fn raw(&self) -> Option<[RawFd; 3]> {
        self.theirs
            .as_ref()
            .map(|t| [t[0].as_raw_fd(), t[1].as_raw_fd(), t[2].as_raw_fd()])
    }

    /// The process's pipe ends, to close once rustjail has passed them on.
    pub fn take_theirs(&mut self) -> Option<[OwnedFd; 3]> {
        self.theirs.take()
    }

    /// The agent's side, once the process exists: the pipes, or the terminal's master.
    pub async fn finish(self) -> Result<Stdio, SandboxError> {
        match (self.ours, self.console) {
            (Some(p), _) => Ok(Stdio::Pipes(p)),
            (None, Some(c)) => c.master().await.map(Stdio::Pty),
            (None, None) => Err(SandboxError::Internal("stdio already used".into())),
        }
    }
}
