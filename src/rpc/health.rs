//! `grpc.Health`: liveness and version, as Kata's agent answers them.

use std::sync::Arc;

use async_trait::async_trait;
use protocols::health::{
    health_check_response::ServingStatus, CheckRequest, HealthCheckResponse, VersionCheckResponse,
};
use ttrpc::r#async::TtrpcContext;

use super::{Ids, Rpc};

/// The Kata agent API version string that `Version` reports (Kata's `API_VERSION`).
pub(crate) const KATA_API_VERSION: &str = "0.0.1";

/// Serves `grpc.Health`.
pub(crate) struct HealthService {
    rpc: Arc<Rpc>,
}

impl HealthService {
    /// The service, logging through `rpc`.
    pub(crate) fn new(rpc: Arc<Rpc>) -> Self {
        HealthService { rpc }
    }
}

#[async_trait]
impl protocols::health_ttrpc::Health for HealthService {
    async fn check(&self, _ctx: &TtrpcContext, _req: CheckRequest) -> ttrpc::Result<HealthCheckResponse> {
        self.rpc
            .run("grpc.Health/Check", Ids::NONE, async {
                let mut r = HealthCheckResponse::new();
                r.status = ServingStatus::SERVING.into();
                Ok(r)
            })
            .await
    }

    async fn version(&self, _ctx: &TtrpcContext, _req: CheckRequest) -> ttrpc::Result<VersionCheckResponse> {
        self.rpc
            .run("grpc.Health/Version", Ids::NONE, async {
                let mut r = VersionCheckResponse::new();
                r.grpc_version = KATA_API_VERSION.to_string();
                r.agent_version = crate::AGENT_VERSION.to_string();
                Ok(r)
            })
            .await
    }
}
