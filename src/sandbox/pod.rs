//! The sandbox as a whole: CreateSandbox (hostname, DNS, shared namespaces,
//! guest hooks) and DestroySandbox (every container stopped and deleted,
//! nothing left behind, then the agent stops).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::guest_hooks::GuestHooks;
use super::{blocking, lock, shared_ns, PodInfo, Sandbox, SandboxError};

/// What CreateSandbox asks for.
#[derive(Debug, Default, Clone)]
pub struct PodRequest {
    /// The host's id for the sandbox.
    pub id: String,
    /// Hostname of the sandbox's UTS namespace.
    pub hostname: String,
    /// resolv.conf lines ("nameserver 10.0.0.1", "search example.com").
    pub dns: Vec<String>,
    /// Share one PID namespace among the containers.
    pub sandbox_pidns: bool,
    /// Directory of guest OCI hooks.
    pub guest_hook_path: String,
    /// Storages shared by the sandbox's containers.
    pub storages: Vec<protocols::agent::Storage>,
    /// Kernel modules to load first: (name, `key=value` parameters).
    pub kernel_modules: Vec<(String, Vec<String>)>,
}

/// Loads the modules CreateSandbox asks for, dependencies first (from the
/// modules of the running kernel). Called on a blocking thread.
fn load_modules(modules: &[(String, Vec<String>)]) -> Result<(), SandboxError> {
    use crate::init::modules;
    if modules.is_empty() {
        return Ok(());
    }
    let index = modules::ModuleIndex::scan(&modules::running_kernel_root()).map_err(|e| {
        let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
        SandboxError::Internal(format!("kernel modules {}: {e}", names.join(",")))
    })?;
    for (name, params) in modules {
        if name.is_empty() {
            return Err(SandboxError::InvalidArgument("kernel module with an empty name".into()));
        }
        modules::load_with(&index, name, params).map_err(|e| match e {
            modules::ModuleError::NotFound { .. } => SandboxError::InvalidArgument(e.to_string()),
            _ => SandboxError::Internal(e.to_string()),
        })?;
    }
    Ok(())
}

/// Writes `lines` to `path` atomically (temporary file, fsync, rename).
fn write_resolv_conf(path: &Path, lines: &[String]) -> Result<(), SandboxError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.pith-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("resolv")
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SandboxError::Internal(format!("write {}: {e}", path.display()))
    })
}

impl Sandbox {
    /// Sets the sandbox up: the shared UTS (with the hostname) and IPC namespaces,
    /// DNS, guest hooks, and whether containers share a PID namespace.
    pub async fn create_sandbox(&self, req: PodRequest) -> Result<(), SandboxError> {
        {
            let pod = lock(&self.pod);
            if pod.created {
                return Err(SandboxError::AlreadyExists(format!(
                    "sandbox {:?} was already created",
                    pod.id
                )));
            }
        }
        if req.hostname.len() > 64 || req.hostname.contains(['/', '\0']) {
            return Err(SandboxError::InvalidArgument(format!(
                "hostname {:?} is not a valid host name (at most 64 bytes)",
                req.hostname
            )));
        }
        if let Some(bad) = req.dns.iter().find(|l| l.contains('\n')) {
            return Err(SandboxError::InvalidArgument(format!(
                "DNS entry {bad:?} holds a newline"
            )));
        }
        let guest_hook_path = (!req.guest_hook_path.is_empty()).then(|| PathBuf::from(&req.guest_hook_path));
        let guest_hooks = match &guest_hook_path {
            Some(p) => GuestHooks::load(p).map_err(|e| SandboxError::InvalidArgument(format!("guest hooks: {e}")))?,
            None => GuestHooks::default(),
        };
        let modules = req.kernel_modules.clone();
        blocking(move || load_modules(&modules)).await?;
        let storages = self.storages.clone();
        let list = req.storages.clone();
        blocking(move || {
            storages
                .add(super::SANDBOX_OWNER, &list)
                .map(|_| ())
                .map_err(SandboxError::from)
        })
        .await?;
        // DNS after the storages: a request that fails leaves resolv.conf alone.
        if !req.dns.is_empty() {
            if let Err(e) = write_resolv_conf(&self.cfg.resolv_conf, &req.dns) {
                let _ = self.storages.release(super::SANDBOX_OWNER);
                return Err(e);
            }
        }
        let hostname = req.hostname.clone();
        let rt = self.runtime.clone();
        let holder = match blocking(move || shared_ns::spawn_holder(&rt, &hostname).map_err(SandboxError::from)).await {
            Ok(h) => h,
            Err(e) => {
                let _ = self.storages.release(super::SANDBOX_OWNER);
                return Err(e);
            }
        };
        let holder_exit = self.reaper.watch(holder.pid);
        *lock(&self.pod) = PodInfo {
            created: true,
            id: req.id,
            hostname: req.hostname,
            dns: req.dns,
            sandbox_pidns: req.sandbox_pidns,
            pidns_container: None,
            ns_holder: Some(holder.pid),
            ns_holder_channel: Some(Arc::new(holder)),
            ns_holder_exit: Some(holder_exit),
            guest_hook_path,
            guest_hooks,
        };
        Ok(())
    }

    /// Stops and deletes every container, ends the namespace holder, removes the
    /// sandbox's files, and asks the agent to stop. Every step is tried; the
    /// error lists those that failed.
    pub async fn destroy_sandbox(&self) -> Result<(), SandboxError> {
        let mut failures = Vec::new();
        for id in self.container_ids() {
            if let Err(e) = self.kill_and_remove(&id).await {
                failures.push(format!("container {id}: {e}"));
            }
        }
        let pod = std::mem::take(&mut *lock(&self.pod));
        if let (Some(pid), Some(mut exit)) = (pod.ns_holder, pod.ns_holder_exit) {
            // Closing its socket ends the holder; SIGKILL in case it is stuck.
            drop(pod.ns_holder_channel);
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let waited = tokio::time::timeout(Duration::from_secs(10), exit.wait_for(|e| e.is_some())).await;
            if waited.is_err() {
                failures.push(format!("namespace holder {pid} did not end after SIGKILL"));
            }
        }
        let storages = self.storages.clone();
        if let Err(e) = blocking(move || storages.release_all().map_err(SandboxError::from)).await {
            failures.push(format!("storages: {e}"));
        }
        let _ = self.shutdown.send(true);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Internal(format!(
                "DestroySandbox left work undone: {}",
                failures.join("; ")
            )))
        }
    }

    /// SIGKILLs every process of a container, then removes it.
    async fn kill_and_remove(&self, id: &str) -> Result<(), SandboxError> {
        let c = self.container(id)?;
        let rt = self.runtime.clone();
        let held = c.clone();
        // A paused container must thaw to die; errors mean "not paused" or "already gone".
        let _ = blocking(move || {
            let _ = rt.resume(&held.rj);
            let _ = rt.kill_all(&held.rj, Signal::SIGKILL);
            Ok(())
        })
        .await;
        let _ = nix::sys::signal::kill(Pid::from_raw(c.init.pid), Signal::SIGKILL);
        self.remove_container(id, Duration::ZERO).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("resolv.conf");
        std::fs::write(&p, "nameserver 1.1.1.1\nsearch old\n").unwrap();
        write_resolv_conf(&p, &["nameserver 10.0.0.2".into(), "search pod.local".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "nameserver 10.0.0.2\nsearch pod.local\n"
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
