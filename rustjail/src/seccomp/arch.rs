//! Architectures (ABIs) a filter can cover, and syscall name resolution for each.
//!
//! Names come from the `syscalls` crate tables (generated from the kernel's syscall tables).
//! x32 has no table of its own: it is x86_64's table with `__X32_SYSCALL_BIT` set, except
//! for the syscalls the kernel renumbered (512..=547) and the x86_64-only ones.
//!
//! Only the tables of the ABIs the kernel under this binary can report are compiled in
//! (x86_64, x32 and i386 on x86; aarch64 and arm on Arm; all of them elsewhere): a filter
//! section for any other `AUDIT_ARCH` could never run, and the foreign tables cost the static
//! agent tens of kilobytes. rustjail/Cargo.toml enables the `syscalls` features to match.

use std::str::FromStr;

use oci_spec::runtime::Arch;

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386`.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_AARCH64`.
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `AUDIT_ARCH_ARM`.
pub const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
/// `__X32_SYSCALL_BIT`: set in `nr` for x32 syscalls, which report `AUDIT_ARCH_X86_64`.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// A syscall ABI the compiler knows; see [`Abi::can_occur_here`] for the ones it has tables for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Abi {
    /// 64-bit x86.
    X86_64,
    /// x32: 32-bit pointers on x86_64; shares `AUDIT_ARCH_X86_64`.
    X32,
    /// 32-bit x86 (i386), e.g. `int 0x80` from a 64-bit process.
    X86,
    /// 64-bit Arm.
    Aarch64,
    /// 32-bit Arm (EABI).
    Arm,
}

/// Every ABI, in the order sections are laid out.
pub const ALL: [Abi; 5] = [Abi::X86_64, Abi::X32, Abi::X86, Abi::Aarch64, Abi::Arm];

/// x86_64, x32 and i386 names: the kernel of an x86 binary reports no other ABI.
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
mod x86 {
    use super::{table_id, Abi, X32_SYSCALL_BIT};

    /// x32 syscalls with their own numbers (the kernel's 512..=547 range), without the x32 bit.
    const X32_RENUMBERED: [(&str, u32); 36] = [
        ("rt_sigaction", 512),
        ("rt_sigreturn", 513),
        ("ioctl", 514),
        ("readv", 515),
        ("writev", 516),
        ("recvfrom", 517),
        ("sendmsg", 518),
        ("recvmsg", 519),
        ("execve", 520),
        ("ptrace", 521),
        ("rt_sigpending", 522),
        ("rt_sigtimedwait", 523),
        ("rt_sigqueueinfo", 524),
        ("sigaltstack", 525),
        ("timer_create", 526),
        ("mq_notify", 527),
        ("kexec_load", 528),
        ("waitid", 529),
        ("set_robust_list", 530),
        ("get_robust_list", 531),
        ("vmsplice", 532),
        ("move_pages", 533),
        ("preadv", 534),
        ("pwritev", 535),
        ("rt_tgsigqueueinfo", 536),
        ("recvmmsg", 537),
        ("sendmmsg", 538),
        ("process_vm_readv", 539),
        ("process_vm_writev", 540),
        ("setsockopt", 541),
        ("getsockopt", 542),
        ("io_setup", 543),
        ("io_submit", 544),
        ("execveat", 545),
        ("preadv2", 546),
        ("pwritev2", 547),
    ];

    /// x86_64-only syscalls ("64" ABI in syscall_64.tbl) that have no x32 number at all.
    const X86_64_ONLY: [&str; 11] = [
        "uselib",
        "_sysctl",
        "create_module",
        "get_kernel_syms",
        "query_module",
        "nfsservctl",
        "set_thread_area",
        "get_thread_area",
        "epoll_ctl_old",
        "epoll_wait_old",
        "vserver",
    ];

    /// [`Abi::resolve`] for the x86 ABIs.
    pub(super) fn resolve(abi: Abi, name: &str) -> Option<u32> {
        match abi {
            Abi::X86_64 => table_id(name, |s: syscalls::x86_64::Sysno| s.id()),
            Abi::X86 => table_id(name, |s: syscalls::x86::Sysno| s.id()),
            Abi::X32 => {
                if let Some((_, nr)) = X32_RENUMBERED.iter().find(|(n, _)| *n == name) {
                    return Some(nr | X32_SYSCALL_BIT);
                }
                if X86_64_ONLY.contains(&name) {
                    return None;
                }
                resolve(Abi::X86_64, name).map(|nr| nr | X32_SYSCALL_BIT)
            }
            Abi::Aarch64 | Abi::Arm => None,
        }
    }
}

/// aarch64 and arm names: the kernel of an Arm binary reports no other ABI.
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
mod arm {
    use super::{table_id, Abi};

    /// ARM private syscalls (`__ARM_NR_*`), missing from the generic table.
    const ARM_PRIVATE: [(&str, u32); 6] = [
        ("breakpoint", 0x000f_0001),
        ("cacheflush", 0x000f_0002),
        ("usr26", 0x000f_0003),
        ("usr32", 0x000f_0004),
        ("set_tls", 0x000f_0005),
        ("get_tls", 0x000f_0006),
    ];

    /// [`Abi::resolve`] for the Arm ABIs.
    pub(super) fn resolve(abi: Abi, name: &str) -> Option<u32> {
        match abi {
            Abi::Aarch64 => table_id(name, |s: syscalls::aarch64::Sysno| s.id()),
            Abi::Arm => ARM_PRIVATE
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, nr)| *nr)
                .or_else(|| table_id(name, |s: syscalls::arm::Sysno| s.id())),
            Abi::X86_64 | Abi::X32 | Abi::X86 => None,
        }
    }
}

/// The number of `name` in one of the `syscalls` crate's tables.
fn table_id<T: FromStr>(name: &str, id: impl Fn(T) -> i32) -> Option<u32> {
    T::from_str(name).ok().map(|s| id(s) as u32)
}

impl Abi {
    /// The ABI of the host this code runs on, if it has a table here.
    pub fn native() -> Option<Abi> {
        if cfg!(target_arch = "x86_64") {
            Some(Abi::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Abi::Aarch64)
        } else if cfg!(target_arch = "x86") {
            Some(Abi::X86)
        } else if cfg!(target_arch = "arm") {
            Some(Abi::Arm)
        } else {
            None
        }
    }

    /// Maps an OCI architecture; `None` for one this compiler does not know at all.
    pub fn from_oci(arch: Arch) -> Option<Abi> {
        match arch {
            Arch::ScmpArchNative => Abi::native(),
            Arch::ScmpArchX86_64 => Some(Abi::X86_64),
            Arch::ScmpArchX86 => Some(Abi::X86),
            Arch::ScmpArchX32 => Some(Abi::X32),
            Arch::ScmpArchAarch64 => Some(Abi::Aarch64),
            Arch::ScmpArchArm => Some(Abi::Arm),
            _ => None,
        }
    }

    /// The OCI spelling, e.g. `SCMP_ARCH_X86_64`.
    pub fn oci_name(self) -> &'static str {
        match self {
            Abi::X86_64 => "SCMP_ARCH_X86_64",
            Abi::X32 => "SCMP_ARCH_X32",
            Abi::X86 => "SCMP_ARCH_X86",
            Abi::Aarch64 => "SCMP_ARCH_AARCH64",
            Abi::Arm => "SCMP_ARCH_ARM",
        }
    }

    /// The value of `seccomp_data.arch` for syscalls of this ABI.
    pub fn audit_arch(self) -> u32 {
        match self {
            Abi::X86_64 | Abi::X32 => AUDIT_ARCH_X86_64,
            Abi::X86 => AUDIT_ARCH_I386,
            Abi::Aarch64 => AUDIT_ARCH_AARCH64,
            Abi::Arm => AUDIT_ARCH_ARM,
        }
    }

    /// Whether arguments are 32-bit: only the low half of each argument is compared,
    /// against the low 32 bits of the profile's value (as libseccomp does).
    pub fn is_32bit(self) -> bool {
        matches!(self, Abi::X32 | Abi::X86 | Abi::Arm)
    }

    /// Whether the kernel running this binary can report syscalls of this ABI; only these
    /// get a section in a filter, and only these have a syscall table here.
    pub fn can_occur_here(self) -> bool {
        match self {
            Abi::X86_64 | Abi::X32 | Abi::X86 => cfg!(not(any(target_arch = "aarch64", target_arch = "arm"))),
            Abi::Aarch64 | Abi::Arm => cfg!(not(any(target_arch = "x86_64", target_arch = "x86"))),
        }
    }

    /// The value of `seccomp_data.nr` for the syscall `name`, if this ABI has it; `None` too
    /// for an ABI that cannot occur here, whose table is left out of the build.
    pub fn resolve(self, name: &str) -> Option<u32> {
        #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
        if let Some(nr) = x86::resolve(self, name) {
            return Some(nr);
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
        if let Some(nr) = arm::resolve(self, name) {
            return Some(nr);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
    #[test]
    fn seccomp_resolves_names_per_x86_abi() {
        assert_eq!(Abi::X86_64.resolve("mkdir"), Some(83));
        assert_eq!(Abi::X86.resolve("mkdir"), Some(39));
        assert_eq!(Abi::X32.resolve("mkdir"), Some(83 | X32_SYSCALL_BIT));
        assert_eq!(Abi::X32.resolve("execve"), Some(520 | X32_SYSCALL_BIT));
        assert_eq!(Abi::X32.resolve("uselib"), None);
        assert_eq!(Abi::X86_64.resolve("socketcall"), None);
        assert_eq!(Abi::X86.resolve("socketcall"), Some(102));
        assert_eq!(Abi::X86_64.resolve("no_such_syscall"), None);
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
    #[test]
    fn seccomp_resolves_names_per_arm_abi() {
        assert_eq!(Abi::Aarch64.resolve("mkdir"), None);
        assert_eq!(Abi::Aarch64.resolve("mkdirat"), Some(34));
        assert_eq!(Abi::Arm.resolve("set_tls"), Some(0x000f_0005));
        assert_eq!(Abi::Aarch64.resolve("no_such_syscall"), None);
    }

    #[test]
    fn seccomp_only_abis_this_kernel_reports_have_tables() {
        if let Some(native) = Abi::native() {
            assert!(native.can_occur_here());
        }
        let here: Vec<Abi> = ALL.into_iter().filter(|a| a.can_occur_here()).collect();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(here, [Abi::X86_64, Abi::X32, Abi::X86]);
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(here, [Abi::Aarch64, Abi::Arm]);
        }
        for abi in ALL {
            // `read` exists on all five.
            assert_eq!(abi.resolve("read").is_some(), abi.can_occur_here(), "{abi:?}");
        }
    }

    #[test]
    fn seccomp_oci_arch_mapping() {
        assert_eq!(Abi::from_oci(Arch::ScmpArchNative), Abi::native());
        assert_eq!(Abi::from_oci(Arch::ScmpArchX32), Some(Abi::X32));
        assert_eq!(Abi::from_oci(Arch::ScmpArchS390x), None);
        for abi in ALL {
            assert_eq!(abi.oci_name().parse::<Arch>().ok().and_then(Abi::from_oci), Some(abi));
        }
    }
}
