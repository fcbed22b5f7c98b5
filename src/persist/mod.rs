//! The persisted state of the sandbox: the file a restarted agent takes the
//! sandbox back from. Its format is an exported API, like the wire protocol:
//!
//! * the persist types (`v1.rs`, ...) are their own types, never the
//!   in-memory ones; `convert.rs` alone maps the sandbox's view to the
//!   current version and back;
//! * the file carries `persist_version` (the format it is written in) and
//!   `min_reader_version` (the oldest format whose reader can use it, as
//!   SQLite's file format does). This agent reads every older version (each
//!   one migrated to the next), and a newer file when its
//!   `min_reader_version` allows (fields it does not know are ignored);
//!   otherwise it refuses, naming both versions, and leaves the file alone;
//! * one file per sandbox (`sandbox.json` in the state directory), written
//!   atomically, under a lock that keeps a second agent out (`file.rs`).
//!
//! A file that cannot be read (damaged, truncated, too new) is never
//! overwritten: the agent keeps serving Health and refuses sandbox calls with
//! the reason (see `Sandbox::set_fault`).

pub(crate) mod convert;
pub(crate) mod error;
pub(crate) mod file;
pub(crate) mod v1;
pub(crate) mod v2;
pub(crate) mod v3;

use std::path::Path;

use serde::Deserialize;

pub(crate) use error::PersistError;

/// The format version this agent writes.
#[cfg(not(feature = "next-build"))]
pub(crate) const PERSIST_VERSION: u32 = 3;
/// The format version the "next release" build writes (`next-build`, for the
/// upgrade tests): v3's fields under a higher number, readable by a v3
/// reader as `MIN_READER_VERSION` says (a downgrade keeps working).
#[cfg(feature = "next-build")]
pub(crate) const PERSIST_VERSION: u32 = 4;
/// The oldest format version whose reader can use what this agent writes
/// (v2 and v3 still write v1's fields: see `v2.rs`, `v3.rs`).
pub(crate) const MIN_READER_VERSION: u32 = 1;

/// The sandbox in the current format.
pub(crate) type Current = v3::SandboxV3;

/// What every version has, read first to choose the parser.
#[derive(Deserialize)]
struct Header {
    persist_version: u32,
    min_reader_version: u32,
}

fn damaged(path: &Path, e: serde_json::Error) -> PersistError {
    PersistError::Damaged {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

/// The sandbox in the file's bytes (`path` only names it in errors).
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Current, PersistError> {
    let h: Header = serde_json::from_slice(bytes).map_err(|e| damaged(path, e))?;
    if h.persist_version == 0 || h.min_reader_version == 0 || h.min_reader_version > h.persist_version {
        return Err(PersistError::Damaged {
            path: path.to_path_buf(),
            why: format!(
                "persist_version {} with min_reader_version {} is not a valid pair",
                h.persist_version, h.min_reader_version
            ),
        });
    }
    if h.min_reader_version > PERSIST_VERSION {
        return Err(PersistError::TooNew {
            path: path.to_path_buf(),
            version: h.persist_version,
            min_reader: h.min_reader_version,
            supported: PERSIST_VERSION,
        });
    }
    // Each older version by its own types, migrated; a newer file that allows
    // it as ours (its writer promised that our fields keep their meaning).
    match h.persist_version {
        1 => {
            let f: v1::FileV1 = serde_json::from_slice(bytes).map_err(|e| damaged(path, e))?;
            Ok(v2::SandboxV2::from(f.sandbox).into())
        }
        2 => {
            let f: v2::FileV2 = serde_json::from_slice(bytes).map_err(|e| damaged(path, e))?;
            Ok(f.sandbox.into())
        }
        _ => {
            let f: v3::FileV3 = serde_json::from_slice(bytes).map_err(|e| damaged(path, e))?;
            Ok(f.sandbox)
        }
    }
}

/// The file's bytes for `sandbox` in the current format.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn encode(sandbox: Current) -> Vec<u8> {
    let containers: Vec<v3::RawJson> = sandbox.containers.iter().map(encode_container).collect();
    Encoded::new(&sandbox, containers).to_vec()
}

/// One container as the file holds it, for [`Encoded`].
pub(crate) fn encode_container(c: &v3::ContainerV3) -> v3::RawJson {
    // Plain data with string keys: serialising cannot fail.
    let raw = serde_json::value::to_raw_value(c)
        .unwrap_or_else(|_| serde_json::value::RawValue::from_string("null".into()).expect("null is JSON"));
    v3::RawJson(raw.into())
}

/// The file's bytes in pieces: the sandbox's own fields, then each
/// container's text (shared with the agent's cache, not copied), written to
/// the file as they are. Copying 100 containers' texts into one buffer
/// before every write was a third of its cost.
pub(crate) struct Encoded {
    /// Everything up to the containers' list, its `[` included.
    head: Vec<u8>,
    containers: Vec<v3::RawJson>,
    /// What follows the containers: the list's, the sandbox's and the file's ends.
    tail: &'static [u8],
}

impl Encoded {
    /// `sandbox` with `containers` (already encoded, in order) in place of its own.
    pub(crate) fn new(sandbox: &Current, containers: Vec<v3::RawJson>) -> Encoded {
        let f = v3::FileV3Out {
            persist_version: PERSIST_VERSION,
            min_reader_version: MIN_READER_VERSION,
            agent_version: crate::AGENT_VERSION,
            sandbox: v3::SandboxV3Out {
                pod: &sandbox.pod,
                session: &sandbox.session,
                storages: &sandbox.storages,
                watched: &sandbox.watched,
                watch_tmpfs: &sandbox.watch_tmpfs,
                containers: &[],
            },
        };
        // Compact: it is written after every change (`pithctl`/`jq` show it to people).
        // The containers are the last field of the sandbox, itself the file's
        // last: with none, the text ends `[]}}`, and the list goes in between.
        let mut head = Vec::with_capacity(1024);
        // Plain data with string keys: serialising cannot fail.
        let _ = serde_json::to_writer(&mut head, &f);
        if head.ends_with(b"[]}}") {
            head.truncate(head.len() - 3);
            return Encoded {
                head,
                containers,
                tail: b"]}}\n",
            };
        }
        // Not the shape above (the types changed): the whole text at once.
        head.clear();
        let f = v3::FileV3Out {
            sandbox: v3::SandboxV3Out {
                containers: &containers,
                ..f.sandbox
            },
            ..f
        };
        let _ = serde_json::to_writer(&mut head, &f);
        Encoded {
            head,
            containers: Vec::new(),
            tail: b"\n",
        }
    }

    /// The pieces, in order, that make the file.
    pub(crate) fn pieces(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(2 * self.containers.len() + 2);
        out.push(&self.head[..]);
        for (i, c) in self.containers.iter().enumerate() {
            if i > 0 {
                out.push(b",");
            }
            out.push(c.0.get().as_bytes());
        }
        out.push(self.tail);
        out
    }

    /// Whether `other` makes the same file: the same head and the same
    /// container texts (the very same, shared: a text made again, even if
    /// equal, counts as different).
    pub(crate) fn same_as(&self, other: &Encoded) -> bool {
        self.head == other.head
            && self.tail == other.tail
            && self.containers.len() == other.containers.len()
            && self
                .containers
                .iter()
                .zip(&other.containers)
                .all(|(a, b)| std::sync::Arc::ptr_eq(&a.0, &b.0))
    }

    /// How many bytes at the start of the file are the same as in the file
    /// `other` makes: whole pieces, up to the first container text that is
    /// not the very same (0 when the heads differ).
    pub(crate) fn common_prefix(&self, other: &Encoded) -> usize {
        if self.head != other.head || self.tail != other.tail {
            return 0;
        }
        let mut n = self.head.len();
        for (i, (a, b)) in self.containers.iter().zip(&other.containers).enumerate() {
            if !std::sync::Arc::ptr_eq(&a.0, &b.0) {
                break;
            }
            // The comma before it, then its text.
            n += usize::from(i > 0) + a.0.get().len();
        }
        n
    }

    /// The file's size.
    pub(crate) fn len(&self) -> usize {
        let texts: usize = self.containers.iter().map(|c| c.0.get().len()).sum();
        let commas = self.containers.len().saturating_sub(1);
        self.head.len() + texts + commas + self.tail.len()
    }

    /// The file's bytes in one buffer.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let pieces = self.pieces();
        let mut out = Vec::with_capacity(pieces.iter().map(|p| p.len()).sum());
        for p in pieces {
            out.extend_from_slice(p);
        }
        out
    }
}

/// The `persist_version` and `min_reader_version` a file's bytes carry, if
/// they carry them.
pub(crate) fn versions(bytes: &[u8]) -> Option<(u32, u32)> {
    let h: Header = serde_json::from_slice(bytes).ok()?;
    Some((h.persist_version, h.min_reader_version))
}

#[cfg(test)]
mod tests;
