//! GetIPTables / SetIPTables: the guest image's `iptables-save` and
//! `iptables-restore` (`ip6tables-*` for IPv6), run as kata-agent runs them.
//!
//! The agent reaps every child itself, so exit statuses come from its reaper
//! (through the sandbox's container engine, [`Exits`]), never from
//! `Child::wait`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::sync::watch;

use crate::reaper::Exit;

use super::NetError;

/// The exit of a child of the agent, once there is one (the reaper's watch).
pub type Exits<'a> = &'a (dyn Fn(i32) -> watch::Receiver<Option<Exit>> + Sync);

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

fn describe(e: Exit) -> String {
    match e {
        Exit::Code(c) => format!("exit status {c}"),
        Exit::Signal(s) => format!("killed by signal {s}"),
    }
}

struct Output {
    exit: Exit,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `path args` with `stdin` (or /dev/null), collecting its output; killed
/// after [`RUN_TIMEOUT`].
async fn run(
    path: &std::path::Path,
    args: &[&str],
    stdin: Option<Vec<u8>>,
    exits: Exits<'_>,
) -> Result<Output, NetError> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Internal(format!("execve {}: {e}", path.display())))?;
    let pid = child.id() as i32;
    let mut exited = exits(pid);
    // One thread per pipe: a tool that fills stderr while its stdin is still
    // being written must not deadlock with us.
    let writer = child.stdin.take().zip(stdin).map(|(mut w, data)| {
        std::thread::spawn(move || {
            // A tool that exits early closes the pipe (EPIPE): its status tells why.
            let _ = w.write_all(&data);
        })
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let exit = match tokio::time::timeout(RUN_TIMEOUT, exited.wait_for(|e| e.is_some())).await {
        Ok(Ok(e)) => (*e).expect("checked"),
        Ok(Err(_)) => {
            return Err(NetError::Internal(format!(
                "{} (pid {pid}): exit status lost",
                path.display()
            )))
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            return Err(NetError::Timeout(format!(
                "{} did not finish within {RUN_TIMEOUT:?} and was killed",
                path.display()
            )));
        }
    };
    let join = move || {
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = reader.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        (stdout, stderr)
    };
    let (stdout, stderr) = tokio::task::spawn_blocking(join)
        .await
        .map_err(|e| NetError::Internal(format!("collect output of {}: {e}", path.display())))?;
    Ok(Output { exit, stdout, stderr })
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
