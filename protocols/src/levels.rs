//! API levels and the rules for agreeing on one. Every level constant and every
//! compatibility rule of pith's protocol lives here, so that the agent, `pithctl`
//! and the tests all read the same table.
//!
//! Level 1 is the Kata Containers agent protocol as it is: a host that never
//! negotiates is served at level 1 forever. Each later level only adds behaviour.

use std::fmt;

/// The Kata-compatible baseline: `grpc.AgentService` and `grpc.Health`.
pub const LEVEL_KATA: u32 = 1;
/// pith's first extension level: the `pith.Introspection` service.
pub const LEVEL_INTROSPECTION: u32 = 2;
/// Block device hot-plug into running containers: the `pith.Devices` service.
pub const LEVEL_BLOCK_HOTPLUG: u32 = 3;

/// Live upgrade of the agent's binary in place: the `pith.Lifecycle` service.
pub const LEVEL_LIVE_UPGRADE: u32 = 4;

/// Lowest level this build of the protocol serves.
pub const MIN_LEVEL: u32 = LEVEL_KATA;
/// Highest level this build of the protocol serves.
pub const MAX_LEVEL: u32 = LEVEL_LIVE_UPGRADE;

/// A named capability and the level that brings it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// Name a host asks for in `HelloRequest.wanted_features`.
    pub name: &'static str,
    /// First API level at which the feature is offered.
    pub since: u32,
}

/// Every feature, in the order they were added. Never remove or rename an entry.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "kata-agent-api",
        since: LEVEL_KATA,
    },
    Feature {
        name: "negotiation",
        since: LEVEL_KATA,
    },
    Feature {
        name: "introspection",
        since: LEVEL_INTROSPECTION,
    },
    Feature {
        name: "block-hotplug",
        since: LEVEL_BLOCK_HOTPLUG,
    },
    Feature {
        name: "live-upgrade",
        since: LEVEL_LIVE_UPGRADE,
    },
];

/// An inclusive range of API levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelRange {
    /// Lowest level, inclusive.
    pub min: u32,
    /// Highest level, inclusive.
    pub max: u32,
}

impl LevelRange {
    /// The range this agent serves.
    pub const AGENT: LevelRange = LevelRange {
        min: MIN_LEVEL,
        max: MAX_LEVEL,
    };

    /// Reads a host's range from the wire, where unset fields are 0: a missing
    /// `min` means 1, a missing `max` means `min` (a host that names one level).
    pub fn from_wire(min: u32, max: u32) -> LevelRange {
        let min = min.max(LEVEL_KATA);
        let max = if max == 0 { min } else { max };
        LevelRange { min, max }
    }
}

impl fmt::Display for LevelRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.min, self.max)
    }
}

/// Why a host and the agent could not agree on a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationError {
    /// The host's range is empty (`min > max`).
    EmptyRange(LevelRange),
    /// The two ranges share no level.
    Disjoint {
        /// What the host asked for.
        host: LevelRange,
        /// What the agent serves.
        agent: LevelRange,
    },
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::EmptyRange(r) => {
                write!(f, "host API level range {r} is empty (min > max)")
            }
            NegotiationError::Disjoint { host, agent } => {
                write!(f, "no common API level: host supports {host}, agent supports {agent}")
            }
        }
    }
}

impl std::error::Error for NegotiationError {}

/// Picks the highest level both sides support.
pub fn negotiate(host: LevelRange, agent: LevelRange) -> Result<u32, NegotiationError> {
    if host.min > host.max {
        return Err(NegotiationError::EmptyRange(host));
    }
    let lo = host.min.max(agent.min);
    let hi = host.max.min(agent.max);
    if lo > hi {
        return Err(NegotiationError::Disjoint { host, agent });
    }
    Ok(hi)
}

/// Names of the features offered at `level`.
pub fn features_at(level: u32) -> Vec<&'static str> {
    FEATURES.iter().filter(|f| f.since <= level).map(|f| f.name).collect()
}

/// Splits `wanted` into the names not offered at `level` (unknown names included).
pub fn missing_features(level: u32, wanted: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !FEATURES.iter().any(|f| f.name == w.as_str() && f.since <= level))
        .cloned()
        .collect()
}

/// Checks that a call needing `needed` may run in a session at `current`.
pub fn require(current: u32, needed: u32, what: &str) -> Result<(), String> {
    if current >= needed {
        Ok(())
    } else {
        Err(format!(
            "{what} needs API level {needed}, the session is at level {current}: \
             call pith.Negotiation/Hello with a range that reaches {needed} first"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_ranges_pick_highest_common_level() {
        let agent = LevelRange { min: 1, max: 4 };
        assert_eq!(negotiate(LevelRange { min: 2, max: 9 }, agent), Ok(4));
        assert_eq!(negotiate(LevelRange { min: 1, max: 2 }, agent), Ok(2));
        assert_eq!(negotiate(LevelRange { min: 3, max: 3 }, agent), Ok(3));
    }

    #[test]
    fn disjoint_ranges_name_both() {
        let agent = LevelRange { min: 1, max: 2 };
        let err = negotiate(LevelRange { min: 5, max: 7 }, agent).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no common API level: host supports [5, 7], agent supports [1, 2]"
        );
    }

    #[test]
    fn empty_host_range_is_refused() {
        let err = negotiate(LevelRange { min: 3, max: 2 }, LevelRange::AGENT).unwrap_err();
        assert_eq!(err, NegotiationError::EmptyRange(LevelRange { min: 3, max: 2 }));
    }

    #[test]
    fn wire_defaults() {
        assert_eq!(LevelRange::from_wire(0, 0), LevelRange { min: 1, max: 1 });
        assert_eq!(LevelRange::from_wire(2, 0), LevelRange { min: 2, max: 2 });
        assert_eq!(LevelRange::from_wire(0, 3), LevelRange { min: 1, max: 3 });
    }

    #[test]
    fn features_grow_with_level() {
        assert_eq!(features_at(1), vec!["kata-agent-api", "negotiation"]);
        assert!(features_at(2).contains(&"introspection"));
        let wanted = vec!["introspection".to_string(), "teleport".to_string()];
        assert_eq!(missing_features(1, &wanted), wanted);
        assert_eq!(missing_features(2, &wanted), vec!["teleport".to_string()]);
    }

    #[test]
    fn require_names_levels() {
        assert!(require(2, 2, "Status").is_ok());
        let msg = require(1, 2, "pith.Introspection/Status").unwrap_err();
        assert!(msg.contains("needs API level 2") && msg.contains("at level 1"), "{msg}");
    }

    #[test]
    fn feature_levels_are_within_range_and_unique() {
        for (i, f) in FEATURES.iter().enumerate() {
            assert!(f.since >= MIN_LEVEL && f.since <= MAX_LEVEL, "{f:?}");
            assert!(FEATURES[..i].iter().all(|g| g.name != f.name), "duplicate {}", f.name);
        }
    }
}
