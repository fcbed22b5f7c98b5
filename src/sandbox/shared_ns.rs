//! Namespaces every container of the sandbox shares, as in Kata: one UTS
//! namespace (the sandbox's hostname) and one IPC namespace, held open by a
//! small holder process. Every container gets a PID namespace, as kata-agent
//! gives one: its own, or with `sandbox_pidns` the sandbox's, which is that of
//! the first container created.
//!
//! The holder is rustjail's resident helper [`MODE`]: the agent's binary,
//! started from rustjail's sealed copy in new UTS and IPC namespaces. It sets
//! the hostname, answers, and stays until the agent closes its end of the
//! helper's socket (or dies).

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

/// The helper mode of the namespace holder.
pub(crate) const MODE: rustjail::helper::Mode = rustjail::helper::Mode::resident("ns-holder", holder);

/// In the holder, in its new UTS and IPC namespaces: set the hostname.
fn holder(payload: serde_json::Value) -> Result<serde_json::Value, String> {
    let hostname = payload.get("hostname").and_then(|h| h.as_str()).unwrap_or_default();
    if !hostname.is_empty() {
        nix::unistd::sethostname(hostname).map_err(|e| format!("sethostname({hostname}): {e}"))?;
    }
    Ok(serde_json::Value::Null)
}

/// Starts the holder of the sandbox's UTS and IPC namespaces, with `hostname`
/// set in its UTS namespace, and waits until it is ready. Blocks.
pub(crate) fn spawn_holder(
    runtime: &rustjail::Runtime,
    hostname: &str,
) -> rustjail::Result<rustjail::helper::Resident> {
    runtime.spawn_resident(
        MODE.name(),
        nix::sched::CloneFlags::CLONE_NEWUTS | nix::sched::CloneFlags::CLONE_NEWIPC,
        serde_json::json!({ "hostname": hostname }),
    )
}

/// Points the spec's UTS and IPC namespaces at the holder's, and gives it a
/// PID namespace: `pidns_pid`'s when given, else a new one. A PID entry the
/// spec has is replaced, as kata-agent ignores the host's (Kata's runtimes
/// remove it; a path on the host means nothing in the guest).
pub(crate) fn join(spec: &mut Spec, holder: Option<i32>, pidns_pid: Option<i32>) {
    let Some(linux) = spec.linux_mut() else { return };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if let Some(h) = holder {
        for ns in namespaces.iter_mut() {
            match ns.typ() {
                LinuxNamespaceType::Uts => {
                    ns.set_path(Some(format!("/proc/{h}/ns/uts").into()));
                }
                LinuxNamespaceType::Ipc => {
                    ns.set_path(Some(format!("/proc/{h}/ns/ipc").into()));
                }
                _ => {}
            }
        }
    }
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Pid);
    let mut ns = LinuxNamespace::default();
    ns.set_typ(LinuxNamespaceType::Pid);
    ns.set_path(pidns_pid.map(|p| format!("/proc/{p}/ns/pid").into()));
    namespaces.push(ns);
    linux.set_namespaces(Some(namespaces));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(types: &[LinuxNamespaceType]) -> Spec {
        let mut spec = Spec::default();
        let ns = types
            .iter()
            .map(|t| {
                let mut n = LinuxNamespace::default();
                n.set_typ(*t);
                n
            })
            .collect();
        spec.linux_mut().as_mut().unwrap().set_namespaces(Some(ns));
        spec
    }

    fn paths(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<String>)> {
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| (n.typ(), n.path().as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    #[test]
    fn uts_and_ipc_point_at_the_holder_others_untouched() {
        let mut s = spec_with(&[
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Pid,
        ]);
        join(&mut s, Some(42), None);
        let p = paths(&s);
        assert!(p.contains(&(LinuxNamespaceType::Uts, Some("/proc/42/ns/uts".into()))));
        assert!(p.contains(&(LinuxNamespaceType::Ipc, Some("/proc/42/ns/ipc".into()))));
        assert!(p.contains(&(LinuxNamespaceType::Mount, None)));
        assert!(p.contains(&(LinuxNamespaceType::Pid, None)));
    }

    #[test]
    fn sandbox_pidns_replaces_or_adds_the_pid_entry() {
        let mut s = spec_with(&[LinuxNamespaceType::Pid, LinuxNamespaceType::Mount]);
        join(&mut s, None, Some(7));
        assert!(paths(&s).contains(&(LinuxNamespaceType::Pid, Some("/proc/7/ns/pid".into()))));
        assert_eq!(
            paths(&s).iter().filter(|(t, _)| *t == LinuxNamespaceType::Pid).count(),
            1
        );
        let mut s = spec_with(&[LinuxNamespaceType::Mount]);
        join(&mut s, None, Some(8));
        assert!(paths(&s).contains(&(LinuxNamespaceType::Pid, Some("/proc/8/ns/pid".into()))));
    }

    #[test]
    fn every_container_gets_a_pid_namespace() {
        // Kata's runtimes strip the pid entry; kata-agent adds a new one.
        let mut s = spec_with(&[LinuxNamespaceType::Mount]);
        join(&mut s, Some(42), None);
        assert_eq!(
            paths(&s)
                .iter()
                .filter(|(t, _)| *t == LinuxNamespaceType::Pid)
                .collect::<Vec<_>>(),
            [&(LinuxNamespaceType::Pid, None)]
        );
        // A host path in the spec means nothing in the guest: replaced.
        let mut s = Spec::default();
        let mut n = LinuxNamespace::default();
        n.set_typ(LinuxNamespaceType::Pid);
        n.set_path(Some("/proc/1/ns/pid".into()));
        s.linux_mut().as_mut().unwrap().set_namespaces(Some(vec![n]));
        join(&mut s, None, None);
        assert_eq!(paths(&s), [(LinuxNamespaceType::Pid, None)]);
    }
}
