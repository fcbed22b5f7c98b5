//! The exec FIFO between `start` and a created container's init, both ends.
//!
//! The init blocks opening the FIFO for writing until `start` opens it for
//! reading, writes `0`, and keeps its end open (close-on-exec) until `execve`
//! of the user's program. Whatever fails on the way (a startContainer hook,
//! credentials, `execve` itself) is written after the `0` before the init
//! exits. So `start` reads to the end: nothing more means the program runs,
//! and poststart hooks come after it; anything more is the init's error.
//!
//! The init reopens the FIFO by name through its directory, not through
//! `/proc/self/fd`, so a container without a `/proc` mount works.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::error::{sys, Error, Result};

/// The init's handle on the FIFO: its directory, opened before the root changes.
pub struct Fifo {
    dir: OwnedFd,
    name: OsString,
}

impl Fifo {
    /// Opens the directory of the FIFO at `path` (`O_PATH`, close-on-exec).
    pub fn open(path: &Path) -> Result<Fifo> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let dir = crate::open::open(parent, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(sys("open", parent.display()))?;
        Ok(Fifo {
            dir,
            name: path.file_name().unwrap_or_default().to_os_string(),
        })
    }

    /// Blocks until `start` opens the FIFO, tells it the init is past the
    /// wait, and returns the write end for [`report`].
    pub fn wait_for_start(self) -> Result<OwnedFd> {
        let shown = Path::new(&self.name).display().to_string();
        let w = crate::open::open_at(
            Some(self.dir.as_fd()),
            self.name.as_bytes(),
            OFlag::O_WRONLY,
            Mode::empty(),
        )
        .map_err(sys("openat", format_args!("exec fifo {shown}")))?;
        nix::unistd::write(&w, b"0").map_err(sys("write", "exec fifo"))?;
        Ok(w)
    }
}

/// Hands `err` to `start` through the FIFO, when the init is past it, and
/// exits; before that the error goes back to the caller (and to `create`).
pub fn report(started: Option<OwnedFd>, err: Error) -> Error {
    if let Some(w) = started {
        let _ = nix::unistd::write(&w, err.init_report().as_bytes());
        std::process::exit(127);
    }
    err
}

/// `start`'s side: lets the init of container `id` go, then waits until it
/// has executed the user's program. `init_alive` is asked while no one has
/// the FIFO's other end open; the init must take it within `timeout`.
pub fn start(fifo: &Path, id: &str, init: Pid, timeout: Duration, init_alive: impl Fn() -> bool) -> Result<()> {
    let fd = crate::open::open(fifo, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())
        .map_err(sys("open", fifo.display()))?;
    // The open woke the init onto this CPU; the init's write and its execve
    // would wake this thread there again, behind the init and then the
    // user's program (a whole /bin/true, ~0.3 ms). Kept off it, this thread
    // answers once the program runs.
    let _away = crate::overlap::away_from(init);
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Before the init opens its end, a read finds no writer and returns 0.
    while got.is_empty() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            // Nothing yet. EAGAIN: the other end is open, and only the init
            // holds it (close-on-exec, never inherited), so it lives and is
            // about to write; its exit would close the end and wake the poll
            // below. No need then to ask `init_alive` (a read of
            // /proc/<pid>/stat, ~13 µs). Ok(0): no writer, so ask.
            r @ (Ok(_) | Err(nix::Error::EAGAIN)) => {
                let no_writer = r.is_ok();
                if no_writer && !init_alive() {
                    // Between the read above and that look the init may
                    // have written, executed the program and ended (a
                    // short one, on this thread's CPU): what it wrote is
                    // still in the FIFO.
                    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                        Ok(n) if n > 0 => {
                            got.extend_from_slice(&buf[..n]);
                            continue;
                        }
                        _ => return Err(Error::Init(format!("init of {id} exited before start"))),
                    }
                }
                if Instant::now() > deadline {
                    return Err(Error::Init(format!(
                        "init of {id} did not take the start signal in {timeout:?}"
                    )));
                }
                // Wake as soon as the init writes or closes its end; look
                // again every 50 ms.
                wait_readable(&fd, fifo)?;
            }
            Err(e) => return Err(sys("read", fifo.display())(e)),
        }
    }
    // The init's end stays open until its execve (close-on-exec) or its exit.
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(nix::Error::EAGAIN) => wait_readable(&fd, fifo)?,
            Err(e) => return Err(sys("read", fifo.display())(e)),
        }
    }
    match got.strip_prefix(b"0") {
        Some([]) => Ok(()),
        Some(msg) => Err(Error::Init(String::from_utf8_lossy(msg).into_owned())),
        None => Err(Error::Init(format!(
            "unexpected data on the exec fifo of {id}: {:?}",
            String::from_utf8_lossy(&got)
        ))),
    }
}

fn wait_readable(fd: &OwnedFd, fifo: &Path) -> Result<()> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(50u8)) {
        Ok(_) | Err(nix::Error::EINTR) => Ok(()),
        Err(e) => Err(sys("poll", fifo.display())(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO in a fresh directory.
    fn fifo() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exec.fifo");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o622)).unwrap();
        (dir, path)
    }

    /// What an init does from `start`'s open to its end: writes `what` and
    /// closes its end (as its execve or exit does).
    fn init_writes(path: &Path, what: &[u8]) {
        let w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        std::io::Write::write_all(&mut &w, what).unwrap();
    }

    #[test]
    fn an_init_holding_its_end_is_not_looked_at() {
        let (_d, path) = fifo();
        // Read and write: opened first, as an init blocked in its open is.
        let end = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            std::io::Write::write_all(&mut &end, b"0").unwrap();
        });
        let looked = std::cell::Cell::new(0);
        let r = start(&path, "c", Pid::from_raw(1), Duration::from_secs(5), || {
            looked.set(looked.get() + 1);
            false
        });
        writer.join().unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(looked.get(), 0);
    }

    #[test]
    fn an_init_that_ran_and_ended_before_the_look_has_started() {
        // The init writes, runs a short program and ends between start's
        // first read (nothing yet) and its look at the init, which then
        // finds it gone: what it wrote says it started.
        let (_d, path) = fifo();
        let looked = std::cell::Cell::new(0);
        let r = start(&path, "c", Pid::from_raw(1), Duration::from_secs(5), || {
            looked.set(looked.get() + 1);
            init_writes(&path, b"0");
            false
        });
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(looked.get(), 1);
    }

    #[test]
    fn an_init_gone_without_a_word_did_not_start_and_its_error_is_read() {
        let (_d, path) = fifo();
        let r = start(&path, "c", Pid::from_raw(1), Duration::from_secs(5), || false);
        assert!(
            matches!(&r, Err(Error::Init(m)) if m == "init of c exited before start"),
            "{r:?}"
        );
        let (_d, path) = fifo();
        let r = start(&path, "c", Pid::from_raw(1), Duration::from_secs(5), || {
            init_writes(&path, b"0exec: no such file");
            false
        });
        assert!(matches!(&r, Err(Error::Init(m)) if m == "exec: no such file"), "{r:?}");
    }
}
