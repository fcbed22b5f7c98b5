//! Persist format version 1. These types are the file's contract: once a
//! version is released they never change (a change is a new version, with a
//! migration from this one). They use no in-memory type of the agent; the
//! OCI spec and device rules are kept as OCI runtime-spec JSON, itself a
//! versioned, exported format.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileV1 {
    /// Always 1 here.
    pub persist_version: u32,
    /// The oldest format version whose reader can use this file.
    pub min_reader_version: u32,
    /// The agent build that wrote it (for people; nothing branches on it).
    pub agent_version: String,
    /// The sandbox.
    pub sandbox: SandboxV1,
}

/// The sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SandboxV1 {
    /// What CreateSandbox set up.
    pub pod: PodV1,
    /// The API level and features agreed with the host.
    pub session: SessionV1,
    /// Mounted storages and their users.
    pub storages: Vec<StorageV1>,
    /// `watchable-bind` storages kept in sync.
    pub watched: Vec<WatchedV1>,
    /// The tmpfs the watcher mounted for its copies, if any.
    pub watch_tmpfs: Option<MountRecordV1>,
    /// Containers, sorted by id.
    pub containers: Vec<ContainerV1>,
}

/// The pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodV1 {
    /// "absent" or "created" ("creating" is never written).
    pub state: String,
    /// Sandbox id.
    pub id: String,
    /// Hostname of the shared UTS namespace.
    pub hostname: String,
    /// resolv.conf lines written.
    pub dns: Vec<String>,
    /// Whether containers share one PID namespace.
    pub sandbox_pidns: bool,
    /// The container whose PID namespace is shared.
    pub pidns_container: Option<String>,
    /// Pid of the process holding the shared UTS and IPC namespaces.
    pub ns_holder_pid: Option<i32>,
    /// Directory of guest hooks.
    pub guest_hook_path: Option<PathBuf>,
}

/// The agreement with the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionV1 {
    /// API level in force.
    pub level: u32,
    /// Features offered at that level.
    pub features: Vec<String>,
    /// Host runtime that negotiated (empty: none did).
    pub host_name: String,
    /// Its version.
    pub host_version: String,
}

/// One storage in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StorageV1 {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Kata's driver name.
    pub driver: String,
    /// Its source.
    pub source: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount options.
    pub options: Vec<String>,
    /// Kept until the sandbox goes.
    pub shared: bool,
    /// Who uses it (container ids, "/sandbox").
    pub owners: Vec<String>,
    /// What the agent did at the mount point.
    pub record: MountRecordV1,
    /// The writable layer made for an overlayfs storage.
    pub layer: Option<PathBuf>,
}

/// What the agent mounted and created somewhere, to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MountRecordV1 {
    /// Whether something is mounted there.
    pub mounted: bool,
    /// Directories and files created, in creation order.
    pub created: Vec<PathBuf>,
}

/// One watched storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WatchedV1 {
    /// The host's directory or file.
    pub source: PathBuf,
    /// The mount point with the copy.
    pub target: PathBuf,
    /// Copied (true) or bind-mounted (false).
    pub copied: bool,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContainerV1 {
    /// Container id.
    pub id: String,
    /// OCI bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem, absolute.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The init's start time (clock ticks since boot), to tell a reused pid.
    pub start_time: u64,
    /// Its cgroup directories, by controller ("" on cgroup v2).
    pub cgroup: BTreeMap<String, PathBuf>,
    /// The spec it runs with, as OCI runtime-spec JSON.
    pub spec: serde_json::Value,
    /// Device cgroup rules that replaced the spec's (OCI JSON list), if any.
    pub device_rules: Option<serde_json::Value>,
    /// Block devices hot-plugged into it, in order.
    pub devices: Vec<DeviceV1>,
    /// Whether its OOM kills are watched.
    pub oom_watch: bool,
    /// Its init.
    pub init: ProcessV1,
    /// Exec'd processes not yet waited for.
    pub execs: Vec<ProcessV1>,
}

/// A hot-plugged block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceV1 {
    /// Its node inside the container.
    pub container_path: String,
    /// Its name in the guest (`sda`).
    pub guest_name: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Device cgroup access (`rwm` letters).
    pub access: String,
    /// Node permission bits.
    pub mode: u32,
    /// Node owner.
    pub uid: u32,
    /// Node group.
    pub gid: u32,
    /// Its filesystem mounted in the container, if asked.
    pub mount: Option<DeviceMountV1>,
}

/// A hot-plugged device's filesystem mounted in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceMountV1 {
    /// Mount point inside the container.
    pub target: String,
    /// Filesystem type.
    pub fstype: String,
    /// MS_* flags.
    pub flags: u64,
    /// Filesystem data.
    pub data: String,
}

/// One process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessV1 {
    /// Exec id.
    pub exec_id: String,
    /// Pid.
    pub pid: i32,
    /// Whether its stdio is a terminal.
    pub terminal: bool,
    /// Exit status as a shell reports it, once it ended.
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
