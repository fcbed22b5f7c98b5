//! What the agent knows about itself and about the host that drives it: the API
//! level agreed through `pith.Negotiation/Hello`. The level is agent-wide (one
//! sandbox, one host runtime); a host that never negotiates is served at level 1.

use std::sync::Mutex;
use std::time::Instant;

use protocols::levels::LEVEL_KATA;

/// The host side of the agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Level in force.
    pub level: u32,
    /// Host runtime that negotiated, empty when none did.
    pub host_name: String,
    /// Its version.
    pub host_version: String,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            level: LEVEL_KATA,
            host_name: String::new(),
            host_version: String::new(),
        }
    }
}

/// Facts about this agent process, shared by every RPC handler.
pub struct AgentContext {
    /// When the agent started.
    pub started: Instant,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// Whether it runs as PID 1.
    pub init_mode: bool,
    session: Mutex<Session>,
}

impl AgentContext {
    /// A context with no negotiated session.
    pub fn new(listen: Vec<String>, init_mode: bool) -> AgentContext {
        AgentContext {
            started: Instant::now(),
            listen,
            init_mode,
            session: Mutex::new(Session::default()),
        }
    }

    /// The session in force.
    pub fn session(&self) -> Session {
        self.session.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the session after a successful negotiation.
    pub fn set_session(&self, s: Session) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}
