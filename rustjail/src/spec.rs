//! Loading and checking a spec before anything is created: values serde
//! would only call "invalid" are named with their field ([`read`], for a
//! bundle's `config.json`), and settings that would reach outside the
//! container are refused ([`check`], which `Runtime::create` applies to every
//! spec, from a file or built in memory).

use std::path::Path;

use oci_spec::runtime::{Capability, Linux, LinuxNamespaceType, PosixRlimitType, Spec};
use serde_json::Value;

use crate::error::{Error, Result};

/// What the embedding program knows better than the spec (the defaults are
/// runc's rules; a Kata guest agent relaxes two of them as kata-agent does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `net.*` sysctls are allowed without a network namespace in the spec: the
    /// caller's network namespace is the container's own (a Kata guest, where the
    /// host runtime strips the `network` namespace and the VM is the sandbox).
    pub caller_netns_is_the_sandbox: bool,
    /// `process.apparmorProfile` is dropped: it names a profile of another
    /// machine (a Kata host on an AppArmor system sends its own profile name,
    /// which kata-agent ignores).
    pub ignore_apparmor: bool,
}

/// The spec's `linux` section, borrowed, or an empty one: the init reads it
/// in several places, and a clone of it (namespaces, devices, masked paths,
/// a seccomp profile) is dozens of allocations each time.
pub fn linux_of(spec: &Spec) -> std::borrow::Cow<'_, Linux> {
    spec.linux()
        .as_ref()
        .map_or_else(|| std::borrow::Cow::Owned(Linux::default()), std::borrow::Cow::Borrowed)
}

/// Reads `path` ([`read`]) and checks the spec ([`check`]).
pub fn load(path: &Path, policy: Policy) -> Result<Spec> {
    let mut spec = read(path)?;
    check(&mut spec, policy)?;
    Ok(spec)
}

/// Reads `path`, reporting unknown capabilities and rlimits by field and value.
pub fn read(path: &Path) -> Result<Spec> {
    let text = std::fs::read(path).map_err(crate::error::io("read", path.display()))?;
    let json: Value =
        serde_json::from_slice(&text).map_err(|e| Error::Spec(format!("{}: not JSON: {e}", path.display())))?;
    check_names(&json)?;
    serde_json::from_value(json).map_err(|e| Error::Spec(format!("{}: {e}", path.display())))
}

/// Applies `policy` to `spec` (a dropped AppArmor profile), then refuses what
/// the runtime must not create ([`validate`]).
pub fn check(spec: &mut Spec, policy: Policy) -> Result<()> {
    if policy.ignore_apparmor {
        if let Some(p) = spec.process_mut().as_mut() {
            p.set_apparmor_profile(None);
        }
    }
    validate(spec, policy)
}

/// The enumerated names of `process` that oci-spec's types cannot hold,
/// reported as `field: unknown X "VALUE"` instead of a bare serde failure.
fn check_names(json: &Value) -> Result<()> {
    let process = &json["process"];
    if let Some(sets) = process["capabilities"].as_object() {
        for (set, list) in sets {
            for (i, name) in list.as_array().into_iter().flatten().enumerate() {
                if serde_json::from_value::<Capability>(name.clone()).is_err() {
                    return Err(Error::Spec(format!(
                        "process.capabilities.{set}[{i}]: unknown capability {name}"
                    )));
                }
            }
        }
    }
    let rlimits = process["rlimits"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (i, r) in rlimits.iter().enumerate() {
        let typ = &r["type"];
        if serde_json::from_value::<PosixRlimitType>(typ.clone()).is_err() {
            return Err(Error::Spec(format!("process.rlimits[{i}].type: unknown rlimit {typ}")));
        }
    }
    Ok(())
}

/// Each rlimit type at most once.
fn check_rlimits(spec: &Spec) -> Result<()> {
    let rlimits = spec
        .process()
        .as_ref()
        .and_then(|p| p.rlimits().clone())
        .unwrap_or_default();
    for (i, r) in rlimits.iter().enumerate() {
        if rlimits[..i].iter().any(|earlier| earlier.typ() == r.typ()) {
            let name = serde_json::to_value(r.typ()).unwrap_or_default();
            return Err(Error::Spec(format!(
                "process.rlimits[{i}].type: {name} is listed twice"
            )));
        }
    }
    Ok(())
}

/// Checks what the runtime must refuse before creating anything.
pub fn validate(spec: &Spec, policy: Policy) -> Result<()> {
    check_unsupported(spec)?;
    check_rlimits(spec)?;
    check_namespaces(spec)?;
    check_sysctls(spec, policy)?;
    crate::labels::check_supported(spec, policy)
}

/// Each namespace type at most once; a hostname or domain name needs a UTS namespace.
fn check_namespaces(spec: &Spec) -> Result<()> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for (i, n) in namespaces.iter().enumerate() {
        if namespaces[..i].iter().any(|m| m.typ() == n.typ()) {
            return Err(Error::Spec(format!(
                "linux.namespaces[{i}]: type {} is listed twice",
                n.typ()
            )));
        }
    }
    let uts = namespaces.iter().any(|n| n.typ() == LinuxNamespaceType::Uts);
    for (field, value) in [("hostname", spec.hostname()), ("domainname", spec.domainname())] {
        if let (Some(v), false) = (value.as_deref().filter(|v| !v.is_empty()), uts) {
            return Err(Error::Spec(format!(
                "{field} {v:?}: needs a UTS namespace (it would change the host's)"
            )));
        }
    }
    Ok(())
}

/// Settings rustjail cannot apply yet: refused by name rather than ignored.
fn check_unsupported(spec: &Spec) -> Result<()> {
    let refuse = |field: String, why: &str| Err(Error::Spec(format!("{field}: {why}")));
    if spec.linux().as_ref().is_some_and(|l| l.intel_rdt().is_some()) {
        return refuse("linux.intelRdt".into(), "Intel RDT (resctrl) is not supported");
    }
    if let Some(p) = spec.process() {
        if p.scheduler().is_some() {
            return refuse("process.scheduler".into(), "sched_setattr is not supported yet");
        }
        if p.exec_cpu_affinity().is_some() {
            return refuse("process.execCPUAffinity".into(), "not supported yet");
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let field = || format!("mounts[{i}] ({})", m.destination().display());
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return refuse(field(), "idmapped mounts (uidMappings/gidMappings) are not supported");
        }
        for o in m.options().iter().flatten() {
            if matches!(o.as_str(), "idmap" | "ridmap" | "tmpcopyup") {
                return refuse(field(), &format!("mount option {o:?} is not supported"));
            }
        }
    }
    Ok(())
}

/// `kernel.*` sysctls outside a namespace change the whole machine: allow only
/// those a namespace of the container holds, as runc validates them.
fn check_sysctls(spec: &Spec, policy: Policy) -> Result<()> {
    let Some(linux) = spec.linux() else { return Ok(()) };
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    for key in linux.sysctl().as_ref().into_iter().flat_map(|m| m.keys()) {
        let refuse = |why: &str| Err(Error::Spec(format!("linux.sysctl {key:?}: {why}")));
        if key.is_empty() || key.contains('/') || key.split('.').any(|c| c.is_empty() || c == "..") {
            return refuse("invalid sysctl name");
        }
        let ipc = matches!(
            key.as_str(),
            "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
                | "kernel.shmall"
                | "kernel.shmmax"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
        ) || key.starts_with("fs.mqueue.");
        if ipc {
            if has(LinuxNamespaceType::Ipc) {
                continue;
            }
            return refuse("needs an IPC namespace (it would change the host's)");
        }
        if key.starts_with("net.") {
            if has(LinuxNamespaceType::Network) || policy.caller_netns_is_the_sandbox {
                continue;
            }
            return refuse("needs a network namespace (it would change the host's)");
        }
        match key.as_str() {
            "kernel.domainname" if has(LinuxNamespaceType::Uts) => continue,
            "kernel.hostname" if has(LinuxNamespaceType::Uts) => {
                return refuse("set the hostname with the spec's \"hostname\" field")
            }
            "kernel.domainname" | "kernel.hostname" => {
                return refuse("needs a UTS namespace (it would change the host's)")
            }
            _ => return refuse("not in a namespace the container can have: it would change the whole machine"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(edit: impl FnOnce(&mut Value)) -> Result<Spec> {
        let dir = tempfile::tempdir().unwrap();
        let mut json = serde_json::to_value(Spec::default()).unwrap();
        edit(&mut json);
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        load(&path, Policy::default())
    }

    #[test]
    fn unknown_capability_and_rlimit_are_named() {
        let e = spec_with(|c| c["process"]["capabilities"]["bounding"][1] = "CAP_TEST".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid spec: process.capabilities.bounding[1]: unknown capability \"CAP_TEST\""
        );
        let e =
            spec_with(|c| c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_TEST", "hard": 1, "soft": 1}]))
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid spec: process.rlimits[0].type: unknown rlimit \"RLIMIT_TEST\""
        );
        spec_with(|c| c["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_CORE", "hard": 1, "soft": 1}]))
            .unwrap();
    }

    fn sysctl(key: &str, namespaces: &[&str], policy: Policy) -> Result<()> {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_sysctl(Some([(key.to_string(), "1".to_string())].into()));
        linux.set_namespaces(Some(
            namespaces
                .iter()
                .map(|t| {
                    let mut n = oci_spec::runtime::LinuxNamespace::default();
                    n.set_typ(LinuxNamespaceType::try_from(*t).unwrap());
                    n
                })
                .collect(),
        ));
        spec.set_linux(Some(linux));
        check_sysctls(&spec, policy)
    }

    #[test]
    fn sysctls_must_belong_to_a_namespace_of_the_container() {
        let strict = Policy::default();
        for key in [
            "kernel.printk_ratelimit",
            "kernel.core_pattern",
            "vm.overcommit_memory",
            "fs.file-max",
        ] {
            let e = sysctl(key, &["ipc", "uts", "network", "mount"], strict).unwrap_err();
            assert!(e.to_string().contains(&format!("{key:?}")), "{e}");
        }
        sysctl("kernel.shmmax", &["ipc"], strict).unwrap();
        sysctl("fs.mqueue.msg_max", &["ipc"], strict).unwrap();
        assert!(sysctl("kernel.msgmax", &["uts"], strict).is_err());
        sysctl("net.ipv4.ip_forward", &["network"], strict).unwrap();
        assert!(sysctl("net.ipv4.ip_forward", &["ipc"], strict).is_err());
        let kata = Policy {
            caller_netns_is_the_sandbox: true,
            ignore_apparmor: true,
        };
        sysctl("net.ipv4.ip_unprivileged_port_start", &["ipc"], kata).unwrap();
        assert!(sysctl("kernel.core_pattern", &["ipc"], kata).is_err());
        sysctl("kernel.domainname", &["uts"], strict).unwrap();
        assert!(sysctl("kernel.domainname", &["ipc"], strict).is_err());
        let e = sysctl("kernel.hostname", &["uts"], strict).unwrap_err();
        assert!(e.to_string().contains("hostname"), "{e}");
        let e = sysctl("kernel/../../etc/x", &["uts"], strict).unwrap_err();
        assert!(e.to_string().contains("invalid sysctl name"), "{e}");
    }
}
