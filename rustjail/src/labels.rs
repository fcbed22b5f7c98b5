//! Linux security labels: `process.apparmorProfile`, `process.selinuxLabel` and
//! `linux.mountLabel`. Applied where the kernel has the LSM; where it does not
//! and the spec asks for one, creating the container fails (as runc does), so
//! a container never runs unconfined by mistake.

use std::os::fd::OwnedFd;
use std::path::Path;

use oci_spec::runtime::Spec;

use crate::error::{sys, Error, Result};

/// Whether AppArmor is active in this kernel.
pub fn apparmor_enabled() -> bool {
    std::fs::read("/sys/module/apparmor/parameters/enabled").is_ok_and(|b| b.first() == Some(&b'Y'))
}

/// Whether SELinux is active in this kernel.
pub fn selinux_enabled() -> bool {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) => list.trim().split(',').any(|l| l == "selinux"),
        // securityfs not mounted: selinuxfs is mounted wherever SELinux is in use.
        Err(_) => Path::new("/sys/fs/selinux/enforce").exists(),
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Refuses labels this kernel cannot apply, naming the field and the value.
pub fn check_supported(spec: &Spec, policy: crate::spec::Policy) -> Result<()> {
    let process = spec.process().as_ref();
    if let Some(p) = process.and_then(|p| non_empty(p.apparmor_profile())) {
        if !policy.ignore_apparmor && !apparmor_enabled() {
            return Err(Error::Spec(format!(
                "process.apparmorProfile {p:?}: AppArmor is not enabled in this kernel; \
                 the container would run unconfined"
            )));
        }
    }
    let selinux = [
        (
            "process.selinuxLabel",
            process.and_then(|p| non_empty(p.selinux_label())),
        ),
        (
            "linux.mountLabel",
            spec.linux().as_ref().and_then(|l| non_empty(l.mount_label())),
        ),
    ];
    for (field, label) in selinux {
        if let Some(l) = label {
            if !selinux_enabled() {
                return Err(Error::Spec(format!(
                    "{field} {l:?}: SELinux is not enabled in this kernel; the container would run unlabeled"
                )));
            }
        }
    }
    Ok(())
}

/// A label to set for the next `execve`: the attribute file is opened while the
/// host's `/proc` is still reachable, and written just before `execve`.
pub struct ExecLabel {
    file: OwnedFd,
    value: Vec<u8>,
    shown: String,
}

impl ExecLabel {
    /// The labels `process` asks for (AppArmor profile, SELinux label).
    pub fn for_process(p: &oci_spec::runtime::Process) -> Result<Vec<ExecLabel>> {
        let mut out = Vec::new();
        if let Some(profile) = non_empty(p.apparmor_profile()) {
            // Linux >= 5.8 has AppArmor's own directory; older kernels share attr/exec.
            let file = open_attr("/proc/thread-self/attr/apparmor/exec")
                .or_else(|_| open_attr("/proc/thread-self/attr/exec"))?;
            out.push(ExecLabel {
                file,
                value: format!("exec {profile}").into_bytes(),
                shown: format!("AppArmor profile {profile:?}"),
            });
        }
        if let Some(label) = non_empty(p.selinux_label()) {
            out.push(ExecLabel {
                file: open_attr("/proc/thread-self/attr/exec")?,
                value: label.as_bytes().to_vec(),
                shown: format!("SELinux label {label:?}"),
            });
        }
        Ok(out)
    }

    /// Sets the label for the next `execve`.
    pub fn apply(&self) -> Result<()> {
        nix::unistd::write(&self.file, &self.value)
            .map(|_| ())
            .map_err(sys("write", format_args!("{} (/proc/thread-self/attr)", self.shown)))
    }
}

fn open_attr(path: &str) -> Result<OwnedFd> {
    crate::open::open(
        Path::new(path),
        nix::fcntl::OFlag::O_WRONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("open", path))
}

/// Filesystem data with the SELinux mount label added, for the filesystems
/// runc labels (not bind mounts, proc, sysfs, cgroup or mqueue).
pub fn mount_data(data: &str, fstype: &str, is_bind: bool, mount_label: Option<&str>) -> String {
    let Some(label) = mount_label.filter(|l| !l.is_empty()) else {
        return data.to_string();
    };
    if is_bind || matches!(fstype, "proc" | "sysfs" | "cgroup" | "cgroup2" | "mqueue") {
        return data.to_string();
    }
    let ctx = format!("context=\"{label}\"");
    if data.is_empty() {
        ctx
    } else {
        format!("{data},{ctx}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_label_goes_to_labelable_filesystems_only() {
        let l = Some("system_u:object_r:container_file_t:s0");
        assert_eq!(
            mount_data("mode=755", "tmpfs", false, l),
            "mode=755,context=\"system_u:object_r:container_file_t:s0\""
        );
        assert_eq!(
            mount_data("", "devpts", false, l),
            "context=\"system_u:object_r:container_file_t:s0\""
        );
        assert_eq!(mount_data("", "proc", false, l), "");
        assert_eq!(mount_data("ro", "ext4", true, l), "ro");
        assert_eq!(mount_data("mode=755", "tmpfs", false, None), "mode=755");
    }

    #[test]
    fn labels_this_kernel_lacks_are_refused_by_name() {
        let mut spec = Spec::default();
        let mut p = spec.process().clone().unwrap();
        p.set_apparmor_profile(Some("my-profile".into()));
        spec.set_process(Some(p));
        let strict = crate::spec::Policy::default();
        match (apparmor_enabled(), check_supported(&spec, strict)) {
            (false, Err(e)) => assert!(e.to_string().contains("process.apparmorProfile \"my-profile\""), "{e}"),
            (true, Ok(())) => {}
            (enabled, r) => panic!("apparmor enabled {enabled}, check {r:?}"),
        }
        let lenient = crate::spec::Policy {
            ignore_apparmor: true,
            ..Default::default()
        };
        check_supported(&spec, lenient).unwrap();
    }
}
