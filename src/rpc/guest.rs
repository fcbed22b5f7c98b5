//! Handlers of the guest basics RPCs of `grpc.AgentService` (GetGuestDetails,
//! SetGuestDateTime, CopyFile, ReseedRandomDev, OnlineCPUMem,
//! MemHotplugByProbe, GetMetrics, GetVolumeStats, ResizeVolume, AddSwap,
//! AddSwapPath, UpdateEphemeralMounts). They convert messages and run the
//! work (which blocks: syscalls, sysfs, retries) off the async threads, with
//! the sandbox's guest settings; the work itself is in `crate::guest`, or in
//! the sandbox where it touches what the sandbox owns (containers' cpusets,
//! devices, storages).

use std::path::Path;

use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;

use super::Rpc;
use crate::guest::{self, copy_file::CopyRequest, Guest, GuestError};
use crate::sandbox::{blocking, Error};

/// Runs `f` on the blocking pool with the guest settings.
async fn on_guest<T: Send + 'static>(
    rpc: &Rpc,
    f: impl FnOnce(&Guest) -> Result<T, GuestError> + Send + 'static,
) -> Result<T, Error> {
    let g = rpc.sandbox.guest();
    blocking(move || f(&g).map_err(Error::from)).await
}

/// GetGuestDetails.
pub(crate) async fn get_guest_details(rpc: &Rpc, req: GuestDetailsRequest) -> Result<GuestDetailsResponse, Error> {
    let d = on_guest(rpc, move |g| {
        guest::details::guest_details(g, req.mem_block_size, req.mem_hotplug_probe)
    })
    .await?;
    let mut a = AgentDetails::new();
    a.version = d.version;
    a.init_daemon = d.init_daemon;
    a.device_handlers = d.device_handlers;
    a.storage_handlers = d.storage_handlers;
    a.supports_seccomp = d.supports_seccomp;
    let mut r = GuestDetailsResponse::new();
    r.mem_block_size_bytes = d.mem_block_size_bytes;
    r.support_mem_hotplug_probe = d.support_mem_hotplug_probe;
    r.agent_details = protobuf::MessageField::some(a);
    Ok(r)
}

/// SetGuestDateTime.
pub(crate) async fn set_guest_date_time(rpc: &Rpc, req: SetGuestDateTimeRequest) -> Result<Empty, Error> {
    on_guest(rpc, move |_| guest::time::set_time(req.Sec, req.Usec)).await?;
    Ok(Empty::new())
}

/// CopyFile.
pub(crate) async fn copy_file(rpc: &Rpc, req: CopyFileRequest) -> Result<Empty, Error> {
    on_guest(rpc, move |g| {
        guest::copy_file::copy_file(
            &g.copy_roots,
            &CopyRequest {
                path: &req.path,
                file_size: req.file_size,
                file_mode: req.file_mode,
                dir_mode: req.dir_mode,
                uid: req.uid,
                gid: req.gid,
                offset: req.offset,
                data: &req.data,
            },
        )
    })
    .await?;
    Ok(Empty::new())
}

/// ReseedRandomDev.
pub(crate) async fn reseed_random_dev(rpc: &Rpc, req: ReseedRandomDevRequest) -> Result<Empty, Error> {
    on_guest(rpc, move |g| guest::random::reseed(&g.random_dev, &req.data)).await?;
    Ok(Empty::new())
}

/// OnlineCPUMem: CPUs and memory onlined, then the containers' cpusets follow.
pub(crate) async fn online_cpu_mem(rpc: &Rpc, req: OnlineCPUMemRequest) -> Result<Empty, Error> {
    rpc.sandbox.online_cpu_mem(req.nb_cpus, req.cpu_only).await?;
    Ok(Empty::new())
}

/// MemHotplugByProbe.
pub(crate) async fn mem_hotplug_by_probe(rpc: &Rpc, req: MemHotplugByProbeRequest) -> Result<Empty, Error> {
    on_guest(rpc, move |g| guest::memory::probe(g, &req.memHotplugProbeAddr)).await?;
    Ok(Empty::new())
}

/// GetMetrics.
pub(crate) async fn get_metrics(rpc: &Rpc, _req: GetMetricsRequest) -> Result<Metrics, Error> {
    let text = on_guest(rpc, |_| Ok(guest::metrics::gather(&guest::metrics::Sources::default()))).await?;
    let mut m = Metrics::new();
    m.metrics = text;
    Ok(m)
}

fn usage(u: guest::volume::Usage, unit: protocols::csi::volume_usage::Unit) -> protocols::csi::VolumeUsage {
    protocols::csi::VolumeUsage {
        available: u.available,
        total: u.total,
        used: u.used,
        unit: unit.into(),
        ..Default::default()
    }
}

/// GetVolumeStats.
pub(crate) async fn get_volume_stats(
    rpc: &Rpc,
    req: VolumeStatsRequest,
) -> Result<protocols::csi::VolumeStatsResponse, Error> {
    use protocols::csi::volume_usage::Unit;
    let path = req.volume_guest_path;
    let (bytes, inodes) = on_guest(rpc, move |_| guest::volume::stats(Path::new(&path))).await?;
    let mut r = protocols::csi::VolumeStatsResponse::new();
    r.usage = vec![usage(bytes, Unit::BYTES), usage(inodes, Unit::INODES)];
    let mut c = protocols::csi::VolumeCondition::new();
    c.abnormal = false;
    c.message = "OK".into();
    r.volume_condition = protobuf::MessageField::some(c);
    Ok(r)
}

/// ResizeVolume.
pub(crate) async fn resize_volume(rpc: &Rpc, req: ResizeVolumeRequest) -> Result<Empty, Error> {
    rpc.sandbox
        .resize_volume(req.volume_guest_path.into(), req.size)
        .await?;
    Ok(Empty::new())
}

/// AddSwapPath.
pub(crate) async fn add_swap_path(rpc: &Rpc, req: AddSwapPathRequest) -> Result<Empty, Error> {
    on_guest(rpc, move |_| guest::swap::swapon(Path::new(&req.path))).await?;
    Ok(Empty::new())
}

/// AddSwap: Kata's PCI path is one slot per bridge level (function 0).
pub(crate) async fn add_swap(rpc: &Rpc, req: AddSwapRequest) -> Result<Empty, Error> {
    let path = req
        .PCIPath
        .iter()
        .map(|s| format!("{s:02x}"))
        .collect::<Vec<_>>()
        .join("/");
    let dev = crate::device::DeviceAddr::parse("blk", &path).map_err(|source| Error::Device {
        context: format!("AddSwap: PCIPath {:?}", req.PCIPath),
        source,
    })?;
    rpc.sandbox.add_swap(&dev).await?;
    Ok(Empty::new())
}

/// UpdateEphemeralMounts.
pub(crate) async fn update_ephemeral_mounts(rpc: &Rpc, req: UpdateEphemeralMountsRequest) -> Result<Empty, Error> {
    rpc.sandbox.update_ephemeral_mounts(req.storages).await?;
    Ok(Empty::new())
}
