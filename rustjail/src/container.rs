//! The runtime side of the lifecycle: create, start, exec, kill, delete,
//! pause, resume, update, with runc's semantics, on [`Container`] values the
//! caller holds (the spec stays in memory; nothing is read back from disk).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Process, Spec};

use crate::cgroups::Manager;
use crate::error::{io, sys, Error, Result};
use crate::helper::{CONTAINER_MODE, MODE_ENV, SYNC_FD};
use crate::hooks::{self, HookState};
use crate::spawn::{spawn, spawn_with, SealedBinary, SpawnSpec};
use crate::state::{self, Container, Status};
use crate::sync::{self, ExecTarget, FromInit, Go, InitConfig};

/// How long `start` waits for the init to take the FIFO before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A directory for the containers' runtime files (the exec FIFO), and the
/// binary their processes run from.
pub struct Runtime {
    root: PathBuf,
    /// Made on first use: only create, exec and helpers start processes.
    binary: std::sync::OnceLock<SealedBinary>,
    /// Collects statuses of hooks and helpers when the embedding program reaps
    /// children itself.
    waiter: Option<hooks::ChildWaiter>,
    /// How specs are checked (see [`crate::spec::Policy`]).
    policy: crate::spec::Policy,
    /// The cgroup mounts and the caller's own cgroups, read at the first
    /// create: mountinfo and /proc/self/cgroup once, not for every container.
    cgroup_view: std::sync::OnceLock<(crate::cgroups::Hierarchies, Vec<crate::cgroups::OwnCgroup>)>,
    /// Cgroups of deleted containers still being removed.
    removing: std::sync::Arc<crate::removing::Removing>,
}

/// Options of `create`.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Container id.
    pub id: String,
    /// The runtime spec. A relative `root.path` is taken from `bundle`.
    pub spec: Spec,
    /// Bundle directory (for hooks' state, and a relative `root.path`).
    pub bundle: PathBuf,
    /// MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// stdin, stdout, stderr of the container's process; `None` inherits the
    /// caller's. Closed in the caller once the init has them. Ignored with a
    /// terminal (`process.terminal`): then [`Created::terminal`] is its master.
    pub stdio: Option<[OwnedFd; 3]>,
    /// Work of the caller's, run on the calling thread while the init builds
    /// its root (see [`Meanwhile`]).
    pub meanwhile: Option<Meanwhile>,
}

/// What [`Meanwhile`] is told: the init as it will stay.
#[derive(Debug)]
pub struct InitStarted<'a> {
    /// Its pid (final: after any fork into a joined PID namespace).
    pub pid: i32,
    /// Its start time (clock ticks since boot), as [`Container::start_time`] will hold it.
    pub start_time: u64,
    /// The spec as the container runs it, as [`Container::spec`] will hold it.
    pub spec: &'a Spec,
    /// `spec` as JSON (serde_json's compact form), as the init was sent it.
    pub spec_json: &'a serde_json::value::RawValue,
}

/// Work a caller of `create` would do once it returns (set up the process's
/// streams, serialise the spec), run instead while the init builds its root
/// and the caller would only wait. Run at most once, before a successful
/// `create` returns; a create that fails may have run it, or not.
pub struct Meanwhile(pub Box<dyn FnOnce(InitStarted<'_>) + Send>);

impl std::fmt::Debug for Meanwhile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meanwhile")
    }
}

impl Meanwhile {
    /// Runs it for the init `pid`, which started at `start_time`.
    fn run(self, pid: Pid, start_time: u64, spec: &Spec, spec_json: &serde_json::value::RawValue) {
        (self.0)(InitStarted {
            pid: pid.as_raw(),
            start_time,
            spec,
            spec_json,
        });
    }
}

/// The start time of the init `pid`, which has reported (and so exists).
fn read_start_time(pid: Pid) -> Result<u64> {
    state::proc_start_time(pid.as_raw())
        .map(|(t, _)| t)
        .ok_or_else(|| Error::Init(format!("init pid {pid} vanished after setup")))
}

/// A container just created.
#[derive(Debug)]
pub struct Created {
    /// The container, for every later operation.
    pub container: Container,
    /// The master of the process's terminal, when `process.terminal` is set.
    pub terminal: Option<OwnedFd>,
}

/// Options of `exec`.
#[derive(Debug, Default)]
pub struct ExecOptions {
    /// The process to start.
    pub process: Process,
    /// stdin, stdout, stderr of the process; `None` inherits the caller's.
    /// Closed in the caller once the process has them. Ignored with a
    /// terminal (`process.terminal`): then [`Spawned::terminal`] is its master.
    pub stdio: Option<[OwnedFd; 3]>,
}

/// A process started in a container.
#[derive(Debug)]
pub struct Spawned {
    /// Its host pid; it is the caller's child.
    pub pid: Pid,
    /// The master of its terminal, when `process.terminal` is set.
    pub terminal: Option<OwnedFd>,
}

fn wrong_state(c: &Container, status: Status, why: &'static str) -> Error {
    Error::WrongState {
        id: c.id.clone(),
        status: status.to_string(),
        why,
    }
}

impl Runtime {
    /// A runtime keeping runtime files under `root`, starting processes from a
    /// sealed copy of the running executable (which must call
    /// [`crate::helper::dispatch`] with [`crate::helper::Mode::CONTAINER`] first).
    pub fn new(root: &Path) -> Result<Runtime> {
        std::fs::create_dir_all(root).map_err(io("mkdir", root.display()))?;
        Ok(Runtime {
            root: root.to_path_buf(),
            binary: std::sync::OnceLock::new(),
            waiter: None,
            policy: crate::spec::Policy::default(),
            cgroup_view: std::sync::OnceLock::new(),
            removing: Default::default(),
        })
    }

    /// A runtime whose processes run from a sealed copy of `binary`, a program
    /// that dispatches rustjail's modes first (e.g. the `rustjail` command).
    pub fn with_binary(root: &Path, binary: &Path) -> Result<Runtime> {
        let rt = Runtime::new(root)?;
        let _ = rt.binary.set(SealedBinary::copy_of(binary)?);
        Ok(rt)
    }

    /// The directory of runtime files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lets hooks and helpers started by this runtime report through `waiter`
    /// rather than `waitpid`.
    pub fn set_child_waiter(&mut self, waiter: hooks::ChildWaiter) {
        self.waiter = Some(waiter);
    }

    /// Relaxes spec checks the embedding program knows better about (a Kata
    /// guest agent: see [`crate::spec::Policy`]).
    pub fn set_policy(&mut self, policy: crate::spec::Policy) {
        self.policy = policy;
    }

    pub(crate) fn binary(&self) -> Result<&SealedBinary> {
        if let Some(b) = self.binary.get() {
            return Ok(b);
        }
        let b = SealedBinary::current_exe()?;
        // A concurrent caller may have set it first; either copy is as good.
        let _ = self.binary.set(b);
        Ok(self.binary.get().expect("set above"))
    }

    /// The cgroup of a container with `linux.cgroupsPath` `cgroups_path`, on
    /// the cgroup mounts and own cgroups this runtime read first (an agent's
    /// do not change under it; a concurrent first caller may read them too).
    pub fn cgroup(&self, cgroups_path: Option<&Path>, id: &str) -> Result<Manager> {
        let (h, own) = match self.cgroup_view.get() {
            Some(v) => v,
            None => {
                let host = crate::cgroups::SysRoot::host();
                let view = (
                    crate::cgroups::Hierarchies::discover(&host)?,
                    crate::cgroups::own_cgroups(&host)?,
                );
                let _ = self.cgroup_view.set(view);
                self.cgroup_view.get().expect("set above")
            }
        };
        Ok(Manager::on(h, own, cgroups_path, id)?)
    }

    /// Collects the exit of a child this runtime started.
    pub(crate) fn reap(&self, pid: Pid) {
        match &self.waiter {
            Some(w) => {
                let _ = w(pid.as_raw(), Some(Duration::from_secs(10)));
            }
            None => {
                let _ = nix::sys::wait::waitpid(pid, None);
            }
        }
    }

    /// Creates the container: its init is set up and waits for `start`. The
    /// spec is checked first ([`crate::spec::check`], with this runtime's
    /// policy), whoever made it.
    pub fn create(&self, mut opts: CreateOptions) -> Result<Created> {
        state::validate_id(&opts.id)?;
        crate::spec::check(&mut opts.spec, self.policy)?;
        let root_path = opts
            .spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| Error::Spec("no root in spec".into()))?;
        let rootfs = opts.bundle.join(root_path);
        let rootfs = rootfs.canonicalize().map_err(io("resolve rootfs", rootfs.display()))?;
        let flags = clone_flags(&opts.spec)?;
        let dir = state::dir(&self.root, &opts.id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Error::Exists(opts.id.clone())),
            Err(e) => return Err(io("mkdir", dir.display())(e)),
        }
        let result = self.create_in(opts, rootfs, flags);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn create_in(&self, opts: CreateOptions, rootfs: PathBuf, flags: CloneFlags) -> Result<Created> {
        let CreateOptions {
            id,
            spec,
            bundle,
            no_pivot,
            stdio,
            mut meanwhile,
        } = opts;
        let fifo = state::fifo_path(&self.root, &id);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622)).map_err(sys("mkfifo", fifo.display()))?;
        // Past the umask: the init may run as another uid (a user namespace).
        nix::sys::stat::fchmodat(
            None,
            &fifo,
            Mode::from_bits_truncate(0o622),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(sys("chmod", fifo.display()))?;
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
        let (mut ours, theirs) = UnixStream::pair().map_err(io("socketpair", "init sync"))?;
        let maps = |pid: Pid| -> Result<()> {
            let linux = crate::spec::linux_of(&spec);
            write_id_map(pid, "uid_map", linux.uid_mappings().as_deref().unwrap_or(&[]))?;
            write_id_map(pid, "gid_map", linux.gid_mappings().as_deref().unwrap_or(&[]))
        };
        let userns = flags.contains(CloneFlags::CLONE_NEWUSER);
        let linux = crate::spec::linux_of(&spec);
        let cgroup = self.cgroup(linux.cgroups_path().as_deref(), &id)?;
        // A container deleted just before may have left this cgroup.
        self.removing.wait_for(&cgroup);
        let resources = crate::devices::effective_resources(&spec);
        // A directory that was there may hold another container's processes.
        let make_cgroup = || -> Result<DestroyOnDrop> {
            if !cgroup.create_new(&resources)? {
                let busy = cgroup.pids()?;
                if !busy.is_empty() {
                    return Err(Error::Spec(format!(
                        "cgroup {:?} already holds processes {busy:?}: another container uses this cgroupsPath",
                        cgroup.paths().values().next()
                    )));
                }
            }
            Ok(DestroyOnDrop(Some(cgroup.clone())))
        };
        // v2: the cgroup's directory is made first and the init is created in
        // it (clone3 CLONE_INTO_CGROUP). v1: it is made while the init starts
        // (on another CPU), and the init joins it before it gets its config.
        // Either way its cgroup namespace, and everything it forks, start there.
        let mut cg_guard = None;
        let v2_dir = cgroup.v2_dir_fd_after(|| make_cgroup().map(|g| cg_guard = Some(g)))?;
        let binary = self.binary()?;
        let spawn_spec = |cgroup_fd: Option<RawFd>| SpawnSpec {
            binary,
            args: container_args("init"),
            env: container_env(),
            flags,
            fds: with_stdio(vec![(theirs.as_raw_fd(), SYNC_FD)], stdio.as_ref()),
            cgroup: cgroup_fd,
            dispatched: true,
        };
        let before_exec: Option<crate::spawn::BeforeExec<'_>> = if userns { Some(&maps) } else { None };
        let mut in_cgroup = v2_dir.is_some();
        let pid = match spawn_with(&spawn_spec(v2_dir.as_ref().map(|f| f.as_raw_fd())), before_exec) {
            Err(e) if v2_dir.is_some() && crate::spawn::clone3_unsupported(&e) => {
                in_cgroup = false;
                spawn_with(&spawn_spec(None), before_exec)?
            }
            other => other?,
        };
        // The init has its copies now.
        drop((theirs, stdio, v2_dir));
        let guard = KillOnDrop(Some(pid));
        let annotations = spec.annotations().clone().unwrap_or_default();
        let hooks = spec.hooks().clone().unwrap_or_default();
        #[allow(deprecated)]
        let prestart = hooks.prestart().clone().unwrap_or_default();
        let create_runtime = hooks.create_runtime().clone().unwrap_or_default();
        // Without them the init does not stop after its mounts: a round trip
        // (two wake-ups of each side) less.
        let runtime_hooks = !prestart.is_empty() || !create_runtime.is_empty();
        // The cgroup is made and configured while the init builds its root (on
        // the other CPU), unless something in the init needs it from the start.
        let overlap = !userns && !needs_cgroup_first(&spec, runtime_hooks);
        let mut finish_cgroup = || -> Result<DestroyOnDrop> {
            let g = match cg_guard.take() {
                Some(g) => g,
                None => make_cgroup()?,
            };
            // On v1 no process of the container is in it yet: the init
            // joins once this is done.
            cgroup.apply_unjoined(&resources)?;
            Ok(g)
        };
        let early_guard = if overlap { None } else { Some(finish_cgroup()?) };
        // Otherwise the init moves itself, which is cheaper on v1 (no RCU grace
        // period); in a new user namespace it may not write the host's cgroup files.
        let join_cgroup = if in_cgroup {
            None
        } else if userns {
            cgroup.add_task(pid.as_raw())?;
            None
        } else {
            Some(cgroup.clone())
        };
        let cfg = InitConfig {
            id: id.clone(),
            spec: Box::new(spec),
            rootfs: rootfs.clone(),
            no_pivot,
            exec_fifo: Some(fifo.clone()),
            exec: None,
            console: terminal,
            bundle: bundle.clone(),
            host_pid: pid.as_raw(),
            cgroup_pending: overlap && join_cgroup.is_some(),
            join_cgroup,
            runtime_hooks,
        };
        // Serialised once: the caller keeps this text (Meanwhile), the init reads it.
        let spec_json = serde_json::value::to_raw_value(&cfg.spec)
            .map_err(|e| Error::Init(format!("encode the spec of {id}: {e}")))?;
        sync::send_init_config(&mut ours, &cfg, &spec_json)?;
        let overlapped = early_guard.is_none();
        let made = match early_guard {
            Some(g) => Ok(g),
            // Beside the init, which the send has just placed: off its CPU.
            None => {
                let _away = crate::overlap::away_if_sharing(pid);
                finish_cgroup()
            }
        };
        let spec = *cfg.spec;
        let mut pid = pid;
        let mut init = KillOnDrop(Some(pid));
        guard.defuse();
        let cg_guard = made?;
        if overlapped && cfg.cgroup_pending {
            // The init joins through descriptors opened here, beside it. An
            // init that failed meanwhile has closed its end: its report is
            // read below.
            let files = {
                let _away = crate::overlap::away_if_sharing(pid);
                cgroup.open_join_files()?
            };
            let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
            let _ = sync::send_fds(&ours, &raw);
        }
        // Its pid is final unless it forks into a joined PID or a time
        // namespace. An init already gone has failed: its report, read
        // below, says why.
        let mut start_time = None;
        if !crate::init::forks_into_namespaces(&spec) {
            if let Some((t, _)) = state::proc_start_time(pid.as_raw()) {
                if let Some(m) = meanwhile.take() {
                    m.run(pid, t, &spec, &spec_json);
                }
                start_time = Some(t);
            }
        }
        let mut master = None;
        let mut msg = recv_off_cpu_of(pid, &mut ours, &mut master)?;
        if let Some(FromInit::Pid(p)) = msg {
            // Read again below, for the child (and `meanwhile` run for it).
            start_time = None;
            // The init joined an existing PID namespace and forked into it; the
            // child (ours too, by CLONE_PARENT) is the container's init now and
            // the first process exits: reap it.
            self.reap(pid);
            init.defuse();
            pid = Pid::from_raw(p);
            init = KillOnDrop(Some(pid));
            msg = recv_off_cpu_of(pid, &mut ours, &mut master)?;
        }
        if runtime_hooks {
            match msg {
                Some(FromInit::Mounted) => {}
                Some(FromInit::Failed(msg)) => return Err(Error::Init(msg)),
                _ => return Err(Error::Init("init exited before its mounts were done".into())),
            }
            let hook_state = HookState {
                oci_version: spec.version().clone(),
                id: id.clone(),
                status: "creating".into(),
                pid: pid.as_raw(),
                bundle: bundle.display().to_string(),
                annotations: annotations.clone(),
            };
            hooks::run_with("prestart", &prestart, &hook_state, self.waiter.as_ref())?;
            hooks::run_with("createRuntime", &create_runtime, &hook_state, self.waiter.as_ref())?;
            sync::send(&mut ours, &Go::Continue)?;
            msg = recv_off_cpu_of(pid, &mut ours, &mut master)?;
        }
        match msg {
            Some(FromInit::Created) => {}
            Some(FromInit::Failed(msg)) => return Err(Error::Init(msg)),
            Some(FromInit::Pid(_) | FromInit::Console | FromInit::Mounted) | None => {
                return Err(Error::Init("init exited before reporting".into()))
            }
        }
        if terminal && master.is_none() {
            return Err(Error::Init("the init set up no terminal".into()));
        }
        let start_time = match start_time {
            Some(t) => t,
            None => read_start_time(pid)?,
        };
        if let Some(m) = meanwhile {
            m.run(pid, start_time, &spec, &spec_json);
        }
        let container = Container {
            id,
            pid: pid.as_raw(),
            start_time,
            bundle,
            rootfs,
            created: state::now_rfc3339(),
            owner: nix::unistd::getuid().to_string(),
            annotations,
            cgroup,
            exec_fifo: fifo,
            spec,
        };
        init.defuse();
        cg_guard.defuse();
        Ok(Created {
            container,
            terminal: master,
        })
    }

    /// Lets the init run the user's program, then runs the poststart hooks;
    /// their failures are returned as warnings (the container keeps running).
    pub fn start(&self, c: &Container) -> Result<Vec<String>> {
        let status = c.status();
        if status != Status::Created {
            return Err(wrong_state(c, status, "only a created container can start"));
        }
        if c.spec.process().is_none() {
            return Err(Error::Spec(format!(
                "container {} has no process: process is required for start",
                c.id
            )));
        }
        let fifo = &c.exec_fifo;
        crate::exec_fifo::start(fifo, &c.id, Pid::from_raw(c.pid), START_TIMEOUT, || {
            c.status() != Status::Stopped
        })?;
        std::fs::remove_file(fifo).map_err(io("unlink", fifo.display()))?;
        let hooks = c.spec.hooks().clone().unwrap_or_default();
        Ok(self.hooks_as_warnings("poststart", hooks.poststart(), c, "running"))
    }

    /// Runs hooks whose failure must not undo the operation (poststart,
    /// poststop); a failure becomes a warning.
    fn hooks_as_warnings(
        &self,
        kind: &str,
        list: &Option<Vec<oci_spec::runtime::Hook>>,
        c: &Container,
        status: &str,
    ) -> Vec<String> {
        let state = HookState {
            oci_version: c.spec.version().clone(),
            id: c.id.clone(),
            status: status.into(),
            pid: if status == "stopped" { 0 } else { c.pid },
            bundle: c.bundle.display().to_string(),
            annotations: c.annotations.clone(),
        };
        hooks::run_all(kind, list.as_deref().unwrap_or(&[]), &state, self.waiter.as_ref())
    }

    /// Starts `process` inside the running (or created) container; returns its
    /// host pid (the process is a child of the calling process) and, with
    /// `process.terminal`, its terminal's master.
    pub fn exec(&self, c: &Container, opts: ExecOptions) -> Result<Spawned> {
        let ExecOptions { process, stdio } = opts;
        let status = c.status();
        if !matches!(status, Status::Created | Status::Running) {
            return Err(wrong_state(c, status, "exec needs a created or running container"));
        }
        let terminal = process.terminal().unwrap_or(false);
        let (mut ours, theirs) = UnixStream::pair().map_err(io("socketpair", "exec sync"))?;
        let binary = self.binary()?;
        let spawn_spec = |cgroup_fd: Option<RawFd>| SpawnSpec {
            binary,
            args: container_args("exec"),
            env: container_env(),
            flags: CloneFlags::empty(),
            fds: with_stdio(vec![(theirs.as_raw_fd(), SYNC_FD)], stdio.as_ref()),
            cgroup: cgroup_fd,
            dispatched: true,
        };
        // v2: the helper, and so the process it forks, starts in the cgroup.
        let v2_dir = c.cgroup.v2_dir_fd()?;
        let mut in_cgroup = v2_dir.is_some();
        let helper = match spawn(&spawn_spec(v2_dir.as_ref().map(|f| f.as_raw_fd()))) {
            Err(e) if v2_dir.is_some() && crate::spawn::clone3_unsupported(&e) => {
                in_cgroup = false;
                spawn(&spawn_spec(None))?
            }
            other => other?,
        };
        drop((theirs, stdio, v2_dir));
        let _reap = ReapOnDrop(self, Some(helper));
        let cfg = InitConfig {
            id: c.id.clone(),
            // The exec'd process takes only the container's seccomp profile from its spec.
            spec: Box::new(exec_spec(&c.spec)),
            rootfs: c.rootfs.clone(),
            no_pivot: false,
            exec_fifo: None,
            exec: Some(ExecTarget { pid: c.pid, process }),
            console: terminal,
            bundle: c.bundle.clone(),
            host_pid: c.pid,
            join_cgroup: None,
            cgroup_pending: false,
            runtime_hooks: false,
        };
        sync::send(&mut ours, &cfg)?;
        let pid = match sync::recv::<FromInit>(&mut ours)? {
            Some(FromInit::Pid(p)) => Pid::from_raw(p),
            Some(FromInit::Failed(msg)) => return Err(Error::Init(msg)),
            Some(FromInit::Created | FromInit::Console | FromInit::Mounted) | None => {
                return Err(Error::Init("exec helper exited before reporting".into()))
            }
        };
        let guard = KillOnDrop(Some(pid));
        if !in_cgroup {
            c.cgroup.add_task(pid.as_raw())?;
        }
        sync::send(&mut ours, &Go::Continue)?;
        let mut master = None;
        match recv_keeping_console(&mut ours, &mut master)? {
            // The socket closes at execve: the process runs.
            None => {}
            Some(FromInit::Failed(msg)) => return Err(Error::Init(msg)),
            Some(other) => return Err(Error::Init(format!("unexpected message from exec: {other:?}"))),
        }
        if terminal && master.is_none() {
            return Err(Error::Init("exec set up no terminal".into()));
        }
        guard.defuse();
        Ok(Spawned { pid, terminal: master })
    }

    /// Sends `sig` to the init.
    pub fn kill(&self, c: &Container, sig: Signal) -> Result<()> {
        let status = c.status();
        if status == Status::Stopped {
            return Err(wrong_state(c, status, "cannot signal a stopped container"));
        }
        nix::sys::signal::kill(Pid::from_raw(c.pid), sig).map_err(sys("kill", format_args!("pid {} ({})", c.pid, c.id)))
    }

    /// Removes a stopped container (with `force`, kills it first), then runs
    /// the poststop hooks; their failures are returned as warnings.
    pub fn delete(&self, c: &Container, force: bool) -> Result<Vec<String>> {
        self.delete_with(c, force, true)
    }

    /// Like [`Runtime::delete`], but the container's cgroup, emptied, is left
    /// to the caller to remove with the handle returned (for example after it
    /// has answered); until then a create with a cgroup that shares one of
    /// its directories waits.
    pub fn delete_but_cgroup(
        &self,
        c: &Container,
        force: bool,
    ) -> Result<(Vec<String>, crate::removing::CgroupRemoval)> {
        let warnings = self.delete_with(c, force, false)?;
        Ok((
            warnings,
            crate::removing::CgroupRemoval::new(c.cgroup.clone(), self.removing.clone()),
        ))
    }

    fn delete_with(&self, c: &Container, force: bool, cgroup_too: bool) -> Result<Vec<String>> {
        let status = c.status();
        if status != Status::Stopped {
            if !force {
                return Err(wrong_state(c, status, "stop it first or use --force"));
            }
            let _ = nix::sys::signal::kill(Pid::from_raw(c.pid), Signal::SIGKILL);
            if status == Status::Paused {
                // A frozen process gets its SIGKILL only once thawed.
                c.cgroup.thaw()?;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.status() != Status::Stopped {
                if Instant::now() > deadline {
                    return Err(Error::Init(format!(
                        "container {} (pid {}) survived SIGKILL for 5s",
                        c.id, c.pid
                    )));
                }
                // Reap it if it is our child (run, or a library user).
                let _ = nix::sys::wait::waitpid(Pid::from_raw(c.pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Processes exec'd into a container without its own PID namespace can
        // outlive the init.
        kill_all_in(&c.cgroup);
        if cgroup_too {
            c.cgroup.destroy()?;
        }
        let dir = state::dir(&self.root, &c.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("rm -r", dir.display())(e)),
        }
        let hooks = c.spec.hooks().clone().unwrap_or_default();
        Ok(self.hooks_as_warnings("poststop", hooks.poststop(), c, "stopped"))
    }

    /// Freezes every process of a running container.
    pub fn pause(&self, c: &Container) -> Result<()> {
        let status = c.status();
        if status != Status::Running {
            return Err(wrong_state(c, status, "only a running container can pause"));
        }
        Ok(c.cgroup.freeze()?)
    }

    /// Thaws a paused container.
    pub fn resume(&self, c: &Container) -> Result<()> {
        let status = c.status();
        if status != Status::Paused {
            return Err(wrong_state(c, status, "only a paused container can resume"));
        }
        Ok(c.cgroup.thaw()?)
    }

    /// Host pids of every process in the container's cgroup.
    pub fn pids(&self, c: &Container) -> Result<Vec<i32>> {
        Ok(c.cgroup.pids()?)
    }

    /// Sends `sig` to every process in the container (`kill --all`).
    pub fn kill_all(&self, c: &Container, sig: Signal) -> Result<()> {
        let status = c.status();
        if status == Status::Stopped {
            return Err(wrong_state(c, status, "cannot signal a stopped container"));
        }
        for p in c.cgroup.pids()? {
            // A process may exit between listing and signalling.
            match nix::sys::signal::kill(Pid::from_raw(p), sig) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => return Err(sys("kill", format_args!("pid {p} ({})", c.id))(e)),
            }
        }
        Ok(())
    }

    /// Changes the resource limits of a container; returns notes about
    /// settings the host could not apply.
    pub fn update(&self, c: &Container, resources: &oci_spec::runtime::LinuxResources) -> Result<Vec<String>> {
        let status = c.status();
        if status == Status::Stopped {
            return Err(wrong_state(c, status, "cannot update a stopped container"));
        }
        Ok(c.cgroup.apply(resources)?)
    }

    /// The cgroup statistics of a container.
    pub fn stats(&self, c: &Container) -> Result<crate::cgroups::Stats> {
        Ok(c.cgroup.stats()?)
    }

    /// Reads the command line's record of container `id`.
    pub fn load(&self, id: &str) -> Result<Container> {
        state::validate_id(id)?;
        Container::load(&self.root, id)
    }

    /// Force-deletes every container recorded under the root, whatever its
    /// state (to clean up after a runtime user that died); returns the ids that
    /// could not be deleted, with why.
    pub fn delete_all(&self) -> Vec<(String, Error)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                let deleted = self.load(&id).and_then(|c| self.delete(&c, true));
                deleted.err().map(|err| (id, err))
            })
            .collect()
    }

    /// Every container recorded under the root.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root).map_err(io("readdir", self.root.display()))? {
            let e = e.map_err(io("readdir", self.root.display()))?;
            if let Some(id) = e.file_name().to_str() {
                if let Ok(c) = self.load(id) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

fn container_args(what: &str) -> Vec<CString> {
    vec![c"rustjail".into(), CString::new(what).expect("no NUL")]
}

fn container_env() -> Vec<CString> {
    vec![CString::new(format!("{MODE_ENV}={CONTAINER_MODE}")).expect("no NUL")]
}

/// The part of a container's spec an exec'd process uses: its seccomp profile.
fn exec_spec(spec: &Spec) -> Spec {
    let mut linux = oci_spec::runtime::Linux::default();
    linux.set_seccomp(spec.linux().as_ref().and_then(|l| l.seccomp().clone()));
    let mut s = Spec::default();
    s.set_linux(Some(linux));
    s.set_mounts(None);
    s.set_process(None);
    s.set_root(None);
    s.set_hooks(None);
    s
}

/// Adds `stdio` as the child's fds 0, 1 and 2.
fn with_stdio(mut fds: Vec<(RawFd, RawFd)>, stdio: Option<&[OwnedFd; 3]>) -> Vec<(RawFd, RawFd)> {
    if let Some(s) = stdio {
        fds.extend(s.iter().enumerate().map(|(i, fd)| (fd.as_raw_fd(), i as RawFd)));
    }
    fds
}

/// Whether the init must be in its cgroup before it does anything: runtime
/// or createContainer hooks (their processes start in it), a new cgroup
/// namespace (rooted where the init is when it unshares), or a fork into a
/// PID or time namespace (the child would start outside). Otherwise the
/// runtime makes the cgroup while the init builds the root.
fn needs_cgroup_first(spec: &Spec, runtime_hooks: bool) -> bool {
    let create_hooks = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().as_ref())
        .is_some_and(|h| !h.is_empty());
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let forks_or_roots = namespaces.iter().any(|n| match n.typ() {
        LinuxNamespaceType::Cgroup => n.path().is_none(),
        LinuxNamespaceType::Time => true,
        LinuxNamespaceType::Pid => n.path().is_some(),
        _ => false,
    });
    runtime_hooks || create_hooks || forks_or_roots
}

/// Namespaces created with the init (joined ones are entered by the init).
fn clone_flags(spec: &Spec) -> Result<CloneFlags> {
    let mut flags = CloneFlags::empty();
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    // A time namespace only takes children (and clone(2) cannot make one): the
    // init unshares it, together with a new PID namespace, and forks.
    let late_pid = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none());
    for n in namespaces {
        if n.path().is_some() {
            continue;
        }
        flags |= match n.typ() {
            // Unshared by the init once it is in its cgroup, so the namespace is rooted there.
            LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time => continue,
            LinuxNamespaceType::Pid if late_pid => continue,
            t => CloneFlags::from_bits_truncate(t as i32),
        };
    }
    Ok(flags)
}

fn write_id_map(pid: Pid, file: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    let body: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, body).map_err(io("write", path))
}

/// Kills what is in a half-created container's cgroup and removes it, unless
/// defused. It drops before [`KillOnDrop`] (declared later), which then reaps.
struct DestroyOnDrop(Option<Manager>);

impl DestroyOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

/// SIGKILL to every process in `cg`.
fn kill_all_in(cg: &Manager) {
    for p in cg.pids().unwrap_or_default() {
        let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
    }
}

impl Drop for DestroyOnDrop {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            kill_all_in(&m);
            let _ = m.destroy();
        }
    }
}

/// Kills and reaps a half-created init unless defused.
struct KillOnDrop(Option<Pid>);

impl KillOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

/// Kills (if still there) and reaps a helper, through the runtime's waiter.
struct ReapOnDrop<'a>(&'a Runtime, Option<Pid>);

impl Drop for ReapOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.1 {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            self.0.reap(pid);
        }
    }
}

/// [`recv_keeping_console`] from the init `pid`, this thread kept off its CPU
/// meanwhile. Why: the init's reading of its config and descriptors wakes
/// this thread (a unix socket wakes both ends), which lands it on the init's
/// CPU; the report then wakes it there again, behind the init's last steps
/// (credentials, the exec FIFO: ~80 µs median by `sched_switch` tracing)
/// while the other CPU sits idle. Off it, this thread answers meanwhile.
fn recv_off_cpu_of(pid: Pid, sock: &mut UnixStream, master: &mut Option<OwnedFd>) -> Result<Option<FromInit>> {
    let _away = crate::overlap::away_from(pid);
    recv_keeping_console(sock, master)
}

/// Receives the next message from an init; a pty master on the way is kept
/// in `master` for the caller.
fn recv_keeping_console(sock: &mut UnixStream, master: &mut Option<OwnedFd>) -> Result<Option<FromInit>> {
    loop {
        match sync::recv::<FromInit>(sock)? {
            Some(FromInit::Console) => *master = Some(sync::recv_fd(sock)?),
            other => return Ok(other),
        }
    }
}
