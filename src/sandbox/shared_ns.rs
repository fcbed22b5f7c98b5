//! Namespaces every container of the sandbox shares, as in Kata: one UTS
//! namespace (the sandbox's hostname) and one IPC namespace, held open by a
//! small holder process, and optionally one PID namespace: that of the first
//! container created while `sandbox_pidns` is on.
//!
//! The holder is this binary re-executed: the forked child only calls
//! `unshare(2)` before `execve`, so no Rust code runs between fork and exec in
//! the multi-threaded agent.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use super::SandboxError;

/// Environment variable that turns the binary into a namespace holder.
const HOLDER_ENV: &str = "PITH_SANDBOX_NS_HOLDER";

/// In the holder process (the agent re-executed by [`spawn_holder`]): set the
/// hostname, report readiness on stdout, then sleep until killed. Returns at
/// once in any other process.
pub fn run_if_holder() {
    let Ok(hostname) = std::env::var(HOLDER_ENV) else {
        return;
    };
    if !hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(&hostname) {
            eprintln!("pith-agent namespace holder: sethostname({hostname}): {e}");
            std::process::exit(1);
        }
    }
    let parent = nix::unistd::getppid();
    println!("ready");
    // The holder must not outlive an agent that dies without cleaning up. Not
    // PR_SET_PDEATHSIG: that fires when the spawning *thread* ends, and the
    // agent spawns from short-lived worker threads. Re-parenting is the sign.
    while nix::unistd::getppid() == parent {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    std::process::exit(0);
}

/// Starts the holder of the sandbox's UTS and IPC namespaces, with `hostname`
/// set in its UTS namespace, and waits until it is ready. Returns its pid.
pub fn spawn_holder(hostname: &str) -> Result<i32, SandboxError> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.env(HOLDER_ENV, hostname)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        SandboxError::Internal(format!(
            "start namespace holder (unshare UTS|IPC, execve /proc/self/exe): {e}"
        ))
    })?;
    let pid = child.id() as i32;
    let mut line = String::new();
    let out = child.stdout.take().expect("piped stdout");
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| SandboxError::Internal(format!("read from namespace holder {pid}: {e}")))?;
    if line.trim() != "ready" {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        return Err(SandboxError::Internal(format!(
            "namespace holder {pid} failed to start (hostname {hostname:?}); see the agent's stderr"
        )));
    }
    Ok(pid)
}

/// Points the spec's UTS and IPC namespaces at the holder's, and its PID
/// namespace at `pidns_pid`'s when given (adding the entry if the spec has none).
pub fn join(spec: &mut Spec, holder: Option<i32>, pidns_pid: Option<i32>) {
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
    if let Some(p) = pidns_pid {
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Pid);
        ns.set_path(Some(format!("/proc/{p}/ns/pid").into()));
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
}

/// Whether the spec asks for a new PID namespace (an entry without a path).
pub fn creates_pidns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        })
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
        assert!(creates_pidns(&s));
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
        assert!(!creates_pidns(&s));
        let mut s = spec_with(&[LinuxNamespaceType::Mount]);
        join(&mut s, None, Some(8));
        assert!(paths(&s).contains(&(LinuxNamespaceType::Pid, Some("/proc/8/ns/pid".into()))));
    }
}
