//! The container's init: runs in the process `spawn` created (already in its new
//! namespaces), freshly executed and single-threaded, so it may use all of Rust.
//! Gets its configuration over the sync socket (fd 3), builds the root, waits for
//! `start` on the exec FIFO, then becomes the user's program.

mod console;
mod exec;
mod mounts;
mod process;
mod rootfs;

use std::convert::Infallible;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    if sync::send(&mut sock, &FromInit::Failed(err.to_string())).is_err() {
        let _ = writeln!(std::io::stderr(), "rustjail init: {err}");
    }
    std::process::exit(127)
}

fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    CloneFlags::from_bits_truncate(t as i32)
}

fn setup_and_exec(cfg: &InitConfig, sock: &mut UnixStream) -> Result<Infallible> {
    let spec = &cfg.spec;
    let proc_ = spec
        .process()
        .clone()
        .ok_or_else(|| Error::Spec("no process in spec".into()))?;
    let linux = spec.linux().clone().unwrap_or_default();
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
        let fd = nix::fcntl::open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys("open", path.display()))?;
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
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
        nix::sched::unshare(flags).map_err(sys("unshare", format!("{flags:?}")))?;
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
    let joins_pid_or_time = namespaces
        .iter()
        .any(|n| matches!(n.typ(), LinuxNamespaceType::Pid | LinuxNamespaceType::Time) && n.path().is_some());
    if new_time || joins_pid_or_time {
        let pid = exec::fork_to_runtime(sock)?;
        if pid > 0 {
            std::process::exit(0);
        }
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

    let fifo = match &cfg.exec_fifo {
        Some(p) => Some(
            nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map(|fd| {
                    // SAFETY: a fresh fd we own.
                    unsafe { OwnedFd::from_raw_fd(fd) }
                })
                .map_err(sys("open", p.display()))?,
        ),
        None => None,
    };
    rootfs::prepare(spec, &cfg.rootfs, has(LinuxNamespaceType::User))?;
    sync::send(sock, &FromInit::Mounted)?;
    match sync::recv::<sync::Go>(sock)? {
        Some(sync::Go::Continue) => {}
        None => return Err(Error::Init("runtime went away during createRuntime hooks".into())),
    }
    let hooks = spec.hooks().clone().unwrap_or_default();
    let hook_state = |status: &str| crate::hooks::HookState {
        oci_version: spec.version().clone(),
        id: cfg.id.clone(),
        status: status.to_string(),
        pid: cfg.host_pid,
        bundle: cfg.bundle.display().to_string(),
        annotations: spec.annotations().clone().unwrap_or_default(),
    };
    crate::hooks::run(
        "createContainer",
        hooks.create_container().as_deref().unwrap_or(&[]),
        &hook_state("creating"),
    )?;
    rootfs::enter(&cfg.rootfs, cfg.no_pivot)?;
    rootfs::mask_and_protect(spec)?;
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
    if cfg.console {
        console::setup(sock, &proc_)?;
    } else {
        nix::unistd::setsid().map_err(sys("setsid", "init"))?;
    }
    process::set_rlimits(proc_.rlimits().as_deref().unwrap_or(&[]))?;
    if let Some(adj) = proc_.oom_score_adj() {
        process::set_oom_score_adj(adj)?;
    }
    let env = proc_.env().clone().unwrap_or_default();
    let arg0 = proc_
        .args()
        .as_ref()
        .and_then(|a| a.first().cloned())
        .ok_or_else(|| Error::Spec("process.args is empty".into()))?;
    let program = process::find_program(&arg0, &env)?;
    // Compiled now, so that a bad profile is reported by `create`.
    let seccomp = linux.seccomp().as_ref().map(crate::seccomp::compile).transpose()?;
    nix::unistd::chdir(proc_.cwd()).map_err(sys("chdir", proc_.cwd().display()))?;

    sync::send(sock, &FromInit::Created)?;
    if let Some(fifo) = fifo {
        // Blocks until `start` opens the FIFO for reading.
        let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
        let w = nix::fcntl::open(path.as_str(), OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys("open", "exec fifo"))?;
        // SAFETY: a fresh fd we own.
        let w = unsafe { OwnedFd::from_raw_fd(w) };
        nix::unistd::write(&w, b"0").map_err(sys("write", "exec fifo"))?;
    }
    if let Err(e) = crate::hooks::run(
        "startContainer",
        hooks.start_container().as_deref().unwrap_or(&[]),
        &hook_state("created"),
    ) {
        // `create` has returned: stderr is all that is left to tell.
        let _ = writeln!(std::io::stderr(), "rustjail init: {e}");
        std::process::exit(127);
    }
    finish(&proc_, seccomp.as_ref(), &program)
}

/// Credentials, capabilities, seccomp, descriptors, then `execve`: the same
/// for a container's init and for a process exec'd into it.
fn finish(
    proc_: &oci_spec::runtime::Process,
    seccomp: Option<&crate::seccomp::Program>,
    program: &std::path::Path,
) -> Result<Infallible> {
    let nnp = proc_.no_new_privileges().unwrap_or(false);
    if nnp {
        // SAFETY: prctl with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(sys("prctl(PR_SET_NO_NEW_PRIVS)", "1")(nix::Error::last()));
        }
    }
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while
    // we still have it. With it, install last, so the filter sees only the program.
    if let (Some(p), false) = (seccomp, nnp) {
        crate::seccomp::install(p)?;
    }
    process::drop_bounding(proc_.capabilities())?;
    process::set_user(proc_)?;
    process::set_capabilities(proc_.capabilities())?;
    process::close_extra_fds()?;
    if let (Some(p), true) = (seccomp, nnp) {
        crate::seccomp::install(p)?;
    }
    process::exec(program, proc_)
}
