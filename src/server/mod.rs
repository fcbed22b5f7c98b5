//! The ttrpc server: listens on every configured address at once, admits
//! connections through a [`limits::Gate`] and serves each with [`conn::serve`].
//!
//! pith frames and dispatches requests itself instead of using `ttrpc::Server`,
//! which serves only the last listener added, answers oversized frames without
//! closing the connection, and does not log protocol errors where the agent's
//! log sees them. The generated service tables of `ttrpc-codegen` are used as is.

pub(crate) mod after_answer;
pub mod conn;
pub mod dispatch;
pub mod frame;
pub mod limits;
pub mod reclaim;
pub mod refuse;
pub mod stream_read;

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use slog::{error, info, o, warn, Logger};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

use crate::upgrade::pause::Pause;
use dispatch::Dispatcher;
use limits::{Gate, Limits};
use protocols::addr::Address;

/// Binding a listen address failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address cannot be listened on (e.g. hybrid vsock is host-side only).
    #[error("cannot listen on {addr}: {why}")]
    Unsupported {
        /// The address.
        addr: String,
        /// Why not.
        why: &'static str,
    },
    /// A syscall failed.
    #[error("{syscall} {addr}: {source}")]
    Io {
        /// The failing call, as strace names it.
        syscall: &'static str,
        /// The address or path.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(syscall: &'static str, addr: impl ToString) -> impl FnOnce(io::Error) -> BindError {
    let addr = addr.to_string();
    move |source| BindError::Io { syscall, addr, source }
}

/// A bound listener; a Unix socket's file is removed when this is dropped.
pub enum Listener {
    /// AF_UNIX.
    Unix(UnixListener, SocketFile),
    /// AF_VSOCK.
    Vsock(VsockListener, Address),
}

impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Unix(l, _) => l.as_fd(),
            Listener::Vsock(l, _) => l.as_fd(),
        }
    }
}

/// Removes a Unix socket's path on drop, so a stopped agent leaves no stale file.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    /// Refuses an address no agent can listen on, before anything is bound.
    pub fn check(addr: &Address) -> Result<(), BindError> {
        match addr {
            Address::HybridVsock { .. } => Err(BindError::Unsupported {
                addr: addr.to_string(),
                why: "hybrid vsock is a host-side transport; the agent listens on vsock://",
            }),
            Address::Unix(_) | Address::Vsock { .. } => Ok(()),
        }
    }

    /// Binds one address. Must run inside the tokio runtime.
    pub fn bind(addr: &Address) -> Result<Listener, BindError> {
        Self::check(addr)?;
        match addr {
            Address::Unix(path) => {
                prepare_unix_path(path, addr)?;
                let l = UnixListener::bind(path).map_err(io_err("bind", addr))?;
                Ok(Listener::Unix(l, SocketFile(path.clone())))
            }
            Address::Vsock { cid, port } => {
                let l = VsockListener::bind(VsockAddr::new(*cid, *port)).map_err(io_err("bind", addr))?;
                Ok(Listener::Vsock(l, addr.clone()))
            }
            Address::HybridVsock { .. } => unreachable!("refused by check"),
        }
    }

    /// Serves `addr` on a listening socket bound before (by an agent that
    /// died; its keeper held it). Refuses a socket not bound to `addr`. Must
    /// run inside the tokio runtime.
    pub(crate) fn adopt(addr: &Address, fd: std::os::fd::OwnedFd) -> Result<Listener, BindError> {
        use std::os::fd::AsFd;
        Self::check(addr)?;
        let not_it = |what: String| BindError::Io {
            syscall: "getsockname",
            addr: addr.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, format!("the held socket is {what}")),
        };
        match addr {
            Address::Unix(path) => {
                let bound = crate::keeper::listen::unix_path(fd.as_fd());
                if bound.as_deref() != Some(path.as_path()) {
                    return Err(not_it(format!("bound to {bound:?}")));
                }
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true).map_err(io_err("fcntl(O_NONBLOCK)", addr))?;
                let l = UnixListener::from_std(l).map_err(io_err("epoll_ctl", addr))?;
                Ok(Listener::Unix(l, SocketFile(path.clone())))
            }
            Address::Vsock { port, .. } => {
                let bound = crate::keeper::listen::vsock_port(fd.as_fd());
                if bound != Some(*port) {
                    return Err(not_it(format!("on vsock port {bound:?}")));
                }
                Ok(Listener::Vsock(VsockListener::from(fd), addr.clone()))
            }
            Address::HybridVsock { .. } => unreachable!("refused by check"),
        }
    }

    /// The address this listener serves, for logs.
    pub fn address(&self) -> String {
        match self {
            Listener::Unix(_, f) => format!("unix://{}", f.0.display()),
            Listener::Vsock(_, a) => a.to_string(),
        }
    }
}

/// Makes the socket's directory and clears a stale socket left by a dead agent.
/// A live socket (something accepts on it) or a non-socket file is an error.
fn prepare_unix_path(path: &Path, addr: &Address) -> Result<(), BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("mkdir", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("stat", path.display())(e)),
        Ok(m) if !m.file_type().is_socket() => Err(io_err("bind", addr)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "path exists and is not a socket",
        ))),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(io_err("bind", addr)(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is serving this socket",
            ))),
            Err(_) => std::fs::remove_file(path).map_err(io_err("unlink", path.display())),
        },
    }
}

/// Accept loops for a set of listeners; dropping or calling [`Server::stop`]
/// stops accepting and removes the socket files.
pub struct Server {
    tasks: Vec<JoinHandle<()>>,
}

/// A connection a previous binary of the agent served (a live upgrade).
pub struct CarriedConn {
    /// Its socket.
    pub fd: std::os::fd::OwnedFd,
    /// Where it goes on from.
    pub resume: conn::Resume,
}

/// What every connection is served with.
#[derive(Clone)]
struct Shared {
    dispatcher: Arc<Dispatcher>,
    gate: Arc<Gate>,
    pause: Arc<Pause>,
}

impl Server {
    /// Starts accepting on every listener, and serving the connections a
    /// previous binary left; `limits` bound all of them together; `pause`
    /// stops them for a live upgrade.
    pub fn start(
        listeners: Vec<Listener>,
        carried: Vec<CarriedConn>,
        dispatcher: Arc<Dispatcher>,
        limits: Limits,
        pause: Arc<Pause>,
        log: &Logger,
    ) -> Server {
        let shared = Shared {
            dispatcher,
            gate: Gate::new(limits),
            pause,
        };
        info!(log, "connection limits"; "max_connections" => limits.max_connections,
              "host_reserve" => limits::HOST_RESERVE, "frame_timeout_ms" => limits.frame_timeout.as_millis() as u64);
        for (i, c) in carried.into_iter().enumerate() {
            match carried_conn(c.fd) {
                Ok(conn) => admit(conn, Some(c.resume), u64::MAX - i as u64, &shared, log),
                Err(e) => warn!(
                    log,
                    "a connection carried over from the previous binary is not usable: {e}"
                ),
            }
        }
        let mut tasks = Vec::new();
        for l in listeners {
            let log = log.new(o!("listener" => l.address()));
            info!(log, "listening");
            tasks.push(tokio::spawn(accept_loop(l, shared.clone(), log)));
        }
        Server { tasks }
    }

    /// Stops accepting; the accept tasks drop their listeners (and socket files).
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A new connection.
enum Accepted {
    Unix(UnixStream),
    Vsock(VsockStream, VsockAddr),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        Listener::Vsock(l, _) => l.accept().await.map(|(s, peer)| Accepted::Vsock(s, peer)),
    }
}

/// Out of descriptors (per process or system-wide).
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A carried connection's socket, by its family.
fn carried_conn(fd: std::os::fd::OwnedFd) -> io::Result<Accepted> {
    use nix::sys::socket::{getpeername, SockaddrLike, SockaddrStorage};
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let peer: SockaddrStorage = getpeername(raw).map_err(|e| io::Error::other(format!("getpeername({raw}): {e}")))?;
    if let Some(v) = peer.as_vsock_addr() {
        let peer = VsockAddr::new(v.cid(), v.port());
        return Ok(Accepted::Vsock(VsockStream::from(fd), peer));
    }
    if peer.family() == Some(nix::sys::socket::AddressFamily::Unix) {
        let s = std::os::unix::net::UnixStream::from(fd);
        s.set_nonblocking(true)
            .map_err(|e| io::Error::other(format!("fcntl(O_NONBLOCK) on {raw}: {e}")))?;
        return UnixStream::from_std(s)
            .map(Accepted::Unix)
            .map_err(|e| io::Error::other(format!("epoll_ctl({raw}): {e}")));
    }
    Err(io::Error::other(format!(
        "socket {raw} is neither AF_UNIX nor AF_VSOCK"
    )))
}

async fn accept_loop(listener: Listener, shared: Shared, log: Logger) {
    let mut next_id: u64 = 0;
    let mut stop = shared.pause.stopping();
    loop {
        // A live upgrade under way: new connections wait in the backlog.
        let _ = stop.wait_for(|s| !*s).await;
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => continue,
            a = accept(&listener) => a,
        };
        let gate = &shared.gate;
        let e = match accepted {
            Ok(conn) => {
                next_id += 1;
                admit(conn, None, next_id, &shared, &log);
                continue;
            }
            Err(e) => e,
        };
        if let Some(skipped) = gate.log_refusal() {
            error!(log, "accept failed: {e}"; "syscall" => "accept4", "failures_not_logged" => skipped);
        }
        if out_of_descriptors(&e) && gate.release_spare() {
            // The spare descriptor makes room for one accept: the client waiting
            // in the backlog gets a refusal it can read instead of silence.
            let waiting = tokio::time::timeout(std::time::Duration::from_millis(100), accept(&listener)).await;
            if let Ok(Ok(conn)) = waiting {
                let reason = format!("pith-agent: out of file descriptors ({e}); try again later");
                warn!(log, "refusing connection: {reason}");
                refuse_conn(conn, &reason).await;
            }
            gate.restore_spare();
            continue;
        }
        // EMFILE with the spare already used, ENOMEM and friends: back off a
        // little, keep serving the connections there are.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Serves `conn` (going on from `resume`) if the gate lets it in, else
/// refuses it with an answer.
fn admit(conn: Accepted, resume: Option<conn::Resume>, id: u64, shared: &Shared, log: &Logger) {
    let gate = &shared.gate;
    let from_host = matches!(&conn, Accepted::Vsock(_, peer) if peer.cid() == limits::VSOCK_HOST_CID);
    let ticket = match gate.admit(from_host) {
        Ok(t) => t,
        Err(reason) => {
            if let Some(skipped) = gate.log_refusal() {
                warn!(log, "refusing connection: {reason}"; "refusals_not_logged" => skipped);
            }
            if let Some(slot) = gate.refusal_slot() {
                tokio::spawn(async move {
                    refuse_conn(conn, &reason).await;
                    drop(slot);
                });
            }
            return;
        }
    };
    let mut c = conn::Conn {
        sock: None,
        dispatcher: shared.dispatcher.clone(),
        pause: shared.pause.clone(),
        frame_timeout: gate.limits().frame_timeout,
        log: log.new(o!("conn" => id)),
    };
    tokio::spawn(async move {
        match conn {
            Accepted::Unix(s) => {
                c.sock = Some(std::os::fd::AsRawFd::as_raw_fd(&s));
                let (r, w) = s.into_split();
                conn::serve_socket(r, w, c, resume).await
            }
            Accepted::Vsock(s, peer) => {
                c.sock = Some(std::os::fd::AsRawFd::as_raw_fd(&s));
                c.log = c.log.new(o!("peer" => peer.to_string()));
                let (r, w) = s.into_split();
                conn::serve_socket(r, w, c, resume).await
            }
        }
        drop(ticket);
    });
}

async fn refuse_conn(conn: Accepted, reason: &str) {
    match conn {
        Accepted::Unix(s) => refuse::refuse(s, reason).await,
        Accepted::Vsock(s, _) => refuse::refuse(s, reason).await,
    }
}
