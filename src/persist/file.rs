//! The state file on disk: `sandbox.json` in the state directory, written
//! atomically (a temporary file, fsync, rename over the old one, fsync of the
//! directory: a crash leaves the old file or the new one, never a mix), and
//! `sandbox.lock`, held with `flock` for the agent's lifetime so that a
//! second agent on the same directory refuses to start. The kernel drops the
//! lock when the agent dies, however it dies.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::PersistError;

/// Name of the state file in the state directory.
pub(crate) const STATE_FILE: &str = "sandbox.json";
/// Name of the lock file in the state directory.
pub(crate) const LOCK_FILE: &str = "sandbox.lock";

/// The state file of one agent, locked.
#[derive(Debug)]
pub(crate) struct StateFile {
    dir: PathBuf,
    path: PathBuf,
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
        Ok(StateFile {
            dir: dir.to_path_buf(),
            path: dir.join(STATE_FILE),
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
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<(), PersistError> {
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let mut f = File::create(&tmp).map_err(PersistError::sys("open", &tmp))?;
        f.write_all(bytes).map_err(PersistError::sys("write", &tmp))?;
        f.sync_all().map_err(PersistError::sys("fsync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(PersistError::sys("rename", &self.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(PersistError::sys("fsync", &self.dir))
    }
}
