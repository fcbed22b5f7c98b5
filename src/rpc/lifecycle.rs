//! `pith.Lifecycle`: the agent's binary replaced in place, from API level 4.
//! The work is `crate::upgrade`'s; this converts messages, and builds the
//! answer the next agent writes.

use std::sync::Arc;

use async_trait::async_trait;
use protobuf::Message as _;
use protocols::levels::LEVEL_LIVE_UPGRADE;
use protocols::pith::{UpgradeRequest, UpgradeResponse};
use ttrpc::r#async::TtrpcContext;

use super::{Ids, Rpc};
use crate::sandbox::Error;
use crate::upgrade::resume::Done;
use crate::upgrade::{UpgradeError, Upgrader, DEFAULT_READY};

/// The method's name, as logs and statuses show it.
const METHOD: &str = "pith.Lifecycle/Upgrade";

/// Serves `pith.Lifecycle`.
pub(crate) struct LifecycleService {
    rpc: Arc<Rpc>,
    upgrader: Arc<Upgrader>,
}

impl LifecycleService {
    /// A service upgrading the agent of `rpc` with `upgrader`.
    pub(crate) fn new(rpc: Arc<Rpc>, upgrader: Arc<Upgrader>) -> Self {
        LifecycleService { rpc, upgrader }
    }
}

#[async_trait]
impl protocols::pith_ttrpc::Lifecycle for LifecycleService {
    async fn upgrade(&self, _ctx: &TtrpcContext, req: UpgradeRequest) -> ttrpc::Result<UpgradeResponse> {
        self.rpc
            .run(METHOD, Ids::NONE, async {
                self.rpc.sandbox.require_level(LEVEL_LIVE_UPGRADE, METHOD)?;
                let ready = match req.ready_timeout_ms {
                    0 => DEFAULT_READY,
                    ms => std::time::Duration::from_millis(ms.into()),
                };
                // On success this process is the new binary, which answers.
                match self.upgrader.upgrade(&req.binary, ready).await {
                    Err(e) => Err::<UpgradeResponse, Error>(e.into()),
                }
            })
            .await
    }
}

/// The answer to the upgrade call that brought this agent (written by it
/// on the connection the call came on), at API `level`.
pub(crate) fn answer(outcome: Result<Done, UpgradeError>, level: u32) -> ttrpc::proto::Response {
    let mut resp = ttrpc::proto::Response::new();
    match outcome {
        Ok(d) => {
            let mut r = UpgradeResponse::new();
            r.old_version = d.from_version;
            r.new_version = crate::AGENT_VERSION.into();
            r.pause_us = d.paused_for.as_micros() as u64;
            r.calls_carried = d.calls as u32;
            r.connections_carried = d.conns as u32;
            resp.payload = r.write_to_bytes().unwrap_or_default();
            resp.status = protobuf::MessageField::some(ttrpc::get_status(ttrpc::Code::OK, ""));
        }
        Err(e) => {
            let call = super::status::Call { method: METHOD, level };
            resp.status = protobuf::MessageField::some(super::status::status(&Error::Upgrade(e), call));
        }
    }
    resp
}
