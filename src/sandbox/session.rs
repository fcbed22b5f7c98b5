//! The agreement with the host: the API level and features agreed through
//! `pith.Negotiation/Hello`. Sandbox-wide (one sandbox, one host runtime); a
//! host that never negotiates is served at level 1.

use protocols::levels::{self, LevelRange, LEVEL_KATA};
use slog::{info, warn};

use super::{lock, Error, Result, Sandbox};

/// What the host and the agent agreed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Session {
    /// Level in force.
    pub level: u32,
    /// Features the agent offers at that level.
    pub features: Vec<String>,
    /// Host runtime that negotiated, empty when none did.
    pub host_name: String,
    /// Its version.
    pub host_version: String,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            level: LEVEL_KATA,
            features: levels::features_at(LEVEL_KATA).into_iter().map(String::from).collect(),
            host_name: String::new(),
            host_version: String::new(),
        }
    }
}

/// What a host asks for in `Hello`.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    /// The host runtime's name.
    pub host_name: String,
    /// Its version.
    pub host_version: String,
    /// The levels it speaks.
    pub range: LevelRange,
    /// Features it would like.
    pub wanted: Vec<String>,
}

/// The outcome of `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Agreement {
    /// The session now in force.
    pub session: Session,
    /// Wanted features the agent lacks at that level.
    pub missing: Vec<String>,
}

impl Sandbox {
    /// The session in force.
    pub(crate) fn session(&self) -> Session {
        lock(&self.session).clone()
    }

    /// The API level in force (for status messages). Cheap.
    pub(crate) fn level(&self) -> u32 {
        lock(&self.session).level
    }

    /// Agrees on the highest level both sides speak; ranges that do not meet
    /// leave the session as it was.
    pub(crate) fn negotiate(&self, hello: Hello) -> Result<Agreement> {
        let level = levels::negotiate(hello.range, LevelRange::AGENT).map_err(|e| {
            warn!(self.log, "negotiation failed: {e}";
                  "host" => &hello.host_name, "host_version" => &hello.host_version);
            Error::FailedPrecondition(e.to_string())
        })?;
        let missing = levels::missing_features(level, &hello.wanted);
        info!(self.log, "negotiated API level {level}";
              "host" => &hello.host_name, "host_version" => &hello.host_version,
              "host_range" => hello.range.to_string(), "missing_features" => missing.join(","));
        let session = Session {
            level,
            features: levels::features_at(level).into_iter().map(String::from).collect(),
            host_name: hello.host_name,
            host_version: hello.host_version,
        };
        *lock(&self.session) = session.clone();
        Ok(Agreement { session, missing })
    }

    /// Refuses `what` below API level `needed`.
    pub(crate) fn require_level(&self, needed: u32, what: &str) -> Result<()> {
        levels::require(self.level(), needed, what).map_err(Error::FailedPrecondition)
    }
}
