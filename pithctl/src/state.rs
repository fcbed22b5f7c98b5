//! `pithctl state`: the sandbox an agent persisted (`sandbox.json` in its
//! state directory), read from the file, readably. No agent is asked: this
//! works while none runs (after a crash, before a new one starts).
//!
//! The file's rules are the agent's (`src/persist/`): `persist_version` is
//! its format, `min_reader_version` the oldest reader that can use it. Every
//! version so far keeps v1's fields, so one reader of those fields serves
//! v1 to v3; a file whose `min_reader_version` is above [`KNOWN_VERSION`] is
//! refused, as the agent refuses it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The newest persist format this pithctl knows (the agent's `PERSIST_VERSION`).
pub const KNOWN_VERSION: u64 = 3;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "sandbox.json";

/// Reads the state file in `dir` and describes it.
pub fn show(dir: &Path) -> Result<String> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    describe(&path, &bytes)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_i64).map_or("-".into(), |n| n.to_string())
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A process's exit as the file has it: `{"code": n}` or `{"signal": n}`
/// (v2 on), or v1's `exit_status` alone (a wait status as Kata reports it).
fn exit_of(p: &Value) -> Option<String> {
    let e = match p.get("exit").filter(|e| !e.is_null()) {
        Some(e) => e,
        None => {
            let s = p.get("exit_status").and_then(Value::as_i64)?;
            return Some(format!("exited with status {s}"));
        }
    };
    if let Some(c) = e.get("code").and_then(Value::as_i64) {
        return Some(format!("exited with code {c}"));
    }
    if let Some(s) = e.get("signal").and_then(Value::as_i64) {
        return Some(format!("killed by signal {s}"));
    }
    (!e.is_null()).then(|| format!("ended ({e})"))
}

fn process_line(out: &mut String, p: &Value) {
    let state = exit_of(p).unwrap_or_else(|| "running".into());
    let mut stdio = Vec::new();
    for (k, name) in [
        ("stdin_open", "stdin"),
        ("stdout_open", "stdout"),
        ("stderr_open", "stderr"),
    ] {
        if p.get(k).and_then(Value::as_bool) == Some(true) {
            stdio.push(name);
        }
    }
    let _ = writeln!(
        out,
        "    process {} pid {}: {state}{}{}; open: {}",
        text(p, "exec_id"),
        int(p, "pid"),
        if p.get("terminal").and_then(Value::as_bool) == Some(true) {
            ", terminal"
        } else {
            ""
        },
        if p.get("waited").and_then(Value::as_bool) == Some(true) {
            ", waited"
        } else {
            ""
        },
        if stdio.is_empty() {
            "none".into()
        } else {
            stdio.join(" ")
        }
    );
}

/// Describes the state file `path` holding `bytes`; a damaged or too new
/// file is an error naming the file and the fault.
pub fn describe(path: &Path, bytes: &[u8]) -> Result<String> {
    let file = path.display();
    let v: Value = serde_json::from_slice(bytes).with_context(|| format!("{file}: damaged: not JSON"))?;
    let version = |key: &str| -> Result<u64> {
        match v.get(key).and_then(Value::as_u64) {
            Some(n) if n > 0 => Ok(n),
            _ => bail!("{file}: damaged: no valid {key}"),
        }
    };
    let (persist, min_reader) = (version("persist_version")?, version("min_reader_version")?);
    if min_reader > persist {
        bail!("{file}: damaged: min_reader_version {min_reader} above persist_version {persist}");
    }
    if min_reader > KNOWN_VERSION {
        bail!(
            "{file}: persist version {persist} needs a reader of version {min_reader} or newer; \
             this pithctl reads up to version {KNOWN_VERSION}"
        );
    }
    let Some(sb) = v.get("sandbox").filter(|s| s.is_object()) else {
        bail!("{file}: damaged: no sandbox object");
    };
    let mut out = String::new();
    let _ = writeln!(out, "file: {file}");
    let _ = writeln!(
        out,
        "persist_version: {persist} (min_reader_version {min_reader}{}), written by agent {}",
        if persist > KNOWN_VERSION {
            ", newer than this pithctl: fields it does not know are not shown"
        } else {
            ""
        },
        v.get("agent_version").and_then(Value::as_str).unwrap_or("?")
    );
    let pod = sb.get("pod").unwrap_or(&Value::Null);
    let _ = writeln!(
        out,
        "pod: {} ({}), hostname {:?}, namespace holder pid {}",
        text(pod, "id"),
        text(pod, "state"),
        text(pod, "hostname"),
        pod.get("ns_holder_pid")
            .or(pod.get("ns_holder"))
            .and_then(Value::as_i64)
            .map_or("-".into(), |n| n.to_string())
    );
    if let Some(s) = sb.get("session").filter(|s| !s.is_null()) {
        let _ = writeln!(
            out,
            "session: level {}, host {:?} {}",
            int(s, "level"),
            text(s, "host_name"),
            text(s, "host_version")
        );
    }
    let containers = list(sb, "containers");
    let _ = writeln!(out, "containers: {}", containers.len());
    for c in containers {
        let init = c.get("init").unwrap_or(&Value::Null);
        let status = match exit_of(init) {
            Some(e) => format!("stopped: init {e}"),
            None => "running".into(),
        };
        let _ = writeln!(out, "  {} ({status}), bundle {}", text(c, "id"), text(c, "bundle"));
        process_line(&mut out, init);
        for e in list(c, "execs") {
            process_line(&mut out, e);
        }
        for d in list(c, "devices") {
            let _ = writeln!(
                out,
                "    device {} ({}:{}, guest {}, {})",
                text(d, "container_path"),
                int(d, "major"),
                int(d, "minor"),
                text(d, "guest_name"),
                text(d, "access")
            );
        }
    }
    let storages = list(sb, "storages");
    let _ = writeln!(out, "storages: {}", storages.len());
    for s in storages {
        let owners: Vec<&str> = list(s, "owners").iter().filter_map(Value::as_str).collect();
        let _ = writeln!(
            out,
            "  {} ({} from {:?}), used by {}",
            text(s, "mount_point"),
            text(s, "driver"),
            text(s, "source"),
            if owners.is_empty() {
                "none".into()
            } else {
                owners.join(", ")
            }
        );
    }
    Ok(out.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_committed_version_is_described() {
        for v in 1..=KNOWN_VERSION {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/persist/v{v}.json"));
            let bytes = std::fs::read(&path).unwrap();
            let out = describe(&path, &bytes).unwrap();
            assert!(out.contains(&format!("persist_version: {v} ")), "{out}");
            assert!(out.contains("containers: "), "{out}");
        }
    }

    #[test]
    fn damaged_and_too_new_files_are_named_with_their_fault() {
        let p = Path::new("/x/sandbox.json");
        let e = describe(p, b"{\"persist_version\": 3, \"min_rea").unwrap_err();
        assert!(format!("{e:#}").contains("/x/sandbox.json: damaged"), "{e:#}");
        let e = describe(p, br#"{"persist_version": 9, "min_reader_version": 7, "sandbox": {}}"#).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("/x/sandbox.json") && msg.contains("version 9") && msg.contains("7"),
            "{msg}"
        );
    }
}
