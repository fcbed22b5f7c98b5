//! OCI hooks that live in the guest (`CreateSandbox.guest_hook_path`): every
//! executable in `<path>/prestart`, `<path>/poststart` and `<path>/poststop`
//! is added to each container's spec, after the hooks the spec already has,
//! as Kata does.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use oci_spec::runtime::{Hook, Spec};

/// The hooks found under `dir`, by kind; an absent directory means none.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GuestHooks {
    prestart: Vec<Hook>,
    poststart: Vec<Hook>,
    poststop: Vec<Hook>,
}

fn scan(dir: &Path, kind: &str) -> Result<Vec<Hook>, String> {
    let d = dir.join(kind);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("opendir {}: {e}", d.display())),
    };
    let mut paths = Vec::new();
    for e in entries {
        let e = e.map_err(|e| format!("readdir {}: {e}", d.display()))?;
        let p = e.path();
        let meta = std::fs::metadata(&p).map_err(|e| format!("stat {}: {e}", p.display()))?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            paths.push(p);
        }
    }
    // Run in a stable order: by file name.
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| {
            let mut h = Hook::default();
            h.set_args(Some(vec![p.display().to_string(), kind.to_string()]));
            h.set_path(p);
            h
        })
        .collect())
}

impl GuestHooks {
    /// Reads the hook directories under `dir`.
    pub(crate) fn load(dir: &Path) -> Result<GuestHooks, String> {
        Ok(GuestHooks {
            prestart: scan(dir, "prestart")?,
            poststart: scan(dir, "poststart")?,
            poststop: scan(dir, "poststop")?,
        })
    }

    /// Appends these hooks to the spec's own.
    pub(crate) fn apply(&self, spec: &mut Spec) {
        if self.prestart.is_empty() && self.poststart.is_empty() && self.poststop.is_empty() {
            return;
        }
        let mut hooks = spec.hooks().clone().unwrap_or_default();
        let add = |have: Option<Vec<Hook>>, more: &[Hook]| {
            let mut v = have.unwrap_or_default();
            v.extend_from_slice(more);
            (!v.is_empty()).then_some(v)
        };
        #[allow(deprecated)]
        hooks.set_prestart(add(hooks.prestart().clone(), &self.prestart));
        hooks.set_poststart(add(hooks.poststart().clone(), &self.poststart));
        hooks.set_poststop(add(hooks.poststop().clone(), &self.poststop));
        spec.set_hooks(Some(hooks));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Hooks;

    #[test]
    fn executables_are_appended_by_kind_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        for (kind, name, mode) in [
            ("prestart", "b.sh", 0o755),
            ("prestart", "a.sh", 0o700),
            ("prestart", "notes.txt", 0o644),
            ("poststop", "z", 0o755),
        ] {
            std::fs::create_dir_all(d.path().join(kind)).unwrap();
            let p = d.path().join(kind).join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let g = GuestHooks::load(d.path()).unwrap();
        let mut spec = Spec::default();
        let mut own = Hook::default();
        own.set_path("/own".into());
        let mut hooks = Hooks::default();
        #[allow(deprecated)]
        hooks.set_prestart(Some(vec![own]));
        spec.set_hooks(Some(hooks));
        g.apply(&mut spec);
        let h = spec.hooks().as_ref().unwrap();
        #[allow(deprecated)]
        let pre: Vec<String> = h
            .prestart()
            .as_ref()
            .unwrap()
            .iter()
            .map(|h| h.path().file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(pre, ["own", "a.sh", "b.sh"]);
        assert!(h.poststart().is_none());
        assert_eq!(h.poststop().as_ref().unwrap().len(), 1);
        assert_eq!(
            GuestHooks::load(&d.path().join("absent")).unwrap(),
            GuestHooks::default()
        );
    }
}
