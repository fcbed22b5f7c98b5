//! Exactly-once terminal output across an agent crash. A read of a pty
//! master takes the bytes from the terminal at once, and a pty cannot be
//! tee'd, so the output slot's scheme (`out_journal`) cannot read it in
//! place. Instead the terminal's bytes first move into a pipe P that the
//! keeper holds (both ends): `splice(master → P)` is one syscall, so a
//! `kill -9` of the agent leaves each byte either still in the terminal or
//! in P, where the next agent finds it. The output slot then reads P exactly
//! as it reads a process's pipe (P is its source).
//!
//! The end of the output is the terminal's end (EIO once the last slave
//! descriptor closed) with P empty: what P holds is read first.
//!
//! A kernel without `splice_read` for ttys (5.10 dropped the default one;
//! 5.11 gave ttys theirs) refuses with EINVAL; the stream then reads the
//! master directly, as before, without the guarantee (a warning says so,
//! once per agent).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use slog::{warn, Logger};

use super::out_journal::{level, pipe, reopen_write_end, set_nonblocking};

/// Set once the refusal was logged.
static REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// The size asked for P: one read's worth (`process::MAX_READ`); the
/// default (64 KiB) stays when the kernel refuses it.
const P_SIZE: libc::c_int = 1 << 20;

/// The least a splice from the terminal asks for.
const PAGE: usize = 4096;

/// What [`PtyStage::fill`] found of the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Terminal {
    /// Open: it may have more later.
    Open,
    /// Ended (every slave descriptor closed) and nothing is left in it.
    Ended,
    /// The kernel cannot splice from it: read the master directly.
    Refused,
}

/// The pipe P between a terminal and its output slot.
pub(crate) struct PtyStage {
    read: OwnedFd,
    write: OwnedFd,
    /// The kernel refused a splice from the terminal (see the module's comment).
    refused: bool,
    log: Logger,
}

impl PtyStage {
    /// A fresh, empty P.
    pub(crate) fn new(log: &Logger) -> io::Result<PtyStage> {
        let (read, write) = pipe("terminal stage")?;
        // A larger P only means fewer, larger reads; the default works too.
        // SAFETY: F_SETPIPE_SZ on a pipe we hold.
        let _ = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, P_SIZE) };
        Ok(PtyStage {
            read,
            write,
            refused: false,
            log: log.clone(),
        })
    }

    /// The P a previous agent left, as the keeper held it (its write end is
    /// opened again through /proc if the keeper did not hold it).
    pub(crate) fn adopt(read: OwnedFd, write: Option<OwnedFd>, log: &Logger) -> io::Result<PtyStage> {
        let write = match write {
            Some(w) => w,
            None => reopen_write_end(&read)?,
        };
        set_nonblocking(read.as_raw_fd(), "the terminal stage's read end")?;
        set_nonblocking(write.as_raw_fd(), "the terminal stage's write end")?;
        Ok(PtyStage {
            read,
            write,
            refused: false,
            log: log.clone(),
        })
    }

    /// The descriptors a keeper must hold: P's read end, then its write end.
    pub(crate) fn held(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }

    /// The bytes waiting in P.
    pub(crate) fn waiting(&self) -> io::Result<usize> {
        level(self.read.as_raw_fd())
    }

    /// P's read end: the output slot's source.
    pub(crate) fn source(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Moves what the terminal `master` has into P, until P holds `max`
    /// bytes, without waiting.
    pub(crate) fn fill(&mut self, master: RawFd, max: usize) -> io::Result<Terminal> {
        if self.refused {
            return Ok(Terminal::Refused);
        }
        loop {
            let room = max.saturating_sub(self.waiting()?);
            if room == 0 {
                return Ok(Terminal::Open);
            }
            // A splice from a tty allocates pages for all it is asked: ask for
            // what the terminal holds (at least a page, to learn of its end).
            let mut held: libc::c_int = 0;
            // SAFETY: FIONREAD on the master we hold, into an int we own.
            if unsafe { libc::ioctl(master, libc::FIONREAD, &mut held) } < 0 {
                held = 0;
            }
            let ask = (held.max(0) as usize).max(PAGE).min(room);
            // SAFETY: splice from the master into P, both held; no offsets.
            let r = unsafe {
                libc::splice(
                    master,
                    std::ptr::null_mut(),
                    self.write.as_raw_fd(),
                    std::ptr::null_mut(),
                    ask,
                    libc::SPLICE_F_NONBLOCK,
                )
            };
            if r > 0 {
                continue;
            }
            if r == 0 {
                return Ok(Terminal::Ended);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The terminal has nothing now, or P is full.
                Some(libc::EAGAIN) => return Ok(Terminal::Open),
                // A pty master's end: the last slave descriptor closed.
                Some(libc::EIO) => return Ok(Terminal::Ended),
                Some(libc::EINVAL) => {
                    self.refused = true;
                    if !REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
                        warn!(self.log, "splice from a terminal refused (EINVAL): terminal output is read \
                                         directly, and a crash of the agent during a read may lose it";
                              "error" => %e);
                    }
                    return Ok(Terminal::Refused);
                }
                _ => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("splice(terminal {master} -> stage {}): {e}", self.write.as_raw_fd()),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::out_journal::Slot;
    use super::*;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    /// A pty pair: the master (non-blocking) and the slave as a file.
    fn pty() -> (OwnedFd, std::fs::File) {
        let p = nix::pty::openpty(None, None).unwrap();
        set_nonblocking(p.master.as_raw_fd(), "master").unwrap();
        (p.master, std::fs::File::from(p.slave))
    }

    /// Fills `stage` from `master` until P holds `want` bytes or the
    /// terminal ended (a pty passes written bytes on asynchronously).
    fn fill_until(stage: &mut PtyStage, master: &OwnedFd, want: usize) -> Terminal {
        loop {
            let t = stage.fill(master.as_raw_fd(), 1 << 20).unwrap();
            if t != Terminal::Open || stage.waiting().unwrap() >= want {
                return t;
            }
            let mut p = libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one pollfd we own.
            unsafe { libc::poll(&mut p, 1, 1000) };
        }
    }

    /// Everything in pipe `fd` now.
    fn rest(fd: RawFd) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: read into a buffer we own.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }

    /// A copy of `fd`, as the keeper holds one.
    fn keeper_copy(fd: RawFd) -> OwnedFd {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) of a descriptor we hold.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        assert!(copy >= 0, "fcntl(F_DUPFD_CLOEXEC, {fd})");
        // SAFETY: fcntl just made it; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(copy) }
    }

    #[test]
    fn terminal_bytes_wait_in_the_stage_across_an_agent_crash() {
        let (master, mut slave) = pty();
        slave.write_all(b"one\ntwo\n").unwrap();
        let mut stage = PtyStage::new(&log()).unwrap();
        let slot = Slot::new(stage.source()).unwrap();
        assert_eq!(fill_until(&mut stage, &master, 10), Terminal::Open);
        assert_eq!(slot.stage(stage.source(), 4).unwrap(), Some(4));
        // The agent dies before the frame is sent: the keeper's copies of P
        // and of the slot are all that is left.
        let [r, w] = stage.held().map(keeper_copy);
        let [f, j] = slot.held().map(keeper_copy);
        drop((stage, slot));
        let stage = PtyStage::adopt(r, Some(w), &log()).unwrap();
        let slot = Slot::adopt(f, j).unwrap();
        slot.settle(stage.source()).unwrap();
        assert_eq!(
            rest(stage.source()),
            b"one\r\ntwo\r\n",
            "nothing lost (ONLCR made \\r\\n)"
        );
    }

    #[test]
    fn the_end_comes_after_what_the_stage_holds() {
        let (master, mut slave) = pty();
        slave.write_all(b"last\n").unwrap();
        drop(slave);
        // P's write end was not held: it is opened again.
        let PtyStage { read, .. } = PtyStage::new(&log()).unwrap();
        let mut stage = PtyStage::adopt(read, None, &log()).unwrap();
        assert_eq!(fill_until(&mut stage, &master, 6), Terminal::Ended);
        assert_eq!(rest(stage.source()), b"last\r\n");
        assert_eq!(stage.fill(master.as_raw_fd(), 1 << 20).unwrap(), Terminal::Ended);
    }

    #[test]
    fn a_terminal_the_kernel_cannot_splice_from_is_refused_for_good() {
        // An eventfd has no splice_read, as a tty had none on 5.10.
        // SAFETY: eventfd makes a new descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)) };
        let mut stage = PtyStage::new(&log()).unwrap();
        assert_eq!(stage.fill(fd.as_raw_fd(), 100).unwrap(), Terminal::Refused);
        assert_eq!(
            stage.fill(fd.as_raw_fd(), 100).unwrap(),
            Terminal::Refused,
            "not asked again"
        );
        assert_eq!(stage.waiting().unwrap(), 0);
    }
}
