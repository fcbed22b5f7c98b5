//! `pith.Devices`: hot-plug block devices into running containers, from API
//! level 3. The work (and the records of what each container was given) is
//! the sandbox's (`sandbox::hotplug`); this converts messages.

use std::sync::Arc;

use async_trait::async_trait;
use protocols::levels::LEVEL_BLOCK_HOTPLUG;
use protocols::pith::{AddBlockDeviceRequest, BlockDeviceResponse, RemoveBlockDeviceRequest};
use ttrpc::r#async::TtrpcContext;

use super::{Ids, Rpc};
use crate::device::DeviceAddr;
use crate::sandbox::hotplug::{AddDevice, Plugged};
use crate::sandbox::Error;

/// Serves `pith.Devices`.
pub(crate) struct DevicesService {
    rpc: Arc<Rpc>,
}

impl DevicesService {
    /// A service plugging devices into containers of the sandbox of `rpc`.
    pub(crate) fn new(rpc: Arc<Rpc>) -> Self {
        DevicesService { rpc }
    }
}

fn response(p: &Plugged) -> BlockDeviceResponse {
    let mut r = BlockDeviceResponse::new();
    r.guest_path = p.dev.guest_path();
    r.major = p.dev.major;
    r.minor = p.dev.minor;
    r.container_path = p.path.clone();
    r.mount_path = p.mount.as_ref().map(|m| m.target.clone()).unwrap_or_default();
    r
}

#[async_trait]
impl protocols::pith_ttrpc::Devices for DevicesService {
    async fn add_block_device(
        &self,
        _ctx: &TtrpcContext,
        req: AddBlockDeviceRequest,
    ) -> ttrpc::Result<BlockDeviceResponse> {
        const METHOD: &str = "pith.Devices/AddBlockDevice";
        self.rpc
            .run(METHOD, Ids::container(&req.container_id), async {
                let sandbox = &self.rpc.sandbox;
                sandbox.require_level(LEVEL_BLOCK_HOTPLUG, METHOD)?;
                let addr = DeviceAddr::parse(&req.type_, &req.address).map_err(|source| Error::Device {
                    context: format!("hot-plug into container {:?}", req.container_id),
                    source,
                })?;
                let plugged = sandbox
                    .add_block_device(AddDevice {
                        container_id: req.container_id.clone(),
                        addr,
                        container_path: req.container_path.clone(),
                        access: req.access.clone(),
                        mode: req.mode,
                        uid: req.uid,
                        gid: req.gid,
                        mount_path: req.mount_path.clone(),
                        fstype: req.fstype.clone(),
                        mount_options: req.mount_options.clone(),
                    })
                    .await?;
                Ok(response(&plugged))
            })
            .await
    }

    async fn remove_block_device(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveBlockDeviceRequest,
    ) -> ttrpc::Result<BlockDeviceResponse> {
        const METHOD: &str = "pith.Devices/RemoveBlockDevice";
        self.rpc
            .run(METHOD, Ids::container(&req.container_id), async {
                let sandbox = &self.rpc.sandbox;
                sandbox.require_level(LEVEL_BLOCK_HOTPLUG, METHOD)?;
                match sandbox
                    .remove_block_device(&req.container_id, &req.container_path)
                    .await?
                {
                    Some(p) => Ok(response(&p)),
                    // Nothing hot-plugged there: nothing to undo.
                    None => {
                        let mut r = BlockDeviceResponse::new();
                        r.container_path = req.container_path.clone();
                        Ok(r)
                    }
                }
            })
            .await
    }
}
