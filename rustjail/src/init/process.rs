//! The last steps before the user's program: limits, credentials, capabilities,
//! seccomp, working directory, descriptors, and `execve`.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capability, LinuxCapabilities, PosixRlimit, Process};

use crate::error::{io, sys, Error, Result};

/// Applies rlimits (before credentials change: raising a hard limit needs privilege).
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for r in rlimits {
        let name = r.typ().to_string();
        let resource = match name.as_str() {
            "RLIMIT_CPU" => libc::RLIMIT_CPU,
            "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
            "RLIMIT_DATA" => libc::RLIMIT_DATA,
            "RLIMIT_STACK" => libc::RLIMIT_STACK,
            "RLIMIT_CORE" => libc::RLIMIT_CORE,
            "RLIMIT_RSS" => libc::RLIMIT_RSS,
            "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
            "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
            "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
            "RLIMIT_AS" => libc::RLIMIT_AS,
            "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
            "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
            "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
            "RLIMIT_NICE" => libc::RLIMIT_NICE,
            "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
            "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
            other => return Err(Error::Spec(format!("unknown rlimit {other}"))),
        };
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit with a valid resource and a pointer to a live struct.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(sys("setrlimit", &name)(nix::Error::last()));
        }
    }
    Ok(())
}

fn cap_set(list: &Option<HashSet<Capability>>) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in list.iter().flatten() {
        let name = format!("CAP_{c}");
        // A capability this kernel or the caps crate does not know is skipped, as runc does.
        if let Ok(cap) = Cap::from_str(&name) {
            out.insert(cap);
        }
    }
    Ok(out)
}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> Error {
    move |e| Error::Init(format!("{what}: {e}"))
}

/// Drops the bounding set to what the spec allows. Must precede the uid change.
pub fn drop_bounding(c: &Option<LinuxCapabilities>) -> Result<()> {
    let keep = cap_set(&c.as_ref().and_then(|c| c.bounding().clone()))?;
    for cap in caps::all().into_iter().filter(|c| !keep.contains(c)) {
        // Dropped without asking first (one prctl each, not two); a refusal
        // matters only for a capability still in the set (one this kernel
        // does not know is refused with EINVAL and is not there).
        if let Err(e) = caps::drop(None, CapSet::Bounding, cap) {
            if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                return Err(caps_err("prctl(PR_CAPBSET_DROP)")(e));
            }
        }
    }
    Ok(())
}

/// Switches to the process user and groups, keeping capabilities across the
/// switch so that [`set_capabilities`] can set exactly the spec's sets.
pub fn set_user(p: &Process) -> Result<()> {
    let u = p.user();
    let groups: Vec<Gid> = u
        .additional_gids()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    // setgroups is refused in a user namespace whose setgroups file says deny.
    match nix::unistd::setgroups(&groups) {
        Ok(()) => {}
        Err(nix::Error::EPERM) if groups.is_empty() => {}
        Err(e) => return Err(sys("setgroups", format_args!("{groups:?}"))(e)),
    }
    // SAFETY: prctl with a constant option.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(sys("prctl(PR_SET_KEEPCAPS)", "1")(nix::Error::last()));
    }
    let gid = Gid::from_raw(u.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setresgid", gid))?;
    let uid = Uid::from_raw(u.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setresuid", uid))?;
    if let Some(mask) = u.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

/// Sets the effective, permitted, inheritable and ambient sets. The first three
/// go in one `capset` call: set one by one, an intermediate state (effective not
/// within permitted) would be refused.
///
/// With `keep_sys_admin`, CAP_SYS_ADMIN stays in the effective and permitted
/// sets, so that a seccomp filter can still be installed without
/// no_new_privs. That changes nothing for the program: `execve` computes its
/// sets from the inheritable, bounding and ambient sets (and the file's
/// capabilities), never from the caller's effective or permitted sets.
pub fn set_capabilities(c: &Option<LinuxCapabilities>, keep_sys_admin: bool) -> Result<()> {
    let get =
        |f: fn(&LinuxCapabilities) -> &Option<HashSet<Capability>>| cap_set(&c.as_ref().and_then(|c| f(c).clone()));
    let mut permitted = get(|c| c.permitted())?;
    let mut effective = get(|c| c.effective())?;
    if keep_sys_admin {
        permitted.insert(Cap::CAP_SYS_ADMIN);
        effective.insert(Cap::CAP_SYS_ADMIN);
    }
    let inheritable = get(|c| c.inheritable())?;
    let ambient = get(|c| c.ambient())?;
    let mask = |set: &CapsHashSet| set.iter().fold(0u64, |m, c| m | (1u64 << c.index()));
    let (e, p, i) = (mask(&effective), mask(&permitted), mask(&inheritable));
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        Data {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        Data {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: capset (_LINUX_CAPABILITY_VERSION_3) with a valid header and two data words.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } != 0 {
        return Err(sys(
            "capset",
            format!("effective {e:#x} permitted {p:#x} inheritable {i:#x}"),
        )(nix::Error::last()));
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"))?;
    for cap in ambient {
        // Ambient needs the cap in permitted and inheritable; skip quietly otherwise, as runc.
        let _ = caps::raise(None, CapSet::Ambient, cap);
    }
    Ok(())
}

/// Finds `arg0` on the spec's PATH (or as given when it contains a '/'), in
/// the container's root (entered already); `rootfs` (its path on the host)
/// only names it in the error.
pub fn find_program(arg0: &str, env: &[String], rootfs: &Path) -> Result<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let candidates: Vec<PathBuf> = if arg0.contains('/') {
        vec![PathBuf::from(arg0)]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(arg0))
            .collect()
    };
    if let Some(found) = candidates.iter().find(|c| executable(c)) {
        return Ok(found.clone());
    }
    let looked = if arg0.contains('/') {
        "not found or not executable".to_string()
    } else {
        format!("not found in $PATH ({path})")
    };
    // The usual cause: a symlink made on the host to an absolute host path
    // (busybox --install -s), which does not resolve inside the container.
    let dangling = candidates
        .iter()
        .find_map(|c| {
            let target = std::fs::read_link(c).ok()?;
            (!c.exists()).then(|| {
                format!(
                    "; {} is a symlink to {}, which does not exist in the container",
                    c.display(),
                    target.display()
                )
            })
        })
        .unwrap_or_default();
    Err(Error::Init(format!(
        "executable {arg0:?} {looked} in rootfs {}{dangling}",
        rootfs.display()
    )))
}

/// Closes every descriptor above stderr (close_range with CLOEXEC, so a
/// descriptor still needed until exec, like the sync socket, works until then).
pub fn close_extra_fds() -> Result<()> {
    // SAFETY: close_range on a valid range; CLOSE_RANGE_CLOEXEC only marks them.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if r != 0 {
        return Err(sys("close_range", "3..")(nix::Error::last()));
    }
    Ok(())
}

/// The user's program with its argv and environment as C strings, built
/// before the last steps so that `execve` itself allocates nothing.
pub struct Prepared {
    program: CString,
    shown: String,
    _args: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Prepared {
    /// Converts the program path, `process.args` and `process.env`.
    pub fn new(program: &Path, p: &Process) -> Result<Prepared> {
        let cstr = |s: &[u8]| CString::new(s).map_err(|_| Error::Spec("NUL byte in args or env".into()));
        let list = |v: &Option<Vec<String>>| {
            v.as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|a| cstr(a.as_bytes()))
                .collect::<Result<Vec<_>>>()
        };
        let args = list(p.args())?;
        let env = list(p.env())?;
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(Prepared {
            program: cstr(program.as_os_str().as_bytes())?,
            shown: program.display().to_string(),
            argv: ptrs(&args),
            envp: ptrs(&env),
            _args: args,
            _env: env,
        })
    }

    /// Replaces this process with the program; returns only on failure.
    pub fn exec(&self) -> Error {
        // An ignored signal stays ignored across execve, and a blocked one
        // blocked: Rust's runtime ignores SIGPIPE here, and whatever started
        // the agent may have ignored or blocked others. The container's
        // programs start with every signal at its default and none blocked
        // (`yes | head` must end when head does). SIGKILL and SIGSTOP refuse
        // (they are never ignored): nothing to do.
        // The raw call: the C library's signal() refuses the numbers it keeps
        // for itself (32 and 33 under glibc), which an ignoring parent leaves
        // ignored all the same.
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64 {
            // SAFETY: rt_sigaction with a valid struct of the kernel's layout and its size (8).
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
        crate::helper::unblock_all_signals();
        // SAFETY: execve with NUL-terminated strings and NULL-terminated pointer
        // arrays that `self` keeps alive.
        unsafe { libc::execve(self.program.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        sys("execve", &self.shown)(nix::Error::last())
    }
}

/// `struct sigaction` as the kernel's rt_sigaction takes it (not the C library's).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Writes the OOM score adjustment.
pub fn set_oom_score_adj(v: i32) -> Result<()> {
    std::fs::write("/proc/self/oom_score_adj", v.to_string()).map_err(io("write", "/proc/self/oom_score_adj"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn a_missing_program_names_itself_the_path_and_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let env = [format!("PATH={}", bin.display())];
        let e = find_program("sh", &env, Path::new("/var/rootfs")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "container init: executable \"sh\" not found in $PATH ({}) in rootfs /var/rootfs",
                bin.display()
            )
        );
        let e = find_program("/bin/nothing-here", &env, Path::new("/var/rootfs")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("\"/bin/nothing-here\" not found or not executable in rootfs /var/rootfs"),
            "{e}"
        );
    }

    #[test]
    fn a_dangling_symlink_on_path_is_named_with_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        symlink("/no/such/rootfs/bin/busybox", bin.join("sh")).unwrap();
        let env = [format!("PATH={}", bin.display())];
        let msg = find_program("sh", &env, Path::new("/r")).unwrap_err().to_string();
        assert!(
            msg.ends_with(&format!(
                "in rootfs /r; {}/sh is a symlink to /no/such/rootfs/bin/busybox, which does not exist in the container",
                bin.display()
            )),
            "{msg}"
        );
        // An executable further on PATH is found.
        let later = dir.path().join("later");
        std::fs::create_dir(&later).unwrap();
        std::fs::write(later.join("sh"), b"#!/bin/true\n").unwrap();
        std::fs::set_permissions(later.join("sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = [format!("PATH={}:{}", bin.display(), later.display())];
        assert_eq!(find_program("sh", &env, Path::new("/r")).unwrap(), later.join("sh"));
    }

    #[test]
    fn an_init_error_is_reported_without_its_prefix() {
        assert_eq!(Error::Init("x".into()).init_report(), "x");
        assert_eq!(Error::Spec("y".into()).init_report(), "invalid spec: y");
    }
}
