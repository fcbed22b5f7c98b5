//! `pith.Negotiation/Hello`: agree on an API level with a host that knows pith.

use std::sync::Arc;

use async_trait::async_trait;
use protocols::levels::{self, LevelRange};
use protocols::pith::{HelloRequest, HelloResponse};
use slog::{info, warn, Logger};
use ttrpc::r#async::TtrpcContext;

use super::status;
use crate::session::{AgentContext, Session};

/// Serves `pith.Negotiation`.
pub struct NegotiationService {
    ctx: Arc<AgentContext>,
    log: Logger,
}

impl NegotiationService {
    /// A service that records the agreed level in `ctx`.
    pub fn new(ctx: Arc<AgentContext>, log: &Logger) -> Self {
        NegotiationService {
            ctx,
            log: log.new(slog::o!("subsystem" => "negotiation")),
        }
    }
}

#[async_trait]
impl protocols::pith_ttrpc::Negotiation for NegotiationService {
    async fn hello(&self, _ctx: &TtrpcContext, req: HelloRequest) -> ttrpc::Result<HelloResponse> {
        let host = LevelRange::from_wire(req.min_level, req.max_level);
        let level = levels::negotiate(host, LevelRange::AGENT).map_err(|e| {
            warn!(self.log, "negotiation failed: {e}";
                  "host" => &req.host_name, "host_version" => &req.host_version);
            status(ttrpc::Code::FAILED_PRECONDITION, e)
        })?;
        let missing = levels::missing_features(level, &req.wanted_features);
        info!(self.log, "negotiated API level {level}";
              "host" => &req.host_name, "host_version" => &req.host_version,
              "host_range" => host.to_string(), "missing_features" => missing.join(","));
        self.ctx.set_session(Session {
            level,
            host_name: req.host_name.clone(),
            host_version: req.host_version.clone(),
        });
        let mut r = HelloResponse::new();
        r.level = level;
        r.agent_version = crate::AGENT_VERSION.to_string();
        r.features = levels::features_at(level).into_iter().map(String::from).collect();
        r.missing_features = missing;
        r.agent_min_level = levels::MIN_LEVEL;
        r.agent_max_level = levels::MAX_LEVEL;
        Ok(r)
    }
}
