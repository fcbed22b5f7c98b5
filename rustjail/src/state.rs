//! A container as the library hands it out ([`Container`]: in memory, the spec
//! included), its status read from the kernel, and its state file for the
//! command line: one directory per container under the root (`--root`),
//! holding `state.json` (the CLI's only) and, until `start`, the exec FIFO.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{io, Error, Result};

/// Lifecycle states, as runc names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Init is set up and waits for `start`.
    Created,
    /// The user's process runs.
    Running,
    /// Frozen.
    Paused,
    /// The init has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// A container the runtime created: everything later operations need, held by
/// the caller. Nothing here is read back from disk by the library; the command
/// line, whose every call is a new process, saves it with [`Container::save`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// Host pid of the init.
    pub pid: i32,
    /// The init's start time (field 22 of /proc/PID/stat), to tell a reused pid.
    pub start_time: u64,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem, absolute.
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// Owner (user name or uid).
    pub owner: String,
    /// Annotations from the spec.
    pub annotations: std::collections::HashMap<String, String>,
    /// The container's cgroup, as created.
    pub cgroup: crate::cgroups::Manager,
    /// The exec FIFO the init blocks on until `start` (removed by `start`).
    pub exec_fifo: PathBuf,
    /// The spec the container was created with.
    #[serde(with = "crate::spec_wire::spec")]
    pub spec: Spec,
}

/// The directory holding container `id`'s runtime files.
pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Path of the exec FIFO.
pub fn fifo_path(root: &Path, id: &str) -> PathBuf {
    dir(root, id).join("exec.fifo")
}

impl Container {
    /// Writes `<root>/<id>/state.json` atomically (the command line's record).
    pub fn save(&self, root: &Path) -> Result<()> {
        let d = dir(root, &self.id);
        let tmp = d.join("state.json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|e| Error::State {
            path: tmp.display().to_string(),
            why: e.to_string(),
        })?;
        std::fs::write(&tmp, body).map_err(io("write", tmp.display()))?;
        std::fs::rename(&tmp, d.join("state.json")).map_err(io("rename", d.join("state.json").display()))
    }

    /// Reads container `id`'s state file.
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        let path = dir(root, id).join("state.json");
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(id.to_string())),
            Err(e) => return Err(io("read", path.display())(e)),
        };
        serde_json::from_slice(&body).map_err(|e| Error::State {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// The status now, from the kernel: the init's liveness, the exec FIFO
    /// (created until `start`) and the freezer.
    pub fn status(&self) -> Status {
        match proc_start_time(self.pid) {
            Some((t, state)) if t == self.start_time && state != 'Z' && state != 'X' => {
                if self.exec_fifo.exists() {
                    Status::Created
                } else if self
                    .cgroup
                    .state()
                    .is_ok_and(|s| s != crate::cgroups::FreezerState::Thawed)
                {
                    Status::Paused
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }
}

/// (start time, state letter) of a live process.
pub fn proc_start_time(pid: i32) -> Option<(u64, char)> {
    read_proc_stat(pid, |fields| {
        let state = fields.first()?.chars().next()?;
        let start = fields.get(22 - 3)?.parse().ok()?;
        Some((start, state))
    })
}

/// At most this many fields of /proc/<pid>/stat after the command are kept
/// (Linux 6 writes 50 there; the callers read up to the 37th).
const STAT_FIELDS: usize = 64;

/// What `read` makes of the fields of /proc/<pid>/stat after the command:
/// the 3rd field (the state) is `fields[0]`.
pub(crate) fn read_proc_stat<T>(pid: i32, read: impl FnOnce(&[&str]) -> Option<T>) -> Option<T> {
    let stat = crate::pseudo_file::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: split after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    // The kernel separates the fields by single spaces: no allocation, no
    // Unicode white space to test for.
    let mut fields = [""; STAT_FIELDS];
    let mut n = 0;
    for (slot, f) in fields.iter_mut().zip(rest.split_ascii_whitespace()) {
        *slot = f;
        n += 1;
    }
    read(&fields[..n])
}

/// Checks a container id: no path separators, no `.`/`..`, printable.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::BadId(id.to_string()))
    }
}

/// Now as RFC 3339 (UTC, nanoseconds).
pub fn now_rfc3339() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "c1", "abc-DEF_1.2"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_shape() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 30, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z') && &s[10..11] == "T", "{s}");
    }

    #[test]
    fn own_process_is_alive() {
        let (_, state) = proc_start_time(std::process::id() as i32).unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(proc_start_time(i32::MAX).is_none());
    }
}
