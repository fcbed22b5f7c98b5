//! The state file on disk: `sandbox.json` in the state directory, written
//! atomically (a temporary file, fsync, rename (an exchange) with the old one,
//! fsync of the directory: a crash leaves the old file or the new one, never
//! a mix; the temporary keeps the previous state between writes), and
//! `sandbox.lock`, held with `flock` for the agent's lifetime so that a
//! second agent on the same directory refuses to start. The kernel drops the
//! lock when the agent dies, however it dies.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::error::PersistError;

/// Name of the state file in the state directory.
pub(crate) const STATE_FILE: &str = "sandbox.json";
/// Name of the temporary file a write fills before it becomes the state file.
pub(crate) const TEMP_FILE: &str = ".sandbox.json.tmp";
/// Name of the lock file in the state directory.
pub(crate) const LOCK_FILE: &str = "sandbox.lock";

/// The state file of one agent, locked.
#[derive(Debug)]
pub(crate) struct StateFile {
    dir: PathBuf,
    /// The directory, held open: each write opens, renames and syncs
    /// relative to it, with no walk from the root.
    dir_fd: OwnedFd,
    path: PathBuf,
    in_memory: bool,
    /// Held open (and locked) while the agent runs.
    _lock: File,
}

impl StateFile {
    /// Locks the state file in `dir` (created if missing); fails with
    /// [`PersistError::Locked`] when another agent holds it.
    pub(crate) fn lock(dir: &Path) -> Result<StateFile, PersistError> {
        std::fs::create_dir_all(dir).map_err(PersistError::sys("mkdir", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(PersistError::sys("open", &lock_path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut s = String::new();
                let _ = lock.read_to_string(&mut s);
                return Err(PersistError::Locked {
                    path: lock_path,
                    holder: s.trim().parse().ok(),
                });
            }
            return Err(PersistError::sys("flock", &lock_path)(e));
        }
        // The holder's pid, for the message a second agent prints.
        let mut record = || -> std::io::Result<()> {
            lock.set_len(0)?;
            lock.rewind()?;
            writeln!(lock, "{}", std::process::id())
        };
        record().map_err(PersistError::sys("write", &lock_path))?;
        let dir_fd = rustjail::open::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| PersistError::sys("open", dir)(std::io::Error::from(e)))?;
        Ok(StateFile {
            dir: dir.to_path_buf(),
            dir_fd,
            path: dir.join(STATE_FILE),
            in_memory: on_memory_fs(dir),
            _lock: lock,
        })
    }

    /// The state file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes; None when there is no file (a first start).
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>, PersistError> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PersistError::sys("read", &self.path)(e)),
        }
    }

    /// Replaces the file with `bytes`, atomically and durably.
    #[cfg(test)]
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<Replaced, PersistError> {
        self.write_pieces(&[bytes], 0)
    }

    /// Replaces the file with `pieces` put end to end, atomically and
    /// durably; the temporary file is known (by the caller) to start with
    /// the first `kept` of those bytes already, which are not written again.
    ///
    /// The temporary file is written over in place, and exchanged with the
    /// state file (`renameat2(RENAME_EXCHANGE)`): it then holds the previous
    /// state, whole, until the next write ([`Replaced::Exchanged`]). Renaming
    /// a fresh file over the old one instead gave new pages to the new file
    /// and freed the old one's, after every change, which was most of a
    /// write's cost on tmpfs (the price: a second copy of the state,
    /// outdated, beside it). Where the exchange cannot be done (a first
    /// write, a filesystem without it), a plain rename.
    pub(crate) fn write_pieces(&self, pieces: &[&[u8]], kept: usize) -> Result<Replaced, PersistError> {
        let tmp = self.dir.join(TEMP_FILE);
        let mut f = self.open_here(TEMP_FILE).map_err(PersistError::sys("open", &tmp))?;
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        // Never a hole: what the caller believes held must be there.
        let on_disk = f.metadata().map_err(PersistError::sys("fstat", &tmp))?.len();
        let kept = if (kept as u64) <= on_disk { kept.min(len) } else { 0 };
        f.seek(std::io::SeekFrom::Start(kept as u64))
            .map_err(PersistError::sys("lseek", &tmp))?;
        write_all_vectored(&mut f, &after(pieces, kept)).map_err(PersistError::sys("write", &tmp))?;
        f.set_len(len as u64).map_err(PersistError::sys("ftruncate", &tmp))?;
        f.sync_all().map_err(PersistError::sys("fsync", &tmp))?;
        drop(f);
        let replaced = match self.rename_here(libc::RENAME_EXCHANGE) {
            Ok(()) => Replaced::Exchanged,
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    self.rename_here(0).map_err(PersistError::sys("rename", &self.path))?;
                    Replaced::Renamed
                }
                _ => return Err(PersistError::sys("renameat2", &self.path)(e)),
            },
        };
        nix::unistd::fsync(self.dir_fd.as_raw_fd())
            .map_err(|e| PersistError::sys("fsync", &self.dir)(std::io::Error::from(e)))?;
        Ok(replaced)
    }

    /// Opens `name` in the state directory for writing, created if missing
    /// (std's mode, 0666 less the umask).
    fn open_here(&self, name: &str) -> std::io::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT;
        let fd = rustjail::open::open_at(Some(self.dir_fd.as_fd()), name, flags, Mode::from_bits_truncate(0o666))?;
        Ok(File::from(fd))
    }

    /// Renames the temporary to the state file in the state directory, with
    /// renameat2's `flags` (RENAME_EXCHANGE: swaps them; 0: replaces it).
    fn rename_here(&self, flags: libc::c_uint) -> std::io::Result<()> {
        let cstr = |s: &str| std::ffi::CString::new(s).expect("a name without NUL");
        let (from, to) = (cstr(TEMP_FILE), cstr(STATE_FILE));
        let dir = self.dir_fd.as_raw_fd();
        // The system call itself: the musl the static build links has no wrapper.
        // SAFETY: two NUL-terminated names that live across the call, and a
        // directory descriptor we hold.
        let r = unsafe { libc::syscall(libc::SYS_renameat2, dir, from.as_ptr(), dir, to.as_ptr(), flags) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Whether the state directory is in memory (tmpfs, ramfs), where a
    /// write never waits for a disk.
    pub(crate) fn in_memory(&self) -> bool {
        self.in_memory
    }
}

/// How a write replaced the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replaced {
    /// Exchanged with the temporary, which now holds the previous file.
    Exchanged,
    /// The temporary renamed over it: there is no temporary now.
    Renamed,
}

/// `pieces` without their first `skip` bytes.
fn after<'a>(pieces: &[&'a [u8]], mut skip: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        if skip >= p.len() {
            skip -= p.len();
        } else {
            out.push(&p[skip..]);
            skip = 0;
        }
    }
    out
}

/// Writes every byte of `pieces`, in order, in as few calls as it takes.
fn write_all_vectored(f: &mut File, pieces: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    // writev takes at most IOV_MAX (1024) slices at a time.
    const IOV_MAX: usize = 1024;
    while !rest.is_empty() {
        let n = rest.len().min(IOV_MAX);
        match f.write_vectored(&rest[..n]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut rest, written),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `dir` is on tmpfs or ramfs.
fn on_memory_fs(dir: &Path) -> bool {
    // linux/magic.h (libc has no RAMFS_MAGIC; the C type differs between libcs).
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    nix::sys::statfs::statfs(dir).is_ok_and(|s| {
        let t = s.filesystem_type().0 as u64;
        t == libc::TMPFS_MAGIC as u64 || t == RAMFS_MAGIC
    })
}
