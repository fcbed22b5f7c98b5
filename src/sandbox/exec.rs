//! Processes: exec into a running container, signal, wait.

use std::sync::Arc;

use nix::sys::signal::Signal;
use slog::{info, warn};

use super::changed::Mark;
use super::new_stdio::NewStdio;
use super::process::Process;
use super::{blocking, lock, Error, Reservation, Result, Sandbox};
use crate::reaper::Exit;

impl Sandbox {
    /// Starts another process in a running container.
    pub(crate) async fn exec_process(
        self: &Arc<Self>,
        id: &str,
        exec_id: &str,
        process: oci_spec::runtime::Process,
    ) -> Result<()> {
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        self.detached(move |sb| async move { sb.exec_process_task(&id, &exec_id, process).await })
            .await
    }

    async fn exec_process_task(&self, id: &str, exec_id: &str, process: oci_spec::runtime::Process) -> Result<()> {
        let c = self.container(id)?;
        if exec_id.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "ExecProcess into {id:?} without an exec_id"
            )));
        }
        let reserved = (exec_id != c.init.exec_id && !lock(&c.execs).contains_key(exec_id))
            .then(|| Reservation::take(&c.starting, exec_id))
            .flatten();
        let Some(_reserved) = reserved else {
            return Err(Error::ProcessExists {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
            });
        };
        let terminal = process.terminal().unwrap_or(false);
        let mut stdio = NewStdio::new(terminal, self.cfg.pipe_size)?;
        let theirs = stdio.take_theirs();
        let held = c.clone();
        let spawned = blocking(move || held.engine.exec(process, theirs)).await?;
        let pid = spawned.pid;
        // Registered before anything can fail, so the exit status is collected.
        let exit = self.watch_exit_of(id, pid);
        let p = match stdio.finish(spawned.terminal).and_then(|s| {
            Process::new(
                exec_id.to_string(),
                pid,
                super::process::start_time_of(pid),
                exit,
                s,
                Mark::new(&self.changed, id),
                &self.log,
            )
        }) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = self.engine.signal(pid, Some(Signal::SIGKILL));
                return Err(e);
            }
        };
        self.keep_stdio(id, &p);
        lock(&c.execs).insert(exec_id.to_string(), p);
        self.changed.touch(id);
        info!(self.log, "process started"; "container" => id, "exec_id" => exec_id, "pid" => pid, "terminal" => terminal);
        Ok(())
    }

    /// Sends `signal` (0 probes) to a process, with kata-agent's rules: an
    /// empty exec id with SIGKILL kills every process of the container
    /// (cgroup frozen meanwhile; failures only logged); SIGTERM to an init
    /// that does not block, ignore or catch it becomes SIGKILL (exit 137); a
    /// process that exited (waited for or not) is not an error.
    pub(crate) async fn signal(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let sig = match signal {
            0 => None,
            n => Some(Signal::try_from(n as i32).map_err(|_| Error::InvalidArgument(format!("unknown signal {n}")))?),
        };
        let c = self.container(id)?;
        if exec_id.is_empty() && sig == Some(Signal::SIGKILL) {
            let held = c.clone();
            match blocking(move || held.engine.kill_all(Signal::SIGKILL)).await {
                Ok(n) => info!(self.log, "killed every process"; "container" => id, "processes" => n),
                Err(e) => warn!(self.log, "kill-all failed"; "container" => id, "error" => %e),
            }
            return Ok(());
        }
        let p = self.process(id, exec_id)?;
        if p.exited().is_some() {
            return Ok(());
        }
        let mut sig = sig;
        if Arc::ptr_eq(&p, &c.init)
            && sig == Some(Signal::SIGTERM)
            && !self.engine.handles_signal(p.pid, Signal::SIGTERM)
        {
            info!(self.log, "SIGTERM becomes SIGKILL: the init does not handle it"; "container" => id, "pid" => p.pid);
            sig = Some(Signal::SIGKILL);
        }
        match self.engine.signal(p.pid, sig) {
            // It exited since the check; the reaper has not told yet.
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(e) => Err(Error::sys(format!("kill pid {} ({} of {id})", p.pid, p.exec_id), e)),
        }
    }

    /// Closes a process's stdin (the keeper's copy too, or the process would
    /// never see the end of file).
    pub(crate) async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let p = self.process(id, exec_id)?;
        p.close_stdin().await;
        self.unkeep(id, Some(&p.exec_id), Some("in"));
        Ok(())
    }

    /// Waits for a process. Concurrent waits all get the exit; an exec'd
    /// process is forgotten when the first of them returns (later waits:
    /// NOT_FOUND), as kata-agent does; the init stays until RemoveContainer.
    pub(crate) async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let p: Arc<Process> = self.process(id, exec_id)?;
        let exit = p.wait().await?;
        if let Ok(c) = self.container(id) {
            let removed = {
                let mut execs = lock(&c.execs);
                let ours = execs.get(&p.exec_id).is_some_and(|q| Arc::ptr_eq(q, &p));
                ours && execs.remove(&p.exec_id).is_some()
            };
            if removed {
                self.changed.touch(id);
                self.unkeep(id, Some(&p.exec_id), None);
            }
        }
        info!(self.log, "process exited"; "container" => id, "exec_id" => &p.exec_id, "pid" => p.pid, "status" => exit.status());
        Ok(exit)
    }
}
