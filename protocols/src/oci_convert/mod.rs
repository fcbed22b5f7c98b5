//! Conversion between the wire form of an OCI runtime spec (`protocols::oci::Spec`, Kata's
//! `oci.proto`, package `grpc`) and the spec the container engine takes
//! (`oci_spec::runtime::Spec`).
//!
//! [`to_oci`] is what `CreateContainer` uses: it checks every enumerated string (namespace and
//! device types, rlimit types, capabilities, seccomp actions, operators, architectures and
//! flags) and fails with a [`ConvertError`] naming the field path and the value instead of
//! guessing or panicking. [`from_oci`] goes the other way, for state dumps and tests.
//!
//! proto3 cannot tell "unset" from a zero value, so in [`to_oci`] a zero value (empty string,
//! 0, `false`, empty list or map, absent message) becomes `None` wherever the OCI field is
//! optional, with these exceptions, all of them as Kata's agent does:
//! * `process.args` is always kept (`Some`, even when empty);
//! * `process.terminal`, `process.noNewPrivileges` and `root.readonly` are always `Some(bool)`;
//! * `process.user` is always present (uid/gid 0 when the message is absent);
//! * a capability list of a present `Capabilities` message is `None` when empty: an absent set
//!   and an empty set both mean "no capability" to the engine.
//!
//! Values that do not fit the OCI type are errors, not truncations; see the submodules.

mod hooks;
mod linux;
mod mounts;
mod process;
mod resources;
mod seccomp;
#[cfg(test)]
mod tests;
pub mod validate;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::oci as grpc;
use oci_spec::runtime as oci;

/// A wire spec that cannot be turned into an OCI spec. The message starts with the path of the
/// offending field in OCI JSON notation, e.g. `linux.namespaces[2].type`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// An enumerated string (namespace type, capability, seccomp action, ...) that is not known.
    #[error("{path}: unknown {what} {value:?}")]
    Unknown {
        /// Field path, e.g. `linux.namespaces[2].type`.
        path: String,
        /// What the value should have been, e.g. `namespace type`.
        what: &'static str,
        /// The value as received.
        value: String,
    },
    /// A value the OCI spec cannot hold (out of range, negative where it must not be).
    #[error("{path}: {reason}")]
    Invalid {
        /// Field path, e.g. `process.oomScoreAdj`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConvertError {
    /// The path of the offending field, e.g. `linux.namespaces[2].type`.
    pub fn path(&self) -> &str {
        match self {
            ConvertError::Unknown { path, .. } | ConvertError::Invalid { path, .. } => path,
        }
    }

    pub(crate) fn unknown(path: &str, what: &'static str, value: &str) -> Self {
        ConvertError::Unknown {
            path: path.to_string(),
            what,
            value: value.to_string(),
        }
    }

    pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> Self {
        ConvertError::Invalid {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// Puts `prefix` in front of the path: errors are built at the leaf with the leaf's field
    /// name and prefixed on the way out, so that no path string is built unless there is an
    /// error.
    pub(crate) fn within(mut self, prefix: &str) -> Self {
        let path = match &mut self {
            ConvertError::Unknown { path, .. } | ConvertError::Invalid { path, .. } => path,
        };
        *path = if path.is_empty() {
            prefix.to_string()
        } else if path.starts_with('[') {
            format!("{prefix}{path}")
        } else {
            format!("{prefix}.{path}")
        };
        self
    }
}

/// Adds a path prefix to the error of a result.
pub(crate) trait Within<T> {
    fn within(self, prefix: &str) -> Result<T, ConvertError>;
}

impl<T> Within<T> for Result<T, ConvertError> {
    fn within(self, prefix: &str) -> Result<T, ConvertError> {
        self.map_err(|e| e.within(prefix))
    }
}

/// Converts the wire form of a spec into the OCI spec the container engine takes.
pub fn to_oci(spec: &grpc::Spec) -> Result<oci::Spec, ConvertError> {
    let mut out = oci::Spec::default();
    out.set_version(spec.Version.clone());
    out.set_process(
        spec.Process
            .as_ref()
            .map(process::to_oci)
            .transpose()
            .within("process")?,
    );
    out.set_root(spec.Root.as_ref().map(mounts::root_to_oci));
    out.set_hostname(opt_string(&spec.Hostname));
    out.set_domainname(None);
    out.set_mounts(opt_vec(&spec.Mounts, mounts::mount_to_oci));
    out.set_hooks(spec.Hooks.as_ref().map(hooks::to_oci).transpose().within("hooks")?);
    out.set_annotations(opt_map(&spec.Annotations));
    out.set_linux(spec.Linux.as_ref().map(linux::to_oci).transpose().within("linux")?);
    // `Solaris` and `Windows` are empty placeholders on the wire.
    out.set_solaris(None);
    out.set_windows(None);
    out.set_vm(None);
    out.set_zos(None);
    Ok(out)
}

/// [`to_oci`], then [`validate::container`]: the spec `CreateContainer` takes.
pub fn container_to_oci(spec: &grpc::Spec) -> Result<oci::Spec, ConvertError> {
    let out = to_oci(spec)?;
    validate::container(&out)?;
    Ok(out)
}

/// The process of `ExecProcess`, converted and checked ([`validate::process`]).
pub fn exec_process_to_oci(p: &grpc::Process) -> Result<oci::Process, ConvertError> {
    let out = process::to_oci(p).within("process")?;
    validate::process(&out).within("process")?;
    Ok(out)
}

/// The text of an `oci_spec` error with its cause: the crate's own text of an
/// I/O error is only "io operation failed".
pub fn spec_error_text(e: &oci_spec::OciSpecError) -> String {
    match e {
        oci_spec::OciSpecError::Io(io) => format!("{e}: {io}"),
        oci_spec::OciSpecError::SerDe(j) => format!("{e}: {j}"),
        _ => e.to_string(),
    }
}

/// Converts the wire form of `linux.resources` (UpdateContainer) into OCI resources.
pub fn resources_to_oci(r: &grpc::LinuxResources) -> Result<oci::LinuxResources, ConvertError> {
    resources::to_oci(r).within("resources")
}

/// Converts an OCI spec into its wire form (for state dumps and tests). Fields the wire form has
/// no place for are dropped: `domainname`, `vm`, `zos`, `solaris`, `windows` here, and those
/// listed in each submodule's documentation.
pub fn from_oci(spec: &oci::Spec) -> grpc::Spec {
    grpc::Spec {
        Version: spec.version().clone(),
        Process: spec.process().as_ref().map(process::from_oci).into(),
        Root: spec.root().as_ref().map(mounts::root_from_oci).into(),
        Hostname: spec.hostname().clone().unwrap_or_default(),
        Mounts: map_vec(spec.mounts(), mounts::mount_from_oci),
        Hooks: spec.hooks().as_ref().map(hooks::from_oci).into(),
        Annotations: spec.annotations().clone().unwrap_or_default(),
        Linux: spec.linux().as_ref().map(linux::from_oci).into(),
        ..Default::default()
    }
}

// ---- helpers shared by the submodules ---------------------------------------------------------

/// `None` for an empty string.
pub(crate) fn opt_string(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `None` for an empty string, else the string as a path.
pub(crate) fn opt_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// `None` for zero.
pub(crate) fn opt_num<T: Default + PartialEq + Copy>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

/// `None` for `false`.
pub(crate) fn opt_true(v: bool) -> Option<bool> {
    v.then_some(true)
}

/// `None` for an empty list, else each element converted.
pub(crate) fn opt_vec<T, U>(v: &[T], f: impl Fn(&T) -> U) -> Option<Vec<U>> {
    (!v.is_empty()).then(|| v.iter().map(f).collect())
}

/// `None` for an empty list, else the list.
pub(crate) fn opt_clone<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// `None` for an empty map, else the map.
pub(crate) fn opt_map<K: Clone, V: Clone>(
    m: &std::collections::HashMap<K, V>,
) -> Option<std::collections::HashMap<K, V>> {
    (!m.is_empty()).then(|| m.clone())
}

/// Converts each element with `f`; an error is prefixed with `name[index]`. `None` for an empty
/// list.
pub(crate) fn try_opt_vec<T, U>(
    v: &[T],
    name: &str,
    f: impl Fn(&T) -> Result<U, ConvertError>,
) -> Result<Option<Vec<U>>, ConvertError> {
    if v.is_empty() {
        return Ok(None);
    }
    try_vec(v, name, f).map(Some)
}

/// Converts each element with `f`; an error is prefixed with `name[index]`.
pub(crate) fn try_vec<T, U>(
    v: &[T],
    name: &str,
    f: impl Fn(&T) -> Result<U, ConvertError>,
) -> Result<Vec<U>, ConvertError> {
    v.iter()
        .enumerate()
        .map(|(i, x)| f(x).map_err(|e| e.within(&format!("{name}[{i}]"))))
        .collect()
}

/// Parses an enumerated string with its `FromStr`; the error names `what` it should have been.
/// The path is left empty for the caller to fill in.
pub(crate) fn parse_enum<T: FromStr>(value: &str, what: &'static str) -> Result<T, ConvertError> {
    value.parse::<T>().map_err(|_| ConvertError::unknown("", what, value))
}

/// The result of an `oci_spec` builder. The builders used here have a default for every field,
/// so they do not fail; if one ever does, it is an error, not a panic.
pub(crate) fn built<T>(r: Result<T, oci_spec::OciSpecError>) -> Result<T, ConvertError> {
    r.map_err(|e| ConvertError::invalid("", e.to_string()))
}

/// A numeric conversion that must not truncate; the error is prefixed by the caller.
pub(crate) fn fit<T, U>(v: T) -> Result<U, ConvertError>
where
    T: Copy + std::fmt::Display,
    U: TryFrom<T>,
{
    U::try_from(v)
        .map_err(|_| ConvertError::invalid("", format!("{v} is out of range for {}", std::any::type_name::<U>())))
}

/// An optional list converted element by element, empty when absent.
pub(crate) fn map_vec<T, U>(v: &Option<Vec<T>>, f: impl Fn(&T) -> U) -> Vec<U> {
    v.as_deref().unwrap_or_default().iter().map(f).collect()
}

/// A path as a string (lossy for a path that is not UTF-8).
pub(crate) fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// An optional path as a string, empty when absent.
pub(crate) fn opt_path_string(p: &Option<PathBuf>) -> String {
    p.as_deref().map(path_string).unwrap_or_default()
}
