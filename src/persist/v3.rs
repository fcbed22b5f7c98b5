//! Persist format version 3 (frozen once released). Against v2:
//!
//! * added: `PodV3::dns_mounted`, whether CreateSandbox's DNS is
//!   bind-mounted over the guest's resolv.conf (as kata-agent does), so that
//!   a restarted agent's DestroySandbox unmounts it. Default false (a v1 or
//!   v2 file: those agents wrote the file and mounted nothing).
//!
//! The JSON is otherwise v2's: a v1 or v2 agent reads a v3 file (unknown
//! fields are ignored), so `min_reader_version` stays 1. In Rust, a
//! container's spec is kept as the JSON text it was written as
//! ([`RawJson`]), not as a parsed value: the agent serialises each spec once
//! and copies the text into every later write.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::v1::{DeviceV1, MountRecordV1, PodV1, SessionV1, StorageV1, WatchedV1};
use super::v2::{ContainerV2, ProcessV2, SandboxV2};

/// JSON text, kept as it is (shared, never parsed again to be written).
#[derive(Debug, Clone)]
pub(crate) struct RawJson(pub Arc<RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|b| RawJson(Arc::from(b)))
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileV3 {
    /// 3 (or newer, read as 3 when its `min_reader_version` allows).
    pub persist_version: u32,
    /// The oldest format version whose reader can use this file.
    pub min_reader_version: u32,
    /// The agent build that wrote it.
    pub agent_version: String,
    /// The sandbox.
    pub sandbox: SandboxV3,
}

/// The sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SandboxV3 {
    /// What CreateSandbox set up.
    pub pod: PodV3,
    /// The agreement with the host.
    pub session: SessionV1,
    /// Mounted storages and their users.
    pub storages: Vec<StorageV1>,
    /// `watchable-bind` storages kept in sync.
    pub watched: Vec<WatchedV1>,
    /// The tmpfs the watcher mounted for its copies, if any.
    pub watch_tmpfs: Option<MountRecordV1>,
    /// Containers, in the order they came to the sandbox (earlier agents
    /// wrote them sorted by id); read in any order.
    pub containers: Vec<ContainerV3>,
}

/// The pod (v1's, and `dns_mounted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodV3 {
    /// "absent" or "created" ("creating" is never written).
    pub state: String,
    /// Sandbox id.
    pub id: String,
    /// Hostname of the shared UTS namespace.
    pub hostname: String,
    /// resolv.conf lines written.
    pub dns: Vec<String>,
    /// Whether they are bind-mounted over the guest's resolv.conf (added in v3).
    #[serde(default)]
    pub dns_mounted: bool,
    /// Whether containers share one PID namespace.
    pub sandbox_pidns: bool,
    /// The container whose PID namespace is shared.
    pub pidns_container: Option<String>,
    /// Pid of the process holding the shared UTS and IPC namespaces.
    pub ns_holder_pid: Option<i32>,
    /// Directory of guest hooks, if CreateSandbox named one.
    pub guest_hook_path: Option<std::path::PathBuf>,
}

/// One container (v2's; the spec kept as text in Rust, the same JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContainerV3 {
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
    pub spec: RawJson,
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

/// The file as the agent writes it: [`FileV3`] with each container already
/// encoded (the same JSON; a container's text is made again only when it
/// changed).
#[derive(Serialize)]
pub(crate) struct FileV3Out<'a> {
    /// [`FileV3::persist_version`].
    pub persist_version: u32,
    /// [`FileV3::min_reader_version`].
    pub min_reader_version: u32,
    /// [`FileV3::agent_version`].
    pub agent_version: &'a str,
    /// [`FileV3::sandbox`].
    pub sandbox: SandboxV3Out<'a>,
}

/// [`SandboxV3`], its containers encoded.
#[derive(Serialize)]
pub(crate) struct SandboxV3Out<'a> {
    /// [`SandboxV3::pod`].
    pub pod: &'a PodV3,
    /// [`SandboxV3::session`].
    pub session: &'a SessionV1,
    /// [`SandboxV3::storages`].
    pub storages: &'a [StorageV1],
    /// [`SandboxV3::watched`].
    pub watched: &'a [WatchedV1],
    /// [`SandboxV3::watch_tmpfs`].
    pub watch_tmpfs: &'a Option<MountRecordV1>,
    /// [`SandboxV3::containers`], each a [`ContainerV3`] as JSON.
    pub containers: &'a [RawJson],
}

impl From<PodV1> for PodV3 {
    fn from(p: PodV1) -> Self {
        PodV3 {
            state: p.state,
            id: p.id,
            hostname: p.hostname,
            dns: p.dns,
            dns_mounted: false,
            sandbox_pidns: p.sandbox_pidns,
            pidns_container: p.pidns_container,
            ns_holder_pid: p.ns_holder_pid,
            guest_hook_path: p.guest_hook_path,
        }
    }
}

impl From<ContainerV2> for ContainerV3 {
    fn from(c: ContainerV2) -> Self {
        // A parsed JSON value always prints as JSON.
        let spec = serde_json::value::to_raw_value(&c.spec)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        ContainerV3 {
            id: c.id,
            bundle: c.bundle,
            rootfs: c.rootfs,
            created: c.created,
            start_time: c.start_time,
            cgroup: c.cgroup,
            spec: RawJson(Arc::from(spec)),
            device_rules: c.device_rules,
            devices: c.devices,
            oom_watch: c.oom_watch,
            init: c.init,
            execs: c.execs,
        }
    }
}

/// The migration from v2.
impl From<SandboxV2> for SandboxV3 {
    fn from(s: SandboxV2) -> Self {
        SandboxV3 {
            pod: s.pod.into(),
            session: s.session,
            storages: s.storages,
            watched: s.watched,
            watch_tmpfs: s.watch_tmpfs,
            containers: s.containers.into_iter().map(Into::into).collect(),
        }
    }
}
