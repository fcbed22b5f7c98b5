//! Messages between the runtime and a container's init over a socketpair:
//! a 4-byte big-endian length, then JSON.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{io, Error, Result};

/// Largest message accepted (a spec with many mounts stays far below).
const MAX_MESSAGE: usize = 16 << 20;

/// What the runtime tells a new init.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitConfig {
    /// Container id.
    pub id: String,
    /// The runtime spec, boxed: held by value (3 KB), it was copied into every
    /// frame that held the config, and each init probed and faulted in those
    /// frames' pages of stack.
    #[serde(with = "crate::spec_wire::boxed_spec")]
    pub spec: Box<Spec>,
    /// Absolute path of the root filesystem on the host.
    pub rootfs: PathBuf,
    /// Use MS_MOVE + chroot instead of pivot_root (a root on initramfs).
    pub no_pivot: bool,
    /// FIFO to block on until `start`; `None` runs the process at once.
    pub exec_fifo: Option<PathBuf>,
    /// Set for `exec`: join this running container instead of building one.
    pub exec: Option<ExecTarget>,
    /// Allocate a pty in the container and send its master back.
    #[serde(default)]
    pub console: bool,
    /// Bundle directory (for hook state).
    #[serde(default)]
    pub bundle: PathBuf,
    /// The init's pid as the runtime sees it (for hook state).
    #[serde(default)]
    pub host_pid: i32,
    /// A cgroup the init moves itself into before anything else (`None`: the
    /// runtime has put it there).
    #[serde(default)]
    pub join_cgroup: Option<crate::cgroups::Manager>,
    /// `join_cgroup` is still being made: the init builds the root meanwhile
    /// and joins it, just before entering the root, through the files the
    /// runtime then sends ([`send_fds`]; none: by path).
    #[serde(default)]
    pub cgroup_pending: bool,
    /// The runtime has prestart or createRuntime hooks to run once the mounts
    /// are done: the init stops there ([`FromInit::Mounted`]) until
    /// [`Go::Continue`]. Without them it goes on to [`FromInit::Created`].
    #[serde(default)]
    pub runtime_hooks: bool,
}

/// A process to start inside a running container.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecTarget {
    /// Host pid of the container's init, whose namespaces are joined.
    pub pid: i32,
    /// The process to run.
    #[serde(with = "crate::spec_wire::process")]
    pub process: Process,
}

/// What the runtime tells an exec'd process once it is in the container's
/// cgroup, or an init stopped for the runtime's hooks ([`FromInit::Mounted`]).
#[derive(Debug, Serialize, Deserialize)]
pub enum Go {
    /// Carry on.
    Continue,
}

/// What the init tells the runtime.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromInit {
    /// Set up; waiting for `start` (or about to exec when there is no FIFO).
    Created,
    /// Setting up failed; the init exits.
    Failed(String),
    /// (exec) The host pid of the process that will run in the container.
    Pid(i32),
    /// The pty master follows as SCM_RIGHTS on a one-byte message.
    Console,
    /// Mounts are done, the root not yet entered: the runtime runs its
    /// prestart and createRuntime hooks, then sends [`Go::Continue`] (only
    /// with [`InitConfig::runtime_hooks`]).
    Mounted,
}

/// [`InitConfig`] as [`send_init_config`] writes it: the same JSON, with
/// the spec's text written as it is.
#[derive(Serialize)]
struct InitConfigFrame<'a> {
    id: &'a str,
    spec: &'a RawValue,
    rootfs: &'a Path,
    no_pivot: bool,
    exec_fifo: &'a Option<PathBuf>,
    exec: &'a Option<ExecTarget>,
    console: bool,
    bundle: &'a Path,
    host_pid: i32,
    join_cgroup: &'a Option<crate::cgroups::Manager>,
    cgroup_pending: bool,
    runtime_hooks: bool,
}

/// Sends `cfg` with `spec_json`, the JSON of `cfg.spec`, in place of its
/// spec: a caller that keeps the spec's text (the agent stores it) then
/// serialises the spec once per container rather than twice.
pub fn send_init_config(s: &mut UnixStream, cfg: &InitConfig, spec_json: &RawValue) -> Result<()> {
    let InitConfig {
        id,
        spec: _,
        rootfs,
        no_pivot,
        exec_fifo,
        exec,
        console,
        bundle,
        host_pid,
        join_cgroup,
        cgroup_pending,
        runtime_hooks,
    } = cfg;
    let frame = InitConfigFrame {
        id,
        spec: spec_json,
        rootfs,
        no_pivot: *no_pivot,
        exec_fifo,
        exec,
        console: *console,
        bundle,
        host_pid: *host_pid,
        join_cgroup,
        cgroup_pending: *cgroup_pending,
        runtime_hooks: *runtime_hooks,
    };
    send(s, &frame)
}

/// Sends one message.
pub fn send<T: Serialize>(s: &mut UnixStream, msg: &T) -> Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| Error::Init(format!("encode message: {e}")))?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).map_err(io("write", "init sync socket"))
}

/// Receives one message; `Ok(None)` when the peer closed without sending.
pub fn recv<T: DeserializeOwned>(s: &mut UnixStream) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io("read", "init sync socket")(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(Error::Init(format!("sync message of {len} bytes is over the limit")));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(io("read", "init sync socket"))?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::Init(format!("decode message: {e}")))
}

/// Sends `fd` as SCM_RIGHTS with a one-byte payload.
pub fn send_fd(s: &UnixStream, fd: std::os::fd::RawFd) -> Result<()> {
    send_fds(s, &[fd])
}

/// Sends `fds` (at most [`MAX_FDS`]) as SCM_RIGHTS with a one-byte payload.
pub fn send_fds(s: &UnixStream, fds: &[std::os::fd::RawFd]) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    if fds.len() > MAX_FDS {
        return Err(Error::Init(format!(
            "{} descriptors in one message, over {MAX_FDS}",
            fds.len()
        )));
    }
    let iov = [std::io::IoSlice::new(b"F")];
    let cmsgs: &[ControlMessage] = if fds.is_empty() {
        &[]
    } else {
        &[ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
        .map(|_| ())
        .map_err(crate::error::sys("sendmsg", "SCM_RIGHTS"))
}

/// Most descriptors [`send_fds`] sends in one message.
pub const MAX_FDS: usize = 16;

/// Receives one descriptor sent with [`send_fd`].
pub fn recv_fd(s: &UnixStream) -> Result<std::os::fd::OwnedFd> {
    recv_fds(s)?
        .map(|v| v.into_iter())
        .and_then(|mut v| v.next())
        .ok_or_else(|| Error::Init("expected a descriptor (SCM_RIGHTS), got none".into()))
}

/// Receives the descriptors of one [`send_fds`] message; `Ok(None)` when
/// the peer closed without sending.
pub fn recv_fds(s: &UnixStream) -> Result<Option<Vec<std::os::fd::OwnedFd>>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(crate::error::sys("recvmsg", "SCM_RIGHTS"))?;
    let mut out = Vec::new();
    for c in msg.cmsgs().map_err(crate::error::sys("recvmsg", "control data"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed these descriptors for us.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes == 0 && out.is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_sent_with_its_spec_text_reads_back_as_the_config() {
        // Capability sets are hash sets: each one read back lists in its own order.
        let mut spec = Spec::default();
        if let Some(p) = spec.process_mut() {
            p.set_capabilities(None);
        }
        let cfg = InitConfig {
            id: "c1".into(),
            spec: Box::new(spec.clone()),
            rootfs: "/r".into(),
            no_pivot: true,
            exec_fifo: Some("/run/c1/exec.fifo".into()),
            exec: None,
            console: true,
            bundle: "/b".into(),
            host_pid: 42,
            join_cgroup: None,
            cgroup_pending: true,
            runtime_hooks: true,
        };
        let text = serde_json::value::to_raw_value(&spec).unwrap();
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        // The init reads what it would have read from the config sent whole.
        send_init_config(&mut ours, &cfg, &text).unwrap();
        send(&mut ours, &cfg).unwrap();
        let got: InitConfig = recv(&mut theirs).unwrap().unwrap();
        let whole: InitConfig = recv(&mut theirs).unwrap().unwrap();
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::to_value(&whole).unwrap()
        );
        // The frame is the config's own JSON, field for field.
        send_init_config(&mut ours, &cfg, &text).unwrap();
        let frame: serde_json::Value = recv(&mut theirs).unwrap().unwrap();
        assert_eq!(frame, serde_json::to_value(&cfg).unwrap());
    }
}
