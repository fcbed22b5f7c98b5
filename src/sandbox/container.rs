//! One container's lifecycle and cgroup operations: create, start, remove,
//! pause, resume, update, stats, pids.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Spec};
use slog::{info, warn};

use super::engine::CreateSpec;
use super::hotplug::DeviceState;
use super::meanwhile;
use super::new_stdio::NewStdio;
use super::{blocking, blocking_here, lock, shared_ns, Container, Error, Reservation, Result, Sandbox};
use crate::device::DeviceAddr;

/// A device CreateContainer names: the host plugged it; the spec's
/// `linux.devices` entry at `container_path` stands for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecDevice {
    /// Path of the spec's entry.
    pub container_path: String,
    /// Where the host plugged it.
    pub addr: DeviceAddr,
}

/// What CreateContainer asks for beyond the spec.
#[derive(Debug, Default, Clone)]
pub(crate) struct CreateRequest {
    /// Container id.
    pub id: String,
    /// Exec id of its init (defaults to the container id).
    pub exec_id: String,
    /// Join the sandbox's PID namespace (also on when CreateSandbox set it).
    pub sandbox_pidns: bool,
    /// Storages to mount before the container is created (its rootfs may be
    /// one); block storages' devices are waited for first.
    pub storages: Vec<protocols::agent::Storage>,
    /// Devices to wait for; the spec is rewritten to the guest's numbers.
    pub devices: Vec<SpecDevice>,
}

impl Container {
    /// When the init exits, kills every process left in the container's
    /// cgroup, as the kernel does for a PID namespace whose init exits. With
    /// a PID namespace of its own nothing is left; in the sandbox's shared
    /// one (or none) the init's children and exec'd processes would run on
    /// until RemoveContainer.
    pub(super) fn watch_leftovers(self: &Arc<Self>, log: &slog::Logger) {
        if self.engine.init_ends_the_rest() {
            // Nothing is left: no task, no thread hop and no cgroup read at
            // every exit.
            return;
        }
        let container = Arc::downgrade(self);
        let mut exit = self.init.exit_watch();
        let log = log.clone();
        let task = tokio::spawn(async move {
            if exit.wait_for(|e| e.is_some()).await.is_err() {
                return;
            }
            let Some(c) = container.upgrade() else { return };
            let id = c.id.clone();
            match tokio::task::spawn_blocking(move || c.engine.kill_all(Signal::SIGKILL)).await {
                Ok(Ok(0)) | Err(_) => {}
                Ok(Ok(n)) => info!(log, "killed the processes its init left"; "container" => id, "processes" => n),
                // Removed meanwhile (its cgroup is gone): nothing is left.
                Ok(Err(e)) => slog::debug!(log, "processes its init left not killed"; "container" => id, "error" => %e),
            }
        });
        *lock(&self.leftovers_watch) = Some(task);
    }
}

impl Sandbox {
    /// Creates a container from an OCI spec whose `root.path` is its rootfs.
    /// The id is checked and held first; then the devices (and those of block
    /// storages) are waited for, the storages mounted and the container made. Whatever fails undoes what
    /// was done.
    pub(crate) async fn create_container(self: &Arc<Self>, req: CreateRequest, spec: Spec) -> Result<()> {
        self.detached(|sb| async move { sb.create_container_task(req, spec).await })
            .await
    }

    async fn create_container_task(&self, req: CreateRequest, mut spec: Spec) -> Result<()> {
        let id = req.id.clone();
        rustjail::state::validate_id(&id)?;
        let reserved = (!lock(&self.containers).contains_key(&id))
            .then(|| Reservation::take(&self.creating, &id))
            .flatten();
        let Some(_reserved) = reserved else {
            return Err(Error::ContainerExists(id));
        };
        for d in &req.devices {
            let dev = self.devices.wait_block(&d.addr).await.map_err(|source| Error::Device {
                context: format!("container {id:?}: device for {}", d.container_path),
                source,
            })?;
            crate::device::spec::rewrite(&mut spec, &d.container_path, &dev)
                .map_err(|e| Error::InvalidArgument(format!("container {id:?}: {e}")))?;
        }
        let mut list = req.storages.clone();
        crate::storage::block::resolve_sources(&self.devices, &mut list).await?;
        let bundle = self.bundles.join(&id);
        let storages = self.storages.clone();
        let owner = id.clone();
        // Most containers bring no storage: no hop to a worker thread then.
        let mut result = if list.is_empty() {
            Ok(())
        } else {
            blocking(move || storages.add(&owner, &list).map(|_| ()).map_err(Error::from)).await
        };
        if result.is_ok() {
            result = self.create_reserved(&req, spec, bundle.clone()).await;
        }
        if let Err(e) = &result {
            let _ = std::fs::remove_dir_all(&bundle);
            let _ = self.storages.release(&id);
            warn!(self.log, "container not created"; "container" => &id, "error" => %e);
        }
        result
    }

    /// The spec as this sandbox runs it: shared namespaces joined, a PID
    /// namespace of its own or the sandbox's, guest hooks added, an empty
    /// cgroups path made `/<id>` (kata-agent's rustjail; a path relative to
    /// the agent's own cgroup fails where that is a systemd service on cgroup
    /// v2). Returns the spec and whether this container becomes the holder of
    /// the sandbox's PID namespace.
    fn adapt_spec(&self, req: &CreateRequest, mut spec: Spec) -> Result<(Spec, bool)> {
        let pod = self.pod();
        // As kata-agent: the first container created holds the sandbox's PID
        // namespace, whatever it asked for. (When the holder is removed the
        // next container holds a new one; kata-agent keeps the dead one's path
        // and fails every later join.)
        let becomes_pidns = pod.pidns_container.is_none();
        let mut pidns_pid = None;
        if let (true, Some(holder)) = (pod.sandbox_pidns || req.sandbox_pidns, &pod.pidns_container) {
            let c = self.container(holder).map_err(|_| {
                Error::FailedPrecondition(format!(
                    "the sandbox PID namespace belonged to container {holder:?}, which is gone"
                ))
            })?;
            if c.init.exited().is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "the sandbox PID namespace belonged to container {holder:?}, whose init has exited"
                )));
            }
            pidns_pid = Some(c.init.pid);
        }
        shared_ns::join(&mut spec, pod.ns_holder.as_ref().map(|h| h.pid()), pidns_pid);
        if let Some(linux) = spec.linux_mut() {
            if linux.cgroups_path().as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                linux.set_cgroups_path(Some(format!("/{}", req.id).into()));
            }
        }
        pod.guest_hooks.apply(&mut spec);
        Ok((spec, becomes_pidns))
    }

    async fn create_reserved(&self, req: &CreateRequest, spec: Spec, bundle: PathBuf) -> Result<()> {
        let id = &req.id;
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| Error::InvalidArgument(format!("container {id}: the spec has no root.path")))?;
        if !root.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "container {id}: rootfs {} does not exist or is not a directory",
                root.display()
            )));
        }
        let (spec, becomes_pidns) = self.adapt_spec(req, spec)?;
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
        // The OCI bundle, as Kata writes it: the directory hooks are told about,
        // with the spec as the container runs it. Written for them and for
        // people debugging; the engine takes the spec in memory and nothing
        // reads the file back. With no hook to read it, it is written while
        // the init builds its root, from the JSON the state file keeps.
        std::fs::create_dir_all(&bundle).map_err(|e| Error::sys(format!("mkdir {}", bundle.display()), e))?;
        let config = bundle.join("config.json");
        let config_later = !has_hooks(&spec);
        if !config_later {
            write_config(&spec, &config)?;
        }
        let mut stdio = NewStdio::new(terminal, self.cfg.pipe_size)?;
        let theirs = stdio.take_theirs();
        let exec_id = if req.exec_id.is_empty() { id } else { &req.exec_id };
        // Pipes are set up while the init builds its root; a terminal's
        // master comes with the created container.
        let (pipes, stdio) = if terminal {
            (None, Some(stdio))
        } else {
            (Some(stdio), None)
        };
        let parts = Arc::new(meanwhile::InitParts {
            id: id.clone(),
            exec_id: exec_id.clone(),
            engine: self.engine.clone(),
            changed: self.changed.clone(),
            log: self.log.clone(),
        });
        let (meanwhile, made) = parts.clone().meanwhile(pipes, config_later.then(|| config.clone()));
        let engine = self.engine.clone();
        let create = CreateSpec {
            id: id.clone(),
            spec,
            bundle: bundle.clone(),
            stdio: theirs,
            meanwhile: Some(meanwhile),
        };
        let created = blocking_here(move || engine.create(create)).await?;
        let handle = created.container;
        let pid = handle.pid();
        let made = lock(&made).take().filter(|m| m.pid == pid);
        let (made_init, spec_json, config_written, mount_ns) = match made {
            Some(m) => (m.init, Some(m.spec_json), m.config, m.mount_ns),
            None => (None, None, None, None),
        };
        let config_written = match config_written {
            Some(r) => r,
            None if config_later => write_config(handle.spec(), &config),
            None => Ok(()),
        };
        let init = config_written.and_then(|()| match (made_init, stdio) {
            (Some(p), _) => p,
            (None, Some(stdio)) => parts.process(pid, handle.start_time(), stdio, created.terminal),
            (None, None) => Err(Error::Internal(format!(
                "container {id}: the engine did not set up the init's pipes for pid {pid}"
            ))),
        });
        let init = match init {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // The engine made it, the sandbox cannot hold it: undo.
                let _ = blocking(move || handle.delete()).await;
                return Err(e);
            }
        };
        let oom_watch = handle.watch_oom(id, self.oom_tx.clone());
        let c = Arc::new(Container {
            id: id.clone(),
            engine: handle,
            bundle,
            init,
            execs: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            devices: tokio::sync::Mutex::new(DeviceState::default()),
            oom_watch,
            leftovers_watch: Mutex::new(None),
            spec_json: spec_json.map_or_else(std::sync::OnceLock::new, std::sync::OnceLock::from),
            mount_ns: Mutex::new(mount_ns),
            seq: self.next_seq(),
        });
        self.keep_stdio(id, &c.init);
        c.watch_leftovers(&self.log);
        lock(&self.containers).insert(id.clone(), c);
        self.changed.touch(id);
        if becomes_pidns {
            let mut pod = lock(&self.pod);
            // Two first creates at once: the one recorded first holds it.
            if pod.pidns_container.is_none() {
                pod.pidns_container = Some(id.clone());
            }
        }
        info!(self.log, "container created";
              "container" => id, "pid" => pid, "terminal" => terminal, "sandbox_pidns" => becomes_pidns);
        Ok(())
    }

    /// Lets the container's process run.
    pub(crate) async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let held = c.clone();
        // On this thread, which the engine keeps off the CPU the program
        // starts on, up to the answer: a worker woken to send it was woken
        // there, behind the program (a /bin/true ran to its end first, ~0.4
        // ms). The start is bounded (the engine gives up on an init that
        // does not take its FIFO), so holding the call's deadline off until
        // then is harmless.
        let warnings = blocking_here(move || held.engine.start()).await?;
        for w in &warnings {
            warn!(self.log, "poststart hook failed"; "container" => id, "error" => w);
        }
        info!(self.log, "container started"; "container" => id, "pid" => c.init.pid);
        Ok(())
    }

    /// Removes a container; one still running gets `timeout` to end by itself,
    /// then SIGKILL (with every other process in it). Its hot-plugged devices,
    /// storages and bundle go with it.
    pub(crate) async fn remove_container(self: &Arc<Self>, id: &str, timeout: Duration) -> Result<()> {
        let id = id.to_string();
        self.detached(move |sb| async move { sb.remove_container_task(&id, timeout).await })
            .await
    }

    pub(super) async fn remove_container_task(&self, id: &str, timeout: Duration) -> Result<()> {
        let c = self.container(id)?;
        if c.init.exit_within(timeout).await.is_none() {
            let _ = self.engine.signal(c.init.pid, Some(Signal::SIGKILL));
            if c.init.exit_within(Duration::from_secs(10)).await.is_none() {
                return Err(Error::Internal(format!(
                    "container {id} (pid {}) survived SIGKILL",
                    c.init.pid
                )));
            }
        }
        // No hot-plug or update of this container runs from here on.
        let mut devices = c.devices.lock().await;
        let held = c.clone();
        let storages = self.storages.clone();
        let parked = self.parked_ns.clone();
        let owner = id.to_string();
        // Once the engine has deleted it, the container's processes are gone
        // and its bundle and storages can go. On this thread, as the create's
        // and the start's steps (against a hop to a blocking thread and back
        // the cycle measured a draw, stop 36).
        let (warnings, later, ns_parked, released) = blocking_here(move || {
            let (warnings, later) = held.engine.delete_leaving()?;
            let _ = std::fs::remove_dir_all(&held.bundle);
            // Parked before the storages go: a teardown closes it first.
            let ns = lock(&held.mount_ns).take();
            let ns_parked = ns.is_some();
            if let Some(fd) = ns {
                parked.park(fd);
            }
            Ok((
                warnings,
                later,
                ns_parked,
                storages.release(&owner).map_err(Error::from),
            ))
        })
        .await?;
        if ns_parked || later.is_some() {
            let parked = self.parked_ns.clone();
            let job: super::settling::Later = Box::new(move || {
                parked.close_all();
                later.map_or(Ok(()), |l| l())
            });
            self.settling
                .run(&self.log, format!("mount namespace and cgroup of container {id}"), job);
        }
        for w in &warnings {
            warn!(self.log, "poststop hook failed"; "container" => id, "error" => w);
        }
        let plugged = std::mem::take(&mut devices.plugged).len();
        drop(devices);
        lock(&self.containers).remove(id);
        self.changed.touch(id);
        self.unkeep(id, None, None);
        {
            let mut pod = lock(&self.pod);
            if pod.pidns_container.as_deref() == Some(id) {
                pod.pidns_container = None;
            }
        }
        info!(self.log, "container removed";
              "container" => id, "exit" => c.init.exited().map(|e| e.status()), "hotplugged_devices" => plugged);
        released
    }

    /// Runs `f` with the container's engine handle on a blocking thread.
    async fn on_engine<T: Send + 'static>(
        &self,
        id: &str,
        f: impl FnOnce(&dyn super::engine::EngineContainer) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let c = self.container(id)?;
        blocking(move || f(c.engine.as_ref())).await
    }

    /// Freezes every process of the container.
    pub(crate) async fn pause_container(&self, id: &str) -> Result<()> {
        self.on_engine(id, |e| e.pause()).await?;
        info!(self.log, "container paused"; "container" => id);
        Ok(())
    }

    /// Thaws a paused container.
    pub(crate) async fn resume_container(&self, id: &str) -> Result<()> {
        self.on_engine(id, |e| e.resume()).await?;
        info!(self.log, "container resumed"; "container" => id);
        Ok(())
    }

    /// Changes the container's resource limits; returns notes on what the host
    /// could not apply. Device rules, when given, replace the container's own
    /// (those of its spec); the devices every container may use, its spec's
    /// device nodes and its hot-plugged devices stay allowed.
    pub(crate) async fn update_container(self: &Arc<Self>, id: &str, resources: LinuxResources) -> Result<Vec<String>> {
        let id = id.to_string();
        self.detached(move |sb| async move { sb.update_container_task(&id, resources).await })
            .await
    }

    async fn update_container_task(&self, id: &str, mut resources: LinuxResources) -> Result<Vec<String>> {
        let c = self.container(id)?;
        let mut devices = c.devices.lock().await;
        // Under the lock a state write takes to read the rules.
        self.changed.touch(id);
        let new_rules = resources.devices().clone();
        if let Some(rules) = &new_rules {
            resources.set_devices(Some(devices.effective_rules(c.engine.spec(), Some(rules))));
        }
        let held = c.clone();
        let notes = blocking(move || held.engine.update(&resources)).await?;
        if new_rules.is_some() {
            devices.own_rules = new_rules;
        }
        Ok(notes)
    }

    /// The container's cgroup statistics.
    pub(crate) async fn container_stats(&self, id: &str) -> Result<rustjail::cgroups::Stats> {
        self.on_engine(id, |e| e.stats()).await
    }

    /// Pids of every process in the container.
    pub(crate) async fn container_pids(&self, id: &str) -> Result<Vec<i32>> {
        self.on_engine(id, |e| e.pids()).await
    }
}

/// Whether the spec names any hook: those are told the bundle and may read
/// its config.json, so it must be there before the init starts.
fn has_hooks(spec: &Spec) -> bool {
    let Some(h) = spec.hooks() else { return false };
    [
        h.prestart(),
        h.create_runtime(),
        h.create_container(),
        h.start_container(),
        h.poststart(),
        h.poststop(),
    ]
    .iter()
    .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
}

/// Writes the bundle's config.json from `spec`.
fn write_config(spec: &Spec, path: &std::path::Path) -> Result<()> {
    spec.save(path).map_err(|e| {
        let why = protocols::oci_convert::spec_error_text(&e);
        Error::sys(format!("write {}", path.display()), why)
    })
}
