//! `linux`: id mappings, sysctl, cgroups path, namespaces, devices, rootfs propagation,
//! masked and read-only paths, mount label, Intel RDT; `resources` and `seccomp` have their own
//! files.
//!
//! Namespace types: [`to_oci`] takes the OCI names (`pid`, `network`, `mount`, `ipc`, `uts`,
//! `user`, `cgroup`, `time`) and the kernel's short ones (`net`, `mnt`); [`from_oci`] writes the
//! OCI names, as Kata's Go runtime sends them.
//!
//! Not on the wire: `netDevices`, `memoryPolicy`, `personality`, `timeOffsets`, and of
//! `intelRdt` everything but `l3CacheSchema`.

use std::path::PathBuf;

use crate::oci as grpc;
use oci_spec::runtime as oci;

use super::{
    built, map_vec, opt_clone, opt_map, opt_num, opt_path, opt_path_string, opt_string, parse_enum, path_string,
    resources, seccomp, try_opt_vec, ConvertError, Within,
};

pub(super) fn to_oci(l: &grpc::Linux) -> Result<oci::Linux, ConvertError> {
    let mut out = oci::Linux::default();
    out.set_net_devices(None);
    out.set_uid_mappings(try_opt_vec(&l.UIDMappings, "uidMappings", id_mapping_to_oci)?);
    out.set_gid_mappings(try_opt_vec(&l.GIDMappings, "gidMappings", id_mapping_to_oci)?);
    out.set_sysctl(opt_map(&l.Sysctl));
    out.set_resources(
        l.Resources
            .as_ref()
            .map(resources::to_oci)
            .transpose()
            .within("resources")?,
    );
    out.set_cgroups_path(opt_path(&l.CgroupsPath));
    out.set_namespaces(try_opt_vec(&l.Namespaces, "namespaces", namespace_to_oci)?);
    out.set_devices(try_opt_vec(&l.Devices, "devices", device_to_oci)?);
    out.set_seccomp(l.Seccomp.as_ref().map(seccomp::to_oci).transpose().within("seccomp")?);
    out.set_rootfs_propagation(opt_string(&l.RootfsPropagation));
    out.set_masked_paths(opt_clone(&l.MaskedPaths));
    out.set_readonly_paths(opt_clone(&l.ReadonlyPaths));
    out.set_mount_label(opt_string(&l.MountLabel));
    out.set_intel_rdt(l.IntelRdt.as_ref().map(intel_rdt_to_oci));
    out.set_memory_policy(None);
    out.set_personality(None);
    out.set_time_offsets(None);
    Ok(out)
}

pub(super) fn from_oci(l: &oci::Linux) -> grpc::Linux {
    grpc::Linux {
        UIDMappings: map_vec(l.uid_mappings(), id_mapping_from_oci),
        GIDMappings: map_vec(l.gid_mappings(), id_mapping_from_oci),
        Sysctl: l.sysctl().clone().unwrap_or_default(),
        Resources: l.resources().as_ref().map(resources::from_oci).into(),
        CgroupsPath: opt_path_string(l.cgroups_path()),
        Namespaces: map_vec(l.namespaces(), namespace_from_oci),
        Devices: map_vec(l.devices(), device_from_oci),
        Seccomp: l.seccomp().as_ref().map(seccomp::from_oci).into(),
        RootfsPropagation: l.rootfs_propagation().clone().unwrap_or_default(),
        MaskedPaths: l.masked_paths().clone().unwrap_or_default(),
        ReadonlyPaths: l.readonly_paths().clone().unwrap_or_default(),
        MountLabel: l.mount_label().clone().unwrap_or_default(),
        IntelRdt: l.intel_rdt().as_ref().map(intel_rdt_from_oci).into(),
        ..Default::default()
    }
}

// ---- id mappings ------------------------------------------------------------------------------

fn id_mapping_to_oci(m: &grpc::LinuxIDMapping) -> Result<oci::LinuxIdMapping, ConvertError> {
    built(
        oci::LinuxIdMappingBuilder::default()
            .host_id(m.HostID)
            .container_id(m.ContainerID)
            .size(m.Size)
            .build(),
    )
}

fn id_mapping_from_oci(m: &oci::LinuxIdMapping) -> grpc::LinuxIDMapping {
    grpc::LinuxIDMapping {
        HostID: m.host_id(),
        ContainerID: m.container_id(),
        Size: m.size(),
        ..Default::default()
    }
}

// ---- namespaces -------------------------------------------------------------------------------

fn namespace_to_oci(n: &grpc::LinuxNamespace) -> Result<oci::LinuxNamespace, ConvertError> {
    let typ = oci::LinuxNamespaceType::try_from(n.Type.as_str())
        .map_err(|_| ConvertError::unknown("type", "namespace type", &n.Type))?;
    let mut out = oci::LinuxNamespace::default();
    out.set_typ(typ);
    out.set_path(opt_path(&n.Path));
    Ok(out)
}

fn namespace_from_oci(n: &oci::LinuxNamespace) -> grpc::LinuxNamespace {
    grpc::LinuxNamespace {
        Type: namespace_name(n.typ()).to_string(),
        Path: opt_path_string(n.path()),
        ..Default::default()
    }
}

/// The OCI (and Kata Go runtime) name of a namespace type.
fn namespace_name(t: oci::LinuxNamespaceType) -> &'static str {
    use oci::LinuxNamespaceType as T;
    match t {
        T::Mount => "mount",
        T::Cgroup => "cgroup",
        T::Uts => "uts",
        T::Ipc => "ipc",
        T::User => "user",
        T::Pid => "pid",
        T::Network => "network",
        T::Time => "time",
    }
}

// ---- devices ----------------------------------------------------------------------------------

/// `fileMode`, `uid` and `gid` of 0 are absent (the engine then uses 0666 and root).
fn device_to_oci(d: &grpc::LinuxDevice) -> Result<oci::LinuxDevice, ConvertError> {
    let typ: oci::LinuxDeviceType = parse_enum(&d.Type, "device type").within("type")?;
    let mut out = oci::LinuxDevice::default();
    out.set_path(PathBuf::from(&d.Path));
    out.set_typ(typ);
    out.set_major(d.Major);
    out.set_minor(d.Minor);
    out.set_file_mode(opt_num(d.FileMode));
    out.set_uid(opt_num(d.UID));
    out.set_gid(opt_num(d.GID));
    Ok(out)
}

fn device_from_oci(d: &oci::LinuxDevice) -> grpc::LinuxDevice {
    grpc::LinuxDevice {
        Path: path_string(d.path()),
        Type: d.typ().as_str().to_string(),
        Major: d.major(),
        Minor: d.minor(),
        FileMode: d.file_mode().unwrap_or_default(),
        UID: d.uid().unwrap_or_default(),
        GID: d.gid().unwrap_or_default(),
        ..Default::default()
    }
}

// ---- Intel RDT --------------------------------------------------------------------------------

fn intel_rdt_to_oci(r: &grpc::LinuxIntelRdt) -> oci::LinuxIntelRdt {
    let mut out = oci::LinuxIntelRdt::default();
    out.set_l3_cache_schema(opt_string(&r.L3CacheSchema));
    out
}

fn intel_rdt_from_oci(r: &oci::LinuxIntelRdt) -> grpc::LinuxIntelRdt {
    grpc::LinuxIntelRdt {
        L3CacheSchema: r.l3_cache_schema().clone().unwrap_or_default(),
        ..Default::default()
    }
}
