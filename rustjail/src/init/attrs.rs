//! Process attributes set by syscalls just before the credentials change:
//! `linux.personality` and `process.ioPriority`.

use oci_spec::runtime::{IOPriorityClass, LinuxPersonalityDomain, Spec};

use crate::error::{sys, Error, Result};

/// PER_LINUX and PER_LINUX32 from linux/personality.h.
const PER_LINUX: libc::c_ulong = 0x0000;
const PER_LINUX32: libc::c_ulong = 0x0008;
/// IOPRIO_WHO_PROCESS and the class shift from linux/ioprio.h.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;

/// Sets the execution domain `linux.personality` asks for.
pub fn set_personality(spec: &Spec) -> Result<()> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().clone()) else {
        return Ok(());
    };
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(Error::Spec(format!(
            "linux.personality.flags {:?}: no flags are supported",
            p.flags().clone().unwrap_or_default()
        )));
    }
    let persona = match p.domain() {
        LinuxPersonalityDomain::PerLinux => PER_LINUX,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    };
    // SAFETY: personality(2) with a plain value.
    if unsafe { libc::personality(persona) } < 0 {
        return Err(sys("personality", p.domain())(nix::Error::last()));
    }
    Ok(())
}

/// Sets `process.ioPriority` with ioprio_set(2).
pub fn set_io_priority(p: &oci_spec::runtime::Process) -> Result<()> {
    let Some(io) = *p.io_priority() else { return Ok(()) };
    let class: libc::c_int = match io.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let level = io.priority();
    if !(0..=7).contains(&level) {
        return Err(Error::Spec(format!(
            "process.ioPriority.priority {level}: must be between 0 and 7"
        )));
    }
    let value = (class << IOPRIO_CLASS_SHIFT) | level as libc::c_int;
    // SAFETY: ioprio_set for the calling process with a plain value.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) } != 0 {
        return Err(sys("ioprio_set", format_args!("{} {level}", io.class()))(
            nix::Error::last(),
        ));
    }
    Ok(())
}
