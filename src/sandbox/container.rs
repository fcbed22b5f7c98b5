//! One container's lifecycle and cgroup operations: create, start, remove,
//! pause, resume, update, stats, pids.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::new_stdio::NewStdio;
use super::process::Process;
use super::{blocking, lock, oom, shared_ns, Container, Reservation, Sandbox, SandboxError};

/// What CreateContainer asks for beyond the spec.
#[derive(Debug, Default, Clone)]
pub struct CreateRequest {
    /// Container id.
    pub id: String,
    /// Exec id of its init (defaults to the container id).
    pub exec_id: String,
    /// Join the sandbox's PID namespace (also on when CreateSandbox set it).
    pub sandbox_pidns: bool,
    /// Storages to mount before the container is created (its rootfs may be one).
    pub storages: Vec<protocols::agent::Storage>,
}

impl Sandbox {
    /// Creates a container from an OCI spec whose `root.path` is its rootfs.
    pub async fn create_container(&self, req: CreateRequest, spec: Spec) -> Result<(), SandboxError> {
        let id = req.id.clone();
        rustjail::state::validate_id(&id)?;
        let reserved = (!lock(&self.containers).contains_key(&id))
            .then(|| Reservation::take(&self.creating, &id))
            .flatten();
        let Some(_reserved) = reserved else {
            return Err(SandboxError::AlreadyExists(format!("container {id:?} already exists")));
        };
        let bundle = self.bundles.join(&id);
        let storages = self.storages.clone();
        let (owner, list) = (id.clone(), req.storages.clone());
        let mut result = blocking(move || storages.add(&owner, &list).map(|_| ()).map_err(SandboxError::from)).await;
        if result.is_ok() {
            result = self.create_reserved(&req, spec, bundle.clone()).await;
        }
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&bundle);
            let _ = self.storages.release(&id);
        }
        result
    }

    /// The spec as this sandbox runs it: shared namespaces joined, guest hooks added.
    /// Returns the spec and whether this container becomes the sandbox's PID namespace.
    fn adapt_spec(&self, req: &CreateRequest, mut spec: Spec) -> Result<(Spec, bool), SandboxError> {
        let pod = self.pod();
        let mut pidns_pid = None;
        let mut becomes_pidns = false;
        if pod.sandbox_pidns || req.sandbox_pidns {
            match &pod.pidns_container {
                Some(holder) => {
                    let c = self.container(holder).map_err(|_| {
                        SandboxError::FailedPrecondition(format!(
                            "the sandbox PID namespace belonged to container {holder:?}, which is gone"
                        ))
                    })?;
                    if c.init.exited().is_some() {
                        return Err(SandboxError::FailedPrecondition(format!(
                            "the sandbox PID namespace belonged to container {holder:?}, whose init has exited"
                        )));
                    }
                    pidns_pid = Some(c.init.pid);
                }
                None => becomes_pidns = shared_ns::creates_pidns(&spec),
            }
        }
        shared_ns::join(&mut spec, pod.ns_holder, pidns_pid);
        pod.guest_hooks.apply(&mut spec);
        Ok((spec, becomes_pidns))
    }

    async fn create_reserved(&self, req: &CreateRequest, spec: Spec, bundle: PathBuf) -> Result<(), SandboxError> {
        let id = &req.id;
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| SandboxError::InvalidArgument(format!("container {id}: the spec has no root.path")))?;
        if !root.is_dir() {
            return Err(SandboxError::InvalidArgument(format!(
                "container {id}: rootfs {} does not exist or is not a directory",
                root.display()
            )));
        }
        let (spec, becomes_pidns) = self.adapt_spec(req, spec)?;
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| SandboxError::Internal(format!("mkdir {}: {e}", bundle.display())))?;
        spec.save(bundle.join("config.json")).map_err(|e| {
            let why = crate::oci_convert::spec_error_text(&e);
            SandboxError::Internal(format!("write {}/config.json: {why}", bundle.display()))
        })?;

        let mut stdio = NewStdio::new(terminal, &self.consoles, self.cfg.pipe_size)?;
        let rt = self.runtime.clone();
        let opts = rustjail::CreateOptions {
            id: id.clone(),
            bundle: bundle.clone(),
            no_pivot: self.no_pivot,
            console_socket: stdio.console_path(),
            stdio: stdio.raw(),
        };
        let theirs = stdio.take_theirs();
        let state = blocking(move || {
            let r = rt.create(&opts).map_err(SandboxError::from);
            drop(theirs);
            r
        })
        .await?;
        let stdio = match stdio.finish().await {
            Ok(s) => s,
            Err(e) => {
                self.destroy_created(id).await;
                return Err(e);
            }
        };
        let exit = self.reaper.watch(state.pid);
        let exec_id = if req.exec_id.is_empty() {
            id.clone()
        } else {
            req.exec_id.clone()
        };
        let init = Arc::new(Process::new(exec_id, state.pid, exit, stdio)?);
        let oom_watch = match self.runtime.cgroup(id) {
            Ok(cg) => oom::watch(id.clone(), cg, self.oom_tx.clone()).ok(),
            Err(_) => None,
        };
        let c = Arc::new(Container {
            id: id.clone(),
            bundle,
            init,
            execs: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            oom_watch,
        });
        lock(&self.containers).insert(id.clone(), c);
        if becomes_pidns {
            lock(&self.pod).pidns_container = Some(id.clone());
        }
        Ok(())
    }

    /// Kills and deletes a container rustjail created but the sandbox does not hold.
    async fn destroy_created(&self, id: &str) {
        let rt = self.runtime.clone();
        let id = id.to_string();
        let _ = blocking(move || rt.delete(&id, true).map(|_| ()).map_err(SandboxError::from)).await;
    }

    /// Lets the container's process run.
    pub async fn start_container(&self, id: &str) -> Result<(), SandboxError> {
        self.container(id)?;
        let rt = self.runtime.clone();
        let id = id.to_string();
        blocking(move || rt.start(&id).map(|_| ()).map_err(SandboxError::from)).await
    }

    /// Removes a container; one still running gets `timeout` to end by itself,
    /// then SIGKILL (with every other process in it).
    pub async fn remove_container(&self, id: &str, timeout: Duration) -> Result<(), SandboxError> {
        let c = self.container(id)?;
        if c.init.exit_within(timeout).await.is_none() {
            let _ = nix::sys::signal::kill(Pid::from_raw(c.init.pid), Signal::SIGKILL);
            if c.init.exit_within(Duration::from_secs(10)).await.is_none() {
                return Err(SandboxError::Internal(format!(
                    "container {id} (pid {}) survived SIGKILL",
                    c.init.pid
                )));
            }
        }
        let rt = self.runtime.clone();
        let cid = id.to_string();
        blocking(move || rt.delete(&cid, true).map(|_| ()).map_err(SandboxError::from)).await?;
        lock(&self.containers).remove(id);
        let _ = std::fs::remove_dir_all(&c.bundle);
        let storages = self.storages.clone();
        let owner = id.to_string();
        blocking(move || storages.release(&owner).map_err(SandboxError::from)).await?;
        let mut pod = lock(&self.pod);
        if pod.pidns_container.as_deref() == Some(id) {
            pod.pidns_container = None;
        }
        Ok(())
    }

    async fn on_runtime<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&rustjail::Runtime, &str) -> rustjail::Result<T> + Send + 'static,
    ) -> Result<T, SandboxError> {
        self.container(id)?;
        let rt = self.runtime.clone();
        let id = id.to_string();
        blocking(move || f(&rt, &id).map_err(SandboxError::from)).await
    }

    /// Freezes every process of the container.
    pub async fn pause_container(&self, id: &str) -> Result<(), SandboxError> {
        self.on_runtime(id, |rt, id| rt.pause(id)).await
    }

    /// Thaws a paused container.
    pub async fn resume_container(&self, id: &str) -> Result<(), SandboxError> {
        self.on_runtime(id, |rt, id| rt.resume(id)).await
    }

    /// Changes the container's resource limits; returns notes on what the host could not apply.
    pub async fn update_container(
        &self,
        id: &str,
        resources: oci_spec::runtime::LinuxResources,
    ) -> Result<Vec<String>, SandboxError> {
        self.on_runtime(id, move |rt, id| rt.update(id, &resources)).await
    }

    /// The container's cgroup statistics.
    pub async fn container_stats(&self, id: &str) -> Result<rustjail::cgroups::Stats, SandboxError> {
        self.on_runtime(id, |rt, id| rt.stats(id)).await
    }

    /// Pids of every process in the container.
    pub async fn container_pids(&self, id: &str) -> Result<Vec<i32>, SandboxError> {
        self.on_runtime(id, |rt, id| rt.pids(id)).await
    }
}
