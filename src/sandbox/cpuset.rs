//! OnlineCPUMem, and containers' cpusets after CPUs were onlined, as Kata's
//! agent updates them: the cgroups above each container get every online
//! CPU (a child's cpuset must be a subset of its parent's), then the
//! container gets the CPUs its spec asked for (`linux.resources.cpu.cpus`),
//! or every online CPU when it asked for none (in cgroup v1 a cpuset is
//! copied from the parent when made, and would otherwise never grow; Kata
//! leaves those containers as they were). The root of the hierarchy is the
//! kernel's and is not written; a file already holding the value is left alone.
//!
//! The sandbox asks each container's engine handle
//! ([`super::engine::EngineContainer::follow_cpus`]); the real engine writes
//! the files with [`follow_online`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::Spec;

use super::{blocking, lock, Error, Result, Sandbox};
use crate::guest::online::{cpu_list, online_cpu_mem};

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
fn set_cpus(dir: &Path, value: &str) -> Result<bool> {
    let f = dir.join(CPUS_FILE);
    let Ok(now) = std::fs::read_to_string(&f) else {
        return Ok(false);
    };
    if now.trim() == value {
        return Ok(false);
    }
    std::fs::write(&f, value).map_err(|e| Error::sys(format!("write {} = {value:?}", f.display()), e))?;
    Ok(true)
}

/// The cpuset `spec` asks for, if any.
fn spec_cpus(spec: &Spec) -> Option<String> {
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

/// Updates one cpuset chain; returns the files written.
fn follow(cgroup_dir: &Path, wanted: &str, online: &str) -> Result<Vec<PathBuf>> {
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

/// Lets the cpuset of a container with cgroup directories `cgroup` (by
/// controller, "" on cgroup v2) and spec `spec` follow the CPUs `online`
/// (a CPU list such as `0-3`); returns the files written.
pub(crate) fn follow_online(cgroup: &BTreeMap<String, PathBuf>, spec: &Spec, online: &str) -> Result<Vec<PathBuf>> {
    // v1: the cpuset hierarchy; v2: the single directory (key "").
    let Some(dir) = cgroup.get("cpuset").or_else(|| cgroup.get("")) else {
        return Ok(Vec::new());
    };
    let v2 = cgroup.contains_key("");
    match (spec_cpus(spec), v2) {
        (Some(w), _) => follow(dir, &w, online),
        // v2: an empty cpuset.cpus already means "the parent's".
        (None, true) => Ok(Vec::new()),
        (None, false) => follow(dir, online, online),
    }
}

impl Sandbox {
    /// OnlineCPUMem: `nb_cpus` CPUs online in all and, unless `cpu_only`,
    /// every memory block (with the guest settings); then every container's
    /// cpuset follows the CPUs online. Returns the `cpuset.cpus` files written.
    pub(crate) async fn online_cpu_mem(&self, nb_cpus: u32, cpu_only: bool) -> Result<Vec<PathBuf>> {
        let g = self.guest();
        let onlined = blocking(move || online_cpu_mem(&g, nb_cpus, cpu_only).map_err(Error::from)).await?;
        if onlined.online.is_empty() {
            return Ok(Vec::new());
        }
        self.cpusets_follow(&cpu_list(&onlined.online)).await
    }

    /// After CPUs came online (`online`, a CPU list such as `0-3`), lets every
    /// container's cpuset follow; returns the `cpuset.cpus` files written.
    pub(crate) async fn cpusets_follow(&self, online: &str) -> Result<Vec<PathBuf>> {
        let containers: Vec<Arc<super::Container>> = lock(&self.containers).values().cloned().collect();
        let online = online.to_string();
        blocking(move || {
            let mut written = Vec::new();
            for c in containers {
                written.extend(c.engine.follow_cpus(&online)?);
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

    #[test]
    fn the_spec_decides_and_v2_without_one_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cpuset");
        let dir = root.join("pod/ctr");
        std::fs::create_dir_all(&dir).unwrap();
        for p in [&root, &root.join("pod"), &dir] {
            std::fs::write(p.join(CPUS_FILE), "0\n").unwrap();
        }
        let mut spec = Spec::default();
        let v1 = BTreeMap::from([("cpuset".to_string(), dir.clone())]);
        assert_eq!(follow_online(&v1, &spec, "0-1").unwrap().len(), 2);
        assert_eq!(std::fs::read_to_string(dir.join(CPUS_FILE)).unwrap(), "0-1");
        let v2 = BTreeMap::from([(String::new(), dir.clone())]);
        assert!(follow_online(&v2, &spec, "0-3").unwrap().is_empty());
        let mut cpu = oci_spec::runtime::LinuxCpu::default();
        cpu.set_cpus(Some("1".into()));
        let mut res = oci_spec::runtime::LinuxResources::default();
        res.set_cpu(Some(cpu));
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_resources(Some(res));
        spec.set_linux(Some(linux));
        follow_online(&v2, &spec, "0-3").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(CPUS_FILE)).unwrap(), "1");
        assert!(follow_online(&BTreeMap::new(), &spec, "0-3").unwrap().is_empty());
    }
}
