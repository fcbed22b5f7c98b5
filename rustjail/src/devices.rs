//! The device rules a container's cgroup gets: the spec's rules, then the
//! devices every container may use (as runc adds them), then the spec's own
//! device nodes. Later rules win; a v1 `devices.list` shows them in this
//! order (the spec's first, as with crun).

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Spec};

/// (type, major, minor, access) of the devices every container may use.
const ALWAYS_ALLOWED: &[(LinuxDeviceType, Option<i64>, Option<i64>, &str)] = &[
    // mknod of any node; opening it is still up to the rules.
    (LinuxDeviceType::C, None, None, "m"),
    (LinuxDeviceType::B, None, None, "m"),
    (LinuxDeviceType::C, Some(1), Some(3), "rwm"), // null
    (LinuxDeviceType::C, Some(1), Some(5), "rwm"), // zero
    (LinuxDeviceType::C, Some(1), Some(7), "rwm"), // full
    (LinuxDeviceType::C, Some(1), Some(8), "rwm"), // random
    (LinuxDeviceType::C, Some(1), Some(9), "rwm"), // urandom
    (LinuxDeviceType::C, Some(5), Some(0), "rwm"), // tty
    (LinuxDeviceType::C, Some(5), Some(2), "rwm"), // ptmx
    (LinuxDeviceType::C, Some(136), None, "rwm"),  // pts/*
];

fn rule(allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// The spec's resources with the full device rule list.
pub fn effective_resources(spec: &Spec) -> LinuxResources {
    let linux = crate::spec::linux_of(spec);
    let mut res = linux.resources().clone().unwrap_or_default();
    let mut rules = res.devices().clone().unwrap_or_default();
    if rules.is_empty() {
        // No rules at all means no device access beyond the defaults.
        rules.push(rule(false, LinuxDeviceType::A, None, None, "rwm"));
    }
    for (t, maj, min, acc) in ALWAYS_ALLOWED {
        rules.push(rule(true, *t, *maj, *min, acc));
    }
    for d in linux.devices().as_deref().unwrap_or(&[]) {
        let t = match d.typ() {
            LinuxDeviceType::B => LinuxDeviceType::B,
            LinuxDeviceType::P => continue,
            _ => LinuxDeviceType::C,
        };
        rules.push(rule(true, t, Some(d.major()), Some(d.minor()), "rwm"));
    }
    res.set_devices(Some(rules));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec_rules_and_spec_devices_come_last() {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        let mut dev = oci_spec::runtime::LinuxDevice::default();
        dev.set_path("/dev/sda".into());
        dev.set_typ(LinuxDeviceType::B);
        dev.set_major(8);
        dev.set_minor(0);
        linux.set_devices(Some(vec![dev]));
        spec.set_linux(Some(linux));
        let r = effective_resources(&spec);
        let rules = r.devices().clone().unwrap();
        assert!(!rules[0].allow(), "the spec's deny-all stays first");
        assert!(rules
            .iter()
            .any(|r| r.allow() && r.major() == Some(1) && r.minor() == Some(3)));
        let last = rules.last().unwrap();
        assert_eq!(
            (last.typ(), last.major(), last.minor()),
            (Some(LinuxDeviceType::B), Some(8), Some(0))
        );
    }
}
