//! Storages: what the host asks the agent to mount in the guest for the sandbox
//! and its containers (Kata's `Storage` message: rootfs, volumes, emptyDirs).
//!
//! One driver per file, selected by `Storage.driver`:
//! `local` (a directory), `ephemeral` (tmpfs), `bind`, `9p` and `virtio-fs`.
//! Block drivers (`blk`, `scsi`, `mmioblk`, `nvdimm`) come with block hot-plug;
//! until then they, like any unknown driver, are refused with INVALID_ARGUMENT.
//!
//! [`StorageManager`] counts references: several owners (containers, the
//! sandbox) may use the storage at one mount point; it is mounted by the first
//! and unmounted (and the directories the agent made removed) when the last
//! lets go. Its state is plain data ([`StorageState`]) so that it can be saved
//! and taken back by a restarted agent.

pub mod bind;
pub mod ephemeral;
pub mod local;
pub mod mount;
pub mod options;
pub mod shared_fs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use protocols::agent::Storage;
use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use mount::Record;

/// The drivers this agent has, as GetGuestDetails lists them.
pub const DRIVERS: &[&str] = &["local", "ephemeral", "bind", "9p", "virtio-fs"];

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
}

/// Mounts storages and counts who uses them.
#[derive(Debug, Default)]
pub struct StorageManager {
    entries: Mutex<BTreeMap<PathBuf, StorageEntry>>,
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

    /// A manager that takes over `state` (saved by [`StorageManager::snapshot`]).
    #[allow(dead_code, reason = "a restarted agent's restore (persisted state) is its caller")]
    pub fn from_state(state: StorageState) -> Self {
        let entries = state.entries.into_iter().map(|e| (e.mount_point.clone(), e)).collect();
        StorageManager {
            entries: Mutex::new(entries),
        }
    }

    /// The state, as plain data.
    pub fn snapshot(&self) -> StorageState {
        StorageState {
            entries: self.lock().values().cloned().collect(),
        }
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
            match add_one(&mut entries, owner, s) {
                Ok((mp, d)) => {
                    paths.push(mp);
                    done.extend(d);
                }
                Err(e) => {
                    rollback(&mut entries, owner, done);
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
            if let Err(err) = teardown(&mut entries, &k) {
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
            if let Err(err) = teardown(&mut entries, &k) {
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

/// The mount point as a key: absolute, without `..`, `.` or a trailing `/`.
fn mount_point(s: &Storage) -> Result<PathBuf, StorageError> {
    let p = Path::new(&s.mount_point);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(StorageError::InvalidArgument(format!(
            "mount point {:?} must be an absolute path without '..'",
            s.mount_point
        )));
    }
    let clean: PathBuf = p.components().collect();
    if clean == Path::new("/") {
        return Err(StorageError::InvalidArgument("mount point \"/\" is not allowed".into()));
    }
    Ok(clean)
}

fn add_one(
    entries: &mut BTreeMap<PathBuf, StorageEntry>,
    owner: &str,
    s: &Storage,
) -> Result<(PathBuf, Option<Done>), StorageError> {
    let mp = mount_point(s)?;
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
        "bind" => bind::setup(&clean, &mut rec),
        "9p" => shared_fs::setup(&clean, &mut rec, shared_fs::NINEP_FSTYPE),
        "virtio-fs" => shared_fs::setup(&clean, &mut rec, shared_fs::VIRTIOFS_FSTYPE),
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
        },
    );
    Ok((mp.clone(), Some(Done::Created(mp))))
}

fn rollback(entries: &mut BTreeMap<PathBuf, StorageEntry>, owner: &str, done: Vec<Done>) {
    for d in done.into_iter().rev() {
        match d {
            Done::Joined(mp) => {
                if let Some(e) = entries.get_mut(&mp) {
                    e.owners.remove(owner);
                }
            }
            Done::Created(mp) => {
                // Best effort: the add fails with its own error either way.
                let _ = teardown(entries, &mp);
            }
        }
    }
}

/// Unmounts and cleans up the entry at `mp`; it stays (with what is left to
/// undo) when that fails, so a later release can try again.
fn teardown(entries: &mut BTreeMap<PathBuf, StorageEntry>, mp: &Path) -> Result<(), StorageError> {
    let Some(e) = entries.get_mut(mp) else {
        return Ok(());
    };
    let mut rec = e.record();
    let r = mount::undo(mp, &mut rec, e.driver == "local");
    e.mounted = rec.mounted;
    e.created = rec.created;
    r?;
    entries.remove(mp);
    Ok(())
}
