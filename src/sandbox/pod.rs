//! The sandbox as a whole: CreateSandbox (hostname, DNS, shared namespaces,
//! guest hooks) and DestroySandbox (every container stopped and deleted,
//! nothing left behind, then the agent stops).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use slog::info;

use super::guest_hooks::GuestHooks;
use super::{blocking, lock, Error, Pod, PodState, Result, Sandbox, SANDBOX_OWNER};

/// What CreateSandbox asks for.
#[derive(Debug, Default, Clone)]
pub(crate) struct PodRequest {
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
fn load_modules(modules: &[(String, Vec<String>)]) -> Result<()> {
    use crate::init::modules;
    if modules.is_empty() {
        return Ok(());
    }
    let index = modules::ModuleIndex::scan(&modules::running_kernel_root()).map_err(|e| {
        let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
        Error::Internal(format!("kernel modules {}: {e}", names.join(",")))
    })?;
    for (name, params) in modules {
        if name.is_empty() {
            return Err(Error::InvalidArgument("kernel module with an empty name".into()));
        }
        modules::load_with(&index, name, params).map_err(|e| match e {
            modules::ModuleError::NotFound { .. } => Error::InvalidArgument(e.to_string()),
            _ => Error::Internal(e.to_string()),
        })?;
    }
    Ok(())
}

/// Writes `lines` to `path` atomically (temporary file, fsync, rename).
fn write_resolv_conf(path: &Path, lines: &[String]) -> Result<()> {
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
        Error::sys(format!("write {}", path.display()), e)
    })
}

/// Checks what can be checked before anything is done.
fn validate(req: &PodRequest) -> Result<()> {
    if req.hostname.len() > 64 || req.hostname.contains(['/', '\0']) {
        return Err(Error::InvalidArgument(format!(
            "hostname {:?} is not a valid host name (at most 64 bytes)",
            req.hostname
        )));
    }
    if let Some(bad) = req.dns.iter().find(|l| l.contains('\n')) {
        return Err(Error::InvalidArgument(format!("DNS entry {bad:?} holds a newline")));
    }
    Ok(())
}

/// The pod while CreateSandbox runs; back to absent if it does not finish
/// (an error, or the request dropped at the client's deadline).
struct PodReservation<'a> {
    sandbox: &'a Sandbox,
    done: bool,
}

impl Drop for PodReservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            *lock(&self.sandbox.pod) = Pod::default();
        }
    }
}

impl Sandbox {
    /// Sets the sandbox up: the shared UTS (with the hostname) and IPC namespaces,
    /// DNS, guest hooks, and whether containers share a PID namespace. Only one
    /// call succeeds until DestroySandbox.
    pub(crate) async fn create_sandbox(self: &Arc<Self>, req: PodRequest) -> Result<()> {
        self.detached(|sb| async move { sb.create_sandbox_task(req).await })
            .await
    }

    async fn create_sandbox_task(&self, req: PodRequest) -> Result<()> {
        let mut reservation = {
            let mut pod = lock(&self.pod);
            if pod.state != PodState::Absent {
                return Err(Error::SandboxExists(pod.id.clone()));
            }
            pod.state = PodState::Creating;
            pod.id = req.id.clone();
            PodReservation {
                sandbox: self,
                done: false,
            }
        };
        validate(&req)?;
        let guest_hook_path = (!req.guest_hook_path.is_empty()).then(|| PathBuf::from(&req.guest_hook_path));
        let guest_hooks = match &guest_hook_path {
            Some(p) => GuestHooks::load(p).map_err(|e| Error::InvalidArgument(format!("guest hooks: {e}")))?,
            None => GuestHooks::default(),
        };
        let modules = req.kernel_modules.clone();
        blocking(move || load_modules(&modules)).await?;
        let mut list = req.storages.clone();
        crate::storage::block::resolve_sources(&self.devices, &mut list).await?;
        let storages = self.storages.clone();
        blocking(move || storages.add(SANDBOX_OWNER, &list).map(|_| ()).map_err(Error::from)).await?;
        let undo_storages = || {
            let _ = self.storages.release(SANDBOX_OWNER);
        };
        // DNS after the storages: a request that fails leaves resolv.conf alone.
        if !req.dns.is_empty() {
            if let Err(e) = write_resolv_conf(&self.cfg.resolv_conf, &req.dns) {
                undo_storages();
                return Err(e);
            }
        }
        let hostname = req.hostname.clone();
        let engine = self.engine.clone();
        let holder = match blocking(move || engine.spawn_ns_holder(&hostname)).await {
            Ok(h) => h,
            Err(e) => {
                undo_storages();
                return Err(e);
            }
        };
        let holder_exit = self.engine.watch_exit(holder.pid());
        self.keep_holder(holder.channel());
        info!(self.log, "sandbox created";
              "sandbox" => &req.id, "hostname" => &req.hostname, "ns_holder" => holder.pid(),
              "sandbox_pidns" => req.sandbox_pidns);
        *lock(&self.pod) = Pod {
            state: PodState::Created,
            id: req.id,
            hostname: req.hostname,
            dns: req.dns,
            sandbox_pidns: req.sandbox_pidns,
            pidns_container: None,
            ns_holder: Some(Arc::from(holder)),
            ns_holder_exit: Some(holder_exit),
            guest_hook_path,
            guest_hooks,
        };
        reservation.done = true;
        Ok(())
    }

    /// Stops and deletes every container, ends the namespace holder, removes the
    /// sandbox's files, and asks the agent to stop. Every step is tried; the
    /// error lists those that failed.
    pub(crate) async fn destroy_sandbox(self: &Arc<Self>) -> Result<()> {
        self.detached(|sb| async move { sb.destroy_sandbox_task().await }).await
    }

    async fn destroy_sandbox_task(&self) -> Result<()> {
        let mut failures = Vec::new();
        for id in self.container_ids() {
            if let Err(e) = self.kill_and_remove(&id).await {
                failures.push(format!("container {id}: {e}"));
            }
        }
        let pod = std::mem::take(&mut *lock(&self.pod));
        if let (Some(holder), Some(mut exit)) = (pod.ns_holder, pod.ns_holder_exit) {
            let pid = holder.pid();
            // Dropping it (and the keeper's copy of its channel) ends the
            // holder; SIGKILL in case it is stuck.
            drop(holder);
            self.unkeep_holder();
            let _ = self.engine.signal(pid, Some(Signal::SIGKILL));
            let waited = tokio::time::timeout(Duration::from_secs(10), exit.wait_for(|e| e.is_some())).await;
            if waited.is_err() {
                failures.push(format!("namespace holder {pid} did not end after SIGKILL"));
            }
        }
        let storages = self.storages.clone();
        if let Err(e) = blocking(move || storages.release_all().map_err(Error::from)).await {
            failures.push(format!("storages: {e}"));
        }
        info!(self.log, "sandbox destroyed"; "sandbox" => &pod.id, "failures" => failures.len());
        // On disk before the agent is asked to stop (which it does a moment
        // after the answer is written: no write may come between).
        self.persist().await;
        let _ = self.shutdown.send(true);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "DestroySandbox left work undone: {}",
                failures.join("; ")
            )))
        }
    }

    /// SIGKILLs every process of a container, then removes it.
    async fn kill_and_remove(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let held = c.clone();
        // A paused container must thaw to die; errors mean "not paused" or "already gone".
        let _ = blocking(move || {
            let _ = held.engine.resume();
            let _ = held.engine.kill_all(Signal::SIGKILL);
            Ok(())
        })
        .await;
        let _ = self.engine.signal(c.init.pid, Some(Signal::SIGKILL));
        self.remove_container_task(id, Duration::ZERO).await
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
