//! Device nodes inside a running container. `setns(CLONE_NEWNS)` fails in a
//! multi-threaded process, so the agent re-executes itself as a one-shot,
//! single-threaded helper ([`run_if_helper`], called first thing in `main`):
//! the helper enters the container's mount namespace and root, makes or
//! removes the node, prints what it did and exits. No Rust code runs between
//! fork and exec in the agent.

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::{lstat, makedev, mknod, Mode, SFlag};
use serde::{Deserialize, Serialize};

/// Environment variable that carries the request and turns the binary into the helper.
const HELPER_ENV: &str = "PITH_DEVICE_NODE_HELPER";
/// Helper exit status: the path exists and is something else.
const EXIT_CONFLICT: i32 = 10;

/// Make or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeOp {
    /// `mknod` (or accept an identical node), then owner and mode.
    Add,
    /// Unlink the node if it is this device.
    Remove,
}

/// One node operation in the mount namespace of process `pid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    /// What to do.
    pub op: NodeOp,
    /// A process of the container (its init), in the agent's PID namespace.
    pub pid: i32,
    /// Absolute path inside the container.
    pub path: String,
    /// Device major.
    pub major: u32,
    /// Device minor.
    pub minor: u32,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Filesystem to mount from the node (add) or unmount (remove).
    #[serde(default)]
    pub mount: Option<NodeMount>,
}

/// A mount of the device's filesystem inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMount {
    /// Absolute mount point inside the container.
    pub target: String,
    /// Filesystem type.
    pub fstype: String,
    /// MS_* flags (bits).
    pub flags: u64,
    /// Filesystem data (comma-separated options).
    pub data: String,
}

/// What the helper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOutcome {
    /// A new node was made.
    Created,
    /// The node was already there (same device); owner and mode were set again.
    Existed,
    /// The node was removed.
    Removed,
    /// There was nothing to remove.
    Absent,
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The path exists and is not this device.
    #[error("{0}")]
    Conflict(String),
    /// Anything else (the message names the syscall and path).
    #[error("{0}")]
    Failed(String),
}

/// Runs `req` in a fresh helper process. The agent reaps every child on
/// SIGCHLD, so the helper's exit comes from `reaper`, not from `waitpid`.
pub async fn run(req: &NodeRequest, reaper: &crate::reaper::Reaper) -> Result<NodeOutcome, NodeError> {
    use std::io::Read;
    let json = serde_json::to_string(req).map_err(|e| NodeError::Failed(format!("encode node request: {e}")))?;
    let mut child = Command::new("/proc/self/exe")
        .env(HELPER_ENV, json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NodeError::Failed(format!("start device node helper (execve /proc/self/exe): {e}")))?;
    let pid = child.id() as i32;
    let mut exited = reaper.watch(pid);
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (stdout, stderr) = tokio::task::spawn_blocking(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    })
    .await
    .map_err(|e| NodeError::Failed(format!("worker thread: {e}")))?;
    let exit = exited
        .wait_for(|e| e.is_some())
        .await
        .ok()
        .and_then(|e| *e)
        .ok_or_else(|| NodeError::Failed(format!("device node helper {pid}: exit status lost")))?;
    let stderr = stderr.trim().to_string();
    match exit {
        crate::reaper::Exit::Code(0) => match stdout.trim() {
            "created" => Ok(NodeOutcome::Created),
            "existed" => Ok(NodeOutcome::Existed),
            "removed" => Ok(NodeOutcome::Removed),
            "absent" => Ok(NodeOutcome::Absent),
            other => Err(NodeError::Failed(format!("device node helper said {other:?}"))),
        },
        crate::reaper::Exit::Code(EXIT_CONFLICT) => Err(NodeError::Conflict(stderr)),
        other => Err(NodeError::Failed(format!(
            "device node helper for {} in process {} failed ({other:?}): {stderr}",
            req.path, req.pid
        ))),
    }
}

/// In the helper process: do the request in the environment and exit. Returns
/// at once in any other process.
pub fn run_if_helper() {
    let Ok(json) = std::env::var(HELPER_ENV) else {
        return;
    };
    let req: NodeRequest = match serde_json::from_str(&json) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("device node helper: bad request: {e}");
            std::process::exit(1);
        }
    };
    match helper(&req) {
        Ok(what) => {
            println!("{what}");
            std::process::exit(0);
        }
        Err((code, msg)) => {
            eprintln!("{msg}");
            std::process::exit(code);
        }
    }
}

fn helper(req: &NodeRequest) -> Result<&'static str, (i32, String)> {
    let fail = |m: String| (1, m);
    let root_path = format!("/proc/{}/root", req.pid);
    let root = open(
        root_path.as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("open {root_path}: {e}")))?;
    let ns_path = format!("/proc/{}/ns/mnt", req.pid);
    let ns = open(ns_path.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| fail(format!("open {ns_path}: {e}")))?;
    let ns = unsafe_owned(ns);
    let root = unsafe_owned(root);
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| fail(format!("setns({ns_path}, CLONE_NEWNS): {e}")))?;
    nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&root))
        .map_err(|e| fail(format!("fchdir({root_path}): {e}")))?;
    nix::unistd::chroot(".").map_err(|e| fail(format!("chroot({root_path}): {e}")))?;
    nix::unistd::chdir("/").map_err(|e| fail(format!("chdir(/) in {root_path}: {e}")))?;
    nix::sys::stat::umask(Mode::empty());

    let path = std::path::Path::new(&req.path);
    let want = makedev(u64::from(req.major), u64::from(req.minor));
    let existing = match lstat(path) {
        Ok(st) => Some(st),
        Err(nix::errno::Errno::ENOENT) => None,
        Err(e) => return Err(fail(format!("lstat {} in container: {e}", req.path))),
    };
    let same = |st: &nix::sys::stat::FileStat| (st.st_mode & libc::S_IFMT) == libc::S_IFBLK && st.st_rdev == want;
    let describe = |st: &nix::sys::stat::FileStat| {
        if (st.st_mode & libc::S_IFMT) == libc::S_IFBLK {
            format!("block device {}:{}", libc::major(st.st_rdev), libc::minor(st.st_rdev))
        } else {
            format!("not a block device (mode {:o})", st.st_mode)
        }
    };
    match req.op {
        NodeOp::Add => {
            let created = match existing {
                Some(st) if same(&st) => false,
                Some(st) => {
                    return Err((
                        EXIT_CONFLICT,
                        format!(
                            "{} exists in the container and is {}, not block device {}:{}",
                            req.path,
                            describe(&st),
                            req.major,
                            req.minor
                        ),
                    ))
                }
                None => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| fail(format!("mkdir -p {} in container: {e}", parent.display())))?;
                    }
                    let perm = Mode::from_bits_truncate(req.mode & 0o7777);
                    mknod(path, SFlag::S_IFBLK, perm, want)
                        .map_err(|e| fail(format!("mknod {} (b {}:{}): {e}", req.path, req.major, req.minor)))?;
                    true
                }
            };
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(req.uid)),
                Some(nix::unistd::Gid::from_raw(req.gid)),
            )
            .map_err(|e| fail(format!("chown {} {}:{}: {e}", req.path, req.uid, req.gid)))?;
            nix::sys::stat::fchmodat(
                None,
                path,
                Mode::from_bits_truncate(req.mode & 0o7777),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| fail(format!("chmod {} {:o}: {e}", req.path, req.mode)))?;
            if let Some(m) = &req.mount {
                mount_fs(req, m, want)?;
            }
            Ok(if created { "created" } else { "existed" })
        }
        NodeOp::Remove => {
            if let Some(m) = &req.mount {
                unmount_fs(m, want)?;
            }
            remove_node(req, existing, same, describe)
        }
    }
}

/// Whether `target` is the root of a mount of device `dev`.
fn mounted_from(target: &str, dev: u64) -> bool {
    match (lstat(target), lstat(format!("{target}/..").as_str())) {
        (Ok(t), Ok(parent)) => t.st_dev == dev && parent.st_dev != dev,
        _ => false,
    }
}

fn mount_fs(req: &NodeRequest, m: &NodeMount, dev: u64) -> Result<(), (i32, String)> {
    if mounted_from(&m.target, dev) {
        return Ok(());
    }
    std::fs::create_dir_all(&m.target).map_err(|e| (1, format!("mkdir -p {} in container: {e}", m.target)))?;
    let flags = nix::mount::MsFlags::from_bits_truncate(m.flags as libc::c_ulong);
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    nix::mount::mount(
        Some(req.path.as_str()),
        m.target.as_str(),
        Some(m.fstype.as_str()),
        flags,
        data,
    )
    .map_err(|e| {
        (
            1,
            format!("mount({} -> {}, {}) in container: {e}", req.path, m.target, m.fstype),
        )
    })
}

fn unmount_fs(m: &NodeMount, dev: u64) -> Result<(), (i32, String)> {
    if !mounted_from(&m.target, dev) {
        return Ok(());
    }
    nix::mount::umount2(m.target.as_str(), nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| (1, format!("umount2({}, MNT_DETACH) in container: {e}", m.target)))
}

fn remove_node(
    req: &NodeRequest,
    existing: Option<nix::sys::stat::FileStat>,
    same: impl Fn(&nix::sys::stat::FileStat) -> bool,
    describe: impl Fn(&nix::sys::stat::FileStat) -> String,
) -> Result<&'static str, (i32, String)> {
    let fail = |m: String| (1, m);
    let path = std::path::Path::new(&req.path);
    match existing {
        None => Ok("absent"),
        Some(st) if same(&st) => {
            nix::unistd::unlink(path).map_err(|e| fail(format!("unlink {} in container: {e}", req.path)))?;
            Ok("removed")
        }
        Some(st) => Err((
            EXIT_CONFLICT,
            format!(
                "{} in the container is {}, not block device {}:{}; left alone",
                req.path,
                describe(&st),
                req.major,
                req.minor
            ),
        )),
    }
}

fn unsafe_owned(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}
