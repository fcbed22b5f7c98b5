//! The seam between the sandbox and the container engine: everything the
//! sandbox asks of the kernel about containers and processes goes through
//! [`ContainerEngine`] and [`EngineContainer`]. The agent runs
//! [`super::rustjail_engine::RustjailEngine`]; the sandbox's unit tests run a
//! fake (`fake_engine`) that needs no root.
//!
//! Every method may block (processes are started, cgroups written): the
//! sandbox calls them on blocking threads, except the cheap ones noted.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources, Process, Spec};
use tokio::sync::{mpsc, watch};

use super::error::Result;
use crate::device::node::{NodeError, NodeOutcome, NodeRequest};
use crate::reaper::Exit;

/// What the sandbox asks the engine to create.
#[derive(Debug)]
pub(crate) struct CreateSpec {
    /// Container id.
    pub id: String,
    /// The spec as the sandbox runs it (shared namespaces joined, hooks added).
    pub spec: Spec,
    /// The OCI bundle directory (for hooks).
    pub bundle: PathBuf,
    /// The process's ends of its pipes; `None` with a terminal.
    pub stdio: Option<[OwnedFd; 3]>,
    /// The sandbox's work for the init, run by the engine while the init
    /// builds its root (see [`rustjail::container::Meanwhile`]).
    pub meanwhile: Option<rustjail::container::Meanwhile>,
}

/// A container just created.
pub(crate) struct Created {
    /// The handle every later operation goes through.
    pub container: Box<dyn EngineContainer>,
    /// The terminal's master, when the process has a terminal.
    pub terminal: Option<OwnedFd>,
}

/// A process just started in a container.
#[derive(Debug)]
pub(crate) struct Spawned {
    /// Its pid (a child of the agent).
    pub pid: i32,
    /// The terminal's master, when the process has a terminal.
    pub terminal: Option<OwnedFd>,
}

/// The holder of the sandbox's shared UTS and IPC namespaces; dropping it
/// ends the holder.
pub(crate) trait NsHolder: Send + Sync {
    /// Its pid.
    fn pid(&self) -> i32;
    /// The channel whose closing ends it (a keeper holds a copy, so that an
    /// agent crash does not end it), if it has one.
    fn channel(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// A container a previous agent made, to be taken back (its facts, from the
/// persisted state).
#[derive(Debug)]
pub(crate) struct Adopt {
    /// Container id.
    pub id: String,
    /// Init pid.
    pub pid: i32,
    /// The init's start time, to tell a reused pid.
    pub start_time: u64,
    /// OCI bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem.
    pub rootfs: PathBuf,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Its cgroup directories as they were, to check against this agent's.
    pub cgroup: std::collections::BTreeMap<String, PathBuf>,
    /// The spec it runs with.
    pub spec: Spec,
}

/// What the engine knows about a container, as plain data (for the sandbox's view).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EngineFacts {
    /// Init pid.
    pub pid: i32,
    /// The init's start time (clock ticks since boot), to tell a reused pid.
    pub start_time: u64,
    /// Root filesystem, absolute.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Its cgroup directories, by controller ("" on cgroup v2).
    pub cgroup: std::collections::BTreeMap<String, PathBuf>,
}

/// The container engine, for the sandbox.
pub(crate) trait ContainerEngine: Send + Sync {
    /// Creates a container whose init waits for [`EngineContainer::start`].
    fn create(&self, req: CreateSpec) -> Result<Created>;
    /// Starts the holder of new UTS and IPC namespaces with `hostname` set.
    fn spawn_ns_holder(&self, hostname: &str) -> Result<Box<dyn NsHolder>>;
    /// The exit of `pid` (a child of the agent), once there is one. Cheap.
    fn watch_exit(&self, pid: i32) -> watch::Receiver<Option<Exit>>;
    /// Has `hook` told of each exit it delivers from now on, after the
    /// receivers of [`ContainerEngine::watch_exit`] got it.
    fn on_exit(&self, hook: crate::reaper::ExitHook);
    /// Sends `signal` (None: only checks the process exists) to `pid`. Cheap.
    fn signal(&self, pid: i32, signal: Option<Signal>) -> nix::Result<()>;
    /// Whether `pid` blocks, ignores or catches `signal` (kata-agent reads the
    /// masks of `/proc/<pid>/status`); false when that cannot be read. Cheap.
    fn handles_signal(&self, pid: i32, signal: Signal) -> bool;
    /// Takes back a container a previous agent made.
    fn adopt(&self, a: Adopt) -> Result<Box<dyn EngineContainer>>;
    /// Takes back the namespace holder a previous agent started, with the
    /// keeper's copy of its channel.
    fn adopt_ns_holder(&self, pid: i32, channel: Option<OwnedFd>) -> Box<dyn NsHolder>;
}

/// One container, as the engine holds it.
pub(crate) trait EngineContainer: Send + Sync {
    /// Its init's pid. Cheap.
    fn pid(&self) -> i32;
    /// The spec it was created with. Cheap.
    fn spec(&self) -> &Spec;
    /// Plain facts for the sandbox's view. Cheap.
    fn facts(&self) -> EngineFacts;
    /// Its init's start time (clock ticks since boot), read once at create. Cheap.
    fn start_time(&self) -> u64;
    /// Its status now (from the kernel).
    fn status(&self) -> rustjail::Status;
    /// Lets the init run the user's program; returns warnings (poststart hooks).
    fn start(&self) -> Result<Vec<String>>;
    /// Starts `process` in the container on `stdio` (None with a terminal).
    fn exec(&self, process: Process, stdio: Option<[OwnedFd; 3]>) -> Result<Spawned>;
    /// Freezes it.
    fn pause(&self) -> Result<()>;
    /// Thaws it.
    fn resume(&self) -> Result<()>;
    /// Applies new resource limits; returns what the host could not apply.
    fn update(&self, resources: &LinuxResources) -> Result<Vec<String>>;
    /// Replaces its device cgroup rules with `rules` (later rules win).
    fn set_device_rules(&self, rules: &[LinuxDeviceCgroup]) -> Result<()>;
    /// Its cgroup statistics.
    fn stats(&self) -> Result<rustjail::cgroups::Stats>;
    /// Pids of every process in it.
    fn pids(&self) -> Result<Vec<i32>>;
    /// Signals every process in its cgroup, frozen meanwhile so none can fork
    /// away (as kata-agent's kill-all), then thawed; also after the init
    /// exited. Returns how many processes were signalled.
    fn kill_all(&self, signal: Signal) -> Result<usize>;
    /// Whether the end of its init ends every other process in it (the
    /// kernel kills the rest of a PID namespace whose init exits): then
    /// nothing is left for the sandbox to kill. Cheap.
    fn init_ends_the_rest(&self) -> bool {
        false
    }
    /// Kills what is left and deletes it; returns warnings (poststop hooks).
    fn delete(&self) -> Result<Vec<String>>;
    /// Like [`EngineContainer::delete`], leaving what only a later create
    /// can meet (its cgroup's directories) to be done after the answer.
    fn delete_leaving(&self) -> Result<(Vec<String>, Option<super::settling::Later>)> {
        self.delete().map(|w| (w, None))
    }
    /// Lets its cpuset follow the CPUs online now (`online`, a CPU list such
    /// as `0-3`), as `sandbox::cpuset` describes; returns the files written.
    fn follow_cpus(&self, online: &str) -> Result<Vec<PathBuf>>;
    /// Makes or removes a device node inside it.
    fn device_node(&self, req: &NodeRequest) -> std::result::Result<NodeOutcome, NodeError>;
    /// Starts watching its OOM kills: its id goes to `events` on each. Returns
    /// a task that ends when the container's cgroup goes, or None when OOM
    /// kills cannot be watched here.
    fn watch_oom(&self, id: &str, events: mpsc::UnboundedSender<String>) -> Option<tokio::task::JoinHandle<()>>;
}
