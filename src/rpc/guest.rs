//! Handlers of the guest basics RPCs of `grpc.AgentService` (GetGuestDetails,
//! SetGuestDateTime, CopyFile, ReseedRandomDev, OnlineCPUMem,
//! MemHotplugByProbe, GetMetrics, GetVolumeStats, ResizeVolume, AddSwapPath,
//! and the answers kata-agent gives when built without mem-agent or policy). They convert
//! messages, run the work (which blocks: syscalls, sysfs, retries) off the async
//! threads, and map errors to statuses; the work itself is in `crate::guest`.
//!
//! The process-wide [`Guest`] is made on first use from the environment
//! (`PITH_COPYFILE_ROOTS`, `PITH_SYSFS_ROOT`); [`init`] sets it explicitly.

use std::sync::{Arc, OnceLock};

use protobuf::well_known_types::empty::Empty;
use protocols::agent::*;

use super::status;
use crate::guest::{self, copy_file::CopyRequest, Guest, GuestError};

static GUEST: OnceLock<Arc<Guest>> = OnceLock::new();

/// Sets the process-wide guest state; false if it was set (or used) already.
pub fn init(g: Guest) -> bool {
    GUEST.set(Arc::new(g)).is_ok()
}

/// The process-wide guest state.
pub fn guest() -> Arc<Guest> {
    GUEST
        .get_or_init(|| Arc::new(Guest::from_env(&|k| std::env::var(k).ok())))
        .clone()
}

fn rpc_err(e: GuestError) -> ttrpc::Error {
    status(e.code(), e)
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce(&Guest) -> Result<T, GuestError> + Send + 'static,
) -> ttrpc::Result<T> {
    let g = guest();
    tokio::task::spawn_blocking(move || f(&g))
        .await
        .map_err(|e| status(ttrpc::Code::INTERNAL, format!("guest task failed: {e}")))?
        .map_err(rpc_err)
}

/// GetGuestDetails.
pub async fn get_guest_details(req: GuestDetailsRequest) -> ttrpc::Result<GuestDetailsResponse> {
    let d = blocking(move |g| guest::details::guest_details(g, req.mem_block_size, req.mem_hotplug_probe)).await?;
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
pub async fn set_guest_date_time(req: SetGuestDateTimeRequest) -> ttrpc::Result<Empty> {
    blocking(move |_| guest::time::set_time(req.Sec, req.Usec)).await?;
    Ok(Empty::new())
}

/// CopyFile.
pub async fn copy_file(req: CopyFileRequest) -> ttrpc::Result<Empty> {
    blocking(move |g| {
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
pub async fn reseed_random_dev(req: ReseedRandomDevRequest) -> ttrpc::Result<Empty> {
    blocking(move |g| guest::random::reseed(&g.random_dev, &req.data)).await?;
    Ok(Empty::new())
}

/// OnlineCPUMem's sysfs part; the caller lets the containers' cpusets follow.
pub async fn online_cpu_mem(req: OnlineCPUMemRequest) -> ttrpc::Result<guest::online::Onlined> {
    blocking(move |g| guest::online::online_cpu_mem(g, req.nb_cpus, req.cpu_only)).await
}

/// MemHotplugByProbe.
pub async fn mem_hotplug_by_probe(req: MemHotplugByProbeRequest) -> ttrpc::Result<Empty> {
    blocking(move |g| guest::memory::probe(g, &req.memHotplugProbeAddr)).await?;
    Ok(Empty::new())
}

/// GetMetrics.
pub async fn get_metrics(_req: GetMetricsRequest) -> ttrpc::Result<Metrics> {
    let text = blocking(|_| Ok(guest::metrics::gather(&guest::metrics::Sources::default()))).await?;
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
pub async fn get_volume_stats(req: VolumeStatsRequest) -> ttrpc::Result<protocols::csi::VolumeStatsResponse> {
    use protocols::csi::volume_usage::Unit;
    let path = req.volume_guest_path.clone();
    let (bytes, inodes) = blocking(move |_| guest::volume::stats(std::path::Path::new(&path))).await?;
    let mut r = protocols::csi::VolumeStatsResponse::new();
    r.usage = vec![usage(bytes, Unit::BYTES), usage(inodes, Unit::INODES)];
    let mut c = protocols::csi::VolumeCondition::new();
    c.abnormal = false;
    c.message = "OK".into();
    r.volume_condition = protobuf::MessageField::some(c);
    Ok(r)
}

/// ResizeVolume.
pub async fn resize_volume(req: ResizeVolumeRequest) -> ttrpc::Result<Empty> {
    blocking(move |_| guest::volume::resize(std::path::Path::new(&req.volume_guest_path), req.size)).await?;
    Ok(Empty::new())
}

/// AddSwapPath.
pub async fn add_swap_path(req: AddSwapPathRequest) -> ttrpc::Result<Empty> {
    blocking(move |_| guest::swap::swapon(std::path::Path::new(&req.path))).await?;
    Ok(Empty::new())
}

/// Swap on the block device at `dev` (AddSwap, after the device was waited for).
pub async fn swapon(dev: String) -> ttrpc::Result<Empty> {
    blocking(move |_| guest::swap::swapon(std::path::Path::new(&dev))).await?;
    Ok(Empty::new())
}

/// What kata-agent built without mem-agent answers to MemAgentMemcgSet and
/// MemAgentCompactSet.
pub fn mem_agent_disabled() -> ttrpc::Error {
    status(ttrpc::Code::INTERNAL, "mem-agent is disabled")
}

/// What kata-agent built without the `agent-policy` feature answers to
/// SetPolicy (ttrpc's default for a method the service does not serve).
pub fn set_policy_not_supported() -> ttrpc::Error {
    status(ttrpc::Code::NOT_FOUND, "/grpc.AgentService/SetPolicy is not supported")
}
