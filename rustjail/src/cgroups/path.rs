//! The container's cgroup path (OCI `linux.cgroupsPath`), cleaned so it cannot escape its hierarchy.

use std::path::{Component, Path, PathBuf};

use super::error::{Error, Result};

/// A cleaned cgroups path: absolute paths start at the hierarchy root, relative ones at the caller's
/// own cgroup (as runc's cgroupfs driver does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPath {
    /// From the root of each hierarchy; stored without the leading "/".
    Absolute(PathBuf),
    /// From the caller's own cgroup in each hierarchy.
    Relative(PathBuf),
}

impl CgroupPath {
    /// Parses `linux.cgroupsPath`; when it is absent or empty the container id is used (relative).
    /// systemd-style "slice:prefix:name" paths are refused.
    pub fn parse(cgroups_path: Option<&Path>, container_id: &str) -> Result<Self> {
        let given = cgroups_path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if given.is_empty() {
            check_id(container_id)?;
            return Ok(CgroupPath::Relative(PathBuf::from(container_id)));
        }
        if !given.starts_with('/') && given.split(':').count() == 3 {
            return Err(Error::InvalidPath {
                path: given,
                reason: "systemd-style \"slice:prefix:name\" cgroup paths need the systemd cgroup driver, which is \
                         not supported; give a filesystem path such as \"/pith/<id>\""
                    .into(),
            });
        }
        let raw = Path::new(&given);
        let mut clean = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::ParentDir => {
                    clean.pop();
                }
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        if clean.as_os_str().is_empty() {
            return Err(Error::InvalidPath {
                path: given,
                reason: "it resolves to the root of the hierarchy".into(),
            });
        }
        Ok(if raw.is_absolute() {
            CgroupPath::Absolute(clean)
        } else {
            CgroupPath::Relative(clean)
        })
    }

    /// The directory in one hierarchy: under `mount_point` (absolute) or under `own_dir` (relative).
    pub fn dir_in(&self, mount_point: &Path, own_dir: Option<&Path>) -> PathBuf {
        match self {
            CgroupPath::Absolute(p) => mount_point.join(p),
            CgroupPath::Relative(p) => own_dir.unwrap_or(mount_point).join(p),
        }
    }
}

/// A container id used as a cgroup directory name must be one plain path component.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err(Error::InvalidPath {
            path: id.to_string(),
            reason: "no cgroupsPath given and the container id is not a valid directory name".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &str) -> Result<CgroupPath> {
        CgroupPath::parse(Some(Path::new(p)), "ctr")
    }

    #[test]
    fn relative_absolute_and_default() {
        assert_eq!(parse("a/b").unwrap(), CgroupPath::Relative("a/b".into()));
        assert_eq!(parse("/kata/x").unwrap(), CgroupPath::Absolute("kata/x".into()));
        assert_eq!(
            CgroupPath::parse(None, "ctr").unwrap(),
            CgroupPath::Relative("ctr".into())
        );
        assert_eq!(
            CgroupPath::parse(Some(Path::new("")), "c1").unwrap(),
            CgroupPath::Relative("c1".into())
        );
    }

    #[test]
    fn dot_dot_cannot_escape() {
        assert_eq!(parse("/../../etc/x").unwrap(), CgroupPath::Absolute("etc/x".into()));
        assert_eq!(parse("../../x").unwrap(), CgroupPath::Relative("x".into()));
        let e = parse("/a/..").unwrap_err().to_string();
        assert!(e.contains("root of the hierarchy"), "{e}");
    }

    #[test]
    fn systemd_and_bad_ids_are_refused() {
        let e = parse("system.slice:pith:abc").unwrap_err().to_string();
        assert!(e.contains("systemd-style"), "{e}");
        assert!(
            parse("/a:b:c").is_ok(),
            "absolute paths with colons are plain directories"
        );
        for bad in ["", "..", "a/b"] {
            assert!(CgroupPath::parse(None, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dir_in_uses_own_cgroup_for_relative_paths() {
        let mp = Path::new("/sys/fs/cgroup/memory");
        let own = Path::new("/sys/fs/cgroup/memory/user/1");
        assert_eq!(parse("x").unwrap().dir_in(mp, Some(own)), own.join("x"));
        assert_eq!(parse("/x").unwrap().dir_in(mp, Some(own)), mp.join("x"));
        assert_eq!(parse("x").unwrap().dir_in(mp, None), mp.join("x"));
    }
}
