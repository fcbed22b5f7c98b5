//! `watchable-bind`: Kata's ConfigMap/Secret volumes on a shared filesystem
//! without inotify (virtio-fs, 9p). Instead of bind-mounting the host's
//! directory, the agent copies it to the mount point and keeps the copy in
//! sync: every [`INTERVAL`] it walks the source and copies what is new or
//! changed, and removes what went away, so a container sees the host's
//! updates within a few seconds (Kata's `watcher.rs` semantics).
//!
//! Kata's limits hold: at most [`MAX_ENTRIES`] entries (files, directories and
//! symlinks, the source directory itself included) and [`MAX_SIZE`] bytes.
//! A source that grows past either is no longer copied: the mount point
//! becomes a plain bind mount of the source (Kata's fallback), which shows
//! every later change directly.
//!
//! Mount points under [`TMPFS_DIR`] (where Kata's Go runtime puts them) live
//! on one tmpfs the watcher mounts there first, as Kata's agent does: the
//! shared directory below is read-only. Differences from Kata: a changed
//! file is detected by modification time, size or inode (not only a newer
//! time), a file is replaced by renaming a complete copy over it (a reader
//! never sees half a file), and symlinks (Kubernetes' `..data`) are updated
//! after the files they point to.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use slog::Logger;

use super::mount::{ensure_dir, ensure_file, io, mount, sys, Record};
use super::StorageError;

/// Most entries (files, directories, symlinks) a watched storage may hold.
pub const MAX_ENTRIES: usize = 16;
/// Most bytes (files and symlinks) a watched storage may hold.
pub const MAX_SIZE: u64 = 1024 * 1024;
/// How often sources are compared with their copies.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// The tmpfs watched copies live on (Kata's Go runtime's mount points).
pub const TMPFS_DIR: &str = "/run/kata-containers/shared/containers/watchable";

/// What identifies a version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: SystemTime,
    size: u64,
    ino: u64,
}

/// Why a source can no longer be copied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TooBig {
    /// More than [`MAX_ENTRIES`] entries.
    #[error("{dir} has {count} entries (at most {MAX_ENTRIES} are watched)")]
    Entries {
        /// The source.
        dir: PathBuf,
        /// How many.
        count: usize,
    },
    /// More than [`MAX_SIZE`] bytes.
    #[error("{dir} holds {size} bytes (at most {MAX_SIZE} are watched)")]
    Size {
        /// The source.
        dir: PathBuf,
        /// How many.
        size: u64,
    },
}

/// One watched storage.
#[derive(Debug)]
struct Entry {
    source: PathBuf,
    target: PathBuf,
    /// False once the mount point became a bind mount of the source.
    watch: bool,
    seen: HashMap<PathBuf, Stamp>,
}

/// What a scan found to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Entries copied (new or changed).
    pub copied: usize,
    /// Entries removed from the copy.
    pub removed: usize,
}

impl Entry {
    fn target_of(&self, p: &Path) -> PathBuf {
        match p.strip_prefix(&self.source) {
            Ok(rel) if !rel.as_os_str().is_empty() => self.target.join(rel),
            _ => self.target.clone(),
        }
    }

    /// Walks the source: every entry with its stamp, in walk order (parents first).
    fn walk(&self) -> Result<Vec<(PathBuf, std::fs::Metadata)>, StorageError> {
        let mut out = Vec::new();
        let mut size = 0u64;
        let mut stack = vec![self.source.clone()];
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p).map_err(io("lstat", p.display()))?;
            if m.is_dir() {
                let mut children = Vec::new();
                for e in std::fs::read_dir(&p).map_err(io("opendir", p.display()))? {
                    children.push(e.map_err(io("getdents", p.display()))?.path());
                }
                children.sort();
                stack.extend(children.into_iter().rev());
            } else {
                size += m.len();
            }
            out.push((p, m));
            if out.len() > MAX_ENTRIES {
                return Err(too_big(TooBig::Entries {
                    dir: self.source.clone(),
                    count: out.len(),
                }));
            }
            if size > MAX_SIZE {
                return Err(too_big(TooBig::Size {
                    dir: self.source.clone(),
                    size,
                }));
            }
        }
        Ok(out)
    }

    /// Brings the copy up to date with the source.
    fn scan(&mut self) -> Result<Scan, StorageError> {
        let found = self.walk()?;
        let mut result = Scan::default();
        let now: HashMap<PathBuf, Stamp> = found
            .iter()
            .map(|(p, m)| {
                let stamp = Stamp {
                    mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    size: m.len(),
                    ino: m.ino(),
                };
                (p.clone(), stamp)
            })
            .collect();
        // Directories and files first, symlinks last: a `..data` link then
        // points at files that are already there.
        let (links, others): (Vec<_>, Vec<_>) = found.iter().partition(|(_, m)| m.file_type().is_symlink());
        for (p, m) in others.into_iter().chain(links) {
            if self.seen.get(p) == now.get(p) {
                continue;
            }
            let to = self.target_of(p);
            // The mount point itself may be bind-mounted into a container as
            // a file: keep its inode, write in place (as Kata does).
            let in_place = to == self.target && !m.is_dir();
            copy_entry(p, m, &to, in_place)?;
            result.copied += 1;
        }
        let mut gone: Vec<&PathBuf> = self.seen.keys().filter(|p| !now.contains_key(*p)).collect();
        // Deepest first.
        gone.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in gone {
            let t = self.target_of(p);
            let r = match std::fs::symlink_metadata(&t) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&t),
                Ok(_) => std::fs::remove_file(&t),
                Err(_) => Ok(()),
            };
            r.map_err(io("unlink", t.display()))?;
            result.removed += 1;
        }
        self.seen = now;
        Ok(result)
    }

    /// Stops copying: the mount point becomes a bind mount of the source.
    fn fall_back_to_bind(&mut self) -> Result<(), StorageError> {
        let mut rec = Record::default();
        mount(
            &self.source.display().to_string(),
            &self.target,
            None,
            MsFlags::MS_BIND,
            "",
            &mut rec,
        )?;
        self.watch = false;
        Ok(())
    }

    /// Removes the copy (or the bind mount) from the mount point.
    fn clear(&self) -> Result<(), StorageError> {
        if !self.watch {
            match nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(sys("umount2", self.target.display())(e)),
            }
            return Ok(());
        }
        if self.target.is_dir() {
            for e in std::fs::read_dir(&self.target).map_err(io("opendir", self.target.display()))? {
                let p = e.map_err(io("getdents", self.target.display()))?.path();
                let r = if std::fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.map_err(io("unlink", p.display()))?;
            }
        }
        Ok(())
    }
}

fn too_big(t: TooBig) -> StorageError {
    StorageError::InvalidArgument(format!("watchable-bind: {t}"))
}

fn is_too_big(e: &StorageError) -> bool {
    matches!(e, StorageError::InvalidArgument(m) if m.starts_with("watchable-bind: "))
}

/// Copies one source entry to `to`: a directory is made (mode and owner of
/// the source), a symlink made again, a file copied whole and renamed over
/// the old copy.
fn copy_entry(from: &Path, m: &std::fs::Metadata, to: &Path, in_place: bool) -> Result<(), StorageError> {
    let ids = (
        Some(nix::unistd::Uid::from_raw(m.uid())),
        Some(nix::unistd::Gid::from_raw(m.gid())),
    );
    if m.is_dir() {
        if !to.is_dir() {
            std::fs::create_dir_all(to).map_err(io("mkdir", to.display()))?;
        }
        std::fs::set_permissions(to, m.permissions()).map_err(io("chmod", to.display()))?;
        return nix::unistd::chown(to, ids.0, ids.1).map_err(sys("chown", to.display()));
    }
    if in_place && !m.file_type().is_symlink() {
        std::fs::copy(from, to).map_err(io("copy_file_range", format!("{} -> {}", from.display(), to.display())))?;
        return nix::unistd::chown(to, ids.0, ids.1).map_err(sys("chown", to.display()));
    }
    let name = to.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(".pith-watch");
    let tmp = to.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    if m.file_type().is_symlink() {
        let dest = std::fs::read_link(from).map_err(io("readlink", from.display()))?;
        std::os::unix::fs::symlink(&dest, &tmp).map_err(io("symlink", tmp.display()))?;
        nix::unistd::fchownat(None, &tmp, ids.0, ids.1, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(sys("fchownat", tmp.display()))?;
    } else {
        std::fs::copy(from, &tmp).map_err(io(
            "copy_file_range",
            format!("{} -> {}", from.display(), tmp.display()),
        ))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(io("chmod", tmp.display()))?;
        nix::unistd::chown(&tmp, ids.0, ids.1).map_err(sys("chown", tmp.display()))?;
    }
    // A directory where a file now is (or the other way round) goes first.
    if std::fs::symlink_metadata(to).map(|t| t.is_dir()).unwrap_or(false) {
        std::fs::remove_dir_all(to).map_err(io("rmdir", to.display()))?;
    }
    std::fs::rename(&tmp, to).map_err(io("rename", to.display()))
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<PathBuf, Entry>,
    /// Whether the watcher's tmpfs is mounted, and the directories made for it.
    tmpfs: Option<Record>,
    stop: bool,
    thread: bool,
}

/// One watched storage, as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    /// The host's directory (or file), confined.
    pub source: PathBuf,
    /// The mount point holding the copy.
    pub target: PathBuf,
    /// True while copied; false once it became a bind mount of the source
    /// (Kata's fallback for a source over the limits).
    pub copied: bool,
}

/// What the watcher keeps in sync, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    /// Watched storages, by target.
    pub entries: Vec<Watched>,
    /// The tmpfs the watcher mounted at its directory (and the directories
    /// made for it), while a copy lives there.
    pub tmpfs: Option<Record>,
}

/// Keeps watched copies in sync; one per sandbox (its storage manager's).
#[derive(Debug)]
pub struct Watcher {
    state: Arc<(Mutex<State>, Condvar)>,
    tmpfs_dir: PathBuf,
    interval: Duration,
    log: Logger,
}

impl Default for Watcher {
    fn default() -> Self {
        Watcher::new(Path::new(TMPFS_DIR), INTERVAL)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cv.notify_all();
    }
}

impl Watcher {
    /// A watcher whose tmpfs goes at `tmpfs_dir`, scanning every `interval`.
    pub fn new(tmpfs_dir: &Path, interval: Duration) -> Watcher {
        Watcher {
            state: Arc::new((Mutex::new(State::default()), Condvar::new())),
            tmpfs_dir: tmpfs_dir.to_path_buf(),
            interval,
            log: Logger::root(slog::Discard, slog::o!()),
        }
    }

    /// Logs (from the background thread too) to `log`.
    pub fn set_logger(&mut self, log: &Logger) {
        self.log = log.new(slog::o!("subsystem" => "watchable-bind"));
    }

    /// What is watched, as plain data.
    pub fn state(&self) -> WatchState {
        let st = self.lock();
        WatchState {
            entries: st
                .entries
                .values()
                .map(|e| Watched {
                    source: e.source.clone(),
                    target: e.target.clone(),
                    copied: e.watch,
                })
                .collect(),
            tmpfs: st.tmpfs.clone(),
        }
    }

    /// Takes over `state` (saved by [`Watcher::state`]): nothing is copied
    /// now; the next scan compares every copy with its source again.
    pub fn adopt(&self, state: WatchState) -> Result<(), StorageError> {
        let mut st = self.lock();
        st.tmpfs = state.tmpfs;
        for w in state.entries {
            let e = Entry {
                source: w.source,
                target: w.target.clone(),
                watch: w.copied,
                seen: HashMap::new(),
            };
            st.entries.insert(w.target, e);
        }
        self.start_thread(&mut st)
    }

    /// Starts the background thread, once, when something is copied.
    fn start_thread(&self, st: &mut State) -> Result<(), StorageError> {
        if st.thread || !st.entries.values().any(|e| e.watch) {
            return Ok(());
        }
        st.thread = true;
        let state = self.state.clone();
        let interval = self.interval;
        let log = self.log.clone();
        std::thread::Builder::new()
            .name("watchable-bind".into())
            .spawn(move || run(state, interval, log))
            .map_err(|e| StorageError::Sys {
                syscall: "clone",
                what: "watchable-bind thread".into(),
                source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
            })?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching `source` (already confined) into `target`: the copy is
    /// made now (or the bind mount, when the source is too big), then kept in
    /// sync by the background thread. Directories made are recorded in `rec`.
    pub fn add(&self, source: &Path, target: &Path, rec: &mut Record) -> Result<(), StorageError> {
        let mut st = self.lock();
        if target.starts_with(&self.tmpfs_dir) && st.tmpfs.is_none() {
            let mut trec = Record::default();
            ensure_dir(&self.tmpfs_dir, &mut trec)?;
            if let Err(e) = mount(
                "tmpfs",
                &self.tmpfs_dir,
                Some("tmpfs"),
                MsFlags::empty(),
                "mode=0755",
                &mut trec,
            ) {
                let _ = super::mount::undo(&self.tmpfs_dir, &mut trec, false);
                return Err(e);
            }
            st.tmpfs = Some(trec);
        }
        let meta = std::fs::metadata(source).map_err(io("stat", source.display()))?;
        if meta.is_dir() {
            ensure_dir(target, rec)?;
        } else {
            ensure_file(target, rec)?;
        }
        let mut e = Entry {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            watch: true,
            seen: HashMap::new(),
        };
        match e.scan() {
            Ok(_) => {}
            Err(err) if is_too_big(&err) => {
                e.clear()?;
                e.fall_back_to_bind()?;
                slog::info!(self.log, "source too big to copy, bind-mounted instead: {err}"; "target" => target.display().to_string());
            }
            Err(err) => {
                let _ = e.clear();
                drop(st);
                self.release_tmpfs_if_unused();
                return Err(err);
            }
        }
        st.entries.insert(target.to_path_buf(), e);
        self.start_thread(&mut st)
    }

    /// Stops watching `target` and empties it (the caller removes the directories).
    pub fn remove(&self, target: &Path) -> Result<(), StorageError> {
        let e = self.lock().entries.remove(target);
        if let Some(e) = e {
            e.clear()?;
        }
        Ok(())
    }

    /// Unmounts the watcher's tmpfs once nothing is on it.
    pub fn release_tmpfs_if_unused(&self) {
        let mut st = self.lock();
        let used = st.entries.keys().any(|t| t.starts_with(&self.tmpfs_dir));
        if used {
            return;
        }
        if let Some(mut rec) = st.tmpfs.take() {
            if let Err(e) = super::mount::undo(&self.tmpfs_dir, &mut rec, false) {
                slog::warn!(self.log, "unmounting the watchable tmpfs: {e}");
                st.tmpfs = Some(rec);
            }
        }
    }

    /// Scans every watched storage once now (the background thread does it every interval).
    #[cfg(test)]
    pub fn check_now(&self) -> Vec<(PathBuf, Result<Scan, String>)> {
        check(&mut self.lock(), &self.log)
    }

    /// Whether `target` is still copied (false: it became a bind mount), None if unknown.
    #[cfg(test)]
    pub fn is_copied(&self, target: &Path) -> Option<bool> {
        self.lock().entries.get(target).map(|e| e.watch)
    }
}

fn check(st: &mut State, log: &Logger) -> Vec<(PathBuf, Result<Scan, String>)> {
    let mut out = Vec::new();
    for (t, e) in st.entries.iter_mut().filter(|(_, e)| e.watch) {
        let r = match e.scan() {
            Ok(s) => Ok(s),
            Err(err) if is_too_big(&err) => {
                // Kata's fallback: stop copying, bind-mount the source.
                let r = e.clear().and_then(|_| e.fall_back_to_bind());
                match r {
                    Ok(()) => {
                        slog::info!(log, "source grew too big to copy, bind-mounted instead: {err}"; "target" => t.display().to_string())
                    }
                    Err(b) => {
                        slog::error!(log, "source too big ({err}) and bind mount failed: {b}"; "target" => t.display().to_string())
                    }
                }
                Err(err.to_string())
            }
            Err(err) => {
                slog::warn!(log, "scan failed: {err}"; "target" => t.display().to_string());
                Err(err.to_string())
            }
        };
        out.push((t.clone(), r));
    }
    out
}

fn run(state: Arc<(Mutex<State>, Condvar)>, interval: Duration, log: Logger) {
    let (m, cv) = &*state;
    let mut st = m.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let (guard, _) = cv.wait_timeout(st, interval).unwrap_or_else(|e| e.into_inner());
        st = guard;
        if st.stop {
            return;
        }
        check(&mut st, &log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let dst = d.path().join("dst");
        (d, src, dst)
    }

    /// A ConfigMap as the kubelet writes it: files in a timestamped directory,
    /// `..data` pointing at it, and one symlink per key through `..data`.
    fn config_map(src: &Path, stamp: &str, value: &str) {
        let dir = src.join(stamp);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("key"), value).unwrap();
        let tmp = src.join("..data_tmp");
        std::os::unix::fs::symlink(stamp, &tmp).unwrap();
        std::fs::rename(&tmp, src.join("..data")).unwrap();
        let _ = std::os::unix::fs::symlink("..data/key", src.join("key"));
    }

    #[test]
    fn copies_follow_updates_and_removals() {
        let (_d, src, dst) = setup();
        config_map(&src, "..2024_01", "v1");
        let w = Watcher::new(Path::new("/nonexistent-watch-root"), Duration::from_secs(3600));
        let mut rec = Record::default();
        w.add(&src, &dst, &mut rec).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("key")).unwrap(), "v1");
        assert_eq!(
            std::fs::read_link(dst.join("key")).unwrap(),
            PathBuf::from("..data/key")
        );

        // The kubelet's update: a new timestamped directory, ..data swapped, the old one removed.
        config_map(&src, "..2024_02", "v2");
        std::fs::remove_dir_all(src.join("..2024_01")).unwrap();
        let r = w.check_now();
        assert!(r[0].1.is_ok(), "{r:?}");
        assert_eq!(std::fs::read_to_string(dst.join("key")).unwrap(), "v2");
        assert!(!dst.join("..2024_01").exists());

        // Nothing changed: nothing copied.
        assert_eq!(w.check_now()[0].1, Ok(Scan::default()));

        // As plain data, and taken back by another watcher, which compares
        // the copy with the source again at its next scan.
        let st = w.state();
        assert_eq!(
            st.entries,
            [Watched {
                source: src.clone(),
                target: dst.clone(),
                copied: true,
            }]
        );
        assert_eq!(st.tmpfs, None);
        let again = Watcher::new(Path::new("/nonexistent-watch-root"), Duration::from_secs(3600));
        again.adopt(st.clone()).unwrap();
        assert_eq!(again.state(), st);
        std::fs::write(src.join("..2024_02/key"), "v3").unwrap();
        assert!(again.check_now()[0].1.as_ref().is_ok_and(|s| s.copied > 0));
        assert_eq!(std::fs::read_to_string(dst.join("key")).unwrap(), "v3");
        again.remove(&dst).unwrap();
        assert_eq!(again.state(), WatchState::default());
        w.remove(&dst).unwrap();
        assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
    }

    #[test]
    fn too_many_entries_or_bytes_is_refused_by_the_scan() {
        let (_d, src, dst) = setup();
        let mut e = Entry {
            source: src.clone(),
            target: dst.clone(),
            watch: true,
            seen: HashMap::new(),
        };
        std::fs::create_dir(&dst).unwrap();
        // The directory itself and 15 files: the most that is watched.
        for i in 1..MAX_ENTRIES {
            std::fs::write(src.join(format!("{i}")), "x").unwrap();
        }
        assert_eq!(e.scan().unwrap().copied, MAX_ENTRIES);
        std::fs::write(src.join("one-more"), "x").unwrap();
        let err = e.scan().unwrap_err();
        assert!(err.to_string().contains("17 entries"), "{err}");
        for i in 1..MAX_ENTRIES {
            std::fs::remove_file(src.join(format!("{i}"))).unwrap();
        }
        std::fs::File::create(src.join("big"))
            .unwrap()
            .set_len(MAX_SIZE + 1)
            .unwrap();
        let err = e.scan().unwrap_err();
        assert!(err.to_string().contains("bytes (at most 1048576"), "{err}");
    }

    #[test]
    fn a_single_file_source() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("file");
        std::fs::write(&src, "one").unwrap();
        let dst = d.path().join("out/file");
        let w = Watcher::new(Path::new("/nonexistent-watch-root"), Duration::from_secs(3600));
        let mut rec = Record::default();
        w.add(&src, &dst, &mut rec).unwrap();
        assert_eq!(std::fs::read_to_string(&dst).unwrap(), "one");
        std::fs::write(&src, "two, longer").unwrap();
        w.check_now();
        assert_eq!(std::fs::read_to_string(&dst).unwrap(), "two, longer");
    }
}
