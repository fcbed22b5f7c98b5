//! Containers' cpusets after CPUs were onlined (OnlineCPUMem), as Kata's
//! agent updates them: the cgroups above each container get every online
//! CPU (a child's cpuset must be a subset of its parent's), then the
//! container gets the CPUs its spec asked for (`linux.resources.cpu.cpus`),
//! or every online CPU when it asked for none (in cgroup v1 a cpuset is
//! copied from the parent when made, and would otherwise never grow; Kata
//! leaves those containers as they were). The root of the hierarchy is the
//! kernel's and is not written; a file already holding the value is left alone.

use std::path::{Path, PathBuf};

use super::{blocking, Sandbox, SandboxError};

const CPUS_FILE: &str = "cpuset.cpus";

/// The cpuset directories from just below the hierarchy's root down to
/// `dir`'s parent (the root is the topmost directory with a cpuset file).
fn ancestors(dir: &Path) -> Vec<PathBuf> {
    let mut up: Vec<PathBuf> = dir
        .ancestors()
        .skip(1)
        .take_while(|p| p.join(CPUS_FILE).exists())
        .map(Path::to_path_buf)
        .collect();
    up.pop(); // the root
    up.reverse();
    up
}

/// Writes `value` to `dir/cpuset.cpus` unless it already holds it (or has none).
fn set_cpus(dir: &Path, value: &str) -> Result<bool, SandboxError> {
    let f = dir.join(CPUS_FILE);
    let Ok(now) = std::fs::read_to_string(&f) else {
        return Ok(false);
    };
    if now.trim() == value {
        return Ok(false);
    }
    std::fs::write(&f, value).map_err(|e| SandboxError::Internal(format!("write {} = {value:?}: {e}", f.display())))?;
    Ok(true)
}

/// The cpuset the spec in `bundle/config.json` asks for, if any.
fn spec_cpus(bundle: &Path) -> Option<String> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    let cpus = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .cpu()
        .as_ref()?
        .cpus()
        .clone()?;
    (!cpus.is_empty()).then_some(cpus)
}

/// Updates one container's cpuset chain; returns the files written.
fn follow(cgroup_dir: &Path, wanted: &str, online: &str) -> Result<Vec<PathBuf>, SandboxError> {
    let mut written = Vec::new();
    for a in ancestors(cgroup_dir) {
        if set_cpus(&a, online)? {
            written.push(a.join(CPUS_FILE));
        }
    }
    if set_cpus(cgroup_dir, wanted)? {
        written.push(cgroup_dir.join(CPUS_FILE));
    }
    Ok(written)
}

impl Sandbox {
    /// After CPUs came online (`online`, a CPU list such as `0-3`), lets every
    /// container's cpuset follow; returns the `cpuset.cpus` files written.
    pub async fn cpusets_follow(&self, online: &str) -> Result<Vec<PathBuf>, SandboxError> {
        let mut jobs = Vec::new();
        for id in self.container_ids() {
            let Ok(c) = self.container(&id) else { continue };
            let Ok(cg) = self.runtime.cgroup(&id) else { continue };
            let paths = cg.paths();
            // v1: the cpuset hierarchy; v2: the single directory (key "").
            let Some(dir) = paths.get("cpuset").or_else(|| paths.get("")).cloned() else {
                continue;
            };
            let wanted = spec_cpus(&c.bundle);
            let v2 = paths.contains_key("");
            jobs.push((dir, wanted, v2));
        }
        let online = online.to_string();
        blocking(move || {
            let mut written = Vec::new();
            for (dir, wanted, v2) in jobs {
                match (wanted, v2) {
                    (Some(w), _) => written.extend(follow(&dir, &w, &online)?),
                    // v2: an empty cpuset.cpus already means "the parent's".
                    (None, true) => {}
                    (None, false) => written.extend(follow(&dir, &online, &online)?),
                }
            }
            Ok(written)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_stop_below_the_hierarchy_root_and_unchanged_files_stay() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cpuset");
        let dir = root.join("pod/ctr");
        std::fs::create_dir_all(&dir).unwrap();
        for (p, v) in [(&root, "0-3"), (&root.join("pod"), "0"), (&dir, "0")] {
            std::fs::write(p.join(CPUS_FILE), format!("{v}\n")).unwrap();
        }
        assert_eq!(ancestors(&dir), vec![root.join("pod")]);
        let w = follow(&dir, "0-3", "0-3").unwrap();
        assert_eq!(w, vec![root.join("pod").join(CPUS_FILE), dir.join(CPUS_FILE)]);
        assert_eq!(std::fs::read_to_string(root.join(CPUS_FILE)).unwrap(), "0-3\n");
        assert_eq!(std::fs::read_to_string(dir.join(CPUS_FILE)).unwrap(), "0-3");
        // A container that asked for CPU 1 keeps it; nothing else changes.
        let w = follow(&dir, "1", "0-3").unwrap();
        assert_eq!(w, vec![dir.join(CPUS_FILE)]);
        assert!(follow(&dir, "1", "0-3").unwrap().is_empty());
    }
}
