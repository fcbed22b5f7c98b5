//! The sandbox: every container and process the agent runs, in one model.
//! RPC handlers call into it; it calls rustjail (on blocking threads) and
//! takes exit statuses from the reaper.
//!
//! Files: `pod.rs` (CreateSandbox/DestroySandbox), `container.rs` (one
//! container's lifecycle and cgroup operations), `exec.rs` (processes),
//! `process.rs`/`stream.rs`/`tty.rs` (stdio), `shared_ns.rs`, `guest_hooks.rs`,
//! `oom.rs`, `snapshot.rs` (the model as plain data).

pub mod container;
pub mod cpuset;
pub mod exec;
pub mod guest_hooks;
pub mod hotplug;
pub mod new_stdio;
pub mod oom;
pub mod pod;
pub mod process;
pub mod shared_ns;
pub mod snapshot;
pub mod stream;
pub mod tty;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::reaper::{Exit, Reaper};
pub use process::{Process, Stdio};

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

impl From<crate::storage::StorageError> for SandboxError {
    fn from(e: crate::storage::StorageError) -> Self {
        let msg = e.to_string();
        match e.code() {
            ttrpc::Code::INVALID_ARGUMENT => SandboxError::InvalidArgument(msg),
            ttrpc::Code::ALREADY_EXISTS => SandboxError::AlreadyExists(msg),
            _ => SandboxError::Internal(msg),
        }
    }
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
    /// Its bundle directory (config.json).
    pub bundle: PathBuf,
    /// Its init.
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Exec ids being started, so that two requests for one id cannot both proceed.
    starting: Mutex<HashSet<String>>,
    oom_watch: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(t) = &self.oom_watch {
            t.abort();
        }
    }
}

/// What CreateSandbox set up.
#[derive(Debug, Default, Clone)]
pub struct PodInfo {
    /// Whether CreateSandbox was called (and DestroySandbox not yet).
    pub created: bool,
    /// The host's id for the sandbox.
    pub id: String,
    /// Hostname of the shared UTS namespace.
    pub hostname: String,
    /// resolv.conf lines written.
    pub dns: Vec<String>,
    /// Whether containers share one PID namespace.
    pub sandbox_pidns: bool,
    /// The container whose PID namespace is shared.
    pub pidns_container: Option<String>,
    /// The process holding the shared UTS and IPC namespaces.
    pub ns_holder: Option<i32>,
    /// Its exit, from the reaper.
    pub ns_holder_exit: Option<tokio::sync::watch::Receiver<Option<Exit>>>,
    /// Directory of guest hooks.
    pub guest_hook_path: Option<PathBuf>,
    /// The hooks found there.
    pub guest_hooks: guest_hooks::GuestHooks,
}

/// Where the sandbox keeps files and how it starts processes.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Container state, bundles and console sockets go here.
    pub state_dir: PathBuf,
    /// `agent.container_pipe_size` (0: the kernel's default).
    pub pipe_size: u32,
    /// The file CreateSandbox writes DNS servers to.
    pub resolv_conf: PathBuf,
}

/// Everything the agent runs.
pub struct Sandbox {
    runtime: Arc<rustjail::Runtime>,
    cfg: SandboxConfig,
    bundles: PathBuf,
    consoles: PathBuf,
    reaper: Reaper,
    /// `pivot_root` cannot leave an initramfs: use MS_MOVE + chroot there.
    no_pivot: bool,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids being created, so that two requests for one id cannot both proceed.
    creating: Mutex<HashSet<String>>,
    pod: Mutex<PodInfo>,
    /// Storages of the sandbox (owner [`SANDBOX_OWNER`]) and of each container (owner: its id).
    storages: Arc<crate::storage::StorageManager>,
    oom_tx: mpsc::UnboundedSender<String>,
    oom_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// Owner of the storages CreateSandbox mounts (container ids cannot contain '/').
pub const SANDBOX_OWNER: &str = "/sandbox";

/// An id held in a set of ids being created or started, so two requests for
/// one id cannot both proceed; released on drop, also when the request's
/// future is dropped (the client's deadline ran out).
pub(crate) struct Reservation<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Reservation<'a> {
    /// Holds `id` in `set`; None when someone already holds it.
    pub(crate) fn take(set: &'a Mutex<HashSet<String>>, id: &str) -> Option<Reservation<'a>> {
        lock(set).insert(id.to_string()).then(|| Reservation {
            set,
            id: id.to_string(),
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.id);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SandboxError::Internal(format!("worker thread: {e}")))?
}

/// Output pipe size when `agent.container_pipe_size` is 0: one ReadStdout can
/// then carry a whole 1 MiB chunk (the kernel's default pipe holds 64 KiB).
/// Pages are allocated only as output waits, so an idle pipe costs nothing.
pub const DEFAULT_OUTPUT_PIPE_SIZE: u32 = 1 << 20;

fn set_pipe_size(w: &OwnedFd, size: u32) -> std::io::Result<()> {
    // SAFETY: fcntl on a pipe we own.
    if unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Three pipes: (our ends [stdin writer, stdout reader, stderr reader], the
/// process's ends). `pipe_size` 0: kernel default for stdin, and
/// [`DEFAULT_OUTPUT_PIPE_SIZE`] for output where the system allows it.
fn stdio_pipes(pipe_size: u32) -> Result<([OwnedFd; 3], [OwnedFd; 3]), SandboxError> {
    let p = |output: bool| -> Result<(OwnedFd, OwnedFd), SandboxError> {
        let (r, w) = std::io::pipe().map_err(|e| SandboxError::Internal(format!("pipe2: {e}")))?;
        let (r, w): (OwnedFd, OwnedFd) = (r.into(), w.into());
        if pipe_size > 0 {
            set_pipe_size(&w, pipe_size)
                .map_err(|e| SandboxError::Internal(format!("fcntl(F_SETPIPE_SZ, {pipe_size}): {e}")))?;
        } else if output {
            // Best effort: a lower fs.pipe-max-size or the per-user limit keeps the default.
            let _ = set_pipe_size(&w, DEFAULT_OUTPUT_PIPE_SIZE);
        }
        Ok((r, w))
    };
    let (in_r, in_w) = p(false)?;
    let (out_r, out_w) = p(true)?;
    let (err_r, err_w) = p(true)?;
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

/// Whether `/` is an initramfs (ramfs or tmpfs), which `pivot_root` cannot leave.
fn root_is_initramfs() -> bool {
    match nix::sys::statfs::statfs("/") {
        // The type is `long` on glibc and `unsigned long` on musl.
        #[allow(clippy::unnecessary_cast)]
        Ok(s) => {
            let t = s.filesystem_type().0 as i64;
            // RAMFS_MAGIC (linux/magic.h; libc does not export it) or TMPFS_MAGIC.
            t == 0x8584_58f6 || t == libc::TMPFS_MAGIC as i64
        }
        Err(_) => false,
    }
}

impl Sandbox {
    /// A sandbox keeping container state under `cfg.state_dir`. Must be called
    /// inside the tokio runtime.
    pub fn new(cfg: SandboxConfig, reaper: Reaper) -> Result<Sandbox, SandboxError> {
        let mut runtime = rustjail::Runtime::new(&cfg.state_dir.join("containers"))?;
        runtime.set_child_waiter(hook_waiter(reaper.clone()));
        // As kata-agent: a Kata host strips the `network` namespace (the VM is
        // the pod's), and sends its own AppArmor profile name, meaningless here.
        runtime.set_policy(rustjail::spec::Policy {
            caller_netns_is_the_sandbox: true,
            ignore_apparmor: true,
        });
        let bundles = cfg.state_dir.join("bundles");
        std::fs::create_dir_all(&bundles)
            .map_err(|e| SandboxError::Internal(format!("mkdir {}: {e}", bundles.display())))?;
        let (oom_tx, oom_rx) = mpsc::unbounded_channel();
        let storage_roots = crate::storage::roots_for(&cfg.state_dir, &|k| std::env::var(k).ok());
        Ok(Sandbox {
            runtime: Arc::new(runtime),
            consoles: cfg.state_dir.join("consoles"),
            cfg,
            bundles,
            reaper,
            no_pivot: root_is_initramfs(),
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            pod: Mutex::new(PodInfo::default()),
            storages: Arc::new(crate::storage::StorageManager::new().with_roots(storage_roots)),
            oom_tx,
            oom_rx: tokio::sync::Mutex::new(oom_rx),
            shutdown: tokio::sync::watch::channel(false).0,
        })
    }

    /// A container by id.
    pub fn container(&self, id: &str) -> Result<Arc<Container>, SandboxError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| SandboxError::NotFound(format!("container {id:?} does not exist")))
    }

    /// Every container id, sorted.
    pub fn container_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.containers).keys().cloned().collect();
        ids.sort();
        ids
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

    /// Waits for the next OOM kill of any container; returns its id.
    pub async fn next_oom(&self) -> Result<String, SandboxError> {
        let mut rx = self.oom_rx.lock().await;
        rx.recv()
            .await
            .ok_or_else(|| SandboxError::Internal("OOM event queue closed".into()))
    }

    /// Becomes true when DestroySandbox asks the agent to stop.
    pub fn shutdown_requested(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The storages of the sandbox and its containers.
    pub fn storage_manager(&self) -> &crate::storage::StorageManager {
        &self.storages
    }

    /// What CreateSandbox set up.
    pub fn pod(&self) -> PodInfo {
        lock(&self.pod).clone()
    }
}
