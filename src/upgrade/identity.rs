//! What a binary is and what it reads (`pith-agent --upgrade-check`), and
//! the rules for letting one binary take over from another.

use serde::{Deserialize, Serialize};

/// The hand-over format this build writes and reads (`handover.rs`).
pub(crate) const HANDOVER_VERSION: u32 = 1;

/// A binary's answer to `--upgrade-check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    /// `pith-agent`'s version.
    pub agent_version: String,
    /// The persist format it writes; it reads every file whose
    /// `min_reader_version` is at most this.
    pub persist_version: u32,
    /// The oldest reader of what it writes.
    pub min_reader_version: u32,
    /// The hand-over format it reads and writes.
    pub handover_version: u32,
}

impl Identity {
    /// This build's.
    pub(crate) fn ours() -> Identity {
        Identity {
            agent_version: crate::AGENT_VERSION.into(),
            persist_version: crate::persist::PERSIST_VERSION,
            min_reader_version: crate::persist::MIN_READER_VERSION,
            handover_version: HANDOVER_VERSION,
        }
    }

    /// One line of JSON.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The state file as it is now: the format it is in and its oldest reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileVersion {
    /// `persist_version`.
    pub persist_version: u32,
    /// `min_reader_version`.
    pub min_reader_version: u32,
}

/// Why a binary may not take over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// It cannot read the state as it is.
    #[error(
        "pith-agent {new} reads persist versions up to {reads}, the state is in version {file} \
         (readable from version {min_reader}) as pith-agent {old} wrote it"
    )]
    CannotRead {
        /// The candidate's version.
        new: String,
        /// The highest `min_reader_version` it accepts.
        reads: u32,
        /// The file's `persist_version`.
        file: u32,
        /// The file's `min_reader_version`.
        min_reader: u32,
        /// The running agent's version.
        old: String,
    },
    /// What it writes, the running binary could not read back when it had
    /// to roll back.
    #[error(
        "pith-agent {new} writes persist version {writes} (readable from version {min_reader}); \
         pith-agent {old} reads up to {reads} and could not take the state back if the upgrade failed"
    )]
    NoRollback {
        /// The candidate's version.
        new: String,
        /// What it writes.
        writes: u32,
        /// Its oldest reader.
        min_reader: u32,
        /// The running agent's version.
        old: String,
        /// What the running agent reads.
        reads: u32,
    },
    /// It does not read the hand-over this agent writes.
    #[error("pith-agent {new} reads hand-over version {theirs}, pith-agent {old} writes version {ours}")]
    Handover {
        /// The candidate's version.
        new: String,
        /// Its hand-over version.
        theirs: u32,
        /// The running agent's version.
        old: String,
        /// Ours.
        ours: u32,
    },
}

/// Whether `new` may take over from `old`, which keeps its state in a file
/// at `file` (None: nothing written yet).
pub(crate) fn may_take_over(old: &Identity, new: &Identity, file: Option<FileVersion>) -> Result<(), Refusal> {
    if let Some(f) = file {
        if f.min_reader_version > new.persist_version {
            return Err(Refusal::CannotRead {
                new: new.agent_version.clone(),
                reads: new.persist_version,
                file: f.persist_version,
                min_reader: f.min_reader_version,
                old: old.agent_version.clone(),
            });
        }
    }
    if new.min_reader_version > old.persist_version {
        return Err(Refusal::NoRollback {
            new: new.agent_version.clone(),
            writes: new.persist_version,
            min_reader: new.min_reader_version,
            old: old.agent_version.clone(),
            reads: old.persist_version,
        });
    }
    if new.handover_version != old.handover_version {
        return Err(Refusal::Handover {
            new: new.agent_version.clone(),
            theirs: new.handover_version,
            old: old.agent_version.clone(),
            ours: old.handover_version,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(v: &str, persist: u32, min_reader: u32) -> Identity {
        Identity {
            agent_version: v.into(),
            persist_version: persist,
            min_reader_version: min_reader,
            handover_version: HANDOVER_VERSION,
        }
    }

    fn file(persist: u32, min_reader: u32) -> Option<FileVersion> {
        Some(FileVersion {
            persist_version: persist,
            min_reader_version: min_reader,
        })
    }

    #[test]
    fn same_newer_and_older_binaries_that_read_the_state_take_over() {
        let old = id("0.1.0", 3, 1);
        assert_eq!(may_take_over(&old, &old, file(3, 1)), Ok(()));
        assert_eq!(may_take_over(&old, &id("0.2.0", 4, 1), file(3, 1)), Ok(()));
        // A downgrade: the older binary reads v3 only, the file (v4) allows it.
        assert_eq!(may_take_over(&id("0.2.0", 4, 1), &old, file(4, 1)), Ok(()));
        assert_eq!(may_take_over(&old, &id("0.0.9", 1, 1), None), Ok(()));
    }

    #[test]
    fn a_binary_that_cannot_read_the_state_is_refused_naming_both() {
        let err = may_take_over(&id("0.3.0", 5, 5), &id("0.1.0", 3, 1), file(5, 5)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Refusal::CannotRead { .. }), "{err:?}");
        assert!(msg.contains("pith-agent 0.1.0 reads persist versions up to 3"), "{msg}");
        assert!(msg.contains("pith-agent 0.3.0 wrote it"), "{msg}");
    }

    #[test]
    fn a_binary_whose_writes_could_not_be_rolled_back_is_refused() {
        let err = may_take_over(&id("0.1.0", 3, 1), &id("0.5.0", 6, 6), file(3, 1)).unwrap_err();
        assert!(matches!(err, Refusal::NoRollback { .. }), "{err:?}");
        assert!(err.to_string().contains("could not take the state back"), "{err}");
    }

    #[test]
    fn another_hand_over_format_is_refused() {
        let mut new = id("0.1.0", 3, 1);
        new.handover_version = 7;
        let err = may_take_over(&id("0.1.0", 3, 1), &new, None).unwrap_err();
        assert!(matches!(err, Refusal::Handover { theirs: 7, .. }), "{err:?}");
    }

    #[test]
    fn the_check_line_round_trips() {
        let me = Identity::ours();
        let back: Identity = serde_json::from_str(&me.to_json()).unwrap();
        assert_eq!(back, me);
    }
}
