//! Handlers of the guest basics RPCs of `grpc.AgentService` (GetGuestDetails,
//! SetGuestDateTime, CopyFile, ReseedRandomDev, OnlineCPUMem). They convert
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

/// OnlineCPUMem.
pub async fn online_cpu_mem(req: OnlineCPUMemRequest) -> ttrpc::Result<Empty> {
    blocking(move |g| guest::online::online_cpu_mem(g, req.nb_cpus, req.cpu_only)).await?;
    Ok(Empty::new())
}
