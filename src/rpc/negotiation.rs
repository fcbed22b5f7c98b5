//! `pith.Negotiation/Hello`: agree on an API level with a host that knows pith.

use std::sync::Arc;

use async_trait::async_trait;
use protocols::levels::{self, LevelRange};
use protocols::pith::{HelloRequest, HelloResponse};
use ttrpc::r#async::TtrpcContext;

use super::{Ids, Rpc};
use crate::sandbox::session::Hello;

/// Serves `pith.Negotiation`.
pub(crate) struct NegotiationService {
    rpc: Arc<Rpc>,
}

impl NegotiationService {
    /// A service that records the agreement in the sandbox of `rpc`.
    pub(crate) fn new(rpc: Arc<Rpc>) -> Self {
        NegotiationService { rpc }
    }
}

#[async_trait]
impl protocols::pith_ttrpc::Negotiation for NegotiationService {
    async fn hello(&self, _ctx: &TtrpcContext, req: HelloRequest) -> ttrpc::Result<HelloResponse> {
        self.rpc
            .run("pith.Negotiation/Hello", Ids::NONE, async {
                let agreed = self.rpc.sandbox.negotiate(Hello {
                    host_name: req.host_name.clone(),
                    host_version: req.host_version.clone(),
                    range: LevelRange::from_wire(req.min_level, req.max_level),
                    wanted: req.wanted_features.clone(),
                })?;
                let mut r = HelloResponse::new();
                r.level = agreed.session.level;
                r.agent_version = crate::AGENT_VERSION.to_string();
                r.features = agreed.session.features;
                r.missing_features = agreed.missing;
                r.agent_min_level = levels::MIN_LEVEL;
                r.agent_max_level = levels::MAX_LEVEL;
                Ok(r)
            })
            .await
    }
}
