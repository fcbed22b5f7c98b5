//! Facts about this agent process that the RPC handlers report: when it
//! started, where it listens, whether it is the guest's PID 1. (What the agent
//! agreed with the host is sandbox state: `sandbox::session`.)

use std::time::Instant;

/// Facts about this agent process.
pub(crate) struct AgentContext {
    /// When the agent started.
    pub started: Instant,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// Whether it runs as PID 1.
    pub init_mode: bool,
}

impl AgentContext {
    /// The facts of a process that started now.
    pub(crate) fn new(listen: Vec<String>, init_mode: bool) -> AgentContext {
        AgentContext {
            started: Instant::now(),
            listen,
            init_mode,
        }
    }
}
