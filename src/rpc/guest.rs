//! Handlers of the guest basics RPCs of `grpc.AgentService` (GetGuestDetails,
//! SetGuestDateTime, CopyFile, ReseedRandomDev, OnlineCPUMem). They convert
//! messages and run the work (which blocks: syscalls, sysfs, retries) off the
//! async threads, with the sandbox's guest settings; the work itself is in
//! `crate::guest`.

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

/// OnlineCPUMem.
pub(crate) async fn online_cpu_mem(rpc: &Rpc, req: OnlineCPUMemRequest) -> Result<Empty, Error> {
    on_guest(rpc, move |g| {
        guest::online::online_cpu_mem(g, req.nb_cpus, req.cpu_only)
    })
    .await?;
    Ok(Empty::new())
}
