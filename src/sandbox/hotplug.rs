//! What block-device hot-plug needs from the sandbox: a running container's
//! init, and its device cgroup rules with the hot-plugged devices added.

use std::sync::Arc;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::{Container, Sandbox, SandboxError};

/// A device cgroup rule allowing block device `major:minor` with `access` (`rwm` letters).
pub fn allow_block(major: u32, minor: u32, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(LinuxDeviceType::B));
    r.set_major(Some(i64::from(major)));
    r.set_minor(Some(i64::from(minor)));
    r.set_access(Some(access.to_string()));
    r
}

impl Sandbox {
    /// The reaper that collects every child of the agent.
    pub fn reaper(&self) -> &crate::reaper::Reaper {
        &self.reaper
    }

    /// Container `id`, which must exist and be running.
    pub fn running(&self, id: &str) -> Result<Arc<Container>, SandboxError> {
        let c = self.container(id)?;
        let status = c.rj.status();
        if status != rustjail::Status::Running {
            return Err(SandboxError::FailedPrecondition(format!(
                "container {id:?} is not running (it is {status})"
            )));
        }
        Ok(c)
    }

    /// Sets container `id`'s device cgroup to what its spec allows plus `extra`
    /// (later rules win), on cgroup v1 and v2 alike.
    pub fn set_device_rules(&self, id: &str, extra: &[LinuxDeviceCgroup]) -> Result<(), SandboxError> {
        let c = self.container(id)?;
        let mut rules = rustjail::devices::effective_resources(&c.rj.spec)
            .devices()
            .clone()
            .unwrap_or_default();
        rules.extend_from_slice(extra);
        c.rj.cgroup
            .update_devices(&rules)
            .map_err(|e| SandboxError::Internal(format!("device cgroup of container {id:?}: {e}")))
    }

    /// Runs a device node operation inside container `c`. Blocks.
    pub fn device_node(
        &self,
        c: &Container,
        req: &crate::device::node::NodeRequest,
    ) -> Result<crate::device::node::NodeOutcome, crate::device::node::NodeError> {
        crate::device::node::run(&self.runtime, &c.rj, req)
    }
}
