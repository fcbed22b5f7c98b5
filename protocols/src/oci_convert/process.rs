//! `process`: user, console size, capabilities, rlimits.
//!
//! Not on the wire, so lost by [`from_oci`] and `None` from [`to_oci`]: `user.umask`,
//! `commandLine`, `ioPriority`, `scheduler`, `execCPUAffinity`.
//!
//! Capabilities travel as names (`"CAP_CHOWN"`). [`to_oci`] also takes them without the `CAP_`
//! prefix, in any case, and JSON-quoted (`"\"CAP_CHOWN\""`, which Kata's agent accepts too).
//! The OCI side holds sets, so order and duplicates are not kept: [`from_oci`] writes each set
//! sorted by name.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::oci as grpc;
use oci_spec::runtime as oci;

use super::{
    built, fit, map_vec, opt_clone, opt_num, opt_string, parse_enum, path_string, try_opt_vec, ConvertError, Within,
};

pub(super) fn to_oci(p: &grpc::Process) -> Result<oci::Process, ConvertError> {
    let mut out = oci::Process::default();
    out.set_terminal(Some(p.Terminal));
    out.set_console_size(
        p.ConsoleSize
            .as_ref()
            .map(console_to_oci)
            .transpose()
            .within("consoleSize")?,
    );
    out.set_user(p.User.as_ref().map(user_to_oci).unwrap_or_default());
    out.set_args(Some(p.Args.clone()));
    out.set_command_line(None);
    out.set_env(opt_clone(&p.Env));
    out.set_cwd(PathBuf::from(&p.Cwd));
    out.set_capabilities(
        p.Capabilities
            .as_ref()
            .map(caps_to_oci)
            .transpose()
            .within("capabilities")?,
    );
    out.set_rlimits(try_opt_vec(&p.Rlimits, "rlimits", rlimit_to_oci)?);
    out.set_no_new_privileges(Some(p.NoNewPrivileges));
    out.set_apparmor_profile(opt_string(&p.ApparmorProfile));
    out.set_oom_score_adj(opt_num(p.OOMScoreAdj).map(fit).transpose().within("oomScoreAdj")?);
    out.set_selinux_label(opt_string(&p.SelinuxLabel));
    out.set_io_priority(None);
    out.set_scheduler(None);
    out.set_exec_cpu_affinity(None);
    Ok(out)
}

pub(super) fn from_oci(p: &oci::Process) -> grpc::Process {
    grpc::Process {
        Terminal: p.terminal().unwrap_or_default(),
        ConsoleSize: p.console_size().map(console_from_oci).into(),
        User: Some(user_from_oci(p.user())).into(),
        Args: p.args().clone().unwrap_or_default(),
        Env: p.env().clone().unwrap_or_default(),
        Cwd: path_string(p.cwd()),
        Capabilities: p.capabilities().as_ref().map(caps_from_oci).into(),
        Rlimits: map_vec(p.rlimits(), rlimit_from_oci),
        NoNewPrivileges: p.no_new_privileges().unwrap_or_default(),
        ApparmorProfile: p.apparmor_profile().clone().unwrap_or_default(),
        OOMScoreAdj: p.oom_score_adj().map_or(0, i64::from),
        SelinuxLabel: p.selinux_label().clone().unwrap_or_default(),
        ..Default::default()
    }
}

// ---- console size -----------------------------------------------------------------------------

fn console_to_oci(b: &grpc::Box) -> Result<oci::Box, ConvertError> {
    built(
        oci::BoxBuilder::default()
            .height(u64::from(b.Height))
            .width(u64::from(b.Width))
            .build(),
    )
}

/// The wire form holds 32 bits; a larger size (no terminal has one) is clamped.
fn console_from_oci(b: oci::Box) -> grpc::Box {
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    grpc::Box {
        Height: clamp(b.height()),
        Width: clamp(b.width()),
        ..Default::default()
    }
}

// ---- user -------------------------------------------------------------------------------------

fn user_to_oci(u: &grpc::User) -> oci::User {
    let mut out = oci::User::default();
    out.set_uid(u.UID);
    out.set_gid(u.GID);
    out.set_umask(None);
    out.set_additional_gids(opt_clone(&u.AdditionalGids));
    out.set_username(opt_string(&u.Username));
    out
}

fn user_from_oci(u: &oci::User) -> grpc::User {
    grpc::User {
        UID: u.uid(),
        GID: u.gid(),
        AdditionalGids: u.additional_gids().clone().unwrap_or_default(),
        Username: u.username().clone().unwrap_or_default(),
        ..Default::default()
    }
}

// ---- capabilities -----------------------------------------------------------------------------

fn caps_to_oci(c: &grpc::LinuxCapabilities) -> Result<oci::LinuxCapabilities, ConvertError> {
    let mut out = oci::LinuxCapabilities::default();
    out.set_bounding(cap_set(&c.Bounding).within("bounding")?);
    out.set_effective(cap_set(&c.Effective).within("effective")?);
    out.set_inheritable(cap_set(&c.Inheritable).within("inheritable")?);
    out.set_permitted(cap_set(&c.Permitted).within("permitted")?);
    out.set_ambient(cap_set(&c.Ambient).within("ambient")?);
    Ok(out)
}

fn cap_set(names: &[String]) -> Result<Option<oci::Capabilities>, ConvertError> {
    Ok(try_opt_vec(names, "", |n| parse_capability(n))?.map(|v| v.into_iter().collect::<HashSet<_>>()))
}

/// `CAP_CHOWN`, `chown`, `cap_chown` and `"CAP_CHOWN"` (JSON-quoted) all name the same capability.
pub(super) fn parse_capability(name: &str) -> Result<oci::Capability, ConvertError> {
    let unquoted = name.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(name);
    let upper = unquoted.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse::<oci::Capability>()
        .map_err(|_| ConvertError::unknown("", "capability", name))
}

fn caps_from_oci(c: &oci::LinuxCapabilities) -> grpc::LinuxCapabilities {
    grpc::LinuxCapabilities {
        Bounding: cap_names(c.bounding()),
        Effective: cap_names(c.effective()),
        Inheritable: cap_names(c.inheritable()),
        Permitted: cap_names(c.permitted()),
        Ambient: cap_names(c.ambient()),
        ..Default::default()
    }
}

/// Sorted `CAP_*` names (the set has no order of its own).
fn cap_names(set: &Option<oci::Capabilities>) -> Vec<String> {
    let mut names: Vec<String> = set.iter().flatten().map(|c| format!("CAP_{c}")).collect();
    names.sort_unstable();
    names
}

// ---- rlimits ----------------------------------------------------------------------------------

fn rlimit_to_oci(r: &grpc::POSIXRlimit) -> Result<oci::PosixRlimit, ConvertError> {
    let typ: oci::PosixRlimitType = parse_enum(&r.Type, "rlimit type").within("type")?;
    built(
        oci::PosixRlimitBuilder::default()
            .typ(typ)
            .hard(r.Hard)
            .soft(r.Soft)
            .build(),
    )
}

fn rlimit_from_oci(r: &oci::PosixRlimit) -> grpc::POSIXRlimit {
    grpc::POSIXRlimit {
        Type: r.typ().to_string(),
        Hard: r.hard(),
        Soft: r.soft(),
        ..Default::default()
    }
}
