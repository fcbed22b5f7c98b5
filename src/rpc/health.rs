//! `grpc.Health`: liveness and version, as Kata's agent answers them.

use async_trait::async_trait;
use protocols::health::{
    health_check_response::ServingStatus, CheckRequest, HealthCheckResponse, VersionCheckResponse,
};
use ttrpc::r#async::TtrpcContext;

/// The Kata agent API version string that `Version` reports (Kata's `API_VERSION`).
pub const KATA_API_VERSION: &str = "0.0.1";

/// Serves `grpc.Health`.
pub struct HealthService;

#[async_trait]
impl protocols::health_ttrpc::Health for HealthService {
    async fn check(&self, _ctx: &TtrpcContext, _req: CheckRequest) -> ttrpc::Result<HealthCheckResponse> {
        let mut r = HealthCheckResponse::new();
        r.status = ServingStatus::SERVING.into();
        Ok(r)
    }

    async fn version(&self, _ctx: &TtrpcContext, _req: CheckRequest) -> ttrpc::Result<VersionCheckResponse> {
        let mut r = VersionCheckResponse::new();
        r.grpc_version = KATA_API_VERSION.to_string();
        r.agent_version = crate::AGENT_VERSION.to_string();
        Ok(r)
    }
}
