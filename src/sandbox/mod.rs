//! The sandbox: every container and process the agent runs, in one model.
//! RPC handlers call into it; it calls rustjail (on blocking threads) and
//! takes exit statuses from the reaper.

pub mod process;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::reaper::{Exit, Reaper};
pub use process::Process;

/// A failed sandbox operation, by the ttrpc status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidArgument(String),
    /// NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
    /// INTERNAL.
    #[error("{0}")]
    Internal(String),
}

impl From<rustjail::Error> for SandboxError {
    fn from(e: rustjail::Error) -> Self {
        let msg = e.to_string();
        match e {
            rustjail::Error::BadId(_) | rustjail::Error::Spec(_) => SandboxError::InvalidArgument(msg),
            rustjail::Error::NotFound(_) => SandboxError::NotFound(msg),
            rustjail::Error::Exists(_) => SandboxError::AlreadyExists(msg),
            rustjail::Error::WrongState { .. } => SandboxError::FailedPrecondition(msg),
            _ => SandboxError::Internal(msg),
        }
    }
}

/// A container and its processes.
pub struct Container {
    /// Container id.
    pub id: String,
    /// Its init.
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
}

/// Everything the agent runs.
pub struct Sandbox {
    runtime: Arc<rustjail::Runtime>,
    bundles: PathBuf,
    reaper: Reaper,
    pipe_size: u32,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids being created, so that two requests for one id cannot both proceed.
    creating: Mutex<std::collections::HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SandboxError::Internal(format!("worker thread: {e}")))?
}

/// Three pipes: (our ends [stdin writer, stdout reader, stderr reader], the process's ends).
fn stdio_pipes(pipe_size: u32) -> Result<([OwnedFd; 3], [OwnedFd; 3]), SandboxError> {
    let p = || -> Result<(OwnedFd, OwnedFd), SandboxError> {
        let (r, w) = std::io::pipe().map_err(|e| SandboxError::Internal(format!("pipe2: {e}")))?;
        let (r, w): (OwnedFd, OwnedFd) = (r.into(), w.into());
        if pipe_size > 0 {
            // SAFETY: fcntl on a pipe we own.
            if unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, pipe_size as libc::c_int) } < 0 {
                return Err(SandboxError::Internal(format!(
                    "fcntl(F_SETPIPE_SZ, {pipe_size}): {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok((r, w))
    };
    let (in_r, in_w) = p()?;
    let (out_r, out_w) = p()?;
    let (err_r, err_w) = p()?;
    Ok(([in_w, out_r, err_r], [in_r, out_w, err_w]))
}

/// Hooks run by rustjail in the agent's process are reaped by the reaper like
/// every child: their statuses come from it. Called on blocking threads only.
fn hook_waiter(reaper: Reaper) -> rustjail::hooks::ChildWaiter {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |pid, timeout| {
        let mut rx = reaper.watch(pid);
        handle.block_on(async move {
            let done = async { rx.wait_for(|e| e.is_some()).await.ok().and_then(|e| *e) };
            let exit = match timeout {
                Some(t) => tokio::time::timeout(t, done).await.ok().flatten(),
                None => done.await,
            };
            exit.map(|e| match e {
                Exit::Code(c) => rustjail::hooks::HookExit::Code(c),
                Exit::Signal(s) => rustjail::hooks::HookExit::Signal(s),
            })
        })
    })
}

impl Sandbox {
    /// A sandbox keeping container state under `state_dir`. Must be called
    /// inside the tokio runtime.
    pub fn new(state_dir: PathBuf, reaper: Reaper, pipe_size: u32) -> Result<Sandbox, SandboxError> {
        let mut runtime = rustjail::Runtime::new(&state_dir.join("containers"))?;
        runtime.set_child_waiter(hook_waiter(reaper.clone()));
        let bundles = state_dir.join("bundles");
        std::fs::create_dir_all(&bundles)
            .map_err(|e| SandboxError::Internal(format!("mkdir {}: {e}", bundles.display())))?;
        Ok(Sandbox {
            runtime: Arc::new(runtime),
            bundles,
            reaper,
            pipe_size,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(Default::default()),
        })
    }

    /// A container by id.
    pub fn container(&self, id: &str) -> Result<Arc<Container>, SandboxError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| SandboxError::NotFound(format!("container {id:?} does not exist")))
    }

    /// A process by container and exec id (empty or the container's own id: the init).
    pub fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>, SandboxError> {
        let c = self.container(id)?;
        if exec_id.is_empty() || exec_id == c.init.exec_id {
            return Ok(c.init.clone());
        }
        let execs = lock(&c.execs);
        execs
            .get(exec_id)
            .cloned()
            .ok_or_else(|| SandboxError::NotFound(format!("process {exec_id:?} of container {id:?} does not exist")))
    }

    /// Creates a container from an OCI spec whose `root.path` is its rootfs.
    pub async fn create_container(
        &self,
        id: &str,
        exec_id: &str,
        spec: oci_spec::runtime::Spec,
    ) -> Result<(), SandboxError> {
        rustjail::state::validate_id(id)?;
        if lock(&self.containers).contains_key(id) || !lock(&self.creating).insert(id.to_string()) {
            return Err(SandboxError::AlreadyExists(format!("container {id:?} already exists")));
        }
        let result = self.create_reserved(id, exec_id, spec).await;
        lock(&self.creating).remove(id);
        result
    }

    async fn create_reserved(
        &self,
        id: &str,
        exec_id: &str,
        spec: oci_spec::runtime::Spec,
    ) -> Result<(), SandboxError> {
        if spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false) {
            return Err(SandboxError::InvalidArgument(
                "terminals are not supported by this agent yet".into(),
            ));
        }
        let bundle = self.bundles.join(id);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| SandboxError::Internal(format!("mkdir {}: {e}", bundle.display())))?;
        let result = self.create_in(id, exec_id, spec, bundle.clone()).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&bundle);
        }
        result
    }

    async fn create_in(
        &self,
        id: &str,
        exec_id: &str,
        spec: oci_spec::runtime::Spec,
        bundle: PathBuf,
    ) -> Result<(), SandboxError> {
        spec.save(bundle.join("config.json"))
            .map_err(|e| SandboxError::Internal(format!("write config.json: {e}")))?;
        let (ours, theirs) = stdio_pipes(self.pipe_size)?;
        let rt = self.runtime.clone();
        let opts = rustjail::CreateOptions {
            id: id.to_string(),
            bundle,
            stdio: Some([theirs[0].as_raw_fd(), theirs[1].as_raw_fd(), theirs[2].as_raw_fd()]),
            ..Default::default()
        };
        let state = blocking(move || {
            let r = rt.create(&opts).map_err(SandboxError::from);
            drop(theirs);
            r
        })
        .await?;
        let exit = self.reaper.watch(state.pid);
        let exec_id = if exec_id.is_empty() {
            id.to_string()
        } else {
            exec_id.to_string()
        };
        let init = Arc::new(Process::new(exec_id, state.pid, exit, ours)?);
        let c = Arc::new(Container {
            id: id.to_string(),
            init,
            execs: Mutex::new(HashMap::new()),
        });
        lock(&self.containers).insert(id.to_string(), c);
        Ok(())
    }

    /// Lets the container's process run.
    pub async fn start_container(&self, id: &str) -> Result<(), SandboxError> {
        self.container(id)?;
        let rt = self.runtime.clone();
        let id = id.to_string();
        blocking(move || rt.start(&id).map(|_| ()).map_err(SandboxError::from)).await
    }

    /// Starts another process in a running container.
    pub async fn exec_process(
        &self,
        id: &str,
        exec_id: &str,
        process: oci_spec::runtime::Process,
    ) -> Result<(), SandboxError> {
        let c = self.container(id)?;
        if exec_id.is_empty() || exec_id == c.init.exec_id || lock(&c.execs).contains_key(exec_id) {
            return Err(SandboxError::AlreadyExists(format!(
                "process {exec_id:?} of container {id:?} already exists"
            )));
        }
        if process.terminal().unwrap_or(false) {
            return Err(SandboxError::InvalidArgument(
                "terminals are not supported by this agent yet".into(),
            ));
        }
        let (ours, theirs) = stdio_pipes(self.pipe_size)?;
        let rt = self.runtime.clone();
        let cid = id.to_string();
        let stdio = Some([theirs[0].as_raw_fd(), theirs[1].as_raw_fd(), theirs[2].as_raw_fd()]);
        let pid = blocking(move || {
            let r = rt
                .exec(
                    &cid,
                    rustjail::ExecOptions {
                        process,
                        console_socket: None,
                        stdio,
                    },
                )
                .map_err(SandboxError::from);
            drop(theirs);
            r
        })
        .await?;
        let exit = self.reaper.watch(pid.as_raw());
        let p = Arc::new(Process::new(exec_id.to_string(), pid.as_raw(), exit, ours)?);
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
        let p = self.process(id, exec_id)?;
        let exit = p.wait().await?;
        if let Ok(c) = self.container(id) {
            if p.exec_id != c.init.exec_id {
                lock(&c.execs).remove(&p.exec_id);
            }
        }
        Ok(exit)
    }

    /// Removes a container; one still running gets `timeout` to end by itself,
    /// then SIGKILL.
    pub async fn remove_container(&self, id: &str, timeout: Duration) -> Result<(), SandboxError> {
        let c = self.container(id)?;
        if c.init.exit_within(timeout).await.is_none() {
            let _ = nix::sys::signal::kill(Pid::from_raw(c.init.pid), Signal::SIGKILL);
            if c.init.exit_within(Duration::from_secs(10)).await.is_none() {
                return Err(SandboxError::Internal(format!(
                    "container {id} (pid {}) survived SIGKILL",
                    c.init.pid
                )));
            }
        }
        let rt = self.runtime.clone();
        let cid = id.to_string();
        blocking(move || rt.delete(&cid, true).map(|_| ()).map_err(SandboxError::from)).await?;
        lock(&self.containers).remove(id);
        let _ = std::fs::remove_dir_all(self.bundles.join(id));
        Ok(())
    }
}
