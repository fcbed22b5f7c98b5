//! `pith.Introspection/Status`: the agent's view of itself, from API level 2.

use std::sync::Arc;

use async_trait::async_trait;
use protocols::levels::LEVEL_INTROSPECTION;
use protocols::pith::{StatusRequest, StatusResponse};
use ttrpc::r#async::TtrpcContext;

use super::{Ids, Rpc};

/// Serves `pith.Introspection`.
pub(crate) struct IntrospectionService {
    rpc: Arc<Rpc>,
}

impl IntrospectionService {
    /// A service reporting on the agent of `rpc`.
    pub(crate) fn new(rpc: Arc<Rpc>) -> Self {
        IntrospectionService { rpc }
    }
}

#[async_trait]
impl protocols::pith_ttrpc::Introspection for IntrospectionService {
    async fn status(&self, _ctx: &TtrpcContext, _req: StatusRequest) -> ttrpc::Result<StatusResponse> {
        const METHOD: &str = "pith.Introspection/Status";
        self.rpc
            .run(METHOD, Ids::NONE, async {
                self.rpc.sandbox.require_level(LEVEL_INTROSPECTION, METHOD)?;
                let session = self.rpc.sandbox.session();
                let ctx = &self.rpc.ctx;
                let mut r = StatusResponse::new();
                r.agent_version = crate::AGENT_VERSION.to_string();
                r.uptime_ms = ctx.started.elapsed().as_millis() as u64;
                r.listen_addresses = ctx.listen.clone();
                r.level = session.level;
                r.host_name = session.host_name;
                r.host_version = session.host_version;
                r.pid = std::process::id();
                r.init_mode = ctx.init_mode;
                let view = self.rpc.sandbox.view().await;
                r.sandbox_json = serde_json::to_string(&view)
                    .map_err(|e| crate::sandbox::Error::Internal(format!("encode the sandbox's state: {e}")))?;
                Ok(r)
            })
            .await
    }
}
