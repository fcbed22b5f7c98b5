//! The sandbox as a whole: CreateSandbox (hostname, DNS, shared namespaces,
//! guest hooks) and DestroySandbox (every container stopped and deleted,
//! nothing left behind, then the agent stops).

use std::path::PathBuf;
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
        let dns = self.cfg.dns.clone();
        let lines = req.dns.clone();
        let dns_mounted = match blocking(move || dns.set_up(&lines)).await {
            Ok(m) => m,
            Err(e) => {
                undo_storages();
                return Err(e);
            }
        };
        let hostname = req.hostname.clone();
        let engine = self.engine.clone();
        let holder = match blocking(move || engine.spawn_ns_holder(&hostname)).await {
            Ok(h) => h,
            Err(e) => {
                if dns_mounted {
                    let _ = self.cfg.dns.tear_down();
                }
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
            dns_mounted,
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
        // Gone with the sandbox: their cgroups too.
        self.settling.settled().await;
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
        if pod.dns_mounted {
            if let Err(e) = self.cfg.dns.tear_down() {
                failures.push(format!("DNS: {e}"));
            }
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
