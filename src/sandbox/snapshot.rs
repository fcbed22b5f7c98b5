//! The sandbox's state as plain data: what a restarted or upgraded agent needs
//! to take its containers back. In memory the model lives in [`Sandbox`]; this
//! is its serialisable view. (Writing it to disk with a persist version is the
//! live-upgrade work; these types are the in-memory side of that conversion.)

use serde::{Deserialize, Serialize};

use super::{lock, Process, Sandbox};

/// One process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSnapshot {
    /// Exec id.
    pub exec_id: String,
    /// Host pid.
    pub pid: i32,
    /// Whether stdio is a terminal.
    pub tty: bool,
    /// Exit status as a shell reports it, once it has ended.
    pub exit_status: Option<i32>,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSnapshot {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: String,
    /// Its init.
    pub init: ProcessSnapshot,
    /// Exec'd processes not yet waited for, by exec id.
    pub execs: Vec<ProcessSnapshot>,
}

/// The whole sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSnapshot {
    /// Whether CreateSandbox ran.
    pub created: bool,
    /// Sandbox id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// DNS lines.
    pub dns: Vec<String>,
    /// Whether containers share one PID namespace.
    pub sandbox_pidns: bool,
    /// The container whose PID namespace is shared.
    pub pidns_container: Option<String>,
    /// Pid of the UTS/IPC namespace holder.
    pub ns_holder: Option<i32>,
    /// Guest hook directory.
    pub guest_hook_path: Option<String>,
    /// Containers, by id.
    pub containers: Vec<ContainerSnapshot>,
    /// Mounted storages and their users.
    #[serde(default)]
    pub storages: crate::storage::StorageState,
}

fn process(p: &Process) -> ProcessSnapshot {
    ProcessSnapshot {
        exec_id: p.exec_id.clone(),
        pid: p.pid,
        tty: p.tty,
        exit_status: p.exited().map(|e| e.status()),
    }
}

impl Sandbox {
    /// The sandbox's state as plain data.
    pub fn snapshot(&self) -> SandboxSnapshot {
        let pod = self.pod();
        let mut containers: Vec<ContainerSnapshot> = lock(&self.containers)
            .values()
            .map(|c| {
                let mut execs: Vec<ProcessSnapshot> = lock(&c.execs).values().map(|p| process(p)).collect();
                execs.sort_by(|a, b| a.exec_id.cmp(&b.exec_id));
                ContainerSnapshot {
                    id: c.id.clone(),
                    bundle: c.rj.bundle.display().to_string(),
                    init: process(&c.init),
                    execs,
                }
            })
            .collect();
        containers.sort_by(|a, b| a.id.cmp(&b.id));
        SandboxSnapshot {
            created: pod.created,
            id: pod.id,
            hostname: pod.hostname,
            dns: pod.dns,
            sandbox_pidns: pod.sandbox_pidns,
            pidns_container: pod.pidns_container,
            ns_holder: pod.ns_holder,
            guest_hook_path: pod.guest_hook_path.map(|p| p.display().to_string()),
            containers,
            storages: self.storages.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let s = SandboxSnapshot {
            created: true,
            id: "sb".into(),
            hostname: "pod".into(),
            dns: vec!["nameserver 10.0.0.1".into()],
            sandbox_pidns: true,
            pidns_container: Some("pause".into()),
            ns_holder: Some(12),
            guest_hook_path: None,
            containers: vec![ContainerSnapshot {
                id: "pause".into(),
                bundle: "/run/pith/bundles/pause".into(),
                init: ProcessSnapshot {
                    exec_id: "pause".into(),
                    pid: 40,
                    tty: false,
                    exit_status: None,
                },
                execs: vec![ProcessSnapshot {
                    exec_id: "e1".into(),
                    pid: 41,
                    tty: true,
                    exit_status: Some(137),
                }],
            }],
            storages: Default::default(),
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SandboxSnapshot>(&text).unwrap(), s);
    }
}
