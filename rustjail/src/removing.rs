//! Cgroups of deleted containers still being removed
//! ([`crate::container::Runtime::delete_but_cgroup`]): a create whose cgroup
//! shares a directory with one of them waits for it, and nothing else does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::cgroups::Manager;

/// The directories being removed.
#[derive(Default)]
pub(crate) struct Removing {
    dirs: Mutex<Vec<PathBuf>>,
    done: Condvar,
}

impl Removing {
    fn lock(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once no directory of `cgroup`, or above or below one, is being removed.
    pub(crate) fn wait_for(&self, cgroup: &Manager) {
        let mut dirs = self.lock();
        // Every create asks: most find nothing being removed.
        if dirs.is_empty() {
            return;
        }
        let mine: Vec<PathBuf> = cgroup.paths().into_values().collect();
        let overlaps = |d: &Path| mine.iter().any(|m| within(m, d) || within(d, m));
        while dirs.iter().any(|d| overlaps(d)) {
            dirs = self.done.wait(dirs).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Whether `path` is `dir` or below it. The managers build both from the
/// same mount points and components (no `.`, no doubled `/`), so bytes
/// compare as components would, without `Path::starts_with`'s parse of
/// every component (8 x 8 pairs per create while the last container's
/// cgroup is still going: 12% of a create's user time in the agent).
fn within(path: &Path, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (p, d) = (path.as_os_str().as_bytes(), dir.as_os_str().as_bytes());
    let d = d.strip_suffix(b"/").unwrap_or(d);
    p.starts_with(d) && (p.len() == d.len() || p[d.len()] == b'/')
}

/// A deleted container's emptied cgroup, to destroy ([`CgroupRemoval::finish`];
/// dropped unfinished, it is destroyed then).
pub struct CgroupRemoval {
    cgroup: Option<Manager>,
    /// Its directories, as registered in `removing`.
    dirs: Vec<PathBuf>,
    removing: Arc<Removing>,
}

impl CgroupRemoval {
    pub(crate) fn new(cgroup: Manager, removing: Arc<Removing>) -> CgroupRemoval {
        let dirs: Vec<PathBuf> = cgroup.paths().into_values().collect();
        removing.lock().extend(dirs.iter().cloned());
        CgroupRemoval {
            cgroup: Some(cgroup),
            dirs,
            removing,
        }
    }

    /// Removes the directories (see [`Manager::destroy`]); a create waiting
    /// for them goes on, whatever the outcome.
    pub fn finish(mut self) -> Result<(), crate::cgroups::Error> {
        self.destroy()
    }

    fn destroy(&mut self) -> Result<(), crate::cgroups::Error> {
        let Some(cgroup) = self.cgroup.take() else {
            return Ok(());
        };
        let result = cgroup.destroy();
        let mut dirs = self.removing.lock();
        for g in &self.dirs {
            if let Some(i) = dirs.iter().position(|d| d == g) {
                dirs.swap_remove(i);
            }
        }
        drop(dirs);
        self.removing.done.notify_all();
        result
    }
}

impl Drop for CgroupRemoval {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_is_the_same_directory_or_below_it_by_whole_components() {
        let w = |p: &str, d: &str| within(Path::new(p), Path::new(d));
        assert!(w("/sys/fs/cgroup/cpu/pods/a", "/sys/fs/cgroup/cpu/pods/a"));
        assert!(w("/sys/fs/cgroup/cpu/pods/a/sub", "/sys/fs/cgroup/cpu/pods/a"));
        assert!(w("/sys/fs/cgroup/cpu/pods/a", "/sys/fs/cgroup/cpu/pods/"));
        assert!(w("/sys/fs/cgroup/cpu/pods/a", "/"));
        assert!(!w("/sys/fs/cgroup/cpu/pods/ab", "/sys/fs/cgroup/cpu/pods/a"));
        assert!(!w("/sys/fs/cgroup/cpu/pods", "/sys/fs/cgroup/cpu/pods/a"));
        assert!(!w("/sys/fs/cgroup/cpuacct/pods/a", "/sys/fs/cgroup/cpu/pods/a"));
        // As Path::starts_with answers for the paths the managers build.
        for (p, d) in [("/a/b", "/a"), ("/a/bc", "/a/b"), ("/a", "/a/b"), ("/a/b/", "/a/b")] {
            assert_eq!(w(p, d), Path::new(p).starts_with(d), "{p} {d}");
        }
    }
    use crate::cgroups::tests_fake_tree::fake_host;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn only_a_create_sharing_a_directory_waits_and_finish_lets_it_go() {
        let (_dir, root) = fake_host();
        let m = |p: &str| Manager::with_root(&root, Some(Path::new(p)), "x").unwrap();
        let removing = Arc::new(Removing::default());
        let removal = CgroupRemoval::new(m("/pods/a"), removing.clone());
        // Another cgroup, even beside it: no wait.
        removing.wait_for(&m("/pods/b"));
        // The same one, or one below it: waits until the removal is done.
        let (tx, rx) = mpsc::channel();
        for p in ["/pods/a", "/pods/a/inner"] {
            let (removing, tx, m) = (removing.clone(), tx.clone(), m(p));
            std::thread::spawn(move || {
                removing.wait_for(&m);
                tx.send(()).unwrap();
            });
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "went on before the removal"
        );
        removal.finish().unwrap();
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("still waiting after the removal");
        }
        assert!(removing.lock().is_empty());
    }
}
