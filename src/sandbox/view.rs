//! The sandbox's whole state as plain data: the pod, the agreed session, the
//! guest settings, the storages and every container with its spec, cgroup,
//! device rules, hot-plugged devices, OOM watch and processes (pid, exit,
//! stdio descriptors). It is what a restarted or upgraded agent needs to take
//! the sandbox back; the persist format is a separate, versioned set of types
//! converted from and to this one (these types may change freely).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use oci_spec::runtime::{LinuxDeviceCgroup, Spec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::hotplug::Plugged;
use super::session::Session;
use super::{lock, Container, PodState, Process, Sandbox};
use crate::reaper::Exit;
use crate::storage::StorageState;

/// One process's stdio, as the agent holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StdioView {
    /// A terminal (`true`) or three pipes.
    pub terminal: bool,
    /// The agent's descriptor writing the process's stdin (a pipe, or the
    /// terminal's master); None once closed.
    pub stdin: Option<i32>,
    /// The descriptor reading stdout (or the terminal); None once its end was read.
    pub stdout: Option<i32>,
    /// The descriptor reading stderr; None once its end was read (at once with a terminal).
    pub stderr: Option<i32>,
    /// The terminal's master kept for window-size changes.
    pub terminal_master: Option<i32>,
}

/// One process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessView {
    /// Exec id.
    pub exec_id: String,
    /// Host pid.
    pub pid: i32,
    /// Its start time (clock ticks since boot; 0 if unknown), to tell a reused pid.
    pub start_time: u64,
    /// How it ended, once it has.
    pub exit: Option<Exit>,
    /// Whether a WaitProcess returned its exit.
    pub waited: bool,
    /// Its stdio.
    pub stdio: StdioView,
}

/// A container's spec as OCI runtime-spec JSON, serialised once (when the
/// state is first written, or read back from the file) and shared: the
/// state is written after every change, and converting every container's
/// spec each time was most of its cost.
#[derive(Debug, Clone)]
pub(crate) struct SpecJson {
    raw: Arc<RawValue>,
    /// The spec parsed when the text was checked (read back from the state
    /// file), until the one who needs it takes it: a restart must not parse
    /// every container's spec twice. None (no allocation: a spec is a large
    /// struct) for every other spec.
    parsed: Option<Arc<std::sync::Mutex<Option<Spec>>>>,
}

impl SpecJson {
    /// `spec` as JSON.
    pub(crate) fn of(spec: &Spec) -> SpecJson {
        // Plain data with string keys: the OCI types always serialise.
        let raw = serde_json::value::to_raw_value(spec)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        SpecJson::from_raw(Arc::from(raw))
    }

    /// JSON text already known to be valid JSON.
    pub(crate) fn from_raw(raw: Arc<RawValue>) -> SpecJson {
        SpecJson { raw, parsed: None }
    }

    /// JSON text that must hold a spec the OCI types take; the spec is kept
    /// for [`SpecJson::take_spec`].
    pub(crate) fn checked(raw: Arc<RawValue>) -> serde_json::Result<SpecJson> {
        let mut s = SpecJson::from_raw(raw);
        let spec = s.parse()?;
        s.parsed = Some(Arc::new(std::sync::Mutex::new(Some(spec))));
        Ok(s)
    }

    /// The spec: the one [`SpecJson::checked`] parsed, taken, or parsed now.
    pub(crate) fn take_spec(&self) -> serde_json::Result<Spec> {
        let kept = self
            .parsed
            .as_ref()
            .and_then(|p| p.lock().unwrap_or_else(|e| e.into_inner()).take());
        match kept {
            Some(spec) => Ok(spec),
            None => self.parse(),
        }
    }

    /// The JSON, shared.
    pub(crate) fn raw(&self) -> &Arc<RawValue> {
        &self.raw
    }

    /// The spec it holds.
    pub(crate) fn parse(&self) -> serde_json::Result<Spec> {
        // Through rustjail's mirror (oci-spec's own Deserialize links regex), from a
        // slice as rustjail reads specs: one copy of the code for each reader type.
        let mut de = serde_json::Deserializer::from_slice(self.raw.get().as_bytes());
        let spec = rustjail::spec_wire::spec::deserialize(&mut de)?;
        de.end()?;
        Ok(spec)
    }
}

/// Equal when they hold the same spec (the OCI types keep some lists in hash
/// sets: equal specs may serialise differently).
impl PartialEq for SpecJson {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get() || matches!((self.parse(), other.parse()), (Ok(a), Ok(b)) if a == b)
    }
}

impl Serialize for SpecJson {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SpecJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|b| SpecJson::from_raw(Arc::from(b)))
    }
}

/// One container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContainerView {
    /// Container id.
    pub id: String,
    /// OCI bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem, absolute.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The init's start time (clock ticks since boot), to tell a reused pid.
    pub start_time: u64,
    /// Status now ("created", "running", "paused", "stopped"; "" when not asked for).
    pub status: String,
    /// Its cgroup directories, by controller ("" on cgroup v2).
    pub cgroup: BTreeMap<String, PathBuf>,
    /// The spec it runs with (shared namespaces joined, guest hooks added,
    /// devices rewritten to the guest's numbers).
    pub spec: SpecJson,
    /// Device rules that replaced the spec's (UpdateContainer), if any.
    pub device_rules: Option<Vec<LinuxDeviceCgroup>>,
    /// Block devices hot-plugged into it, in order.
    pub devices: Vec<Plugged>,
    /// Whether its OOM kills are watched (GetOOMEvent).
    pub oom_watch: bool,
    /// Its init.
    pub init: ProcessView,
    /// Exec'd processes no WaitProcess has returned yet, by exec id.
    pub execs: Vec<ProcessView>,
}

/// The pod, as CreateSandbox set it up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodView {
    /// Where CreateSandbox is.
    pub state: PodState,
    /// Sandbox id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// DNS lines.
    pub dns: Vec<String>,
    /// Whether they are mounted over the guest's resolv.conf.
    pub dns_mounted: bool,
    /// Whether containers share one PID namespace.
    pub sandbox_pidns: bool,
    /// The container whose PID namespace is shared.
    pub pidns_container: Option<String>,
    /// Pid of the UTS/IPC namespace holder.
    pub ns_holder: Option<i32>,
    /// Guest hook directory.
    pub guest_hook_path: Option<PathBuf>,
}

/// The guest RPC settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GuestView {
    /// Root of sysfs.
    pub sysfs: PathBuf,
    /// Directories CopyFile may write under.
    pub copy_roots: Vec<PathBuf>,
    /// The device ReseedRandomDev writes to.
    pub random_dev: PathBuf,
}

/// The whole sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SandboxView {
    /// The pod.
    pub pod: PodView,
    /// The API level and features agreed with the host.
    pub session: Session,
    /// The guest RPC settings.
    pub guest: GuestView,
    /// Mounted storages and their users.
    pub storages: StorageState,
    /// Containers, by id.
    pub containers: Vec<ContainerView>,
}

fn process(p: &Process) -> ProcessView {
    ProcessView {
        exec_id: p.exec_id.clone(),
        pid: p.pid,
        start_time: p.start_time,
        exit: p.exited(),
        waited: p.waited(),
        stdio: stdio(p),
    }
}

fn stdio(p: &Process) -> StdioView {
    StdioView {
        terminal: p.tty,
        stdin: p.stdin_fd(),
        stdout: p.stdout.fd(),
        stderr: p.stderr.fd(),
        terminal_master: p.terminal_fd(),
    }
}

/// Whether [`process`] of `p` would be `v` (without making it).
fn same_process(p: &Process, v: &ProcessView) -> bool {
    let ProcessView {
        exec_id,
        pid,
        start_time,
        exit,
        waited,
        stdio: io,
    } = v;
    p.exec_id == *exec_id
        && p.pid == *pid
        && p.start_time == *start_time
        && p.exited() == *exit
        && p.waited() == *waited
        && stdio(p) == *io
}

impl Sandbox {
    /// The guest RPC settings as plain data.
    pub(crate) fn view_guest(&self) -> GuestView {
        GuestView {
            sysfs: self.guest.sysfs.clone(),
            copy_roots: self.guest.copy_roots.clone(),
            random_dev: self.guest.random_dev.clone(),
        }
    }

    /// The sandbox's state as plain data. Waits for hot-plugs and updates in
    /// flight (their container's device lock), so it shows them done or not.
    pub(crate) async fn view(&self) -> SandboxView {
        self.snapshot(true).await
    }

    /// [`Sandbox::view`], with each container's status read from the kernel
    /// only when `status` (the state file does not keep it).
    pub(crate) async fn snapshot(&self, status: bool) -> SandboxView {
        let mut containers = Vec::new();
        for c in self.containers_in_order() {
            let changes = c.changes().await;
            containers.push(c.view_with(changes, status));
        }
        self.snapshot_with(containers)
    }

    /// The containers in the order they came (the state file's order).
    pub(crate) fn containers_in_order(&self) -> Vec<Arc<Container>> {
        // Each put in its place: a sort's code was 4 KB of the binary, and
        // only introspection and tests come here.
        let map = lock(&self.containers);
        let mut all: Vec<Arc<Container>> = Vec::with_capacity(map.len());
        for c in map.values() {
            all.insert(all.partition_point(|o| o.seq < c.seq), c.clone());
        }
        all
    }

    /// The sandbox's view around `containers`.
    pub(crate) fn snapshot_with(&self, containers: Vec<ContainerView>) -> SandboxView {
        let pod = self.pod();
        SandboxView {
            pod: PodView {
                state: pod.state,
                id: pod.id,
                hostname: pod.hostname,
                dns: pod.dns,
                dns_mounted: pod.dns_mounted,
                sandbox_pidns: pod.sandbox_pidns,
                pidns_container: pod.pidns_container,
                ns_holder: pod.ns_holder.as_ref().map(|h| h.pid()),
                guest_hook_path: pod.guest_hook_path,
            },
            session: self.session(),
            guest: self.view_guest(),
            storages: self.storages.snapshot(),
            containers,
        }
    }
}

/// What may change in a container once it is created (everything else in
/// its [`ContainerView`] is fixed at creation).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerChanges {
    /// Device rules that replaced the spec's (UpdateContainer), if any.
    pub device_rules: Option<Vec<LinuxDeviceCgroup>>,
    /// Block devices hot-plugged into it, in order.
    pub devices: Vec<Plugged>,
    /// Whether its OOM kills are watched.
    pub oom_watch: bool,
    /// Its init.
    pub init: ProcessView,
    /// Exec'd processes, sorted by exec id.
    pub execs: Vec<ProcessView>,
}

impl Container {
    /// What may have changed since its creation. Waits for a hot-plug or
    /// update in flight (its device lock), so it shows it done or not.
    pub(crate) async fn changes(&self) -> ContainerChanges {
        let devices = self.devices.lock().await.clone();
        let mut execs: Vec<ProcessView> = lock(&self.execs).values().map(|p| process(p)).collect();
        execs.sort_by(|a, b| a.exec_id.cmp(&b.exec_id));
        ContainerChanges {
            device_rules: devices.own_rules,
            devices: devices.plugged,
            oom_watch: self.oom_watch.is_some(),
            init: process(&self.init),
            execs,
        }
    }

    /// Whether [`Container::changes`] would return `was`, told without
    /// making it: the state is written after every change, and making the
    /// changes of each of 100 containers (strings copied, then freed) to find
    /// the one that changed was a fifth of a write. Waits for a hot-plug or
    /// update in flight, as `changes` does.
    pub(crate) async fn unchanged_since(&self, was: &ContainerChanges) -> bool {
        // Every field, so that one added to ContainerChanges must be compared here.
        let ContainerChanges {
            device_rules,
            devices,
            oom_watch,
            init,
            execs,
        } = was;
        {
            let now = match self.devices.try_lock() {
                Ok(d) => d,
                Err(_) => self.devices.lock().await,
            };
            if now.own_rules != *device_rules || now.plugged != *devices {
                return false;
            }
        }
        if self.oom_watch.is_some() != *oom_watch || !same_process(&self.init, init) {
            return false;
        }
        let now = lock(&self.execs);
        // Exec ids are unique on both sides: as many, each found the same, is the same set.
        now.len() == execs.len()
            && execs
                .iter()
                .all(|v| now.get(&v.exec_id).is_some_and(|p| same_process(p, v)))
    }

    /// Its whole view from `changes`; the status read from the kernel only when `status`.
    pub(crate) fn view_with(&self, changes: ContainerChanges, status: bool) -> ContainerView {
        let facts = self.engine.facts();
        ContainerView {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            rootfs: facts.rootfs,
            created: facts.created,
            start_time: facts.start_time,
            status: if status {
                self.engine.status().to_string()
            } else {
                String::new()
            },
            cgroup: facts.cgroup,
            spec: self.spec_json(),
            device_rules: changes.device_rules,
            devices: changes.devices,
            oom_watch: changes.oom_watch,
            init: changes.init,
            execs: changes.execs,
        }
    }
}
