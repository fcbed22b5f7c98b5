//! The real engine: rustjail, with every child of the agent reaped by the
//! agent's [`Reaper`] (hooks and helpers included), and `pivot_root` replaced
//! by `MS_MOVE` + `chroot` where the guest's root is an initramfs.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources, Process, Spec};
use tokio::sync::{mpsc, watch};

use super::engine::{Adopt, ContainerEngine, CreateSpec, Created, EngineContainer, EngineFacts, NsHolder, Spawned};
use super::error::{Error, Result};
use crate::device::node::{NodeError, NodeOutcome, NodeRequest};
use crate::reaper::{Exit, Reaper};

/// rustjail under the agent.
pub(crate) struct RustjailEngine {
    runtime: Arc<rustjail::Runtime>,
    /// Where the runtime keeps its files (exec FIFOs).
    root: std::path::PathBuf,
    reaper: Reaper,
    /// `pivot_root` cannot leave an initramfs: use MS_MOVE + chroot there.
    no_pivot: bool,
}

impl RustjailEngine {
    /// An engine keeping runtime files (exec FIFOs) under `root`. Must be
    /// called inside the tokio runtime (hooks and helpers are waited for
    /// through the reaper from blocking threads).
    pub(crate) fn new(root: &Path, reaper: Reaper) -> Result<RustjailEngine> {
        let mut runtime = rustjail::Runtime::new(root)?;
        runtime.set_child_waiter(child_waiter(reaper.clone()));
        // As kata-agent: a Kata host strips the `network` namespace (the VM is
        // the pod's), and sends its own AppArmor profile name, meaningless here.
        runtime.set_policy(rustjail::spec::Policy {
            caller_netns_is_the_sandbox: true,
            ignore_apparmor: true,
        });
        Ok(RustjailEngine {
            runtime: Arc::new(runtime),
            root: root.to_path_buf(),
            reaper,
            no_pivot: root_is_initramfs(),
        })
    }
}

/// Children rustjail starts in the agent's process (hooks, helpers) are
/// reaped by the reaper like every child: their statuses come from it.
/// Called on blocking threads only.
fn child_waiter(reaper: Reaper) -> rustjail::hooks::ChildWaiter {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |pid, timeout| {
        let mut rx = reaper.watch(pid);
        handle.block_on(async move {
            let done = async { rx.wait_for(|e| e.is_some()).await.ok().and_then(|e| *e) };
            let exit = match timeout {
                Some(t) => tokio::time::timeout(t, done).await.ok().flatten(),
                None => done.await,
            };
            exit.map(|e| match e {
                Exit::Code(c) => rustjail::hooks::HookExit::Code(c),
                Exit::Signal(s) => rustjail::hooks::HookExit::Signal(s),
            })
        })
    })
}

/// Whether `/` is an initramfs (ramfs or tmpfs), which `pivot_root` cannot leave.
fn root_is_initramfs() -> bool {
    match nix::sys::statfs::statfs("/") {
        // The type is `long` on glibc and `unsigned long` on musl.
        #[allow(clippy::unnecessary_cast)]
        Ok(s) => {
            let t = s.filesystem_type().0 as i64;
            // RAMFS_MAGIC (linux/magic.h; libc does not export it) or TMPFS_MAGIC.
            t == 0x8584_58f6 || t == libc::TMPFS_MAGIC as i64
        }
        Err(_) => false,
    }
}

struct Holder(rustjail::helper::Resident);

impl NsHolder for Holder {
    fn pid(&self) -> i32 {
        self.0.pid
    }

    fn channel(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.0.channel.as_fd())
    }
}

/// A holder a previous agent started; without the keeper's copy of its
/// channel it has already gone, and only its pid is known.
struct AdoptedHolder {
    pid: i32,
    _channel: Option<OwnedFd>,
}

impl NsHolder for AdoptedHolder {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn channel(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self._channel.as_ref().map(|c| c.as_fd())
    }
}

impl ContainerEngine for RustjailEngine {
    fn create(&self, req: CreateSpec) -> Result<Created> {
        let created = self.runtime.create(rustjail::CreateOptions {
            id: req.id,
            spec: req.spec,
            bundle: req.bundle,
            no_pivot: self.no_pivot,
            stdio: req.stdio,
            meanwhile: req.meanwhile,
        })?;
        Ok(Created {
            container: Box::new(RjContainer {
                runtime: self.runtime.clone(),
                c: created.container,
            }),
            terminal: created.terminal,
        })
    }

    fn spawn_ns_holder(&self, hostname: &str) -> Result<Box<dyn NsHolder>> {
        let r = super::shared_ns::spawn_holder(&self.runtime, hostname)?;
        Ok(Box::new(Holder(r)))
    }

    fn watch_exit(&self, pid: i32) -> watch::Receiver<Option<Exit>> {
        self.reaper.watch(pid)
    }

    fn on_exit(&self, hook: crate::reaper::ExitHook) {
        self.reaper.on_exit(hook)
    }

    fn signal(&self, pid: i32, signal: Option<Signal>) -> nix::Result<()> {
        nix::sys::signal::kill(Pid::from_raw(pid), signal)
    }

    fn handles_signal(&self, pid: i32, signal: Signal) -> bool {
        super::sigmask::handles(pid, signal)
    }

    fn adopt(&self, a: Adopt) -> Result<Box<dyn EngineContainer>> {
        // The cgroup follows from the spec and the agent's own cgroup, which a
        // restarted agent shares with the one before: recompute and compare.
        let cgroups_path = a.spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        // The cgroup mounts are read once (by the runtime): a restart takes
        // every container back at once, and reading mountinfo for each was
        // most of the time it took.
        let cgroup = self
            .runtime
            .cgroup(cgroups_path.as_deref(), &a.id)
            .map_err(|e| Error::Internal(format!("container {:?}: cgroup: {e}", a.id)))?;
        if cgroup.paths() != a.cgroup {
            return Err(Error::Internal(format!(
                "container {:?}: its cgroup was {:?}, this agent would use {:?}",
                a.id,
                a.cgroup,
                cgroup.paths()
            )));
        }
        let annotations = a.spec.annotations().clone().unwrap_or_default().into_iter().collect();
        let c = rustjail::Container {
            exec_fifo: rustjail::state::fifo_path(&self.root, &a.id),
            id: a.id,
            pid: a.pid,
            start_time: a.start_time,
            bundle: a.bundle,
            rootfs: a.rootfs,
            created: a.created,
            owner: nix::unistd::getuid().to_string(),
            annotations,
            cgroup,
            spec: a.spec,
        };
        Ok(Box::new(RjContainer {
            runtime: self.runtime.clone(),
            c,
        }))
    }

    fn adopt_ns_holder(&self, pid: i32, channel: Option<OwnedFd>) -> Box<dyn NsHolder> {
        Box::new(AdoptedHolder { pid, _channel: channel })
    }
}

/// A rustjail container and the runtime that made it.
struct RjContainer {
    runtime: Arc<rustjail::Runtime>,
    c: rustjail::Container,
}

impl EngineContainer for RjContainer {
    fn pid(&self) -> i32 {
        self.c.pid
    }

    fn spec(&self) -> &Spec {
        &self.c.spec
    }

    fn facts(&self) -> EngineFacts {
        EngineFacts {
            pid: self.c.pid,
            start_time: self.c.start_time,
            rootfs: self.c.rootfs.clone(),
            created: self.c.created.clone(),
            cgroup: self.c.cgroup.paths(),
        }
    }

    fn start_time(&self) -> u64 {
        self.c.start_time
    }

    fn status(&self) -> rustjail::Status {
        self.c.status()
    }

    fn start(&self) -> Result<Vec<String>> {
        Ok(self.runtime.start(&self.c)?)
    }

    fn exec(&self, process: Process, stdio: Option<[OwnedFd; 3]>) -> Result<Spawned> {
        let s = self.runtime.exec(&self.c, rustjail::ExecOptions { process, stdio })?;
        Ok(Spawned {
            pid: s.pid.as_raw(),
            terminal: s.terminal,
        })
    }

    fn pause(&self) -> Result<()> {
        Ok(self.runtime.pause(&self.c)?)
    }

    fn resume(&self) -> Result<()> {
        Ok(self.runtime.resume(&self.c)?)
    }

    fn update(&self, resources: &LinuxResources) -> Result<Vec<String>> {
        Ok(self.runtime.update(&self.c, resources)?)
    }

    fn set_device_rules(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        self.c
            .cgroup
            .update_devices(rules)
            .map_err(|e| Error::Internal(format!("device cgroup of container {:?}: {e}", self.c.id)))
    }

    fn stats(&self) -> Result<rustjail::cgroups::Stats> {
        Ok(self.runtime.stats(&self.c)?)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        Ok(self.runtime.pids(&self.c)?)
    }

    fn kill_all(&self, signal: Signal) -> Result<usize> {
        let cg = &self.c.cgroup;
        let what = |e: &dyn std::fmt::Display| Error::Internal(format!("container {:?}: {e}", self.c.id));
        // An empty cgroup needs no freeze: the usual case when the init of a
        // PID namespace of its own has exited (the kernel ended the rest).
        if cg.pids().map_err(|e| what(&e))?.is_empty() {
            return Ok(0);
        }
        // Frozen, nothing forks between listing and signalling; a fatal signal
        // is delivered once thawed (cgroup v1) or at once (v2).
        let frozen = cg.freeze();
        let result = cg.pids().map_err(|e| what(&e)).and_then(|pids| {
            let mut n = 0;
            for p in pids {
                match nix::sys::signal::kill(Pid::from_raw(p), signal) {
                    Ok(()) => n += 1,
                    // Gone between listing and signalling.
                    Err(nix::Error::ESRCH) => {}
                    Err(e) => return Err(what(&format!("kill pid {p}: {e}"))),
                }
            }
            Ok(n)
        });
        if frozen.is_ok() {
            cg.thaw().map_err(|e| what(&e))?;
        }
        result
    }

    fn init_ends_the_rest(&self) -> bool {
        // A PID namespace of its own, not one given by path (the sandbox's,
        // shared with other containers).
        self.c
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter()
                    .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none())
            })
    }

    fn delete(&self) -> Result<Vec<String>> {
        Ok(self.runtime.delete(&self.c, true)?)
    }

    fn delete_leaving(&self) -> Result<(Vec<String>, Option<super::settling::Later>)> {
        let (warnings, removal) = self.runtime.delete_but_cgroup(&self.c, true)?;
        Ok((
            warnings,
            Some(Box::new(move || removal.finish().map_err(|e| e.to_string()))),
        ))
    }

    fn follow_cpus(&self, online: &str) -> Result<Vec<std::path::PathBuf>> {
        super::cpuset::follow_online(&self.c.cgroup.paths(), &self.c.spec, online)
    }

    fn device_node(&self, req: &NodeRequest) -> std::result::Result<NodeOutcome, NodeError> {
        crate::device::node::run(&self.runtime, &self.c, req)
    }

    fn watch_oom(&self, id: &str, events: mpsc::UnboundedSender<String>) -> Option<tokio::task::JoinHandle<()>> {
        Some(super::oom::watch(id.to_string(), self.c.cgroup.clone(), events))
    }
}
