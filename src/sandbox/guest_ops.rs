//! Guest RPCs that need what the sandbox owns: AddSwap (a hot-plugged disk,
//! waited for through the sandbox's devices), UpdateEphemeralMounts (the
//! storages' allowed roots) and ResizeVolume (its tool's exit comes from the
//! engine's reaper). (OnlineCPUMem, which touches the containers'
//! cpusets, is in `cpuset.rs`.)

use protocols::agent::Storage;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{blocking, Error, Result, Sandbox};
use crate::device::DeviceAddr;
use crate::reaper::Exit;
use crate::tool::{self, describe, ToolError};

/// How long resize2fs / xfs_growfs may run before it is killed.
const RESIZE_TIMEOUT: Duration = Duration::from_secs(120);

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

    /// ResizeVolume: grows the filesystem mounted at `path` to `size` bytes
    /// (0: its whole device) with the image's resize2fs or xfs_growfs.
    pub(crate) async fn resize_volume(&self, path: PathBuf, size: u64) -> Result<()> {
        let plan = blocking(move || crate::guest::volume::resize_plan(&path, size).map_err(Error::from)).await?;
        let args: Vec<&str> = plan.args.iter().map(String::as_str).collect();
        let exits = |pid| self.engine.watch_exit(pid);
        let out = match tool::run(Path::new(plan.tool), &args, None, &exits, RESIZE_TIMEOUT).await {
            Ok(out) => out,
            Err(ToolError::Spawn { source, .. }) => return Err(plan.spawn_error(source).into()),
            Err(e) => return Err(Error::Internal(format!("ResizeVolume: {e}"))),
        };
        let exit = match out.exit {
            Exit::Code(0) => Ok(()),
            e => Err(describe(e)),
        };
        Ok(plan.outcome(exit, &out.stderr)?)
    }
}
