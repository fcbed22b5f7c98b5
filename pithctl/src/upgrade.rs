//! `pithctl upgrade`: copy a pith-agent binary into the guest with CopyFile,
//! then hand the running agent over to it (`pith.Lifecycle/Upgrade`, API
//! level 4). The connection used is the same before and after: the agent
//! keeps it across the upgrade.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use protobuf::Message;
use protocols::agent::CopyFileRequest;
use protocols::levels::{LEVEL_LIVE_UPGRADE, MAX_LEVEL};
use protocols::pith::{HelloRequest, HelloResponse, UpgradeRequest, UpgradeResponse};
use ttrpc::proto::Request;
use ttrpc::r#async::Client;

/// Bytes of the binary per CopyFile request.
const CHUNK: usize = 1 << 20;

/// Where `pithctl upgrade` puts the binary in the guest by default (a root
/// CopyFile writes under).
pub const DEFAULT_GUEST_PATH: &str = "/run/pith/upgrade/pith-agent";

/// One unary call, its status turned into an error naming the method.
pub async fn call<Req: Message, Resp: Message>(
    c: &Client,
    svc: &str,
    method: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp> {
    let mut r = Request::new();
    r.service = svc.into();
    r.method = method.into();
    r.payload = req.write_to_bytes()?;
    r.timeout_nano = timeout.as_nanos() as i64;
    let resp = c.request(r).await.map_err(|e| match e {
        ttrpc::Error::RpcStatus(s) => anyhow!("{svc}/{method} failed: {:?}: {}", s.code(), s.message),
        other => anyhow!("{svc}/{method} failed: {other}"),
    })?;
    Ok(Resp::parse_from_bytes(&resp.payload)?)
}

/// Agrees on a level that has live upgrade.
pub async fn negotiate(c: &Client, timeout: Duration) -> Result<HelloResponse> {
    let mut h = HelloRequest::new();
    h.host_name = "pithctl".into();
    h.host_version = crate::VERSION.into();
    (h.min_level, h.max_level) = (LEVEL_LIVE_UPGRADE, MAX_LEVEL);
    h.wanted_features = vec!["live-upgrade".into()];
    call(c, "pith.Negotiation", "Hello", &h, timeout).await
}

/// Copies the file at `local` to `guest_path` in the guest (executable).
pub async fn copy_in(c: &Client, local: &Path, guest_path: &str, timeout: Duration) -> Result<()> {
    let data = std::fs::read(local).with_context(|| format!("read {}", local.display()))?;
    if data.is_empty() {
        bail!("{} is empty", local.display());
    }
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        let mut r = CopyFileRequest::new();
        r.path = guest_path.into();
        r.file_size = data.len() as i64;
        r.file_mode = libc::S_IFREG | 0o755;
        r.dir_mode = 0o755;
        r.uid = -1;
        r.gid = -1;
        r.offset = (i * CHUNK) as i64;
        r.data = chunk.to_vec();
        let _: protobuf::well_known_types::empty::Empty = call(c, "grpc.AgentService", "CopyFile", &r, timeout).await?;
    }
    Ok(())
}

/// Hands the agent over to the binary at `guest_path`; the answer comes from
/// the agent that serves afterwards (the new one, or the old one again).
pub async fn upgrade(c: &Client, guest_path: &str, ready: Duration, timeout: Duration) -> Result<UpgradeResponse> {
    let mut r = UpgradeRequest::new();
    r.binary = guest_path.into();
    r.ready_timeout_ms = ready.as_millis().min(u32::MAX as u128) as u32;
    // The call lasts the check, the pause and the new binary's start.
    call(c, "pith.Lifecycle", "Upgrade", &r, timeout + ready).await
}

/// The answer as pithctl prints it.
pub fn describe(r: &UpgradeResponse) -> String {
    serde_json::json!({
        "oldVersion": r.old_version, "newVersion": r.new_version, "pauseUs": r.pause_us,
        "callsCarried": r.calls_carried, "connectionsCarried": r.connections_carried,
    })
    .to_string()
}
