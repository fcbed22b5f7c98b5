//! The sandbox: the one owner of everything the agent knows about the pod it
//! runs. RPC handlers turn requests into calls here and results back into
//! messages; nothing else keeps state about containers.
//!
//! It owns: the pod (CreateSandbox's hostname, DNS, shared namespaces and
//! their holder, guest hooks), the containers (the engine's handle with the
//! spec in memory, bundle, OOM watch, device cgroup rules and hot-plugged
//! devices), their processes (pid, exit, stdio descriptors), the storages, the
//! API level and features agreed with the host, and the guest RPC settings.
//! [`Sandbox::view`] is all of it as plain data.
//!
//! Containers and processes are made by a [`engine::ContainerEngine`]
//! (rustjail in the agent, a fake in the unit tests), on blocking threads.
//! Operations on one container that change its device cgroup (hot-plug,
//! UpdateContainer, removal) are serialised per container; nothing holds a
//! sandbox-wide lock across a process spawn.
//!
//! Files: `pod.rs` (CreateSandbox/DestroySandbox), `container.rs` (one
//! container's lifecycle), `exec.rs` (processes), `hotplug.rs` (block devices
//! into running containers), `session.rs` (API level), `stats.rs`,
//! `cpuset.rs` (OnlineCPUMem and the containers' cpusets), `guest_ops.rs`
//! (AddSwap, UpdateEphemeralMounts), `network.rs` (the guest's interfaces,
//! routes, neighbours and iptables, feature `net`),
//! `process.rs`/`stream.rs`/`new_stdio.rs` (stdio), `shared_ns.rs`,
//! `guest_hooks.rs`, `oom.rs`, `view.rs`, `meanwhile.rs` (what a create
//! sets up while the init builds its root), `finishing.rs` (operations
//! that outlive a dropped request), `changed.rs` (which containers a
//! state write looks at), `error.rs`, `engine.rs` and
//! `rustjail_engine.rs` (the seam and the real engine).

pub(crate) mod changed;
pub(crate) mod container;
pub(crate) mod cpuset;
pub(crate) mod dns;
pub(crate) mod durable;
pub(crate) mod engine;
pub(crate) mod error;
pub(crate) mod exec;
pub(crate) mod finishing;
// The fuzz targets' sandbox runs on it too (feature `fuzzing`), and use
// less of it than the unit tests.
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod fake_engine;
pub(crate) mod guest_hooks;
pub(crate) mod guest_ops;
pub(crate) mod hotplug;
pub(crate) mod meanwhile;
pub(crate) mod mount_ns;
#[cfg(feature = "net")]
pub(crate) mod network;
pub(crate) mod new_stdio;
pub(crate) mod oom;
pub(crate) mod out_journal;
pub(crate) mod pod;
pub(crate) mod process;
pub(crate) mod pty_stage;
pub(crate) mod rustjail_engine;
pub(crate) mod session;
pub(crate) mod settling;
pub(crate) mod shared_ns;
pub(crate) mod sigmask;
mod state_texts;
pub(crate) mod stats;
pub(crate) mod stream;
#[cfg(test)]
mod tests;
pub(crate) mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use slog::Logger;
use tokio::sync::mpsc;

use crate::device::Devices;
use crate::guest::Guest;
use crate::storage::StorageManager;
pub(crate) use error::{Error, Result};
pub(crate) use process::Process;

/// A container and its processes.
pub(crate) struct Container {
    /// Container id.
    pub id: String,
    /// The engine's handle (pid, cgroup, the spec as created).
    pub engine: Box<dyn engine::EngineContainer>,
    /// Its OCI bundle directory.
    pub bundle: PathBuf,
    /// Its init.
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Exec ids being started, so that two requests for one id cannot both proceed.
    starting: Mutex<HashSet<String>>,
    /// Its device cgroup rules and hot-plugged devices. Held across a whole
    /// hot-plug, UpdateContainer or removal: they never interleave.
    devices: tokio::sync::Mutex<hotplug::DeviceState>,
    oom_watch: Option<tokio::task::JoinHandle<()>>,
    /// Kills what the init leaves in the cgroup when it exits ([`Container::watch_leftovers`]).
    leftovers_watch: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The engine's spec as JSON, made once (the spec never changes).
    spec_json: std::sync::OnceLock<view::SpecJson>,
    /// Its mount namespace, held so its init's exit does not tear it down
    /// ([`mount_ns`]); parked at removal.
    mount_ns: Mutex<Option<std::os::fd::OwnedFd>>,
    /// Its place in the order the containers came to the sandbox (created,
    /// or taken back from the state file in the file's order).
    pub(crate) seq: u64,
}

impl Container {
    /// The spec as JSON (serialised at the first call).
    pub(crate) fn spec_json(&self) -> view::SpecJson {
        self.spec_json
            .get_or_init(|| view::SpecJson::of(self.engine.spec()))
            .clone()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(t) = &self.oom_watch {
            t.abort();
        }
        if let Some(t) = lock(&self.leftovers_watch).take() {
            t.abort();
        }
    }
}

/// Where CreateSandbox is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PodState {
    /// Not called (or DestroySandbox ran).
    #[default]
    Absent,
    /// Running now: a second call is refused.
    Creating,
    /// Done.
    Created,
}

/// What CreateSandbox set up.
#[derive(Default, Clone)]
pub(crate) struct Pod {
    /// Where CreateSandbox is.
    pub state: PodState,
    /// The host's id for the sandbox.
    pub id: String,
    /// Hostname of the shared UTS namespace.
    pub hostname: String,
    /// resolv.conf lines written.
    pub dns: Vec<String>,
    /// Whether they are mounted over the guest's resolv.conf (`dns.rs`).
    pub dns_mounted: bool,
    /// Whether containers share one PID namespace.
    pub sandbox_pidns: bool,
    /// The container whose PID namespace is shared.
    pub pidns_container: Option<String>,
    /// The process holding the shared UTS and IPC namespaces; dropping the
    /// last reference ends it.
    pub ns_holder: Option<Arc<dyn engine::NsHolder>>,
    /// Its exit, from the reaper.
    pub ns_holder_exit: Option<tokio::sync::watch::Receiver<Option<crate::reaper::Exit>>>,
    /// Directory of guest hooks.
    pub guest_hook_path: Option<PathBuf>,
    /// The hooks found there.
    pub guest_hooks: guest_hooks::GuestHooks,
}

/// Where the sandbox keeps files and how it starts processes.
#[derive(Debug, Clone)]
pub(crate) struct SandboxConfig {
    /// Bundles (and the engine's runtime files) go here.
    pub state_dir: PathBuf,
    /// `agent.container_pipe_size` (0: the kernel's default).
    pub pipe_size: u32,
    /// Where CreateSandbox writes DNS servers and what it mounts them over.
    pub dns: dns::DnsFiles,
    /// Directories storage mount points and bind sources must lie under
    /// (`storage::roots_for`).
    pub storage_roots: Vec<PathBuf>,
}

/// Everything the agent runs.
pub(crate) struct Sandbox {
    engine: Arc<dyn engine::ContainerEngine>,
    cfg: SandboxConfig,
    bundles: PathBuf,
    /// Hot-plugged devices are waited for here.
    devices: Arc<Devices>,
    /// Settings of the guest basics RPCs.
    guest: Arc<Guest>,
    /// The guest's network (one netlink connection, one change at a time).
    #[cfg(feature = "net")]
    net: crate::net::Network,
    log: Logger,
    /// By id.
    containers: Mutex<BTreeMap<String, Arc<Container>>>,
    /// The next container's [`Container::seq`].
    next_seq: std::sync::atomic::AtomicU64,
    /// Ids being created, so that two requests for one id cannot both proceed.
    creating: Mutex<HashSet<String>>,
    pod: Mutex<Pod>,
    session: Mutex<session::Session>,
    /// Storages of the sandbox (owner [`SANDBOX_OWNER`]) and of each container (owner: its id).
    storages: Arc<StorageManager>,
    oom_tx: mpsc::UnboundedSender<String>,
    oom_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The state file, once attached (`durable.rs`).
    durable: Option<durable::Durable>,
    /// Why sandbox calls are refused: a state file that could not be taken back.
    fault: Option<String>,
    /// The keeper holding descriptors and exits across agent crashes, if the agent runs under one.
    keeper: Option<Arc<crate::keeper::link::KeeperLink>>,
    /// Containers that may have changed since the state was last made.
    changed: Arc<changed::Changed>,
    /// Each container's text in the state file, in the containers' order
    /// ([`Container::seq`]: a new one goes at the end, so the write after
    /// a create rewrites its text alone, whatever its id), and what may
    /// change in it as that text holds it (`durable.rs` makes a text again
    /// only when the container is marked in `changed` and that changed).
    texts: tokio::sync::Mutex<state_texts::Texts>,
    /// What removals left running after their answers.
    settling: settling::Settling,
    /// Mount namespaces of removed containers, closed after the answer.
    parked_ns: Arc<mount_ns::Parked>,
}

/// Owner of the storages CreateSandbox mounts (container ids cannot contain '/').
pub(crate) const SANDBOX_OWNER: &str = "/sandbox";

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

/// [`Sandbox::watch_exit_of`] with the sandbox's parts, for work that runs
/// where the sandbox is not at hand (`meanwhile`).
pub(crate) fn watch_exit_in(
    changed: &changed::Changed,
    engine: &dyn engine::ContainerEngine,
    id: &str,
    pid: i32,
) -> tokio::sync::watch::Receiver<Option<crate::reaper::Exit>> {
    changed.watch_pid(pid, id);
    engine.watch_exit(pid)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs blocking work (the engine, mounts, files) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("worker thread: {e}")))?
}

/// Runs blocking work that is the whole of what the calling task waits for
/// (a container's create, in a task of its own) on this thread, whose other
/// tasks the runtime hands to another worker (`block_in_place`): no hop to a
/// blocking thread and back, each a wake-up on the call's path. Nothing else
/// in the task runs meanwhile: not in a task that races the work against
/// anything (an RPC's deadline, a second future), unless the work itself is
/// bounded (a container's start), so that the race is only held off until
/// it ends. On a current-thread runtime (tests), as [`blocking`].
pub(crate) async fn blocking_here<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(f);
    }
    blocking(f).await
}

/// Output pipe size when `agent.container_pipe_size` is 0: one ReadStdout can
/// then carry a whole 1 MiB chunk (the kernel's default pipe holds 64 KiB).
/// Pages are allocated only as output waits, so an idle pipe costs nothing.
pub(crate) const DEFAULT_OUTPUT_PIPE_SIZE: u32 = 1 << 20;

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
fn stdio_pipes(pipe_size: u32) -> Result<([OwnedFd; 3], [OwnedFd; 3])> {
    let p = |output: bool| -> Result<(OwnedFd, OwnedFd)> {
        let (r, w) = std::io::pipe().map_err(|e| Error::sys("pipe2", e))?;
        let (r, w): (OwnedFd, OwnedFd) = (r.into(), w.into());
        if pipe_size > 0 {
            set_pipe_size(&w, pipe_size).map_err(|e| Error::sys(format!("fcntl(F_SETPIPE_SZ, {pipe_size})"), e))?;
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

/// `base` as a sandbox uses it, new or restored: its storage roots, its
/// logger, and its parked mount namespaces closed before any storage is torn
/// down (a filesystem still mounted in one keeps its device in use).
fn fitted_storages(
    base: StorageManager,
    cfg: &SandboxConfig,
    log: &Logger,
    parked: &Arc<mount_ns::Parked>,
) -> Arc<StorageManager> {
    let storages = base.with_roots(cfg.storage_roots.clone()).with_logger(log);
    storages.before_teardown(parked.closer());
    Arc::new(storages)
}

impl Sandbox {
    /// A sandbox running containers with `engine`, keeping bundles under
    /// `cfg.state_dir`.
    pub(crate) fn new(
        cfg: SandboxConfig,
        engine: Arc<dyn engine::ContainerEngine>,
        devices: Arc<Devices>,
        guest: Guest,
        log: &Logger,
    ) -> Result<Sandbox> {
        let bundles = cfg.state_dir.join("bundles");
        std::fs::create_dir_all(&bundles).map_err(|e| Error::sys(format!("mkdir {}", bundles.display()), e))?;
        let (oom_tx, oom_rx) = mpsc::unbounded_channel();
        let parked_ns = Arc::new(mount_ns::Parked::default());
        let storages = fitted_storages(StorageManager::new(), &cfg, log, &parked_ns);
        let changed = Arc::new(changed::Changed::default());
        let marks = changed.clone();
        engine.on_exit(Arc::new(move |pid| marks.exited(pid)));
        Ok(Sandbox {
            engine,
            cfg,
            bundles,
            devices,
            guest: Arc::new(guest),
            #[cfg(feature = "net")]
            net: crate::net::Network::new(),
            log: log.new(slog::o!("subsystem" => "sandbox")),
            containers: Mutex::new(BTreeMap::new()),
            next_seq: std::sync::atomic::AtomicU64::new(0),
            creating: Mutex::new(HashSet::new()),
            pod: Mutex::new(Pod::default()),
            session: Mutex::new(session::Session::default()),
            storages,
            oom_tx,
            oom_rx: tokio::sync::Mutex::new(oom_rx),
            shutdown: tokio::sync::watch::channel(false).0,
            durable: None,
            fault: None,
            keeper: None,
            changed,
            texts: tokio::sync::Mutex::new(state_texts::Texts::default()),
            settling: settling::Settling::default(),
            parked_ns,
        })
    }

    /// Runs an operation that a request dropped at the client's deadline does
    /// not stop half-way (a container made by the engine but not recorded, a
    /// device node without its cgroup rule): it finishes, or fails and undoes
    /// its work, as if the client had waited ([`finishing::finishing`]).
    async fn detached<T, F>(self: &Arc<Self>, op: impl FnOnce(Arc<Sandbox>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        finishing::finishing(op(self.clone())).await
    }

    /// Returns once what removals left running after their answers is done.
    pub(crate) async fn settled(&self) {
        self.settling.settled().await
    }

    /// A container by id.
    pub(crate) fn container(&self, id: &str) -> Result<Arc<Container>> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::ContainerNotFound(id.to_string()))
    }

    /// Every container id, sorted.
    pub(crate) fn container_ids(&self) -> Vec<String> {
        lock(&self.containers).keys().cloned().collect()
    }

    /// The exit of `pid`, a process of container `id` (whose exit marks it changed).
    pub(crate) fn watch_exit_of(
        &self,
        id: &str,
        pid: i32,
    ) -> tokio::sync::watch::Receiver<Option<crate::reaper::Exit>> {
        watch_exit_in(&self.changed, self.engine.as_ref(), id, pid)
    }

    /// A process by container and exec id (empty or the container's own id: the init).
    pub(crate) fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>> {
        let c = self.container(id)?;
        if exec_id.is_empty() || exec_id == c.init.exec_id {
            return Ok(c.init.clone());
        }
        let execs = lock(&c.execs);
        execs.get(exec_id).cloned().ok_or_else(|| Error::ProcessNotFound {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
    }

    /// Waits for the next OOM kill of any container; returns its id.
    pub(crate) async fn next_oom(&self) -> Result<String> {
        // A live upgrade may pause the call while it waits (nothing taken yet).
        let next = crate::upgrade::pause::park(async { self.oom_rx.lock().await.recv().await });
        next.await
            .ok_or_else(|| Error::Internal("OOM event queue closed".into()))
    }

    /// Becomes true when DestroySandbox asks the agent to stop.
    pub(crate) fn shutdown_requested(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The [`Container::seq`] of a container coming to the sandbox now.
    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// What CreateSandbox set up.
    pub(crate) fn pod(&self) -> Pod {
        lock(&self.pod).clone()
    }

    /// The guest RPC settings.
    pub(crate) fn guest(&self) -> Arc<Guest> {
        self.guest.clone()
    }
}
