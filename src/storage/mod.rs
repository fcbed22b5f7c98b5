//! Storages: what the host asks the agent to mount in the guest for the sandbox
//! and its containers (Kata's `Storage` message: rootfs, volumes, emptyDirs).
//!
//! One driver per file, selected by `Storage.driver` (Kata's names):
//! `local` (a directory), `ephemeral` (tmpfs), `bind`, `9p` and `virtio-fs`
//! (`shared_fs`), `blk`/`scsi`/`mmioblk`/`nvdimm` (`block`: the device is
//! waited for first, then its filesystem mounted), `overlayfs` (`overlay`)
//! and `watchable-bind` (`watch`: a copy kept in sync with the host's files).
//! Every mount point, and the source of bind-like storages, must lie under an
//! allowed root (`/run/kata-containers`, the agent's state directory,
//! `PITH_STORAGE_ROOTS`), resolved without following a symlink out.
//!
//! [`StorageManager`] counts references: several owners (containers, the
//! sandbox) may use the storage at one mount point; it is mounted by the first
//! and unmounted (and the directories the agent made removed) when the last
//! lets go. Its state is plain data ([`StorageState`]) so that it can be saved
//! and taken back by a restarted agent.

pub mod bind;
pub mod block;
pub mod ephemeral;
pub mod local;
pub mod mount;
pub mod options;
pub mod overlay;
pub mod shared_fs;
#[cfg(test)]
mod tests;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use protocols::agent::Storage;
use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use crate::guest::confine::ConfineError;
use mount::Record;

/// The drivers this agent has, as GetGuestDetails lists them (Kata's names,
/// and pith's `bind`).
pub const DRIVERS: &[&str] = &[
    "9p",
    "bind",
    "blk",
    "ephemeral",
    "local",
    "mmioblk",
    "nvdimm",
    "overlayfs",
    "scsi",
    "virtio-fs",
    "watchable-bind",
];

/// Anything that can go wrong with a storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage cannot be set up as described (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// Another storage is at the mount point (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// A syscall failed (INTERNAL).
    #[error("{syscall}({what}): {source}")]
    Sys {
        /// The syscall, as strace names it.
        syscall: &'static str,
        /// What it was about.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// One storage of an [`StorageManager::add`] call failed (the code is the cause's).
    #[error("storage {index} ({driver} at {mount_point:?}): {source}")]
    Storage {
        /// Its place in the list.
        index: usize,
        /// Its driver.
        driver: String,
        /// Its mount point.
        mount_point: String,
        /// What went wrong.
        source: Box<StorageError>,
    },
}

impl StorageError {
    /// The kind of failure (the RPC layer picks the status from it).
    pub(crate) fn kind(&self) -> crate::error::ErrorKind {
        match self {
            StorageError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            StorageError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            StorageError::Sys { .. } => ErrorKind::Internal,
            StorageError::Storage { source, .. } => source.kind(),
        }
    }
}

/// One storage in use, as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageEntry {
    /// Where it is (the key).
    pub mount_point: PathBuf,
    /// `Storage.driver`.
    pub driver: String,
    /// `Storage.source`.
    pub source: String,
    /// `Storage.fstype`.
    pub fstype: String,
    /// `Storage.options`.
    pub options: Vec<String>,
    /// `Storage.shared`: kept until the sandbox goes, even without owners.
    #[serde(default)]
    pub shared: bool,
    /// Who uses it (container ids, or the sandbox).
    pub owners: BTreeSet<String>,
    /// Whether the agent mounted something at the mount point.
    pub mounted: bool,
    /// Directories and files the agent created for it, in creation order.
    #[serde(default)]
    pub created: Vec<PathBuf>,
    /// The writable layer the agent made for an `overlayfs` storage (Kata's
    /// `overlay-rw` option), removed with the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<PathBuf>,
}

impl StorageEntry {
    fn same_storage(&self, s: &Storage) -> bool {
        self.driver == s.driver && self.source == s.source && self.fstype == s.fstype && self.options == s.options
    }

    fn record(&self) -> Record {
        Record {
            mounted: self.mounted,
            created: self.created.clone(),
        }
    }
}

/// Everything the manager holds, for saving.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageState {
    /// The storages in use, by mount point.
    pub entries: Vec<StorageEntry>,
    /// What the `watchable-bind` watcher keeps in sync.
    #[serde(default)]
    pub watch: watch::WatchState,
}

/// Where storage mount points (and the sources of bind-like storages) may
/// be when nothing else is configured: Kata's directory. The agent adds its
/// state directory and [`ROOTS_ENV`].
pub const DEFAULT_ROOTS: &[&str] = &["/run/kata-containers"];
/// Environment variable with more allowed storage directories, colon-separated.
pub const ROOTS_ENV: &str = "PITH_STORAGE_ROOTS";

/// The allowed storage directories of an agent keeping its state in
/// `state_dir`: [`DEFAULT_ROOTS`], `state_dir`, and [`ROOTS_ENV`] from `env`.
pub fn roots_for(state_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = DEFAULT_ROOTS.iter().map(PathBuf::from).collect();
    roots.push(state_dir.to_path_buf());
    if let Some(more) = env(ROOTS_ENV) {
        roots.extend(crate::guest::parse_roots(&more));
    }
    roots
}

/// Mounts storages and counts who uses them.
#[derive(Debug)]
pub struct StorageManager {
    entries: Mutex<BTreeMap<PathBuf, StorageEntry>>,
    /// Directories mount points and bind sources must lie under.
    roots: Vec<PathBuf>,
    /// Keeps `watchable-bind` copies in sync.
    watcher: watch::Watcher,
    /// Runs before a release tears a storage down ([`StorageManager::before_teardown`]).
    before_teardown: std::sync::OnceLock<TeardownHook>,
}

/// What runs before a storage is torn down.
struct TeardownHook(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for TeardownHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TeardownHook")
    }
}

impl Default for StorageManager {
    fn default() -> Self {
        StorageManager {
            entries: Mutex::default(),
            roots: DEFAULT_ROOTS.iter().map(PathBuf::from).collect(),
            watcher: watch::Watcher::default(),
            before_teardown: std::sync::OnceLock::new(),
        }
    }
}

/// What one `add` call did, to undo it on failure.
enum Done {
    Created(PathBuf),
    Joined(PathBuf),
}

impl StorageManager {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// A manager that takes over `state` (saved by [`StorageManager::snapshot`]);
    /// watched copies are compared with their sources again from the next scan.
    #[allow(dead_code, reason = "a restarted agent's restore (persisted state) is its caller")]
    pub fn from_state(state: StorageState) -> Result<Self, StorageError> {
        let entries = state.entries.into_iter().map(|e| (e.mount_point.clone(), e)).collect();
        let m = StorageManager {
            entries: Mutex::new(entries),
            ..Default::default()
        };
        m.watcher.adopt(state.watch)?;
        Ok(m)
    }

    /// The same manager logging (the watcher's background thread) to `log`.
    pub fn with_logger(mut self, log: &slog::Logger) -> Self {
        self.watcher.set_logger(log);
        self
    }

    /// The same manager confined to `roots` instead of [`DEFAULT_ROOTS`].
    pub fn with_roots(mut self, roots: Vec<PathBuf>) -> Self {
        self.roots = roots;
        self
    }

    /// The same manager with `watcher` for `watchable-bind` storages.
    #[cfg(test)]
    pub fn with_watcher(mut self, watcher: watch::Watcher) -> Self {
        self.watcher = watcher;
        self
    }

    /// The watcher of `watchable-bind` storages.
    #[cfg(test)]
    pub fn watcher(&self) -> &watch::Watcher {
        &self.watcher
    }

    /// The directories storages are confined to.
    #[cfg(test)]
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Has `f` run before each storage a release tears down (once set, kept):
    /// what must let go of a filesystem before it is unmounted for good.
    pub fn before_teardown(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.before_teardown.set(TeardownHook(f));
    }

    fn tearing_down(&self) {
        if let Some(hook) = self.before_teardown.get() {
            (hook.0)();
        }
    }

    /// The state, as plain data.
    pub fn snapshot(&self) -> StorageState {
        StorageState {
            entries: self.lock().values().cloned().collect(),
            watch: self.watcher.state(),
        }
    }

    /// UpdateEphemeralMounts (see [`ephemeral::update`]), confined to this
    /// manager's roots; not while storages are being added or released.
    pub fn update_ephemeral(&self, storages: &[Storage]) -> Result<(), StorageError> {
        let _entries = self.lock();
        ephemeral::update(&self.roots, storages)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, StorageEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets up `storages` for `owner` and returns their mount points, in order.
    /// A storage already at its mount point (same driver, source, type and
    /// options) is shared; a different one there is ALREADY_EXISTS. On failure,
    /// everything this call did is undone.
    pub fn add(&self, owner: &str, storages: &[Storage]) -> Result<Vec<PathBuf>, StorageError> {
        let mut entries = self.lock();
        let mut done = Vec::new();
        let mut paths = Vec::new();
        for (i, s) in storages.iter().enumerate() {
            match add_one(&mut entries, self, owner, s) {
                Ok((mp, d)) => {
                    paths.push(mp);
                    done.extend(d);
                }
                Err(e) => {
                    rollback(&mut entries, &self.watcher, owner, done);
                    return Err(with_context(i, s, e));
                }
            }
        }
        Ok(paths)
    }

    /// Drops every reference of `owner`; storages nobody uses any more (and not
    /// `shared`) are unmounted and their created directories removed. Every
    /// storage is tried; the first error is returned.
    pub fn release(&self, owner: &str) -> Result<(), StorageError> {
        let mut entries = self.lock();
        let mut first_err = None;
        let keys: Vec<PathBuf> = entries.keys().cloned().collect();
        for k in keys {
            let e = entries.get_mut(&k).expect("key just listed");
            if !e.owners.remove(owner) || !e.owners.is_empty() || e.shared {
                continue;
            }
            self.tearing_down();
            if let Err(err) = teardown(&mut entries, &self.watcher, &k) {
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Tears down every storage (the sandbox is going away).
    pub fn release_all(&self) -> Result<(), StorageError> {
        let mut entries = self.lock();
        let mut first_err = None;
        // Deepest mount points first, so nested mounts come off before their parents.
        let keys: Vec<PathBuf> = entries.keys().rev().cloned().collect();
        for k in keys {
            if let Some(e) = entries.get_mut(&k) {
                e.owners.clear();
            }
            self.tearing_down();
            if let Err(err) = teardown(&mut entries, &self.watcher, &k) {
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Mount points in use by `owner`.
    #[cfg(test)]
    pub fn mount_points_of(&self, owner: &str) -> Vec<PathBuf> {
        self.lock()
            .values()
            .filter(|e| e.owners.contains(owner))
            .map(|e| e.mount_point.clone())
            .collect()
    }
}

fn with_context(index: usize, s: &Storage, e: StorageError) -> StorageError {
    StorageError::Storage {
        index,
        driver: s.driver.clone(),
        mount_point: s.mount_point.clone(),
        source: Box::new(e),
    }
}

/// The mount point as a key: absolute, without `..`, under an allowed root,
/// resolved without following a symlink out of that root.
fn mount_point(roots: &[PathBuf], s: &Storage) -> Result<PathBuf, StorageError> {
    confined(roots, &s.mount_point, "mount_point", false)
}

/// `path` (the storage field `field`) resolved under `roots`.
pub(crate) fn confined(roots: &[PathBuf], path: &str, field: &str, must_exist: bool) -> Result<PathBuf, StorageError> {
    crate::guest::confine::resolve(roots, Path::new(path), must_exist).map_err(|e| match e {
        ConfineError::Sys { syscall, path, errno } => StorageError::Sys {
            syscall,
            what: path.display().to_string(),
            source: errno,
        },
        e => StorageError::InvalidArgument(format!("{field}: {e}")),
    })
}

fn add_one(
    entries: &mut BTreeMap<PathBuf, StorageEntry>,
    m: &StorageManager,
    owner: &str,
    s: &Storage,
) -> Result<(PathBuf, Option<Done>), StorageError> {
    let roots = &m.roots;
    let mp = mount_point(roots, s)?;
    if let Some(e) = entries.get_mut(&mp) {
        if !e.same_storage(s) {
            return Err(StorageError::AlreadyExists(format!(
                "{} already holds a different storage ({} from {:?})",
                mp.display(),
                e.driver,
                e.source
            )));
        }
        let joined = e.owners.insert(owner.to_string());
        return Ok((mp.clone(), joined.then_some(Done::Joined(mp))));
    }
    let mut clean = s.clone();
    clean.mount_point = mp.display().to_string();
    let mut rec = Record::default();
    let r = match s.driver.as_str() {
        "local" => local::setup(&clean, &mut rec),
        "ephemeral" => ephemeral::setup(&clean, &mut rec),
        "bind" => bind::setup(&clean, roots, &mut rec),
        "9p" => shared_fs::setup(&clean, &mut rec, shared_fs::NINEP_FSTYPE),
        "virtio-fs" => shared_fs::setup(&clean, &mut rec, shared_fs::VIRTIOFS_FSTYPE),
        d if block::is_block(d) => block::setup(&clean, &mut rec),
        "overlayfs" => overlay::setup(&clean, roots, &mut rec),
        "watchable-bind" => {
            confined(roots, &s.source, "source", true).and_then(|src| m.watcher.add(&src, &mp, &mut rec))
        }
        other => Err(StorageError::InvalidArgument(format!(
            "unknown storage driver {other:?} (this agent has {})",
            DRIVERS.join(", ")
        ))),
    };
    if let Err(e) = r {
        // Best effort: the error that matters is the one that stopped the setup.
        let _ = mount::undo(&mp, &mut rec, s.driver == "local");
        return Err(e);
    }
    entries.insert(
        mp.clone(),
        StorageEntry {
            mount_point: mp.clone(),
            driver: s.driver.clone(),
            source: s.source.clone(),
            fstype: s.fstype.clone(),
            options: s.options.to_vec(),
            shared: s.shared,
            owners: BTreeSet::from([owner.to_string()]),
            mounted: rec.mounted,
            created: rec.created,
            layer: (s.driver == "overlayfs").then(|| overlay::rw_layer(&clean)).flatten(),
        },
    );
    Ok((mp.clone(), Some(Done::Created(mp))))
}

fn rollback(entries: &mut BTreeMap<PathBuf, StorageEntry>, watcher: &watch::Watcher, owner: &str, done: Vec<Done>) {
    for d in done.into_iter().rev() {
        match d {
            Done::Joined(mp) => {
                if let Some(e) = entries.get_mut(&mp) {
                    e.owners.remove(owner);
                }
            }
            Done::Created(mp) => {
                // Best effort: the add fails with its own error either way.
                let _ = teardown(entries, watcher, &mp);
            }
        }
    }
}

/// Unmounts and cleans up the entry at `mp`; it stays (with what is left to
/// undo) when that fails, so a later release can try again.
fn teardown(
    entries: &mut BTreeMap<PathBuf, StorageEntry>,
    watcher: &watch::Watcher,
    mp: &Path,
) -> Result<(), StorageError> {
    let Some(e) = entries.get_mut(mp) else {
        return Ok(());
    };
    let mut rec = e.record();
    if e.driver == "watchable-bind" {
        watcher.remove(mp)?;
    }
    if e.driver == "overlayfs" {
        // Unmount, then the writable layer, so the directories above it empty.
        let mut mounted = Record {
            mounted: rec.mounted,
            created: Vec::new(),
        };
        mount::undo(mp, &mut mounted, false)?;
        e.mounted = mounted.mounted;
        rec.mounted = mounted.mounted;
        if let Some(layer) = &e.layer {
            overlay::remove_layer(layer)?;
        }
    }
    let r = mount::undo(mp, &mut rec, e.driver == "local");
    e.mounted = rec.mounted;
    e.created = rec.created;
    r?;
    if e.driver == "watchable-bind" {
        watcher.release_tmpfs_if_unused();
    }
    entries.remove(mp);
    Ok(())
}
