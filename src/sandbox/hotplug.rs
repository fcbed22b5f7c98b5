//! Block devices hot-plugged into running containers, and each container's
//! device cgroup rules.
//!
//! Add: wait for the device the host plugged, make its node inside the
//! container (rustjail's helper in the container's mount namespace), then
//! allow it in the container's device cgroup; if that fails, a node made here
//! is removed again. Remove: deny it, then delete the node. The devices of a
//! container are recorded in it ([`DeviceState`]), so that every device cgroup
//! write (a hot-plug, UpdateContainer) carries all of them, and they go when
//! the container goes. Operations on one container are serialised by its
//! lock; different containers do not wait for each other.

use std::path::{Component, Path};
use std::sync::Arc;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Spec};
use slog::info;

use super::{blocking, Container, Error, Result, Sandbox};
use crate::device::node::{NodeMount, NodeOp, NodeOutcome, NodeRequest};
use crate::device::{BlockDev, DeviceAddr};

/// A device given to a container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Plugged {
    /// Its node inside the container.
    pub path: String,
    /// The device in the guest.
    pub dev: BlockDevView,
    /// Device cgroup access (`rwm` letters).
    pub access: String,
    /// Node permission bits.
    pub mode: u32,
    /// Node owner.
    pub uid: u32,
    /// Node group.
    pub gid: u32,
    /// Its filesystem mounted in the container, if asked.
    pub mount: Option<NodeMount>,
}

/// A block device as plain data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct BlockDevView {
    /// Node name in the guest (`sda`).
    pub name: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl From<&BlockDev> for BlockDevView {
    fn from(d: &BlockDev) -> Self {
        BlockDevView {
            name: d.name.clone(),
            major: d.major,
            minor: d.minor,
        }
    }
}

impl BlockDevView {
    /// `/dev/<name>`.
    pub(crate) fn guest_path(&self) -> String {
        format!("/dev/{}", self.name)
    }
}

/// A container's device cgroup: its own rules (the spec's, or the last
/// UpdateContainer's) and the devices hot-plugged into it, in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DeviceState {
    /// Rules that replaced the spec's (UpdateContainer); None: the spec's.
    pub own_rules: Option<Vec<LinuxDeviceCgroup>>,
    /// Hot-plugged devices.
    pub plugged: Vec<Plugged>,
}

/// A device cgroup rule allowing block device `major:minor` with `access` (`rwm` letters).
pub(crate) fn allow_block(major: u32, minor: u32, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(LinuxDeviceType::B));
    r.set_major(Some(i64::from(major)));
    r.set_minor(Some(i64::from(minor)));
    r.set_access(Some(access.to_string()));
    r
}

impl DeviceState {
    /// The whole rule list for the container: its own rules (`own` replacing
    /// the current ones when given), the devices every container may use, its
    /// spec's device nodes, then the hot-plugged devices (later rules win).
    pub(crate) fn effective_rules(&self, spec: &Spec, own: Option<&Vec<LinuxDeviceCgroup>>) -> Vec<LinuxDeviceCgroup> {
        self.rules_with(spec, own, &self.plugged)
    }

    fn rules_with(
        &self,
        spec: &Spec,
        own: Option<&Vec<LinuxDeviceCgroup>>,
        plugged: &[Plugged],
    ) -> Vec<LinuxDeviceCgroup> {
        let mut spec = spec.clone();
        if let Some(rules) = own.or(self.own_rules.as_ref()) {
            let mut linux = spec.linux().clone().unwrap_or_default();
            let mut res = linux.resources().clone().unwrap_or_default();
            res.set_devices(Some(rules.clone()));
            linux.set_resources(Some(res));
            spec.set_linux(Some(linux));
        }
        let mut rules = rustjail::devices::effective_resources(&spec)
            .devices()
            .clone()
            .unwrap_or_default();
        rules.extend(plugged.iter().map(|p| allow_block(p.dev.major, p.dev.minor, &p.access)));
        rules
    }
}

/// What AddBlockDevice asks for.
#[derive(Debug, Clone)]
pub(crate) struct AddDevice {
    /// The running container.
    pub container_id: String,
    /// Where the host plugged the device.
    pub addr: DeviceAddr,
    /// Its node inside the container.
    pub container_path: String,
    /// Device cgroup access (`rwm` letters; empty: `rwm`).
    pub access: String,
    /// Node permission bits (0: 0660).
    pub mode: u32,
    /// Node owner.
    pub uid: u32,
    /// Node group.
    pub gid: u32,
    /// Mount its filesystem here in the container (empty: do not).
    pub mount_path: String,
    /// Filesystem type, with `mount_path`.
    pub fstype: String,
    /// Mount options (`ro`, `noatime`, filesystem data).
    pub mount_options: Vec<String>,
}

/// An absolute, normal path that is not `/` itself.
fn check_path(what: &str, p: &str) -> Result<()> {
    let path = Path::new(p);
    let ok = path.is_absolute()
        && path.components().count() > 1
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {p:?}: want an absolute path without . or .."
        )))
    }
}

/// `rwm` letters, each at most once, in that order; empty means `rwm`.
fn check_access(a: &str) -> Result<String> {
    if a.is_empty() {
        return Ok("rwm".into());
    }
    if !a.chars().all(|c| "rwm".contains(c)) {
        return Err(Error::InvalidArgument(format!("access {a:?}: want letters of \"rwm\"")));
    }
    Ok("rwm".chars().filter(|c| a.contains(*c)).collect())
}

/// The mount AddBlockDevice asks for, if any.
fn mount_of(req: &AddDevice) -> Result<Option<NodeMount>> {
    if req.mount_path.is_empty() {
        return Ok(None);
    }
    check_path("mount_path", &req.mount_path)?;
    if req.fstype.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "mount_path {:?} without fstype",
            req.mount_path
        )));
    }
    let o = crate::storage::options::mount_options(&req.mount_options, &[]);
    // MsFlags bits are a c_ulong, which is not u64 on every target.
    #[allow(clippy::unnecessary_cast)]
    Ok(Some(NodeMount {
        target: req.mount_path.clone(),
        fstype: req.fstype.clone(),
        flags: o.flags.bits() as u64,
        data: o.data,
    }))
}

impl Sandbox {
    /// Container `id`, which must exist and be running.
    pub(crate) fn running(&self, id: &str) -> Result<Arc<Container>> {
        let c = self.container(id)?;
        let status = c.engine.status();
        if status != rustjail::Status::Running {
            return Err(Error::NotRunning {
                id: id.to_string(),
                status,
            });
        }
        Ok(c)
    }

    async fn device_node(&self, c: &Arc<Container>, req: NodeRequest) -> Result<NodeOutcome> {
        let c = c.clone();
        blocking(move || c.engine.device_node(&req).map_err(Error::from)).await
    }

    async fn set_device_rules(&self, c: &Arc<Container>, rules: Vec<LinuxDeviceCgroup>) -> Result<()> {
        let c = c.clone();
        blocking(move || c.engine.set_device_rules(&rules)).await
    }

    /// Hot-plugs a block device into a running container; returns what was plugged.
    pub(crate) async fn add_block_device(self: &Arc<Self>, req: AddDevice) -> Result<Plugged> {
        self.detached(|sb| async move { sb.add_block_device_task(req).await })
            .await
    }

    async fn add_block_device_task(&self, req: AddDevice) -> Result<Plugged> {
        let id = req.container_id.as_str();
        check_path("container_path", &req.container_path)?;
        let access = check_access(&req.access)?;
        let mount = mount_of(&req)?;
        let mode = if req.mode == 0 { 0o660 } else { req.mode };
        if mode & !0o7777 != 0 {
            return Err(Error::InvalidArgument(format!(
                "mode {mode:o}: want permission bits only"
            )));
        }
        // Fail fast for a container that cannot take the device.
        self.running(id)?;
        let started = std::time::Instant::now();
        let dev = self
            .devices
            .wait_block(&req.addr)
            .await
            .map_err(|source| Error::Device {
                context: format!("hot-plug into container {id:?}"),
                source,
            })?;
        let waited = started.elapsed();

        let c = self.running(id)?;
        let mut state = c.devices.lock().await;
        // Under the lock a state write takes to read the devices.
        self.changed.touch(id);
        let entry = Plugged {
            path: req.container_path.clone(),
            dev: BlockDevView::from(&dev),
            access,
            mode,
            uid: req.uid,
            gid: req.gid,
            mount,
        };
        let node = |op| NodeRequest {
            op,
            path: entry.path.clone(),
            major: dev.major,
            minor: dev.minor,
            mode,
            uid: req.uid,
            gid: req.gid,
            mount: entry.mount.clone(),
        };
        let outcome = self.device_node(&c, node(NodeOp::Add)).await?;
        let mut list = state.plugged.clone();
        list.retain(|p| p.path != entry.path);
        list.push(entry.clone());
        let rules = state.rules_with(c.engine.spec(), None, &list);
        if let Err(e) = self.set_device_rules(&c, rules).await {
            if outcome == NodeOutcome::Created {
                let _ = self.device_node(&c, node(NodeOp::Remove)).await;
            }
            return Err(e);
        }
        state.plugged = list;
        info!(self.log, "block device added";
              "container" => id, "device" => req.addr.to_string(), "guest_path" => dev.guest_path(),
              "major" => dev.major, "minor" => dev.minor, "container_path" => &entry.path,
              "node" => format!("{outcome:?}"), "waited_ms" => waited.as_millis() as u64);
        Ok(entry)
    }

    /// Takes a hot-plugged device out of a running container: denied first,
    /// then its node removed (never a node the cgroup still allows after the
    /// answer). Nothing hot-plugged at that path: nothing to do (None).
    pub(crate) async fn remove_block_device(
        self: &Arc<Self>,
        id: &str,
        container_path: &str,
    ) -> Result<Option<Plugged>> {
        let (id, path) = (id.to_string(), container_path.to_string());
        self.detached(move |sb| async move { sb.remove_block_device_task(&id, &path).await })
            .await
    }

    async fn remove_block_device_task(&self, id: &str, container_path: &str) -> Result<Option<Plugged>> {
        check_path("container_path", container_path)?;
        let c = self.running(id)?;
        let mut state = c.devices.lock().await;
        self.changed.touch(id);
        let Some(entry) = state.plugged.iter().find(|p| p.path == container_path).cloned() else {
            return Ok(None);
        };
        let rest: Vec<Plugged> = state.plugged.iter().filter(|p| p.path != entry.path).cloned().collect();
        let rules = state.rules_with(c.engine.spec(), None, &rest);
        self.set_device_rules(&c, rules).await?;
        state.plugged = rest;
        let outcome = self
            .device_node(
                &c,
                NodeRequest {
                    op: NodeOp::Remove,
                    path: entry.path.clone(),
                    major: entry.dev.major,
                    minor: entry.dev.minor,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mount: entry.mount.clone(),
                },
            )
            .await?;
        info!(self.log, "block device removed";
              "container" => id, "guest_path" => entry.dev.guest_path(), "container_path" => &entry.path,
              "node" => format!("{outcome:?}"));
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_access() {
        for ok in ["/dev/xvda", "/data/disk"] {
            assert!(check_path("container_path", ok).is_ok(), "{ok}");
        }
        for bad in ["", "/", "dev/x", "/dev/../x"] {
            assert!(check_path("container_path", bad).is_err(), "{bad}");
        }
        assert_eq!(check_access("").unwrap(), "rwm");
        assert_eq!(check_access("wr").unwrap(), "rw");
        assert!(check_access("rx").is_err());
    }

    #[test]
    fn rules_keep_defaults_spec_nodes_and_plugged_devices_after_own_rules() {
        let state = DeviceState {
            own_rules: None,
            plugged: vec![Plugged {
                path: "/dev/xvdb".into(),
                dev: BlockDevView {
                    name: "sdb".into(),
                    major: 8,
                    minor: 16,
                },
                access: "rw".into(),
                mode: 0o660,
                uid: 0,
                gid: 0,
                mount: None,
            }],
        };
        let own = vec![allow_block(7, 1, "r")];
        let rules = state.effective_rules(&Spec::default(), Some(&own));
        assert_eq!(rules[0], own[0], "the new own rules first");
        assert!(
            rules.iter().any(|r| r.major() == Some(1) && r.minor() == Some(3)),
            "/dev/null stays allowed"
        );
        assert_eq!(
            rules.last().unwrap(),
            &allow_block(8, 16, "rw"),
            "the hot-plugged device last"
        );
    }
}
