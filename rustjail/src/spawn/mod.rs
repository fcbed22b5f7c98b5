//! Starting a container's init without running Rust code in a forked child.
//!
//! The caller may be the multi-threaded agent. `clone(2)` here only runs a few
//! async-signal-safe syscalls in the child (dup2, sigprocmask, execveat) and then
//! executes a sealed memfd copy of the runtime binary in its init mode, so the
//! child never touches the parent's locks or allocator, and a container that
//! reaches `/proc/<pid>/exe` cannot overwrite the runtime (CVE-2019-5736).
//! The child copies only the first entries of the parent's descriptor table
//! (`low_fds`), so a spawn costs the same with 20 descriptors open or 2,000.

mod cpu_split;
mod low_fds;

pub use cpu_split::{take_back as take_back_cpus, CPUS_ENV};

pub use low_fds::reserve as reserve_low_fds;

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::error::{io, sys, Error, Result};

/// How many more times a seal refused with EBUSY is asked for.
const SEAL_BUSY_TRIES: u32 = 25;

/// A sealed, executable memfd holding a copy of a binary.
pub struct SealedBinary {
    fd: OwnedFd,
}

impl SealedBinary {
    /// Copies `path` into a memfd and seals it against any change.
    pub fn copy_of(path: &Path) -> Result<SealedBinary> {
        let mut src = File::open(path).map_err(io("open", path.display()))?;
        let name = CString::new("rustjail-init").expect("no NUL");
        // SAFETY: memfd_create with a valid C string; the fd is owned right away.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(sys("memfd_create", "rustjail-init")(nix::Error::last()));
        }
        // SAFETY: raw is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut dst = File::from(fd.try_clone().map_err(io("dup", "memfd"))?);
        // std's File-to-File copy uses copy_file_range/sendfile: no user-space buffer.
        std::io::copy(&mut src, &mut dst)
            .map_err(io("copy_file_range", format_args!("{} -> memfd", path.display())))?;
        let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // F_SEAL_WRITE waits a little for passing references to the memfd's
        // pages to go, then answers EBUSY: seen once on a machine busy with
        // make test's parallel agents. Asked again for up to ~0.5 s.
        let mut busy = 0;
        // SAFETY: fcntl on an fd we own.
        while unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            let e = nix::Error::last();
            if e != nix::Error::EBUSY || busy == SEAL_BUSY_TRIES {
                return Err(sys("fcntl(F_ADD_SEALS)", "memfd rustjail-init")(e));
            }
            busy += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(SealedBinary { fd })
    }

    /// A sealed copy of the running executable.
    pub fn current_exe() -> Result<SealedBinary> {
        Self::copy_of(Path::new("/proc/self/exe"))
    }
}

/// What to run in the new process.
pub struct SpawnSpec<'a> {
    /// The binary to execute.
    pub binary: &'a SealedBinary,
    /// argv, argv[0] first.
    pub args: Vec<CString>,
    /// Environment, `K=V`.
    pub env: Vec<CString>,
    /// Namespaces to create with the process.
    pub flags: CloneFlags,
    /// `(fd in parent, fd number in child)`; everything else is closed at exec
    /// (the runtime's fds are close-on-exec).
    pub fds: Vec<(RawFd, RawFd)>,
    /// A cgroup v2 directory (an open descriptor) to create the process in
    /// (`clone3` with `CLONE_INTO_CGROUP`): no migration afterwards, whose
    /// write lock on the threadgroup semaphore waits for an RCU grace period.
    pub cgroup: Option<RawFd>,
    /// The program is one of this binary's modes, which unblock signals and
    /// take back their CPUs before anything else ([`crate::helper::dispatch`]).
    /// The child then keeps every signal blocked through `execve`, which
    /// resets the parent's handlers, instead of reading and resetting each
    /// of the 64 first: ~70 system calls less on every container's create.
    /// And with `vfork`, it runs off the parent's CPU ([`cpu_split`]).
    pub dispatched: bool,
}

/// `CLONE_INTO_CGROUP` (linux/sched.h, 5.7): the child starts in `clone_args.cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Whether the kernel refused `clone3` itself (older than 5.7 for
/// `CLONE_INTO_CGROUP`, or a seccomp filter that answers ENOSYS), so that the
/// caller falls back to moving the process.
pub fn clone3_unsupported(e: &Error) -> bool {
    matches!(e, Error::Sys { syscall: "clone3", source, .. } if matches!(*source, nix::Error::ENOSYS | nix::Error::E2BIG | nix::Error::EINVAL))
}

/// Called with the new pid before the child may exec; used to write the
/// uid/gid maps of a new user namespace (see [`spawn_with`]).
pub type BeforeExec<'a> = &'a dyn Fn(Pid) -> Result<()>;

const CHILD_STACK: usize = 64 * 1024;

/// The step of the child that failed, sent with its errno through the error
/// pipe so that the parent names the real syscall.
#[repr(i32)]
#[derive(Clone, Copy)]
enum Step {
    Setresgid = 1,
    Setresuid = 2,
    Dup2 = 3,
    ClearCloexec = 4,
    Execveat = 5,
    UnshareFiles = 6,
}

/// What a failing child writes to the error pipe (native-endian i32s).
const REPORT_LEN: usize = 12;

struct ChildArgs {
    /// With the parent's table shared: the child keeps a copy of the entries
    /// below this number and no others (-1: the table is already its own).
    keep_below: RawFd,
    go_fd: RawFd,
    become_root: bool,
    /// Signals stay blocked through execve (see [`SpawnSpec::dispatched`]).
    keep_blocked: bool,
    exe_fd: RawFd,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    fds: Vec<(RawFd, RawFd)>,
    err_fd: RawFd,
    /// The parent's CPUs but its own, to move to first (see [`cpu_split`]).
    move_to: Option<nix::sched::CpuSet>,
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // Only async-signal-safe syscalls from here on: this is a copy of a possibly
    // multi-threaded process whose locks may be held by threads that do not
    // exist here, or (vfork) a thread borrowing its memory until it executes.
    // SAFETY: `arg` points at the ChildArgs the parent built before clone; the
    // child has its own copy of that memory, or shares it while the parent waits.
    let a = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: raw syscalls with valid arguments; no allocation.
    unsafe {
        if let Some(cpus) = &a.move_to {
            cpu_split::move_child(cpus);
        }
        if a.keep_below >= 0 {
            // First: every later step changes the table, which is still the
            // parent's. The copy of the rest is skipped, and with it the
            // flush of each of those files that execve would do.
            let r = libc::syscall(
                libc::SYS_close_range,
                a.keep_below as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            );
            // Before 5.9: a copy of the whole table, as clone would have made.
            if r != 0 && libc::unshare(libc::CLONE_FILES) != 0 {
                fail(a.err_fd, Step::UnshareFiles, 0);
            }
        }
        // The parent's signal handlers must not run here (they would act on
        // its state, in its memory with vfork): every handled signal goes back
        // to its default before any is unblocked. execve would reset them
        // anyway, so a program that unblocks them itself needs none of this.
        if !a.keep_blocked {
            for sig in 1..=64 {
                let mut old: libc::sigaction = std::mem::zeroed();
                if sig == libc::SIGKILL || sig == libc::SIGSTOP || libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                {
                    continue;
                }
                if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        }
        if a.go_fd >= 0 {
            let mut b = 0u8;
            loop {
                let n = libc::read(a.go_fd, &mut b as *mut u8 as *mut libc::c_void, 1);
                if n == 1 {
                    break;
                }
                if n == 0 || *libc::__errno_location() != libc::EINTR {
                    libc::_exit(126);
                }
            }
        }
        if a.become_root {
            // Root of the new user namespace, so that execve keeps the
            // capabilities there. Raw syscalls: libc's wrappers would try to
            // signal threads that do not exist in this child.
            if libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0 {
                fail(a.err_fd, Step::Setresgid, 0);
            }
            if libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0 {
                fail(a.err_fd, Step::Setresuid, 0);
            }
        }
        // Every source, the binary and the error pipe are above every
        // destination (see spawn_with), so no dup2 here replaces one of them.
        for &(src, dst) in &a.fds {
            if src == dst {
                let flags = libc::fcntl(src, libc::F_GETFD);
                if flags < 0 || libc::fcntl(src, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    fail(a.err_fd, Step::ClearCloexec, dst);
                }
            } else if libc::dup2(src, dst) < 0 {
                fail(a.err_fd, Step::Dup2, dst);
            }
        }
        let empty_path = b"\0";
        libc::syscall(
            libc::SYS_execveat,
            a.exe_fd,
            empty_path.as_ptr(),
            a.argv.as_ptr(),
            a.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        fail(a.err_fd, Step::Execveat, a.exe_fd)
    }
}

/// Reports the failed step, errno and fd through the close-on-exec pipe and
/// exits. Async-signal-safe: no allocation, one write.
unsafe fn fail(err_fd: RawFd, step: Step, fd: RawFd) -> ! {
    let e = *libc::__errno_location();
    let mut b = [0u8; REPORT_LEN];
    b[..4].copy_from_slice(&(step as i32).to_ne_bytes());
    b[4..8].copy_from_slice(&e.to_ne_bytes());
    b[8..].copy_from_slice(&fd.to_ne_bytes());
    libc::write(err_fd, b.as_ptr() as *const libc::c_void, REPORT_LEN);
    libc::_exit(127)
}

/// The error for a child's report: the syscall of the step that failed and what it acted on.
fn child_error(report: &[u8; REPORT_LEN]) -> Error {
    let word = |i: usize| i32::from_ne_bytes(report[i..i + 4].try_into().expect("4 bytes"));
    let (step, errno, fd) = (word(0), nix::Error::from_raw(word(4)), word(8));
    let root = "root of the new user namespace (child before exec)";
    let (syscall, what) = match step {
        s if s == Step::Setresgid as i32 => ("setresgid", root.to_string()),
        s if s == Step::Setresuid as i32 => ("setresuid", root.to_string()),
        s if s == Step::Dup2 as i32 => ("dup2", format!("child fd {fd}")),
        s if s == Step::ClearCloexec as i32 => ("fcntl(F_SETFD)", format!("child fd {fd}")),
        s if s == Step::Execveat as i32 => ("execveat", format!("sealed memfd (child fd {fd})")),
        s if s == Step::UnshareFiles as i32 => (
            "unshare(CLONE_FILES)",
            "descriptor table (child before exec)".to_string(),
        ),
        other => ("spawn", format!("unknown child step {other}")),
    };
    sys(syscall, what)(errno)
}

/// A close-on-exec copy of `fd` numbered at least `min`: the child's dup2
/// calls onto destinations below `min` then cannot replace it.
fn dup_above(fd: RawFd, min: RawFd, what: &str) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller keeps open; the copy is ours.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(sys("fcntl(F_DUPFD_CLOEXEC)", format!("{what} (fd {fd})"))(
            nix::Error::last(),
        ));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Starts the process; returns its pid once `execve` has succeeded.
pub fn spawn(spec: &SpawnSpec<'_>) -> Result<Pid> {
    spawn_with(spec, None)
}

/// Like [`spawn`]; with `before_exec`, the child waits until it has run (a new
/// user namespace needs its maps written before the child executes, or the
/// exec drops every capability), and then becomes root of its user namespace.
pub fn spawn_with(spec: &SpawnSpec<'_>, before_exec: Option<BeforeExec<'_>>) -> Result<Pid> {
    // Every descriptor the child uses after its first dup2 (the sources still
    // to copy, the binary, the error pipe) lives just above the highest
    // destination, so that no dup2 replaces one of them: a binary on fd 3
    // replaced by the sync socket made execveat fail with EACCES. (Not at a
    // fixed number: that fails with EINVAL under a lower open-file limit.)
    let above = spec.fds.iter().map(|&(_, dst)| dst + 1).max().unwrap_or(0);
    // Without a step between clone and exec, share the memory and wait for the
    // exec (as posix_spawn does): copying the page tables of a multi-threaded
    // process costs more than the rest of the spawn. With a step (user
    // namespace maps), the parent must run meanwhile: a copy.
    let vfork = before_exec.is_none();
    // With vfork the child also shares the descriptor table until it takes its
    // own copy of the low entries, where a leased group puts what it needs.
    // (Without vfork, clone copies the whole table: the user-namespace path
    // still pays for that.)
    let mut lease = if vfork {
        low_fds::Lease::take(spec.fds.len() + 2, above)
    } else {
        None
    };
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2", "spawn"))?;
    let mut held = Vec::new();
    // The number the child finds `fd` under: a slot of the lease, else `fd`
    // itself when it is above every destination and `may_stay`, else a copy
    // just above them (kept in `held` until the child has its table).
    let mut to_child = |fd: RawFd, may_stay: bool, what: &str| -> Result<RawFd> {
        match lease.as_mut() {
            Some(l) => l.place(fd, what),
            None if may_stay && fd >= above => Ok(fd),
            None => {
                let high = dup_above(fd, above, what)?;
                let n = high.as_raw_fd();
                held.push(high);
                Ok(n)
            }
        }
    };
    let err_child = to_child(err_w.as_raw_fd(), true, "spawn error pipe")?;
    let exe_child = to_child(spec.binary.fd.as_raw_fd(), true, "sealed memfd")?;
    // Always a copy: a source may be another's destination.
    let fds = spec
        .fds
        .iter()
        .map(|&(src, dst)| Ok((to_child(src, false, "spawn source")?, dst)))
        .collect::<Result<Vec<_>>>()?;
    let go = match before_exec {
        Some(_) => Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2", "spawn go"))?),
        None => None,
    };
    let keep_below = if vfork {
        fds.iter()
            .map(|&(src, _)| src)
            .chain([err_child, exe_child])
            .max()
            .unwrap_or(0)
            + 1
    } else {
        -1
    };
    // Last before the clone: this thread stays pinned until it returns.
    let split = if vfork && spec.dispatched {
        cpu_split::Split::pin_here()
    } else {
        None
    };
    let split_env = split.as_ref().map(|s| s.env());
    let mut argv: Vec<*const libc::c_char> = spec.args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.env.iter().chain(&split_env).map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let args = ChildArgs {
        keep_below,
        go_fd: go.as_ref().map(|(r, _)| r.as_raw_fd()).unwrap_or(-1),
        become_root: before_exec.is_some() && spec.flags.contains(CloneFlags::CLONE_NEWUSER),
        keep_blocked: spec.dispatched,
        exe_fd: exe_child,
        argv,
        envp,
        fds,
        err_fd: err_child,
        move_to: split.as_ref().map(|s| s.child),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down: hand clone the 16-byte aligned top.
    let top = ((stack.as_mut_ptr() as usize + CHILD_STACK) & !15) as *mut libc::c_void;
    let share = if vfork {
        libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES
    } else {
        0
    };
    // No signal is delivered to the child before it resets the handlers.
    // SAFETY: sigset manipulation on local values; pthread_sigmask of this thread.
    let saved = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut saved: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut saved);
        saved
    };
    let (pid, clone_err) = match spec.cgroup {
        // SAFETY: child_main only runs async-signal-safe syscalls on its own stack;
        // without CLONE_VM the child works on a copy of `args` and `stack`, with it
        // this thread is suspended (CLONE_VFORK) until the child has executed or exited.
        None => unsafe {
            let pid = libc::clone(
                child_main,
                top,
                spec.flags.bits() | share | libc::SIGCHLD,
                &args as *const ChildArgs as *mut libc::c_void,
            );
            (pid, nix::Error::last())
        },
        // clone3 has no function-and-stack form: the child returns from the
        // syscall like fork's, so it needs its own copy of the memory (no
        // CLONE_VM); CLONE_VFORK still holds this thread until the exec.
        Some(cg) => {
            let cargs = CloneArgs {
                flags: spec.flags.bits() as u64
                    | CLONE_INTO_CGROUP
                    | if vfork {
                        (libc::CLONE_VFORK | libc::CLONE_FILES) as u64
                    } else {
                        0
                    },
                exit_signal: libc::SIGCHLD as u64,
                cgroup: cg as u64,
                ..CloneArgs::default()
            };
            // SAFETY: clone3 with a valid, fully initialised clone_args and its size.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &cargs as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            if ret == 0 {
                // The child, on a copy of this stack: child_main executes or exits.
                child_main(&args as *const ChildArgs as *mut libc::c_void);
                // SAFETY: _exit is async-signal-safe; child_main does not return.
                unsafe { libc::_exit(127) };
            }
            (ret as libc::pid_t, nix::Error::last())
        }
    };
    // SAFETY: restores this thread's mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    drop(split);
    if pid < 0 {
        let call = if spec.cgroup.is_some() { "clone3" } else { "clone" };
        return Err(sys(call, format!("flags {:?}", spec.flags))(clone_err));
    }
    // The child has its own table now (vfork: it has executed or exited; else
    // clone copied it): the parent's copies go, the error pipe's write end
    // with them, so that the read below sees its end.
    drop(lease);
    drop(held);
    drop(err_w);
    let pid = Pid::from_raw(pid);
    if let (Some(f), Some((go_r, go_w))) = (before_exec, go) {
        drop(go_r);
        let ready = f(pid);
        if let Err(e) = ready {
            // Closing the pipe unread makes the child exit.
            drop(go_w);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(e);
        }
        nix::unistd::write(&go_w, b"g").map_err(sys("write", "spawn go pipe"))?;
    }
    let mut buf = [0u8; REPORT_LEN];
    let mut f = File::from(err_r);
    match f.read(&mut buf) {
        Ok(REPORT_LEN) => {
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(child_error(&buf))
        }
        Ok(_) => Ok(pid),
        Err(e) => Err(Error::Io {
            op: "read",
            path: "spawn error pipe".into(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn cstrings(v: &[&str]) -> Vec<CString> {
        v.iter().map(|s| CString::new(*s).unwrap()).collect()
    }

    /// `sh -c script` from the sealed copy `bin` of a shell, with `fds`.
    fn spawn_sh(bin: &SealedBinary, script: &str, fds: Vec<(RawFd, RawFd)>) -> Result<Pid> {
        spawn(&SpawnSpec {
            binary: bin,
            args: cstrings(&["sh", "-c", script]),
            env: vec![],
            flags: CloneFlags::empty(),
            fds,
            cgroup: None,
            dispatched: false,
        })
    }

    fn exit_code(pid: Pid) -> i32 {
        match nix::sys::wait::waitpid(pid, None).unwrap() {
            nix::sys::wait::WaitStatus::Exited(_, c) => c,
            other => panic!("child ended with {other:?}"),
        }
    }

    /// The blocked signals a program starts with, as /proc/self/status's
    /// SigBlk shows them in hex.
    fn blocked_at_start(dispatched: bool) -> u64 {
        // Not a shell: dash empties its mask when it starts.
        let bin = SealedBinary::copy_of(Path::new("/bin/grep")).unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        let pid = spawn(&SpawnSpec {
            binary: &bin,
            args: cstrings(&["grep", "SigBlk", "/proc/self/status"]),
            env: vec![],
            flags: CloneFlags::empty(),
            fds: vec![(w.as_raw_fd(), 1)],
            cgroup: None,
            dispatched,
        })
        .unwrap();
        drop(w);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(exit_code(pid), 0);
        let hex = out
            .trim()
            .strip_prefix("SigBlk:")
            .unwrap_or_else(|| panic!("{out:?}"))
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    }

    /// A program that unblocks signals itself gets them all blocked (no
    /// handler of the parent could run before the exec); any other starts
    /// with none blocked, whatever the spawning thread had blocked.
    #[test]
    fn signals_stay_blocked_only_for_a_program_that_unblocks_them() {
        assert_eq!(blocked_at_start(false), 0);
        let blocked = blocked_at_start(true);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD, libc::SIGUSR1] {
            assert_ne!(blocked & (1 << (sig - 1)), 0, "signal {sig} not blocked: {blocked:#x}");
        }
    }

    /// A dispatched program starts off the spawning thread's CPU, told (in
    /// the environment) the CPUs to take back; the thread gets them back.
    #[test]
    fn a_dispatched_program_starts_off_the_parents_cpu() {
        std::thread::spawn(|| {
            let allowed = || std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let line = |status: &str, key: &str| {
                let l = status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .unwrap_or_else(|| panic!("{status}"));
                l.split_once(':').unwrap().1.trim().to_string()
            };
            let before = line(&allowed(), "Cpus_allowed_list");
            let bin = SealedBinary::copy_of(Path::new("/bin/sh")).unwrap();
            let (mut r, w) = std::io::pipe().unwrap();
            let script = "grep Cpus_allowed_list /proc/self/status; echo \"cpus=$_RUSTJAIL_CPUS\"";
            let pid = spawn(&SpawnSpec {
                binary: &bin,
                args: cstrings(&["sh", "-c", script]),
                env: vec![],
                flags: CloneFlags::empty(),
                fds: vec![(w.as_raw_fd(), 1)],
                cgroup: None,
                dispatched: true,
            })
            .unwrap();
            drop(w);
            let mut out = String::new();
            r.read_to_string(&mut out).unwrap();
            assert_eq!(exit_code(pid), 0);
            assert_eq!(
                line(&allowed(), "Cpus_allowed_list"),
                before,
                "the thread's CPUs are back"
            );
            let child = line(&out, "Cpus_allowed_list");
            let n = {
                let s = nix::sched::sched_getaffinity(Pid::from_raw(0)).unwrap();
                (0..nix::sched::CpuSet::count())
                    .filter(|&c| s.is_set(c).unwrap())
                    .count()
            };
            if n > 1 {
                assert_ne!(child, before, "one CPU fewer than {before}");
                let told = out.lines().find_map(|l| l.strip_prefix("cpus=")).unwrap();
                let ranges = |list: &str| -> Vec<usize> {
                    list.split(',')
                        .flat_map(|r| match r.split_once('-') {
                            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
                            None => vec![r.parse().unwrap()],
                        })
                        .collect()
                };
                assert_eq!(ranges(told), ranges(&before), "told the parent's CPUs");
                assert_eq!(ranges(&child).len() + 1, ranges(&before).len());
            } else {
                assert_eq!(child, before, "one CPU: nothing moves");
                assert!(out.contains("cpus=\n"), "{out}");
            }
        })
        .join()
        .unwrap();
    }

    /// The binary's own fd number as a destination (what the agent's sync
    /// socket on fd 3 did to a memfd that landed on fd 3): the child still
    /// executes the binary, and the destination holds the caller's pipe.
    #[test]
    fn a_destination_on_the_binarys_fd_does_not_replace_the_binary() {
        let bin = SealedBinary::copy_of(Path::new("/bin/sh")).unwrap();
        let n = bin.fd.as_raw_fd();
        let (mut r, w) = std::io::pipe().unwrap();
        // Through /proc: dash takes only one-digit numbers after >&.
        let script = format!("echo on-fd-{n} > /proc/self/fd/{n}");
        let pid = spawn_sh(&bin, &script, vec![(w.as_raw_fd(), n)])
            .unwrap_or_else(|e| panic!("spawn with fd {n} as a destination: {e}"));
        drop(w);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, format!("on-fd-{n}\n"));
        assert_eq!(exit_code(pid), 0);
    }

    /// Destinations on the low numbers the error pipe and the binary would
    /// take in a process with few fds open, from many threads at once (fds
    /// created by one thread are inherited by another's child until it execs).
    #[test]
    fn concurrent_spawns_onto_low_fds_all_execute() {
        let bin = SealedBinary::copy_of(Path::new("/bin/true")).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        let null = File::open("/dev/null").unwrap();
                        let fds = (3..8).map(|dst| (null.as_raw_fd(), dst)).collect();
                        let pid = spawn(&SpawnSpec {
                            binary: &bin,
                            args: cstrings(&["true"]),
                            env: vec![],
                            flags: CloneFlags::empty(),
                            fds,
                            cgroup: None,
                            dispatched: false,
                        })
                        .unwrap();
                        assert_eq!(exit_code(pid), 0);
                    }
                });
            }
        });
    }

    /// A descriptor the parent left open across exec (no close-on-exec), above
    /// every descriptor the spawn hands over, does not reach the child: the
    /// child copies only the low entries of the table (with or without a
    /// reserved group), where before it copied every entry.
    #[test]
    fn a_high_descriptor_without_cloexec_stays_in_the_parent() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit into a local struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let high = (lim.rlim_cur.min(4096) - 1) as RawFd;
        let null = File::open("/dev/null").unwrap();
        // SAFETY: dup2 onto a number nothing in this test process uses; closed below.
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), high) }, high);
        let bin = SealedBinary::copy_of(Path::new("/bin/sh")).unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        let script = format!("if [ -e /proc/self/fd/{high} ]; then echo leaked; else echo absent; fi");
        let pid = spawn_sh(&bin, &script, vec![(w.as_raw_fd(), 1)]).unwrap();
        drop(w);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        // SAFETY: closes the descriptor this test made.
        unsafe { libc::close(high) };
        assert_eq!(exit_code(pid), 0);
        assert_eq!(out, "absent\n", "fd {high}");
    }

    /// A child that fails names its own step, not execveat for everything.
    #[test]
    fn a_failing_exec_names_execveat_and_the_fd() {
        let dir = std::env::temp_dir().join(format!("rustjail-spawn-{}", std::process::id()));
        std::fs::write(&dir, b"not a program\n").unwrap();
        let bin = SealedBinary::copy_of(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let e = spawn(&SpawnSpec {
            binary: &bin,
            args: cstrings(&["x"]),
            env: vec![],
            flags: CloneFlags::empty(),
            fds: vec![],
            cgroup: None,
            dispatched: false,
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("execveat") && text.contains("sealed memfd"), "{text}");
        assert!(
            matches!(
                e,
                Error::Sys {
                    source: nix::Error::ENOEXEC,
                    ..
                }
            ),
            "{text}"
        );
    }

    /// setresgid in a user namespace whose maps were never written fails in
    /// the child, and the error says so.
    #[test]
    #[cfg_attr(not(pith_root), ignore = "needs root")]
    fn an_unmapped_user_namespace_names_setresgid() {
        let bin = SealedBinary::copy_of(Path::new("/bin/true")).unwrap();
        let no_maps = |_pid: Pid| -> Result<()> { Ok(()) };
        let e = spawn_with(
            &SpawnSpec {
                binary: &bin,
                args: cstrings(&["true"]),
                env: vec![],
                flags: CloneFlags::CLONE_NEWUSER,
                fds: vec![],
                cgroup: None,
                dispatched: false,
            },
            Some(&no_maps),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("setresgid"), "{text}");
    }
}
