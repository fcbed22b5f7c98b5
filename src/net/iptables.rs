//! GetIPTables / SetIPTables: the guest image's `iptables-save` and
//! `iptables-restore` (`ip6tables-*` for IPv6), run as kata-agent runs them.
//!
//! The agent reaps every child itself, so exit statuses come from its reaper
//! (through the sandbox's container engine, [`Exits`]; see `crate::tool`),
//! never from `Child::wait`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reaper::Exit;
use crate::tool::{self, describe, Output, ToolError};

use super::NetError;

pub(crate) use crate::tool::Exits;

/// `iptables-restore --wait` seconds, as kata-agent passes it.
const RESTORE_WAIT_SECS: u64 = 5;
/// How long one tool run may take before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the tools are looked for.
#[derive(Debug, Clone)]
pub struct Tools {
    dirs: Vec<PathBuf>,
}

impl Tools {
    /// `PITH_NET_TOOLS_DIRS` (colon-separated directories), by default
    /// `/usr/sbin:/sbin` like kata-agent.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Tools {
        let v = get("PITH_NET_TOOLS_DIRS").unwrap_or_else(|| "/usr/sbin:/sbin".into());
        Tools {
            dirs: v.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect(),
        }
    }

    /// The first executable `name` in the search directories.
    pub fn find(&self, name: &str) -> Result<PathBuf, NetError> {
        use std::os::unix::fs::PermissionsExt;
        for d in &self.dirs {
            let p = d.join(name);
            if let Ok(md) = std::fs::metadata(&p) {
                if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                    return Ok(p);
                }
            }
        }
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        Err(NetError::MissingTool(format!(
            "{name} is not in the guest image (looked in {}): add the iptables package to the image",
            dirs.join(", ")
        )))
    }
}

fn tool(v6: bool, what: &str) -> String {
    format!("{}-{what}", if v6 { "ip6tables" } else { "iptables" })
}

/// The output of `iptables-save` (`ip6tables-save` when `v6`).
pub async fn save(tools: &Tools, exits: Exits<'_>, v6: bool) -> Result<Vec<u8>, NetError> {
    let name = tool(v6, "save");
    let path = tools.find(&name)?;
    let out = run(&path, &[], None, exits).await?;
    match out.exit {
        Exit::Code(0) => Ok(out.stdout),
        e => Err(NetError::ToolFailed {
            msg: format!("{} failed ({}): {}", path.display(), describe(e), out.stderr.trim()),
            bad_input: false,
        }),
    }
}

/// Feeds `data` to `iptables-restore --wait 5` (`ip6tables-restore` when `v6`);
/// returns what it printed.
pub async fn restore(tools: &Tools, exits: Exits<'_>, v6: bool, data: Vec<u8>) -> Result<Vec<u8>, NetError> {
    let name = tool(v6, "restore");
    let path = tools.find(&name)?;
    let wait = RESTORE_WAIT_SECS.to_string();
    let out = run(&path, &["--wait", &wait], Some(data), exits).await?;
    match out.exit {
        Exit::Code(0) => Ok(out.stdout),
        e => Err(NetError::ToolFailed {
            msg: format!("{} failed ({}): {}", path.display(), describe(e), out.stderr.trim()),
            // xtables: 1 = a rule or line it could not apply, 2 = bad parameters.
            bad_input: matches!(e, Exit::Code(1) | Exit::Code(2)),
        }),
    }
}

/// Runs `path args`, its exit from the reaper; killed after [`RUN_TIMEOUT`].
async fn run(path: &Path, args: &[&str], stdin: Option<Vec<u8>>, exits: Exits<'_>) -> Result<Output, NetError> {
    tool::run(path, args, stdin, exits, RUN_TIMEOUT)
        .await
        .map_err(|e| match e {
            ToolError::Timeout { .. } => NetError::Timeout(e.to_string()),
            _ => NetError::Internal(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Running the tools needs the agent's reaper, which reaps every child of
    // its process: that is tested on the real agent (tests/network.rs), not
    // here, where a second reaper would take other tests' children.

    #[test]
    fn missing_tool_is_named_with_the_places_looked_at() {
        let t = Tools::from_env(&|_| Some("/nonexistent-a:/nonexistent-b".into()));
        let e = t.find("ip6tables-save").unwrap_err().to_string();
        assert_eq!(
            e,
            "ip6tables-save is not in the guest image (looked in /nonexistent-a, /nonexistent-b): \
             add the iptables package to the image"
        );
        let d = Tools::from_env(&|_| None);
        assert_eq!(d.dirs, vec![PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    }
}
