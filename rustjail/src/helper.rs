//! The modes a program that embeds rustjail starts in, and the one way to run
//! something inside a running container.
//!
//! A multi-threaded program must not run Rust code in a forked child, and
//! cannot `setns` into a mount namespace. So every process the runtime starts
//! (a container's init, a process exec'd into a container, and any helper the
//! embedding program defines) is the same binary, executed from the runtime's
//! sealed copy of it ([`crate::spawn::SealedBinary`]), single-threaded, in a
//! *mode* named by the environment. The program lists its modes once and calls
//! [`dispatch`] first thing in `main`:
//!
//! ```no_run
//! // First thing in main: every mode this binary starts in, besides its normal one.
//! rustjail::helper::dispatch(&[rustjail::helper::Mode::CONTAINER]);
//! ```
//!
//! Helpers other than the container's own talk to the runtime over one socket
//! (fd 3, [`crate::sync`] framing): the runtime sends an [`OpRequest`]; the
//! helper enters the target container's namespaces when asked ([`Enter`], the
//! same code `exec` uses), runs the mode's function and answers. A one-shot
//! mode ([`Mode::op`], e.g. making a device node inside a container) then
//! exits; a resident mode ([`Mode::resident`], e.g. a process that holds
//! namespaces open) stays until the runtime closes its end of the socket.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode as FileMode;
use oci_spec::runtime::LinuxNamespaceType;
use serde::{Deserialize, Serialize};

use crate::error::{io, sys, Error, Result};
use crate::spawn::{spawn, SpawnSpec};
use crate::sync;

/// Environment variable naming the mode a process runs in.
pub const MODE_ENV: &str = "_RUSTJAIL_MODE";
/// Descriptor number of the socket to the runtime, in every helper.
pub const SYNC_FD: std::os::fd::RawFd = 3;
/// Name of the container mode (a container's init, or a process exec'd into one).
pub const CONTAINER_MODE: &str = "container";

/// What a helper mode does with the request's payload; its answer goes back
/// to the runtime. An error is a message for a person.
pub type OpFn = fn(serde_json::Value) -> std::result::Result<serde_json::Value, String>;

/// One mode a binary starts in.
#[derive(Clone, Copy)]
pub struct Mode {
    name: &'static str,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Container,
    Op(OpFn),
    Resident(OpFn),
}

impl Mode {
    /// A container's init, or a process exec'd into a running container
    /// (rustjail's own; every binary that creates containers lists it).
    pub const CONTAINER: Mode = Mode {
        name: CONTAINER_MODE,
        kind: Kind::Container,
    };

    /// A one-shot helper: runs `f` (inside a container when the request says
    /// so), answers, exits.
    pub const fn op(name: &'static str, f: OpFn) -> Mode {
        Mode {
            name,
            kind: Kind::Op(f),
        }
    }

    /// A resident helper: runs `f`, answers, then stays until the runtime
    /// closes its end of the socket (or dies).
    pub const fn resident(name: &'static str, f: OpFn) -> Mode {
        Mode {
            name,
            kind: Kind::Resident(f),
        }
    }

    /// The mode's name, as the runtime asks for it.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Call first thing in `main`: in a process the runtime started in one of
/// `modes`, runs that mode and never returns; in any other process, returns.
pub fn dispatch(modes: &[Mode]) {
    let Some(name) = std::env::var_os(MODE_ENV) else {
        return;
    };
    // The runtime started this process with every signal blocked
    // (`SpawnSpec::dispatched`); none is wanted blocked here. Nor the CPU
    // it left out for its own thread.
    unblock_all_signals();
    crate::spawn::take_back_cpus();
    let name = name.to_string_lossy();
    let Some(mode) = modes.iter().find(|m| m.name == name) else {
        eprintln!("rustjail helper: this binary has no mode {name:?}");
        std::process::exit(127);
    };
    match mode.kind {
        Kind::Container => crate::init::run(),
        Kind::Op(f) => run_op(f, false),
        Kind::Resident(f) => run_op(f, true),
    }
}

/// Empties this thread's signal mask (the modes and the init's last step
/// before the user's program: each process has no other thread then).
pub(crate) fn unblock_all_signals() {
    // SAFETY: an empty set, filled by sigemptyset before use.
    let mut none: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset/sigprocmask on a valid set; the old mask is not wanted.
    unsafe {
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// The namespaces (and root) of a running container to enter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enter {
    /// A process of the container (its init), as the runtime sees it.
    pub pid: i32,
    /// The namespaces to join; the order does not matter (user first, mount last).
    pub namespaces: Vec<LinuxNamespaceType>,
    /// Then take the process's root directory as ours (`chroot`), whether it
    /// got there by `pivot_root` or by `MS_MOVE` and `chroot`.
    pub root: bool,
}

impl Enter {
    /// Every namespace of the container, and its root: what `exec` joins.
    pub fn all(pid: i32) -> Enter {
        Enter {
            pid,
            namespaces: ORDER.iter().map(|(t, ..)| *t).collect(),
            root: true,
        }
    }
}

/// Namespaces in the order they are entered: user first (it grants the rights
/// for the others), mount last (it changes the root under our feet).
const ORDER: &[(LinuxNamespaceType, &str, CloneFlags)] = &[
    (LinuxNamespaceType::User, "user", CloneFlags::CLONE_NEWUSER),
    (LinuxNamespaceType::Ipc, "ipc", CloneFlags::CLONE_NEWIPC),
    (LinuxNamespaceType::Uts, "uts", CloneFlags::CLONE_NEWUTS),
    (LinuxNamespaceType::Network, "net", CloneFlags::CLONE_NEWNET),
    (LinuxNamespaceType::Pid, "pid", CloneFlags::CLONE_NEWPID),
    (LinuxNamespaceType::Cgroup, "cgroup", CloneFlags::CLONE_NEWCGROUP),
    (LinuxNamespaceType::Mount, "mnt", CloneFlags::CLONE_NEWNS),
];

fn open_path(path: &str, flags: OFlag) -> Result<OwnedFd> {
    crate::open::open(std::path::Path::new(path), flags, FileMode::empty()).map_err(sys("open", path))
}

/// Joins the namespaces of `e.pid` named in `e` (those we already share are
/// skipped: `setns` into one's own user namespace fails) and, when asked,
/// takes its root. Must run in a single-threaded process. Everything is opened
/// before the first `setns`: afterwards `/proc/<pid>` may not resolve.
pub fn enter(e: &Enter) -> Result<()> {
    let mut fds = Vec::new();
    for (typ, name, flag) in ORDER {
        if !e.namespaces.contains(typ) {
            continue;
        }
        let theirs = format!("/proc/{}/ns/{name}", e.pid);
        let same = std::fs::read_link(&theirs).ok() == std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        if same {
            continue;
        }
        fds.push((open_path(&theirs, OFlag::O_RDONLY)?, *flag, theirs));
    }
    let root_path = format!("/proc/{}/root", e.pid);
    let root = match e.root {
        true => Some(open_path(&root_path, OFlag::O_PATH | OFlag::O_DIRECTORY)?),
        false => None,
    };
    for (fd, flag, path) in &fds {
        nix::sched::setns(fd, *flag).map_err(sys("setns", path))?;
    }
    if let Some(root) = root {
        nix::unistd::fchdir(root.as_raw_fd()).map_err(sys("fchdir", &root_path))?;
        nix::unistd::chroot(".").map_err(sys("chroot", &root_path))?;
        nix::unistd::chdir("/").map_err(sys("chdir", format_args!("/ in {root_path}")))?;
    }
    Ok(())
}

/// What the runtime asks a helper to do.
#[derive(Debug, Serialize, Deserialize)]
pub struct OpRequest {
    /// The container to enter first, if any.
    pub enter: Option<Enter>,
    /// The mode's input.
    pub payload: serde_json::Value,
}

/// A helper's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum OpReply {
    /// The mode's output.
    Done(serde_json::Value),
    /// Why it failed.
    Failed(String),
}

fn run_op(f: OpFn, resident: bool) -> ! {
    // SAFETY: the runtime placed the socket at SYNC_FD for this process alone.
    let mut sock = unsafe { UnixStream::from_raw_fd(SYNC_FD) };
    let reply = match sync::recv::<OpRequest>(&mut sock) {
        Ok(Some(req)) => match req.enter.as_ref().map(enter).transpose() {
            Ok(_) => match f(req.payload) {
                Ok(v) => OpReply::Done(v),
                Err(e) => OpReply::Failed(e),
            },
            Err(e) => OpReply::Failed(e.to_string()),
        },
        Ok(None) => std::process::exit(1),
        Err(e) => OpReply::Failed(e.to_string()),
    };
    let failed = matches!(reply, OpReply::Failed(_));
    if sync::send(&mut sock, &reply).is_err() || failed || !resident {
        std::process::exit(i32::from(failed));
    }
    // Resident: until the runtime's end closes (EOF) or the runtime dies.
    let _ = sync::recv::<serde_json::Value>(&mut sock);
    std::process::exit(0)
}

/// A resident helper; dropping it closes the socket, and the helper exits.
#[derive(Debug)]
pub struct Resident {
    /// Its pid.
    pub pid: i32,
    /// The runtime's end of its socket.
    pub channel: UnixStream,
}

impl crate::Runtime {
    /// Starts `mode` (resident or one-shot) with `flags` (new namespaces) and
    /// sends it `req`; returns the helper's pid, the socket, and its answer.
    fn start_helper(
        &self,
        mode: &str,
        flags: CloneFlags,
        req: &OpRequest,
    ) -> Result<(nix::unistd::Pid, UnixStream, OpReply)> {
        let (mut ours, theirs) = UnixStream::pair().map_err(io("socketpair", format_args!("helper {mode}")))?;
        let pid = spawn(&SpawnSpec {
            binary: self.binary()?,
            args: vec![
                c"rustjail".into(),
                std::ffi::CString::new(mode).map_err(|_| Error::Init("NUL in mode".into()))?,
            ],
            env: vec![
                std::ffi::CString::new(format!("{MODE_ENV}={mode}")).map_err(|_| Error::Init("NUL in mode".into()))?
            ],
            flags,
            cgroup: None,
            fds: vec![(theirs.as_raw_fd(), SYNC_FD)],
            dispatched: true,
        })?;
        drop(theirs);
        let reply = sync::send(&mut ours, req).and_then(|()| sync::recv::<OpReply>(&mut ours));
        match reply {
            Ok(Some(r)) => Ok((pid, ours, r)),
            Ok(None) => {
                self.reap(pid);
                Err(Error::Init(format!(
                    "helper {mode} (pid {pid}) exited without answering"
                )))
            }
            Err(e) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                self.reap(pid);
                Err(e)
            }
        }
    }

    /// Runs the one-shot helper `mode` inside `container` (what `enter` names
    /// of it) with `payload`; returns the mode's answer.
    pub fn run_in(
        &self,
        container: &crate::Container,
        mode: &str,
        namespaces: &[LinuxNamespaceType],
        payload: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let req = OpRequest {
            enter: Some(Enter {
                pid: container.pid,
                namespaces: namespaces.to_vec(),
                root: true,
            }),
            payload,
        };
        let (pid, ours, reply) = self.start_helper(mode, CloneFlags::empty(), &req)?;
        drop(ours);
        self.reap(pid);
        match reply {
            OpReply::Done(v) => Ok(v),
            OpReply::Failed(m) => Err(Error::Helper {
                mode: mode.to_string(),
                container: container.id.clone(),
                message: m,
            }),
        }
    }

    /// Starts the resident helper `mode` in new namespaces `flags` with
    /// `payload`, and waits for its answer. It runs until the returned
    /// [`Resident`] is dropped.
    pub fn spawn_resident(&self, mode: &str, flags: CloneFlags, payload: serde_json::Value) -> Result<Resident> {
        let req = OpRequest { enter: None, payload };
        let (pid, channel, reply) = self.start_helper(mode, flags, &req)?;
        match reply {
            OpReply::Done(_) => Ok(Resident {
                pid: pid.as_raw(),
                channel,
            }),
            OpReply::Failed(m) => {
                drop(channel);
                self.reap(pid);
                Err(Error::Helper {
                    mode: mode.to_string(),
                    container: String::new(),
                    message: m,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_enters_every_namespace_user_first_mount_last_and_the_root() {
        let e = Enter::all(42);
        assert_eq!(e.pid, 42);
        assert!(e.root);
        assert_eq!(e.namespaces.first(), Some(&LinuxNamespaceType::User));
        assert_eq!(e.namespaces.last(), Some(&LinuxNamespaceType::Mount));
        assert_eq!(e.namespaces.len(), 7);
    }

    #[test]
    fn entering_our_own_namespaces_is_a_no_op() {
        // Every namespace named is the caller's own: nothing to join, no root
        // change asked; this works unprivileged and changes nothing.
        let me = std::process::id() as i32;
        let e = Enter {
            pid: me,
            namespaces: ORDER.iter().map(|(t, ..)| *t).collect(),
            root: false,
        };
        let cwd = std::env::current_dir().unwrap();
        enter(&e).unwrap();
        assert_eq!(std::env::current_dir().unwrap(), cwd);
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let r = OpRequest {
            enter: Some(Enter::all(7)),
            payload: serde_json::json!({"path": "/dev/x"}),
        };
        let back: OpRequest = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.enter, r.enter);
        assert_eq!(back.payload, r.payload);
        let f: OpReply = serde_json::from_str(&serde_json::to_string(&OpReply::Failed("no".into())).unwrap()).unwrap();
        assert!(matches!(f, OpReply::Failed(m) if m == "no"));
    }

    #[test]
    fn modes_have_their_names() {
        fn f(v: serde_json::Value) -> std::result::Result<serde_json::Value, String> {
            Ok(v)
        }
        assert_eq!(Mode::CONTAINER.name(), CONTAINER_MODE);
        assert_eq!(Mode::op("x", f).name(), "x");
        assert_eq!(Mode::resident("y", f).name(), "y");
    }
}
