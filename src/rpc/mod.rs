//! RPC handlers, one module per service, and the table of every service the
//! agent serves.

pub mod agent;
pub mod devices;
pub mod guest;
pub mod health;
pub mod introspection;
pub mod negotiation;
#[cfg(feature = "net")]
pub mod network;
pub mod ps;
pub mod stats;
pub mod stdio_read;

use std::collections::HashMap;
use std::sync::Arc;

use slog::Logger;
use ttrpc::r#async::Service;

use crate::session::AgentContext;

/// Every service, keyed by fully qualified name, ready for the dispatcher.
pub fn services(
    ctx: Arc<AgentContext>,
    sandbox: Arc<crate::sandbox::Sandbox>,
    devices: Arc<crate::device::Devices>,
    log: &Logger,
) -> HashMap<String, Service> {
    let mut all = HashMap::new();
    all.extend(protocols::health_ttrpc::create_health(Arc::new(health::HealthService)));
    all.extend(protocols::agent_ttrpc::create_agent_service(Arc::new(
        agent::AgentServiceImpl::new(sandbox.clone(), devices.clone()),
    )));
    all.extend(protocols::pith_ttrpc::create_devices(Arc::new(
        devices::DevicesService::new(ctx.clone(), sandbox, devices, log),
    )));
    all.extend(protocols::pith_ttrpc::create_negotiation(Arc::new(
        negotiation::NegotiationService::new(ctx.clone(), log),
    )));
    all.extend(protocols::pith_ttrpc::create_introspection(Arc::new(
        introspection::IntrospectionService::new(ctx),
    )));
    all
}

/// A ttrpc error status.
pub fn status(code: ttrpc::Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}
