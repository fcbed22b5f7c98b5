//! The container's init: runs in the process `spawn` created (already in its new
//! namespaces), freshly executed and single-threaded, so it may use all of Rust.
//! Gets its configuration over the sync socket (fd 3), builds the root, waits for
//! `start` on the exec FIFO, then becomes the user's program.

mod attrs;
mod console;
mod exec;
mod mounts;
mod process;
mod rootfs;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::LinuxNamespaceType;

pub use mounts::parse_options;

use crate::error::{sys, Error, Result};
use crate::sync::{self, FromInit, InitConfig};

/// Descriptor number of the sync socket in the init.
pub const SYNC_FD: RawFd = crate::helper::SYNC_FD;

/// A container's init or exec'd process (mode [`crate::helper::Mode::CONTAINER`]
/// of [`crate::helper::dispatch`]): never returns.
pub(crate) fn run() -> ! {
    // SAFETY: fd 3 was placed there by spawn() for this process alone.
    let mut sock = unsafe { UnixStream::from_raw_fd(SYNC_FD) };
    let err = match sync::recv::<InitConfig>(&mut sock) {
        Ok(Some(cfg)) => match if cfg.exec.is_some() {
            exec::join_and_exec(&cfg, &mut sock)
        } else {
            setup_and_exec(&cfg, &mut sock)
        } {
            Ok(never) => match never {},
            Err(e) => e,
        },
        Ok(None) => std::process::exit(1),
        Err(e) => e,
    };
    // Before `Created` the runtime is listening; after it, only stderr is left.
    if sync::send(&mut sock, &FromInit::Failed(err.init_report())).is_err() {
        let _ = writeln!(std::io::stderr(), "rustjail init: {err}");
    }
    std::process::exit(127)
}

fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_truncate(t as i32)
}

fn setup_and_exec(cfg: &InitConfig, sock: &mut UnixStream) -> Result<Infallible> {
    let mut pending_cgroup = None;
    match &cfg.join_cgroup {
        // Joined before the root is entered (its directories are host paths).
        Some(cg) if cfg.cgroup_pending => pending_cgroup = Some(cg),
        // First: the namespaces and processes made below start in the cgroup.
        Some(cg) => cg.join_self()?,
        None => {}
    }
    let spec = &cfg.spec;
    let linux = crate::spec::linux_of(spec);
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);

    // Join namespaces given by path: the user namespace first, the mount namespace last.
    let mut joins: Vec<_> = namespaces.iter().filter(|n| n.path().is_some()).collect();
    joins.sort_by_key(|n| match n.typ() {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 2,
        _ => 1,
    });
    for n in joins {
        let path = n.path().clone().unwrap_or_default();
        let fd = crate::open::open(&path, OFlag::O_RDONLY, Mode::empty()).map_err(sys("open", path.display()))?;
        nix::sched::setns(&fd, clone_flag(n.typ())).map_err(sys("setns", path.display()))?;
    }
    // setns(CLONE_NEWPID), and new or joined time namespaces, only take our
    // children: fork into them, with CLONE_PARENT so the runtime is the parent.
    let new_time = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none());
    if new_time {
        let mut flags = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
        if namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        {
            flags |= CloneFlags::CLONE_NEWPID;
        }
        nix::sched::unshare(flags).map_err(sys("unshare", format_args!("{flags:?}")))?;
        let offsets: String = linux
            .time_offsets()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|(clock, o)| format!("{clock} {} {}\n", o.secs().unwrap_or(0), o.nanosecs().unwrap_or(0)))
            .collect();
        if !offsets.is_empty() {
            std::fs::write("/proc/self/timens_offsets", &offsets)
                .map_err(crate::error::io("write", "/proc/self/timens_offsets"))?;
        }
    }
    let mut host_pid = cfg.host_pid;
    if forks_into_namespaces(spec) {
        host_pid = fork_into_namespaces(sock)?;
    }
    // The runtime placed us in the container's cgroup before sending the config,
    // so a new cgroup namespace is rooted there.
    if namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none())
    {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(sys("unshare", "CLONE_NEWCGROUP"))?;
    }
    if !has(LinuxNamespaceType::Mount) {
        return Err(Error::Spec("a mount namespace is required".into()));
    }

    // What needs the host's /proc is done before the root is entered, so a
    // container without a /proc mount works (as with crun).
    let fifo = cfg.exec_fifo.as_deref().map(crate::exec_fifo::Fifo::open).transpose()?;
    let proc_ = spec.process().as_ref();
    if let Some(adj) = proc_.and_then(|p| p.oom_score_adj()) {
        process::set_oom_score_adj(adj)?;
    }
    let labels = match proc_ {
        Some(p) => crate::labels::ExecLabel::for_process(p)?,
        None => Vec::new(),
    };
    let propagation = rootfs::requested_propagation(spec)?;
    let root = rootfs::prepare(spec, &cfg.rootfs, has(LinuxNamespaceType::User))?;
    if cfg.runtime_hooks {
        sync::send(sock, &FromInit::Mounted)?;
        match sync::recv::<sync::Go>(sock)? {
            Some(sync::Go::Continue) => {}
            None => return Err(Error::Init("runtime went away during createRuntime hooks".into())),
        }
    }
    let hooks = spec.hooks().clone().unwrap_or_default();
    let hook_state = |status: &str| crate::hooks::HookState {
        oci_version: spec.version().clone(),
        id: cfg.id.clone(),
        status: status.to_string(),
        pid: host_pid,
        bundle: cfg.bundle.display().to_string(),
        annotations: spec.annotations().clone().unwrap_or_default(),
    };
    crate::hooks::run(
        "createContainer",
        hooks.create_container().as_deref().unwrap_or(&[]),
        &hook_state("creating"),
    )?;
    rootfs::mask_and_protect(spec, &root)?;
    drop(root);
    if let Some(cg) = pending_cgroup {
        match sync::recv_fds(sock)? {
            Some(files) => cg.join_self_through(&files)?,
            None => return Err(Error::Init("runtime went away while making the cgroup".into())),
        }
    }
    rootfs::enter(&cfg.rootfs, cfg.no_pivot, propagation)?;
    rootfs::readonly_root(spec)?;
    if has(LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).map_err(sys("sethostname", h))?;
        }
        if let Some(d) = spec.domainname() {
            let c = std::ffi::CString::new(d.as_str()).map_err(|_| Error::Spec("NUL in domainname".into()))?;
            // SAFETY: setdomainname with a valid buffer and its length.
            if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } != 0 {
                return Err(sys("setdomainname", d)(nix::Error::last()));
            }
        }
    }
    let Some(proc_) = proc_ else {
        // The spec needs `process` only for `start` (which refuses first).
        sync::send(sock, &FromInit::Created)?;
        let started = fifo.map(|f| f.wait_for_start()).transpose()?;
        return Err(crate::exec_fifo::report(
            started,
            Error::Spec("process is required to start the container".into()),
        ));
    };
    if cfg.console {
        console::setup(sock, proc_, true)?;
    } else {
        nix::unistd::setsid().map_err(sys("setsid", "init"))?;
    }
    process::set_rlimits(proc_.rlimits().as_deref().unwrap_or(&[]))?;
    attrs::set_io_priority(proc_)?;
    attrs::set_personality(spec)?;
    let env = proc_.env().clone().unwrap_or_default();
    let arg0 = proc_
        .args()
        .as_ref()
        .and_then(|a| a.first().cloned())
        .ok_or_else(|| Error::Spec("process.args is empty".into()))?;
    let program = process::find_program(&arg0, &env, &cfg.rootfs)?;
    // Compiled now, so that a bad profile is reported by `create`.
    let seccomp = linux.seccomp().as_ref().map(crate::seccomp::compile).transpose()?;
    nix::unistd::chdir(proc_.cwd()).map_err(sys("chdir", proc_.cwd().display()))?;
    let exec = process::Prepared::new(&program, proc_)?;

    sync::send(sock, &FromInit::Created)?;
    // From here on `create` has returned and a failure reaches `start`
    // through the FIFO. The process's credentials are taken while `create`
    // answers and `start` comes (runc and kata-agent take them before the
    // wait too, so startContainer hooks run with them).
    let became = become_process(proc_, seccomp.is_some(), &labels);
    // Blocks until `start`.
    let started = fifo.map(|f| f.wait_for_start()).transpose()?;
    let result = became
        .and_then(|()| {
            crate::hooks::run(
                "startContainer",
                hooks.start_container().as_deref().unwrap_or(&[]),
                &hook_state("created"),
            )
        })
        .and_then(|()| load_and_exec(seccomp.as_ref(), &exec));
    let err = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    Err(crate::exec_fifo::report(started, err))
}

/// Whether the init forks into the namespaces it enters, its child becoming
/// the container's init: `setns(CLONE_NEWPID)`, and a new or joined time
/// namespace, take only the caller's children.
pub(crate) fn forks_into_namespaces(spec: &oci_spec::runtime::Spec) -> bool {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    namespaces.is_some_and(|ns| {
        ns.iter().any(|n| match n.typ() {
            LinuxNamespaceType::Time => true,
            LinuxNamespaceType::Pid => n.path().is_some(),
            _ => false,
        })
    })
}

/// Forks into the PID or time namespace entered (see [`exec::fork_to_runtime`]);
/// returns in the child, with the child's pid as the runtime sees it (for the
/// hooks' state), which the parent passes on before it exits.
fn fork_into_namespaces(sock: &mut UnixStream) -> Result<i32> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2", "init pid"))?;
    let child = exec::fork_to_runtime(sock)?;
    if child > 0 {
        let _ = nix::unistd::write(&w, &child.to_ne_bytes());
        std::process::exit(0);
    }
    drop(w);
    let mut b = [0u8; 4];
    std::fs::File::from(r)
        .read_exact(&mut b)
        .map_err(crate::error::io("read", "init pid pipe"))?;
    Ok(i32::from_ne_bytes(b))
}

/// Labels, credentials, capabilities, descriptors, seccomp, then `execve`: the
/// same for a container's init and for a process exec'd into it.
fn finish(
    proc_: &oci_spec::runtime::Process,
    seccomp: Option<&crate::seccomp::Program>,
    exec: &process::Prepared,
    labels: &[crate::labels::ExecLabel],
) -> Result<Infallible> {
    become_process(proc_, seccomp.is_some(), labels)?;
    load_and_exec(seccomp, exec)
}

/// Labels, no_new_privs, credentials, capabilities and descriptors of the
/// process. With a seccomp filter to load later and without no_new_privs,
/// CAP_SYS_ADMIN is kept until `execve` for it (see
/// [`process::set_capabilities`]).
fn become_process(
    proc_: &oci_spec::runtime::Process,
    seccomp: bool,
    labels: &[crate::labels::ExecLabel],
) -> Result<()> {
    for l in labels {
        l.apply()?;
    }
    let nnp = proc_.no_new_privileges().unwrap_or(false);
    if nnp {
        // SAFETY: prctl with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(sys("prctl(PR_SET_NO_NEW_PRIVS)", "1")(nix::Error::last()));
        }
    }
    process::drop_bounding(proc_.capabilities())?;
    process::set_user(proc_)?;
    process::set_capabilities(proc_.capabilities(), seccomp && !nnp)?;
    process::close_extra_fds()
}

/// Loads the seccomp filter, then `execve`: the filter is loaded last, so
/// that `execve` is the only syscall it sees.
fn load_and_exec(seccomp: Option<&crate::seccomp::Program>, exec: &process::Prepared) -> Result<Infallible> {
    let armed = seccomp.map(crate::seccomp::arm).transpose()?;
    if let Some(a) = &armed {
        a.load()?;
    }
    Err(exec.exec())
}
