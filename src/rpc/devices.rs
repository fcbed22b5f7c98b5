//! `pith.Devices`: hot-plug block devices into running containers, from API level 3.
//!
//! Add: wait for the device the host plugged, make its node inside the
//! container (helper process in the container's mount namespace), then allow
//! it in the container's device cgroup. Remove: deny it, then delete the node.
//! The devices each container was given are remembered here, so that every
//! cgroup update carries all of them.

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;

use async_trait::async_trait;
use protocols::levels::{self, LEVEL_BLOCK_HOTPLUG};
use protocols::pith::{AddBlockDeviceRequest, BlockDeviceResponse, RemoveBlockDeviceRequest};
use slog::{info, Logger};
use ttrpc::r#async::TtrpcContext;

use super::status;
use crate::device::node::{NodeError, NodeMount, NodeOp, NodeOutcome, NodeRequest};
use crate::device::{BlockDev, DeviceAddr, DeviceError, Devices};
use crate::sandbox::hotplug::allow_block;
use crate::sandbox::{Sandbox, SandboxError};
use crate::session::AgentContext;

/// A device given to a container.
#[derive(Debug, Clone)]
struct Plugged {
    path: String,
    dev: BlockDev,
    access: String,
    mount: Option<NodeMount>,
}

/// Serves `pith.Devices`.
pub struct DevicesService {
    ctx: Arc<AgentContext>,
    sandbox: Arc<Sandbox>,
    devices: Arc<Devices>,
    /// Per container id, the devices it was given, in order. Held across a whole
    /// add or remove so that two of them never interleave.
    plugged: tokio::sync::Mutex<HashMap<String, Vec<Plugged>>>,
    log: Logger,
}

impl DevicesService {
    /// A service plugging `devices` into containers of `sandbox`.
    pub fn new(ctx: Arc<AgentContext>, sandbox: Arc<Sandbox>, devices: Arc<Devices>, log: &Logger) -> Self {
        DevicesService {
            ctx,
            sandbox,
            devices,
            plugged: tokio::sync::Mutex::new(HashMap::new()),
            log: log.new(slog::o!("subsystem" => "devices")),
        }
    }

    fn gate(&self, what: &str) -> ttrpc::Result<()> {
        levels::require(self.ctx.session().level, LEVEL_BLOCK_HOTPLUG, what)
            .map_err(|m| status(ttrpc::Code::FAILED_PRECONDITION, m))
    }
}

fn sandbox_err(e: SandboxError) -> ttrpc::Error {
    status(super::agent::code_of(&e), e)
}

fn device_err(e: DeviceError, container: &str) -> ttrpc::Error {
    let code = match e {
        DeviceError::Timeout { .. } => ttrpc::Code::DEADLINE_EXCEEDED,
        DeviceError::BadAddress { .. } | DeviceError::BadType(_) => ttrpc::Code::INVALID_ARGUMENT,
        DeviceError::Io { .. } => ttrpc::Code::INTERNAL,
    };
    status(code, format!("hot-plug into container {container:?}: {e}"))
}

fn node_err(e: NodeError) -> ttrpc::Error {
    match e {
        NodeError::Conflict(m) => status(ttrpc::Code::ALREADY_EXISTS, m),
        NodeError::Failed(m) => status(ttrpc::Code::INTERNAL, m),
    }
}

fn invalid(m: impl ToString) -> ttrpc::Error {
    status(ttrpc::Code::INVALID_ARGUMENT, m)
}

/// An absolute, normal path that is not `/` itself.
fn check_path(p: &str) -> ttrpc::Result<()> {
    let path = Path::new(p);
    let ok = path.is_absolute()
        && path.components().count() > 1
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "container_path {p:?}: want an absolute path without . or .."
        )))
    }
}

/// `rwm` letters, each at most once, in that order; empty means `rwm`.
fn check_access(a: &str) -> ttrpc::Result<String> {
    if a.is_empty() {
        return Ok("rwm".into());
    }
    if !a.chars().all(|c| "rwm".contains(c)) {
        return Err(invalid(format!("access {a:?}: want letters of \"rwm\"")));
    }
    Ok("rwm".chars().filter(|c| a.contains(*c)).collect())
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

/// The mount AddBlockDevice asks for, if any.
fn mount_of(req: &AddBlockDeviceRequest) -> ttrpc::Result<Option<NodeMount>> {
    if req.mount_path.is_empty() {
        return Ok(None);
    }
    check_path(&req.mount_path)?;
    if req.fstype.is_empty() {
        return Err(invalid(format!("mount_path {:?} without fstype", req.mount_path)));
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

impl DevicesService {
    async fn run_node(&self, c: &Arc<crate::sandbox::Container>, req: NodeRequest) -> ttrpc::Result<NodeOutcome> {
        let (sandbox, c) = (self.sandbox.clone(), c.clone());
        tokio::task::spawn_blocking(move || sandbox.device_node(&c, &req))
            .await
            .map_err(|e| status(ttrpc::Code::INTERNAL, format!("worker thread: {e}")))?
            .map_err(node_err)
    }

    fn rules(list: &[Plugged]) -> Vec<oci_spec::runtime::LinuxDeviceCgroup> {
        list.iter()
            .map(|p| allow_block(p.dev.major, p.dev.minor, &p.access))
            .collect()
    }

    /// Forgets containers that are gone, so a new container reusing an id starts clean.
    fn prune(&self, map: &mut HashMap<String, Vec<Plugged>>) {
        let live = self.sandbox.container_ids();
        map.retain(|id, _| live.contains(id));
    }
}

#[async_trait]
impl protocols::pith_ttrpc::Devices for DevicesService {
    async fn add_block_device(
        &self,
        _ctx: &TtrpcContext,
        req: AddBlockDeviceRequest,
    ) -> ttrpc::Result<BlockDeviceResponse> {
        self.gate("pith.Devices/AddBlockDevice")?;
        let id = req.container_id.as_str();
        check_path(&req.container_path)?;
        let access = check_access(&req.access)?;
        let mount = mount_of(&req)?;
        let addr = DeviceAddr::parse(&req.type_, &req.address).map_err(|e| device_err(e, id))?;
        let mode = if req.mode == 0 { 0o660 } else { req.mode };
        if mode & !0o7777 != 0 {
            return Err(invalid(format!("mode {mode:o}: want permission bits only")));
        }
        // Fail fast for a container that cannot take the device.
        self.sandbox.running(id).map_err(sandbox_err)?;
        let started = std::time::Instant::now();
        let dev = self.devices.wait_block(&addr).await.map_err(|e| device_err(e, id))?;
        let waited = started.elapsed();

        let mut map = self.plugged.lock().await;
        self.prune(&mut map);
        let c = self.sandbox.running(id).map_err(sandbox_err)?;
        let outcome = self
            .run_node(
                &c,
                NodeRequest {
                    op: NodeOp::Add,
                    path: req.container_path.clone(),
                    major: dev.major,
                    minor: dev.minor,
                    mode,
                    uid: req.uid,
                    gid: req.gid,
                    mount: mount.clone(),
                },
            )
            .await?;
        let entry = Plugged {
            path: req.container_path.clone(),
            dev: dev.clone(),
            access,
            mount,
        };
        let mut list = map.get(id).cloned().unwrap_or_default();
        list.retain(|p| p.path != entry.path);
        list.push(entry.clone());
        let sandbox = self.sandbox.clone();
        let (cid, rules) = (id.to_string(), Self::rules(&list));
        let set = tokio::task::spawn_blocking(move || sandbox.set_device_rules(&cid, &rules))
            .await
            .map_err(|e| status(ttrpc::Code::INTERNAL, format!("worker thread: {e}")))?;
        if let Err(e) = set {
            if outcome == NodeOutcome::Created {
                let _ = self
                    .run_node(
                        &c,
                        NodeRequest {
                            op: NodeOp::Remove,
                            path: entry.path.clone(),
                            major: dev.major,
                            minor: dev.minor,
                            mode,
                            uid: req.uid,
                            gid: req.gid,
                            mount: entry.mount.clone(),
                        },
                    )
                    .await;
            }
            return Err(sandbox_err(e));
        }
        map.insert(id.to_string(), list);
        info!(self.log, "block device added";
              "container" => id, "device" => addr.to_string(), "guest_path" => dev.guest_path(),
              "major" => dev.major, "minor" => dev.minor, "container_path" => &entry.path,
              "node" => format!("{outcome:?}"), "waited_ms" => waited.as_millis() as u64);
        Ok(response(&entry))
    }

    async fn remove_block_device(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveBlockDeviceRequest,
    ) -> ttrpc::Result<BlockDeviceResponse> {
        self.gate("pith.Devices/RemoveBlockDevice")?;
        let id = req.container_id.as_str();
        check_path(&req.container_path)?;
        let mut map = self.plugged.lock().await;
        self.prune(&mut map);
        let c = self.sandbox.running(id).map_err(sandbox_err)?;
        let list = map.get(id).cloned().unwrap_or_default();
        let Some(entry) = list.iter().find(|p| p.path == req.container_path).cloned() else {
            // Nothing hot-plugged there: nothing to undo.
            let mut r = BlockDeviceResponse::new();
            r.container_path = req.container_path.clone();
            return Ok(r);
        };
        let rest: Vec<Plugged> = list.into_iter().filter(|p| p.path != entry.path).collect();
        // Deny first, then delete the node: never a node the cgroup still allows after we answer.
        let sandbox = self.sandbox.clone();
        let (cid, rules) = (id.to_string(), Self::rules(&rest));
        tokio::task::spawn_blocking(move || sandbox.set_device_rules(&cid, &rules))
            .await
            .map_err(|e| status(ttrpc::Code::INTERNAL, format!("worker thread: {e}")))?
            .map_err(sandbox_err)?;
        map.insert(id.to_string(), rest);
        let outcome = self
            .run_node(
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
        Ok(response(&entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_access() {
        for ok in ["/dev/xvda", "/data/disk"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/", "dev/x", "/dev/../x"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert_eq!(check_access("").unwrap(), "rwm");
        assert_eq!(check_access("wr").unwrap(), "rw");
        assert!(check_access("rx").is_err());
    }
}
