//! What block-device hot-plug needs from the sandbox: a running container's
//! init, and its device cgroup rules with the hot-plugged devices added.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::{lock, Sandbox, SandboxError};

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

    /// The init pid of container `id`, which must exist and be running.
    pub fn running_init(&self, id: &str) -> Result<i32, SandboxError> {
        if !lock(&self.containers).contains_key(id) {
            return Err(SandboxError::NotFound(format!("container {id:?} does not exist")));
        }
        let (state, status) = self.runtime.state(id)?;
        if status != rustjail::Status::Running {
            return Err(SandboxError::FailedPrecondition(format!(
                "container {id:?} is not running (it is {status:?})"
            )));
        }
        Ok(state.pid)
    }

    /// Sets container `id`'s device cgroup to what its spec allows plus `extra`
    /// (later rules win), on cgroup v1 and v2 alike.
    pub fn set_device_rules(&self, id: &str, extra: &[LinuxDeviceCgroup]) -> Result<(), SandboxError> {
        let spec = self.runtime.spec(id)?;
        let mut rules = rustjail::devices::effective_resources(&spec)
            .devices()
            .clone()
            .unwrap_or_default();
        rules.extend_from_slice(extra);
        let cg = self.runtime.cgroup(id)?;
        cg.update_devices(&rules)
            .map_err(|e| SandboxError::Internal(format!("device cgroup of container {id:?}: {e}")))
    }
}
