//! Messages between the keeper and the agent: one SOCK_SEQPACKET datagram
//! each, UTF-8 words separated by spaces, and at most one descriptor
//! (SCM_RIGHTS).
//!
//! Agent to keeper: `HELLO` (send me the handoff), `STORE <name>` (+
//! descriptor), `DROP <prefix>` (every name starting with it), `FORGET <pid>`
//! (its exit is on disk), `UPGRADE <ms>` (+ the running binary: another
//! binary takes over in place; run this one again if it is not ready within
//! that many ms), `UPGRADED` (+ the new binary: ready), `FAILED <why>` (the
//! hand-over failed before the new binary ran).
//! Keeper to agent: `FD <name>` (+ descriptor), `EXIT <pid> code|signal <n>`,
//! `READY` (the end of the handoff).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::reaper::Exit;

/// Longest message (names are container and exec ids, at most a few hundred bytes).
pub(crate) const MAX_MESSAGE: usize = 4096;

/// One message.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) enum Message {
    /// A new agent asks for the handoff.
    Hello,
    /// Hold this descriptor under a name (replacing one held under it).
    Store(String),
    /// Close every descriptor whose name starts with this.
    Drop(String),
    /// The exit of this pid is on disk: let it go.
    Forget(i32),
    /// A held descriptor, at the handoff.
    Fd(String),
    /// A process ended.
    Exit(i32, Exit),
    /// The handoff is complete.
    Ready,
    /// An upgrade begins: the binary to run again if it fails, and the bound in ms.
    Upgrade(u32),
    /// The new binary took over (its descriptor comes along).
    Upgraded,
    /// The hand-over failed before the new binary ran, and why.
    Failed(String),
}

impl Message {
    fn encode(&self) -> String {
        match self {
            Message::Hello => "HELLO".into(),
            Message::Store(n) => format!("STORE {n}"),
            Message::Drop(p) => format!("DROP {p}"),
            Message::Forget(pid) => format!("FORGET {pid}"),
            Message::Fd(n) => format!("FD {n}"),
            Message::Exit(pid, Exit::Code(c)) => format!("EXIT {pid} code {c}"),
            Message::Exit(pid, Exit::Signal(s)) => format!("EXIT {pid} signal {s}"),
            Message::Ready => "READY".into(),
            Message::Upgrade(ms) => format!("UPGRADE {ms}"),
            Message::Upgraded => "UPGRADED".into(),
            Message::Failed(why) => format!("FAILED {why}"),
        }
    }

    /// Parses one message; None for anything else.
    pub(crate) fn decode(s: &str) -> Option<Message> {
        let (verb, rest) = s.split_once(' ').unwrap_or((s, ""));
        Some(match verb {
            "HELLO" if rest.is_empty() => Message::Hello,
            "STORE" if !rest.is_empty() => Message::Store(rest.into()),
            "DROP" if !rest.is_empty() => Message::Drop(rest.into()),
            "FORGET" => Message::Forget(rest.parse().ok()?),
            "FD" if !rest.is_empty() => Message::Fd(rest.into()),
            "EXIT" => {
                let mut w = rest.split(' ');
                let pid = w.next()?.parse().ok()?;
                let kind = w.next()?;
                let n = w.next()?.parse().ok()?;
                match kind {
                    "code" => Message::Exit(pid, Exit::Code(n)),
                    "signal" => Message::Exit(pid, Exit::Signal(n)),
                    _ => return None,
                }
            }
            "READY" if rest.is_empty() => Message::Ready,
            "UPGRADE" => Message::Upgrade(rest.parse().ok()?),
            "UPGRADED" if rest.is_empty() => Message::Upgraded,
            "FAILED" if !rest.is_empty() => Message::Failed(rest.into()),
            _ => return None,
        })
    }
}

/// Sends `msg` on `sock`, with `fd` when given.
pub(crate) fn send(sock: BorrowedFd<'_>, msg: &Message, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let body = msg.encode();
    let iov = [IoSlice::new(body.as_bytes())];
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message and its descriptor; None when the peer is gone.
/// A datagram that does not parse is an `InvalidData` error.
pub(crate) fn recv(sock: BorrowedFd<'_>) -> std::io::Result<Option<(Message, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (n, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(m) => {
                let mut fds = Vec::new();
                for c in m.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(list) = c {
                        // SAFETY: the kernel just gave us these descriptors; nothing else owns them.
                        fds.extend(list.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                    }
                }
                break (m.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(None);
    }
    let text = std::str::from_utf8(&buf[..n]).ok();
    let msg = text.and_then(Message::decode).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "keeper channel: unknown message {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        )
    })?;
    Ok(Some((msg, fds.into_iter().next())))
}

/// A connected SOCK_SEQPACKET pair, close-on-exec.
pub(crate) fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| std::io::Error::other(format!("socketpair(AF_UNIX, SOCK_SEQPACKET): {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_round_trip_with_their_descriptor() {
        let (a, b) = pair().unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        let r: OwnedFd = r.into();
        let cases = [
            Message::Hello,
            Message::Store("p/c1/c1/out".into()),
            Message::Drop("p/c1/".into()),
            Message::Forget(42),
            Message::Fd("pod/holder".into()),
            Message::Exit(7, Exit::Code(3)),
            Message::Exit(8, Exit::Signal(9)),
            Message::Ready,
            Message::Upgrade(5000),
            Message::Upgraded,
            Message::Failed("execve(/x): No such file or directory".into()),
        ];
        for m in &cases {
            let with_fd = matches!(
                m,
                Message::Store(_) | Message::Fd(_) | Message::Upgrade(_) | Message::Upgraded
            );
            send(a.as_fd(), m, with_fd.then(|| r.as_fd())).unwrap();
            let (got, fd) = recv(b.as_fd()).unwrap().unwrap();
            assert_eq!(&got, m);
            assert_eq!(fd.is_some(), with_fd, "{m:?}");
        }
        drop(a);
        assert!(recv(b.as_fd()).unwrap().is_none(), "the peer's close is the end");
    }

    #[test]
    fn garbage_is_refused_not_guessed() {
        for s in [
            "",
            "STORE",
            "EXIT 1 code",
            "EXIT x code 1",
            "EXIT 1 maybe 2",
            "FORGET -",
            "HELLO there",
            "PING",
            "UPGRADE soon",
            "FAILED",
        ] {
            assert_eq!(Message::decode(s), None, "{s:?}");
        }
    }
}
