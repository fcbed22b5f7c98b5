//! A spec or a process read back from JSON without oci-spec's own
//! `Deserialize` for [`Spec`] and [`Process`].
//!
//! Why: oci-spec 0.10 checks `process.execCPUAffinity` with the `regex` crate
//! while deserializing a `Process`, so any program that reads a `Spec` from
//! JSON links a whole regex engine (about 400 kB of the agent's static
//! binary). rustjail refuses `execCPUAffinity` before a container is built
//! ([`crate::spec::check`]), so what crosses to a container's init never has
//! one: these mirrors read every other field, with oci-spec's own types below
//! the top level, and a spec that does carry `execCPUAffinity` is an error
//! naming it, never silently dropped.
//!
//! Use on a field: `#[serde(with = "rustjail::spec_wire::spec")]` (or
//! `::process`). Serialization is oci-spec's own, so the JSON is unchanged.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{
    Box as ConsoleSize, Hooks, Linux, LinuxCapabilities, LinuxIOPriority, LinuxIdMapping, Mount, PosixRlimit, Process,
    Root, Scheduler, Solaris, Spec, User, Windows, VM, ZOS,
};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a `Process` that carries `execCPUAffinity` is refused with.
const AFFINITY_REFUSED: &str =
    "process.execCPUAffinity is not supported (rustjail refuses it before a container is built)";

/// `Spec` as JSON, without oci-spec's `Deserialize` (see the module doc).
pub mod spec {
    use super::*;

    /// Writes the spec as oci-spec does.
    pub fn serialize<S: Serializer>(spec: &Spec, s: S) -> Result<S::Ok, S::Error> {
        spec.serialize(s)
    }

    /// Reads a spec written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Spec, D::Error> {
        super::boxed_spec::deserialize(d).map(|b| *b)
    }
}

/// A boxed `Spec` as JSON, as [`spec`] writes and reads it.
pub mod boxed_spec {
    use super::*;

    /// Writes the spec as oci-spec does.
    pub fn serialize<S: Serializer>(spec: &Spec, s: S) -> Result<S::Ok, S::Error> {
        spec.serialize(s)
    }

    /// Reads a spec written by [`serialize`], into a box.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<Spec>, D::Error> {
        Box::<SpecWire>::deserialize(d)?.into_spec().map_err(D::Error::custom)
    }
}

/// `Process` as JSON, without oci-spec's `Deserialize` (see the module doc).
pub mod process {
    use super::*;

    /// Writes the process as oci-spec does.
    pub fn serialize<S: Serializer>(p: &Process, s: S) -> Result<S::Ok, S::Error> {
        p.serialize(s)
    }

    /// Reads a process written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Process, D::Error> {
        ProcessWire::deserialize(d)?.into_process().map_err(D::Error::custom)
    }
}

/// The fields of oci-spec's `Spec`, under the same JSON names. The large
/// ones are boxed, and so is the result: read by value, the copies of each
/// in the reading function's frame made it 25 KiB, six pages of stack that
/// every container's init probed and faulted in.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecWire {
    #[serde(default, rename = "ociVersion")]
    version: String,
    #[serde(default)]
    root: Option<Root>,
    #[serde(default)]
    mounts: Option<Vec<Mount>>,
    #[serde(default)]
    process: Option<Box<ProcessWire>>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    domainname: Option<String>,
    #[serde(default)]
    hooks: Option<Box<Hooks>>,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    linux: Option<Box<Linux>>,
    #[serde(default)]
    solaris: Option<Box<Solaris>>,
    #[serde(default)]
    windows: Option<Box<Windows>>,
    #[serde(default)]
    vm: Option<Box<VM>>,
    #[serde(default)]
    zos: Option<ZOS>,
    #[serde(default)]
    uid_mappings: Option<Vec<LinuxIdMapping>>,
    #[serde(default)]
    gid_mappings: Option<Vec<LinuxIdMapping>>,
}

impl SpecWire {
    fn into_spec(self: Box<Self>) -> Result<Box<Spec>, &'static str> {
        let w = *self;
        let process = w.process.map(|p| p.into_process()).transpose()?;
        // Every field set, so that none of `Spec::default`'s values stays.
        let mut spec = Box::<Spec>::default();
        spec.set_version(w.version)
            .set_root(w.root)
            .set_mounts(w.mounts)
            .set_process(process)
            .set_hostname(w.hostname)
            .set_domainname(w.domainname)
            .set_hooks(w.hooks.map(|b| *b))
            .set_annotations(w.annotations)
            .set_linux(w.linux.map(|b| *b))
            .set_solaris(w.solaris.map(|b| *b))
            .set_windows(w.windows.map(|b| *b))
            .set_vm(w.vm.map(|b| *b))
            .set_zos(w.zos);
        #[allow(deprecated)] // never in the OCI spec, but oci-spec has them: carried as they came
        spec.set_uid_mappings(w.uid_mappings).set_gid_mappings(w.gid_mappings);
        Ok(spec)
    }
}

/// The fields of oci-spec's `Process`, under the same JSON names.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProcessWire {
    #[serde(default)]
    terminal: Option<bool>,
    #[serde(default)]
    console_size: Option<ConsoleSize>,
    user: User,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    command_line: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    cwd: PathBuf,
    #[serde(default)]
    capabilities: Option<LinuxCapabilities>,
    #[serde(default)]
    rlimits: Option<Vec<PosixRlimit>>,
    #[serde(default)]
    no_new_privileges: Option<bool>,
    #[serde(default)]
    apparmor_profile: Option<String>,
    #[serde(default)]
    oom_score_adj: Option<i32>,
    #[serde(default)]
    selinux_label: Option<String>,
    #[serde(default)]
    io_priority: Option<LinuxIOPriority>,
    #[serde(default)]
    scheduler: Option<Scheduler>,
    /// Only to refuse it: its value is never read.
    #[serde(default, rename = "execCPUAffinity")]
    exec_cpu_affinity: Option<serde::de::IgnoredAny>,
}

impl ProcessWire {
    fn into_process(self) -> Result<Process, &'static str> {
        if self.exec_cpu_affinity.is_some() {
            return Err(AFFINITY_REFUSED);
        }
        // Every field set, so that none of `Process::default`'s values stays.
        let mut p = Process::default();
        p.set_terminal(self.terminal)
            .set_console_size(self.console_size)
            .set_user(self.user)
            .set_args(self.args)
            .set_command_line(self.command_line)
            .set_env(self.env)
            .set_cwd(self.cwd)
            .set_capabilities(self.capabilities)
            .set_rlimits(self.rlimits)
            .set_no_new_privileges(self.no_new_privileges)
            .set_apparmor_profile(self.apparmor_profile)
            .set_oom_score_adj(self.oom_score_adj)
            .set_selinux_label(self.selinux_label)
            .set_io_priority(self.io_priority)
            .set_scheduler(self.scheduler)
            .set_exec_cpu_affinity(None);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Carried {
        #[serde(with = "spec")]
        spec: Spec,
        #[serde(with = "process")]
        process: Process,
    }

    /// A spec with every top-level field and every process field set.
    fn full_spec() -> Spec {
        let json = r#"{
          "ociVersion": "1.2.0",
          "root": {"path": "rootfs", "readonly": true},
          "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}],
          "process": {
            "terminal": true, "consoleSize": {"height": 24, "width": 80},
            "user": {"uid": 1, "gid": 2, "additionalGids": [3], "umask": 18},
            "args": ["/bin/sh", "-c", "true"], "commandLine": "x", "env": ["A=b"], "cwd": "/tmp",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
            "noNewPrivileges": false, "apparmorProfile": "ap", "oomScoreAdj": -5,
            "selinuxLabel": "sl", "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
            "scheduler": {"policy": "SCHED_OTHER", "nice": 3}
          },
          "hostname": "h", "domainname": "d",
          "hooks": {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 3}]},
          "annotations": {"k": "v"},
          "linux": {"namespaces": [{"type": "pid"}], "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                    "sysctl": {"net.ipv4.ip_forward": "1"}, "maskedPaths": ["/proc/kcore"]},
          "solaris": {"milestone": "m"},
          "windows": {"layerFolders": ["C:\\l"]},
          "vm": {"kernel": {"path": "/k"}},
          "zos": {"namespaces": [{"type": "pid"}]}
        }"#;
        serde_json::from_str(json).expect("oci-spec reads the full spec")
    }

    #[test]
    fn a_spec_and_a_process_come_back_equal() {
        let spec = full_spec();
        let process = spec.process().clone().unwrap();
        let text = serde_json::to_string(&Carried {
            spec: spec.clone(),
            process: process.clone(),
        })
        .unwrap();
        let back: Carried = serde_json::from_str(&text).unwrap();
        assert_eq!(back.spec, spec);
        assert_eq!(back.process, process);
    }

    #[test]
    fn absent_fields_stay_absent_not_defaulted() {
        let text = r#"{"spec": {"ociVersion": "1.0.0"}, "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/"}}"#;
        let back: Carried = serde_json::from_str(text).unwrap();
        let plain: Spec = serde_json::from_str(r#"{"ociVersion": "1.0.0"}"#).unwrap();
        assert_eq!(back.spec, plain);
        let plain: Process = serde_json::from_str(r#"{"user": {"uid": 0, "gid": 0}, "cwd": "/"}"#).unwrap();
        assert_eq!(back.process, plain);
        assert_eq!(back.process.args(), &None);
        assert_eq!(back.spec.mounts(), &None);
    }

    #[test]
    fn exec_cpu_affinity_is_refused_by_name() {
        let text = r#"{"spec": {"ociVersion": "1.0.0"},
                      "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "execCPUAffinity": {"initial": "0-1"}}}"#;
        let err = serde_json::from_str::<Carried>(text).err().unwrap().to_string();
        assert!(err.contains("execCPUAffinity"), "{err}");
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let text = r#"{"spec": {}, "process": {"cwd": "/"}}"#;
        let err = serde_json::from_str::<Carried>(text).err().unwrap().to_string();
        assert!(err.contains("user"), "{err}");
    }
}
