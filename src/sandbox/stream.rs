//! Non-blocking reads and writes on a process's stdio descriptors (pipe ends or a
//! pty master) through tokio's reactor. One type serves both: a pty master is
//! read and written like a pipe, except that its end of stream is `EIO` once the
//! last slave descriptor closes.

use crate::upgrade::pause::park;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// One descriptor registered with the reactor.
pub(crate) struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl FdStream {
    /// Registers `fd` (made non-blocking) for reading or writing.
    pub(crate) fn new(fd: OwnedFd, interest: Interest) -> io::Result<FdStream> {
        set_nonblocking(&fd)?;
        Ok(FdStream {
            // SAFETY: the OwnedFd stays open, and is the same descriptor, for the AsyncFd's lifetime.
            fd: unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(std::io::Error::from)?,
        })
    }

    /// The raw descriptor (for ioctls such as TIOCSWINSZ).
    pub(crate) fn raw(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }

    /// Reads up to `buf.len()` bytes, waiting for data; 0 is the end of the stream
    /// (a pty master's `EIO` after the slave side closed counts as the end).
    #[cfg(test)]
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: read into a buffer we own, of the length given.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits until `f` (called with the descriptor whenever it may be
    /// readable) has a result; `f` returns None for "nothing yet" (EAGAIN).
    pub(crate) async fn wait_for<T>(&self, mut f: impl FnMut(i32) -> io::Result<Option<T>>) -> io::Result<T> {
        loop {
            // Nothing read yet: a live upgrade may pause the call here.
            let mut guard = park(self.fd.readable()).await?;
            match f(self.raw())? {
                Some(t) => return Ok(t),
                None => guard.clear_ready(),
            }
        }
    }

    /// Appends to `buf` up to `max` bytes: waits for the first, then takes what
    /// else is ready without waiting (a pipe holds 64 KiB by default; one RPC can
    /// carry several pipefuls). Returns the bytes added; 0 is the end of the stream.
    pub(crate) async fn read_available(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.reserve(max);
        let start = buf.len();
        loop {
            // Only before the first byte: a live upgrade may pause the call
            // there (it takes what it read with it otherwise).
            let mut guard = if buf.len() == start {
                park(self.fd.readable()).await?
            } else {
                self.fd.readable().await?
            };
            loop {
                let room = max - (buf.len() - start);
                if room == 0 {
                    return Ok(buf.len() - start);
                }
                let spare = &mut buf.spare_capacity_mut()[..room];
                // SAFETY: read writes at most `room` bytes into the spare capacity we reserved.
                let n = unsafe { libc::read(self.raw(), spare.as_mut_ptr().cast(), room) };
                if n > 0 {
                    // SAFETY: the kernel initialised the n bytes it reported.
                    unsafe { buf.set_len(buf.len() + n as usize) };
                    continue;
                }
                let got = buf.len() - start;
                let err = io::Error::last_os_error();
                match n {
                    0 => return Ok(got),
                    _ if err.raw_os_error() == Some(libc::EIO) => return Ok(got),
                    _ if err.kind() == io::ErrorKind::Interrupted => continue,
                    _ if err.kind() == io::ErrorKind::WouldBlock => {
                        if got > 0 {
                            return Ok(got);
                        }
                        guard.clear_ready();
                        break;
                    }
                    _ => return if got > 0 { Ok(got) } else { Err(err) },
                }
            }
        }
    }

    /// Writes all of `data`, waiting while the pipe or terminal is full.
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: write from a buffer we own, of the length given.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipe_round_trip_and_end_of_stream() {
        let (r, w) = std::io::pipe().unwrap();
        let rx = FdStream::new(r.into(), Interest::READABLE).unwrap();
        let tx = FdStream::new(w.into(), Interest::WRITABLE).unwrap();
        let big = vec![7u8; 256 * 1024];
        let writer = tokio::spawn(async move {
            tx.write_all(&big).await.unwrap();
        });
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = rx.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == 7));
            got += n;
        }
        writer.await.unwrap();
        assert_eq!(got, 256 * 1024);
    }
}
