//! The runtime side of the lifecycle: create, start, state, kill, delete, list,
//! with runc's semantics.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
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
use crate::hooks::{self, HookState};
use crate::init::{INIT_ENV, SYNC_FD};
use crate::spawn::{spawn, spawn_with, SealedBinary, SpawnSpec};
use crate::state::{self, State, Status};
use crate::sync::{self, ExecTarget, FromInit, Go, InitConfig};

/// How long `start` waits for the init to take the FIFO before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A state directory of containers, and the binary their inits run from.
pub struct Runtime {
    root: PathBuf,
    /// Made on first use: only create and exec start processes.
    binary: std::sync::OnceLock<SealedBinary>,
    /// Collects hook statuses when the embedding program reaps children itself.
    waiter: Option<hooks::ChildWaiter>,
}

/// Options of `create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Container id.
    pub id: String,
    /// Bundle directory with config.json.
    pub bundle: PathBuf,
    /// MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Where to send the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// stdin, stdout, stderr of the container's process; `None` inherits the caller's.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
}

/// Options of `exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The process to start.
    pub process: Process,
    /// Where to send the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// stdin, stdout, stderr of the process; `None` inherits the caller's.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
}

impl Runtime {
    /// A runtime keeping state under `root`, starting inits from a sealed copy
    /// of the running executable (which must call [`crate::init::run_if_init`]).
    pub fn new(root: &Path) -> Result<Runtime> {
        std::fs::create_dir_all(root).map_err(io("mkdir", root.display()))?;
        Ok(Runtime {
            root: root.to_path_buf(),
            binary: std::sync::OnceLock::new(),
            waiter: None,
        })
    }

    /// A runtime whose inits run from a sealed copy of `binary`, a program that
    /// calls [`crate::init::run_if_init`] first (e.g. the `rustjail` command).
    pub fn with_binary(root: &Path, binary: &Path) -> Result<Runtime> {
        let rt = Runtime::new(root)?;
        let _ = rt.binary.set(SealedBinary::copy_of(binary)?);
        Ok(rt)
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lets hooks run by this runtime (prestart, createRuntime, poststart,
    /// poststop) report through `waiter` rather than `waitpid`.
    pub fn set_child_waiter(&mut self, waiter: hooks::ChildWaiter) {
        self.waiter = Some(waiter);
    }

    fn binary(&self) -> Result<&SealedBinary> {
        if let Some(b) = self.binary.get() {
            return Ok(b);
        }
        let b = SealedBinary::current_exe()?;
        // A concurrent caller may have set it first; either copy is as good.
        let _ = self.binary.set(b);
        Ok(self.binary.get().expect("set above"))
    }

    /// Creates the container: its init is set up and waits for `start`.
    /// Returns the init's pid.
    pub fn create(&self, opts: &CreateOptions) -> Result<State> {
        state::validate_id(&opts.id)?;
        let bundle = opts
            .bundle
            .canonicalize()
            .map_err(io("resolve bundle", opts.bundle.display()))?;
        let config = bundle.join("config.json");
        let spec = Spec::load(&config).map_err(|e| Error::Spec(format!("{}: {e}", config.display())))?;
        let root_path = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| Error::Spec("no root in spec".into()))?;
        let rootfs = bundle.join(root_path);
        let rootfs = rootfs.canonicalize().map_err(io("resolve rootfs", rootfs.display()))?;
        if spec.process().is_none() {
            return Err(Error::Spec("no process in spec".into()));
        }
        let flags = clone_flags(&spec)?;
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
        if terminal != opts.console_socket.is_some() {
            return Err(Error::Spec(if terminal {
                "process.terminal is true: give a --console-socket to receive the pty".into()
            } else {
                "a console socket was given but process.terminal is false".into()
            }));
        }

        let dir = state::dir(&self.root, &opts.id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Error::Exists(opts.id.clone())),
            Err(e) => return Err(io("mkdir", dir.display())(e)),
        }
        let result = self.create_in(&dir, opts, spec, bundle, rootfs, flags);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn create_in(
        &self,
        dir: &Path,
        opts: &CreateOptions,
        spec: Spec,
        bundle: PathBuf,
        rootfs: PathBuf,
        flags: CloneFlags,
    ) -> Result<State> {
        let fifo = state::fifo_path(&self.root, &opts.id);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622)).map_err(sys("mkfifo", fifo.display()))?;
        // Past the umask: the init may run as another uid (a user namespace).
        nix::sys::stat::fchmodat(
            None,
            &fifo,
            Mode::from_bits_truncate(0o622),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(sys("chmod", fifo.display()))?;
        let (mut ours, theirs) = UnixStream::pair().map_err(io("socketpair", "init sync"))?;
        let maps = |pid: Pid| -> Result<()> {
            let linux = spec.linux().clone().unwrap_or_default();
            write_id_map(pid, "uid_map", linux.uid_mappings().as_deref().unwrap_or(&[]))?;
            write_id_map(pid, "gid_map", linux.gid_mappings().as_deref().unwrap_or(&[]))
        };
        let userns = flags.contains(CloneFlags::CLONE_NEWUSER);
        let pid = spawn_with(
            &SpawnSpec {
                binary: self.binary()?,
                args: vec![CString::new("rustjail").unwrap(), CString::new("init").unwrap()],
                env: vec![CString::new(format!("{INIT_ENV}=1")).unwrap()],
                flags,
                fds: with_stdio(vec![(theirs.as_raw_fd(), SYNC_FD)], opts.stdio),
            },
            if userns { Some(&maps) } else { None },
        )?;
        drop(theirs);
        let guard = KillOnDrop(Some(pid));
        // The init joins its cgroup before it gets its config, so that its
        // cgroup namespace, and everything it forks, start there.
        let linux = spec.linux().clone().unwrap_or_default();
        let cgroup = Manager::new(linux.cgroups_path().as_deref(), &opts.id)?;
        cgroup.create()?;
        let busy = cgroup.pids()?;
        if !busy.is_empty() {
            return Err(Error::Spec(format!(
                "cgroup {:?} already holds processes {busy:?}: another container uses this cgroupsPath",
                cgroup.paths().values().next()
            )));
        }
        let cg_guard = DestroyOnDrop(Some(cgroup.clone()));
        cgroup.apply(&crate::devices::effective_resources(&spec))?;
        cgroup.add_task(pid.as_raw())?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        // Later commands (exec, hooks) use the spec as it was at create.
        let saved = dir.join("config.json");
        spec.save(&saved).map_err(|e| Error::State {
            path: saved.display().to_string(),
            // oci_spec's own text of an I/O error leaves out the cause.
            why: match &e {
                oci_spec::OciSpecError::Io(io) => format!("{e}: {io}"),
                _ => e.to_string(),
            },
        })?;
        let cfg = InitConfig {
            id: opts.id.clone(),
            spec,
            rootfs: rootfs.clone(),
            no_pivot: opts.no_pivot,
            exec_fifo: Some(fifo),
            exec: None,
            console: opts.console_socket.is_some(),
            bundle: bundle.clone(),
            host_pid: pid.as_raw(),
        };
        let hooks = cfg.spec.hooks().clone().unwrap_or_default();
        let oci_version = cfg.spec.version().clone();
        sync::send(&mut ours, &cfg)?;
        let mut pid = pid;
        let mut init = KillOnDrop(Some(pid));
        guard.defuse();
        let mut msg = recv_forwarding_console(&mut ours, opts.console_socket.as_deref())?;
        if let Some(FromInit::Pid(p)) = msg {
            // The init joined an existing PID namespace and forked into it; the
            // child (ours too, by CLONE_PARENT) is the container's init now and
            // the first process exits: reap it.
            let _ = nix::sys::wait::waitpid(pid, None);
            init.defuse();
            pid = Pid::from_raw(p);
            init = KillOnDrop(Some(pid));
            msg = recv_forwarding_console(&mut ours, opts.console_socket.as_deref())?;
        }
        match msg {
            Some(FromInit::Mounted) => {}
            Some(FromInit::Failed(msg)) => return Err(Error::Init(msg)),
            _ => return Err(Error::Init("init exited before its mounts were done".into())),
        }
        let hook_state = HookState {
            oci_version,
            id: opts.id.clone(),
            status: "creating".into(),
            pid: pid.as_raw(),
            bundle: bundle.display().to_string(),
            annotations: annotations.clone(),
        };
        #[allow(deprecated)]
        let prestart = hooks.prestart().clone().unwrap_or_default();
        hooks::run_with("prestart", &prestart, &hook_state, self.waiter.as_ref())?;
        hooks::run_with(
            "createRuntime",
            hooks.create_runtime().as_deref().unwrap_or(&[]),
            &hook_state,
            self.waiter.as_ref(),
        )?;
        sync::send(&mut ours, &Go::Continue)?;
        match recv_forwarding_console(&mut ours, opts.console_socket.as_deref())? {
            Some(FromInit::Created) => {}
            Some(FromInit::Failed(msg)) => return Err(Error::Init(msg)),
            Some(FromInit::Pid(_) | FromInit::Console | FromInit::Mounted) | None => {
                return Err(Error::Init("init exited before reporting".into()))
            }
        }
        let (start_time, _) = state::proc_start_time(pid.as_raw())
            .ok_or_else(|| Error::Init(format!("init pid {pid} vanished after setup")))?;
        let st = State {
            id: opts.id.clone(),
            pid: pid.as_raw(),
            start_time,
            bundle,
            rootfs,
            created: state::now_rfc3339(),
            owner: nix::unistd::getuid().to_string(),
            annotations,
            cgroup: Some(cgroup),
        };
        st.save(&self.root)?;
        init.defuse();
        cg_guard.defuse();
        Ok(st)
    }

    /// Lets the init run the user's program, then runs the poststart hooks;
    /// their failures are returned as warnings (the container keeps running).
    pub fn start(&self, id: &str) -> Result<Vec<String>> {
        let st = State::load(&self.root, id)?;
        let status = st.status(&self.root);
        if status != Status::Created {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                why: "only a created container can start",
            });
        }
        let fifo = state::fifo_path(&self.root, id);
        let fd = nix::fcntl::open(
            &fifo,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", fifo.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut buf = [0u8; 1];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(1) => break,
                Ok(_) | Err(nix::Error::EAGAIN) => {
                    if st.status(&self.root) == Status::Stopped {
                        let _ = nix::unistd::close(fd);
                        return Err(Error::Init(format!("init of {id} exited before start")));
                    }
                    if Instant::now() > deadline {
                        let _ = nix::unistd::close(fd);
                        return Err(Error::Init(format!(
                            "init of {id} did not take the start signal in {START_TIMEOUT:?}"
                        )));
                    }
                    // Wake as soon as the init writes; look at its liveness every 50 ms.
                    // SAFETY: fd stays open for the duration of the poll.
                    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                    let mut fds = [nix::poll::PollFd::new(bfd, nix::poll::PollFlags::POLLIN)];
                    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u8)) {
                        Ok(_) | Err(nix::Error::EINTR) => {}
                        Err(e) => {
                            let _ = nix::unistd::close(fd);
                            return Err(sys("poll", fifo.display())(e));
                        }
                    }
                }
                Err(e) => {
                    let _ = nix::unistd::close(fd);
                    return Err(sys("read", fifo.display())(e));
                }
            }
        }
        let _ = nix::unistd::close(fd);
        std::fs::remove_file(&fifo).map_err(io("unlink", fifo.display()))?;
        let spec = self.spec(id)?;
        let hooks = spec.hooks().clone().unwrap_or_default();
        Ok(self.hooks_as_warnings("poststart", hooks.poststart(), &st, &spec, "running"))
    }

    /// Runs hooks whose failure must not undo the operation (poststart,
    /// poststop); a failure becomes a warning.
    fn hooks_as_warnings(
        &self,
        kind: &str,
        list: &Option<Vec<oci_spec::runtime::Hook>>,
        st: &State,
        spec: &Spec,
        status: &str,
    ) -> Vec<String> {
        let state = self.hook_state(st, spec, status);
        hooks::run_with(kind, list.as_deref().unwrap_or(&[]), &state, self.waiter.as_ref())
            .err()
            .map(|e| e.to_string())
            .into_iter()
            .collect()
    }

    fn hook_state(&self, st: &State, spec: &Spec, status: &str) -> HookState {
        HookState {
            oci_version: spec.version().clone(),
            id: st.id.clone(),
            status: status.into(),
            pid: if status == "stopped" { 0 } else { st.pid },
            bundle: st.bundle.display().to_string(),
            annotations: st.annotations.clone(),
        }
    }

    /// The state and current status.
    pub fn state(&self, id: &str) -> Result<(State, Status)> {
        let st = State::load(&self.root, id)?;
        let status = st.status(&self.root);
        Ok((st, status))
    }

    /// The spec the container was created with.
    pub fn spec(&self, id: &str) -> Result<Spec> {
        let path = state::dir(&self.root, id).join("config.json");
        if !path.exists() {
            return Err(Error::NotFound(id.to_string()));
        }
        Spec::load(&path).map_err(|e| Error::State {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Starts `process` inside the running (or created) container; returns its
    /// host pid. The process is a child of the calling process.
    pub fn exec(&self, id: &str, opts: ExecOptions) -> Result<Pid> {
        let ExecOptions {
            process,
            console_socket,
            stdio,
        } = opts;
        let console_socket = console_socket.as_deref();
        if process.terminal().unwrap_or(false) != console_socket.is_some() {
            return Err(Error::Spec(
                "a terminal needs a console socket, and a console socket a terminal".into(),
            ));
        }
        let (st, status) = self.state(id)?;
        if !matches!(status, Status::Created | Status::Running) {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                why: "exec needs a created or running container",
            });
        }
        let spec = self.spec(id)?;
        let (mut ours, theirs) = UnixStream::pair().map_err(io("socketpair", "exec sync"))?;
        let helper = spawn(&SpawnSpec {
            binary: self.binary()?,
            args: vec![CString::new("rustjail").unwrap(), CString::new("exec").unwrap()],
            env: vec![CString::new(format!("{INIT_ENV}=1")).unwrap()],
            flags: CloneFlags::empty(),
            fds: with_stdio(vec![(theirs.as_raw_fd(), SYNC_FD)], stdio),
        })?;
        drop(theirs);
        let _reap = KillOnDrop(Some(helper));
        let cfg = InitConfig {
            id: id.to_string(),
            spec,
            rootfs: st.rootfs.clone(),
            no_pivot: false,
            exec_fifo: None,
            exec: Some(ExecTarget { pid: st.pid, process }),
            console: console_socket.is_some(),
            bundle: st.bundle.clone(),
            host_pid: st.pid,
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
        if let Some(cg) = &st.cgroup {
            cg.add_task(pid.as_raw())?;
        }
        sync::send(&mut ours, &Go::Continue)?;
        match recv_forwarding_console(&mut ours, console_socket)? {
            // The socket closes at execve: the process runs.
            None => {}
            Some(FromInit::Failed(msg)) => return Err(Error::Init(msg)),
            Some(other) => return Err(Error::Init(format!("unexpected message from exec: {other:?}"))),
        }
        guard.defuse();
        Ok(pid)
    }

    /// Sends `sig` to the init.
    pub fn kill(&self, id: &str, sig: Signal) -> Result<()> {
        let (st, status) = self.state(id)?;
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                why: "cannot signal a stopped container",
            });
        }
        nix::sys::signal::kill(Pid::from_raw(st.pid), sig).map_err(sys("kill", format!("pid {} ({id})", st.pid)))
    }

    /// Removes a stopped container (with `force`, kills it first), then runs
    /// the poststop hooks; their failures are returned as warnings.
    pub fn delete(&self, id: &str, force: bool) -> Result<Vec<String>> {
        let (st, status) = self.state(id)?;
        if status != Status::Stopped {
            if !force {
                return Err(Error::WrongState {
                    id: id.into(),
                    status: status.to_string(),
                    why: "stop it first or use --force",
                });
            }
            let _ = nix::sys::signal::kill(Pid::from_raw(st.pid), Signal::SIGKILL);
            if status == Status::Paused {
                // A frozen process gets its SIGKILL only once thawed.
                if let Some(cg) = &st.cgroup {
                    cg.thaw()?;
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while st.status(&self.root) != Status::Stopped {
                if Instant::now() > deadline {
                    return Err(Error::Init(format!(
                        "container {id} (pid {}) survived SIGKILL for 5s",
                        st.pid
                    )));
                }
                // Reap it if it is our child (run, or a library user).
                let _ = nix::sys::wait::waitpid(Pid::from_raw(st.pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if let Some(cg) = &st.cgroup {
            // Processes exec'd into a container without its own PID namespace can
            // outlive the init.
            kill_and_destroy(cg)?;
        }
        let spec = self.spec(id).ok();
        let dir = state::dir(&self.root, id);
        std::fs::remove_dir_all(&dir).map_err(io("rm -r", dir.display()))?;
        let Some(spec) = spec else { return Ok(Vec::new()) };
        let hooks = spec.hooks().clone().unwrap_or_default();
        Ok(self.hooks_as_warnings("poststop", hooks.poststop(), &st, &spec, "stopped"))
    }

    fn cgroup_of(&self, id: &str) -> Result<(State, Status, Manager)> {
        let (st, status) = self.state(id)?;
        let cg = st.cgroup.clone().ok_or_else(|| Error::State {
            path: state::dir(&self.root, id).join("state.json").display().to_string(),
            why: "no cgroup recorded for this container".into(),
        })?;
        Ok((st, status, cg))
    }

    /// The cgroup recorded for a container (for OOM watches and the like).
    pub fn cgroup(&self, id: &str) -> Result<Manager> {
        self.cgroup_of(id).map(|(_, _, cg)| cg)
    }

    /// Freezes every process of a running container.
    pub fn pause(&self, id: &str) -> Result<()> {
        let (_, status, cg) = self.cgroup_of(id)?;
        if status != Status::Running {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                why: "only a running container can pause",
            });
        }
        Ok(cg.freeze()?)
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let (_, status, cg) = self.cgroup_of(id)?;
        if status != Status::Paused {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                why: "only a paused container can resume",
            });
        }
        Ok(cg.thaw()?)
    }

    /// Host pids of every process in the container's cgroup.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let (_, _, cg) = self.cgroup_of(id)?;
        Ok(cg.pids()?)
    }

    /// Sends `sig` to every process in the container (`kill --all`).
    pub fn kill_all(&self, id: &str, sig: Signal) -> Result<()> {
        let (_, status, cg) = self.cgroup_of(id)?;
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                why: "cannot signal a stopped container",
            });
        }
        for p in cg.pids()? {
            // A process may exit between listing and signalling.
            match nix::sys::signal::kill(Pid::from_raw(p), sig) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => return Err(sys("kill", format!("pid {p} ({id})"))(e)),
            }
        }
        Ok(())
    }

    /// Changes the resource limits of a container; returns notes about
    /// settings the host could not apply.
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<Vec<String>> {
        let (_, status, cg) = self.cgroup_of(id)?;
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                why: "cannot update a stopped container",
            });
        }
        Ok(cg.apply(resources)?)
    }

    /// The cgroup statistics of a container.
    pub fn stats(&self, id: &str) -> Result<crate::cgroups::Stats> {
        let (_, _, cg) = self.cgroup_of(id)?;
        Ok(cg.stats()?)
    }

    /// Force-deletes every container under the root, whatever its state (to
    /// clean up after a runtime user that died); returns the ids that could
    /// not be deleted, with why.
    pub fn delete_all(&self) -> Vec<(String, Error)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                self.delete(&id, true).err().map(|err| (id, err))
            })
            .collect()
    }

    /// Every container under the root.
    pub fn list(&self) -> Result<Vec<(State, Status)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root).map_err(io("readdir", self.root.display()))? {
            let e = e.map_err(io("readdir", self.root.display()))?;
            if let Some(id) = e.file_name().to_str() {
                if let Ok(s) = self.state(id) {
                    out.push(s);
                }
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }
}

/// Adds `stdio` as the child's fds 0, 1 and 2.
fn with_stdio(mut fds: Vec<(RawFd, RawFd)>, stdio: Option<[RawFd; 3]>) -> Vec<(RawFd, RawFd)> {
    if let Some(s) = stdio {
        fds.extend(s.iter().enumerate().map(|(i, &fd)| (fd, i as RawFd)));
    }
    fds
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

impl Drop for DestroyOnDrop {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            let _ = kill_and_destroy(&m);
        }
    }
}

/// SIGKILLs every process in the cgroup, then removes it (`destroy` retries
/// while the killed processes leave).
fn kill_and_destroy(cg: &Manager) -> Result<()> {
    for p in cg.pids().unwrap_or_default() {
        let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    Ok(cg.destroy()?)
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

/// Receives the next message from an init; a pty master on the way is passed
/// on to the console socket, as runc does.
fn recv_forwarding_console(sock: &mut UnixStream, console: Option<&Path>) -> Result<Option<FromInit>> {
    loop {
        match sync::recv::<FromInit>(sock)? {
            Some(FromInit::Console) => {
                let master = sync::recv_fd(sock)?;
                let path = console.ok_or_else(|| Error::Init("init sent a pty nobody asked for".into()))?;
                let out = UnixStream::connect(path).map_err(io("connect", path.display()))?;
                sync::send_fd(&out, master.as_raw_fd())?;
            }
            other => return Ok(other),
        }
    }
}
