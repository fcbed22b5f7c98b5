//! Checks of a converted spec that the container engine would otherwise make
//! only inside the container's init, where a refusal reads as an internal
//! failure. Here it is the caller's mistake, answered `INVALID_ARGUMENT`
//! naming the field: a mount destination or device path with a `..`
//! component, a sysctl name that cannot name a file under `/proc/sys`, a
//! process with nothing to run.
//!
//! Whether a sysctl belongs to a namespace the container has is the engine's
//! check (rustjail's spec validation); this one is only about the name's form.

use std::path::{Component, Path};

use oci_spec::runtime as oci;

use super::ConvertError;

/// Checks a spec for `CreateContainer`.
pub fn container(spec: &oci::Spec) -> Result<(), ConvertError> {
    match spec.process() {
        Some(p) => process(p).map_err(|e| e.within("process"))?,
        None => {
            return Err(ConvertError::invalid(
                "process",
                "missing: the container has nothing to run",
            ))
        }
    }
    for (i, m) in spec.mounts().as_deref().unwrap_or_default().iter().enumerate() {
        absolute_without_dotdot(m.destination()).map_err(|e| e.within(&format!("mounts[{i}].destination")))?;
    }
    let Some(linux) = spec.linux() else { return Ok(()) };
    for (i, d) in linux.devices().as_deref().unwrap_or_default().iter().enumerate() {
        absolute_without_dotdot(d.path()).map_err(|e| e.within(&format!("linux.devices[{i}].path")))?;
    }
    let mut names: Vec<&String> = linux.sysctl().as_ref().map(|m| m.keys().collect()).unwrap_or_default();
    names.sort();
    for name in names {
        sysctl_name(name).map_err(|e| e.within(&format!("linux.sysctl[{name:?}]")))?;
    }
    Ok(())
}

/// Checks a process for `CreateContainer` and `ExecProcess`: it has a program to run.
pub fn process(p: &oci::Process) -> Result<(), ConvertError> {
    match p.args().as_deref() {
        Some([first, ..]) if !first.is_empty() => Ok(()),
        Some([_, ..]) => Err(ConvertError::invalid("args[0]", "empty: no program to run")),
        _ => Err(ConvertError::invalid("args", "empty: no program to run")),
    }
}

/// A path inside the container: absolute, and without `..` (which the engine
/// would refuse inside the container's init).
fn absolute_without_dotdot(p: &Path) -> Result<(), ConvertError> {
    if !p.is_absolute() {
        return Err(ConvertError::invalid(
            "",
            format!("{} is not an absolute path", p.display()),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(ConvertError::invalid("", format!("{} contains '..'", p.display())));
    }
    Ok(())
}

/// A sysctl name as the engine takes it: dot-separated, non-empty components of
/// printable characters, none of them `..`, no `/` (it would be a path).
fn sysctl_name(name: &str) -> Result<(), ConvertError> {
    let bad = |why: &str| Err(ConvertError::invalid("", format!("invalid sysctl name: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return bad(&format!("{c:?} is not allowed"));
    }
    if name.split('.').any(|c| c.is_empty() || c == "..") {
        return bad("empty component (leading, trailing or doubled '.')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn spec(args: &[&str]) -> oci::Spec {
        let mut s = oci::Spec::default();
        let mut p = s.process().clone().unwrap();
        p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        s.set_process(Some(p));
        s
    }

    fn err(s: &oci::Spec) -> String {
        container(s).unwrap_err().to_string()
    }

    #[test]
    fn the_default_spec_with_a_program_passes() {
        let s = spec(&["sh"]);
        assert!(s.mounts().as_ref().is_some_and(|m| !m.is_empty()));
        container(&s).unwrap();
    }

    #[test]
    fn a_process_needs_a_program() {
        assert_eq!(err(&spec(&[])), "process.args: empty: no program to run");
        assert_eq!(err(&spec(&["", "x"])), "process.args[0]: empty: no program to run");
        let mut s = spec(&["sh"]);
        s.set_process(None);
        assert!(err(&s).starts_with("process: missing"), "{}", err(&s));
        let mut p = oci::Process::default();
        p.set_args(None);
        assert!(process(&p).is_err());
    }

    #[test]
    fn mount_destinations_and_device_paths_are_confined() {
        let mut s = spec(&["sh"]);
        let mut mounts = s.mounts().clone().unwrap();
        let mut m = oci::Mount::default();
        m.set_destination(PathBuf::from("/data/../../etc"));
        mounts.push(m);
        let n = mounts.len() - 1;
        s.set_mounts(Some(mounts.clone()));
        assert_eq!(
            err(&s),
            format!("mounts[{n}].destination: /data/../../etc contains '..'")
        );
        mounts[n].set_destination(PathBuf::from("relative"));
        s.set_mounts(Some(mounts));
        assert!(err(&s).contains("is not an absolute path"), "{}", err(&s));

        let mut s = spec(&["sh"]);
        let mut linux = s.linux().clone().unwrap();
        let mut d = oci::LinuxDevice::default();
        d.set_path(PathBuf::from("/dev/../etc/evil"));
        linux.set_devices(Some(vec![d]));
        s.set_linux(Some(linux));
        assert_eq!(err(&s), "linux.devices[0].path: /dev/../etc/evil contains '..'");
    }

    #[test]
    fn sysctl_names_must_name_a_file_under_proc_sys() {
        for good in [
            "net.ipv4.ip_forward",
            "kernel.shmmax",
            "fs.mqueue.msg_max",
            "net.ipv4.conf.eth-0.rp_filter",
        ] {
            sysctl_name(good).unwrap();
        }
        for bad in [
            "",
            ".net",
            "net.",
            "net..ipv4",
            "net/../../etc",
            "net.ipv4 .x",
            "kernel.\u{e9}",
            "net.\0",
        ] {
            assert!(sysctl_name(bad).is_err(), "{bad:?}");
        }
        let mut s = spec(&["sh"]);
        let mut linux = s.linux().clone().unwrap();
        linux.set_sysctl(Some(HashMap::from([
            ("net.ipv4.ip_forward".to_string(), "1".to_string()),
            ("net..x".to_string(), "1".to_string()),
        ])));
        s.set_linux(Some(linux));
        assert!(
            err(&s).starts_with("linux.sysctl[\"net..x\"]: invalid sysctl name"),
            "{}",
            err(&s)
        );
    }
}
