//! Device nodes inside a running container. `setns(CLONE_NEWNS)` fails in a
//! multi-threaded process, so the work runs in rustjail's one-shot helper
//! ([`MODE`]): the agent's binary, started from rustjail's sealed copy,
//! single-threaded, already in the container's mount namespace and root
//! ([`rustjail::Runtime::run_in`]). It makes or removes the node (and mounts
//! or unmounts its filesystem) and answers what it did.

use nix::sys::stat::{lstat, makedev, mknod, Mode, SFlag};
use serde::{Deserialize, Serialize};

/// The helper mode that makes and removes device nodes.
pub const MODE: rustjail::helper::Mode = rustjail::helper::Mode::op("device-node", op);
/// Failure kind: the path exists and is something else.
const EXIT_CONFLICT: i32 = 10;

/// Make or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeOp {
    /// `mknod` (or accept an identical node), then owner and mode.
    Add,
    /// Unlink the node if it is this device.
    Remove,
}

/// One node operation inside a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    /// What to do.
    pub op: NodeOp,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The helper's answer.
#[derive(Debug, Serialize, Deserialize)]
enum NodeReply {
    Done(NodeOutcome),
    Conflict(String),
}

/// Runs `req` inside `container` in a fresh helper process. Blocks: call on a
/// blocking thread.
pub fn run(
    runtime: &rustjail::Runtime,
    container: &rustjail::Container,
    req: &NodeRequest,
) -> Result<NodeOutcome, NodeError> {
    let payload = serde_json::to_value(req).map_err(|e| NodeError::Failed(format!("encode node request: {e}")))?;
    let answer = runtime
        .run_in(
            container,
            MODE.name(),
            &[oci_spec::runtime::LinuxNamespaceType::Mount],
            payload,
        )
        .map_err(|e| NodeError::Failed(format!("device node {} : {e}", req.path)))?;
    match serde_json::from_value(answer) {
        Ok(NodeReply::Done(o)) => Ok(o),
        Ok(NodeReply::Conflict(m)) => Err(NodeError::Conflict(m)),
        Err(e) => Err(NodeError::Failed(format!("device node helper: bad answer: {e}"))),
    }
}

/// In the helper, already in the container's mount namespace and root.
fn op(payload: serde_json::Value) -> Result<serde_json::Value, String> {
    let req: NodeRequest = serde_json::from_value(payload).map_err(|e| format!("bad node request: {e}"))?;
    let reply = match helper(&req) {
        Ok(o) => NodeReply::Done(o),
        Err((EXIT_CONFLICT, m)) => NodeReply::Conflict(m),
        Err((_, m)) => return Err(m),
    };
    serde_json::to_value(reply).map_err(|e| e.to_string())
}

fn helper(req: &NodeRequest) -> Result<NodeOutcome, (i32, String)> {
    let fail = |m: String| (1, m);
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
            Ok(if created {
                NodeOutcome::Created
            } else {
                NodeOutcome::Existed
            })
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
) -> Result<NodeOutcome, (i32, String)> {
    let fail = |m: String| (1, m);
    let path = std::path::Path::new(&req.path);
    match existing {
        None => Ok(NodeOutcome::Absent),
        Some(st) if same(&st) => {
            nix::unistd::unlink(path).map_err(|e| fail(format!("unlink {} in container: {e}", req.path)))?;
            Ok(NodeOutcome::Removed)
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
