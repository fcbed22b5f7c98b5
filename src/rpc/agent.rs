//! `grpc.AgentService`. Every method is declared by the generated trait; the ones
//! not overridden here answer `UNIMPLEMENTED` naming the method (see
//! `server::dispatch`). Later capabilities override them one by one.

/// Serves `grpc.AgentService`.
pub struct AgentServiceImpl;

impl protocols::agent_ttrpc::AgentService for AgentServiceImpl {}
