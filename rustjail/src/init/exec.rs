//! `exec`: a new process joining every namespace of a running container. The
//! helper enters the namespaces and root ([`crate::helper::enter`], shared with
//! every in-container helper; it is single-threaded, so `setns` of the mount
//! namespace works), then forks with CLONE_PARENT so that the process that
//! runs in the container's PID namespace is the runtime's own child.

use std::convert::Infallible;
use std::os::unix::net::UnixStream;

use super::{finish, process};
use crate::error::{sys, Error, Result};
use crate::sync::{self, FromInit, Go, InitConfig};

/// Joins the container of `cfg.exec` and runs its process there.
pub fn join_and_exec(cfg: &InitConfig, sock: &mut UnixStream) -> Result<Infallible> {
    let target = cfg
        .exec
        .as_ref()
        .ok_or_else(|| Error::Init("exec without a target".into()))?;
    crate::helper::enter(&crate::helper::Enter::all(target.pid))?;
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
    let program = process::find_program(&arg0, &env, &cfg.rootfs)?;
    let linux = crate::spec::linux_of(&cfg.spec);
    let seccomp = linux.seccomp().as_ref().map(crate::seccomp::compile).transpose()?;
    process::set_rlimits(p.rlimits().as_deref().unwrap_or(&[]))?;
    super::attrs::set_io_priority(p)?;
    if cfg.console {
        super::console::setup(sock, p, false)?;
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
