//! `linux.seccomp`: default action, architectures, flags, syscall rules with their arguments.
//!
//! Actions (`SCMP_ACT_*`), operators (`SCMP_CMP_*`), architectures (`SCMP_ARCH_*`) and flags
//! (`SECCOMP_FILTER_FLAG_*`) are the OCI spellings; anything else is an error.
//!
//! A rule's `errnoRet` is the one-field oneof `ErrnoRet`: set gives `Some` (even 0), unset
//! gives `None` (Kata's agent turns unset into `Some(0)`, which reads as "errno 0"). An
//! argument's `valueTwo` of 0 is absent, which the engine reads as 0.
//!
//! Not on the wire: `defaultErrnoRet`, `listenerPath`, `listenerMetadata`.

use crate::oci as grpc;
use crate::oci::linux_syscall::ErrnoRet;
use oci_spec::runtime as oci;

use super::{built, fit, map_vec, opt_num, parse_enum, try_opt_vec, ConvertError, Within};

pub(super) fn to_oci(s: &grpc::LinuxSeccomp) -> Result<oci::LinuxSeccomp, ConvertError> {
    let default_action: oci::LinuxSeccompAction =
        parse_enum(&s.DefaultAction, "seccomp action").within("defaultAction")?;
    let mut out = oci::LinuxSeccomp::default();
    out.set_default_action(default_action);
    out.set_default_errno_ret(None);
    out.set_architectures(try_opt_vec(&s.Architectures, "architectures", |a| {
        parse_enum(a, "seccomp architecture")
    })?);
    out.set_flags(try_opt_vec(&s.Flags, "flags", |f| parse_enum(f, "seccomp flag"))?);
    out.set_listener_path(None);
    out.set_listener_metadata(None);
    out.set_syscalls(try_opt_vec(&s.Syscalls, "syscalls", syscall_to_oci)?);
    Ok(out)
}

pub(super) fn from_oci(s: &oci::LinuxSeccomp) -> grpc::LinuxSeccomp {
    grpc::LinuxSeccomp {
        DefaultAction: s.default_action().to_string(),
        Architectures: map_vec(s.architectures(), |a| a.to_string()),
        Flags: map_vec(s.flags(), |f| f.to_string()),
        Syscalls: map_vec(s.syscalls(), syscall_from_oci),
        ..Default::default()
    }
}

fn syscall_to_oci(s: &grpc::LinuxSyscall) -> Result<oci::LinuxSyscall, ConvertError> {
    let action: oci::LinuxSeccompAction = parse_enum(&s.Action, "seccomp action").within("action")?;
    let mut out = oci::LinuxSyscall::default();
    out.set_names(s.Names.clone());
    out.set_action(action);
    out.set_errno_ret(s.has_errnoret().then(|| s.errnoret()));
    out.set_args(try_opt_vec(&s.Args, "args", arg_to_oci)?);
    Ok(out)
}

fn syscall_from_oci(s: &oci::LinuxSyscall) -> grpc::LinuxSyscall {
    grpc::LinuxSyscall {
        Names: s.names().clone(),
        Action: s.action().to_string(),
        ErrnoRet: s.errno_ret().map(ErrnoRet::Errnoret),
        Args: map_vec(s.args(), arg_from_oci),
        ..Default::default()
    }
}

fn arg_to_oci(a: &grpc::LinuxSeccompArg) -> Result<oci::LinuxSeccompArg, ConvertError> {
    let op: oci::LinuxSeccompOperator = parse_enum(&a.Op, "seccomp operator").within("op")?;
    let index: usize = fit(a.Index).within("index")?;
    let mut b = oci::LinuxSeccompArgBuilder::default()
        .index(index)
        .value(a.Value)
        .op(op);
    if let Some(v2) = opt_num(a.ValueTwo) {
        b = b.value_two(v2);
    }
    built(b.build())
}

fn arg_from_oci(a: &oci::LinuxSeccompArg) -> grpc::LinuxSeccompArg {
    grpc::LinuxSeccompArg {
        // usize is at most 64 bits on every target Rust supports.
        Index: a.index() as u64,
        Value: a.value(),
        ValueTwo: a.value_two().unwrap_or_default(),
        Op: a.op().to_string(),
        ..Default::default()
    }
}
