//! Guest RPCs that need what the sandbox owns: AddSwap (a hot-plugged disk,
//! waited for through the sandbox's devices) and UpdateEphemeralMounts (the
//! storages' allowed roots). (OnlineCPUMem, which touches the containers'
//! cpusets, is in `cpuset.rs`.)

use protocols::agent::Storage;

use super::{blocking, Error, Result, Sandbox};
use crate::device::DeviceAddr;

impl Sandbox {
    /// AddSwap: waits for the block device at `addr`, then swaps on it.
    pub(crate) async fn add_swap(&self, addr: &DeviceAddr) -> Result<()> {
        let dev = self.devices.wait_block(addr).await.map_err(|source| Error::Device {
            context: "AddSwap".into(),
            source,
        })?;
        let path = dev.guest_path();
        blocking(move || crate::guest::swap::swapon(std::path::Path::new(&path)).map_err(Error::from)).await
    }

    /// UpdateEphemeralMounts: each (ephemeral) storage's mount point made if
    /// missing and mounted again with its options (see `storage::ephemeral`).
    pub(crate) async fn update_ephemeral_mounts(&self, storages: Vec<Storage>) -> Result<()> {
        let m = self.storages.clone();
        blocking(move || m.update_ephemeral(&storages).map_err(Error::from)).await
    }
}
