//! Persist format version 2 (frozen like v1 once released). Against v1:
//!
//! * added: `ProcessV2::start_time`, the process's start time, so that a
//!   restarted agent tells a reused pid from its process. Default 0 (a v1
//!   file): unknown, any process with the pid is taken as it;
//! * renamed: `exit_status` (a shell's number, where code 137 and SIGKILL
//!   look alike) became `exit` ({"code": n} or {"signal": n}). The legacy
//!   `exit_status` is still written, so that a v1 agent reads v2 files
//!   (`min_reader_version` stays 1, a rollback works), and still read when
//!   `exit` is absent.
//!
//! Types v2 did not change are v1's.

use serde::{Deserialize, Serialize};

use super::v1::{ContainerV1, DeviceV1, MountRecordV1, PodV1, ProcessV1, SandboxV1, SessionV1, StorageV1, WatchedV1};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileV2 {
    /// 2 (or newer, read as 2 when its `min_reader_version` allows).
    pub persist_version: u32,
    /// The oldest format version whose reader can use this file.
    pub min_reader_version: u32,
    /// The agent build that wrote it.
    pub agent_version: String,
    /// The sandbox.
    pub sandbox: SandboxV2,
}

/// The sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SandboxV2 {
    /// What CreateSandbox set up.
    pub pod: PodV1,
    /// The agreement with the host.
    pub session: SessionV1,
    /// Mounted storages and their users.
    pub storages: Vec<StorageV1>,
    /// `watchable-bind` storages kept in sync.
    pub watched: Vec<WatchedV1>,
    /// The tmpfs the watcher mounted for its copies, if any.
    pub watch_tmpfs: Option<MountRecordV1>,
    /// Containers, sorted by id.
    pub containers: Vec<ContainerV2>,
}

/// One container (v1's, with v2 processes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContainerV2 {
    /// Container id.
    pub id: String,
    /// OCI bundle directory.
    pub bundle: std::path::PathBuf,
    /// Root filesystem, absolute.
    pub rootfs: std::path::PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The init's start time (clock ticks since boot).
    pub start_time: u64,
    /// Its cgroup directories, by controller ("" on cgroup v2).
    pub cgroup: std::collections::BTreeMap<String, std::path::PathBuf>,
    /// The spec it runs with, as OCI runtime-spec JSON.
    pub spec: serde_json::Value,
    /// Device cgroup rules that replaced the spec's (OCI JSON list), if any.
    pub device_rules: Option<serde_json::Value>,
    /// Block devices hot-plugged into it, in order.
    pub devices: Vec<DeviceV1>,
    /// Whether its OOM kills are watched.
    pub oom_watch: bool,
    /// Its init.
    pub init: ProcessV2,
    /// Exec'd processes not yet waited for.
    pub execs: Vec<ProcessV2>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ExitV2 {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitV2 {
    /// The status a shell reports (the legacy `exit_status`).
    fn status(self) -> i32 {
        match self {
            ExitV2::Code(c) => c,
            ExitV2::Signal(s) => 128 + s,
        }
    }
}

/// One process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessV2 {
    /// Exec id.
    pub exec_id: String,
    /// Pid.
    pub pid: i32,
    /// Its start time (clock ticks since boot); 0: unknown (added in v2).
    #[serde(default)]
    pub start_time: u64,
    /// Whether its stdio is a terminal.
    pub terminal: bool,
    /// How it ended, once it has (v1's `exit_status`, renamed in v2).
    #[serde(default)]
    pub exit: Option<ExitV2>,
    /// Legacy (v1): the exit as a shell's number. Written for v1 readers;
    /// read only when `exit` is absent.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// Whether WaitProcess collected it.
    pub waited: bool,
    /// Whether the agent still holds its stdin writer.
    pub stdin_open: bool,
    /// Whether stdout's end has not been read yet.
    pub stdout_open: bool,
    /// Whether stderr's end has not been read yet.
    pub stderr_open: bool,
}

impl ProcessV2 {
    /// A process as v2 writes it: `exit` and its legacy number.
    pub(crate) fn with_exit(mut self, exit: Option<ExitV2>) -> ProcessV2 {
        self.exit = exit;
        self.exit_status = exit.map(ExitV2::status);
        self
    }

    /// Its exit, from `exit` or else the legacy number (read as a code: the
    /// number WaitProcess reports is the same either way).
    pub(crate) fn ended(&self) -> Option<ExitV2> {
        self.exit.or(self.exit_status.map(ExitV2::Code))
    }
}

impl From<ProcessV1> for ProcessV2 {
    fn from(p: ProcessV1) -> Self {
        ProcessV2 {
            exec_id: p.exec_id,
            pid: p.pid,
            start_time: 0,
            terminal: p.terminal,
            exit: None,
            exit_status: p.exit_status,
            waited: p.waited,
            stdin_open: p.stdin_open,
            stdout_open: p.stdout_open,
            stderr_open: p.stderr_open,
        }
    }
}

impl From<ContainerV1> for ContainerV2 {
    fn from(c: ContainerV1) -> Self {
        ContainerV2 {
            id: c.id,
            bundle: c.bundle,
            rootfs: c.rootfs,
            created: c.created,
            start_time: c.start_time,
            cgroup: c.cgroup,
            spec: c.spec,
            device_rules: c.device_rules,
            devices: c.devices,
            oom_watch: c.oom_watch,
            init: c.init.into(),
            execs: c.execs.into_iter().map(Into::into).collect(),
        }
    }
}

/// The migration from v1.
impl From<SandboxV1> for SandboxV2 {
    fn from(s: SandboxV1) -> Self {
        SandboxV2 {
            pod: s.pod,
            session: s.session,
            storages: s.storages,
            watched: s.watched,
            watch_tmpfs: s.watch_tmpfs,
            containers: s.containers.into_iter().map(Into::into).collect(),
        }
    }
}
