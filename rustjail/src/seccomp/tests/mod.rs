//! Tests: the compiler through a BPF interpreter, and real filters in child processes.

mod args;
mod compile;
mod install;
mod interp;

use oci_spec::runtime::LinuxSeccomp;

use super::arch::{Abi, AUDIT_ARCH_X86_64};
use super::{compile, Program};
use interp::Data;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

fn errno(e: u32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e
}

/// A profile from its OCI JSON.
fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("bad test profile {json}: {e}"))
}

/// Compiles `json`, checking the program is one the kernel would accept.
fn build(json: &str) -> Program {
    let program = compile(&profile(json)).unwrap_or_else(|e| panic!("compile failed: {e}"));
    interp::validate(program.instructions());
    program
}

/// Runs `program` for syscall `name` of `abi` with `args`.
fn eval(program: &Program, abi: Abi, name: &str, args: [u64; 6]) -> u32 {
    let nr = abi.resolve(name).unwrap_or_else(|| panic!("{name} unknown on {abi:?}"));
    eval_nr(program, abi.audit_arch(), nr, args)
}

/// Runs `program` for syscall number `nr` of `arch`.
fn eval_nr(program: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    interp::run(program.instructions(), &Data { nr, arch, args })
}

/// The native ABI (the tests run on hosts that have one).
fn native() -> Abi {
    Abi::native().expect("tests need a supported native architecture")
}

#[test]
fn seccomp_native_x86_64_audit_arch() {
    if cfg!(target_arch = "x86_64") {
        assert_eq!(native().audit_arch(), AUDIT_ARCH_X86_64);
    }
}
