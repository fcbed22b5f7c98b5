//! Processes: exec into a running container, signal, wait.

use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::new_stdio::NewStdio;
use super::process::Process;
use super::{blocking, lock, Reservation, Sandbox, SandboxError};
use crate::reaper::Exit;

impl Sandbox {
    /// Starts another process in a running container.
    pub async fn exec_process(
        &self,
        id: &str,
        exec_id: &str,
        process: oci_spec::runtime::Process,
    ) -> Result<(), SandboxError> {
        let c = self.container(id)?;
        if exec_id.is_empty() {
            return Err(SandboxError::InvalidArgument(format!(
                "ExecProcess into {id:?} without an exec_id"
            )));
        }
        let reserved = (exec_id != c.init.exec_id && !lock(&c.execs).contains_key(exec_id))
            .then(|| Reservation::take(&c.starting, exec_id))
            .flatten();
        let Some(_reserved) = reserved else {
            return Err(SandboxError::AlreadyExists(format!(
                "process {exec_id:?} of container {id:?} already exists"
            )));
        };
        let terminal = process.terminal().unwrap_or(false);
        let mut stdio = NewStdio::new(terminal, self.cfg.pipe_size)?;
        let rt = self.runtime.clone();
        let opts = rustjail::ExecOptions {
            process,
            stdio: stdio.take_theirs(),
        };
        let held = c.clone();
        let spawned = blocking(move || rt.exec(&held.rj, opts).map_err(SandboxError::from)).await?;
        let pid = spawned.pid.as_raw();
        // Register before anything can fail, so the exit status is collected.
        let exit = self.reaper.watch(pid);
        let stdio = match stdio.finish(spawned.terminal) {
            Ok(s) => s,
            Err(e) => {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(e);
            }
        };
        let p = Arc::new(Process::new(exec_id.to_string(), pid, exit, stdio)?);
        lock(&c.execs).insert(exec_id.to_string(), p);
        Ok(())
    }

    /// Sends `signal` (0 probes) to a process.
    pub fn signal(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), SandboxError> {
        let p = self.process(id, exec_id)?;
        let sig = match signal {
            0 => None,
            n => Some(
                Signal::try_from(n as i32).map_err(|_| SandboxError::InvalidArgument(format!("unknown signal {n}")))?,
            ),
        };
        if p.exited().is_some() {
            return Err(SandboxError::FailedPrecondition(format!(
                "process {:?} has exited",
                p.exec_id
            )));
        }
        nix::sys::signal::kill(Pid::from_raw(p.pid), sig)
            .map_err(|e| SandboxError::Internal(format!("kill pid {} ({}): {e}", p.pid, p.exec_id)))
    }

    /// Waits for a process; an exec'd process is forgotten once waited for.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit, SandboxError> {
        let p: Arc<Process> = self.process(id, exec_id)?;
        let exit = p.wait().await?;
        if let Ok(c) = self.container(id) {
            if p.exec_id != c.init.exec_id {
                lock(&c.execs).remove(&p.exec_id);
            }
        }
        Ok(exit)
    }
}
