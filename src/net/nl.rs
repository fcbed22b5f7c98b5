//! One route-netlink socket on the agent's tokio runtime, and the two kinds of
//! exchange the network code needs: a request the kernel acknowledges, and a
//! dump. Messages are built by the callers ([`super::msg`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

use super::msg::{self, Msg, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use super::NetError;

/// Receive buffer: larger than any datagram the kernel sends on a dump
/// (it fills up to about 32 KiB per read).
const RECV_BUF: usize = 64 * 1024;

/// A route-netlink socket; one exchange at a time (answers are matched to
/// requests by sequence number, and a dump must end before the next starts).
pub struct Nl {
    sock: AsyncFd<OwnedFd>,
    /// The next sequence number and the receive buffer, held for one exchange.
    turn: Mutex<(u32, Vec<u8>)>,
}

/// What an exchange ends with.
enum Step {
    /// More to read.
    More,
    /// The exchange is over.
    Done,
}

impl Nl {
    /// Opens the socket in the agent's network namespace.
    pub fn connect() -> Result<Nl, NetError> {
        let internal = |call: &str| {
            let e = io::Error::last_os_error();
            NetError::Internal(format!("{call}(AF_NETLINK, NETLINK_ROUTE): {e}"))
        };
        // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(internal("socket"));
        }
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is valid (nl_pid 0: the kernel picks the port id).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sa is a valid sockaddr_nl and its size is passed with it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sa).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r != 0 {
            return Err(internal("bind"));
        }
        // SAFETY: the descriptor is owned by the AsyncFd from now on and closed only when it drops.
        let sock = unsafe { AsyncFd::register(fd) }
            .map_err(|e| NetError::Internal(format!("register netlink socket: {e}")))?;
        Ok(Nl {
            sock,
            turn: Mutex::new((1, vec![0; RECV_BUF])),
        })
    }

    /// Sends `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for the
    /// kernel's answer; a negative answer is [`NetError::Netlink`] naming `op`.
    pub async fn ack(&self, msg: &Msg, flags: u16, op: impl FnOnce() -> String) -> Result<(), NetError> {
        let mut errno = 0;
        let done = self
            .exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags, |kind, payload| match kind {
                NLMSG_ERROR => {
                    errno = -error_code(payload);
                    Step::Done
                }
                _ => Step::More,
            })
            .await;
        match (done, errno) {
            (Err(e), _) => Err(NetError::Internal(format!("{}: {e}", op()))),
            (Ok(()), 0) => Ok(()),
            (Ok(()), errno) => Err(NetError::Netlink { op: op(), errno }),
        }
    }

    /// Sends a dump request and collects every message of the answer.
    pub async fn dump(&self, msg: &Msg, what: &str) -> Result<Vec<Msg>, NetError> {
        let mut out = Vec::new();
        let mut errno = 0;
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP, |kind, payload| match kind {
            NLMSG_ERROR | NLMSG_DONE => {
                errno = -error_code(payload);
                Step::Done
            }
            NLMSG_NOOP => Step::More,
            _ => {
                if let Some(m) = Msg::decode(kind, payload, msg::header_len(kind)) {
                    out.push(m);
                }
                Step::More
            }
        })
        .await
        .map_err(|e| NetError::Internal(format!("dump {what}: {e}")))?;
        if errno != 0 {
            return Err(NetError::Netlink {
                op: format!("dump {what}"),
                errno,
            });
        }
        Ok(out)
    }

    /// Sends one request and hands each answer of its sequence number to
    /// `each` until it says [`Step::Done`].
    async fn exchange(&self, msg: &Msg, flags: u16, mut each: impl FnMut(u16, &[u8]) -> Step) -> io::Result<()> {
        let mut turn = self.turn.lock().await;
        let (seq, buf) = &mut *turn;
        *seq = seq.wrapping_add(1);
        let seq = *seq;
        let req = msg.encode(flags, seq);
        self.io(false, "sendto", |fd| {
            // SAFETY: req is a valid buffer of req.len() bytes; a null address sends to the kernel.
            unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) }
        })
        .await?;
        loop {
            let n = self
                .io(true, "recvfrom", |fd| {
                    // SAFETY: buf is a valid writable buffer of buf.len() bytes.
                    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) }
                })
                .await?;
            for (kind, _, s, payload) in msg::frames(&buf[..n]) {
                // Late answers of an exchange abandoned by a cancelled caller.
                if s != seq {
                    continue;
                }
                if let Step::Done = each(kind, payload) {
                    return Ok(());
                }
            }
        }
    }

    /// Runs `call` when the socket is ready to read (or to write), until it
    /// does not answer EAGAIN; its error names `syscall`.
    async fn io(&self, read: bool, syscall: &str, mut call: impl FnMut(i32) -> isize) -> io::Result<usize> {
        loop {
            let mut ready = if read {
                self.sock.readable().await?
            } else {
                self.sock.writable().await?
            };
            match ready.try_io(|fd| {
                let r = call(fd.as_raw_fd());
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r as usize)
                }
            }) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(io::Error::new(e.kind(), format!("{syscall}: {e}"))),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The `int error` at the start of an `NLMSG_ERROR` / `NLMSG_DONE` payload
/// (0 for an acknowledgement or a dump's end, `-errno` otherwise).
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}
