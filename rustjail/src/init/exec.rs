//! `exec`: a new process joining every namespace of a running container. The
//! helper enters the namespaces (it is single-threaded, so `setns` of the mount
//! namespace works), then forks with CLONE_PARENT so that the process that
//! runs in the container's PID namespace is the runtime's own child.

use std::convert::Infallible;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::{finish, process};
use crate::error::{sys, Error, Result};
use crate::sync::{self, FromInit, Go, InitConfig};

/// Namespaces in the order they are entered: user first (it grants the rights
/// for the others), mount last (it changes the root under our feet).
const ORDER: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Joins the container of `cfg.exec` and runs its process there.
pub fn join_and_exec(cfg: &InitConfig, sock: &mut UnixStream) -> Result<Infallible> {
    let target = cfg
        .exec
        .as_ref()
        .ok_or_else(|| Error::Init("exec without a target".into()))?;
    let mut fds = Vec::new();
    for (name, flag) in ORDER {
        let theirs = format!("/proc/{}/ns/{name}", target.pid);
        let same = std::fs::read_link(&theirs).ok() == std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        if same {
            continue;
        }
        let fd = nix::fcntl::open(theirs.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(sys("open", &theirs))?;
        // SAFETY: a fresh fd we own.
        fds.push((unsafe { OwnedFd::from_raw_fd(fd) }, *flag, theirs));
    }
    for (fd, flag, path) in &fds {
        nix::sched::setns(fd, *flag).map_err(sys("setns", path))?;
    }
    drop(fds);
    if fork_to_runtime(sock)? > 0 {
        std::process::exit(0);
    }
    match sync::recv::<Go>(sock)? {
        Some(Go::Continue) => {}
        None => {
            return Err(Error::Init(
                "runtime went away before the process joined the cgroup".into(),
            ))
        }
    }
    let p = &target.process;
    let env = p.env().clone().unwrap_or_default();
    let arg0 = p
        .args()
        .as_ref()
        .and_then(|a| a.first().cloned())
        .ok_or_else(|| Error::Spec("process.args is empty".into()))?;
    nix::unistd::chdir(p.cwd()).map_err(sys("chdir", p.cwd().display()))?;
    let program = process::find_program(&arg0, &env)?;
    let linux = cfg.spec.linux().clone().unwrap_or_default();
    let seccomp = linux.seccomp().as_ref().map(crate::seccomp::compile).transpose()?;
    process::set_rlimits(p.rlimits().as_deref().unwrap_or(&[]))?;
    super::attrs::set_io_priority(p)?;
    if cfg.console {
        super::console::setup(sock, p)?;
    }
    let exec = process::Prepared::new(&program, p)?;
    let labels = crate::labels::ExecLabel::for_process(p)?;
    finish(p, seccomp.as_ref(), &exec, &labels)
}

/// Forks with CLONE_PARENT (the child becomes the runtime's child, in the PID
/// namespace we joined) and tells the runtime the child's pid. Returns the
/// child's pid in the parent, 0 in the child.
pub fn fork_to_runtime(sock: &mut UnixStream) -> Result<i32> {
    // SAFETY: this process is single-threaded (freshly executed), so the child
    // may run Rust code.
    let child = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_PARENT | libc::SIGCHLD, 0, 0, 0, 0) };
    if child < 0 {
        return Err(sys("clone", "CLONE_PARENT")(nix::Error::last()));
    }
    if child > 0 {
        sync::send(sock, &FromInit::Pid(child as i32))?;
    }
    Ok(child as i32)
}
