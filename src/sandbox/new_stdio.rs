//! The stdio of a process being started: three pipes made now, or a terminal
//! whose master rustjail hands back. Shared by container creation and exec.

use std::os::fd::OwnedFd;

use super::process::Stdio;
use super::{stdio_pipes, Error};

/// Stdio for a process rustjail is about to start.
pub(crate) struct NewStdio {
    terminal: bool,
    ours: Option<[OwnedFd; 3]>,
    theirs: Option<[OwnedFd; 3]>,
}

impl NewStdio {
    /// A terminal (made by rustjail), or pipes of `pipe_size`.
    pub(crate) fn new(terminal: bool, pipe_size: u32) -> Result<NewStdio, Error> {
        if terminal {
            return Ok(NewStdio {
                terminal,
                ours: None,
                theirs: None,
            });
        }
        let (ours, theirs) = stdio_pipes(pipe_size)?;
        Ok(NewStdio {
            terminal,
            ours: Some(ours),
            theirs: Some(theirs),
        })
    }

    /// The process's pipe ends, for rustjail to pass on (and close).
    pub(crate) fn take_theirs(&mut self) -> Option<[OwnedFd; 3]> {
        self.theirs.take()
    }

    /// The agent's side, once the process exists: the pipes, or the terminal's
    /// master rustjail returned.
    pub(crate) fn finish(self, master: Option<OwnedFd>) -> Result<Stdio, Error> {
        match (self.ours, master) {
            (Some(p), _) => Ok(Stdio::Pipes(p)),
            (None, Some(m)) if self.terminal => Ok(Stdio::Pty(m)),
            (None, _) => Err(Error::Internal("rustjail returned no terminal".into())),
        }
    }
}
