//! Listening sockets that outlive the agent: the first agent binds each of
//! its addresses (the ttrpc server's, the debug console's) and has the keeper
//! hold a copy; a restarted agent takes the held one back instead of binding
//! again. The port never stops listening, so a host that connects while no
//! agent runs waits in the socket's backlog and is served by the next agent
//! (hybrid vsock backends can wedge on a connection to a port nobody listens
//! on), and a Unix socket's path is not left to a dead socket.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::socket::{getsockname, SockaddrLike, SockaddrStorage};
use slog::{warn, Logger};

use super::link::{KeeperLink, LISTEN_PREFIX};

/// The keeper's name for the listening socket of `addr` (ended by a `/`, so
/// that no name is the prefix of another one's: `DROP` takes prefixes).
pub(crate) fn name(addr: &str) -> String {
    format!("{LISTEN_PREFIX}{addr}/")
}

/// The vsock port a socket is bound to, if it is a vsock socket.
pub(crate) fn vsock_port(fd: BorrowedFd<'_>) -> Option<u32> {
    let a: SockaddrStorage = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
    a.as_vsock_addr().map(|v| v.port())
}

/// The path a Unix socket is bound to, if it is one bound to a path.
pub(crate) fn unix_path(fd: BorrowedFd<'_>) -> Option<PathBuf> {
    let a: SockaddrStorage = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
    if a.family() != Some(nix::sys::socket::AddressFamily::Unix) {
        return None;
    }
    a.as_unix_addr().and_then(|u| u.path()).map(PathBuf::from)
}

/// A listening socket for `addr`: the keeper's (a previous agent's, through
/// `adopt`, which refuses a socket not bound to `addr`), else `bind`'s, which
/// the keeper is then given to hold. Without a keeper, `bind`'s.
pub(crate) fn listen<T: AsFd, E: std::fmt::Display>(
    keeper: Option<&KeeperLink>,
    addr: &str,
    adopt: impl FnOnce(OwnedFd) -> Result<T, E>,
    bind: impl FnOnce() -> Result<T, E>,
    log: &Logger,
) -> Result<T, E> {
    let Some(k) = keeper else { return bind() };
    let name = name(addr);
    match k.take_listener(&name) {
        Ok(Some(fd)) => match adopt(fd) {
            Ok(l) => return Ok(l),
            Err(e) => {
                warn!(log, "keeper: the listening socket it held is not usable; binding a new one";
                      "address" => addr, "error" => %e);
                let _ = k.drop_prefix(&name);
            }
        },
        Ok(None) => {}
        Err(e) => warn!(log, "keeper: no handoff of listening sockets"; "error" => %e),
    }
    let l = bind()?;
    if let Err(e) = k.store(&name, l.as_fd()) {
        warn!(log, "keeper: listening socket not held; a crash would close it"; "address" => addr, "error" => %e);
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_not_prefixes_of_each_other() {
        assert!(!name("vsock://-1:10240").starts_with(&name("vsock://-1:1024")));
        assert!(name("unix:///run/a.sock").starts_with(LISTEN_PREFIX));
    }

    #[test]
    fn a_unix_socket_tells_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(unix_path(l.as_fd()), Some(path));
        assert_eq!(vsock_port(l.as_fd()), None);
        let (r, _w) = std::io::pipe().unwrap();
        assert_eq!(unix_path(r.as_fd()), None, "a pipe is no socket");
    }
}
