//! seccomp: compiles an OCI `linux.seccomp` profile into a classic BPF program and installs it.
//!
//! Pure Rust, no libseccomp, so a static musl build works. [`compile`] does no syscalls and
//! can run anywhere (do it before forking the container's init); [`install`] loads the
//! program into the kernel for the calling thread.
//!
//! Semantics follow runc with libseccomp (details in `rules.rs` and `codegen.rs`):
//! default action and `defaultErrnoRet` (ERRNO/TRACE default to EPERM), per-rule action and
//! `errnoRet`, syscalls by name (names unknown on an architecture are skipped there and
//! reported in [`Program::warnings`] when unknown everywhere), argument conditions with all
//! seven operators (ANDed within a rule, 64-bit values compared as two 32-bit halves, only the
//! low half on 32-bit ABIs), several rules per syscall (ORed; the first unconditional rule
//! wins), the architectures list (the native one is always included; x86_64, x86, x32,
//! aarch64 and arm are known, and the listed ones this kernel can report get a section:
//! x86_64, x86 and x32 on x86, aarch64 and arm on Arm, the others could never run; a syscall
//! of an ABI without a section, x32 included unless listed, gets SECCOMP_RET_KILL_THREAD like
//! libseccomp's bad-architecture action), runc's ENOSYS for syscalls newer than the profile,
//! and the TSYNC, LOG and SPEC_ALLOW flags.
//! `SCMP_ACT_NOTIFY` is not supported: [`compile`] fails naming where it is used.

mod action;
mod arch;
mod bpf;
mod codegen;
mod error;
mod install;
mod rules;

#[cfg(test)]
mod tests;

use oci_spec::runtime::LinuxSeccomp;

pub use bpf::Instruction;
pub use error::SeccompError;
pub use install::{arm, install, Armed};

/// A compiled filter: BPF instructions, `SECCOMP_FILTER_FLAG_*` bits and compile warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    instructions: Vec<Instruction>,
    flags: u32,
    warnings: Vec<String>,
}

impl Program {
    /// The BPF instructions, in execution order.
    pub fn instructions(&self) -> &[Instruction] {
        &self.instructions
    }

    /// `SECCOMP_FILTER_FLAG_*` bits to pass to seccomp(2).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Things the profile asked for that were ignored (unknown syscalls, shadowed rules, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Compiles an OCI seccomp profile for the architecture this binary runs on (no syscalls).
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let plan = rules::plan(profile)?;
    let instructions = codegen::generate(&plan)?;
    Ok(Program {
        instructions,
        flags: plan.flags,
        warnings: plan.warnings,
    })
}

/// The OCI actions [`compile`] accepts (everything but `SCMP_ACT_NOTIFY`), for `features`.
pub fn supported_actions() -> Vec<&'static str> {
    action::SUPPORTED_ACTIONS.to_vec()
}

/// The OCI argument operators [`compile`] accepts, for `features`.
pub fn supported_operators() -> Vec<&'static str> {
    action::SUPPORTED_OPERATORS.to_vec()
}

/// The OCI architectures [`compile`] accepts, for `features` (a profile may list them all;
/// the ones this kernel cannot report need no section).
pub fn supported_archs() -> Vec<&'static str> {
    arch::ALL.iter().map(|a| a.oci_name()).collect()
}

/// The OCI filter flags [`compile`] accepts, for `features`.
pub fn supported_flags() -> Vec<&'static str> {
    action::SUPPORTED_FLAGS.to_vec()
}
