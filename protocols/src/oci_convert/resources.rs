//! `linux.resources`: device rules, memory, cpu, pids, block I/O, hugepage limits, network.
//!
//! * A sub-message that is present gives a present OCI section, even when all its values are
//!   zero; inside it, each zero value is absent. Signed values keep their sign: `-1` (as in
//!   `memory.swap = -1`, `cpu.quota = -1`) means unlimited and is kept.
//! * Device rules: an empty `type` is absent (all types); a `major`/`minor` of 0 is absent
//!   (any device; `-1`, which the engine also reads as any, is kept); an empty `access` is
//!   absent.
//! * `pids` is kept as sent when present (`limit` is not optional in OCI; 0 means unset).
//! * `blockIO` weights are 16-bit in OCI: a larger value is an error, not a truncation.
//! * `hugepageLimits[].limit` is unsigned on the wire and signed in OCI: `u64::MAX` means
//!   unlimited and becomes `-1`; any other value above `i64::MAX` is an error.
//!
//! Not on the wire: `memory.useHierarchy`, `memory.checkBeforeUpdate`, `cpu.idle`, `cpu.burst`,
//! `rdma`, `unified`.

use crate::oci as grpc;
use oci_spec::runtime as oci;

use super::{
    built, fit, map_vec, opt_num, opt_string, opt_true, opt_vec, parse_enum, try_opt_vec, ConvertError, Within,
};

pub(super) fn to_oci(r: &grpc::LinuxResources) -> Result<oci::LinuxResources, ConvertError> {
    let mut out = oci::LinuxResources::default();
    out.set_devices(try_opt_vec(&r.Devices, "devices", device_rule_to_oci)?);
    out.set_memory(r.Memory.as_ref().map(memory_to_oci));
    out.set_cpu(r.CPU.as_ref().map(cpu_to_oci));
    out.set_pids(r.Pids.as_ref().map(pids_to_oci));
    out.set_block_io(r.BlockIO.as_ref().map(block_io_to_oci).transpose().within("blockIO")?);
    out.set_hugepage_limits(try_opt_vec(&r.HugepageLimits, "hugepageLimits", hugepage_to_oci)?);
    out.set_network(r.Network.as_ref().map(network_to_oci));
    out.set_rdma(None);
    out.set_unified(None);
    Ok(out)
}

pub(super) fn from_oci(r: &oci::LinuxResources) -> grpc::LinuxResources {
    grpc::LinuxResources {
        Devices: map_vec(r.devices(), device_rule_from_oci),
        Memory: r.memory().as_ref().map(memory_from_oci).into(),
        CPU: r.cpu().as_ref().map(cpu_from_oci).into(),
        Pids: r.pids().as_ref().map(pids_from_oci).into(),
        BlockIO: r.block_io().as_ref().map(block_io_from_oci).into(),
        HugepageLimits: map_vec(r.hugepage_limits(), hugepage_from_oci),
        Network: r.network().as_ref().map(network_from_oci).into(),
        ..Default::default()
    }
}

// ---- device rules -----------------------------------------------------------------------------

fn device_rule_to_oci(d: &grpc::LinuxDeviceCgroup) -> Result<oci::LinuxDeviceCgroup, ConvertError> {
    let typ = match d.Type.as_str() {
        "" => None,
        t => Some(parse_enum::<oci::LinuxDeviceType>(t, "device type").within("type")?),
    };
    let mut out = oci::LinuxDeviceCgroup::default();
    out.set_allow(d.Allow);
    out.set_typ(typ);
    out.set_major(opt_num(d.Major));
    out.set_minor(opt_num(d.Minor));
    out.set_access(opt_string(&d.Access));
    Ok(out)
}

fn device_rule_from_oci(d: &oci::LinuxDeviceCgroup) -> grpc::LinuxDeviceCgroup {
    grpc::LinuxDeviceCgroup {
        Allow: d.allow(),
        Type: d.typ().map(|t| t.as_str().to_string()).unwrap_or_default(),
        Major: d.major().unwrap_or_default(),
        Minor: d.minor().unwrap_or_default(),
        Access: d.access().clone().unwrap_or_default(),
        ..Default::default()
    }
}

// ---- memory -----------------------------------------------------------------------------------

// `kernel` is deprecated in OCI (cgroup v1 only) but still carried.
#[allow(deprecated)]
fn memory_to_oci(m: &grpc::LinuxMemory) -> oci::LinuxMemory {
    let mut out = oci::LinuxMemory::default();
    out.set_limit(opt_num(m.Limit));
    out.set_reservation(opt_num(m.Reservation));
    out.set_swap(opt_num(m.Swap));
    out.set_kernel(opt_num(m.Kernel));
    out.set_kernel_tcp(opt_num(m.KernelTCP));
    out.set_swappiness(opt_num(m.Swappiness));
    out.set_disable_oom_killer(opt_true(m.DisableOOMKiller));
    out.set_use_hierarchy(None);
    out.set_check_before_update(None);
    out
}

#[allow(deprecated)]
fn memory_from_oci(m: &oci::LinuxMemory) -> grpc::LinuxMemory {
    grpc::LinuxMemory {
        Limit: m.limit().unwrap_or_default(),
        Reservation: m.reservation().unwrap_or_default(),
        Swap: m.swap().unwrap_or_default(),
        Kernel: m.kernel().unwrap_or_default(),
        KernelTCP: m.kernel_tcp().unwrap_or_default(),
        Swappiness: m.swappiness().unwrap_or_default(),
        DisableOOMKiller: m.disable_oom_killer().unwrap_or_default(),
        ..Default::default()
    }
}

// ---- cpu --------------------------------------------------------------------------------------

fn cpu_to_oci(c: &grpc::LinuxCPU) -> oci::LinuxCpu {
    let mut out = oci::LinuxCpu::default();
    out.set_shares(opt_num(c.Shares));
    out.set_quota(opt_num(c.Quota));
    out.set_idle(None);
    out.set_burst(None);
    out.set_period(opt_num(c.Period));
    out.set_realtime_runtime(opt_num(c.RealtimeRuntime));
    out.set_realtime_period(opt_num(c.RealtimePeriod));
    out.set_cpus(opt_string(&c.Cpus));
    out.set_mems(opt_string(&c.Mems));
    out
}

fn cpu_from_oci(c: &oci::LinuxCpu) -> grpc::LinuxCPU {
    grpc::LinuxCPU {
        Shares: c.shares().unwrap_or_default(),
        Quota: c.quota().unwrap_or_default(),
        Period: c.period().unwrap_or_default(),
        RealtimeRuntime: c.realtime_runtime().unwrap_or_default(),
        RealtimePeriod: c.realtime_period().unwrap_or_default(),
        Cpus: c.cpus().clone().unwrap_or_default(),
        Mems: c.mems().clone().unwrap_or_default(),
        ..Default::default()
    }
}

// ---- pids -------------------------------------------------------------------------------------

fn pids_to_oci(p: &grpc::LinuxPids) -> oci::LinuxPids {
    let mut out = oci::LinuxPids::default();
    out.set_limit(p.Limit);
    out
}

fn pids_from_oci(p: &oci::LinuxPids) -> grpc::LinuxPids {
    grpc::LinuxPids {
        Limit: p.limit(),
        ..Default::default()
    }
}

// ---- block I/O --------------------------------------------------------------------------------

fn block_io_to_oci(b: &grpc::LinuxBlockIO) -> Result<oci::LinuxBlockIo, ConvertError> {
    let throttle = |v: &[grpc::LinuxThrottleDevice], name: &str| try_opt_vec(v, name, throttle_to_oci);
    let mut out = oci::LinuxBlockIo::default();
    out.set_weight(opt_num(b.Weight).map(fit).transpose().within("weight")?);
    out.set_leaf_weight(opt_num(b.LeafWeight).map(fit).transpose().within("leafWeight")?);
    out.set_weight_device(try_opt_vec(&b.WeightDevice, "weightDevice", weight_device_to_oci)?);
    out.set_throttle_read_bps_device(throttle(&b.ThrottleReadBpsDevice, "throttleReadBpsDevice")?);
    out.set_throttle_write_bps_device(throttle(&b.ThrottleWriteBpsDevice, "throttleWriteBpsDevice")?);
    out.set_throttle_read_iops_device(throttle(&b.ThrottleReadIOPSDevice, "throttleReadIOPSDevice")?);
    out.set_throttle_write_iops_device(throttle(&b.ThrottleWriteIOPSDevice, "throttleWriteIOPSDevice")?);
    Ok(out)
}

fn block_io_from_oci(b: &oci::LinuxBlockIo) -> grpc::LinuxBlockIO {
    grpc::LinuxBlockIO {
        Weight: b.weight().map_or(0, u32::from),
        LeafWeight: b.leaf_weight().map_or(0, u32::from),
        WeightDevice: map_vec(b.weight_device(), weight_device_from_oci),
        ThrottleReadBpsDevice: map_vec(b.throttle_read_bps_device(), throttle_from_oci),
        ThrottleWriteBpsDevice: map_vec(b.throttle_write_bps_device(), throttle_from_oci),
        ThrottleReadIOPSDevice: map_vec(b.throttle_read_iops_device(), throttle_from_oci),
        ThrottleWriteIOPSDevice: map_vec(b.throttle_write_iops_device(), throttle_from_oci),
        ..Default::default()
    }
}

fn weight_device_to_oci(w: &grpc::LinuxWeightDevice) -> Result<oci::LinuxWeightDevice, ConvertError> {
    let mut b = oci::LinuxWeightDeviceBuilder::default().major(w.Major).minor(w.Minor);
    if let Some(v) = opt_num(w.Weight) {
        b = b.weight(fit::<u32, u16>(v).within("weight")?);
    }
    if let Some(v) = opt_num(w.LeafWeight) {
        b = b.leaf_weight(fit::<u32, u16>(v).within("leafWeight")?);
    }
    built(b.build())
}

fn weight_device_from_oci(w: &oci::LinuxWeightDevice) -> grpc::LinuxWeightDevice {
    grpc::LinuxWeightDevice {
        Major: w.major(),
        Minor: w.minor(),
        Weight: w.weight().map_or(0, u32::from),
        LeafWeight: w.leaf_weight().map_or(0, u32::from),
        ..Default::default()
    }
}

fn throttle_to_oci(t: &grpc::LinuxThrottleDevice) -> Result<oci::LinuxThrottleDevice, ConvertError> {
    built(
        oci::LinuxThrottleDeviceBuilder::default()
            .major(t.Major)
            .minor(t.Minor)
            .rate(t.Rate)
            .build(),
    )
}

fn throttle_from_oci(t: &oci::LinuxThrottleDevice) -> grpc::LinuxThrottleDevice {
    grpc::LinuxThrottleDevice {
        Major: t.major(),
        Minor: t.minor(),
        Rate: t.rate(),
        ..Default::default()
    }
}

// ---- hugepages --------------------------------------------------------------------------------

fn hugepage_to_oci(h: &grpc::LinuxHugepageLimit) -> Result<oci::LinuxHugepageLimit, ConvertError> {
    let limit = match h.Limit {
        u64::MAX => -1,
        l => fit::<u64, i64>(l).within("limit")?,
    };
    let mut out = oci::LinuxHugepageLimit::default();
    out.set_page_size(h.Pagesize.clone());
    out.set_limit(limit);
    Ok(out)
}

/// A negative limit (`-1`: unlimited) becomes `u64::MAX`.
fn hugepage_from_oci(h: &oci::LinuxHugepageLimit) -> grpc::LinuxHugepageLimit {
    grpc::LinuxHugepageLimit {
        Pagesize: h.page_size().clone(),
        Limit: u64::try_from(h.limit()).unwrap_or(u64::MAX),
        ..Default::default()
    }
}

// ---- network ----------------------------------------------------------------------------------

fn network_to_oci(n: &grpc::LinuxNetwork) -> oci::LinuxNetwork {
    let mut out = oci::LinuxNetwork::default();
    out.set_class_id(opt_num(n.ClassID));
    out.set_priorities(opt_vec(&n.Priorities, priority_to_oci));
    out
}

fn priority_to_oci(p: &grpc::LinuxInterfacePriority) -> oci::LinuxInterfacePriority {
    let mut out = oci::LinuxInterfacePriority::default();
    out.set_name(p.Name.clone());
    out.set_priority(p.Priority);
    out
}

fn network_from_oci(n: &oci::LinuxNetwork) -> grpc::LinuxNetwork {
    grpc::LinuxNetwork {
        ClassID: n.class_id().unwrap_or_default(),
        Priorities: map_vec(n.priorities(), |p| grpc::LinuxInterfacePriority {
            Name: p.name().clone(),
            Priority: p.priority(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
