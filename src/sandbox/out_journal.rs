//! Exactly-once output across an agent crash: a read of a process's stdout or
//! stderr takes nothing from the process's pipe (S) until the host's socket
//! has the whole response frame.
//!
//! Per output stream a slot: a pipe F and an 8-byte journal in a memfd, both
//! held by the keeper, so they outlive the agent. A read:
//!
//! 1. `tee(S → F, n)`: F holds a copy; S is untouched.
//! 2. journal = Staged(n).
//! 3. the frame header is written, then `splice(F → socket)` until F is empty:
//!    splice consumes from F exactly what the socket took, so F's fill level
//!    is the kernel's own count of the bytes not yet in the socket.
//! 4. journal = Delivered(n); 5. `splice(S → F, n)`: one atomic pipe-to-pipe
//!    move consumes the bytes from S (and shows it: F holds n again);
//! 6. journal = Idle; 7. F is emptied.
//!
//! [`Slot::settle`] finishes whatever a read left, from the journal and F's
//! level alone, so the same rules serve a read that ends normally, one
//! cancelled half-way (its connection ended), and a new agent after a
//! `kill -9` of the old one (a syscall in progress completes before SIGKILL
//! takes effect, so each step is whole or not done):
//!
//! | journal      | F          | meaning                                 | action        |
//! |--------------|------------|-----------------------------------------|---------------|
//! | Idle         | any        | nothing staged, or staged and finished  | empty F       |
//! | Staged(n)    | > 0        | the frame is not all in the socket      | empty F       |
//! | Staged(n)    | 0          | the whole frame is in the socket        | 4-7           |
//! | Delivered(n) | 0          | sent, not yet consumed from S           | 5-7           |
//! | Delivered(n) | n          | consumed                                | 6-7           |
//!
//! "In the socket" is the boundary: a frame whose last byte the kernel took
//! is delivered to the host even if the agent dies at once (a closing Unix or
//! vsock stream delivers what it queued before its end of stream); a frame
//! cut short leaves the host a truncated frame and an end of stream, which it
//! discards, and its bytes are still in S for the next read.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const IDLE: u64 = 0;
const STAGED: u64 = 1;
const DELIVERED: u64 = 2;

/// The journal word: state in the top byte, the byte count below.
fn word(state: u64, n: usize) -> u64 {
    (state << 56) | n as u64
}

/// The last OS error, prefixed with the syscall and what it was on.
pub(super) fn errno(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A new pipe, both ends close-on-exec and non-blocking: (read, write).
pub(super) fn pipe(what: &str) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into an array of two ints we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(errno(&format!("pipe2 ({what})")));
    }
    // SAFETY: pipe2 just made these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A write end, non-blocking, of the pipe whose read end is `read`, opened
/// again through /proc (a keeper may hold only the read end).
pub(super) fn reopen_write_end(read: &OwnedFd) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}\0", read.as_raw_fd());
    // SAFETY: open of a NUL-terminated path we own.
    let w = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if w < 0 {
        return Err(errno(&format!("open({}, O_WRONLY)", path.trim_end_matches('\0'))));
    }
    // SAFETY: open just made it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(w) })
}

/// Makes `fd` non-blocking (`what` names it in the error).
pub(super) fn set_nonblocking(fd: RawFd, what: &str) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller holds.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(errno(&format!("fcntl(F_SETFL, O_NONBLOCK) on {what} {fd}")));
    }
    Ok(())
}

/// The bytes waiting in pipe `fd`.
pub(super) fn level(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD on a pipe we hold, into an int we own.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return Err(errno(&format!("ioctl(FIONREAD) on pipe {fd}")));
    }
    Ok(n as usize)
}

/// One splice call; Ok(0) when it would block or there is nothing.
fn splice(from: RawFd, to: RawFd, n: usize) -> io::Result<usize> {
    loop {
        // SAFETY: splice between descriptors we hold, no offsets.
        let r = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                n,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(0),
            _ => return Err(io::Error::new(e.kind(), format!("splice({from} -> {to}, {n}): {e}"))),
        }
    }
}

/// A pipe F and its journal (see the module's comment).
pub(crate) struct Slot {
    f_read: OwnedFd,
    f_write: OwnedFd,
    journal: OwnedFd,
}

impl Slot {
    /// A fresh slot for source pipe `source`, as large as it.
    pub(crate) fn new(source: RawFd) -> io::Result<Slot> {
        let (f_read, f_write) = pipe("output slot")?;
        // SAFETY: F_GETPIPE_SZ / F_SETPIPE_SZ on pipes we hold.
        let size = unsafe { libc::fcntl(source, libc::F_GETPIPE_SZ) };
        if size < 0 {
            return Err(errno(&format!("fcntl(F_GETPIPE_SZ) on pipe {source}")));
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(f_write.as_raw_fd(), libc::F_SETPIPE_SZ, size) } < 0 {
            return Err(errno(&format!("fcntl(F_SETPIPE_SZ, {size})")));
        }
        // SAFETY: memfd_create with a static NUL-terminated name.
        let j = unsafe { libc::memfd_create(c"pith-out-journal".as_ptr(), libc::MFD_CLOEXEC) };
        if j < 0 {
            return Err(errno("memfd_create(pith-out-journal)"));
        }
        // SAFETY: memfd_create just made it; nothing else owns it.
        let journal = unsafe { OwnedFd::from_raw_fd(j) };
        let slot = Slot {
            f_read,
            f_write,
            journal,
        };
        slot.set(IDLE, 0)?;
        Ok(slot)
    }

    /// The slot a previous agent left: F's read end and the journal, as the
    /// keeper held them (F's write end is opened again through /proc).
    pub(crate) fn adopt(f_read: OwnedFd, journal: OwnedFd) -> io::Result<Slot> {
        let f_write = reopen_write_end(&f_read)?;
        set_nonblocking(f_read.as_raw_fd(), "the output slot")?;
        Ok(Slot {
            f_read,
            f_write,
            journal,
        })
    }

    /// The descriptors a keeper must hold: F's read end, then the journal.
    pub(crate) fn held(&self) -> [RawFd; 2] {
        [self.f_read.as_raw_fd(), self.journal.as_raw_fd()]
    }

    /// F's read end.
    #[cfg(test)]
    fn pipe(&self) -> RawFd {
        self.f_read.as_raw_fd()
    }

    fn set(&self, state: u64, n: usize) -> io::Result<()> {
        let w = word(state, n).to_ne_bytes();
        // SAFETY: an 8-byte pwrite from a buffer we own; one syscall, so whole or not at all.
        let r = unsafe { libc::pwrite(self.journal.as_raw_fd(), w.as_ptr().cast(), 8, 0) };
        if r != 8 {
            return Err(errno("pwrite(output journal)"));
        }
        Ok(())
    }

    fn get(&self) -> io::Result<(u64, usize)> {
        let mut w = [0u8; 8];
        // SAFETY: an 8-byte pread into a buffer we own.
        let r = unsafe { libc::pread(self.journal.as_raw_fd(), w.as_mut_ptr().cast(), 8, 0) };
        if r != 8 {
            return Err(errno("pread(output journal)"));
        }
        let w = u64::from_ne_bytes(w);
        Ok((w >> 56, (w & ((1 << 56) - 1)) as usize))
    }

    /// Step 1-2: copies up to `max` bytes of `source` into F and records them
    /// as staged. Ok(None) when `source` has nothing now (EAGAIN); Ok(Some(0))
    /// at its end.
    pub(crate) fn stage(&self, source: RawFd, max: usize) -> io::Result<Option<usize>> {
        // SAFETY: tee between two pipes we hold.
        let r = unsafe { libc::tee(source, self.f_write.as_raw_fd(), max, libc::SPLICE_F_NONBLOCK) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(io::Error::new(e.kind(), format!("tee({source} -> output slot): {e}"))),
            };
        }
        let n = r as usize;
        if n > 0 {
            self.set(STAGED, n)?;
        }
        Ok(Some(n))
    }

    /// Copies F's `n` bytes into `out` (the path that cannot splice into its
    /// socket: the bytes are then in the agent's memory, and count as sent).
    pub(crate) fn copy_into(&self, out: &mut Vec<u8>, n: usize) -> io::Result<()> {
        out.reserve(n);
        let mut left = n;
        while left > 0 {
            let spare = &mut out.spare_capacity_mut()[..left];
            // SAFETY: read at most `left` bytes into spare capacity we reserved.
            let r = unsafe { libc::read(self.f_read.as_raw_fd(), spare.as_mut_ptr().cast(), left) };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io::Error::new(e.kind(), format!("read(output slot): {e}")));
            }
            // SAFETY: the kernel initialised the r bytes it reported.
            unsafe { out.set_len(out.len() + r as usize) };
            left -= r as usize;
        }
        Ok(())
    }

    /// Finishes what the last read left (the table in the module's comment).
    pub(crate) fn settle(&self, source: RawFd) -> io::Result<()> {
        let (state, n) = self.get()?;
        let in_f = level(self.f_read.as_raw_fd())?;
        match state {
            STAGED if in_f == 0 => {
                self.set(DELIVERED, n)?;
                self.consume(source, n)?;
            }
            DELIVERED if in_f == 0 => self.consume(source, n)?,
            IDLE | STAGED | DELIVERED => {}
            other => return Err(io::Error::other(format!("output journal: unknown state {other}"))),
        }
        self.set(IDLE, 0)?;
        self.drain()
    }

    /// Step 5: moves `n` bytes from `source` to F in one call (F is empty and
    /// as large as `source`, so they fit).
    fn consume(&self, source: RawFd, n: usize) -> io::Result<()> {
        let moved = splice(source, self.f_write.as_raw_fd(), n)?;
        if moved != n {
            return Err(io::Error::other(format!(
                "output slot: consumed {moved} of {n} delivered bytes from pipe {source}"
            )));
        }
        Ok(())
    }

    /// Step 7: empties F.
    fn drain(&self) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: read into a stack buffer we own; F is non-blocking.
            let r = unsafe { libc::read(self.f_read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                continue;
            }
            let e = io::Error::last_os_error();
            if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Ok(());
        }
    }

    /// Splices F's bytes into the socket `sock`; returns the bytes moved (0:
    /// the socket is full).
    pub(crate) fn splice_to(&self, sock: RawFd, left: usize) -> io::Result<usize> {
        splice(self.f_read.as_raw_fd(), sock, left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn source(data: &[u8]) -> (OwnedFd, std::io::PipeWriter) {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(data).unwrap();
        let r: OwnedFd = r.into();
        // SAFETY: fcntl on a pipe we own.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        (r, w)
    }

    fn rest(s: &OwnedFd) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: read into a buffer we own.
        let n = unsafe { libc::read(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(n.max(0) as usize);
        buf
    }

    #[test]
    fn a_frame_not_all_sent_leaves_the_bytes_in_the_source() {
        let (s, _w) = source(b"hello world");
        let slot = Slot::new(s.as_raw_fd()).unwrap();
        assert_eq!(slot.stage(s.as_raw_fd(), 5).unwrap(), Some(5));
        // Part of the frame went out, then the connection (or agent) died.
        let (sink_r, sink_w) = std::io::pipe().unwrap();
        let sink_w: OwnedFd = sink_w.into();
        assert_eq!(splice(slot.pipe(), sink_w.as_raw_fd(), 2).unwrap(), 2);
        slot.settle(s.as_raw_fd()).unwrap();
        assert_eq!(rest(&s), b"hello world", "nothing consumed");
        drop(sink_r);
    }

    #[test]
    fn a_frame_all_sent_is_consumed_once_whatever_step_died() {
        for died_after in ["splice", "delivered", "consume"] {
            let (s, _w) = source(b"hello world");
            let slot = Slot::new(s.as_raw_fd()).unwrap();
            assert_eq!(slot.stage(s.as_raw_fd(), 5).unwrap(), Some(5));
            let (_sink_r, sink_w) = std::io::pipe().unwrap();
            let sink_w: OwnedFd = sink_w.into();
            assert_eq!(slot.splice_to(sink_w.as_raw_fd(), 5).unwrap(), 5);
            if died_after != "splice" {
                slot.set(DELIVERED, 5).unwrap();
            }
            if died_after == "consume" {
                slot.consume(s.as_raw_fd(), 5).unwrap();
            }
            // A new agent adopts the slot through the keeper's descriptors.
            let Slot { f_read, journal, .. } = slot;
            let slot = Slot::adopt(f_read, journal).unwrap();
            slot.settle(s.as_raw_fd()).unwrap();
            assert_eq!(rest(&s), b" world", "died after {died_after}");
            assert_eq!(level(slot.pipe()).unwrap(), 0);
            assert_eq!(slot.get().unwrap(), (IDLE, 0));
        }
    }

    #[test]
    fn staged_but_unsent_is_read_again() {
        let (s, _w) = source(b"abc");
        let slot = Slot::new(s.as_raw_fd()).unwrap();
        assert_eq!(slot.stage(s.as_raw_fd(), 100).unwrap(), Some(3));
        slot.settle(s.as_raw_fd()).unwrap();
        assert_eq!(slot.stage(s.as_raw_fd(), 100).unwrap(), Some(3));
        let mut out = Vec::new();
        slot.copy_into(&mut out, 3).unwrap();
        slot.settle(s.as_raw_fd()).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(
            slot.stage(s.as_raw_fd(), 100).unwrap(),
            None,
            "consumed, writer still open"
        );
    }
}
