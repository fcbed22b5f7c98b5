//! `hooks`: all six lists (`prestart`, `createRuntime`, `createContainer`, `startContainer`,
//! `poststart`, `poststop`). A hook's `timeout` of 0 means none; a negative one is an error
//! (the OCI spec wants it greater than zero when set).

use std::path::PathBuf;

use crate::oci as grpc;
use oci_spec::runtime as oci;

use super::{map_vec, opt_clone, path_string, try_opt_vec, ConvertError};

// `prestart` is deprecated in the OCI spec but still part of it, and of the wire protocol.
#[allow(deprecated)]
pub(super) fn to_oci(h: &grpc::Hooks) -> Result<oci::Hooks, ConvertError> {
    let mut out = oci::Hooks::default();
    out.set_prestart(try_opt_vec(&h.Prestart, "prestart", hook_to_oci)?);
    out.set_create_runtime(try_opt_vec(&h.CreateRuntime, "createRuntime", hook_to_oci)?);
    out.set_create_container(try_opt_vec(&h.CreateContainer, "createContainer", hook_to_oci)?);
    out.set_start_container(try_opt_vec(&h.StartContainer, "startContainer", hook_to_oci)?);
    out.set_poststart(try_opt_vec(&h.Poststart, "poststart", hook_to_oci)?);
    out.set_poststop(try_opt_vec(&h.Poststop, "poststop", hook_to_oci)?);
    Ok(out)
}

#[allow(deprecated)]
pub(super) fn from_oci(h: &oci::Hooks) -> grpc::Hooks {
    grpc::Hooks {
        Prestart: map_vec(h.prestart(), hook_from_oci),
        CreateRuntime: map_vec(h.create_runtime(), hook_from_oci),
        CreateContainer: map_vec(h.create_container(), hook_from_oci),
        StartContainer: map_vec(h.start_container(), hook_from_oci),
        Poststart: map_vec(h.poststart(), hook_from_oci),
        Poststop: map_vec(h.poststop(), hook_from_oci),
        ..Default::default()
    }
}

fn hook_to_oci(h: &grpc::Hook) -> Result<oci::Hook, ConvertError> {
    let timeout = match h.Timeout {
        0 => None,
        t if t > 0 => Some(t),
        t => {
            return Err(ConvertError::invalid(
                "timeout",
                format!("{t} is negative (seconds; 0 means no timeout)"),
            ))
        }
    };
    let mut out = oci::Hook::default();
    out.set_path(PathBuf::from(&h.Path));
    out.set_args(opt_clone(&h.Args));
    out.set_env(opt_clone(&h.Env));
    out.set_timeout(timeout);
    Ok(out)
}

fn hook_from_oci(h: &oci::Hook) -> grpc::Hook {
    grpc::Hook {
        Path: path_string(h.path()),
        Args: h.args().clone().unwrap_or_default(),
        Env: h.env().clone().unwrap_or_default(),
        Timeout: h.timeout().unwrap_or_default(),
        ..Default::default()
    }
}
