//! `root` and `mounts`.
//!
//! Not on the wire: a mount's `uidMappings`/`gidMappings` (ID-mapped mounts).

use std::path::PathBuf;

use crate::oci as grpc;
use oci_spec::runtime as oci;

use super::{opt_clone, opt_path, opt_path_string, opt_string, path_string};

/// `readonly` is always set (`Some(false)` for a writable root), as Kata's agent does.
pub(super) fn root_to_oci(r: &grpc::Root) -> oci::Root {
    let mut out = oci::Root::default();
    out.set_path(PathBuf::from(&r.Path));
    out.set_readonly(Some(r.Readonly));
    out
}

pub(super) fn root_from_oci(r: &oci::Root) -> grpc::Root {
    grpc::Root {
        Path: path_string(r.path()),
        Readonly: r.readonly().unwrap_or_default(),
        ..Default::default()
    }
}

/// Empty `type`, `source` and `options` are absent.
pub(super) fn mount_to_oci(m: &grpc::Mount) -> oci::Mount {
    let mut out = oci::Mount::default();
    out.set_destination(PathBuf::from(&m.destination));
    out.set_typ(opt_string(&m.type_));
    out.set_source(opt_path(&m.source));
    out.set_options(opt_clone(&m.options));
    out
}

pub(super) fn mount_from_oci(m: &oci::Mount) -> grpc::Mount {
    grpc::Mount {
        destination: path_string(m.destination()),
        source: opt_path_string(m.source()),
        type_: m.typ().clone().unwrap_or_default(),
        options: m.options().clone().unwrap_or_default(),
        ..Default::default()
    }
}
