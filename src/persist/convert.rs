//! The sandbox's view ([`SandboxView`], free to change) to the current persist
//! types and back. The only place that knows both.

use std::path::Path;

use super::error::PersistError;
use super::v1::{
    DeviceMountV1 as DeviceMountP, DeviceV1 as DeviceP, MountRecordV1 as RecordP, SessionV1 as SessionP,
    StorageV1 as StorageP, WatchedV1 as WatchedP,
};
use super::v2::{ExitV2, ProcessV2 as ProcessP};
use super::v3::{ContainerV3 as ContainerP, PodV3 as PodP, RawJson, SandboxV3 as SandboxP};
use crate::device::node::NodeMount;
use crate::reaper::Exit;
use crate::sandbox::hotplug::{BlockDevView, Plugged};
use crate::sandbox::session::Session;
use crate::sandbox::view::{ContainerView, GuestView, PodView, ProcessView, SandboxView, SpecJson, StdioView};
use crate::sandbox::PodState;
use crate::storage::mount::Record;
use crate::storage::watch::{WatchState, Watched};
use crate::storage::{StorageEntry, StorageState};

fn record(r: &Record) -> RecordP {
    RecordP {
        mounted: r.mounted,
        created: r.created.clone(),
    }
}

fn record_back(r: RecordP) -> Record {
    Record {
        mounted: r.mounted,
        created: r.created,
    }
}

fn process(p: &ProcessView) -> ProcessP {
    ProcessP {
        exec_id: p.exec_id.clone(),
        pid: p.pid,
        start_time: p.start_time,
        terminal: p.stdio.terminal,
        exit: None,
        exit_status: None,
        waited: p.waited,
        stdin_open: p.stdio.stdin.is_some(),
        stdout_open: p.stdio.stdout.is_some(),
        stderr_open: p.stdio.stderr.is_some(),
    }
    .with_exit(p.exit.map(|e| match e {
        Exit::Code(c) => ExitV2::Code(c),
        Exit::Signal(s) => ExitV2::Signal(s),
    }))
}

/// Descriptor numbers are the agent process's own and mean nothing to another
/// one: a restored view says only which streams are open (-1 stands for "open").
fn process_back(p: ProcessP) -> ProcessView {
    let open = |b: bool| b.then_some(-1);
    ProcessView {
        exit: p.ended().map(|e| match e {
            ExitV2::Code(c) => Exit::Code(c),
            ExitV2::Signal(s) => Exit::Signal(s),
        }),
        exec_id: p.exec_id,
        pid: p.pid,
        start_time: p.start_time,
        waited: p.waited,
        stdio: StdioView {
            terminal: p.terminal,
            stdin: open(p.stdin_open),
            stdout: open(p.stdout_open),
            stderr: open(p.stderr_open),
            terminal_master: open(p.terminal),
        },
    }
}

fn device(d: &Plugged) -> DeviceP {
    DeviceP {
        container_path: d.path.clone(),
        guest_name: d.dev.name.clone(),
        major: d.dev.major,
        minor: d.dev.minor,
        access: d.access.clone(),
        mode: d.mode,
        uid: d.uid,
        gid: d.gid,
        mount: d.mount.as_ref().map(|m| DeviceMountP {
            target: m.target.clone(),
            fstype: m.fstype.clone(),
            flags: m.flags,
            data: m.data.clone(),
        }),
    }
}

fn device_back(d: DeviceP) -> Plugged {
    Plugged {
        path: d.container_path,
        dev: BlockDevView {
            name: d.guest_name,
            major: d.major,
            minor: d.minor,
        },
        access: d.access,
        mode: d.mode,
        uid: d.uid,
        gid: d.gid,
        mount: d.mount.map(|m| NodeMount {
            target: m.target,
            fstype: m.fstype,
            flags: m.flags,
            data: m.data,
        }),
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    // The OCI types serialise to JSON by construction; Null only if they ever could not.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// One container's persist form.
pub(crate) fn container(c: &ContainerView) -> ContainerP {
    ContainerP {
        id: c.id.clone(),
        bundle: c.bundle.clone(),
        rootfs: c.rootfs.clone(),
        created: c.created.clone(),
        start_time: c.start_time,
        cgroup: c.cgroup.clone(),
        spec: RawJson(c.spec.raw().clone()),
        device_rules: c.device_rules.as_ref().map(json),
        devices: c.devices.iter().map(device).collect(),
        oom_watch: c.oom_watch,
        init: process(&c.init),
        execs: c.execs.iter().map(process).collect(),
    }
}

fn container_back(c: ContainerP, file: &Path) -> Result<ContainerView, PersistError> {
    let invalid = |what: &str, e: serde_json::Error| PersistError::Invalid {
        path: file.to_path_buf(),
        why: format!("container {:?}: {what}: {e}", c.id),
    };
    // Checked now (a spec the OCI types refuse makes the file invalid); kept as text.
    let spec = SpecJson::checked(c.spec.0.clone()).map_err(|e| invalid("spec", e))?;
    let device_rules = c
        .device_rules
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| invalid("device_rules", e))?;
    Ok(ContainerView {
        status: String::new(),
        spec,
        device_rules,
        devices: c.devices.into_iter().map(device_back).collect(),
        init: process_back(c.init),
        execs: c.execs.into_iter().map(process_back).collect(),
        id: c.id,
        bundle: c.bundle,
        rootfs: c.rootfs,
        created: c.created,
        start_time: c.start_time,
        cgroup: c.cgroup,
        oom_watch: c.oom_watch,
    })
}

fn storage(e: &StorageEntry) -> StorageP {
    StorageP {
        mount_point: e.mount_point.clone(),
        driver: e.driver.clone(),
        source: e.source.clone(),
        fstype: e.fstype.clone(),
        options: e.options.clone(),
        shared: e.shared,
        owners: e.owners.iter().cloned().collect(),
        record: RecordP {
            mounted: e.mounted,
            created: e.created.clone(),
        },
        layer: e.layer.clone(),
    }
}

fn storage_back(s: StorageP) -> StorageEntry {
    StorageEntry {
        mount_point: s.mount_point,
        driver: s.driver,
        source: s.source,
        fstype: s.fstype,
        options: s.options,
        shared: s.shared,
        owners: s.owners.into_iter().collect(),
        mounted: s.record.mounted,
        created: s.record.created,
        layer: s.layer,
    }
}

/// The persist form of the sandbox's state (the guest settings are the
/// agent's configuration, read again at start, and are not kept).
pub(crate) fn from_view(v: &SandboxView) -> SandboxP {
    SandboxP {
        pod: PodP {
            // A CreateSandbox in progress is not finished: a restarted agent has none.
            state: match v.pod.state {
                PodState::Created => "created",
                PodState::Absent | PodState::Creating => "absent",
            }
            .to_string(),
            id: v.pod.id.clone(),
            hostname: v.pod.hostname.clone(),
            dns: v.pod.dns.clone(),
            dns_mounted: v.pod.dns_mounted,
            sandbox_pidns: v.pod.sandbox_pidns,
            pidns_container: v.pod.pidns_container.clone(),
            ns_holder_pid: v.pod.ns_holder,
            guest_hook_path: v.pod.guest_hook_path.clone(),
        },
        session: SessionP {
            level: v.session.level,
            features: v.session.features.clone(),
            host_name: v.session.host_name.clone(),
            host_version: v.session.host_version.clone(),
        },
        storages: v.storages.entries.iter().map(storage).collect(),
        watched: v
            .storages
            .watch
            .entries
            .iter()
            .map(|w| WatchedP {
                source: w.source.clone(),
                target: w.target.clone(),
                copied: w.copied,
            })
            .collect(),
        watch_tmpfs: v.storages.watch.tmpfs.as_ref().map(record),
        containers: v.containers.iter().map(container).collect(),
    }
}

/// The sandbox's view from its persist form; `guest` is this agent's
/// configuration. Container statuses are left empty (the kernel says them).
pub(crate) fn to_view(p: SandboxP, guest: GuestView, file: &Path) -> Result<SandboxView, PersistError> {
    let state = match p.pod.state.as_str() {
        "absent" => PodState::Absent,
        "created" => PodState::Created,
        other => {
            return Err(PersistError::Invalid {
                path: file.to_path_buf(),
                why: format!("pod.state {other:?} is neither \"absent\" nor \"created\""),
            })
        }
    };
    let containers = p
        .containers
        .into_iter()
        .map(|c| container_back(c, file))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SandboxView {
        pod: PodView {
            state,
            id: p.pod.id,
            hostname: p.pod.hostname,
            dns: p.pod.dns,
            dns_mounted: p.pod.dns_mounted,
            sandbox_pidns: p.pod.sandbox_pidns,
            pidns_container: p.pod.pidns_container,
            ns_holder: p.pod.ns_holder_pid,
            guest_hook_path: p.pod.guest_hook_path,
        },
        session: Session {
            level: p.session.level,
            features: p.session.features,
            host_name: p.session.host_name,
            host_version: p.session.host_version,
        },
        guest,
        storages: StorageState {
            entries: p.storages.into_iter().map(storage_back).collect(),
            watch: WatchState {
                entries: p
                    .watched
                    .into_iter()
                    .map(|w| Watched {
                        source: w.source,
                        target: w.target,
                        copied: w.copied,
                    })
                    .collect(),
                tmpfs: p.watch_tmpfs.map(record_back),
            },
        },
        containers,
    })
}
