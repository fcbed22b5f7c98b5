//! `pith.Introspection/Status`: the agent's view of itself, from API level 2.

use std::sync::Arc;

use async_trait::async_trait;
use protocols::levels::{self, LEVEL_INTROSPECTION};
use protocols::pith::{StatusRequest, StatusResponse};
use ttrpc::r#async::TtrpcContext;

use super::status;
use crate::session::AgentContext;

/// Serves `pith.Introspection`.
pub struct IntrospectionService {
    ctx: Arc<AgentContext>,
}

impl IntrospectionService {
    /// A service reporting on `ctx`.
    pub fn new(ctx: Arc<AgentContext>) -> Self {
        IntrospectionService { ctx }
    }
}

#[async_trait]
impl protocols::pith_ttrpc::Introspection for IntrospectionService {
    async fn status(&self, _ctx: &TtrpcContext, _req: StatusRequest) -> ttrpc::Result<StatusResponse> {
        let session = self.ctx.session();
        levels::require(session.level, LEVEL_INTROSPECTION, "pith.Introspection/Status")
            .map_err(|m| status(ttrpc::Code::FAILED_PRECONDITION, m))?;
        let mut r = StatusResponse::new();
        r.agent_version = crate::AGENT_VERSION.to_string();
        r.uptime_ms = self.ctx.started.elapsed().as_millis() as u64;
        r.listen_addresses = self.ctx.listen.clone();
        r.level = session.level;
        r.host_name = session.host_name;
        r.host_version = session.host_version;
        r.pid = std::process::id();
        r.init_mode = self.ctx.init_mode;
        Ok(r)
    }
}
